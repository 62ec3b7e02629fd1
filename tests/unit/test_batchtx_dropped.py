"""A retried message (from the retry queue: no delivery to come back) whose post went into
a transaction on a channel lost later in the same batch: the broker dropped that post, so
its retry entry must stay (sarra/broker/client.py tx_select/tx_commit, sarra/flow/batchtx.py
commit). Otherwise the post is never made."""

from sarra.flow.work import Result, Work
from tests.support.txfakes import delivery, tx_flow, work_of


def post(flow, w, body):
    flow.msg = w
    flow.batchtx.publish("xpublic", "v02.post", body, {})
    flow.msg = None


def retried(flow, relpath):
    """A message taken from the retry queue, done now: its post in the transaction."""
    d = delivery(relpath)
    entry = flow.retry.add(d.routing_key, d.body, d.headers, d.exchange)
    w = Work(work_of(d).msg, delivery=None)
    w.retry_entry, w.outcome = entry, Result.DONE
    post(flow, w, "retried " + relpath)
    return w


def lose_channel(b):
    b._generation += 1                      # lost and reconnected (requeue noticed it)
    b._unacked = set()


def test_a_dropped_post_of_a_retried_message_keeps_its_entry(home):
    flow = tx_flow(home)
    w = retried(flow, "/r")
    lose_channel(flow.broker)
    flow.settle([w])
    assert len(flow.retry) == 1                         # retried again: posted then
    assert not [e for e in flow.broker.log if e[0] == "publish"]    # not outside a tx


def test_a_transaction_restarted_on_the_new_channel_keeps_the_entry(home):
    flow = tx_flow(home)
    w = retried(flow, "/r")
    lose_channel(flow.broker)
    d = delivery("/new", generation=1)
    flow.broker._unacked.add(int(d.delivery_tag))
    fresh = work_of(d)
    fresh.outcome = Result.DONE
    post(flow, fresh, "fresh /new")                     # tx_select on the new channel
    flow.settle([w, fresh])
    assert len(flow.retry) == 1
    published = [e[2] for e in flow.broker.log if e[0] == "publish"]
    assert published == [b"fresh /new"]
    assert [e[1] for e in flow.broker.log if e[0] == "ack"] == [int(d.delivery_tag)]


def test_a_commit_with_nothing_dropped_finishes_the_entry(home):
    flow = tx_flow(home)
    w = retried(flow, "/r")
    flow.settle([w])
    assert len(flow.retry) == 0
    assert [e[2] for e in flow.broker.log if e[0] == "publish"] == [b"retried /r"]
    assert flow.broker.tx_dropped is False


def test_only_the_retried_message_that_posted_on_the_lost_channel_stays(home):
    flow = tx_flow(home)
    old = retried(flow, "/old")
    lose_channel(flow.broker)
    new = retried(flow, "/new")                         # its post on the new channel
    flow.settle([old, new])
    assert [e.body.split()[-1] for e in flow.retry._entries.values()] == ["/old"]
    assert [e[2] for e in flow.broker.log if e[0] == "publish"] == [b"retried /new"]
