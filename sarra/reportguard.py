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
(C0, DEL, C1, line and paragraph separators, bidirectional overrides) wherever a report is
shown, so that one report is always one line and never reaches a terminal raw.
"""

import math
from typing import Optional

#: invisible characters that reorder or split what a terminal shows (not C0/C1 controls)
_FORMATTING = {0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F),
               *range(0x2066, 0x206A), 0xFEFF}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return "\\x%02x" % n if n < 0x100 else "\\u%04x" % n


def _unsafe(n: int) -> bool:
    return n < 0x20 or 0x7F <= n <= 0x9F or n in _FORMATTING


def printable(value) -> str:
    """``value`` as text with every control character escaped: ``\\n``, ``\\r``, ``\\t``,
    ``\\x1b`` (C0, DEL and C1 as ``\\xHH``), ``\\u2028`` (line/paragraph separators and
    bidirectional formatting marks); a backslash is doubled so that the escapes cannot be
    forged. Printable text, non-ASCII letters included, is unchanged."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "\\" not in text and not any(ord(c) in _FORMATTING for c in text):
        return text                     # the usual case: nothing to do
    return "".join(_escape_char(c) if c == "\\" or _unsafe(ord(c)) else c for c in text)


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
    from sarra.components import exchange_owner
    return exchange_owner(exchange, cfg)


def stamp_consumer(msg, owner: str) -> Optional[str]:
    """Set the consumer of report ``msg`` to ``owner`` (the account that published it);
    returns the consumer it claimed when that was someone else, else None."""
    rep = msg.report
    claimed = rep.user
    rep.user = owner
    return claimed if claimed != owner else None
