"""Three pumps linked from their declarations alone (links.conf), issue 21:

    A (alice, source)  <->  B (eve, source)  <->  C (bob, subscriber)

Each admin writes admin.conf, links.conf and credentials.conf; `sr_police setup` makes the
users, exchanges and the ln_* / rr_* configurations, `sr start` runs them. alice posts 20
files for C (two in parts, the parts announced in reverse order) and one for B, then
removes one: bob gets every file whole (on_file once each) and the removal; the one for B
stops at B; every consumer's report (one per message it handled: a file in N parts gives N)
comes home to xr_alice on A exactly once, eve and bob see none of alice's reports; alice's
`sr_report summary` shows the 20 files delivered. The median report latency, the report
counts and the configuration lines the admins wrote are printed.

Each pump has its own vhost, HOME, feeder, data tree and HTTP server, on the broker given
for it: :class:`Net` takes one broker per pump, the same one three times
(tests/integration/test_pump_links.py, three vhosts of the local RabbitMQ) or three
standalone RabbitMQ brokers (tests/cluster/test_pump_links_brokers.py), and
:func:`three_linked_pumps` runs the scenario on it.
"""

import hashlib
import json
import os
import re
import secrets
import statistics
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import amqp
import psutil
import pytest

from sarra.broker.admin import ManagementAPI
from tests.conftest import amqp_connect, command_argv, command_env, parse_broker_url
from tests.integration import servers

NAMES = ("A", "B", "C")
PART = re.compile(r"(\.[0-9]+){4}\.[a-z0-9]+\.Part$")     # a block's part file suffix
BLOCK = 4096


class LinkedPump:
    """One pump: a vhost on its broker (``broker``: its administrator's URL; ``mgmt``: its
    management API, None for the default), a HOME with the admin's three files, a data
    tree served by HTTP."""

    def __init__(self, net, name, broker, mgmt=None):
        self.net, self.name = net, name
        self.host, self.port, self.admin, self.admin_pw, _ = parse_broker_url(broker)
        self.mgmt = mgmt
        self.api = ManagementAPI(mgmt or "http://%s:15672/" % self.host, self.admin,
                                 self.admin_pw)
        self.cluster = "p%s%s" % (name.lower(), net.uid)
        self.vhost = "sarra_ln_%s_%s" % (net.uid, name)
        self.top = net.tmp / name
        self.home = self.top / "home"
        self.cfg = self.home / ".config" / "sarra"
        self.tree = self.top / "tree"
        for d in (self.cfg, self.tree, self.home / ".cache"):
            d.mkdir(parents=True, exist_ok=True)
        self.env = command_env({"HOME": str(self.home),
                                "XDG_CONFIG_HOME": str(self.home / ".config"),
                                "XDG_CACHE_HOME": str(self.home / ".cache"),
                                "XDG_DATA_HOME": str(self.home / ".local" / "share")})
        self.http = servers.start_http(self.tree, self.top)
        self.feeder = net.user("feeder" + name.lower())
        self.lines = 0            # configuration lines the admin wrote
        self.cred_lines = 0       # ... and credentials.conf lines

    def url(self, user, password=False):
        pw = self.admin_pw if user == self.admin else self.net.pw.get(user)
        cred = "%s:%s" % (user, pw) if password else user
        return "amqp://%s@%s:%d/%s" % (cred, self.host, self.port,
                                       urllib.parse.quote(self.vhost, safe=""))

    def write(self, rel, lines, mode=0o644, count=True):
        path = self.cfg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
        path.chmod(mode)
        if count and rel == "credentials.conf":
            self.cred_lines += len(lines)
        elif count:
            self.lines += len(lines)

    def declare(self, roles, links, accounts):
        """admin.conf, links.conf, credentials.conf: what an admin writes for a link."""
        self.write("admin.conf", ["admin %s" % self.url(self.admin), "feeder %s" % self.url(
            self.feeder)] + ["declare %s %s" % (r, u) for u, r in roles.items()])
        self.write("links.conf", ["cluster %s" % self.cluster,
                                  "post_base_dir %s" % self.tree,
                                  "post_base_url http://%s:%d/" % (self.http.host,
                                                                  self.http.port)] + links)
        if self.mgmt:              # only where the broker's API is not the default
            self.write("audit.conf", ["management_url %s" % self.mgmt], count=False)
        # passwords: the admin's, the feeder's, the users', the neighbours' accounts
        # here, and this pump's accounts on its neighbours
        users = [self.admin, self.feeder] + list(roles) + [p.cluster for p in accounts]
        creds = [self.url(u, True) for u in users]
        creds += [p.url(self.cluster, True) for p in accounts]
        self.write("credentials.conf", creds, 0o600)

    def run(self, *argv, timeout=120):
        return subprocess.run(command_argv(argv[0]) + [str(a) for a in argv[1:]],
                              capture_output=True, text=True, timeout=timeout, env=self.env,
                              cwd=str(self.home), stdin=subprocess.DEVNULL)

    def log(self, pattern="*"):
        d = self.home / ".cache" / "sarra" / "log"
        return "".join(p.read_text(errors="replace") for p in sorted(d.glob(pattern + ".log")))

    def close(self):
        self.run("sr", "stop", timeout=60)
        self.http.stop()

    def forget(self):
        """Its users and vhost off its broker (after every pump stopped)."""
        for u in self.net.users + [p.cluster for p in self.net.pumps.values()]:
            try:
                self.api.delete_user(u)
            except Exception:
                pass
        try:
            self.api.delete_vhost(self.vhost)
        except Exception:
            pass
        self.api.close()


class Net:
    """The three pumps; ``brokers``: (administrator's broker URL, management API URL or
    None) of A, B and C (one broker three times: three vhosts of it)."""

    def __init__(self, tmp, uid, brokers, label="three vhosts of one broker"):
        self.tmp, self.uid, self.label = Path(tmp), uid, label
        self.pw = {}
        self.users = []
        self.pumps = {}
        for n, (url, mgmt) in zip(NAMES, brokers):
            self.pumps[n] = LinkedPump(self, n, url, mgmt)

    def user(self, who):
        name = who + self.uid
        if name not in self.pw:
            self.pw[name] = secrets.token_hex(8)
            self.users.append(name)
        return name

    def close(self):
        for p in self.pumps.values():
            p.close()
        for p in self.pumps.values():
            p.forget()


class Tap:
    """A user's own queue on an exchange, read with no_ack; arrival times kept."""

    def __init__(self, url, exchange, user):
        self.conn = amqp_connect(url)
        self.ch = self.conn.channel()
        self.queue = "q_%s.tap%s" % (user, secrets.token_hex(3))
        self.ch.queue_declare(self.queue, durable=False, auto_delete=True)
        self.ch.queue_bind(self.queue, exchange, "#")
        self.got = []            # (arrival time, body, headers)
        self.keys = []           # their routing keys
        self.thread = None

    def follow(self):
        """Read in a thread of its own from now on (arrival times as they happen): poll()
        then returns what it read."""
        self.stop = threading.Event()

        def run():
            while not self.stop.is_set():
                self._read()
                self.stop.wait(0.005)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def poll(self):
        if self.thread is not None:
            return list(self.got)
        return self._read()

    def _read(self):
        while True:
            m = self.ch.basic_get(self.queue, no_ack=True)
            if m is None:
                return self.got
            body = m.body.decode() if isinstance(m.body, bytes) else m.body
            headers = {k: (v.decode() if isinstance(v, bytes) else v)
                       for k, v in (m.properties.get("application_headers") or {}).items()}
            self.got.append((time.time(), body, headers))
            self.keys.append(m.delivery_info["routing_key"])

    def close(self):
        if self.thread is not None:
            self.stop.set()
            self.thread.join(5)
        try:
            self.ch.queue_delete(self.queue)
            self.conn.close()
        except Exception:
            pass


def make(root, rel, size):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    p.write_bytes(data)
    return hashlib.md5(data).hexdigest()



def three_linked_pumps(net, tmp_path):
    """The scenario (see the module docstring) on ``net``; its figures, also printed."""
    t0 = time.monotonic()
    A, B, C = (net.pumps[n] for n in NAMES)
    alice, eve, bob = net.user("alice"), net.user("eve"), net.user("bob")
    for p in (A, B, C):
        net.pw.setdefault(p.cluster, secrets.token_hex(8))   # a pump's account elsewhere
    A.declare({alice: "source"}, ["link %s %s behind %s" % (B.cluster, B.url(A.cluster),
                                                            C.cluster)], [B])
    B.declare({eve: "source"}, ["link %s %s" % (A.cluster, A.url(B.cluster)),
                                "link %s %s" % (C.cluster, C.url(B.cluster))], [A, C])
    C.declare({bob: "subscriber"}, ["link %s %s behind %s" % (B.cluster, B.url(C.cluster),
                                                              A.cluster)], [B])
    for p in (A, B, C):
        r = p.run("sr_police", "setup")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ln_from_" in r.stdout
        r = p.run("sr_police", "setup")                     # a second run changes nothing
        assert r.returncode == 0 and "no change" in r.stdout, r.stdout + r.stderr
    assert sorted(os.listdir(B.cfg / "sarra")) == sorted(
        ["ln_ingest.conf", "ln_from_%s.conf" % A.cluster, "ln_from_%s.conf" % C.cluster])
    # bob subscribes on C (his own configuration, on his own machine in real life)
    bob_dir = tmp_path / "bob"
    C.write("subscribe/bob.conf", ["broker %s" % C.url(bob), "subtopic #",
                                   "directory %s" % bob_dir, "mirror on", "accept .*"],
            count=False)
    # alice follows her files with sr_report on A (its summary store, `sr_report summary`)
    A.write("report/mine.conf", ["broker %s" % A.url(alice)], count=False)
    alice_src = tmp_path / "alice"
    alice_src.mkdir()
    alice_http = servers.start_http(alice_src, tmp_path)
    alice_reports = Tap(A.url(alice, True), "xr_" + alice, alice).follow()
    eve_reports = Tap(B.url(eve, True), "xr_" + eve, eve)
    bob_sees = Tap(C.url(bob, True), "xs_" + bob, bob)
    try:
        for p in (A, B, C):
            r = p.run("sr", "start")
            assert r.returncode == 0, r.stdout + r.stderr
        # every consumer's queue exists and is consumed before alice posts
        configs = sum(len(list(p.cfg.glob("*/*.conf"))) for p in (A, B, C))
        deadline = time.monotonic() + 40

        def consumed():
            return [q["name"] for p in (A, B, C) for q in p.api.queues(p.vhost)
                    if q.get("consumers")]
        while len(consumed()) < configs and time.monotonic() < deadline:
            time.sleep(0.3)
        assert len(consumed()) >= configs, (configs, consumed())

        files = {"d/f%02d.txt" % i: make(alice_src, "d/f%02d.txt" % i, 100 + i)
                 for i in range(18)}
        parted = {"big/p%d.bin" % i: make(alice_src, "big/p%d.bin" % i, 3 * BLOCK + 100)
                  for i in range(2)}
        files.update(parted)
        only_b = {"b/only.txt": make(alice_src, "b/only.txt", 50)}

        def post(paths, to, *extra, exchange="xs_" + alice):
            r = A.run("sr_post", "--post_broker", A.url(alice), "--post_exchange", exchange,
                      "--post_base_url", "http://%s:%d/" % (alice_http.host, alice_http.port),
                      "--post_base_dir", alice_src, "--to", to, "--declare_exchange", "off",
                      *extra, *[alice_src / x for x in paths])
            assert r.returncode == 0, r.stdout + r.stderr

        post(list(only_b), B.cluster)
        post([x for x in files if x not in parted], C.cluster)
        # the parted files: announced on a staging exchange of alice's, then re-sent to
        # xs_alice last part first
        stage = "xs_%s_stage" % alice
        A.api.put_exchange(A.vhost, stage)
        st = Tap(A.url(alice, True), stage, alice)
        post(list(parted), C.cluster, "--blocksize", str(BLOCK), exchange=stage)
        deadline = time.monotonic() + 10
        while len(st.poll()) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(st.got) == 8, st.got
        with amqp_connect(A.url(alice, True)) as conn:
            ch = conn.channel()
            for (_, body, headers), key in reversed(list(zip(st.got, st.keys))):
                ch.basic_publish(amqp.Message(body, application_headers=headers,
                                              content_type="text/plain"),
                                 exchange="xs_" + alice, routing_key=key)
        st.close()

        day = time.strftime("%Y%m%d", time.gmtime())
        rel = {x: "%s/%s/%s" % (day, alice, x) for x in list(files) + list(only_b)}
        landed, reported = {}, {}

        def watch():
            for x in files:
                p = bob_dir / rel[x]
                if x not in landed and p.exists() and p.stat().st_size == \
                        (alice_src / x).stat().st_size:
                    if hashlib.md5(p.read_bytes()).hexdigest() == files[x]:
                        landed[x] = p.stat().st_ctime       # when bob's copy was made
            for at, body, h in alice_reports.poll():
                f = body.split()
                if f[5] == bob and f[3] == "201":
                    x = PART.sub("", f[2].lstrip("/").split("/", 2)[2])
                    reported[x] = at          # a parted file: its last part's

        deadline = time.monotonic() + 40
        while (len(landed) < len(files) or len(reported) < len(files)) and \
                time.monotonic() < deadline:
            watch()
            time.sleep(0.02)
        assert len(landed) == len(files), (sorted(set(files) - set(landed)), C.log())
        assert len(reported) == len(files), sorted(set(files) - set(reported))
        # the pumps passed the parts along as parts: none holds the whole file
        for p in (A, B, C):
            for x in parted:
                assert not (p.tree / rel[x]).exists(), (p.name, x)
        # on_file once per file at bob's
        log = C.log("sr_subscribe_bob_*")
        for x in files:
            assert log.count("downloaded %s\n" % (bob_dir / rel[x])) == 1, (x, log[-3000:])
        # for B only: at B, not further
        x = "b/only.txt"
        assert (B.tree / rel[x]).exists() and not (C.tree / rel[x]).exists()
        assert not (bob_dir / rel[x]).exists()

        # removal: A -> B -> C -> bob
        gone = "d/f00.txt"
        (alice_src / gone).unlink()
        post([gone], C.cluster, "--events", "create,delete,link,modify")
        deadline = time.monotonic() + 20
        while (bob_dir / rel[gone]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (bob_dir / rel[gone]).exists()
        for p in (A, B, C):
            assert not (p.tree / rel[gone]).exists(), p.name
        # every consumer reports each message it handled (a file in N parts: N reports,
        # as v2): A's ln_ingest (as A's feeder) and B's ln_from_A (as B's account on A)
        # handled the 20 files' messages, the one for B and the removal; C's ln_from_B (as
        # C's account on B) and bob the 20 files' messages and the removal
        parts = -(-(3 * BLOCK + 100) // BLOCK)
        msgs = len(files) - len(parted) + len(parted) * parts
        expected = {A.feeder: msgs + 2, B.cluster: msgs + 2, C.cluster: msgs + 1,
                    bob: msgs + 1}

        def counts():
            return Counter(b.split()[5] for _, b, _ in alice_reports.poll())
        deadline = time.monotonic() + 20
        while sum(counts().values()) < sum(expected.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)             # late duplicates would show by now
        assert counts() == expected, (counts(), expected)
        assert all(b.split()[3] == "201" for _, b, _ in alice_reports.poll())
        mine = [(b, h) for _, b, h in alice_reports.poll() if b.split()[5] == bob]
        # bob's reports: one per file, one per part of a parted file, one for the removal
        keys = [(b.split()[2], h.get("parts"), b.split()[3], h.get("message")) for b, h in mine]
        assert len(keys) == len(set(keys)), "a report came twice"
        assert len(mine) == 18 + 2 * parts + 1, [b for b, _ in mine]
        assert all(h["source"] == alice and h["from_cluster"] == A.cluster for _, h in mine)
        assert all(b.split()[3] == "201" for b, _ in mine)
        # every report alice got is about her own data, each once
        every = [(b.split()[2:6], h.get("parts"), h.get("message")) for _, b, h in
                 alice_reports.got]
        assert all(h["source"] == alice for _, _, h in alice_reports.got)
        assert len({repr(e) for e in every}) == len(every)
        # nobody else hears of them
        assert not eve_reports.poll()
        assert all(b.split()[5] == bob for _, b, _ in bob_sees.poll())
        with pytest.raises(amqp.exceptions.AccessRefused):
            Tap(C.url(bob, True), "xreport", bob)
        lat = [reported[x] - landed[x] for x in files]
        figures = {"config_lines": sum(p.lines for p in (A, B, C)),
                   "credentials_lines": sum(p.cred_lines for p in (A, B, C)),
                   "median_latency": statistics.median(lat), "max_latency": max(lat),
                   "reports": dict(counts())}
        print("\nlinked pumps (%s): %d configuration lines (+ %d credentials.conf lines), "
              "median report latency %.3f s (max %.3f s); alice's reports: %d (%s), %.1f s "
              "in all" % (net.label, figures["config_lines"], figures["credentials_lines"],
                          figures["median_latency"], figures["max_latency"],
                          sum(expected.values()), ", ".join(
                              "%s %d" % (who, n) for who, n in (
                                  ("A's ln_ingest", expected[A.feeder]),
                                  ("B's ln_from_A", expected[B.cluster]),
                                  ("C's ln_from_B", expected[C.cluster]), ("bob", expected[bob]))),
                          time.monotonic() - t0))
        assert statistics.median(lat) < 2.0

        # alice's sr_report summary says the same: each file (a file in parts is one
        # file) delivered to bob, the removal too, nothing pending
        r = A.run("sr_report", "summary", "mine", "--json", timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        rows = json.loads(r.stdout)["files"]
        to_bob = {}
        for row in rows:
            x = row["file"].lstrip("/")
            x = x.split("/", 2)[2] if x.startswith(day + "/") else x
            assert not row["pending"] and not row["refused"], row
            if any(d["consumer"].split("@")[0] == bob for d in row["delivered"]):
                to_bob.setdefault(x, []).append(row)
        assert sorted(to_bob) == sorted(files), rows
        assert [len(to_bob[x]) for x in files] == [2 if x == gone else 1 for x in files]
        # the 20 files (and the removal): delivered by all four consumers, every block
        everyone = sorted([A.feeder, B.cluster, C.cluster, bob])
        for x in files:
            for row in to_bob[x]:
                assert row["expected"] == 4 and sorted(
                    d["consumer"].split("@")[0] for d in row["delivered"]) == everyone, row
        # as a person reads it: the 20 files delivered 4/4, the one for B 2/2 (A and B), the
        # removal a line of its own
        r = A.run("sr_report", "summary", "mine", timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        whole = re.findall(r"^\S+ \S+  delivered 4/4  /(\S+)$", r.stdout, re.M)
        assert sorted(set(whole)) == sorted(files) and len(whole) == len(files) + 1, r.stdout
        assert re.search(r"^\S+ \S+  delivered 2/2  /b/only\.txt$", r.stdout, re.M), r.stdout
        assert "\n22 file(s): 22 delivered to every consumer expected, 0 refused by some, " \
            "0 pending\n" in r.stdout, r.stdout

        # C leaves B's side: its admin drops the link; setup stops and deletes its configs
        pids = [int(f.read_text().split()[0]) for f in
                (C.home / ".cache" / "sarra").glob("*/ln_*/*.pid")]
        assert len(pids) == 3, pids
        C.write("links.conf", ["cluster %s" % C.cluster, "post_base_dir %s" % C.tree,
                               "post_base_url http://%s:%d/" % (C.http.host, C.http.port)],
                count=False)
        r = C.run("sr_police", "setup")
        assert r.stdout.count("-> stopped and deleted") == 3, r.stdout + r.stderr
        assert not list(C.cfg.glob("*/ln_*.conf"))
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in pids)
        return figures
    finally:
        for t in (alice_reports, eve_reports, bob_sees):
            t.close()
        alice_http.stop()
