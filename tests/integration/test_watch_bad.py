"""sr_watch with bad input: missing or vanishing directories, permission denied, the inotify
watch limit.  Each gives one clear message and the daemon goes on with the rest.

Root is not stopped by permission bits, so the permission test runs sr_watch without the
capabilities that bypass them (setpriv --bounding-set -dac_override,-dac_read_search): a
real EACCES.  The watch limit test runs sr_watch in its own user namespace (unshare -Ur)
whose user.max_inotify_watches is set to a few watches: a real ENOSPC from
inotify_add_watch, without touching the limit of the machine.
"""

import os
import shutil
import subprocess

import pytest

from tests.integration.watchkit import MODES, watch_env  # noqa: F401  (fixture)


def _can(argv):
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.parametrize("mode", MODES)
def test_missing_then_vanishing_directory(watch_env, mode, tmp_path):
    env = watch_env
    other = env.root                              # a directory that is fine all along
    late = env.base / "late"
    w = env.start(["heartbeat 1", f"path {late}"], mode=mode)
    w.wait_for(f"{late}: watched path does not exist; waiting for it to appear")
    (other / "a").write_text("a")
    assert [m.relpath for m in env.msgs.get(1)] == ["/watched/a"]
    late.mkdir()
    (late / "b").write_text("b")
    assert [m.relpath for m in env.msgs.get(1, timeout=10)] == ["/late/b"]
    w.wait_for(f"{late}: appeared, watching it")

    shutil.rmtree(late)                           # disappears: its files are removed
    m, = env.msgs.get(1)
    assert (m.relpath, m.algo) == ("/late/b", "R")
    w.wait_for(f"{late}: watched directory disappeared")
    (other / "c").write_text("c")                 # the rest goes on
    assert [m.relpath for m in env.msgs.get(1)] == ["/watched/c"]
    late.mkdir()                                  # and it comes back
    (late / "d").write_text("d")
    assert [m.relpath for m in env.msgs.get(1, timeout=10)] == ["/late/d"]
    env.msgs.none(1.0)
    assert w.proc.poll() is None


@pytest.mark.parametrize("mode", MODES)
def test_permission_denied_on_a_subdirectory(watch_env, mode):
    env, root = watch_env, watch_env.root
    wrapper = ()
    if os.geteuid() == 0:
        wrapper = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")
        if not _can(list(wrapper) + ["true"]):
            pytest.skip("setpriv cannot drop capabilities here: cannot test EACCES as root")
    (root / "ok").mkdir()
    (root / "ok" / "a").write_text("a")
    locked = root / "locked"
    locked.mkdir()
    (locked / "secret").write_text("s")
    os.chmod(locked, 0)
    try:
        w = env.start(["heartbeat 1"], mode=mode, wrapper=wrapper)
        assert [m.relpath for m in env.msgs.get(1)] == ["/watched/ok/a"]
        w.wait_for(f"{locked}: permission denied")
        (root / "ok" / "b").write_text("b")       # the rest goes on
        assert [m.relpath for m in env.msgs.get(1)] == ["/watched/ok/b"]
        os.chmod(locked, 0o755)                   # fixed: picked up again
        assert [m.relpath for m in env.msgs.get(1, timeout=10)] == ["/watched/locked/secret"]
        (locked / "new").write_text("n")
        assert [m.relpath for m in env.msgs.get(1, timeout=10)] == ["/watched/locked/new"]
        env.msgs.none(1.0)
        assert w.text().count("permission denied") == 1
    finally:
        os.chmod(locked, 0o755)


def test_inotify_watch_limit(watch_env):
    env, root = watch_env, watch_env.root
    if not _can(["unshare", "-Ur", "sh", "-c", "echo 5 > /proc/sys/user/max_inotify_watches"]):
        pytest.skip("unshare -Ur (user namespaces with their own inotify watch limit) not "
                    "available: cannot set a watch limit")
    for d in range(10):
        (root / f"d{d}").mkdir()
        (root / f"d{d}" / "old").write_text(str(d))
    wrapper = ("unshare", "-Ur", "sh", "-c",
               'echo 5 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh")
    w = env.start(["heartbeat 1"], wrapper=wrapper)
    got = env.msgs.get(10)
    assert sorted(m.relpath for m in got) == [f"/watched/d{d}/old" for d in range(10)]
    text = w.wait_for("inotify watch limit reached")
    assert "fs.inotify.max_user_watches" in text and "polled instead" in text
    for d in range(10):                           # watched or polled, every directory works
        (root / f"d{d}" / "new").write_text(str(d))
    (root / "d9" / "sub").mkdir()
    (root / "d9" / "sub" / "x").write_text("x")
    got = env.msgs.get(11, timeout=15)
    assert sorted(m.relpath for m in got) == sorted(
        [f"/watched/d{d}/new" for d in range(10)] + ["/watched/d9/sub/x"])
    env.msgs.none(1.0)
    assert w.proc.poll() is None
    # the limit raised (inside its namespace): every directory is watched with inotify again
    pid = w.proc.pid
    if _can(["nsenter", "-t", str(pid), "-U", "--preserve-credentials", "true"]):
        subprocess.run(["nsenter", "-t", str(pid), "-U", "--preserve-credentials", "sh", "-c",
                        "echo 1000 > /proc/sys/user/max_inotify_watches"], check=True)
        w.wait_for("inotify watches available again", timeout=10)
        (root / "d8" / "again").write_text("again")
        assert [m.relpath for m in env.msgs.get(1)] == ["/watched/d8/again"]
        env.msgs.none(1.0)
