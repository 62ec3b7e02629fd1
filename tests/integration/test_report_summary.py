"""sr_report summary against a whole pump (issue 21, item 4: where did my file go).

One pump (scripts/pump_demo.Pump: sr_police setup, report shovels, sr_sarra with
report_back on), carol's sr_subscribe, a second subscriber run by bob, and alice's
sr_report (no plugin: the summary store is fed by the report preset itself).

1. alice posts a.txt: the pump, carol and bob take it (delivered 3/3);
2. bob's subscriber is stopped; alice posts b.txt, which carol cannot write (a directory is
   in its place: refused, with her code and message), and c.txt: on both bob is pending
   (he reported on a.txt, within summary_window);
3. the summary's text lines and its JSON say the same, and survive a restart of sr_report.
"""

import json
import os
import time

import pytest

from tests.integration import pumpkit
from tests.integration.pumpkit import today

pytestmark = pytest.mark.broker


def start_with_bob_and_alices_sr_report(p):
    bob = p.users["bob"]
    p.bob_dst = os.path.join(p.top, "bob_dst")
    p.write("subscribe/bobfeed.conf",
            "broker amqp://%s@%s/%s\nexchange xpublic\nsubtopic #\ndirectory %s\n"
            "mirror on\naccept .*\n" % (bob, p.netloc, p.vhost, p.bob_dst))
    p.write("report/mine.conf", "broker amqp://%s@%s/%s\n" % (p.users["alice"], p.netloc,
                                                                p.vhost))
    p.start_pump()
    p.start("bobfeed", "sr_subscribe", "foreground", "bobfeed")
    p.start("report", "sr_report", "foreground", "mine")


@pytest.fixture(scope="module")
def pump(tmp_path_factory, broker_url):
    with pumpkit.running(tmp_path_factory, broker_url, start=start_with_bob_and_alices_sr_report,
                         consumers=["q_{bob}.sr_subscribe.bobfeed.",
                                    "q_{alice}.sr_report.mine."]) as p:
        yield p


def post(pump, name, data):
    path = os.path.join(pump.src["alice"], "obs", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    r = pump.post("alice", [path])
    assert r.returncode == 0, r.stdout + r.stderr


def summary(pump):
    r = pump.run("sr_report", "summary", "mine", "--json", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return {f["file"]: f for f in json.loads(r.stdout)["files"]}


def wait_summary(pump, pred, timeout=30):
    deadline = time.monotonic() + timeout
    rows = summary(pump)
    while not pred(rows) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = summary(pump)
    return rows


def who(items):
    return sorted(i["consumer"].split("@")[0] for i in items)


def test_delivered_refused_and_pending(pump):
    alice, bob, carol, feeder = (pump.users[r] for r in ("alice", "bob", "carol", "feeder"))
    post(pump, "a.txt", b"first\n")
    rows = wait_summary(pump, lambda r: len(r.get("/obs/a.txt", {}).get("delivered", [])) == 3)
    a = rows["/obs/a.txt"]
    assert who(a["delivered"]) == sorted([bob, carol, feeder]), (rows, pump.log_tail())
    assert a["expected"] == 3 and a["source"] == alice
    pump_at = "%s:%d" % (pump.http["pump"].host, pump.http["pump"].port)
    alice_at = "%s:%d" % (pump.http["alice"].host, pump.http["alice"].port)
    # where each took it from: the pump's own copy from alice's server, the others from
    # the pump
    assert {i["consumer"].split("@")[0]: i["pump"] for i in a["delivered"]} == {
        feeder: alice_at, carol: pump_at, bob: pump_at}

    pump.stop("bobfeed")
    # carol cannot write b.txt: a directory holds its place in her tree
    blocker = os.path.join(pump.dst, today(), alice, "obs", "b.txt")
    os.makedirs(os.path.join(blocker, "x"))
    post(pump, "b.txt", b"second\n")
    post(pump, "c.txt", b"third\n")
    rows = wait_summary(pump, lambda r: r.get("/obs/b.txt", {}).get("refused")
                        and len(r.get("/obs/c.txt", {}).get("delivered", [])) == 2)
    b, c = rows["/obs/b.txt"], rows["/obs/c.txt"]
    assert who(b["delivered"]) == [feeder] and who(b["refused"]) == [carol], \
        (rows, pump.log_tail())
    assert b["refused"][0]["code"] >= 400 and b["refused"][0]["message"]
    assert who(b["pending"]) == [bob] and b["expected"] == 3
    assert who(c["delivered"]) == sorted([carol, feeder]) and who(c["pending"]) == [bob]

    # the lines a person reads say the same
    r = pump.run("sr_report", "summary", "mine", timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4, r.stdout
    assert "  delivered 3/3  /obs/a.txt" in lines[0] and "pending" not in lines[0]
    ref = b["refused"][0]
    assert "  delivered 1/3  /obs/b.txt  refused: %s at %s (%03d %s)  pending: %s at %s" % (
        ref["consumer"], pump_at, ref["code"], ref["message"], b["pending"][0]["consumer"],
        pump_at) in lines[1], r.stdout
    assert "  delivered 2/3  /obs/c.txt  pending: %s" % c["pending"][0]["consumer"] in lines[2]
    assert lines[3] == ("3 file(s): 1 delivered to every consumer expected, 1 refused by "
                        "some, 2 pending")

    # sr_report stopped and started again: the same summary, from its journal
    pump.stop("report")
    pump.start("report", "sr_report", "foreground", "mine")
    again = summary(pump)
    for f in ("/obs/a.txt", "/obs/c.txt"):
        assert again[f] == rows[f]
    assert who(again["/obs/b.txt"]["refused"]) == [carol]
