"""sr_watch under load: a burst of 10,000 files in 100 new directories, each posted once."""

import collections
import os
import signal
import time

import pytest

from tests.integration.watchkit import MODES, watch_env  # noqa: F401  (fixture)

FILES, DIRS = 10000, 100


@pytest.mark.parametrize("mode", MODES)
def test_burst_of_10000_files_in_100_new_directories_each_posted_once(watch_env, mode):
    env, root = watch_env, watch_env.root
    w = env.start(["on_post None"], mode=mode)
    t0 = time.monotonic()
    per = FILES // DIRS
    for d in range(DIRS):                       # directories created during the burst
        dd = root / f"d{d:03d}"
        dd.mkdir()
        for i in range(per):
            (dd / f"f{i:03d}").write_bytes(b"%d/%d\n" % (d, i))
    created = time.monotonic() - t0
    got = env.msgs.get(FILES, timeout=120)
    took = time.monotonic() - t0
    counts = collections.Counter(m.relpath for m in got)
    assert len(got) == FILES, (len(got), w.text()[-3000:])
    assert len(counts) == FILES and set(counts.values()) == {1}
    assert counts.keys() == {f"/watched/d{d:03d}/f{i:03d}" for d in range(DIRS) for i in range(per)}
    env.msgs.none(2.0)                          # and nothing posted twice afterwards
    print(f"{mode}: {FILES} files created in {created:.1f} s, all announced after {took:.1f} s")


def test_inotify_queue_overflow_is_recovered_by_a_rescan(watch_env):
    """sr_watch is stopped (SIGSTOP) while more events happen than the kernel queues
    (fs.inotify.max_queued_events, 16384 by default): a real IN_Q_OVERFLOW."""
    env, root = watch_env, watch_env.root
    try:
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            limit = int(f.read())
    except OSError:
        limit = 16384
    files = limit // 2 + 500                    # create + modify + close: 3 events each
    (root / "known").write_text("k")
    for d in range(10):                         # watched directories: their files' events
        (root / f"o{d}").mkdir()                # go to the kernel queue
    w = env.start(["on_post None"])
    assert [m.relpath for m in env.msgs.get(1)] == ["/watched/known"]
    os.kill(w.proc.pid, signal.SIGSTOP)
    try:
        for i in range(files):
            (root / f"o{i % 10}" / f"f{i:05d}").write_bytes(b"%d" % i)
        os.unlink(root / "known")
    finally:
        os.kill(w.proc.pid, signal.SIGCONT)
    got = env.msgs.get(files + 1, timeout=90)
    counts = collections.Counter((m.relpath, m.algo) for m in got)
    assert len(got) == files + 1 and set(counts.values()) == {1}, (len(got), len(counts))
    assert ("/watched/known", "R") in counts
    env.msgs.none(2.0)
    assert "inotify event queue overflowed, events were lost: rescanning" in w.text()
