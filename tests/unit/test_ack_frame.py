"""sarra.broker.client writes basic.ack frames itself (Broker.ack_many): they must be the bytes
py-amqp's Channel.basic_ack writes, and ack_many must send the frames it means to."""

import logging

import amqp
import pytest
from amqp import method_framing

from sarra.broker import client as broker


class _Conn:
    frame_max = 131072

    def __init__(self):
        self.bytes_sent = 0
        self.data = bytearray()
        self.frame_writer = method_framing.frame_writer(self, self)

    def write(self, b):           # the transport of py-amqp's frame writer
        self.data += b


def amqp_ack(channel, tag, multiple):
    """What py-amqp sends for channel.basic_ack(tag, multiple)."""
    conn = _Conn()
    ch = amqp.Channel.__new__(amqp.Channel)     # no handshake: only send_method is used
    ch.connection, ch.channel_id = conn, channel
    ch.basic_ack(tag, multiple)
    return bytes(conn.data)


TAGS = [0, 1, 2, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
        123456789012, 2 ** 63 - 1, 2 ** 64 - 1]
CHANNELS = [1, 2, 255, 256, 2047, 65535]


@pytest.mark.parametrize("multiple", [False, True])
@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("tag", TAGS)
def test_ack_frame_is_py_amqp_bytes(tag, channel, multiple):
    assert broker._ack_frame(channel, tag, multiple) == amqp_ack(channel, tag, multiple)


def test_ack_frame_layout():
    frame = broker._ack_frame(1, 5, True)
    assert frame == (b"\x01" b"\x00\x01" b"\x00\x00\x00\x0d"       # method frame, channel 1
                     b"\x00\x3c\x00\x50"                          # basic.ack (60, 80)
                     b"\x00\x00\x00\x00\x00\x00\x00\x05" b"\x01"  # tag 5, multiple
                     b"\xce")


# ------------------------------------------------------------------ ack_many's writes

class _Transport:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b


class _Chan:
    channel_id = 3


def _broker(unacked):
    """A Broker on a fake connection: ack_many's own write path, nothing else."""
    b = broker.Broker("amqp://guest:guest@127.0.0.1:1/", reconnect=False)
    b.log = logging.getLogger("test_ack_frame")
    transport = _Transport()
    b._conn = type("C", (), {"transport": transport, "bytes_sent": 0, "connected": True})()
    b._chan, b._chan_ready = _Chan(), True
    b._unacked = set(unacked)
    return b, transport


def test_ack_many_in_order_is_one_multiple_ack():
    b, t = _broker(range(1, 11))
    b.ack_many([broker.DeliveryTag(i, b._generation) for i in range(1, 8)])
    assert bytes(t.data) == amqp_ack(3, 7, True)
    assert b._unacked == {8, 9, 10}


def test_ack_many_with_a_gap_is_one_frame_each():
    b, t = _broker(range(1, 11))
    b.ack_many([broker.DeliveryTag(i, b._generation) for i in (2, 5, 9)])
    assert bytes(t.data) == b"".join(amqp_ack(3, i, False) for i in (2, 5, 9))
    assert b._unacked == {1, 3, 4, 6, 7, 8, 10}


def test_ack_many_ignores_stale_tags():
    b, t = _broker(range(1, 4))
    b.ack_many([broker.DeliveryTag(2, b._generation - 1), broker.DeliveryTag(9, b._generation)])
    assert bytes(t.data) == b""
    assert b._unacked == {1, 2, 3}
