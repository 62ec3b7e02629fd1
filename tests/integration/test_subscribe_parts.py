"""Files announced in blocks, delivered in shuffled order: reassembly in place (one and two
instances, on_file exactly once) and separate part files (inplace off)."""

import hashlib
import os
import random

import pytest

from sarra import checksum, message
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    files_under, md5, sub_env, wait_for)

SIZE = 100_000_000          # 100 MB ...
BSZ = 10 << 20              # ... in 10 MiB blocks: 9 full blocks and a short last one


@pytest.fixture(scope="module")
def big(http_server):
    """A 100 MB file on the module's HTTP server, with its block posts (unshuffled)."""
    path = http_server.root / "big.bin"
    with open(path, "wb") as f:
        for _ in range(SIZE // (10 << 20) + 1):
            f.write(os.urandom(min(10 << 20, SIZE - f.tell())))
    parts = checksum.plan_parts(SIZE, BSZ)
    sums = checksum.hash_parts(str(path), "d", parts)
    st = os.stat(path)
    msgs = [message.make_post(message.now(), http_server.url, "/big.bin", {
        "sum": "d," + s, "parts": str(p), "mtime": message.format_time(st.st_mtime),
        "atime": message.format_time(st.st_atime), "mode": "644"})
        for p, s in zip(parts, sums)]
    return path, md5(path), msgs


def _publish_shuffled(env, msgs, seed):
    order = list(range(len(msgs)))
    random.Random(seed).shuffle(order)
    if order[-1] == len(msgs) - 1:          # the last block must not come last
        order[-1], order[0] = order[0], order[-1]
    for i in order:
        env.publish_msg(msgs[i])
    return order


def test_inplace_shuffled_blocks_one_instance(sub_env, big):
    env = sub_env
    path, digest, msgs = big
    assert len(msgs) == 10 and msgs[-1].parts.length == SIZE - 9 * BSZ
    env.config(count_files="parts")
    env.setup()
    _publish_shuffled(env, msgs, 1)
    p = env.foreground()
    reports = env.reports.wait(10, timeout=120)
    assert [r["code"] for r in reports] == [201] * 10, env.log_text()
    assert {r["headers"]["message"] for r in reports} == {"Inserted"}
    final = env.dst / "big.bin"
    assert md5(final) == digest
    assert os.stat(final).st_mtime == pytest.approx(os.stat(path).st_mtime, abs=0.01)
    assert env.on_file_lines() == [str(final)]              # exactly once, when complete
    assert len(env.hook_lines("on_part")) == 10
    assert files_under(env.dst) == ["big.bin"]               # no temporary file left
    # the same blocks again (a redelivery): nothing is rewritten, on_file does not fire
    for m in msgs[:3]:
        env.publish_msg(m)
    later = env.reports.wait(13, timeout=30)[10:]
    assert [r["code"] for r in later] == [304] * 3
    assert env.on_file_lines() == [str(final)]
    assert md5(final) == digest
    env.stop(p)


def test_inplace_shuffled_blocks_two_instances(sub_env, big):
    env = sub_env
    path, digest, msgs = big
    env.config(count_files="parts", extra="instances 2\nprefetch 1")
    env.setup()
    r = env.cmd("start", env.name, check=True)
    assert "started 2 instance(s)" in r.stdout, r.stdout + r.stderr
    queue = env.queue_name()
    assert wait_for(lambda: env.channel().queue_declare(queue, passive=True)[2] == 2)
    _publish_shuffled(env, msgs, 2)
    reports = env.reports.wait(10, timeout=120)
    assert [r["code"] for r in reports] == [201] * 10
    final = env.dst / "big.bin"
    assert md5(final) == digest
    assert env.on_file_lines() == [str(final)]
    pids = {pid for pid, _ in env.hook_lines("on_part")}
    assert len(pids) == 2, env.hook_lines("on_part")     # both instances wrote blocks
    assert files_under(env.dst) == ["big.bin"]
    r = env.cmd("stop", env.name, check=True)
    assert "stopped 2 instance(s)" in r.stdout


def test_part_files_when_inplace_off(sub_env, big):
    env = sub_env
    path, digest, msgs = big
    env.config(count_files="parts", extra="inplace off")
    env.setup()
    _publish_shuffled(env, msgs, 3)
    p = env.foreground()
    reports = env.reports.wait(10, timeout=120)
    assert [r["code"] for r in reports] == [201] * 10, env.log_text()
    brem = SIZE % BSZ
    names = [f"big.bin.{BSZ}.10.{brem}.{k}.d.Part" for k in range(10)]
    assert files_under(env.dst) == sorted(names)
    data = path.read_bytes()
    for k, name in enumerate(names):
        block = data[k * BSZ:(k + 1) * BSZ]
        assert hashlib.md5((env.dst / name).read_bytes()).hexdigest() == \
            hashlib.md5(block).hexdigest(), name
    assert env.on_file_lines() == []                  # no whole file was assembled here
    assert len(env.hook_lines("on_part")) == 10
    env.stop(p)


# ---------------------------------------------------------------- new versions of a file

VBSZ = 64 << 10


def _version_posts(http_server, name, mtime=True, extra=None):
    """The block posts of the file as it is now on the server: one posting, so one
    pubtime on every block (as v2, sr3 and sr_post post them), a new one each time."""
    path = http_server.root / name
    parts = checksum.plan_parts(os.path.getsize(path), VBSZ)
    sums = checksum.hash_parts(str(path), "d", parts)
    pubtime = message.now()
    out = []
    for p, s in zip(parts, sums):
        h = {"sum": "d," + s, "parts": str(p), "mode": "644", **(extra or {})}
        if mtime:
            h["mtime"] = message.format_time(os.stat(path).st_mtime)
        out.append(message.make_post(pubtime, http_server.url, "/" + name, h))
    return out


def test_a_late_block_of_an_older_version_does_not_undo_the_newer_one(sub_env, http_server):
    """Version 1's last block comes in (a redelivery, a retry, another instance) after
    version 2 has begun: it is refused (304) and version 2 is assembled, on_file once."""
    env = sub_env
    src = http_server.root / "stale.bin"
    v1 = os.urandom(4 * VBSZ)
    src.write_bytes(v1)
    os.utime(src, (1700000000, 1700000000))
    g1 = _version_posts(http_server, "stale.bin")
    env.config(count_files="parts")
    env.setup()
    for m in g1[:3]:
        env.publish_msg(m)
    p = env.foreground()
    assert [r["code"] for r in env.reports.wait(3, timeout=60)] == [201] * 3
    v2 = os.urandom(VBSZ) + v1[VBSZ:]                 # rewritten: block 0 changes
    src.write_bytes(v2)
    os.utime(src, (1700000100, 1700000100))
    g2 = _version_posts(http_server, "stale.bin")
    for m in (g2[0], g2[1], g1[3], g2[2], g2[3]):
        env.publish_msg(m)
    reports = env.reports.wait(8, timeout=60)
    env.stop(p)
    codes = [(r["code"], r["headers"]["message"]) for r in reports[3:]]
    assert codes[2] == (304, "not modified3: block of an older version of the file than "
                             "the one already here"), codes
    assert [c for c, _ in codes] == [201, 201, 304, 201, 201], codes
    final = env.dst / "stale.bin"
    assert final.read_bytes() == v2
    assert env.on_file_lines() == [str(final)]
    assert files_under(env.dst) == ["stale.bin"]


def test_a_rewritten_file_without_mtime_is_fetched_again(sub_env, http_server):
    """Posts without mtime (the poster does not preserve times): each posting is a version
    of its own (its pubtime), so a rewritten file is not taken for the one already here."""
    env = sub_env
    src = http_server.root / "nomtime.bin"
    src.write_bytes(os.urandom(4 * VBSZ))
    env.config(count_files="parts")
    env.setup()
    for m in _version_posts(http_server, "nomtime.bin", mtime=False):
        env.publish_msg(m)
    p = env.foreground()
    assert [r["code"] for r in env.reports.wait(4, timeout=60)] == [201] * 4
    v2 = os.urandom(4 * VBSZ)
    src.write_bytes(v2)
    for m in _version_posts(http_server, "nomtime.bin", mtime=False):
        env.publish_msg(m)
    reports = env.reports.wait(8, timeout=60)
    env.stop(p)
    assert [r["code"] for r in reports[4:]] == [201] * 4
    assert files_under(env.dst) == ["nomtime.bin"]
    assert (env.dst / "nomtime.bin").read_bytes() == v2
    assert len(env.on_file_lines()) == 2


def test_a_changed_file_with_duplicate_suppression_on(sub_env, http_server):
    """suppress_duplicates on: the unchanged blocks of a rewritten file are not dropped as
    duplicates (the new version needs them): they are copied from the local file, and
    only the changed block is downloaded. The same version posted again is a 304."""
    env = sub_env
    src = http_server.root / "cached.bin"
    v1 = os.urandom(4 * VBSZ)
    src.write_bytes(v1)
    os.utime(src, (1700000000, 1700000000))
    env.config(count_files="parts", extra="suppress_duplicates on")
    env.setup()
    for m in _version_posts(http_server, "cached.bin"):
        env.publish_msg(m)
    p = env.foreground()
    assert [r["code"] for r in env.reports.wait(4, timeout=60)] == [201] * 4
    v2 = v1[:3 * VBSZ] + os.urandom(VBSZ)             # only the last block changes
    src.write_bytes(v2)
    os.utime(src, (1700000100, 1700000100))
    g2 = _version_posts(http_server, "cached.bin")
    # the server now has other bytes in blocks 0-2: downloading them would fail (417)
    src.write_bytes(os.urandom(3 * VBSZ) + v2[3 * VBSZ:])
    for m in g2:
        env.publish_msg(m)
    reports = env.reports.wait(8, timeout=60)
    assert [r["code"] for r in reports[4:]] == [201] * 4, env.log_text()
    final = env.dst / "cached.bin"
    assert final.read_bytes() == v2
    for m in g2:                                      # the same version again
        env.publish_msg(m)
    reports = env.reports.wait(12, timeout=60)
    env.stop(p)
    assert [r["code"] for r in reports[8:]] == [304] * 4
    assert final.read_bytes() == v2
    assert len(env.on_file_lines()) == 2
    assert files_under(env.dst) == ["cached.bin"]
