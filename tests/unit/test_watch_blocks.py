"""A file that changes (grows, is rewritten, is cut) while announced in blocks (issue 19
item 10): sr_watch posts every block of each new version, and the subscriber (the real
flow, file: URLs, a fake queue) copies the blocks its own copy holds, downloads the
others, and completes each version once."""

import hashlib
import os
from types import SimpleNamespace

import pytest

from sarra import checksum, message
from sarra.broker.client import Delivery, DeliveryTag
from sarra.config import parser as config
from sarra.flow import download
from sarra.flow.cache import DupCache, cache_key
from sarra.flow import presets as components
from sarra.flow.engine import Flow
from sarra.flow.poster import PostOptions
from sarra.watch.announce import Announcer
from sarra.watch.ready import Entry, Pending
from sarra.watch.state import FileState
from tests.support.flowfakes import FakeConsumer, FakeReporter

BSZ = 1024
_tag = iter(range(1, 10**6))


# ---------------------------------------------------------------- sr_watch's side

class Watch(Announcer):
    """The parts of the sr_watch daemon that Announcer.announce_file uses."""

    def __init__(self, base):
        self.cfg = SimpleNamespace(realpath_post=False)
        self.opts = PostOptions(post_base_url="http://h/", post_base_dir=str(base),
                                blocksize=BSZ, use_xattr=False)
        self.state = FileState(None)
        self.events = frozenset(("create", "modify", "delete", "link"))
        self.ignore_written = False
        self.pending = Pending(None)
        self.born, self.reported, self.batch, self.errors = set(), set(), [], []

    def report(self, key, text):
        self.errors.append(text)

    def posts(self, path):
        """announce_file's posts for path as it is now: {bno: (parts, sum value)}."""
        self.batch = []
        self.announce_file(str(path), Entry(0.0), os.lstat(path), 0.0)
        assert not self.errors, self.errors
        return {m.parts.bno: (str(m.parts), m.headers["sum"]) for m in self.batch}


def _blocks(data):
    """{bno: (parts, sum)} of every block of data, as v2 posts them."""
    plan = checksum.plan_parts(len(data), BSZ)
    return {p.bno: (str(p), "d," + hashlib.md5(data[p.offset:p.offset + p.length]).hexdigest())
            for p in plan}


def _change(path, data, step):
    path.write_bytes(data)
    os.utime(path, ns=(step * 10**9, (1_700_000_000 + step) * 10**9))


@pytest.mark.parametrize("how", ["grown", "rewritten", "cut"])
def test_every_block_of_a_changed_file_is_posted(tmp_path, how):
    """Old behaviour: only the blocks whose sum changed were posted again, and a receiver
    could never complete the new version (it kept the old file)."""
    f = tmp_path / "f.bin"
    v1 = os.urandom(3 * BSZ + BSZ // 2)
    _change(f, v1, 1)
    w = Watch(tmp_path)
    assert w.posts(f) == _blocks(v1)
    v2 = {"grown": v1 + os.urandom(2 * BSZ),
          "rewritten": v1[:BSZ + 10] + b"X" * 10 + v1[BSZ + 20:],
          "cut": v1[:2 * BSZ + 100]}[how]
    _change(f, v2, 2)
    assert w.posts(f) == _blocks(v2)
    assert w.posts(f) == {}                      # unchanged since: nothing


def test_a_file_touched_without_change_is_not_posted_then_changed_is_posted_whole(tmp_path):
    """Same bytes under a new mtime: nothing to announce. Changed later in its last block
    only: every block again."""
    f = tmp_path / "f.bin"
    v1 = os.urandom(2 * BSZ + 1)
    _change(f, v1, 1)
    w = Watch(tmp_path)
    w.posts(f)
    _change(f, v1, 2)
    assert w.posts(f) == {}
    v2 = v1[:-1] + bytes([v1[-1] ^ 1])
    _change(f, v2, 3)
    assert w.posts(f) == _blocks(v2)


def test_with_suppress_duplicates_the_unchanged_blocks_still_go(tmp_path):
    """The duplicate cache's key of a block leaves out blktot and brem (v2's quirk for
    growing files): the unchanged blocks of a grown file would be dropped as duplicates
    by the post step (what poststep.post_built does is done here), and the receiver could not
    complete the new version. sr_watch forgets them when the file changed; a file touched
    without change is not posted at all."""
    f = tmp_path / "f.bin"
    w = Watch(tmp_path)
    w.cfg.suppress_duplicates_basis = "path"
    w.flow = SimpleNamespace(cache=DupCache(None, 300))

    def published(data, step):
        _change(f, data, step)
        w.posts(f)
        return {m.parts.bno: (str(m.parts), m.headers["sum"]) for m in w.batch
                if w.flow.cache.check_and_add(cache_key(m, "path"))}
    v1 = os.urandom(3 * BSZ + BSZ // 2)
    assert published(v1, 1) == _blocks(v1)
    v2 = v1 + os.urandom(BSZ)
    assert published(v2, 2) == _blocks(v2)
    assert published(v2, 3) == {}


# ---------------------------------------------------------------- the subscriber's side

@pytest.fixture
def sub(home, tmp_path):
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
    return SimpleNamespace(src=src / "f.bin", dst=dst, flow=flow, final=dst / "f.bin",
                           on_file=lambda: log.read_text().split() if log.exists() else [])


class Reports(FakeReporter):
    def report(self, msg, code, text, received):
        self.sent.append((code, text))


def _posts(path, data, step):
    """The posts sr_watch makes of data (version ``step``), as if read from path."""
    t = "20240101%06d.0" % step
    return [message.make_post(t, "file:", str(path), {"sum": s, "parts": p, "mtime": t})
            for _, (p, s) in sorted(_blocks(data).items())]


def _feed(env, msgs):
    start = len(env.flow.reporter.sent)
    for m in msgs:
        topic, body, hdrs = m.encode()
        env.flow.consumer.inbox.append(Delivery("xs_x", topic, body, b"", hdrs,
                                                DeliveryTag(next(_tag), 0), False, {}))
        env.flow.handle(env.flow.gather())
    return env.flow.reporter.sent[start:]


@pytest.fixture
def fetched(monkeypatch):
    """The block numbers the subscriber downloads (the others it copies)."""
    got = []
    real = download._fetch

    def fetch(flow, work, *args):
        got.append(work.msg.parts.bno)
        return real(flow, work, *args)
    monkeypatch.setattr(download, "_fetch", fetch)
    return got


@pytest.mark.parametrize("how", ["grown", "cut"])
def test_blocks_the_local_copy_holds_are_copied_from_it(sub, fetched, how):
    """The local copy is of another size than the new version: its unchanged blocks are
    still copied from it (the old behaviour downloaded every block of a file whose size
    changed). The source's own bytes there are garbage now: a download would fail (417)."""
    v1 = os.urandom(3 * BSZ + BSZ // 2)
    sub.src.write_bytes(v1)
    assert [c for c, _ in _feed(sub, _posts(sub.src, v1, 1))] == [201] * 4
    del fetched[:]
    if how == "grown":
        v2, want = v1 + os.urandom(2 * BSZ), [3, 4, 5]   # block 3 was short, now full
    else:
        v2, want = v1[:2 * BSZ + 100], []                  # all held locally
    posts = _posts(sub.src, v2, 2)
    sub.src.write_bytes(os.urandom(2 * BSZ) + v2[2 * BSZ:])   # blocks 0-1 unusable there
    got = _feed(sub, posts)
    assert got == [(201, "Inserted")] * len(posts), got
    assert fetched == want
    assert sub.final.read_bytes() == v2
    assert sub.on_file() == [str(sub.final)] * 2
    assert sorted(os.listdir(sub.dst)) == ["f.bin"]


@pytest.mark.parametrize("inflight", [".tmp", ".", "tmp/", "NONE"])
def test_every_temporary_name_mode_copies_from_the_final_file(home, tmp_path, inflight):
    """The temporary file of a version (suffix, hidden, sub-directory, or the hidden
    default) gets the blocks the final file holds copied into it: only the new block is
    downloaded, nothing is left under a temporary name."""
    src, dst = tmp_path / "src" / "f.bin", tmp_path / "dst"
    src.parent.mkdir()
    dst.mkdir()
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(dst)), ("inflight", inflight)])
    flow = Flow(cfg, components.preset("subscribe"))
    flow.consumer, flow.reporter = FakeConsumer(), Reports()
    env = SimpleNamespace(flow=flow)
    got = []
    real = download._fetch

    def fetch(flow, work, *args):
        got.append(work.msg.parts.bno)
        return real(flow, work, *args)
    v1 = os.urandom(2 * BSZ)
    src.write_bytes(v1)
    assert [c for c, _ in _feed(env, _posts(src, v1, 1))] == [201] * 2
    v2 = v1 + os.urandom(100)
    src.write_bytes(v2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(download, "_fetch", fetch)
        assert [c for c, _ in _feed(env, _posts(src, v2, 2))] == [201] * 3
    assert got == [2]
    assert (dst / "f.bin").read_bytes() == v2
    assert [str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()] == ["f.bin"]


@pytest.mark.parametrize("cache", ["off", "on"])
def test_inplace_off_copies_a_block_from_its_part_file_of_the_last_version(home, tmp_path,
                                                                          fetched, cache):
    """inplace off (sr_sarra's default): each block is a part file whose name holds the
    block count and remainder, so a grown file's blocks all get new names; those that did
    not change are copied from the previous version's part file, not downloaded. With
    suppress_duplicates on they are not dropped as duplicates either (the cache's key of
    a block leaves out the block count)."""
    src, dst = tmp_path / "src" / "f.bin", tmp_path / "dst"
    src.parent.mkdir()
    dst.mkdir()
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(dst)), ("inplace", "off"),
                                          ("suppress_duplicates", cache)])
    flow = Flow(cfg, components.preset("subscribe"))
    flow.consumer, flow.reporter = FakeConsumer(), Reports()
    env = SimpleNamespace(flow=flow)
    v1 = os.urandom(3 * BSZ + BSZ // 2)
    src.write_bytes(v1)
    assert [c for c, _ in _feed(env, _posts(src, v1, 1))] == [201] * 4
    del fetched[:]
    v2 = v1 + os.urandom(2 * BSZ)
    posts = _posts(src, v2, 2)
    src.write_bytes(os.urandom(3 * BSZ) + v2[3 * BSZ:])     # blocks 0-2 unusable there
    assert [c for c, _ in _feed(env, posts)] == [201] * 6
    assert fetched == [3, 4, 5]
    for m in posts:
        p = m.parts
        part = dst / ("f.bin" + p.suffix("d"))
        assert part.read_bytes() == v2[p.offset:p.offset + p.length]
    assert not [n for n in os.listdir(dst) if not n.endswith(".Part")]


def test_a_file_appended_to_in_steps_arrives_whole_after_each(sub, fetched):
    """Ten appends, each announced as sr_watch does now (every block): after each step
    the local file is the source's, on_file ran once for it, and only the blocks holding
    new bytes were downloaded."""
    data = b""
    for step in range(1, 11):
        data += os.urandom(BSZ // 2 + 37 * step)
        sub.src.write_bytes(data)
        before = len(fetched)
        got = _feed(sub, _posts(sub.src, data, step))
        assert [c for c, _ in got] == [201] * len(got), got
        assert sub.final.read_bytes() == data
        assert len(sub.on_file()) == step
        assert len(fetched) - before <= 2
