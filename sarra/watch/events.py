"""File system events for sr_watch: event sources, full scans, inotify coverage checks.

* Event sources turn file system activity into :class:`Event` tuples with one vocabulary
  (change, close, delete, move, mkdir, rmdir, dirmove):
  :class:`InotifySource` (watchdog's observer, one recursive watch per root) and
  :class:`PollSource` (stat snapshots compared poll after poll; renames are found by inode),
  so the daemon above behaves the same either way; :func:`walk_files` for full scans.
* Inotify coverage checks: a directory whose watch could not be added (watch limit,
  permission) is found by reading this process's inotify watches in /proc and probing.

Readiness (Pending, temp_name, open_for_writing) is in sarra.watch.ready; the persistent
state (FileState, Rec) and the user.sr_origin marker (mark_written, written_path,
written_by_sarra) in sarra.watch.state.  Their names are re-exported here.
"""

import ctypes
import errno
import logging
import os
import re
import stat
import threading
import time
from collections import deque
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from sarra.watch.ready import Entry, Pending, open_for_writing, temp_name  # noqa: F401
from sarra.watch.state import (ORIGIN_XATTR, FileState, Rec, mark_written,  # noqa: F401
                               written_by_sarra, written_path)

log = logging.getLogger("sarra.watcher")


class Event(NamedTuple):
    kind: str                   # change close delete move mkdir rmdir dirmove
    path: str
    dest: Optional[str] = None  # for move / dirmove


class WatchError(Exception):
    """A directory that cannot be watched; one line naming it and what to do."""

    def __init__(self, text: str, code: int = 0):
        super().__init__(text)
        self.errno = code


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
    moves, unmoved = _in_order(moves)
    return dirmoves + mkdirs + moves + unmoved + changes + deletes + rmdirs


def _in_order(moves: List[Event]) -> Tuple[List[Event], List[Event]]:
    """File moves in an order that can be applied one after the other: a move out of a
    name comes before the move into it (log rotation: log.1 -> log.2 before log -> log.1).
    Moves in a cycle (a swap) cannot be: each becomes a change of its destination (posted
    anew, without the rename). Returns (moves, changes)."""
    out_of = {m.path: m for m in moves}
    done, ordered, cyclic = set(), [], []
    for m in moves:
        chain = []
        while m is not None and m.path not in done and m not in chain:
            chain.append(m)
            m = out_of.get(m.dest)          # the move that must go first
        if m is not None and m in chain:    # a cycle: from m on, the chain loops
            loop = chain[chain.index(m):]
            cyclic += [Event("change", x.dest) for x in loop]
            done.update(x.path for x in loop)
            chain = chain[:chain.index(m)]
        for x in reversed(chain):
            ordered.append(x)
            done.add(x.path)
    return ordered, cyclic


def _replaced(a: _Stat, b: _Stat) -> bool:
    return (a.dev, a.ino) != (b.dev, b.ino) or (a.kind == "d") != (b.kind == "d")


# ---------------------------------------------------------------- full scans

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
