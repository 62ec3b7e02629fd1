"""What sr_watch needs below the posting: events, readiness, and a persistent file state.

* Event sources turn file system activity into :class:`Event` tuples with one vocabulary
  (change, close, delete, move, mkdir, rmdir, dirmove):
  :class:`InotifySource` (watchdog's observer, one recursive watch per root) and
  :class:`PollSource` (stat snapshots compared poll after poll; renames are found by inode),
  so the daemon above behaves the same either way.
* :class:`Pending` coalesces the events of each path and says when a file is ready: closed
  by its writer (inotify close-write, or no process has it open for writing: a read lease
  can be taken), or quiet for ``inflight`` seconds, or every ``snapshot`` seconds for a
  file that is written for hours.
* :class:`FileState` is the persistent record (path, size, mtime, per-block sums, link
  target) of what was announced, so a restart re-posts only what changed.
* Inotify coverage checks: a directory whose watch could not be added (watch limit,
  permission) is found by reading this process's inotify watches in /proc and probing.
* :func:`mark_written` / :func:`written_by_sarra`: the ``user.sr_origin`` extended attribute
  a subscriber sets on the files it writes, so a watch of the same tree can skip them.
"""

import ctypes
import errno
import fcntl
import logging
import os
import re
import signal
import stat
import threading
import time
from collections import deque
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple
from urllib.parse import quote, unquote

from sarra.cache import atomic_write_lines

log = logging.getLogger("sarra.watcher")

ORIGIN_XATTR = "user.sr_origin"
#: temporary names of our own writers (download.py, transfer/file.py): never posted
_OWN_TEMP = re.compile(r"(^\..*\.sarra-tmp$)|(\.sarra-link$)|(\.tmp-link-\d+$)")


class Event(NamedTuple):
    kind: str                   # change close delete move mkdir rmdir dirmove
    path: str
    dest: Optional[str] = None  # for move / dirmove


class WatchError(Exception):
    """A directory that cannot be watched; one line naming it and what to do."""

    def __init__(self, text: str, code: int = 0):
        super().__init__(text)
        self.errno = code


# ---------------------------------------------------------------- small helpers

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
        signal.signal(signal.SIGIO, signal.SIG_IGN)
        _sigio_ignored = True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        return True if e.errno in (errno.EAGAIN, errno.EBUSY) else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


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


# ---------------------------------------------------------------- inotify coverage

_FDINFO = re.compile(r"^inotify wd:\S+ ino:([0-9a-f]+) sdev:([0-9a-f]+)", re.M)


def inotify_watched() -> Optional[Set[Tuple[int, int, int]]]:
    """(major, minor, inode) of every inode this process watches with inotify, from
    /proc/self/fdinfo; None when that cannot be read."""
    out, found = set(), False
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink("/proc/self/fd/" + fd) != "anon_inode:inotify":
                continue
            with open("/proc/self/fdinfo/" + fd) as f:
                text = f.read()
        except OSError:
            continue
        found = True
        for ino, sdev in _FDINFO.findall(text):
            d = int(sdev, 16)
            out.add((d >> 20, d & 0xFFFFF, int(ino, 16)))
    return out if found else None


def dir_key(st: os.stat_result) -> Tuple[int, int, int]:
    return os.major(st.st_dev), os.minor(st.st_dev), st.st_ino


_libc = None


def probe_watch(path: str) -> int:
    """Try inotify_add_watch on a directory with a private inotify instance (closed at
    once); 0 if it works, else the errno (ENOSPC: watch limit, EACCES, EMFILE...)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        fd = _libc.inotify_init1(os.O_CLOEXEC)
        if fd < 0:
            return ctypes.get_errno()
        try:
            wd = _libc.inotify_add_watch(fd, os.fsencode(path), 0x100)  # IN_CREATE
            return ctypes.get_errno() if wd < 0 else 0
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        return 0


def watch_limit() -> str:
    """The inotify watch limit(s) in force, for messages."""
    vals = []
    for p in ("/proc/sys/fs/inotify/max_user_watches", "/proc/sys/user/max_inotify_watches"):
        try:
            with open(p) as f:
                vals.append(int(f.read().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return str(min(vals)) if vals else "unknown"


def limit_message(path: str) -> str:
    return (f"{path}: inotify watch limit reached (limit {watch_limit()}): this directory is "
            f"polled instead; raise the limit with 'sysctl -w fs.inotify.max_user_watches=N' "
            f"(and in /etc/sysctl.d/ to keep it)")


def describe_oserror(path: str, e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return limit_message(path)
    if e.errno == errno.EMFILE:
        return (f"{path}: inotify instance limit reached; raise 'sysctl -w "
                f"fs.inotify.max_user_instances=N' (polling instead)")
    if e.errno == errno.EACCES:
        return f"{path}: permission denied: cannot watch it"
    if e.errno == errno.ENOENT:
        return f"{path}: no such directory"
    return f"{path}: cannot watch: {e.strerror or e}"


# ---------------------------------------------------------------- sources

class Sink:
    """Thread-safe queue of events with a wake-up flag."""

    def __init__(self):
        self.q = deque()
        self.wake = threading.Event()

    def put(self, ev: Event) -> None:
        q = self.q
        try:
            if q[-1] == ev:            # e.g. a write after a write: nothing new
                return
        except IndexError:             # empty (or emptied by the reader meanwhile)
            pass
        q.append(ev)
        if not self.wake.is_set():
            self.wake.set()

    def drain(self) -> List[Event]:
        out = []
        self.wake.clear()
        while self.q:
            out.append(self.q.popleft())
        return out


class InotifySource:
    """watchdog's observer with one recursive watch per root."""

    def __init__(self, sink: Sink, follow_symlinks: bool = False):
        from watchdog import events as wde
        from watchdog.observers import Observer
        self.sink = sink
        self.follow = follow_symlinks
        self.watches: Dict[str, object] = {}
        self.prefix: Dict[str, str] = {}       # scheduled (real) path -> root as configured
        names = ("FileCreatedEvent", "FileModifiedEvent", "FileDeletedEvent", "FileMovedEvent",
                 "FileClosedEvent", "DirCreatedEvent", "DirDeletedEvent", "DirMovedEvent")
        self.filter = [getattr(wde, n) for n in names if hasattr(wde, n)]
        self.handler = _Handler(self)
        self.overflowed = threading.Event()     # the kernel dropped events: rescan
        logging.getLogger("watchdog.observers").addHandler(_OverflowSeen(self))
        self.observer = Observer()
        self.observer.daemon = True
        self.observer.start()

    def user_path(self, path) -> str:
        path = os.fsdecode(path)
        for real, root in self.prefix.items():
            if path == real or path.startswith(real + "/"):
                return root + path[len(real):]
        return path

    def add(self, root: str) -> None:
        """Watch root recursively; WatchError (with the reason) when impossible."""
        real = os.path.realpath(root)
        kw = {"recursive": True}
        for extra in ({"event_filter": self.filter, "follow_symlink": self.follow},
                      {"event_filter": self.filter}, {}):
            try:
                w = self.observer.schedule(self.handler, real, **kw, **extra)
                break
            except TypeError:       # older watchdog: fewer keywords
                continue
            except OSError as e:
                raise WatchError(describe_oserror(root, e), e.errno) from None
        self.watches[root] = w
        if real != root:
            self.prefix[real] = root

    def remove(self, root: str) -> None:
        w = self.watches.pop(root, None)
        self.prefix.pop(os.path.realpath(root), None)
        if w is not None:
            try:
                self.observer.unschedule(w)
            except (KeyError, OSError, RuntimeError):
                pass

    def stop(self) -> None:
        try:
            self.observer.stop()
            self.observer.join(2.0)
        except RuntimeError:
            pass


class _OverflowSeen(logging.Handler):
    """watchdog reports an inotify queue overflow (IN_Q_OVERFLOW) only by a log line."""

    def __init__(self, source: InotifySource):
        super().__init__(logging.WARNING)
        self.source = source

    def emit(self, record) -> None:
        if "overflow" in record.getMessage().lower():
            self.source.overflowed.set()
            self.source.sink.wake.set()


class _Handler:
    """watchdog handler: translate its events to ours (others, e.g. attrib, are dropped)."""

    def __init__(self, source: InotifySource):
        self.source = source

    def dispatch(self, ev) -> None:
        t, isdir = ev.event_type, ev.is_directory
        put, p = self.source.sink.put, self.source.user_path
        if t == "created":
            put(Event("mkdir" if isdir else "change", p(ev.src_path)))
        elif t == "modified" and not isdir:
            put(Event("change", p(ev.src_path)))
        elif t == "closed" and not isdir:
            put(Event("close", p(ev.src_path)))
        elif t == "deleted":
            put(Event("rmdir" if isdir else "delete", p(ev.src_path)))
        elif t == "moved":
            put(Event("dirmove" if isdir else "move", p(ev.src_path), p(ev.dest_path)))


class _Stat(NamedTuple):
    kind: str        # f (file), l (link), d (directory), o (other)
    size: int
    mtime_ns: int
    dev: int
    ino: int


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISLNK(mode):
        return "l"
    if stat.S_ISDIR(mode):
        return "d"
    return "o"


class PollSource:
    """Stat snapshots of directories (recursive or not), compared poll after poll."""

    def __init__(self, follow_symlinks: bool = False):
        self.follow = follow_symlinks
        self.entries: Dict[str, bool] = {}          # dir -> recursive
        self.snap: Dict[str, _Stat] = {}
        self.denied: Set[str] = set()               # directories that could not be listed
        self.duration = 0.0                         # seconds the last poll took

    def add(self, path: str, recursive: bool = True) -> None:
        """Start polling path; its current content is the baseline (no events)."""
        self.entries[path] = recursive
        self._scan(path, recursive, self.snap, set())

    def remove(self, path: str) -> None:
        self.entries.pop(path, None)
        pre = path + "/"
        for p in [p for p in self.snap if p.startswith(pre)]:
            del self.snap[p]

    def _scan(self, d: str, recursive: bool, out: Dict[str, _Stat], seen: set) -> None:
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            return
        except NotADirectoryError:        # a file given as a path to watch
            try:
                st = os.lstat(d)
                out[d] = _Stat(_kind(st.st_mode), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
            except OSError:
                pass
            return
        except OSError:
            self.denied.add(d)
            pre = d + "/"                 # keep what we knew below it: no false deletes
            for p, v in self.snap.items():
                if p.startswith(pre):
                    out[p] = v
            return
        self.denied.discard(d)
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                k = _kind(st.st_mode)
                out[e.path] = _Stat(k, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
                if recursive and (k == "d" or (k == "l" and self.follow and e.is_dir())):
                    key = (st.st_dev, st.st_ino) if k == "d" else None
                    if k == "l":
                        try:
                            t = os.stat(e.path)
                            key = (t.st_dev, t.st_ino)
                        except OSError:
                            continue
                    if key in seen:
                        continue
                    seen.add(key)
                    self._scan(e.path, True, out, seen)

    def poll(self) -> List[Event]:
        t0 = time.monotonic()
        new: Dict[str, _Stat] = {}
        for d, rec in list(self.entries.items()):
            self._scan(d, rec, new, set())
        old, self.snap = self.snap, new
        events = diff(old, new)
        self.duration = time.monotonic() - t0
        return events


def diff(old: Dict[str, _Stat], new: Dict[str, _Stat]) -> List[Event]:
    """Events that turn snapshot old into snapshot new, in an order the daemon can apply:
    directory moves, new directories, file moves, changes, deletions, removed directories."""
    gone = [p for p in old if p not in new or _replaced(old[p], new[p])]
    by_ino = {}
    for p in gone:
        v = old[p]
        by_ino.setdefault((v.dev, v.ino, v.kind == "d"), p)
    dirmoves, mkdirs, moves, changes = [], [], [], []
    moved_from = set()
    for p in sorted(new):
        v = new[p]
        o = old.get(p)
        if o is not None and not _replaced(o, v):
            if v.kind != "d" and (o.size, o.mtime_ns) != (v.size, v.mtime_ns):
                changes.append(Event("change", p))
            continue
        src = by_ino.pop((v.dev, v.ino, v.kind == "d"), None)
        if src is not None and src != p:
            moved_from.add(src)
            (dirmoves if v.kind == "d" else moves).append(
                Event("dirmove" if v.kind == "d" else "move", src, p))
        elif v.kind == "d":
            mkdirs.append(Event("mkdir", p))
        else:
            changes.append(Event("change", p))
    deletes, rmdirs = [], []
    for p in sorted(gone, reverse=True):
        if p in moved_from or (p in new and not _replaced(old[p], new[p])):
            continue
        if p in new and old[p].kind != "d" and new[p].kind != "d":
            continue                       # replaced in place: reported as a change above
        (rmdirs if old[p].kind == "d" else deletes).append(
            Event("rmdir" if old[p].kind == "d" else "delete", p))
    return dirmoves + mkdirs + moves + changes + deletes + rmdirs


def _replaced(a: _Stat, b: _Stat) -> bool:
    return (a.dev, a.ino) != (b.dev, b.ino) or (a.kind == "d") != (b.kind == "d")


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


# ---------------------------------------------------------------- persistent state

class Rec(NamedTuple):
    size: int = 0
    mtime_ns: int = 0
    bsz: int = 0
    sums: Tuple[str, ...] = ()
    link: Optional[str] = None
    foreign: bool = False             # written by sarra (marker), never announced by us


class FileState:
    """What was announced per local path, persisted as an append-only journal.

    Lines: ``F <path> <size> <mtime_ns> <bsz> <sums;...|-> <foreign>``, ``L <path>
    <target>``, ``D <path>`` (fields url-quoted); later lines win.  :meth:`record` stages
    a path; :meth:`commit` appends the staged paths once their posts are confirmed.
    """

    def __init__(self, path: Optional[str]):
        self.path = path
        self.d: Dict[str, Rec] = {}
        self._fp = None
        self._lines = 0
        self._dirty: Dict[str, Optional[Rec]] = {}   # path -> value before this batch
        if path:
            self._load()

    def __len__(self):
        return len(self.d)

    def __contains__(self, p):
        return p in self.d

    def get(self, p: str) -> Optional[Rec]:
        return self.d.get(p)

    def set(self, p: str, rec: Rec) -> None:
        self._dirty.setdefault(p, self.d.get(p))
        self.d[p] = rec

    def pop(self, p: str) -> Optional[Rec]:
        if p in self.d:
            self._dirty.setdefault(p, self.d[p])
        return self.d.pop(p, None)

    def under(self, d: str) -> List[str]:
        pre = d.rstrip("/") + "/"
        return sorted(p for p in self.d if p.startswith(pre))

    def rollback(self) -> List[str]:
        """Undo the changes since the last commit; returns the paths concerned."""
        paths = list(self._dirty)
        for p, old in self._dirty.items():
            if old is None:
                self.d.pop(p, None)
            else:
                self.d[p] = old
        self._dirty.clear()
        return paths

    def commit(self) -> None:
        if self.path and self._dirty:
            for p in self._dirty:
                self._write(self._line(p, self.d.get(p)))
            self._fp.flush()
        self._dirty.clear()
        if self._lines > 2 * len(self.d) + 1000:
            self.compact()

    @staticmethod
    def _line(p: str, r: Optional[Rec]) -> str:
        q = quote(p, safe="/")
        if r is None:
            return f"D {q}\n"
        if r.link is not None:
            return f"L {q} {quote(r.link, safe='/')}\n"
        sums = quote(";".join(r.sums), safe=",") if r.sums else "-"
        return f"F {q} {r.size} {r.mtime_ns} {r.bsz} {sums} {int(r.foreign)}\n"

    def _write(self, line: str) -> None:
        if self._fp is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._fp = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)
        self._fp.write(line)
        self._lines += 1

    def _load(self) -> None:
        try:
            f = open(self.path, encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        bad = first = 0
        with f:
            for n, line in enumerate(f, 1):
                self._lines += 1
                w = line.split()
                try:
                    if not line.endswith("\n"):
                        raise ValueError
                    p = unquote(w[1])
                    if w[0] == "D" and len(w) == 2:
                        self.d.pop(p, None)
                    elif w[0] == "L" and len(w) == 3:
                        self.d[p] = Rec(link=unquote(w[2]))
                    elif w[0] == "F" and len(w) == 7:
                        sums = () if w[5] == "-" else tuple(unquote(w[5]).split(";"))
                        self.d[p] = Rec(int(w[2]), int(w[3]), int(w[4]), sums, None, w[6] == "1")
                    else:
                        raise ValueError
                except (ValueError, IndexError):
                    bad += 1
                    first = first or n
        if bad:
            log.warning("%s:%d: ignoring %d corrupt state line(s)", self.path, first, bad)

    def compact(self) -> None:
        if not self.path:
            return
        self.close()
        atomic_write_lines(self.path, (self._line(p, r) for p, r in self.d.items()))
        self._lines = len(self.d)

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()
            self._fp = None


def walk_files(root: str, follow_symlinks: bool = False,
               on_error=None) -> Iterable[Tuple[str, bool]]:
    """(path, is_dir) of everything below root (directories included, links not followed
    unless asked); unreadable directories go to on_error(OSError)."""
    for top, dirs, files in os.walk(root, followlinks=follow_symlinks, onerror=on_error):
        for name in dirs:
            full = os.path.join(top, name)
            if os.path.islink(full) and not follow_symlinks:
                yield full, False
            else:
                yield full, True
        for name in files:
            yield os.path.join(top, name), False
