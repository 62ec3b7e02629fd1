"""sr_subscribe actions on a real configuration: add, list, declare, setup, start, status,
stop, restart, disable, enable, cleanup, remove; the saved queue name; concurrent starts;
a queue renamed in the configuration."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.parse

import amqp
import psutil
import pytest
import requests

from sarra.ops import instances

from tests.conftest import command_argv, command_env
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    post_msg, stub_http, sub_env, wait_for)


def _queues(broker_url, prefix):
    """Queue names on the broker starting with prefix (management API)."""
    u = urllib.parse.urlsplit(broker_url)
    r = requests.get(f"http://{u.hostname}:15672/api/queues/%2F?columns=name",
                     auth=(u.username or "guest", u.password or "guest"), timeout=10)
    r.raise_for_status()
    return sorted(q["name"] for q in r.json() if q["name"].startswith(prefix))


def _exists(env, queue):
    try:
        env.queue_depth(queue)
        return True
    except amqp.exceptions.NotFound:
        env._conn = None          # the broker closed that channel
        return False


def _serve(stub, env, rel):
    data = rel.encode() * 5
    stub.files[f"/{env.uid}{rel}"] = data
    env.publish_msg(post_msg(stub.url + env.uid, rel, data))
    return {rel[1:]: hashlib.md5(data).hexdigest()}


def test_actions_lifecycle(sub_env, stub_http, broker_url, monkeypatch):
    env, stub = sub_env, stub_http
    # add: from the current directory into the config directory
    env.config()
    src = env.home / f"{env.name}.conf"
    src.write_text(env.config_path.read_text())
    env.config_path.unlink()
    r = env.cmd("add", f"{env.name}.conf", check=True)
    assert env.config_path.exists(), r.stdout
    r = env.cmd("list", check=True)
    assert env.name in r.stdout and "enabled" in r.stdout
    assert env.cmd("list", env.name, check=True).stdout == src.read_text()

    # declare: the queue exists (name saved in the state directory) but is not bound
    r = env.cmd("declare", env.name, check=True)
    queue = env.queue_name()
    assert queue and queue.startswith(f"q_guest.sr_subscribe.{env.name}.")
    assert len(queue.split(".")) == 5          # q_<user>.sr_subscribe.<config>.<r1>.<r2>
    assert queue in r.stdout
    _serve(stub, env, "/lost.txt")
    assert wait_for(lambda: _exists(env, queue), timeout=5)
    assert env.queue_depth(queue) == 0
    # setup: bound now; what is published while nothing runs is kept
    env.cmd("setup", env.name, check=True)
    want = _serve(stub, env, "/one.txt")
    assert wait_for(lambda: env.queue_depth(queue) == 1, timeout=5)

    r = env.cmd("start", env.name, check=True)
    assert "started 1 instance(s)" in r.stdout
    assert env.wait_files(want, timeout=30) == {}
    assert "running" in env.cmd("status", env.name, check=True).stdout
    r = env.cmd("stop", env.name, check=True)
    assert "stopped 1 instance(s)" in r.stdout
    assert "stopped" in env.cmd("status", env.name).stdout

    # published while stopped, delivered after the next start: same queue
    want = _serve(stub, env, "/two.txt")
    env.cmd("start", env.name, check=True)
    assert env.wait_files(want, timeout=30) == {}
    assert env.queue_name() == queue
    r = env.cmd("restart", env.name, check=True)
    assert "started 1 instance(s)" in r.stdout
    want = _serve(stub, env, "/three.txt")
    assert env.wait_files(want, timeout=30) == {}
    assert env.queue_name() == queue
    assert _queues(broker_url, f"q_guest.sr_subscribe.{env.name}.") == [queue]
    env.cmd("stop", env.name, check=True)

    # disable / enable
    env.cmd("disable", env.name, check=True)
    assert "disabled" in env.cmd("list", check=True).stdout
    r = env.cmd("start", env.name)
    assert r.returncode == 2 and "disabled" in r.stderr
    env.cmd("enable", env.name, check=True)

    # edit: $EDITOR on the configuration file
    editor = env.home / "ed.sh"
    editor.write_text('#!/bin/sh\necho "# edited" >> "$1"\n')
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.delenv("VISUAL", raising=False)
    env.cmd("edit", env.name, check=True)
    assert env.config_path.read_text().endswith("# edited\n")

    # cleanup: queue and state gone; remove: config gone
    r = env.cmd("cleanup", env.name, check=True)
    assert queue in r.stdout
    assert not _exists(env, queue)
    assert not env.state_dir().exists()
    env.cmd("remove", env.name, check=True)
    assert not env.config_path.exists()
    assert env.name not in env.cmd("list", check=True).stdout


def test_simultaneous_starts_share_one_queue(sub_env, broker_url):
    env = sub_env
    env.config(extra="instances 2")
    argv = command_argv("sr_subscribe") + ["start", env.name]
    procs = [subprocess.Popen(argv, env=command_env(), cwd=str(env.home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    started = sum(int(o.split("started ")[1].split()[0]) for o, _ in outs)
    assert started == 2, outs                 # never more instances than configured
    queue = wait_for(env.queue_name, timeout=10)
    assert wait_for(lambda: env.channel().queue_declare(queue, passive=True)[2] == 2,
                    timeout=20)
    assert _queues(broker_url, f"q_guest.sr_subscribe.{env.name}.") == [queue]
    r = env.cmd("stop", env.name, check=True)
    assert "stopped 2 instance(s)" in r.stdout


def test_queue_renamed_in_config_just_uses_the_new_queue(sub_env, stub_http, amqp_channel):
    env, stub = sub_env, stub_http
    first, second = f"q_guest.{env.uid}.first", f"q_guest.{env.uid}.second"
    try:
        env.config(extra=f"queue_name {first}")
        env.setup()
        want = _serve(stub, env, "/a.txt")
        p = env.foreground()
        assert env.wait_files(want, timeout=30) == {}
        env.stop(p)
        env.config(extra=f"queue_name {second}")
        env.setup()
        want = _serve(stub, env, "/b.txt")
        p = env.foreground()
        assert env.wait_files(want, timeout=30) == {}, env.log_text()
        env.stop(p)
        assert f"queue {second}" in env.log_text(1)
        assert env.queue_depth(second) == 0
    finally:
        for q in (first, second):
            try:
                amqp_channel.queue_delete(q)
            except Exception:
                pass


@pytest.mark.parametrize("action", ["foreground", "declare"])
def test_unknown_config_is_a_usage_error(sub_env, action):
    r = sub_env.cmd(action, "no_such_config")
    assert r.returncode == 2
    assert "no_such_config" in r.stderr


# ---------------------------------------------------------------- command-line options

def _instance(env, n=1):
    """(pid, command line as one string: the process title when set) of instance n,
    from its pid file."""
    pid = int((env.state_dir() / f"sr_subscribe_{env.name}_{n:02d}.pid").read_text())
    return pid, " ".join(a for a in psutil.Process(pid).cmdline() if a)


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _options_file(env):
    return env.state_dir() / f"sr_subscribe_{env.name}.options"


def test_start_gives_its_command_line_options_to_the_instances(sub_env, stub_http, tmp_path):
    env, stub = sub_env, stub_http
    other = tmp_path / "other dir"              # a space: one argument, no shell involved
    env.config(accept=False, extra="accept_unmatch on")   # the last directory applies
    env.setup()
    r = env.cmd("start", env.name, "--directory", other, check=True)
    assert "started 1 instance(s)" in r.stdout
    pid, cmd = _instance(env)
    assert f"--directory={other}" in cmd, cmd
    assert json.loads(_options_file(env).read_text()) == [f"--directory={other}"]
    want = _serve(stub, env, "/opt1.txt")
    assert env.wait_files(want, root=other, timeout=30) == {}
    assert not (env.dst / "opt1.txt").exists()
    # an option value naming another configuration never makes the instance its
    assert not instances.cmdline_matches(
        [sys.executable, "-m", "sarra.commands.subscribe", f"--directory=/data/{env.name}",
         "--no", "1", "foreground", "another"], "subscribe", env.name)

    # started again later (sanity; the sr supervisor likewise): the same options
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not _alive(pid), timeout=10)
    env.cmd("sanity", env.name, check=True)
    pid2, cmd2 = _instance(env)
    assert pid2 != pid and f"--directory={other}" in cmd2, cmd2
    want = _serve(stub, env, "/opt2.txt")
    assert env.wait_files(want, root=other, timeout=30) == {}

    # restart takes the options of its own command line (none here)
    env.cmd("restart", env.name, check=True)
    pid3, cmd3 = _instance(env)
    assert pid3 != pid2 and "--directory" not in cmd3, cmd3
    assert not _options_file(env).exists()
    want = _serve(stub, env, "/opt3.txt")
    assert env.wait_files(want, timeout=30) == {}
    assert not (other / "opt3.txt").exists()
    env.cmd("restart", env.name, "--directory", other, check=True)
    assert f"--directory={other}" in _instance(env)[1]
    env.cmd("stop", env.name, check=True)
    assert not _options_file(env).exists()       # stop forgets them


def test_supervisor_restarts_an_instance_with_the_options_of_its_start(sub_env, tmp_path):
    env = sub_env
    other = tmp_path / "other"
    env.config()

    def sr(*args):
        return subprocess.run(command_argv("sr") + list(args), capture_output=True, text=True,
                              timeout=60, env=command_env(), cwd=str(env.home),
                              stdin=subprocess.DEVNULL)

    env.cmd("disable", env.name, check=True)
    try:
        r = sr("start")                          # the supervisor, with nothing to run
        assert r.returncode == 0, r.stdout + r.stderr
        env.cmd("enable", env.name, check=True)
        env.cmd("start", env.name, "--directory", other, check=True)
        pid, _ = _instance(env)
        os.kill(pid, signal.SIGKILL)

        def restarted():
            try:
                return _instance(env)[0] != pid
            except (OSError, ValueError, psutil.Error):
                return False

        assert wait_for(restarted, timeout=20), \
            (env.home / ".cache/sarra/log/sr_supervisor.log").read_text()
        pid2, cmd2 = _instance(env)
        assert f"--directory={other}" in cmd2, cmd2
    finally:
        sr("stop")


# ---------------------------------------------------------------- errors, once

@pytest.mark.parametrize("case", ["closed_port", "unknown_user"])
def test_foreground_broker_error_once_and_before_stopped(sub_env, broker_url, case):
    env = sub_env
    u = urllib.parse.urlsplit(broker_url)
    bad = "amqp://guest:guest@127.0.0.1:1/" if case == "closed_port" else \
        f"amqp://nobody{env.uid}:secret{env.uid}@{u.hostname}:{u.port or 5672}/"
    env.config()
    env.config_path.write_text(env.config_path.read_text().replace(
        f"broker {env.broker}", f"broker {bad}"))
    p = env.foreground()
    if case == "closed_port":                    # retried (back-off) until stopped
        assert wait_for(lambda: "(attempt 2)" in env.log_text(), timeout=20), env.log_text()
        p.send_signal(signal.SIGTERM)
        what = "cannot connect to amqp://guest@127.0.0.1:1/"
    else:
        what = "login refused"
    assert p.wait(30) == 3
    lines = env.log_text().splitlines()
    assert not [x for x in lines if x.startswith("sr_subscribe:")], lines   # no 2nd copy
    assert lines and "stopped:" in lines[-1], lines
    said = [x for x in lines if what in x]
    if case == "closed_port":
        attempts = [x.rsplit("(attempt ", 1)[1] for x in said]
        assert attempts and len(attempts) == len(set(attempts)), lines  # one line each
    else:
        assert len(said) == 1, lines
        assert f"secret{env.uid}" not in "\n".join(lines)


def test_cleanup_with_statehost_removes_the_host_state(sub_env):
    env = sub_env
    env.config(extra="statehost on")
    env.cmd("declare", env.name, check=True)
    host_dirs = list((env.home / ".cache" / "sarra").glob(f"*/subscribe/{env.name}"))
    assert len(host_dirs) == 1, host_dirs
    qfiles = list(host_dirs[0].glob("*.qname"))
    assert len(qfiles) == 1
    queue = qfiles[0].read_text().strip()
    assert _exists(env, queue)
    r = env.cmd("cleanup", env.name, check=True)
    assert queue in r.stdout
    assert not _exists(env, queue)
    assert not host_dirs[0].exists()
    assert not env.state_dir().exists()


def test_statehost_keeps_every_state_and_log_file_under_the_host_dir(sub_env, stub_http):
    """Home directories shared across nodes: statehost in default.conf puts pid, instance
    count, queue name, retry and log files of every instance, and the umbrella's view of
    them, under ~/.cache/sarra/<host>/; nothing is written in the shared directories."""
    env, stub = sub_env, stub_http
    (env.home / ".config" / "sarra" / "default.conf").write_text("statehost on\n"
                                                                 "hostform short\n")
    env.config()
    cache = env.home / ".cache" / "sarra"
    host = socket.getfqdn().split(".")[0]
    hdir = cache / host
    env.cmd("start", env.name, check=True)
    want = _serve(stub, env, "/h.txt")
    assert env.wait_files(want, timeout=30) == {}
    sdir = hdir / "subscribe" / env.name
    assert list(sdir.glob(f"sr_subscribe_{env.name}_01.pid")), list(sdir.iterdir())
    assert list(sdir.glob("*.qname")) and list(sdir.glob(f"sr_subscribe_{env.name}.state"))
    log = hdir / "log" / f"sr_subscribe_{env.name}_01.log"
    assert wait_for(lambda: log.exists() and "h.txt" in log.read_text(), timeout=10)
    assert not (cache / "subscribe").exists() and not (cache / "log").exists()
    assert "running" in env.cmd("status", env.name, check=True).stdout
    r = subprocess.run(command_argv("sr") + ["status", f"subscribe/{env.name}"],
                       capture_output=True, text=True, timeout=60, env=command_env(),
                       cwd=str(env.home), stdin=subprocess.DEVNULL)
    row = [x for x in r.stdout.splitlines() if env.name in x]
    assert row and "running" in row[0] and "1/1" in row[0], r.stdout + r.stderr
    assert "stopped 1 instance(s)" in env.cmd("stop", env.name, check=True).stdout
    env.cmd("cleanup", env.name, check=True)
    assert not sdir.exists()
    assert not (cache / "subscribe").exists()


# ---------------------------------------------------------------- command line

@pytest.mark.parametrize("prog", ["sr_post", "sr_subscribe"])
def test_help_has_one_usage_line(home, prog):
    r = subprocess.run(command_argv(prog) + ["--help"], capture_output=True, text=True,
                       timeout=60, env=command_env(), cwd=str(home))
    assert r.returncode == 0, r.stderr
    usage = [x for x in r.stdout.splitlines() if x.startswith("usage:")]
    assert len(usage) == 1 and usage[0].startswith(f"usage: {prog} "), usage
    if prog == "sr_post":
        assert "<action>" not in r.stdout


def test_police_help_lists_its_own_options_before_the_man_page_line(home):
    r = subprocess.run(command_argv("sr_police") + ["--help"], capture_output=True,
                       text=True, timeout=60, env=command_env(), cwd=str(home))
    lines = r.stdout.rstrip("\n").splitlines()
    assert lines[-1] == "See man sr_police for details."
    assert "  --fix" in lines and lines.index("  --fix") < len(lines) - 1
    r = subprocess.run(command_argv("sr_police") + ["--users", "show"], capture_output=True,
                       text=True, timeout=60, env=command_env(), cwd=str(home))
    assert "sr_police: command line: unknown option 'users'" in r.stderr.splitlines(), r.stderr


@pytest.mark.parametrize("prog", ["sr_post", "sr_subscribe", "sr", "sr_watch", "sr_police"])
def test_help_into_a_closed_pipe_ends_quietly(home, prog):
    """`sr_subscribe --help | head`: a reader that is gone is not a traceback."""
    rfd, wfd = os.pipe()
    os.close(rfd)                       # the reader left before a byte was written
    try:
        r = subprocess.run(command_argv(prog) + ["--help"], stdout=wfd, stderr=subprocess.PIPE,
                           text=True, timeout=60, env=command_env(), cwd=str(home))
    finally:
        os.close(wfd)
    assert r.returncode == 1 and r.stderr == "", r.stderr


def test_unknown_option_warns_and_leaves_the_action_alone(sub_env):
    env = sub_env
    env.config()
    r = env.cmd("--bogus", "show", env.name)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^directory\s+" + re.escape(str(env.dst)), r.stdout, re.M), r.stdout
    warn = [x for x in r.stderr.splitlines() if "bogus" in x]
    assert len(warn) == 1 and warn[0].startswith("sr_subscribe: ") and \
        "unknown option" in warn[0], r.stderr
    r = env.cmd("--bogus", "7", "show", env.name)      # no action: the option's value
    assert r.returncode == 0, r.stderr
    assert re.search(r"^bogus\s+7\s", r.stdout, re.M), r.stdout

    r = subprocess.run(command_argv("sr_post") + [
        "--bogus", "x", "--post_broker", env.broker, "--post_exchange", env.exchange,
        "--post_base_url", "file:/", str(env.tmp / "missing.txt")],
        capture_output=True, text=True, timeout=60, env=command_env(), cwd=str(env.home),
        stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr
    warn = [x for x in r.stderr.splitlines() if "bogus" in x]
    assert len(warn) == 1 and warn[0].startswith("sr_post: ") and \
        "unknown option" in warn[0], r.stderr


# ---------------------------------------------------------------- errors a person can act on

def test_a_config_without_broker_is_one_line_and_status_2(sub_env):
    env = sub_env
    env.config_path.parent.mkdir(parents=True, exist_ok=True)
    env.config_path.write_text(f"exchange {env.exchange}\n")
    for action in ("foreground", "start", "declare"):
        r = env.cmd(action, env.name)
        assert r.returncode == 2, (action, r.stderr)
        assert r.stderr.splitlines() == [
            f"sr_subscribe: {env.config_path}: option broker is required (the broker to "
            f"consume from)"], (action, r.stderr)
    assert not list(env.state_dir().glob("*.pid"))


def test_extra_config_names_and_unknown_actions_are_usage_errors(sub_env):
    env = sub_env
    env.config()
    r = env.cmd("start", env.name, "other")
    assert r.returncode == 2
    assert "unexpected argument(s) after" in r.stderr and "other" in r.stderr
    r = env.cmd("bogus", env.name)
    assert r.returncode == 2 and f"no action among 'bogus' '{env.name}'" in r.stderr


@pytest.mark.parametrize("breakage", ["bad_value", "disabled", "removed"])
def test_stop_and_status_still_work_when_the_config_broke_after_start(sub_env, breakage):
    """Its instances are running: stop and status act on them (one warning naming the
    config's problem), where they used to fail and leave them running."""
    env = sub_env
    env.config()
    env.cmd("start", env.name, check=True)
    pid, _ = _instance(env)
    if breakage == "bad_value":
        with open(env.config_path, "a") as f:
            f.write("instances abc\n")
    elif breakage == "disabled":
        env.cmd("disable", env.name, check=True)
    else:
        env.config_path.unlink()
    try:
        r = env.cmd("status", env.name)
        assert r.returncode == 0, r.stderr
        assert "running (1/1 instances)" in r.stdout
        assert "warning:" in r.stderr and "acting on its recorded instances" in r.stderr
        r = env.cmd("stop", env.name)
        assert r.returncode == 0, r.stderr
        assert "stopped 1 instance(s)" in r.stdout
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    r = env.cmd("stop", "no_such_config")           # nothing recorded: still an error
    assert r.returncode == 2 and "no_such_config" in r.stderr


def test_a_sender_without_destination_refuses_to_start(sub_env):
    env = sub_env
    cdir = env.home / ".config" / "sarra" / "sender"
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "nodest.conf").write_text(f"broker {env.broker}\nexchange {env.exchange}\n")
    r = subprocess.run(command_argv("sr_sender") + ["foreground", "nodest"],
                       capture_output=True, text=True, timeout=60, env=command_env(),
                       cwd=str(env.home), stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert "option destination is required" in r.stderr and "nodest.conf" in r.stderr


@pytest.mark.parametrize("var,args", [("XDG_CONFIG_HOME", ["list"]),
                                      ("XDG_CACHE_HOME", ["status", "one"])])
def test_a_config_or_state_directory_that_cannot_be_used_is_one_line(sub_env, var, args):
    """(A file where the directory should be: root reads any directory, so permissions
    cannot make the point in this test.)"""
    env = sub_env
    blocker = env.tmp / "not_a_dir"
    blocker.write_text("")
    r = subprocess.run(command_argv("sr_subscribe") + args, capture_output=True, text=True,
                       timeout=60, env=dict(command_env(), **{var: str(blocker)}),
                       cwd=str(env.home), stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("sr_subscribe: Not a directory: " + str(blocker)), r.stderr
