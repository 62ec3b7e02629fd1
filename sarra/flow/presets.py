"""What each consuming component does differently: a table of presets over one flow.

A preset names the placement step (where the file goes locally, computed before
on_message so that plugins can see and change it), the work step (download, send or
nothing), whether accepted messages are re-posted, whether the component reports, its
default plugins, an optional check run on every message before on_message (sr_sarra's
source validation), and where its work comes from (``source``, sources.py: the queue, or
sr_post's paths, or sr_watch's events). Option defaults that
differ per component (mirror, inplace, accept_unmatch, ...) live in the options table
(options.py), not here.
"""

from sarra.flow import download, fetchpolicy, routing, send, winnow
from sarra.flow import msgbounds, postsource, readers
from sarra.flow import quota
from sarra.flow import senddone, tracking
from sarra.flow.preset import Preset
from sarra.flow.stepstate import DownloadState, SendState
from sarra.flow.work import Outcome


def exchange_owner(exchange: str, cfg) -> str:
    """The user an xs_ exchange belongs to: xs_<user>, xs_<user>_<suffix>, xs_<user>NN.
    With declared sources, the longest declared name the exchange is built from wins."""
    rest = exchange[3:]
    declared = sorted((getattr(cfg, "declared", None) or {}).get("source", []) or [],
                      key=len, reverse=True)
    for user in declared:
        tail = rest[len(user):]
        if rest.startswith(user) and (tail == "" or tail.startswith("_")
                                      or (len(tail) == 2 and tail.isdigit())):
            return user
    suffix = getattr(cfg, "exchange_suffix", None)
    if suffix and rest.endswith("_" + suffix):
        return rest[: -len(suffix) - 1]
    return rest


def delivered_unbound(exchange: str, cfg) -> bool:
    """Whether a message came from an exchange that cfg does not bind (nor its
    exchange_split forms): it was copied in by an exchange-to-exchange binding, which a
    source may make from its own xs_ exchange to any it reads (xpublic): the pump's own
    posts would then come back to it as if from that exchange, again and again."""
    bound = {b.exchange for b in (getattr(cfg, "bindings", None) or []) if b.exchange}
    if not exchange or not bound or exchange in bound:
        return False
    stem, split = exchange[:-2], exchange[-2:]
    return not (split.isdigit() and split.isascii() and stem in bound)


def sarra_check(flow, work):
    """A pump's ingest rule: the source is who posted, whatever the message claims. The
    source header is set to the poster before any refusal, so that the refusal's report
    goes back to the poster, never to the source it claimed to be."""
    msg, cfg = work.msg, flow.cfg
    owner = claimed = None
    readers.fetch_as_reader(flow, work)     # restricted data: fetched as our account there
    if cfg.source_from_exchange and delivered_unbound(msg.exchange, cfg):
        raise Outcome(403, f"Forbidden: delivered from exchange {msg.exchange}, which this "
                           f"configuration does not bind (an exchange-to-exchange binding)")
    if cfg.source_from_exchange and msg.exchange.startswith("xs_"):
        owner = exchange_owner(msg.exchange, cfg)
        claimed = msg.headers.get("source")
        msg.headers["source"] = owner
    if msg.kind == "adm":       # a source's declaration of readers: always raises
        readers.accept(flow, work, owner, claimed)
    # what a source may make the pump fetch (schemes, hosts, file: below base_dir) and
    # whose credentials it may use: fetchpolicy.py
    fetchpolicy.check(flow, work)
    if owner is not None:
        if claimed and claimed != owner and work.retry_entry is None:
            raise Outcome(403, f"Forbidden: message from exchange {msg.exchange} claims source {claimed}")
        msg.headers["from_cluster"] = cfg.cluster or cfg.broker_netloc()
    msgbounds.pump_check(flow, work)    # sums that check no data, masked mode: msgbounds.py


#: inter-pump routing (to_clusters, gateway_for, loop prevention; off unless
#: cluster_routing is set): the first on_message step of the components that carry
#: messages into a pump
ROUTING = {"on_message": ["sarra.flow.routing:on_message"]}

PRESETS = {
    # a post older than the local copy: 304, never fetched (routing.newest_wins)
    "subscribe": Preset("subscribe", place=routing.newest_wins(download.destination),
                        work=download.download,
                        posts=True, uncached=download.assembled, state=DownloadState,
                        check=readers.reader_check),    # xp_<user>: fetched as <user>
    # restricted data: its .htaccess before the file is written (readers.guarded)
    "sarra": Preset("sarra", place=readers.guarded(routing.newest_wins(download.destination)),
                    work=quota.guarded(download.download),     # quota.py: per source
                    posts=True, check=sarra_check,
                    default_plugins=ROUTING, uncached=download.assembled,
                    state=DownloadState),
    "sender": Preset("sender", place=send.place, work=send.send, posts=True,
                     default_plugins=ROUTING, state=SendState, confirmed=senddone.settled),
    "shovel": Preset("shovel", posts=True, default_plugins=ROUTING),
    "winnow": Preset("winnow", posts=True, default_plugins=ROUTING,
                     connected=winnow.connected, dedupe=winnow.dedupe, settled=winnow.settled,
                     confirmed=winnow.confirmed),
    # every report accepted goes into the summary store first (tracking.py)
    "report": Preset("report", reports=False, check=tracking.record,
                     state=tracking.Tracker),
    # the posters: messages built from local files, straight to the post step
    "post": postsource.PRESET,      # defined there: sr_post imports no work step
    "watch": Preset("watch", posts=True, reports=False,
                    source="sarra.watch.daemon:WatchSource"),
    "poll": Preset("poll", posts=True, reports=False, source="sarra.poll.source:PollSource"),
}


def preset(component: str) -> Preset:
    return PRESETS[component]
