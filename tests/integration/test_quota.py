"""Quotas per source on a whole pump (issue 23, item 2): the real broker, sr_police's vhost,
the pump's sr_sarra with ``quota <alice>=5K``, carol's sr_subscribe.

alice's third 2 KiB file would take her over 5 KiB: refused with a 403 report to her that
gives her use and limit, never fetched; bob (no quota of his own, ``*=off``) is not
affected; a removal alice posts frees her quota, and the refused file then goes through.
"""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from sarra import checksum
from tests.integration import pumpkit
from tests.integration.procs import wait_for
from tests.integration.pumpkit import (at_carol, files_of,  # noqa: F401
                                       publish_posts, today, wait_arrived)

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def pump(tmp_path_factory, broker_url):
    def start(p):           # sr_sarra as a daemon (instances, stats files: sr check)
        with open(os.path.join(p.cfgdir, "sarra", "ingest.conf"), "a") as f:
            f.write(f"quota {p.users['alice']}=5K,*=off\nquota_check 10\n")
        p.start_pump(sarra=False)
        r = p.run("sr_sarra", "start", "ingest")
        assert r.returncode == 0, r.stdout + r.stderr

    def prepare(p):
        return lambda: p.run("sr_sarra", "stop", "ingest")
    with pumpkit.running(tmp_path_factory, broker_url, name="quota", start=start,
                         prepare=prepare) as p:
        yield p


def sr(pump, *args):
    """`sr` in the pump's HOME."""
    code = "import sys; sys.argv[0] = 'sr'; from sarra.commands.sr import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, env=pump.env, cwd=pump.home, timeout=60)


def refusals(reports):
    return [(b, h) for _, b, h in reports if b.split()[3:4] == ["403"]]


def test_over_quota_refused_with_report_others_unaffected_removal_frees(pump):
    alice_tap = pump.report_tap("alice")
    try:
        a = files_of(pump, "alice", ["a1", "a2"])
        r = pump.post("alice", [os.path.join(pump.src["alice"], "q", n) for n in a])
        assert r.returncode == 0, r.stderr
        assert wait_arrived(pump, at_carol(pump, "alice", a), 30), pump.log_tail()

        a3 = files_of(pump, "alice", ["a3"])
        b = files_of(pump, "bob", ["b1", "b2", "b3", "b4"], size=4096)
        assert pump.post("alice", [os.path.join(pump.src["alice"], "q", "a3")]).returncode == 0
        assert pump.post("bob", [os.path.join(pump.src["bob"], "q", n) for n in b]
                         ).returncode == 0
        assert wait_arrived(pump, at_carol(pump, "bob", b), 30), pump.log_tail()
        reports = alice_tap.wait(lambda m: refusals(m), 15)
        refused = refusals(reports)
        assert len(refused) == 1, reports
        body, headers = refused[0]
        assert body.split()[2].endswith("/q/a3")
        text = headers.get("message", "")
        assert "over quota" in text and "4096 of 5120 bytes" in text, text
        assert not [p for p in pump.pump_files() if p.endswith("/q/a3")]    # never fetched
        assert not os.path.exists(os.path.join(pump.dst, list(at_carol(pump, "alice", a3))[0]))

        # the admin sees it too: sr check warns at 50 % of a quota (alice: 80 %)
        def checked():
            return sr(pump, "check", "sarra/ingest", "--quota", "50,90")
        assert wait_for(lambda: checked().returncode == 1, 10, step=0.5), checked().stdout
        r = checked()
        assert f"quota {pump.users['alice']} 80%" in r.stdout, r.stdout
        assert sr(pump, "check", "sarra/ingest", "--quota", "85,95").returncode == 0

        # alice removes a1 (a post with sum R): her quota is freed, a3 now goes through
        rel = "/q/a1"
        time.sleep(1.0)     # its pubtime (whole seconds) after a1's mtime: newest wins
        publish_posts(pump, "alice", [(pump.http_url("alice"), rel,
                                       {"sum": "R," + checksum.name_sum("R", "a1")})])
        tree_a1 = os.path.join(pump.tree, today(), pump.users["alice"], "q", "a1")
        deadline = time.monotonic() + 15
        while os.path.exists(tree_a1) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(tree_a1), pump.log_tail()
        assert pump.post("alice", [os.path.join(pump.src["alice"], "q", "a3")]).returncode == 0
        assert wait_arrived(pump, at_carol(pump, "alice", a3), 30), pump.log_tail()
        assert len(refusals(alice_tap.poll())) == 1
    finally:
        alice_tap.close()
