"""sarra.broker.client writes basic.publish frames itself: they must be the bytes py-amqp writes."""

import amqp
import pytest
from amqp import method_framing, spec
from amqp.serialization import dumps

from sarra.broker import client as broker
from sarra.broker.client import BrokerError


class _Conn:
    def __init__(self, frame_max):
        self.frame_max = frame_max
        self.bytes_sent = 0


class _Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b


def amqp_bytes(channel, frame_max, exchange, key, body, headers, persistent, expiration):
    """What py-amqp writes for the message the old Broker.publish built."""
    sink = _Sink()
    write = method_framing.frame_writer(_Conn(frame_max), sink)
    if isinstance(body, str):
        body = body.encode('utf-8')
    props = {'content_type': 'text/plain', 'content_encoding': 'utf-8',
             'application_headers': {str(k): broker._as_text(v)
                                     for k, v in (headers or {}).items()}}
    if persistent:
        props['delivery_mode'] = 2
    if expiration is not None:
        props['expiration'] = str(expiration)
    write(1, channel, spec.Basic.Publish,
          dumps('Bssbb', (0, exchange, key, False, False)), amqp.Message(body, **props))
    return bytes(sink.data)


def our_bytes(channel, frame_max, exchange, key, body, headers, persistent, expiration):
    if isinstance(body, str):
        body = body.encode('utf-8')
    return broker._frames(channel, frame_max - 8, broker._publish_args(exchange, key),
                          broker._content_header(len(body), headers, persistent, expiration),
                          body)


V02 = {'to_clusters': '127.0.0.1', 'mtime': '20261127220759.826123',
       'atime': '20261127220759.826123', 'mode': '644', 'parts': '1,1024,1,0,0',
       'sum': 'd,0123456789abcdef0123456789abcdef'}

CASES = [
    (1, 131072, 'xs_x', 'v02.post.d000', '20261127220759.826123 file: /d000/f.dat', V02, True,
     None),
    (2, 131072, '', '', '', {}, True, None),
    (1, 131072, 'xpublic', 'v02.post.a', b'raw', None, False, '60000'),
    (7, 131072, 'x é', 'v02.post.日本', 'b é #',
     {'odd': 'é 日本 #+%', 'n': 5, 'b': b'\xc3\xa9', 'none': None, 3: 'int key'}, True, 1000),
    (1, 131072, 'x', 'k', 'b', {'sur': 'a\udc80b', 'long': 'v' * 70000}, True, ''),
    (1, 4096, 'x', 'k', 'y' * 10000, V02, True, None),          # body split across frames
    (1, 4096, 'x', 'k', 'y' * 4088, V02, True, None),           # exactly one full chunk
    (1, 4096, 'x', 'k', 'y' * 4089, {}, False, None),
]


@pytest.mark.parametrize('case', CASES)
def test_publish_frames_are_py_amqp_bytes(case):
    assert our_bytes(*case) == amqp_bytes(*case)


def test_body_frames_respect_frame_max():
    data = our_bytes(1, 4096, 'x', 'k', 'y' * 10000, {}, True, None)
    sizes, off = [], 0
    while off < len(data):
        size = int.from_bytes(data[off + 3:off + 7], 'big')
        assert data[off + 7 + size] == 0xce
        sizes.append((data[off], size))
        off += 8 + size
    assert [s for t, s in sizes if t == 3] == [4088, 4088, 1824]


def test_short_strings_over_255_bytes_are_refused_with_their_name():
    with pytest.raises(BrokerError, match='routing key'):
        broker._publish_args('x', 'k' * 256)
    with pytest.raises(BrokerError, match='header name'):
        broker._content_header(0, {'h' * 300: 'v'}, True, None)
    assert broker._publish_args('x', 'k' * 255)      # the limit itself is fine
