"""reload and rename (issue 19, item 5) against the real broker and a loopback HTTP server.

* SIGHUP to a running sr_subscribe whose config's accept changed: the messages published
  before, during and after are all handled (none left in the queue, every accepted file
  downloaded exactly once) and the new accept applies from the reload on;
* the ``reload`` action does the same to a background instance (same pid: no restart);
* a configuration that breaks: ``reload`` refuses it (file:line, exit 2) and a SIGHUP
  leaves the instance on the configuration in force (logged with file:line);
* ``rename`` moves the configuration, its state (the queue it consumes from, kept with its
  messages) and its logs, and is refused while instances run.
"""

import hashlib
import os
import signal
import subprocess

from tests.conftest import command_argv, command_env
from tests.integration.subkit import post_msg, stub_http, sub_env, wait_for  # noqa: F401
from tests.integration.watchkit import watch_env  # noqa: F401  (fixture)


def _serve(stub, env, rel):
    data = (rel * 3).encode()
    stub.files[f"/{env.uid}{rel}"] = data
    env.publish_msg(post_msg(stub.url + env.uid, rel, data))
    return hashlib.md5(data).hexdigest()


def _config(env, accept, extra=""):
    """Files of /a/ (and of /b/ when accept says so) into dst/a, dst/b."""
    env.config(f"{extra}\nmirror on\n{accept}\nreject .*", accept=False)


def _drained(env):
    queue = env.queue_name()
    return queue is not None and env.queue_depth(queue) == 0


def _downloaded(env):
    return sorted(p.relative_to(env.dst).as_posix() for p in env.dst.rglob("*")
                  if p.is_file())


def test_sighup_applies_the_new_accept_and_loses_nothing(sub_env, stub_http):
    env, stub = sub_env, stub_http
    # a slow on_file: the subscriber is busy (messages prefetched) when the signal comes
    _config(env, "accept .*/a/.*", "prefetch 4\ncount_file_sleep 0.05")
    env.setup()
    before = [f"/a/f{i}" for i in range(10)] + [f"/b/f{i}" for i in range(5)]
    for rel in before:
        _serve(stub, env, rel)
    p = env.foreground()
    assert wait_for(lambda: len(env.on_file_lines()) >= 3, timeout=30)
    _config(env, "accept .*/a/.*\naccept .*/b/.*", "prefetch 4\ncount_file_sleep 0.05")
    during = [f"/a/g{i}" for i in range(5)]
    p.send_signal(signal.SIGHUP)
    for rel in during:
        _serve(stub, env, rel)
    assert wait_for(lambda: "reload: configuration applied" in env.log_text(), timeout=30), \
        env.log_text()
    after = [f"/b/h{i}" for i in range(5)] + [f"/a/h{i}" for i in range(5)]
    for rel in after:
        _serve(stub, env, rel)
    wanted = {r[1:] for r in before + during + after if r.startswith("/a/")} \
        | {r[1:] for r in after}
    assert wait_for(lambda: wanted <= set(_downloaded(env)), timeout=60), \
        sorted(wanted - set(_downloaded(env)))
    assert wait_for(lambda: _drained(env), timeout=10)        # nothing left behind
    assert p.poll() is None                                   # SIGHUP did not end it
    lines = env.on_file_lines()
    assert len(lines) == len(set(lines))                      # each file once
    env.stop(p)
    assert "reload requested (SIGHUP)" in env.log_text()


def test_reload_action_and_a_config_that_breaks(sub_env, stub_http):
    env, stub = sub_env, stub_http
    _config(env, "accept .*/a/.*")
    env.setup()
    r = env.cmd("start", env.name, check=True)
    assert "started 1 instance(s)" in r.stdout
    try:
        pid_file = env.state_dir() / f"sr_subscribe_{env.name}_01.pid"
        pid = int(pid_file.read_text())
        _serve(stub, env, "/b/x1")
        _serve(stub, env, "/a/x1")
        assert wait_for(lambda: "a/x1" in _downloaded(env), timeout=30)
        assert wait_for(lambda: _drained(env), timeout=10)
        assert "b/x1" not in _downloaded(env)
        _config(env, "accept .*/b/.*")
        r = env.cmd("reload", env.name, check=True)
        assert "reload sent to 1 instance(s)" in r.stdout, r.stdout + r.stderr
        log = env.home / ".cache" / "sarra" / "log" / f"sr_subscribe_{env.name}_01.log"
        assert wait_for(lambda: "reload: configuration applied" in log.read_text(),
                        timeout=30), log.read_text()
        _serve(stub, env, "/a/x2")
        _serve(stub, env, "/b/x2")
        assert wait_for(lambda: "b/x2" in _downloaded(env), timeout=30)
        assert wait_for(lambda: _drained(env), timeout=10)
        assert "a/x2" not in _downloaded(env)
        assert int(pid_file.read_text()) == pid                 # the same process

        # a configuration that breaks: refused by the action, kept by the instance
        good = env.config_path.read_text()
        env.config_path.write_text(good + "accept [unclosed\n")
        bad_line = len(good.splitlines()) + 1
        r = env.cmd("reload", env.name)
        assert r.returncode == 2 and f"{env.config_path}:{bad_line}" in r.stderr, r.stderr
        os.kill(pid, signal.SIGHUP)
        assert wait_for(lambda: "configuration in force kept" in log.read_text(),
                        timeout=30), log.read_text()
        assert f"{env.config_path}:{bad_line}" in log.read_text()
        _serve(stub, env, "/b/x3")                              # the old (good) one runs
        assert wait_for(lambda: "b/x3" in _downloaded(env), timeout=30)
        assert int(pid_file.read_text()) == pid
    finally:
        env.cmd("stop", env.name)


def test_rename_moves_config_state_and_logs(sub_env, stub_http):
    env, stub = sub_env, stub_http
    _config(env, "accept .*")
    env.setup()
    old, new = env.name, env.name + "n"
    env.cmd("start", old, check=True)
    try:
        _serve(stub, env, "/a/r1")
        assert wait_for(lambda: "a/r1" in _downloaded(env), timeout=30)
        r = env.cmd("rename", old, new)
        assert r.returncode == 1 and "running" in r.stderr and env.config_path.exists()
    finally:
        env.cmd("stop", old, check=True)
    queue = env.queue_name()
    _serve(stub, env, "/a/r2")                          # kept in the queue meanwhile
    r = env.cmd("rename", old, new, check=True)
    assert f"renamed {env.config_path}" in r.stdout
    assert not env.config_path.exists() and (env.cfgdir / f"{new}.conf").exists()
    cache = env.home / ".cache" / "sarra"
    assert not (cache / "subscribe" / old).exists()
    state = cache / "subscribe" / new
    assert (state / f"sr_subscribe.{new}.guest.qname").read_text().strip() == queue
    logs = sorted(p.name for p in (cache / "log").glob(f"sr_subscribe_{env.name}*"))
    assert logs == [f"sr_subscribe_{new}_01.log"], logs
    env.name = new                                       # the env now drives the new name
    env.cmd("start", new, check=True)
    try:
        assert wait_for(lambda: "a/r2" in _downloaded(env), timeout=30)   # same queue
    finally:
        env.cmd("stop", new, check=True)
    r = env.cmd("rename", new, "bad/name")
    assert r.returncode == 2 and "not paths" in r.stderr


def test_reload_rebinds_and_reconnects_only_when_needed(sub_env, stub_http):
    env, stub = sub_env, stub_http
    _config(env, "accept .*")
    env.setup()
    p = env.foreground()
    _serve(stub, env, "/b/y0")
    assert wait_for(lambda: "b/y0" in _downloaded(env), timeout=30)
    # subtopic only: bound anew on the open connection, the old binding removed
    _config(env, "accept .*", "subtopic a.#")
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "rebound" in env.log_text(), timeout=30), env.log_text()
    assert "unbound" in env.log_text() and "reconnected" not in env.log_text()
    _serve(stub, env, "/b/y1")                  # no longer routed to the queue
    _serve(stub, env, "/a/y1")
    assert wait_for(lambda: "a/y1" in _downloaded(env), timeout=30)
    assert wait_for(lambda: _drained(env), timeout=10)
    # a queue option: the consuming connection is redone, same queue, nothing lost
    _config(env, "accept .*", "subtopic a.#\nprefetch 3")
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reconnected" in env.log_text(), timeout=30), env.log_text()
    _serve(stub, env, "/a/y2")
    assert wait_for(lambda: "a/y2" in _downloaded(env), timeout=30)
    assert "b/y1" not in _downloaded(env)
    assert p.poll() is None
    env.stop(p)


def test_sr_watch_reloads_on_sighup(watch_env):
    """sr_watch on the flow engine: a SIGHUP re-reads its configuration (a new reject
    applies) and its trees are watched anew from its state: nothing posted twice."""
    env = watch_env
    (env.root / "before").write_text("x")
    w = env.start()
    m, = env.msgs.get(1)
    assert m.relpath.endswith("/before")
    conf = env.home / ".config" / "sarra" / "watch" / f"w{env.uid}.conf"
    conf.write_text("\n".join(env.lines([r"reject .*\.skip$"])) + "\n")
    w.proc.send_signal(signal.SIGHUP)
    w.wait_for("reload: configuration applied")
    (env.root / "a.skip").write_text("x")
    (env.root / "after").write_text("x")
    m, = env.msgs.get(1)
    assert m.relpath.endswith("/after") and w.proc.poll() is None
    env.msgs.none(1.0)                          # not "before" again, not "a.skip"
    conf.write_text("post_broker\n")          # broken: kept the one in force
    w.proc.send_signal(signal.SIGHUP)
    w.wait_for("configuration in force kept")
    (env.root / "later").write_text("x")
    m, = env.msgs.get(1)
    assert m.relpath.endswith("/later")


def test_a_reconnecting_reload_mid_stream_loses_nothing(sub_env, stub_http):
    """A queue option changed while messages are prefetched: the consuming connection is
    redone, the prefetched (unacked) messages come again, each file arrives once."""
    env, stub = sub_env, stub_http
    _config(env, "accept .*", "prefetch 6\ncount_file_sleep 0.05")
    env.setup()
    rels = [f"/a/m{i}" for i in range(20)]
    for rel in rels:
        _serve(stub, env, rel)
    p = env.foreground()
    assert wait_for(lambda: len(env.on_file_lines()) >= 2, timeout=30)
    _config(env, "accept .*", "prefetch 2\ncount_file_sleep 0.05")
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reconnected" in env.log_text(), timeout=30), env.log_text()
    assert wait_for(lambda: {r[1:] for r in rels} <= set(_downloaded(env)), timeout=60)
    assert wait_for(lambda: _drained(env), timeout=10)
    assert wait_for(lambda: len(env.on_file_lines()) >= len(rels), timeout=10)
    env.stop(p)
    lines = env.on_file_lines()
    assert len(lines) == len(set(lines)) == len(rels)            # each file once


def test_sr_watch_reload_action(watch_env):
    env = watch_env
    name = f"a{env.uid}"
    conf = env.home / ".config" / "sarra" / "watch" / f"{name}.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("\n".join(env.lines()) + "\n")

    def watch(*args):
        return subprocess.run(command_argv("sr_watch") + list(args), capture_output=True,
                              text=True, env=command_env(), cwd=str(env.home), timeout=60)
    try:
        r = watch("reload", name)                       # not running: started (as v2)
        assert r.returncode == 0 and "was not running: starting it" in r.stdout, r.stderr
        log = env.home / ".cache" / "sarra" / "log" / f"sr_watch_{name}_01.log"
        assert wait_for(lambda: log.exists() and "started" in log.read_text(), timeout=20)
        r = watch("reload", name)
        assert "reload sent to 1 instance(s)" in r.stdout, r.stdout + r.stderr
        assert wait_for(lambda: "reload: configuration unchanged" in log.read_text(),
                        timeout=20), log.read_text()
        conf.write_text("\n".join(env.lines(["accept ["])) + "\n")
        r = watch("reload", name)
        assert r.returncode == 2 and f"{conf}:" in r.stderr, r.stderr
        # the config no longer loads: stop still stops what its state records
        r = watch("stop", name)
        assert r.returncode == 0 and "stopped 1 instance(s)" in r.stdout, r.stdout + r.stderr
        assert f"{conf}:" in r.stderr and "warning" in r.stderr, r.stderr
        r = watch("stop", name)             # nothing left: the load error, exit 2
        assert r.returncode == 2, r.stdout + r.stderr
    finally:
        conf.write_text("\n".join(env.lines()) + "\n")
        watch("stop", name)
