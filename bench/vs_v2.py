#!/usr/bin/env python3
"""sr_post and sr_winnow beside MetPX v2's, same broker, same input, same run.

    bench/vs_v2.py [--files 10000] [--products 10000] [--runs 3] [--skip post,winnow]

* sr_post: FILES files of 1 KiB in 100 directories, posted with md5 sums (--sum d) to an
  exchange with one bound queue, by `python -m sarra.commands.post` and by v2's `sr_post`
  (the same options), alternately; the figure is FILES / the whole command's wall time
  (interpreter start included, every message counted in the queue after), and the peak RSS.
  Cached sums (user.sr_* xattrs) are removed before each run.
* sr_winnow: PRODUCTS products announced twice each (40,000 messages for 20,000) into the
  winnow's queue while it is stopped; then `sr_winnow foreground` (ours, then v2's) drains it;
  the figure is announcements/s from the first message taken to the output tap holding one
  post per product and the queue empty.  Each side gets a fresh cache.

v2 comes from bench/v2env.py (skipped with the reason when it cannot be installed).
Goals (issue 20): sr_post and sr_winnow at least 5x v2's rate (median of the per-run ratios).
"""

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository on sys.path)
import v2env  # noqa: E402
from post import clear_sum_xattrs, make_tree  # noqa: E402

import amqp  # noqa: E402

GOAL = 5.0


def channel(url):
    from tests.conftest import amqp_connect
    conn = amqp_connect(url)
    return conn, conn.channel()


def count(ch, q):
    return ch.queue_declare(q, passive=True).message_count


def wait_count(ch, q, want, timeout=30.0):
    deadline = time.monotonic() + timeout
    n = count(ch, q)
    while n < want and time.monotonic() < deadline:
        time.sleep(0.05)
        n = count(ch, q)
    return n


def home_env(home):
    os.makedirs(os.path.join(home, ".config", "sarra"), exist_ok=True)
    return common.child_env({"HOME": home, "XDG_CONFIG_HOME": os.path.join(home, ".config"),
                             "XDG_CACHE_HOME": os.path.join(home, ".cache")})


def bench_post(url, v2, files, runs, tmp):
    conn, ch = channel(url)
    tag = uuid.uuid4().hex[:8]
    x, q = "xs_guest_vspost_" + tag, "q_guest.vspost." + tag
    data = tmp / "post"
    paths = make_tree(data, files)
    n = len(paths)
    opts = ["-pb", url, "-pbu", "file:", "-pbd", str(data), "-px", x]
    ours = [sys.executable, "-m", "sarra.commands.post"] + opts + ["--sum", "d", "-ll",
                                                                   "warning", str(data)]
    theirs = v2.argv("sr_post") + opts + ["-sum", "d", "-ll", "warning", "-p", str(data)]
    env_ours, env_v2 = home_env(str(tmp / "h_ours")), home_env(str(tmp / "h_v2"))
    env_v2["PYTHONPATH"] = ""
    res = {"ours": [], "v2": [], "rss_ours": [], "rss_v2": []}
    try:
        ch.exchange_declare(x, "topic", durable=True, auto_delete=False)
        ch.queue_declare(q, durable=False, auto_delete=False)
        ch.queue_bind(q, x, "#")
        for run in range(runs):
            for who, argv, env in (("ours", ours, env_ours), ("v2", theirs, env_v2)):
                ch.queue_purge(q)
                clear_sum_xattrs(paths)
                r = common.run_child(argv, env=env, cwd=str(tmp))
                got = wait_count(ch, q, n)
                if r.returncode != 0 or got != n:
                    raise SystemExit("%s sr_post exited %d, %d of %d messages\n%s"
                                     % (who, r.returncode, got, n, r.stderr[-1500:]))
                res[who].append(n / r.wall)
                res["rss_" + who].append(r.peak_rss or 0)
            print("  post run %d: ours %6.0f msg/s, v2 %6.0f msg/s (x%.2f)" % (
                run + 1, res["ours"][-1], res["v2"][-1], res["ours"][-1] / res["v2"][-1]),
                flush=True)
    finally:
        ch.queue_delete(q)
        ch.exchange_delete(x)
        conn.close()
    return res


def fill(ch, x, products, seed):
    rnd = random.Random(seed)
    msgs = []
    for i in range(products):
        rel = "/bench/%03d/p%07d.dat" % (i % 100, i)
        h = {"to_clusters": "bench", "mtime": "20240101000000.0", "atime": "20240101000000.0",
             "mode": "644", "sum": "d,%032x" % rnd.getrandbits(128),
             "parts": "1,%d,1,0,0" % (1000 + i), "source": "guest"}
        for k in range(2):
            body = "%s.%d http://src%d.example/ %s" % (
                time.strftime("%Y%m%d%H%M%S", time.gmtime(1700000000 + i)), k, k, rel)
            msgs.append((body, h))
    rnd.shuffle(msgs)
    ch.confirm_select()
    for body, h in msgs:
        ch.basic_publish(amqp.Message(body, application_headers=h, delivery_mode=2,
                                      content_type="text/plain", content_encoding="utf-8"),
                         exchange=x, routing_key="v02.post.bench")
    return len(msgs)


def bench_winnow(url, v2, products, runs, tmp):
    conn, ch = channel(url)
    tag = uuid.uuid4().hex[:8]
    xi, xo, tap = "xs_guest_vswi_" + tag, "xs_guest_vswo_" + tag, "q_guest.vswtap." + tag
    sides = {}
    for who in ("ours", "v2"):
        home = str(tmp / ("w_" + who))
        env = home_env(home)
        if who == "v2":
            env["PYTHONPATH"] = ""
        d = os.path.join(home, ".config", "sarra", "winnow")
        os.makedirs(d, exist_ok=True)
        qn = "q_guest.vswin_%s.%s" % (who, tag)
        with open(os.path.join(d, "w.conf"), "w") as f:
            f.write("broker %s\nexchange %s\nsubtopic #\nqueue_name %s\npost_broker %s\n"
                    "post_exchange %s\nreport_back off\nexpire 10m\n" % (url, xi, qn, url, xo))
        argv = ([sys.executable, "-m", "sarra.commands.winnow"] if who == "ours"
                else v2.argv("sr_winnow")) + ["foreground", "w"]
        sides[who] = (argv, env, home, qn)
    res = {"ours": [], "v2": [], "rss_ours": [], "rss_v2": []}

    def start(who):
        argv, env, home, _ = sides[who]
        log = open(os.path.join(home, "winnow.log"), "ab")
        return subprocess.Popen(argv, env=env, cwd=home, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)

    def stop(p):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def until(cond, timeout, what, who):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                log = Path(sides[who][2], "winnow.log").read_text(errors="replace")
                raise SystemExit("%s winnow: %s not reached\n%s" % (who, what, log[-1500:]))
            time.sleep(0.01)

    try:
        for ex in (xi, xo):
            ch.exchange_declare(ex, "topic", durable=True, auto_delete=False)
        ch.queue_declare(tap, durable=True, auto_delete=False)
        ch.queue_bind(tap, xo, "#")
        for who in sides:                   # each winnow declares and binds its own queue
            p = start(who)
            qn = sides[who][3]

            def exists():
                try:
                    _, c2 = channel(url)
                    c2.queue_declare(qn, passive=True)
                    c2.connection.close()
                    return True
                except Exception:  # noqa: BLE001 - not declared yet
                    return False
            until(exists, 60, "its queue declared", who)
            time.sleep(1)
            stop(p)
        for run in range(runs):
            for who in sides:
                qn = sides[who][3]
                ch.queue_purge(tap)
                for other in sides:
                    ch.queue_purge(sides[other][3])
                shutil.rmtree(os.path.join(sides[who][2], ".cache"), ignore_errors=True)
                n = fill(ch, xi, products, seed=run)
                until(lambda: count(ch, qn) >= n, 60, "queue filled", who)
                for other in sides:
                    if other != who:
                        ch.queue_purge(sides[other][3])
                p = start(who)
                until(lambda: count(ch, qn) < n, 120, "first message taken", who)
                t0 = time.monotonic()
                until(lambda: count(ch, tap) >= products and count(ch, qn) == 0, 600,
                      "all products posted", who)
                res[who].append(n / (time.monotonic() - t0))
                res["rss_" + who].append(common.vm_hwm(p.pid) or 0)
                stop(p)
                extra = count(ch, tap) - products
                if extra:
                    print("  %s winnow posted %d duplicates" % (who, extra))
            print("  winnow run %d: ours %6.0f msg/s, v2 %6.0f msg/s (x%.2f)" % (
                run + 1, res["ours"][-1], res["v2"][-1], res["ours"][-1] / res["v2"][-1]),
                flush=True)
    finally:
        for q in [tap] + [s[3] for s in sides.values()]:
            try:
                ch.queue_delete(q)
            except Exception:  # noqa: BLE001 - best effort
                pass
        for ex in (xi, xo):
            ch.exchange_delete(ex)
        conn.close()
    return res


def ratio_summary(name, res, unit="msg/s"):
    ratios = [o / t for o, t in zip(res["ours"], res["v2"])]
    r = statistics.median(ratios)
    return ("%-10s ours %7.0f %s vs v2 %7.0f %s: x%.2f (median of %d per-run ratios; goal "
            ">= x%.0f) %s" % (name + ":", statistics.median(res["ours"]), unit,
                              statistics.median(res["v2"]), unit, r, len(ratios), GOAL,
                              common.verdict(r >= GOAL)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--products", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma list: post, winnow")
    a = ap.parse_args()
    v2 = v2env.find()
    if isinstance(v2, str):
        print("vs_v2: v2 skipped: " + v2)
        return 0
    url = common.broker_url()
    tmp = Path(tempfile.mkdtemp(prefix="sarra-bench-vsv2-"))
    lines = ["vs_v2: MetPX v2 %s, %d runs, load average %.2f %.2f %.2f"
             % ((v2.version(), a.runs) + os.getloadavg())]
    print(lines[0], flush=True)
    try:
        if "post" not in a.skip:
            r = bench_post(url, v2, a.files, a.runs, tmp)
            lines.append(ratio_summary("sr_post", r) + "; peak RSS ours %s, v2 %s" % (
                common.mb(statistics.median(r["rss_ours"])),
                common.mb(statistics.median(r["rss_v2"]))))
        if "winnow" not in a.skip:
            r = bench_winnow(url, v2, a.products, a.runs, tmp)
            lines.append(ratio_summary("sr_winnow", r) + "; peak RSS ours %s, v2 %s" % (
                common.mb(max(r["rss_ours"])), common.mb(max(r["rss_v2"]))))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
