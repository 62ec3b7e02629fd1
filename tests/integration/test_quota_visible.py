"""The source sees its quota use and limit without a refusal (issue 23, item 2): the whole
pump of test_quota.py (``quota <alice>=5K/10,*=off``) and alice's sr_report.

alice posts two 2 KiB files: the pump's reports to her carry ``quota 2048/5120 1/10`` then
``4096/5120 2/10``; `sr_report summary` shows her latest use and limit beside her files
(text and JSON); bob (no quota) gets reports without the header.
"""

import json
import time
import os

import pytest

from tests.integration import pumpkit
from tests.integration.pumpkit import at_carol, files_of, wait_arrived

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def pump(tmp_path_factory, broker_url):
    def start(p):
        with open(os.path.join(p.cfgdir, "sarra", "ingest.conf"), "a") as f:
            f.write(f"quota {p.users['alice']}=5K/10,*=off\n")
        p.write("report/mine.conf", "broker amqp://%s@%s/%s\n" % (p.users["alice"], p.netloc,
                                                                    p.vhost))
        p.start_pump()
        p.start("report", "sr_report", "foreground", "mine")
    with pumpkit.running(tmp_path_factory, broker_url, name="quotav", start=start,
                         consumers=["q_{alice}.sr_report.mine."]) as p:
        yield p


def pump_reports(reports, feeder):
    return [(b, h) for _, b, h in reports if b.split()[5:6] == [feeder]]


def test_reports_and_summary_show_use_and_limit(pump):
    alice, feeder = pump.users["alice"], pump.users["feeder"]
    alice_tap, bob_tap = pump.report_tap("alice"), pump.report_tap("bob")
    try:
        a = files_of(pump, "alice", ["a1", "a2"])
        for n in a:         # one at a time: the use after each
            r = pump.post("alice", [os.path.join(pump.src["alice"], "q", n)])
            assert r.returncode == 0, r.stderr
            assert wait_arrived(pump, at_carol(pump, "alice", {n: a[n]}), 30), pump.log_tail()
        b = files_of(pump, "bob", ["b1"])
        assert pump.post("bob", [os.path.join(pump.src["bob"], "q", "b1")]).returncode == 0
        assert wait_arrived(pump, at_carol(pump, "bob", b), 30), pump.log_tail()

        mine = pump_reports(alice_tap.wait(lambda m: len(pump_reports(m, feeder)) >= 2, 15),
                            feeder)
        assert [(b.split()[2].rsplit("/", 1)[-1], h.get("quota")) for b, h in mine] == [
            ("a1", "2048/5120 1/10"), ("a2", "4096/5120 2/10")], mine
        theirs = bob_tap.wait(lambda m: pump_reports(m, feeder), 15)
        assert pump_reports(theirs, feeder) and not any(
            "quota" in h for _, _, h in theirs), theirs

        def summary():
            r = pump.run("sr_report", "summary", "mine", "--json", timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
            return json.loads(r.stdout)
        deadline = time.monotonic() + 15
        got = summary()
        while [q["bytes"] for q in got.get("quota", [])] != [4096] and \
                time.monotonic() < deadline:
            time.sleep(0.3)
            got = summary()
        (q,) = got["quota"]
        assert (q["source"], q["consumer"].split("@")[0], q["bytes"], q["max_bytes"],
                q["files"], q["max_files"]) == (alice, feeder, 4096, 5120, 2, 10), got
        r = pump.run("sr_report", "summary", "mine", timeout=60)
        assert r.returncode == 0, r.stderr
        assert "quota of %s at %s: 4096 of 5120 bytes, 2 of 10 files (" % (
            alice, q["consumer"]) in r.stdout.splitlines()[-1], r.stdout
    finally:
        alice_tap.close()
        bob_tap.close()
