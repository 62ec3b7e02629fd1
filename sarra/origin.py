"""The ``user.sr_origin`` marker: "sarra wrote this file here, as it is now".

A subscriber (sr_subscribe, sr_sarra: flow/download.py) marks each file it writes, once its
modification time is set and before it gets its final name; sr_watch with
``ignore_written`` (watch/announce.py) skips a file whose marker still describes it, so a
two-way synchronisation does not announce a received file back (man sr_watch, TWO-WAY
SYNCHRONISATION).  The marker holds the size, the mtime in ns, the writer and the final
path: a local change (size or mtime) or a local rename makes the file the machine's own.
Where extended attributes fail (a file system without them), nothing is marked.
"""

import os
from typing import Optional

ORIGIN_XATTR = "user.sr_origin"


def mark_written(path: str, final: Optional[str] = None, writer: str = "sarra") -> bool:
    """Record on a file just written by a subscriber that sarra wrote it (call it after its
    mtime is set, before renaming it to ``final``).  Returns False where xattrs fail."""
    try:
        st = os.stat(path)
        value = "%d %d %s %s" % (st.st_size, st.st_mtime_ns, writer,
                                 os.path.abspath(final or path))
        os.setxattr(path, ORIGIN_XATTR, value.encode("utf-8"))
        return True
    except (OSError, AttributeError):
        return False


def written_path(path: str, st: os.stat_result) -> Optional[str]:
    """The path a subscriber wrote this file to (mark_written), if the file still has the
    size and mtime it had then (a local change makes the marker stale); else None."""
    try:
        value = os.getxattr(path, ORIGIN_XATTR, follow_symlinks=False).decode("utf-8")
        size, mtime_ns, _writer, where = value.split(" ", 3)
        if int(size) != st.st_size or int(mtime_ns) != st.st_mtime_ns:
            return None
    except (OSError, AttributeError, ValueError):
        return None
    return where


def written_by_sarra(path: str, st: os.stat_result) -> bool:
    """True if a subscriber wrote this file here as it is now (same size, mtime and path):
    a local change or a local rename makes it ours."""
    where = written_path(path, st)
    return where is not None and where in (os.path.abspath(path), os.path.realpath(path))
