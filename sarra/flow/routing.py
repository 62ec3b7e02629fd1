"""Routing between pumps: to_clusters, gateways, loops, late versions, reports going home.

Every pump has a cluster name (option ``cluster``), optional other names
(``cluster_aliases``) and the clusters it forwards to (``gateway_for``). A component that
carries messages into a pump (sr_sarra pulling, sr_shovel copying, sr_sender pushing; its
``cluster`` names the pump its output lands on) and has ``cluster_routing on``:

* keeps a post only when its ``to_clusters`` names that cluster, an alias, or a cluster it
  is a gateway for (pump-topology.md §5, the 2016 rule); other posts are dropped silently
  (logged with ``log_reject``);
* drops a post that this cluster has already handled: each pump appends its name to the
  ``cluster_path`` header of what it passes on (the first pump starts it; a message without
  the header starts from its ``from_cluster``), so a message can never come back to a pump
  it went through, whatever links the administrators set up;
* for reports (the shovels that carry them back), the same with a ``report_path`` header.

A newer version wins: on a pump (sr_sarra) a post whose ``mtime`` is older than the copy
already here, or a removal announced before the copy here was last modified, is answered
304 and not applied (see :func:`newest_wins`).

Reports go back hop by hop (reports.md §5.2). sr_police writes the configurations of a
linked pump from its links.conf (sarra/ops/links.py): per link, a sarra pulling the
neighbour's xpublic, a shovel taking the reports about data from the neighbour's side of
the network back to it, and one taking the reports it relays into xreport (with
``cluster_routing on``: the ``report_path`` check below). :func:`report_shovels` and
:func:`peer_shovel` describe the same two shovels for a chain wired by hand
(tests/integration/routingkit.py).

:func:`config_problem` refuses configurations that would feed their own input.
"""

import os
import stat
from typing import Dict, Iterable, List, Optional, Tuple

from sarra.flow.work import Outcome
from sarra.redaction import hide_passwords

PATH_HEADER = "cluster_path"
REPORT_PATH_HEADER = "report_path"
HEADER_LIMIT = 253          # messages-v02.md §4.6
#: seconds: an mtime read back from the file system vs the header it was set from
MTIME_SLACK = 1e-3


def names(value) -> List[str]:
    """A list option or a comma/space separated header value as a list of names."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    out = []
    for item in value:
        out.extend(w for w in str(item).replace(",", " ").split() if w)
    return out


def here(cfg) -> List[str]:
    """The names of the cluster this component delivers into: cluster + cluster_aliases."""
    return names(getattr(cfg, "cluster", None)) + names(getattr(cfg, "cluster_aliases", None))


def wanted(cfg) -> set:
    """to_clusters names this component carries: its cluster, aliases, and gateway_for."""
    return set(here(cfg)) | set(names(getattr(cfg, "gateway_for", None)))


# ------------------------------------------------------------------ the on_message step

def on_message(parent) -> bool:
    """Routing filter of sarra/shovel/winnow/sender (a default on_message of their
    presets); does nothing unless ``cluster_routing`` is on."""
    cfg = parent.cfg
    if not getattr(cfg, "cluster_routing", False):
        return True
    work = parent.msg
    msg = getattr(work, "msg", work)
    if msg.kind == "report" or msg.report is not None:
        return _report_hop(parent, work, msg)
    return _post_hop(parent, work, msg)


def _drop(parent, msg, why: str, level: str = "info") -> bool:
    if level != "info" or getattr(parent.cfg, "log_reject", False):
        getattr(parent.log, level)("%s: %s", msg.relpath, why)
    return False


def _post_hop(parent, work, msg) -> bool:
    cfg, h = parent.cfg, msg.headers
    local = here(cfg)
    me = local[0]
    targets = names(h.get("to_clusters"))
    if not targets:
        return _drop(parent, msg, "rejected: no to_clusters header (cluster_routing)")
    if not set(targets) & wanted(cfg):
        return _drop(parent, msg, "rejected: to_clusters %s is not for cluster %s nor a "
                     "cluster it is a gateway for" % (",".join(targets), me))
    ingest = bool(getattr(cfg, "source_from_exchange", False)) and msg.exchange.startswith("xs_")
    path = [] if ingest else names(h.get(PATH_HEADER))
    if not path and not ingest:
        origin = h.get("from_cluster")
        if origin and origin not in local:
            path = [origin]
    if set(path) & set(local):
        if getattr(work, "retry_entry", None) is not None and path[-1] == me:
            return True          # our own retry: the path was extended before it was saved
        return _drop(parent, msg, "rejected: already handled by cluster %s (%s %s): loop "
                     "avoided" % (me, PATH_HEADER, ",".join(path)), "info")
    path.append(me)
    value = ",".join(path)
    if len(value.encode()) >= HEADER_LIMIT:
        return _drop(parent, msg, "rejected: %s longer than %d bytes" % (PATH_HEADER,
                                                                           HEADER_LIMIT), "error")
    h[PATH_HEADER] = value
    return True


def _report_hop(parent, work, msg) -> bool:
    cfg, h = parent.cfg, msg.headers
    local = here(cfg)
    path = names(h.get(REPORT_PATH_HEADER))
    if set(path) & set(local):
        if getattr(work, "retry_entry", None) is not None and path[-1] == local[0]:
            return True
        return _drop(parent, msg, "report dropped: already passed through cluster %s (%s "
                     "%s): loop avoided" % (local[0], REPORT_PATH_HEADER, ",".join(path)),
                     "warning")
    path.append(local[0])
    value = ",".join(path)
    if len(value.encode()) >= HEADER_LIMIT:
        return _drop(parent, msg, "report dropped: %s too long" % REPORT_PATH_HEADER, "error")
    h[REPORT_PATH_HEADER] = value
    return True


# ------------------------------------------------------------------ late versions

def newest_wins(place):
    """Wrap a placement step (download.destination): once the local path is known, refuse
    (304) a post older than the local copy and a removal older than the local copy."""

    def placed(flow, work):
        result = place(flow, work)
        older_than_local(flow, work)
        return result

    placed.__name__ = getattr(place, "__name__", "place")
    placed.__doc__ = place.__doc__
    return placed


def older_than_local(flow, work) -> None:
    """Raise Outcome(304) when the message announces something older than the file here.

    Compared: the ``mtime`` header of a file post, or the pubtime of a removal, with the
    modification time of the local file (which carries the source's mtime: preserve_time).
    Nothing is compared without preserve_time, without a local file, or for links."""
    cfg, msg = flow.cfg, work.msg
    path = work.local_path
    if not path or not getattr(cfg, "preserve_time", True) or getattr(work, "retry_entry", None):
        return
    sumstr = msg.headers.get("sum", "")
    algo = sumstr[:1]
    if algo == "L":
        return
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return      # a link's or directory's mtime is when it was made here, not the source's
    local = st.st_mtime
    from sarra.message import parse_time as _epoch
    try:
        if algo == "R":
            announced = _epoch(msg.pubtime)
            what = "removal"
        elif "mtime" in msg.headers:
            announced = _epoch(msg.headers["mtime"])
            what = "version"
        else:
            return
    except ValueError:
        return
    if local > announced + MTIME_SLACK:
        raise Outcome(304, "not modified3: older than the local file, a newer version is "
                           "here (local mtime %.3f, announced %s %.3f)"
                      % (local, what, announced))


# ------------------------------------------------------------------ configuration checks

def _broker_key(url) -> Optional[Tuple[str, int, str]]:
    if not url:
        return None
    from sarra.config.brokerurl import parse_url
    try:
        u = parse_url(url)
    except ValueError:
        return None
    return (u.host.lower(), u.port, u.vhost)


def post_exchanges(cfg) -> List[str]:
    pe = getattr(cfg, "post_exchange", None)
    if not pe:
        return []
    if getattr(cfg, "post_exchange_by_source", False):     # <pe><source> of each source kept
        pe = ["%s%s" % (pe, s) for v in getattr(cfg, "msg_by_source", None) or ()
              for s in str(v).replace(",", " ").split()]
    else:
        pe = [pe]
    n = getattr(cfg, "post_exchange_split", 0) or 0
    return ["%s%02d" % (x, i) for x in pe for i in range(n)] if n > 0 else pe


class ConfigRefused(Exception):
    """A configuration that must not run (see config_problem); the command that runs the
    flow maps it to exit status 2 (a configuration error)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self):
        return self.text


def refuse_bad_config(cfg, preset, log) -> None:
    """Flow start-up hook: log one error line and raise ConfigRefused for a refused
    configuration."""
    problem = config_problem(cfg, preset)
    if problem:
        text = "sr_%s %s: refused: %s" % (getattr(cfg, "component", "?"),
                                          getattr(cfg, "name", None) or "-", problem)
        log.error("%s", text)
        raise ConfigRefused(text)


def config_problem(cfg, preset) -> Optional[str]:
    """One line saying why this configuration must not run, or None."""
    if getattr(cfg, "cluster_routing", False) and not here(cfg):
        return "cluster_routing needs the name of the cluster (option cluster)"
    component = getattr(cfg, "component", None)
    if component not in ("sarra", "shovel", "winnow", "sender") or not getattr(preset, "posts", False):
        return None
    broker, post = _broker_key(getattr(cfg, "broker", None)), _broker_key(getattr(cfg, "post_broker", None))
    if broker is None or broker != post:
        return None
    bound = {b.exchange for b in getattr(cfg, "bindings", ()) or ()}
    for x in post_exchanges(cfg):
        if x in bound:
            return ("post_exchange %s is an exchange this %s reads from, on the same broker "
                    "(%s:%d vhost %s): every message would come back to it in a loop; set "
                    "another post_exchange or post_broker" % (x, component, *broker))
    return None


# ------------------------------------------------------------------ report routing shovels

def _redact(url: str) -> str:
    return hide_passwords(url, mask=None)


def report_shovels(feeder_url: str, cluster: str,
                   routes: Iterable[Tuple[str, str, str]]) -> Dict[str, str]:
    """{config name: text}: per route, a shovel reading this pump's xreport and passing the
    reports about data from ``route cluster`` to the broker/exchange of that route."""
    out = {}
    for origin, url, exchange in routes:
        if origin == cluster:
            continue            # reports about our own data stay here (rr_xreport_route)
        name = "rr_xreport2cluster_%s" % "".join(c if c.isalnum() or c in "-_." else "_"
                                                  for c in origin)
        out[name] = "\n".join([
            "# Reports about data that entered the network on cluster %s go back the way" % origin,
            "# the data came: to %s exchange %s." % (_redact(url), exchange),
            "broker %s" % _redact(feeder_url), "exchange xreport",
            "topic_prefix v02.report", "subtopic #",
            "post_broker %s" % _redact(url), "post_exchange %s" % exchange,
            "declare_exchange off", "on_message msg_from_cluster", "msg_from_cluster %s" % origin,
            "report_back off", ""])
    return out


def peer_shovel(feeder_url: str, cluster: str, peer_user: str) -> Tuple[str, str]:
    """(config name, text) of the shovel taking the reports a downstream pump relays to its
    account ``peer_user`` here into xreport (loop-checked with report_path)."""
    name = "rr_%s2xreport" % peer_user
    return name, "\n".join([
        "# %s is the account of a downstream pump: it relays the reports of its users" % peer_user,
        "# about data that went through cluster %s; pass them all to xreport." % cluster,
        "broker %s" % _redact(feeder_url), "exchange xs_%s" % peer_user,
        "topic_prefix v02.report", "subtopic #", "post_exchange xreport",
        "cluster %s" % cluster, "cluster_routing on",
        "on_message msg_from_cluster", "msg_from_cluster *", "report_back off", ""])
