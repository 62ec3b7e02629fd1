"""Bounds on what a hostile peer's message may carry or make a consumer do (issue 16,
item 7): oversized messages and unknown sums are malformed, a pump refuses sums that
check no data and masks modes, a message that cannot be posted on is refused once before
any transfer, and no message field can put a control character in a log line."""

import hashlib
import logging
import os
import stat

import pytest

from sarra import checksum, message
from sarra.flow import presets as components, download, msgbounds
from sarra.config import parser as config
from sarra.ops import logs
from sarra.broker.client import Delivery, DeliveryTag
from sarra.flow.engine import Flow
from sarra.flow.work import Outcome, Work
from tests.support.flowfakes import FakeConsumer, FakeReporter

T = "20240101000000.0"
GOOD = {"sum": "d," + "0" * 32, "parts": "1,1,1,0,0"}


def decode(headers=None, relpath="/a/b.txt", baseurl="http://h/", body=None):
    return message.decode("v02.post.a", body or f"{T} {baseurl} {relpath}",
                          dict(GOOD) if headers is None else headers)


# ------------------------------------------------------------------ decode bounds

def test_a_message_within_the_bounds_is_decoded():
    h = dict(GOOD, **{f"x{i}": "v" * 200 for i in range(message.MAX_HEADERS - 2)})
    assert len(decode(h).headers) == message.MAX_HEADERS
    assert decode(relpath="/" + "a" * 4000).relpath.startswith("/aaa")


@pytest.mark.parametrize("what, kw", [
    ("headers", {"headers": dict(GOOD, **{f"x{i}": "v" for i in range(10000)})}),
    ("headers", {"headers": dict(GOOD, **{f"x{i}": "v" * 4000 for i in range(9)})}),
    ("header big", {"headers": dict(GOOD, big="é" * 2049)}),
    ("header name", {"headers": dict(GOOD, **{"a\nb": "1"})}),
    ("header name", {"headers": dict(GOOD, **{"": "1"})}),
    ("relpath", {"relpath": "/" + "a" * 4096}),
    ("baseurl", {"baseurl": "http://h/" + "a" * 4096}),
    ("body", {"body": f"{T} http://h/ /a " + "x" * 70000}),
])
def test_oversized_messages_are_malformed(what, kw):
    with pytest.raises(message.MessageError) as e:
        decode(**kw)
    assert e.value.field.startswith(what)
    assert len(str(e.value)) < 300          # one short line, whatever the size


@pytest.mark.parametrize("s", ["q,123", "z,q", "z,z", "md5,1", "Z,d"])
def test_unknown_sum_algorithms_are_malformed(s):
    with pytest.raises(message.MessageError) as e:
        decode(dict(GOOD, sum=s))
    assert e.value.field == "header sum" and "unknown checksum algorithm" in str(e.value)


@pytest.mark.parametrize("s", ["d," + "0" * 32, "n," + "0" * 32, "0,1234", "0", "n", "z,d",
                               "z,s", "a,x", "p," + "0" * 128])
def test_every_algorithm_of_the_spec_is_still_decoded(s):
    assert decode(dict(GOOD, sum=s)).headers["sum"] == s


def test_a_registered_algorithm_is_known(monkeypatch):
    monkeypatch.setitem(checksum.DATA_ALGOS, "q", hashlib.sha1)
    assert decode(dict(GOOD, sum="q," + "0" * 40)).sum.algo == "q"


# ------------------------------------------------------------------ the pump's check

class Cfg:
    component = "sarra"
    unchecked_sums = False


class FakeFlow:
    def __init__(self, **kw):
        self.cfg = Cfg()
        for k, v in kw.items():
            setattr(self.cfg, k, v)


def pump_work(**headers):
    return Work(message.make_post(T, "http://h/", "/a", dict(GOOD, **headers)))


@pytest.mark.parametrize("s", ["0,1234", "0", "n," + "0" * 32, "a,x", "z,n",
                               "p," + "0" * 128, "d,", "d"])
def test_a_pump_refuses_sums_that_check_no_data(s):
    with pytest.raises(Outcome) as e:
        msgbounds.pump_check(FakeFlow(), pump_work(sum=s))
    assert e.value.code == 403 and not e.value.retry and "checks no data" in e.value.text
    msgbounds.pump_check(FakeFlow(unchecked_sums=True), pump_work(sum=s))     # allowed


@pytest.mark.parametrize("s", ["d," + "0" * 32, "s," + "0" * 128, "z,d", "z,s",
                               "R," + "0" * 128, "L," + "0" * 128, "m", "r"])
def test_a_pump_takes_sums_that_check_data_and_removals_and_links(s):
    msgbounds.pump_check(FakeFlow(), pump_work(sum=s))


@pytest.mark.parametrize("link_sum, ok", [("0,1", False), ("n," + "0" * 32, False),
                                          ("x", False), ("d," + "0" * 32, True)])
def test_a_pump_checks_the_data_sum_of_a_winnow_link_post(link_sum, ok):
    w = pump_work(sum="L," + "0" * 128, link="/other", link_sum=link_sum)
    if ok:
        msgbounds.pump_check(FakeFlow(), w)
    else:
        with pytest.raises(Outcome) as e:
            msgbounds.pump_check(FakeFlow(), w)
        assert e.value.code == 403
    assert msgbounds.LINK_SUM == download.WINNOW_LINK_SUM


@pytest.mark.parametrize("mode, masked", [("7777", "775"), ("4755", "755"), ("2777", "775"),
                                          ("666", "664"), ("644", "644"), ("0", "0")])
def test_a_pump_masks_and_reposts_the_mode(mode, masked):
    w = pump_work(mode=mode)
    msgbounds.pump_check(FakeFlow(), w)
    assert w.msg.headers["mode"] == masked


def test_a_pump_drops_a_mode_that_is_no_mode():
    w = pump_work(mode="rwx")
    msgbounds.pump_check(FakeFlow(), w)
    assert "mode" not in w.msg.headers


def test_sarra_check_applies_the_bounds(home):
    cfg = config.load("sarra", None, [("broker", "amqp://u:p@localhost/")])
    flow = FakeFlow()
    flow.cfg = cfg
    w = pump_work(sum="0,1")
    w.msg.exchange = "xs_alice"
    with pytest.raises(Outcome) as e:
        components.sarra_check(flow, w)
    assert e.value.code == 403
    assert cfg.unchecked_sums is False


@pytest.mark.parametrize("component, mode, want", [("sarra", "7777", 0o775),
                                                   ("sarra", "666", 0o664),
                                                   ("subscribe", "7777", 0o777),
                                                   ("subscribe", "4755", 0o755)])
def test_written_files_never_get_setuid_and_at_a_pump_no_world_write(tmp_path, component,
                                                                     mode, want):
    cfg = config.load(component, None, [("broker", "amqp://u:p@localhost/")])
    flow = FakeFlow()
    flow.cfg, flow.log = cfg, logging.getLogger("sarra.test")
    path = tmp_path / "f"
    path.write_bytes(b"x")
    download._apply_meta(flow, message.make_post(T, "http://h/", "/f", dict(GOOD, mode=mode)),
                         str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == want


def test_a_pump_creates_no_world_writable_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "umask", os.umask)
    old = os.umask(0)
    try:
        cfg = config.load("sarra", None, [("broker", "amqp://u:p@localhost/"),
                                          ("chmod_dir", "777")])
        flow = FakeFlow()
        flow.cfg = cfg
        download._mkdirs(flow, str(tmp_path / "d"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o775


# ------------------------------------------------------------------ posting flows

class FakePostBroker:
    def __init__(self):
        self.published = []

    def publish(self, exchange, topic, body, headers, persistent=True, expiration=None):
        self.published.append((topic, body, headers))

    def wait_confirms(self, timeout=None):
        pass

    def tick(self):
        pass


def posting_flow(home, work):
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("post_broker", "amqp://u:p@localhost/"),
                                          ("post_exchange", "xpublic"),
                                          ("directory", str(home / "dst"))])
    flow = Flow(cfg, components.Preset("subscribe", work=work, posts=True))
    flow.consumer, flow.reporter = FakeConsumer(), FakeReporter()
    flow.post_broker = FakePostBroker()
    return flow


def feed(flow, relpath, headers):
    m = message.make_post(T, "http://h/", relpath, headers)
    topic, body, hdrs = m.encode(allow_long_headers=True)
    flow.consumer.inbox.append(Delivery("xs_x", topic, body, b"", hdrs,
                                        DeliveryTag(1, 0), False, {}))
    flow.handle(flow.gather())


def test_a_header_too_long_to_post_on_is_refused_before_the_transfer(home, caplog):
    done = []

    def work(flow, w):
        done.append(w.msg.path)
        w.posts.append(w.msg)
    flow = posting_flow(home, work)
    with caplog.at_level(logging.INFO, logger="sarra"):
        feed(flow, "/long", dict(GOOD, flow="x" * 300))
        feed(flow, "/ok", dict(GOOD, flow="x"))
    assert done == ["/ok"]                      # no transfer for the one refused
    assert flow.reporter.sent == [("/long", 413), ("/ok", 201)]
    assert flow.consumer.acked == ["/long", "/ok"]
    assert len(flow.retry) == 0 and flow.counters["failed"] == 0
    assert [b.split()[2] for _, b, _ in flow.post_broker.published] == ["/ok"]
    assert not [r for r in caplog.records if r.exc_info]        # no traceback
    assert not [r for r in caplog.records if r.getMessage().startswith("posted")
                and "long" in r.getMessage()]


def test_a_name_a_relpath_cannot_carry_is_refused_before_the_transfer(home):
    done = []

    def work(flow, w):
        done.append(w.msg.path)
    flow = posting_flow(home, work)
    flow.preset = components.Preset("subscribe", place=download.destination, work=work,
                                    posts=True)
    feed(flow, "/a", dict(GOOD, rename="x\n2026-01-01 00:00:00,000 [INFO] forged"))
    feed(flow, "/b", dict(GOOD, rename="tab\there"))
    feed(flow, "/c", dict(GOOD, rename="with space"))
    assert done == ["/c"]
    assert flow.reporter.sent == [("/a", 403), ("/b", 403), ("/c", 201)]
    assert len(flow.retry) == 0


def test_a_name_too_long_for_the_disk_is_refused_once_not_retried(home):
    done = []

    def work(flow, w):
        done.append(w.msg.path)
    flow = make_subscriber(home, work)
    feed(flow, "/d/" + "n" * 256, dict(GOOD))
    feed(flow, "/d/" + "é" * 128, dict(GOOD))
    feed(flow, "/" + "dd/" * 1360 + "f", dict(GOOD))      # decoded, too long here
    feed(flow, "/d/" + "n" * 255, dict(GOOD))
    assert done == ["/d/" + "n" * 255]
    assert [c for _, c in flow.reporter.sent] == [403, 403, 403, 201]
    assert len(flow.retry) == 0


def make_subscriber(home, work):
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(home / "dst")), ("mirror", "on")])
    flow = Flow(cfg, components.Preset("subscribe", place=download.destination, work=work))
    flow.consumer, flow.reporter = FakeConsumer(), FakeReporter()
    return flow


def test_a_post_a_plugin_made_too_long_is_refused_once_not_retried(home, caplog):
    def work(flow, w):
        p = w.msg.copy()
        p.headers["flow"] = "y" * 300
        w.posts.append(p)
    flow = posting_flow(home, work)
    with caplog.at_level(logging.INFO, logger="sarra"):
        feed(flow, "/p", dict(GOOD))
    assert flow.reporter.sent == [("/p", 413)]
    assert flow.consumer.acked == ["/p"] and len(flow.retry) == 0
    assert flow.post_broker.published == [] and flow.counters["posted"] == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("posted")]


def test_the_report_of_a_malformed_message_does_not_repeat_its_10000_headers():
    h = dict(GOOD, **{f"x{i}": "v" for i in range(10000)}, long="z" * 300)
    h[b"raw"] = b"bytes"
    out = msgbounds.echoed_headers(h)
    assert len(out) == message.MAX_HEADERS - 4 and "long" not in out
    assert msgbounds.echoed_headers(None) == {}
    assert msgbounds.echoed_headers({b"raw": b"bytes"}) == {"raw": "bytes"}
    assert msgbounds.echoed_headers({"sum": "q,123", "parts": "x", "a": "1"}) == {"a": "1"}
    assert msgbounds.echoed_headers(GOOD) == GOOD


def test_the_report_of_a_malformed_message_can_be_decoded(home):
    flow = posting_flow(home, lambda f, w: None)
    reports = []
    flow.reporter.report = lambda msg, code, text, received: reports.append(
        msg.to_report(code, text, "h", "u", 0.0))
    for h in (dict(GOOD, sum="q,123"), dict(GOOD, **{f"x{i}": "v" for i in range(10000)})):
        feed(flow, "/bad", h)
    assert [r.report.code for r in reports] == [417, 417]
    for r in reports:
        topic, body, headers = r.encode(allow_long_headers=True)
        assert message.decode(topic, body, headers).report.code == 417


# ------------------------------------------------------------------ log lines

@pytest.mark.parametrize("text, shown", [
    ("a\nb", "a\\nb"), ("a\r\nb", "a\\r\\nb"), ("\x1b[31mred", "\\x1b[31mred"),
    ("x\u2028y", "x\\u2028y"), ("tab\t", "tab\\t"), ("\x7f\x9b", "\\x7f\\x9b"),
    ("plain é ü 日本", "plain é ü 日本"), ("", ""),
])
def test_one_line_escapes_every_control_character(text, shown):
    assert logs.one_line(text) == shown


def test_a_name_with_a_newline_cannot_forge_a_log_line(capsys):
    lg = logs.setup_logging("sarra", "ingest", 1, foreground=True)
    try:
        lg.getChild("flow").error("%s: %s", "http://h/a\n2026-01-01 00:00:00,000 [INFO] "
                                  "sr_sarra/ingest/01 forged\x1b[2K", Outcome(403, "x\ny"))
        lines = capsys.readouterr().err.splitlines()
    finally:
        for h in [h for h in lg.handlers if getattr(h, "_sarra_handler", False)]:
            lg.removeHandler(h)
            h.close()
        lg.propagate = True
    assert len(lines) == 1, lines
    assert "\\n2026-01-01" in lines[0] and "\\x1b[2K" in lines[0] and "x\\ny" in lines[0]


def test_an_exception_text_cannot_forge_a_log_line_in_a_traceback(capsys):
    lg = logs.setup_logging("sarra", "ingest", 1, foreground=True)
    try:
        try:
            raise ValueError("bad\n2026-01-01 00:00:00,000 [INFO] sr_sarra/ingest/01 "
                             "forged\x1b[2K")
        except ValueError:
            lg.getChild("flow").exception("unexpected error")
        lines = capsys.readouterr().err.splitlines()
    finally:
        for h in [h for h in lg.handlers if getattr(h, "_sarra_handler", False)]:
            lg.removeHandler(h)
            h.close()
        lg.propagate = True
    assert lines[1] == "Traceback (most recent call last):"
    assert [ln for ln in lines if ln[:1].isdigit()] == lines[:1], lines
    assert "\x1b" not in "\n".join(lines) and "forged\\x1b[2K" in lines[-1]


def test_a_report_fits_every_hop_that_posts_it_again():
    m = message.make_post(T, "http://h/", "/a", dict(GOOD, flow="x" * 300, ok="short"))
    rep = m.to_report(413, "Payload Too Large: " + "é" * 300, "h", "u", 0.0)
    topic, body, headers = rep.encode()            # no allow_long_headers: a shovel's post
    assert len(headers["message"].encode()) < message.MAX_HEADER_BYTES
    assert headers["message"].startswith("Payload Too Large: éé")
    assert len(headers["flow"]) == message.MAX_HEADER_BYTES - 1 and headers["ok"] == "short"
    assert message.decode(topic, body, headers).report.code == 413


def test_the_report_of_a_malformed_post_goes_to_its_poster(home):
    cfg = config.load("sarra", None, [("broker", "amqp://u:p@pump:5672/"),
                                      ("exchange", "xs_alice"),
                                      ("source_from_exchange", "on")])
    flow = Flow(cfg, components.preset("sarra"))
    flow.consumer, flow.reporter = FakeConsumer(), FakeReporter()
    got = []
    flow.reporter.report = lambda msg, code, text, received: got.append((code, msg.headers))
    m = message.make_post(T, "http://h/", "/a", dict(GOOD, sum="q,1", source="bob",
                                                         from_cluster="elsewhere"))
    topic, body, hdrs = m.encode()
    flow.consumer.inbox.append(Delivery("xs_alice", topic, body, b"", hdrs,
                                        DeliveryTag(1, 0), False, {}))
    flow.handle(flow.gather())
    ((code, headers),) = got
    assert code == 417 and headers["source"] == "alice"
    assert headers["from_cluster"] == "pump:5672"
