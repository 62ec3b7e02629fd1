"""A real Broker on a fake connection, for the transaction tests (test_batchtx*.py): its
transaction API at work, the frames it writes read back, no network."""

import hashlib
import logging

from sarra import message
from sarra.broker.client import Broker, Delivery, DeliveryTag
from sarra.config import parser as config
from sarra.flow import batchtx
from sarra.flow import presets as components
from sarra.flow.engine import Flow
from sarra.flow.work import Work
from tests.support.flowfakes import FakeConsumer

_tag = iter(range(1, 10 ** 6))


def delivery(relpath, redelivered=False, generation=0):
    h = {"sum": "d," + hashlib.md5(relpath.encode()).hexdigest(), "parts": "1,1,1,0,0"}
    topic, body, hdrs = message.make_post("20240101000000.0", "http://h/", relpath, h).encode()
    return Delivery("xs_a", topic, body, body.encode(), hdrs,
                    DeliveryTag(next(_tag), generation), redelivered, {})


class FakeChannel:
    channel_id = 1
    is_open = True
    connection = True

    def __init__(self, log):
        self.log = log

    def tx_select(self):
        self.log.append("select")

    def tx_commit(self):
        self.log.append("commit")


class FrameLog:
    """The transport under FakeBroker: the frames written, read back as ("publish",
    exchange, body) and ("ack", tag, multiple)."""

    def __init__(self, log):
        self.log, self.publishing = log, None

    def write(self, data):
        data = bytes(data)
        while data:
            kind, size = data[0], int.from_bytes(data[3:7], "big")
            payload, data = data[7:7 + size], data[8 + size:]
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x28":       # basic.publish
                n = payload[6]
                self.publishing = [payload[7:7 + n].decode(), b"", None]
            elif kind == 1 and payload[:4] == b"\x00\x3c\x00\x50":     # basic.ack
                self.log.append(("ack", int.from_bytes(payload[4:12], "big"),
                                 bool(payload[12] & 1)))
            elif kind == 2:
                self.publishing[2] = int.from_bytes(payload[4:12], "big")
            elif kind == 3:
                self.publishing[1] += payload
            if self.publishing and len(self.publishing[1]) == self.publishing[2]:
                self.log.append(("publish", *self.publishing[:2]))
                self.publishing = None


class FakeConnection:
    frame_max, bytes_sent, connected = 131072, 0, True

    def __init__(self, log):
        self.transport = FrameLog(log)


class Record(list):
    """What the fake channel and transport saw; also the broker's logger."""

    def __getattr__(self, name):
        return getattr(logging.getLogger("test"), name)


class FakeBroker(Broker):
    """A real Broker on a fake connection: its transaction API at work, no network."""

    def __init__(self):
        super().__init__("amqp://u:p@localhost/", reconnect=False)
        self.log = log = Record()
        self._conn, self._chan = FakeConnection(log), FakeChannel(log)
        self._chan_ready = True
        self._wbuf.reset(self._conn.transport)
        self._wbuf.limit = 0            # every frame reaches the transport at once


class Waits(list):
    def wait(self, seconds):
        self.append(seconds)

    def is_set(self):
        return False


class FakeFlow:
    def __init__(self):
        self.log = logging.getLogger("test")
        self.msg = None
        self.cache = None
        self.stop_event = Waits()


def work_of(d):
    return Work(message.decode(d.routing_key, d.body, d.headers, d.exchange), delivery=d)


class Reporting:
    """A reporter stand-in: reports on, no transaction yet (batchtx.start sets ``tx``)."""
    enabled, tx = True, None


def tx_flow(home, extra=()):
    """An sr_subscribe flow (reports on) whose consuming Broker is fake, with its batch
    transaction started."""
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("exchange", "xs_a"),
                                          ("directory", str(home / "dst")), *extra])
    flow = Flow(cfg, components.preset("subscribe"))
    flow.broker, flow.consumer = FakeBroker(), FakeConsumer()
    flow.reporter = Reporting()
    flow.batchtx = batchtx.start(flow)
    flow.stop_event = Waits()
    return flow
