"""Option ``reset`` (v2): start afresh.  At start, before connecting.

A consuming component: the queue is deleted (by instance 1; it is declared again, empty,
and bound when the flow connects: what was queued is dropped, as v2 does), with the
generated queue name; each instance empties its duplicate cache and its retry queue.

sr_post and sr_watch: the duplicate cache is emptied (v2 deletes its cache file); sr_watch
also forgets what it announced (its state file), so that it starts as on its first run.
sr_poll does its own (sarra/poll).

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
    if not cfg.get("reset", False):
        return
    log = flow.log
    if src is not None and not src.consumes:
        _poster(flow, src)
        return
    if flow.no == 1:
        names = [n for n in dict.fromkeys((cfg.queue_name, consumer.saved_queue(cfg))) if n]
        try:
            b = Broker(cfg.broker, password_lookup=flow.credentials.password_for, reconnect=False,
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


def _poster(flow, src) -> None:
    if flow.cfg.component not in ("post", "watch"):
        return
    if flow.cache is not None:
        flow.cache.clear()
    state = getattr(src, "state", None)
    path = getattr(state, "path", None)
    if path and flow.cfg.component == "watch":
        state.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        src.state = type(state)(path)
        flow.log.info("reset: duplicate cache emptied, %s forgotten", path)
    else:
        flow.log.info("reset: duplicate cache emptied")
