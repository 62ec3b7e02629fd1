"""Reports a source can believe and print: who made a report, and fields safe on a terminal.

A v02 report names the consumer that did the work (the <user> field of its body,
reports.md §2), but that field is written by the consumer itself. On a pump, the only
thing a user cannot lie about is the exchange it published on: a user may write only to
``xs_<user>``. So the first hop that takes a report from a user's exchange (sr_police's
``rr_<user>2xreport`` shovel, plugin ``msg_by_user``) sets the consumer to that exchange's
owner (:func:`stamp_consumer`), as sr_sarra sets the ``source`` of a post to its poster.
Reports that do not come from an ``xs_`` exchange (the pump's own components publish on
``xreport``; a downstream pump's relay shovel passes on other users' reports) are left as
they are.

Everything else in a report (relpath, host, headers such as ``message``) is still the
consumer's own text: :func:`printable` is the one helper that escapes control characters
(C0, DEL, C1, line and paragraph separators, bidirectional overrides: the log lines' own
escaping, logs.one_line) wherever a report is shown, so that one report is always one
line and never reaches a terminal raw.
"""

import math
from typing import Optional

from sarra.ops.logs import one_line


def printable(value) -> str:
    """``value`` as text with every control character escaped, as in log lines
    (logs.one_line: ``\\n``, ``\\r``, ``\\t``, ``\\x1b`` for C0, DEL and C1, ``\\u2028``
    for separators and formatting marks such as bidirectional overrides), and a backslash
    doubled first, so that the escapes shown cannot be forged by the text itself.
    Printable text, non-ASCII letters included, is unchanged."""
    text = value if isinstance(value, str) else str(value)
    return one_line(text.replace("\\", "\\\\"))


def report_problem(msg) -> Optional[str]:
    """Why ``msg`` is not a well-formed v02 report, or None."""
    rep = getattr(msg, "report", None)
    if rep is None:
        return "not a report (a body of 3 fields: a post)"
    if not 100 <= rep.code <= 599:
        return "report code %03d is not a status code (100-599)" % rep.code
    if not (math.isfinite(rep.duration) and rep.duration >= 0):
        return "report duration %s is not a number of seconds" % rep.duration
    return None


def publisher(msg, cfg=None) -> Optional[str]:
    """The user whose exchange ``msg`` was published on (``xs_<user>``, with the owner rule
    of components.exchange_owner), or None when it did not come from a user's exchange."""
    exchange = getattr(msg, "exchange", "") or ""
    if not exchange.startswith("xs_") or len(exchange) <= 3:
        return None
    from sarra.flow.presets import exchange_owner
    return exchange_owner(exchange, cfg)


def stamp_consumer(msg, owner: str) -> Optional[str]:
    """Set the consumer of report ``msg`` to ``owner`` (the account that published it);
    returns the consumer it claimed when that was someone else, else None."""
    rep = msg.report
    claimed = rep.user
    rep.user = owner
    return claimed if claimed != owner else None
