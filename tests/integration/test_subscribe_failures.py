"""Bad input and failures: paths escaping the target, checksum mismatches, malformed
messages, an unwritable directory, a missing file (404). Nothing is written where it must
not be, every message is either acked as done or kept in the retry queue, and retries
back off instead of looping."""

import os
import time

from tests.integration.subkit import retry_entries as _retry_entries
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    files_under, post_msg, stub_http, sub_env, wait_for)


def test_paths_outside_the_target_are_refused(sub_env, stub_http, tmp_path):
    env, stub = sub_env, stub_http
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, env.dst / "link")       # a directory symlink inside the target
    env.config(extra="mirror on")
    env.setup()
    base = stub.url + env.uid
    stub.files[f"/{env.uid}/x.txt"] = b"payload"
    bad = {
        "/../escape1.txt": {},
        "/sub/../../escape2.txt": {},
        "/ok/name.txt": {"rename": str(outside / "escape3.txt")},   # absolute rename
        "/ok/other.txt": {"rename": "../../escape4.txt"},
        "/link/escape5.txt": {},                                    # through the symlink
    }
    for rel, extra in bad.items():
        m = post_msg(base, rel, b"payload", headers=extra)
        m.relpath = rel             # as given, even the '..'
        env.publish_msg(m)
    p = env.foreground()
    reports = env.reports.wait(5, timeout=30)
    assert sorted(r["code"] for r in reports) == [403] * 5, [r["body"] for r in reports]
    assert all("Forbidden" in r["headers"]["message"] for r in reports)
    assert stub.requests == []                  # nothing was even downloaded
    assert list(outside.iterdir()) == []
    assert not [f for f in files_under(tmp_path) if "escape" in f or "name.txt" in f]
    assert files_under(env.dst) == []
    log = env.log_text()
    assert "escape5.txt" in log and "outside the target directory" in log
    env.stop(p)


def test_checksum_mismatch_leaves_no_file(sub_env, http_server):
    env = sub_env
    env.src = http_server.root / env.uid
    env.src.mkdir()
    env.base_url = http_server.url + env.uid + "/"
    (env.src / "changing.txt").write_bytes(b"version one, as announced\n")
    (env.src / "steady.txt").write_bytes(b"not changed\n")
    env.config()
    env.setup()
    env.post(env.src)
    # same length: a longer one is refused before its checksum matters (413, test_transfer_bounds)
    (env.src / "changing.txt").write_bytes(b"version TWO, as announced\n")
    p = env.foreground()
    reports = {r["relpath"]: r for r in env.reports.wait(2, timeout=30)}
    bad = reports["/changing.txt"]
    assert bad["code"] == 417, bad["body"]
    assert "checksum mismatch" in bad["headers"]["message"]
    assert reports["/steady.txt"]["code"] == 201
    assert files_under(env.dst) == ["steady.txt"]      # no file under the final name, no temp
    assert env.on_file_lines() == [str(env.dst / "steady.txt")]
    env.stop(p)


def test_malformed_messages_are_logged_reported_and_acked(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config()
    env.setup()
    queue = env.queue_name()
    base = stub.url + env.uid
    stub.files[f"/{env.uid}/good.txt"] = b"good"
    good = post_msg(base, "/good.txt", b"good")
    t, body, headers = good.encode()
    env.publish(body.replace("good.txt", "badparts.txt"), dict(headers, parts="x,1,2"))
    env.publish(body.replace("good.txt", "nosum.txt"),
                {k: v for k, v in headers.items() if k != "sum"})
    env.publish("this is not a v02 message at all", {}, topic="v02.post.junk")
    env.publish(b"\xff\xfe garbage \x00", {"sum": "d,zz"}, topic="v02.post")
    env.publish_msg(good)
    p = env.foreground()
    reports = {r["relpath"]: r for r in env.reports.wait(3, timeout=30)}
    assert reports["/good.txt"]["code"] == 201
    for rel in ("/badparts.txt", "/nosum.txt"):
        assert reports[rel]["code"] == 417, reports
        assert len(reports[rel]["fields"]) == 7
    env.reports.settle(1.0)
    assert len(env.reports.items) == 3     # the two without a post's fields are not reported
    assert files_under(env.dst) == ["good.txt"]
    env.stop(p)
    assert p.returncode == 0
    assert env.queue_depth(queue) == 0     # all acked: nothing comes back
    log = env.log_text()
    assert log.count("malformed message") == 4, log
    assert "header parts" in log and "header sum" in log


def test_unwritable_directory_goes_to_retry_then_succeeds(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config(extra="mirror on")
    env.setup()
    queue = env.queue_name()
    (env.dst / "blocked").write_text("a file where a directory should be")
    stub.files[f"/{env.uid}/blocked/f.txt"] = b"content"
    env.publish_msg(post_msg(stub.url + env.uid, "/blocked/f.txt", b"content"))
    p = env.foreground()
    first = env.reports.wait(1, timeout=30)[0]
    assert first["code"] == 500
    assert str(env.dst / "blocked") in first["headers"]["message"]
    assert wait_for(lambda: len(_retry_entries(env)) == 1, timeout=10)
    assert env.queue_depth(queue) == 0          # acked only once safely in the retry queue
    log = env.log_text()
    assert f"cannot create directory {env.dst / 'blocked'}" in log, log
    os.unlink(env.dst / "blocked")               # the obstacle goes away
    assert env.wait_files({"blocked/f.txt": __import__("hashlib").md5(b"content").hexdigest()},
                          timeout=30) == {}, env.log_text()
    assert wait_for(lambda: env.reports.wait(2, timeout=1)[-1]["code"] == 201, timeout=10)
    assert wait_for(lambda: _retry_entries(env) == [], timeout=10)
    env.stop(p)


def test_not_found_is_reported_and_retried_with_backoff(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config()
    env.setup()
    env.publish_msg(post_msg(stub.url + env.uid, "/missing.txt", b"never served"))
    p = env.foreground()
    first = env.reports.wait(1, timeout=30)[0]
    assert first["code"] == 404, first["body"]
    t0 = time.monotonic()
    time.sleep(4.5)
    attempts = stub.count(f"/{env.uid}/missing.txt")
    # backoff 1 s, 2 s (+10 % jitter) after the first try: 3 tries in 4.5 s, not thousands
    assert 2 <= attempts <= 4, attempts
    assert len(_retry_entries(env)) == 1
    codes = env.reports.settle(0.5)
    assert {r["code"] for r in codes} == {404}
    # once the file appears, the next retry gets it
    stub.files[f"/{env.uid}/missing.txt"] = b"never served"
    assert env.wait_files({"missing.txt": __import__("hashlib").md5(b"never served").hexdigest()},
                          timeout=30) == {}
    assert time.monotonic() - t0 < 30
    env.stop(p)
