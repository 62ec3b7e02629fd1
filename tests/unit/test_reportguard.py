"""Reports a source can believe and print (sarra/flow/reportguard.py, msg_by_user, report_line)."""

import types
import unicodedata

from sarra import message
from sarra.message import Message, Report
from sarra.flow.reportguard import printable, publisher, report_problem, stamp_consumer


def report(user="dave", exchange="xs_carol", code=201, duration=0.25,
           relpath="/20261205/alice/a.txt", host="ws3.example.net", text="Downloaded"):
    return Message("20261205120000.5", "http://pump.example.org/", relpath,
                   {"sum": "d,d41d8cd98f00b204e9800998ecf8427e", "source": "alice",
                    "message": text},
                   topic="v02.report.20261205.alice", exchange=exchange, kind="report",
                   report=Report(code, host, user, duration))


class Parent:
    def __init__(self, msg, cfg=None, **opts):
        self.msg = types.SimpleNamespace(msg=msg, received=1733400000.0)
        self.cfg = cfg
        self.opts = opts
        self.logger = None

    def get_option(self, name, default=None):
        return self.opts.get(name, default)


def no_controls(text):
    return not [c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")
                or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]


# ------------------------------------------------------------------ printable

def test_printable_leaves_ordinary_names_alone():
    for s in ("/obs/été/日本.txt", "a%20b%23c", "carol@ws3.example.net", "", "http  download"):
        assert printable(s) == s


def test_printable_escapes_every_control_character():
    assert printable("a\nb") == "a\\nb"
    assert printable("\x1b[2J\x1b]0;pwned\x07") == "\\x1b[2J\\x1b]0;pwned\\x07"
    assert printable("\r\t\x00\x7f\x9b\x85") == "\\r\\t\\x00\\x7f\\x9b\\x85"
    assert printable("x\u2028y\u202ez") == "x\\u2028y\\u202ez"
    # a backslash is doubled: a name cannot forge an escape that looks like another one
    assert printable("a\\x1b") == "a\\\\x1b"
    assert printable(42) == "42"
    for n in range(0x110000):
        c = chr(n)
        if 0xD800 <= n < 0xE000:
            continue
        assert no_controls(printable("a" + c + "b")), hex(n)


# ------------------------------------------------------------------ well-formed

def test_report_problem():
    assert report_problem(report()) is None
    assert "not a report" in report_problem(Message("1", "b", "/c", {"sum": "0,0"}))
    assert "000" in report_problem(report(code=0))
    assert report_problem(report(code=999))
    for d in (float("nan"), float("inf"), -1.0):
        assert "duration" in report_problem(report(duration=d))


# ------------------------------------------------------------------ who made it

def test_publisher_is_the_owner_of_a_users_exchange_only():
    assert publisher(report(exchange="xs_carol")) == "carol"
    assert publisher(report(exchange="xs_carol_sub")) == "carol_sub"
    cfg = types.SimpleNamespace(declared={"source": ["carol"]}, exchange_suffix=None)
    assert publisher(report(exchange="xs_carol_sub"), cfg) == "carol"
    for x in ("xreport", "xpublic", "", "xs_", "xr_carol"):
        assert publisher(report(exchange=x)) is None


def test_stamp_consumer_keeps_v02_form():
    m = report(user="dave")
    assert stamp_consumer(m, "carol") == "dave"
    assert stamp_consumer(m, "carol") is None
    topic, body, headers = m.encode()
    assert body.split() == ["20261205120000.5", "http://pump.example.org/",
                            "/20261205/alice/a.txt", "201", "ws3.example.net", "carol",
                            "0.250000"]
    again = message.decode(topic, body, headers)
    assert again.report.user == "carol" and again.kind == "report"


def test_msg_by_user_names_the_publisher_whatever_the_report_claims():
    from sarra.plugins import msg_by_user
    for claimed in ("dave", "feeder", "carol"):
        m = report(user=claimed, exchange="xs_carol")
        assert msg_by_user.on_message(Parent(m, msg_by_user=["carol"])) is True
        assert m.report.user == "carol"
    # read from somewhere that is not a user's exchange: the consumer is left alone
    m = report(user="dave", exchange="xreport")
    assert msg_by_user.on_message(Parent(m, msg_by_user=["carol"])) is False
    assert m.report.user == "dave"
    # a user's exchange that is not the expected user's: dropped
    m = report(user="carol", exchange="xs_bob")
    assert msg_by_user.on_message(Parent(m, msg_by_user=["carol"])) is False


def test_msg_by_user_drops_malformed_reports_with_one_line(caplog):
    from sarra.plugins import msg_by_user
    caplog.set_level("INFO")
    for bad in (report(code=0), report(duration=float("nan"))):
        caplog.clear()
        bad.relpath = "/x\x1b[2J"
        assert msg_by_user.on_message(Parent(bad, msg_by_user=["carol"])) is False
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "malformed report" in lines[0], lines
        assert "\x1b" not in lines[0] and "\\x1b" in lines[0]


# ------------------------------------------------------------------ sr_report's line

def test_report_line_escapes_every_field(capsys):
    from sarra.plugins import report_line
    m = report(user="carol\x1b[31m", host="h\x1b]0;t\x07", relpath="/a\x1b[2J\x9bb.txt",
               text="Down\nloaded\r\x1b[1A fake 201 line")
    m.baseurl = "http://x\x7f/"
    assert report_line.on_message(Parent(m)) is True
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("\n")
    assert no_controls(out[:-1]), repr(out)
    assert ("carol\\x1b[31m@h\\x1b]0;t\\x07  201 Down\\nloaded\\r\\x1b[1A fake 201 line  "
            "0.250s  http://x\\x7f//a\\x1b[2J\\x9bb.txt\n") in out
