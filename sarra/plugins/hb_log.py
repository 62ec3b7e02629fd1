"""hb_log (on_heartbeat): log the parent's counters at each heartbeat.

Counters are taken from ``parent.counters`` (a dict) or ``parent.stats()`` (returning a
dict) when the parent has them; otherwise just ``heartbeat`` is logged.
"""

from sarra.plugin import plugin_logger


def _counters(parent):
    c = getattr(parent, "counters", None)
    if callable(c):
        c = c()
    if not isinstance(c, dict):
        stats = getattr(parent, "stats", None)
        c = stats() if callable(stats) else None
    return c if isinstance(c, dict) else None


def on_heartbeat(parent):
    c = _counters(parent)
    text = " ".join(f"{k}={c[k]}" for k in sorted(c)) if c else ""
    plugin_logger(parent, "hb_log").info("heartbeat%s", f" {text}" if text else "")
    return True
