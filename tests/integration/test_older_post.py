"""sr_subscribe skips a post older than its local copy (issue 19, item 6).

The plan's known bug "a post for an older version gives a bogus checksum mismatch": a post
that arrives late, after a newer version of the file was downloaded, named the same URL,
which now serves the newer bytes; the subscriber fetched them and reported 417. It now
compares the post's mtime with the local file's (as sr_sarra does: routing.newest_wins)
and reports 304 "older than the local file" without asking the server anything.
"""

import hashlib

from sarra import message
from tests.integration.subkit import post_msg, stub_http, sub_env, wait_for  # noqa: F401

OLD = b"version one\n"
NEW = b"version two, a little longer\n"


def _post(env, stub, data, mtime):
    env.publish_msg(post_msg(stub.url, "/obs/data.txt", data, {"mtime": mtime}))


def test_an_older_post_is_304_and_not_fetched(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config("preserve_time on\nmirror off", count_files=False)
    env.setup()
    stub.files["/obs/data.txt"] = NEW
    p = env.foreground()
    _post(env, stub, NEW, "20240315120000")          # the newer version first
    assert wait_for(lambda: (env.dst / "data.txt").exists()
                    and (env.dst / "data.txt").read_bytes() == NEW)
    assert env.reports.wait(1)[0]["code"] == 201
    assert stub.count("/obs/data.txt") == 1
    _post(env, stub, OLD, "20240315110000")          # late: an hour older
    env.reports.wait(2)
    older = env.reports.items[1]
    assert older["code"] == 304, older["body"]
    assert stub.count("/obs/data.txt") == 1          # no GET for the older post
    assert (env.dst / "data.txt").read_bytes() == NEW
    assert not any(r["code"] == 417 for r in env.reports.settle(1.0))
    # the same version again: not older, so the usual rule (same checksum: 304) applies,
    # and a newer one is downloaded
    newest = NEW + b"three\n"
    stub.files["/obs/data.txt"] = newest
    _post(env, stub, newest, "20240315130000")
    assert wait_for(lambda: (env.dst / "data.txt").read_bytes() == newest)
    assert stub.count("/obs/data.txt") == 2
    env.stop(p)
    assert "older than the local file" in env.log_text()


def test_older_removal_is_304_and_leaves_the_file(sub_env, stub_http):
    env, stub = sub_env, stub_http
    env.config("preserve_time on\nmirror off", count_files=False)
    env.setup()
    stub.files["/obs/data.txt"] = NEW
    p = env.foreground()
    _post(env, stub, NEW, message.format_time(2_000_000_000))    # mtime in 2033
    assert wait_for(lambda: (env.dst / "data.txt").exists())
    removed = message.make_post(message.now(), stub.url, "/obs/data.txt",
                                {"sum": "R," + hashlib.sha512(b"data.txt").hexdigest()})
    env.publish_msg(removed)                                      # published now: older
    codes = [r["code"] for r in env.reports.wait(2)]
    assert codes == [201, 304], codes
    assert (env.dst / "data.txt").read_bytes() == NEW
    env.stop(p)
