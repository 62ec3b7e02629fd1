"""Where did my file go: the store of what every consumer reported about each file.

sr_report (the "report" preset) records each report it accepts here, before its
on_message plugins run (:func:`record`, the preset's check step); ``sr_report summary``
reads the store back (reportsummary.py). It is an append-only journal per instance,
``summary_NN.jsonl`` in the configuration's state directory: one JSON line per report,
rewritten now and then as one line per (file, consumer) (:meth:`Store.compact`), so
that it survives restarts and stays bounded.

A file is known by its source, its pubtime and its base name: a pump keeps the pubtime
of what it copies and re-announces (reports.md §2), while its path changes on the way
(``/obs/a.txt`` at the source, ``/20261127/alice/obs/a.txt`` on the pump). A consumer
is ``user@host`` (the user stamped by the pump from the exchange the report came in
on; the host is the consumer's word); where it works is the host of the report's base
URL (the pump it downloaded from; for a pump's own copy, where it published it: its
``201 Published`` report).

Every field is a consumer's text: each is cut to a bound here, and the numbers of
files, consumers and blocks kept are bounded (the oldest files are forgotten first).
"""

import json
import logging
import os
import time
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from sarra import paths
from sarra.checksum import Parts, parse_part_suffix
from sarra.message import unescape
from sarra.flow import quotanote
from sarra.flow.reportguard import report_problem

MAX_NAME = 1024           # characters of a file's path kept
MAX_TEXT = 256            # characters of a report's message kept
MAX_WORD = 128            # source, user, host, pump, pubtime
MAX_FILES = 10000         # files kept (the oldest first reported go first)
MAX_CONSUMERS = 500       # distinct consumers kept per store
MAX_BLOCKS = 10000        # blocks of one file followed one by one
JOURNAL = "summary_%02d.jsonl"

log = logging.getLogger("sarra")


def _cut(value, limit: int) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def pump_of(baseurl: str) -> str:
    """host[:port] of a report's base URL, without any user or password in it."""
    try:
        netloc = urlsplit(baseurl).netloc
    except ValueError:
        netloc = ""
    return _cut(netloc.rsplit("@", 1)[-1] or "-", MAX_WORD)


def whole_name(name: str, parts) -> str:
    """The file a block's report is about: a method-p block travels as its own part file
    (``<name>.<bsz>.<blktot>.<brem>.<bno>.<algo>.Part``, partname.py), one file for all
    its blocks; ``name`` unchanged when its suffix is not the one its parts header says."""
    got = parse_part_suffix(name) if parts.method == "p" else None
    if got is None:
        return name
    target, p = got[0], got[1]
    if target.rsplit("/", 1)[-1] in ("", ".", "..") or (p.bsz, p.blktot, p.brem, p.bno) != (
            parts.bsz, parts.blktot, parts.brem, parts.bno):
        return name
    return target


class FileRec:
    """One file of one source: when it was first reported, its shortest path seen."""

    __slots__ = ("source", "pubtime", "base", "name", "first", "blocks")

    def __init__(self, source, pubtime, base, name, first, blocks=1):
        self.source, self.pubtime, self.base = source, pubtime, base
        self.name, self.first, self.blocks = name, first, blocks

    @property
    def key(self):
        return (self.source, self.pubtime, self.base)


class Rec:
    """What one consumer did with one file: its last report, and per block, done or
    failed (a whole file is block 0 of 1)."""

    __slots__ = ("file", "consumer", "pump", "code", "text", "time", "ok", "failed",
                 "published")

    def __init__(self, file, consumer, pump, code=0, text="", t=0.0, ok=(), failed=None):
        self.file, self.consumer, self.pump = file, consumer, pump
        self.published = False      # pump: where it re-announced the file (201 Published)
        self.code, self.text, self.time = code, text, t
        self.ok = set(ok)
        self.failed = dict(failed or {})    # block -> [code, text]

    def apply(self, block: int, code: int, text: str, t: float, pump: str) -> None:
        self.code, self.text, self.time = code, text, t
        publish = text.startswith("Publish")
        if publish or not self.published:
            self.pump, self.published = pump, self.published or publish
        if 200 <= code < 300 or code == 304:
            if len(self.ok) < MAX_BLOCKS:
                self.ok.add(block)
            self.failed.pop(block, None)
        elif code >= 400:
            self.ok.discard(block)
            self.failed[block] = [code, text]

    def state(self, blocks: int) -> str:
        """delivered, refused or pending."""
        if self.failed:
            return "refused"
        if len(self.ok) >= min(max(blocks, 1), MAX_BLOCKS):
            return "delivered"
        return "pending"

    def why(self) -> Tuple[int, str]:
        """The code and text of the refusal (the first failed block's)."""
        if self.failed:
            code, text = self.failed[min(self.failed)]
            return code, text
        return self.code, self.text


def _key_of(d) -> Tuple[str, str, str]:
    return (d["s"], d["p"], d["f"])


class Store:
    """The files and (file, consumer) records of one sr_report configuration."""

    def __init__(self, directory: str, instance: int = 1):
        self.directory = directory
        self.path = os.path.join(directory, JOURNAL % instance)
        self.files: Dict[Tuple[str, str, str], FileRec] = {}
        self.recs: Dict[Tuple[Tuple[str, str, str], str], Rec] = {}
        self.consumers = set()
        self.quotas: Dict[Tuple[str, str], list] = {}  # (source, consumer) -> [t, value, pump]
        self.lines = 0                  # lines in our own journal
        self._warned = False

    # ------------------------------------------------------------ reading
    def load(self) -> "Store":
        """Every instance's journal, applied in the order of the times recorded."""
        entries = []
        try:
            names = sorted(n for n in os.listdir(self.directory)
                           if n.startswith("summary_") and n.endswith(".jsonl"))
        except OSError:
            names = []
        for n in names:
            path = os.path.join(self.directory, n)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        if path == self.path:
                            self.lines += 1
                        try:
                            d = json.loads(line)
                            entries.append((float(d["t"]), d))
                        except (ValueError, KeyError, TypeError):
                            continue        # a line cut by a crash
            except OSError as e:
                log.warning("report summary: cannot read %s: %s", path, e)
        entries.sort(key=lambda e: e[0])
        for _, d in entries:
            try:
                self._apply(d)
            except (ValueError, KeyError, TypeError):
                continue
        return self

    def _apply(self, d) -> None:
        key = _key_of(d)
        t = float(d["t"])
        f = self.files.get(key)
        name = _cut(d["n"], MAX_NAME)
        if f is None:
            first = float(d.get("first", t))
            f = self.files[key] = FileRec(key[0], key[1], key[2], name, first,
                                          int(d.get("k", 1)))
            self._bound_files()
        elif len(name) < len(f.name):
            f.name = name
        f.blocks = max(f.blocks, int(d.get("k", 1)))
        consumer = _cut(d["c"], 2 * MAX_WORD + 1)
        rk = (key, consumer)
        rec = self.recs.get(rk)
        if rec is None:
            if consumer not in self.consumers and len(self.consumers) >= MAX_CONSUMERS:
                if not self._warned:
                    self._warned = True
                    log.warning("report summary: more than %d consumers, reports of the "
                                "others not kept", MAX_CONSUMERS)
                return
            self.consumers.add(consumer)
            rec = self.recs[rk] = Rec(key, consumer, d.get("w", "-"))
        if "q" in d and quotanote.parse(d["q"]) is not None:     # the pump's quota word
            qt, qk = float(d.get("qt", t)), (key[0], consumer)
            if qk in self.quotas or len(self.quotas) < MAX_CONSUMERS:
                if qt >= self.quotas.get(qk, [0.0])[0]:
                    self.quotas[qk] = [qt, d["q"], _cut(d.get("w", "-"), MAX_WORD)]
        if "ok" in d:                   # a compacted record: its whole state
            rec.pump, rec.code, rec.text, rec.time = d["w"], int(d["r"]), d["m"], t
            rec.published = bool(d.get("pub"))
            rec.ok = set(int(b) for b in d["ok"][:MAX_BLOCKS])
            rec.failed = {int(b): [int(v[0]), str(v[1])] for b, v in d["fail"].items()}
        else:
            rec.apply(int(d.get("b", 0)), int(d["r"]), _cut(d.get("m", ""), MAX_TEXT), t,
                      _cut(d.get("w", "-"), MAX_WORD))

    def _bound_files(self) -> None:
        if len(self.files) <= MAX_FILES:
            return
        oldest = sorted(self.files.values(), key=lambda f: f.first)
        for f in oldest[:len(self.files) - MAX_FILES]:
            del self.files[f.key]
        gone = [rk for rk in self.recs if rk[0] not in self.files]
        for rk in gone:
            del self.recs[rk]

    # ------------------------------------------------------------ writing
    def entry(self, msg, now: Optional[float] = None) -> Optional[dict]:
        """The journal line of report ``msg`` (None: not a report one can use)."""
        if report_problem(msg) is not None:
            return None
        rep, h = msg.report, msg.headers
        try:
            name = unescape(msg.relpath)
        except ValueError:
            name = msg.relpath
        block, blocks = 0, 1
        try:
            parts = Parts.parse(h["parts"]) if "parts" in h else None
        except ValueError:
            parts = None
        if parts is not None and parts.method in ("i", "p"):
            block, blocks = parts.bno, parts.blktot
            name = whole_name(name, parts)
        user, host = _cut(rep.user, MAX_WORD), _cut(rep.host, MAX_WORD)
        d = {"t": time.time() if now is None else now,
             "s": _cut(h.get("source", "-"), MAX_WORD),
             "p": _cut(msg.pubtime, MAX_WORD),
             "f": _cut(name.rsplit("/", 1)[-1], MAX_WORD * 2),
             "n": _cut(name, MAX_NAME), "c": "%s@%s" % (user, host),
             "w": pump_of(msg.baseurl), "r": rep.code,
             "m": _cut(h.get("message", ""), MAX_TEXT), "b": block, "k": blocks}
        if quotanote.parse(h.get(quotanote.HEADER)) is not None:
            d["q"] = h[quotanote.HEADER]
        return d

    def add(self, msg, now: Optional[float] = None) -> bool:
        """Record report ``msg``: applied, and appended to our journal."""
        d = self.entry(msg, now)
        if d is None:
            return False
        if (_key_of(d), d["c"]) not in self.recs and d["c"] not in self.consumers \
                and len(self.consumers) >= MAX_CONSUMERS:
            self._apply(d)          # warns once; nothing kept, nothing written
            return False
        if _key_of(d) not in self.files:
            d["first"] = d["t"]
        self._apply(d)
        self._append(d)
        if self.lines > 2 * len(self.recs) + 10000:
            self.compact()
        return True

    def _append(self, d) -> None:
        line = json.dumps(d, ensure_ascii=True, separators=(",", ":")) + "\n"
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("ascii"))
        finally:
            os.close(fd)
        self.lines += 1

    def compact(self) -> None:
        """Rewrite our journal as one line per (file, consumer) record (the records read
        from other instances' journals too: theirs are rewritten by their owners)."""
        lines = []
        for (key, consumer), rec in self.recs.items():
            f = self.files[key]
            d = {"t": rec.time, "first": f.first, "s": f.source, "p": f.pubtime,
                 "f": f.base, "n": f.name, "c": consumer, "w": rec.pump, "r": rec.code,
                 "m": rec.text, "k": f.blocks, "ok": sorted(rec.ok), "pub": rec.published,
                 "fail": {str(b): v for b, v in rec.failed.items()}}
            q = self.quotas.get((f.source, consumer))
            if q is not None:
                d["q"], d["qt"] = q[1], q[0]
            lines.append(json.dumps(d, ensure_ascii=True, separators=(",", ":")) + "\n")
        lines.sort(key=lambda s: json.loads(s)["t"])
        paths.atomic_write_lines(self.path, lines)
        self.lines = len(lines)


class Tracker:
    """The preset's step state: the store, opened at the first report."""

    def __init__(self):
        self.store = None


def record(flow, work) -> None:
    """The report preset's check step: every accepted report goes into the store (a
    message that is no report, or a store that cannot be written, is only logged)."""
    st = flow.step_state
    if not isinstance(st, Tracker):
        st = flow.step_state = Tracker()
    if st.store is None:
        st.store = Store(flow.user_cache_dir, flow.no).load()
    try:
        st.store.add(work.msg)
    except OSError as e:
        flow.log.warning("report summary: cannot write %s: %s", st.store.path, e)


def load(component: str, config: str) -> Store:
    """The store of configuration ``config`` of ``component``, read (summary action)."""
    return Store(paths.state_dir(component, config, create=False)).load()
