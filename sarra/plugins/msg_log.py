"""msg_log (on_message): log every received message: topic, URL, lag and headers.

Lag (seconds between the message's pubtime and now) is shown when the pubtime parses.
"""

import time

from sarra.plugin import plugin_logger


def _lag(msg):
    try:
        t = msg.pubtime_epoch
    except Exception:
        try:
            from sarra.message import parse_time
            t = parse_time(getattr(msg, "pubtime", ""))
        except Exception:
            return None
    return time.time() - t


def on_message(parent):
    msg = getattr(parent, "msg", None)
    if msg is None:
        return True
    url = getattr(msg, "url", None) or f"{getattr(msg, 'baseurl', '')}{getattr(msg, 'relpath', '')}"
    headers = getattr(msg, "headers", {}) or {}
    hdrs = " ".join(f"{k}={headers[k]}" for k in sorted(headers))
    lag = _lag(msg)
    plugin_logger(parent, "msg_log").info(
        "msg_log received: topic %s url %s%s headers: %s", getattr(msg, "topic", "?"), url,
        f" lag {lag:.2f}s" if lag is not None else "", hdrs)
    return True
