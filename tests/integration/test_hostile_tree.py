"""Issue 16, item 2: a hostile source cannot make a tree entry resolve outside the tree.

The attack: a relative symbolic link made deep in the tree (its target then inside it),
then moved up by a remove post with ``newname`` (v2 rename), so that its ``..`` climb out
of the tree: the pump's web server then served /etc/passwd and a listing of /tmp. The same
with a directory of such links moved up, and against a subscriber (mirror on) under a
hostile upstream. Every move is refused (403, acked, nothing moved), no entry of the tree
resolves outside it, and a good file still goes through.

Real parts: a whole pump (scripts/pump_demo.Pump: sr_police, sr_sarra, sr_subscribe, the
report shovels, loopback HTTP servers) on the real broker; raw posts on xs_<alice>.
"""

import os

import requests

from sarra import checksum, message
from sarra.broker.client import Broker
from scripts.pump_demo import md5
from tests.integration.pumpkit import today
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    files_under, post_msg, stub_http, sub_env)

DEPTH = 40                          # deeper than any test tree is below /
DEEP = "/" + "/".join(["d"] * DEPTH)
UP = "../" * DEPTH                  # from DEEP: the root of the tree; from the top: /

#: (link made deep in the tree, its target there, what is then moved, and where to)
ATTACKS = [
    (DEEP + "/pw", UP + "etc/passwd", DEEP + "/pw", "/pw"),           # a link moved up
    (DEEP + "/tmpdir", UP + "tmp", DEEP + "/tmpdir", "/tmpdir"),      # a directory listing
    (DEEP + "/sub/pw2", "../" + UP + "etc/passwd", DEEP + "/sub", "/sub"),  # dir of links
]


def _link_post(base, relpath, target):
    return message.make_post(message.now(), base, relpath, {
        "link": target, "sum": "L," + checksum.name_sum("L", target)})


def _move_post(base, relpath, newname):
    return message.make_post(message.now(), base, relpath, {
        "newname": newname,
        "sum": "R," + checksum.name_sum("R", os.path.basename(relpath))})


def escaping_entries(top):
    """Every entry below ``top`` whose resolved path is outside it."""
    real_top = os.path.realpath(top)
    bad = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            real = os.path.realpath(p)
            if real != real_top and not real.startswith(real_top + "/"):
                bad.append((p, real))
    return bad


# ------------------------------------------- the pump (the `pump` fixture of conftest.py)

def _reports(tap, want, timeout=40):
    """(relpath, code) of the pump's reports to alice on her own paths (not carol's on the
    pump's copies), once ``want`` of them are in."""
    def ours(ms):
        return [(body.split()[2], int(body.split()[3])) for _, body, _ in ms
                if body.split()[2].startswith("/d/")]
    return ours(tap.wait(lambda ms: len(ours(ms)) >= want, timeout))


def test_link_moved_out_of_the_pump_tree_is_refused(pump):
    alice = pump.users["alice"]
    day = today()
    root = os.path.join(pump.tree, day, alice)
    base = pump.http_url("alice")
    tap = pump.report_tap("alice")
    try:
        with Broker(pump.url("alice"), reconnect=False) as b:
            for rel, target, _, _ in ATTACKS:
                topic, body, headers = _link_post(base, rel, target).encode()
                b.publish("xs_" + alice, topic, body, headers)
            b.wait_confirms(10)
            made = _reports(tap, len(ATTACKS))
            assert sorted(made) == sorted((rel, 201) for rel, _, _, _ in ATTACKS), \
                (made, pump.log_tail())
            for _, _, old, new in ATTACKS:
                topic, body, headers = _move_post(base, old, new).encode()
                b.publish("xs_" + alice, topic, body, headers)
            b.wait_confirms(10)
        moves = _reports(tap, 2 * len(ATTACKS))[len(ATTACKS):]
        assert sorted(moves) == sorted((old, 403) for _, _, old, _ in ATTACKS), \
            (moves, pump.log_tail())
        # nothing moved, nothing in the tree leads outside it, nothing served from outside
        for _, _, old, new in ATTACKS:
            assert os.path.lexists(root + old) and not os.path.lexists(root + new)
        assert escaping_entries(pump.tree) == []
        for _, _, _, new in ATTACKS:
            r = requests.get(pump.http_url("pump") + day + "/" + alice + new + "/", timeout=10)
            assert r.status_code == 404 and "root:" not in r.text, (new, r.text[:200])
        r = requests.get(pump.http_url("pump") + day + "/" + alice + "/pw", timeout=10)
        assert r.status_code == 404 and "root:" not in r.text
        # and the pump still moves a good file from alice to carol
        good = os.path.join(pump.src["alice"], "after", "good.txt")
        os.makedirs(os.path.dirname(good), exist_ok=True)
        with open(good, "wb") as f:
            f.write(b"a good file after the attack\n")
        r = pump.post("alice", [good])
        assert r.returncode == 0, r.stderr
        at_carol = {"%s/%s/after/good.txt" % (day, alice): md5(good)}
        assert pump.wait_files(at_carol, 60) == 1, pump.log_tail()
        assert pump.arrived(at_carol) == at_carol
        assert escaping_entries(pump.dst) == []
    finally:
        tap.close()


# ------------------------------------------------------------------ a subscriber

def test_link_moved_out_of_a_mirroring_subscriber_tree_is_refused(sub_env, stub_http):
    """A subscriber with mirror on under a hostile upstream: the same posts, straight on its
    exchange. The moves are refused; a good file still arrives."""
    env, stub = sub_env, stub_http
    env.config(extra="mirror on")
    env.setup()
    base = stub.url + env.uid
    for rel, target, _, _ in ATTACKS:
        env.publish_msg(_link_post(base, rel, target))
    for _, _, old, new in ATTACKS:
        env.publish_msg(_move_post(base, old, new))
    data = b"good data\n"
    stub.files[f"/{env.uid}/good.txt"] = data
    env.publish_msg(post_msg(base, "/good.txt", data))
    p = env.foreground()
    reports = env.reports.wait(2 * len(ATTACKS) + 1, timeout=40)
    got = [(r["relpath"], r["code"]) for r in reports]
    n = len(ATTACKS)
    assert sorted(got[:n]) == sorted((rel, 201) for rel, _, _, _ in ATTACKS), env.log_text()
    assert sorted(got[n:2 * n]) == sorted((old, 403) for _, _, old, _ in ATTACKS), \
        env.log_text()
    assert got[2 * n] == ("/good.txt", 201), env.log_text()
    for _, _, old, new in ATTACKS:
        assert os.path.lexists(str(env.dst) + old) and not os.path.lexists(str(env.dst) + new)
    assert escaping_entries(env.dst) == []
    assert (env.dst / "good.txt").read_bytes() == data
    log = env.log_text()
    assert "outside the target directory" in log and "Traceback" not in log
    env.stop(p)
