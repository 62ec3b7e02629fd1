"""Frames a hostile peer can make the broker deliver: py-amqp raises on them while reading
(pinned below); sarra.broker.frames hands them on with their delivery tag, marked."""

import struct

import amqp
import pytest
from amqp import method_framing, spec
from amqp.exceptions import UnexpectedFrame
from amqp.serialization import dumps, loads

from sarra.broker import frames as amqpframes
from sarra.flow import presets as components
from sarra.config import parser as config
from sarra.broker.client import Broker, Delivery, DeliveryTag
from sarra.flow.engine import Flow
from tests.support.flowfakes import FakeConsumer, FakeReporter, delivery

DELIVER_FMT = 'sLbss'


def deliver(key=b'v02.post.a', exchange=b'xs_alice', tag=7, redelivered=True):
    return (struct.pack('>HH', *spec.Basic.Deliver) + bytes((6,)) + b'ctag-1'
            + struct.pack('>QB', tag, int(redelivered)) + bytes((len(exchange),)) + exchange
            + bytes((len(key),)) + key)


def header(size, ctype=b'text/plain', table=b'', msgid=None):
    flags = 0x8000 | 0x2000 | (0x0080 if msgid is not None else 0)
    out = struct.pack('>HHQH', 60, 0, size, flags) + bytes((len(ctype),)) + ctype
    out += len(table).to_bytes(4, 'big') + table
    if msgid is not None:
        out += bytes((len(msgid),)) + msgid
    return out


def nested(depth):
    t = b''
    for _ in range(depth):
        t = b'\x01kF' + len(t).to_bytes(4, 'big') + t
    return t


class Conn:
    bytes_recv = 0


def feed(frames, handler=amqpframes.frame_handler, **kw):
    """Feed (type, payload) frames on channel 1; return the callbacks' arguments."""
    got = []
    on_frame = handler(Conn(), lambda *a: got.append(a), **kw)
    for t, payload in frames:
        on_frame((t, 1, payload))
    return got


def message_frames(key=b'v02.post.a', body=b'20261127120000 http://h/ /a', **hdr):
    return [(1, deliver(key)), (2, header(len(body), **hdr)), (3, body)]


def delivered(got):
    """What Channel.dispatch_method passes to basic.deliver's handler."""
    (_, sig, args, msg), = got
    assert sig == spec.Basic.Deliver
    values, _ = loads(DELIVER_FMT, args, 4)
    return values, msg


HOSTILE = {
    'routing key': dict(key=b'v02.post.\xff\xfe'),
    'content_type': dict(ctype=b'text/\xff'),
    'message_id': dict(msgid=b'\xc3('),
    'nested table': dict(table=nested(3000)),
    'timestamp': dict(table=b'\x01kT' + b'\xff' * 8),
    'unknown table type': dict(table=b'\x01kZ\x00'),
}


# ---------------------------------------------------------------- py-amqp's behaviour, pinned

@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_py_amqp_raises_reading_these_frames(case):
    """Why sarra has its own frame handler: py-amqp's raises out of drain_events (the
    routing key when the method is decoded, the rest in its frame handler)."""
    kw = dict(HOSTILE[case])
    key = kw.pop('key', b'v02.post.a')

    with pytest.raises((UnicodeDecodeError, RecursionError, OverflowError,
                        amqp.exceptions.FrameSyntaxError)):
        for _, sig, args, _ in feed(message_frames(key, **kw),
                                    handler=method_framing.frame_handler):
            loads(DELIVER_FMT, args, 4)          # what Channel.dispatch_method does


# ---------------------------------------------------------------- sarra's frame handler

@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_frames_are_delivered_marked_with_their_tag(case):
    kw = dict(HOSTILE[case])
    got = feed(message_frames(**kw))
    (ctag, tag, redelivered, exchange, key), msg = delivered(got)
    assert (tag, redelivered, exchange) == (7, True, 'xs_alice')
    assert msg.sarra_undecodable
    assert '\n' not in msg.sarra_undecodable and len(msg.sarra_undecodable) < 300
    assert msg.body == b'20261127120000 http://h/ /a'


def test_reasons_say_what_and_show_the_bytes():
    _, msg = delivered(feed(message_frames(key=b'v02.post.\xff\xfe')))
    assert msg.sarra_undecodable == r"routing key 'v02.post.\xff\xfe' is not valid UTF-8"
    values, _ = delivered(feed(message_frames(key=b'v02.post.\xff\xfe')))
    assert values[4] == r'v02.post.\xff\xfe'
    _, msg = delivered(feed(message_frames(ctype=b'text/\xff')))
    assert msg.sarra_undecodable == r"content_type 'text/\xff' is not valid UTF-8"
    assert msg.properties['content_type'] == r'text/\xff'
    _, msg = delivered(feed(message_frames(table=nested(3000))))
    assert 'nested more than 16' in msg.sarra_undecodable
    _, msg = delivered(feed(message_frames(table=b'\x01kZ\x00')))
    assert msg.sarra_undecodable == "header k: unknown field type 'Z'"


def test_escaped_strings_stay_short_strings():
    """255 invalid bytes escape to 1020 characters: cut to what a short string holds."""
    values, msg = delivered(feed(message_frames(key=b'\xff' * 255)))
    assert len(values[4].encode()) <= 255 and values[4].startswith(r'\xff\xff')
    assert msg.sarra_undecodable.startswith("routing key '")


def test_good_frames_as_py_amqp_reads_them():
    body = b'y' * 10000
    frames = [(1, struct.pack('>HH', *spec.Basic.Ack) + struct.pack('>QB', 5, 0)), (8, b''),
              (1, deliver('v02.post.日本 #'.encode())),
              (2, header(len(body), table=b'\x01aS\x00\x00\x00\x02\xc3\xa9\x01nI\x00\x00\x00\x05')),
              (3, body[:4088]), (8, b''), (3, body[4088:8176]), (3, body[8176:]),
              (1, deliver()), (2, header(0))]
    ours, theirs = feed(frames), feed(frames, handler=method_framing.frame_handler)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert a[:3] == b[:3]
        if b[3] is not None:
            assert (a[3].body, a[3].properties) == (b[3].body, b[3].properties)
            assert 'sarra_undecodable' not in a[3].__dict__


def test_body_larger_than_any_post_is_dropped_unread():
    big = 3 * 4088
    got = feed([(1, deliver()), (2, header(big)), (3, b'x' * 4088), (3, b'x' * 4088),
                (3, b'x' * 4088), (1, deliver(tag=8)), (2, header(1)), (3, b'z')],
               max_body=5000)
    (_, msg), (_, good) = delivered(got[:1]), delivered(got[1:])
    assert msg.body == b'' and 'body of 12264 bytes' in msg.sarra_undecodable
    assert good.body == b'z' and 'sarra_undecodable' not in good.__dict__


def test_frames_out_of_order_still_fail_the_connection():
    with pytest.raises(UnexpectedFrame):
        feed([(1, deliver()), (3, b'x')])


def test_clean_method_leaves_good_payloads_alone():
    good = deliver('v02.post.é'.encode())
    assert amqpframes.clean_method(spec.Basic.Deliver, good) == (good, '')
    ret = struct.pack('>HH', *spec.Basic.Return) + dumps('Bsss', (312, 'NO_ROUTE', 'x', 'k'))
    bad = ret[:-1] + b'\xff'
    cleaned, problem = amqpframes.clean_method(spec.Basic.Return, bad)
    assert loads('Bsss', cleaned, 4)[0] == [312, 'NO_ROUTE', 'x', r'\xff']
    assert problem == r"routing key '\xff' is not valid UTF-8"


# ---------------------------------------------------------------- headers and deliveries

def test_headers_text():
    assert amqpframes.headers_text({'a': 'b', 'n': 5, 'v': None, 'x': b'ok'}) == (
        {'a': 'b', 'n': '5', 'v': '', 'x': 'ok'}, '')
    assert amqpframes.headers_text({b'k\xff': 'v'})[1] == r"header name 'k\xff' is not valid UTF-8"
    assert amqpframes.headers_text({'k\n': b'\xff'})[1] == r"header k\n '\xff' is not valid UTF-8"
    deep = {}
    for _ in range(500):
        deep = {'k': deep}
    text, problem = amqpframes.headers_text({'d': deep, 'x-death': [{'count': 1}]})
    assert problem == 'header d nested more than 16 tables deep'
    assert text['x-death'] == "[{'count': 1}]"


def test_broker_marks_the_delivery():
    b = Broker('amqp://u:p@localhost/')
    for body, props, mark, want in (
            (b'\xff ok', {}, None, 'body is not valid UTF-8 (byte 0)'),
            (b'ok', {'application_headers': {'h': b'\xfe'}}, None, "header h '\\xfe'"),
            (b'ok', {}, 'routing key bad', 'routing key bad'),
            (b'ok', {'application_headers': {'h': 'v'}}, None, '')):
        msg = amqp.Message(body, **props)
        msg.delivery_info = {'delivery_tag': 3, 'exchange': 'x', 'routing_key': 'k'}
        if mark:
            msg.sarra_undecodable = mark
        b._on_deliver(msg)
        d = b._inbox.pop()
        assert d.undecodable.startswith(want) and (want or not d.undecodable)
        assert d.delivery_tag == 3


def test_flow_acks_and_drops_an_undecodable_delivery_with_one_line(home, caplog):
    cfg = config.load('subscribe', None, [('broker', 'amqp://u:p@localhost/'),
                                          ('directory', str(home / 'dst'))])
    flow = Flow(cfg, components.Preset('subscribe', work=lambda f, w: None, posts=False))
    good = delivery('/good')
    bad = Delivery(good.exchange, r'v02.post.\xff', good.body.replace('good', 'bad'), b'',
                   good.headers, DeliveryTag(99, 0), False, {},
                   r"routing key 'v02.post.\xff' is not valid UTF-8")
    flow.consumer, flow.reporter = FakeConsumer([bad, good]), FakeReporter()
    batch = flow.gather()
    flow.handle(batch)
    assert flow.consumer.acked == ['/bad', '/good']
    assert flow.counters['malformed'] == 1
    lines = [r.getMessage() for r in caplog.records if 'undecodable' in r.getMessage()]
    assert lines == ["malformed message from exchange xs_x, key v02.post.\\xff: undecodable "
                     "AMQP frame: routing key 'v02.post.\\xff' is not valid UTF-8 "
                     "(acknowledged and dropped)"]
