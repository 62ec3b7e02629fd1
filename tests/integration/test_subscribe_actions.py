"""sr_subscribe actions on a real configuration: add, list, declare, setup, start, status,
stop, restart, disable, enable, cleanup, remove; the saved queue name; concurrent starts;
a queue renamed in the configuration."""

import hashlib
import subprocess
import urllib.parse

import amqp
import pytest
import requests

from tests.conftest import command_argv, command_env
from tests.integration.test_subscribe_support import (  # noqa: F401  (fixtures)
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
