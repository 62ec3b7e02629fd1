"""sr_subscribe placement and behaviour options against the real broker and a stub HTTP
server: directory per accept, mirror, strip, flatten, inflight, duplicate suppression,
overwrite, removals, links, failing plugins, a missing report exchange."""

import os
import re
import threading

import pytest

from sarra import message
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    files_under, post_msg, stub_http, sub_env, wait_for)


def _serve(stub, env, rel, data):
    stub.files["/" + env.uid + rel] = data
    return post_msg(stub.url + env.uid, rel, data)


def test_directory_per_accept_mirror_strip_flatten(sub_env, stub_http):
    env, stub = sub_env, stub_http
    d = env.dst
    env.config(accept=False, extra=f"""
        directory {d}/a
        accept .*/a/.*
        directory {d}/m
        mirror on
        accept .*/m/.*
        directory {d}/s
        strip 2
        accept .*/s/.*
        strip 0
        mirror off
        directory {d}/f
        flatten -
        accept .*/f/.*
        """)
    env.setup()
    msgs = [_serve(stub, env, rel, rel.encode() * 3) for rel in (
        "/a/x/one.txt", "/m/x/y/two.txt", "/s/x/y/three.txt", "/f/x/four.txt", "/other/five.txt")]
    for m in msgs:
        env.publish_msg(m)
    p = env.foreground()
    reports = env.reports.wait(4, timeout=30)
    assert sorted(r["code"] for r in reports) == [201] * 4, env.log_text()
    assert files_under(d) == ["a/one.txt", "f/f-x-four.txt", "m/m/x/y/two.txt", "s/y/three.txt"]
    assert (d / "m/m/x/y/two.txt").read_bytes() == b"/m/x/y/two.txt" * 3
    env.reports.settle(1.0)
    assert len(env.reports.items) == 4      # the unmatched one is rejected without a report
    env.stop(p)


@pytest.mark.parametrize("inflight,temp_name", [
    (None, "big.bin.tmp"),               # the subscriber's default: .tmp suffix
    (".", ".big.bin"),
    ("tmp/", "tmp/big.bin"),
    ("NONE", ".big.bin.sarra-tmp"),
])
def test_inflight_names(sub_env, stub_http, inflight, temp_name):
    env, stub = sub_env, stub_http
    env.config(extra=f"inflight {inflight}" if inflight else "")
    env.setup()
    data = os.urandom(1 << 20)
    msg = _serve(stub, env, "/big.bin", data)
    gate = stub.gates["/" + env.uid + "/big.bin"] = threading.Event()
    env.publish_msg(msg)
    p = env.foreground()
    # half the body is in: the file exists under its temporary name only
    assert wait_for(lambda: (env.dst / temp_name).exists()), (files_under(env.dst), env.log_text())
    assert not (env.dst / "big.bin").exists()
    gate.set()
    assert env.reports.wait(1)[0]["code"] == 201
    assert files_under(env.dst) == ["big.bin"]
    assert (env.dst / "big.bin").read_bytes() == data
    env.stop(p)


def test_duplicates_suppressed_and_identical_local_file_not_fetched(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config(extra="suppress_duplicates on")
    env.setup()
    m1 = _serve(stub, env, "/dup.txt", b"same content")
    m2 = _serve(stub, env, "/here.txt", b"already here")
    (env.dst / "here.txt").write_bytes(b"already here")
    mtime = message.parse_time(m2.headers["mtime"])     # the same version (not older)
    os.utime(env.dst / "here.txt", (mtime, mtime))
    env.publish_msg(m1)
    env.publish_msg(m1)          # the same announcement twice
    env.publish_msg(m2)
    p = env.foreground()
    reports = env.reports.wait(3, timeout=30)
    by = {}
    for r in reports:
        by.setdefault(r["relpath"], []).append((r["code"], r["headers"]["message"]))
    assert by["/dup.txt"] == [(201, "Downloaded"), (304, "Not modified1")], by
    assert by["/here.txt"] == [(304, "not modified3")], by
    assert stub.count(f"/{env.uid}/dup.txt") == 1
    assert stub.count(f"/{env.uid}/here.txt") == 0           # never fetched
    assert env.on_file_lines() == [str(env.dst / "dup.txt")]
    env.stop(p)


def test_remove_and_link_announcements(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config(extra="mirror on")
    env.setup()
    (env.dst / "sub").mkdir()
    (env.dst / "sub" / "gone.txt").write_text("to be removed")
    base = stub.url + env.uid
    env.publish_msg(post_msg(base, "/sub/gone.txt", headers={"sum": "R,0", "parts": None}))
    env.publish_msg(post_msg(base, "/sub/link.txt",
                             headers={"sum": "L,0", "parts": None, "link": "target.txt"}))
    env.publish_msg(post_msg(base, "/sub/never.txt", headers={"sum": "R,0", "parts": None}))
    p = env.foreground()
    reports = {r["relpath"]: (r["code"], r["headers"]["message"]) for r in env.reports.wait(3)}
    assert reports["/sub/gone.txt"] == (201, "removed")
    assert reports["/sub/link.txt"] == (201, "Linked")
    assert reports["/sub/never.txt"][0] == 304
    assert not os.path.lexists(env.dst / "sub" / "gone.txt")
    assert os.readlink(env.dst / "sub" / "link.txt") == "target.txt"
    env.stop(p)


def test_failing_plugins_are_logged_and_the_flow_goes_on(sub_env, stub_http):
    env, stub = sub_env, stub_http
    (env.plugdir / "boom_msg.py").write_text(
        "def on_message(parent):\n"
        "    if 'boom' in parent.msg.relpath:\n"
        "        raise RuntimeError('exploding on purpose')\n"
        "    return True\n")
    (env.plugdir / "boom_file.py").write_text(
        "def on_file(parent):\n"
        "    raise ValueError('on_file exploding')\n")
    env.config(extra="on_message boom_msg\non_file boom_file")
    env.setup()
    for rel in ("/ok1.txt", "/boom.txt", "/ok2.txt"):
        env.publish_msg(_serve(stub, env, rel, rel.encode()))
    p = env.foreground()
    reports = env.reports.wait(2, timeout=30)
    assert sorted(r["relpath"] for r in reports) == ["/ok1.txt", "/ok2.txt"]
    assert files_under(env.dst) == ["ok1.txt", "ok2.txt"]
    log = env.log_text()
    assert "plugin boom_msg on_message failed for /boom.txt: RuntimeError: exploding" in log, log
    assert "plugin boom_file on_file failed for /ok1.txt: ValueError: on_file exploding" in log
    env.reports.settle(1.0)
    assert len(env.reports.items) == 2       # a message dropped by on_message is not reported
    env.stop(p)
    assert p.returncode == 0


def test_missing_report_exchange_one_warning_downloads_go_on(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config(report=f"xs_guest_missing{env.uid}")
    env.setup()
    expected = {}
    for i in range(20):
        rel = f"/r{i}.txt"
        env.publish_msg(_serve(stub, env, rel, rel.encode() * 10))
        expected[rel[1:]] = __import__("hashlib").md5(rel.encode() * 10).hexdigest()
    p = env.foreground()
    assert env.wait_files(expected, timeout=30) == {}, env.log_text()
    env.stop(p)
    log = env.log_text()
    assert log.count("reports switched off") == 1, log
    assert f"xs_guest_missing{env.uid}" in log
    assert len(env.on_file_lines()) == 20


def test_do_download_plugin(sub_env, stub_http):
    env, stub = sub_env, stub_http
    (env.plugdir / "custom_dl.py").write_text(
        "import os\n"
        "def do_download(parent):\n"
        "    m = parent.msg\n"
        "    if not m.urlstr.startswith('custom:'):\n"
        "        return None                       # not ours: the built-in driver\n"
        "    data = m.urlstr.encode() * 3\n"
        "    if 'direct' in m.urlstr:              # v2 style: the final name itself\n"
        "        target = os.path.join(m.new_dir, m.new_file)\n"
        "    else:\n"
        "        target = m.new_inflight_path\n"
        "    with open(target, 'wb') as f:\n"
        "        f.write(data)\n"
        "    return True\n")
    env.config(extra="do_download custom_dl")
    env.setup()
    base = "custom://somewhere"

    def expected(rel):
        return (base + rel).encode() * 3

    for rel in ("/inflight.txt", "/direct.txt"):
        env.publish_msg(post_msg(base, rel, expected(rel)))
    env.publish_msg(post_msg(base, "/bad.txt", b"not what the plugin writes"))
    env.publish_msg(post_msg(base, "/directbad.txt", b"not what the plugin writes"))
    env.publish_msg(_serve(stub, env, "/plain.txt", b"over http"))
    p = env.foreground()
    reports = {r["relpath"]: r["code"] for r in env.reports.wait(5, timeout=30)}
    assert reports == {"/inflight.txt": 201, "/direct.txt": 201, "/bad.txt": 417,
                       "/directbad.txt": 417, "/plain.txt": 201}, env.log_text()
    assert files_under(env.dst) == ["direct.txt", "inflight.txt", "plain.txt"]
    assert (env.dst / "inflight.txt").read_bytes() == expected("/inflight.txt")
    assert (env.dst / "direct.txt").read_bytes() == expected("/direct.txt")
    env.stop(p)


def test_report_publish_refused_one_warning_downloads_go_on(sub_env, stub_http, broker_url):
    """A user who may not write to the report exchange: the first report is refused by the
    broker (permissions); reports are switched off with one warning, files keep coming."""
    import urllib.parse

    import requests
    env, stub = sub_env, stub_http
    u = urllib.parse.urlsplit(broker_url)
    api = f"http://{u.hostname}:15672/api"
    admin = (u.username or "guest", u.password or "guest")
    user, password = f"sub{env.uid}", "pw" + env.uid
    r = requests.put(f"{api}/users/{user}", json={"password": password, "tags": ""},
                     auth=admin, timeout=10)
    assert r.status_code in (201, 204), r.text
    try:
        r = requests.put(f"{api}/permissions/%2F/{user}", auth=admin, timeout=10, json={
            "configure": f"^q_{user}\\..*", "write": f"^q_{user}\\..*", "read": ".*"})
        assert r.status_code in (201, 204), r.text
        env.credentials(f"amqp://{user}:{password}@{u.hostname}:{u.port or 5672}/\n")
        env.config()
        cfg = env.config_path.read_text().replace(
            f"broker {broker_url}", f"broker amqp://{user}@{u.hostname}:{u.port or 5672}/")
        env.config_path.write_text(cfg)
        env.setup()
        want = {}
        for i in range(5):
            rel = f"/p{i}.txt"
            env.publish_msg(_serve(stub, env, rel, rel.encode() * 4))
            want[rel[1:]] = __import__("hashlib").md5(rel.encode() * 4).hexdigest()
        p = env.foreground()
        assert env.wait_files(want, timeout=30) == {}, env.log_text()
        env.reports.settle(1.0)
        env.stop(p)
        log = env.log_text()
        assert log.count("reports switched off") == 1, log
        assert "access refused" in log.lower() or "ACCESS_REFUSED" in log
        assert env.reports.items == []
        # the refusal closed only the reports' channel: no delivery came back a second time
        # (a redelivered one would be received again and end as a 304, without on_file)
        assert len(env.on_file_lines()) == 5, log
        assert sorted(env.on_file_lines()) == sorted(str(env.dst / r) for r in want), log
        stopped = [x for x in log.splitlines() if "stopped: " in x]
        assert stopped and re.search(r"\breceived=(\d+)", stopped[-1]).group(1) == "5", log
        assert " 304 " not in log, log
        assert password not in log
        env.cmd("cleanup", env.name)
    finally:
        requests.delete(f"{api}/users/{user}", auth=admin, timeout=10)
