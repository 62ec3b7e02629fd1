"""sarra.watch.events: snapshot diffs, polling and inotify sources, readiness, state, markers."""

import errno
import os
import time

import pytest

from sarra.watch import events as watcher
from sarra.watch.events import Event, FileState, Pending, PollSource, Rec, _Stat


def S(kind, ino, size=0, mtime=0, dev=1):
    return _Stat(kind, size, mtime, dev, ino)


# ---------------------------------------------------------------- diff

def test_diff_create_modify_delete():
    old = {"/r/a": S("f", 1, 5, 1), "/r/b": S("f", 2, 5, 1)}
    new = {"/r/a": S("f", 1, 6, 2), "/r/c": S("f", 3)}
    assert watcher.diff(old, new) == [Event("change", "/r/a"), Event("change", "/r/c"),
                                      Event("delete", "/r/b")]


def test_diff_rename_found_by_inode():
    old = {"/r/a": S("f", 7, 3, 3)}
    new = {"/r/b": S("f", 7, 3, 3)}
    assert watcher.diff(old, new) == [Event("move", "/r/a", "/r/b")]


def test_diff_rename_over_existing_file():
    old = {"/r/tmp": S("f", 1), "/r/x": S("f", 2)}
    new = {"/r/x": S("f", 1)}
    assert watcher.diff(old, new) == [Event("move", "/r/tmp", "/r/x")]


def test_diff_orders_a_rotation_so_that_each_move_empties_its_destination_first():
    """mv log.1 log.2; mv log log.1; a new log: seen in one poll, log.1 -> log.2 must be
    applied before log -> log.1 (the other order lost log.1's new content)."""
    old = {"/r/log": S("f", 1), "/r/log.1": S("f", 2)}
    new = {"/r/log": S("f", 3), "/r/log.1": S("f", 1), "/r/log.2": S("f", 2)}
    assert watcher.diff(old, new) == [Event("move", "/r/log.1", "/r/log.2"),
                                      Event("move", "/r/log", "/r/log.1"),
                                      Event("change", "/r/log")]


def test_diff_turns_a_swap_into_changes():
    old = {"/r/a": S("f", 1), "/r/b": S("f", 2)}
    new = {"/r/a": S("f", 2), "/r/b": S("f", 1)}
    assert sorted(watcher.diff(old, new)) == [Event("change", "/r/a"), Event("change", "/r/b")]
    old = {"/r/a": S("f", 1), "/r/b": S("f", 2), "/r/c": S("f", 3), "/r/z": S("f", 9)}
    new = {"/r/b": S("f", 1), "/r/c": S("f", 2), "/r/a": S("f", 3), "/r/y": S("f", 9)}
    got = watcher.diff(old, new)                  # a 3-cycle and a plain move
    assert got[0] == Event("move", "/r/z", "/r/y")
    assert sorted(got[1:]) == [Event("change", p) for p in ("/r/a", "/r/b", "/r/c")]


def test_diff_directory_move_and_contents_in_order():
    old = {"/r/d": S("d", 10), "/r/d/f": S("f", 11)}
    new = {"/r/e": S("d", 10), "/r/e/f": S("f", 11), "/r/n": S("d", 12)}
    assert watcher.diff(old, new) == [Event("dirmove", "/r/d", "/r/e"), Event("mkdir", "/r/n"),
                                      Event("move", "/r/d/f", "/r/e/f")]


def test_diff_rmdir_after_its_files():
    old = {"/r/d": S("d", 10), "/r/d/f": S("f", 11)}
    assert watcher.diff(old, {}) == [Event("delete", "/r/d/f"), Event("rmdir", "/r/d")]


# ---------------------------------------------------------------- polling

def test_poll_source_sees_create_modify_rename_delete(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    (root / "old").write_text("x")
    p = PollSource()
    p.add(str(root))
    assert p.poll() == []
    (root / "a").write_text("1")
    (root / "sub").mkdir()
    (root / "sub" / "b").write_text("2")
    assert p.poll() == [Event("mkdir", str(root / "sub")), Event("change", str(root / "a")),
                        Event("change", str(root / "sub" / "b"))]
    os.rename(root / "a", root / "c")
    os.unlink(root / "old")
    assert p.poll() == [Event("move", str(root / "a"), str(root / "c")),
                        Event("delete", str(root / "old"))]
    with open(root / "c", "a") as f:
        f.write("more")
    assert p.poll() == [Event("change", str(root / "c"))]


def test_poll_source_file_root(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("1")
    p = PollSource()
    p.add(str(f), recursive=False)
    f.write_text("22")
    assert p.poll() == [Event("change", str(f))]
    f.unlink()
    assert p.poll() == [Event("delete", str(f))]


# ---------------------------------------------------------------- inotify

def _wait_events(sink, want, timeout=5.0):
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += sink.drain()
        if all(w in got for w in want):
            return got
        time.sleep(0.02)
    return got


def test_inotify_source_events_and_coverage(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    sink = watcher.Sink()
    src = watcher.InotifySource(sink)
    try:
        src.add(str(root))
        watched = watcher.inotify_watched()
        assert watched is not None and watcher.dir_key(os.stat(root)) in watched
        with open(root / "a", "w") as f:
            f.write("x")
        os.rename(root / "a", root / "b")
        (root / "d").mkdir()
        os.unlink(root / "b")
        a, b, d = str(root / "a"), str(root / "b"), str(root / "d")
        got = _wait_events(sink, [Event("change", a), Event("close", a), Event("move", a, b),
                                  Event("mkdir", d), Event("delete", b)])
        assert Event("close", a) in got and Event("move", a, b) in got, got
        assert got.index(Event("move", a, b)) < got.index(Event("delete", b))
        time.sleep(0.2)     # the new directory's watch is added by watchdog's thread
        assert watcher.dir_key(os.stat(d)) in watcher.inotify_watched()
        assert watcher.dir_key(os.stat(tmp_path)) not in watcher.inotify_watched()
    finally:
        src.stop()


def test_inotify_missing_root_is_a_clear_error(tmp_path):
    src = watcher.InotifySource(watcher.Sink())
    try:
        with pytest.raises(watcher.WatchError) as ei:
            src.add(str(tmp_path / "nope"))
        assert str(tmp_path / "nope") in str(ei.value)
    finally:
        src.stop()


def test_probe_watch_and_limit_message(tmp_path):
    assert watcher.probe_watch(str(tmp_path)) == 0
    assert watcher.probe_watch(str(tmp_path / "missing")) == errno.ENOENT
    text = watcher.limit_message("/data/x")
    assert "fs.inotify.max_user_watches" in text and "/data/x" in text


# ---------------------------------------------------------------- readiness

def test_open_for_writing(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert watcher.open_for_writing(str(f)) is False
    with open(f, "a"):
        assert watcher.open_for_writing(str(f)) is True
    assert watcher.open_for_writing(str(f)) is False
    assert watcher.open_for_writing(str(tmp_path / "missing")) is None


def test_pending_waits_for_the_writer_to_close(tmp_path):
    f = str(tmp_path / "f")
    p = Pending(None)
    now = time.time()
    with open(f, "w") as w:
        w.write("partial")
        w.flush()
        p.change(f, now)
        assert p.ready(now + 10) == []          # open for writing: never half-written
        assert f in p
    p.get(f).next_check = 0
    (path, e), = p.ready(now + 10)
    assert path == f and f not in p


def test_pending_close_event_makes_ready_at_once(tmp_path):
    f = str(tmp_path / "f")
    p = Pending(None, lease=False)
    now = time.time()
    with open(f, "w") as w:
        w.write("x")
    p.change(f, now)
    assert p.ready(now) == []                   # no lease, not quiet: wait
    p.close(f, now)
    assert [x for x, _ in p.ready(now)] == [f]


def test_pending_inflight_seconds_counts_from_the_last_change(tmp_path):
    f = str(tmp_path / "f")
    open(f, "w").close()
    os.utime(f, (1000, 1000))
    p = Pending(5)
    p.change(f, 2000.0)
    p.close(f, 2001.0)
    assert p.ready(2004.0) == []                # closed, but inflight 5 asks for quiet
    p.change(f, 2004.0)
    assert p.ready(2008.5) == [] and p.get(f).next_check == pytest.approx(2009.0)
    assert [x for x, _ in p.ready(2009.0)] == [f]


def test_pending_inflight_zero_and_snapshot(tmp_path):
    f = str(tmp_path / "f")
    p0 = Pending(0)
    with open(f, "w"):
        p0.change(f, 1.0)
        assert [x for x, _ in p0.ready(1.0)] == [f]
        ps = Pending(None, snapshot=30)
        ps.change(f, 100.0)
        assert ps.ready(120.0) == []
        ps.get(f).next_check = 0
        ((x, e),) = ps.ready(131.0)
        assert e.snap


def test_pending_move_keeps_oldname_and_completes():
    p = Pending(None, lease=False)
    e = p.change("/r/a", 1.0)
    e.oldname = "/r/orig"
    e2 = p.move("/r/a", "/r/b", 2.0)
    assert "/r/a" not in p and e2.oldname == "/r/orig" and not e2.closed
    e3 = p.move("/r/x", "/r/y", 3.0)         # unknown source: a renamed-in file is complete
    assert e3.closed and e3.oldname is None


# ---------------------------------------------------------------- state

def test_file_state_commit_reload_rollback(tmp_path):
    path = str(tmp_path / "state")
    s = FileState(path)
    s.set("/r/a b", Rec(10, 123, 0, ("d,abc",)))
    s.set("/r/l", Rec(link="../t x"))
    s.set("/r/big", Rec(3000, 5, 1024, ("s,1", "s,2", "s,3"), None, False))
    s.commit()
    s.set("/r/a b", Rec(11, 124, 0, ("d,def",)))
    s.pop("/r/l")
    assert sorted(s.rollback()) == ["/r/a b", "/r/l"]
    assert s.get("/r/a b").size == 10 and s.get("/r/l").link == "../t x"
    s.pop("/r/l")
    s.set("/r/w", Rec(1, 2, foreign=True))
    s.commit()
    s.close()
    t = FileState(path)
    assert t.get("/r/a b") == Rec(10, 123, 0, ("d,abc",))
    assert t.get("/r/big").sums == ("s,1", "s,2", "s,3")
    assert "/r/l" not in t and t.get("/r/w").foreign
    assert t.under("/r") == ["/r/a b", "/r/big", "/r/w"]
    t.compact()
    with open(path) as f:
        assert len(f.readlines()) == 3
    assert FileState(path).d == t.d


def test_file_state_skips_corrupt_lines(tmp_path, caplog):
    path = tmp_path / "state"
    path.write_text("F /a 1 2 0 - 0\ngarbage\nF /b x 2 0 - 0\nL /c\nF /d 1 2 0 - 0")
    s = FileState(str(path))
    assert list(s.d) == ["/a"]
    assert "corrupt" in caplog.text and ":2:" in caplog.text


# ---------------------------------------------------------------- names and markers

@pytest.mark.parametrize("name,inflight,expected", [
    (".x.sarra-tmp", None, True), ("x.sarra-link", None, True), ("x.tmp-link-12", None, True),
    ("x.tmp", ".tmp", True), ("x.tmp", None, False), ("x.part", "part", True),
    (".hidden", ".", True), ("plain", ".", False), ("x", "tmp/", False), ("x.tmp", 5.0, False),
])
def test_temp_names(name, inflight, expected):
    assert watcher.temp_name(name, inflight) is expected


def test_marker_follows_content_and_name(tmp_path):
    tmp = tmp_path / ".f.sarra-tmp"
    final = tmp_path / "f"
    tmp.write_text("data")
    os.utime(tmp, (1000, 1000))
    assert watcher.mark_written(str(tmp), str(final))
    os.rename(tmp, final)
    assert watcher.written_by_sarra(str(final), os.stat(final))
    moved = tmp_path / "g"
    os.rename(final, moved)                     # a local rename: no longer the written file
    assert not watcher.written_by_sarra(str(moved), os.stat(moved))
    assert watcher.mark_written(str(moved))     # re-marked (e.g. a move done by sarra)
    assert watcher.written_by_sarra(str(moved), os.stat(moved))
    with open(moved, "a") as f:                 # a local change: stale marker
        f.write("more")
    assert not watcher.written_by_sarra(str(moved), os.stat(moved))
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert not watcher.written_by_sarra(str(plain), os.stat(plain))
