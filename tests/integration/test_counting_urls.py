"""Issue 17 items 5 and 6 against the real broker and a real HTTP server on loopback that
records the paths asked for: base URL + relpath is fetched without '//', a checksum
mismatch is retried once then counted failed in the "stopped:" summary, and a long
transfer logs progress lines while it runs."""

import hashlib
import re

from tests.integration.subkit import (  # noqa: F401  (fixtures)
    files_under, post_msg, stub_http, sub_env, wait_for)


def _stopped_line(env):
    lines = [x for x in env.log_text().splitlines() if "stopped: " in x]
    assert lines, env.log_text()[-3000:]
    return lines[-1]


def test_http_base_and_v2_relpath_are_fetched_without_a_double_slash(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config(extra="mirror on")
    env.setup()
    data = b"joined once\n"
    stub.files["/dir/file"] = data
    assert stub.url.endswith("/")
    msg = post_msg(stub.url, "/dir/file", data)     # v2's form: base ends and relpath starts with '/'
    env.publish_msg(msg)
    p = env.foreground()
    reports = env.reports.wait(1, timeout=30)
    assert [r["code"] for r in reports] == [201], env.log_text()[-3000:]
    # the report keeps the message's own fields, as v2 wrote them
    assert reports[0]["fields"][1:3] == [stub.url, "/dir/file"]
    assert stub.requests == ["/dir/file"]
    assert (env.dst / "dir" / "file").read_bytes() == data
    env.stop(p)
    assert p.returncode == 0


def test_checksum_mismatch_is_retried_once_and_counted_failed(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config()
    env.setup()
    base = stub.url.rstrip("/")                 # no '//' either way: this test is about 417
    stub.files["/bad.txt"] = b"the bytes on the server\n"     # same length: not a 413
    stub.files["/good.txt"] = b"as announced\n"
    env.publish_msg(post_msg(base, "/bad.txt", b"the bytes in the posts!\n"))
    env.publish_msg(post_msg(base, "/good.txt", b"as announced\n"))
    p = env.foreground()
    env.reports.wait(3, timeout=60)              # good 201, bad 417, bad 417 after backoff
    reports = env.reports.settle(3.0)            # ... and no third try
    assert sorted(env.reports.codes("/bad.txt")) == [417, 417], env.log_text()[-3000:]
    assert env.reports.codes("/good.txt") == [201]
    assert len(reports) == 3
    assert stub.count("/bad.txt") == 2
    assert files_under(env.dst) == ["good.txt"]
    env.stop(p)
    assert p.returncode == 0
    line = _stopped_line(env)
    assert " failed=2" in line and " transferred=1" in line, line
    assert "again after a retry: not retried" in env.log_text()


def test_a_slow_transfer_logs_its_progress(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config()
    env.setup()
    data = bytes(range(256)) * 4800                 # 1.2 MB in 1 kB pieces every 10 ms
    stub.files["/slow.bin"] = data
    base = stub.url.rstrip("/")
    stub.trickle["/slow.bin"] = 1000                # at least 12 s
    env.publish_msg(post_msg(base, "/slow.bin", data))
    p = env.foreground()
    reports = env.reports.wait(1, timeout=90)
    assert [r["code"] for r in reports] == [201], env.log_text()[-3000:]
    env.stop(p)
    assert hashlib.md5((env.dst / "slow.bin").read_bytes()).hexdigest() == \
        hashlib.md5(data).hexdigest()
    lines = [x for x in env.log_text().splitlines() if ": progress: " in x]
    assert lines, env.log_text()[-3000:]
    m = re.search(r"/slow\.bin: progress: ([\d.]+) (k?B|MB) of 1\.2 MB \((\d+)%\) in (\d+) s, "
                  r"[\d.]+ (B|kB|MB)/s$", lines[0])
    assert m, lines
    assert int(m.group(3)) < 100 and 9 <= int(m.group(4)) <= 16, lines
