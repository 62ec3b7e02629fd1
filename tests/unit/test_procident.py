"""procident: a pid file's process is verified (start time, uid, HOME) before any signal;
instances.process_of/status use it (issue 16, item 6)."""

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from sarra import paths
from sarra.ops import instances, procident

COMP = "subscribe"


@pytest.fixture
def child(home):
    procs = []

    def start(*args, env=None):
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", *args],
                             env=env)
        procs.append(p)
        assert wait_for(lambda: "-c" in psutil.Process(p.pid).cmdline())   # exec done
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def pid_path(tmp):
    return instances.pid_file(COMP, "cfg", 1)


def write(path, pid, when=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n")
    if when is not None:
        os.utime(path, (when, when))


def test_start_ticks():
    assert isinstance(procident.start_ticks(os.getpid()), int)
    p = subprocess.Popen(["true"])
    p.wait()
    assert procident.start_ticks(p.pid) is None


def test_recorded_process_is_verified(home):
    path = pid_path(home)
    write(path, os.getpid())
    procident.record(path, os.getpid())
    rec = json.loads(path.with_suffix(".ident").read_text())
    assert rec["pid"] == os.getpid() and rec["uid"] == os.getuid()
    assert rec["state_dir"] == os.path.realpath(path.parent)
    assert procident.verify(os.getpid(), path).pid == os.getpid()
    procident.forget(path)
    assert not path.with_suffix(".ident").exists()


def test_other_start_time_is_refused(home):
    """A recorded process that died and whose pid was reused: not the same process."""
    path = pid_path(home)
    write(path, os.getpid())
    procident.record(path, os.getpid())
    rec = json.loads(path.with_suffix(".ident").read_text())
    for changed in ({"ticks": (rec["ticks"] or 0) + 1},
                    {"ticks": None, "create_time": rec["create_time"] - 10}):
        path.with_suffix(".ident").write_text(json.dumps(dict(rec, **changed)))
        assert procident.verify(os.getpid(), path) is None


def test_other_state_dir_or_uid_is_refused(home, monkeypatch):
    path = pid_path(home)
    write(path, os.getpid())
    procident.record(path, os.getpid())
    rec = json.loads(path.with_suffix(".ident").read_text())
    path.with_suffix(".ident").write_text(json.dumps(dict(rec, state_dir="/elsewhere")))
    assert procident.verify(os.getpid(), path) is None
    procident.record(path, os.getpid())
    monkeypatch.setattr(os, "getuid", lambda: os.geteuid() + 4242)   # another user's
    assert procident.verify(os.getpid(), path) is None


def test_bare_pid_file_must_predate_nothing_started_after_it(home, child):
    """Without a record (older version), a process started after the pid file was
    written is a reused pid."""
    p = child()
    path = pid_path(home)
    write(path, p.pid)
    assert procident.verify(p.pid, path) is not None
    started = psutil.Process(p.pid).create_time()
    write(path, p.pid, when=started - 60)
    assert procident.verify(p.pid, path) is None


def test_another_homes_process_is_refused(home, child, tmp_path):
    ours = procident.child_env()
    assert ours[procident.ENV_MARK] == os.path.realpath(paths.cache_dir())
    theirs = dict(ours, **{procident.ENV_MARK: str(tmp_path / "bob/.cache/sarra")})
    mine, other = child(env=ours), child(env=theirs)
    path = pid_path(home)
    write(path, other.pid)
    assert procident.verify(other.pid, path) is None
    write(path, mine.pid)
    assert procident.verify(mine.pid, path).pid == mine.pid
    found = [p.pid for p in procident.marked()]
    assert mine.pid in found and other.pid not in found


def test_process_of_refuses_lookalike_with_other_start(home, child):
    """The old check (command line only) took a recycled pid for an instance."""
    p = child("sarra.commands.subscribe", "--no", "1", "foreground", "cfg")
    path = instances.pid_file(COMP, "cfg", 1)
    write(path, p.pid)
    assert instances.status(COMP, "cfg").running == [(1, p.pid)]   # looks right, is ours
    procident.record(path, p.pid)
    rec = json.loads(path.with_suffix(".ident").read_text())
    path.with_suffix(".ident").write_text(json.dumps(
        dict(rec, ticks=None, create_time=rec["create_time"] - 100)))
    st = instances.status(COMP, "cfg")
    assert st.running == [] and st.stale == [1]
    assert instances.stop(COMP, "cfg", timeout=1) == 0
    assert p.poll() is None                      # not signalled
    assert not path.exists() and not path.with_suffix(".ident").exists()
