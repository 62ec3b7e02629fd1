"""Where a downloaded file goes: directory, mirror, strip, flatten, rename, inflight names.

Everything that turns a message into a local path lives here, together with the one check
that matters most: the result must stay inside the target directory (no '..', no absolute
rename, no escape through a symbolic link).
"""

import os
import re
from typing import Optional, Tuple

from sarra.message import unescape


class PlacementError(Exception):
    """The message would write outside the target tree (reported as 403)."""

    code = 403


def _components(path: str, what: str):
    comps = [c for c in path.split("/") if c != ""]
    for c in comps:
        if c in (".", "..") or "\0" in c:
            raise PlacementError(f"{what} {path!r} contains {c!r}: refusing to write outside the target directory")
    return comps


def strip_components(comps, strip) -> list:
    """Drop ``strip`` leading components (an int), or the first match of a regex (a str)."""
    if not strip:
        return comps
    if isinstance(strip, int) or (isinstance(strip, str) and strip.isdigit()):
        n = int(strip)
        return comps[n:] if n < len(comps) else comps[-1:]
    joined = re.sub(strip, "", "/".join(comps), count=1)
    return [c for c in joined.split("/") if c] or comps[-1:]


def rule(cfg, mask, default_directory: str) -> Tuple[str, bool, object, str]:
    """(directory, mirror, strip, flatten) in force for a message, the same rule for a
    download and a send: those of the accept clause that matched it (``mask``) when there
    is one (its directory only when it names one), else the configuration's."""
    m = mask
    directory = ((m.directory if m is not None and m.directory else None) or cfg.directory
                 or default_directory)
    mirror = m.mirror if m is not None else cfg.mirror
    strip = m.strip if m is not None else cfg.strip
    flatten = (m.flatten if m is not None else cfg.flatten) or "/"
    return directory, mirror, strip, flatten


def local_name(relpath: str, directory: str, mirror: bool = False, strip=0,
               flatten: str = "/", rename: Optional[str] = None) -> Tuple[str, str]:
    """(new_dir, new_file) for an (escaped) relpath placed under ``directory``."""
    path = unescape(relpath)
    comps = _components(path, "relpath")
    if not comps:
        raise PlacementError(f"relpath {relpath!r} names no file")
    if rename:
        if rename.startswith("/") or rename.startswith("~"):
            raise PlacementError(f"rename {rename!r} is an absolute path: refusing to write "
                                 "outside the target directory")
        rcomps = _components(unescape(rename), "rename")
        if rename.endswith("/"):
            rcomps = rcomps + comps[-1:]
        if not rcomps:
            raise PlacementError(f"rename {rename!r} names no file")
        comps = rcomps
    comps = strip_components(comps, strip)
    if flatten and flatten != "/":
        return directory, flatten.join(comps)
    if mirror:
        return os.path.join(directory, *comps[:-1]) if len(comps) > 1 else directory, comps[-1]
    return directory, comps[-1]


def check_inside(new_dir: str, new_file: str, root: str, real_root: Optional[str] = None) -> str:
    """Full path, after checking that it resolves inside ``root`` (symbolic links followed).
    ``real_root``: os.path.realpath(root) when the caller has it already."""
    if not new_file or "/" in new_file or new_file in (".", ".."):
        raise PlacementError(f"file name {new_file!r} is not a plain name")
    if real_root is None:
        real_root = os.path.realpath(root)
    prefix = root.rstrip("/") + "/"
    if new_dir == root:
        real_dir = real_root
    elif new_dir.startswith(prefix):
        real_dir = _resolve_below(real_root, new_dir[len(prefix):])
    else:
        real_dir = os.path.realpath(new_dir)
    if real_dir != real_root and not real_dir.startswith(real_root.rstrip("/") + "/"):
        raise PlacementError(f"{os.path.join(new_dir, new_file)} resolves to {real_dir}, "
                             f"outside the target directory {real_root}")
    return os.path.join(new_dir, new_file)


def _resolve_below(real_root: str, rel: str) -> str:
    """os.path.realpath(real_root/rel) for a real_root without symbolic links: only the
    components below it are looked at (one lstat each, instead of the whole path)."""
    cur = real_root
    comps = rel.split("/")
    for i, c in enumerate(comps):
        if c in ("", "."):
            continue
        nxt = os.path.join(cur, c)
        if c == ".." or os.path.islink(nxt):
            return os.path.realpath(os.path.join(nxt, *comps[i + 1:]))
        cur = nxt
    return cur


def inflight_path(final: str, inflight) -> str:
    """Temporary name used while writing. ``inflight`` is '.tmp' (suffix), '.' (prefix),
    'tmp/' (sub-directory), or NONE/None. A temporary name is used even with NONE (hidden,
    '.sarra-tmp'): a file that fails its checksum must never appear under its final name."""
    d, f = os.path.split(final)
    if inflight in (None, "", "NONE", "none", "None") or not isinstance(inflight, str):
        return os.path.join(d, "." + f + ".sarra-tmp")
    if inflight.endswith("/"):
        return os.path.join(d, inflight.rstrip("/"), f)
    if inflight == ".":
        return os.path.join(d, "." + f)
    if inflight.startswith("."):
        return final + inflight
    return final + "." + inflight
