"""kbytes_ps_shared (issue 23): one rate for a whole flow, across its instances and the
nodes that run the same configuration on one broker, built on what the broker offers.

One metering point. The flow's bindings go to an upstream queue,
``<base>.meter`` (``<base>``: queue_name, else ``q_<user>.sr_<component>.<config>``: the
same name on every node), declared with RabbitMQ's ``x-single-active-consumer``: every
instance runs a meter (a thread with its own connection) that consumes it, and the broker
delivers to one of them only; when that one's connection goes (the instance stopped,
crashed or its node is cut off), the broker hands the queue to another meter.
The active meter releases each message into the exchange ``xs_<user>_<config>_meter``,
bound to the flow's work queue ``<base>.metered``, at the configured byte rate (the sum
of the announced sizes: a message of n bytes is released n/rate seconds after the
one before; nothing is saved up while idle), and only when no released message waits there (the work queue shows nothing
ready): what is released is taken at once by an instance that is free, so no backlog
builds up behind a slow or stopped instance, and a stopped instance frees its share.

The instances consume the work queue with prefetch 1, each paced at the shared rate too
(pacing.py), so one large file is never sent faster than the flow's rate.

At least once, nothing lost: the meter acks a message upstream only after the broker
confirmed its release. A meter that dies between the two leaves the message unacked:
the broker gives it to the next meter, which releases it again (the transfer may be done
twice; duplicate suppression, when on, drops the second). Messages already released wait
in the durable work queue for any instance.
"""

import threading

from sarra import checksum
from sarra.broker.client import BrokerAccessRefused, BrokerError, BrokerStopped
from sarra.flow.consumer import Consumer
from sarra.transfer.throttle import TokenBucket

#: the meter waits this long between two looks at the work queue
POLL = 0.05
#: after a broker error, the meter starts again after this many seconds
RESTART = 2.0
#: a message counts for at most this many seconds of the rate: a size that lies (a hostile
#: post read before any pump checked it) holds the flow back this long at most; a larger
#: file is still held to the rate by its own instance's pacing
MAX_CHARGE = 300.0


def base_name(cfg) -> str:
    return cfg.queue_name or "q_%s.%s.%s" % (cfg.broker_user(), cfg.program,
                                             cfg.name or "default")


def upstream_queue(cfg) -> str:
    return base_name(cfg) + ".meter"


def work_queue(cfg) -> str:
    return base_name(cfg) + ".metered"


def exchange(cfg) -> str:
    return "xs_%s_%s_meter" % (cfg.broker_user(), cfg.name or "default")


def queues(cfg) -> list:
    """The meter's queues of a configuration (none without kbytes_ps_shared)."""
    if not getattr(cfg, "kbytes_ps_shared", 0):
        return []
    return [upstream_queue(cfg), work_queue(cfg)]


def announced_size(delivery) -> int:
    """Bytes a message announces (its part's length); 0 when it says none."""
    parts = (delivery.headers or {}).get("parts")
    if not parts:
        return 0
    try:
        return max(0, int(checksum.Parts.parse(parts).length))
    except (ValueError, TypeError, AttributeError):
        return 0


def make_consumer(cfg, broker, logger, stop_event):
    """The consumer of a flow: its own queue, or, with kbytes_ps_shared, the metered work
    queue (and this instance's meter, started with it)."""
    if not getattr(cfg, "kbytes_ps_shared", 0):
        return Consumer(cfg, broker, logger)
    return MeteredConsumer(cfg, broker, logger, stop_event)


class MeteredConsumer(Consumer):
    """Consumes the flow's work queue (one message at a time) and runs a meter."""

    def __init__(self, cfg, broker, logger, stop_event):     # no generated queue name
        self.cfg, self.broker, self.log = cfg, broker, logger
        self.queue = work_queue(cfg)
        self.balancer = None        # node_shares does not combine with the meter's one queue
        self.meter = Meter(cfg, broker, logger, stop_event)

    def bindings(self):
        yield exchange(self.cfg), "#"

    def start(self):
        declare_exchange(self.broker, self.cfg, self.log)
        self.declare(bind=True)
        self.broker.consume(self.queue, prefetch=1)
        if not self.meter.is_alive():
            self.meter.start()


def declare(b, cfg, log):
    """Declare the meter's queues, exchange and bindings (the meter, at start; the
    ``setup`` action, so that what is posted before the first start is kept); returns
    (upstream queue, work queue)."""
    up, work = upstream_queue(cfg), work_queue(cfg)
    args = dict(durable=cfg.durable, expire_s=cfg.expire or None,
                message_ttl_s=cfg.message_ttl or None,     # as Consumer.declare
                queue_type=getattr(cfg, "queue_type", None))
    b.declare_queue(up, arguments={"x-single-active-consumer": True}, **args)
    for ex, key in Consumer.bindings(_Upstream(cfg)):
        b.bind(up, ex, key)
    declare_exchange(b, cfg, log)
    b.declare_queue(work, **args)
    b.bind(work, exchange(cfg), "#")
    return up, work


def declare_exchange(broker, cfg, log):
    try:
        broker.declare_exchange(exchange(cfg))
    except BrokerAccessRefused as e:     # a source may not: the admin declares it
        log.warning("could not declare the meter's exchange %s: %s", exchange(cfg), e)


class _Upstream:
    """What Consumer.bindings reads: the configuration's own bindings, for the upstream."""

    def __init__(self, cfg):
        self.cfg = cfg


class Meter(threading.Thread):
    """Releases the upstream queue's messages into the work queue at the shared rate."""

    def __init__(self, cfg, broker, logger, stop_event):
        super().__init__(name="meter", daemon=True)
        self.cfg, self.log, self.stop_event = cfg, logger, stop_event
        self.broker = broker.sibling(should_stop=stop_event.is_set)
        self.bucket = TokenBucket(cfg.kbytes_ps_shared * 1024, burst=0.0, sleep=stop_event.wait)
        self.released = 0

    def run(self):
        while not self.stop_event.is_set():
            try:
                self.serve()
            except BrokerStopped:
                break
            except BrokerError as e:
                self.log.warning("meter: %s (starting again in %g s)", e, RESTART)
                self.stop_event.wait(RESTART)
            except Exception as e:      # a bug: never let the flow run unmetered silently
                self.log.exception("meter: unexpected error: %s", e)
                self.stop_event.wait(RESTART)
            finally:
                try:
                    self.broker.close()
                except Exception:
                    pass

    def serve(self):
        cfg, b = self.cfg, self.broker
        b.connect()
        up, work = declare(b, cfg, self.log)
        b.consume(up, prefetch=1)
        self.log.info("meter: waiting to be the flow's active meter on %s (%d KiB/s)",
                      up, cfg.kbytes_ps_shared)
        while not self.stop_event.is_set():
            d = b.get(1.0)
            if d is None:
                continue
            if not self.released:
                self.log.info("meter: active, releasing at %d KiB/s", cfg.kbytes_ps_shared)
            if not self.wait_room(work):
                return
            self.bucket.take(min(announced_size(d), self.bucket.rate * MAX_CHARGE))
            self.bucket.take(0)         # paid before it is released: no burst
            if self.stop_event.is_set():
                return                  # unacked: the next meter releases it
            b.publish(exchange(cfg), d.routing_key, d.raw, d.headers)
            b.wait_confirms()
            b.ack(d.delivery_tag)
            self.released += 1

    def wait_room(self, work) -> bool:
        """Wait until no released message waits in the work queue (False: stopping)."""
        while not self.stop_event.is_set():
            _, ready, _ = self.broker.declare_queue(work, passive=True)
            if not ready:
                return True
            self.stop_event.wait(POLL)
        return False
