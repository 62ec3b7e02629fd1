"""The transfer part of a download: one byte range of a message's URL into a local file,
with its checksum computed on the way (in a second thread for large transfers), the
driver's retries, a stop request honoured at once, and do_download plugins.

Errors end as Outcome (report code, retry or not); a stop as download_stopped.
"""

import os
import queue
import threading
import time

from sarra import checksum
from sarra.oscompat import preadv
from sarra.transfer import progress
from sarra.transfer import LocalWriteError, TransferError, bounds, redact, split_url
from sarra.flow import attempts, pacing
from sarra.flow.stepstate import DownloadState
from sarra.flow.work import Outcome, TransferInterrupted


class _Progress:
    """Sits in the hasher's place during a transfer: feeds the real hasher, aborts the
    transfer as soon as a stop is requested, and keeps the broker connection alive."""

    def __init__(self, flow, hasher, limit=None, guard=None, shown=None, size=None):
        self.flow, self.hasher = flow, hasher
        self.limit = limit          # LocalWriter writes no more (transfer/bounds.py)
        self.guard = guard          # the transfer's time bounds, or None
        self.next_tick = time.monotonic() + 5.0
        # progress lines of a long transfer (progress.py), on the 5 s tick: no clock read more
        self.progress = progress.Progress(flow.log, shown, size, self.next_tick - 5.0)
        lend = getattr(hasher, 'borrow', None)
        if lend is not None:
            self.borrow = lend
        if hasher is None or hasattr(hasher, 'update_range'):
            self.update_range = self._update_range      # the splice path may be used

    def _update_range(self, fd, start, end):
        """Bytes [start, end) of the file open as fd were written (spliced): hash them."""
        if self.hasher is not None:
            self.hasher.update_range(fd, start, end)
        self.progress.count += end - start
        if self.guard is not None:
            self.guard.count += end - start

    def update(self, data):
        if self.hasher is not None:
            self.hasher.update(data)
        self.progress.count += len(data)
        if self.guard is not None:
            self.guard.count += len(data)
        self.step()

    def step(self):
        """A stop request ends the transfer at once; the broker connections are kept
        alive (every 5 s). Called after each piece received."""
        flow = self.flow
        if flow.stop_event.is_set():
            raise TransferInterrupted()
        now = time.monotonic()
        if self.guard is not None:
            self.guard.check(now)
        if now >= self.next_tick:
            self.next_tick = now + 5.0
            self.progress.tick(now)
            with flow.interruptible.paused():       # never interrupt broker I/O
                flow.tick_brokers()


#: from this size on, the checksum is computed in a second thread while the data arrives
THREADED_HASH_MIN = 8 << 20
#: read size of the hash thread when it hashes a spliced file range from the page cache
RANGE_READ = 2 << 20


class _HashThread:
    """A hasher fed from a worker thread: hashlib releases the GIL on large updates, so a
    big download is hashed on one core while it is read and written on the other (the
    checksum, not the network, is otherwise what limits a single large file).

    It lends the reader its buffers (borrow): a piece read into one is written, then
    handed to update() without a copy, and the buffer comes back to the pool once hashed.
    POOL buffers at most, so memory stays flat (RSS under 40 MB) and the reader waits
    when the hash falls behind."""

    POOL = 3

    def __init__(self, hasher):
        self.hasher = hasher
        self.q = queue.Queue()
        self.free = queue.Queue()
        self.made = 0
        self.lent = None        # the buffer lent last, until handed to update()
        self.range_fd = None    # update_range(): our duplicate of the writer's descriptor
        self.range_buf = None
        self.failed = None      # a range that could not be read back
        self.t = threading.Thread(target=self._run, name="hash", daemon=True)
        self.t.start()

    def _run(self):
        try:
            while True:
                data = self.q.get()
                if data is None:
                    return
                if isinstance(data, tuple):
                    self._hash_range(*data)
                    continue
                self.hasher.update(data)
                if isinstance(data, memoryview) and isinstance(data.obj, _Pooled):
                    self.free.put(data.obj)
        finally:
            if self.range_fd is not None:
                os.close(self.range_fd)     # (the number stays: ranges were hashed)
            # the buffers go now, not with the last reference to this object: the
            # _Progress holding it is in a reference cycle (its update_range) that waits
            # for the garbage collector, and a batch of blocks kept 2 MiB each (measured)
            self.range_buf = None
            self.free = queue.Queue()

    def _hash_range(self, start, end):
        """Hash [start, end) of the file from the page cache (it was spliced there)."""
        buf = self.range_buf
        if buf is None:
            buf = self.range_buf = memoryview(bytearray(RANGE_READ))
        while start < end:
            try:
                n = preadv(self.range_fd, [buf[:min(len(buf), end - start)]], start)
            except OSError as e:
                n, self.failed = 0, e
            if n <= 0:
                self.failed = self.failed or OSError(
                    f"cannot read back bytes {start}-{end} to hash them")
                return
            self.hasher.update(buf[:n])
            start += n

    def update_range(self, fd, start, end):
        """Hash [start, end) of the file open as fd (an fd of our own is kept: the writer
        closes its one before the last ranges are hashed)."""
        if self.range_fd is None:
            self.range_fd = os.dup(fd)
        self.q.put((start, end))

    def borrow(self, size):
        lent = self.lent
        if lent is not None:
            if len(lent) == size:
                return lent     # the last one was never handed over (bytes skipped): again
            self.free.put(lent.obj)
            self.lent = None
        if self.made < self.POOL and self.free.empty():
            self.made += 1
            buf = _Pooled(size)
        else:
            buf = self.free.get()
            if len(buf) != size:
                buf = _Pooled(size)
        self.lent = memoryview(buf)
        return self.lent

    def update(self, data):
        if isinstance(data, memoryview) and self.lent is not None and data.obj is self.lent.obj:
            self.lent = None
            self.q.put(data)    # ours: hashed as is, then back to the pool
        else:
            # drivers may hand over a view of a buffer they reuse: keep a copy of those
            self.q.put(data if isinstance(data, bytes) else bytes(data))

    def hexdigest(self):
        self.q.put(None)
        self.t.join()
        if self.failed is not None:
            raise self.failed
        return self.hasher.hexdigest()

    def abandon(self):
        self.q.put(None)


class _Pooled(bytearray):
    """A buffer of a _HashThread's pool."""


def fetch(flow, work, dest, offset, length, write_offset):
    """Download [offset, offset+length) of the message's URL into dest; return the digest
    of what was received (None when the sum cannot be computed or a plugin did it)."""
    msg = work.msg
    s = work.sum
    algo = s.value if s.algo == "z" else s.algo
    url = msg.download_url      # no '//' after an http base (message.join_url)
    if flow.hooks.has("do_download"):
        # the plugin writes msg.new_inflight_path (or, v2 style, new_dir/new_file itself)
        work.new_inflight_path = dest
        handled = flow.hooks.run_first("do_download", scheme=url.split(":", 1)[0])
        if handled is True:
            return file_digest(dest, algo, offset if write_offset is not None else 0, length)
        if handled is False:
            raise Outcome(499, "do_download plugin failed", retry=True)
    parts = msg.parts
    # method p: the URL names the block's own part file (partname.py), read from its start
    remote = 0 if parts is not None and parts.method == "p" else offset
    expected = length if length is not None else (parts.filesize if parts is not None else 0)
    limit = length if length is not None else (parts.filesize if parts is not None else None)
    slots, key = _slow_slots(flow, msg, url)
    if slots is not None and slots.busy(key):
        raise Outcome(503, f"Service unavailable: deferred: slow transfers of {key} hold "
                           f"every slot", retry=True)

    def once(attempt):
        h = checksum.new_hasher(algo)
        if h is not None and expected >= THREADED_HASH_MIN:
            h = _HashThread(h)
        guard = _guard(flow, expected, slots, key, url)
        t = piece = None
        try:
            t = flow.transfer_for(url, msg.baseurl)
            with flow.interruptible():
                try:
                    _arm(flow, guard)
                    piece = _Progress(flow, h, limit, guard, url, limit)
                    progress.watch(piece.progress)
                    n = t.get(url, dest, offset=remote, length=length, hasher=piece,
                              write_offset=write_offset)
                finally:
                    bounds.disarm()
                    if piece is not None:
                        progress.unwatch(piece.progress)
            flow.counters["bytes"] += n
            try:
                return h.hexdigest() if h is not None else None
            except OSError as e:        # a spliced range could not be read back
                raise Outcome(500, f"cannot read back {dest} to checksum it: "
                                   f"{e.strerror or e}", retry=True) from None
        except (bounds.TransferDeadline, bounds.TransferDeferred) as e:
            _drop_driver(flow, t)       # its connection is in the middle of an answer
            late = isinstance(e, bounds.TransferDeadline)
            if guard is not None:
                guard.release(penalise=late)
            raise Outcome(bounds.DEADLINE if late else bounds.DEFERRED, e.message,
                          retry=True) from None
        except bounds.TransferRefused as e:    # more than announced, unasked encoding...
            _drop_driver(flow, t)
            raise Outcome(e.code, e.message) from None      # permanent: not retried
        except KeyError:
            raise Outcome(503, f"Service unavailable {url.split(':', 1)[0]}") from None
        except OSError as e:
            raise Outcome(500, f"cannot write {dest}: {e.strerror or e}", retry=True) from None
        finally:
            if guard is not None:
                guard.release()
            if isinstance(h, _HashThread) and h.t.is_alive():
                h.abandon()             # a failed try: let its thread go

    def final(e, last):
        if e.code == 404 or last or isinstance(e, LocalWriteError):  # a full disk: retry queue
            return Outcome(e.code if e.code in (404, 499, 503) else 499, e.message, retry=True)
        return None
    return attempts.repeat(flow, url, once, final)


def _slow_slots(flow, msg, url):
    """(the configuration's slow slots, this transfer's key in them), or (None, None)
    when transfers have no time bound. The key is the source at a pump (set by the pump
    from the exchange it posted on), else the server (scheme://host:port)."""
    cfg = flow.cfg
    if not getattr(cfg, "transfer_min_rate", 0):
        return None, None
    st = DownloadState.of(flow)
    slots = st.slow_slots
    if slots is None:
        slots = st.slow_slots = bounds.SlowSlots(
            os.path.join(cfg.state_dir(), "slow"), max(1, (cfg.instances or 1) - 1),
            cfg.transfer_penalty or 0)
    source = msg.headers.get("source") if getattr(cfg, "source_from_exchange", False) else None
    if source:
        return slots, "source " + source
    try:
        ep = split_url(url)
    except TransferError:
        return slots, url.split(":", 1)[0]
    return slots, "%s://%s:%s" % (ep.scheme, ep.host, ep.port or "")


def _guard(flow, size, slots, key, url):
    cfg = flow.cfg
    if slots is None:
        return None
    return bounds.Guard(size, pacing.min_rate(cfg), cfg.transfer_grace or 0, slots, key,
                        redact(url))


def _arm(flow, guard):
    """The timer that checks the guard while a read is blocked: from the end of the grace
    time on, every Guard.TICK seconds, never during broker I/O (flow.interruptible)."""
    if guard is None:
        return

    def fire():
        if flow.interruptible.on:
            guard.check()
    bounds.arm(guard.grace + 0.01, fire, guard.TICK)


def _drop_driver(flow, t):
    """Close t and forget it (its session may be in the middle of an answer)."""
    if t is None:
        return
    try:
        t.close()
    except Exception:
        pass
    for pool in (flow.transfers, getattr(flow, "_by_base", {})):
        for k in [k for k, v in pool.items() if v is t]:
            del pool[k]


def file_digest(path, algo, offset=0, length=None):
    """Digest of what a do_download plugin wrote (None: nothing there, or not computable)."""
    if algo not in checksum.DATA_ALGOS or not os.path.exists(path):
        return None
    try:
        return checksum.hash_range(path, algo, offset, length)
    except (OSError, ValueError):
        return None
