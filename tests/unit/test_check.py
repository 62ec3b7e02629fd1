"""`sr check`'s rules (sarra/ops/check.py), the figures `sr status` adds
(commands/srmonitor.py) and the Prometheus text the daemons write (flow/monitor.py)."""

import re
import types

import pytest

from sarra.commands import srmonitor
from sarra.flow import monitor
from sarra.ops import check


def row(**kw):
    base = {"label": "sarra/pump", "state": "running", "queue": 0, "lag": 0.0, "idle": 5.0,
            "failures": 0.0, "quota": {}}
    base.update(kw)
    return base


def test_thresholds_parsed_and_bad_ones_refused():
    assert check.parse_threshold("10,20") == check.Threshold(10, 20)
    assert check.parse_threshold(",20") == check.Threshold(None, 20)
    assert check.parse_threshold("7") == check.Threshold(7, None)
    assert check.parse_threshold("off") == check.Threshold(None, None)
    for bad in ("a,b", "20,10", "-1,3", "nan,1"):
        with pytest.raises(ValueError, match="threshold"):
            check.parse_threshold(bad)


@pytest.mark.parametrize("kw, code, text", [
    ({}, check.OK, "1 configurations, 1 running"),
    ({"queue": 1500}, check.WARNING, "sarra/pump queue 1500"),
    ({"queue": 20000}, check.CRITICAL, "sarra/pump queue 20000"),
    ({"lag": 400.0}, check.WARNING, "sarra/pump lag 400s"),
    ({"failures": 50.0}, check.CRITICAL, "sarra/pump failures 50%"),
    ({"quota": {"alice": 85.0, "bob": 10.0}}, check.WARNING, "sarra/pump quota alice 85%"),
    ({"state": "down"}, check.CRITICAL, "sarra/pump down"),
    ({"state": "partial"}, check.WARNING, "sarra/pump partial"),
])
def test_each_condition_gives_its_code_and_names_the_culprit(kw, code, text):
    got, line = check.evaluate([row(**kw)], check.defaults())
    assert got == code, line
    assert line.startswith(f"SARRA {check.NAMES[code]} - ") and text in line.split(" | ")[0]
    assert "\n" not in line


def test_performance_data_follows_the_plugin_format():
    limits = check.defaults()
    limits["idle"] = check.Threshold(60, 600)
    _, line = check.evaluate([row(queue=3, lag=1.5, quota={"al'ice": 12.5})], limits)
    status, perf = line.split(" | ")
    item = re.compile(r"^'[^'=]+'=-?[0-9.]+(s|%|B)?;([0-9.]*);([0-9.]*)$")
    fields = perf.split(" ")
    assert all(item.match(f) for f in fields), fields
    assert "'sarra/pump_queue'=3;1000;10000" in fields
    assert "'sarra/pump_idle'=5s;60;600" in fields
    assert "'sarra/pump_quota_al_ice'=12.5%;80;95" in fields


def test_idle_threshold_and_unknown():
    limits = check.defaults()
    limits["idle"] = check.Threshold(60, 600)
    assert check.evaluate([row(idle=700.0)], limits)[0] == check.CRITICAL
    assert check.evaluate([], limits)[0] == check.UNKNOWN
    assert check.evaluate([], limits, ["no configuration matches x|y"]) == (
        check.UNKNOWN, "SARRA UNKNOWN - no configuration matches x/y")
    code, line = check.evaluate([row()], limits, ["queue depth unknown for amqp://h/: refused"])
    assert code == check.UNKNOWN and "refused" in line
    code, _ = check.evaluate([row(queue=20000)], limits, ["queue depth unknown"])
    assert code == check.CRITICAL
    limits["queue"] = check.Threshold(None, None)
    assert check.evaluate([row(queue=20000)], limits)[0] == check.OK


def test_lag_is_zero_when_nothing_waits_and_grows_while_messages_wait():
    figs = [{"lag": 2.0, "lag_at": 100.0, "unacked": 0}]
    assert srmonitor._lag(figs, 0, 150.0) == 0.0
    assert srmonitor._lag(figs, 5, 150.0) == pytest.approx(52.0)
    assert srmonitor._lag([{"lag": 2.0, "lag_at": 100.0, "unacked": 3}], 0, 150.0) == 2.0
    assert srmonitor._lag([], None, 150.0) is None


# ---------------------------------------------------------------- the metrics file

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def strict_parse(text):
    """The text exposition format 0.0.4, strictly: {name: [(labels, value)]}; every sample's
    family has a TYPE line before it."""
    assert text.endswith("\n")
    types_, out = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge") and name not in types_
            types_[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = LINE.match(line)
        assert m, line
        name, labels = m.group(1), {}
        assert name in types_, line
        rest = m.group(3) or ""
        while rest:
            lm = LABEL.match(rest)
            assert lm, line
            labels[lm.group(1)] = lm.group(2)
            rest = rest[lm.end():]
        out.setdefault(name, []).append((labels, float(m.group(4))))
    return out


def stats_data():
    return {"received": 10, "accepted": 9, "bytes": 4096, "failed": 1, "retry_queue": 2,
            "unacked": 0, "time": 1000.0, "last_activity": 999.0, "lag": 0.5,
            "quota": {"alice": {"bytes": 500, "files": 2, "max_bytes": 1000,
                                "max_files": None}}}


def test_metrics_text_is_valid_exposition_format():
    text = monitor.metrics_text("sarra", 'pu"mp\\x', 3, stats_data())
    got = strict_parse(text)
    labels = {"component": "sarra", "config": 'pu\\"mp\\\\x', "instance": "3"}
    assert got["sarra_messages_received_total"] == [(labels, 10.0)]
    assert got["sarra_transferred_bytes_total"] == [(labels, 4096.0)]
    assert got["sarra_lag_seconds"] == [(labels, 0.5)]
    assert got["sarra_quota_used_bytes"] == [(dict(labels, source="alice"), 500.0)]
    assert got["sarra_quota_limit_bytes"] == [(dict(labels, source="alice"), 1000.0)]
    assert "sarra_quota_limit_files" not in got          # no files limit: no sample
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["sarra_messages_received"].type == "counter"
    assert fams["sarra_messages_received"].samples[0].labels["config"] == 'pu"mp\\x'


def test_stats_gain_bytes_window_lag_and_metrics_file(tmp_path):
    cfg = types.SimpleNamespace(metrics_dir=str(tmp_path / "prom"), component="sarra",
                                name="pump")
    flow = types.SimpleNamespace(cfg=cfg, no=1, log=None)
    d1 = dict(stats_data(), time=100.0, prev_time=100.0)
    monitor.on_stats(flow, d1)
    d2 = dict(stats_data(), time=140.0, prev_time=100.0, bytes=8192, failed=3)
    monitor.on_stats(flow, d2)
    assert d2["prev_bytes"] == 4096 and d2["prev_failed"] == 1
    prom = tmp_path / "prom" / "sarra_sarra_pump_01.prom"
    assert strict_parse(prom.read_text())["sarra_transferred_bytes_total"][0][1] == 8192
    assert oct(prom.stat().st_mode & 0o777) == "0o644"       # node_exporter reads it
    assert [p.name for p in prom.parent.iterdir()] == [prom.name]   # no temporary left


def test_failure_rate_over_the_window_counts_retries_and_the_start():
    s = {"received": 110, "prev_received": 100, "retried": 10, "prev_retried": 0,
         "failed": 25, "prev_failed": 20}
    assert srmonitor.failure_pct(s) == 25.0            # 5 of 10 new + 10 retried
    quiet = dict(s, prev_received=110, prev_retried=10, prev_failed=25)
    assert srmonitor.failure_pct(quiet) == 0.0
    # everything came before the first stats write: the totals since the start
    young = dict(quiet, window_from_start=True)
    assert srmonitor.failure_pct(young) == pytest.approx(100.0 * 25 / 120)
    assert srmonitor.failure_pct({"received": 3, "failed": 9,
                                  "window_from_start": True}) == 100.0
