"""sr_post throughput next to the raw publish rate of the `amqp` package, same broker, same run.

    python bench/post.py [--runs 5] [--files 10000]

Creates 10,000 files of 1 KiB in 100 directories, then RUNS times, alternating:

(a) raw: one py-amqp connection publishes 10,000 messages with basic_publish, no
    confirms (fire and forget); the clock stops after a final round trip (passive
    queue_declare) so everything was sent and processed.  Two kinds of message: "bare"
    (body only) and "v02" (the same body, content type, delivery mode and the six headers
    an sr_post post carries) -- the v02 one is the reference for the target.
(b) sr_post: `python -m sarra.commands.post -pb ... -ll warning --sum d <dir>` as a child
    process (md5 of every file, publisher confirms: it exits 0 only once the broker
    confirmed every message): wall time of the whole command (interpreter start and
    imports included) and its peak RSS (VmHWM, polled);
(c) the same sr_post main() in a child that times it: main() alone, and the post phase
    from the end of connect() to the end of wait_confirms(); it reports its own VmHWM.

Each run removes the files' user.sr_* xattrs first so every run really computes md5.
Both publish into the same exchange with one bound queue (purged and counted after each
run: every message must have arrived).  Prints each run, then the medians.
Targets (issue 2): sr_post >= 50% of the raw rate; peak RSS < 40 MB.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (also puts the repository on sys.path)

import amqp  # noqa: E402

RSS_LIMIT = 40_000_000
TARGET = 0.50

# Runs sr_post's main() in this child, timing imports, main() and the post phase.
DRIVER = common.HWM_SNIPPET + r"""
import json, sys, time
t0 = time.perf_counter()
from sarra import broker as _b
from sarra.commands import post
t1 = time.perf_counter()
marks = {}
_connect, _wait = _b.Broker.connect, _b.Broker.wait_confirms
def connect(self, *a, **k):
    r = _connect(self, *a, **k)
    marks["connected"] = time.perf_counter()
    return r
def wait_confirms(self, *a, **k):
    r = _wait(self, *a, **k)
    marks["confirmed"] = time.perf_counter()
    return r
_b.Broker.connect, _b.Broker.wait_confirms = connect, wait_confirms
sys.argv[0] = "sr_post"
rc = post.main(sys.argv[1:])
t2 = time.perf_counter()
print(json.dumps({"rc": rc, "imports": t1 - t0, "main": t2 - t1,
                  "phase": marks.get("confirmed", t2) - marks.get("connected", t1),
                  "hwm": _hwm()}))
sys.exit(rc)
"""


def make_tree(root: Path, files: int, dirs: int = 100, size: int = 1024):
    per_dir = max(1, files // dirs)
    paths = []
    for d in range(dirs):
        sub = root / ("d%03d" % d)
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(per_dir):
            if len(paths) == files:
                break
            p = sub / ("f%04d.dat" % f)
            p.write_bytes(os.urandom(size))
            paths.append(p)
    return paths


def clear_sum_xattrs(paths):
    """Forget cached sums so the next sr_post computes md5 again."""
    for p in paths:
        for name in ("user.sr_sum", "user.sr_mtime"):
            try:
                os.removexattr(p, name)
            except OSError:
                pass


def raw_publish(ch, exchange, queue, bodies, keys, headers) -> float:
    """Fire-and-forget basic_publish of len(bodies) messages; seconds until all processed."""
    t0 = time.perf_counter()
    if headers is None:
        for body, key in zip(bodies, keys):
            ch.basic_publish(amqp.Message(body), exchange, key)
    else:
        for body, key in zip(bodies, keys):
            msg = amqp.Message(body, content_type="text/plain", content_encoding="utf-8",
                               application_headers=headers, delivery_mode=2)
            ch.basic_publish(msg, exchange, key)
    ch.queue_declare(queue, passive=True)    # round trip: the broker has everything
    return time.perf_counter() - t0


def queued(ch, queue) -> int:
    return ch.queue_declare(queue, passive=True).message_count


def wait_count(ch, queue, want, timeout=10.0) -> int:
    deadline = time.monotonic() + timeout
    n = queued(ch, queue)
    while n < want and time.monotonic() < deadline:
        time.sleep(0.05)
        n = queued(ch, queue)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--files", type=int, default=10_000)
    args = ap.parse_args()

    url = common.broker_url()
    from tests.conftest import amqp_connect, redact  # same connection code as the tests
    tag = uuid.uuid4().hex[:8]
    exchange, queue = "xs_bench_post_" + tag, "q_bench_post." + tag
    tmp = Path(tempfile.mkdtemp(prefix="sarra-bench-post-"))
    data, home = tmp / "data", tmp / "home"
    home.mkdir()
    env = common.child_env({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                            "XDG_CACHE_HOME": str(home / ".cache")})
    conn = amqp_connect(url)
    ch = conn.channel()
    try:
        t = time.perf_counter()
        paths = make_tree(data, args.files)
        n = len(paths)
        print("broker %s; %d files of 1 KiB in 100 directories created in %.1f s; %d runs"
              % (redact(url), n, time.perf_counter() - t, args.runs))
        ch.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        ch.queue_declare(queue, durable=False, auto_delete=False)
        ch.queue_bind(queue, exchange, "#")
        rels = [str(p.relative_to(data)) for p in paths]
        bodies = ["20261127220759.826123 file: /" + r for r in rels]
        keys = ["v02.post." + r.split("/")[0] for r in rels]
        headers = {"to_clusters": "127.0.0.1", "mtime": "20261127220759.826123",
                   "atime": "20261127220759.826123", "mode": "644",
                   "parts": "1,1024,1,0,0", "sum": "d,0123456789abcdef0123456789abcdef"}
        options = ["-pb", url, "-pbu", "file:", "-pbd", str(data), "-px", exchange,
                   "--sum", "d", "-ll", "warning", str(data)]
        command = [sys.executable, "-m", "sarra.commands.post"] + options
        driver = [sys.executable, "-c", DRIVER] + options
        res = {k: [] for k in ("bare", "v02", "cmd", "main", "phase", "rss", "rss_main")}

        def sr_post(argv, run):
            ch.queue_purge(queue)
            clear_sum_xattrs(paths)
            r = common.run_child(argv, env=env, cwd=str(home))
            got = wait_count(ch, queue, n)
            if r.returncode != 0 or got != n:
                sys.exit("run %d: sr_post exited %d, %d of %d messages arrived\n%s"
                         % (run, r.returncode, got, n, r.stderr[-2000:]))
            return r

        for run in range(1, args.runs + 1):
            ch.queue_purge(queue)
            res["bare"].append(n / raw_publish(ch, exchange, queue, bodies, keys, None))
            ch.queue_purge(queue)
            res["v02"].append(n / raw_publish(ch, exchange, queue, bodies, keys, headers))
            r = sr_post(command, run)
            res["cmd"].append(n / r.wall)
            res["rss"].append(r.peak_rss)
            d = sr_post(driver, run)
            j = d.json()
            res["main"].append(n / j["main"])
            res["phase"].append(n / j["phase"])
            res["rss_main"].append(j["hwm"])
            print("run %d: raw bare %6.0f/s, raw v02 %6.0f/s | sr_post command %6.0f/s "
                  "(%.2f s), peak RSS %s | in-process: main() %6.0f/s, post phase %6.0f/s, "
                  "peak RSS %s" % (run, res["bare"][-1], res["v02"][-1], res["cmd"][-1],
                                   r.wall, common.mb(r.peak_rss), res["main"][-1],
                                   res["phase"][-1], common.mb(j["hwm"])))
        ch.queue_purge(queue)
        med = {k: common.median(v) for k, v in res.items()}
        print("medians of %d runs (%d messages each; sr_post: md5, every message confirmed):"
              % (args.runs, n))
        print("  raw amqp basic_publish, bare messages:     %8.0f msg/s" % med["bare"])
        print("  raw amqp basic_publish, v02-sized:         %8.0f msg/s" % med["v02"])
        print("  sr_post whole command (start to exit 0):   %8.0f msg/s" % med["cmd"])
        print("  sr_post main() (no interpreter start):     %8.0f msg/s" % med["main"])
        print("  sr_post post phase (connect..confirms):    %8.0f msg/s" % med["phase"])
        common.ratio_line("sr_post command / raw v02", med["cmd"], med["v02"], "msg/s", TARGET)
        common.ratio_line("sr_post command / raw bare", med["cmd"], med["bare"], "msg/s",
                          TARGET)
        common.ratio_line("sr_post main() / raw v02", med["main"], med["v02"], "msg/s", TARGET)
        common.limit_line("sr_post peak RSS (command, polled)", med["rss"], RSS_LIMIT)
        common.limit_line("sr_post peak RSS (self-reported VmHWM)", med["rss_main"],
                          RSS_LIMIT)
    finally:
        for cleanup in (lambda: ch.queue_delete(queue), lambda: ch.exchange_delete(exchange),
                        conn.close):
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - best effort
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
