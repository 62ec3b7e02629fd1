"""Bandwidth pacing (kbytes_ps, issue 23): a token bucket, and the one pacer of this
process that the drivers' read loops consult.

A process has at most one byte pacer (``pacer``; None: unlimited, and the read loops pay
one attribute test per block). The flow sets it from its configuration before each
transfer (sarra.flow.pacing). While it is set, every read loop of the drivers (downloads
and the local reads of uploads: ``read_blocks``, HTTP bodies, local copies) reads pieces
of ``piece()`` bytes at most (a twentieth of a second at the rate) and hands each piece to
``take()``, which sleeps just long enough to keep the rate: the bytes of any window of T
seconds stay under rate * T plus one piece and ``burst`` (a tenth of a second's worth),
so within 2 % over a 10 s window.

The bucket is paid after the fact: the first piece goes at once, and the debt it leaves is
slept off before the next one. The same bucket paces messages (messageRateMax, one token
a message) and the shared meter's releases (sarra.flow.meter: a message's size in bytes).
"""

import time

#: smallest piece read while paced (a small rate still reads whole network packets)
MIN_PIECE = 1024
#: pieces are this fraction of a second's worth at the rate
PIECE_TIME = 0.05
#: what the bucket may save up while idle, in seconds at the rate
BURST_TIME = 0.1
#: a debt this short (seconds) counts as paid: a clock cannot tell it from none
SETTLED = 1e-6
#: a long wait is cut into steps of this many seconds; on_wait() is called after each
WAIT_STEP = 1.0


class TokenBucket:
    """``rate`` units per second (bytes, messages). take(n) returns once the debt left by
    earlier takes is paid, then takes n (a debt of n, when nothing was saved). ``on_wait``:
    called every WAIT_STEP seconds of a long wait (broker heartbeats). ``sleep`` may be an
    Event's wait(): the wait ends when it returns True (a stop request)."""

    def __init__(self, rate, burst=None, clock=time.monotonic, sleep=time.sleep,
                 on_wait=None):
        if rate <= 0:
            raise ValueError("rate must be positive: %r" % (rate,))
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else self.rate * BURST_TIME
        self.clock, self.sleep, self.on_wait = clock, sleep, on_wait
        self.tokens = 0.0
        self.at = clock()

    def _refill(self):
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait_time(self):
        """Seconds until the debt is paid (0: a take() now would not sleep)."""
        self._refill()
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def take(self, n=1):
        """Sleep until nothing is owed, then owe n more; returns the seconds slept."""
        slept = 0.0
        wait = self.wait_time()
        while wait > SETTLED:
            step = min(wait, WAIT_STEP)
            if self.sleep(step):        # an Event's wait(): True once it is set (a stop)
                break
            slept += step
            if self.on_wait is not None and wait > step:
                self.on_wait()
            wait = self.wait_time()
        self.tokens -= n
        return slept

    def piece(self, size):
        """The read size to use instead of ``size`` while paced."""
        return max(1, min(size, max(MIN_PIECE, int(self.rate * PIECE_TIME))))


#: the byte pacer of this process (kbytes_ps), or None: no limit
pacer = None


def use(bytes_ps, on_wait=None):
    """Pace this process's transfers at ``bytes_ps`` (0 or None: no limit). The bucket is
    kept while the rate stays the same; the current one is returned."""
    global pacer
    if not bytes_ps:
        pacer = None
    elif pacer is None or pacer.rate != float(bytes_ps):
        pacer = TokenBucket(bytes_ps, on_wait=on_wait)
    else:
        pacer.on_wait = on_wait
    return pacer


def read_size(size):
    """``size``, or the pacer's piece of it while this process is paced."""
    return size if pacer is None else pacer.piece(size)


def paced(chunks, bucket):
    """The chunks of an iterable, each paid to ``bucket`` once read (None: as they are)."""
    if bucket is None:
        yield from chunks
        return
    for chunk in chunks:
        yield chunk
        bucket.take(len(chunk))
