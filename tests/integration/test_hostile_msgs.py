"""Issue 16, item 7 (message-level bounds): what a hostile source's message may carry.

alice, a source of a real pump, publishes raw v02 posts on her own xs_ exchange: a file
announced with ``mode 7777``, an unknown sum (``q,123``), a sum that checks nothing
(``0,0``), 10,000 headers, a name with a newline (a forged log line) and terminal escape
codes, and a header too long to be posted on. Each is refused or made harmless: nothing
world-writable or setuid in the pump's tree or at the subscriber, nothing of the refused
ones in the tree or on xpublic (seen through an admin tap), no forged line and no raw
escape code in the pump's log, no retry; and a good file still arrives at carol.

Real parts: a whole pump (scripts/pump_demo.Pump: sr_police, sr_sarra, sr_subscribe, the
report shovels, loopback HTTP servers) on the real broker.
"""

import os
import stat
import time

import pytest

from tests.integration import pumpkit
from tests.integration.pumpkit import admin_tap, in_tree, pump_log

FORGED = "2026-12-05 15:00:00,000 [INFO] sr_sarra-ingest-01 FORGED all is well"


def src_file(pump, rel, data):
    path = os.path.join(pump.src["alice"], rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return pumpkit.sum_headers(data)


def publish(pump, posts):
    """Raw v02 posts [(relpath, headers)] by alice, from her server, keyed by directory."""
    pumpkit.publish_posts(pump, "alice", [(pump.http_url("alice"), rel, headers)
                                          for rel, headers in posts],
                          confirm=30, key_with_name=False)


def at_carol(pump, name):
    return [os.path.join(d, n) for d, _, names in os.walk(pump.dst) for n in names
            if n == name]


class Attacked:
    """What the pump did with the attacks: posts on xpublic, reports on xreport, its log."""


@pytest.fixture(scope="module")
def attacked(pump):
    data = b"hostile but harmless\n"
    attacks = [
        ("/h7/mode7777.txt", dict(src_file(pump, "/h7/mode7777.txt", data), mode="7777")),
        ("/h7/qsum.txt", dict(src_file(pump, "/h7/qsum.txt", data), sum="q,123",
                              source=pump.users["bob"])),
        ("/h7/zerosum.txt", dict(src_file(pump, "/h7/zerosum.txt", data), sum="0,0")),
        ("/h7/many.txt", dict(src_file(pump, "/h7/many.txt", data),
                              **{"x%05d" % i: "v" for i in range(10000)})),
        ("/h7/newline.txt", dict(src_file(pump, "/h7/newline.txt", data),
                                 rename="newline.txt\n" + FORGED)),
        ("/h7/esc\x1b[2J\x1b[31mred.txt", src_file(pump, "/h7/esc.txt", data)),
        ("/h7/toolong.txt", dict(src_file(pump, "/h7/toolong.txt", data), flow="x" * 300)),
    ]
    a = Attacked()
    a.last = b"the good file after the attacks\n"
    after = ("/h7/after.txt", src_file(pump, "/h7/after.txt", a.last))
    conn_p, public = admin_tap(pump, "xpublic")
    conn_r, reports = admin_tap(pump, "xreport")
    alice = pump.report_tap("alice")
    bob = pump.report_tap("bob")
    try:
        publish(pump, attacks + [after])
        deadline = time.monotonic() + 60
        while not at_carol(pump, "after.txt") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(4)               # room for any retry of what was refused (1 s, 2 s...)
        a.posted = public(10, until=lambda g: any("after.txt" in b for b, _ in g), drain=True)
        a.reports = reports(3, until=lambda g: len(g) >= 8, drain=True)
        a.alice = alice.wait(lambda got: any("after.txt" in b for _, b, _ in got)
                             and len(got) >= 6, 20)
        a.bob = bob.poll()
    finally:
        conn_p.close()
        conn_r.close()
        alice.close()
        bob.close()
    a.posted_paths = [b.split()[2] for b, _ in a.posted]
    a.log = pump_log(pump)
    a.lines = a.log.splitlines()
    a.codes = {}
    for body, h in a.reports:
        f = body.split()
        a.codes.setdefault(f[2].rsplit("/", 1)[-1], []).append(f[3])
    return a


def told_alice(a, name):
    """The report codes alice received on xr_alice about name."""
    return [b.split()[3] for _, b, _ in a.alice if b.split()[2].endswith("/" + name)]


def refused(pump, a, word):
    assert not in_tree(pump, word), (word, pump.pump_files())
    assert not [p for p in a.posted_paths if word in p], (word, a.posted_paths)


def test_a_good_file_still_arrives_after_the_attacks(pump, attacked):
    (dst,) = at_carol(pump, "after.txt") or [pump.log_tail(30)]
    with open(dst, "rb") as f:
        assert f.read() == attacked.last
    assert "Traceback" not in attacked.log


def test_mode_7777_gives_nothing_world_writable_or_setuid(pump, attacked):
    (post,) = [h for b, h in attacked.posted if b.split()[2].endswith("/h7/mode7777.txt")]
    assert post["mode"] == "775", post           # re-posted masked, for v2 subscribers too
    (pumped,) = in_tree(pump, "mode7777")
    assert stat.S_IMODE(os.stat(os.path.join(pump.tree, pumped)).st_mode) == 0o775
    (dst,) = at_carol(pump, "mode7777.txt")
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o775
    for d, dirs, files in os.walk(pump.tree):
        for p in [d] + [os.path.join(d, n) for n in files]:
            assert not os.lstat(p).st_mode & (stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID), p


def test_an_unknown_sum_is_malformed(pump, attacked):
    refused(pump, attacked, "qsum")
    assert attacked.codes.get("qsum.txt") == ["417"], attacked.codes
    # its report goes to its poster, not to the source it claimed
    assert told_alice(attacked, "qsum.txt") == ["417"], attacked.alice
    assert not attacked.bob, attacked.bob
    assert len([ln for ln in attacked.lines if "unknown checksum algorithm 'q'" in ln]) == 1


def test_a_sum_that_checks_nothing_is_refused_at_the_pump(pump, attacked):
    refused(pump, attacked, "zerosum")
    assert attacked.codes.get("zerosum.txt") == ["403"], attacked.codes
    assert told_alice(attacked, "zerosum.txt") == ["403"], attacked.alice


def test_10000_headers_are_not_forwarded(pump, attacked):
    refused(pump, attacked, "many")
    assert not [h for _, h in attacked.posted if len(h) > 100]
    assert attacked.codes.get("many.txt") == ["417"], attacked.codes
    assert not [h for _, h in attacked.reports if len(h) > 100]
    assert len([ln for ln in attacked.lines if "10002 headers" in ln]) == 1


def test_names_forge_no_log_line_and_no_escape_code(pump, attacked):
    refused(pump, attacked, "newline")
    refused(pump, attacked, "FORGED")
    refused(pump, attacked, "esc")
    assert attacked.codes.get("newline.txt") == ["403"], attacked.codes
    assert told_alice(attacked, "newline.txt") == ["403"], attacked.alice
    assert not [ln for ln in attacked.lines if ln.startswith(FORGED[:30])], attacked.lines
    assert "\x1b" not in attacked.log
    assert "newline.txt\\n" + FORGED in attacked.log       # shown, escaped, on one line


def test_a_header_too_long_to_post_on_is_refused_once(pump, attacked):
    refused(pump, attacked, "toolong")
    assert attacked.codes.get("toolong.txt") == ["413"], attacked.codes
    assert told_alice(attacked, "toolong.txt") == ["413"], attacked.alice   # the reason
    mentions = [ln for ln in attacked.lines if "toolong.txt" in ln]
    assert len(mentions) == 1, mentions                 # not retried, never "posted"
    assert "413" in mentions[0]
