"""Files announced in blocks, written in place by the real sr_subscribe flow (file: URLs, a
fake queue): versions of a file, sr3's parts, a stop between completion and rename, modes."""

import hashlib
import os

import pytest

from sarra import checksum, message
from sarra.flow import presets as components
from sarra.config import parser as config
from sarra.broker.client import Delivery, DeliveryTag
from sarra.flow.engine import Flow
from tests.support.flowfakes import FakeConsumer, FakeReporter

BSZ = 1024
_tag = iter(range(1, 10**6))


@pytest.fixture
def env(home, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    plug = tmp_path / "count_files.py"
    log = tmp_path / "on_file.log"
    plug.write_text("def on_file(parent):\n"
                    f"    open({str(log)!r}, 'a').write(parent.msg.local_path + '\\n')\n")
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(dst)), ("on_file", str(plug))])
    flow = Flow(cfg, components.preset("subscribe"))
    flow.consumer, flow.reporter = FakeConsumer(), Reports()

    class Env:
        pass
    e = Env()
    e.src, e.dst, e.flow, e.final = src / "f.bin", dst, flow, dst / "f.bin"
    e.on_file = lambda: log.read_text().split() if log.exists() else []
    return e


class Reports(FakeReporter):
    """(code, text) of each report."""

    def report(self, msg, code, text, received):
        self.sent.append((code, text))


def posts(path, pubtime="20240101000000.0", mtime="20240101000000.0", sums=True):
    parts = checksum.plan_parts(os.path.getsize(path), BSZ)
    values = checksum.hash_parts(str(path), "d", parts)
    out = []
    for p, v in zip(parts, values):
        h = {"sum": "d," + v if sums else "0,1", "parts": str(p)}
        if mtime:
            h["mtime"] = mtime
        out.append(message.make_post(pubtime, "file:", str(path), h))
    return out


def feed(env, msgs, redelivered=False):
    """Each message as its own batch; the (code, text) of each report."""
    start = len(env.flow.reporter.sent)
    for m in msgs:
        topic, body, hdrs = m.encode()
        env.flow.consumer.inbox.append(Delivery("xs_x", topic, body, b"", hdrs,
                                                DeliveryTag(next(_tag), 0), redelivered, {}))
        env.flow.handle(env.flow.gather())
    return env.flow.reporter.sent[start:]


def test_sr3_parts_assemble_and_take_the_size_from_the_last_block(env):
    """sr3 writes each block's own length in the 4th field (brem == bsz on the others):
    the blocks are one version, and the file size comes from the last block's post, also
    when the file is completed by another block."""
    data = os.urandom(3 * BSZ + 100)
    env.src.write_bytes(data)
    msgs = []
    for k in range(4):
        length = 100 if k == 3 else BSZ
        block = data[k * BSZ:k * BSZ + length]
        msgs.append(message.make_post("20240101000000.0", "file:", str(env.src), {
            "sum": "d," + hashlib.md5(block).hexdigest(),
            "parts": f"i,{BSZ},4,{length},{k}", "mtime": "20240101000000.0"}))
    got = feed(env, [msgs[3], msgs[0], msgs[2], msgs[1]])
    assert [c for c, _ in got] == [201] * 4, got
    assert env.final.read_bytes() == data
    assert env.on_file() == [str(env.final)]


def test_a_block_with_another_sum_for_the_same_version_starts_it_again(env):
    """Same mtime, other content (a file rewritten within the mtime's resolution): a block
    whose sum differs from the one recorded is a new version, not 'already received'."""
    env.src.write_bytes(os.urandom(4 * BSZ))
    v1 = posts(env.src)
    assert [c for c, _ in feed(env, v1[:2])] == [201, 201]
    v2data = os.urandom(4 * BSZ)
    env.src.write_bytes(v2data)
    v2 = posts(env.src)                 # same mtime and pubtime, other sums
    assert [c for c, _ in feed(env, v2)] == [201] * 4
    assert env.final.read_bytes() == v2data
    assert env.on_file() == [str(env.final)]


def test_the_same_file_again_with_a_new_mtime_is_copied_not_downloaded(env):
    """Every block of a new version is already in the local file (touched, not changed):
    each is copied from it and checked, none is downloaded; the version is completed like
    any other (201, on_file, and a re-posting flow posts every block of it)."""
    data = os.urandom(4 * BSZ)
    env.src.write_bytes(data)
    assert [c for c, _ in feed(env, posts(env.src))] == [201] * 4
    env.src.write_bytes(os.urandom(4 * BSZ))     # a download would now fail its checksum
    later = posts(env.final, pubtime="20240101000100.0", mtime="20240101000100.0")
    assert feed(env, later) == [(201, "Inserted")] * 4
    assert env.final.read_bytes() == data
    assert env.on_file() == [str(env.final)] * 2
    assert sorted(os.listdir(env.dst)) == ["f.bin"]


def test_blocks_whose_sum_is_not_of_the_data_from_two_feeds(env):
    """sum 0 (a random number on each post): two feeds of the same file, interleaved. The
    sums say nothing about the content, so they never make a new version."""
    data = os.urandom(3 * BSZ)
    env.src.write_bytes(data)
    feeds = []
    for n in (1, 2):
        msgs = posts(env.src, sums=False)
        for m in msgs:
            m.headers["sum"] = f"0,{n}{m.parts.bno}"
        feeds.append(msgs)
    got = feed(env, [m for pair in zip(*feeds) for m in pair])
    assert [c for c, _ in got] == [201, 304] * 3, got
    assert env.final.read_bytes() == data
    assert env.on_file() == [str(env.final)]
    assert sorted(os.listdir(env.dst)) == ["f.bin"]


@pytest.mark.parametrize("older", [False, True])
@pytest.mark.parametrize("renamed", [False, True])
def test_stopped_around_the_rename_the_redelivery_leaves_one_whole_file(env, monkeypatch,
                                                                        renamed, older):
    """The completion is on record before the rename. Stopped before it, the redelivered
    last block renames the whole temporary file (201, on_file then); stopped after it,
    the redelivery is a 304 and leaves no stray temporary file (that on_file is lost: the
    process died before running it)."""
    from sarra.flow import assemble
    real = assemble.finish
    if older:                   # an earlier version of the file is here
        env.src.write_bytes(os.urandom(3 * BSZ))
        feed(env, posts(env.src, pubtime="20231231000000.0", mtime="20231231000000.0"))
    data = os.urandom(3 * BSZ)
    env.src.write_bytes(data)
    msgs = posts(env.src)
    feed(env, msgs[:2])
    files = env.on_file()

    def killed(*a):
        if renamed:
            real(*a)
        raise SystemExit("killed")
    monkeypatch.setattr(assemble, "finish", killed)
    with pytest.raises(SystemExit):
        feed(env, msgs[2:])
    monkeypatch.undo()
    assert (env.final.exists() and env.final.read_bytes() == data) == renamed
    assert env.on_file() == files
    got = feed(env, msgs[2:], redelivered=True)
    if renamed:     # killed before its mtime was set: the file's time is the crash's, so
        # the late block may also be "older than the local file" (routing.newest_wins)
        (code, text), = got
        assert code == 304 and (text == "not modified3: file already assembled"
                                or "older than the local file" in text), text
    else:
        assert got == [(201, "Inserted")]
        assert env.on_file() == files + [str(env.final)]
    assert env.final.read_bytes() == data
    assert sorted(os.listdir(env.dst)) == ["f.bin"]


def test_a_file_assembled_from_blocks_gets_the_mode_a_whole_file_gets(env):
    """No mode header, no chmod: the umask decides, as for a file downloaded whole."""
    env.src.write_bytes(os.urandom(2 * BSZ))
    old = os.umask(0o022)
    try:
        feed(env, posts(env.src))
    finally:
        os.umask(old)
    assert env.final.stat().st_mode & 0o777 == 0o644


def test_a_block_in_flight_when_a_newer_version_starts_goes_to_the_old_file(env, monkeypatch):
    """Two instances: one is downloading block 1 of version 1 when the other starts
    version 2 (a new temporary file) and records its block 1. The first one's bytes go
    into the file it set out to write (version 1's, now unlinked), never into version
    2's, and are not recorded (304)."""
    from sarra.flow import download
    BLK = 2 * BSZ
    v1 = os.urandom(BLK)
    env.src.write_bytes(v1)
    g1 = posts(env.src, pubtime="20240101000000.0", mtime="20240101000000.0")
    v2 = os.urandom(BLK)
    v2_src = env.src.with_name("v2.bin")
    v2_src.write_bytes(v2)
    g2 = [message.make_post("20240101000100.0", "file:", str(env.src), {
        "sum": m.headers["sum"], "parts": m.headers["parts"], "mtime": "20240101000100.0"})
        for m in posts(v2_src)]
    other = Flow(env.flow.cfg, components.preset("subscribe"))
    other.consumer, other.reporter = FakeConsumer(), Reports()
    feed(env, g1[:1])
    real = download._fetch
    served = {}

    def fetch(flow, work, dest, *args):
        if flow is env.flow and work.msg.parts.bno == 1 and not served:
            served["v1"] = True
            env.src.write_bytes(v2)              # the source now has version 2 ...
            other_env = type("E", (), {"flow": other})()
            assert feed(other_env, g2[1:]) == [(201, "Inserted")]
            env.src.write_bytes(v1)              # ... and this download still gets v1
        return real(flow, work, dest, *args)
    monkeypatch.setattr(download, "_fetch", fetch)
    got = feed(env, g1[1:])
    assert got == [(304, "not modified3: a newer version of the file came in meanwhile")]
    env.src.write_bytes(v2)
    other_env = type("E", (), {"flow": other})()
    assert feed(other_env, g2[:1]) == [(201, "Inserted")]
    assert env.final.read_bytes() == v2
    assert sorted(os.listdir(env.dst)) == ["f.bin"]
