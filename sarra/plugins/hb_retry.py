"""hb_retry (on_heartbeat): log how many failed messages wait in the retry queue."""

from sarra.plugin import plugin_logger


def on_heartbeat(parent):
    rq = getattr(parent, "retry", None)
    if rq is not None:
        due = rq.next_due_in() if hasattr(rq, "next_due_in") else None
        plugin_logger(parent, "hb_retry").info(
            "retry queue: %d messages%s", len(rq),
            f", next due in {due:.0f} s" if due is not None else "")
    return True
