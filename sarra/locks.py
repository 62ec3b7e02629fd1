"""Locks between the processes of one configuration, and the few other ``fcntl`` calls
(issue 19, item 9): the only module of sarra that imports ``fcntl``, so that every other
module imports, and sr_subscribe and sr_post run, where it does not exist (Windows).

A lock is taken on a file the caller has opened (``fd``, at ``path``) and is exclusive
between processes and between two opens of one file in one process. Two ways, one
behaviour:

* ``flock``: flock(2) on the file itself where ``fcntl`` exists. The kernel releases it
  when the holder closes the file or dies.
* ``lockfile`` elsewhere: ``<path>.excl`` created with O_EXCL, holding the holder's pid
  and process start time (JSON). release() removes it. A lock file whose holder is gone
  (no such process, or a later process reusing its pid: another start time) is stale and
  is broken by the next taker: it renames the file aside, checks that what it renamed is
  the stale one it read, and puts back one it should not have taken. A lock file still
  empty (its creator has not written the identity yet) counts as held for ``FRESH``
  seconds.

The extras: ``read_lease_free`` (sr_watch: is anyone writing the file?) and
``set_pipe_size`` (the Linux splice path) answer "unknown" / do nothing without fcntl.
"""

import errno
import json
import os
import time
from typing import Optional

try:
    import fcntl as _fcntl
except ImportError:          # Windows, or a Python without it: lock files
    _fcntl = None

#: the way locks are taken in this process ('flock' or 'lockfile')
BACKEND = "flock" if _fcntl is not None else "lockfile"
SUFFIX = ".excl"
#: seconds an empty lock file (being written by its creator) counts as held
FRESH = 5.0
#: seconds between attempts of a blocking acquire() on a lock file
POLL = 0.05


class Lock:
    """One lock held: release() it (closing its file releases a flock too)."""

    def __init__(self, fd: int, path: str, backend: str, token: Optional[str] = None):
        self.fd, self.path, self.backend, self.token = fd, path, backend, token

    def release(self) -> None:
        if self.backend is None:
            return
        backend, self.backend = self.backend, None
        if backend == "flock":
            try:
                _fcntl.flock(self.fd, _fcntl.LOCK_UN)
            except (OSError, ValueError):
                pass             # a closed file holds no lock
        else:
            _remove_own(self.path + SUFFIX, self.token)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def acquire(fd: int, path: str, blocking: bool = True, wait: Optional[float] = None,
            backend: Optional[str] = None) -> Optional[Lock]:
    """Lock the file open as ``fd`` at ``path``: a Lock, or None when another holder has it
    and ``blocking`` is false (or ``wait`` seconds passed, when given). OSError for any
    other trouble (a directory that cannot be written, ...)."""
    backend = backend or BACKEND
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        got = _try_flock(fd) if backend == "flock" else _try_lockfile(str(path))
        if got is not False:
            return Lock(fd, str(path), backend, got if backend != "flock" else None)
        if not blocking or (deadline is not None and time.monotonic() >= deadline):
            return None
        if backend == "flock" and deadline is None:
            _fcntl.flock(fd, _fcntl.LOCK_EX)     # sleep in the kernel
            return Lock(fd, str(path), backend)
        time.sleep(POLL)


def _try_flock(fd: int):
    if _fcntl is None:
        raise OSError(errno.ENOSYS, "flock: no fcntl module here")
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


# ---------------------------------------------------------------- lock files

def _start_time(pid: int) -> Optional[float]:
    """Start time of live process pid (None: no such process)."""
    import psutil
    try:
        return float(psutil.Process(int(pid)).create_time())
    except (psutil.Error, ValueError, OverflowError):
        return None


def _token() -> str:
    return json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid()),
                       "nonce": os.urandom(8).hex()})


def _try_lockfile(path: str):
    """The token written when the lock file was made, or False (held by a live holder)."""
    excl = path + SUFFIX
    for _ in range(3):
        token = _token()
        try:
            fd = os.open(excl, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if not _break_stale(excl):
                return False
            continue
        try:
            os.write(fd, token.encode())
        finally:
            os.close(fd)
        return token
    return False


def _read(excl: str) -> Optional[str]:
    try:
        with open(excl, encoding="utf-8", errors="replace") as f:
            return f.read(4096)
    except FileNotFoundError:
        return None


def _stale(text: str, excl: str) -> bool:
    """Is the lock file holding ``text`` left by a holder that is gone?"""
    try:
        rec = json.loads(text)
        pid, start = int(rec["pid"]), rec.get("start")
    except (ValueError, TypeError, KeyError):
        try:      # empty or torn: its creator may be writing it right now
            return time.time() - os.stat(excl).st_mtime > FRESH
        except OSError:
            return False
    now_start = _start_time(pid)
    if now_start is None:
        return True
    return start is not None and abs(now_start - float(start)) > 1.0


def _break_stale(excl: str) -> bool:
    """Remove excl if its holder is gone; True when the caller may try again."""
    text = _read(excl)
    if text is None:
        return True              # released meanwhile
    if not _stale(text, excl):
        return False
    aside = "%s.%d.%s" % (excl, os.getpid(), os.urandom(4).hex())
    try:
        os.rename(excl, aside)
    except FileNotFoundError:
        return True              # another taker broke it first
    if _read(aside) == text:
        os.unlink(aside)
        return True
    # another taker broke it and took the lock meanwhile: give its file back
    try:
        os.link(aside, excl)
    except OSError:
        pass
    _unlink(aside)
    return False


def _remove_own(excl: str, token: Optional[str]) -> None:
    """Remove our lock file (not one someone made after breaking ours as stale)."""
    if token is not None and _read(excl) not in (token, None):
        return
    _unlink(excl)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- the other fcntl calls

def read_lease_free(fd: int) -> Optional[bool]:
    """True if a read lease can be taken on fd (no process has the file open for writing),
    False if not, None when unknown (no leases here, not the file's owner, a remote file
    system). The lease is given back at once."""
    if _fcntl is None or not hasattr(_fcntl, "F_SETLEASE"):
        return None
    try:
        _fcntl.fcntl(fd, _fcntl.F_SETLEASE, _fcntl.F_RDLCK)
    except OSError as e:
        return False if e.errno in (errno.EAGAIN, errno.EBUSY) else None
    _fcntl.fcntl(fd, _fcntl.F_SETLEASE, _fcntl.F_UNLCK)
    return True


_F_SETPIPE_SZ = 1031       # Linux


def set_pipe_size(fd: int, size: int) -> None:
    """Ask for a pipe of size bytes (Linux); a smaller pipe only means more calls."""
    if _fcntl is None:
        return
    try:
        _fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass
