"""When a changed file is ready to be announced by sr_watch.

:class:`Pending` coalesces the events of each path and says when a file is ready: closed by
its writer (inotify close-write, or no process has it open for writing: a read lease can be
taken, :func:`open_for_writing`), or quiet for ``inflight`` seconds, or every ``snapshot``
seconds for a file that is written for hours.  :func:`temp_name` tells the names of files
still being written under a temporary name (never announced).
"""

import os
import re
import signal
import stat
import threading
from typing import Dict, List, Optional, Tuple

from sarra import locks

#: temporary names of our own writers (download.py, transfer/file.py): never posted
_OWN_TEMP = re.compile(r"(^\..*\.sarra-tmp$)|(\.sarra-link$)|(\.tmp-link-\d+$)")


def temp_name(name: str, inflight=None) -> bool:
    """Is this base name a file still being written under a temporary name?"""
    if _OWN_TEMP.search(name):
        return True
    if isinstance(inflight, str) and inflight and inflight.lower() != "none":
        if inflight == ".":
            return name.startswith(".")
        if inflight.endswith("/"):
            return False
        suffix = inflight if inflight.startswith(".") else "." + inflight
        return name.endswith(suffix)
    return False


_sigio_ignored = False


def open_for_writing(path: str) -> Optional[bool]:
    """True if some process has the file open for writing, False if none, None if unknown.

    A read lease (F_SETLEASE) is refused with EAGAIN while anyone holds the file open for
    writing; it needs the file's owner or CAP_LEASE and a local file system (else None).
    """
    global _sigio_ignored
    if not _sigio_ignored:
        # a writer opening the file while we hold the lease sends us SIGIO (default: exit)
        if threading.current_thread() is not threading.main_thread():
            return None
        if not hasattr(signal, "SIGIO"):
            return None                 # not POSIX: no leases either
        signal.signal(signal.SIGIO, signal.SIG_IGN)
        _sigio_ignored = True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        free = locks.read_lease_free(fd)
    finally:
        os.close(fd)
    return None if free is None else not free


# ---------------------------------------------------------------- coalescing, readiness

class Entry:
    __slots__ = ("first", "last", "closed", "oldname", "old_rec", "next_check", "snap")

    def __init__(self, now: float):
        self.first = self.last = self.next_check = now
        self.closed = False
        self.oldname: Optional[str] = None
        self.old_rec = None
        self.snap = False


class Pending:
    """Paths with unannounced changes, and when each is ready to be posted.

    inflight: None (post when closed), a number of quiet seconds (0 = at once), or a
    temporary-name convention (str: treated like None here).  quiet: seconds used when it
    cannot be told whether the file is still open (no lease).  snapshot: post a file still
    being written every that many seconds (0 = never).
    """

    def __init__(self, inflight=None, quiet: float = 1.0, snapshot: float = 0.0,
                 lease: bool = True):
        self.inflight = inflight if isinstance(inflight, (int, float)) else None
        self.quiet = quiet
        self.snapshot = snapshot or 0.0
        self.lease = lease
        self.d: Dict[str, Entry] = {}

    def __len__(self):
        return len(self.d)

    def __contains__(self, path):
        return path in self.d

    def get(self, path: str) -> Optional[Entry]:
        return self.d.get(path)

    def change(self, path: str, now: float) -> Entry:
        e = self.d.get(path)
        if e is None:
            e = self.d[path] = Entry(now)
        e.last = e.next_check = now
        e.closed = False
        return e

    def close(self, path: str, now: float) -> Entry:
        e = self.d.get(path)
        if e is None:
            e = self.d[path] = Entry(now)
        e.closed = True
        e.next_check = now
        return e

    def found(self, path: str, now: float) -> Entry:
        """A file seen by a scan: pending (unless it already is), readiness from its mtime."""
        e = self.d.get(path)
        if e is None:
            e = self.d[path] = Entry(now)
            e.last = 0.0
        return e

    def pop(self, path: str) -> Optional[Entry]:
        return self.d.pop(path, None)

    def move(self, src: str, dst: str, now: float) -> Entry:
        """dst takes over src's entry (a rename makes the file complete)."""
        old = self.d.pop(src, None)
        e = self.d.get(dst)
        if e is None:
            e = self.d[dst] = Entry(now)
            e.closed = old.closed if old is not None else True
        if old is not None and old.oldname and not e.oldname:
            e.oldname, e.old_rec = old.oldname, old.old_rec
        e.next_check = now
        return e

    def under(self, d: str) -> List[str]:
        pre = d.rstrip("/") + "/"
        return [p for p in self.d if p.startswith(pre)]

    def ready(self, now: float) -> List[Tuple[str, Entry]]:
        """Remove and return the entries ready to be posted, oldest first."""
        out = []
        for path, e in list(self.d.items()):
            if e.next_check > now:
                continue
            wait = self._wait(path, e, now)
            if wait <= 0:
                out.append((path, e))
                del self.d[path]
            else:
                e.next_check = now + wait
        out.sort(key=lambda pe: pe[1].first)
        return out

    def _wait(self, path: str, e: Entry, now: float) -> float:
        """0 when ready, else seconds until it is worth looking again."""
        if self.inflight == 0:
            return 0
        try:
            st = os.lstat(path)
        except OSError:
            return 0                      # gone: the daemon sorts it out
        if not stat.S_ISREG(st.st_mode):
            return 0
        mtime = min(st.st_mtime, now)
        age = now - max(e.last, mtime)
        if self.inflight is not None:
            left = self.inflight - age
        elif e.closed:
            left = 0
        else:
            busy = open_for_writing(path) if self.lease else None
            if busy is False:
                left = 0
            elif busy is None:
                left = self.quiet - age
            else:
                left = max(0.5, min(5.0, age))     # open for writing: look again later
        if left > 0 and self.snapshot and now - e.first >= self.snapshot:
            e.snap = True
            return 0
        return left
