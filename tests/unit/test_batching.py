"""A consumer takes as one batch every delivery that has already arrived (issue 20).

The flow's gather asks the consumer for its first message with a wait, then for more with
``get(0)``: "what is here already, no wait". That used to return only deliveries already
decoded, i.e. none (a drain decodes one delivery), so every batch was one message: one ack
write, one report write and, for a pump, one confirm wait per file. get(0) now decodes what
sits in the read buffer or the socket without waiting. Real RabbitMQ on loopback.
"""

import time
import uuid

import amqp

from sarra.broker.client import Broker


def _queue_with(broker_url, amqp_channel, n):
    q = "q_test_batching_" + uuid.uuid4().hex[:8]
    amqp_channel.queue_declare(q, durable=False, auto_delete=False)
    for i in range(n):
        amqp_channel.basic_publish(amqp.Message("m%d" % i, application_headers={"i": str(i)}),
                                   exchange="", routing_key=q)
    return q


def _consumer(broker_url, q, prefetch):
    b = Broker(broker_url, reconnect=False)
    b.connect()
    b.consume(q, prefetch=prefetch)
    return b


def test_get_zero_takes_every_delivery_already_arrived(broker_url, amqp_channel):
    q = _queue_with(broker_url, amqp_channel, 10)
    b = _consumer(broker_url, q, 10)
    try:
        first = b.get(5)
        assert first is not None and first.body == "m0"
        time.sleep(0.3)                     # the other 9 are sent (prefetch 10) meanwhile
        t0 = time.monotonic()
        rest = []
        while True:
            d = b.get(0)
            if d is None:
                break
            rest.append(d)
        assert [d.body for d in rest] == ["m%d" % i for i in range(1, 10)]
        assert time.monotonic() - t0 < 0.5     # nothing waited for
        b.ack_many([first] + rest)           # one multiple ack settles the batch
        assert not b._unacked
    finally:
        b.close()
        amqp_channel.queue_delete(q)


def test_get_zero_on_an_idle_queue_returns_at_once_and_keeps_consuming(broker_url,
                                                                        amqp_channel):
    q = _queue_with(broker_url, amqp_channel, 0)
    b = _consumer(broker_url, q, 5)
    try:
        t0 = time.monotonic()
        assert b.get(0) is None
        assert b.get(0.0) is None
        assert time.monotonic() - t0 < 0.2
        amqp_channel.basic_publish(amqp.Message("late"), exchange="", routing_key=q)
        d = b.get(5)
        assert d is not None and d.body == "late"
        b.ack_many([d])
    finally:
        b.close()
        amqp_channel.queue_delete(q)


def test_acked_batch_is_gone_unacked_rest_comes_back(broker_url, amqp_channel):
    """Taking deliveries early changes nothing about acks: what was taken but not acked
    when the consumer goes is delivered again."""
    q = _queue_with(broker_url, amqp_channel, 6)
    b = _consumer(broker_url, q, 6)
    try:
        got = [b.get(5)]
        time.sleep(0.3)
        while len(got) < 6:
            d = b.get(0)
            assert d is not None
            got.append(d)
        b.ack_many(got[:3])
    finally:
        b.close()
    b2 = _consumer(broker_url, q, 6)
    try:
        again = [b2.get(5)]
        time.sleep(0.3)
        d = b2.get(0)
        while d is not None:
            again.append(d)
            d = b2.get(0)
        assert sorted(d.body for d in again) == ["m3", "m4", "m5"]
        assert all(d.redelivered for d in again)
        b2.ack_many(again)
    finally:
        b2.close()
        amqp_channel.queue_delete(q)


# ------------------------------------------------ per-message work done once, not per read

def test_a_sum_header_does_not_make_a_hasher_each_time_it_is_read(monkeypatch):
    import hashlib
    from sarra import checksum
    made = []

    def counting():
        made.append(1)
        return hashlib.md5()
    monkeypatch.setitem(checksum.DATA_ALGOS, "q", counting)
    for i in range(5):
        assert checksum.parse_sum("q,%032x" % i).value == "%032x" % i
    assert len(made) <= 1
    import pytest
    with pytest.raises(ValueError):
        checksum.parse_sum("q,%031xg" % 0)       # still checked every time
    with pytest.raises(ValueError):
        checksum.parse_sum("q,abc")


def test_a_parts_header_read_again_is_not_parsed_again():
    import pytest
    from sarra import checksum
    a = checksum.Parts.parse("i,1024,4,0,2")
    assert checksum.Parts.parse("i,1024,4,0,2") is a      # frozen: shared safely
    assert (a.method, a.bsz, a.blktot, a.brem, a.bno) == ("i", 1024, 4, 0, 2)
    for bad in ("i,1024,4,0,4", "x,1", "i,0,4,0,1"):
        for _ in range(2):                                 # refused every time
            with pytest.raises(ValueError):
                checksum.Parts.parse(bad)


# ------------------------------------------------ reports: no round trip per report

def test_the_reports_of_a_batch_go_in_one_write_without_a_confirm_wait(broker_url,
                                                                       amqp_exchange,
                                                                       amqp_tap, monkeypatch):
    """Reports of a batch cost one confirm wait in all (the first report's, which checks the
    exchange takes them) and go out together at flush() (settle, before the batch's acks):
    written one by one, each would make a batch of one for the broker and the report
    shovels downstream."""
    from sarra import message
    from sarra.flow.report import Reporter
    x = amqp_exchange("xr_test_batching_" + uuid.uuid4().hex[:8])
    tap = amqp_tap(x)
    b = Broker(broker_url, reconnect=False)
    b.connect()
    rep = Reporter(b, x, "tester")
    waits = []
    try:
        for i in range(4):
            msg = message.make_post("20240101000000.0", "http://h/", "d/f%d" % i,
                                    {"sum": "d,d41d8cd98f00b204e9800998ecf8427e",
                                     "parts": "1,0,1,0,0"})
            rep.report(msg, 201, "Downloaded", time.time())
            if i == 0:      # from the second report on: count the reporter's confirm waits
                own = rep._own[1]
                real = own.wait_confirms
                monkeypatch.setattr(own, "wait_confirms",
                                    lambda timeout=30: (waits.append(1), real(timeout))[1])
        assert [body.split()[2] for _, body, _ in tap.get(4, timeout=0.5)] == ["d/f0"]
        rep.flush()
        got = tap.get(3, timeout=3)
        assert [body.split()[2] for _, body, _ in got] == ["d/f1", "d/f2", "d/f3"]
        assert [body.split()[3] for _, body, _ in got] == ["201"] * 3
        assert waits == []
    finally:
        rep.close()
        b.close()


def test_a_log_line_does_not_look_up_its_process_and_thread(tmp_path, monkeypatch):
    """A line or two is logged per file moved: the records skip what LINE_FORMAT never
    shows (os.getpid(), the current thread)."""
    import logging
    import os
    from sarra.ops import logs
    for flag in ("logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, getattr(logging, flag))   # restored afterwards
    log = logs._install("sr_t/c/01", tmp_path / "t.log", "info", 1, 0o600)
    calls = []
    real = os.getpid
    monkeypatch.setattr(os, "getpid", lambda: (calls.append(1), real())[1])
    log.info("posted %s", "http://h/a")
    assert calls == []
    assert "posted http://h/a" in (tmp_path / "t.log").read_text()
    for h in list(log.handlers):
        if getattr(h, "_sarra_handler", False):
            log.removeHandler(h)
            h.close()
