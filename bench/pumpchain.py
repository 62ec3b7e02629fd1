#!/usr/bin/env python3
"""The pump as a chain, as an operator runs it, and its CPU cost per file: sarra beside MetPX v2.

    bench/pumpchain.py [--files 2000] [--size 1024] [--runs 3] [--no-v2] [--light 100]
                       [--sources 2]

Each system gets a fresh pump (scripts/pump_demo.Pump: its own vhost made by `sr_police setup`,
report_daemons on, so the rr_* report-routing shovels run as in the admin guide), alice's and the
pump's HTTP servers, one sr_sarra (reports on) and carol's sr_subscribe behind it (reports on).
v2 runs the same configurations with its own sr_sarra, sr_subscribe and sr_shovel (from a venv of
the bench's own, see bench/v2env.py), in a second vhost; both are posted by sarra's sr_post.
Runs alternate sarra, v2, sarra, v2... Each run has two phases:

* chain: everything running, alice posts FILES files; files/s = FILES / (last file on carol's
  disk - first pubtime); done when every file arrived and every report (one from sr_sarra and
  one from the subscriber per file) reached alice's xr_ exchange and the queues are empty.
  CPU seconds per 1,000 files of each process (user + system, psutil, sampled before the post
  and after that point): sr_sarra, the subscriber, each shovel, the two HTTP servers and the
  broker (beam.smp: it is shared, so its idle rate measured just before is subtracted).
* alone: every stage stopped, FILES more files posted; then each stage is started alone on
  its pre-filled input queue: sr_sarra (rate from its first to last file written), then the
  subscriber, then the shovels together (the report routing as one stage: FILES files' reports
  until all reached xr_alice). The slowest of the three is the chain's limit.

Then a light-load phase on each pump: LIGHT files posted one sr_post call each ~0.1 s apart,
latency = ctime on carol's disk - pubtime (p50, p99); and every daemon's peak RSS (VmHWM).
--sources N declares N sources (alice, bob and N-2 more; only alice posts): each gets the
report routing sr_police gives a source, so that its cost per source shows.
Prints the load average (the machine may be shared: CPU seconds are robust to that, wall-clock
rates are not), each run, then the medians. --figures FILE appends the medians there.
Goals (issue 20): chain >= 3x v2's files/s and >= 70 % of the slowest stage alone; light-load
p99 < 100 ms; every daemon < 40 MB RSS.
"""

import argparse
import calendar
import os
import shutil
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository on sys.path)
import v2env  # noqa: E402

import amqp  # noqa: E402
import psutil  # noqa: E402

from scripts.pump_demo import Pump  # noqa: E402
from sarra.ops.reportroute import ROUTE  # noqa: E402

RSS_LIMIT = 40_000_000


# ------------------------------------------------------------------ pure helpers (unit-tested)

def percentile(values, p):
    """Nearest-rank percentile of values (p in 0..100); nan when empty."""
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))]


def pubtime_epoch(stamp):
    """Epoch seconds of a v02 pubtime (YYYYMMDDHHMMSS[.frac], UTC)."""
    t = calendar.timegm(time.strptime(stamp[:14], "%Y%m%d%H%M%S"))
    return t + (float("0" + stamp[14:]) if len(stamp) > 14 else 0.0)


def per_thousand(before, after, files, idle=None, seconds=0.0):
    """{name: CPU seconds per 1,000 files} from two {name: cpu seconds} samples.

    idle: {name: cpu seconds per second} subtracted over `seconds` (the broker is shared).
    Names missing from `after` (a process that died) are left out."""
    out = {}
    for name, a in after.items():
        if name not in before or files <= 0:
            continue
        used = a - before[name] - (idle or {}).get(name, 0.0) * seconds
        out[name] = max(0.0, used) * 1000.0 / files
    return out


def medians(rows):
    """{key: median} over a list of {key: number} dicts (keys missing in some rows allowed)."""
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return {k: statistics.median([r[k] for r in rows if k in r]) for k in keys}


def stage_of(name):
    """The process group a process name belongs to, for the summary (rr_* -> shovels)."""
    return "shovels" if name.startswith("rr_") else name


def load_line():
    one, five, fifteen = os.getloadavg()
    return "load average %.2f %.2f %.2f on %d cores" % (one, five, fifteen, os.cpu_count())


# ------------------------------------------------------------------ processes

def tree_cpu(pid):
    """user+system CPU seconds of a process and its live descendants (None if gone)."""
    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.Error:
        return None
    total = 0.0
    for q in procs:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def tree_hwm(pid):
    """Largest VmHWM of a process and its descendants, bytes."""
    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.Error:
        return None
    peaks = [common.vm_hwm(q.pid) for q in procs]
    peaks = [x for x in peaks if x]
    return max(peaks) if peaks else None


def broker_pid(port):
    """The process listening on the broker's port (other RabbitMQ nodes may run too)."""
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return c.pid
    return None


def code_line():
    """Which sarra was measured: the commit, and whether the tree had changes."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(common.REPO)] + list(args),
                              capture_output=True, text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no", "sarra")
    return "sarra at %s%s" % (git("rev-parse", "--short", "HEAD") or "?",
                              " + uncommitted changes" if dirty else "")


# ------------------------------------------------------------------ one system's pump

def _route_sources(text):
    """The sources named by the routing shovel's msg_by_source line."""
    for ln in text.splitlines():
        if ln.startswith("msg_by_source "):
            return [x for x in ln.split(None, 1)[1].split(",") if x]
    return []


def add_sources(pump, n):
    """n more sources on the pump beside alice and bob (they post nothing; each gets the
    report routing sr_police gives a source): sr_police setup again."""
    if n <= 0:
        return
    names = ["src%02d%s" % (i, pump.tag) for i in range(n)]
    for name in names:
        pump.users["src%02d" % names.index(name)] = name
        pump.pw[name] = os.urandom(8).hex()
    with open(os.path.join(pump.cfgdir, "admin.conf"), "a") as f:
        f.write("declare source %s\n" % " ".join(names))
    with open(os.path.join(pump.cfgdir, "credentials.conf"), "a") as f:
        f.write("".join("amqp://%s:%s@%s/%s\n" % (u, pump.pw[u], pump.netloc, pump.vhost)
                        for u in names))
    r = pump.run("sr_police", "setup", timeout=60)
    if r.returncode != 0:
        raise RuntimeError("sr_police setup exited %d: %s" % (r.returncode, r.stdout + r.stderr))


class System:
    """A pump (own vhost) run by sarra's daemons or by v2's."""

    def __init__(self, label, v2=None, sources=2):
        self.label, self.v2 = label, v2
        self.pump = Pump()
        if v2 is not None:      # v2 takes a broker URL's whole path as the vhost: '/...'
            self.pump.vhost = "/" + self.pump.vhost
        self.pump.setup()
        add_sources(self.pump, sources - 2)
        self.pump.start_http()
        self.pump.configure()
        self.shovels = self.pump.rr_shovels()
        self.v2home = None
        if v2 is not None:
            self._v2_configs()
        self.conn = None
        self.connect()
        self.beam = broker_pid(self.pump.port)
        self.queues = {}
        self.rss = {}

    def connect(self):
        """(Re)connect as admin; taps (exclusive): alice's posts (first pubtime) and her
        reports (count)."""
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - it is gone already
                pass
        self.conn = amqp.Connection(host=self.pump.netloc, userid=self.pump.admin,
                                    password=self.pump.admin_pw, virtual_host=self.pump.vhost)
        self.conn.connect()
        self.ch = self.conn.channel()
        self.post_tap = self._tap("xs_" + self.pump.users["alice"])
        self.report_tap = self._tap("xr_" + self.pump.users["alice"])

    def _tap(self, exchange):
        q, _, _ = self.ch.queue_declare("", exclusive=True, auto_delete=True)
        self.ch.queue_bind(q, exchange, "#")
        return q

    def _v2_configs(self):
        """The same pump for v2: its own HOME with v2 configurations of the same daemons."""
        p, u = self.pump, self.pump.users
        self.v2home = os.path.join(p.top, "v2home")
        cfg = os.path.join(self.v2home, ".config", "sarra")
        for sub in ("sarra", "subscribe", "shovel"):
            os.makedirs(os.path.join(cfg, sub), exist_ok=True)
        ours, theirs = "%s/%s" % (p.netloc, p.vhost), p.netloc + p.vhost
        v2_shovels = [n for n in self.shovels if n != ROUTE]
        for rel in ["credentials.conf", "admin.conf"] + ["shovel/%s.conf" % name
                                                         for name in self.shovels]:
            with open(os.path.join(p.cfgdir, rel)) as f:
                text = f.read().replace(ours, theirs)
            if rel == "shovel/%s.conf" % ROUTE:
                # v2 knows no post_exchange_by_source: it routes as its sr_audit does, one
                # rr_xreport2<source> shovel per source, each reading every report
                for src in _route_sources(text):
                    name = "rr_xreport2" + src
                    v2_shovels.append(name)
                    one = "".join(
                        "post_exchange xr_%s\n" % src if ln.startswith("post_exchange xr_") else
                        "msg_by_source %s\n" % src if ln.startswith("msg_by_source ") else ln
                        for ln in text.splitlines(True)
                        if not ln.startswith(("post_exchange_by_source", "on_post None")))
                    with open(os.path.join(cfg, "shovel", name + ".conf"), "w") as f:
                        f.write(one)
                continue
            # v2's msg_by_user plugin stops its shovel (KeyError 'user') on these reports:
            # v2's rr_<user>2xreport shovels run without that filter
            text = "".join(ln for ln in text.splitlines(True)
                           if not ln.startswith(("on_message msg_by_user", "msg_by_user", "on_post None")))
            with open(os.path.join(cfg, rel), "w") as f:
                f.write(text)
            os.chmod(os.path.join(cfg, rel), 0o600)
        with open(os.path.join(cfg, "default.conf"), "w") as f:
            f.write("report_daemons True\n")       # v2 skips rr_* shovels otherwise
        self.shovels = sorted(v2_shovels)
        b = "amqp://%%s@%s" % theirs
        with open(os.path.join(cfg, "sarra", "ingest.conf"), "w") as f:
            f.write("broker %s\nexchange xs_%s\nsubtopic #\nsource_from_exchange on\n"
                    "post_broker %s\npost_exchange xpublic\npost_base_dir %s\n"
                    "post_base_url %s\nreport_back on\nreport_exchange xreport\nmirror on\n"
                    "directory %s/${YYYYMMDD}/${SOURCE}\naccept .*\n" % (
                        b % u["feeder"], u["alice"], b % u["feeder"], p.tree,
                        p.http_url("pump"), p.tree))
        with open(os.path.join(cfg, "subscribe", "feed.conf"), "w") as f:
            f.write("broker %s\nexchange xpublic\nsubtopic #\nreport_back on\n"
                    "report_exchange xs_%s\nmirror on\ndirectory %s\naccept .*\n" % (
                        b % u["carol"], u["carol"], p.dst))
        self.v2env = dict(p.env, HOME=self.v2home,
                          XDG_CONFIG_HOME=os.path.join(self.v2home, ".config"),
                          XDG_CACHE_HOME=os.path.join(self.v2home, ".cache"),
                          PYTHONPATH="")

    # -- daemons
    def start(self, key):
        """Start one daemon: 'sarra', 'subscribe' or a shovel name."""
        p = self.pump
        program, conf = {"sarra": ("sr_sarra", "ingest"),
                         "subscribe": ("sr_subscribe", "feed")}.get(key, ("sr_shovel", key))
        if self.v2 is None:
            p.start(key, program, "foreground", conf)
            return
        import subprocess
        log = open(os.path.join(p.logs, "v2_" + key + ".log"), "ab")
        p.procs[key] = subprocess.Popen([self.v2.cmd(program), "foreground", conf],
                                        env=self.v2env, cwd=self.v2home,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)

    def short(self, key):
        """A daemon's name without the pump's random tag (rr_alice2xreport)."""
        return key.replace(self.pump.tag, "")

    def daemons(self):
        return ["sarra", "subscribe"] + self.shovels

    def start_all(self, keys=None):
        for k in keys or self.daemons():
            if k not in self.pump.procs:
                self.start(k)

    def stop(self, keys):
        for k in keys:
            self.note_rss(k)
            self.pump.stop(k)

    def note_rss(self, key):
        proc = self.pump.procs.get(key)
        if proc is not None:
            h = tree_hwm(proc.pid)
            if h:
                self.rss[self.short(key)] = max(h, self.rss.get(self.short(key), 0))

    def find_queues(self, timeout=60):
        """Queue names of sarra, subscriber and shovels (once their consumers appeared)."""
        f, c = self.pump.users["feeder"], self.pump.users["carol"]
        # no trailing dot: v2's sr_sarra queue has no random suffix
        prefixes = {"sarra": "q_%s.sr_sarra.ingest" % f,
                    "subscribe": "q_%s.sr_subscribe.feed" % c}
        prefixes.update({n: "q_%s.sr_shovel.%s" % (f, n) for n in self.shovels})
        # queues, not consumers: v2 polls its queue with basic_get
        deadline = time.monotonic() + timeout
        while True:
            try:
                qs = [q["name"] for q in self.pump.queues()]
            except OSError:             # the management API restarts now and then
                qs = []
            for key, pre in prefixes.items():
                self.queues[key] = [q for q in qs if q.startswith(pre)]
            if all(self.queues.values()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("%s: no queue for %s\n%s" % (self.label, [
                    k for k, v in self.queues.items() if not v], self.pump.log_tail(5)))
            time.sleep(0.3)

    def depth(self, key):
        """(messages ready, consumers) of a daemon's queue(s)."""
        ready = consumers = 0
        for q in self.queues[key]:
            _, n, c = self.ch.queue_declare(q, passive=True)
            ready, consumers = ready + n, consumers + c
        return ready, consumers

    def tap_count(self, q):
        return self.ch.queue_declare(q, passive=True)[1]

    def cpu(self, keys):
        out = {}
        for k in keys:
            proc = self.pump.procs.get(k)
            v = tree_cpu(proc.pid) if proc is not None else None
            if v is not None:
                out[self.short(k)] = v
        for name, s in self.pump.http.items():
            v = tree_cpu(s.pid)
            if v is not None:
                out["http_" + name] = v
        if self.beam:
            v = tree_cpu(self.beam)
            if v is not None:
                out["broker"] = v
        return out

    def broker_idle(self, seconds=1.0):
        a = tree_cpu(self.beam) if self.beam else None
        time.sleep(seconds)
        b = tree_cpu(self.beam) if self.beam else None
        return {"broker": (b - a) / seconds} if a is not None and b is not None else {}

    # -- data
    def post(self, sub, n, size):
        files = self.pump.make_files("alice", n, size, sub=sub)
        self.ch.queue_purge(self.post_tap)
        r = self.pump.post("alice", [os.path.join(self.pump.src["alice"], sub)])
        if r.returncode != 0:
            raise RuntimeError("sr_post exited %d: %s" % (r.returncode, r.stderr[-500:]))
        m = self.ch.basic_get(self.post_tap, no_ack=True)
        first = pubtime_epoch((m.body.decode() if isinstance(m.body, bytes) else m.body)
                              .split()[0]) if m else time.time()
        self.ch.queue_purge(self.post_tap)
        return files, first

    def rels(self, files):
        day = time.strftime("%Y%m%d", time.gmtime())
        return [os.path.join(day, self.pump.users["alice"], rel) for rel in files]

    def ctimes(self, root, rels):
        out = []
        for rel in rels:
            try:
                out.append(os.stat(os.path.join(root, rel)).st_ctime)
            except OSError:
                pass
        return out

    def wait(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise RuntimeError("%s: %s not reached in %d s\n%s" % (
                    self.label, what, timeout, self.pump.log_tail(5)))
            time.sleep(0.05)

    def all_there(self, root, rels):
        return lambda: all(os.path.exists(os.path.join(root, r)) for r in rels)

    def quiet(self, keys):
        return all(self.depth(k)[0] == 0 for k in keys)

    def close(self):
        for k in list(self.pump.procs):
            self.note_rss(k)
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - best effort
            pass
        for _ in range(30):     # processes first, then vhost and users (management API)
            try:
                self.pump.close()
                return
            except OSError as e:
                print("%s: cleaning up: %s; retrying" % (self.label, str(e)[:80]))
                time.sleep(2)


# ------------------------------------------------------------------ phases

def chain_phase(s, tag, n, size, timeout):
    s.ch.queue_purge(s.report_tap)
    idle = s.broker_idle()
    before = s.cpu(s.daemons())
    t0 = time.monotonic()
    files, first = s.post(tag, n, size)
    rels = s.rels(files)
    s.wait(s.all_there(s.pump.dst, rels), timeout, "all files at the subscriber")
    s.wait(lambda: s.tap_count(s.report_tap) >= 2 * n, timeout, "2 reports per file")
    s.wait(lambda: s.quiet(s.daemons()), timeout, "empty queues")
    time.sleep(0.2)
    after = s.cpu(s.daemons())
    seconds = time.monotonic() - t0
    last = max(s.ctimes(s.pump.dst, rels))
    for k in s.daemons():
        s.note_rss(k)
    return n / (last - first), per_thousand(before, after, n, idle, seconds)


def alone_phase(s, tag, n, size, timeout):
    """Rates (files/s) and CPU per 1,000 files of each stage alone on a pre-filled queue."""
    s.stop(s.daemons())
    files, _ = s.post(tag, n, size)
    rels = s.rels(files)
    s.ch.queue_purge(s.report_tap)
    s.wait(lambda: s.depth("sarra")[0] >= n, 60, "sarra's queue filled")
    rates, cpu = {}, {}

    def run(keys, done, rate_of):
        initial = {k: s.depth(k)[0] for k in keys}
        s.start_all(keys)
        t_cons = None
        deadline = time.monotonic() + 60
        while t_cons is None:        # start-up done (a consumer, or v2's first basic_get)
            d = {k: s.depth(k) for k in keys}
            if all(c for _, c in d.values()) or any(d[k][0] < initial[k] for k in keys):
                t_cons = time.time()
            elif time.monotonic() > deadline:
                raise RuntimeError("%s: no consumer from %s\n%s" % (s.label, keys,
                                                                   s.pump.log_tail(5)))
            else:
                time.sleep(0.01)
        before = s.cpu(keys)
        s.wait(done, timeout, "%s alone done" % "+".join(keys))
        time.sleep(0.2)
        after = s.cpu(keys)
        cpu.update({k: v for k, v in per_thousand(before, after, n).items() if k in [s.short(x) for x in keys]})
        rate = rate_of(t_cons)
        s.stop(keys)
        return rate

    def from_ctimes(root):
        def rate(_):
            c = s.ctimes(root, rels)
            return (len(c) - 1) / (max(c) - min(c)) if len(c) > 1 and max(c) > min(c) else 0
        return rate

    rates["sarra"] = run(["sarra"], lambda: s.all_there(s.pump.tree, rels)()
                         and s.depth("sarra")[0] == 0 and s.depth("subscribe")[0] >= n,
                         from_ctimes(s.pump.tree))
    rates["subscribe"] = run(["subscribe"], lambda: s.all_there(s.pump.dst, rels)()
                             and s.depth("subscribe")[0] == 0, from_ctimes(s.pump.dst))
    t_end = {}

    def reports_done():
        if s.tap_count(s.report_tap) >= 2 * n and s.quiet(s.shovels):
            t_end.setdefault("t", time.time())
            return True
        return False

    rates["shovels"] = run(s.shovels, reports_done, lambda t0: n / (t_end["t"] - t0))
    s.start_all()               # queue names are kept: no management API call here
    return rates, cpu


def light_phase(s, tag, n, size, timeout, gap=0.1):
    """Latency post -> file on carol's disk of files posted one by one, gap s apart."""
    files = s.pump.make_files("alice", n, size, sub=tag)
    s.ch.queue_purge(s.post_tap)
    for rel in sorted(files):
        t = time.monotonic()
        s.pump.post("alice", [os.path.join(s.pump.src["alice"], rel)])
        time.sleep(max(0.0, gap - (time.monotonic() - t)))
    rels = s.rels(files)
    s.wait(s.all_there(s.pump.dst, rels), timeout, "light-load files")
    pub = {}
    while True:
        m = s.ch.basic_get(s.post_tap, no_ack=True)
        if m is None:
            break
        f = (m.body.decode() if isinstance(m.body, bytes) else m.body).split()
        pub[f[2].lstrip("/")] = pubtime_epoch(f[0])
    day = time.strftime("%Y%m%d", time.gmtime())
    lat = []
    for rel in files:
        p = os.path.join(s.pump.dst, day, s.pump.users["alice"], rel)
        if rel in pub and os.path.exists(p):
            lat.append(os.stat(p).st_ctime - pub[rel])
    return lat


# ------------------------------------------------------------------ report

def fmt_cpu(cpu):
    keys = sorted(cpu, key=lambda k: (k.startswith("rr_"), k.startswith("http"), k))
    return ", ".join("%s %.2f" % (k, cpu[k]) for k in keys)


def summary(label, res, n):
    m = statistics.median
    chain = m(res["chain"])
    alone = medians(res["alone"])
    slow_name = min(alone, key=alone.get) if alone else "?"
    cpu = medians(res["cpu"])
    grouped = {}
    for k, v in cpu.items():
        grouped[stage_of(k)] = grouped.get(stage_of(k), 0.0) + v
    lines = ["%s: chain %.0f files/s (median of %d runs of %d files); slowest stage alone: %s "
             "%.0f files/s -> chain = %.0f%% of it (goal >= 70%%)"
             % (label, chain, len(res["chain"]), n, slow_name, alone.get(slow_name, 0),
                100 * chain / alone[slow_name] if alone.get(slow_name) else 0),
             "  stages alone (files/s): " + ", ".join("%s %.0f" % kv for kv in alone.items()),
             "  CPU s per 1,000 files in the chain: " + fmt_cpu(cpu),
             "  per stage: " + fmt_cpu(grouped) + "; total %.2f" % sum(cpu.values()),
             "  CPU s per 1,000 files, stage alone: " + fmt_cpu(medians(res["alone_cpu"]))]
    if res["light"]:
        lat = res["light"]
        lines.append("  light load, post -> on disk: p50 %.0f ms, p99 %.0f ms (%d files; goal "
                     "p99 < 100 ms)" % (1000 * m(lat), 1000 * percentile(lat, 99), len(lat)))
    if res["rss"]:
        lines.append("  peak RSS (VmHWM): " + ", ".join(
            "%s %s%s" % (k, common.mb(v), "" if v < RSS_LIMIT else " OVER 40 MB")
            for k, v in sorted(res["rss"].items())))
    return "\n".join(lines)


def one_run(s, r, k, attempt, a):
    """Chain and alone phases of run k; appends to r only when both completed."""
    tag = "%d_%d" % (k, attempt)
    rate, cpu = chain_phase(s, "c" + tag, a.files, a.size, a.timeout)
    line = "run %d %-12s chain %6.0f files/s | CPU s/1000 files: %s" % (
        k + 1, s.label, rate, fmt_cpu(cpu))
    rates = acpu = None
    if a.alone:
        rates, acpu = alone_phase(s, "a" + tag, a.files, a.size, a.timeout)
        line += " | alone files/s: " + ", ".join("%s %.0f" % kv for kv in rates.items())
    r["chain"].append(rate)
    r["cpu"].append(cpu)
    if rates is not None:
        r["alone"].append(rates)
        r["alone_cpu"].append(acpu)
    return line + " | " + load_line()


def wait_broker(s, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        try:
            s.connect()
            break
        except (OSError, amqp.exceptions.AMQPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    s.start_all()                       # a stage stopped by an interrupted alone phase
    time.sleep(3)
    s.wait(lambda: s.quiet(s.daemons()), 300, "queues drained after the interruption")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--light", type=int, default=100, help="files of the light-load phase")
    ap.add_argument("--no-v2", dest="v2", action="store_false")
    ap.add_argument("--no-alone", dest="alone", action="store_false")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--figures", help="append the summary to this file")
    ap.add_argument("--sources", type=int, default=2,
                    help="sources declared on the pump (alice posts; each has its report "
                         "routing; default 2: alice and bob)")
    a = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit("pumpchain: terminated"))
    code = code_line()              # at the start: the daemons run the code of that moment
    systems = []
    try:
        systems.append(System("sarra", sources=a.sources))
        if a.v2:
            v2 = v2env.find()
            if isinstance(v2, str):
                print("v2 skipped: " + v2)
            else:
                systems.append(System("v2 %s" % v2.version(), v2, sources=a.sources))
        for s in systems:
            s.start_all()
            s.find_queues()
            chain_phase(s, "warmup", 50, a.size, a.timeout)     # connections, caches, dirs
        print("pumpchain: %d files of %d B per run, %d runs, %d sources; %s" % (
            a.files, a.size, a.runs, a.sources, load_line()), flush=True)
        res = {s.label: {"chain": [], "cpu": [], "alone": [], "alone_cpu": [], "light": []}
               for s in systems}
        for k in range(a.runs):
            for s in systems:
                for attempt in range(3):
                    try:
                        print(one_run(s, res[s.label], k, attempt, a), flush=True)
                        break
                    except (OSError, amqp.exceptions.AMQPError, RuntimeError) as e:
                        # the shared broker was restarted under us: wait, redo the run
                        print("run %d %s: interrupted (%s); redone" % (
                            k + 1, s.label, str(e).splitlines()[0][:100]), flush=True)
                        wait_broker(s)
        for s in systems:
            if a.light:
                res[s.label]["light"] = light_phase(s, "light", a.light, a.size, a.timeout)
            for key in list(s.pump.procs):
                s.note_rss(key)
            res[s.label]["rss"] = dict(s.rss)
        out = ["== pumpchain %s UTC, %d files of %d B, %s; %s" % (
            time.strftime("%Y-%m-%d %H:%M", time.gmtime()), a.files, a.size, load_line(),
            code)]
        for s in systems:
            out.append(summary(s.label, res[s.label], a.files))
        if len(systems) == 2:
            ours, theirs = (statistics.median(res[s.label]["chain"]) for s in systems)
            tot = [sum(medians(res[s.label]["cpu"]).values()) for s in systems]
            out.append("sarra / v2: chain files/s %.2fx (goal >= 3x); CPU per file (all "
                       "processes) %.2fx of v2's" % (ours / theirs, tot[0] / tot[1]))
        text = "\n".join(out)
        print(text)
        if a.figures:
            with open(a.figures, "a") as f:
                f.write(text + "\n\n")
        return 0
    finally:
        for s in systems:
            s.close()


if __name__ == "__main__":
    sys.exit(main())
