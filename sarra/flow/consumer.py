"""The broker side of a consuming component: its queue, its bindings, and its deliveries.

The queue name is ``q_<user>.sr_<component>.<config>.<r1>.<r2>`` (two random 8-digit
numbers, as v2) unless ``queue_name`` is set. A generated name is saved in the state
directory (written atomically under a lock) so that every instance and every restart uses
the same queue and nothing published while the component was down is missed. A name set in the config is used as is and never saved, so
renaming the queue in the config needs no clean-up.
"""

import logging
import os
from contextlib import contextmanager

from sarra import locks, message, paths
from sarra.broker.client import Broker, BrokerError
from sarra.flow import nodeshare


@contextmanager
def _locked(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with locks.acquire(fd, path):
            yield
    finally:
        os.close(fd)


def queue_file(cfg) -> str:
    if hasattr(cfg, "queue_name_file"):
        return cfg.queue_name_file()
    return os.path.join(paths.state_dir(cfg.component, cfg.name or "-"),
                        f"sr_{cfg.component}.{cfg.name or '-'}.{cfg.broker_user()}.qname")


def saved_queue(cfg):
    """The generated queue name saved in the state directory, or None."""
    try:
        with open(queue_file(cfg)) as f:
            saved = f.read().strip()
    except OSError:
        return None
    return saved if saved.startswith("q_") else None


def queue_name(cfg) -> str:
    """The queue this configuration consumes from (generated once, then reused)."""
    if cfg.queue_name:
        return cfg.queue_name
    path = queue_file(cfg)
    with _locked(os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".lock")):
        saved = saved_queue(cfg)
        if saved:
            return saved
        name = cfg.queue_name_default()
        paths.atomic_write(path, name + "\n")
        return name


def forget_queue(cfg) -> None:
    try:
        os.unlink(queue_file(cfg))
    except FileNotFoundError:
        pass


class Consumer:
    """Declares the queue and bindings of a config and hands out its deliveries."""

    def __init__(self, cfg, broker: Broker, logger=None):
        self.cfg = cfg
        self.broker = broker
        self.log = logger or logging.getLogger("sarra")
        self.queue = nodeshare.base_name(cfg) if nodeshare.shares(cfg) else queue_name(cfg)
        self.balancer = nodeshare.Balancer(self) if nodeshare.shares(cfg) else None

    def bindings(self):
        # exchange_split (sr_winnow, v2 shards <exchange>00..): the shared queue binds the
        # shard of every instance (winnow's claims are shared, see man sr_winnow)
        split = (self.cfg.instances or 1) if self.cfg.get("exchange_split") else 0
        for b in self.cfg.bindings:
            key = message.binding_key(b.topic_prefix, b.subtopic)
            if split:
                for k in range(split):
                    yield "%s%02d" % (b.exchange, k), key
            else:
                yield b.exchange, key

    def declare(self, bind: bool = True):
        cfg = self.cfg
        if nodeshare.shares(cfg):       # pump nodes: shard queues behind a hash exchange
            return nodeshare.declare(self, bind)
        if cfg.declare_queue:
            name, count, consumers = self.broker.declare_queue(
                self.queue, durable=cfg.durable, expire_s=cfg.expire or None,
                message_ttl_s=cfg.message_ttl or None,
                queue_type=getattr(cfg, "queue_type", None))
            self.log.info("queue %s declared (%d messages waiting, %d consumers)",
                          name, count, consumers)
        if bind and cfg.bind_queue:
            for exchange, key in self.bindings():
                try:
                    self.broker.bind(self.queue, exchange, key)
                except BrokerError as e:
                    raise BrokerError(f"cannot bind queue {self.queue} to exchange {exchange} "
                                      f"with key {key}: {e}") from None
                self.log.info("bound %s to %s with %s", self.queue, exchange, key)

    def start(self):
        self.declare(bind=True)
        self.broker.consume(tuple(nodeshare.queues(self.cfg)) or self.queue,
                            prefetch=self.cfg.prefetch)

    def get(self, timeout: float):
        if self.balancer is None:
            return self.broker.get(timeout)
        self.balancer.tick()        # node_shares: between batches, hand extra shards over
        d = self.broker.get(timeout)
        if d is not None:
            self.balancer.delivered(d)
        return d

    def ack(self, delivery):
        self.broker.ack(delivery.delivery_tag)

    def ack_many(self, deliveries):
        self.broker.ack_many([d.delivery_tag for d in deliveries])

    def requeue(self, delivery):
        self.broker.reject(delivery.delivery_tag, requeue=True)

    def delete(self):
        self.broker.delete_queue(self.queue)
