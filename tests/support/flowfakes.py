"""Fakes for running the flow engine without a broker (tests/unit/test_flow.py and the unit
tests of the engine's guards): FakeConsumer (a queue in memory that records acks and
requeues), FakeReporter (records report codes), delivery() (a v02 post as the broker hands
it over), make_flow() (an sr_subscribe flow on them) and run_batches()."""

import hashlib

from sarra import message
from sarra.broker.client import Delivery, DeliveryTag
from sarra.config import parser as config
from sarra.flow import presets as components
from sarra.flow.engine import Flow


class FakeConsumer:
    def __init__(self, deliveries=()):
        self.inbox = list(deliveries)
        self.acked, self.requeued = [], []
        self.queue = "q_test"

    def get(self, timeout):
        return self.inbox.pop(0) if self.inbox else None

    def ack(self, d):
        self.acked.append(d.body.split()[2])

    def ack_many(self, ds):
        self.ack_calls = getattr(self, "ack_calls", []) + [len(ds)]
        for d in ds:
            self.ack(d)

    def requeue(self, d):
        self.requeued.append(d.body.split()[2])


class FakeReporter:
    enabled = True

    def __init__(self):
        self.sent = []

    def flush(self):
        pass

    def report(self, msg, code, text, received):
        self.sent.append((msg.relpath, code))


_tag = iter(range(1, 10**6))


def delivery(relpath, body=None, headers=None):
    data = relpath.encode()
    h = {"sum": "d," + hashlib.md5(data).hexdigest(), "parts": f"1,{len(data)},1,0,0"}
    if headers is not None:
        h = headers
    m = message.make_post("20240101000000.0", "http://h/", relpath, h)
    topic, b, hdrs = m.encode()
    return Delivery("xs_x", topic, body if body is not None else b, b"", hdrs,
                    DeliveryTag(next(_tag), 0), False, {})


def make_flow(home, work, extra=(), deliveries=()):
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(home / "dst")), *extra])
    preset = components.Preset("subscribe", work=work, posts=False)
    flow = Flow(cfg, preset)
    flow.consumer = FakeConsumer(deliveries)
    flow.reporter = FakeReporter()
    return flow


def run_batches(flow, n=1):
    for _ in range(n):
        batch = flow.gather()
        if batch:
            flow.handle(batch)
