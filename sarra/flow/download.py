"""The download step of the flow (sr_subscribe, sr_sarra): place, fetch, verify, re-post.
(The transfer itself, checksum on the fly included, is in fetch.py.)

Every file is written under a temporary name and renamed only after its checksum is
verified, so a redelivered message never yields a second copy or a corrupt file, and a
mismatch never leaves anything under the final name. A failed or interrupted download
removes its temporary file. Blocks of a partitioned file go into one temporary file
(inplace.py: a manifest, blocks the local file holds copied from it), or each into its
own part file.
"""

import calendar
import os
import posixpath
import stat

from sarra import checksum
from sarra.flow import (batchtx, heldblocks, inplace, nodeparts, partname, placement, report,
                        treeguard)
from sarra.config.parser import expand_message_vars
from sarra.flow.fetch import fetch as _fetch
from sarra.flow.fetch import file_digest as _digest
from sarra.message import Message, escape, parse_time, topic_for
from sarra.origin import mark_written
from sarra.flow.msgbounds import mode_mask
from sarra.paths import atomic_symlink, discard
from sarra.flow.poster import public_base_url
from sarra.flow.outbound import first_url
from sarra.flow import naming
from sarra.transfer import TransferError
from sarra.flow.stepstate import UNSET, DownloadState
from sarra.flow.work import Outcome, Work


# ------------------------------------------------------------------ placement

def destination(flow, work):
    """Set work.root/new_dir/new_file/local_path from the matched accept clause.

    The placement step of the preset: runs before on_message, so that plugins see (and may
    change) new_dir/new_file. A path outside the target directory is refused (403)."""
    cfg, msg = flow.cfg, work.msg
    directory, mirror, strip, flatten = placement.rule(cfg, work.mask, ".")
    if "${" in directory:
        source = msg.headers.get("source")
        if "${SOURCE}" in directory and source and (
                "/" in source or "\0" in source or source in (".", "..")):
            # the source header comes from upstream: a name, never a path out of the tree
            raise Outcome(403, f"Forbidden: source {source!r} is not a plain name "
                               f"(directory {directory} uses ${{SOURCE}})")
        directory = expand_message_vars(directory, source, extra={
            "BD": cfg.base_dir or "", "PBD": cfg.post_base_dir or "",
            "PDR": cfg.post_base_dir or "", "DR": cfg.post_base_dir or ""})
    roots = DownloadState.of(flow).roots      # directory -> (abspath, realpath)
    known = roots.get(directory)
    if known is None:
        absolute = os.path.abspath(directory)
        known = roots[directory] = (absolute, os.path.realpath(absolute))
    root, real_root = known
    try:
        new_dir, new_file = placement.local_name(msg.relpath, root, mirror, strip, flatten,
                                                 msg.headers.get("rename"))
        new_file = naming.dest_name(flow, work, new_file)   # filename, destfn_script
        work.local_path = placement.check_inside(new_dir, new_file, root, real_root)
    except placement.PlacementError as e:
        raise Outcome(403, f"Forbidden: {e}") from None
    work.root, work.new_dir, work.new_file = root, new_dir, new_file
    return work.local_path


def _mkdirs(flow, d):
    if os.path.isdir(d):
        return
    try:
        os.makedirs(d, mode=(flow.cfg.chmod_dir or 0o775) & mode_mask(flow.cfg), exist_ok=True)
    except OSError as e:
        raise Outcome(500, f"cannot create directory {d}: {e.strerror}", retry=True) from None


def _epoch(text: str) -> float:
    """message.parse_time for the usual 'YYYYMMDDHHMMSS[.fff]' form, without strptime
    (a few times faster: two of these per downloaded file); anything else goes to it."""
    if len(text) >= 14 and text[:14].isdigit() and (len(text) == 14 or text[14] == "."):
        y, mo, d = int(text[:4]), int(text[4:6]), int(text[6:8])
        h, mi, sec = int(text[8:10]), int(text[10:12]), int(text[12:14])
        if 1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1] and h < 24 \
                and mi < 60 and sec <= 61:
            t = float(calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)))
            frac = text[15:]
            if frac.isdigit():
                t += float("0." + frac)
            return t
    return parse_time(text)


def _apply_meta(flow, msg, path, final=None):
    """Mode and times from the message, then the user.sr_origin mark (origin.py: an
    sr_watch of this tree with ignore_written does not announce the file back); final:
    the name the file at path gets next."""
    cfg, h = flow.cfg, msg.headers
    try:
        # never setuid/setgid from a message; at a pump never world-writable (msgbounds)
        if cfg.preserve_mode and "mode" in h:
            os.chmod(path, int(h["mode"], 8) & mode_mask(cfg))
        elif cfg.chmod:
            os.chmod(path, cfg.chmod & mode_mask(cfg))
        if cfg.preserve_time and "mtime" in h:
            mt = _epoch(h["mtime"])
            at = _epoch(h["atime"]) if "atime" in h else mt
            os.utime(path, (at, mt))
    except (ValueError, OSError) as e:
        flow.log.warning("%s: could not apply mode/time from the message: %s", path, e)
    mark_written(path, final or path)


def _have(path, s, offset, length, size=None, nofollow=False) -> bool:
    """The local file already holds the announced bytes (same checksum at that range).
    ``nofollow``: a symbolic link at ``path`` never does (it is replaced, not read)."""
    if s.algo not in checksum.DATA_ALGOS or not s.value:
        return False
    try:
        st = os.lstat(path) if nofollow else os.stat(path)
    except OSError:
        return False
    if nofollow and not stat.S_ISREG(st.st_mode):
        return False
    actual = st.st_size
    if (size is not None and actual != size) or actual < offset + length:
        return False
    try:
        return checksum.hash_range(path, s.algo, offset, length) == s.value
    except (OSError, ValueError):
        return False


_discard = discard          # a temporary file that is not to be kept


def _temp_place(flow, work, temp):
    """Make the temporary file's place safe to write: its directory (inflight tmp/) must
    resolve inside the target directory (403 otherwise), and a symbolic link sitting on the
    temporary name itself (planted by a link post or anyone else) is removed, never written
    through. The drivers also open it with O_NOFOLLOW."""
    d = os.path.dirname(temp)
    if d != work.new_dir:
        root = work.root or work.new_dir
        try:
            placement.check_inside(d, os.path.basename(temp), root)
        except placement.PlacementError as e:
            raise Outcome(403, f"Forbidden: temporary file {e}") from None
        _mkdirs(flow, d)
    try:
        st = os.lstat(temp)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        flow.log.warning("%s: a symbolic link was on the temporary file name: removed "
                         "(data is never written through a link)", temp)
        try:
            os.unlink(temp)
        except OSError as e:
            raise Outcome(500, f"cannot remove the symbolic link {temp}: {e.strerror}",
                          retry=True) from None


# ------------------------------------------------------------------ transfer

def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _check(work, digest, what=""):
    """Compare the received data's digest with the announced sum (417 on a mismatch)."""
    s = work.sum
    if digest is None:
        return
    if s.algo == "z":
        work.msg.headers["sum"] = f"{s.value},{digest}"
        return
    if s.algo in checksum.DATA_ALGOS and digest != s.value:
        # the file changed after its post (a newer post follows) or was corrupted on the
        # way: tried once more after the retry queue's backoff, then failed for good
        first = work.retry_entry is None
        raise Outcome(417, f"Expectation Failed: checksum mismatch{what} (announced "
                           f"{s.algo},{s.value}, received {s.algo},{digest})"
                           + ("" if first else " again after a retry: not retried"),
                      retry=first, failed=True)


def _rename(temp, final):
    try:
        os.replace(temp, final)
    except OSError as e:
        _discard(temp)
        raise Outcome(500, f"cannot rename {temp} to {final}: {e.strerror}", retry=True) from None


# ------------------------------------------------------------------ the step

def download(flow, work):
    """The work step of sr_subscribe and sr_sarra."""
    msg, cfg = work.msg, flow.cfg
    s = work.sum = msg.sum
    if work.new_file is None:
        destination(flow, work)
    final = os.path.join(work.new_dir, work.new_file)
    work.local_path = final
    if s.algo == "R":
        return _remove(flow, work, final)
    if s.algo == "L":
        return _link(flow, work, final)
    parts = msg.parts
    if s.algo in ("m", "r", "l") or parts is None:
        raise Outcome(304, "not modified3: directory operations are not applied")
    final = partname.block_target(work, final, parts)     # a block sent as its part file
    _mkdirs(flow, work.new_dir)
    if parts.whole:
        _whole(flow, work, final, parts)
    elif cfg.inplace:
        inplace.block(flow, work, final, parts)
    else:
        _block_partfile(flow, work, final, parts)
    flow.counters["transferred"] += 1


def _whole(flow, work, final, parts):
    cfg, s = flow.cfg, work.sum
    if not cfg.overwrite and _have(final, s, 0, parts.filesize, parts.filesize, True):
        already_here(flow, work, final, report.SAME_CHECKSUM)
    temp = placement.inflight_path(final, cfg.inflight)
    _temp_place(flow, work, temp)
    before = _stamp(final) if flow.hooks.has("do_download") else None
    try:
        digest = _fetch(flow, work, temp, 0, None, None)
        if not os.path.exists(temp):
            if _stamp(final) in (None, before):
                raise Outcome(499, "do_download plugin reported success but wrote nothing",
                              retry=True)
            temp = final            # a (v2) do_download plugin wrote the final name itself
            algo = s.value if s.algo == "z" else s.algo
            digest = _digest(final, algo)
        _check(work, digest)
    except BaseException:
        _discard(temp)
        raise
    if temp != final:
        _apply_meta(flow, work.msg, temp, final)
        _rename(temp, final)
    else:
        _apply_meta(flow, work.msg, final)
    work.code, work.text = report.DOWNLOADED
    _done(flow, work, final, complete=True)


def assembled(flow, work) -> bool:
    """The message is a block this flow writes (into its file, inplace, or as a part
    file): the block step (the manifest, or the part file already here), not the
    duplicate cache, decides whether it is needed. The cache's key of a block leaves out
    the block count, so it would drop the unchanged blocks of a file that grew: its new
    version could never be completed, nor its new part files made."""
    parts = work.msg.parts
    return (parts is not None and not parts.whole
            and not flow.cfg.notify_only and (work.sumstr or "")[:1] not in ("R", "L"))


def _block_partfile(flow, work, final, parts):
    """inplace off: each block is stored as <final>.<bsz>.<blktot>.<brem>.<bno>.<algo>.Part"""
    s = work.sum
    part_path = final + parts.suffix(s.algo)
    if not flow.cfg.overwrite and _have(part_path, s, 0, parts.length, parts.length, True):
        already_here(flow, work, part_path, report.SAME_CHECKSUM, part_file=True)
    temp = placement.inflight_path(part_path, flow.cfg.inflight)
    _temp_place(flow, work, temp)
    try:
        digest = None if flow.cfg.overwrite else heldblocks.into_part_file(final, parts, s, temp)
        if digest is None:      # no local copy holds it: downloaded
            digest = _fetch(flow, work, temp, parts.offset, parts.length, None)
        _check(work, digest, f" in block {parts.bno}")
    except BaseException:
        _discard(temp)
        raise
    _apply_meta(flow, work.msg, temp, part_path)
    _rename(temp, part_path)
    work.code, work.text = report.DOWNLOADED
    _done(flow, work, part_path, complete=False, part_file=True)


def already_here(flow, work, path, why, part_file=False):
    """The announced bytes are here already: 304, nothing written. A message seen before
    (redelivered, or a retry) may be one whose work was done by an instance that died
    between the rename and its post's confirm: a posting flow (sr_sarra, a re-posting
    subscriber) posts it again, or the next hop would never hear of the file. Downstream a
    second post is a duplicate at worst; on_file is not run twice."""
    if flow.post_broker is not None and work.again:
        work.local_path, work.new_file = path, os.path.basename(path)
        work.posts.append(repost(flow, work, path, part_file))
    raise Outcome(*batchtx.redone(flow, work, why, path))   # redelivered: its 201 never left


def _done(flow, work, path, complete: bool, part_file: bool = False):
    work.file_complete = complete
    work.local_path = path
    work.new_file = os.path.basename(path)
    ok = flow.hooks.run("on_part")
    if complete and ok:
        ok = flow.hooks.run("on_file")
    if flow.cfg.discard and complete:
        _discard(path)
    if flow.cfg.delete:
        if complete:
            delete_source(flow, work)
        elif part_file and not DownloadState.of(flow).delete_partfile_warned:
            DownloadState.of(flow).delete_partfile_warned = True
            flow.log.warning("option delete: blocks kept as .Part files (inplace off) are "
                             "never assembled here, so their sources are not deleted")
    if ok and flow.post_broker is not None:
        work.posts.append(repost(flow, work, path, part_file))


#: URL schemes with no way to delete a file (option delete)
NO_DELETE_SCHEMES = ("http", "https")


def delete_source(flow, work):
    """Option delete: remove the announced file at its source, once our copy is complete
    and verified (a whole file, or the block that completed a partitioned one). A failure
    is logged (one line) and changes nothing else: the download itself succeeded."""
    url = work.msg.download_url
    scheme = url.split(":", 1)[0].lower()
    if scheme in NO_DELETE_SCHEMES:
        flow.log.error("%s: cannot delete over %s (option delete): source left in place",
                       url, scheme)
        return
    try:
        flow.transfer_for(url, work.msg.baseurl).delete(url)
    except TransferError as e:
        flow.log.error("%s: cannot delete the source (option delete): %s", url, e.message)
    except KeyError:
        flow.log.error("%s: cannot delete the source (option delete): no %s driver",
                       url, scheme)
    else:
        flow.log.info("%s: source deleted (option delete)", url)


def repost(flow, work, path, part_file=False) -> Message:
    """The announcement of our local copy: same pubtime and headers, our base URL."""
    cfg, msg = flow.cfg, work.msg
    base = cfg.post_base_dir or work.root
    rel = os.path.relpath(path, base)
    if rel.startswith(".."):
        rel = path
    rel = "/" + rel.lstrip("/")
    headers = dict(msg.headers)
    parts = msg.parts
    if parts is not None and part_file:
        headers["parts"] = str(parts.__class__("p", parts.bsz, parts.blktot, parts.brem, parts.bno))
    headers.pop("rename", None)
    for k in ("oldname", "newname"):    # names in the poster's tree: put in ours, as rel
        if k in headers:
            ours = _our_name(flow, work, headers[k], base)
            if ours is None:
                del headers[k]
            else:
                headers[k] = ours
    relpath = escape(rel)
    st = DownloadState.of(flow)
    if st.post_base is UNSET:           # once per flow: no password goes into a message
        st.post_base = public_base_url(first_url(cfg.post_base_url), flow.log)
    base = st.post_base
    return Message(msg.pubtime, base, relpath, headers,
                   topic=topic_for(cfg.post_topic_prefix or "v02.post", relpath),
                   exchange=cfg.post_exchange or "")


def _our_name(flow, work, name, base):
    """An oldname/newname header of a message we re-post, as a path below our post_base_dir
    (where this configuration puts that name, like the relpath), or None when it would not
    be placed there. Passed on as received, a source's name could point downstream
    consumers that rename by it (v2 subscribers: oldname) at another source's files."""
    if not isinstance(name, str) or not name:
        return None
    msg = work.msg
    other = Work(Message(msg.pubtime, msg.baseurl, escape(name),
                         {k: v for k, v in msg.headers.items() if k != "rename"},
                         topic=msg.topic, exchange=msg.exchange))
    if not flow.accept(other):
        return None
    try:
        local = destination(flow, other)
    except Outcome:
        return None
    rel = os.path.relpath(local, base)
    if rel == ".." or rel.startswith("../"):
        return None
    return "/" + rel


# ------------------------------------------------------------------ removals and links

def _remove(flow, work, final):
    cfg = flow.cfg
    if cfg.events is not None and "delete" not in cfg.events:
        raise Outcome(304, "not modified3: delete events are not applied (events)")
    newname = work.msg.headers.get("newname")
    if newname:
        m = work.mask
        try:
            new_dir, new_file = placement.local_name(
                escape(newname), work.root, m.mirror if m is not None else cfg.mirror,
                m.strip if m is not None else cfg.strip,
                (m.flatten if m is not None else cfg.flatten) or "/")
            target = placement.check_inside(new_dir, new_file, work.root)
        except placement.PlacementError as e:
            raise Outcome(403, f"Forbidden: {e}") from None
        nodeparts.check(target)     # a rename never lands where a block manifest lives
        if os.path.lexists(final):
            _move(flow, work, final, new_dir, target)
            work.code, work.text = report.MOVED
            return
    try:
        os.unlink(final)
        work.code, work.text = report.REMOVED
    except FileNotFoundError:
        work.code, work.text = 304, "not modified3: already absent"
    except IsADirectoryError:
        raise Outcome(500, f"remove failed: {final} is a directory") from None
    except OSError as e:
        raise Outcome(500, f"remove failed: {final}: {e.strerror}", retry=True) from None
    if flow.post_broker is not None:
        work.posts.append(repost(flow, work, final))


def _move(flow, work, final, new_dir, target):
    """Move what is at ``final`` (file, link, directory) to ``target``, the tree kept closed
    (treeguard.move: 403 when a link would then lead outside it)."""
    try:
        treeguard.move(*_tree(work), final, target, lambda: _mkdirs(flow, new_dir), flow.log)
    except treeguard.Escape as e:
        raise Outcome(403, f"Forbidden: {e}") from None
    except OSError as e:
        raise Outcome(500, f"move failed: {final}: {e.strerror}", retry=True) from None


def _tree(work):
    """(root, its real path) of the tree the message's entries must stay in."""
    root = work.root or work.new_dir
    return root, os.path.realpath(root)


def _settle(flow, work, path):
    try:
        treeguard.settle(*_tree(work), path, flow.log)
    except treeguard.Escape as e:
        raise Outcome(403, f"Forbidden: {e}") from None


def _symlink(target, final):
    """Make ``final`` a symbolic link to ``target``, replacing what is there atomically."""
    try:
        atomic_symlink(target, final, final + ".sarra-link")    # msgbounds.temp_name knows it
    except OSError as e:
        raise Outcome(500, f"symlink failed: {final}: {e.strerror}", retry=True) from None


def _link(flow, work, final):
    if WINNOW_LINK_SUM in work.msg.headers:
        return _winnow_link(flow, work, final)
    target = work.msg.headers.get("link")
    if not target:
        raise Outcome(499, "symlink failed: the L post carries no link header (sr3 peer?)")
    post = _place_link(flow, work, final, target)
    if post is not None:
        work.posts.append(post)


def _place_link(flow, work, final, target):
    """Make ``final`` a link to ``target`` (checked first), settled and reported linked;
    returns its repost, or None without a post_broker."""
    _check_link_target(work, final, target)
    _mkdirs(flow, work.new_dir)
    _symlink(target, final)
    _settle(flow, work, final)
    work.code, work.text = report.LINKED
    return repost(flow, work, final) if flow.post_broker is not None else None


def _check_link_target(work, final, target):
    """A link must stay inside the target directory from where it is, and wherever it may
    be moved (403 otherwise; treeguard.py): an absolute target elsewhere, or one that
    climbs out with '..', now or after a move, or through a linked directory, could later
    be written or served through."""
    try:
        treeguard.check_link(*_tree(work), final, target)
    except treeguard.Escape as e:
        raise Outcome(403, f"Forbidden: {e}") from None


# ------------------------------------------------------------------ sr_winnow link posts

#: header of sr_winnow's link announcements (man sr_winnow): the data checksum of the file
WINNOW_LINK_SUM = "link_sum"


def _winnow_link(flow, work, final):
    """An L post from sr_winnow: a second copy of a file announced earlier under another
    path. Symlink to our copy of that path when we have it with the announced checksum,
    otherwise download this path like an ordinary post (the URL is the second copy's)."""
    msg = work.msg
    h = msg.headers
    parts = msg.parts
    try:
        data_sum = checksum.parse_sum(h[WINNOW_LINK_SUM])
    except ValueError:
        data_sum = None
    earlier = posixpath.normpath(posixpath.join(posixpath.dirname(msg.path) or "/",
                                                h.get("link") or ""))
    local = _local_copy(flow, work, earlier) if h.get("link") else None
    if (local is not None and data_sum is not None and parts is not None and parts.whole
            and _have(local, data_sum, 0, parts.filesize, parts.filesize)):
        if os.path.realpath(local) == os.path.realpath(final):
            raise Outcome(*report.SAME_CHECKSUM)
        target = os.path.relpath(local, work.new_dir)
        post = _place_link(flow, work, final, target)
        if post is not None:
            post.headers["link"] = target
            post.headers["sum"] = "L," + checksum.name_sum("L", target)
            work.posts.append(post)
        return
    if data_sum is None or parts is None or not parts.whole:
        raise Outcome(499, f"winnow link without a usable {WINNOW_LINK_SUM}/parts header")
    h["sum"] = str(data_sum)            # from here on an ordinary post of this path
    h.pop("link", None)
    h.pop(WINNOW_LINK_SUM, None)
    work.sum = data_sum
    _mkdirs(flow, work.new_dir)
    _whole(flow, work, final, parts)
    flow.counters["transferred"] += 1


def _local_copy(flow, work, relpath):
    """Where this configuration puts the file announced at relpath (same URL base), or None
    when it would not accept it."""
    msg = work.msg
    other = Work(Message(msg.pubtime, msg.baseurl, escape(relpath), dict(msg.headers),
                         topic=msg.topic, exchange=msg.exchange))
    if not flow.accept(other):
        return None
    try:
        return destination(flow, other)
    except Outcome:
        return None
