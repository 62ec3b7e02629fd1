"""post_exchange_by_source (issue 20, review): a post to a per-source exchange that does
not exist is not made; its message is refused (403, acked), logged once per name, and
the flow asks the broker again only when its connections changed (sarra/flow/sourcex.py)."""

import logging
import types

from sarra.broker.client import BrokerNotFound
from sarra.flow import poststep, sourcex
from sarra.flow.work import Counters, Result, Work
from sarra.message import make_post, now


class Broker:
    """A post connection: publish, and a passive declare that costs the channel when the
    exchange is missing (its generation changes), as sarra.broker.client.Broker."""

    def __init__(self, exchanges):
        self.exchanges, self.published, self.asked, self.generation = set(exchanges), [], [], 0

    def exchange_exists(self, name):
        self.asked.append(name)
        if name not in self.exchanges:
            self.generation += 1
            raise BrokerNotFound("exchange %r not found" % name)
        return True

    def publish(self, exchange, topic, body, headers, persistent=True):
        self.published.append(exchange)


def _flow(pb):
    cfg = types.SimpleNamespace(headers={}, post_base_url=None, post_exchange="xr_",
                                post_exchange_by_source=True)
    return types.SimpleNamespace(cfg=cfg, log=logging.getLogger("t.sourcex"), msg=None,
                                 preset=types.SimpleNamespace(component="shovel"),
                                 post_broker=pb, broker=types.SimpleNamespace(generation=7),
                                 counters=Counters())


def _post(flow, source):
    msg = make_post(now(), "http://h/", "/d/f", {"sum": "d," + "0" * 32,
                                                 "parts": "1,0,1,0,0", "source": source})
    work = Work(msg)
    work.posts = [msg]
    poststep.publish(flow, work, "xr_", True, False)
    return work


def test_a_missing_exchange_refuses_that_post_only(caplog):
    pb = Broker({"xr_bob"})
    flow = _flow(pb)
    with caplog.at_level(logging.ERROR):
        works = [_post(flow, s) for s in ("alice", "bob", "alice", "bob", "alice")]
    assert pb.published == ["xr_bob", "xr_bob"]
    for w in works[0::2]:
        assert (w.code, w.outcome, w.posts) == (403, Result.REJECTED, [])
    assert all(w.outcome == Result.DONE and w.posts for w in works[1::2])
    assert [r.getMessage() for r in caplog.records].count(
        "exchange 'xr_alice' does not exist on the post broker: its posts are refused "
        "(403, acked; logged once per exchange)") == 1
    assert len(caplog.records) == 1
    # asked once each: the answers kept while the connections stay the same
    assert sorted(pb.asked) == ["xr_alice", "xr_bob"]
    assert flow.counters["rejected"] == 3 and flow.counters["posted"] == 2


def test_the_answer_is_asked_again_when_a_connection_changed():
    pb = Broker({"xr_alice"})
    flow = _flow(pb)
    _post(flow, "alice")
    pb.exchanges.clear()                # deleted; a commit refused: the channel changed
    flow.broker.generation += 1
    w = _post(flow, "alice")
    assert w.code == 403 and pb.asked == ["xr_alice", "xr_alice"]
    pb.exchanges.add("xr_alice")        # back: asked again after MISSING_RECHECK only
    assert _post(flow, "alice").code == 403
    t = [1e9]
    assert sourcex.exists(flow, "xr_alice", clock=lambda: t[0])
