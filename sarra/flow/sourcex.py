"""``post_exchange_by_source``: a post goes to its source's exchange only if that exists.

sr_police's one report routing shovel (``rr_xreport_route``, ops/reportroute.py) posts each
report to ``xr_<source>`` (outbound.py), inside its batch's AMQP transaction (batchtx.py).
A publish to an exchange that does not exist closes the channel: the whole batch, every
source's reports, would come back and fail again, forever (a source removed and its
``xr_`` deleted before the shovel reloads, a shovel edited by hand and never rewritten).

So before a post goes to a per-source exchange the flow knows that the exchange exists: a
passive declare on the post connection (never the consuming channel: batchtx.TxPost passes
it to its own connection), remembered while the connections stay the same (their channel
generations: a channel lost, e.g. to a commit refused because the exchange went away since,
asks again; not the post channel that a refused question itself costs). Unconfirmed
publishes are confirmed before a question (a refusal would have them published again).
A missing one (or one we may not write to) is asked again after MISSING_RECHECK seconds.
The post to a missing exchange is not made: its message is refused (403, acked,
:func:`refuse`), logged once per exchange name (at most MAX_NAMES names are named), and
the other sources' reports go on.

Core: poststep.publish calls :func:`exists` and :func:`refuse`; no argv, no printing.
"""

import time

from sarra.broker.client import BrokerAccessRefused, BrokerNotFound
from sarra.flow.work import Result

#: seconds before an exchange found missing is asked about again
MISSING_RECHECK = 60.0
#: exchange names remembered (all forgotten beyond that) and named in the log
MAX_NAMES = 1000
MAX_LOGGED = 100


class _Known:
    def __init__(self):
        self.seen = {}          # exchange -> (exists, monotonic time)
        self.generations = None     # of the connections the answers in ``seen`` came on
        self.logged = set()


def _known(flow) -> _Known:
    d = flow.__dict__
    k = d.get("_sarra_sourcex")
    if k is None:
        k = d["_sarra_sourcex"] = _Known()
    return k


def _generations(flow):
    return (getattr(flow.post_broker, "generation", None),
            getattr(getattr(flow, "broker", None), "generation", None))


def exists(flow, exchange: str, clock=time.monotonic) -> bool:
    """Does ``exchange`` exist on the post broker (as far as this connection knows)?"""
    pb = flow.post_broker
    if pb is None or getattr(pb, "down", False):
        return True             # nothing to ask (a spool keeps the posts of an outage)
    k = _known(flow)
    now = clock()
    if k.generations != _generations(flow):     # a connection changed: all asked again
        k.seen.clear()
        k.generations = _generations(flow)
    got = k.seen.get(exchange)
    if got is not None and (got[0] or now - got[1] < MISSING_RECHECK):
        return got[0]
    if getattr(pb, "unconfirmed", 0):
        # a refused declare closes the channel: its unconfirmed publishes (already
        # routed, most likely) would be published again on the next one (duplicates)
        pb.wait_confirms()
    try:
        ok = bool(pb.exchange_exists(exchange))
    except (BrokerNotFound, BrokerAccessRefused):
        ok = False              # refused: a post there would close the channel too
        # that costs the post channel (a new generation): not a reason to ask again
        # about the other exchanges (the answers stand)
        k.generations = _generations(flow)
    if len(k.seen) >= MAX_NAMES:
        k.seen.clear()
    k.seen[exchange] = (ok, now)
    return ok


def refuse(flow, work, exchange: str) -> None:
    """The post to ``exchange`` (missing) is not made: its message is refused, acked."""
    work.code, work.text = 403, ("Forbidden: exchange %s does not exist (not posted)"
                                 % exchange[:80])
    work.outcome = Result.REJECTED
    flow.counters["rejected"] += 1
    k = _known(flow)
    if exchange in k.logged or len(k.logged) > MAX_LOGGED:
        return
    k.logged.add(exchange)
    if len(k.logged) > MAX_LOGGED:
        flow.log.error("more posts to missing exchanges refused; no longer named")
    else:
        flow.log.error("exchange %r does not exist on the post broker: its posts are "
                       "refused (403, acked; logged once per exchange)", exchange[:80])
