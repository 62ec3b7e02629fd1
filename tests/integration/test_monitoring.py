"""`sr check`, `sr status` figures and the Prometheus metrics against the real broker and
real daemons (issue 23, item 3): each condition gives its exit code (0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN) and one line with performance data; the metrics file parses with a
Prometheus text parser."""

import json
import os
import signal
import time

import pytest

from tests.integration.procs import alive, wait_for
from tests.integration.srkit import Pump, table

pytestmark = pytest.mark.broker


@pytest.fixture
def pump(home, uid, broker_url, run_cmd, amqp_exchange, amqp_channel):
    p = Pump(home, uid, broker_url, run_cmd)
    amqp_exchange(p.src)
    yield p
    d = home / ".config" / "sarra" / "subscribe"
    for conf in d.glob("*.conf") if d.is_dir() else ():     # started without sr
        run_cmd(["sr_subscribe", "stop", conf.stem], timeout=60)
    p.finish(run_cmd, amqp_channel)


def check(pump, *args):
    r = pump.sr("check", *args)
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("SARRA "), r.stdout + r.stderr
    return r.returncode, lines[0]


def perf(line):
    """{label: value} of the performance data."""
    out = {}
    for item in line.split(" | ", 1)[1].split():
        label, _, rest = item.partition("=")
        out[label.strip("'")] = float(rest.split(";")[0].rstrip("s%"))
    return out


def test_check_codes_status_figures_and_metrics(pump, home, run_cmd):
    prom = home / "prom"
    name = f"mon_{pump.uid}"
    # no sanity_log_dead: the supervisor leaves the instance stopped (SIGSTOP) below alone
    conf = pump.add("subscribe", name, f"reject .*\nmetrics_dir {prom}\nheartbeat 30\n"
                    "sanity_log_dead 0\n", instances=1)
    assert pump.sr("start", conf).returncode == 0
    assert wait_for(lambda: pump.live_pids("subscribe", name, 1), 10)
    pid = pump.pid("subscribe", name, 1)

    # ---- all well: OK, with performance data
    pump.publish(20)
    assert wait_for(lambda: check(pump, conf)[0] == 0 and "queue" in check(pump, conf)[1],
                    10, step=0.5), check(pump, conf)
    code, line = check(pump, conf)
    assert line.startswith("SARRA OK - ") and perf(line)[f"{conf}_queue"] == 0, line

    # ---- status: lag and bytes/s columns, the instance's figures, and --json
    r = pump.sr("status", conf)
    cols, rows = table(r.stdout)
    assert {"LAG", "BYTES/S", "MSG/S"} <= set(cols) and rows[name]["LAG"] != "-", r.stdout
    assert f"subscribe/{name} #01 pid {pid}:" in r.stdout and "msg/s" in r.stdout
    time.sleep(2.1)               # a second stats write: a rate over the window between
    pump.publish(5, prefix="g")

    def config_json():
        (c,) = json.loads(pump.sr("status", "--json", conf).stdout)["configurations"]
        return c if (c["msg_per_s"] or 0) > 0 else None
    assert wait_for(config_json, 8, step=0.5)
    c = config_json()
    assert c["state"] == "running" and c["queue"] == 0 and c["instances"][0]["pid"] == pid
    assert c["lag"] == 0

    # ---- the metrics file, read by a Prometheus text parser
    parser = pytest.importorskip("prometheus_client.parser")
    path = prom / f"sarra_subscribe_{name}_01.prom"
    assert wait_for(path.exists, 5)
    fams = {f.name: f for f in parser.text_string_to_metric_families(path.read_text())}
    sample = fams["sarra_messages_received"].samples[0]
    assert fams["sarra_messages_received"].type == "counter"
    assert sample.labels == {"component": "subscribe", "config": name, "instance": "1"}
    assert sample.value >= 20 and fams["sarra_up"].samples[0].value == 1

    # ---- idle: nothing taken for over 1 s
    assert wait_for(lambda: check(pump, conf, "--idle", "1,2")[0] == 2, 8, step=0.5)
    assert "idle" in check(pump, conf, "--idle", "1,2")[1]

    # ---- messages wait, the oldest growing older: queue and lag thresholds
    os.kill(pid, signal.SIGSTOP)
    try:
        pump.publish(300, prefix="w")
        assert wait_for(lambda: check(pump, conf, "--queue", "10,100000")[0] == 1, 6,
                        step=0.5), check(pump, conf)
        code, line = check(pump, conf, "--queue", "10,20")
        assert code == 2 and "queue" in line.split(" | ")[0], line
        time.sleep(1.2)
        code, line = check(pump, conf, "--queue", "off", "--lag", "1,3600")
        assert code == 1 and "lag" in line.split(" | ")[0], line
        assert perf(line)[f"{conf}_lag"] >= 1
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_for(lambda: check(pump, conf)[0] == 0, 10, step=0.5), check(pump, conf)

    # ---- failures: every download fails (nothing listens on port 1)
    bad = f"bad_{pump.uid}"
    bconf = pump.add("subscribe", bad, "accept .*\nattempts 1\n", instances=1)
    assert run_cmd(["sr_subscribe", "start", bad]).returncode == 0
    assert wait_for(lambda: pump.live_pids("subscribe", bad, 1), 10)
    pump.publish(5, prefix="b")
    assert wait_for(lambda: check(pump, bconf, "--failures", "5,20")[0] == 2, 10,
                    step=0.5), check(pump, bconf)
    assert "failures" in check(pump, bconf)[1].split(" | ")[0]

    # ---- a crashed instance (no supervisor brings it back): CRITICAL down
    victim = pump.pid("subscribe", bad, 1)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: not alive(victim), 5)
    code, line = check(pump, bconf)
    assert code == 2 and f"{bconf} down" in line, line

    # ---- UNKNOWN: nothing to check, a bad threshold
    assert check(pump, f"subscribe/nosuch_{pump.uid}")[0] == 3
    code, line = check(pump, conf, "--lag", "9,1")
    assert code == 3 and "threshold" in line
