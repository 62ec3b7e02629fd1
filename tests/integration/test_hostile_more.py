"""Variants of issue 16's attacks found by a second look (red team), each refused.

``directory .../${SOURCE}`` (the form man sr_sarra gives for a pump copying another pump,
and man sr_subscribe documents): the ``source`` header comes from upstream. A hostile
upstream's ``source`` of ``../victim`` moved the target directory itself, so that a post
wrote, and a removal post deleted, files outside the tree. Now refused (403, acked) and a
good file still arrives.

Real parts: sr_subscribe in the foreground on the real broker, a loopback HTTP server.
"""

import os

from sarra import checksum, message
from tests.integration.test_subscribe_support import (  # noqa: F401  (fixtures)
    post_msg, stub_http, sub_env)


def test_source_header_cannot_move_the_target_directory(sub_env, stub_http):
    env, stub = sub_env, stub_http
    tree = env.tmp / "tree"
    victim = env.tmp / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep me")
    env.config(directory=str(tree) + "/${SOURCE}")
    env.setup()
    base = stub.url + env.uid
    data = b"planted\n"
    stub.files[f"/{env.uid}/planted.txt"] = data
    # a file written outside the tree, and a file outside it deleted
    env.publish_msg(post_msg(base, "/planted.txt", data, headers={"source": "../victim"}))
    env.publish_msg(message.make_post(message.now(), base, "/keep.txt", {
        "source": "../victim", "sum": "R," + checksum.name_sum("R", "keep.txt")}))
    good = b"good data\n"
    stub.files[f"/{env.uid}/good.txt"] = good
    env.publish_msg(post_msg(base, "/good.txt", good, headers={"source": "alice"}))
    p = env.foreground()
    reports = env.reports.wait(3, timeout=40)
    got = [(r["relpath"], r["code"]) for r in reports]
    assert got == [("/planted.txt", 403), ("/keep.txt", 403), ("/good.txt", 201)], \
        env.log_text()
    assert (victim / "keep.txt").read_text() == "keep me"
    assert not os.path.exists(victim / "planted.txt")
    assert (tree / "alice" / "good.txt").read_bytes() == good
    log = env.log_text()
    assert "not a plain name" in log and "Traceback" not in log
    env.stop(p)
