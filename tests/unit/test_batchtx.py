"""A consumed batch's posts, reports and acks in one AMQP transaction (sarra/flow/batchtx.py),
without a broker: a real Broker on a fake connection (its transaction API at work, the
frames it writes read back), and the flow engine's settle() on it."""

import pytest

from sarra import message
from sarra.broker.client import BrokerError, Delivery, DeliveryTag
from sarra.config import parser as config
from sarra.flow import batchtx, download, report
from sarra.flow import presets as components
from sarra.flow.engine import Flow
from sarra.flow.work import Outcome, Result, Work
from tests.support.flowfakes import FakeConsumer
from tests.support.txfakes import (FakeBroker, FakeFlow, Reporting, Waits, delivery,
                                   work_of)


# ------------------------------------------------------------------ the transaction

def test_posts_select_once_per_channel_and_are_written_at_commit():
    b, flow = FakeBroker(), FakeFlow()
    tx = batchtx.BatchTx(flow, b)
    assert tx.commit([], []) == []
    assert b.log == []                                    # nothing selected: nothing to commit
    d = delivery("/a")
    b._unacked.add(int(d.delivery_tag))
    flow.msg = work_of(d)
    post = batchtx.TxPost(tx)
    post.publish("xo", "v02.post.a", "body1", {"sum": "0,1"})
    post.publish("xo", "v02.post.b", "body2", {"sum": "0,2"})
    assert b.log == ["select"]
    post.wait_confirms()
    assert tx.commit([flow.msg], [d]) == [flow.msg]
    assert b.log == ["select", ("publish", "xo", b"body1"), ("publish", "xo", b"body2"),
                     ("ack", int(d.delivery_tag), True), "commit"]
    tx.commit([], [])                                     # nothing: an empty commit
    assert b.log[-1] == "commit" and len(b.log) == 6


def test_a_lost_channel_drops_the_posts_and_its_messages_are_not_committed():
    b, flow = FakeBroker(), FakeFlow()
    tx = batchtx.BatchTx(flow, b)
    d0, d1 = delivery("/a"), delivery("/b")
    w0, w1 = work_of(d0), work_of(d1)
    flow.msg = w0
    tx.publish("xo", "k", "b1", {})
    b._generation = 1                                     # reconnected: the tx is gone
    flow.msg = w1
    tx.publish("xo", "k", "b2", {})                       # its message was from generation 0
    retry = Work(w1.msg)                                  # from the retry queue: no delivery
    flow.msg = retry
    tx.publish("xo", "k", "b3", {})
    assert tx.commit([w0, w1, retry], [d0, d1]) == [retry]    # only the retry committed
    assert b.log == ["select", "select", ("publish", "xo", b"b3"), "commit"]


def test_a_commit_on_a_channel_lost_meanwhile_commits_nothing():
    b, flow = FakeBroker(), FakeFlow()
    tx = batchtx.BatchTx(flow, b)
    d = delivery("/a")
    flow.msg = work_of(d)
    tx.publish("xo", "k", "b1", {})

    def do(op, what):                   # the connection drops and comes back under the commit
        b._generation = 1
        return op()
    b._do = do
    assert tx.commit([flow.msg], [d]) is None
    assert b.log == ["select"]                            # no post, no ack, no commit


def test_a_refused_commit_pauses_doubling_until_one_succeeds():
    """A commit the broker refuses (a missing exchange): the batch comes back at once, so
    each failure is followed by a pause (1, 2, 4 s ...), reset by a successful commit."""
    b, flow = FakeBroker(), FakeFlow()
    refuse = [True]
    real = b._do

    def do(op, what):
        if what.startswith("commit") and refuse[0]:
            raise BrokerError("exchange 'xo' not found")
        return real(op, what)
    b._do = do
    tx = batchtx.BatchTx(flow, b)
    flow.msg = work_of(delivery("/a"))
    for _ in range(3):
        tx.publish("xo", "k", "b", {})
        assert tx.commit([flow.msg], [flow.msg.delivery]) is None
    assert flow.stop_event == [1.0, 2.0, 4.0]
    refuse[0] = False
    tx.publish("xo", "k", "b", {})
    assert tx.commit([], []) == []
    refuse[0] = True
    tx.publish("xo", "k", "b", {})
    tx.commit([], [])
    assert flow.stop_event == [1.0, 2.0, 4.0, 1.0]
    for _ in range(10):
        tx.commit([], [])
    assert flow.stop_event[-1] == batchtx.COMMIT_BACKOFF_MAX


def test_acks_outside_a_batch_go_with_the_next_commit_or_when_idle():
    b, flow = FakeBroker(), FakeFlow()
    tx = batchtx.BatchTx(flow, b)
    consumer = batchtx.TxConsumer(FakeConsumer(), tx)
    assert consumer.queue == "q_test"                     # the rest is the consumer's
    consumer.cfg = "new"                                  # reload.py: the consumer's own
    assert consumer._consumer.cfg == "new"
    bad, ds = delivery("/malformed"), [delivery(f"/{i}") for i in range(2)]
    b._unacked.update(int(d.delivery_tag) for d in [bad] + ds)
    b._unacked.add(10 ** 7)                               # delivered later, not in the batch
    consumer.ack(bad)                                     # decode(): malformed, acked
    consumer.ack(Delivery("xa", "k", "b", b"b", {}, DeliveryTag(3, 7), False, {}))  # stale
    assert b.log == []
    flow.msg = None
    tx.publish("xr", "v02.report", "its 417", {})        # and reported
    tx.idle()                                             # no batch came: committed now
    assert b.log == ["select", ("publish", "xr", b"its 417"), ("ack", int(bad.delivery_tag),
                                                            True), "commit"]
    tx.idle()                                             # nothing more: no commit
    assert len(b.log) == 4
    flow.msg = work_of(ds[1])
    tx.publish("xo", "k", "b", {})
    tx.commit([flow.msg], ds)
    assert b.log[4:] == [("publish", "xo", b"b"), ("ack", int(ds[1].delivery_tag), True),
                         "commit"]
    assert b._unacked == {10 ** 7}


def test_reports_after_the_first_confirmed_one_go_in_the_transaction():
    class OwnConnection:
        def __init__(self):
            self.published, self.confirmed = [], 0

        def publish(self, *args):
            self.published.append(args[0])

        def wait_confirms(self, timeout=30):
            self.confirmed += 1

    b, flow, own = FakeBroker(), FakeFlow(), OwnConnection()
    tx = batchtx.BatchTx(flow, b)
    rep = report.Reporter(own, "xr", "u")
    rep.tx = tx
    m = work_of(delivery("/a"))
    b._unacked.add(int(m.delivery.delivery_tag))
    flow.msg = m
    rep.report(m.msg, 201, "Downloaded", 0.0)
    assert own.published == ["xr"] and own.confirmed == 1 and b.log == []
    rep.report(m.msg, 201, "Downloaded", 0.0)
    rep.flush()
    assert own.published == ["xr"] and b.log == ["select"] and rep.sent == 2
    tx.commit([m], [m.delivery])
    assert [x[:2] for x in b.log[1:-2]] == [("publish", "xr")] and b.log[-1] == "commit"


# ------------------------------------------------------------------ when, and the flow's settle

def flow_of(home, component="sarra", extra=()):
    cfg = config.load(component, None, [("broker", "amqp://u:p@localhost/"),
                                        ("exchange", "xs_a"),
                                        ("directory", str(home / "dst")), *extra])
    return Flow(cfg, components.preset(component))


@pytest.mark.parametrize("post_broker, reports, posts_in, on", [
    ("amqp://u@localhost/", True, True, True),        # the usual pump: everything
    ("amqp://u@localhost/", False, True, True),       # reports off: posts and acks
    ("amqp://u@elsewhere/", True, False, True),       # another post broker: reports and acks
    ("amqp://u@elsewhere/", False, False, False),      # nothing to put in one: plain acks
    ("amqp://v@localhost/", False, False, False),      # another user
])
def test_a_transaction_when_posts_or_reports_go_to_the_consumed_broker(
        home, post_broker, reports, posts_in, on):
    flow = flow_of(home, extra=[("post_broker", post_broker)])
    flow.broker, flow.consumer = FakeBroker(), FakeConsumer()
    flow.post_broker = other = object()
    flow.reporter = Reporting()
    flow.reporter.enabled = reports
    tx = batchtx.start(flow)
    assert (tx is not None) == on
    if on:
        assert tx.posts == posts_in and isinstance(flow.consumer, batchtx.TxConsumer)
        assert (flow.reporter.tx is tx) == reports
        assert isinstance(flow.post_broker, batchtx.TxPost) == posts_in
        if posts_in:
            assert flow.post_broker.other is other     # declarations, ticks: its own link
    else:
        assert flow.post_broker is other and flow.reporter.tx is None


def settle_flow(home, extra=()):
    """An sr_subscribe flow (reports on, duplicate cache on) whose consuming Broker is fake."""
    flow = flow_of(home, "subscribe", [("suppress_duplicates", "300"), *extra])
    flow.broker, flow.consumer = FakeBroker(), FakeConsumer()
    flow.reporter = Reporting()
    flow.batchtx = batchtx.start(flow)
    flow.stop_event = Waits()
    flow.batchtx.flow = flow
    return flow


def done_work(flow, relpath, key, redelivered=False):
    d = delivery(relpath, redelivered)
    flow.broker._unacked.add(int(d.delivery_tag))
    w = work_of(d)
    w.cache_key = key
    w.outcome = Result.DONE
    return w


def test_settle_tells_the_cache_only_what_the_commit_made_durable(home):
    """A message whose commit did not happen (kill -9, channel lost) comes back: it must not
    be taken for a duplicate of itself then (its post and report never left)."""
    flow = settle_flow(home)
    w = done_work(flow, "/a", ("d,1", "/a"))
    real = flow.broker._do
    flow.broker._do = lambda op, what: (setattr(flow.broker, "_generation", 1), op())[1]
    flow.broker.tx_select(w.delivery.delivery_tag)         # the batch's report went in
    flow.settle([w])
    assert ("d,1", "/a") not in flow.cache                 # lost: it comes back, not a dup
    flow.broker._do = real
    flow.broker._generation = 0
    flow.broker._tx_generation = None
    flow.broker._unacked.clear()                           # a new channel: nothing in hand
    w2 = done_work(flow, "/a", ("d,1", "/a"), redelivered=True)
    flow.settle([w2])
    assert ("d,1", "/a") in flow.cache
    assert flow.broker.log[-2:] == [("ack", int(w2.delivery.delivery_tag), True), "commit"] \
        or flow.broker.log[-1] == ("ack", int(w2.delivery.delivery_tag), True)


def test_settle_marks_retry_entries_done_only_after_the_commit(home):
    flow = settle_flow(home)
    entry = flow.retry.add("v02.post.r", "20240101000000.0 http://h/ /r",
                           {"sum": "0,1", "parts": "1,1,1,0,0"}, "xs_a")
    w = Work(message.decode(entry.routing_key, entry.body, entry.headers, entry.exchange),
             retry_entry=entry)
    w.outcome = Result.DONE
    refused = [True]
    real = flow.broker._do

    def do(op, what):
        if what.startswith("commit") and refused[0]:
            raise BrokerError("refused")
        return real(op, what)
    flow.broker._do = do
    flow.msg = w
    flow.batchtx.publish("xo", "k", "its post", {})
    flow.msg = None
    flow.settle([w])
    assert len(flow.retry) == 1                  # not committed: its post did not leave
    refused[0] = False
    flow.msg = w
    flow.batchtx.publish("xo", "k", "its post", {})
    flow.msg = None
    flow.settle([w])
    assert len(flow.retry) == 0


def test_a_redelivered_file_already_in_place_gets_the_201_it_never_sent(home):
    flow = settle_flow(home)
    w = work_of(delivery("/a", redelivered=True))
    flow.batchtx.placed[batchtx._identity(w)] = True      # placed here, commit lost
    assert batchtx.redone(flow, w, report.SAME_CHECKSUM) == report.DOWNLOADED
    w = work_of(delivery("/a"))                            # a second copy, not a redelivery
    assert batchtx.redone(flow, w, report.SAME_CHECKSUM) == report.SAME_CHECKSUM
    flow.batchtx = None                                    # acks without reports: as before
    w = work_of(delivery("/a", redelivered=True))
    assert batchtx.redone(flow, w, report.SAME_CHECKSUM) == report.SAME_CHECKSUM
    with pytest.raises(Outcome) as e:
        flow.batchtx = batchtx.BatchTx(flow, flow.broker)
        flow.batchtx.placed[batchtx._identity(w)] = True
        download.already_here(flow, w, str(home / "dst" / "a"), report.SAME_CHECKSUM)
    assert (e.value.code, e.value.text) == report.DOWNLOADED
