"""sarra.broker.client against the real test broker (fixtures: tests/conftest.py)."""

import logging
import socket
import threading
import time

import amqp
import pytest

from sarra.broker.client import Broker, BrokerAccessRefused, BrokerError, BrokerStopped, parse_url
from tests.support.proxy import Proxy

HEADERS = {'sum': 'd,d41d8cd98f00b204e9800998ecf8427e', 'parts': '1,0,1,0,0',
           'to_clusters': 'localhost', 'mtime': '20240315123456.789', 'mode': '644',
           'odd': 'é 日本 #+%'}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def names(uid, broker_url):
    """(exchange, queue) unique names; both deleted after the test."""
    exchange, queue = f'xs_guest_test_{uid}', f'q_guest.test_broker.{uid}'
    yield exchange, queue
    with Broker(broker_url, reconnect=False) as b:
        b.delete_queue(queue)
        b.delete_exchange(exchange)


def setup_topology(b, exchange, queue, key='v02.post.#', **queue_kw):
    b.declare_exchange(exchange)
    b.declare_queue(queue, expire_s=300, **queue_kw)
    b.bind(queue, exchange, key)


def drain_all(b, queue, idle=1.0):
    """Consume everything from queue (acking); returns the Delivery list."""
    b.consume(queue, prefetch=100)
    got = []
    while (d := b.get(idle)) is not None:
        got.append(d)
        b.ack(d)
    return got


# ------------------------------------------------------------------ publish / consume

def test_publish_2000_pipelined_then_consume(make_broker, names, broker_url):
    exchange, queue = names
    pub = make_broker(max_inflight=100)
    setup_topology(pub, exchange, queue)
    most_inflight = 0
    for i in range(2000):
        pub.publish(exchange, f'v02.post.dir{i % 7}', f'20240315123456.789 http://h/ /f{i} é',
                    dict(HEADERS, seq=str(i)))
        most_inflight = max(most_inflight, pub.unconfirmed)
    assert 0 < most_inflight <= 101       # the window is respected and really pipelined
    pub.wait_confirms(timeout=30)
    assert pub.unconfirmed == 0
    assert pub.declare_queue(queue, passive=True)[1] == 2000

    # wire check on one raw message: header values are long strings, properties exact
    conn = amqp.Connection('%s:%d' % (parse_url(broker_url).host, parse_url(broker_url).port),
                           parse_url(broker_url).user, parse_url(broker_url).password)
    conn.connect()
    try:
        ch = conn.channel()
        ch.auto_decode = False
        raw = ch.basic_get(queue, no_ack=False)
        props = dict(raw.properties)
        wire_headers = props.pop('application_headers')
        assert props == {'content_type': 'text/plain', 'content_encoding': 'utf-8',
                         'delivery_mode': 2}
        assert all(type(v) is str for v in wire_headers.values())
        assert raw.body.decode('utf-8').startswith('20240315123456.789 http://h/ /f')
        ch.basic_reject(raw.delivery_tag, requeue=True)
    finally:
        conn.close()

    sub = make_broker()
    got = drain_all(sub, queue)
    assert len(got) == 2000
    seqs = sorted(int(d.headers['seq']) for d in got)
    assert seqs == list(range(2000))
    for d in got:
        i = int(d.headers['seq'])
        assert d.exchange == exchange and d.routing_key == f'v02.post.dir{i % 7}'
        assert d.body == f'20240315123456.789 http://h/ /f{i} é'
        assert d.raw == d.body.encode('utf-8')
        assert d.headers == dict(HEADERS, seq=str(i))
        assert d.properties['delivery_mode'] == 2
    assert sub.declare_queue(queue, passive=True)[1] == 0


def test_get_timeout_returns_none(make_broker, names):
    exchange, queue = names
    b = make_broker()
    setup_topology(b, exchange, queue)
    b.consume(queue)
    t = time.monotonic()
    assert b.get(0.3) is None
    assert 0.25 <= time.monotonic() - t < 2


def test_transient_and_expiration_properties(make_broker, names):
    exchange, queue = names
    b = make_broker()
    setup_topology(b, exchange, queue)
    b.publish(exchange, 'v02.post', b'bytes body', {'n': 1}, persistent=False,
              expiration=60000)
    b.wait_confirms()
    (d,) = drain_all(b, queue, idle=0.5)
    assert d.body == 'bytes body' and d.headers == {'n': '1'}
    assert 'delivery_mode' not in d.properties or d.properties['delivery_mode'] != 2
    assert d.properties['expiration'] == '60000'


def test_reject_requeues(make_broker, names):
    exchange, queue = names
    b = make_broker()
    setup_topology(b, exchange, queue)
    b.publish(exchange, 'v02.post', 'one', {})
    b.wait_confirms()
    b.consume(queue)
    first = b.get(5)
    b.reject(first.delivery_tag, requeue=True)
    again = b.get(5)
    assert again.body == 'one' and again.redelivered
    b.ack(again.delivery_tag)
    assert b.get(0.3) is None


def test_ack_many_settles_a_batch_in_one_write(make_broker, names, broker_url):
    """One multiple-ack for a contiguous batch; separate frames around a requeued one;
    whatever was acked never comes back, whatever was not does."""
    exchange, queue = names
    b = make_broker()
    setup_topology(b, exchange, queue)
    for i in range(8):
        b.publish(exchange, 'v02.post', f'm{i}', {})
    b.wait_confirms()
    b.consume(queue, prefetch=8)
    got = [b.get(5) for _ in range(8)]
    assert [d.body for d in got] == [f'm{i}' for i in range(8)]
    writes = []
    real = b._conn.transport.write
    b._conn.transport.write = lambda data: (writes.append(bytes(data)), real(data))[1]
    b.ack_many(got[:3])                          # m0..m2: every unacked tag up to m2
    assert len(writes) == 1 and len(writes[0]) == 21 and writes[0][-2] == 1   # multiple
    b.reject(got[3].delivery_tag, requeue=True)  # m3 goes back
    writes.clear()
    b.ack_many([got[4], got[6]])                 # m5 still out: one frame each
    assert len(writes) == 1 and len(writes[0]) == 42
    assert writes[0][19] == 0 and writes[0][-2] == 0
    b._conn.transport.write = real
    b.close()
    # m3 (requeued), m5 and m7 (never acked) come back; nothing acked does
    with Broker(broker_url, reconnect=False) as c:
        again = sorted(d.body for d in drain_all(c, queue))
    assert again == ['m3', 'm5', 'm7']


def test_queue_arguments_and_passive(make_broker, names):
    exchange, queue = names
    b = make_broker()
    b.declare_exchange(exchange)
    assert b.declare_queue(queue, expire_s=300, message_ttl_s=1.5) == (queue, 0, 0)
    assert b.declare_queue(queue, passive=True) == (queue, 0, 0)
    with pytest.raises(BrokerError) as info:   # inequivalent x-expires: 406
        b.declare_queue(queue, expire_s=600)
    assert queue in str(info.value)
    assert b.declare_queue(queue, passive=True)[0] == queue   # channel usable again


# ------------------------------------------------------------------ errors

def test_publish_to_missing_exchange_names_it(make_broker, names, uid):
    exchange, queue = names
    b = make_broker()
    setup_topology(b, exchange, queue)
    missing = f'x_missing_{uid}'
    with pytest.raises(BrokerError) as info:
        b.publish(missing, 'v02.post', 'lost', {})
        b.wait_confirms(timeout=10)
    assert missing in str(info.value) and 'not found' in str(info.value)
    assert 'guest:' not in str(info.value)
    # the broker object recovers: a new channel, confirms work again
    b.publish(exchange, 'v02.post', 'kept', {})
    b.wait_confirms(timeout=10)
    assert [d.body for d in drain_all(b, queue, idle=0.5)] == ['kept']


def test_passive_declare_missing_queue(make_broker, uid):
    b = make_broker()
    with pytest.raises(BrokerError) as info:
        b.declare_queue(f'q_guest.nonexistent.{uid}', passive=True)
    assert f"queue 'q_guest.nonexistent.{uid}' not found" in str(info.value)


def test_wrong_password_fails_fast(broker_url, make_broker):
    u = parse_url(broker_url)
    url = f'{u.scheme}://{u.user}:Wr0ngPassw0rd@{u.hostport}/'
    t = time.monotonic()
    with pytest.raises(BrokerError) as info:
        make_broker(url, reconnect=True).connect()    # never retried
    assert time.monotonic() - t < 5
    text = str(info.value)
    assert 'login refused' in text and 'Wr0ngPassw0rd' not in text
    assert f'{u.user}@{u.hostport}' in text
    assert info.value.exit_code == 3


def test_password_from_lookup(broker_url, make_broker):
    u = parse_url(broker_url)
    asked = []

    def lookup(url):
        asked.append(url)
        return u.password

    b = make_broker(f'amqp://{u.user}@{u.hostport}/', password_lookup=lookup)
    b.connect()
    assert b.connected and asked


def test_closed_port_cannot_connect(make_broker):
    port = free_port()
    url = f'amqp://guest:hidden@127.0.0.1:{port}/'
    with pytest.raises(BrokerError) as info:
        make_broker(url, reconnect=False).connect()
    assert str(info.value) == f'cannot connect to amqp://guest@127.0.0.1:{port}/: ' \
                              'Connection refused'


def test_backoff_warns_and_stops(make_broker, caplog):
    port = free_port()
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    b = make_broker(f'amqp://guest:hidden@127.0.0.1:{port}/', stop_event=stop,
                    backoff_initial=0.05, backoff_max=0.1)
    t = time.monotonic()
    with caplog.at_level(logging.WARNING, logger='sarra.broker'):
        with pytest.raises(BrokerStopped):
            b.connect()
    assert time.monotonic() - t < 2
    warnings = [r.getMessage() for r in caplog.records if r.name == 'sarra.broker']
    assert len(warnings) >= 3
    assert all(f'amqp://guest@127.0.0.1:{port}/' in w for w in warnings)
    assert not any('hidden' in w for w in warnings)


def test_a_refused_publish_noticed_elsewhere_still_fails_wait_confirms(make_broker, names,
                                                                       uid):
    """The channel close that refuses a publish is read by another call (a tick during a
    long download): that call raises, and the next wait_confirms() raises too, so the
    publisher never takes the dropped message for confirmed (it would ack its source)."""
    exchange, queue = names
    b = make_broker()
    setup_topology(b, exchange, queue)
    missing = f'x_missing_{uid}'
    b.publish(missing, 'v02.post', 'lost', {})
    b.flush()
    deadline = time.monotonic() + 10
    with pytest.raises(BrokerError):
        while time.monotonic() < deadline:
            time.sleep(0.05)
            b.tick()
    with pytest.raises(BrokerError) as info:
        b.wait_confirms(timeout=10)
    assert 'refused' in str(info.value) and missing in str(info.value)
    b.publish(exchange, 'v02.post', 'kept', {})
    b.wait_confirms(timeout=10)      # reported once, then cleared
    assert [d.body for d in drain_all(b, queue, idle=0.5)] == ['kept']


def test_nack_reported_by_wait_confirms(make_broker, names):
    exchange, queue = names
    b = make_broker()
    setup_topology(b, exchange, queue,
                   arguments={'x-max-length': 1, 'x-overflow': 'reject-publish'})
    for i in range(3):
        b.publish(exchange, 'v02.post', str(i), {})
    with pytest.raises(BrokerError) as info:
        b.wait_confirms(timeout=10)
    assert 'nack' in str(info.value) and ' 2 ' in str(info.value)
    b.wait_confirms(timeout=1)       # reported once, then cleared


def test_access_refused_is_specific(broker_url, make_broker):
    # the default exchange refuses explicit queue bindings: 403 ACCESS_REFUSED
    b = make_broker()
    with pytest.raises(BrokerAccessRefused):
        b.bind('q_guest.whatever', '', 'key')


@pytest.fixture
def restricted_user(broker_url, uid):
    """A broker user allowed only '^q_<user>.*|^xs_<user>.*' (via the management API)."""
    requests = pytest.importorskip('requests')
    u = parse_url(broker_url)
    api = f'http://{u.hostport.rsplit(":", 1)[0]}:15672/api'
    auth = (u.user, u.password)
    name, password = f'alice{uid}', f'pw{uid}'
    try:
        r = requests.put(f'{api}/users/{name}', auth=auth, timeout=5,
                         json={'password': password, 'tags': ''})
    except requests.ConnectionError:
        pytest.skip('RabbitMQ management API not reachable')
    assert r.status_code in (201, 204), r.text
    allowed = f'^q_{name}.*|^xs_{name}.*'
    r = requests.put(f'{api}/permissions/%2F/{name}', auth=auth, timeout=5,
                     json={'configure': allowed, 'write': allowed, 'read': allowed})
    assert r.status_code in (201, 204), r.text
    yield f'amqp://{name}:{password}@{u.hostport}/', name, password
    requests.delete(f'{api}/users/{name}', auth=auth, timeout=5)


def test_permissions_refused_on_declare_and_publish(restricted_user, make_broker, names):
    url, name, password = restricted_user
    exchange, queue = names
    make_broker().declare_exchange(exchange)      # exists, but alice may not write it
    b = make_broker(url)
    with pytest.raises(BrokerAccessRefused) as info:
        b.declare_exchange(f'xs_guest_forbidden_{name}')
    assert f"exchange 'xs_guest_forbidden_{name}'" in str(info.value)
    own = f'xs_{name}'
    b.declare_exchange(own)                            # allowed; channel reopened fine
    b.publish(exchange, 'v02.post', 'nope', {})
    with pytest.raises(BrokerAccessRefused) as info:
        b.wait_confirms(timeout=10)
    assert f"exchange '{exchange}'" in str(info.value) and password not in str(info.value)
    b.publish(own, 'v02.post', 'fine', {})
    b.wait_confirms(timeout=10)
    b.delete_exchange(own)


# ------------------------------------------------------------------ reconnection

def test_stale_ack_after_reconnect_is_harmless(make_broker, names, broker_url):
    exchange, queue = names
    b = make_broker()
    setup_topology(b, exchange, queue)
    for i in range(3):
        b.publish(exchange, 'v02.post', f'm{i}', {})
    b.wait_confirms()
    b.consume(queue, prefetch=1)
    old = b.get(5)
    assert old.body == 'm0' and int(old.delivery_tag) == 1
    b._conn.sock.shutdown(socket.SHUT_RDWR)      # the broker "goes away"
    new = b.get(5)                                # reconnects and re-consumes
    assert new is not None and b.connected
    assert int(new.delivery_tag) == int(old.delivery_tag)   # same number, new channel
    b.ack(old.delivery_tag)                       # stale: must not ack `new`
    b.ack(old)
    bodies = [new.body]
    b.ack(new.delivery_tag)                       # would be a 406 if the stale ack went out
    while (d := b.get(1)) is not None:
        bodies.append(d.body)
        b.ack(d)
    assert sorted(bodies) == ['m0', 'm1', 'm2']
    b.close()
    with Broker(broker_url, reconnect=False) as check:   # nothing left unacked
        assert check.declare_queue(queue, passive=True)[1] == 0


def test_publish_survives_socket_loss(make_broker, names):
    exchange, queue = names
    b = make_broker(max_inflight=50)
    setup_topology(b, exchange, queue)
    for i in range(1000):
        b.publish(exchange, 'v02.post', str(i), {})
        if i == 500:
            b._conn.sock.shutdown(socket.SHUT_RDWR)
    b.wait_confirms()
    bodies = {d.body for d in drain_all(make_broker(), queue)}
    assert bodies == {str(i) for i in range(1000)}     # duplicates allowed, no loss


def test_queue_deleted_by_someone_else_is_redeclared(make_broker, names, broker_url):
    exchange, queue = names
    b = make_broker()
    setup_topology(b, exchange, queue)
    b.consume(queue)
    with Broker(broker_url, reconnect=False) as admin:
        admin.delete_queue(queue)
    assert b.get(0.5) is None         # consumer cancelled: reconnect, re-declare, re-consume
    with Broker(broker_url, reconnect=False) as pub:
        pub.publish(exchange, 'v02.post', 'after', {})
        pub.wait_confirms()
    d = b.get(5)
    assert d is not None and d.body == 'after'
    b.ack(d)


def test_connection_lost_without_reconnect(make_broker, names):
    exchange, queue = names
    b = make_broker(reconnect=False, max_inflight=10000)
    setup_topology(b, exchange, queue)
    for i in range(10):
        b.publish(exchange, 'v02.post', str(i), {})
    b._conn.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(BrokerError) as info:
        b.wait_confirms(timeout=5)
    assert 'connection lost' in str(info.value) and 'unconfirmed' in str(info.value)


def test_outage_then_recovery_replays_declarations(broker_url, make_broker, names, caplog):
    exchange, queue = names
    u = parse_url(broker_url)
    proxy = Proxy((u.host, u.port))
    proxy.start()
    try:
        b = make_broker(f'amqp://{u.user}:{u.password}@127.0.0.1:{proxy.port}/',
                        max_inflight=20)
        setup_topology(b, exchange, queue)
        for i in range(100):
            b.publish(exchange, 'v02.post', str(i), {})
        proxy.stop()                              # broker unreachable for a while
        with Broker(broker_url, reconnect=False) as admin:   # declarations must be replayed
            admin.delete_queue(queue)
        threading.Timer(0.6, proxy.start).start()
        with caplog.at_level(logging.WARNING, logger='sarra.broker'):
            for i in range(100, 200):
                b.publish(exchange, 'v02.post', str(i), {})
            b.wait_confirms(timeout=30)
        assert any('cannot connect' in r.getMessage() for r in caplog.records)
    finally:
        proxy.stop()
    bodies = {d.body for d in drain_all(make_broker(), queue)}
    # messages 0..99 published before the queue was deleted may be gone with it;
    # everything published afterwards must have arrived in the re-declared queue
    assert {str(i) for i in range(100, 200)} <= bodies


def test_ack_window_bookkeeping():
    b = Broker('amqp://guest:guest@127.0.0.1:1/')
    for seq in range(1, 11):
        b._pending[seq] = ('x', 'k', seq)
    b._settle(3, True)
    assert list(b._pending) == list(range(4, 11))
    b._settle(7, False)
    assert list(b._pending) == [4, 5, 6, 8, 9, 10]
    b._on_nack(8, True)
    assert list(b._pending) == [9, 10] and len(b._nacked) == 4
    b._settle(0, True)                  # multiple with tag 0: everything
    assert not b._pending
