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

Reports: C rr_bob2xreport -> C:xreport -> (report shovel for cluster A -> xs_c_on_b)
B:xs_c_on_b -> peer shovel -> B:xreport -> ("A ... xs_b_on_a") A:xs_b_on_a -> peer shovel
-> A:xreport -> rr_xreport_route -> A:xr_alice, where alice reads them.

The chain (Pump, Chain, build_chain...) is in routingkit.py, shared with bench/chain.py.
"""

import hashlib
import time

import amqp
import pytest

from sarra import checksum
from tests.integration.routingkit import UserTap, build_chain, start_chain
from tests.integration.senderkit import Runner, make_files, md5, sr_post, wait_for


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
