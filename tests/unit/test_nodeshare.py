"""node_shares (sarra/flow/nodeshare.py, sarra/broker/shares.py) with a fake broker: the
names every node computes alike, and the balancer handing extra shards over."""

import collections
import logging
from types import SimpleNamespace

from sarra.broker import shares
from sarra.flow import nodeshare


class Cfg(SimpleNamespace):
    def get(self, name, default=None):
        return getattr(self, name, default)

    def queue_name_default(self, random_suffix=None):
        return "q_u.sr_sarra.pump." + (random_suffix or "12345678.87654321")


def cfg(**kw):
    base = dict(node_shares=4, queue_name=None)
    base.update(kw)
    return Cfg(**base)


class FakeChan:
    def __init__(self, broker):
        self.broker, self.calls, self.n = broker, [], 0

    def basic_cancel(self, tag):
        self.calls.append(("cancel", tag))

    def basic_reject(self, tag, requeue):
        self.calls.append(("reject", tag, requeue))

    def basic_consume(self, queue, no_ack, callback):
        self.n += 1
        self.calls.append(("consume", queue))
        return "new%d" % self.n


class FakeBroker:
    def __init__(self, queues, consumers=2):
        self.consumer_tags = {q: "t" + q[-2:] for q in queues}
        self._inbox = collections.deque()
        self._unacked = set()
        self._chan = FakeChan(self)
        self.consumers = consumers

    def _on_deliver(self, msg):
        pass

    def _do(self, op, what):
        return op()

    def declare_queue(self, name, passive=False):
        return name, 0, self.consumers


def delivery(tag, ctag):
    return SimpleNamespace(delivery_tag=tag, consumer_tag=ctag)


def test_names_are_the_same_on_every_host_and_off_by_default():
    assert nodeshare.queues(cfg()) == ["q_u.sr_sarra.pump.nodes.s%02d" % i for i in range(4)]
    assert nodeshare.base_name(cfg(queue_name="q_u.mine")) == "q_u.mine"
    assert nodeshare.queues(cfg(node_shares=0)) == []
    assert nodeshare.shares(cfg(node_shares=None)) == 0


def test_balancer_hands_the_shards_beyond_the_fair_part():
    c = cfg()
    qs = nodeshare.queues(c)
    b = FakeBroker(qs, consumers=2)
    now = [100.0]
    consumer = SimpleNamespace(cfg=c, broker=b, log=logging.getLogger("t"))
    bal = nodeshare.Balancer(consumer, period=1.0, clock=lambda: now[0])
    for i, q in enumerate(qs):                  # the first node got every shard
        bal.delivered(delivery(i, b.consumer_tags[q]))
    # a delivery of shard s00 not yet taken by the flow goes back to the queue
    b._inbox.append(delivery(9, b.consumer_tags[qs[0]]))
    b._unacked.add(9)
    assert bal.tick() == 0                      # not a period yet
    now[0] += 1.5
    assert bal.tick() == 2                      # 4 shards, 2 consumers: keeps 2
    assert ("reject", 9, True) in b._chan.calls
    assert not b._inbox and not b._unacked
    assert [c_[1] for c_ in b._chan.calls if c_[0] == "consume"] == qs[:2]
    now[0] += 1.5
    assert bal.tick() == 0                      # what it keeps stays


def test_balancer_waits_while_work_is_in_hand():
    c = cfg()
    qs = nodeshare.queues(c)
    b = FakeBroker(qs, consumers=4)
    now = [0.0]
    consumer = SimpleNamespace(cfg=c, broker=b, log=logging.getLogger("t"))
    bal = nodeshare.Balancer(consumer, period=1.0, clock=lambda: now[0])
    for i, q in enumerate(qs):
        bal.delivered(delivery(i, b.consumer_tags[q]))
    b._unacked.add(1)                           # being worked on: nothing moves
    now[0] += 1.5
    assert bal.tick() == 0 and not b._chan.calls
    b._unacked.clear()
    now[0] += 1.0
    for i, q in enumerate(qs):
        bal.delivered(delivery(i, b.consumer_tags[q]))
    assert bal.tick() == 3                      # 4 consumers: one shard each


def test_queue_of_a_delivery():
    b = FakeBroker(["q.s00", "q.s01"])
    assert shares.queue_of(b, delivery(1, "t01")) == "q.s01"
    assert shares.queue_of(b, delivery(1, "zz")) is None
