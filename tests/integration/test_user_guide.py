"""doc/user-guide.rst, followed in order by one user against a real pump, loses nothing.

The guide's text is the script (tests/support/guidetext.py reads it): every line of a
literal block that starts with ``$ `` is a command, run by bash in the user's own HOME
with the repository's commands on PATH, and must exit 0. The ``.. guide-test`` comments:

``file <path>``       the next block is a file the user writes;
``example <c>/<n>``   the next block shows the packaged example sarra/examples/<c>/<n>.conf
                      (each of its lines is in the example: the guide cannot drift);
``crontab``           the next block is crontab lines: cron runs each command once;
``publish <rel>``     the data mart announces a new file <rel> (the pump's feeder posts it
                      on xpublic, served by the pump's HTTP server);
``wait <glob>``       the file arrives at the user's (``~`` is her HOME);
``pump <glob>``       the file arrives in the pump's tree (alice's post reached it);
``watching <name>``   sr_watch <name> watches its directory;
``remote <path>``     the file arrives on the SFTP server;
``until <re> <cmd>``  the command's output matches <re> within a few seconds.

Substituted: both pumps (``dd.weather.gc.ca``, its ``anonymous`` account; and
``pump.example.org``, its ``alice``) are one pump of scripts/pump_demo.py in a fresh vhost
of the test broker (anonymous is its subscriber carol, alice its source alice), with
their passwords; ``www.alice.example.org`` an HTTP server of ``~/public`` on loopback;
``remote.example.org`` an sshd on loopback (alice: the test's user, her key its key).
A configuration that ``add`` copies from the examples gets the same substitution (the
test stands in for DNS).
"""

import getpass
import glob
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import COMMANDS, REPO
from tests.integration import pumpkit, servers
from tests.support import guidetext

GUIDE = REPO / "doc" / "user-guide.rst"
EXAMPLES = REPO / "sarra" / "examples"
WAIT = 30.0


def steps(text):
    """[(kind, ...)] in the guide's order: ('run', cmd), ('file', path, content),
    ('example', name, lines), ('cron', [cmd]), or a marker (kind, argument)."""
    out, pending = [], None
    for kind, value in guidetext.items(text):
        if kind == "mark":
            word, _, arg = value.partition(" ")
            if word in ("file", "example", "crontab"):
                pending = (word, arg)
            else:
                out.append((word, arg))
            continue
        if pending and pending[0] == "file":
            out.append(("file", pending[1], "\n".join(value) + "\n"))
        elif pending and pending[0] == "example":
            out.append(("example", pending[1], value))
        elif pending and pending[0] == "crontab":
            out.append(("cron", [" ".join(ln.split()[1 if ln.startswith("@") else 5:])
                                 for ln in value if ln.strip()]))
        else:
            out += [("run", ln[2:].strip()) for ln in value if ln.startswith("$ ")]
        pending = None
    return out


def test_the_guide_is_read():
    got = steps(GUIDE.read_text())
    kinds = {s[0] for s in got}
    assert {"run", "file", "example", "cron", "publish", "wait", "pump", "remote",
            "until"} <= kinds
    runs = [s[1].split()[0] for s in got if s[0] == "run"]
    for cmd in ("sr_subscribe", "sr_post", "sr_watch", "sr_sender", "sr_report", "sr"):
        assert cmd in runs, cmd
    assert ("cron", ["sr start", "sr sanity"]) in got


def test_the_guide_shows_the_examples_as_they_are():
    for s in steps(GUIDE.read_text()):
        if s[0] == "example":
            have = (EXAMPLES / (s[1] + ".conf")).read_text().splitlines()
            for line in s[2]:
                assert line in have, "%s: %r not in the example" % (s[1], line)


class User:
    def __init__(self, tmp, pump, sftp, keyfile):
        self.pump, self.sftp, self.keyfile = pump, sftp, keyfile
        self.home = tmp / "home_alice"
        (self.home / ".config" / "sarra").mkdir(parents=True)
        (self.home / "public").mkdir()
        self.sftp_root = tmp / "sftp"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name, module in COMMANDS.items():
            w = self.bin / name
            w.write_text("#!/bin/sh\nexec %s -c \"import sys; sys.argv[0] = '%s'; from "
                         "sarra.commands.%s import main; sys.exit(main())\" \"$@\"\n"
                         % (shlex.quote(sys.executable), name, module))
            w.chmod(0o755)
        self.www = servers.start_http(self.home / "public", tmp)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
        self.env.update(HOME=str(self.home), PATH="%s:%s" % (self.bin, self.env["PATH"]),
                        PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.outputs = []

    def sub(self, text):
        p = self.pump
        where = "%s/%s" % (p.netloc, p.vhost)
        carol, alice = p.users["carol"], p.users["alice"]
        text = text.replace("amqps://anonymous:anonymous@dd.weather.gc.ca/",
                            "amqp://%s:%s@%s" % (carol, p.pw[carol], where))
        text = text.replace("amqps://anonymous@dd.weather.gc.ca/",
                            "amqp://%s@%s" % (carol, where))
        text = text.replace("amqp://alice:Al1ce-pw@pump.example.org/",
                            "amqp://%s:%s@%s" % (alice, p.pw[alice], where))
        text = text.replace("amqp://alice@pump.example.org/", "amqp://%s@%s" % (alice, where))
        text = re.sub(r"\b(x[sr])_alice\b", r"\1_" + alice, text)
        text = text.replace("http://www.alice.example.org/",
                            "http://%s:%d/" % (self.www.host, self.www.port))
        text = text.replace("sftp://alice@remote.example.org/", "sftp://%s@%s:%d/" % (
            self.sftp.user, self.sftp.host, self.sftp.port))
        return text.replace("/home/alice/.ssh/id_ed25519", str(self.keyfile))

    def path(self, p):
        return Path(p.replace("~", str(self.home), 1))

    def run(self, command, check=True):
        command = self.sub(command)
        r = subprocess.run(["bash", "-c", command], env=self.env, cwd=self.home,
                           capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        self.outputs.append((command, r))
        assert not check or r.returncode == 0, "$ %s\nexit %d\n%s%s\n%s" % (
            command, r.returncode, r.stdout, r.stderr, self.log_tail())
        m = re.match(r"sr_(\w+) add (\w+)$", command)
        if m:       # the example's hosts: the test's
            conf = self.home / ".config" / "sarra" / m.group(1) / (m.group(2) + ".conf")
            conf.write_text(self.sub(conf.read_text()))
        return r

    def wait(self, what, found):
        deadline = time.monotonic() + WAIT
        while not found():
            assert time.monotonic() < deadline, "%s: not within %d s\n%s\n%s" % (
                what, WAIT, self.log_tail(), self.pump.log_tail())
            time.sleep(0.2)

    def publish(self, rel):
        """The data mart announces a new file (the pump's feeder, on xpublic)."""
        p = self.pump
        f = Path(p.tree) / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(os.urandom(200))
        feeder = p.users["feeder"]
        r = p.run("sr_post", "--post_broker", "amqp://%s@%s/%s" % (feeder, p.netloc, p.vhost),
                  "--post_exchange", "xpublic", "--post_base_url", p.http_url("pump"),
                  "--post_base_dir", p.tree, str(f))
        assert r.returncode == 0, r.stdout + r.stderr

    def follow(self, guide_steps):
        for s in guide_steps:
            kind, arg = s[0], s[1]
            if kind == "run":
                self.run(arg)
            elif kind == "file":
                path = self.path(arg)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(self.sub(s[2]))
            elif kind == "cron":
                for command in arg:
                    self.run(command)
            elif kind == "publish":
                self.publish(arg)
            elif kind == "wait":
                pattern = str(self.path(arg))
                self.wait(arg, lambda: glob.glob(pattern))
            elif kind == "pump":
                pattern = os.path.join(self.pump.tree, self.sub(arg).replace(
                    "alice", self.pump.users["alice"]))
                self.wait(arg, lambda: glob.glob(pattern))
            elif kind == "remote":
                self.wait(arg, lambda: (self.sftp.root / arg).exists())
            elif kind == "watching":
                log = self.home / ".cache" / "sarra" / "log" / ("sr_watch_%s_01.log" % arg)
                self.wait("sr_watch " + arg, lambda: log.exists() and log.stat().st_size)
                time.sleep(0.5)     # its watches are made after its first log line
            elif kind == "until":
                want, _, command = arg.partition(" ")
                self.wait("%s ~ %s (last: %r)" % (command, want, self.outputs[-1:]),
                          lambda: re.search(want, self.run(command).stdout))
            elif kind != "example":
                raise AssertionError("unknown guide-test marker: %s" % kind)

    def log_tail(self, n=10):
        parts = []
        for f in sorted((self.home / ".cache" / "sarra" / "log").glob("*.log")):
            parts.append("--- %s\n%s" % (f.name, "\n".join(
                f.read_text(errors="replace").splitlines()[-n:])))
        return "\n".join(parts)

    def close(self):
        subprocess.run(["bash", "-c", "sr stop"], env=self.env, cwd=self.home,
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        self.www.stop()


@pytest.fixture
def pump(tmp_path_factory, broker_url):
    with pumpkit.running(tmp_path_factory, broker_url, name="userguide") as p:
        yield p


def test_the_guide_in_order(tmp_path, pump, sftp_server):
    user = User(tmp_path, pump, sftp_server, sftp_server.keyfile)
    try:
        user.follow(steps(GUIDE.read_text()))
        # the mirror kept the data mart's tree; the sender's file is alice's own
        got = user.home / "public" / "outgoing" / "remote.txt"
        assert (sftp_server.root / "incoming" / "outgoing" / "remote.txt").read_bytes() == got.read_bytes()
        stopped = user.outputs[-1][1]
        assert re.search(r"stop", stopped.stdout + stopped.stderr), stopped
    finally:
        user.close()
