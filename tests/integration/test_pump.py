"""A whole multi-user pump on the real broker: sr_police, sr_sarra, sr_subscribe, report routing.

One pump per module (the `pump` fixture of conftest.py: pumpkit.running, scripts/pump_demo.Pump):
a fresh vhost set up by sr_police with sources alice and bob, subscriber carol and the feeder
(passwords in a mode-600 credentials.conf in the pump's own HOME), the rr_* report shovels,
the feeder's sr_sarra (source_from_exchange, mirror, directory <pump>/${YYYYMMDD}/${SOURCE},
post_base_url = the pump's HTTP server) and carol's sr_subscribe, all started as `foreground`
subprocesses and stopped by PID. The vhost, the users and the processes are removed afterwards.
"""

import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from sarra.broker.client import Broker, BrokerAccessRefused
from tests.integration.pumpkit import admin_tap, today

HEADERS = {"sum": "d,d41d8cd98f00b204e9800998ecf8427e", "parts": "1,0,1,0,0"}


def by_carol(pump, reports):
    """relpath (after /<YYYYMMDD>/<source>/) -> count of carol's 201 reports."""
    c = Counter()
    for _, body, _ in reports:
        f = body.split()
        if len(f) >= 7 and f[3] == "201" and f[5] == pump.users["carol"]:
            c[f[2]] += 1
    return c


def test_impersonation_refused(pump):
    alice, bob = pump.users["alice"], pump.users["bob"]
    conn_p, public = admin_tap(pump, "xpublic")
    conn_r, xreport = admin_tap(pump, "xreport")
    src = os.path.join(pump.src["alice"], "forged")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "f.txt"), "wb") as f:
        f.write(b"not bob's\n")
    try:
        with Broker(pump.url("alice"), reconnect=False) as b:
            b.publish("xs_" + alice, "v02.post.forged.f.txt",
                      "20261127120000 %s /forged/f.txt" % pump.http_url("alice"),
                      dict(HEADERS, source=bob))
            b.wait_confirms(10)
        reports = xreport.__call__(timeout=15, want=1)
        refused = [h for body, h in reports if body.split()[3] == "403" and "forged/f.txt" in body]
        assert refused, reports
        # the report of the refusal goes back to the poster, not to the source it claimed
        assert [h.get("source") for h in refused] == [alice], refused
        assert not [b for b, _ in public(timeout=2) if "forged" in b]
    finally:
        conn_p.close()
        conn_r.close()
    assert not [p for p in pump.pump_files() if "forged" in p]


def test_reports_with_v2_root_level_and_2016_topics_reach_their_source(pump):
    """reports.md §1-2: a v2 consumer's report on a root-level file keeps the topic
    v02.post, and 2016-era peers publish v02.log...: both reach the source, like
    v02.report; a post with the key v02.post on the same exchange is not taken for one."""
    alice, carol = pump.users["alice"], pump.users["carol"]
    conn, xr_alice = admin_tap(pump, "xr_" + alice)
    hdr = dict(HEADERS, source=alice, from_cluster="127.0.0.1:5672", message="Downloaded")
    try:
        with Broker(pump.url("carol"), reconnect=False) as b:
            for key, rel in (("v02.report", "/ctrl.txt"), ("v02.post", "/v2_root.txt"),
                             ("v02.log.sub", "/sub/v2016.txt")):
                b.publish("xs_" + carol, key,
                          "20261127120000 http://x/ %s 201 h %s 0.1" % (rel, carol), hdr)
            b.publish("xs_" + carol, "v02.post", "20261127120000 http://x/ /a_post.txt",
                      dict(HEADERS, source=alice))
            b.wait_confirms(10)
        got = xr_alice(timeout=20, want=3)
        time.sleep(1)
        got += xr_alice(timeout=0.5)
        assert sorted(body.split()[2] for body, _ in got) == \
            ["/ctrl.txt", "/sub/v2016.txt", "/v2_root.txt"], got
    finally:
        conn.close()


def test_alice_cannot_use_bobs_exchanges(pump):
    alice, bob = pump.users["alice"], pump.users["bob"]
    with Broker(pump.url("alice"), reconnect=False) as b:
        q = "q_%s.test.%s" % (alice, pump.tag)
        b.declare_queue(q, expire_s=60)
        with pytest.raises(BrokerAccessRefused) as e:
            b.bind(q, "xr_" + bob, "#")
        assert "xr_" + bob in str(e.value)
        with pytest.raises(BrokerAccessRefused) as e:
            b.publish("xs_" + bob, "v02.post.a", "20261127120000 http://h/ /a", HEADERS)
            b.wait_confirms(10)
        assert "xs_" + bob in str(e.value)
        b.delete_queue(q)
    path = os.path.join(pump.src["alice"], "one.txt")
    with open(path, "w") as f:
        f.write("one\n")
    r = pump.run("sr_post", "-c", "alice", "--post_exchange", "xs_" + bob, path, timeout=60)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 3, r.stdout + r.stderr
    assert any("xs_" + bob in l and ("refused" in l.lower() or "403" in l) for l in err), err
    assert pump.pw[alice] not in r.stdout + r.stderr
    pump.write("subscribe/spy.conf", "broker amqp://%s@%s/%s\nexchange xr_%s\nsubtopic #\n"
               "directory %s\naccept .*\n" % (alice, pump.netloc, pump.vhost, bob,
                                              os.path.join(pump.top, "spy")))
    r = pump.run("sr_subscribe", "foreground", "spy", timeout=60)
    err = [l for l in r.stderr.strip().splitlines() if "xr_" + bob in l]
    assert r.returncode == 3, r.stdout + r.stderr
    assert err and ("refused" in err[-1].lower() or "403" in err[-1]), r.stderr
    assert pump.pw[alice] not in r.stdout + r.stderr


def test_thousand_files_with_reports_to_their_source(pump):
    alice_tap, bob_tap = pump.report_tap("alice"), pump.report_tap("bob")
    try:
        files = pump.make_files("alice", 1000, 1024, sub="k1")
        t0 = time.monotonic()
        r = pump.post("alice", [os.path.join(pump.src["alice"], "k1")])
        assert r.returncode == 0, r.stderr
        want = {os.path.join(today(), pump.users["alice"], rel): s for rel, s in files.items()}
        n = pump.wait_files(want, 45)
        assert n == len(want), "%d/%d arrived\n%s" % (n, len(want), pump.log_tail())
        reports = alice_tap.wait(lambda m: len(m) >= 2 * len(files), 60 - (time.monotonic() - t0))
        time.sleep(0.5)
        reports = alice_tap.poll()
        got = pump.arrived(want)
        assert got == want
        carol = by_carol(pump, reports)
        assert len(carol) == len(files) and set(carol.values()) == {1}, len(carol)
        feeder = [b for _, b, _ in reports if b.split()[5] == pump.users["feeder"]
                  and b.split()[3] == "201"]
        assert len(feeder) == len(files)
        assert all(h.get("source") == pump.users["alice"] for _, _, h in reports)
        assert bob_tap.poll() == []
        assert time.monotonic() - t0 < 60
    finally:
        alice_tap.close()
        bob_tap.close()


def test_police_fixes_a_wrong_permission(pump):
    alice = pump.users["alice"]
    url = pump.api + "permissions/%s/%s" % (pump.vhost, alice)
    good = pump.session.get(url).json()
    assert pump.session.put(url, json={"configure": good["configure"], "write": ".*",
                                       "read": good["read"]}).ok
    r = pump.run("sr_police", "check", timeout=60)
    assert r.returncode == 1 and "write permission is '.*'" in r.stdout, r.stdout + r.stderr
    r = pump.run("sr_police", "check", "--fix", timeout=60)
    assert "fixed    user '%s'" % alice in r.stdout, r.stdout + r.stderr
    now = pump.session.get(url).json()
    assert (now["configure"], now["write"], now["read"]) == (
        good["configure"], good["write"], good["read"])


def test_sarra_killed_mid_flow_loses_nothing(pump):
    alice_tap = pump.report_tap("alice")
    try:
        files = pump.make_files("alice", 300, 4096, sub="k9")
        want = {os.path.join(today(), pump.users["alice"], rel): s for rel, s in files.items()}
        poster = subprocess.Popen(pump.argv("sr_post", "-c", "alice",
                                            os.path.join(pump.src["alice"], "k9")),
                                  env=pump.env, cwd=pump.home, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while sum(os.path.exists(os.path.join(pump.dst, k)) for k in want) < 20:
            assert time.monotonic() < deadline, pump.log_tail()
            time.sleep(0.05)
        pump.stop("sarra", sig=signal.SIGKILL)
        done_at_kill = sum(os.path.exists(os.path.join(pump.dst, k)) for k in want)
        assert poster.wait(60) == 0, poster.stderr.read()
        pump.start("sarra", "sr_sarra", "foreground", "ingest")
        n = pump.wait_files(want, 45)
        assert n == len(want), "%d/%d arrived (%d at kill)\n%s" % (
            n, len(want), done_at_kill, pump.log_tail())
        deadline = time.monotonic() + 10
        got = pump.arrived(want)
        while got != want and time.monotonic() < deadline:
            time.sleep(0.3)
            got = pump.arrived(want)
        assert got == want
        reports = alice_tap.wait(lambda m: len(by_carol(pump, m)) >= len(files), 20)
        time.sleep(2)
        carol = by_carol(pump, alice_tap.poll())
        assert done_at_kill < len(files)
        assert len(carol) == len(files)
        dup = {k: v for k, v in carol.items() if v != 1}
        assert not dup, "delivered more than once: %s" % sorted(dup.items())[:5]
    finally:
        alice_tap.close()


DIE_ONCE = """import os, signal
OPTIONS = ("die_once_on", "die_once_marker")

def on_file(parent):
    from sarra.plugin import get_option
    marker = get_option(parent, "die_once_marker", "")
    if parent.msg.new_file == get_option(parent, "die_once_on", "") and \\
            not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)   # after the rename, before the post
    return True
"""


def test_sarra_killed_between_its_copy_and_its_post_posts_it_after_restart(pump, tmp_path):
    """The narrowest crash window of a pump: the file is renamed into the pump's tree, its
    post not yet made. The redelivered message finds the file there (304) and sr_sarra
    posts it again: carol gets every file, each once."""
    conf = os.path.join(pump.cfgdir, "sarra", "ingest.conf")
    with open(conf) as f:
        original = f.read()
    marker = tmp_path / "died"
    pump.write("plugins/die_once.py", DIE_ONCE)
    pump.stop("sarra")
    pump.write("sarra/ingest.conf", original + "on_file die_once\ndie_once_on f00007.bin\n"
               "die_once_marker %s\n" % marker)
    alice_tap = pump.report_tap("alice")
    try:
        pump.start("sarra", "sr_sarra", "foreground", "ingest")
        files = pump.make_files("alice", 20, 512, sub="window")
        want = {os.path.join(today(), pump.users["alice"], rel): s for rel, s in files.items()}
        assert pump.post("alice", [os.path.join(pump.src["alice"], "window")]).returncode == 0
        p = pump.procs["sarra"]
        assert p.wait(30) == -signal.SIGKILL, pump.log_tail()
        assert marker.exists()
        pump.procs.pop("sarra")
        pump.start("sarra", "sr_sarra", "foreground", "ingest")
        assert pump.wait_files(want, 30) == len(want), pump.log_tail()
        deadline = time.monotonic() + 10
        while pump.arrived(want) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pump.arrived(want) == want
        alice_tap.wait(lambda m: len(by_carol(pump, m)) >= len(files), 20)
        time.sleep(1)
        carol = by_carol(pump, alice_tap.poll())
        assert len(carol) == len(files) and set(carol.values()) == {1}, carol
    finally:
        alice_tap.close()
        pump.stop("sarra")
        pump.write("sarra/ingest.conf", original)
        pump.start("sarra", "sr_sarra", "foreground", "ingest")
