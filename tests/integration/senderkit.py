"""What the sr_sender, sr_shovel and routing tests share: a Runner that runs commands with the
test's HOME, files to send, sr_post, the sshd session count, and the `runner`/`env` fixtures
(an exchange with taps for posts and reports). Moved out of test_sender.py (test modules do
not import one another)."""

import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import command_argv, command_env


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def make_files(root: Path, count: int, size: int = 64, prefix="f", subdirs=10):
    """{relpath: md5} of count small files with distinct contents under root/d<k>/."""
    out = {}
    for i in range(count):
        rel = "d%d/%s%05d.txt" % (i % subdirs, prefix, i)
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = (("%s %d " % (prefix, i)).encode() * (size // 4 + 1))[:size]
        p.write_bytes(data)
        out[rel] = hashlib.md5(data).hexdigest()
    return out


def wait_for(pred, timeout=60.0, what="condition", step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


class Runner:
    """Configs, credentials and foreground processes of sarra components for one test."""

    def __init__(self, home: Path, tmp: Path):
        self.home, self.tmp = Path(home), Path(tmp)
        self.cfgroot = self.home / ".config" / "sarra"
        self.procs = []          # (component, name, Popen, log path)

    def config(self, component, name, text):
        d = self.cfgroot / component
        d.mkdir(parents=True, exist_ok=True)
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        (d / ("%s.conf" % name)).write_text("\n".join(lines) + "\n")
        return d / ("%s.conf" % name)

    def credentials(self, *lines):
        p = self.cfgroot / "credentials.conf"
        p.parent.mkdir(parents=True, exist_ok=True)
        old = p.read_text() if p.exists() else ""
        p.write_text(old + "".join(line + "\n" for line in lines))
        os.chmod(p, 0o600)

    def run(self, command, *args, timeout=120, input=None):
        return subprocess.run(command_argv(command) + [str(a) for a in args],
                              capture_output=True, text=True, timeout=timeout, input=input,
                              env=command_env(), cwd=str(self.home),
                              stdin=None if input is not None else subprocess.DEVNULL)

    def start(self, component, name, *extra):
        log = self.tmp / ("%s_%s_%d.log" % (component, name, len(self.procs)))
        fh = open(log, "wb")
        p = subprocess.Popen(command_argv("sr_" + component) + [*extra, "foreground", name],
                             stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                             env=command_env(), cwd=str(self.home), start_new_session=True)
        fh.close()
        self.procs.append((component, name, p, log))
        return p

    def log(self, name=None):
        return "".join(log.read_text(errors="replace") for _, n, _, log in self.procs
                       if (name is None or n == name) and log.exists())

    def stop(self, p, timeout=15):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def stop_all(self):
        """SIGTERM to every process first, then wait for each (stops run in parallel)."""
        for _, _, p, _ in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, _, p, _ in self.procs:
            self.stop(p)

    def cleanup(self):
        """Stop everything and delete the queues of the configs that ran."""
        self.stop_all()
        seen = set()
        for component, name, _, _ in self.procs:
            if (component, name) not in seen:
                seen.add((component, name))
                self.run("sr_" + component, "cleanup", name, timeout=60)

    def wait_consuming(self, p, name, timeout=30):
        """Wait until the process logged that its queue is bound and it consumes."""
        wait_for(lambda: p.poll() is not None or " started, queue " in self.log(name),
                 timeout, "%s to start" % name)
        assert p.poll() is None, "%s exited %s:\n%s" % (name, p.returncode, self.log(name))


def sr_post(runner, broker, exchange, base_url, base_dir, paths, *extra):
    r = runner.run("sr_post", "--post_broker", broker, "--post_exchange", exchange,
                   "--post_base_url", base_url, "--post_base_dir", str(base_dir),
                   *extra, *[str(p) for p in paths], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def accepted_sessions(sftp_server) -> int:
    log = sftp_server.keyfile.parent / "sshd.log"
    return len(re.findall(r"Accepted publickey for", log.read_text(errors="replace")))


def sshd_children(sftp_server):
    """The per-connection sshd processes of the fixture's sshd (started by this module)."""
    pid = int((sftp_server.keyfile.parent / "sshd.pid").read_text().split()[0])
    return psutil.Process(pid).children(recursive=True)


# ------------------------------------------------------------------ fixtures

@pytest.fixture
def runner(home, tmp_path):
    r = Runner(home, tmp_path)
    yield r
    r.cleanup()


@pytest.fixture
def env(runner, broker_url, uid, amqp_exchange, amqp_tap, tmp_path):
    """An input exchange, a report exchange with a tap, an output exchange with a tap,
    and a source tree."""
    class E:
        pass
    e = E()
    e.broker = broker_url
    e.exchange = amqp_exchange("xs_guest_snd%s" % uid, durable=True)
    e.report_exchange = amqp_exchange("xs_guest_sndrep%s" % uid)
    e.reports = amqp_tap(e.report_exchange, ("v02.report.#",))
    e.post_exchange = amqp_exchange("xs_guest_sndout%s" % uid)
    e.posts = amqp_tap(e.post_exchange, ("#",))
    e.src = tmp_path / "src"
    e.src.mkdir()
    e.name = "s%s" % uid
    e.base_url = "http://pump.invalid/"
    return e


def sender_config(runner, env, destination, extra=""):
    return runner.config("sender", env.name, """
        broker %s
        exchange %s
        expire 5m
        report_exchange %s
        destination %s
        base_dir %s
        heartbeat 2
        %s
        accept .*
    """ % (env.broker, env.exchange, env.report_exchange, destination, env.src, extra))


def codes(tap, count, timeout=60):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += tap.get(count - len(got), timeout=0.5)
    return [(body.split()[2], int(body.split()[3])) for _, body, _ in got]


def posted(tap, count, timeout=60):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += tap.get(count - len(got), timeout=0.5)
    return got
