"""The frames a Broker writes itself (sarra/broker/client.py): publications and acks.

basic.publish is written here rather than by py-amqp's generic serializer (a third of the
cost of a post): the bytes are exactly those py-amqp writes for
``basic_publish(Message(body, content_type='text/plain', content_encoding='utf-8',
application_headers=headers, delivery_mode=2), exchange, key)`` (the frame tests compare
them).  A publication is (method arguments, content header, body), channel-independent,
so messages re-published on a new channel reuse it.
"""

from struct import pack

from sarra.broker.connection import BrokerError


def _as_text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode('utf-8', 'replace')
    if value is None:
        return ''
    return str(value)


_BASIC = 60
_PUBLISH = pack('>HHH', _BASIC, 40, 0)      # basic.publish, reserved ticket 0
_FRAME_END = b'\xce'
# property flags (AMQP 0-9-1 basic class order) and the two fixed short strings
_F_TYPE, _F_ENCODING, _F_HEADERS, _F_MODE, _F_EXPIRATION = (0x8000, 0x4000, 0x2000, 0x1000,
                                                             0x0100)
_TYPE_AND_ENCODING = b'\x0atext/plain\x05utf-8'
_KEY_PREFIX = {}                                 # header name -> its encoded table entry start


def _shortstr(text, what):
    raw = text.encode('utf-8', 'surrogatepass')
    if len(raw) > 255:
        raise BrokerError(f'{what} {text[:40]!r}...: {len(raw)} bytes, AMQP allows 255')
    return bytes((len(raw),)) + raw


def _publish_args(exchange, routing_key):
    """basic.publish method payload: ticket, exchange, routing key, mandatory/immediate off."""
    return b''.join((_PUBLISH, _shortstr(exchange or '', 'exchange'),
                     _shortstr(routing_key or '', 'routing key'), b'\x00'))


def _key_prefix(key):
    prefix = _KEY_PREFIX.get(key)
    if prefix is None:
        name = key if type(key) is str else str(key)
        prefix = _shortstr(name, 'header name') + b'S'     # every value is a long string
        if len(_KEY_PREFIX) < 512:
            _KEY_PREFIX[key] = prefix
    return prefix


def _content_header(size, headers, persistent, expiration):
    """Content header payload: class, body size, property flags and properties."""
    table, known = [], _KEY_PREFIX
    for k, v in (headers or {}).items():
        raw = (v if type(v) is str else _as_text(v)).encode('utf-8', 'surrogatepass')
        table += (known.get(k) or _key_prefix(k), len(raw).to_bytes(4, 'big'), raw)
    table = b''.join(table)
    flags = _F_TYPE | _F_ENCODING | _F_HEADERS
    tail = b''
    if persistent:
        flags |= _F_MODE
        tail = b'\x02'
    if expiration is not None:
        flags |= _F_EXPIRATION
        tail += _shortstr(str(expiration), 'expiration')
    return b''.join((pack('>HHQH', _BASIC, 0, size, flags), _TYPE_AND_ENCODING,
                     len(table).to_bytes(4, 'big'), table, tail))


def _frames(channel, chunk, args, header, body):
    """The method, content header and body frames of one publication on ``channel``
    (bodies longer than ``chunk``, frame_max - 8, are split as py-amqp splits them)."""
    out = [pack('>BHI', 1, channel, len(args)), args, _FRAME_END,
           pack('>BHI', 2, channel, len(header)), header, _FRAME_END]
    size = len(body)
    if size <= chunk:
        if size:
            out += (pack('>BHI', 3, channel, size), body, _FRAME_END)
    else:
        for i in range(0, size, chunk):
            piece = body[i:i + chunk]
            out += (pack('>BHI', 3, channel, len(piece)), piece, _FRAME_END)
    return b''.join(out)


def _ack_frame(channel, tag, multiple):
    """basic.ack (class 60, method 80) as one method frame."""
    return pack('>BHIHHQB', 1, channel, 13, _BASIC, 80, tag, 1 if multiple else 0) + _FRAME_END


def _ack_frames(channel, unacked, tags):
    """The acks of ``tags`` still in ``unacked``: one ``multiple`` ack when they are every
    unacknowledged delivery up to the highest of them, else one ack frame each (a multiple
    ack must never cover a delivery not in hand: it would be lost). (frames, tags acked)"""
    mine = sorted({t for t in tags if t in unacked})
    if not mine:
        return b'', []
    top, chosen = mine[-1], set(mine)
    if all(t in chosen for t in unacked if t <= top):
        return _ack_frame(channel, top, True), mine
    return b''.join(_ack_frame(channel, t, False) for t in mine), mine
