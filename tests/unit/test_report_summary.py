"""sr_report's summary: the store of reports (sarra/flow/tracking.py), who is expected and
what each file became (sarra/flow/reportsummary.py), the command (sarra/commands/report.py)."""

import json
import os

import pytest

from sarra import message, paths
from sarra.commands import report as report_cmd
from sarra.flow import reportsummary, tracking
from sarra.flow.presets import preset
from tests.support.reportfakes import PUB, feed, rep  # noqa: F401

def summary(store, **kw):
    return {r["file"]: r for r in reportsummary.summarize(store, **kw)}


def test_a_file_across_hops_is_one_file(tmp_path):
    """The pump's report (source path) and the subscriber's (pump path) are one file,
    named by the shortest path seen; delivered 2/2."""
    st = tracking.Store(str(tmp_path))
    feed(st, rep("/obs/a.txt", 201, "feeder", base="http://alice.example.org:8000/"),
         rep("/20261205/alice/obs/a.txt", 201, "carol"))
    rows = summary(st)
    assert list(rows) == ["/obs/a.txt"]
    row = rows["/obs/a.txt"]
    assert row["expected"] == 2 and len(row["delivered"]) == 2
    pumps = {d["consumer"]: d["pump"] for d in row["delivered"]}
    assert pumps == {"feeder@ws.example.net": "alice.example.org:8000",
                     "carol@ws.example.net": "pump.example.org"}


def test_refused_pending_and_delivered(tmp_path):
    """carol took a.txt and b.txt; dave refused b.txt (417); carol went down: c.txt is
    pending for her, and dave (who reported b.txt) is expected on c.txt too."""
    st = tracking.Store(str(tmp_path))
    feed(st, rep("/d/a.txt", 201, "carol"),
         rep("/d/b.txt", 201, "carol", pub="20261205180001"),
         rep("/d/b.txt", 417, "dave", text="Expectation Failed: checksum mismatch",
             pub="20261205180001"),
         rep("/d/c.txt", 201, "feeder", pub="20261205180002"))
    rows = summary(st)
    a, b, c = rows["/d/a.txt"], rows["/d/b.txt"], rows["/d/c.txt"]
    assert (len(a["delivered"]), a["expected"]) == (1, 1)   # dave came after a.txt
    assert [i["consumer"] for i in b["refused"]] == ["dave@ws.example.net"]
    assert b["refused"][0]["code"] == 417 and "checksum" in b["refused"][0]["message"]
    assert sorted(i["consumer"] for i in c["pending"]) == ["carol@ws.example.net",
                                                          "dave@ws.example.net"]
    lines = reportsummary.text_lines(reportsummary.summarize(st))
    assert len(lines) == 4
    assert "delivered 1/3  /d/c.txt  pending: carol@ws.example.net at pump.example.org" \
        in lines[2]
    assert "refused: dave@ws.example.net at pump.example.org (417 Expectation Failed: " \
           "checksum mismatch)" in lines[1]
    assert lines[-1] == ("3 file(s): 1 delivered to every consumer expected, 1 refused by "
                         "some, 1 pending")


def test_window_forgets_a_consumer_gone_for_long(tmp_path):
    st = tracking.Store(str(tmp_path))
    st.add(rep("/d/a.txt", 201, "carol"), now=1000.0)
    st.add(rep("/d/b.txt", 201, "feeder", pub="20261205190000"), now=1000.0 + 7200)
    assert summary(st)["/d/b.txt"]["pending"] == []
    assert [p["consumer"] for p in summary(st, window=3 * 3600)["/d/b.txt"]["pending"]] \
        == ["carol@ws.example.net"]


def test_summary_expect_names_consumers_never_heard_of(tmp_path):
    st = tracking.Store(str(tmp_path))
    feed(st, rep("/d/a.txt", 201, "carol"), rep("/d/b.txt", 201, "feeder", pub="20261205180002"))
    rows = summary(st, expect=["carol", "erin@laptop"])
    b = rows["/d/b.txt"]
    assert sorted(p["consumer"] for p in b["pending"]) == ["carol@ws.example.net",
                                                          "erin@laptop"]
    assert b["expected"] == 3       # feeder reported: always counted


def test_a_retry_that_succeeds_is_delivered(tmp_path):
    st = tracking.Store(str(tmp_path))
    feed(st, rep("/d/a.txt", 499, "carol", text="http download failed"),
         rep("/d/a.txt", 201, "carol"))
    row = summary(st)["/d/a.txt"]
    assert [d["consumer"] for d in row["delivered"]] == ["carol@ws.example.net"]
    assert row["refused"] == []


def test_a_file_in_parts_is_pending_until_every_block(tmp_path):
    st = tracking.Store(str(tmp_path))
    feed(st, rep("/d/big", 201, "carol", parts="i,4,3,0,2", text="Inserted"),
         rep("/d/big", 201, "carol", parts="i,4,3,0,0", text="Inserted"))
    row = summary(st)["/d/big"]
    assert row["pending"] == [{"consumer": "carol@ws.example.net", "pump": "pump.example.org",
                               "blocks": "2/3"}]
    st.add(rep("/d/big", 201, "carol", parts="i,4,3,0,1", text="Inserted"), now=2000.0)
    assert len(summary(st)["/d/big"]["delivered"]) == 1


def test_the_store_survives_a_restart_and_compaction(tmp_path):
    st = tracking.Store(str(tmp_path))
    feed(st, rep("/d/a.txt", 201, "carol"), rep("/d/a.txt", 417, "dave", text="bad"),
         rep("/d/b.txt", 201, "carol", pub="20261205180003"))
    before = reportsummary.summarize(st)
    again = tracking.Store(str(tmp_path)).load()
    assert reportsummary.summarize(again) == before
    again.compact()
    assert len(open(again.path).read().splitlines()) == 3
    assert reportsummary.summarize(tracking.Store(str(tmp_path)).load()) == before
    # a line cut by a crash is skipped
    with open(again.path, "a") as f:
        f.write('{"t": 5, "s": "ali')
    assert reportsummary.summarize(tracking.Store(str(tmp_path)).load()) == before


def test_the_journal_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "MAX_FILES", 5)
    st = tracking.Store(str(tmp_path))
    for i in range(40):
        st.add(rep("/d/f%d" % i, 201, "carol", pub="202612051800%02d" % i), now=1000.0 + i)
    assert len(st.files) == 5 and len(st.recs) == 5
    assert sorted(st.files.values(), key=lambda f: f.first)[0].name == "/d/f35"
    monkeypatch.setattr(tracking, "MAX_CONSUMERS", 3)
    st2 = tracking.Store(str(tmp_path / "b"))
    for i in range(10):
        st2.add(rep("/d/x", 201, "u%d" % i), now=1000.0 + i)
    assert len(st2.consumers) == 3
    assert len(open(st2.path).read().splitlines()) == 3


def test_hostile_fields_are_bounded_and_escaped(tmp_path):
    st = tracking.Store(str(tmp_path))
    evil = "\x1b]0;pwned\x07\nFAKE  delivered 9/9  /etc/passwd\u202e"
    st.add(rep("/d/a%0Ab.txt", 404, "carol", host="h" * 5000, text=evil * 50,
               base="http://u:secret@pump.example.org/"), now=1.0)
    rec = next(iter(st.recs.values()))
    assert len(rec.consumer) < 300 and len(rec.text) <= tracking.MAX_TEXT
    assert rec.pump == "pump.example.org"           # no password kept
    lines = reportsummary.text_lines(reportsummary.summarize(st))
    assert len(lines) == 2
    assert all(c.isprintable() for c in lines[0])
    assert "\\x1b" in lines[0] and "\\n" in lines[0] and "\\u202e" in lines[0]
    assert "secret" not in open(st.path).read()
    out = reportsummary.as_json(reportsummary.summarize(st))
    assert out.isascii() and json.loads(out)["files"][0]["refused"][0]["code"] == 404


def test_not_reports_and_bad_codes_are_not_recorded(tmp_path):
    st = tracking.Store(str(tmp_path))
    post = message.decode("v02.post.d", "%s http://p/ /d/a" % PUB, {"sum": "d,d41d8cd98f00b204e9800998ecf8427e",
                                                                "parts": "1,1,1,0,0"})
    assert not st.add(post)
    assert not st.add(rep("/d/a", 0, "carol"))
    assert not os.path.exists(st.path)


def test_the_report_preset_records_every_accepted_report():
    p = preset("report")
    assert p.check is tracking.record and p.state is tracking.Tracker


def test_summary_command_text_and_json(home, capsys):
    conf = home / ".config" / "sarra" / "report"
    conf.mkdir(parents=True)
    (conf / "mine.conf").write_text("broker amqp://alice@localhost/\nsummary_expect carol\n")
    st = tracking.Store(paths.state_dir("report", "mine"))
    feed(st, rep("/d/a.txt", 201, "feeder"))
    assert report_cmd.main(["summary", "mine"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "delivered 1/2  /d/a.txt  pending: carol at -" in out[0]
    assert report_cmd.main(["summary", "mine", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["files"][0]["pending"][0]["consumer"] == "carol"
    assert report_cmd.main(["summary"]) == 2
    assert "summary needs one config name" in capsys.readouterr().err
    assert report_cmd.main(["--help"]) == 0
    assert "summary" in capsys.readouterr().out


def test_sr_report_takes_the_consumer_actions_and_summary():
    from sarra.commands import common
    assert report_cmd.ACTIONS == common.CONSUMER_ACTIONS + ("summary",)


def test_several_sources_name_each_file_source(tmp_path):
    """The pump's feeder reading xreport sees every source's files: each line says whose."""
    st = tracking.Store(str(tmp_path))
    feed(st, rep("/d/a.txt", 201, "carol"), rep("/d/a.txt", 201, "carol", source="bob"))
    lines = reportsummary.text_lines(reportsummary.summarize(st))
    assert len(lines) == 3
    assert sorted(l.split("  ")[2] for l in lines[:2]) == ["alice:/d/a.txt", "bob:/d/a.txt"]


class _Flow:
    def __init__(self, directory):
        import logging
        self.step_state = tracking.Tracker()
        self.user_cache_dir, self.no = directory, 1
        self.log = logging.getLogger("sarra")

    class _Work:
        def __init__(self, msg):
            self.msg = msg


def test_record_writes_the_store_and_a_write_error_is_one_warning(tmp_path, caplog):
    flow = _Flow(str(tmp_path / "state"))
    tracking.record(flow, _Flow._Work(rep("/d/a.txt", 201, "carol")))
    assert len(tracking.Store(str(tmp_path / "state")).load().recs) == 1
    blocked = tmp_path / "file"
    blocked.write_text("")
    flow = _Flow(str(blocked / "state"))         # a directory that cannot be made
    tracking.record(flow, _Flow._Work(rep("/d/a.txt", 201, "carol")))
    assert "report summary: cannot write" in caplog.text
