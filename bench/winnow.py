#!/usr/bin/env python3
"""sr_winnow throughput next to the raw consume-with-ack rate of py-amqp, and the memory
of its claim store for 1,000,000 entries.

    bench/winnow.py [--products N] [--runs R] [--prefetch P] [--entries E]

Throughput: N products are announced twice (on two exchanges, in random order) into the
winnow queue, then one winnow instance (the real flow engine, in a child process) drains
the queue: every announcement is claimed, the N first copies are re-posted to an output
exchange with a durable tap queue (so the broker stores them), the N later copies are
dropped. The figure is announcements/s from the first delivery to the last commit. The
reference is a child process using the amqp package alone on the same queue content:
basic_consume with the same prefetch, basic_ack of every message, nothing else. Both run R
times alternately in the same broker session; medians are compared (target: winnow at
least 50 % of raw).

Memory: a child process fills a claim store with E entries (one transaction), then makes
100,000 claims against it; it reports the growth of its RSS (the store's memory is the
SQLite page cache, the entries live in the file) and the file's size. For comparison the
per-process dict of sarra.flow.cache.DupCache with E entries is measured with tracemalloc.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import broker_url, child_env, median  # noqa: E402

HEADERS = {"to_clusters": "bench", "mtime": "20240101000000.0", "atime": "20240101000000.0",
           "mode": "644"}


def connect(url):
    import amqp
    from urllib.parse import unquote, urlparse
    u = urlparse(url)
    c = amqp.Connection(host="%s:%d" % (u.hostname or "127.0.0.1", u.port or 5672),
                        userid=unquote(u.username or "guest"),
                        password=unquote(u.password or "guest"),
                        virtual_host=unquote(u.path[1:]) if len(u.path) > 1 else "/")
    c.connect()
    return c


def fill(ch, exchanges, products, seed):
    """Publish every product once on each exchange, in a random order (confirmed)."""
    import amqp
    rnd = random.Random(seed)
    msgs = []
    for i in range(products):
        rel = "/bench/%03d/p%07d.dat" % (i % 100, i)
        h = dict(HEADERS, sum="d,%032x" % rnd.getrandbits(128), parts="1,%d,1,0,0" % (1000 + i))
        for n, x in enumerate(exchanges):
            body = "%s.%d http://src%d.example/ %s" % (
                time.strftime("%Y%m%d%H%M%S", time.gmtime(1700000000 + i)), n, n, rel)
            msgs.append((x, body, h))
    rnd.shuffle(msgs)
    ch.confirm_select()
    for x, body, h in msgs:
        ch.basic_publish(amqp.Message(body, application_headers=h, delivery_mode=2,
                                      content_type="text/plain", content_encoding="utf-8"),
                         exchange=x, routing_key="v02.post.bench")
    return len(msgs)


WINNOW_CHILD = textwrap.dedent("""
    import json, logging, sys, time
    from sarra import components, config, logs
    from sarra.flow.engine import Flow
    total = int(sys.argv[2])
    cfg = config.load("winnow", sys.argv[1])
    # as a background instance logs: to its log file, at the configured level (info)
    log = logs.setup_logging("winnow", cfg.name, 1, level=cfg.loglevel)
    flow = Flow(cfg, components.preset("winnow"), logger=log)
    flow.connect()
    import os
    prof = None
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = t1 = None
    # until all are received (alone) or nothing came for a second (one of several)
    while flow.counters["received"] < total and (t1 is None or time.time() - t1 < 1.0):
        batch = flow.gather()
        if batch:
            if t0 is None:
                t0 = time.time()
            flow.handle(batch)
            t1 = time.time()
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.environ["BENCH_PROFILE"])
    c = dict(flow.counters)
    flow.close()
    print(json.dumps({"start": t0, "end": t1, "counters": c}))
""")

RAW_CHILD = textwrap.dedent("""
    import json, sys, time, amqp
    from urllib.parse import unquote, urlparse
    url, queue, total, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    u = urlparse(url)
    c = amqp.Connection(host="%s:%d" % (u.hostname, u.port or 5672),
                        userid=unquote(u.username), password=unquote(u.password))
    c.connect()
    ch = c.channel()
    ch.basic_qos(0, prefetch, False)
    state = {"n": 0, "t0": None}
    def on_message(m):
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        ch.basic_ack(m.delivery_tag)
        state["n"] += 1
    ch.basic_consume(queue, callback=on_message)
    while state["n"] < total:
        c.drain_events(timeout=30)
    t1 = time.perf_counter()
    c.close()
    print(json.dumps({"seconds": t1 - state["t0"]}))
""")

FILL_CHILD = textwrap.dedent("""
    import json, sys, time
    from sarra import winnow
    path, n = sys.argv[1], int(sys.argv[2])
    store = winnow.ClaimStore(path, 3600)
    now = time.time()
    for start in range(0, n, 100000):
        rows = [(winnow.digest("d,%032x" % i, "/bench/p%07d*1,1000,1,0,0" % i), now, i)
                for i in range(start, min(n, start + 100000))]
        store.db.execute("BEGIN")
        store.db.executemany("INSERT OR IGNORE INTO claims (k, t, who) VALUES (?, ?, ?)", rows)
        store.db.execute("COMMIT")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    print(json.dumps({}))
""")

MEMORY_CHILD = textwrap.dedent("""
    import json, os, sys, time, tracemalloc
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    path, n = sys.argv[1], int(sys.argv[2])
    from sarra import winnow
    from sarra.flow.cache import DupCache
    keys = [winnow.digest("d,%032x" % i, "/bench/p%07d*1,1000,1,0,0" % i)
            for i in range(n - 50000, n + 50000)]          # half known, half new
    before = rss()
    store = winnow.ClaimStore(path, 3600)
    t0 = time.perf_counter()
    firsts = sum(store.claim(k, -i)[0] for i, k in enumerate(keys))
    claim_s = (time.perf_counter() - t0) / len(keys)
    after = rss()
    size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    store.close()
    tracemalloc.start()
    cache = DupCache(None, 3600)
    for i in range(n):
        cache.check_and_add(("d,%032x" % i, "/bench/p%07d*1,1000,1,0,0" % i))
    dict_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(json.dumps({"rss_delta": after - before, "file": size, "claim_us": claim_s * 1e6,
                      "firsts": firsts, "dupcache_bytes": dict_bytes}))
""")


def run_child(code, *args, env=None, timeout=600):
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, env=env or child_env(), timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("child failed (%d):\n%s" % (r.returncode, r.stderr[-3000:]))
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_children(code, count, *args, env=None, timeout=600):
    """count copies of a child at once; their JSON results."""
    procs = [subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env or child_env()) for _ in range(count)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError("child failed (%d):\n%s" % (p.returncode, err[-3000:]))
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def throughput(url, products, runs, prefetch, loglevel, instances=1):
    uid = uuid.uuid4().hex[:8]
    xa, xb, xo = "xs_guest_bwa" + uid, "xs_guest_bwb" + uid, "xs_guest_bwo" + uid
    tap = "q_guest.bench_tap." + uid
    home = tempfile.mkdtemp(prefix="bench_winnow_")
    env = child_env({"HOME": home, "XDG_CONFIG_HOME": home + "/.config",
                     "XDG_CACHE_HOME": home + "/.cache"})
    name = "bench" + uid
    cfgdir = os.path.join(home, ".config", "sarra", "winnow")
    os.makedirs(cfgdir)
    with open(os.path.join(cfgdir, name + ".conf"), "w") as f:
        f.write("broker %s\nexchange %s\nsubtopic #\nexchange %s\nsubtopic #\n"
                "post_exchange %s\nreport_back off\nprefetch %d\nexpire 10m\n"
                "queue_name q_guest.bench_winnow.%s\nloglevel %s\n"
                % (url, xa, xb, xo, prefetch, uid, loglevel))
    queue = "q_guest.bench_winnow." + uid
    conn = connect(url)
    ch = conn.channel()
    winnow_rates, raw_rates = [], []
    try:
        for x in (xa, xb, xo):
            ch.exchange_declare(x, "topic", durable=True, auto_delete=False)
        ch.queue_declare(queue, durable=True, auto_delete=False,
                         arguments={"x-expires": 600000})
        for x in (xa, xb):
            ch.queue_bind(queue, x, "v02.post.#")
        ch.queue_declare(tap, durable=True, auto_delete=False)
        ch.queue_bind(tap, xo, "#")
        for run in range(runs):
            for what in ("raw", "winnow"):
                n = fill(ch, (xa, xb), products, seed=run)
                # a fresh claim store each run: every product is new to it
                shutil.rmtree(os.path.join(home, ".cache", "sarra", "winnow"), ignore_errors=True)
                if what == "raw":
                    r = run_child(RAW_CHILD, url, queue, n, prefetch)
                    raw_rates.append(n / r["seconds"])
                else:
                    rs = run_children(WINNOW_CHILD, instances, name, n, env=env)
                    posted = sum(r["counters"]["posted"] for r in rs)
                    out = ch.queue_declare(tap, passive=True)[1]
                    if posted != products or out != products:
                        raise RuntimeError("winnow posted %d (tap: %d) of %d products: %s"
                                           % (posted, out, products, rs))
                    r = {"seconds": max(r["end"] for r in rs) - min(r["start"] for r in rs)}
                    winnow_rates.append(n / r["seconds"])
                ch.queue_purge(tap)
                print("  run %d %-6s %8.0f msg/s" % (run + 1, what, n / r["seconds"]),
                      flush=True)
    finally:
        for q in (queue, tap):
            ch.queue_delete(q)
        for x in (xa, xb, xo):
            ch.exchange_delete(x)
        conn.close()
        if os.environ.get("BENCH_KEEP"):
            print("kept", home)
        else:
            shutil.rmtree(home, ignore_errors=True)
    ratios = [w / r for w, r in zip(winnow_rates, raw_rates)]
    return median(winnow_rates), median(raw_rates), median(ratios)


def memory(entries):
    d = tempfile.mkdtemp(prefix="bench_winnow_mem_")
    try:
        path = os.path.join(d, "claims.sqlite")
        run_child(FILL_CHILD, path, entries, timeout=1800)
        return run_child(MEMORY_CHILD, path, entries, timeout=1800)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prefetch", type=int, default=100,
                    help="both sides (100: the sr_winnow default)")
    ap.add_argument("--entries", type=int, default=1000000)
    ap.add_argument("--instances", type=int, default=1,
                    help="winnow processes sharing the queue (and the claims)")
    ap.add_argument("--loglevel", default="info",
                    help="sr_winnow's loglevel (info, the default, logs every post and drop)")
    a = ap.parse_args()
    url = broker_url()
    print("sr_winnow: %d products x 2 announcements, %d instance(s), prefetch %d, "
          "loglevel %s, %d runs (medians)"
          % (a.products, a.instances, a.prefetch, a.loglevel, a.runs))
    w, raw, ratio = throughput(url, a.products, a.runs, a.prefetch, a.loglevel, a.instances)
    print("winnow throughput: %.0f msg/s vs raw amqp consume+ack %.0f msg/s; median of the "
          "per-run ratios %.0f%% (target >= 50%%) -> %s"
          % (w, raw, 100 * ratio, "ok" if ratio >= 0.5 else "BELOW"))
    m = memory(a.entries)
    print("claim store with %d entries: process memory +%.1f MB (SQLite page cache), file "
          "%.1f MB, %.1f us per claim (half of them new); a DupCache dict of as many "
          "entries: %.1f MB" % (a.entries, m["rss_delta"] / 1e6, m["file"] / 1e6,
                               m["claim_us"], m["dupcache_bytes"] / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
