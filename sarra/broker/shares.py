"""A Broker consuming several queues declared with ``x-single-active-consumer`` (the shard
queues of ``node_shares``, sarra/flow/nodeshare.py): which shard a delivery came from, and
how a consumer hands a shard to the next consumer in the broker's line.

Kept beside client.py (same layer) so that the client stays one job: these functions only
use the consumer tags it records per queue and its inbox of deliveries not yet taken.
"""

import collections


def queue_of(broker, delivery):
    """The queue a delivery came from (None when not known)."""
    for queue, tag in getattr(broker, "consumer_tags", {}).items():
        if tag == delivery.consumer_tag:
            return queue
    return None


def nothing_in_hand(broker) -> bool:
    """True when every delivery not yet acked is still in the inbox (none is being worked
    on): the moment a shard can move without two consumers working on it at once."""
    return len(broker._unacked) <= len(broker._inbox)


def rejoin(broker, queue) -> int:
    """Cancel this channel's consumer of *queue*, requeue what it delivered that nobody
    took from the inbox yet, and consume again: with a single active consumer the broker
    makes the next consumer in line active and puts this one at the back. Returns how many
    deliveries went back to the queue."""
    def rejoin_():
        ch = broker._chan
        tag = broker.consumer_tags[queue]
        ch.basic_cancel(tag)      # synchronous: every delivery of tag is in the inbox now
        back = [d for d in broker._inbox if d.consumer_tag == tag]
        broker._inbox = collections.deque(d for d in broker._inbox if d.consumer_tag != tag)
        for d in back:
            ch.basic_reject(int(d.delivery_tag), requeue=True)
            broker._unacked.discard(int(d.delivery_tag))
        tx = getattr(broker, "_tx_generation", None)
        if back and tx is not None and tx == broker._generation:
            ch.tx_commit()      # a channel in transaction mode (batchtx): requeued now
        broker.consumer_tags[queue] = ch.basic_consume(queue, no_ack=False,
                                                       callback=broker._on_deliver)
        return len(back)
    return broker._do(rejoin_, f"hand queue '{queue}' to the next consumer")


def consumers(broker, queue) -> int:
    """How many consumers the queue has (a single-active-consumer queue counts them all)."""
    return broker.declare_queue(queue, passive=True)[2]
