"""Private data across pumps (issue 22): a source's declaration of who may read its data.

A source declares the readers of a prefix of its own tree with ``sr_readers``: an adm
message (topic ``v02.adm.readers``, v02 framing: ``<pubtime> adm: <prefix>`` with headers
``source``, ``readers``, ``to_clusters``, ``sum 0,0``) posted on its own ``xs_<source>``
exchange. Old v2 pumps bind ``v02.post.#`` only: they never see it.

sr_sarra (``sarra_check`` calls :func:`accept`) takes a declaration only

* from the exchange's owner (``xs_<source>`` with ``source_from_exchange``: the poster is
  the source, a declared source when the pump declares its sources), or
* from an upstream pump: on ``xp_<account>``, the exchange only that pump's feeder writes;

records it in the configuration's state (``readers.json``, 0600, written atomically: other
users see neither the readers nor the rules), passes it to the downstream pumps
(``downstream_accounts``: on ``xp_<account>``) and refuses anything else with a 403 report
to the poster.

Both doors of each pump then enforce it:

* broker: a post of restricted data goes to ``xp_<user>`` for each reader, the source and
  each downstream account, never to ``xpublic`` (:func:`exchanges_for`); sr_police lets a
  user read its own ``xp_<user>`` only, so no subtopic of any other exchange carries it;
* web: with ``htaccess on``, ``.htaccess`` (``Require user ...``) is written in the
  directory of the prefix as the data is written, and rewritten or removed when the
  declaration changes (Apache with ``AllowOverride AuthConfig``: doc/admin-guide.rst).

Core: no argv, no printing.
"""

import json
import os
import re
import threading
import urllib.parse
from typing import Dict, List, Optional, Tuple

from sarra import paths
from sarra.flow.work import Outcome
from sarra.message import Message, unescape

ADM_TOPIC = "v02.adm.readers"
ADM_BASEURL = "adm:"
WITHDRAW = "*"
MAX_READERS = 64
MAX_RULES = 100        # prefixes one source may restrict on a pump (its state file stays small)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


# ------------------------------------------------------------------ the declaration

def check_prefix(prefix: str) -> str:
    """The normal form of a declared prefix ('' or 'dir/sub/'); ValueError says why not."""
    p = unescape(prefix or "").strip("/")
    if p in ("", "."):
        return ""
    if len(p) > 255 or not p.isprintable() or "\\" in p:
        raise ValueError("prefix %r: at most 255 printable characters, no backslash" % prefix[:60])
    if any(s in ("", ".", "..") for s in p.split("/")):
        raise ValueError("prefix %r: empty, '.' or '..' path component" % prefix[:60])
    return p + "/"


def check_readers(value: Optional[str]) -> Optional[List[str]]:
    """The readers a header names: a list (empty: private to the source), or None for a
    withdrawal ('*'); ValueError says why not."""
    value = (value or "").strip()
    if value == WITHDRAW:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if len(names) > MAX_READERS:
        raise ValueError("%d readers: at most %d" % (len(names), MAX_READERS))
    for n in names:
        if not _NAME.fullmatch(n):
            raise ValueError("reader %r: not a user name" % n[:60])
    return sorted(set(names))


def declaration(source: str, prefix: str, readers: Optional[List[str]], to_clusters: str,
                pubtime: str) -> Message:
    """The adm message a source posts (readers None: withdraw the restriction)."""
    p = check_prefix(prefix)
    value = WITHDRAW if readers is None else ",".join(check_readers(",".join(readers)))
    headers = {"source": source, "readers": value, "sum": "0,0"}
    if to_clusters:
        headers["to_clusters"] = to_clusters
    return Message(pubtime, ADM_BASEURL, "/" + p if p else "/", headers, topic=ADM_TOPIC,
                   kind="adm")


# ------------------------------------------------------------------ the rules

class Rules:
    """A configuration's recorded declarations: {source: {prefix: {"readers": [...],
    "dirs": [directories holding its .htaccess]}}}, read again when the file changes
    (several instances share it)."""

    def __init__(self, path: str):
        self.path = path
        self.data: Dict[str, Dict[str, Dict]] = {}
        self.downstream: List[str] = []      # recorded as "_downstream" (sr_police)
        self.base: Optional[str] = None      # recorded as "_base": the tree, htaccess on
        self._stamp: Optional[Tuple[float, int]] = None
        self.lock = threading.Lock()
        self.load()

    def load(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.data, self._stamp = {}, None
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            self.data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.data = {}
        self._stamp = stamp

    def save(self) -> None:
        self.data["_downstream"] = sorted(self.downstream)
        self.data["_base"] = self.base
        paths.atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True), 0o600)
        self._stamp = None
        self.load()

    def sources(self) -> List[str]:
        self.load()
        return [s for s in self.data if not s.startswith("_")]

    def get(self, source: str, prefix: str) -> Optional[Dict]:
        return self.data.get(source, {}).get(prefix)

    def set(self, source: str, prefix: str, readers: Optional[List[str]]) -> Optional[Dict]:
        """Record (or, readers None, remove) a rule; returns the rule it replaces."""
        mine = self.data.setdefault(source, {})
        old = mine.get(prefix)
        if readers is None:
            mine.pop(prefix, None)
            if not mine:
                self.data.pop(source, None)
        else:
            mine[prefix] = {"readers": list(readers),
                            "dirs": list(old.get("dirs", [])) if old else []}
        self.save()
        return old

    def match(self, source: Optional[str], relpath: str) -> Optional[Tuple[str, Dict, str]]:
        """(prefix, rule, head) of the longest prefix of source's rules that covers
        relpath, head being the part of relpath before the prefix; else None."""
        self.load()
        mine = self.data.get(source or "") if source else None
        if not mine or not isinstance(mine, dict):
            return None
        best = None
        for head, rest in candidates(relpath, source):
            for prefix, rule in mine.items():
                if rest.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
                    best = (prefix, rule, head)
        return best


def candidates(relpath: str, source: str) -> List[Tuple[str, str]]:
    """(head, rest) splits of a relpath where the source's own path may start: the whole
    path, and after each ``<source>/`` component (pumps file data below
    ``<date>/<source>/``). Every split is tried: a rule covers more, never less."""
    rel = unescape(relpath).lstrip("/")
    segs = rel.split("/")
    out = [("", rel)]
    for i, s in enumerate(segs[:-1]):
        if s == source:
            out.append(("/".join(segs[: i + 1]) + "/", "/".join(segs[i + 1:])))
    return out


def rules_of(flow) -> Optional[Rules]:
    """The Rules of a sr_sarra flow (made on first use), else None."""
    if flow.preset.component != "sarra":
        return None
    rules = getattr(flow, "_readers_rules", None)
    if rules is None:
        rules = Rules(rules_path(flow.cfg))
        rules.downstream = list(getattr(flow.cfg, "downstream_accounts", None) or [])
        if getattr(flow.cfg, "htaccess", False):
            rules.base = getattr(flow.cfg, "post_base_dir", None)
        flow._readers_rules = rules
    return rules


def rules_path(cfg) -> str:
    return os.path.join(cfg.state_dir(), "readers.json")


# ------------------------------------------------------------------ sr_sarra: accept

def accept(flow, work, owner: Optional[str], claimed: Optional[str]) -> None:
    """sr_sarra's handling of an adm message: always raises Outcome (201: recorded and
    passed on; 403: refused, reported to whoever posted it)."""
    msg, cfg = work.msg, flow.cfg
    rules = rules_of(flow)
    if rules is None or msg.topic.split(".")[:3] != ADM_TOPIC.split("."):
        raise Outcome(403, "Forbidden: adm message %s not taken here" % msg.topic[:80])
    if owner is not None:               # from a source's own xs_ exchange
        if not _NAME.fullmatch(owner):
            raise Outcome(403, "Forbidden: %s is not a source name" % owner[:60])
        if claimed and claimed != owner:
            raise Outcome(403, "Forbidden: declaration from exchange %s claims source %s"
                          % (msg.exchange, claimed))
        sources = (getattr(cfg, "declared", None) or {}).get("source") or []
        if sources and owner not in sources:
            raise Outcome(403, "Forbidden: %s is not a source of this pump" % owner)
        source = owner
        msg.headers["from_cluster"] = cfg.cluster or cfg.broker_netloc()
    elif msg.exchange.startswith("xp_"):    # from the upstream pump's feeder
        source = msg.headers.get("source", "")
        if not _NAME.fullmatch(source or ""):
            raise Outcome(403, "Forbidden: declaration names no source")
    else:
        raise Outcome(403, "Forbidden: declarations are taken from the source's xs_ "
                           "exchange or an upstream pump's xp_ exchange, not %s" % msg.exchange)
    try:
        prefix = check_prefix(msg.relpath)
        readers = check_readers(msg.headers.get("readers"))
    except ValueError as e:
        raise Outcome(403, "Forbidden: %s" % e) from None
    with rules.lock:
        old = rules.get(source, prefix)
        unchanged = (old is None and readers is None) or (
            old is not None and readers is not None and old.get("readers") == readers)
        if not unchanged and old is None and readers is not None \
                and len(rules.data.get(source, {})) >= MAX_RULES:
            raise Outcome(403, "Forbidden: %s has %d restricted prefixes here, at most %d"
                          % (source, len(rules.data.get(source, {})), MAX_RULES))
        if not unchanged:
            rules.set(source, prefix, readers)
            refresh_htaccess(flow, rules, source, prefix, old)
    msg.headers["source"] = source
    what = "%s:%s" % (source, prefix or "/")
    if unchanged:       # seen already: a loop, or a repeat; passed on no further
        raise Outcome(201, "Accepted: readers of %s unchanged" % what)
    work.posts = [msg]      # passed on: the post step sends it to xp_<downstream account>
    raise Outcome(201, "Accepted: readers of %s %s" % (
        what, "withdrawn" if readers is None else "recorded"))


# ------------------------------------------------------------------ reading restricted data

def fetch_as_reader(flow, work) -> None:
    """A message from ``xp_<user>`` is restricted data and the consumer is ``<user>`` (no
    one else may read that exchange): its file is fetched as that account (the user put
    in the URL's authority, http and https only, when it names none), so that the web
    server's access rule lets it through with that account's credentials.conf entry
    (``https://<user>:<password>@<host>/``). sr_sarra's and sr_subscribe's check step."""
    msg = work.msg
    if not msg.exchange.startswith("xp_") or msg.kind != "post":
        return
    user = msg.exchange[3:]
    scheme, sep, rest = msg.baseurl.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not user:
        return
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        return                  # a user is named already
    msg.baseurl = "%s://%s@%s" % (scheme, urllib.parse.quote(user, safe=""), rest)


def reader_check(flow, work) -> None:
    """sr_subscribe's check step: :func:`fetch_as_reader`."""
    fetch_as_reader(flow, work)


# ------------------------------------------------------------------ the broker door

def allowed(flow, source: str, rule: Dict) -> List[str]:
    """Who may read a restricted post here: its readers, its source, the downstream
    pumps' accounts (they pass it on, and enforce it there)."""
    down = list(getattr(flow.cfg, "downstream_accounts", None) or [])
    return sorted(set(rule.get("readers", [])) | {source} | set(down))


def exchanges_for(flow, post: Message, exchange: str) -> List[str]:
    """The exchanges one post goes to: ``[exchange]``, or for restricted data and for
    declarations, ``xp_<user>`` of each user allowed to read it (never xpublic)."""
    if post.kind == "adm":
        down = list(getattr(flow.cfg, "downstream_accounts", None) or [])
        return [private_exchange(flow, u) for u in sorted(set(down))]
    rules = rules_of(flow)
    if rules is None or post.kind != "post" or not rules.sources():
        return [exchange]
    source = post.headers.get("source")
    found = rules.match(source, post.relpath)
    if found is None:
        return [exchange]
    prefix, rule, head = found
    write_htaccess_for(flow, rules, source, prefix, rule, head)
    return [private_exchange(flow, u) for u in allowed(flow, source, rule)]


def private_exchange(flow, user: str) -> str:
    """xp_<user>, declared on the post broker once per flow (sr_police makes the users'
    own; a reader with no account here gets one nobody can bind)."""
    name = "xp_" + user
    made = flow.__dict__.setdefault("_readers_declared", set())
    if name not in made and flow.post_broker is not None:
        flow.post_broker.declare_exchange(name)
        made.add(name)
    return name


# ------------------------------------------------------------------ the web door

def guarded(place):
    """Wrap sr_sarra's placement step: once the local path is known, and before the file
    is written, the .htaccess of a restricted prefix is in place (htaccess on)."""

    def placed(flow, work):
        result = place(flow, work)
        cfg = flow.cfg
        base, local = getattr(cfg, "post_base_dir", None), work.local_path
        rules = rules_of(flow)
        if rules is None or not base or not local or not getattr(cfg, "htaccess", False) \
                or work.msg.kind != "post" or not rules.sources():
            return result
        rel = os.path.relpath(local, base)
        if rel.startswith(".." + os.sep) or rel == "..":
            return result
        source = work.msg.headers.get("source")
        found = rules.match(source, "/" + rel.replace(os.sep, "/"))
        if found is not None:
            write_htaccess_for(flow, rules, source, found[0], found[1], found[2])
        return result

    placed.__name__ = getattr(place, "__name__", "place")
    placed.__doc__ = place.__doc__
    return placed


def write_htaccess_for(flow, rules: Rules, source: str, prefix: str, rule: Dict,
                       head: str) -> None:
    """With ``htaccess on``: make sure the directory of prefix holds its .htaccess before
    the post announcing a file below it goes out."""
    cfg = flow.cfg
    base = getattr(cfg, "post_base_dir", None)
    if not getattr(cfg, "htaccess", False) or not base:
        return
    # here, not at the top: ops.webdoor brings sr_police's audit (the management API
    # client, requests) into every daemon's memory otherwise
    from sarra.ops.webdoor import HTACCESS, htaccess_text
    rel_dir = (head + prefix).rstrip("/")
    directory = os.path.join(base, rel_dir) if rel_dir else base
    text = htaccess_text(source, prefix, allowed(flow, source, rule))
    target = os.path.join(directory, HTACCESS)
    try:
        with open(target, encoding="utf-8") as f:
            if f.read() == text and rel_dir in rule.get("dirs", []):
                return
    except OSError:
        pass
    os.makedirs(directory, exist_ok=True)
    paths.atomic_write(target, text, 0o644)
    with rules.lock:
        rules.load()
        r = rules.get(source, prefix)
        if r is not None and rel_dir not in r.setdefault("dirs", []):
            r["dirs"].append(rel_dir)
            rules.save()


def refresh_htaccess(flow, rules: Rules, source: str, prefix: str,
                     old: Optional[Dict]) -> None:
    """A declaration changed: rewrite (or, withdrawn, remove) the .htaccess files it
    wrote, so that it takes effect for the files already there."""
    cfg = flow.cfg
    base = getattr(cfg, "post_base_dir", None)
    if not getattr(cfg, "htaccess", False) or not base or not old:
        return
    from sarra.ops.webdoor import HTACCESS, htaccess_text     # see write_htaccess_for
    new = rules.get(source, prefix)
    for rel_dir in old.get("dirs", []):
        target = os.path.join(base, rel_dir, HTACCESS) if rel_dir else os.path.join(base, HTACCESS)
        if new is None:
            paths.discard(target)
        elif os.path.isdir(os.path.dirname(target)):
            paths.atomic_write(target, htaccess_text(source, prefix,
                                                     allowed(flow, source, new)), 0o644)
