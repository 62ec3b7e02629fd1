"""The public seams of sarra.broker.client.Broker that winnow and the reporter use, on a
fake connection (no network): the channel incarnation, the exchange-exists probe, a
sibling connection, and the transaction API, whose frames must be the bytes py-amqp
wrote for winnow's old second encoder."""

import logging
import threading

import amqp
import pytest
from amqp import exceptions as amqp_exc
from amqp import method_framing, spec
from amqp.serialization import dumps

from sarra.broker.client import (Broker, BrokerAccessRefused, BrokerError, BrokerNotFound,
                                 Delivery, DeliveryTag)


class Channel:
    channel_id = 3
    is_open = True
    connection = True

    def __init__(self):
        self.calls, self.refuse = [], None

    def exchange_declare(self, name, type_, passive=False, **kw):
        self.calls.append(("declare", name, passive))
        if self.refuse is not None:
            raise self.refuse

    def tx_select(self):
        self.calls.append("tx.select")

    def tx_commit(self):
        self.calls.append("tx.commit")
        self.wbuf.flush()               # py-amqp writes tx.commit: the batch goes first


class Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b


class Connection:
    connected = True

    def __init__(self, frame_max=131072):
        self.frame_max, self.bytes_sent, self.transport = frame_max, 0, Sink()


def fake_broker(frame_max=131072, **kw):
    """A real Broker whose connection and channel are stand-ins."""
    b = Broker("amqp://u:secret@localhost/v", reconnect=False, **kw)
    b._conn, b._chan, b._chan_ready = Connection(frame_max), Channel(), True
    b._wbuf.reset(b._conn.transport)
    b._chan.wbuf = b._wbuf
    return b


# ------------------------------------------------------------------ channel incarnation

def test_generation_and_is_current():
    b = fake_broker()
    assert b.generation == 0
    tag = DeliveryTag(7, 0)
    d = Delivery("x", "k", "", b"", {}, tag, False, {})
    assert b.is_current(tag) and b.is_current(d) and b.is_current(7)
    b._reset_channel_state()                  # what a lost channel does
    assert b.generation == 1
    assert not b.is_current(tag) and not b.is_current(d)
    assert b.is_current(DeliveryTag(1, 1)) and b.is_current(7)   # a plain tag: current


# ------------------------------------------------------------------ exchange probe

def test_exchange_exists_is_a_passive_declare():
    b = fake_broker()
    assert b.exchange_exists("xreport") is True
    assert b._chan.calls == [("declare", "xreport", True)]


def test_exchange_exists_false_when_the_broker_says_not_found():
    b = fake_broker()
    b._chan.refuse = amqp_exc.NotFound("NOT_FOUND - no exchange 'xr' in vhost 'v'",
                                       spec.Exchange.Declare, reply_code=404)
    assert b.exchange_exists("xr") is False


def test_exchange_exists_raises_other_refusals():
    b = fake_broker()
    b._chan.refuse = amqp_exc.AccessRefused("ACCESS_REFUSED - access to exchange 'xr'",
                                            spec.Exchange.Declare, reply_code=403)
    with pytest.raises(BrokerAccessRefused) as e:
        b.exchange_exists("xr")
    assert "secret" not in str(e.value)


def test_not_found_is_still_a_broker_error():
    assert issubclass(BrokerNotFound, BrokerError)


# ------------------------------------------------------------------ sibling

def test_sibling_has_the_same_settings_and_its_own_connection():
    stop = threading.Event()
    lookup = lambda url: "pw"                       # noqa: E731
    log = logging.getLogger("sibling")
    b = Broker("amqps://u@h:5671/v", password_lookup=lookup, heartbeat=17,
               connect_timeout=4, logger=log, max_inflight=9, backoff_initial=0.5,
               backoff_max=7, stop_event=stop, should_stop=stop.is_set,
               ssl_options={"x": 1})
    s = b.sibling(reconnect=False, batch_writes=True)
    assert isinstance(s, Broker) and s is not b and not s.connected
    assert (s.url, s.password_lookup, s.heartbeat, s.connect_timeout, s.log, s.max_inflight,
            s.backoff_initial, s.backoff_max, s.stop_event, s.should_stop, s.ssl_options) \
        == (b.url, lookup, 17, 4, log, 9, 0.5, 7, stop, stop.is_set, {"x": 1})
    assert (s.reconnect, s.batch_writes) == (False, True)
    assert (b.reconnect, b.batch_writes) == (True, False)
    assert b.sibling().reconnect is True


# ------------------------------------------------------------------ transactions

def py_amqp_bytes(frame_max, channel, posts, ack):
    """What winnow's TxPost wrote before: py-amqp's send_method of each post (an
    amqp.Message), then basic_ack(top, multiple=True)."""
    sink = Sink()
    conn = Connection(frame_max)
    write = method_framing.frame_writer(conn, sink)
    for exchange, key, body, headers in posts:
        props = {"content_type": "text/plain", "content_encoding": "utf-8",
                 "application_headers": {str(k): v for k, v in headers.items()},
                 "delivery_mode": 2}
        write(1, channel, spec.Basic.Publish, dumps("Bssbb", (0, exchange, key, False, False)),
              amqp.Message(body.encode(), **props))
    if ack is not None:
        write(1, channel, spec.Basic.Ack, dumps("Lb", (ack, True)), None)
    return bytes(sink.data)


POSTS = [("xo", "v02.post.a", "20240101000000.0 http://h/ /a",
          {"sum": "d,0123456789abcdef0123456789abcdef", "parts": "1,5,1,0,0", "é": "日本"}),
         ("xo", "v02.post.b", "y" * 10000, {"sum": "0,1"})]


@pytest.mark.parametrize("frame_max", [131072, 4096])
def test_tx_commit_writes_what_py_amqp_wrote(frame_max):
    b = fake_broker(frame_max)
    b._unacked.update({5, 6, 9})
    assert b.tx_select(DeliveryTag(5, 0)) is True
    for exchange, key, body, headers in POSTS:
        b.tx_publish(exchange, key, body, headers)
    assert b._conn.transport.data == b""          # nothing is sent before the commit
    b.tx_commit([DeliveryTag(6, 0), 5])
    assert bytes(b._conn.transport.data) == py_amqp_bytes(frame_max, 3, POSTS, 6)
    assert b._chan.calls == ["tx.select", "tx.commit"]
    assert b._unacked == {9}
    assert b._conn.bytes_sent == 3


def test_tx_select_once_per_channel_incarnation():
    b = fake_broker()
    assert b.tx_select() and b.tx_select(DeliveryTag(1, 0))
    assert b._chan.calls == ["tx.select"]
    b.tx_publish("xo", "k", "lost with the channel", {})
    b._reset_channel_state()
    assert b.tx_select(DeliveryTag(1, 0)) is False          # from the lost channel
    assert b._chan.calls == ["tx.select"]
    assert b.tx_select(DeliveryTag(2, 1)) is True
    assert b._chan.calls == ["tx.select", "tx.select"]
    b.tx_publish("xo", "k", "kept", {})
    b.tx_commit()
    assert b"kept" in b._conn.transport.data and b"lost" not in b._conn.transport.data
    assert b._chan.calls[-1] == "tx.commit"


def test_tx_commit_without_a_transaction_sends_the_acks_alone():
    b = fake_broker()
    b.tx_commit()
    b.tx_commit([])
    assert b._chan.calls == [] and b._conn.transport.data == b""
    b._unacked.update({1, 2})
    b.tx_commit([2, 1])
    b._wbuf.flush()
    assert bytes(b._conn.transport.data) == py_amqp_bytes(131072, 3, [], 2)
    assert b._chan.calls == [] and b._unacked == set()


def test_tx_commit_after_the_channel_was_lost_commits_nothing():
    b = fake_broker()
    b.tx_select()
    b.tx_publish("xo", "k", "b", {})
    gen = b.generation

    def do(op, what):                     # the channel is lost during the commit call
        b._reset_channel_state()
        return op()
    b._do = do
    b.tx_commit([1])
    assert b.generation == gen + 1
    assert b._chan.calls == ["tx.select"] and b._conn.transport.data == b""


# ------------------------------------------------------------------ the seam holds

def test_no_module_outside_sarra_broker_uses_a_broker_private_field():
    """What winnow and the reporter took from Broker's private fields is public now: an
    access like ``b._chan`` or ``broker._do(...)`` outside sarra/broker/ is refused (only
    ``self._x`` of a module's own classes is left alone)."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "sarra"
    b = fake_broker()
    private = {n for n in [*vars(b), *dir(Broker)] if n.startswith("_")
               and not n.startswith("__")}
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.parent.name == "broker" and path.parent.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in private \
                    and not (isinstance(node.value, ast.Name) and node.value.id in
                             ("self", "cls")):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}: "
                             f"{ast.unparse(node)}")
    assert not found, "\n".join(found)
