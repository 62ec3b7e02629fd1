"""sr_watch's memory of what it announced, and the marker of files a subscriber wrote.

* :class:`FileState` is the persistent record (path, size, mtime, per-block sums, link
  target) of what was announced, so a restart re-posts only what changed.
* :func:`mark_written` / :func:`written_path` / :func:`written_by_sarra` (from
  sarra/origin.py): the ``user.sr_origin`` extended attribute a subscriber sets on the
  files it writes, so a watch of the same tree can skip them (or see a local rename of one).
"""

import logging
import os
from typing import Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import quote, unquote

# the marker of files a subscriber wrote (one implementation, re-exported here)
from sarra.origin import (ORIGIN_XATTR, mark_written, written_by_sarra,  # noqa: F401
                          written_path)
from sarra.paths import atomic_write_lines

log = logging.getLogger("sarra.watcher")

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
        # a state file from an earlier run: this start is a restart (see started())
        self.restarted = bool(path) and os.path.exists(path)
        if path:
            self._load()

    def started(self) -> None:
        """The first scan is done: what it put on record (files spared by post_on_start
        off) is written, and the state file exists from now on (even with nothing posted
        yet), so that the next start knows it is a restart."""
        self.commit()
        if self.path and self._fp is None:
            self._write("")
            self._lines -= 1
            self._fp.flush()

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
