"""msg_by_user (on_message): keep only the reports made by one broker user.

Option: ``msg_by_user <user>`` (repeatable, or a comma-separated list). A report is kept
when the <user> field of its body (the broker user of the consumer that wrote it) is one of
them; everything else, posts included, is dropped. sr_police's report routing shovel
``rr_<user>2xreport`` reads xs_<user> with it: a user can write only to its own xs_
exchange, so the consumer of a report taken from an xs_ exchange is set to that
exchange's owner first (sarra.flow.reportguard.stamp_consumer: whatever consumer a report
claims, the source sees the account that published it). A report with a code or
duration that is not one (000, nan) is dropped with one line.
With no ``msg_by_user`` option every message is dropped (and an error is logged once).
"""

from sarra.plugin import plugin_logger
from sarra.flow.reportguard import printable, publisher, report_problem, stamp_consumer

#: plugin options this module reads (for unknown-option checks)
OPTIONS = ("msg_by_user",)

_warned = set()


def wanted(parent, option):
    """The set of values of a repeatable plugin option (lists and comma lists merged)."""
    getter = getattr(parent, "get_option", None)
    value = getter(option, None) if callable(getter) else getattr(parent, option, None)
    if value is None:
        return set()
    if isinstance(value, str):
        value = [value]
    names = set()
    for item in value:
        names.update(w for w in str(item).replace(",", " ").split() if w)
    return names


def _unbound(exchange, cfg):
    from sarra.flow.presets import delivered_unbound
    return delivered_unbound(exchange or "", cfg)


def message_of(parent):
    """The sarra.message.Message behind parent.msg (a flow Work or a Message)."""
    work = getattr(parent, "msg", None)
    return getattr(work, "msg", work)


def on_message(parent):
    users = wanted(parent, "msg_by_user")
    if not users:
        if id(parent) not in _warned:
            _warned.add(id(parent))
            plugin_logger(parent, "msg_by_user").error(
                "msg_by_user: no 'msg_by_user <user>' option; dropping every message")
        return False
    msg = message_of(parent)
    report = getattr(msg, "report", None)
    if report is None:
        return False            # a post (key v02.post) on the user's exchange: not a report
    log = plugin_logger(parent, "msg_by_user")
    relpath = printable(getattr(msg, "relpath", "?"))
    problem = report_problem(msg)
    if problem:
        log.warning("msg_by_user: dropped a malformed report on %s from exchange %s: %s",
                    relpath, printable(msg.exchange or "?"), problem)
        return False
    cfg = getattr(parent, "cfg", None)
    if cfg is not None and _unbound(msg.exchange, cfg):
        # copied in by an exchange-to-exchange binding (xs_<user> bound to xr_<user> made
        # every report to that user circulate for ever: xreport, xr_<user>, here again)
        log.warning("msg_by_user: dropped a report on %s delivered from exchange %s, which "
                    "this configuration does not bind (an exchange-to-exchange binding)",
                    relpath, printable(msg.exchange))
        return False
    owner = publisher(msg, cfg)
    if owner is not None:
        claimed = stamp_consumer(msg, owner)
        if claimed is not None:
            log.info("msg_by_user: report on %s published on %s named consumer %s: set to %s",
                     relpath, printable(msg.exchange), printable(claimed), printable(owner))
    if report.user in users:
        return True
    log.info("msg_by_user: dropped report on %s by user %s (only %s accepted here)",
             relpath, printable(report.user), ",".join(sorted(users)))
    return False
