"""Option ``reset`` of a consuming component (v2): start afresh.  At start, before
connecting: the queue is deleted (by instance 1; it is declared again, empty, and bound
when the flow connects: what was queued is dropped, as v2 does), with the generated
queue name; each instance empties its duplicate cache and its retry queue.

Facts: doc/spec/config.md (``reset``: delete and recreate queue / reset cache).
"""
import os

from sarra.broker.client import Broker, BrokerError
from sarra.flow import consumer, retry


def at_start(flow) -> None:
    """Do what ``reset`` asks, when it is on; a broker that cannot be reached leaves the
    queue as it is (one warning): the flow then waits for the broker as usual."""
    cfg = flow.cfg
    src = getattr(flow, "source", None)
    if not cfg.get("reset", False) or (src is not None and not src.consumes):
        return          # a poster's reset is its own (its cache)
    log = flow.log
    if flow.no == 1:
        names = [n for n in dict.fromkeys((cfg.queue_name, consumer.saved_queue(cfg))) if n]
        try:
            b = Broker(cfg.broker, password_lookup=flow._password, reconnect=False,
                       logger=log)
            try:
                b.connect()
                for q in names:
                    b.delete_queue(q)
            finally:
                b.close()
            consumer.forget_queue(cfg)
            log.info("reset: queue %s deleted", " ".join(names) or "(none yet)")
        except BrokerError as e:
            log.warning("reset: queue not deleted (%s)", e)
    if flow.cache is not None:
        flow.cache.clear()
    path, ttl = flow.retry.path, flow.retry.ttl
    flow.retry.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    flow.retry = retry.RetryQueue(path, ttl=ttl)
    log.info("reset: duplicate cache and retry queue emptied")
