"""Issue 19 item 4 (first half) against the real broker: vip (active/passive), persistent,
outlet, reset, save/restore and the posts kept on disk while the post broker is down."""
import json
import subprocess
import time

import amqp
import pytest

from tests.integration.senderkit import Runner, wait_for
from tests.integration.watchkit import watch_env  # noqa: F401  (fixture)
from tests.support import prereq

pytestmark = pytest.mark.broker

SUM = "d,d41d8cd98f00b204e9800998ecf8427e"
#: TEST-NET-2: on no interface of this machine unless a test puts it on lo
VIP = "198.51.100.219"


def publish(channel, exchange, relpath, pubtime="20261127120000.5"):
    words = relpath.strip("/").split("/")[:-1]
    channel.basic_publish(
        amqp.Message("%s http://src.invalid/ %s" % (pubtime, relpath),
                     application_headers={"sum": SUM, "parts": "1,0,1,0,0"},
                     content_type="text/plain"),
        exchange=exchange, routing_key=".".join(["v02.post"] + words))


def take(channel, queue, count, timeout=20.0):
    """Up to count messages from queue: (body, properties) pairs."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        m = channel.basic_get(queue, no_ack=True)
        if m is None:
            time.sleep(0.05)
            continue
        got.append((m.body.decode() if isinstance(m.body, bytes) else m.body, m.properties))
    return got


@pytest.fixture
def runner(home, tmp_path):
    r = Runner(home, tmp_path)
    yield r
    r.cleanup()


@pytest.fixture
def ex(broker_url, uid, amqp_channel, amqp_exchange):
    class E:
        pass
    e = E()
    e.broker, e.uid, e.name = broker_url, uid, "v2a%s" % uid
    e.src = amqp_exchange("xs_guest_v2ain%s" % uid, durable=True)
    e.dst = amqp_exchange("xs_guest_v2aout%s" % uid, durable=True)
    e.queue = "q_guest.v2a.%s" % uid
    e.out, _, _ = amqp_channel.queue_declare("", exclusive=True, auto_delete=True)
    amqp_channel.queue_bind(e.out, e.dst, "#")
    return e


def shovel(runner, ex, extra="", post_broker=None):
    return runner.config("shovel", ex.name, """
        broker %s
        exchange %s
        queue_name %s
        expire 5m
        post_broker %s
        post_exchange %s
        report_back off
        heartbeat 2
        %s
    """ % (ex.broker, ex.src, ex.queue, post_broker or ex.broker, ex.dst, extra))


def queued(channel, queue):
    return channel.queue_declare(queue, passive=True)[1]


# --- vip ------------------------------------------------------------------------------

@pytest.fixture
def lo_address():
    """Puts VIP on lo when called (root), and always takes it off again."""
    prereq.need_root("adding an address to lo")
    prereq.need_tool("ip", "iproute2")
    added = []

    def add():
        subprocess.run(["ip", "addr", "add", VIP + "/32", "dev", "lo"], check=True)
        added.append(VIP)
    yield add
    if added:
        subprocess.run(["ip", "addr", "del", VIP + "/32", "dev", "lo"], check=False)


def test_vip_standby_until_the_address_arrives(runner, ex, amqp_channel, lo_address):
    # with an address that is here (loopback): it works, and leaves its queue declared
    shovel(runner, ex, "vip 127.0.0.1")
    p = runner.start("shovel", ex.name)
    runner.wait_consuming(p, ex.name)
    publish(amqp_channel, ex.src, "/vip/one.txt")
    assert len(take(amqp_channel, ex.out, 1)) == 1
    assert runner.stop(p) == 0
    # with an address that is not here (started as a daemon, so that status sees it):
    # idle, status standby, the message stays queued
    shovel(runner, ex, "vip " + VIP)
    r = runner.run("sr_shovel", "start", ex.name)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        def logs():
            return "".join(f.read_text(errors="replace")
                           for f in runner.home.rglob("*%s*.log" % ex.name))
        wait_for(lambda: "standby" in logs(), 20, "the standby line")
        publish(amqp_channel, ex.src, "/vip/two.txt")
        time.sleep(2.5)
        assert take(amqp_channel, ex.out, 1, timeout=0.5) == []
        assert queued(amqp_channel, ex.queue) == 1
        st = runner.run("sr_shovel", "status", ex.name)
        assert "standby" in st.stdout and st.returncode == 0, st.stdout + st.stderr + str(
            [f.read_text() for f in runner.home.rglob("*.stats")]) + logs()
        assert logs().count("standby") == 1          # logged once, not at every check
        whole = runner.run("sr", "status", "shovel/" + ex.name)
        assert "standby" in whole.stdout and whole.returncode == 0, whole.stdout
        # the address arrives: active within a few seconds, the message is shovelled
        lo_address()
        got = take(amqp_channel, ex.out, 1, timeout=20)
        assert [b.split()[2] for b, _ in got] == ["/vip/two.txt"]
        assert "active" in logs()
        st = runner.run("sr_shovel", "status", ex.name)
        assert "running" in st.stdout, st.stdout
        # the address leaves: passive again, connections closed, nothing consumed
        subprocess.run(["ip", "addr", "del", VIP + "/32", "dev", "lo"], check=True)
        wait_for(lambda: logs().count("standby") == 2, 20, "standby again")
        publish(amqp_channel, ex.src, "/vip/three.txt")
        time.sleep(1.5)
        assert take(amqp_channel, ex.out, 1, timeout=0.5) == []
        assert queued(amqp_channel, ex.queue) == 1
    finally:
        runner.run("sr_shovel", "stop", ex.name)


# --- persistent -----------------------------------------------------------------------

@pytest.mark.parametrize("setting, mode", [("", 2), ("persistent off", 1)])
def test_persistent_sets_the_delivery_mode_of_posts(runner, ex, amqp_channel, setting, mode):
    shovel(runner, ex, setting)
    p = runner.start("shovel", ex.name)
    runner.wait_consuming(p, ex.name)
    publish(amqp_channel, ex.src, "/pers/one.txt")
    got = take(amqp_channel, ex.out, 1)
    assert len(got) == 1 and got[0][1].get("delivery_mode", 1) == mode    # absent: 1
    assert runner.stop(p) == 0


# --- posts kept on disk while the post broker is down ---------------------------------

def journal_lines(home, name, ext):
    return [json.loads(ln) for f in home.rglob("*%s*%s" % (name, ext))
            for ln in f.read_text().splitlines() if ln.strip()]


def live(records):
    added = {r["id"]: r for r in records if r["op"] == "add"}
    for r in records:
        if r["op"] == "del":
            added.pop(r["id"], None)
    return [added[i] for i in sorted(added)]


def test_post_broker_down_posts_kept_on_disk_survive_kill_9(runner, ex, amqp_channel,
                                                           broker_url):
    import urllib.parse
    from tests.support.proxy import Proxy
    u = urllib.parse.urlsplit(broker_url)
    proxy = Proxy((u.hostname, u.port or 5672))
    proxy.start()
    try:
        via = broker_url.replace(u.netloc, "%s:%s@127.0.0.1:%d" % (u.username, u.password,
                                                                   proxy.port))
        shovel(runner, ex, "", post_broker=via)
        p = runner.start("shovel", ex.name)
        runner.wait_consuming(p, ex.name)
        publish(amqp_channel, ex.src, "/down/f0.txt")
        assert len(take(amqp_channel, ex.out, 1)) == 1
        proxy.stop()                                   # the post broker goes away
        names = ["/down/f%d.txt" % i for i in range(1, 7)]
        for n in names:
            publish(amqp_channel, ex.src, n)
        # each is taken off the queue (acked) only once its post is on disk
        wait_for(lambda: len(live(journal_lines(runner.home, ex.name, ".posts"))) == 6, 30,
                 "6 posts kept on disk:\n" + runner.log(ex.name))
        wait_for(lambda: queued(amqp_channel, ex.queue) == 0, 10, "the queue drained")
        assert "down" in runner.log(ex.name)
        p.kill()                                       # SIGKILL: nothing flushed at exit
        p.wait(10)
        proxy.start()                                  # the post broker is back
        p = runner.start("shovel", ex.name)
        got = take(amqp_channel, ex.out, 6, timeout=30)
        assert [b.split()[2] for b, _ in got] == names, runner.log(ex.name)
        assert take(amqp_channel, ex.out, 1, timeout=1.5) == []        # each once
        wait_for(lambda: not live(journal_lines(runner.home, ex.name, ".posts")), 10,
                 "the journal emptied")
        assert runner.stop(p) == 0
    finally:
        if proxy.thread is not None and proxy.thread.is_alive():
            proxy.stop()


# --- save / restore / restore_to_queue (v2) -------------------------------------------

def test_save_then_restore_in_order(runner, ex, amqp_channel):
    save = runner.tmp / "kept"
    shovel(runner, ex, "save on\nsave_file %s" % save)
    p = runner.start("shovel", ex.name)
    runner.wait_consuming(p, ex.name)
    names = ["/save/f%d.txt" % i for i in range(5)]
    for n in names:
        publish(amqp_channel, ex.src, n)
    wait_for(lambda: "saved" in runner.log(ex.name) and queued(amqp_channel, ex.queue) == 0
             and len(live(journal_lines(runner.tmp, "kept_01", ".save"))) == 5, 20,
             "5 messages saved")
    assert take(amqp_channel, ex.out, 1, timeout=1.0) == []      # saved, not shovelled
    assert runner.stop(p) == 0
    shovel(runner, ex, "restore on\nsave_file %s" % save)
    p = runner.start("shovel", ex.name)
    got = take(amqp_channel, ex.out, 5, timeout=20)
    assert [b.split()[2] for b, _ in got] == names, runner.log(ex.name)
    assert take(amqp_channel, ex.out, 1, timeout=1.0) == []
    assert not (runner.tmp / "kept_01.save").exists()
    assert runner.stop(p) == 0


def test_restore_to_queue_fills_the_named_queue_and_ends(runner, ex, amqp_channel):
    shovel(runner, ex, "save on")
    p = runner.start("shovel", ex.name)
    runner.wait_consuming(p, ex.name)
    for i in range(3):
        publish(amqp_channel, ex.src, "/rq/f%d.txt" % i)
    wait_for(lambda: len(live(journal_lines(runner.home, ex.name, ".save"))) == 3, 20,
             "3 messages saved")
    assert runner.stop(p) == 0
    target = "q_guest.v2arq.%s" % ex.uid
    amqp_channel.queue_declare(target, durable=False, auto_delete=False)
    try:
        shovel(runner, ex, "restore_to_queue %s" % target)
        p = runner.start("shovel", ex.name)
        assert p.wait(30) == 0, runner.log(ex.name)
        got = take(amqp_channel, target, 3, timeout=10)
        assert [b.split()[2] for b, _ in got] == ["/rq/f%d.txt" % i for i in range(3)]
        assert "restore_to_queue" in runner.log(ex.name)
        assert not live(journal_lines(runner.home, ex.name, ".save"))
    finally:
        amqp_channel.queue_delete(target)


# --- outlet / reset -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["url", "json"])
def test_outlet_writes_a_line_per_message_without_post_broker(runner, ex, amqp_channel, kind):
    runner.config("subscribe", ex.name, """
        broker %s
        exchange %s
        queue_name %s
        expire 5m
        notify_only on
        report_back off
        outlet %s
    """ % (ex.broker, ex.src, ex.queue, kind))
    p = runner.start("subscribe", ex.name)
    runner.wait_consuming(p, ex.name)
    publish(amqp_channel, ex.src, "/out/a%20b.txt")
    want = "http://src.invalid//out/a%20b.txt" if kind == "url" else '"v02.post.out"'
    wait_for(lambda: want in runner.log(ex.name), 20, "the outlet line")
    if kind == "json":
        line = [ln for ln in runner.log(ex.name).splitlines() if ln.startswith("[")][0]
        topic, headers, body = json.loads(line)
        assert body.endswith(" /out/a%20b.txt") and headers["sum"] == SUM
    assert runner.stop(p) == 0


def test_reset_drops_what_was_queued(runner, ex, amqp_channel):
    shovel(runner, ex)
    p = runner.start("shovel", ex.name)
    runner.wait_consuming(p, ex.name)
    assert runner.stop(p) == 0
    publish(amqp_channel, ex.src, "/reset/old.txt")          # queued while stopped
    wait_for(lambda: queued(amqp_channel, ex.queue) == 1, 10, "one queued")
    shovel(runner, ex, "reset on")
    p = runner.start("shovel", ex.name)
    wait_for(lambda: runner.log(ex.name).count(" started, ") == 2, 20, "the restart")
    assert "reset: queue %s deleted" % ex.queue in runner.log(ex.name)
    publish(amqp_channel, ex.src, "/reset/new.txt")
    got = take(amqp_channel, ex.out, 2, timeout=3)
    assert [b.split()[2] for b, _ in got] == ["/reset/new.txt"]
    assert runner.stop(p) == 0


def test_reset_makes_sr_watch_start_as_on_its_first_run(watch_env):
    (watch_env.root / "a.txt").write_bytes(b"hello")
    w = watch_env.start(name="rw" + watch_env.uid)
    assert [m.relpath for m in watch_env.msgs.get(1)] == ["/watched/a.txt"]
    assert w.stop() == 0
    w = watch_env.start(name="rw" + watch_env.uid)           # a restart: nothing new
    watch_env.msgs.none(wait=1.5)
    assert w.stop() == 0
    w = watch_env.start(["reset on"], name="rw" + watch_env.uid)
    assert [m.relpath for m in watch_env.msgs.get(1)] == ["/watched/a.txt"]
    assert "reset: duplicate cache emptied" in w.text()
    assert w.stop() == 0
