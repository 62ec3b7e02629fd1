"""Pump nodes sharing one configuration's work by design (``node_shares N``).

The same configuration runs on several hosts (pump nodes). Work that must be done by one
node only (all parts of one file, all copies of one product for sr_winnow) must reach one
node, so that no lock has to span hosts. RabbitMQ does the routing:

    source exchange(s) --(the config's subtopic bindings)--> <base>  (x-consistent-hash)
    <base> --(weight 1)--> <base>.s00 .. <base>.s<N-1>               (the shard queues)

``<base>`` is ``q_<user>.sr_<component>.<config>[.<queue_suffix>].nodes`` (or
``queue_name``): the same on every node, never a random name saved on one host. The
exchange carries the queues' name so the broker permissions that let a user configure its
queues (``^q_<user>.*``) let it declare the exchange too. The consistent-hash exchange
hashes the routing key: a v02 topic is the file's directory, so every part of a file and
every copy of a product posted under the same path land in the same shard.

Every instance of every node consumes every shard queue; the shard queues are declared with
``x-single-active-consumer``, so the broker delivers a shard to one consumer at a time.
When that consumer's connection dies (a node killed), the broker requeues its unacked
messages and makes the next registered consumer of the shard active: the shard moves to a
sibling node with nothing lost (acks follow the work) and nothing handled twice (what was
acked is gone, what was not was not done to the end).
"""

from typing import List

#: the exchange type of the plugin shipped with rabbitmq-server
#: (``rabbitmq-plugins enable rabbitmq_consistent_hash_exchange``)
HASH_EXCHANGE_TYPE = "x-consistent-hash"


def shares(cfg) -> int:
    """How many shard queues the configuration's work is spread on (0: off)."""
    try:
        return max(0, int(cfg.get("node_shares") or 0))
    except (TypeError, ValueError, AttributeError):
        return 0


def base_name(cfg) -> str:
    """The hash exchange's name, and the prefix of the shard queues' names."""
    if cfg.queue_name:
        return cfg.queue_name
    return cfg.queue_name_default(random_suffix="nodes")


def queues(cfg) -> List[str]:
    """The shard queues, in order ([] when node_shares is off)."""
    base = base_name(cfg) if shares(cfg) else ""
    return ["%s.s%02d" % (base, i) for i in range(shares(cfg))]


def queue_arguments() -> dict:
    return {"x-single-active-consumer": True}


def declare(consumer, bind: bool = True) -> None:
    """Declare the hash exchange and the shard queues, bind the shards to it, then (bind)
    bind the exchange to the configuration's sources. The shards are bound first: nothing
    enters the hash exchange before a queue can take it."""
    cfg, broker, log = consumer.cfg, consumer.broker, consumer.log
    base = base_name(cfg)
    if cfg.declare_queue:
        broker.declare_exchange(base, type=HASH_EXCHANGE_TYPE, durable=cfg.durable)
        for q in queues(cfg):
            name, count, consumers = broker.declare_queue(
                q, durable=cfg.durable, expire_s=cfg.expire or None,
                message_ttl_s=cfg.message_ttl or None, arguments=queue_arguments(),
                queue_type=getattr(cfg, "queue_type", None))     # quorum: replicated shards
            broker.bind(q, base, "1")       # the weight of the shard on the hash ring
        log.info("node_shares: %d shard queues %s.s00.. behind exchange %s",
                 shares(cfg), base, base)
    if bind and cfg.bind_queue:
        for exchange, key in consumer.bindings():
            broker.bind_exchange(base, exchange, key)
            log.info("bound exchange %s to %s with %s", base, exchange, key)


def cleanup(broker, cfg) -> List[str]:
    """Delete the shard queues and the hash exchange; returns the queues' names."""
    if not shares(cfg):
        return []
    names = queues(cfg)
    for q in names:
        broker.delete_queue(q)
    broker.delete_exchange(base_name(cfg))
    return names


class Balancer:
    """Spreads the active shards evenly over the consumers (processes of every node).

    The broker makes the first consumer registered on a shard its active one, so the first
    node started holds every shard. Every ``period`` seconds, between two batches (nothing
    in hand), a consumer counts the consumers of a shard (every process of every node
    consumes every shard) and the shards that delivered to it lately; holding more than
    its fair part, ceil(shards / consumers), it hands the extra ones to the next consumer
    in the broker's line (broker/shares.rejoin: the deliveries not yet taken go back to the
    queue first). A node that joins is thus given shards within a period or two, under
    load; an idle shard needs no owner.
    """

    def __init__(self, consumer, period: float = 1.0, clock=None):
        import time
        self.consumer = consumer
        self.period = period
        self.clock = clock or time.monotonic
        self.last_check = self.clock()
        self.seen = {}          # shard queue -> when it last delivered to us

    def delivered(self, delivery) -> None:
        from sarra.broker import shares as brokershares
        q = brokershares.queue_of(self.consumer.broker, delivery)
        if q:
            self.seen[q] = self.clock()

    def tick(self) -> int:
        """Hand over the shards beyond the fair part; returns how many moved."""
        from sarra.broker import shares as brokershares
        now = self.clock()
        broker = self.consumer.broker
        if now - self.last_check < self.period or not brokershares.nothing_in_hand(broker):
            return 0
        self.last_check = now
        names = queues(self.consumer.cfg)
        active = sorted((q for q, t in self.seen.items() if now - t < 2 * self.period),
                        key=lambda q: self.seen[q])
        total = brokershares.consumers(broker, names[0])
        fair = -(-len(names) // max(1, total))
        moved = 0
        for q in active[:max(0, len(active) - fair)]:
            back = brokershares.rejoin(broker, q)
            self.seen.pop(q, None)
            moved += 1
            self.consumer.log.info("node_shares: %s handed to the next consumer "
                                   "(%d consumers, fair part %d; %d requeued)",
                                   q, total, fair, back)
        return moved
