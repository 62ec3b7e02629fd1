"""post_exchange_by_source (review): the passive declare that asks whether xr_<source>
exists must not cost the batch's unconfirmed publishes (a refusal closes the channel and
they would be published again), nor wipe the other answers (sarra/flow/sourcex.py)."""

import logging
import types

from sarra.broker.client import BrokerNotFound
from sarra.flow import sourcex
from sarra.flow.work import Counters


class Broker:
    """A post connection in confirm mode: a refused passive declare costs the channel (a
    new generation) and has its unconfirmed publishes published again."""

    def __init__(self, exchanges):
        self.exchanges, self.asked, self.generation = set(exchanges), [], 0
        self.pending, self.republished = [], []

    @property
    def unconfirmed(self):
        return len(self.pending)

    def wait_confirms(self, timeout=30):
        self.pending = []

    def publish(self, exchange, *args, **kw):
        self.pending.append(exchange)

    def exchange_exists(self, name):
        self.asked.append(name)
        if name not in self.exchanges:
            self.generation += 1
            self.republished += self.pending
            raise BrokerNotFound("exchange %r not found" % name)
        return True


def _flow(pb):
    return types.SimpleNamespace(log=logging.getLogger("t.sourcex"), post_broker=pb,
                                 broker=types.SimpleNamespace(generation=3),
                                 counters=Counters())


def test_unconfirmed_publishes_are_confirmed_before_asking():
    pb = Broker({"xr_bob"})
    flow = _flow(pb)
    assert sourcex.exists(flow, "xr_bob")
    pb.publish("xr_bob")
    assert not sourcex.exists(flow, "xr_alice")
    assert pb.republished == [] and pb.unconfirmed == 0


def test_a_refused_question_keeps_the_other_answers():
    pb = Broker({"xr_bob", "xr_carol"})
    flow = _flow(pb)
    assert sourcex.exists(flow, "xr_bob") and sourcex.exists(flow, "xr_carol")
    assert not sourcex.exists(flow, "xr_alice")
    assert not sourcex.exists(flow, "xr_dave")
    assert sourcex.exists(flow, "xr_bob") and sourcex.exists(flow, "xr_carol")
    assert not sourcex.exists(flow, "xr_alice")
    assert pb.asked == ["xr_bob", "xr_carol", "xr_alice", "xr_dave"]


def test_a_connection_lost_otherwise_asks_again():
    pb = Broker({"xr_bob"})
    flow = _flow(pb)
    assert sourcex.exists(flow, "xr_bob")
    pb.generation += 1                  # the post connection reconnected
    assert sourcex.exists(flow, "xr_bob")
    flow.broker.generation += 1         # the consuming channel changed
    assert sourcex.exists(flow, "xr_bob")
    assert pb.asked == ["xr_bob"] * 3
