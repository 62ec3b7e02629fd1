"""sarra.ops.supervisor and the parts of `sr` that need no broker.

The supervision tests run real (dummy) instance processes: tests/integration/dummy_instance.py
under the component name 'dummy'.
"""

import logging
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from sarra import paths
from sarra.ops import instances, supervisor
from sarra.commands import sr
from tests.conftest import REPO

COMP = "dummy"
MODULE = "tests.integration.dummy_instance"


# ------------------------------------------------------------------ pure helpers

def test_backoff_doubles_to_the_cap_and_resets_when_stable():
    d, seen = 0.0, []
    for _ in range(12):
        d = supervisor.next_delay(d, uptime=0.5)
        seen.append(d)
    assert seen[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert seen[-1] == supervisor.BACKOFF_MAX and max(seen) == supervisor.BACKOFF_MAX
    assert supervisor.next_delay(64.0, uptime=supervisor.STABLE_AFTER) == 1.0
    assert supervisor.next_delay(64.0, uptime=supervisor.STABLE_AFTER - 1) == 128.0


def test_describe_exit():
    assert supervisor.describe_exit(-9) == "was killed by signal 9 (SIGKILL)"
    assert supervisor.describe_exit(3) == "exited with code 3"
    assert "unknown" in supervisor.describe_exit(None)


def test_last_sign_of_life(home):
    log = instances.log_file(COMP, "x", 1)
    stats = instances.stats_file(COMP, "x", 1)
    assert supervisor.last_sign_of_life(COMP, "x", 1, 100.0) == 100.0
    for p, t in ((log, 200.0), (stats, 300.0)):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
        os.utime(p, (t, t))
    assert supervisor.last_sign_of_life(COMP, "x", 1, 100.0) == 300.0
    assert supervisor.last_sign_of_life(COMP, "x", 1, 400.0) == 400.0


def test_age_and_rate():
    assert sr._age(5) == "5s" and sr._age(150) == "2m" and sr._age(3 * 3600) == "3h"
    assert sr._age(5 * 86400) == "5d" and sr._age(None) == "never"
    assert sr._rate({"time": 110, "received": 50, "prev_time": 100,
                     "prev_received": 30}) == 2.0
    assert sr._rate({"time": 110, "received": 50, "start": 60}) == 1.0
    # without 'start': since the (live) process started
    me = psutil.Process()
    r = sr._rate({"time": me.create_time() + 10, "received": 20, "pid": me.pid})
    assert r == pytest.approx(2.0)
    assert sr._rate({"time": 1}) is None


# ------------------------------------------------------------------ lock

def test_instance_lock_is_exclusive_across_holders_and_reentrant(home):
    import fcntl
    with instances.locked(COMP, "l") as got:
        assert got
        with instances.locked(COMP, "l", blocking=False) as again:   # same process
            assert again
    path = instances.state_file(COMP, "l").parent / ".sr_dummy_l.lock"
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)          # another holder
        with instances.locked(COMP, "l", blocking=False) as got:
            assert not got
    finally:
        os.close(fd)
    with instances.locked(COMP, "l", blocking=False) as got:
        assert got


def test_supervisor_lock_pid_file_and_dead_state(home):
    a = supervisor.Supervisor(components=[COMP])
    assert supervisor.state() == "stopped"
    assert a.acquire()
    try:
        assert supervisor.is_running() and supervisor.state() == "running"
        assert supervisor.read_pid() == os.getpid()
        assert not supervisor.Supervisor(components=[COMP]).acquire(wait=0.2)
    finally:
        a.release()
    assert supervisor.state() == "stopped" and not supervisor.pid_file().exists()
    supervisor.pid_file().write_text("12345\n")          # left by a killed supervisor
    assert supervisor.state() == "dead"


# ------------------------------------------------------------------ supervision

@pytest.fixture
def sup(home, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.chdir(REPO)
    Path(paths.component_config_dir(COMP)).mkdir(parents=True)
    s = supervisor.Supervisor(components=[COMP], modules={COMP: MODULE},
                              logger=logging.getLogger("test.supervisor"))
    yield s
    names = {name for _, name, _ in s.slots} | set(os.listdir(paths.state_dir(COMP, None)))
    instances.stop_many([(COMP, n) for n in names], timeout=1)
    for slot in s.slots.values():
        if slot.pid:
            try:
                psutil.Process(slot.pid).kill()
            except psutil.Error:
                pass


def conf(name):
    (Path(paths.component_config_dir(COMP)) / f"{name}.conf").write_text("")


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def wait_ready(name, n):
    log = instances.log_file(COMP, name, n)
    assert wait_for(lambda: log.exists() and f"dummy {name} {n} ready" in log.read_text())


def pids(name):
    return sorted(p for _, p in instances.status(COMP, name).running)


def test_starts_restarts_with_backoff_and_logs_the_death(sup, caplog):
    conf("a")
    instances.write_expected(COMP, "a", 2)
    sup.tick()
    first = pids("a")
    assert len(first) == 2
    assert all(sup.slots[(COMP, "a", n)].proc is not None for n in (1, 2))
    wait_ready("a", 2)
    victim = sup.slots[(COMP, "a", 2)].pid
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: sup.slots[(COMP, "a", 2)].proc.poll() is not None)
    now = time.time()
    with caplog.at_level("WARNING", logger="test.supervisor"):
        sup.tick(now)
    slot = sup.slots[(COMP, "a", 2)]
    assert "sr_dummy/a/02 (pid %d) was killed by signal 9 (SIGKILL)" % victim in caplog.text
    assert slot.pid is None and slot.restarts == 1 and slot.next_start == now + 1.0
    sup.tick(now + 0.5)                          # still in its backoff
    assert slot.pid is None and len(pids("a")) == 1
    sup.tick(now + 1.1)
    assert slot.pid not in (None, victim) and len(pids("a")) == 2
    # a second quick death doubles the wait
    wait_ready("a", 2)
    os.kill(slot.pid, signal.SIGKILL)
    assert wait_for(lambda: slot.proc.poll() is not None)
    sup.tick(now + 1.5)
    assert slot.delay == 2.0 and slot.restarts == 2
    sup.write_summary()
    info = supervisor.read_summary()["dummy/a/02"]
    assert info["restarts"] == 2 and "signal 9" in info["last_exit"]


def test_stopped_config_is_not_restarted(sup):
    conf("s")
    instances.write_expected(COMP, "s", 2)
    sup.tick()
    before = pids("s")
    assert len(before) == 2
    assert instances.stop(COMP, "s", timeout=3) == 2
    assert instances.read_expected(COMP, "s") == 0
    sup.tick(time.time() + 10)
    sup.tick(time.time() + 20)
    assert pids("s") == [] and not sup.slots
    assert all(not psutil.pid_exists(p) or psutil.Process(p).status() == "zombie"
               for p in before)


def test_adopts_instances_it_did_not_start(sup, caplog):
    conf("b")
    started = instances.start(COMP, "b", 1, module=MODULE, wait=0.2)
    sup.tick()
    slot = sup.slots[(COMP, "b", 1)]
    assert slot.pid == started[0] and slot.proc is None
    wait_ready("b", 1)
    os.kill(started[0], signal.SIGKILL)
    psutil.Process(started[0]).wait(3)          # reap it: it is our child here
    with caplog.at_level("WARNING", logger="test.supervisor"):
        sup.tick(time.time())
    assert "exit status unknown" in caplog.text
    sup.tick(time.time() + 1.1)
    assert slot.proc is not None and pids("b") == [slot.pid]


def test_surplus_instances_are_stopped(sup):
    conf("c")
    instances.write_expected(COMP, "c", 2)
    sup.tick()
    two = sup.slots[(COMP, "c", 2)].pid
    wait_ready("c", 2)
    instances.write_expected(COMP, "c", 1)
    sup.tick()
    assert [n for n, _ in instances.status(COMP, "c").running] == [1]
    assert not psutil.pid_exists(two) or psutil.Process(two).status() == "zombie"
    assert (COMP, "c", 2) not in sup.slots


def test_hung_instance_is_stopped_then_restarted(sup, caplog, monkeypatch):
    conf("h")
    instances.write_expected(COMP, "h", 1)
    sup.tick()
    slot = sup.slots[(COMP, "h", 1)]
    old = slot.pid
    wait_ready("h", 1)
    monkeypatch.setattr(sup, "sanity_log_dead", lambda c, n: 5.0)
    sup.tick(time.time())                       # it just wrote its log: fine
    assert slot.term_at is None
    with caplog.at_level("WARNING", logger="test.supervisor"):
        sup.tick(time.time() + 30)
    assert slot.term_at is not None and "hung" in caplog.text
    assert wait_for(lambda: slot.proc.poll() is not None)   # SIGTERM: a clean exit
    sup.tick(time.time() + 31)
    assert "exited with code 0 after being stopped as hung" in slot.last_exit
    sup.tick(time.time() + 33)
    assert slot.pid not in (None, old)


def test_missing_config_is_not_started(sup, caplog):
    instances.write_expected(COMP, "gone", 1)
    with caplog.at_level("ERROR", logger="test.supervisor"):
        sup.tick()
        sup.tick(time.time() + 120)
    assert pids("gone") == []
    assert caplog.text.count("no enabled configuration") == 1


def test_shutdown_stops_everything_and_zeroes_counts(sup):
    conf("d")
    conf("e")
    instances.write_expected(COMP, "d", 2)
    instances.write_expected(COMP, "e", 1)
    sup.tick()
    seen = pids("d") + pids("e")
    assert len(seen) == 3
    assert sup.acquire()
    sup.shutdown()
    assert wait_for(lambda: all(not psutil.pid_exists(p) or
                                psutil.Process(p).status() == "zombie" for p in seen))
    assert instances.read_expected(COMP, "d") == instances.read_expected(COMP, "e") == 0
    assert supervisor.state() == "stopped"


# ------------------------------------------------------------------ sr: selection, status rows

@pytest.fixture
def configs(home):
    for comp, name in (("subscribe", "dd_all"), ("subscribe", "dd_swob"), ("sarra", "pump"),
                       ("shovel", "x")):
        d = Path(paths.component_config_dir(comp))
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.conf").write_text("broker amqp://nobody@127.0.0.1:1/\n")
    (Path(paths.component_config_dir("subscribe")) / "off.conf.off").write_text("")
    (Path(paths.component_config_dir("subscribe")) / "bad.conf").write_text("heartbeat x\n")
    return home


def names(items):
    return sorted(f"{i.component}/{i.name}" for i in items)


def test_select(configs):
    items, errors = sr.select([], "start")
    assert names(items) == ["sarra/pump", "shovel/x", "subscribe/bad", "subscribe/dd_all",
                            "subscribe/dd_swob"] and errors == []
    assert "subscribe/off" in names(sr.select([], "list")[0])
    items, errors = sr.select(["sr_subscribe/dd_all", "sarra"], "start")
    assert names(items) == ["sarra/pump", "subscribe/dd_all"] and not errors
    items, errors = sr.select(["subscribe/dd_*", "*/x.conf"], "stop")
    assert names(items) == ["shovel/x", "subscribe/dd_all", "subscribe/dd_swob"]
    items, errors = sr.select(["subscribe/o*"], "start")      # glob skips disabled ones
    assert items == [] and errors and "matches" in errors[0]
    items, errors = sr.select(["subscribe/off"], "start")
    assert items == [] and "disabled" in errors[0] and "sr_subscribe enable off" in errors[0]
    assert names(sr.select(["subscribe/off"], "stop")[0]) == ["subscribe/off"]
    items, errors = sr.select(["poll/nothing"], "status")
    assert items == [] and "nothing" in errors[0]
    # a removed configuration whose instances are recorded still counts for stop/status
    instances.write_expected("winnow", "old", 2)
    assert "winnow/old" in names(sr.select([], "status")[0])
    assert "winnow/old" not in names(sr.select([], "start")[0])


def test_status_rows_states_and_stats(configs):
    instances.write_expected("subscribe", "dd_swob", 2)          # should run, does not
    stats = instances.stats_file("subscribe", "dd_all", 1)
    stats.parent.mkdir(parents=True, exist_ok=True)
    stats.write_text('{"received": 7, "time": 1000, "last_activity": 990, '
                     '"retry_queue": 3, "pid": 1}')
    items, _ = sr.select([], "status")
    rows, notes = sr.status_rows(items, now=1000.0, query_broker=False)
    by = {r["config"]: r for r in rows}
    assert set(by) == {"dd_all", "dd_swob", "bad", "pump", "x"}
    assert by["dd_all"]["state"] == "stopped" and by["dd_all"]["run/exp"] == "0/0"
    assert by["dd_all"]["last"] == "10s" and by["dd_all"]["retry"] == "3"
    assert by["dd_all"]["msg/s"] == "-"          # no live instance
    assert not by["dd_all"]["problem"]
    assert by["dd_swob"]["state"] == "down" and by["dd_swob"]["run/exp"] == "0/2"
    assert by["dd_swob"]["problem"] and by["dd_swob"]["last"] == "-"
    assert by["bad"]["state"] == "error" and by["bad"]["problem"]
    assert any("bad.conf:1" in n for n in notes)
    assert all(r["queue"] == "-" for r in rows)


def test_cli_usage_errors(home, capsys):
    assert sr.main([]) == 2
    assert sr.main(["frobnicate"]) == 2
    assert sr.main(["start", "stop"]) == 2
    assert sr.main(["--bogus", "status"]) == 2
    assert "unknown option --bogus" in capsys.readouterr().err
    assert sr.main(["--help"]) == 0
    assert "sanity" in capsys.readouterr().out


def test_end_asked_by_a_restart_is_no_death(sup, caplog):
    conf("r")
    instances.write_expected(COMP, "r", 1)
    sup.tick()
    slot = sup.slots[(COMP, "r", 1)]
    old = slot.pid
    wait_ready("r", 1)
    slot.started -= 5                    # it has been up a while
    # `sr restart` between two passes: count to 0, instance stopped, count back
    instances.stop(COMP, "r", timeout=3)
    instances.write_expected(COMP, "r", 1)
    with caplog.at_level("INFO", logger="test.supervisor"):
        sup.tick()
    assert "stopped by a stop or restart" in caplog.text
    assert slot.restarts == 0 and slot.last_exit is None
    assert slot.pid not in (None, old) and pids("r") == [slot.pid]   # started again at once


def test_flapping():
    now = 1000.0
    one_kill = {"delay": 1.0, "died": 999.0, "last_exit": "x"}
    looping = {"delay": 4.0, "died": 990.0, "last_exit": "exited with code 3"}
    recovered = {"delay": 8.0, "died": 900.0, "last_exit": "y"}   # up 100 s since
    assert sr._flapping([one_kill, recovered], now) == []
    assert sr._flapping([one_kill, looping, recovered], now) == [looping]
