"""Reports from a hostile consumer, against a whole pump (issue 16, item 7: reports).

One pump (scripts/pump_demo.Pump, set up by sr_police with report_daemons on: the rr_*
report shovels run as the feeder), with alice's sr_report (`foreground`, on_message
report_line) reading xr_alice into a file. carol, an ordinary subscriber, publishes made-up
reports on her own exchange xs_carol, as raw v02 messages:

* reports naming another consumer (dave, the pump's feeder) about one of alice's files reach
  alice naming carol's account, the one that published them (a report with a code that is
  not one is dropped on the way);
* a report whose relpath, host and message carry terminal escape codes and newlines is one
  line in sr_report's output, with no raw control character in it;

and after each, a real file alice posts still reaches carol, whose genuine 201 report (and the
pump's own, naming the feeder) reaches alice.
"""

import os
import re
import time
import unicodedata

import pytest

from sarra.broker.client import Broker
from tests.integration import pumpkit
from tests.integration.pumpkit import today

SUM = {"sum": "d,d41d8cd98f00b204e9800998ecf8427e", "parts": "1,0,1,0,0"}
WHEN = "20261205120000.25"


def start_with_alices_sr_report(p):
    """The pump, and alice's sr_report (on_message report_line) writing p.report_out."""
    p.write("report/mine.conf", "broker amqp://%s@%s/%s\non_message report_line\n" % (
        p.users["alice"], p.netloc, p.vhost))
    p.report_out = os.path.join(p.logs, "..", "sr_report_mine.out")
    p.start_pump()
    p.start("report", "sr_report", "foreground", "mine", stdout=open(p.report_out, "wb"))


@pytest.fixture(scope="module")
def pump(tmp_path_factory, broker_url):
    with pumpkit.running(tmp_path_factory, broker_url, start=start_with_alices_sr_report,
                         consumers=["q_{alice}.sr_report.mine."]) as p:
        yield p


def report_output(pump) -> str:
    with open(pump.report_out, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def wait_output(pump, pred, timeout=30):
    deadline = time.monotonic() + timeout
    out = report_output(pump)
    while not pred(out) and time.monotonic() < deadline:
        time.sleep(0.2)
        out = report_output(pump)
    return out


def controls(text):
    """The control characters in text (newlines excepted)."""
    return [c for c in text if c != "\n" and (unicodedata.category(c) in ("Cc", "Zl", "Zp")
                                              or c in "\u202a\u202b\u202c\u202d\u202e")]


def publish_as_carol(pump, reports):
    """reports: (relpath, code, host, user, headers) published raw on xs_carol."""
    carol = pump.users["carol"]
    with Broker(pump.url("carol"), reconnect=False) as b:
        for rel, code, host, user, hdrs in reports:
            b.publish("xs_" + carol, "v02.report.%s.%s" % (today(), pump.users["alice"]),
                      "%s %s %s %s %s %s 0.500000" % (WHEN, pump.http_url("pump"), rel, code,
                                                      host, user),
                      dict(SUM, source=pump.users["alice"], **hdrs))
        b.wait_confirms(10)


def good_file_still_moves(pump, tap, sub):
    """alice posts a real file: it reaches carol, and carol's genuine 201 report (and the
    pump's own, naming its feeder) reach xr_alice and sr_report."""
    alice, carol, feeder = (pump.users[r] for r in ("alice", "carol", "feeder"))
    files = pump.make_files("alice", 1, size=2048, sub=sub)
    r = pump.post("alice", [os.path.join(pump.src["alice"], rel) for rel in files])
    assert r.returncode == 0, r.stdout + r.stderr
    rel = "/%s/%s/%s" % (today(), alice, next(iter(files)))
    want = {rel.lstrip("/"): md5 for md5 in files.values()}
    assert pump.wait_files(want, 30) == 1, pump.log_tail()

    def genuine(msgs):
        return [b for _, b, _ in msgs if b.split()[2:4] == [rel, "201"]
                and b.split()[5] == carol]
    msgs = tap.wait(genuine, 30)
    assert genuine(msgs), pump.log_tail()
    # the pump's own report (published by its feeder on xreport, not on a user's
    # exchange) keeps naming the feeder
    name = "/" + next(iter(files))
    tap.wait(lambda m: [b for _, b, _ in m if b.split()[2].endswith(name)
                        and b.split()[5] == feeder], 10)
    by = {b.split()[5] for _, b, _ in tap.poll() if b.split()[2].endswith(name)}
    assert by == {carol, feeder}, (by, pump.log_tail())
    out = wait_output(pump, lambda o: "  %s@" % carol in o and rel in o)
    assert [l for l in out.splitlines() if rel in l and "  %s@" % carol in l
            and "  201 Downloaded  " in l], out


def test_made_up_reports_name_the_account_that_published_them(pump):
    alice, carol, feeder = (pump.users[r] for r in ("alice", "carol", "feeder"))
    tap = pump.report_tap("alice")
    base = "/%s/%s/madeup/" % (today(), alice)
    try:
        publish_as_carol(pump, [
            (base + "bad_code.txt", "000", "ws.example", carol, {"message": "Downloaded"}),
            (base + "by_dave.txt", "201", "ws.example", "dave", {"message": "Downloaded"}),
            (base + "by_feeder.txt", "201", "pump.example", feeder, {"message": "Published"}),
        ])
        msgs = tap.wait(lambda m: len([b for _, b, _ in m if "/madeup/" in b]) >= 2, 30)
        time.sleep(1)
        got = {b.split()[2]: b.split() for _, b, _ in tap.poll() if "/madeup/" in b}
        assert sorted(got) == [base + "by_dave.txt", base + "by_feeder.txt"], \
            (msgs, pump.log_tail())
        for fields in got.values():
            assert len(fields) == 7 and fields[3] == "201" and fields[5] == carol, fields
        out = wait_output(pump, lambda o: o.count("/madeup/") >= 2)
        lines = [l for l in out.splitlines() if "/madeup/" in l]
        assert len(lines) == 2 and all("  %s@" % carol in l for l in lines), out
        assert "dave@" not in out and "%s@pump.example" % feeder not in out, out
        good_file_still_moves(pump, tap, "after_madeup")
    finally:
        tap.close()


def test_control_characters_never_reach_the_source_terminal(pump):
    alice, carol = pump.users["alice"], pump.users["carol"]
    tap = pump.report_tap("alice")
    rel = "/%s/%s/esc/a\x1b[2J\x1b]0;owned\x07\x9b31mb.txt" % (today(), alice)
    forged = "Downloaded\n2026-12-05 12:00:00Z  %s@pump  201 Published  0.001s  http://x/" % (
        pump.users["feeder"])
    try:
        publish_as_carol(pump, [
            (rel, "201", "ws\x1b[5m.example", carol,
             {"message": forged + "\r\x1b[1A\x1b[31mred\x7f\u202e"}),
        ])
        tap.wait(lambda m: [b for _, b, _ in m if "/esc/" in b], 30)
        out = wait_output(pump, lambda o: "/esc/" in o)
        lines = [l for l in out.splitlines() if "/esc/" in l]
        assert len(lines) == 1, (out, pump.log_tail())
        assert not controls(out), repr(out)
        line = lines[0]
        assert "\\x1b[2J\\x1b]0;owned\\x07\\x9b31mb.txt" in line, line
        assert "Downloaded\\n2026-12-05 12:00:00Z" in line and "\\x1b[31mred\\x7f" in line, line
        assert "  %s@ws\\x1b[5m.example  201 " % carol in line, line
        # every line of sr_report's output is a report line: none was forged
        assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  \S+@\S+  \d{3} ", l)
                   for l in out.splitlines()), out
        good_file_still_moves(pump, tap, "after_esc")
    finally:
        tap.close()
