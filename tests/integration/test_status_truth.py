"""Issue 17 items 1 and 2 against the real broker: one truth for status (a crashed
instance is `down` for both status commands, with the same exit code; rates and last
activity current within seconds; a failed start says why on the terminal) and the
command's name in the process title (ps, pgrep)."""

import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.conftest import parse_broker_url
from tests.integration.procs import alive, wait_for
from tests.integration.srkit import Pump, table

pytest.importorskip("setproctitle")


@pytest.fixture
def pump(home, uid, broker_url, run_cmd, amqp_exchange, amqp_channel):
    p = Pump(home, uid, broker_url, run_cmd)
    amqp_exchange(p.src)
    yield p
    d = home / ".config" / "sarra" / "subscribe"
    for conf in d.glob("*.conf") if d.is_dir() else ():     # started without sr
        run_cmd(["sr_subscribe", "stop", conf.stem], timeout=60)
    p.finish(run_cmd, amqp_channel)


def _titled(text):
    """pids of the live processes whose command line (title) starts with text."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(a for a in (p.info["cmdline"] or []) if a)
        if cmd.startswith(text) and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p.info["pid"])
    return sorted(out)


def test_crashed_instance_is_down_for_both_status_commands(pump):
    name = f"crash_{pump.uid}"
    pump.add("subscribe", name, "reject .*\n", instances=1)
    r = pump.run_cmd(["sr_subscribe", "start", name])      # no supervisor to restart it
    assert r.returncode == 0, r.stdout + r.stderr
    pid = pump.pid("subscribe", name, 1)
    assert pid and alive(pid)
    r = pump.run_cmd(["sr_subscribe", "status", name])
    assert r.returncode == 0 and f"sr_subscribe {name}: running (1/1" in r.stdout, r.stdout

    os.kill(pid, signal.SIGKILL)                             # a crash
    assert wait_for(lambda: not alive(pid))
    comp = pump.run_cmd(["sr_subscribe", "status", name])
    whole = pump.sr("status", f"subscribe/{name}")
    assert f"sr_subscribe {name}: down (0/1" in comp.stdout, comp.stdout
    assert table(whole.stdout)[1][name]["STATE"] == "down", whole.stdout
    assert comp.returncode == whole.returncode == 1, (comp.returncode, whole.returncode)

    # stopped on purpose: both say stopped, exit 0
    pump.run_cmd(["sr_subscribe", "stop", name])
    comp = pump.run_cmd(["sr_subscribe", "status", name])
    whole = pump.sr("status", f"subscribe/{name}")
    assert f"sr_subscribe {name}: stopped" in comp.stdout, comp.stdout
    assert table(whole.stdout)[1][name]["STATE"] == "stopped", whole.stdout
    assert comp.returncode == whole.returncode == 0


def test_rate_and_last_activity_are_current_within_seconds(pump):
    name = f"rate_{pump.uid}"
    # a 5-minute heartbeat: the status must not wait for it
    pump.add("subscribe", name, "reject .*\nheartbeat 300\n", instances=1)
    r = pump.run_cmd(["sr_subscribe", "start", name])
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_for(lambda: "started, queue" in pump.log(f"sr_subscribe_{name}_01.log"))
    pump.publish(60, prefix="r")
    sent = time.time()

    def current():
        rows = table(pump.sr("status", f"subscribe/{name}").stdout)[1]
        row = rows[name]
        return row if row["LAST"] not in ("never", "-") and row["MSG/S"] not in ("-",) \
            and float(row["MSG/S"]) > 0 else None

    assert wait_for(current, timeout=6, step=0.5), \
        pump.sr("status", f"subscribe/{name}").stdout
    assert time.time() - sent < 10
    row = current() or {}
    assert row.get("LAST", "").endswith("s") and int(row["LAST"][:-1]) <= 6, row


def test_start_with_a_wrong_password_prints_the_refusal(pump):
    name = f"pw_{pump.uid}"
    pump.add("subscribe", name, "reject .*\n", instances=1)
    host, port, user, _, _ = parse_broker_url(pump.amqp_url)
    wrong = f"Wr0ng-{pump.uid}"
    r = pump.run_cmd(["sr_subscribe", "--broker", f"amqp://{user}:{wrong}@{host}:{port}/",
                      "start", name])
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if "exited at once with code 3" in ln]
    assert lines, r.stderr
    assert "[ERROR]" in lines[0] and "login refused" in lines[0], lines[0]
    assert wrong not in r.stderr + r.stdout

    # the same through `sr start`: the broker's refusal on the terminal
    conf = pump.home / ".config/sarra/subscribe" / f"{name}.conf"
    conf.write_text(conf.read_text().replace(f"broker {pump.broker}",
                                             f"broker amqp://{user}:{wrong}@{host}:{port}/"))
    r = pump.sr("start", f"subscribe/{name}")
    assert r.returncode != 0
    assert "login refused" in r.stderr, r.stdout + r.stderr
    assert wrong not in r.stderr + r.stdout


def test_instances_and_supervisor_carry_the_command_name(pump):
    name = f"t_{pump.uid}"
    pump.add("subscribe", name, "reject .*\n", instances=2)
    r = pump.run_cmd(["sr_subscribe", "start", name])
    assert r.returncode == 0, r.stderr
    pids = sorted(pump.live_pids("subscribe", name))
    assert len(pids) == 2
    assert wait_for(lambda: _titled(f"sr_subscribe {name} ") == pids), \
        [psutil.Process(p).cmdline() for p in pids]
    assert _titled(f"sr_subscribe {name} 01") == [pump.pid("subscribe", name, 1)]
    out = subprocess.run(["pgrep", "-f", f"^sr_subscribe {name} "], capture_output=True,
                         text=True)
    assert sorted(int(p) for p in out.stdout.split()) == pids
    names = {psutil.Process(p).name() for p in pids}
    assert all(n.startswith("sr_subscribe") for n in names), names    # plain pgrep, top

    # status and stop still know them by their titles (one even without its pid file)
    r = pump.run_cmd(["sr_subscribe", "status", name])
    assert r.returncode == 0 and "running (2/2" in r.stdout, r.stdout
    pump.state_dir("subscribe", name).joinpath(f"sr_subscribe_{name}_02.pid").unlink()
    r = pump.run_cmd(["sr_subscribe", "stop", name])
    assert "stopped 2 instance(s)" in r.stdout, r.stdout
    assert wait_for(lambda: not any(alive(p) for p in pids))

    # the supervisor of `sr start`
    assert pump.sr("start", f"subscribe/{name}").returncode == 0
    sup = pump.supervisor_pid()
    assert sup and " ".join(psutil.Process(sup).cmdline()).split()[:1] == ["sr_supervisor"]
    assert wait_for(lambda: len(_titled(f"sr_subscribe {name} ")) == 2)
