"""Turn local files, links and removals into v02 posts (shared by sr_post and sr_watch).

No broker and no argv here: given a path and the posting options, return the messages a
v2 poster would publish, headers in the v2 order (messages-v02.md §1 and §5).
"""

import dataclasses
import functools
import logging
import os
import stat
from typing import Dict, List, Optional

from sarra import checksum
from sarra.message import Message, escape, format_time, now, topic_for


@dataclasses.dataclass
class PostOptions:
    post_base_url: str
    post_base_dir: Optional[str] = None
    topic_prefix: str = "v02.post"
    subtopic: Optional[str] = None
    sum: str = "d"
    blocksize: int = 200 * (1 << 20)
    to_clusters: Optional[str] = None
    source: Optional[str] = None
    cluster: Optional[str] = None
    preserve_mode: bool = True
    preserve_time: bool = True
    rename: Optional[str] = None
    headers: Dict[str, str] = dataclasses.field(default_factory=dict)
    exchange: str = ""
    follow_symlinks: bool = False
    bufsize: int = checksum.BUFSIZE
    use_xattr: bool = True
    #: the xattr sum cache is only used for files of at least this size (hashing a small
    #: file costs less than reading, let alone creating, the attributes); 0 = every file
    xattr_min_size: int = 0

    def __post_init__(self):
        self.post_base_url = public_base_url(self.post_base_url)


_password_warned = False


def public_base_url(url, log=None):
    """The base URL as it may be published: any password removed, the user kept
    (``sftp://u:pw@h/`` -> ``sftp://u@h/``). Subscribers look their password up in their own
    credentials.conf; a message goes to everyone bound to the exchange. Warns once."""
    global _password_warned
    if not url or "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = rest.find("/")
    netloc, path = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    if not _password_warned:
        _password_warned = True
        (log or logging.getLogger("sarra")).warning(
            "post_base_url: password removed; subscribers look theirs up in credentials.conf")
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{hostport}{path}"


class PostError(Exception):
    """A path that cannot be posted (one line naming the path)."""


@functools.lru_cache(maxsize=16)
def _abs_base(base_dir: str) -> str:
    return os.path.abspath(base_dir)


def _is_normal_abs(path: str) -> bool:
    """True when os.path.abspath(path) would return path unchanged (checked cheaply: an
    absolute path without '//', '/.' or a trailing '/'; anything else is normalised)."""
    return type(path) is str and path[:1] == "/" and path[-1:] != "/" and "//" not in path \
        and "/." not in path


def relpath_of(path: str, base_dir: Optional[str]) -> str:
    """Path relative to post_base_dir with a leading '/', the v2 form."""
    _utf8("file name", path)
    if not _is_normal_abs(path):
        path = os.path.abspath(path)
    if base_dir:
        base = _abs_base(base_dir) if base_dir[0] == "/" else os.path.abspath(base_dir)
        if path == base:
            raise PostError(f"{path}: is post_base_dir itself, not a file below it")
        stem = base.rstrip("/")
        if not path.startswith(stem) or path[len(stem):len(stem) + 1] != "/":
            raise PostError(f"{path}: not under post_base_dir {base}")
        return path[len(stem):]
    return path


def resolve_path(path: str, base_dir: Optional[str]) -> str:
    """The file a `path` line or word names (v2): as given when it exists from here (or no
    post_base_dir is set), else under post_base_dir (`-pbd /data -p obs/f` run from
    anywhere posts /data/obs/f); an absolute path outside post_base_dir only when it
    exists there. A path that exists nowhere is returned under post_base_dir when relative
    (a removal to post), as given when absolute."""
    if not base_dir or os.path.lexists(path):
        return path
    base = os.path.abspath(os.path.expanduser(base_dir))
    under = os.path.join(base, path.lstrip("/"))
    if not os.path.isabs(path) or os.path.lexists(under):
        return under
    return path


def _common(opts: PostOptions) -> Dict[str, str]:
    h = {}
    if opts.to_clusters:
        h["to_clusters"] = opts.to_clusters
    return h


def _finish(headers: Dict[str, str], opts: PostOptions) -> Dict[str, str]:
    if opts.rename:
        headers["rename"] = opts.rename
    if opts.source:
        headers["source"] = opts.source
    if opts.cluster:
        headers["from_cluster"] = opts.cluster
    for k, v in opts.headers.items():
        if v in (None, "None"):
            headers.pop(k, None)
        else:
            headers[k] = v
    return headers


def _utf8(what: str, text: str) -> None:
    """v02 messages are UTF-8: a name that is not (bytes kept by surrogateescape) cannot be
    announced, and is refused here, once, naming it, rather than failing the publish."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        raise PostError(f"{shown}: {what} is not valid UTF-8: v02 cannot announce it "
                        "(rename it)") from None


def _post(opts: PostOptions, pubtime: str, rel: str, headers: Dict[str, str]) -> Message:
    # make_post() without its copy of the headers: they were built for this post alone
    for k in ("oldname", "newname"):
        if k in headers:
            _utf8(k, headers[k])
    rel = escape(rel)
    return Message(pubtime, opts.post_base_url, rel, _finish(headers, opts),
                   topic=topic_for(opts.topic_prefix, rel, opts.subtopic),
                   exchange=opts.exchange)


def file_posts(path: str, opts: PostOptions, pubtime: Optional[str] = None,
               oldname: Optional[str] = None, st: Optional[os.stat_result] = None,
               only_blocks: Optional[List[int]] = None) -> List[Message]:
    """One post per block of a regular file (one post for a whole file)."""
    rel = relpath_of(path, opts.post_base_dir)
    st = st or os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise PostError(f"{path}: not a regular file")
    pubtime = pubtime or now()
    parts = checksum.plan_parts(st.st_size, opts.blocksize)
    if only_blocks is not None:
        parts = [p for p in parts if p.bno in only_blocks]
    algo = opts.sum
    sums = None
    use_xattr = opts.use_xattr and len(parts) == 1 and algo in checksum.DATA_ALGOS \
        and st.st_size >= opts.xattr_min_size
    if use_xattr:
        cached = checksum.xattr_sum(path, st.st_mtime)
        if cached and cached.startswith(algo + ","):
            sums = [cached]
    if sums is None:
        try:
            sums = checksum.sums_for_file(path, algo, parts, os.path.basename(path), opts.bufsize)
        except OSError as e:
            raise PostError(f"{path}: cannot read: {e.strerror}") from None
        except ValueError as e:  # the file shrank while it was read
            raise PostError(f"{path}: changed while being posted ({e})") from None
        if use_xattr:
            checksum.store_xattr_sum(path, sums[0], st.st_mtime)
    out = []
    if opts.preserve_time:
        mtime = format_time(st.st_mtime)
        atime = mtime if st.st_atime == st.st_mtime else format_time(st.st_atime)
    mode = "%o" % (st.st_mode & 0o7777)
    for p, s in zip(parts, sums):
        h = _common(opts)
        if opts.preserve_time:
            h["mtime"] = mtime
            h["atime"] = atime
        if opts.preserve_mode:
            h["mode"] = mode
        h["parts"] = str(p)
        h["sum"] = s
        if oldname:
            h["oldname"] = oldname
        out.append(_post(opts, pubtime, rel, h))
    return out


def remove_post(path: str, opts: PostOptions, newname: Optional[str] = None,
                pubtime: Optional[str] = None) -> Message:
    """An R post: the file (or link) at ``path`` is gone."""
    rel = relpath_of(path, opts.post_base_dir)
    h = _common(opts)
    h["sum"] = "R," + checksum.name_sum("R", os.path.basename(path))
    if newname:
        h["newname"] = newname
    return _post(opts, pubtime or now(), rel, h)


def link_post(path: str, opts: PostOptions, target: Optional[str] = None,
              oldname: Optional[str] = None, pubtime: Optional[str] = None) -> Message:
    """An L post for a symbolic link; ``link`` carries readlink's value unchanged."""
    rel = relpath_of(path, opts.post_base_dir)
    if target is None:
        target = os.readlink(path)
    _utf8("link", target)
    h = _common(opts)
    h["link"] = target
    h["sum"] = "L," + checksum.name_sum("L", target)
    if oldname:
        h["oldname"] = oldname
    return _post(opts, pubtime or now(), rel, h)


def posts_for_path(path: str, opts: PostOptions, pubtime: Optional[str] = None) -> List[Message]:
    """What sr_post announces for one existing path: a link, a file, or (missing) a removal."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise PostError(f"{path}: no such file or directory") from None
    except OSError as e:
        raise PostError(f"{path}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        posts = [link_post(path, opts, pubtime=pubtime)]
        if opts.follow_symlinks:
            try:
                st2 = os.stat(path)
                if stat.S_ISREG(st2.st_mode):
                    posts += file_posts(path, opts, pubtime, st=st2)
            except OSError:
                pass
        return posts
    if stat.S_ISREG(st.st_mode):
        if not os.access(path, os.R_OK):
            raise PostError(f"{path}: permission denied (cannot read)")
        return file_posts(path, opts, pubtime, st=st)
    raise PostError(f"{path}: not a regular file, link or directory")


def walk(path: str, follow_symlinks: bool = False):
    """Yield every file and link below a directory, sorted, errors reported as PostError."""
    errors = []
    for root, dirs, files in os.walk(path, followlinks=follow_symlinks,
                                     onerror=lambda e: errors.append(e)):
        dirs.sort()
        prefix = root if root.endswith("/") else root + "/"   # os.path.join, cheaper
        for name in sorted(files):
            yield prefix + name
        for name in dirs:
            full = os.path.join(root, name)
            if os.path.islink(full) and not follow_symlinks:
                yield full
        while errors:
            e = errors.pop()
            yield PostError(f"{e.filename}: {e.strerror}")
    for e in errors:        # after the last directory listed (or the top one unreadable)
        yield PostError(f"{e.filename}: {e.strerror}")


__all__ = ["PostOptions", "PostError", "public_base_url", "relpath_of", "file_posts", "remove_post",
           "link_post", "posts_for_path", "walk", "escape"]
