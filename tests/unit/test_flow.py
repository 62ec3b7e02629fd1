"""The flow engine's bookkeeping with a fake queue: what is acked, requeued, kept for retry,
reported and recorded in the duplicate cache, and in which order retries come back."""

import hashlib
import os
import time

import pytest

from sarra import message
from sarra.flow import presets as components
from sarra.config import parser as config
from sarra.broker.client import Delivery, DeliveryTag
from sarra.flow.engine import Flow
from sarra.flow.work import Outcome
from tests.support.flowfakes import (
    FakeConsumer, FakeReporter, _tag, delivery, make_flow, run_batches)


def test_outcomes_decide_ack_retry_and_report(home):
    def work(flow, w):
        name = w.msg.path
        if name == "/fail":
            raise Outcome(499, "download failed", retry=True)
        if name == "/bad":
            raise Outcome(417, "checksum mismatch")
        if name == "/boom":
            raise RuntimeError("a bug")
    flow = make_flow(home, work, deliveries=[delivery(p) for p in
                                             ("/ok", "/fail", "/bad", "/boom")])
    run_batches(flow)
    assert flow.consumer.acked == ["/ok", "/fail", "/bad", "/boom"]
    assert sorted(flow.reporter.sent) == [("/bad", 417), ("/boom", 503), ("/fail", 499),
                                          ("/ok", 201)]
    assert len(flow.retry) == 2          # /fail and /boom kept on disk for later
    assert flow.counters["failed"] == 2


def test_malformed_is_acked_and_dropped(home):
    bad = delivery("/x", headers={"sum": "d,00", "parts": "1,1,1,0,0"})
    flow = make_flow(home, lambda f, w: None, deliveries=[bad, delivery("/good")])
    run_batches(flow)
    assert flow.consumer.acked == ["/x", "/good"]
    assert flow.counters["malformed"] == 1
    assert flow.reporter.sent == [("/x", 417), ("/good", 201)]


def test_rejected_messages_are_acked_without_report(home):
    flow = make_flow(home, lambda f, w: None, extra=[("accept", ".*keep.*")],
                     deliveries=[delivery("/keep"), delivery("/drop")])
    run_batches(flow)
    assert flow.consumer.acked == ["/keep", "/drop"]
    assert flow.reporter.sent == [("/keep", 201)]
    assert flow.counters["rejected"] == 1


def test_duplicate_recorded_only_after_success(home):
    calls = []

    def work(flow, w):
        calls.append(w.msg.path)
        if len(calls) == 1:
            raise Outcome(499, "first try fails", retry=True)
    flow = make_flow(home, work, extra=[("suppress_duplicates", "on")],
                     deliveries=[delivery("/d"), delivery("/d"), delivery("/d")])
    flow.cfg.set("prefetch", 1)
    run_batches(flow, 3)
    # the failed first copy is not a cache entry: the second copy is downloaded; the third
    # is a duplicate of the second
    assert calls == ["/d", "/d"]
    assert [c for _, c in flow.reporter.sent] == [499, 201, 304]


def test_duplicates_within_one_batch_are_suppressed(home):
    calls = []

    def work(flow, w):
        calls.append(w.msg.path)
        if w.msg.path == "/f" and calls.count("/f") == 1:
            raise Outcome(499, "fails once", retry=True)
    flow = make_flow(home, work, extra=[("suppress_duplicates", "on")],
                     deliveries=[delivery(p) for p in ("/d", "/d", "/f", "/f", "/d")])
    run_batches(flow)           # one batch of five (prefetch 25)
    # a copy of a message done earlier in the batch is a duplicate; a copy of a failed one
    # is still worked on
    assert calls == ["/d", "/f", "/f"]
    assert [c for _, c in flow.reporter.sent] == [201, 304, 499, 201, 304]


def test_batches_take_half_the_prefetch_window_unless_posting_and_ack_in_one_call(home):
    flow = make_flow(home, lambda flow, w: None,
                     deliveries=[delivery(f"/m{i}") for i in range(10)])
    flow.cfg.set("prefetch", 9)
    run_batches(flow, 3)
    assert flow.consumer.acked == [f"/m{i}" for i in range(10)]
    assert flow.consumer.ack_calls == [5, 5]
    flow.cfg.set("prefetch", 1)       # a window of one: batches of one
    flow.consumer.inbox = [delivery("/x"), delivery("/y")]
    run_batches(flow, 1)
    assert flow.consumer.ack_calls == [5, 5, 1]
    # a flow that posts takes the whole window (its posts are confirmed per batch)
    flow.post_broker = type("PostBroker", (), {"wait_confirms": lambda self: None,
                                               "tick": lambda self: None})()
    flow.cfg.set("prefetch", 9)
    flow.consumer.inbox += [delivery(f"/p{i}") for i in range(10)]
    run_batches(flow, 2)
    assert flow.consumer.ack_calls == [5, 5, 1, 9, 2]     # "/y" was still waiting


def test_stop_returns_the_rest_of_the_batch(home):
    def work(flow, w):
        flow.stop_event.set()
    flow = make_flow(home, work, deliveries=[delivery("/a"), delivery("/b"), delivery("/c")])
    run_batches(flow)
    assert flow.consumer.acked == ["/a"]
    assert flow.consumer.requeued == ["/b", "/c"]


def test_new_messages_before_retries_and_retries_not_starved(home, monkeypatch):
    seen = []

    def work(flow, w):
        seen.append((w.msg.path, w.isRetry))
        if w.msg.path == "/r" and not w.isRetry:
            raise Outcome(404, "not yet", retry=True)
    flow = make_flow(home, work, deliveries=[delivery("/r")])
    run_batches(flow)
    entry = flow.retry.due(limit=10) or list(flow.retry._entries.values())
    monkeypatch.setattr(flow.retry, "clock", lambda: time.time() + 5)   # due now
    flow.consumer.inbox = [delivery(f"/n{i}") for i in range(150)]
    flow.cfg.set("prefetch", 50)     # batches of 25: half the window
    run_batches(flow, 5)
    # 100 new messages first, then the due retry rides along with the next batch
    order = [p for p, _ in seen[1:]]
    assert order[:100] == [f"/n{i}" for i in range(100)]
    assert ("/r", True) in seen[101:]
    assert len(flow.retry) == 0 and entry


def test_retry_keeps_its_accept_clause_directory(home):
    where = []

    def work(flow, w):
        where.append(w.mask.directory if w.mask else None)
        if not w.isRetry:
            raise Outcome(499, "later", retry=True)
    flow = make_flow(home, work, extra=[("directory", "/special"), ("accept", ".*")],
                     deliveries=[delivery("/x")])
    run_batches(flow)
    flow.retry.clock = lambda: time.time() + 5
    run_batches(flow)
    assert where == ["/special", "/special"]


@pytest.mark.parametrize("raises", [False, True])
def test_interrupt_only_while_transferring(home, raises):
    from sarra.flow.work import TransferInterrupted
    flow = make_flow(home, lambda f, w: None)
    if raises:
        with pytest.raises(TransferInterrupted):
            with flow.interruptible():
                flow.interrupt()
        assert flow.interruptible.on is False
        with flow.interruptible():
            with flow.interruptible.paused():       # broker I/O: never interrupted
                flow.interrupt()
    else:
        flow.interrupt()


class TickCounter:
    def __init__(self):
        self.ticks = 0

    def tick(self):
        self.ticks += 1


def test_an_idle_flow_keeps_its_post_broker_connection_alive(home, monkeypatch):
    """The connection sarra/shovel/winnow post on is ticked (AMQP heartbeats) while no
    message comes, at most once a second, and while a long transfer runs."""
    import threading
    from sarra.flow import fetch
    flow = make_flow(home, work=lambda flow, w: None)
    flow.post_broker = TickCounter()
    monkeypatch.setattr(flow, "connect", lambda: None)
    monkeypatch.setattr(flow, "close", lambda: None)
    monkeypatch.setattr(flow, "_idle_wait", lambda: 0.01)
    flow.reporter.tick = lambda: None
    timer = threading.Timer(2.5, flow.stop_event.set)
    timer.start()
    try:
        assert flow.run() == 0
    finally:
        timer.cancel()
    assert 2 <= flow.post_broker.ticks <= 4          # ~1 per second over 2.5 s, not 250

    flow.post_broker.ticks = 0
    flow.stop_event.clear()
    flow.broker = TickCounter()
    flow._post_ticked = 0.0
    progress = fetch._Progress(flow, None)
    progress.next_tick = 0.0                         # a transfer that has run for a while
    progress.update(b"x")
    assert flow.broker.ticks == 1 and flow.post_broker.ticks == 1


class FakePostBroker:
    def __init__(self):
        self.published = []

    def publish(self, exchange, topic, body, headers, persistent=True, expiration=None):
        self.published.append(body.split()[2])

    def wait_confirms(self):
        pass

    def tick(self):
        pass


def reposting_flow(home, deliveries):
    """A subscriber that downloads into home/dst and posts what it got (fakes around it)."""
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(home / "dst")),
                                          ("post_broker", "amqp://u:p@localhost/"),
                                          ("post_exchange", "xpublic"),
                                          ("post_base_url", "http://pump/"),
                                          ("post_base_dir", str(home / "dst"))])
    flow = Flow(cfg, components.preset("subscribe"))
    flow.consumer = FakeConsumer(deliveries)
    flow.reporter = FakeReporter()
    flow.post_broker = FakePostBroker()
    return flow


@pytest.mark.parametrize("blocks", [False, True])
def test_a_redelivered_message_whose_file_is_here_is_posted_again(home, blocks):
    """An instance that died between the rename and its post's confirm: the message comes
    back redelivered, the file is here with its checksum (304, not downloaded again), and
    a posting flow posts it again so that the next hop hears of it; a first delivery of a
    file already here is not posted."""
    src = home / "src"
    src.mkdir()
    data = b"x" * 100
    (src / "a.bin").write_bytes(data)
    (home / "dst").mkdir()
    (home / "dst" / "a.bin").write_bytes(data)
    parts = "i,50,2,0,1" if blocks else "1,100,1,0,0"
    sums = "d," + hashlib.md5(data[50:] if blocks else data).hexdigest()

    def post_of(redelivered):
        m = message.make_post("20240101000000.0", f"file://{src}/", "/a.bin",
                              {"sum": sums, "parts": parts})
        topic, body, hdrs = m.encode()
        return Delivery("xs_x", topic, body, b"", hdrs, DeliveryTag(next(_tag), 0),
                        redelivered, {})
    flow = reposting_flow(home, [post_of(False), post_of(True)])
    if blocks:        # the file was assembled from its blocks, then the instance died
        from sarra.flow import assemble
        gen = assemble.generation(message.Message(
            "20240101000000.0", f"file://{src}/", "/a.bin", {"sum": sums, "parts": parts}
        ).parts, None, "20240101000000.0")
        final = str(home / "dst" / "a.bin")
        man = assemble.Manifest(os.path.join(flow.user_cache_dir, "parts"), final)
        with man.locked():
            man.start(gen, final, final + ".tmp")
            man.add(gen, 0)
            man.add(gen, 1)
    run_batches(flow, 2)
    assert [c for _, c in flow.reporter.sent] == [304, 304]
    assert flow.counters["transferred"] == 0
    assert flow.consumer.acked == ["/a.bin", "/a.bin"]
    assert flow.post_broker.published == ["/a.bin"]          # the redelivered one only
    assert (home / "dst" / "a.bin").read_bytes() == data


def test_posting_again_that_fails_is_a_retry_not_a_crash(home):
    """The post of a redelivered 304 refused by the broker (or impossible to encode): the
    message goes to the retry queue with a 503 report, like a failed post on the main
    path; the instance goes on."""
    from sarra.broker.client import BrokerError
    src = home / "src"
    src.mkdir()
    data = b"y" * 10
    (src / "b.bin").write_bytes(data)
    (home / "dst").mkdir()
    (home / "dst" / "b.bin").write_bytes(data)
    m = message.make_post("20240101000000.0", f"file://{src}/", "/b.bin",
                          {"sum": "d," + hashlib.md5(data).hexdigest(), "parts": "1,10,1,0,0"})
    topic, body, hdrs = m.encode()
    flow = reposting_flow(home, [Delivery("xs_x", topic, body, b"", hdrs,
                                          DeliveryTag(next(_tag), 0), True, {})])

    def refuse(*a):
        raise BrokerError("publish refused: ACCESS_REFUSED")
    flow.post_broker.publish = refuse
    run_batches(flow, 1)
    assert flow.reporter.sent == [("/b.bin", 503)]
    assert flow.consumer.acked == ["/b.bin"] and len(flow.retry) == 1
    assert flow.counters["failed"] == 1
