#!/usr/bin/env python3
"""Bandwidth limits (issue 23): the rate achieved beside the one configured, and what an
unlimited subscriber pays for the feature beside today's code, in the same run.

    python bench/bandwidth.py [--rate 512] [--files 2000] [--runs 3] [--base REV] [--no-limits]

1. ``kbytes_ps`` (one sr_subscribe over HTTP): one large file, then many 16 KiB files;
   ``kbytes_ps_shared``: the same files drained by two instances sharing the rate. Each
   line: the configured rate, the average achieved (first to last byte) and the most
   bytes in any WINDOW seconds, as a rate. Target: the most within 10 % of the limit.
2. Unlimited: ``--files`` files of 1 KiB drained by ``sr_subscribe foreground``, from this
   checkout and from ``--base`` (default: the commit before the flow engine first paced
   anything, extracted with git archive), alternating, ``--runs`` each; rate = files /
   (last - first file written), medians. Target: ours within 2 % of the base.

Files are served by a keep-alive HTTP server in this process from a temporary directory
(its own HOME), on a private exchange of the local broker, removed at the end.
"""

import argparse
import functools
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, broker_url, verdict  # noqa: E402

from sarra.broker.client import Broker  # noqa: E402

KIB = 1024
WINDOW = 5.0
COMMANDS = {"sr_subscribe": "subscribe", "sr_post": "post"}


def argv(tree, name):
    code = ("import sys; sys.argv[0] = %r; from sarra.commands.%s import main; "
            "sys.exit(main())" % (name, COMMANDS[name]))
    return [sys.executable, "-c", code]


class Quiet(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()     # headers and body are two writes: no Nagle wait between them
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *a):
        pass


def serve(root):
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


class Bench:
    def __init__(self, work, base_tree):
        self.work, self.base_tree = work, base_tree
        self.home = os.path.join(work, "home")
        self.www = os.path.join(work, "www")
        os.makedirs(os.path.join(self.home, ".config", "sarra", "subscribe"))
        os.makedirs(self.www)
        self.httpd = serve(self.www)
        self.url = "http://127.0.0.1:%d/" % self.httpd.server_port
        self.exchange = "xs_guest_bw%s" % uuid.uuid4().hex[:8]
        b = Broker(broker_url())
        b.connect()
        b.declare_exchange(self.exchange)
        b.close()
        self.n = 0
        self.meter_exchanges = []

    def env(self, tree):
        env = dict(os.environ, HOME=self.home, PYTHONUNBUFFERED="1",
                   XDG_CONFIG_HOME=os.path.join(self.home, ".config"),
                   XDG_CACHE_HOME=os.path.join(self.home, ".cache"))
        env["PYTHONPATH"] = tree
        return env

    def run(self, tree, *args, check=True):
        r = subprocess.run(argv(tree, args[0]) + list(args[1:]), env=self.env(tree),
                           cwd=self.home, capture_output=True, text=True, timeout=600)
        if check and r.returncode:
            raise SystemExit("%s failed: %s" % (" ".join(args), r.stderr[-2000:]))
        return r

    def files(self, count, size):
        self.n += 1
        sub = "set%d" % self.n
        d = os.path.join(self.www, sub)
        os.makedirs(d)
        for i in range(count):
            with open(os.path.join(d, "f%06d" % i), "wb") as f:
                f.write(os.urandom(size))
        return sub

    def flow(self, tree, sub, extra="", instances=1, count_files=False):
        """Drain the files of sub with a new configuration; [(time, bytes or files)]."""
        name = "bw%d_%s" % (self.n, uuid.uuid4().hex[:6])
        dst = os.path.join(self.work, "dst_" + name)
        os.makedirs(dst)
        with open(os.path.join(self.home, ".config", "sarra", "subscribe",
                               name + ".conf"), "w") as f:
            f.write("broker %s\nexchange %s\nexpire 5m\ndirectory %s\nreport_back off\n"
                    "mirror off\ninstances %d\n%s\naccept .*\n"
                    % (broker_url(), self.exchange, dst, instances, extra))
        self.run(tree, "sr_subscribe", "setup", name)
        src = os.path.join(self.www, sub)
        self.run(tree, "sr_post", "--post_broker", broker_url(), "--post_exchange",
                 self.exchange, "--post_base_url", self.url + sub + "/", "--post_base_dir",
                 src, src)
        want_files = len(os.listdir(src))
        want = want_files if count_files else sum(
            os.path.getsize(os.path.join(src, n)) for n in os.listdir(src))
        if instances == 1:
            p = subprocess.Popen(argv(tree, "sr_subscribe") + ["foreground", name],
                                 env=self.env(tree), cwd=self.home, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            p = None
            self.run(tree, "sr_subscribe", "start", name)
        samples = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            names = os.listdir(dst)
            if count_files:
                got = sum(1 for n in names if not n.endswith(".tmp"))
            else:
                got = 0
                for n in names:
                    try:
                        got += os.path.getsize(os.path.join(dst, n))
                    except OSError:
                        pass
            samples.append((time.monotonic(), got))
            if got >= want and len([n for n in names if not n.endswith(".tmp")]) >= want_files:
                break
            time.sleep(0.1 if not count_files else 0.05)
        if p is not None:
            p.terminate()
            p.wait(30)
        self.run(tree, "sr_subscribe", "stop", name, check=False)
        self.run(tree, "sr_subscribe", "cleanup", name, check=False)
        if "kbytes_ps_shared" in extra:
            self.meter_exchanges.append("xs_guest_%s_meter" % name)
        shutil.rmtree(dst, ignore_errors=True)
        return samples

    def close(self):
        self.httpd.shutdown()
        try:
            b = Broker(broker_url())
            b.connect()
            for x in [self.exchange] + self.meter_exchanges:
                b.delete_exchange(x)
            b.close()
        except Exception:
            pass


def moved(samples):
    """(average rate first to last change, most in any WINDOW s as a rate)."""
    moving = [(t, b) for t, b in samples if b > 0]
    if len(moving) < 2:
        return 0.0, 0.0
    t0 = max(t for t, b in samples if b == 0) if samples[0][1] == 0 else moving[0][0]
    t1, total = moving[-1]
    best, j = 0, 0
    for i in range(len(samples)):
        while samples[i][0] - samples[j][0] > WINDOW:
            j += 1
        best = max(best, samples[i][1] - samples[j][1])
    span = min(WINDOW, t1 - t0)
    return total / max(1e-9, t1 - t0), best / max(1e-9, span)


def limit_line(what, configured, samples):
    avg, most = moved(samples)
    ok = most <= configured * 1.10
    print("%-44s configured %6.0f KiB/s  achieved %6.0f KiB/s (most in %g s: %6.0f)  -> %s"
          % (what, configured / KIB, avg / KIB, WINDOW, most / KIB, verdict(ok)), flush=True)


def limited(b, ours, kbps):
    rate = kbps * KIB
    big = b.files(1, rate * 8)                          # 8 s at the rate
    limit_line("kbytes_ps: one large file", rate, b.flow(ours, big, "kbytes_ps %d" % kbps))
    small = b.files(int(rate * 8 / (16 * KIB)), 16 * KIB)
    limit_line("kbytes_ps: many 16 KiB files", rate,
               b.flow(ours, small, "kbytes_ps %d" % kbps))
    small2 = b.files(int(rate * 8 / (16 * KIB)), 16 * KIB)
    limit_line("kbytes_ps_shared: 2 instances, 16 KiB files", rate,
               b.flow(ours, small2, "kbytes_ps_shared %d" % kbps, instances=2))


def files_rate(samples):
    moving = [(t, n) for t, n in samples if n > 0]
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    return (n1 - n0) / max(1e-9, t1 - t0)


def base_tree(work, rev):
    if rev is None:
        # the commit before the flow engine first paced anything
        found = subprocess.run(["git", "log", "--reverse", "-S", "pacing.apply",
                                "--format=%H", "--", "sarra/flow/engine.py"],
                               cwd=REPO, capture_output=True, text=True).stdout.split()
        found = found[0] if found else ""
        if not found:
            return None, None
        rev = found + "^"
    dest = os.path.join(work, "base")
    os.makedirs(dest)
    archive = subprocess.run(["git", "archive", rev, "sarra"], cwd=REPO, capture_output=True)
    if archive.returncode:
        return None, rev
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    return dest, rev


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=int, default=512, help="KiB/s for the limited runs")
    ap.add_argument("--files", type=int, default=2000, help="1 KiB files, unlimited runs")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--base", default=None, help="git revision of today's code")
    ap.add_argument("--no-limits", action="store_true", help="the unlimited runs only")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_bw_", dir="/dev/shm" if os.path.isdir("/dev/shm")
                            else None)
    ours = str(REPO)
    b = Bench(work, None)
    try:
        if not a.no_limits:
            limited(b, ours, a.rate)
        base, rev = base_tree(work, a.base)
        if base is None:
            print("unlimited overhead: no base revision found (--base REV)")
            return 0
        mine, theirs = [], []
        for _ in range(a.runs):
            for tree, out in ((ours, mine), (base, theirs)):
                sub = b.files(a.files, 1024)
                out.append(files_rate(b.flow(tree, sub, count_files=True)))
        m, t = statistics.median(mine), statistics.median(theirs)
        overhead = (t - m) / t * 100 if t else 0.0
        print("unlimited, %d files of 1 KiB: ours %.0f files/s, today (%s) %.0f files/s, "
              "overhead %+.1f %% (target <= 2 %%)  -> %s"
              % (a.files, m, rev, t, overhead, verdict(overhead <= 2.0)))
        print("  runs: ours %s, today %s" % (["%.0f" % x for x in mine],
                                             ["%.0f" % x for x in theirs]))
    finally:
        b.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
