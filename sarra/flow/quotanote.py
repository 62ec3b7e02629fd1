"""The source sees its quota use and limit (issue 23, item 2) without being refused.

sr_sarra with the ``quota`` option adds a ``quota`` header to every report it sends about
a file of a source that has a quota: ``<bytes used>/<bytes limit>`` and, with a files
limit, `` <files>/<max files>`` (``-`` where there is no limit), as the ledger stands
when the report is sent (quota.py).  v02 allows extra headers; peers pass them on or
ignore them.  A ``quota`` header that came with the post (the source's, or anyone's on
the way) is never echoed: each report carries only its own consumer's word.

``sr_report summary`` keeps the latest one per (source, consumer) (tracking.py) and
shows it (reportsummary.py).  The header is a consumer's text: :func:`parse` accepts
only the form above.
"""

import re
from typing import Optional

from sarra.config import quotaspec
from sarra.flow import quota

HEADER = "quota"
_VALUE = re.compile(r"([0-9]{1,20})/([0-9]{1,20}|-)(?: ([0-9]{1,12})/([0-9]{1,12}|-))?")


def value(quotas, source: str) -> Optional[str]:
    """The header's value for ``source`` (None: no quota for it)."""
    max_bytes, max_files = quotaspec.limits_for(quotas.limits, source)
    if max_bytes is None and max_files is None:
        return None
    used, files = quotas.ledger(source).usage()
    text = "%d/%s" % (used, "-" if max_bytes is None else max_bytes)
    if max_files is not None:
        text += " %d/%d" % (files, max_files)
    return text


def stamp(flow, rep) -> None:
    """Set report ``rep``'s quota header: the pump's own word, or none at all."""
    rep.headers.pop(HEADER, None)
    cfg = getattr(flow, "cfg", None)
    if cfg is None or not getattr(cfg, "quota", None):
        return
    source = rep.headers.get("source")
    if not isinstance(source, str) or not source:
        return
    q = quota._quotas(flow)
    if q is None:
        return
    try:
        text = value(q, source)
    except OSError as e:            # the ledger cannot be read: the report goes without
        flow.log.warning("quota of source %s not read: %s", source, e)
        return
    if text:
        rep.headers[HEADER] = text


def parse(text) -> Optional[dict]:
    """{bytes, max_bytes, files, max_files} of a header value (None where no limit or
    no files part), or None when it is not of the form above."""
    m = _VALUE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None

    def num(g):
        return None if g in (None, "-") else int(g)
    return {"bytes": int(m.group(1)), "max_bytes": num(m.group(2)),
            "files": num(m.group(3)), "max_files": num(m.group(4))}
