"""Issue 22: alice on pump A declares bob the only reader of her data/ files; the data
goes A -> B -> C (three vhosts of the local broker, routingkit.py). bob gets them on C;
eve, a user of B and of C, sees no announcement of them; eve's forged declaration changes
nothing; once alice withdraws the restriction, eve sees the files posted afterwards.

    alice: sr_readers data/ bob --> A:xs_alice
    A: sr_sarra (ingest, downstream_accounts b_on_a) --> A:xp_b_on_a (declaration, data/)
    B: sr_sarra (account b_on_a on A; downstream_accounts c_on_b) --> B:xp_c_on_b
    C: sr_sarra (account c_on_b on B) --> C:xp_bob ; bob's sr_subscribe binds C:xp_bob
"""

import json
import os
from pathlib import Path

import amqp
import pytest

from tests.integration.routingkit import Chain, UserTap
from tests.integration.senderkit import Runner, make_files, md5, sr_post, wait_for

BIND_PRIVATE = """
    subtopic #
    exchange %s
    topic_prefix v02.adm
    subtopic #
    topic_prefix v02.post
    subtopic #
"""


@pytest.fixture
def runner(home, tmp_path):
    r = Runner(home, tmp_path)
    yield r
    r.stop_all()


@pytest.fixture
def chain(runner, uid, tmp_path, broker_url):
    c = Chain(runner, uid, tmp_path, broker_url)
    c.add_user("A", "alice", "source")
    c.add_user("A", "b_on_a", "subscriber")
    c.add_user("B", "eve", "source")
    c.add_user("B", "c_on_b", "subscriber")
    c.add_user("C", "bob", "subscriber")
    c.add_user("C", "eve", "subscriber")
    c.build()
    for p in c.pumps.values():          # sr_police makes them: xp_<user> of every user
        for user, role in set(p.users.values()):
            c.api.put_exchange(p.vhost, "xp_" + user)
    try:
        yield c
    finally:
        c.close()


def rules(runner, config):
    found = [str(p) for p in Path(runner.home).rglob("readers.json")
             if p.parent.name == config and p.parent.parent.name == "sarra"]
    if not found:
        return {}
    with open(found[0]) as f:
        return json.load(f)


def start(chain, bob_dir):
    A, B, C = (chain.pumps[n] for n in "ABC")
    alice, eve = A.user("alice"), B.user("eve")
    chain.sarra("A_ingest", "A", A.url(), exchange="xs_" + alice, gateway_for="B,C",
                extra="source_from_exchange on\nfetch_schemes file\nbase_dir %s\n"
                      "downstream_accounts %s\ntopic_prefix v02.adm\nsubtopic #\n"
                      "topic_prefix v02.post\nsubtopic #" % (chain.tmp / "alice",
                                                               A.user("b_on_a")))
    chain.sarra("B_ingest", "B", B.url(), exchange="xs_" + eve, gateway_for="C",
                extra="source_from_exchange on\nfetch_schemes file\nbase_dir %s\n"
                      "downstream_accounts %s\ntopic_prefix v02.adm\nsubtopic #\n"
                      "topic_prefix v02.post\nsubtopic #" % (chain.tmp / "eve",
                                                               B.user("c_on_b")))
    chain.sarra("B_from_A", "B", A.url("b_on_a"), gateway_for="C",
                extra="downstream_accounts %s\n%s" % (
                    B.user("c_on_b"), BIND_PRIVATE % ("xp_" + A.user("b_on_a"))))
    chain.sarra("C_from_B", "C", B.url("c_on_b"),
                extra=BIND_PRIVATE % ("xp_" + B.user("c_on_b")))
    chain.runner.config("subscribe", "bob_C", """
        broker %s
        exchange xpublic
        subtopic #
        exchange xp_%s
        subtopic #
        expire 5m
        mirror on
        directory %s
        heartbeat 5
        accept .*
    """ % (C.url("bob"), C.user("bob"), bob_dir))
    shovels = (chain.local_report_shovels("C", "C_")
               + chain.local_report_shovels("A", "A_", peers=("b_on_a",))
               + chain.report_routes("C", "B", "c_on_b", "C_")
               + chain.report_routes("B", "A", "b_on_a", "B_"))
    chain.start("sarra", ["A_ingest", "B_ingest", "B_from_A", "C_from_B"])
    chain.start("subscribe", ["bob_C"])
    chain.start("shovel", shovels)


def test_private_data_across_three_pumps(chain, runner, tmp_path):
    A, B, C = (chain.pumps[n] for n in "ABC")
    alice, bob, eve = A.user("alice"), C.user("bob"), B.user("eve")
    src, bob_dir = tmp_path / "alice", tmp_path / "bob"
    (tmp_path / "eve").mkdir()
    src.mkdir()
    bob_dir.mkdir()
    start(chain, bob_dir)

    def readers(*args):
        r = runner.run("sr_readers", *args)
        assert r.returncode == 0, r.stdout + r.stderr
    readers("--post_broker", A.url("alice"), "--post_exchange", "xs_" + alice, "--to", "C",
            "data/", bob)
    wait_for(lambda: rules(runner, "C_from_B").get(alice), 60, "the declaration on C")
    for config in ("A_ingest", "B_from_A", "C_from_B"):
        assert rules(runner, config)[alice]["data/"]["readers"] == [bob], config

    # eve cannot bind where the restricted posts go, whatever the subtopic
    for pump, account in ((B, "c_on_b"), (C, "bob")):
        with pytest.raises(amqp.exceptions.AccessRefused):
            UserTap(pump.url("eve"), "xp_" + pump.user(account))
    taps = [UserTap(B.url("eve"), "xpublic"), UserTap(C.url("eve"), "xpublic")]
    alice_reports = UserTap(A.url("alice"), "xr_" + alice, ("v02.report.#",))
    try:
        post = lambda paths, *x: sr_post(runner, A.url("alice"), "xs_" + alice,
                                         "file:" + str(src), src, paths, "--to", "C",
                                         "--declare_exchange", "off", *x)
        files = make_files(src / "data", 10, prefix="s", subdirs=3)
        open_files = make_files(src / "pub", 1, prefix="p", subdirs=1)
        post([src / "data", src / "pub"])
        rels = ["data/" + r for r in files]
        pub = "pub/" + next(iter(open_files))
        wait_for(lambda: all((bob_dir / r).exists() for r in rels + [pub]), 60,
                 "bob's downloads on C")
        assert all(md5(bob_dir / r) == files[r.split("/", 1)[1]] for r in rels)
        # eve, on B and on C, sees the unrestricted neighbour and nothing of data/
        for tap in taps:
            seen = [b.split()[2] for _, b, _ in tap.get(1, timeout=30)]
            seen += [b.split()[2] for _, b, _ in tap.get(20, timeout=2)]
            assert "/" + pub in seen and not [s for s in seen if "data/" in s], seen
        # alice's reports: bob's downloads among them
        reports = alice_reports.get(40, timeout=20)
        by_bob = {b.split()[2] for _, b, _ in reports if b.split()[5] == bob}
        assert {"/" + r for r in rels} <= by_bob, reports

        # a forged declaration from eve (claiming to be alice) changes nothing
        r = runner.run("sr_readers", "--post_broker", B.url("eve"), "--post_exchange",
                       "xs_" + eve, "--source", alice, "--to", "C", "data/", eve)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "claims source" in runner.log("B_ingest"), 30, "eve's refusal")
        for config in ("B_from_A", "C_from_B", "B_ingest"):
            assert rules(runner, config).get(alice, {}).get("data/", {}).get(
                "readers", [bob]) == [bob], config

        # withdrawn: what alice posts afterwards is public again
        readers("--post_broker", A.url("alice"), "--post_exchange", "xs_" + alice, "--to",
                "C", "data/", "--withdraw")
        wait_for(lambda: not rules(runner, "C_from_B").get(alice), 60, "the withdrawal on C")
        late = make_files(src / "late", 2, prefix="l", subdirs=1)
        for rel in late:
            os.makedirs(src / "data" / "late", exist_ok=True)
            os.replace(src / "late" / rel, src / "data" / "late" / os.path.basename(rel))
        post([src / "data" / "late"])
        for tap in taps:
            seen = [b.split()[2] for _, b, _ in tap.get(2, timeout=30)]
            assert len(seen) == 2 and all(s.startswith("/data/late/") for s in seen), seen
    finally:
        for t in taps + [alice_reports]:
            t.close()
