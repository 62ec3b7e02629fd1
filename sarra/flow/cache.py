"""Duplicate suppression: remember which (sum, path) keys were seen recently.

Facts: doc/spec/checksums-and-parts.md §2 and components.md §3.

* :func:`cache_key` builds the key of a message: the full ``sum`` header plus a second
  component chosen by the basis (``path`` = relpath, ``name`` = basename, ``data`` = empty).
  The second component is ``<path>*<parts>`` except for whole-file ``n`` sums (just the
  path) and ``R``/``L`` sums (just the path).  Block posts (parts method ``i``/``p``) keep
  only ``method,bsz,bno`` of the parts header, so a block of a growing file matches an
  earlier post of the same block that differed only in blktot/brem.  The path is the
  *unescaped* relpath (``msg.path``: ``%20``/``%23`` undone), so a poster that computes keys
  from local names and a consumer that computes them from messages agree.
* :class:`DupCache` is a dict ``key -> time first recorded``.  Expiry is decided when an
  entry is looked up (no timer is needed); a hit does not refresh the entry, so the same
  key is let through again once per lifetime.  Memory is bounded by a compaction (drop
  expired entries, rewrite the file) that ``check_and_add`` itself triggers when the dict
  has doubled since the last compaction or the file holds many stale lines.

Persistence: one append-only text file per process (``recent_files_NNN.cache`` in the state
directory), one line per recorded entry::

    <url-quoted sum> <time> <url-quoted second component>

A later line for the same key replaces an earlier one; a line with time 0 is a tombstone
(written by :meth:`DupCache.remove_path`).  Lines are appended through a buffer: call
:meth:`DupCache.flush` (write + flush, and ``os.fsync`` with ``sync=True``) at the latest
before acknowledging the messages whose keys were added.  Losing the unflushed tail in a
crash only means a few duplicates are let through after the restart.  Corrupt lines are
skipped with one warning per load; a torn last line is cut off.
"""

import logging
import os
import posixpath
import time
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import quote, unquote

from sarra.flow import journal
from sarra.paths import atomic_write_lines

logger = logging.getLogger("sarra.cache")

Key = Tuple[str, str]

#: compaction is not considered below this many entries / file lines
MIN_COMPACT = 1024
_SEP = "\0"          # joins sum and second in the in-memory key (no NUL in paths)
_SAFE = "/*,=:@+"    # characters kept as they are in the file's quoted fields


def _parts_for_key(parts: Optional[str]) -> str:
    """The parts header as used in keys: block posts keep only method,bsz,bno."""
    if not parts:
        return ""
    f = parts.split(",")
    if f[0] in ("i", "p") and len(f) == 5:
        return f"{f[0]},{f[1]},{f[4]}"
    return parts


def cache_key(msg, basis: str = "path") -> Key:
    """(sum header, second component) of a message, per checksums-and-parts.md §2.

    ``msg`` needs ``headers`` and ``relpath`` (and ``path``, the unescaped relpath, when it
    has one, as :class:`sarra.message.Message` does).
    """
    headers = msg.headers
    sumstr = headers["sum"]
    path = getattr(msg, "path", None)
    if path is None:
        path = msg.relpath
    if basis == "name":
        path = posixpath.basename(path.rstrip("/"))
    elif basis == "data":
        path = ""
    elif basis != "path":
        raise ValueError(f"unknown cache basis {basis!r} (expected path, name or data)")
    algo = sumstr.split(",", 1)[0]
    parts = headers.get("parts")
    if algo in ("R", "L") or not parts:
        return sumstr, path
    if algo == "n" and parts.startswith("1"):
        return sumstr, path
    return sumstr, f"{path}*{_parts_for_key(parts)}"


class DupCache:
    """Recently seen keys; ``path`` None keeps the cache in memory only."""

    def __init__(self, path: Optional[str], lifetime: float,
                 clock: Callable[[], float] = time.time):
        self.path = path
        self.lifetime = float(lifetime)
        self.clock = clock
        self._d: Dict[str, float] = {}
        self._fp = None
        self._file_lines = 0
        self._compact_size = MIN_COMPACT
        self.hits = 0
        self.misses = 0
        if path:
            self.load()

    # ---------------------------------------------------------------- lookups

    def _live(self, t: float, now: float) -> bool:
        return now - t < self.lifetime

    def check_and_add(self, key: Key) -> bool:
        """True if the key is new (absent or expired; it is now recorded), False if it was
        recorded less than ``lifetime`` seconds ago (a duplicate)."""
        k = key[0] + _SEP + key[1]
        now = self.clock()
        t = self._d.get(k)
        if t is not None and self._live(t, now):
            self.hits += 1
            return False
        self.misses += 1
        self._d[k] = now
        self._append(k, now)
        if len(self._d) >= self._compact_size or self._file_lines >= 2 * self._compact_size:
            self.compact()
        return True

    def __contains__(self, key: Key) -> bool:
        """True if the key is recorded and not expired (does not add or count)."""
        t = self._d.get(key[0] + _SEP + key[1])
        return t is not None and self._live(t, self.clock())

    def __len__(self) -> int:
        return len(self._d)

    def stats(self) -> Dict[str, int]:
        """hits, misses, and size (entries held, expired ones not yet compacted included)."""
        return {"hits": self.hits, "misses": self.misses, "size": len(self._d)}

    def remove_path(self, path: str, basis: str = "path") -> int:
        """Forget every entry for ``path`` (or below it, for a directory); returns how many.

        ``path`` is the relpath as used in keys (unescaped); with basis ``name`` its basename
        is matched, with basis ``data`` nothing can be matched.  Used by posters: a removed
        file that is re-created must be posted again.
        """
        if basis == "name":
            path = posixpath.basename(path.rstrip("/"))
        elif basis == "data":
            return 0
        path = path.rstrip("/") or path
        dead = []
        for k in self._d:
            second = k.split(_SEP, 1)[1]
            if (second == path or second.startswith(path + "*")
                    or second.startswith(path + "/")):
                dead.append(k)
        for k in dead:
            del self._d[k]
            self._append(k, 0.0)
        return len(dead)

    def forget(self, key: Key) -> bool:
        """Forget one key (True if it was recorded): the next message with it goes through."""
        k = key[0] + _SEP + key[1]
        if self._d.pop(k, None) is None:
            return False
        self._append(k, 0.0)
        return True

    def clear(self) -> None:
        """Forget everything and empty the file (the posters' ``reset``)."""
        self._d.clear()
        self.compact()

    # ---------------------------------------------------------------- persistence

    def _line(self, k: str, t: float) -> str:
        s, second = k.split(_SEP, 1)
        return f"{quote(s, safe=_SAFE)} {t:.6f} {quote(second, safe=_SAFE)}\n"

    def _append(self, k: str, t: float) -> None:
        if not self.path:
            return
        if self._fp is None:
            d = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(d, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._fp = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)
        self._fp.write(self._line(k, t))
        self._file_lines += 1

    def flush(self, sync: bool = False) -> None:
        """Write the buffered lines to the file (and fsync it when ``sync``)."""
        if self._fp is not None:
            self._fp.flush()
            if sync:
                os.fsync(self._fp.fileno())

    def close(self) -> None:
        if self._fp is not None:
            self.flush()
            self._fp.close()
            self._fp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def load(self) -> None:
        """(Re)read the file: later lines win, expired entries and tombstones are dropped,
        corrupt lines are skipped (one warning naming file:line), a torn tail is cut off."""
        self.close()
        self._d.clear()
        self._file_lines = 0
        now = self.clock()

        def parse(line: bytes) -> None:
            s, t, second = line.decode("utf-8").split(" ")
            t = float(t)
            k = unquote(s, errors="strict") + _SEP + unquote(second, errors="strict")
            if not s or "%00" in s or t != t:
                raise ValueError
            if self._live(t, now):
                self._d[k] = t
            else:
                self._d.pop(k, None)

        lines = journal.read(self.path, parse, logger, "ignoring corrupt duplicate cache "
                             "line (%d corrupt in all)", torn_is_unreadable=True)
        if lines is None:
            return
        self._file_lines = lines
        self._compact_size = max(MIN_COMPACT, 2 * len(self._d))

    def compact(self) -> None:
        """Drop expired entries and rewrite the file atomically with the live ones."""
        now = self.clock()
        self._d = {k: t for k, t in self._d.items() if self._live(t, now)}
        self._compact_size = max(MIN_COMPACT, 2 * len(self._d))
        if not self.path:
            return
        self.close()
        atomic_write_lines(self.path, (self._line(k, t) for k, t in self._d.items()))
        self._file_lines = len(self._d)
