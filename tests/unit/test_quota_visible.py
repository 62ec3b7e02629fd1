"""The source sees its quota use and limit without a refusal (issue 23, item 2): sr_sarra's
reports carry a ``quota`` header (sarra/flow/quotanote.py), sr_report's summary keeps the
latest per source and pump (tracking.py, reportsummary.py)."""

import json
import logging
import os
from types import SimpleNamespace

from sarra import message
from sarra.flow import quotanote, reportsummary, tracking
from tests.support.reportfakes import feed, rep


def flow_with(tmp_path, quota):
    cfg = SimpleNamespace(quota=quota, quota_check=600)
    return SimpleNamespace(cfg=cfg, user_cache_dir=str(tmp_path / "state"),
                           log=logging.getLogger("test"))


def post(source="alice", **extra):
    headers = {"source": source, "sum": "d,d41d8cd98f00b204e9800998ecf8427e",
               "parts": "1,2048,1,0,0", **extra}
    return message.decode("v02.post.q", "20261205180000 http://src.example.org/ /q/a1",
                          headers, exchange="xs_" + source)


def test_sarra_reports_carry_the_sources_use_and_limit(tmp_path):
    flow = flow_with(tmp_path, ["alice=5K/3", "bob=1M", "*=off"])
    target = tmp_path / "tree" / "a1"
    target.parent.mkdir()
    target.write_bytes(b"x" * 2048)
    import sarra.flow.quota as quota
    led = quota._quotas(flow).ledger("alice")
    assert led.charge(str(target), 2048, 5120, 3) == (None, None)
    r = post().to_report(201, "Downloaded", "pump", "feeder", 0.0)
    quotanote.stamp(flow, r)
    assert r.headers["quota"] == "2048/5120 1/3"
    r = post("bob").to_report(201, "Downloaded", "pump", "feeder", 0.0)
    quotanote.stamp(flow, r)
    assert r.headers["quota"] == "0/1048576"
    # no quota for carol; a header the post carried is never echoed
    r = post("carol", quota="0/99").to_report(201, "Downloaded", "pump", "feeder", 0.0)
    quotanote.stamp(flow, r)
    assert "quota" not in r.headers
    r = post("alice", quota="0/99").to_report(201, "Downloaded", "sub", "bob", 0.0)
    quotanote.stamp(flow_with(tmp_path, []), r)          # a subscriber: no quota option
    assert "quota" not in r.headers
    # the report as it goes on the wire keeps it
    r = post().to_report(403, "Forbidden: over quota", "pump", "feeder", 0.0)
    quotanote.stamp(flow, r)
    _, _, headers = r.encode()
    assert headers["quota"] == "2048/5120 1/3"


def test_parse_takes_only_the_pumps_form():
    assert quotanote.parse("2048/5120 1/3") == {"bytes": 2048, "max_bytes": 5120,
                                                "files": 1, "max_files": 3}
    assert quotanote.parse("7/-") == {"bytes": 7, "max_bytes": None, "files": None,
                                      "max_files": None}
    for bad in ("", "1/2\n", "1/2 3", "-1/2", "a/b", "1/2 3/4 5/6", "1" * 30 + "/1", None, 5):
        assert quotanote.parse(bad) is None, bad


def test_summary_shows_the_latest_quota_per_source_and_pump(tmp_path):
    st = tracking.Store(str(tmp_path))
    feed(st, rep("/q/a1", 201, "feeder", host="pumpA", quota="2048/5120 1/3"),
         rep("/q/a2", 201, "feeder", host="pumpA", quota="4096/5120 2/3", pub="20261205180001"),
         rep("/q/a3", 403, "feeder", host="pumpA", quota="4096/5120 2/3",
             text="Forbidden: over quota", pub="20261205180002"),
         rep("/q/a1", 201, "bob", host="ws", quota="0/1\x1b[2J"),      # not the form: dropped
         rep("/q/b1", 201, "feeder", host="pumpA", source="eve", quota="10/20",
             pub="20261205180003"))
    q = reportsummary.quotas(st)
    assert [(x["source"], x["consumer"], x["bytes"], x["max_bytes"], x["files"])
            for x in q] == [("alice", "feeder@pumpA", 4096, 5120, 2),
                            ("eve", "feeder@pumpA", 10, 20, None)]
    lines = reportsummary.text_lines(reportsummary.summarize(st), q)
    assert lines[-2].startswith("quota of alice at feeder@pumpA: "
                                "4096 of 5120 bytes, 2 of 3 files ("), lines
    assert lines[-1].startswith("quota of eve at feeder@pumpA: "
                                "10 of 20 bytes ("), lines
    assert json.loads(reportsummary.as_json([], q))["quota"] == q
    assert "quota" not in json.loads(reportsummary.as_json([], []))
    # read back from the journal, and after a compaction, the same
    assert reportsummary.quotas(tracking.Store(str(tmp_path)).load()) == q
    st.compact()
    assert reportsummary.quotas(tracking.Store(str(tmp_path)).load()) == q
    assert os.path.exists(st.path)
