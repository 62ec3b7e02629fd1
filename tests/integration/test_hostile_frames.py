"""Frames no peer's message may kill a consumer with (issue 16, item 3), on the real broker.

A source writes the AMQP frames of its posts itself: a routing key or content_type that is
not UTF-8, a header table nested 2,000 deep, a timestamp header out of range, a body that is
not UTF-8 or larger than any post. RabbitMQ delivers them as they are; py-amqp raised on
the first four while reading the frame, so every consumer exited, was restarted, received
the same message and exited again.

* a real pump (scripts/pump_demo.Pump): alice publishes them on xs_alice, with post and
  report keys; sr_sarra and the report shovels log one line for each, none exits, and a
  good file alice posts afterwards reaches carol;
* sr_subscribe, sr_shovel, sr_winnow and sr_report, each consuming an exchange that
  receives them followed by a good message: each survives and handles the good one.
"""

import hashlib
import os
import struct
import time

import pytest
from amqp.serialization import dumps

from tests.conftest import amqp_connect
from tests.integration.pumpkit import pump_log, today
from tests.integration.senderkit import Runner, wait_for

SUM0 = {"sum": "d,d41d8cd98f00b204e9800998ecf8427e", "parts": "1,0,1,0,0"}
WHEN = "20261205120000.25"
LINE = "undecodable AMQP frame"


def table(headers):
    return dumps("F", [headers])[4:]


def nested(depth):
    t = b""
    for _ in range(depth):
        t = b"\x01kF" + len(t).to_bytes(4, "big") + t
    return t


def hostile(prefix, base, rel):
    """(name, routing key, content_type, header table, body) of each hostile message."""
    body = ("%s %s %s" % (WHEN, base, rel)).encode()
    good = table(SUM0)
    key = (prefix + rel.replace("/", ".").strip(".")).encode()
    return [
        ("routing key", key + b".\xff\xfe", b"text/plain", good, body),
        ("content_type", key, b"text/\xff", good, body),
        ("nested headers", key, b"text/plain", good + nested(2000), body),
        ("timestamp header", key, b"text/plain", good + b"\x04whenT" + b"\xff" * 8, body),
        ("body", key, b"text/plain", good, body + b" \xff\xfe"),
        ("body size", key, b"text/plain", good, body + b" " + b"x" * (2 << 20)),
    ]


def _sstr(raw):
    return bytes((len(raw),)) + raw


def _frames(channel, chunk, exchange, key, ctype, tbl, body):
    args = struct.pack(">HHH", 60, 40, 0) + _sstr(exchange.encode()) + _sstr(key) + b"\0"
    header = (struct.pack(">HHQH", 60, 0, len(body), 0x8000 | 0x2000 | 0x1000) + _sstr(ctype)
              + len(tbl).to_bytes(4, "big") + tbl + b"\x02")
    out = [struct.pack(">BHI", 1, channel, len(args)), args, b"\xce",
           struct.pack(">BHI", 2, channel, len(header)), header, b"\xce"]
    for i in range(0, len(body), chunk):
        piece = body[i:i + chunk]
        out += [struct.pack(">BHI", 3, channel, len(piece)), piece, b"\xce"]
    return b"".join(out)


def publish_raw(url, exchange, messages):
    """Write each message's frames ourselves (py-amqp would not encode them) and wait
    until the broker confirmed them all."""
    conn = amqp_connect(url)
    try:
        ch = conn.channel()
        ch.confirm_select()
        acked = []
        ch.events["basic_ack"].add(lambda tag, multiple: acked.append(tag))
        ch.events["basic_nack"].add(lambda tag, multiple: acked.append(-tag))
        conn.transport.write(b"".join(_frames(ch.channel_id, conn.frame_max - 8, exchange,
                                              *m[1:]) for m in messages))
        deadline = time.monotonic() + 20
        while not acked or abs(acked[-1]) < len(messages):
            assert time.monotonic() < deadline, "broker did not confirm %s" % acked
            conn.drain_events(timeout=deadline - time.monotonic())
        assert all(t > 0 for t in acked), "broker refused (nack) %s" % acked
    finally:
        conn.close()


# ------------------------------------------------- a pump (the `pump` fixture of conftest.py)

def test_pump_survives_undecodable_posts_and_reports(pump):
    alice = pump.users["alice"]
    src = os.path.join(pump.src["alice"], "hostile")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "f.txt"), "wb") as f:
        f.write(b"")
    posts = hostile("v02.post.", pump.http_url("alice"), "/hostile/f.txt")
    reports = [(n, k.replace(b"v02.post.", b"v02.report."), c, t,
                b.replace(b" /hostile/f.txt", b" /hostile/f.txt 201 h %s 0.1" % alice.encode()))
               for n, k, c, t, b in posts]
    shovels = pump.rr_shovels()
    consumers = ["sarra"] + shovels
    before = {k: pump_log(pump, k).count(LINE) for k in consumers}
    publish_raw(pump.url("alice"), "xs_" + alice, posts + reports)

    files = pump.make_files("alice", 1, 100, sub="after_hostile")
    r = pump.post("alice", [os.path.join(pump.src["alice"], "after_hostile")])
    assert r.returncode == 0, r.stderr
    want = {os.path.join(today(), alice, rel): s
            for rel, s in files.items()}
    assert pump.wait_files(want, 45) == 1, pump.log_tail()
    assert pump.arrived(want) == want

    for key in ["sarra", "subscribe"] + shovels:
        assert pump.procs[key].poll() is None, "%s exited:\n%s" % (key, pump_log(pump, key))
    text = pump_log(pump, "sarra")
    assert "Traceback" not in text, text
    # sr_sarra binds the posts: one line each, saying what was wrong
    assert text.count(LINE) - before["sarra"] == len(posts), text
    for what in ("routing key 'v02.post.hostile.f.txt.\\xff\\xfe' is not valid UTF-8",
                 "content_type 'text/\\xff' is not valid UTF-8",
                 "nested more than 16 tables deep", "timestamp 18446744073709551615",
                 "body is not valid UTF-8", "body of 2097"):
        assert what in text, (what, text)
    # the report shovel reading xs_alice: one line for each report
    seen = sum(pump_log(pump, k).count(LINE) - before[k] for k in shovels)
    assert seen == len(reports), pump.log_tail(30)
    assert not [p for p in pump.pump_files() if "/hostile/" in p]


# ---------------------------------------------------------------------------- consumers

@pytest.fixture
def runner(home, tmp_path):
    r = Runner(home, tmp_path)
    yield r
    r.cleanup()


CONFIGS = {
    "subscribe": "directory {dst}\nmirror on\naccept .*\n",
    "shovel": "post_broker {broker}\npost_exchange {out}\nreport_back off\n",
    "winnow": "post_broker {broker}\npost_exchange {out}\nreport_back off\n",
    "report": "on_message report_line\n",
}


@pytest.mark.parametrize("component", sorted(CONFIGS))
def test_consumer_survives_undecodable_frames(component, runner, broker_url, uid,
                                              amqp_exchange, amqp_tap, http_server, tmp_path):
    ex = amqp_exchange("xs_guest_hf%s" % uid, durable=True)
    out = amqp_exchange("xs_guest_hfo%s" % uid, durable=True)
    tap = amqp_tap(out)
    dst = tmp_path / "dst"
    name = "hf%s" % uid
    runner.config(component, name, "broker %s\nexchange %s\nsubtopic #\nexpire 5m\n" % (
        broker_url, ex) + CONFIGS[component].format(dst=dst, broker=broker_url, out=out))
    p = runner.start(component, name)
    runner.wait_consuming(p, name)

    (http_server.root / "hf").mkdir(exist_ok=True)
    (http_server.root / "hf" / "good.txt").write_bytes(b"good\n")
    prefix = "v02.report." if component == "report" else "v02.post."
    bad = hostile(prefix, http_server.url, "/hf/bad.txt")
    tail = " 201 h carol 0.1" if component == "report" else ""
    good_body = ("%s %s /hf/good.txt%s" % (WHEN, http_server.url, tail)).encode()
    good = ("good", (prefix + "hf").encode(), b"text/plain",
            table({"sum": "d," + hashlib.md5(b"good\n").hexdigest(), "parts": "1,5,1,0,0"}),
            good_body)
    publish_raw(broker_url, ex, bad + [good])

    if component == "subscribe":
        wait_for(lambda: (dst / "hf" / "good.txt").exists() or p.poll() is not None, 30,
                 "the good file")
        assert (dst / "hf" / "good.txt").read_bytes() == b"good\n"
        assert not (dst / "hf" / "bad.txt").exists()
    elif component == "report":
        wait_for(lambda: "good.txt" in runner.log(name) or p.poll() is not None, 30,
                 "the good report")
        assert not [line for line in runner.log(name).splitlines()
                    if "bad.txt" in line and LINE not in line]
    else:
        got = []
        wait_for(lambda: got.extend(tap.get(1, timeout=0.2)) or got or p.poll() is not None,
                 30, "the good post")
        assert [b.split()[2] for _, b, _ in got] == ["/hf/good.txt"], got
        assert not tap.get(1, timeout=1.0)
    assert p.poll() is None, "%s exited:\n%s" % (component, runner.log(name))
    log = runner.log(name)
    assert log.count(LINE) == len(bad), log
    assert "Traceback" not in log, log
