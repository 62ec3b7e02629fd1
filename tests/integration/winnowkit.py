"""sr_winnow's test environment: a winnow config on the real broker (WinnowEnv, the wenv
fixture), announcements published raw, the captured v2 sample. Shared by
tests/integration/test_winnow.py and test_pump_nodes.py."""

import json
import os
import signal
import subprocess
from pathlib import Path

import amqp
import pytest

from sarra import message
from sarra.flow import winnow
from tests.conftest import REPO, amqp_connect, command_argv, command_env
from tests.integration import nodekit
from tests.integration.subkit import wait_for  # noqa: F401  (test_winnow's too)

SAMPLE = REPO / "tests" / "data" / "samples" / "v2_winnow.json"


def publish(ch, exchange, relpath, sumstr, size=100, pubtime=None, baseurl=None, extra=None):
    """Publish a v02 post of a whole file (hand-made, as a producer would)."""
    pubtime = pubtime or message.now()
    headers = {"to_clusters": "here", "mtime": "20240315123456.5", "mode": "644",
               "parts": f"1,{size},1,0,0", "sum": sumstr, **(extra or {})}
    body = f"{pubtime} {baseurl or 'http://src.example/'} {relpath}"
    ch.basic_publish(amqp.Message(body, application_headers=headers, delivery_mode=2,
                                  content_type="text/plain", content_encoding="utf-8"),
                     exchange=exchange, routing_key=message.topic_for("v02.post", relpath))
    return body


class WinnowEnv:
    def __init__(self, home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path):
        self.home, self.uid, self.broker, self.tmp = Path(home), uid, broker_url, Path(tmp_path)
        self.xa = amqp_exchange(f"xs_guest_wa{uid}", durable=True)
        self.xb = amqp_exchange(f"xs_guest_wb{uid}", durable=True)
        self.xo = amqp_exchange(f"xs_guest_wo{uid}", durable=True)
        self.tap = amqp_tap(self.xo)
        self.name = f"w{uid}"
        self.procs = []
        self.configs = []          # (component, name) to clean up
        self.conn = amqp_connect(broker_url)
        self.ch = self.conn.channel()

    def config(self, extra="", component="winnow", name=None, lines=None):
        name = name or self.name
        d = self.home / ".config" / "sarra" / component
        d.mkdir(parents=True, exist_ok=True)
        if lines is None:
            lines = [f"broker {self.broker}", f"exchange {self.xa}", "subtopic #",
                     f"exchange {self.xb}", "subtopic #", f"post_exchange {self.xo}",
                     "report_back off", "expire 5m", "heartbeat 5"]
        lines = lines + [x.strip() for x in extra.strip().splitlines() if x.strip()]
        (d / f"{name}.conf").write_text("\n".join(lines) + "\n")
        self.configs.append((component, name))

    def cmd(self, *args, component="winnow", check=True):
        argv = command_argv(f"sr_{component}") + [str(a) for a in args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=command_env(),
                           cwd=str(self.home), stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"sr_{component} {' '.join(map(str, args))} exited "
                                 f"{r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def start(self, no, component="winnow", name=None, home=None):
        """Instance `no` of the config (`sr_<component> --no N foreground`), own session;
        ``home``: run as another host (its own HOME: copy .config there first)."""
        name = name or self.name
        home = Path(home or self.home)
        started = self.log(no, component, name, home).count("started, queue")
        log = self.tmp / f"{component}_{name}_{no}_{len(self.procs)}.out"
        with open(log, "wb") as fh:
            p = subprocess.Popen(command_argv(f"sr_{component}") + ["--no", str(no),
                                 "foreground", name], stdin=subprocess.DEVNULL, stdout=fh,
                                 stderr=fh, env=nodekit.host_env(home),
                                 cwd=str(home), start_new_session=True)
        self.procs.append(p)
        assert wait_for(lambda: self.log(no, component, name, home).count("started, queue")
                        > started, 30), (self.log(no, component, name, home)[-3000:]
                                         + log.read_text())
        return p

    def log(self, no=1, component="winnow", name=None, home=None):
        path = (Path(home or self.home) / ".cache" / "sarra" / "log"
                / f"sr_{component}_{name or self.name}_{no:02d}.log")
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        return p.wait(20)

    def kill(self, p):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    def publish(self, exchange, relpath, sumstr, **kw):
        return publish(self.ch, exchange, relpath, sumstr, **kw)

    def queue_depth(self, queue):
        return self.ch.queue_declare(queue, passive=True)[1]

    def queue_name(self):
        files = list((self.home / ".cache" / "sarra" / "winnow" / self.name).glob("*.qname"))
        return files[0].read_text().strip() if files else None

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)
        for component, name in self.configs:
            self.cmd("cleanup", name, component=component, check=False)
        try:
            self.conn.close()
        except Exception:
            pass


@pytest.fixture
def wenv(home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path):
    env = WinnowEnv(home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path)
    try:
        yield env
    finally:
        env.close()
