"""`sr` over several configurations against the real broker: start, status, supervision
(kill -9, hung instance), sanity, restart, stop leaving no process, a broken config."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import amqp
import pytest

from tests.conftest import REPO
from tests.integration.procs import alive, wait_for
from tests.integration.srkit import HB, Pump, _amqp_args, table


@pytest.fixture
def pump(home, uid, broker_url, run_cmd, amqp_exchange, amqp_channel):
    p = Pump(home, uid, broker_url, run_cmd)
    amqp_exchange(p.src)
    amqp_exchange(p.dst)
    yield p
    p.finish(run_cmd, amqp_channel)


def test_pump_start_supervise_sanity_stop(pump, amqp_tap):
    uid = pump.uid
    a, b, c = f"a_{uid}", f"b_{uid}", f"c_{uid}"
    names = [pump.add("subscribe", a, "reject .*\n"), pump.add("subscribe", b, "reject .*\n"),
             pump.add("shovel", c, f"post_exchange {pump.dst}\n")]
    pump.add("subscribe", f"off_{uid}", "reject .*\n", enabled=False)
    bad = pump.home / ".config/sarra/subscribe" / f"broken_{uid}.conf"
    bad.write_text("heartbeat banana\n")

    # ---- start: the broken config is reported and skipped, the others run
    r = pump.sr("start")
    assert r.returncode == 2, r.stderr
    assert f"broken_{uid}.conf:1" in r.stderr and "skipped" in r.stderr
    for comp, name in (("subscribe", a), ("subscribe", b), ("shovel", c)):
        assert f"sr_{comp} {name}: 2/2 instance(s) running" in r.stdout, r.stdout + r.stderr
        assert len(pump.live_pids(comp, name)) == 2
    assert pump.pid("subscribe", f"off_{uid}", 1) is None
    sup = pump.supervisor_pid()
    assert sup and alive(sup)

    # ---- status: columns, counts, queue depth through the broker
    r = pump.sr("status", *names)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"supervisor: running (pid {sup})" in r.stdout
    cols, rows = table(r.stdout)
    assert cols == ["COMPONENT", "CONFIG", "STATE", "RUN/EXP", "QUEUE", "LAG", "MSG/S",
                    "BYTES/S", "LAST", "RETRY", "RESTARTS"]
    assert set(rows) == {a, b, c}
    for name in (a, b, c):
        assert rows[name]["STATE"] == "running" and rows[name]["RUN/EXP"] == "2/2"
        assert rows[name]["QUEUE"] == "0"
    r = pump.sr("status")                          # the broken config makes it fail
    assert r.returncode == 1
    assert table(r.stdout)[1][f"broken_{uid}"]["STATE"] == "error"

    # ---- heartbeat lines with counters in each instance log
    assert wait_for(lambda: "heartbeat" in pump.log(f"sr_subscribe_{a}_02.log"), 5)
    assert "received=" in pump.log(f"sr_subscribe_{a}_02.log")

    # ---- kill -9: noticed and repaired by the supervisor
    victim = pump.pid("subscribe", a, 2)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: pump.pid("subscribe", a, 2) not in (None, victim)
                    and alive(pump.pid("subscribe", a, 2)), 8)
    assert f"sr_subscribe/{a}/02 (pid {victim}) was killed by signal 9" in \
        pump.log("sr_supervisor.log")

    # ---- messages flow; status shows activity and rate
    tap = amqp_tap(pump.dst)
    pump.publish(4)
    assert len(tap.get(4, timeout=10)) == 4                    # through the shovel
    time.sleep(HB + 1.2)                                       # a heartbeat wrote stats
    r = pump.sr("status", *names)
    rows = table(r.stdout)[1]
    for name in (a, b, c):
        assert rows[name]["LAST"] not in ("never", "-"), r.stdout
        assert float(rows[name]["MSG/S"]) > 0, r.stdout
    assert rows[a]["RESTARTS"] == "1"

    # ---- the supervisor dies too: status says so, sanity repairs both
    os.kill(sup, signal.SIGKILL)
    assert wait_for(lambda: not alive(sup), 8)
    victim = pump.pid("subscribe", b, 1)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: not alive(victim), 8)
    r = pump.sr("status", *names)
    assert r.returncode == 1 and "supervisor: DEAD" in r.stdout
    assert table(r.stdout)[1][b]["STATE"] == "partial"
    r = pump.sr("sanity")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"sr_subscribe {b}: restarted instance(s) 01" in r.stdout
    assert "supervisor was not running: restarted" in r.stdout
    sup2 = pump.supervisor_pid()
    assert sup2 != sup and alive(sup2)
    r = pump.sr("status", *names)
    assert r.returncode == 0, r.stdout
    assert all(row["RUN/EXP"] == "2/2" for row in table(r.stdout)[1].values())
    # the new supervisor watches instances it did not start
    victim = pump.pid("shovel", c, 1)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: pump.pid("shovel", c, 1) not in (None, victim)
                    and alive(pump.pid("shovel", c, 1)), 8)
    assert f"sr_shovel/{c}/01 (pid {victim}) is gone" in pump.log("sr_supervisor.log")

    # ---- restart one config: new pids there only
    old_a, old_b = pump.live_pids("subscribe", a), pump.live_pids("subscribe", b)
    r = pump.sr("restart", f"subscribe/{a}")
    assert r.returncode == 0, r.stdout + r.stderr
    new_a = pump.live_pids("subscribe", a)
    assert len(new_a) == 2 and not set(new_a) & set(old_a)
    assert pump.live_pids("subscribe", b) == old_b
    time.sleep(0.6)                                # a supervisor pass: not counted as deaths
    assert table(pump.sr("status", f"subscribe/{a}").stdout)[1][a]["RESTARTS"] == "0"

    # ---- stop one config: it stays stopped; its queue fills up
    r = pump.sr("stop", f"shovel/{c}")
    assert f"sr_shovel {c}: stopped 2 instance(s)" in r.stdout
    time.sleep(1.5)
    assert pump.live_pids("shovel", c) == []
    pump.publish(3, prefix="g")
    assert wait_for(lambda: table(pump.sr("status", f"shovel/{c}").stdout)[1][c]["QUEUE"]
                    == "3", 8, 0.5)
    r = pump.sr("status", *names)
    assert r.returncode == 0
    assert table(r.stdout)[1][c]["STATE"] == "stopped"

    # ---- stop everything: no process left, nothing restarts
    for comp, name in (("subscribe", a), ("subscribe", b)):
        pump.live_pids(comp, name)
    sup3 = pump.supervisor_pid()
    r = pump.sr("stop")
    assert r.returncode == 0 and f"supervisor (pid {sup3}) stopped" in r.stdout
    assert not [p for p in pump.seen if alive(p)], pump.seen
    assert pump.processes_of_test() == []
    assert not (pump.home / ".cache/sarra/sr_supervisor.pid").exists()
    r = pump.sr("sanity")
    assert r.returncode == 0 and "restarted" not in r.stdout
    assert pump.processes_of_test() == []

    # ---- cleanup deletes the queue
    r = pump.sr("cleanup", f"shovel/{c}")
    assert r.returncode == 0, r.stderr
    conn = amqp.Connection(**_amqp_args(pump.amqp_url))
    conn.connect()
    try:
        with pytest.raises(amqp.exceptions.NotFound):
            conn.channel().queue_declare(pump.queues[2], passive=True)
        r = pump.sr("declare", f"shovel/{c}")              # and declare makes it again
        assert r.returncode == 0, r.stderr
        assert conn.channel().queue_declare(pump.queues[2], passive=True).message_count == 0
    finally:
        conn.close()


def test_hung_instance_restarted_by_sanity_and_supervisor(pump):
    name = f"h_{pump.uid}"
    pump.add("subscribe", name, "reject .*\nsanity_log_dead 2\n", instances=1)
    assert pump.sr("start").returncode == 0
    sup = pump.supervisor_pid()
    os.kill(sup, signal.SIGKILL)                       # sanity alone, first
    first = pump.pid("subscribe", name, 1)
    os.kill(first, signal.SIGSTOP)
    time.sleep(2.5)
    r = pump.sr("status")
    assert r.returncode == 1 and table(r.stdout)[1][name]["STATE"] == "hung"
    r = pump.sr("sanity")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"sr_subscribe {name}: instance 01 hung" in r.stdout
    assert not alive(first)
    second = pump.pid("subscribe", name, 1)
    assert second != first and alive(second)
    pump.supervisor_pid()
    os.kill(second, signal.SIGSTOP)                    # now the (restarted) supervisor
    assert wait_for(lambda: pump.pid("subscribe", name, 1) not in (None, second)
                    and alive(pump.pid("subscribe", name, 1)), 12)
    assert f"sr_subscribe/{name}/01 (pid {second}) hung" in pump.log("sr_supervisor.log")
    assert not alive(second)


def test_component_command_coexists_with_supervisor(pump):
    name = f"x_{pump.uid}"
    pump.add("subscribe", name, "reject .*\n", instances=1)
    pump.home.joinpath(".config/sarra/subscribe", name + ".conf").rename(
        pump.home / f"{name}.conf")                    # not enabled for `sr start`
    r = pump.sr("start")
    assert r.returncode == 0 and pump.supervisor_pid()
    pump.home.joinpath(f"{name}.conf").rename(
        pump.home / ".config/sarra/subscribe" / f"{name}.conf")
    r = pump.run_cmd(["sr_subscribe", "start", name])
    assert r.returncode == 0, r.stderr
    first = pump.pid("subscribe", name, 1)
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: pump.pid("subscribe", name, 1) not in (None, first)
                    and alive(pump.pid("subscribe", name, 1)), 8)
    second = pump.pid("subscribe", name, 1)
    r = pump.run_cmd(["sr_subscribe", "stop", name])
    assert r.returncode == 0
    time.sleep(1.5)                                    # the supervisor leaves it stopped
    assert not alive(second) and pump.live_pids("subscribe", name, 1) == []
    r = pump.sr("status")
    assert r.returncode == 0 and table(r.stdout)[1][name]["STATE"] == "stopped"


def test_start_of_names_that_match_nothing_starts_no_supervisor(pump):
    r = pump.sr("start", "subscribe/nosuch")
    assert r.returncode == 2
    assert "no configuration matches 'subscribe/nosuch'" in r.stderr
    assert pump.supervisor_pid() is None


def test_works_with_only_home_in_the_environment(pump):
    """As from cron: no tty, no XDG variables, nothing but HOME (and PYTHONPATH, since
    sarra is not installed here)."""
    name = f"k_{pump.uid}"
    # quiet: no heartbeat line in the log, but the stats file shows it is alive (not hung)
    pump.add("subscribe", name, "reject .*\nloglevel warning\nsanity_log_dead 2\n",
             instances=1)
    env = {"HOME": str(pump.home), "PYTHONPATH": str(REPO)}

    def sr(*args):
        return subprocess.run([sys.executable, "-m", "sarra.commands.sr", *args], env=env,
                              cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=60)

    r = sr("start")
    assert r.returncode == 0, r.stderr
    assert len(pump.live_pids("subscribe", name, 1)) == 1
    assert pump.supervisor_pid()
    first = pump.pid("subscribe", name, 1)
    time.sleep(3.5)
    r = sr("status")
    assert r.returncode == 0 and table(r.stdout)[1][name]["RUN/EXP"] == "1/1"
    assert table(r.stdout)[1][name]["STATE"] == "running"
    assert pump.pid("subscribe", name, 1) == first and alive(first)
    assert "[INFO]" not in pump.log(f"sr_subscribe_{name}_01.log")
    r = sr("stop")
    assert r.returncode == 0
    assert not [p for p in pump.seen if alive(p)]


def test_instance_that_keeps_dying_is_reported(pump):
    name = f"p_{pump.uid}"
    pump.add("subscribe", name, "reject .*\n", instances=1)
    path = pump.home / ".config/sarra/subscribe" / f"{name}.conf"
    path.write_text(path.read_text().replace(pump.broker, pump.broker.replace(
        "@", ":wrong-password@")))
    r = pump.sr("start")
    # it dies within a second here, so within start's wait (on a slow machine it may not)
    if r.returncode:
        assert r.returncode == 1
        assert f"/1 instance(s) running; 01 exited with code 3" in r.stderr
    assert "wrong-password" not in r.stdout + r.stderr
    assert wait_for(lambda: table(pump.sr("status").stdout)[1][name]["STATE"] == "flapping",
                    10, 0.5)
    r = pump.sr("status")
    assert r.returncode == 1 and "keep dying" in r.stdout
    assert int(table(r.stdout)[1][name]["RESTARTS"]) >= 3
