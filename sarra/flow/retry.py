"""The on-disk retry queue: messages whose work failed, to be tried again later.

Facts: doc/spec/components.md §1.3 (steps 2 and 9).

Use by the flow (the caller):

* When the work for a message fails (after the in-process ``attempts``), call
  :meth:`RetryQueue.add`; it returns only once the entry is on disk (write, flush, fsync),
  so the broker message may be acknowledged right after.
* New messages from the broker come first.  :meth:`RetryQueue.due` is consulted when the
  broker has nothing to give (and, so that retries are not starved by a busy queue, every
  N broker messages, e.g. N = 100).  ``due()`` does not remove entries: after processing
  one, call :meth:`done` (success) or :meth:`failed` (schedule the next try with a longer
  delay).  When idle, sleep at most :meth:`next_due_in` seconds.
* Entries older than ``ttl`` seconds since their first failure are dropped when they are
  encountered (warning ``retry expired for <relpath>``).  ``ttl`` <= 0 keeps them forever.
* Messages taken from the retry queue bypass the duplicate cache (they were recorded the
  first time) and are marked ``isRetry`` for plugins.

The delay before try ``n`` (n failures so far, counting from 0) is
``min(base_delay * 2**n, max_delay)`` plus up to ``jitter`` (10 %) of it at random.

File format: JSON lines, one record per line, each with the entry ``id``::

    {"op": "add", "id": 7, "rk": ..., "body": ..., "headers": {...}, "exchange": ...,
     "attempts": 0, "first": <epoch>, "next": <epoch>}
    {"op": "upd", "id": 7, "attempts": 1, "next": <epoch>}
    {"op": "del", "id": 7}

Every record is appended and fsynced before the method returns.  When the file holds more
dead records (updates and tombstones) than live entries it is rewritten atomically (temp
file, fsync, rename), so a crash leaves either the old or the new file.  A torn last line
(crash during an append) is ignored and cut off on load; other unreadable lines are
skipped with one warning naming file:line.  One file per process (instance).
"""

import dataclasses
import heapq
import itertools
import json
import logging
import os
import random
import time
from typing import Callable, Dict, List, Optional

from sarra.flow import journal
from sarra.paths import atomic_write_lines, fsync_dir

logger = logging.getLogger("sarra.retry")

#: compaction is not considered while the file has fewer dead records than this
MIN_COMPACT = 64


@dataclasses.dataclass
class Entry:
    id: int
    routing_key: str
    body: str
    headers: Dict[str, str]
    exchange: str
    attempts: int
    first: float        # time of the first failure
    next_try: float

    @property
    def relpath(self) -> str:
        f = self.body.split()
        return f[2] if len(f) >= 3 else self.body[:80]


class RetryQueue:
    def __init__(self, path: str, ttl: float, base_delay: float = 1.0,
                 max_delay: float = 300.0, clock: Callable[[], float] = time.time,
                 jitter: float = 0.1):
        self.path = path
        self.ttl = float(ttl)
        self.base_delay = float(base_delay)
        self.max_delay = float(max_delay)
        self.clock = clock
        self.jitter = float(jitter)
        self._entries: Dict[int, Entry] = {}
        self._heap: list = []          # (next_try, seq, id); stale items skipped lazily
        self._seq = itertools.count()
        self._next_id = 1
        self._records = 0              # records in the file
        self._fd: Optional[int] = None
        self._load()

    # ---------------------------------------------------------------- public API

    def backoff(self, attempts: int) -> float:
        """Delay before the next try after ``attempts`` failures (counted from 0)."""
        delay = min(self.base_delay * 2.0 ** min(max(attempts, 0), 62), self.max_delay)
        return delay + random.uniform(0.0, self.jitter * delay)

    def add(self, routing_key: str, body: str, headers: Dict[str, str], exchange: str,
            attempts_so_far: int = 0) -> Entry:
        """Record a failed message durably (on disk when this returns)."""
        now = self.clock()
        e = Entry(self._next_id, routing_key, body, dict(headers or {}), exchange,
                  int(attempts_so_far), now, now + self.backoff(attempts_so_far))
        self._next_id += 1
        self._write({"op": "add", "id": e.id, "rk": e.routing_key, "body": e.body,
                     "headers": e.headers, "exchange": e.exchange, "attempts": e.attempts,
                     "first": e.first, "next": e.next_try})
        self._put(e)
        return e

    def due(self, limit: int = 1) -> List[Entry]:
        """Up to ``limit`` entries whose time has come, earliest first (not removed)."""
        now = self.clock()
        out, popped = [], []
        while self._heap and len(out) < limit:
            item = self._heap[0]
            e = self._valid(item)
            if e is None:
                heapq.heappop(self._heap)
                continue
            if e.next_try > now:
                break
            heapq.heappop(self._heap)
            if self._expired(e, now):
                continue
            popped.append(item)
            out.append(e)
        for item in popped:
            heapq.heappush(self._heap, item)
        self._maybe_compact()
        return out

    def done(self, entry: Entry) -> None:
        """The entry was processed successfully: forget it."""
        if self._entries.pop(entry.id, None) is not None:
            self._write({"op": "del", "id": entry.id})
            self._maybe_compact()

    def failed(self, entry: Entry) -> bool:
        """Another try failed: count it and schedule the next one.  Returns False if the
        entry is past its ttl (it is then dropped) or no longer queued."""
        e = self._entries.get(entry.id)
        if e is None:
            return False
        now = self.clock()
        if self._expired(e, now):
            return False
        e.attempts += 1
        e.next_try = now + self.backoff(e.attempts)
        self._write({"op": "upd", "id": e.id, "attempts": e.attempts, "next": e.next_try})
        heapq.heappush(self._heap, (e.next_try, next(self._seq), e.id))
        if entry is not e:
            entry.attempts, entry.next_try = e.attempts, e.next_try
        self._maybe_compact()
        return True

    def next_due_in(self) -> Optional[float]:
        """Seconds until the earliest entry is due (0 if one is due now), None if empty."""
        while self._heap and self._valid(self._heap[0]) is None:
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - self.clock())

    def __len__(self) -> int:
        return len(self._entries)

    def in_order(self, limit: Optional[int] = None) -> List[Entry]:
        """The first ``limit`` live entries (all when None) in the order they were added,
        whatever their time (the posts kept while the post broker is down: flow/spool.py)."""
        out = sorted(self._entries.values(), key=lambda e: e.id)
        return out if limit is None else out[:limit]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- internals

    def _put(self, e: Entry) -> None:
        self._entries[e.id] = e
        heapq.heappush(self._heap, (e.next_try, next(self._seq), e.id))

    def _valid(self, item) -> Optional[Entry]:
        e = self._entries.get(item[2])
        return e if e is not None and e.next_try == item[0] else None

    def _expired(self, e: Entry, now: float) -> bool:
        if self.ttl > 0 and now - e.first > self.ttl:
            logger.warning("retry expired for %s (%d attempts over %.0f s)",
                           e.relpath, e.attempts + 1, now - e.first)
            self._entries.pop(e.id, None)
            self._write({"op": "del", "id": e.id})
            return True
        return False

    def _open(self) -> int:
        if self._fd is None:
            d = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(d, exist_ok=True)
            existed = os.path.exists(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if not existed:
                fsync_dir(d)
        return self._fd

    def _write(self, record: dict) -> None:
        data = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        fd = self._open()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        self._records += 1

    def _maybe_compact(self) -> None:
        dead = self._records - len(self._entries)
        if dead > len(self._entries) and dead >= MIN_COMPACT:
            self.compact()

    def compact(self) -> None:
        """Rewrite the file with one 'add' record per live entry (atomic)."""
        self.close()
        recs = sorted(self._entries.values(), key=lambda e: e.id)
        atomic_write_lines(self.path, (json.dumps(
            {"op": "add", "id": e.id, "rk": e.routing_key, "body": e.body,
             "headers": e.headers, "exchange": e.exchange, "attempts": e.attempts,
             "first": e.first, "next": e.next_try},
            separators=(",", ":"), ensure_ascii=False) + "\n" for e in recs))
        self._records = len(recs)

    def _load(self) -> None:
        entries: Dict[int, Entry] = {}
        max_id = 0

        def parse(line: bytes) -> None:
            nonlocal max_id
            r = json.loads(line)
            op, i = r["op"], int(r["id"])
            max_id = max(max_id, i)
            if op == "add":
                entries[i] = Entry(i, str(r["rk"]), str(r["body"]),
                                   {str(k): str(v) for k, v in r["headers"].items()},
                                   str(r.get("exchange", "")), int(r["attempts"]),
                                   float(r["first"]), float(r["next"]))
            elif op == "upd":
                if i in entries:
                    entries[i].attempts = int(r["attempts"])
                    entries[i].next_try = float(r["next"])
            elif op == "del":
                entries.pop(i, None)
            else:
                raise ValueError(op)

        # a torn last line (a crash in the middle of a write) is cut off without a warning
        lines = journal.read(self.path, parse, logger,
                             "ignoring unreadable retry queue record (%d in all)")
        if lines is None:
            return
        self._records += lines
        self._next_id = max_id + 1
        for e in entries.values():
            self._put(e)
