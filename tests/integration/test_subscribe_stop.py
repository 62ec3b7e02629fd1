"""`sr_subscribe foreground` stops within 5 seconds of SIGTERM or Ctrl-C (SIGINT to the
whole foreground process group, as a terminal sends it), children included, finishing or
returning the message in hand:

* an on_file `run_command` that would run for 30 s: the command (in a session of its own,
  so Ctrl-C never reaches it) is killed by pid, the download is finished (acknowledged,
  the file kept, not re-posted, the command not run again after a restart);
* a download from a server that went silent, after part of the body or before answering
  at all: abandoned, the message goes back to the queue, a restart downloads it once the
  server answers.
"""

import hashlib
import os
import signal
import socket
import threading
import time

import psutil
import pytest

from sarra.plugins import run_command
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    files_under, md5, post_msg, stub_http, sub_env, wait_for)

STOP_WITHIN = 5.0


def _signal(p, how):
    """SIGTERM to the instance, or Ctrl-C: SIGINT to its whole process group (the test
    started it as a group leader, like a shell starts a foreground job)."""
    if how == "sigterm":
        p.send_signal(signal.SIGTERM)
    else:
        os.killpg(p.pid, signal.SIGINT)


def md5_of(data):
    return hashlib.md5(data).hexdigest()


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---------------------------------------------------------------- a slow on_file command

SLOW_SCRIPT = """#!/bin/sh
# $1: the file; writes "<pid> <file>" to runs, then (while the flag file exists) sleeps
echo "$$ $1" >> {runs}
[ -e {flag} ] || exit 0
{body}
"""
#: the sleep is the command itself (exec), or, the shell ignoring SIGTERM, a child of it
#: that inherits the ignored SIGTERM: only SIGKILL ends those
BODIES = {"sleep": "exec sleep 30",
          "ignores_sigterm": "trap '' TERM\nsleep 30 &\necho $! >> {pids}\nwait"}


def _slow_env(env, body):
    runs, flag, pids = env.tmp / "runs.log", env.tmp / "slow", env.tmp / "pids"
    script = env.tmp / "cmd.sh"
    script.write_text(SLOW_SCRIPT.format(runs=runs, flag=flag, body=body.format(pids=pids)))
    script.chmod(0o755)
    flag.touch()
    env.config(extra=f"on_file run_command\nrun_command_cmd {script}\n"
                     "run_command_timeout 60")
    env.setup()
    return runs, flag, pids


def _publish(env, stub, name, data):
    path = f"/{env.uid}/{name}"
    stub.files[path] = data
    env.publish_msg(post_msg(stub.url + env.uid, "/" + name, data))
    return path


def _runs(runs):
    try:
        return [line.split(" ", 1) for line in runs.read_text().splitlines()]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("how,body", [("sigterm", "sleep"), ("sigint", "sleep"),
                                      ("sigterm", "ignores_sigterm")])
def test_stop_kills_a_slow_run_command_and_finishes_the_message(sub_env, stub_http, how,
                                                                  body):
    env, stub = sub_env, stub_http
    runs, flag, pids = _slow_env(env, BODIES[body])
    data = b"slow command\n" * 100
    _publish(env, stub, "a.txt", data)
    p = env.foreground()
    assert wait_for(lambda: _runs(runs), timeout=30), env.log_text()
    children = [int(pid) for pid, _ in _runs(runs)]
    if body == "ignores_sigterm":
        assert wait_for(lambda: pids.exists() and pids.read_text().strip(), timeout=10)
        children.append(int(pids.read_text().split()[0]))
    time.sleep(0.3)
    assert not any(_gone(c) for c in children)      # the command is running
    t0 = time.monotonic()
    _signal(p, how)
    assert p.wait(15) == 0, env.log_text()
    took = time.monotonic() - t0
    assert took < STOP_WITHIN, (took, env.log_text())
    assert wait_for(lambda: all(_gone(c) for c in children), timeout=STOP_WITHIN - took)
    log = env.log_text()
    assert f"run_command: stopped, killed {env.tmp / 'cmd.sh'} (pid {children[0]})" in log
    # the download was finished: the file is there, whole, and the message acknowledged
    assert md5(env.dst / "a.txt") == md5_of(data)
    assert env.queue_depth(env.queue_name()) == 0

    # a restart does not run the command on a.txt again, and handles new files normally
    flag.unlink()
    p2 = env.foreground()
    assert wait_for(lambda: "started, queue" in env.log_text(1), timeout=20)
    _publish(env, stub, "b.txt", b"next\n")
    assert wait_for(lambda: len(_runs(runs)) >= 2, timeout=30), env.log_text(1)
    env.stop(p2)
    assert [os.path.basename(f) for _, f in _runs(runs)] == ["a.txt", "b.txt"]
    assert stub.count(f"/{env.uid}/a.txt") == 1
    assert "stopped, killed" not in env.log_text(1)


def test_a_second_sigterm_exits_at_once_and_kills_the_command_too(sub_env, stub_http):
    """Impatient stop (SIGTERM twice, before the command's grace is over): the instance
    exits at once (143) and the command's process group, which ignores SIGTERM, is killed
    with it; nothing is acknowledged, so a restart downloads the file again."""
    env, stub = sub_env, stub_http
    runs, flag, pids = _slow_env(env, BODIES["ignores_sigterm"])
    data = b"impatient\n" * 50
    _publish(env, stub, "a.txt", data)
    p = env.foreground()
    assert wait_for(lambda: _runs(runs), timeout=30), env.log_text()
    assert wait_for(lambda: pids.exists() and pids.read_text().strip(), timeout=10)
    children = [int(_runs(runs)[0][0]), int(pids.read_text().split()[0])]
    assert not any(_gone(c) for c in children)
    p.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    assert p.wait(5) == 128 + signal.SIGTERM
    assert wait_for(lambda: all(_gone(c) for c in children), timeout=3)
    # not acknowledged: back in the queue
    assert wait_for(lambda: env.queue_depth(env.queue_name()) == 1, timeout=10)


class _Parent:
    """What run_command needs of its parent: options, msg, logger, stop_event."""

    def __init__(self, tmp_path, cmd, stop_event=None):
        self.run_command_cmd = [cmd]
        self.msg = type("W", (), {"new_dir": str(tmp_path), "new_file": "f.txt"})()
        if stop_event is not None:
            self.stop_event = stop_event


def test_a_command_that_ends_soon_after_the_stop_finishes(tmp_path, caplog):
    """The message in hand is finished when it can be: a command ending within the grace
    after the stop keeps its result; one that does not is killed; a parent without a
    stop_event waits as before."""
    stop = threading.Event()
    stop.set()
    out = tmp_path / "out"
    quick = f"sh -c 'sleep 0.2; echo done > {out}'"
    assert run_command.on_file(_Parent(tmp_path, quick, stop)) is True
    assert out.read_text() == "done\n"
    t0 = time.monotonic()
    assert run_command.on_file(_Parent(tmp_path, "sh -c 'exec sleep 30'", stop)) is False
    assert time.monotonic() - t0 < run_command.STOP_GRACE + run_command.KILL_GRACE
    assert "run_command: stopped, killed sh (pid " in caplog.text
    out.unlink()
    assert run_command.on_file(_Parent(tmp_path, quick)) is True
    assert out.read_text() == "done\n"


# ---------------------------------------------------------------- a server gone silent

class SilentServer:
    """HTTP on loopback that reads each request and never answers while `silent` is set;
    then answers the next requests with `data`."""

    def __init__(self, data):
        self.data = data
        self.silent = True
        self.requests = 0
        self.held = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                _, buf = buf.split(b"\r\n\r\n", 1)
                self.requests += 1
                if self.silent:
                    self.held.append(conn)          # the client waits for the status line
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(self.data), self.data))
        except OSError:
            conn.close()

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.mark.parametrize("how", ["sigterm", "sigint"])
@pytest.mark.parametrize("stall", ["mid_body", "no_answer"])
def test_stop_during_a_stalled_download_returns_the_message(sub_env, stub_http, how, stall):
    env, stub = sub_env, stub_http
    env.config()
    env.setup()
    data = os.urandom(200_000)
    temp = env.dst / "big.bin.tmp"
    if stall == "mid_body":         # headers and half the body, then nothing
        path = f"/{env.uid}/big.bin"
        stub.files[path] = data
        stub.gates[path] = gate = threading.Event()
        env.publish_msg(post_msg(stub.url + env.uid, "/big.bin", data))
        requests = lambda: stub.count(path)           # noqa: E731
    else:                           # the request is read, no status line ever comes
        srv = SilentServer(data)
        env.publish_msg(post_msg(srv.url + "/" + env.uid, "/big.bin", data))
        requests = lambda: srv.requests               # noqa: E731
    try:
        p = env.foreground()
        assert wait_for(lambda: requests() == 1, timeout=30), env.log_text()
        if stall == "mid_body":                       # the body has begun
            assert wait_for(temp.exists, timeout=10), env.log_text()
        time.sleep(0.5)                               # what was sent is read: in recv()
        assert p.poll() is None
        t0 = time.monotonic()
        _signal(p, how)
        assert p.wait(15) == 0, env.log_text()
        took = time.monotonic() - t0
        assert took < STOP_WITHIN, (took, env.log_text())
        assert "stop requested during transfer, returned to the queue" in env.log_text()
        assert files_under(env.dst) == []             # neither a partial file nor its temp
        assert env.queue_depth(env.queue_name()) == 1

        # the server answers again: a restart downloads the file, once
        if stall == "mid_body":
            del stub.gates[path]
            gate.set()
        else:
            srv.silent = False
        p2 = env.foreground()
        assert not env.wait_files({"big.bin": md5_of(data)}, timeout=30), env.log_text(1)
        assert wait_for(lambda: len(env.on_file_lines()) == 1, timeout=10)
        env.stop(p2)
        assert requests() == 2
        assert env.on_file_lines() == [str(env.dst / "big.bin")]
        assert env.queue_depth(env.queue_name()) == 0
    finally:
        if stall == "no_answer":
            srv.close()
