"""The limits of one instance (issue 23): kbytes_ps on its transfers, message_rate_max
(sr3's messageRateMax) on the messages it takes.

Bytes: the process's pacer (sarra/transfer/throttle.py) is set from the configuration
before each transfer (Flow.transfer_for), so a reload that changes the rate applies to the
next transfer. Its rate is kbytes_ps, or kbytes_ps_shared when that is smaller (or
kbytes_ps is 0): a transfer the shared meter released (meter.py) goes at most at the
flow's rate, so one large file never takes the whole link at once. While a transfer waits
for its rate, the broker connections are kept alive.

Messages: one token a message, taken before the message is worked on (Flow.process);
the wait is cut by a stop request and keeps the broker connections alive.
"""

import weakref

from sarra.transfer import throttle

#: flow -> its message bucket (message_rate_max), made on first use
_message_buckets = weakref.WeakKeyDictionary()


def byte_rate(cfg) -> int:
    """Bytes per second this instance's transfers may take (0: no limit)."""
    rates = [k for k in (getattr(cfg, "kbytes_ps", 0), getattr(cfg, "kbytes_ps_shared", 0))
             if k]
    return min(rates) * 1024 if rates else 0


def min_rate(cfg) -> int:
    """transfer_min_rate, or half this instance's byte rate when that is lower: a download
    paced below transfer_min_rate is not cut as too slow."""
    floor, rate = cfg.transfer_min_rate, byte_rate(cfg)
    return min(floor, rate // 2) if rate else floor


def apply(flow) -> None:
    """Set this process's byte pacer from the flow's configuration (before a transfer)."""
    rate = byte_rate(flow.cfg)
    if not rate and throttle.pacer is None:
        return                  # unlimited: nothing more per transfer
    throttle.use(rate, on_wait=lambda: _keep_alive(flow))


def _keep_alive(flow) -> None:
    with flow.interruptible.paused():       # never interrupt broker I/O
        flow.tick_brokers()


def per_message(flow) -> None:
    """Wait for this message's turn under message_rate_max (nothing to do without one)."""
    rate = getattr(flow.cfg, "message_rate_max", 0)
    if not rate:
        return
    bucket = _message_buckets.get(flow)
    if bucket is None or bucket.rate != rate:
        bucket = _message_buckets[flow] = throttle.TokenBucket(rate, burst=1.0,
                                                               sleep=flow.stop_event.wait,
                                                               on_wait=flow.tick_brokers)
    if not flow.stop_event.is_set():
        bucket.take(1)
