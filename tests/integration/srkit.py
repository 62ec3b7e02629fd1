"""What the `sr` tests share (test_sr.py, test_status_truth.py): Pump, several configurations
of one test under a private HOME, run and inspected with `sr`; table() reads `sr status`."""

import os
import time

import amqp
import psutil

from tests.conftest import parse_broker_url
from tests.integration.procs import alive

HB = 1            # heartbeat of every test configuration (seconds)


class Pump:
    """The test HOME's configurations, and every pid seen (all killed at the end)."""

    def __init__(self, home, uid, broker_url, run_cmd):
        self.home, self.uid, self.run_cmd = home, uid, run_cmd
        host, port, user, password, vhost = parse_broker_url(broker_url)
        self.broker = f"amqp://{user}@{host}:{port}/"          # password from credentials
        self.amqp_url = broker_url
        self.src = f"xs_{user}_sr_{uid}"
        self.dst = f"xs_{user}_srdst_{uid}"
        self.user = user
        self.queues = []
        self.seen = set()
        cred = home / ".config" / "sarra" / "credentials.conf"
        cred.parent.mkdir(parents=True, exist_ok=True)
        cred.write_text(f"amqp://{user}:{password}@{host}:{port}/\n")
        cred.chmod(0o600)

    def add(self, component, name, body="", instances=2, enabled=True):
        queue = f"q_{self.user}.sr_{self.uid}.{name}"
        self.queues.append(queue)
        text = (f"broker {self.broker}\nexchange {self.src}\nqueue_name {queue}\n"
                f"expire 10m\ninstances {instances}\nheartbeat {HB}\n{body}")
        d = self.home / ".config" / "sarra" / component
        d.mkdir(parents=True, exist_ok=True)
        (d / (name + (".conf" if enabled else ".conf.off"))).write_text(text)
        return f"{component}/{name}"

    def sr(self, *args, timeout=60):
        return self.run_cmd(["sr", *args], timeout=timeout)

    def state_dir(self, component, name):
        return self.home / ".cache" / "sarra" / component / name

    def pid(self, component, name, n):
        path = self.state_dir(component, name) / f"sr_{component}_{name}_{n:02d}.pid"
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if pid:
            self.seen.add(pid)
        return pid

    def live_pids(self, component, name, count=2):
        pids = [self.pid(component, name, n) for n in range(1, count + 1)]
        return [p for p in pids if p and alive(p)]

    def supervisor_pid(self):
        try:
            pid = int((self.home / ".cache/sarra/sr_supervisor.pid").read_text())
        except (OSError, ValueError):
            return None
        self.seen.add(pid)
        return pid

    def log(self, name):
        return (self.home / ".cache" / "sarra" / "log" / name).read_text()

    def publish(self, count, prefix="f"):
        conn = amqp.Connection(**_amqp_args(self.amqp_url))
        conn.connect()
        try:
            ch = conn.channel()
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + ".000"
            for i in range(count):
                rel = f"sr_{self.uid}/{prefix}{i}.txt"
                ch.basic_publish(amqp.Message(
                    f"{stamp} http://127.0.0.1:1/ {rel}",
                    application_headers={"sum": "d,d41d8cd98f00b204e9800998ecf8427e",
                                         "parts": "1,0,1,0,0", "source": "t",
                                         "from_cluster": "t", "to_clusters": "t"}),
                    exchange=self.src, routing_key="v02.post." + rel.replace("/", "."))
        finally:
            conn.close()

    def processes_of_test(self):
        """Live processes whose command line names one of our configurations."""
        found = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if self.uid in cmd and p.info["status"] != psutil.STATUS_ZOMBIE \
                    and p.info["pid"] != os.getpid():
                found.append(p.info["pid"])
        return found

    def finish(self, run_cmd, amqp_channel):
        """End of a test: `sr stop`, then kill whatever of this test still runs (by the
        test's unique id, verified live) and delete its queues."""
        run_cmd(["sr", "stop"], timeout=60)
        self.supervisor_pid()
        for pid in list(self.seen) + self.processes_of_test():
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        for q in self.queues:
            try:
                amqp_channel.queue_delete(q)
            except Exception:
                pass


def _amqp_args(url):
    host, port, user, password, vhost = parse_broker_url(url)
    return dict(host=f"{host}:{port}", userid=user, password=password, virtual_host=vhost)


def table(stdout):
    """Rows of the status table, keyed by config name."""
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("COMPONENT"))
    cols = lines[head].split()
    rows = {}
    for line in lines[head + 1:]:
        if line.startswith("note:") or not line.strip():
            break
        values = line.split()
        rows[values[1]] = dict(zip(cols, values))
    return cols, rows
