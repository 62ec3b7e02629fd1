"""``sr_report summary``: for each file a source posted, what became of it on every pump
and consumer (delivered, refused and why, pending), from the store of tracking.py.

Who is expected to report on a file (the rule, man sr_report):

* every consumer that reported on it;
* with ``summary_expect`` (names ``user`` or ``user@host``): those consumers, whether they
  ever reported or not;
* without it: every consumer that reported on files of the same source around it, that
  is, whose first file reported came no later than this one, and whose last file came
  no more than ``summary_window`` (default 1h) before it (a consumer that stopped an
  hour before the file was posted is taken as gone for good; one that started after it
  never had it to take).

The times compared are those of each file's first report here (a v02 report carries no
time of its own). An expected consumer without a report on a file is *pending* (down,
slow, or still busy: a file in parts is pending while blocks are missing); one whose last
word on any block is a 4xx or 5xx code is *refused*, with its code and message; one that
reported 2xx or 304 on every block, *delivered*.

Everything shown is a consumer's text: :func:`text_lines` escapes control characters
(reportguard.printable), :func:`as_json` writes ASCII JSON.
"""

import json
import time
from typing import Dict, Iterable, List, Optional

from sarra.flow import quotanote
from sarra.flow.reportguard import printable


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _matches(consumer: str, names: Iterable[str]) -> bool:
    user = consumer.split("@", 1)[0]
    return any(n == consumer or n == user for n in names)


def summarize(store, window: float = 3600.0, expect: Optional[List[str]] = None) -> List[Dict]:
    """One dict per file, oldest first (see the module's rule for who is expected)."""
    expect = [e for e in (expect or []) if e]
    by_file: Dict[tuple, list] = {}
    span: Dict[tuple, list] = {}            # (source, consumer) -> [first, last, pump]
    for (key, consumer), rec in store.recs.items():
        by_file.setdefault(key, []).append(rec)
        f = store.files[key]
        s = span.setdefault((f.source, consumer), [f.first, f.first, rec.pump, rec.time])
        s[0], s[1] = min(s[0], f.first), max(s[1], f.first)
        if rec.time >= s[3]:
            s[2], s[3] = rec.pump, rec.time
    out = []
    for f in sorted(store.files.values(), key=lambda f: (f.first, f.name)):
        recs = {r.consumer: r for r in by_file.get(f.key, [])}
        expected = set(recs)
        known = [c for (src, c) in span if src == f.source]
        if expect:
            expected.update(c for c in known if _matches(c, expect))
            for name in expect:                 # never reported anything: by its name
                if not any(_matches(c, [name]) for c in expected):
                    expected.add(name)
        else:
            for c in known:
                first, last = span[(f.source, c)][:2]
                if first <= f.first and last >= f.first - window:
                    expected.add(c)
        row = {"file": f.name, "source": f.source, "pubtime": f.pubtime,
               "first_report": _when(f.first), "expected": len(expected),
               "delivered": [], "refused": [], "pending": []}
        for c in sorted(expected):
            r = recs.get(c)
            if r is None:
                pump = span.get((f.source, c), [None, None, "-"])[2]
                row["pending"].append({"consumer": c, "pump": pump, "blocks": None})
                continue
            state = r.state(f.blocks)
            item = {"consumer": c, "pump": r.pump}
            if state == "refused":
                item["code"], item["message"] = r.why()
            elif state == "delivered":
                item["code"], item["message"] = r.code, r.text
            else:
                item["blocks"] = "%d/%d" % (len(r.ok), f.blocks)
            row[state].append(item)
        out.append(row)
    return out


def quotas(store) -> List[Dict]:
    """The latest quota use and limit each pump reported per source (the ``quota`` header
    of sr_sarra's reports, quotanote.py), one dict per (source, consumer)."""
    out = []
    for (source, consumer), (t, text, _) in sorted(store.quotas.items()):
        q = quotanote.parse(text)
        if q is not None:
            out.append(dict(source=source, consumer=consumer, time=_when(t), **q))
    return out


def as_json(rows: List[Dict], quota: Optional[List[Dict]] = None) -> str:
    """The summary for scripts: {"files": [...]} in ASCII JSON (and "quota": [...] when
    a pump reported a quota of the source)."""
    out = {"files": rows}
    if quota:
        out["quota"] = quota
    return json.dumps(out, ensure_ascii=True, indent=1)


def _who(item) -> str:
    return "%s at %s" % (printable(item["consumer"]), printable(item["pump"]))


def text_lines(rows: List[Dict], quota: Optional[List[Dict]] = None) -> List[str]:
    """One line per file, fields separated by two spaces, then a total line (the file
    is ``source:path`` when the reports are about several sources' files: xreport):

    2026-11-27 14:02:07Z  delivered 2/3  /obs/a.txt  refused: carol@ws3 at pump (417 ...)  pending: ...

    and after the total line, the latest quota each pump reported for a source:

    quota of alice at feeder@pump: 4096 of 5120 bytes (2026-11-27 14:02:07Z)
    """
    lines = []
    complete = refused = pending = 0
    several = len({r["source"] for r in rows}) > 1     # xreport: name each file's source
    for r in rows:
        parts = [r["first_report"], "delivered %d/%d" % (len(r["delivered"]), r["expected"]),
                 ("%s:" % printable(r["source"]) if several else "") + printable(r["file"])]
        if r["refused"]:
            refused += 1
            parts.append("refused: " + ", ".join(
                "%s (%03d %s)" % (_who(i), i["code"], " ".join(printable(i["message"]).split()))
                for i in r["refused"]))
        if r["pending"]:
            pending += 1
            parts.append("pending: " + ", ".join(
                _who(i) + (" (%s blocks)" % i["blocks"] if i["blocks"] else "")
                for i in r["pending"]))
        if not r["refused"] and not r["pending"]:
            complete += 1
        lines.append("  ".join(parts))
    lines.append("%d file(s): %d delivered to every consumer expected, %d refused by some, "
                 "%d pending" % (len(rows), complete, refused, pending))
    for q in quota or ():
        files = "" if q["max_files"] is None else ", %d of %d files" % (q["files"],
                                                                         q["max_files"])
        lines.append("quota of %s at %s: %d of %s bytes%s (%s)" % (
            printable(q["source"]), printable(q["consumer"]), q["bytes"],
            "-" if q["max_bytes"] is None else q["max_bytes"], files, q["time"]))
    return lines
