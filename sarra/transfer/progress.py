"""Progress lines of a long transfer: bytes so far, percent when the size is known, rate.

A transfer that lasts longer than ``EVERY`` seconds logs one line every ``EVERY`` seconds
until it ends, e.g.::

    http://host/dir/big.grib2: progress: 12.5 MB of 50.0 MB (25%) in 10 s, 1.2 MB/s

Cheap by construction: the transfer loop counts bytes (one addition per piece) and calls
``tick(now)`` with the clock it has already read, on its 5-second keep-alive tick
(fetch._Progress.step, send.py's upload pieces): no clock read and no comparison per
piece are added here. Drivers read in pieces of up to a few MB, so a slow server can hold
one piece for longer than ``EVERY``: a download is also ``watch()``ed by one thread per
process, which sleeps while nothing is transferred and otherwise looks every second
whether a line is due (the count it shows is then the one of the last piece). The rate is
the one of the last interval, the total time since the start.
"""

import threading
import time

#: seconds between two progress lines of one transfer (a multiple of the 5 s tick)
EVERY = 10.0

_UNITS = ("B", "kB", "MB", "GB", "TB")


def human(n):
    """1234567 -> '1.2 MB' (decimal units, as rates are usually shown)."""
    n = float(n)
    for unit in _UNITS:
        if abs(n) < 1000.0 or unit == _UNITS[-1]:
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1000.0


class Progress:
    """The progress of one transfer of ``size`` bytes (None: unknown) started at ``start``
    (time.monotonic()); ``count`` is kept up to date by the caller."""

    def __init__(self, log, shown, size, start, every=None):
        self.log, self.shown, self.size = log, shown, size
        self.start = start
        self.every = EVERY if every is None else every
        self.count = 0
        self.next_line = start + self.every
        self.last_time, self.last_count = start, 0
        self.lines = 0

    def tick(self, now):
        """Log a progress line when one is due (now: time.monotonic(), already read)."""
        if now < self.next_line:
            return
        with _lock:             # the transfer's thread and the watcher: one line, not two
            if now < self.next_line:
                return
            self.next_line = now + self.every
            text = self.line(now)
        self.log.info("%s: progress: %s", self._shown(), text)
        self.lines += 1

    def line(self, now):
        count, elapsed = self.count, now - self.start
        span = now - self.last_time
        rate = (count - self.last_count) / span if span > 0 else 0.0
        self.last_time, self.last_count = now, count
        of = ""
        if self.size:
            of = " of %s (%d%%)" % (human(self.size), min(100, count * 100 // self.size))
        return "%s%s in %.0f s, %s/s" % (human(count), of, elapsed, human(rate))

    def _shown(self):
        from sarra.transfer import redact      # only when a line is logged
        try:
            return redact(self.shown) if self.shown else "transfer"
        except Exception:
            return "transfer"


# --- the watcher -------------------------------------------------------------------------

_lock = threading.Lock()
_watched = {"current": None, "thread": None}
_wake = threading.Event()


def watch(p):
    """p is the transfer under way in this process (its lines are due even while one piece
    takes long); unwatch(p) at its end."""
    _watched["current"] = p
    if _watched["thread"] is None:
        t = threading.Thread(target=_watcher, name="progress", daemon=True)
        _watched["thread"] = t
        t.start()
    _wake.set()


def unwatch(p):
    if _watched["current"] is p:
        _watched["current"] = None


def _watcher():
    while True:
        p = _watched["current"]
        if p is None:
            _wake.clear()
            if _watched["current"] is None:
                _wake.wait()            # idle: no wake-ups at all
            continue
        time.sleep(1.0)
        p = _watched["current"]
        if p is not None:
            try:
                p.tick(time.monotonic())
            except Exception:           # a log handler's failure must not end the thread
                pass
