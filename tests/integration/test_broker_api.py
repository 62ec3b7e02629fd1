"""Broker's public seams against the real test broker: the exchange-exists probe, a sibling
connection with the same settings, and the transaction API (posts and acks of a batch
committed together, or not at all)."""

import time

import pytest

from sarra.broker.client import Broker

HEADERS = {"sum": "d,d41d8cd98f00b204e9800998ecf8427e", "parts": "1,0,1,0,0",
           "odd": "é 日本 #+%"}


@pytest.fixture
def source(uid, broker_url, amqp_exchange):
    """(exchange, queue) with 5 messages queued; the queue is deleted after the test."""
    exchange, queue = amqp_exchange(f"xs_guest_api_{uid}"), f"q_guest.api.{uid}"
    with Broker(broker_url, reconnect=False) as b:
        b.declare_queue(queue, expire_s=300)
        b.bind(queue, exchange, "#")
        for i in range(5):
            b.publish(exchange, f"v02.post.m{i}", f"m{i}", HEADERS)
        b.wait_confirms(timeout=10)
    yield exchange, queue
    with Broker(broker_url, reconnect=False) as b:
        b.delete_queue(queue)


def take(b, queue, count):
    b.consume(queue, prefetch=100)
    got = [b.get(10) for _ in range(count)]
    assert all(got), got
    return got


def queued(broker_url, queue, expected, timeout=10.0):
    """Messages ready in queue, once it is ``expected`` (requeueing takes a moment)."""
    deadline = time.monotonic() + timeout
    with Broker(broker_url, reconnect=False) as b:
        while True:
            n = b.declare_queue(queue, passive=True)[1]
            if n == expected or time.monotonic() > deadline:
                return n
            time.sleep(0.05)


def test_exchange_exists(make_broker, uid, amqp_exchange):
    b = make_broker()
    x = amqp_exchange(f"xs_guest_here_{uid}")
    assert b.exchange_exists(x) is True
    assert b.exchange_exists(f"xs_guest_nowhere_{uid}") is False
    assert b.exchange_exists("amq.topic") is True            # the channel came back
    b.publish(x, "v02.post.a", "after a probe", HEADERS)
    b.wait_confirms(timeout=10)


def test_sibling_reaches_the_same_broker_with_the_same_password_lookup(
        make_broker, broker_url, uid, amqp_exchange, amqp_tap):
    user, password = broker_url.split("//", 1)[1].split("@", 1)[0].split(":", 1)
    asked = []

    def lookup(url):
        asked.append(url)
        return password
    bare = broker_url.replace(f"{user}:{password}@", f"{user}@")
    b = make_broker(bare, password_lookup=lookup)
    s = b.sibling(reconnect=False)
    try:
        x = amqp_exchange(f"xs_guest_sib_{uid}")
        tap = amqp_tap(x)
        s.connect()
        assert asked == [bare] and s.connected and not b.connected
        s.publish(x, "v02.post.s", "from the sibling", HEADERS)
        s.wait_confirms(timeout=10)
        assert [m[1] for m in tap.get(1)] == ["from the sibling"]
        assert s.reconnect is False and b.reconnect is True
    finally:
        s.close()


def test_posts_and_acks_are_committed_together(make_broker, broker_url, source, amqp_tap,
                                               amqp_exchange, uid):
    exchange, queue = source
    out = amqp_exchange(f"xs_guest_out_{uid}")
    tap = amqp_tap(out)
    b = make_broker()
    got = take(b, queue, 5)
    for d in got[:3]:
        assert b.tx_select(d.delivery_tag)
        b.tx_publish(out, d.routing_key, "re-" + d.body, d.headers)
    assert tap.get(1, timeout=0.5) == []                     # nothing before the commit
    b.tx_commit([d.delivery_tag for d in got[:3]])
    posts = tap.get(3)
    assert [p[1] for p in posts] == ["re-m0", "re-m1", "re-m2"]
    assert posts[0][2] == HEADERS
    b.close()                                  # m3 and m4 were not acked: they come back
    assert queued(broker_url, queue, 2) == 2


def test_nothing_is_committed_when_the_connection_is_lost_first(make_broker, broker_url,
                                                                source, amqp_tap,
                                                                amqp_exchange, uid):
    exchange, queue = source
    out = amqp_exchange(f"xs_guest_out_{uid}")
    tap = amqp_tap(out)
    b = make_broker()
    got = take(b, queue, 5)
    assert b.tx_select(got[0].delivery_tag)
    b.tx_publish(out, "v02.post.x", "never seen", HEADERS)
    b.close()                                  # killed before the commit
    assert tap.get(1, timeout=0.5) == []
    assert queued(broker_url, queue, 5) == 5   # every message comes back
    b2 = make_broker()
    again = take(b2, queue, 5)
    assert all(d.redelivered for d in again) and not b.is_current(got[0])
