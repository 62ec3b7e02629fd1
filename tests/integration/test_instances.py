"""instances.start/stop/status with real processes (tests/integration/dummy_instance.py)."""

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from sarra.ops import instances
from tests.conftest import REPO

COMP = "dummy"
MODULE = "tests.integration.dummy_instance"


@pytest.fixture
def env(home, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.chdir(REPO)
    started = []
    yield started
    # never leave a process behind, whatever the test did
    for pid in started:
        try:
            p = psutil.Process(pid)
            for c in p.children(recursive=True):
                c.kill()
            p.kill()
        except psutil.NoSuchProcess:
            pass


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def start(env, config, count, extra=(), wait=0.3):
    pids = instances.start(COMP, config, count, argv_extra=list(extra), module=MODULE,
                           wait=wait)
    env.extend(pids)
    return pids


def test_start_status_kill_partial_stop(env):
    pids = start(env, "cfg_a", 2)
    assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
    st = instances.status(COMP, "cfg_a")
    assert [n for n, _ in st.running] == [1, 2]
    assert sorted(p for _, p in st.running) == sorted(pids)
    assert st.expected == 2 and st.stale == [] and st.state == "running"
    assert instances.state(COMP, "cfg_a") == "running"
    pidfile = instances.pid_file(COMP, "cfg_a", 1)
    assert pidfile.name == "sr_dummy_cfg_a_01.pid"
    assert pidfile.parent == Path(os.environ["XDG_CACHE_HOME"]) / "sarra" / "dummy" / "cfg_a"
    assert oct(pidfile.stat().st_mode & 0o777) == "0o600"
    assert instances.state_file(COMP, "cfg_a").read_text().strip() == "2"
    # the instance log file received the child's stdout/stderr and is private
    log = instances.log_file(COMP, "cfg_a", 2)
    assert log.name == "sr_dummy_cfg_a_02.log" and log.exists()
    assert oct(log.stat().st_mode & 0o777) == "0o600"

    # starting again is a no-op for running instances
    assert start(env, "cfg_a", 2) == []

    victim = dict(st.running)[2]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: instances.state(COMP, "cfg_a") == "partial")
    st = instances.status(COMP, "cfg_a")
    assert [n for n, _ in st.running] == [1] and st.stale == [2]

    survivor = dict(st.running)[1]
    assert instances.stop(COMP, "cfg_a", timeout=3) == 1
    assert all(gone(p) for p in pids)
    assert instances.pid_files(COMP, "cfg_a") == []
    assert instances.state(COMP, "cfg_a") == "stopped"
    assert gone(survivor)


def wait_child_ready(component, config, n):
    """The dummy prints a line to its log once its signal handlers are installed."""
    log = instances.log_file(component, config, n)
    line = f"dummy {config} {n} ready"
    assert wait_for(lambda: log.exists() and line in log.read_text())


def test_clean_exit_removes_own_pid_file(env):
    (pid,) = start(env, "cfg_clean", 1)
    proc = psutil.Process(pid)
    wait_child_ready(COMP, "cfg_clean", 1)
    assert instances.read_pid(COMP, "cfg_clean", 1) == pid
    os.kill(pid, signal.SIGTERM)
    assert proc.wait(timeout=3) == 0
    assert not instances.pid_file(COMP, "cfg_clean", 1).exists()


def test_sigkill_escalation_and_no_orphans(env):
    (pid,) = start(env, "cfg_hard", 1, extra=["--ignore-term", "--child"])
    proc = psutil.Process(pid)
    wait_child_ready(COMP, "cfg_hard", 1)
    assert wait_for(lambda: len(proc.children(recursive=True)) == 1)
    grandchild = proc.children(recursive=True)[0].pid
    time.sleep(0.3)  # let the grandchild install SIG_IGN for SIGTERM
    t0 = time.monotonic()
    assert instances.stop(COMP, "cfg_hard", timeout=0.5) == 1
    assert time.monotonic() - t0 < 5
    assert gone(pid) and gone(grandchild)
    assert instances.pid_files(COMP, "cfg_hard") == []


def test_stop_finds_instance_without_pid_file(env):
    (pid,) = start(env, "cfg_lost", 1)
    instances.pid_file(COMP, "cfg_lost", 1).unlink()
    assert instances.status(COMP, "cfg_lost").running == []
    assert instances.stop(COMP, "cfg_lost", timeout=3) == 1
    assert gone(pid)


def test_immediate_crash_is_reported(env, caplog):
    with caplog.at_level("ERROR", logger="sarra.instances"):
        started = instances.start(COMP, "cfg_crash", 2, argv_extra=["--crash", "3"],
                                  module=MODULE, wait=2.0)
    assert list(started) == []
    assert sorted(started.failed) == [(1, 3), (2, 3)]
    assert "exited at once with code 3" in caplog.text
    assert instances.pid_files(COMP, "cfg_crash") == []
    assert instances.state(COMP, "cfg_crash") == "stopped"


def test_stale_pid_files(env):
    # a pid that exists but is not ours (this test process), and one that does not exist
    instances.write_pid(COMP, "cfg_stale", 1, os.getpid(), remove_at_exit=False)
    p = psutil.Popen(["true"])
    p.wait()
    instances.write_pid(COMP, "cfg_stale", 2, p.pid, remove_at_exit=False)
    instances.pid_file(COMP, "cfg_stale", 3).parent.mkdir(parents=True, exist_ok=True)
    instances.pid_file(COMP, "cfg_stale", 3).write_text("garbage\n")
    st = instances.status(COMP, "cfg_stale")
    assert st.running == [] and st.stale == [1, 2, 3] and st.state == "stopped"
    assert instances.clean_stale(COMP, "cfg_stale") == [1, 2, 3]
    assert instances.pid_files(COMP, "cfg_stale") == []
    assert instances.stop(COMP, "cfg_stale") == 0


def test_cmdline_matches():
    cmd = ["/usr/bin/python3", "-m", "sarra.commands.subscribe", "--no", "2",
           "foreground", "dd_swob"]
    assert instances.cmdline_matches(cmd, "subscribe", "dd_swob")
    assert instances.cmdline_matches(cmd, "sr_subscribe", "dd_swob", 2)
    assert not instances.cmdline_matches(cmd, "subscribe", "dd_swob", 1)
    assert not instances.cmdline_matches(cmd, "sender", "dd_swob")
    assert not instances.cmdline_matches(cmd, "subscribe", "dd")
    assert instances.cmdline_matches(["sr_sender", "start", "/x/y/push.conf"], "sender", "push")
    # the component name only inside the config name does not count
    assert not instances.cmdline_matches(["vi", "/h/.config/sarra/post/my_post.conf"],
                                         "post", "my_post")
