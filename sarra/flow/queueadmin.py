"""A consuming configuration's queue, set up or removed outside its flow: the work behind
the ``declare``, ``setup`` and ``cleanup`` actions of sr_<component> and of `sr`.

Core, not a command: the functions return what they did and raise CredentialsError or
BrokerError; the commands print and choose the exit code.
"""

import logging
import shutil
from typing import List

from sarra.broker.client import Broker
from sarra.config.credentials import Credentials
from sarra.flow import consumer, meter, nodeshare
from sarra.ops import instances


def connect(cfg) -> Broker:
    """A connection to the configuration's broker (no reconnection: one action)."""
    b = Broker(cfg.broker, password_lookup=Credentials.load().password_for, reconnect=False)
    b.connect()
    return b


def declare(cfg, bind: bool) -> str:
    """Declare the configuration's queue (and bind it); returns the queue's name."""
    b = connect(cfg)
    try:
        if getattr(cfg, "kbytes_ps_shared", 0):     # the meter's queues (meter.py)
            return meter.declare(b, cfg, logging.getLogger("sarra"))[0]
        c = consumer.Consumer(cfg, b)
        c.declare(bind=bind)
        return c.queue
    finally:
        b.close()


def cleanup(component: str, cfg) -> List[str]:
    """Stop the instances, delete the queue(s) and remove the state directory; returns the
    names of the queues deleted."""
    b = connect(cfg)
    try:
        instances.stop(component, cfg.name)
        names = [n for n in (cfg.queue_name, consumer.saved_queue(cfg)) if n]
        names += meter.queues(cfg)          # kbytes_ps_shared: the meter's two queues
        names += nodeshare.cleanup(b, cfg)  # node_shares: the shards and hash exchange
        for q in dict.fromkeys(names):
            b.delete_queue(q)
        consumer.forget_queue(cfg)
        # the whole state dir (under the host name with statehost): queue name, pid,
        # retry, cache and part files
        shutil.rmtree(cfg.state_dir(create=False), ignore_errors=True)
        return names
    finally:
        b.close()
