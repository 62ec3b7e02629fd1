"""sr_police against the real broker: pump set-up, user isolation, watchdog, report routing.

Every test gets its own vhost (deleted afterwards, with its exchanges and queues) and its
own users with unique names (deleted afterwards); the admin is the test broker's user.
"""

import io
import os
import secrets
import select
import subprocess
import time
import types
from contextlib import redirect_stdout

import amqp
import pytest
import requests

from sarra import paths
from sarra.ops.audit import role_permissions
from sarra.broker.client import Broker, BrokerAccessRefused
from sarra.commands import audit as audit_cmd
from tests.conftest import amqp_connect, command_argv, command_env, parse_broker_url

HEADERS = {"sum": "d,d41d8cd98f00b204e9800998ecf8427e", "parts": "1,0,1,0,0"}


def write(relpath, text, mode=0o644):
    path = os.path.join(paths.config_dir(), relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


@pytest.fixture
def pump(home, uid, broker_url):
    host, port, admin, admin_pw, _ = parse_broker_url(broker_url)
    api_base = os.environ.get("SARRA_TEST_MGMT", "http://%s:15672/" % host)
    vhost = "sarra_audit_%s" % uid
    users = {"alice": "a%s" % uid, "alice2": "a%s2" % uid, "carol": "c%s" % uid,
             "feeder": "f%s" % uid}
    pw = {u: secrets.token_hex(8) for u in users.values()}
    pw[admin] = admin_pw
    netloc = "%s:%d" % (host, port)
    write("admin.conf", "admin amqp://%s@%s/%s\nfeeder amqp://%s@%s/%s\n"
          "declare source %s %s\ndeclare subscriber %s\n" % (
              admin, netloc, vhost, users["feeder"], netloc, vhost, users["alice"],
              users["alice2"], users["carol"]))
    write("audit.conf", "management_url %s\n" % api_base)
    write("credentials.conf", "".join("amqp://%s:%s@%s/%s\n" % (u, p, netloc, vhost)
                                      for u, p in pw.items()), 0o600)
    session = requests.Session()
    session.auth = (admin, admin_pw)
    api = api_base + "api/"
    made = [users[k] for k in users] + ["m%s" % uid]

    def url(role):
        user = users[role]
        return "amqp://%s:%s@%s/%s" % (user, pw[user], netloc, vhost)

    def perm(user):
        r = session.get(api + "permissions/%s/%s" % (vhost, user))
        return None if r.status_code == 404 else r.json()

    def guest_channel():
        conn = amqp_connect("amqp://%s:%s@%s/%s" % (admin, admin_pw, netloc, vhost))
        return conn, conn.channel()

    yield types.SimpleNamespace(vhost=vhost, users=users, url=url, api=api, session=session,
                                perm=perm, admin=admin, guest_channel=guest_channel,
                                netloc=netloc, uid=uid)
    for user in made:
        session.delete(api + "users/" + user)
    session.delete(api + "vhosts/" + vhost)


def police(*argv):
    out = io.StringIO()
    with redirect_stdout(out):
        rc = audit_cmd.main(list(argv))
    return rc, out.getvalue()


def test_setup_is_idempotent(pump, run_cmd):
    rc, out = police("setup")
    assert rc == 0, out
    assert "user '%s' (source): missing -> created" % pump.users["alice"] in out
    assert "exchange 'xr_%s': missing -> created" % pump.users["alice2"] in out
    everyone = list(pump.users.values())
    for role in ("alice", "alice2", "carol"):
        user = pump.users[role]
        want = role_permissions(user, "subscriber" if role == "carol" else "source", everyone)
        got = pump.perm(user)
        assert (got["configure"], got["write"], got["read"]) == want
    assert pump.perm(pump.users["feeder"])["write"] == ".*"
    rc, out = police("setup")
    assert rc == 0 and "no change" in out and "created" not in out, out
    r = run_cmd(["sr_audit", "check"])
    assert r.returncode == 0 and "clean" in r.stdout, r.stdout + r.stderr
    r = run_cmd(["sr_police", "--management_url", "http://127.0.0.1:9/", "check"])
    assert r.returncode == 3 and "unreachable" in r.stderr


def _refused(fn, *names):
    with pytest.raises(BrokerAccessRefused) as e:
        fn()
    text = str(e.value)
    assert "access refused" in text and all(n in text for n in names), text


@pytest.mark.parametrize("me,other", [("alice", "alice2"), ("alice2", "alice")])
def test_prefix_users_are_isolated(pump, me, other):
    assert police("setup")[0] == 0
    mine, theirs = pump.users[me], pump.users[other]
    with Broker(pump.url(me), reconnect=False) as b:
        # what is hers works
        b.publish("xs_" + mine, "v02.post.a", "20240315121500 http://h/ /a", HEADERS)
        b.wait_confirms(10)
        q = "q_%s.sr_report.test.%s" % (mine, pump.uid)
        b.declare_queue(q, expire_s=60)
        b.bind(q, "xr_" + mine, "v02.report.#")
        b.bind(q, "xpublic", "v02.post.#")
        # what is the other's, or the pump's, is refused by the broker
        _refused(lambda: (b.publish("xs_" + theirs, "v02.post.a", "20240315121500 http://h/ /a",
                                    HEADERS), b.wait_confirms(10)), "xs_" + theirs)
        _refused(lambda: b.bind(q, "xr_" + theirs, "v02.report.#"), "xr_" + theirs)
        _refused(lambda: b.bind(q, "xs_" + theirs, "#"), "xs_" + theirs)
        _refused(lambda: b.bind(q, "xreport", "#"), "xreport")
        _refused(lambda: b.declare_queue("q_%s.x.%s" % (theirs, pump.uid)), "q_" + theirs)
        _refused(lambda: b.declare_exchange("xs_" + mine), "xs_" + mine)
        _refused(lambda: b.declare_exchange("x%s_new" % pump.uid), "x%s_new" % pump.uid)
        _refused(lambda: b.delete_exchange("xs_" + mine), "xs_" + mine)
        b.delete_queue(q)
    # the same through a raw amqp channel: 403 from the broker itself
    conn = amqp_connect(pump.url(me))
    try:
        with pytest.raises(amqp.exceptions.AccessRefused) as e:
            conn.channel().exchange_declare("x%s_raw" % pump.uid, "topic", durable=True,
                                            auto_delete=False)
        assert e.value.reply_code == 403
        ch = conn.channel()
        q = "q_%s.raw.%s" % (mine, pump.uid)
        ch.queue_declare(q, durable=False, auto_delete=True)
        with pytest.raises(amqp.exceptions.AccessRefused) as e:
            ch.queue_bind(q, "xr_" + theirs, "#")
        assert e.value.reply_code == 403
    finally:
        conn.close()


def test_subscriber_reads_xpublic_only(pump):
    assert police("setup")[0] == 0
    carol, alice = pump.users["carol"], pump.users["alice"]
    with Broker(pump.url("carol"), reconnect=False) as b:
        q = "q_%s.sr_subscribe.test.%s" % (carol, pump.uid)
        b.declare_queue(q, expire_s=60)
        b.bind(q, "xpublic", "v02.post.#")
        b.publish("xs_" + carol, "v02.report.a", "20240315121500 http://h/ /a 201 h u 0.1",
                  HEADERS)
        b.wait_confirms(10)
        _refused(lambda: b.bind(q, "xr_" + alice, "#"), "xr_" + alice)
        _refused(lambda: (b.publish("xs_" + alice, "v02.post.a", "20240315121500 http://h/ /a",
                                    HEADERS), b.wait_confirms(10)), "xs_" + alice)
        _refused(lambda: (b.publish("xpublic", "v02.post.a", "20240315121500 http://h/ /a",
                                    HEADERS), b.wait_confirms(10)), "xpublic")
        b.delete_queue(q)


def test_watchdog_fixes_a_wrong_permission(pump):
    assert police("setup")[0] == 0
    alice, alice2 = pump.users["alice"], pump.users["alice2"]
    good = pump.perm(alice)
    r = pump.session.put(pump.api + "permissions/%s/%s" % (pump.vhost, alice),
                         json={"configure": ".*", "write": ".*", "read": good["read"]})
    assert r.status_code in (201, 204)
    with Broker(pump.url("alice"), reconnect=False) as b:      # the hole is real...
        b.publish("xs_" + alice2, "v02.post.a", "20240315121500 http://h/ /a", HEADERS)
        b.wait_confirms(10)
    rc, out = police("check")
    assert rc == 1, out
    line = [l for l in out.splitlines() if alice + "'" in l][0]
    assert line.startswith("problem") and "write permission is '.*'" in line
    assert "configure permission is '.*'" in line and "read permission" not in line
    assert "1 not fixed" in out and pump.perm(alice)["write"] == ".*"
    rc, out = police("check", "--fix")
    assert rc == 1 and "fixed    user '%s'" % alice in out and "1 fixed" in out, out
    assert pump.perm(alice) == good
    with Broker(pump.url("alice"), reconnect=False) as b:      # ...and closed again
        _refused(lambda: (b.publish("xs_" + alice2, "v02.post.a",
                                    "20240315121500 http://h/ /a", HEADERS),
                          b.wait_confirms(10)), "xs_" + alice2)
    rc, out = police("check")
    assert rc == 0 and "clean" in out, out


def test_watchdog_conventions(pump):
    assert police("setup")[0] == 0
    uid = pump.uid
    rogue = "m%s" % uid
    s = pump.session
    assert s.put(pump.api + "users/" + rogue, json={"password": "x", "tags": ""}).ok
    assert s.put(pump.api + "permissions/%s/%s" % (pump.vhost, rogue),
                 json={"configure": ".*", "write": ".*", "read": ".*"}).ok
    conn, ch = pump.guest_channel()
    try:
        ch.exchange_declare("bad%s" % uid, "topic", durable=True, auto_delete=False)
        ch.exchange_declare("xs_nobody%s" % uid, "topic", durable=True, auto_delete=False)
        ch.queue_declare("bad%s" % uid, durable=True, auto_delete=False)
        ch.queue_declare("q_nobody%s.x" % uid, durable=True, auto_delete=False)
    finally:
        conn.close()
    rc, out = police("check")
    assert rc == 1
    for text in ("exchange 'bad%s': name does not start with 'x'" % uid,
                 "queue 'bad%s': name does not start with 'q_'" % uid,
                 "exchange 'xs_nobody%s': belongs to no declared user" % uid,
                 "queue 'q_nobody%s.x': belongs to no declared user" % uid,
                 "user '%s': has permissions on vhost '%s' but no role" % (rogue, pump.vhost)):
        assert "problem  " + text in out, out
    assert "5 problem(s) found: 5 not fixed (run with --fix to repair)" in out
    rc, out = police("--fix", "--dry-run", "check")
    assert rc == 1 and "5 would be fixed" in out
    assert s.get(pump.api + "exchanges/%s/bad%s" % (pump.vhost, uid)).status_code == 200
    rc, out = police("--fix", "check")
    assert rc == 1 and "5 problem(s) found: 5 fixed" in out, out
    for path in ("exchanges/%s/bad%s", "queues/%s/bad%s", "exchanges/%s/xs_nobody%s",
                 "queues/%s/q_nobody%s.x"):
        assert s.get(pump.api + path % (pump.vhost, uid)).status_code == 404, path
    assert s.get(pump.api + "users/" + rogue).status_code == 404
    assert police("check")[0] == 0


def test_watchdog_unconsumed_queue(pump):
    assert police("setup")[0] == 0
    q = "q_%s.sr_subscribe.big.%s" % (pump.users["carol"], pump.uid)
    with Broker(pump.url("carol"), reconnect=False) as b:
        b.declare_queue(q, expire_s=300)
    conn, ch = pump.guest_channel()
    try:
        for i in range(6):
            ch.basic_publish(amqp.Message("m%d" % i), "", q)
    finally:
        conn.close()
    deadline = time.monotonic() + 20       # queue depths in the API lag up to ~5 s
    while True:
        rc, out = police("check", "--max_queue_size", "4")
        if rc == 1 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "queue '%s': 6 messages and no consumer (max_queue_size 4)" % q in out, out
    rc, out = police("check", "--max_queue_size", "10")
    assert rc == 0, out


# ------------------------------------------------------------------ report routing

def _wait_consumers(pump, queue_prefix, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = pump.session.get(pump.api + "queues/" + pump.vhost)
        for q in r.json():
            if q["name"].startswith(queue_prefix) and q.get("consumers"):
                return q["name"]
        time.sleep(0.3)
    raise AssertionError("no consumer on a queue %s* after %d s" % (queue_prefix, timeout))


def _readline(proc, timeout):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def _start(name, argv, home, logs):
    log = open(logs / ("%s_%s.log" % (name, argv[-1])), "w")
    return subprocess.Popen(command_argv(name.split(":")[0]) + argv, stdout=subprocess.PIPE,
                            stderr=log, text=True, env=command_env(), cwd=str(home))


def test_reports_reach_their_source_only(pump, home, tmp_path):
    write("audit.conf", open(os.path.join(paths.config_dir(), "audit.conf")).read()
          + "report_daemons on\n")
    rc, out = police("setup")
    assert rc == 0 and "rr_xreport_route.conf: missing -> written" in out
    alice, carol = pump.users["alice"], pump.users["carol"]
    write("report/mine.conf", "broker amqp://%s@%s/%s\non_message report_line\n" % (
        alice, pump.netloc, pump.vhost))
    procs = []
    try:
        for cfg in ("rr_%s2xreport" % carol, "rr_xreport_route"):
            procs.append(_start("sr_shovel", ["foreground", cfg], home, tmp_path))
        procs.append(_start("sr_report", ["foreground", "mine"], home, tmp_path))
        feeder = "q_%s.sr_shovel." % pump.users["feeder"]
        for cfg in ("rr_%s2xreport" % carol, "rr_xreport_route"):
            _wait_consumers(pump, feeder + cfg + ".")
        _wait_consumers(pump, "q_%s.sr_report.mine." % alice)
        with Broker(pump.url("carol"), reconnect=False) as b:
            for user, source, name in ((carol, alice, "genuine"), ("mallory", alice, "forged"),
                                       (carol, pump.users["alice2"], "not-hers")):
                body = "20240315121500.5 http://pump/ /d/%s.txt 201 ws3.example %s 0.25" % (
                    name, user)
                b.publish("xs_" + carol, "v02.report.d", body,
                          dict(HEADERS, source=source, message="Downloaded"))
            b.wait_confirms(10)
        line = _readline(procs[-1], 30)
        logs = "".join("--- %s\n%s" % (f.name, f.read_text()) for f in tmp_path.glob("*.log"))
        assert "  %s@ws3.example  201 Downloaded  0.250s  http://pump//d/genuine.txt" % carol \
            in line, line + logs
        time.sleep(2)     # anything else routed to alice would show up by now
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    rest = procs[-1].stdout.read()
    # the report claiming to be mallory's reaches alice as what it is: carol's (the account
    # that published it); the one about alice2's data does not reach alice
    assert "  %s@ws3.example  201 Downloaded  0.250s  http://pump//d/forged.txt" % carol \
        in rest, rest
    assert "mallory" not in rest and "not-hers" not in rest, rest


def test_watchdog_loop_repairs(pump, home, tmp_path):
    write("audit.conf", open(os.path.join(paths.config_dir(), "audit.conf")).read()
          + "heartbeat 1\n")
    proc = _start("sr_police", ["--fix", "foreground"], home, tmp_path)
    try:
        junk = pump.api + "exchanges/%s/junk%s" % (pump.vhost, pump.uid)
        deadline = time.monotonic() + 20
        while pump.session.get(pump.api + "exchanges/%s/xpublic" % pump.vhost).status_code \
                != 200:                                # its first pass set the pump up
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        assert pump.session.put(junk, json={"type": "topic", "durable": True}).ok
        while pump.session.get(junk).status_code != 404:
            assert time.monotonic() < deadline, "the watchdog did not delete junk"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
    log = (tmp_path / "sr_police_foreground.log").read_text()
    assert "fixed    exchange 'junk%s': name does not start with 'x' -> deleted" % pump.uid \
        in log, log
