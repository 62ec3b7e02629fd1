"""Quotas per source on a pump (issue 23, item 2): sr_sarra's ``quota`` option.

Each source's use is a ledger in the configuration's state dir (``quota_<source>.ledger``):
one JSON line per change, ``{"p": local path, "s": bytes or null (removed), "t": time}``,
appended under a lock (``quota_<source>.lock``) that the instances of the configuration
share.  Each process keeps the map path -> bytes and reads only the lines appended since it
last looked: measuring costs one short read and one append per file, never a walk.

When:
  * before the transfer (the work step, ``guarded``): the file's announced size (the
    whole file's, for a block) is charged to the source; when that would take it over
    its bytes or files limit, the post is refused with ``403 Forbidden: over quota ...``
    (its report tells the source its use and limit) and nothing is fetched.  A file the
    ledger already holds is charged only its growth: the blocks of a file in parts after
    its first, and a retry, are never refused (what was accepted is completed).  A
    transfer that fails for good releases what it charged.
  * after a removal (``sum R``, the old name of a rename too): the path is released; a
    rename's new name comes as a post of its own, charged as any.
  * at most every ``quota_check`` seconds (a drift check): each path of the ledger is
    looked at (lstat): its real size is taken, a path gone for more than GRACE seconds is
    dropped (removed by hand, by a cleanup job); the ledger is rewritten compact.  Files
    put in the tree by anything other than this configuration are not the sources'.
"""

import functools
import hashlib
import json
import os
import re
import time
from typing import Dict, Optional

from sarra import locks, paths
from sarra.config import quotaspec
from sarra.flow.work import Outcome, download_stopped

#: seconds a charged path may be absent (its transfer in progress) before a drift check drops it
GRACE = 3600.0
SUMMARY = "quota.json"


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@-")


def _file_name(source: str) -> str:
    """quota_<source>, its UTF-8 bytes other than [A-Za-z0-9_@-] written %XX (a name no
    source can steer out of the state dir, one per source); a long one shortened with
    its hash."""
    data = source.encode("utf-8", "surrogateescape")
    safe = "".join(chr(b) if b in _SAFE else "%%%02X" % b for b in data)
    if len(safe) > 120:
        safe = safe[:80] + "%%" + hashlib.sha256(data).hexdigest()[:32]
    return "quota_" + safe


def _source_of(file_name: str) -> Optional[str]:
    """The source of a ledger's file name (None: a shortened one, not reversible)."""
    text = file_name[len("quota_"):-len(".ledger")]
    if "%%" in text:
        return None
    try:
        return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text).encode(
            "latin-1").decode("utf-8", "surrogateescape")
    except (UnicodeError, ValueError):
        return None


def human(n: Optional[int]) -> str:
    if n is None:
        return "unlimited"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class Ledger:
    """What one source keeps in this configuration's tree, shared by its instances."""

    def __init__(self, directory: str, source: str):
        self.source = source
        base = os.path.join(directory, _file_name(source))
        self.path, self.lock_path = base + ".ledger", base + ".lock"
        self.sizes: Dict[str, int] = {}
        self.times: Dict[str, float] = {}
        self.bytes = 0
        self._ino, self._offset = None, 0

    # ----------------------------------------------------------- the shared file
    def _locked(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            lock = locks.acquire(fd, self.lock_path)
        except BaseException:
            os.close(fd)
            raise
        return fd, lock

    def _unlock(self, fd, lock):
        lock.release()
        os.close(fd)

    def _apply(self, path: str, size: Optional[int], t: float):
        old = self.sizes.pop(path, None)
        self.times.pop(path, None)
        if old is not None:
            self.bytes -= old
        if size is not None:
            self.sizes[path], self.times[path] = size, t
            self.bytes += size

    def _catch_up(self):
        """Read the lines appended since the last look (all of them after a rewrite)."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            self.sizes, self.times, self.bytes, self._ino, self._offset = {}, {}, 0, None, 0
            return
        with f:
            st = os.fstat(f.fileno())
            if st.st_ino != self._ino or st.st_size < self._offset:
                self.sizes, self.times, self.bytes = {}, {}, 0
                self._ino, self._offset = st.st_ino, 0
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1         # a line still being written waits
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
                size = rec.get("s")
                self._apply(str(rec["p"]), None if size is None else int(size),
                            float(rec.get("t") or 0))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue                    # a torn or foreign line: the drift check mends
        self._offset += end

    def _append(self, path: str, size: Optional[int], now: float):
        line = json.dumps({"p": path, "s": size, "t": round(now, 3)}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)
        self._catch_up()

    # ----------------------------------------------------------- the operations
    def usage(self):
        fd, lock = self._locked()
        try:
            self._catch_up()
            return self.bytes, len(self.sizes)
        finally:
            self._unlock(fd, lock)

    def charge(self, path: str, size: int, max_bytes: Optional[int],
               max_files: Optional[int], force: bool = False, now: Optional[float] = None):
        """Charge size bytes at path: (None, what path had before) when charged, (the
        reason, ...) when it would exceed a limit (never with force: what was accepted
        already)."""
        now = time.time() if now is None else now
        fd, lock = self._locked()
        try:
            self._catch_up()
            old = self.sizes.get(path)
            grow = size - (old or 0)
            files = len(self.sizes) + (old is None)
            if not force:
                if max_bytes is not None and grow > 0 and self.bytes + grow > max_bytes:
                    return (f"over quota: source {self.source} uses {human(self.bytes)} "
                            f"of {human(max_bytes)} ({self.bytes} of {max_bytes} bytes), "
                            f"this file needs {grow} more"), old
                if max_files is not None and old is None and files > max_files:
                    return (f"over quota: source {self.source} has {len(self.sizes)} of "
                            f"{max_files} files ({self.bytes} bytes used)"), old
            if old != size or now - self.times.get(path, now) > GRACE / 2:
                self._append(path, size, now)   # (a file in blocks: its time kept fresh)
            return None, old
        finally:
            self._unlock(fd, lock)

    def release(self, path: str, now: Optional[float] = None):
        now = time.time() if now is None else now
        fd, lock = self._locked()
        try:
            self._catch_up()
            size = self.sizes.get(path)
            if size is None:
                return
            self._append(path, None, now)
        finally:
            self._unlock(fd, lock)

    def check(self, now: Optional[float] = None) -> int:
        """The drift check: every path's real size; the ledger rewritten compact. Returns
        the bytes corrected (positive: the ledger had too much)."""
        now = time.time() if now is None else now
        fd, lock = self._locked()
        try:
            self._catch_up()
            before, sizes, times = self.bytes, {}, {}
            for path, size in self.sizes.items():
                try:
                    sizes[path], times[path] = os.lstat(path).st_size, self.times[path]
                    if self.times[path] > now - GRACE:
                        sizes[path] = max(sizes[path], size)    # blocks still to come
                except FileNotFoundError:
                    if self.times[path] > now - GRACE:
                        sizes[path], times[path] = size, self.times[path]
                except OSError:
                    sizes[path], times[path] = size, self.times[path]
            lines = (json.dumps({"p": p, "s": s, "t": round(times[p], 3)}) + "\n"
                     for p, s in sizes.items())
            paths.atomic_write_lines(self.path, lines)
            self._ino = None                # read it all again
            self._catch_up()
            return before - self.bytes
        finally:
            self._unlock(fd, lock)


# ---------------------------------------------------------------- the flow's side

class Quotas:
    """The quotas of one sr_sarra process: flow.quota (None without the option)."""

    def __init__(self, directory: str, limits, every: float):
        self.directory, self.limits, self.every = directory, limits, every
        self.ledgers: Dict[str, Ledger] = {}
        self.next_check = time.time() + min(every, 60.0)
        self._discover()                    # every source's use shown from the start

    @classmethod
    def for_flow(cls, flow) -> Optional["Quotas"]:
        limits = quotaspec.parse(getattr(flow.cfg, "quota", None) or [])
        if not limits:
            return None
        return cls(flow.user_cache_dir, limits, float(getattr(flow.cfg, "quota_check", 0) or 600))

    def ledger(self, source: str) -> Ledger:
        if source not in self.ledgers:
            self.ledgers[source] = Ledger(self.directory, source)
        return self.ledgers[source]

    def summary(self) -> dict:
        """{source: {bytes, files, max_bytes, max_files}} of the sources with a ledger."""
        out = {}
        for source, led in sorted(self.ledgers.items()):
            max_bytes, max_files = quotaspec.limits_for(self.limits, source)
            try:
                used, files = led.usage()       # what the other instances added too
            except OSError:
                used, files = led.bytes, len(led.sizes)
            out[source] = {"bytes": used, "files": files,
                           "max_bytes": max_bytes, "max_files": max_files}
        return out

    def tick(self, log, now: Optional[float] = None):
        """The drift check of every ledger, at most every ``quota_check`` seconds."""
        now = time.time() if now is None else now
        if now < self.next_check:
            return
        self.next_check = now + self.every
        self._discover()
        for led in self.ledgers.values():
            try:
                fixed = led.check(now)
            except OSError as e:
                log.warning("quota check of source %s: %s", led.source, e)
                continue
            if fixed:
                log.info("quota check: source %s uses %d bytes in %d files (corrected by %d)",
                         led.source, led.bytes, len(led.sizes), -fixed)

    def _discover(self):
        """The ledgers other instances started (a source this process has not seen)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        known = {os.path.basename(led.path) for led in self.ledgers.values()}
        for name in names:
            if name.startswith("quota_") and name.endswith(".ledger") and name not in known:
                source = _source_of(name)
                if source is not None:
                    self.ledger(source)


def _quotas(flow) -> Optional[Quotas]:
    """flow.quota, made again when a reload changed the options."""
    spec = (tuple(getattr(flow.cfg, "quota", None) or ()), getattr(flow.cfg, "quota_check", None))
    if getattr(flow, "quota_spec", None) != spec:
        flow.quota_spec, flow.quota = spec, Quotas.for_flow(flow)
    return flow.quota


def guarded(step):
    """sr_sarra's work step with the quota of the message's source around it."""

    @functools.wraps(step)
    def work_step(flow, work):
        q = _quotas(flow)
        source = work.msg.headers.get("source")
        if q is None or not source or quotaspec.limits_for(q.limits, source) == (None, None):
            return step(flow, work)         # no quota for it: no ledger either
        algo, parts = work.msg.sum.algo, work.msg.parts
        if algo == "R":                     # a removal, or the old name of a rename
            step(flow, work)
            final = getattr(work, "local_path", None)
            if final:
                q.ledger(source).release(final)
            return None
        if parts is None or algo in ("L", "m", "r", "l"):
            return step(flow, work)
        if work.new_file is None:
            from sarra.flow import download
            download.destination(flow, work)
        final = os.path.join(work.new_dir, work.new_file)
        led = q.ledger(source)
        max_bytes, max_files = quotaspec.limits_for(q.limits, source)
        why, old = led.charge(final, parts.filesize, max_bytes, max_files,
                              force=work.retry_entry is not None)
        if why is not None:
            raise Outcome(403, f"Forbidden: {why}")
        try:
            return step(flow, work)
        except Outcome as o:
            if not o.retry and o.code >= 400 and old is None and not os.path.lexists(final):
                led.release(final)          # failed for good: nothing of it is kept
            raise
        except download_stopped:
            if old is None and not os.path.lexists(final):
                led.release(final)          # back to the queue: charged again then
            raise
    return work_step


def tick(flow):
    """At each stats write: the drift check when due."""
    q = _quotas(flow) if getattr(flow.cfg, "quota", None) else None
    if q is not None:
        q.tick(flow.log)
