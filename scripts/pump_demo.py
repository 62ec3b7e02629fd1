#!/usr/bin/env python3
"""The README's main job: a local multi-user pump, end to end on this machine.

* sr_police sets up a fresh vhost (created and deleted here): sources alice and bob,
  subscriber carol, the feeder, and the report-routing shovels (report_daemons on);
* alice's files are served by her own HTTP server; she announces them with sr_post on xs_alice;
* the pump's sr_sarra (feeder) copies them into <pump>/<YYYYMMDD>/<source>/ and re-announces
  them on xpublic with the pump's HTTP server as base URL;
* carol's sr_subscribe downloads them from the pump;
* the rr_* shovels route the delivery reports to xr_alice; alice prints hers, one line each;
  bob's xr_bob gets none.

Bytes and checksums are compared; exit 0 only if all is good. Everything lives under a
temporary directory (HOME included); processes are stopped by PID; the vhost and the users are
deleted. The Pump class is reused by tests/integration/test_pump.py and bench/pump.py.
"""

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from urllib.parse import unquote, urlparse

import amqp
import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.integration import servers  # noqa: E402

BROKER = os.environ.get("SARRA_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672/")
COMMANDS = {"sr_post": "post", "sr_subscribe": "subscribe", "sr_sarra": "sarra",
            "sr_shovel": "shovel", "sr_report": "report", "sr_log": "report",
            "sr_police": "audit"}


def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Pump:
    """One pump in its own vhost, with its users, trees, HTTP servers and processes."""

    def __init__(self, top=None, broker=BROKER, tag=None, mgmt=None):
        u = urlparse(broker)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 5672
        self.admin, self.admin_pw = unquote(u.username or "guest"), unquote(u.password or "guest")
        self.netloc = "%s:%d" % (self.host, self.port)
        self.mgmt = mgmt or os.environ.get("SARRA_TEST_MGMT", "http://%s:15672/" % self.host)
        self.tag = tag or secrets.token_hex(4)
        self.vhost = "sarra_pump_%s" % self.tag
        self.users = {r: "%s%s" % (r, self.tag) for r in ("alice", "bob", "carol", "feeder")}
        self.pw = {u: secrets.token_hex(8) for u in self.users.values()}
        self.own_top = top is None
        self.top = top or tempfile.mkdtemp(prefix="sarra-pump-")
        self.home = os.path.join(self.top, "home")
        self.logs = os.path.join(self.top, "logs")
        self.src = {r: os.path.join(self.top, "src_" + r) for r in ("alice", "bob")}
        self.tree = os.path.join(self.top, "pump")
        self.dst = os.path.join(self.top, "carol")
        for d in (self.home, self.logs, self.tree, self.dst, *self.src.values()):
            os.makedirs(d, exist_ok=True)
        self.env = dict(os.environ, HOME=self.home,
                        XDG_CONFIG_HOME=os.path.join(self.home, ".config"),
                        XDG_CACHE_HOME=os.path.join(self.home, ".cache"),
                        XDG_DATA_HOME=os.path.join(self.home, ".local", "share"),
                        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        PYTHONUNBUFFERED="1")
        self.cfgdir = os.path.join(self.home, ".config", "sarra")
        self.procs = {}
        self.http = {}
        self.session = requests.Session()
        self.session.auth = (self.admin, self.admin_pw)
        self.api = self.mgmt + "api/"

    # ------------------------------------------------------------------ helpers
    def url(self, role, password=True):
        user = self.users[role]
        cred = "%s:%s" % (user, self.pw[user]) if password else user
        return "amqp://%s@%s/%s" % (cred, self.netloc, self.vhost)

    def write(self, rel, text, mode=0o644):
        path = os.path.join(self.cfgdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def argv(self, name, *args):
        code = ("import sys; sys.argv[0] = %r; from sarra.commands.%s import main; "
                "sys.exit(main())" % (name, COMMANDS[name]))
        return [sys.executable, "-c", code] + [str(a) for a in args]

    def run(self, name, *args, timeout=120, input=None):
        return subprocess.run(self.argv(name, *args), capture_output=True, text=True,
                              env=self.env, cwd=self.home, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def start(self, key, name, *args, stdout=None):
        log = open(os.path.join(self.logs, key + ".log"), "ab")
        p = subprocess.Popen(self.argv(name, *args), env=self.env, cwd=self.home,
                             stdin=subprocess.DEVNULL, stdout=stdout or log, stderr=log,
                             start_new_session=True)
        self.procs[key] = p
        return p

    def stop(self, key, sig=signal.SIGTERM, timeout=10):
        p = self.procs.pop(key, None)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout)

    def log_tail(self, lines=15):
        out = []
        for f in sorted(os.listdir(self.logs)):
            with open(os.path.join(self.logs, f), errors="replace") as fh:
                tail = fh.read().splitlines()[-lines:]
            out.append("--- %s\n%s" % (f, "\n".join(tail)))
        logdir = os.path.join(self.home, ".cache", "sarra", "log")
        if os.path.isdir(logdir):
            for f in sorted(os.listdir(logdir)):
                with open(os.path.join(logdir, f), errors="replace") as fh:
                    tail = fh.read().splitlines()[-lines:]
                out.append("--- %s\n%s" % (f, "\n".join(tail)))
        return "\n".join(out)

    # ------------------------------------------------------------------ set-up
    def setup(self):
        """sr_police setup in a fresh vhost; returns its output."""
        u = self.users
        self.write("admin.conf", "admin amqp://%s@%s/%s\nfeeder amqp://%s@%s/%s\n"
                   "declare source %s %s\ndeclare subscriber %s\n" % (
                       self.admin, self.netloc, self.vhost, u["feeder"], self.netloc,
                       self.vhost, u["alice"], u["bob"], u["carol"]))
        self.write("audit.conf", "management_url %s\nreport_daemons on\n" % self.mgmt)
        pw = dict(self.pw)
        pw[self.admin] = self.admin_pw
        self.write("credentials.conf", "".join(
            "amqp://%s:%s@%s/%s\n" % (n, p, self.netloc, self.vhost) for n, p in pw.items()),
            0o600)
        r = self.run("sr_police", "setup", timeout=60)
        if r.returncode != 0:
            raise RuntimeError("sr_police setup exited %d: %s" % (r.returncode,
                                                                   r.stdout + r.stderr))
        return r.stdout

    def start_http(self):
        for name, root in (("pump", self.tree), ("alice", self.src["alice"]),
                           ("bob", self.src["bob"])):
            self.http[name] = servers.start_http(root, self.logs if name == "pump" else
                                                 os.path.join(self.logs, ".."))
        return self.http

    def http_url(self, name):
        s = self.http[name]
        return "http://%s:%d/" % (s.host, s.port)

    def configure(self, sarra_extra="", subscribe_extra="", instances=1):
        u = self.users
        for role in ("alice", "bob"):
            self.write("post/%s.conf" % role,
                       "post_broker amqp://%s@%s/%s\npost_base_url %s\npost_base_dir %s\n"
                       "declare_exchange off\n" % (u[role], self.netloc, self.vhost,
                                                   self.http_url(role), self.src[role]))
        self.write("sarra/ingest.conf",
                   "broker amqp://%s@%s/%s\nsource_from_exchange on\n"
                   "exchange xs_%s\nsubtopic #\nexchange xs_%s\nsubtopic #\n"
                   "post_broker amqp://%s@%s/%s\npost_exchange xpublic\n"
                   "post_base_dir %s\npost_base_url %s\nmirror on\n"
                   "directory %s/${YYYYMMDD}/${SOURCE}\nreport_back on\ninstances %d\n"
                   "accept .*\n%s" % (
                       u["feeder"], self.netloc, self.vhost, u["alice"], u["bob"],
                       u["feeder"], self.netloc, self.vhost, self.tree,
                       self.http_url("pump"), self.tree, instances, sarra_extra))
        self.write("subscribe/feed.conf",
                   "broker amqp://%s@%s/%s\nexchange xpublic\nsubtopic #\ndirectory %s\n"
                   "mirror on\nreport_back on\naccept .*\n%s" % (
                       u["carol"], self.netloc, self.vhost, self.dst, subscribe_extra))

    def rr_shovels(self):
        d = os.path.join(self.cfgdir, "shovel")
        return sorted(f[:-5] for f in os.listdir(d) if f.startswith("rr_") and
                      f.endswith(".conf")) if os.path.isdir(d) else []

    def start_pump(self, sarra=True, subscriber=True):
        for name in self.rr_shovels():
            self.start(name, "sr_shovel", "foreground", name)
        if sarra:
            self.start("sarra", "sr_sarra", "foreground", "ingest")
        if subscriber:
            self.start("subscribe", "sr_subscribe", "foreground", "feed")

    def queues(self):
        r = self.session.get(self.api + "queues/" + requests.utils.quote(self.vhost, safe=""))
        return r.json() if r.ok else []

    def wait_consumers(self, prefixes, timeout=30):
        """Wait until a queue starting with each prefix has a consumer."""
        deadline = time.monotonic() + timeout
        while True:
            qs = self.queues()
            missing = [p for p in prefixes
                       if not any(q["name"].startswith(p) and q.get("consumers") for q in qs)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("no consumer on %s after %d s\n%s" % (
                    missing, timeout, self.log_tail()))
            time.sleep(0.3)

    def standard_consumers(self):
        f = self.users["feeder"]
        return (["q_%s.sr_shovel.%s." % (f, n) for n in self.rr_shovels()]
                + ["q_%s.sr_sarra.ingest." % f, "q_%s.sr_subscribe.feed." % self.users["carol"]])

    def report_tap(self, role):
        """A queue of role's own bound to its xr_<user> (created now, before the flow)."""
        return ReportTap(self, role)

    # ------------------------------------------------------------------ data
    def make_files(self, role, n, size=1024, sub="data"):
        files = {}
        d = os.path.join(self.src[role], sub)
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            rel = "%s/f%05d.bin" % (sub, i)
            data = os.urandom(size)
            with open(os.path.join(self.src[role], rel), "wb") as f:
                f.write(data)
            files[rel] = hashlib.md5(data).hexdigest()
        return files

    def post(self, role, paths, *extra):
        return self.run("sr_post", "-c", role, *extra, *paths, timeout=600)

    def arrived(self, files):
        """{rel: md5} of those files present at carol's and complete."""
        got = {}
        for rel in files:
            p = os.path.join(self.dst, rel)
            if os.path.exists(p):
                got[rel] = md5(p)
        return got

    def wait_files(self, files, timeout):
        deadline = time.monotonic() + timeout
        while True:
            present = [rel for rel in files if os.path.exists(os.path.join(self.dst, rel))]
            if len(present) == len(files) or time.monotonic() > deadline:
                return len(present)
            time.sleep(0.2)

    def pump_files(self):
        out = []
        for dirpath, _, names in os.walk(self.tree):
            out += [os.path.relpath(os.path.join(dirpath, n), self.tree) for n in names]
        return out

    # ------------------------------------------------------------------ tear-down
    def close(self):
        for key in list(self.procs):
            self.stop(key)
        for s in self.http.values():
            s.stop()
        self.http = {}
        for user in self.users.values():
            self.session.delete(self.api + "users/" + user)
        self.session.delete(self.api + "vhosts/" + requests.utils.quote(self.vhost, safe=""))
        if self.own_top:
            shutil.rmtree(self.top, ignore_errors=True)


class ReportTap:
    """Reads a user's report exchange xr_<user> as that user, through a queue of its own."""

    def __init__(self, pump, role):
        user = pump.users[role]
        self.conn = amqp.Connection(host=pump.netloc, userid=user, password=pump.pw[user],
                                    virtual_host=pump.vhost, connect_timeout=10)
        self.conn.connect()
        self.ch = self.conn.channel()
        self.queue = "q_%s.tap.%s" % (user, secrets.token_hex(3))
        self.ch.queue_declare(self.queue, durable=False, auto_delete=False,
                              arguments={"x-expires": 600000})
        self.ch.queue_bind(self.queue, "xr_" + user, "#")
        self.messages = []

    def poll(self):
        while True:
            m = self.ch.basic_get(self.queue, no_ack=True)
            if m is None:
                return self.messages
            body = m.body.decode() if isinstance(m.body, bytes) else m.body
            headers = dict(m.properties.get("application_headers") or {})
            self.messages.append((m.delivery_info["routing_key"], body, headers))

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while not pred(self.poll()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.messages

    def close(self):
        try:
            self.ch.queue_delete(self.queue)
            self.conn.close()
        except Exception:
            pass


def report_line(body, headers):
    """One line: when, who, code message, duration, URL (body: time base rel code host user dur)."""
    f = body.split()
    if len(f) < 7:
        return body
    return "%s  %s@%s  %s %s  %ss  %s/%s" % (f[0], f[5], f[4], f[3], headers.get("message", ""),
                                             f[6], f[1].rstrip("/"), f[2].lstrip("/"))


def main():
    t0 = time.monotonic()
    pump = Pump()
    ok = False
    try:
        print("pump: vhost %s, users %s" % (pump.vhost, ", ".join(pump.users.values())))
        out = pump.setup()
        print("sr_police setup: %d change(s)" % sum(1 for l in out.splitlines() if "->" in l))
        pump.start_http()
        pump.configure()
        alice_tap, bob_tap = pump.report_tap("alice"), pump.report_tap("bob")
        pump.start_pump()
        pump.wait_consumers(pump.standard_consumers())
        files = {}
        for rel, data in (("obs/station #3/report 1.txt", b"temperature 21.5\n" * 10),
                          ("obs/été/日本.txt", "données météo\n".encode() * 100),
                          ("model/big.bin", os.urandom(3 << 20))):
            p = os.path.join(pump.src["alice"], rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
            files[rel] = hashlib.md5(data).hexdigest()
        r = pump.post("alice", [os.path.join(pump.src["alice"], rel) for rel in files])
        if r.returncode != 0:
            raise RuntimeError("sr_post exited %d: %s" % (r.returncode, r.stderr))
        print("alice posted %d file(s) on xs_%s" % (len(files), pump.users["alice"]))
        day = time.strftime("%Y%m%d", time.gmtime())
        want = {os.path.join(day, pump.users["alice"], rel): s for rel, s in files.items()}
        n = pump.wait_files(want, 30)
        # complete? compare checksums (a file may still be written: re-check a little)
        deadline = time.monotonic() + 10
        got = pump.arrived(want)
        while got != want and time.monotonic() < deadline:
            time.sleep(0.3)
            got = pump.arrived(want)
        print("carol has %d/%d file(s); intact: %d" % (
            n, len(want), sum(1 for k in want if got.get(k) == want[k])))
        # sr_sarra's and carol's reports: 2 per file
        reports = alice_tap.wait(lambda m: len(m) >= 2 * len(files), 20)
        time.sleep(1)
        reports = alice_tap.poll()
        print("alice's reports on xr_%s:" % pump.users["alice"])
        for _, body, headers in reports:
            print("  " + report_line(body, headers))
        bob = bob_tap.poll()
        print("bob's xr_%s had %d report(s)" % (pump.users["bob"], len(bob)))
        by_carol = [b for _, b, _ in reports if b.split()[3:4] == ["201"]
                    and b.split()[5:6] == [pump.users["carol"]]]
        ok = (got == want and len(by_carol) == len(files) and not bob)
        if not ok:
            print(pump.log_tail(), file=sys.stderr)
        alice_tap.close()
        bob_tap.close()
    except Exception as e:
        print("pump demo failed: %s" % e, file=sys.stderr)
        print(pump.log_tail(), file=sys.stderr)
    finally:
        pump.close()
    print("%s in %.1f s" % ("OK" if ok else "FAILED", time.monotonic() - t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
