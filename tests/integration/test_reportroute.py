"""Report routing at one read per report (issue 20): rr_xreport_route on a whole pump.

One pump (scripts/pump_demo.Pump: sr_police setup with report_daemons on; two sources,
alice and bob, and carol subscribing), its processes running. Both sources post files;
each source's xr_ exchange gets the reports about its own files only (the pump's sr_sarra
and carol's, one each per file), and the routing shovels that read xreport received each
report once in all (one per source before: each report read twice here). Then reports
published straight on xreport with a source that is not one (unknown, '#', '/', '*',
none) land on no source's exchange, and the routing still passes a good one after them.
"""

import glob
import json
import os
import time

import pytest

from sarra.broker.client import Broker
from tests.integration import pumpkit
from tests.integration.pumpkit import today


@pytest.fixture(scope="module")
def pump(tmp_path_factory, broker_url):
    with pumpkit.running(tmp_path_factory, broker_url, name="rroute") as p:
        p.taps = {role: p.report_tap(role) for role in ("alice", "bob")}
        p.xreport = pumpkit.admin_tap(p, "xreport")
        yield p
        for t in p.taps.values():
            t.close()
        p.xreport[0].close()


def routing_reads(pump) -> int:
    """Messages received, in all, by the shovels reading xreport for the sources."""
    n = 0
    for name in pump.rr_shovels():
        if not name.startswith("rr_xreport"):
            continue
        for path in glob.glob(os.path.join(pump.home, ".cache", "sarra", "**",
                                           "sr_shovel_%s_*.stats" % name), recursive=True):
            try:
                with open(path) as f:
                    n += int(json.load(f).get("received", 0))
            except (OSError, ValueError):
                pass
    return n


def post_files(pump, role, n):
    files = pump.make_files(role, n, size=256, sub="rr")
    r = pump.post(role, [os.path.join(pump.src[role], rel) for rel in files])
    assert r.returncode == 0, r.stdout + r.stderr
    return {os.path.join(today(), pump.users[role], rel) for rel in files}


def sources_of(messages):
    return {h.get("source") for _, _, h in messages}


def test_each_source_gets_its_own_reports_read_once(pump):
    assert [n for n in pump.rr_shovels() if n.startswith("rr_xreport")] == ["rr_xreport_route"]
    alice, bob = pump.users["alice"], pump.users["bob"]
    want = {alice: post_files(pump, "alice", 3), bob: post_files(pump, "bob", 2)}
    assert pump.wait_files(want[alice] | want[bob], 30) == 5, pump.log_tail()
    # each file: a report from the pump's sr_sarra (report_back on) and one from carol
    got = {u: pump.taps[r].wait(lambda m, u=u: len(m) >= 2 * len(want[u]), 30)
           for r, u in (("alice", alice), ("bob", bob))}
    for user, msgs in got.items():
        assert len(msgs) == 2 * len(want[user]), msgs
        assert sources_of(msgs) == {user}
        # sr_sarra's names the source's relpath, carol's the pump's: both end the same
        assert sorted(os.path.basename(m[1].split()[2]) for m in msgs) == sorted(
            2 * [os.path.basename(rel) for rel in want[user]])
    on_xreport = pump.xreport[1](timeout=10, want=10, drain=True)
    assert len(on_xreport) == 10
    deadline = time.monotonic() + 15       # stats files: rewritten every 2 s when busy
    while routing_reads(pump) < len(on_xreport) and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(2.5)                         # a second reader would have shown by now
    assert routing_reads(pump) == len(on_xreport)


def test_a_report_naming_no_source_goes_nowhere(pump):
    bob = pump.users["bob"]
    for t in pump.taps.values():
        t.messages.clear()
    rel = "/%s/%s/rr/f00000.bin" % (today(), bob)
    with Broker(pump.url("feeder"), reconnect=False) as b:
        for source in ("nobody", "#", "%s/../%s" % (bob, pump.users["alice"]), "*", None,
                       "", bob + ".x", bob):     # the last one, good, comes after them
            headers = {"sum": "d,d41d8cd98f00b204e9800998ecf8427e", "parts": "1,0,1,0,0"}
            if source is not None:
                headers["source"] = source
            b.publish("xreport", "v02.report.%s.x" % today(),
                      "20261205120000.25 %s %s 201 host.example.org %s 0.5" % (
                          pump.http_url("pump"), rel, pump.users["carol"]), headers)
        b.wait_confirms(10)
    got = pump.taps["bob"].wait(lambda m: len(m) >= 1, 20)
    time.sleep(1.0)
    assert [h.get("source") for _, _, h in pump.taps["bob"].poll()] == [bob]
    assert pump.taps["alice"].poll() == []
    assert got and got[0][1].split()[2] == rel
    log = pumpkit.pump_log(pump, "rr_xreport_route")
    assert "'nobody', not a source routed here" in log
    assert pump.procs["rr_xreport_route"].poll() is None        # still running
