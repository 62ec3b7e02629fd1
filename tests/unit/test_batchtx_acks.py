"""The acks a batch's commit sends (sarra/flow/batchtx.py, Broker.tx_commit): never one of a
channel since lost, never a ``multiple`` ack over a delivery still waiting in the inbox."""

from sarra.broker.client import DeliveryTag
from sarra.flow import batchtx
from tests.support.flowfakes import FakeConsumer
from tests.support.txfakes import FakeBroker, FakeFlow, delivery, work_of


def test_an_ack_kept_from_a_lost_channel_is_not_sent_on_the_new_one():
    """A malformed message at tag 20 is acked (kept for the next commit); the connection
    drops before the commit; the new channel delivers tags 1..25. Its tag 20 is another
    message: a multiple ack up to 20 would drop 4..20, still unprocessed in the inbox."""
    b, flow = FakeBroker(), FakeFlow()
    tx = batchtx.BatchTx(flow, b)
    consumer = batchtx.TxConsumer(FakeConsumer(), tx)
    bad = delivery("/malformed")
    bad.delivery_tag = DeliveryTag(20, 0)
    b._unacked.add(20)
    consumer.ack(bad)                                     # decode(): malformed, acked later
    b._generation, b._unacked = 1, set(range(1, 26))      # reconnected: 1..25 delivered
    batch = [delivery(f"/{i}", generation=1) for i in range(3)]
    for i, d in enumerate(batch, 1):
        d.delivery_tag = DeliveryTag(i, 1)
    flow.msg = work_of(batch[0])
    tx.publish("xo", "k", "post", {})
    assert tx.commit([work_of(d) for d in batch], batch) is not None
    assert [x for x in b.log if x[0] == "ack"] == [("ack", 3, True)]
    assert b._unacked == set(range(4, 26))                # 4..25 still to be done


def test_a_multiple_ack_never_covers_a_delivery_left_in_the_inbox():
    """Deliveries 1 and 4 are still unacked and not in the batch (2, 3): acked one by one."""
    b, flow = FakeBroker(), FakeFlow()
    tx = batchtx.BatchTx(flow, b)
    ds = [delivery(f"/{i}") for i in range(4)]
    for i, d in enumerate(ds, 1):
        d.delivery_tag = DeliveryTag(i, 0)
    b._unacked.update(range(1, 5))
    flow.msg = work_of(ds[1])
    tx.publish("xo", "k", "post", {})
    tx.commit([work_of(d) for d in ds[1:3]], ds[1:3])
    assert [x for x in b.log if x[0] == "ack"] == [("ack", 2, False), ("ack", 3, False)]
    assert b._unacked == {1, 4}


def test_acks_of_a_channel_lost_under_the_commit_are_dropped_by_the_broker():
    """Acks alone (no transaction): the channel is lost, the connection comes back inside
    the call; the new channel's tag 2 is another delivery and must not be acked."""
    b = FakeBroker()
    b._unacked.update({1, 2})
    real = b._do

    def do(op, what):
        b._generation, b._unacked = 1, {1, 2, 3}
        return real(op, what)
    b._do = do
    b.tx_commit([DeliveryTag(2, 0)])
    assert [x for x in b.log if x[0] == "ack"] == [] and b._unacked == {1, 2, 3}


def test_the_posts_of_a_lost_channels_transaction_are_not_sent_on_the_new_one():
    """Posts put in the transaction, then the channel lost (a requeue noticed it): the
    commit on the new channel has no transaction; those posts must not go out there."""
    b = FakeBroker()
    assert b.tx_select(DeliveryTag(1, 0))
    b.tx_publish("xo", "k", "post of a message that comes back", {})
    b._generation, b._unacked = 1, {1}
    assert b.tx_commit([DeliveryTag(1, 1)]) is True
    assert b.log == ["select", ("ack", 1, True)]
