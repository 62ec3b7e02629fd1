"""The flow's one post step: what every component does to publish a post.

``publish``: for each of work.posts, outbound (header, post_base_url round robin,
post_exchange_split: outbound.py), on_post (which may drop it), then the post connection;
a post that cannot be encoded raises Outcome (413, refused once, never retried).
``post_built``: the same for the messages a source built (sources.Source.built: sr_post,
sr_watch), after the posters' duplicate suppression (a removal forgets its path; the
cache is flushed by settle, after the confirms). The engine (Flow.post, Flow.handle)
calls them; Work.posts stays empty for a post that was not published, so that settle and
the source know.
"""

import time
from typing import List

from sarra.broker.client import BrokerError, BrokerStopped
from sarra.flow import cache as dupcache
from sarra.flow import msgbounds, outbound, readers, sourcex
from sarra.flow.work import Outcome, Result, Work
from sarra.message import MessageError


def publish(flow, work: Work, exchange: str, persistent: bool, on_post: bool) -> None:
    out = outbound.Outbound.of(flow.cfg, flow.log)      # header, round robin, split
    refused = []
    for p in work.posts:
        flow.msg = work
        work.outgoing = p
        try:
            out.prepare(p)
            if on_post:
                p.encode()          # one that cannot be posted is not logged "posted"
                if not flow.hooks.run("on_post"):
                    continue
            topic, body, headers = p.encode()
        except MessageError as e:   # a permanent failure: reported once, not retried
            raise Outcome(msgbounds.TOO_LARGE, f"Payload Too Large: {e.field} not "
                                               f"posted: {e.reason}") from None
        x = out.exchange_for(headers, exchange)
        if out.by_source and not sourcex.exists(flow, x):   # xr_<gone source>: never
            sourcex.refuse(flow, work, x)                   # the whole batch refused
            refused.append(p)
            continue
        # restricted data and declarations: xp_<reader> exchanges only (readers.py)
        for x in readers.exchanges_for(flow, p, x):
            flow.post_broker.publish(x, topic, body, headers, persistent=persistent)
        flow.counters["posted"] += 1
    if refused:
        work.posts = [p for p in work.posts if all(p is not r for r in refused)]


def post_built(flow, batch: List[Work]) -> bool:
    """Post a built batch; False when the post connection failed: the source took the
    batch back (Source.failed), settle must not run."""
    cfg, cache, counters = flow.cfg, flow.cache, flow.counters
    basis = cfg.suppress_duplicates_basis or "path"
    exchange, persistent = cfg.post_exchange, bool(cfg.get("persistent", True))
    on_post = flow.hooks.has("on_post")
    counters["received"] += len(batch)
    flow.last_activity = time.time()       # the stats file follows (Flow.stats_tick)
    try:
        for work in batch:
            msg = work.msg
            if cache is not None:
                if msg.sum.algo == "R":
                    cache.remove_path(msg.relpath)
                elif not cache.check_and_add(dupcache.cache_key(msg, basis)):
                    counters["duplicates"] += 1
                    work.posts = []
                    work.outcome = Result.REJECTED
                    continue
            try:
                publish(flow, work, exchange, persistent, on_post)
            except Outcome as o:        # cannot be encoded: the source says where
                work.code, work.text = o.code, o.text
                work.posts = []
                work.outcome = Result.REJECTED
    except BrokerStopped:
        raise
    except BrokerError as e:
        flow.source.failed(batch, e)
        flow.stop_event.wait(1.0)
        return False
    finally:
        flow.msg = None
    return True
