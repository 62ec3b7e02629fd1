"""links.conf: one pump's declaration of its neighbours, and what sr_police makes of it.

The admin of each pump writes ``~/.config/sarra/links.conf`` (beside admin.conf)::

    cluster pumpA                                  # this pump's cluster name
    post_base_dir /var/www/pump                    # its data tree
    post_base_url http://a.example.org/            # how the others fetch from it
    link pumpB amqp://pumpA@b.example.org/pump behind pumpC,pumpD
    link pumpE amqps://a_feed@e.example.org/ peer_user e_feed

``link <name> <broker URL> [behind <clusters>] [peer_user <user>]``: the neighbour's
cluster name, its broker with the account this pump uses there (password in
credentials.conf), the clusters reached through it, and the account it uses here
(default: its cluster name). :func:`load` reads and checks it (a loop, a link to ourselves,
a cluster claimed twice: ConfigError naming file:line); :func:`linked_pump` adds the
neighbours' accounts to the :class:`~sarra.ops.audit.Pump` sr_police polices;
:func:`wanted_configs` is every configuration data and report routing need on this pump
(the ingest, per link a pulling sr_sarra and two report shovels), and
:func:`write_configs` keeps them in step with the declaration. Facts:
doc/spec/pump-topology.md §5, reports.md §5.2.
"""

import dataclasses
import os
import re
from typing import Dict, List, Optional, Tuple

from sarra import paths
from sarra.broker.client import parse_url, redact
from sarra.config.names import ConfigError
from sarra.config.words import option_line
from sarra.ops import audit, instances, webdoor

FILE = "links.conf"
#: first line of every configuration written from links.conf (how stale ones are known)
MARK = "# Written by sr_police from links.conf"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
KEYWORDS = ("cluster", "post_base_dir", "post_base_url", "link")


@dataclasses.dataclass
class Link:
    name: str                       # the neighbour's cluster name
    url: str                        # its broker, as the account this pump uses there
    behind: List[str]               # clusters reached through it
    peer_user: str                  # the account the neighbour uses on this pump
    where: str                      # file:line

    @property
    def account(self) -> str:
        return parse_url(self.url).user

    def reaches(self) -> List[str]:
        return [self.name] + self.behind


@dataclasses.dataclass
class Links:
    path: str
    cluster: str
    post_base_dir: str
    post_base_url: str
    links: List[Link]

    def beyond(self, but: Optional[Link] = None) -> List[str]:
        """Every cluster reached through a link (but the one given)."""
        return [c for ln in self.links if ln is not but for c in ln.reaches()]


def links_path() -> str:
    return os.path.join(paths.config_dir(), FILE)


def _names(words: List[str], where: str, what: str) -> List[str]:
    out = [n for w in words for n in w.split(",") if n]
    for n in out:
        if not _NAME.fullmatch(n):
            raise ConfigError("%s: %s '%s' is not a name (letters, digits, '_', '.', '-'; "
                              "at most 64)" % (where, what, n))
    return out


def _link(words: List[str], where: str) -> Link:
    if len(words) < 2:
        raise ConfigError("%s: expected 'link <cluster> <broker URL> [behind <clusters>] "
                          "[peer_user <user>]'" % where)
    name = _names(words[:1], where, "cluster")[0]
    url = words[1]
    try:
        u = parse_url(url)
    except ValueError as e:
        raise ConfigError("%s: %s" % (where, e)) from None
    if u.password is not None:
        raise ConfigError("%s: %s: put the password in credentials.conf, not in %s"
                          % (where, redact(url), FILE))
    behind, peer, rest = [], name, words[2:]
    while rest:
        word = rest.pop(0)
        if word == "behind" and rest:
            # names up to the next keyword (a list may be written with commas or spaces)
            take = []
            while rest and rest[0] not in ("behind", "peer_user"):
                take.append(rest.pop(0))
            behind += _names(take, where, "cluster")
        elif word == "peer_user" and rest:
            peer = _names([rest.pop(0)], where, "peer_user")[0]
        else:
            raise ConfigError("%s: unexpected '%s' (link <cluster> <broker URL> [behind "
                              "<clusters>] [peer_user <user>])" % (where, word))
    return Link(name, url, behind, peer, where)


def parse(text: str, path: str) -> Links:
    """The declaration in ``text`` (read from ``path``); ConfigError naming file:line."""
    found: Dict[str, Tuple[str, str]] = {}
    links: List[Link] = []
    for n, line in enumerate(text.splitlines(), 1):
        parsed = option_line(line)
        if parsed is None:
            continue
        where = "%s:%d" % (path, n)
        key, words = parsed
        if key not in KEYWORDS:
            raise ConfigError("%s: unknown word '%s' (%s takes %s)" % (
                where, key, FILE, ", ".join(KEYWORDS)))
        if key == "link":
            links.append(_link(words, where))
            continue
        if len(words) != 1:
            raise ConfigError("%s: '%s' takes one value" % (where, key))
        if key in found:
            raise ConfigError("%s: second '%s' line (the first is at %s)" % (
                where, key, found[key][1]))
        if key == "cluster":
            _names(words, where, "cluster")
        found[key] = (words[0], where)
    for key in ("cluster", "post_base_dir", "post_base_url"):
        if key not in found:
            raise ConfigError("%s: no '%s' line" % (path, key))
    decl = Links(path, found["cluster"][0], found["post_base_dir"][0],
                 found["post_base_url"][0], links)
    _check_loops(decl, found["cluster"][1])
    return decl


def _check_loops(decl: Links, cluster_where: str) -> None:
    """One route to each cluster: a second one is a loop."""
    owner: Dict[str, str] = {decl.cluster: "%s (cluster)" % cluster_where}
    peers: Dict[str, str] = {}
    for ln in decl.links:
        if ln.name == decl.cluster:
            raise ConfigError("%s: link to '%s', this pump itself (a loop)" % (ln.where,
                                                                            ln.name))
        for c in ln.reaches():
            if c in owner:
                raise ConfigError("%s: cluster '%s' is already reached at %s: two routes "
                                  "to one cluster make a loop" % (ln.where, c, owner[c]))
            owner[c] = ln.where
        if ln.peer_user in peers:
            raise ConfigError("%s: peer_user '%s' is already the account of the link at %s"
                              % (ln.where, ln.peer_user, peers[ln.peer_user]))
        peers[ln.peer_user] = ln.where


def load(path: Optional[str] = None) -> Optional[Links]:
    """The declaration of this pump, or None when it has no links.conf."""
    path = path or links_path()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("%s: cannot read: %s" % (path, getattr(e, "strerror", None) or e))
    return parse(text, path)


def linked_pump(cfg, path: Optional[str] = None) -> audit.Pump:
    """sr_police's Pump (audit.pump_from_config) with the neighbours' accounts declared
    (subscriber permissions) and ``pump.links`` set (None without links.conf)."""
    pump = audit.pump_from_config(cfg)
    refresh(pump, path)
    return pump


def refresh(pump: audit.Pump, path: Optional[str] = None) -> None:
    """Read links.conf again (the watchdog does, each pass): the neighbours' accounts
    follow it. A ConfigError leaves the pump as it was."""
    decl = load(path)
    for ln in decl.links if decl else ():
        if ln.peer_user in pump.roles and ln.peer_user not in pump.peers:
            raise ConfigError("%s: peer_user '%s' is declared %s in admin.conf; a "
                              "neighbour's account is declared by its link only" % (
                                  ln.where, ln.peer_user, pump.roles[ln.peer_user]))
    for user in pump.peers:
        pump.roles.pop(user, None)
    pump.peers[:] = []
    pump.links = decl
    for ln in decl.links if decl else ():
        pump.roles[ln.peer_user] = "subscriber"
        pump.peers.append(ln.peer_user)


def describe(pump: audit.Pump) -> List[str]:
    """What ``sr_police show`` prints of links.conf: the cluster, each link, the
    configurations made from it."""
    decl = pump.links
    if decl is None:
        return []
    out = ["cluster %s (%s)" % (decl.cluster, decl.path)]
    for ln in decl.links:
        out.append("link %s %s%s, its account here %s" % (
            ln.name, redact(ln.url), " behind %s" % ",".join(ln.behind) if ln.behind else "",
            ln.peer_user))
    out.append("configurations %s" % " ".join(
        "%s/%s" % k for k in sorted(wanted_configs(pump))))
    return out


# ------------------------------------------------------------------ the configurations

def _word(value: str) -> str:
    """A value as one configuration word (v2 rule: a blank escaped by a backslash)."""
    return value.replace(" ", "\\ ")


def _conf(lines: List[str]) -> str:
    return "\n".join([MARK + ": rewritten when the declaration changes;",
                      "# rename to .conf.off to stop it (sr_police then leaves it alone)."]
                     + lines + [""])


#: the readers declarations of sources (topic v02.adm.readers), beside their posts
ADM = ["topic_prefix v02.adm", "subtopic #", "topic_prefix v02.post"]


def wanted_configs(pump: audit.Pump) -> Dict[Tuple[str, str], str]:
    """{(component, config name): text} of every configuration the links need here."""
    decl = pump.links
    if decl is None:
        return {}
    feeder = redact(pump.feeder_url)
    tree = ["cluster %s" % decl.cluster, "cluster_routing on",
            "post_base_dir %s" % _word(decl.post_base_dir),
            "post_base_url %s" % decl.post_base_url]
    # private data (flow/readers.py): the neighbours' accounts get the readers declarations
    # and restricted posts on xp_<account>; .htaccess files once sr_police web set Apache up
    if pump.peers:
        tree.append("downstream_accounts %s" % ",".join(pump.peers))
    if webdoor.is_set_up():
        tree.append("htaccess on")
    out = {}
    sources = [u for u in pump.users("source")]
    if sources:
        ingest = ["broker %s" % feeder, "source_from_exchange on"]
        for s in sources:
            ingest += ["exchange xs_%s" % s, "subtopic #"] + ADM
        # a post with no --to names the broker host (sr_post's default): it stays here
        ingest += tree + ["cluster_aliases %s" % pump.host]
        if decl.beyond():
            ingest.append("gateway_for %s" % ",".join(decl.beyond()))
        ingest += ["directory ${PBD}/${YYYYMMDD}/${SOURCE}", "post_broker %s" % feeder,
                   "post_exchange xpublic", "report_back on", "accept .*"]
        out[("sarra", "ln_ingest")] = _conf(ingest)
    for ln in decl.links:
        url = redact(ln.url)
        others = decl.beyond(but=ln)
        pull = ["# pull what %s's xpublic sends to %s%s" % (
            ln.name, decl.cluster, " or through it" if others else ""),
            "broker %s" % url, "exchange xpublic", "subtopic #",
            "exchange xp_%s" % ln.account, "subtopic #"] + ADM + tree
        if others:
            pull.append("gateway_for %s" % ",".join(others))
        pull += ["directory %s" % _word(decl.post_base_dir), "post_broker %s" % feeder,
                 "post_exchange xpublic", "report_back on"]
        if sources:     # a neighbour's post never lands in the tree of a source of ours
            pull.append("# the trees of this pump's own sources are theirs alone")
            pull += ["reject .*/[0-9]{8}/%s/.*" % re.escape(u) for u in sources]
        pull.append("accept .*")
        out[("sarra", "ln_from_%s" % ln.name)] = _conf(pull)
        out[("shovel", "ln_reports2%s" % ln.name)] = _conf([
            "# reports about data that entered the network at %s go back to it" % (
                " or ".join(ln.reaches())),
            "broker %s" % feeder, "exchange xreport", "topic_prefix v02.report", "subtopic #",
            "post_broker %s" % url, "post_exchange xs_%s" % ln.account,
            "declare_exchange off", "on_message msg_from_cluster",
            "msg_from_cluster %s" % ",".join(ln.reaches()), "report_back off"])
        # what the neighbour relays may only be about data that came through it from us
        ours = [decl.cluster] + others
        out[("shovel", "ln_%s2xreport" % ln.name)] = _conf([
            "# reports %s relays (account %s) about data from %s, into xreport" % (
                ln.name, ln.peer_user, " or ".join(ours)),
            "broker %s" % feeder, "exchange xs_%s" % ln.peer_user,
            "topic_prefix v02.report", "subtopic #", "post_exchange xreport",
            "cluster %s" % decl.cluster, "cluster_routing on",
            "on_message msg_from_cluster", "msg_from_cluster %s" % ",".join(ours),
            "report_back off"])
    return out


def _written_here(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(MARK)
    except OSError:
        return False


def write_configs(pump: audit.Pump, dry_run: bool = False, report_daemons: bool = False,
                  root: Optional[str] = None, apply: bool = True) -> List[audit.Finding]:
    """Bring the configurations made from links.conf in step with it: write the missing
    or changed ones, delete the ones of removed links (only files written from links.conf;
    never a .conf.off or its twin). With links, the rr_* report shovels are written as
    ``report_daemons on`` writes them. ``apply`` off (check without --fix): the findings
    only."""
    decl = getattr(pump, "links", None)
    want = wanted_configs(pump)
    out: List[audit.Finding] = []
    if decl is not None and not report_daemons:
        out += audit.write_report_shovels(pump, dry_run)
    if decl is not None and not pump.feeder_url:
        return out          # write_report_shovels said why (the configs run as the feeder)
    root = root or paths.config_dir()
    for (component, name), text in sorted(want.items()):
        path = os.path.join(root, component, name + ".conf")
        if os.path.exists(path + ".off"):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                have = f.read()
        except FileNotFoundError:
            have = None
        except OSError:
            have = ""
        if have == text:
            continue
        if have is not None and not have.startswith(MARK):
            out.append(audit.Finding("%s config %s" % (component, path), "written by hand "
                                     "where %s wants its own; rename it .off or remove it"
                                     % FILE))
            continue
        out.append(_finding(path, "missing" if have is None else "differs from %s" % FILE,
                            "write it", "written", text, dry_run, apply))
    out += unknown_clusters(pump, root)
    for component in ("sarra", "shovel"):
        d = os.path.join(root, component)
        try:
            present = sorted(os.listdir(d))
        except OSError:
            continue
        for f in present:
            if not (f.startswith("ln_") and f.endswith(".conf")):
                continue
            if (component, f[:-5]) in want or not _written_here(os.path.join(d, f)):
                continue
            out.append(_finding(os.path.join(d, f), "no longer wanted by %s" % (
                FILE if decl is not None else "a links.conf (there is none)"),
                "stop it and delete it", "stopped and deleted", None, dry_run, apply,
                (component, f[:-5])))
    return out


#: options of a pump's own configurations that name clusters (they must be known here)
CLUSTER_OPTIONS = ("to", "gateway_for", "gf", "msg_to_clusters", "msg_from_cluster")
COMPONENTS = ("sarra", "shovel", "sender", "poll", "winnow", "watch", "post", "subscribe")


def unknown_clusters(pump: audit.Pump, root: Optional[str] = None) -> List[audit.Finding]:
    """A cluster named in one of this pump's configurations (to, gateway_for,
    msg_to_clusters, msg_from_cluster) that is neither here nor behind a link: one finding
    per file:line (its posts would go nowhere, or its routing would wait for nothing)."""
    decl = getattr(pump, "links", None)
    if decl is None:
        return []
    known = {decl.cluster, pump.host, "*"} | set(decl.beyond())
    root = root or paths.config_dir()
    out = []
    for component in COMPONENTS:
        d = os.path.join(root, component)
        try:
            names = sorted(f for f in os.listdir(d) if f.endswith(".conf"))
        except OSError:
            continue
        for f in names:
            path = os.path.join(d, f)
            if _written_here(path):
                continue            # ours: rewritten or deleted from links.conf
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    lines = fh.read().splitlines()
            except OSError:
                continue
            for n, line in enumerate(lines, 1):
                parsed = option_line(line)
                if parsed is None or parsed[0] not in CLUSTER_OPTIONS:
                    continue
                bad = [c for w in parsed[1] for c in w.split(",") if c and c not in known]
                if bad:
                    out.append(audit.Finding(
                        "config %s:%d" % (path, n), "%s names cluster %s, unknown to %s "
                        "(known: %s)" % (parsed[0], ", ".join("'%s'" % c for c in bad),
                                         decl.path, ", ".join(sorted(known - {"*"}))),
                        setup=True))
    return out


def _finding(path, problem, action, done, text, dry_run, apply,
             running=None) -> audit.Finding:
    def fix():
        if running is not None:         # a removed link: its processes go with it
            instances.stop(*running)
        if text is None:
            os.unlink(path)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            paths.atomic_write(path, text, 0o644)
    f = audit.Finding("config %s" % path, problem, action, done, fix, setup=True)
    if not apply:
        return f
    if dry_run:
        f.result = "would fix"
        return f
    try:
        fix()
        f.result = "fixed"
    except OSError as e:
        f.result, f.error = "failed", "%s: %s" % (path, e.strerror or e)
    return f
