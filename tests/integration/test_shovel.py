"""sr_shovel against the real broker: messages move between exchanges unchanged, filtered
by accept/reject and the duplicate cache, re-posts confirmed before the ack, loops refused,
and cluster_routing (to_clusters, cluster_path) on a shovel."""

import time

import amqp
import pytest

from sarra.config import parser as config
from sarra.flow import routing
from sarra.flow.presets import preset
from tests.integration.senderkit import Runner, wait_for

SUM = "d,d41d8cd98f00b204e9800998ecf8427e"


def publish(channel, exchange, relpath, headers=None, pubtime="20261127120000.5",
            base="http://src.invalid/"):
    h = {"sum": SUM, "parts": "1,0,1,0,0", "to_clusters": "here"}
    h.update(headers or {})
    words = relpath.strip("/").split("/")[:-1]
    topic = ".".join(["v02.post"] + words)
    channel.basic_publish(amqp.Message("%s %s %s" % (pubtime, base, relpath),
                                       application_headers=h, content_type="text/plain"),
                          exchange=exchange, routing_key=topic)


def netloc(url):
    return url.split("@", 1)[-1].split("//", 1)[-1].split("/", 1)[0]


def drain(tap, count, timeout=20.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += tap.get(count - len(got), timeout=0.3)
    return got


@pytest.fixture
def runner(home, tmp_path):
    r = Runner(home, tmp_path)
    yield r
    r.cleanup()


@pytest.fixture
def ex(broker_url, uid, amqp_exchange, amqp_tap):
    class E:
        pass
    e = E()
    e.broker = broker_url
    e.uid = uid
    e.src = amqp_exchange("xs_guest_shin%s" % uid, durable=True)
    e.dst = amqp_exchange("xs_guest_shout%s" % uid, durable=True)
    e.rep = amqp_exchange("xs_guest_shrep%s" % uid)
    e.out = amqp_tap(e.dst)
    e.reports = amqp_tap(e.rep, ("v02.report.#",))
    e.name = "sh%s" % uid
    return e


def shovel_config(runner, ex, extra="", post_exchange=None):
    return runner.config("shovel", ex.name, """
        broker %s
        exchange %s
        expire 5m
        post_broker %s
        post_exchange %s
        report_exchange %s
        heartbeat 2
        %s
    """ % (ex.broker, ex.src, ex.broker, post_exchange or ex.dst, ex.rep, extra))


def start(runner, ex):
    p = runner.start("shovel", ex.name)
    runner.wait_consuming(p, ex.name)
    return p


def test_moves_messages_unchanged_with_filters_and_reports(runner, ex, amqp_channel):
    shovel_config(runner, ex, """
        reject .*/skip/.*
        accept .*
    """)
    p = start(runner, ex)
    publish(amqp_channel, ex.src, "/a/b/one.txt",
            {"mtime": "20261127115959.25", "odd_header": "kept", "source": "alice",
             "from_cluster": "far"})
    publish(amqp_channel, ex.src, "/a/skip/two.txt")
    publish(amqp_channel, ex.src, "/a/three%20x.txt")
    got = drain(ex.out, 2)
    assert len(got) == 2 and not drain(ex.out, 1, timeout=1.0)
    (k1, b1, h1), (k2, b2, h2) = got
    assert k1 == "v02.post.a.b" and b1 == "20261127120000.5 http://src.invalid/ /a/b/one.txt"
    assert h1["odd_header"] == "kept" and h1["source"] == "alice" and h1["from_cluster"] == "far"
    assert h1["mtime"] == "20261127115959.25" and h1["sum"] == SUM
    assert b2.endswith(" /a/three%20x.txt") and k2 == "v02.post.a"
    assert h2["source"] == "guest" and h2["from_cluster"] == netloc(ex.broker)   # filled in
    reports = drain(ex.reports, 2)
    assert sorted(b.split()[3] for _, b, _ in reports) == ["201", "201"]
    assert all(h["message"] == "Published" for _, _, h in reports)
    assert runner.stop(p) == 0


def test_duplicate_cache(runner, ex, amqp_channel):
    shovel_config(runner, ex, "suppress_duplicates on\nreport_back off")
    p = start(runner, ex)
    for _ in range(3):
        publish(amqp_channel, ex.src, "/dup/same.txt")
    publish(amqp_channel, ex.src, "/dup/other.txt")
    publish(amqp_channel, ex.src, "/dup/same.txt", {"sum": "d,00000000000000000000000000000001"})
    got = drain(ex.out, 3)
    assert sorted(b.split()[2] for _, b, _ in got) == ["/dup/other.txt", "/dup/same.txt",
                                                       "/dup/same.txt"]
    assert not drain(ex.out, 1, timeout=1.5)
    assert runner.stop(p) == 0


def test_reposts_are_confirmed_before_the_ack(runner, ex, amqp_channel):
    """The post exchange does not exist at first: the broker refuses the re-posts, so the
    messages must not be acknowledged; once it exists they all arrive. (The exchange is
    created with an alternate exchange that already has a queue bound, so that nothing
    published between its creation and the tap's binding is lost by the test.)"""
    late = "xs_guest_shlate%s" % ex.uid
    alt = "xs_guest_shalt%s" % ex.uid
    shovel_config(runner, ex, "declare_exchange off\nreport_back off", post_exchange=late)
    amqp_channel.exchange_declare(alt, "fanout", durable=False, auto_delete=False)
    q, _, _ = amqp_channel.queue_declare("", exclusive=True)
    amqp_channel.queue_bind(q, alt, "")
    p = start(runner, ex)
    try:
        for i in range(5):
            publish(amqp_channel, ex.src, "/late/f%d.txt" % i)
        wait_for(lambda: "not confirmed" in runner.log() or "NOT_FOUND" in runner.log(),
                 30, "the refused re-post in the log")
        time.sleep(1.5)
        amqp_channel.exchange_declare(late, "topic", durable=False, auto_delete=False,
                                      arguments={"alternate-exchange": alt})
        got = []

        def all_there():
            while True:
                m = amqp_channel.basic_get(q, no_ack=True)
                if m is None:
                    break
                body = m.body.decode() if isinstance(m.body, bytes) else m.body
                got.append(body.split()[2])
            return len(set(got)) == 5
        wait_for(all_there, 60, "the 5 re-posts after the exchange appeared", step=0.3)
        assert set(got) == {"/late/f%d.txt" % i for i in range(5)}
        assert p.poll() is None
        log = runner.log()
        # refused posts are retried with a pause, not in a tight loop
        assert log.count("posts not confirmed") < 20, log.count("posts not confirmed")
    finally:
        runner.stop(p)
        amqp_channel.exchange_delete(late)
        amqp_channel.exchange_delete(alt)


def test_loop_refused_with_one_line_and_exit_2(runner, ex):
    shovel_config(runner, ex, post_exchange=ex.src)
    r = runner.run("sr_shovel", "foreground", ex.name, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    refused = [line for line in lines if "refused" in line]
    assert len(refused) == 1 and ex.src in refused[0] and "loop" in refused[0], r.stderr
    assert "guest:guest" not in r.stderr


def test_same_exchange_name_on_another_broker_is_no_loop(home):
    def problem(post_broker, post_exchange, component="shovel"):
        cfg = config.load(component, None, [
            ("broker", "amqp://u@pump-a.invalid/"), ("exchange", "xpublic"),
            ("post_broker", post_broker), ("post_exchange", post_exchange)])
        return routing.config_problem(cfg, preset(component))
    assert "loop" in problem("amqp://other@pump-a.invalid:5672/", "xpublic")
    assert problem("amqp://u@pump-b.invalid/", "xpublic") is None
    assert problem("amqp://u@pump-a.invalid/vh2", "xpublic") is None
    assert problem("amqp://u@pump-a.invalid/", "xother") is None
    assert "loop" in problem("amqp://u@pump-a.invalid/", "xpublic", "sarra")
    assert "loop" in problem("amqp://u@pump-a.invalid/", "xpublic", "winnow")


def test_cluster_routing_on_a_shovel(runner, ex, amqp_channel):
    shovel_config(runner, ex, """
        cluster B
        cluster_aliases b-pump
        gateway_for C,D
        cluster_routing on
        report_back off
    """)
    p = start(runner, ex)
    publish(amqp_channel, ex.src, "/r/for_b.txt", {"to_clusters": "B", "from_cluster": "A",
                                                   "cluster_path": "A"})
    publish(amqp_channel, ex.src, "/r/for_alias.txt", {"to_clusters": "X,b-pump",
                                                       "from_cluster": "A"})
    publish(amqp_channel, ex.src, "/r/for_d.txt", {"to_clusters": "D", "from_cluster": "A"})
    publish(amqp_channel, ex.src, "/r/for_x.txt", {"to_clusters": "X", "from_cluster": "A"})
    publish(amqp_channel, ex.src, "/r/been_here.txt", {"to_clusters": "C", "from_cluster": "A",
                                                       "cluster_path": "A,B,C"})
    publish(amqp_channel, ex.src, "/r/from_here.txt", {"to_clusters": "C", "from_cluster": "B"})
    publish(amqp_channel, ex.src, "/r/none.txt", {"to_clusters": ""})
    got = {b.split()[2]: h for _, b, h in drain(ex.out, 4)}
    assert not drain(ex.out, 1, timeout=1.5)
    assert set(got) == {"/r/for_b.txt", "/r/for_alias.txt", "/r/for_d.txt", "/r/from_here.txt"}
    assert got["/r/for_b.txt"]["cluster_path"] == "A,B"
    assert got["/r/for_alias.txt"]["cluster_path"] == "A,B"     # started from from_cluster
    assert got["/r/from_here.txt"]["cluster_path"] == "B"       # first hop of local data
    assert runner.stop(p) == 0
