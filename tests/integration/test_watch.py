"""sr_watch against the real broker: events, selection, in-flight files, parts, restarts.

Every behaviour is checked with inotify and with polling (force_polling) where both apply.
The helpers (watch_env, Msgs) are in watchkit.py, shared by the other test_watch_* modules.
"""

import hashlib
import json
import os
import shutil
import signal
import threading
import time

import pytest

from sarra import checksum
from tests.integration.watchkit import (  # noqa: F401  (fixture watch_env)
    BASE_URL, MODES, md5, sample_headers, watch_env)


# ---------------------------------------------------------------- events

@pytest.mark.parametrize("mode", MODES)
def test_events_create_modify_link_rename_subdirs_delete(watch_env, mode):
    env, root = watch_env, watch_env.root
    (root / "before").mkdir()
    (root / "before" / "old.txt").write_text("old\n")
    env.start(mode=mode)
    m, = env.msgs.get(1)                                    # post_on_start
    assert (m.relpath, m.algo) == ("/watched/before/old.txt", "d")

    (root / "file1.txt").write_text("watch me\n")          # the captured v2 sample
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/file1.txt" and m.key == "v02.post.watched"
    assert m.h["sum"] == "d,1fb37c9e3a4f5805a8153ee5779500f7"
    assert m.h["parts"] == "1,9,1,0,0" and m.h["mode"] == "644" and m.h["to_clusters"]
    assert [list(m.h)] == sample_headers("create")
    assert m.baseurl == BASE_URL

    with open(root / "file1.txt", "a") as f:
        f.write("and me\n")
    m, = env.msgs.get(1)
    assert m.h["sum"] == "d," + md5(b"watch me\nand me\n") and m.h["parts"] == "1,16,1,0,0"

    os.symlink("file1.txt", root / "link1")
    m, = env.msgs.get(1)
    assert (m.relpath, m.algo, m.h["link"]) == ("/watched/link1", "L", "file1.txt")
    assert list(m.h) == sample_headers("symlink")[0]

    os.rename(root / "file1.txt", root / "renamed.txt")
    r, p = env.msgs.get(2)
    assert (r.relpath, r.algo, r.h["newname"]) == ("/watched/file1.txt", "R",
                                                  "/watched/renamed.txt")
    assert r.h["sum"] == "R," + hashlib.sha512(b"file1.txt").hexdigest()
    assert (p.relpath, p.algo, p.h["oldname"]) == ("/watched/renamed.txt", "d",
                                                  "/watched/file1.txt")
    assert r.pubtime <= p.pubtime
    assert [list(r.h), list(p.h)] == sample_headers("rename")

    (root / "sub" / "deep").mkdir(parents=True)            # files already inside get posted
    (root / "sub" / "deep" / "a.txt").write_text("a\n")
    (root / "sub" / "b.txt").write_text("b\n")
    got = env.msgs.get(2)
    assert sorted(x.relpath for x in got) == ["/watched/sub/b.txt", "/watched/sub/deep/a.txt"]
    (root / "sub" / "deep" / "c.txt").write_text("c\n")    # and the new one is watched
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/sub/deep/c.txt"

    os.rename(root / "sub", root / "moved")                 # a directory move: every file
    got = env.msgs.get(6)
    rs = {x.relpath: x.h.get("newname") for x in got if x.algo == "R"}
    assert rs == {"/watched/sub/b.txt": "/watched/moved/b.txt",
                  "/watched/sub/deep/a.txt": "/watched/moved/deep/a.txt",
                  "/watched/sub/deep/c.txt": "/watched/moved/deep/c.txt"}
    ps = {x.relpath: x.h.get("oldname") for x in got if x.algo == "d"}
    assert ps == {v: k for k, v in rs.items()}

    os.unlink(root / "renamed.txt")
    os.unlink(root / "link1")
    shutil.rmtree(root / "before")
    got = env.msgs.get(3)
    assert sorted((x.relpath, x.algo) for x in got) == [
        ("/watched/before/old.txt", "R"), ("/watched/link1", "R"), ("/watched/renamed.txt", "R")]
    assert all(list(x.h) == sample_headers("remove")[0] for x in got)
    env.msgs.none()


@pytest.mark.parametrize("mode", MODES)
def test_event_selection_and_accept_reject(watch_env, mode):
    env, root = watch_env, watch_env.root
    env.start(["events create,link", r"reject .*\.tmp$", r"reject .*/skip/.*", "accept .*"],
              mode=mode)
    (root / "a.txt").write_text("1")
    (root / "b.tmp").write_text("1")
    (root / "skip").mkdir()
    (root / "skip" / "c.txt").write_text("1")
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/a.txt"
    env.msgs.none(1.0)
    (root / "a.txt").write_text("22")                       # modify: not selected
    os.symlink("a.txt", root / "l")                         # link: selected
    m, = env.msgs.get(1)
    assert (m.relpath, m.algo) == ("/watched/l", "L")
    os.unlink(root / "a.txt")                               # delete: not selected
    (root / "z.txt").write_text("z")
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/z.txt"
    env.msgs.none(1.0)


# ---------------------------------------------------------------- files being written

@pytest.mark.parametrize("mode", MODES)
def test_file_kept_open_is_posted_once_complete(watch_env, mode):
    env, root = watch_env, watch_env.root
    env.start(mode=mode)
    with open(root / "slow.bin", "wb") as f:
        f.write(b"first half ")
        f.flush()
        assert env.msgs.get(1, timeout=2.5) == []           # still open for writing
        f.write(b"second half")
    m, = env.msgs.get(1)
    assert m.h["sum"] == "d," + md5(b"first half second half")
    env.msgs.none(1.0)


def test_inflight_seconds_waits_for_quiet(watch_env):
    env, root = watch_env, watch_env.root
    env.start(["inflight 2"])
    t0 = time.monotonic()
    for piece in (b"a" * 10, b"b" * 10, b"c" * 10):        # writer closing after each piece
        with open(root / "pieces", "ab") as f:
            f.write(piece)
        time.sleep(0.6)
    last = time.monotonic()
    m, = env.msgs.get(1, timeout=10)
    assert time.monotonic() - last >= 1.2, "posted before being quiet for inflight seconds"
    assert m.h["sum"] == "d," + md5(b"a" * 10 + b"b" * 10 + b"c" * 10)
    assert time.monotonic() - t0 < 8
    env.msgs.none(1.0)


def _blocks(data, bsz):
    return {i: md5(data[i * bsz:(i + 1) * bsz]) for i in range((len(data) + bsz - 1) // bsz)}


@pytest.mark.parametrize("mode", MODES)
def test_every_block_of_a_changed_file_is_posted_again(watch_env, mode):
    """A file that grows, is rewritten or cut is posted again whole, block by block: a
    receiver completes a version only from all its blocks (it copies the ones it holds)."""
    env, root = watch_env, watch_env.root
    bsz = 1 << 20
    env.start(["blocksize 1M"], mode=mode)
    data = os.urandom(3 * bsz + bsz // 2)
    (root / "big").write_bytes(data)
    got = env.msgs.get(4)
    assert sorted(m.h["parts"] for m in got) == [f"i,{bsz},4,{bsz // 2},{k}" for k in range(4)]
    assert {int(m.h["parts"].split(",")[4]): m.h["sum"][2:] for m in got} == _blocks(data, bsz)
    assert len({m.pubtime for m in got}) == 1

    more = os.urandom(bsz)                                  # append: block 3 grows, block 4 new
    with open(root / "big", "ab") as f:
        f.write(more)
    data += more
    got = env.msgs.get(5)
    assert sorted(m.h["parts"] for m in got) == [f"i,{bsz},5,{bsz // 2},{k}" for k in range(5)]
    assert {int(m.h["parts"].split(",")[4]): m.h["sum"][2:] for m in got} == _blocks(data, bsz)
    env.msgs.none(1.0)

    with open(root / "big", "r+b") as f:                    # rewrite bytes inside block 1
        f.seek(bsz + 10)
        f.write(b"X" * 100)
    data = data[:bsz + 10] + b"X" * 100 + data[bsz + 110:]
    got = env.msgs.get(5)
    assert {int(m.h["parts"].split(",")[4]): m.h["sum"][2:] for m in got} == _blocks(data, bsz)
    env.msgs.none(1.0)

    with open(root / "big", "r+b") as f:                    # cut to 3 whole blocks
        f.truncate(3 * bsz)
    data = data[:3 * bsz]
    got = env.msgs.get(3)
    assert sorted(m.h["parts"] for m in got) == [f"i,{bsz},3,0,{k}" for k in range(3)]
    env.msgs.none(1.0)


def test_file_written_for_a_long_time_is_posted_at_intervals(watch_env):
    env, root = watch_env, watch_env.root
    bsz = 64 * 1024
    env.start(["blocksize 64K", "snapshot_interval 1"])
    stop = threading.Event()
    chunks = []

    def writer():
        with open(root / "growing", "wb") as f:
            while not stop.is_set():
                c = os.urandom(bsz)
                f.write(c)
                f.flush()
                chunks.append(c)
                time.sleep(0.2)

    t = threading.Thread(target=writer)
    t.start()
    try:
        early = env.msgs.get(3, timeout=4)                  # while the writer still writes
    finally:
        stop.set()
        t.join()
    assert early, "nothing posted while the file was being written"
    data = b"".join(chunks)
    blocks = _blocks(data, bsz)
    # each snapshot posts every block of the file as it was then; the last one, the
    # file as written
    final = f"i,{bsz},{len(blocks)},0,"
    got = list(early)
    last = [m for m in got if m.h["parts"].startswith(final)]
    deadline = time.monotonic() + 15
    while len(last) < len(blocks) and time.monotonic() < deadline:
        got += env.msgs.get(1, timeout=1)
        last = [m for m in got if m.h["parts"].startswith(final)]
    env.msgs.none(1.5)
    assert {int(m.h["parts"].split(",")[4]): m.h["sum"][2:] for m in last} == blocks
    assert len(last) == len(blocks) and len({m.pubtime for m in last}) == 1
    for m in got:                       # every post: that block as it was when posted
        p = checksum.Parts.parse(m.h["parts"])
        assert m.h["sum"][2:] == md5(data[p.offset:p.offset + p.length])


# ---------------------------------------------------------------- start-up and restarts

def test_restart_after_crash_posts_only_what_changed(watch_env):
    env, root = watch_env, watch_env.root
    for n in "abc":
        (root / n).write_text(n)
    w = env.start()
    assert sorted(m.relpath for m in env.msgs.get(3)) == ["/watched/a", "/watched/b",
                                                           "/watched/c"]
    time.sleep(0.5)
    w.stop(signal.SIGKILL)
    (root / "b").write_text("bb")                           # changed while down
    os.unlink(root / "c")                                   # removed while down
    (root / "d").write_text("d")                            # new while down
    os.utime(root / "a")                                    # touched: same content
    w2 = env.start()
    got = env.msgs.get(3)
    assert sorted((m.relpath, m.algo) for m in got) == [
        ("/watched/b", "d"), ("/watched/c", "R"), ("/watched/d", "d")]
    env.msgs.none(1.0)
    assert w2.stop() == 0
    env.start()                                             # clean restart: nothing
    env.msgs.none(2.0)


def test_post_on_start_off(watch_env):
    env, root = watch_env, watch_env.root
    (root / "old").write_text("old")
    env.start(["post_on_start off"])
    (root / "new").write_text("new")
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/new"
    os.unlink(root / "old")                                 # existed before: removal posted
    m, = env.msgs.get(1)
    assert (m.relpath, m.algo) == ("/watched/old", "R")
    env.msgs.none(1.0)


def test_post_on_start_off_spares_the_first_tree_only(watch_env):
    """On a restart (the state file of the last run is there), what appeared meanwhile is
    posted, as is a file that was still being written when sr_watch stopped; only the tree
    found at the very first start is spared. A first run that posted nothing counts."""
    env, root = watch_env, watch_env.root
    (root / "old").write_text("old")
    w = env.start(["post_on_start off"])
    env.msgs.none(1.0)
    assert w.stop() == 0
    (root / "new").write_text("created while stopped")
    w = env.start(["post_on_start off"])
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/new"
    with open(root / "inprogress", "wb") as f:
        f.write(b"part 1")
        f.flush()
        time.sleep(1.0)
        env.msgs.none(0.5)                                  # still open: not posted
        assert w.stop() == 0
        f.write(b"part 2")
    env.start(["post_on_start off"])
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/inprogress"
    env.msgs.none(1.0)


def test_post_on_start_off_stopped_during_its_first_scan_still_spares_the_tree(watch_env):
    """The stop arrives while the first scan runs (here: before it starts): what it spared
    is on record all the same, so the next start posts none of it."""
    import logging
    from sarra.config import parser as config
    from sarra.watch.daemon import Daemon
    env, root = watch_env, watch_env.root
    for i in range(5):
        (root / f"old{i}").write_text("old")
    name = f"s{env.uid}"
    cdir = env.home / ".config" / "sarra" / "watch"
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / f"{name}.conf").write_text("\n".join(env.lines(["post_on_start off"])) + "\n")
    stop = threading.Event()
    stop.set()
    Daemon(config.load("watch", name), logging.getLogger("test"), stop, 1).run()
    env.start(["post_on_start off"], name=name)
    env.msgs.none(2.0)


def test_post_on_start_off_spares_a_single_file_path_too(watch_env):
    env, root = watch_env, watch_env.root
    f = root / "single.txt"
    f.write_text("spared")
    w = env.start(["post_on_start off"], root=f)
    env.msgs.none(1.5)
    assert w.stop() == 0
    w = env.start(["post_on_start off"], root=f)            # a restart, the file unchanged
    env.msgs.none(2.0)
    assert w.stop() == 0
    f.write_text("changed")
    env.start(["post_on_start off"], root=f)
    m, = env.msgs.get(1)
    assert m.relpath.endswith("/single.txt")


def test_part_files_are_posted_as_method_p(watch_env):
    env, root = watch_env, watch_env.root
    env.start()
    block = os.urandom(1000)
    (root / "big.grib2.1000.3.500.1.d.Part").write_bytes(block)
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/big.grib2.1000.3.500.1.d.Part"
    assert m.h["parts"] == "p,1000,3,500,1" and m.h["sum"] == "d," + md5(block)


def test_actions_start_status_stop_cleanup(watch_env, run_cmd):
    env, root = watch_env, watch_env.root
    name = f"a{env.uid}"
    cdir = env.home / ".config" / "sarra" / "watch"
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / f"{name}.conf").write_text("\n".join(env.lines()) + "\n")
    try:
        r = run_cmd(["sr_watch", "start", name], check=True)
        assert "started 1" in r.stdout
        (root / "x").write_text("x")
        m, = env.msgs.get(1, timeout=15)
        assert m.relpath == "/watched/x"
        assert "running" in run_cmd(["sr_watch", "status", name], check=True).stdout
        stats = env.home / ".cache" / "sarra" / "watch" / name / f"sr_watch_{name}_01.stats"
        assert json.loads(stats.read_text())["pid"] > 0
        assert name in run_cmd(["sr_watch", "list"], check=True).stdout
        assert "post_exchange" in run_cmd(["sr_watch", "show", name], check=True).stdout
    finally:
        r = run_cmd(["sr_watch", "stop", name])
    assert "stopped 1" in r.stdout
    assert "stopped" in run_cmd(["sr_watch", "status", name]).stdout
    run_cmd(["sr_watch", "cleanup", name], check=True)
    assert not (env.home / ".cache" / "sarra" / "watch" / name).exists()
    r = run_cmd(["sr_watch", "status"])
    assert r.returncode == 0
    assert run_cmd(["sr_watch", "frobnicate", name]).returncode == 2


def test_a_single_file_as_path(watch_env):
    env = watch_env
    one = env.base / "one.txt"
    env.start(root=one)                                     # does not exist yet
    one.write_text("1")
    m, = env.msgs.get(1)
    assert m.relpath == "/one.txt" and m.h["sum"] == "d," + md5(b"1")
    tmp = env.base / "one.txt.new"
    tmp.write_text("22")
    os.replace(tmp, one)                                    # replaced atomically: a change
    m, = env.msgs.get(1)
    assert m.relpath == "/one.txt" and m.h["sum"] == "d," + md5(b"22")
    one.unlink()
    m, = env.msgs.get(1)
    assert (m.relpath, m.algo) == ("/one.txt", "R")
    env.msgs.none(1.0)


@pytest.mark.parametrize("mode", MODES)
def test_follow_symlinks(watch_env, mode):
    env, root = watch_env, watch_env.root
    outside = env.base / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("x")
    os.symlink("../outside", root / "ln")                  # a linked directory
    env.start(["follow_symlinks on"], mode=mode)
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/ln/x.txt" and m.h["sum"] == "d," + md5(b"x")
    (outside / "y.txt").write_text("y")                   # watched through the link
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/ln/y.txt"
    os.symlink("ln/x.txt", root / "lf")                    # a link to a file: L, and the data
    got = env.msgs.get(2)
    assert [(g.relpath, g.algo) for g in got] == [("/watched/lf", "L"), ("/watched/lf", "d")]
    assert got[1].h["sum"] == "d," + md5(b"x")
    env.msgs.none(1.0)
