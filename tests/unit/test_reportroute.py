"""Report routing at one read per report (issue 20): post_exchange_by_source, the
msg_by_source filter in front of it, and sr_police's rr_xreport_route with the upgrade of
the per-source rr_xreport2<source> shovels of earlier versions (sarra/ops/reportroute.py)."""

import logging
import os
import types

import pytest

from sarra import config
from sarra.flow import outbound, poststep, routing
from sarra.flow.work import Outcome, Work
from sarra.message import Message, Report
from sarra.ops import audit, reportroute
from sarra.plugins import msg_by_source


def report(source="alice"):
    headers = {"sum": "d,x"}
    if source is not None:
        headers["source"] = source
    return Message("20240315121500.11", "https://pump.example.org/", "/a/b.txt", headers,
                   topic="v02.report.a", kind="report",
                   report=Report(201, "ws3.example.net", "carol", 0.05))


def route_cfg(**kw):
    kw.setdefault("post_exchange", "xr_")
    kw.setdefault("post_exchange_by_source", True)
    return types.SimpleNamespace(headers={}, post_base_url=None, **kw)


class FakeBroker:
    def __init__(self):
        self.published = []

    def publish(self, exchange, topic, body, headers, persistent=True):
        self.published.append((exchange, headers.get("source")))

    def exchange_exists(self, name):       # every xr_ there (sourcex.py asks first)
        return True


def fake_flow(cfg):
    return types.SimpleNamespace(cfg=cfg, log=logging.getLogger("t"), msg=None,
                                 preset=types.SimpleNamespace(component="shovel"),
                                 post_broker=FakeBroker(), counters={"posted": 0})


# ------------------------------------------------------------------ the post step

def test_each_report_goes_to_its_sources_exchange():
    flow = fake_flow(route_cfg())
    for source in ("alice", "bob", "alice.b"):
        work = Work(report(source))
        work.posts = [work.msg]
        poststep.publish(flow, work, "xr_", True, False)
    assert flow.post_broker.published == [("xr_alice", "alice"), ("xr_bob", "bob"),
                                          ("xr_alice.b", "alice.b")]


@pytest.mark.parametrize("source", [None, "", "#", "*", "a/b", "a b", "a\nb", "..", "x" * 201])
def test_no_usable_source_is_never_posted(source):
    flow = fake_flow(route_cfg())
    work = Work(report(source))
    work.posts = [work.msg]
    with pytest.raises(Outcome) as e:
        poststep.publish(flow, work, "xr_", True, False)
    assert e.value.code == 403 and not e.value.retry
    assert flow.post_broker.published == []


def test_without_the_option_post_exchange_as_before():
    ob = outbound.Outbound(route_cfg(post_exchange="xreport", post_exchange_by_source=False))
    assert ob.exchange_for({"source": "alice"}) == "xreport"
    ob = outbound.Outbound(route_cfg(post_exchange_split=2))
    assert ob.exchange_for({"source": "bob", "sum": "d,a"}) == "xr_bob%02d" % (
        sum(b"d,a") % 2)


def test_post_exchanges_declared_are_the_listed_sources():
    cfg = route_cfg(msg_by_source=["alice,bob", "carl"])
    assert routing.post_exchanges(cfg) == ["xr_alice", "xr_bob", "xr_carl"]
    cfg.post_exchange_by_source = False
    assert routing.post_exchanges(cfg) == ["xr_"]


# ------------------------------------------------------------------ the filter

class Parent:
    def __init__(self, msg, **opts):
        self.msg = types.SimpleNamespace(msg=msg)
        self.opts = opts
        self.logger = logging.getLogger("t.msg_by_source")

    def get_option(self, name, default=None):
        return self.opts.get(name, default)


def test_unknown_sources_dropped_and_logged_once(caplog, monkeypatch):
    monkeypatch.setattr(msg_by_source, "_unknown", set())
    routed = dict(msg_by_source=["alice,bob"], post_exchange_by_source=True)
    with caplog.at_level(logging.WARNING):
        assert msg_by_source.on_message(Parent(report("alice"), **routed)) is True
        for _ in range(3):
            assert msg_by_source.on_message(Parent(report("mallory"), **routed)) is False
            assert msg_by_source.on_message(Parent(report(None), **routed)) is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "'mallory'" in lines[0] and "no source header" in lines[1]
    caplog.clear()
    with caplog.at_level(logging.WARNING):     # a flood of names: bounded, then silent
        for i in range(300):
            msg_by_source.on_message(Parent(report("m%d" % i), **routed))
    assert len(caplog.records) == msg_by_source.MAX_NAMES - 2 + 1
    assert "no longer named" in caplog.records[-1].getMessage()


def test_filter_alone_stays_quiet(caplog, monkeypatch):
    monkeypatch.setattr(msg_by_source, "_unknown", set())
    with caplog.at_level(logging.WARNING):
        assert msg_by_source.on_message(Parent(report("bob"), msg_by_source=["alice"])) is False
    assert caplog.records == []


# ------------------------------------------------------------------ sr_police's shovels

def make_pump(sources=("alice", "alice2")):
    roles = {"boss": "admin", "feeder": "feeder", "carol": "subscriber"}
    roles.update({s: "source" for s in sources})
    return audit.Pump("amqp://boss@h/", "amqp://feeder:secret@h/", roles, [], "http://h:15672/")


#: rr_xreport2<source>.conf as sr_police wrote it before (commit 39ba2dc)
OLD = """# Written by sr_police: copy the reports about %s's data from xreport
# to xr_%s, where %s reads them (sr_report).
# Rename to rr_xreport2%s.conf.off to stop routing (sr_police will not rewrite it).
broker amqp://feeder@h/
exchange xreport
topic_prefix v02.report
subtopic #
topic_prefix v02.log
subtopic #
topic_prefix v02
subtopic post
post_broker amqp://feeder@h/
post_exchange xr_%s
on_message msg_by_source
msg_by_source %s
report_back off
"""


def old_version_files(pump, d):
    """The rr_xreport2<source> files an earlier sr_police wrote."""
    d.mkdir(parents=True, exist_ok=True)
    for s in pump.users("source"):
        (d / ("rr_xreport2%s.conf" % s)).write_text(OLD % (s, s, s, s, s, s))


def test_one_routing_shovel_for_every_source(home):
    pump = make_pump()
    shovels = audit.report_shovels(pump)
    assert not [n for n in shovels if n.startswith("rr_xreport2")]
    d = home / ".config" / "sarra" / "shovel"
    d.mkdir(parents=True)
    for name, text in shovels.items():
        (d / (name + ".conf")).write_text(text)
    cfg = config.load("shovel", reportroute.ROUTE, warn_unknown=False)
    assert cfg.exchange == "xreport" and cfg.post_exchange == "xr_"
    assert cfg.post_exchange_by_source is True and cfg.report_back is False
    assert routing.post_exchanges(cfg) == ["xr_alice", "xr_alice2"]
    assert cfg.plugins["on_post"] == []             # no log line per report
    carol = config.load("shovel", "rr_carol2xreport", warn_unknown=False)
    assert carol.plugins["on_post"] == [] and carol.plugins["on_message"] == ["msg_by_user"]
    assert "secret" not in shovels[reportroute.ROUTE]


def test_upgrade_retires_the_old_shovels_written_by_sr_police(home, tmp_path, monkeypatch):
    stopped = []
    monkeypatch.setattr(reportroute.instances, "stop", lambda c, n: stopped.append((c, n)))
    pump = make_pump(("alice", "alice2", "bob", "dan"))
    d = tmp_path / "shovel"
    old_version_files(pump, d)
    with open(d / "rr_xreport2bob.conf", "a") as f:           # edited by the admin
        f.write("reject .*secret.*\n")
    os.rename(d / "rr_xreport2dan.conf", d / "rr_xreport2dan.conf.off")
    found = audit.write_report_shovels(pump, directory=str(d))
    names = sorted(os.listdir(d))
    assert "rr_xreport2alice.conf" not in names and "rr_xreport2alice2.conf" not in names
    assert "rr_xreport2bob.conf" in names and "rr_xreport2dan.conf.off" in names
    assert sorted(stopped) == [("shovel", "rr_xreport2alice"), ("shovel", "rr_xreport2alice2")]
    route = (d / "rr_xreport_route.conf").read_text()
    assert "msg_by_source alice,alice2\n" in route        # bob, dan: no double routing
    problems = [f for f in found if f.fix is None]
    assert len(problems) == 1 and "bob" in problems[0].line()
    assert all(f.result == "fixed" for f in found if f.fix is not None)
    # a second run changes nothing (bob's edited file still said)
    assert [f for f in audit.write_report_shovels(pump, directory=str(d))
            if f.fix is not None] == []


def test_new_source_rewrites_the_routing_shovel_once(home, tmp_path, monkeypatch):
    reloads = []
    monkeypatch.setattr(reportroute.reload, "signal_instances",
                        lambda c, n, w: reloads.append((c, n, w)))
    d = tmp_path / "shovel"
    audit.write_report_shovels(make_pump(("alice",)), directory=str(d))
    found = [f for f in audit.write_report_shovels(make_pump(("alice", "bob")), directory=str(d))
             if "rr_bob2xreport" not in f.what]
    assert [f.result for f in found] == ["fixed"] and "rewritten" in found[0].line()
    assert "msg_by_source alice,bob\n" in (d / "rr_xreport_route.conf").read_text()
    assert reloads == [("shovel", reportroute.ROUTE, 1)]
    # edited by the admin: never rewritten again
    with open(d / "rr_xreport_route.conf", "a") as f:
        f.write("# mine\n")
    assert [f.what for f in audit.write_report_shovels(make_pump(("alice", "bob", "eve")),
                                                       directory=str(d))] == [
        "shovel config %s" % (d / "rr_eve2xreport.conf")]
    assert "msg_by_source alice,bob\n" in (d / "rr_xreport_route.conf").read_text()
    # and dry-run writes nothing
    os.unlink(d / "rr_xreport_route.conf")
    found = audit.write_report_shovels(make_pump(), dry_run=True, directory=str(d))
    assert not (d / "rr_xreport_route.conf").exists() and found
