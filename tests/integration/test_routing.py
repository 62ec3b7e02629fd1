"""Three pumps on the local broker: data routed by to_clusters, reports going home.

Each pump is a vhost of the local RabbitMQ (created through the management API, with its
users, permissions and exchanges, and deleted afterwards), with its own data tree served
by its own HTTP server:

    alice --sr_post to_clusters=C--> A:xs_alice
    A: sr_sarra (ingest, cluster A, gateway_for B,C) --> A:xpublic
    B: sr_sarra (account b_on_a on A, cluster B, gateway_for C) --> B:xpublic
    C: sr_sarra (account c_on_b on B, cluster C) --> C:xpublic
    bob (user of C): sr_subscribe C:xpublic, reports to C:xs_bob
    A: sr_sarra pulling B:xpublic back (a link that would loop without cluster_path)

Reports: C rr_bob2xreport -> C:xreport -> (report2clusters line "A ... xs_c_on_b")
B:xs_c_on_b -> peer shovel -> B:xreport -> ("A ... xs_b_on_a") A:xs_b_on_a -> peer shovel
-> A:xreport -> rr_xreport2alice -> A:xr_alice, where alice reads them.

The Chain class is also used by bench/chain.py.
"""

import hashlib
import os
import secrets
import time
import urllib.parse
from pathlib import Path

import amqp
import pytest

from sarra import checksum
from sarra.ops import audit
from sarra.flow import routing
from sarra.broker.admin import ManagementAPI
from tests.conftest import amqp_connect, parse_broker_url
from tests.integration import servers
from tests.integration.test_sender import Runner, make_files, md5, sr_post, wait_for


class Pump:
    def __init__(self, chain, name):
        self.chain, self.name = chain, name
        self.vhost = "sarra_rt_%s_%s" % (chain.uid, name)
        self.tree = chain.tmp / ("tree_" + name)
        self.tree.mkdir(parents=True, exist_ok=True)
        self.users = {}           # role name in the test -> (user, role)
        self.http = None

    def url(self, who="feeder"):
        """amqp URL of a user on this pump (feeder: the broker's admin user)."""
        c = self.chain
        if who == "feeder":
            user, pw = c.admin, c.admin_pw
        else:
            user = self.users[who][0]
            pw = c.passwords[user]
        return "amqp://%s:%s@%s:%d/%s" % (user, pw, c.host, c.port,
                                         urllib.parse.quote(self.vhost, safe=""))

    def user(self, who):
        return self.users[who][0]

    @property
    def http_url(self):
        return "http://127.0.0.1:%d/" % self.http.port


class Chain:
    """Pumps A, B, C (vhosts), their users, trees and HTTP servers; the component configs."""

    def __init__(self, runner, uid, tmp, broker_url, names=("A", "B", "C")):
        self.runner, self.uid, self.tmp = runner, uid, Path(tmp)
        host, port, admin, admin_pw, _ = parse_broker_url(broker_url)
        self.host, self.port, self.admin, self.admin_pw = host, port, admin, admin_pw
        mgmt = os.environ.get("SARRA_TEST_MGMT", "http://%s:15672/" % host)
        self.api = ManagementAPI(mgmt, admin, admin_pw)
        self.pumps = {n: Pump(self, n) for n in names}
        self.passwords = {}
        self.made_users = []

    # ------------------------------------------------------------------ set-up
    def add_user(self, pump, who, role):
        user = "%s%s" % (who, self.uid)
        self.pumps[pump].users[who] = (user, role)
        self.passwords[user] = secrets.token_hex(8)
        return user

    def build(self):
        for p in self.pumps.values():
            self.api.put_vhost(p.vhost)
            self.api.put_permission(p.vhost, self.admin, ".*", ".*", ".*")
            users = {u: r for u, r in p.users.values()}
            for user, role in users.items():
                if user not in self.made_users:
                    self.api.put_user(user, self.passwords[user])
                    self.made_users.append(user)
                self.api.put_permission(p.vhost, user, *audit.role_permissions(user, role, users))
            for x in ["xpublic", "xreport"] + ["xs_" + u for u in users] + \
                     ["xr_" + u for u, r in users.items() if r == "source"]:
                self.api.put_exchange(p.vhost, x)
            p.http = servers.start_http(p.tree, self.tmp)
        # passwords in credentials.conf: the configs name users only, as in production
        self.runner.credentials(*[p.url(who) for p in self.pumps.values()
                                  for who in ["feeder"] + list(p.users)])

    def close(self):
        self.runner.stop_all()
        for p in self.pumps.values():
            if p.http is not None:
                p.http.stop()
        for user in self.made_users:
            try:
                self.api.delete_user(user)
            except Exception:
                pass
        for p in self.pumps.values():
            try:
                self.api.delete_vhost(p.vhost)
            except Exception:
                pass
        self.api.close()

    # ------------------------------------------------------------------ configs
    def sarra(self, name, pump, broker, exchange="xpublic", gateway_for="", extra=""):
        p = self.pumps[pump]
        return self.runner.config("sarra", name, """
            broker %s
            exchange %s
            expire 5m
            cluster %s
            %s
            cluster_routing on
            directory %s
            post_base_dir %s
            post_base_url %s
            post_broker %s
            post_exchange xpublic
            heartbeat 5
            %s
            accept .*
        """ % (broker, exchange, pump, ("gateway_for %s" % gateway_for) if gateway_for else "",
               p.tree, p.tree, p.http_url, p.url(), extra))

    def report_routes(self, pump, upstream, account, prefix):
        """On pump: reports about data from the clusters upstream of it go to
        ``upstream`` (as ``account`` there), and the upstream pump takes them in."""
        p, up = self.pumps[pump], self.pumps[upstream]
        names = []
        origins = [n for n in self.pumps if n < pump]        # A < B < C: clusters upstream
        routes = [(o, up.url(account), "xs_" + up.user(account)) for o in origins]
        for name, text in routing.report_shovels(p.url(), pump, routes).items():
            self.runner.config("shovel", prefix + name, text)
            names.append(prefix + name)
        name, text = routing.peer_shovel(up.url(), upstream, up.user(account))
        self.runner.config("shovel", prefix + name, text)
        names.append(prefix + name)
        return names

    def local_report_shovels(self, pump, prefix, peers=()):
        """rr_<user>2xreport for each user, rr_xreport2<source> for each source (as
        sr_police writes them); not for the accounts of downstream pumps (peers)."""
        p = self.pumps[pump]
        names = []
        for who, (user, role) in p.users.items():
            if who in peers:
                continue
            n = "%srr_%s2xreport" % (prefix, user)
            self.runner.config("shovel", n, """
                broker %s
                exchange xs_%s
                topic_prefix v02.report
                subtopic #
                post_exchange xreport
                on_message msg_by_user
                msg_by_user %s
                report_back off
            """ % (p.url(), user, user))
            names.append(n)
            if role == "source":
                n = "%srr_xreport2%s" % (prefix, user)
                self.runner.config("shovel", n, """
                    broker %s
                    exchange xreport
                    topic_prefix v02.report
                    subtopic #
                    post_exchange xr_%s
                    on_message msg_by_source
                    msg_by_source %s
                    report_back off
                """ % (p.url(), user, user))
                names.append(n)
        return names

    def start(self, component, names):
        procs = [self.runner.start(component, n) for n in names]
        for n, p in zip(names, procs):
            self.runner.wait_consuming(p, n, timeout=60)
        return procs


class UserTap:
    """A queue q_<user>.tap<n> of a pump user, bound to an exchange, read with no_ack."""

    def __init__(self, url, exchange, keys=("#",)):
        self.conn = amqp_connect(url)
        try:
            self.ch = self.conn.channel()
            user = urllib.parse.unquote(urllib.parse.urlparse(url).username)
            self.queue = "q_%s.tap%s" % (user, secrets.token_hex(3))
            self.ch.queue_declare(self.queue, durable=False, auto_delete=True)
            for k in keys:
                self.ch.queue_bind(self.queue, exchange, k)
        except Exception:
            self.conn.close()
            raise

    def get(self, count, timeout=30.0):
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            m = self.ch.basic_get(self.queue, no_ack=True)
            if m is None:
                time.sleep(0.05)
                continue
            body = m.body.decode() if isinstance(m.body, bytes) else m.body
            headers = {k: (v.decode() if isinstance(v, bytes) else v)
                       for k, v in (m.properties.get("application_headers") or {}).items()}
            got.append((m.delivery_info["routing_key"], body, headers))
        return got

    def close(self):
        try:
            self.ch.queue_delete(self.queue)
            self.conn.close()
        except Exception:
            pass


def build_chain(runner, uid, tmp, broker_url):
    chain = Chain(runner, uid, tmp, broker_url)
    chain.add_user("A", "alice", "source")
    chain.add_user("A", "b_on_a", "subscriber")
    chain.add_user("B", "eve", "source")
    chain.add_user("B", "c_on_b", "subscriber")
    chain.add_user("C", "bob", "subscriber")
    chain.build()
    return chain


def start_chain(chain, bob_dir, back_link=True):
    """Every component of the three-pump chain, running; returns the names of the sarras."""
    A, B, C = (chain.pumps[n] for n in "ABC")
    sarras = ["A_ingest", "B_from_A", "C_from_B"]
    # alice posts file: URLs of tmp/alice: the pump takes them from there only
    chain.sarra("A_ingest", "A", A.url(), exchange="xs_" + A.user("alice"), gateway_for="B,C",
                extra="source_from_exchange on\nfetch_schemes http,https,file\n"
                      "base_dir %s" % (chain.tmp / "alice"))
    chain.sarra("B_from_A", "B", A.url("b_on_a"), gateway_for="C")
    chain.sarra("C_from_B", "C", B.url("c_on_b"))
    if back_link:
        chain.sarra("A_from_B", "A", B.url("feeder"), gateway_for="B,C", extra="log_reject on")
        sarras.append("A_from_B")
    chain.runner.config("subscribe", "bob_C", """
        broker %s
        exchange xpublic
        expire 5m
        mirror on
        directory %s
        heartbeat 5
        accept .*
    """ % (C.url("bob"), bob_dir))
    shovels = (chain.local_report_shovels("C", "C_")
               + chain.local_report_shovels("A", "A_", peers=("b_on_a",))
               + chain.report_routes("C", "B", "c_on_b", "C_")
               + chain.report_routes("B", "A", "b_on_a", "B_"))
    chain.start("sarra", sarras)
    chain.start("subscribe", ["bob_C"])
    chain.start("shovel", shovels)
    return sarras


# ------------------------------------------------------------------ fixtures

@pytest.fixture
def runner(home, tmp_path):
    r = Runner(home, tmp_path)
    yield r
    r.stop_all()


@pytest.fixture
def chain(runner, uid, tmp_path, broker_url):
    c = build_chain(runner, uid, tmp_path, broker_url)
    try:
        yield c
    finally:
        c.close()


# ------------------------------------------------------------------ tests

def test_three_pumps_route_report_and_remove(chain, runner, tmp_path):
    A, B, C = (chain.pumps[n] for n in "ABC")
    src, bob_dir = tmp_path / "alice", tmp_path / "bob"
    src.mkdir()
    bob_dir.mkdir()
    start_chain(chain, bob_dir)
    alice_reports = UserTap(A.url("alice"), "xr_" + A.user("alice"), ("v02.report.#",))
    eve_reports = UserTap(B.url("eve"), "xr_" + B.user("eve"), ("#",))
    a_public = UserTap(A.url(), "xpublic")
    try:
        post = lambda to, paths, *x: sr_post(runner, A.url("alice"), "xs_" + A.user("alice"),
                                              "file:" + str(src), src, paths, "--to", to,
                                                  "--declare_exchange", "off", *x)
        only_b = make_files(src / "onlyB", 1, prefix="b", subdirs=1)
        post("B", [src / "onlyB"])
        files = make_files(src / "data", 10, prefix="c", subdirs=3)
        post("C", [src / "data"])
        rels = ["data/" + r for r in files]

        def at(root, rel):
            return (root / rel).exists() and md5(root / rel) == files[rel.split("/", 1)[1]]
        wait_for(lambda: all(at(bob_dir, r) for r in rels), 60, "bob's downloads on C")
        for tree in (A.tree, B.tree, C.tree):
            assert all(at(tree, r) for r in rels), tree
        # meant for B: it stops there (C's sarra got it before the C files, FIFO)
        rel_b = "onlyB/" + next(iter(only_b))
        assert (A.tree / rel_b).exists() and (B.tree / rel_b).exists()
        assert not (C.tree / rel_b).exists() and not (bob_dir / rel_b).exists()

        # alice, on A, reads bob's 201 reports from C
        reports = alice_reports.get(10, timeout=60)
        assert len(reports) == 10, runner.log()
        for key, body, h in reports:
            f = body.split()
            assert f[3] == "201" and f[5] == C.user("bob"), body
            assert h["source"] == A.user("alice") and h["from_cluster"] == "A"
            assert h["to_clusters"] == "C" and h["cluster_path"] == "A,B,C"
            assert h["report_path"] == "B,A"
        assert sorted(b.split()[2] for _, b, _ in reports) == sorted("/" + r for r in rels)
        assert not alice_reports.get(1, timeout=1.0)            # each once
        # eve, a user of B, sees nothing of them
        assert not eve_reports.get(1, timeout=0.5)
        with pytest.raises(amqp.exceptions.AccessRefused):
            UserTap(B.url("eve"), "xreport")
        with pytest.raises(amqp.exceptions.AccessRefused):
            UserTap(B.url("eve"), "xs_" + B.user("c_on_b"))

        # the back link B -> A refused everything as already handled by A
        published = a_public.get(11, timeout=10)
        assert len(published) == 11 and not a_public.get(1, timeout=1.0)
        assert runner.log("A_from_B").count("loop avoided") >= 11, runner.log("A_from_B")

        # removal travels A -> B -> C -> bob
        gone = rels[:3]
        for r in gone:
            (src / r).unlink()
        post("C", [src / r for r in gone], "--events", "create,delete,link,modify")
        wait_for(lambda: not any((bob_dir / r).exists() for r in gone), 60, "removal at bob's")
        for tree in (A.tree, B.tree, C.tree):
            assert not any((tree / r).exists() for r in gone), tree
            assert all((tree / r).exists() for r in rels[3:])
    finally:
        for t in (alice_reports, eve_reports, a_public):
            t.close()


def test_newer_version_wins(runner, broker_url, uid, amqp_exchange, amqp_tap, tmp_path,
                            amqp_channel):
    """A post older than the copy already on the pump, or a removal older than it, arrives
    late: the pump keeps the newer copy (304)."""
    x_in = amqp_exchange("xs_guest_nw%s" % uid, durable=True)
    x_out = amqp_exchange("xs_guest_nwout%s" % uid)
    x_rep = amqp_exchange("xs_guest_nwrep%s" % uid)
    reports = amqp_tap(x_rep, ("v02.report.#",))
    tree, v1, v2 = tmp_path / "tree", tmp_path / "v1", tmp_path / "v2"
    for d in (tree, v1, v2):
        d.mkdir()
    (v1 / "data.txt").write_bytes(b"old version\n")
    (v2 / "data.txt").write_bytes(b"the newer version\n")
    runner.config("sarra", "nw", """
        broker %s
        exchange %s
        expire 5m
        directory %s
        post_base_url http://pump.invalid/
        post_exchange %s
        report_back on
        report_exchange %s
        accept .*
    """ % (broker_url, x_in, tree, x_out, x_rep))
    p = runner.start("sarra", "nw")
    runner.wait_consuming(p, "nw")
    t1, t2 = 1700000000.25, 1700000100.5
    from sarra.message import format_time

    def post(base, mtime, sumv, size, pubtime):
        amqp_channel.basic_publish(amqp.Message(
            "%s file:%s /data.txt" % (format_time(pubtime), base),
            application_headers={"sum": sumv, "parts": "1,%d,1,0,0" % size,
                                 "mtime": format_time(mtime), "atime": format_time(mtime)}),
            exchange=x_in, routing_key="v02.post")

    def md5sum(path):
        return "d," + hashlib.md5(path.read_bytes()).hexdigest()

    def code(n=1):
        got = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            got += reports.get(n - len(got), timeout=0.5)
        return [int(b.split()[3]) for _, b, _ in got]

    try:
        post(v2, t2, md5sum(v2 / "data.txt"), 18, time.time())
        assert code() == [201]
        post(v1, t1, md5sum(v1 / "data.txt"), 12, time.time())         # older, late
        assert code() == [304]
        assert (tree / "data.txt").read_bytes() == b"the newer version\n"
        removed = {"sum": "R," + checksum.name_sum("R", "data.txt")}
        amqp_channel.basic_publish(amqp.Message(
            "%s file:%s /data.txt" % (format_time(t2 - 50), v2),      # removed before t2
            application_headers=removed), exchange=x_in, routing_key="v02.post")
        assert code() == [304]
        assert (tree / "data.txt").exists()
        amqp_channel.basic_publish(amqp.Message(
            "%s file:%s /data.txt" % (format_time(time.time()), v2),
            application_headers=removed), exchange=x_in, routing_key="v02.post")
        assert code() == [201]
        assert not (tree / "data.txt").exists()
        assert "newer version is here" in runner.log("nw")
    finally:
        runner.stop(p)
        runner.run("sr_sarra", "cleanup", "nw")


def test_push_through_the_firewall(chain, runner, tmp_path, sftp_server):
    """alice cannot be reached by the pump: three sr_sender instances of hers push her
    files over sftp into the pump's incoming area and announce them on A:xs_alice; the
    pump's sarra copies them into its tree and announces them on A:xpublic."""
    A = chain.pumps["A"]
    alice = A.user("alice")
    chain.api.put_exchange(A.vhost, "xs_%s_out" % alice)
    src = tmp_path / "alice"
    src.mkdir()
    files = make_files(src, 30, prefix="p", subdirs=5)
    host = "%s@%s:%d" % (sftp_server.user, sftp_server.host, sftp_server.port)
    runner.credentials("sftp://%s ssh_keyfile=%s" % (host, sftp_server.keyfile))
    incoming = "incoming/%s" % alice
    runner.config("sender", "to_pump", """
        broker %s
        exchange xs_%s_out
        expire 5m
        instances 3
        prefetch 4
        destination sftp://%s/
        directory %s
        base_dir %s
        post_broker %s
        post_exchange xs_%s
        post_base_url file:%s
        declare_exchange off
        heartbeat 5
        accept .*
    """ % (A.url("alice"), alice, host, incoming, src, A.url("alice"), alice, sftp_server.root))
    # the pump takes file: URLs from its sources only when told, and only below base_dir
    chain.sarra("A_ingest", "A", A.url(), exchange="xs_" + alice,
                extra="source_from_exchange on\nfetch_schemes http,https,sftp,ftp,ftps,file\n"
                      "base_dir %s" % sftp_server.root)
    public = UserTap(A.url(), "xpublic")
    try:
        chain.start("sarra", ["A_ingest"])
        r = runner.run("sr_sender", "setup", "to_pump")
        assert r.returncode == 0, r.stdout + r.stderr
        sr_post(runner, A.url("alice"), "xs_%s_out" % alice, "http://alice-laptop.invalid/",
                src, [src], "--to", "A", "--declare_exchange", "off")
        r = runner.run("sr_sender", "start", "to_pump")
        assert r.returncode == 0 and "started 3 instance" in r.stdout, r.stdout + r.stderr
        wait_for(lambda: all((A.tree / incoming / rel).exists() for rel in files), 60,
                 "the pushed files in pump A's tree")
        for rel, digest in files.items():
            assert md5(A.tree / incoming / rel) == digest
            assert md5(sftp_server.root / incoming / rel) == digest
        posts = public.get(30, timeout=30)
        assert len(posts) == 30
        for _, body, h in posts:
            assert body.split()[1] == A.http_url and h["source"] == alice
            assert h["from_cluster"] == "A" and h["cluster_path"] == "A"
        logs = sorted((runner.home / ".cache" / "sarra" / "log").glob("sr_sender_to_pump_*.log"))
        assert len(logs) == 3
        busy = [lg for lg in logs if "downloaded " in lg.read_text()]
        assert len(busy) >= 2, "the instances did not share the work"
    finally:
        runner.run("sr_sender", "stop", "to_pump")
        public.close()
