"""delay (on_message; v2 names msg_delay, msg_fdelay): hold messages until they are
``msg_delay`` seconds old (e.g. to let a mirror catch up).

Option: ``msg_delay <seconds>`` (default 0: no delay).

A message younger than that is deferred when the parent can defer it: ``parent.msg_to_retry()``
(or the v2 ``parent.consumer.msg_to_retry()``) puts it in the retry queue and the plugin
returns False, so the message comes back later from the retry queue (deferral relies on the
retry queue).  Without such a method the plugin sleeps until the message is old enough -
never longer than ``msg_delay`` itself, even if the pubtime is in the future - and returns
True.  Sleeping blocks this instance, but messages arrive roughly in pubtime order, so later
ones are then mostly old enough.
"""

import time

from sarra.plugin import get_option, plugin_logger

OPTIONS = ("msg_delay",)

_now = time.time
_sleep = time.sleep


def _pubtime(msg):
    try:
        return float(msg.pubtime_epoch)
    except Exception:
        from sarra.message import parse_time
        return parse_time(getattr(msg, "pubtime", "") or getattr(msg, "time", ""))


def on_message(parent):
    msg = getattr(parent, "msg", None)
    try:
        delay = float(get_option(parent, "msg_delay", 0))
    except (TypeError, ValueError):
        delay = 0.0
    if msg is None or delay <= 0:
        return True
    try:
        age = _now() - _pubtime(msg)
    except Exception:
        return True   # no usable pubtime: nothing to wait for
    if age >= delay:
        return True
    defer = getattr(parent, "msg_to_retry", None)
    if not callable(defer):
        defer = getattr(getattr(parent, "consumer", None), "msg_to_retry", None)
    if callable(defer):
        plugin_logger(parent, "delay").info("msg_delay: %s is %.1fs old (< %gs), deferred",
                                            getattr(msg, "relpath", "?"), age, delay)
        defer()
        return False
    _sleep(min(delay - age, delay))
    return True
