"""Issue 16, item 6 and item 7 (passwords on command lines), against the real broker.

Two HOMEs on one host run a subscriber configuration of the same name: `stop`, `restart`
and `sr stop` in one HOME act only on that HOME's instances (pid files verified as the
very processes recorded: same start time, same user, same HOME), never on processes
found by name.  Stale pid files naming an unrelated live process (a recycled pid, another
HOME's instance) are cleaned, not signalled.  A password given with --broker at `start`
appears on no process's command line, and the instances still connect with it.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse

import psutil
import pytest

from tests.conftest import command_argv, command_env, parse_broker_url
from tests.integration.procs import alive, wait_for

COMP = "subscribe"


class Home:
    """One user's HOME (own XDG config and cache trees) running sarra commands."""

    def __init__(self, root, tag, uid, broker_url, seen):
        self.root, self.tag, self.uid, self.seen = root / tag, tag, uid, seen
        for d in (".config/sarra", ".cache", ".local/share"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.env = command_env({"HOME": str(self.root),
                                "XDG_CONFIG_HOME": str(self.root / ".config"),
                                "XDG_CACHE_HOME": str(self.root / ".cache"),
                                "XDG_DATA_HOME": str(self.root / ".local/share")})
        host, port, user, password, _ = parse_broker_url(broker_url)
        self.host, self.port, self.user = host, port, user
        cred = self.root / ".config/sarra/credentials.conf"
        cred.write_text(f"amqp://{user}:{password}@{host}:{port}/\n")
        cred.chmod(0o600)

    def add(self, name, exchange, queue, instances=2, user=None):
        d = self.root / ".config/sarra" / COMP
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.conf").write_text(
            f"broker amqp://{user or self.user}@{self.host}:{self.port}/\n"
            f"exchange {exchange}\nqueue_name {queue}\nexpire 10m\n"
            f"instances {instances}\nheartbeat 1\nreject .*\n")

    def run(self, *argv, timeout=60, check=True):
        argv = [str(a) for a in argv]
        r = subprocess.run(command_argv(argv[0]) + argv[1:], env=self.env,
                           cwd=str(self.root), capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError("%s (%s) exited %d\n%s%s" % (
                " ".join(argv), self.tag, r.returncode, r.stdout, r.stderr))
        return r

    def state_dir(self, name):
        return self.root / ".cache/sarra" / COMP / name

    def pid_path(self, name, n):
        return self.state_dir(name) / f"sr_{COMP}_{name}_{n:02d}.pid"

    def pids(self, name, count=2):
        """Live pids named by this HOME's pid files of instances 1..count."""
        out = []
        for n in range(1, count + 1):
            try:
                pid = int(self.pid_path(name, n).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            self.seen.add(pid)
            if alive(pid):
                out.append(pid)
        return out

    def running(self, name, count=2):
        """Wait until count instances run; return their pids."""
        assert wait_for(lambda: len(self.pids(name, count)) == count), \
            f"{self.tag}: {self.pids(name, count)} of {count} instances running"
        return sorted(self.pids(name, count))


@pytest.fixture
def homes(tmp_path, uid, broker_url, amqp_exchange, amqp_channel):
    seen = set()
    a = Home(tmp_path, "alice", uid, broker_url, seen)
    b = Home(tmp_path, "bob", uid, broker_url, seen)
    exchange = amqp_exchange(f"xs_{a.user}_hs_{uid}")
    yield a, b, exchange
    for h in (a, b):
        h.run("sr", "stop", check=False)
    for pid in list(seen):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    for p in psutil.process_iter(["pid", "cmdline"]):   # whatever a failure left behind
        if uid in " ".join(p.info["cmdline"] or []) and p.info["pid"] != os.getpid():
            try:
                p.kill()
            except psutil.Error:
                pass
    for tag in ("alice", "bob", "pw"):
        try:
            amqp_channel.queue_delete(f"q_{a.user}.hs_{uid}.{tag}")
        except Exception:
            pass


@pytest.mark.parametrize("how", ["stop", "restart", "sr stop name", "sr stop"])
def test_stop_acts_on_its_own_home_only(homes, uid, how):
    a, b, exchange = homes
    name = f"hs_{uid}"                       # the same configuration name in both HOMEs
    a.add(name, exchange, f"q_{a.user}.hs_{uid}.alice")
    b.add(name, exchange, f"q_{b.user}.hs_{uid}.bob")
    b.run("sr_subscribe", "start", name)
    theirs = b.running(name)
    if how == "sr stop":
        a.run("sr", "start")                 # alice's supervisor runs her instances
    else:
        a.run("sr_subscribe", "start", name)
    mine = a.running(name)
    assert not set(mine) & set(theirs)

    if how == "stop":
        r = a.run("sr_subscribe", "stop", name)
        assert "stopped 2 instance(s)" in r.stdout, r.stdout
    elif how == "restart":
        a.run("sr_subscribe", "restart", name)
        assert wait_for(lambda: len(a.pids(name)) == 2 and not set(a.pids(name)) & set(mine))
        r = a.run("sr_subscribe", "status", name)
        assert "running (2/2" in r.stdout, r.stdout
    elif how == "sr stop name":
        r = a.run("sr", "stop", f"subscribe/{name}")
        assert "stopped 2 instance(s)" in r.stdout, r.stdout
    else:
        a.run("sr", "stop")
    assert not any(alive(p) for p in mine)
    time.sleep(0.3)
    assert all(alive(p) for p in theirs), f"alice's {how} killed bob's instances"
    r = b.run("sr_subscribe", "status", name)
    assert "running (2/2" in r.stdout, r.stdout

    r = b.run("sr_subscribe", "stop", name)            # bob's stop still stops his own
    assert "stopped 2 instance(s)" in r.stdout, r.stdout
    assert not any(alive(p) for p in theirs)
    if how == "restart":
        assert len(a.pids(name)) == 2, "bob's stop killed alice's instances"


def _lookalike(name, n):
    """A live process of ours, not an instance, whose command line looks like instance n
    of configuration name (what a recycled pid may be)."""
    code = "import time; time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", code, "sarra.commands.subscribe",
                             "--no", str(n), "foreground", name])


def test_stale_pid_files_are_not_signalled(homes, uid):
    a, b, exchange = homes
    name = f"hs_{uid}"
    a.add(name, exchange, f"q_{a.user}.hs_{uid}.alice")
    b.add(name, exchange, f"q_{b.user}.hs_{uid}.bob")
    b.run("sr_subscribe", "start", name)
    theirs = b.running(name)
    sleeper = subprocess.Popen(["sleep", "60"])
    twin = _lookalike(name, 2)
    a.seen.update((sleeper.pid, twin.pid))
    try:
        a.state_dir(name).mkdir(parents=True, exist_ok=True)
        # 1: bob's live instance of the same name (a pid alice's HOME never started)
        a.pid_path(name, 1).write_text(f"{theirs[0]}\n")
        # 2: a recorded instance that died, its pid now reused by a look-alike process
        a.pid_path(name, 2).write_text(f"{twin.pid}\n")
        created = psutil.Process(twin.pid).create_time()
        a.pid_path(name, 2).with_suffix(".ident").write_text(json.dumps(
            {"pid": twin.pid, "create_time": created - 50, "ticks": None,
             "uid": os.getuid(), "state_dir": os.path.realpath(a.state_dir(name))}))
        # 3: an unrelated process of the same user
        a.pid_path(name, 3).write_text(f"{sleeper.pid}\n")

        r = a.run("sr_subscribe", "status", name)
        assert "stopped (0/" in r.stdout, r.stdout
        r = a.run("sr_subscribe", "stop", name)
        assert "stopped 0 instance(s)" in r.stdout, r.stdout
        time.sleep(0.5)
        assert alive(sleeper.pid) and alive(twin.pid)
        assert all(alive(p) for p in theirs), "a stale pid file made alice kill bob's"
        assert not list(a.state_dir(name).glob("*.pid"))

        # a pid file of an older version (bare pid) written before the pid was reused
        a.pid_path(name, 2).write_text(f"{twin.pid}\n")
        old = created - 3600
        os.utime(a.pid_path(name, 2), (old, old))
        r = a.run("sr", "stop", f"subscribe/{name}")
        time.sleep(0.5)
        assert alive(twin.pid) and all(alive(p) for p in theirs)

        # start does not take the stale files for running instances; alice's run
        a.pid_path(name, 1).write_text(f"{theirs[1]}\n")
        a.run("sr_subscribe", "start", name)
        mine = a.running(name)
        assert not set(mine) & set(theirs)
        a.run("sr_subscribe", "stop", name)
        assert not any(alive(p) for p in mine)
        assert alive(twin.pid) and alive(sleeper.pid) and all(alive(p) for p in theirs)
    finally:
        for p in (sleeper, twin):
            p.kill()
            p.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_root_never_touches_another_users_processes(homes, uid):
    """root's stop used to kill, by name, another Unix user's instances."""
    import pwd
    try:
        other = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    a, _, exchange = homes
    name = f"hs_{uid}"
    a.add(name, exchange, f"q_{a.user}.hs_{uid}.alice")
    # another user's process whose command line is that of instance 1 of the same name
    theirs = subprocess.Popen(["sh", "-c", "sleep 60; :", "sarra.commands.subscribe",
                               "--no", "1", "foreground", name],
                              user=other.pw_uid, group=other.pw_gid, cwd="/",
                              start_new_session=True)
    a.seen.add(theirs.pid)
    try:
        assert wait_for(lambda: name in " ".join(psutil.Process(theirs.pid).cmdline()))
        r = a.run("sr_subscribe", "stop", name)          # no pid file names it
        assert "stopped 0 instance(s)" in r.stdout, r.stdout
        a.state_dir(name).mkdir(parents=True, exist_ok=True)
        a.pid_path(name, 1).write_text(f"{theirs.pid}\n")   # a pid file naming it
        r = a.run("sr_subscribe", "status", name)
        assert "stopped (0/" in r.stdout, r.stdout
        a.run("sr", "stop")
        time.sleep(0.3)
        assert theirs.poll() is None, "root's stop killed another user's process"
    finally:
        os.killpg(theirs.pid, signal.SIGKILL)          # sh and its sleep
        theirs.wait()


@pytest.fixture
def broker_user(broker_url, uid):
    """A broker user of its own, with a password nobody's credentials.conf holds."""
    requests = pytest.importorskip("requests")
    host, port, user, password, _ = parse_broker_url(broker_url)
    api = os.environ.get("SARRA_TEST_MGMT", f"http://{host}:15672/").rstrip("/") + "/api"
    name, secret = f"hs{uid}", f"Secr3t-{uid}"
    r = requests.put(f"{api}/users/{name}", auth=(user, password), timeout=10,
                     json={"password": secret, "tags": ""})
    assert r.status_code in (201, 204), r.text
    r = requests.put(f"{api}/permissions/%2F/{name}", auth=(user, password), timeout=10,
                     json={"configure": ".*", "write": ".*", "read": ".*"})
    assert r.status_code in (201, 204), r.text
    yield name, secret, f"amqp://{name}:{urllib.parse.quote(secret)}@{host}:{port}/"
    requests.delete(f"{api}/users/{name}", auth=(user, password), timeout=10)


def _cmdlines_with(text):
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if text in cmd:
            found.append((p.info["pid"], cmd))
    return found


def test_password_given_at_start_reaches_no_command_line(homes, uid, broker_user,
                                                          amqp_channel):
    a, _, exchange = homes
    user, secret, url = broker_user
    name, queue = f"hs_{uid}", f"q_{user}.hs_{uid}.pw"
    a.add(name, exchange, queue, user=user)       # its password: only on the command line

    def consumers():
        try:
            return amqp_channel.queue_declare(queue, passive=True)[2]
        except Exception:
            return -1

    r = a.run("sr_subscribe", "--broker", url, "start", name)
    assert "started 2 instance(s)" in r.stdout, r.stdout + r.stderr
    pids = a.running(name)
    assert _cmdlines_with(secret) == []
    cmd = " ".join(psutil.Process(pids[0]).cmdline())
    assert f"--broker=amqp://{user}@" in cmd, cmd       # the URL is there, without it
    # the instances did connect with that password (no credentials.conf line has it)
    assert wait_for(lambda: consumers() == 2, timeout=20), consumers()
    opts = a.state_dir(name) / f"sr_{COMP}_{name}.options"
    assert oct(opts.stat().st_mode & 0o777) == "0o600"

    # an instance started again later (sanity, from the recorded options): the same
    psutil.Process(pids[0]).kill()
    assert wait_for(lambda: len(a.pids(name)) == 1)
    a.run("sr_subscribe", "sanity", name)
    again = a.running(name)
    assert pids[0] not in again
    assert _cmdlines_with(secret) == []
    assert wait_for(lambda: consumers() == 2, timeout=20), consumers()
    a.run("sr_subscribe", "stop", name)
    assert not any(alive(p) for p in again)
