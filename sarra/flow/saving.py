"""Options ``save``, ``restore``, ``restore_to_queue`` and ``save_file`` (v2): put the
messages of a queue aside in a file, then play them back.

* ``save on``: each message taken from the queue is appended to the save file (written,
  flushed and fsynced: the retry queue's journal, flow/retry.py) and acknowledged; it is
  not processed, nothing is posted.
* ``restore on``: at start, the saved messages are published back, in order, into the
  configuration's own queue (through a temporary exchange bound to it, so that each keeps
  its topic), each removed from the file once the broker confirmed it; the flow then
  processes them as any message, acknowledging each after its work.
* ``restore_to_queue <queue>``: the same into the named queue (which must exist), then
  the process ends.
* ``save_file <path>``: the file is ``<path>_NN.save`` (NN: the instance), instead of
  ``sr_<component>_<config>_NN.save`` in the configuration's state directory.

Facts: doc/spec/components.md (save/restore), doc/spec/config.md.
"""
import os
import random

from sarra.broker.client import BrokerError
from sarra.flow import retry
from sarra.flow.work import Result

#: messages published (then confirmed, then removed from the file) at a time
RESTORE_BATCH = 100


def path(flow) -> str:
    cfg = flow.cfg
    given = cfg.get("save_file", None)
    if given:
        return "%s_%02d.save" % (os.path.expanduser(given), flow.no)
    return os.path.join(flow.user_cache_dir, "sr_%s_%s_%02d.save" % (
        cfg.component, cfg.name or "-", flow.no))


def _journal(flow):
    j = getattr(flow, "_save_journal", None)
    if j is None:
        j = retry.RetryQueue(path(flow), ttl=0, base_delay=0.0, max_delay=0.0, jitter=0.0)
        flow._save_journal = j
    return j


def take(flow, batch) -> bool:
    """``save on``: the batch goes to the save file and is acknowledged (True); False
    when saving is off (the flow handles the batch)."""
    if not flow.cfg.get("save", False) or flow.source.built:
        return False
    j = _journal(flow)
    for w in batch:
        try:
            topic, body, headers = w.msg.encode(allow_long_headers=True)
            j.add(topic, body, headers, w.msg.exchange)
            w.outcome = Result.DONE
        except OSError as e:
            flow.log.error("cannot save %s in %s (%s): returned to the queue", w.msg.path,
                           j.path, e)
            w.outcome = Result.RETURNED
    flow.log.info("saved %d messages in %s (%d in all)", len(batch), j.path, len(j))
    flow.settle(batch)
    return True


def restore(flow) -> None:
    """``restore`` / ``restore_to_queue``: publish the save file back (after connect).
    With restore_to_queue the flow stops once done."""
    cfg = flow.cfg
    target = cfg.get("restore_to_queue", None)
    if not (cfg.get("restore", False) or target) or flow.consumer is None:
        return
    j = _journal(flow)
    queue = target or flow.consumer.queue
    if not len(j):
        flow.log.info("restore: nothing saved in %s", j.path)
    else:
        _publish_back(flow, j, queue)
    if target:
        flow.log.info("restore_to_queue %s: done, stopping", target)
        flow.stop_event.set()


def _publish_back(flow, j, queue):
    cfg = flow.cfg
    total = len(j)
    b = flow.broker.sibling(reconnect=False)
    exchange = "%s.%s.%s.restore.%08d" % (cfg.post_exchange or cfg.exchange or "xs_restore",
                                          cfg.component, cfg.name, random.randint(0, 10**8 - 1))
    try:
        b.connect()
        b.declare_exchange(exchange, durable=False)
        b.bind(queue, exchange, "#")
        while len(j):
            chunk = j.in_order(RESTORE_BATCH)
            for e in chunk:
                b.publish(exchange, e.routing_key, e.body, e.headers)
            b.wait_confirms()
            for e in chunk:
                j.done(e)
        flow.log.info("restored %d messages from %s into queue %s", total, j.path, queue)
        j.close()
        try:
            os.unlink(j.path)
        except FileNotFoundError:
            pass
        flow._save_journal = None
    except BrokerError as e:
        flow.log.error("restore from %s stopped with %d of %d messages left: %s", j.path,
                       len(j), total, e)
    finally:
        try:
            b.delete_exchange(exchange)
        except BrokerError:
            pass
        b.close()
