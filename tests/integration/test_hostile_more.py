"""Variants of issue 16's attacks found by a second look (red team), each refused.

An exchange-to-exchange binding: a source's permissions (write on its xs_ exchange, read on
xpublic) let it bind xs_<source> to xpublic. The pump's ingest then got its own posts back
(delivered from 'xpublic', sources as published) and fetched and published every file again
one level deeper, about 170 times per file, for every source. Now what comes from an
exchange the ingest does not bind is refused (403); each file is published once. The same
with xs_<source> bound to xr_<source>: one report of the source's went round xreport,
xr_<source> and its report shovel for ever (~500 a second); now dropped by msg_by_user.

A session opened with a source's own password: alice posts http:// and ftp:// URLs with
her password in them; bob then names the same user with a password he made up. The pump
reused alice's session (ftp) or her Authorization header (http) and published alice's
private file in bob's tree. Now the URL's password is part of what a session is for.

``directory .../${SOURCE}`` (the form man sr_sarra gives for a pump copying another pump,
and man sr_subscribe documents): the ``source`` header comes from upstream. A hostile
upstream's ``source`` of ``../victim`` moved the target directory itself, so that a post
wrote, and a removal post deleted, files outside the tree. Now refused (403, acked) and a
good file still arrives.

Real parts: sr_subscribe in the foreground on the real broker, a loopback HTTP server.
"""

import os
import time

import amqp
import hashlib
import pytest

from sarra import checksum, message
from sarra.broker.client import Broker
from scripts.pump_demo import Pump
from tests.integration import servers
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    post_msg, stub_http, sub_env)


def test_source_header_cannot_move_the_target_directory(sub_env, stub_http):
    env, stub = sub_env, stub_http
    tree = env.tmp / "tree"
    victim = env.tmp / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep me")
    env.config(directory=str(tree) + "/${SOURCE}")
    env.setup()
    base = stub.url + env.uid
    data = b"planted\n"
    stub.files[f"/{env.uid}/planted.txt"] = data
    # a file written outside the tree, and a file outside it deleted
    env.publish_msg(post_msg(base, "/planted.txt", data, headers={"source": "../victim"}))
    env.publish_msg(message.make_post(message.now(), base, "/keep.txt", {
        "source": "../victim", "sum": "R," + checksum.name_sum("R", "keep.txt")}))
    good = b"good data\n"
    stub.files[f"/{env.uid}/good.txt"] = good
    env.publish_msg(post_msg(base, "/good.txt", good, headers={"source": "alice"}))
    p = env.foreground()
    reports = env.reports.wait(3, timeout=40)
    got = [(r["relpath"], r["code"]) for r in reports]
    assert got == [("/planted.txt", 403), ("/keep.txt", 403), ("/good.txt", 201)], \
        env.log_text()
    assert (victim / "keep.txt").read_text() == "keep me"
    assert not os.path.exists(victim / "planted.txt")
    assert (tree / "alice" / "good.txt").read_bytes() == good
    log = env.log_text()
    assert "not a plain name" in log and "Traceback" not in log
    env.stop(p)



@pytest.fixture(scope="module")
def pump(tmp_path_factory, broker_url):
    p = Pump(top=str(tmp_path_factory.mktemp("pump_more")), broker=broker_url)
    try:
        p.setup()
        p.start_http()
        p.configure()
        p.start_pump()
        p.wait_consumers(p.standard_consumers())
        yield p
    finally:
        p.close()


def _arrived(pump, files, timeout):
    """Whether every file of files ({rel: md5}) is at carol's, complete, within timeout."""
    deadline = time.monotonic() + timeout
    while pump.arrived(files) != files and time.monotonic() < deadline:
        time.sleep(0.2)
    return pump.arrived(files) == files


def _sarra_log(pump):
    with open(os.path.join(pump.logs, "sarra.log"), encoding="utf-8", errors="replace") as f:
        return f.read()


def test_exchange_to_exchange_binding_does_not_loop_the_pump(pump):
    alice = pump.users["alice"]
    day = time.strftime("%Y%m%d", time.gmtime())
    files = pump.make_files("alice", 1, sub="e2e")
    r = pump.post("alice", [os.path.join(pump.src["alice"], rel) for rel in files])
    assert r.returncode == 0, r.stdout + r.stderr
    first = {os.path.join(day, alice, rel): md5 for rel, md5 in files.items()}
    assert _arrived(pump, first, 30), pump.log_tail()       # the pump works
    conn = amqp.Connection(host=pump.netloc, userid=alice, password=pump.pw[alice],
                           virtual_host=pump.vhost, connect_timeout=10)
    conn.connect()
    try:
        ch = conn.channel()
        ch.exchange_bind(destination="xs_" + alice, source="xpublic", routing_key="#")
        files = pump.make_files("alice", 1, sub="e2e_bound")
        r = pump.post("alice", [os.path.join(pump.src["alice"], rel) for rel in files])
        assert r.returncode == 0, r.stdout + r.stderr
        want = {os.path.join(day, alice, rel): md5 for rel, md5 in files.items()}
        assert _arrived(pump, want, 30), pump.log_tail()
        time.sleep(5)                   # the loop made a copy a few times a second
        copies = [f for f in pump.pump_files() if "f00000.bin" in f]
        assert sorted(copies) == sorted(list(first) + list(want)), copies[:4]
        log = _sarra_log(pump)
        assert "does not bind (an exchange-to-exchange binding)" in log
        assert "Traceback" not in log
        ch.exchange_unbind(destination="xs_" + alice, source="xpublic", routing_key="#")
    finally:
        conn.close()
    files = pump.make_files("alice", 1, sub="after")         # a good file still goes through
    r = pump.post("alice", [os.path.join(pump.src["alice"], rel) for rel in files])
    assert r.returncode == 0, r.stdout + r.stderr
    assert _arrived(pump, {os.path.join(day, alice, rel): md5 for rel, md5 in files.items()},
                    30), pump.log_tail()


def test_exchange_to_exchange_binding_does_not_loop_reports(pump):
    alice = pump.users["alice"]
    admin = amqp.Connection(host=pump.netloc, userid=pump.admin, password=pump.admin_pw,
                            virtual_host=pump.vhost, connect_timeout=10)
    admin.connect()
    conn = amqp.Connection(host=pump.netloc, userid=alice, password=pump.pw[alice],
                           virtual_host=pump.vhost, connect_timeout=10)
    conn.connect()
    try:
        tap = admin.channel()
        q, _, _ = tap.queue_declare("", exclusive=True, auto_delete=True)
        tap.queue_bind(q, "xreport", "#")
        ch = conn.channel()
        ch.exchange_bind(destination="xs_" + alice, source="xr_" + alice, routing_key="#")
        with Broker(pump.url("alice"), reconnect=False) as b:
            b.publish("xs_" + alice, "v02.report.loop",
                      "%s http://h/ /loop 201 host %s 0.1" % (message.now(), alice),
                      {"source": alice, "message": "loop", "sum": "d," + "0" * 32})
            b.wait_confirms(10)
        time.sleep(6)
        seen = 0
        while tap.basic_get(q, no_ack=True) is not None:
            seen += 1
        assert seen == 1, "%d copies of one report on xreport" % seen
        ch.exchange_unbind(destination="xs_" + alice, source="xr_" + alice, routing_key="#")
    finally:
        conn.close()
        admin.close()
    files = pump.make_files("alice", 1, sub="after_reports")  # the pump still moves files
    r = pump.post("alice", [os.path.join(pump.src["alice"], rel) for rel in files])
    assert r.returncode == 0, r.stdout + r.stderr
    day = time.strftime("%Y%m%d", time.gmtime())
    assert _arrived(pump, {os.path.join(day, alice, rel): md5 for rel, md5 in files.items()},
                    30), pump.log_tail()


def _raw_post(pump, role, base, rel, data):
    with Broker(pump.url(role), reconnect=False) as b:
        b.publish("xs_" + pump.users[role], "v02.post." + ".".join(w for w in rel.split("/") if w),
                  "%s %s %s" % (message.now(), base, rel),
                  {"sum": "d," + hashlib.md5(data).hexdigest(),
                   "parts": "1,%d,1,0,0" % len(data)})
        b.wait_confirms(10)


@pytest.mark.parametrize("scheme", ["http", "ftp"])
def test_a_session_opened_with_one_sources_password_is_not_lent_to_another(pump, scheme,
                                                                             tmp_path):
    alice, bob = pump.users["alice"], pump.users["bob"]
    day = time.strftime("%Y%m%d", time.gmtime())
    root = tmp_path / "alices_server"
    (root / "priv").mkdir(parents=True)
    secret, public = b"alice's private data: not for bob\n", b"alice's public data\n"
    (root / "priv" / "secret.txt").write_bytes(secret)
    (root / "pub.txt").write_bytes(public)
    user, pw = "alice", "Al1ce-s3cret"
    if scheme == "http":
        srv = servers.start_http(str(root), str(tmp_path), auth=(user, pw))
    else:
        srv = servers.start_ftp(str(root), str(tmp_path), user, pw)
    try:
        where = "%s:%d" % (srv.host, srv.port)
        _raw_post(pump, "alice", "%s://%s:%s@%s/" % (scheme, user, pw, where), "/pub.txt",
                  public)
        assert _arrived(pump, {os.path.join(day, alice, "pub.txt"):
                               hashlib.md5(public).hexdigest()}, 30), pump.log_tail()
        _raw_post(pump, "bob", "%s://%s:guessed@%s/" % (scheme, user, where),
                  "/priv/secret.txt", secret)
        good = os.urandom(64)                 # then a good file of bob's, from his server
        name = "good_%s.bin" % scheme
        with open(os.path.join(pump.src["bob"], name), "wb") as f:
            f.write(good)
        _raw_post(pump, "bob", pump.http_url("bob"), "/" + name, good)
        assert _arrived(pump, {os.path.join(day, bob, name): hashlib.md5(good).hexdigest()},
                        30), pump.log_tail()
    finally:
        srv.proc.kill()
    assert not [f for f in pump.pump_files() if f.startswith(os.path.join(day, bob, "priv"))]
    assert not os.path.exists(os.path.join(pump.dst, day, bob, "priv", "secret.txt"))
