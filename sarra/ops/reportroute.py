"""The report routing from xreport to the sources: one shovel, one read per report.

sr_police (``report_daemons on``) writes ``rr_xreport_route``: it reads xreport once and
posts each report to ``xr_<source>`` of the source it names (``post_exchange xr_`` with
``post_exchange_by_source on``, flow/outbound.py), keeping only the pump's declared sources
(``msg_by_source <list>``: a report naming any other source, or none, is dropped and
logged once). Earlier versions wrote one ``rr_xreport2<source>`` shovel per source, each
reading every report: with N sources each report was read N times.

Upgrade: an ``rr_xreport2<source>.conf`` exactly as an earlier sr_police wrote it is
retired (its instances stopped, the file deleted). One the admin edited, or renamed
``.conf.off``, is left alone and its source left out of the routing shovel (no report
routed twice; ``.off`` still means "no routing for that source"). The routing shovel is
rewritten when the sources change, if it is still exactly as sr_police wrote it (its
running instances are told to reload); renamed ``.conf.off`` or edited, never.
"""

import os
from typing import Dict, Iterable, List, Optional, Tuple

from sarra import paths
from sarra.ops import instances, reload

#: the routing shovel's configuration name (no source name can make it: not rr_xreport2...)
ROUTE = "rr_xreport_route"
#: the per-source shovels of earlier versions: rr_xreport2<source>
OLD_PREFIX = "rr_xreport2"
ROUTE_MARK = "# Written by sr_police: route each report on xreport to xr_<source>"
#: the report shovels log no line per report (post_log was ~15 % of their CPU; the reports
#: themselves are the record, and errors are still logged)
NO_POST_LOG = ("# no line per report in the log (on_post post_log to have one)", "on_post None")


def route_text(feeder: str, sources: Iterable[str], common: List[str]) -> str:
    """The routing shovel's configuration (feeder: its redacted URL)."""
    sources = list(sources)
    return "\n".join([
        ROUTE_MARK + ",",
        "# the exchange of the source it names; one read per report, whatever the number",
        "# of sources. Rewritten by sr_police when the sources change; rename it to",
        "# %s.conf.off to stop routing (sr_police will not rewrite it)." % ROUTE,
        "broker %s" % feeder, "exchange xreport"] + common + [
        "post_exchange xr_", "post_exchange_by_source on",
        "on_message msg_by_source", "msg_by_source %s" % ",".join(sources),
        "report_back off"] + list(NO_POST_LOG) + [""])


def old_text(feeder: str, user: str) -> str:
    """An rr_xreport2<user> shovel exactly as an earlier sr_police wrote it."""
    name = OLD_PREFIX + user
    return "\n".join([
        "# Written by sr_police: copy the reports about %s's data from xreport" % user,
        "# to xr_%s, where %s reads them (sr_report)." % (user, user),
        "# Rename to %s.conf.off to stop routing (sr_police will not rewrite it)." % name,
        "broker %s" % feeder, "exchange xreport", "topic_prefix v02.report", "subtopic #",
        "topic_prefix v02.log", "subtopic #", "topic_prefix v02", "subtopic post",
        "post_broker %s" % feeder, 
        "post_exchange xr_%s" % user, "on_message msg_by_source",
        "msg_by_source %s" % user, "report_back off", ""])


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def old_shovels(directory: str, feeder: str, sources: Iterable[str]
                ) -> Tuple[List[Tuple[str, str]], Dict[str, Tuple[bool, str]]]:
    """([(path, config name)] of the old per-source shovels to retire (exactly as written),
    {source: (stopped, why)} of the declared sources whose old shovel the admin kept:
    renamed .off (stopped True) or edited)."""
    retire, kept = [], {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []
    for f in names:
        if not (f.startswith(OLD_PREFIX) and f.endswith(".conf")):
            continue
        user = f[len(OLD_PREFIX):-len(".conf")]
        if user and read_text(os.path.join(directory, f)) == old_text(feeder, user):
            retire.append((os.path.join(directory, f), f[:-len(".conf")]))
    retired = {p for p, _ in retire}
    for s in sources:
        path = os.path.join(directory, OLD_PREFIX + s + ".conf")
        if os.path.exists(path + ".off"):
            kept[s] = (True, "%s.off is there (its routing stopped by the admin)" % path)
        elif os.path.exists(path) and path not in retired:
            kept[s] = (False, "%s was edited by hand; it still routes %s's reports" % (path, s))
    return retire, kept


def is_untouched_route(text: Optional[str], feeder: str, common: List[str]) -> bool:
    """Is this routing shovel exactly as sr_police wrote it (for some list of sources)?"""
    if not text or not text.startswith(ROUTE_MARK):
        return False
    for line in text.splitlines():
        if line.startswith("msg_by_source "):
            listed = line.split(None, 1)[1].split(",")
            return text == route_text(feeder, listed, common)
    return False


def retire(path: str, name: str) -> None:
    """Stop an old per-source shovel's instances, delete its configuration."""
    instances.stop("shovel", name)
    os.unlink(path)


def rewrite(path: str, text: str) -> None:
    """Write the routing shovel again; its running instances reload it (SIGHUP)."""
    paths.atomic_write(path, text, 0o644)
    reload.signal_instances("shovel", ROUTE, max(1, instances.read_expected("shovel", ROUTE)))
