#!/usr/bin/env python3
"""Files/s and latency through three pumps: A -> B -> C -> a subscriber on C.

    python bench/chain.py [--files 1000] [--size 1024] [--runs 3] [--rate 100] [--reports]

The pumps are three vhosts of the local broker built as in tests/integration/test_routing.py
(Chain: users, permissions, exchanges, one data tree and HTTP server per pump; everything
removed at the end). alice's files (1 KiB each) are announced on A:xs_alice with
to_clusters=C, straight from this process (the poster's own code, publisher confirms):

* burst: all --files announced at once; files/s = files / (last file written by the
  subscriber on C - first pubtime), latency of each file = time the subscriber logged it
  (file_log line) - its pubtime;
* paced: --files announced at --rate files/s: the latency of a file that does not queue
  behind others (4 hops: A's sarra copies it from file:, B's and C's sarras over HTTP,
  then the subscriber).

Medians of --runs runs (p99 is the median of the per-run 99th percentiles). With
--reports the report routing shovels of the test run too (reports go back to alice).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository on sys.path)


def percentile(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def log_times(log_path: Path, marker="downloaded "):
    """{path: epoch} of the file_log lines of a component log (local-time stamps, ms)."""
    out = {}
    if not log_path.exists():
        return out
    for line in log_path.read_text(errors="replace").splitlines():
        i = line.find(marker)
        if i < 0 or line[24:30] != "[INFO]":
            continue
        try:
            t = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        out[line[i + len(marker):].strip()] = t
    return out


class Poster:
    """alice's posts on A:xs_alice, made in this process (sarra.flow.poster + Broker)."""

    def __init__(self, url, exchange, src):
        from sarra.broker.client import Broker
        from sarra.flow.poster import PostOptions
        self.broker = Broker(url, reconnect=False)
        self.broker.connect()
        self.exchange = exchange
        self.opts = PostOptions(post_base_url="file:" + str(src), post_base_dir=str(src),
                                to_clusters="C", exchange=exchange, use_xattr=False)

    def post(self, path) -> float:
        from sarra.flow.poster import posts_for_path
        msgs = posts_for_path(str(path), self.opts)
        for m in msgs:
            topic, body, headers = m.encode()
            self.broker.publish(self.exchange, topic, body, headers)
        return msgs[0].pubtime_epoch

    def confirm(self):
        self.broker.wait_confirms(timeout=120)

    def close(self):
        self.broker.close()


def one_run(chain, poster, src, bob_dir, bob_log, tag, files, size, rate, timeout=600):
    """Announce `files` files (all at once when rate is 0); return (files/s, latencies)."""
    rels = []
    data = os.urandom(size)
    for i in range(files):
        rel = "%s/d%02d/f%05d.bin" % (tag, i % 20, i)
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data[:size - 8] + i.to_bytes(8, "big"))
        rels.append(rel)
    pubtimes = {}
    t0 = time.time()
    for i, rel in enumerate(rels):
        if rate:
            wait = t0 + i / rate - time.time()
            if wait > 0:
                time.sleep(wait)
        pubtimes[rel] = poster.post(src / rel)
        if rate:
            poster.confirm()
    poster.confirm()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(1 for rel in rels if (bob_dir / rel).exists())
        if done == files:
            break
        time.sleep(0.2)
    else:
        raise SystemExit("chain: only %d of %d files reached the subscriber on C in %ds"
                         % (done, files, timeout))
    time.sleep(0.3)                 # the log line follows the rename
    written = log_times(bob_log)
    lat, last = [], 0.0
    for rel in rels:
        t = written.get(str(bob_dir / rel))
        if t is None:
            continue
        lat.append(t - pubtimes[rel])
        last = max(last, t)
    first = min(pubtimes.values())
    return files / (last - first), lat


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0, help="paced phase: files/s")
    ap.add_argument("--reports", action="store_true", help="run the report shovels too")
    args = ap.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="sarra-bench-chain-", dir="/dev/shm"
                                 if os.path.isdir("/dev/shm") else None))
    home = base / "home"
    for d in (".config", ".cache"):
        (home / d).mkdir(parents=True)
    os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                      XDG_CACHE_HOME=str(home / ".cache"))
    from tests.integration.routingkit import build_chain, start_chain
    from tests.integration.senderkit import Runner

    runner = Runner(home, base)
    chain = build_chain(runner, uuid.uuid4().hex[:8], base, common.broker_url())
    poster = None
    try:
        src, bob_dir = base / "alice", base / "bob"
        src.mkdir()
        bob_dir.mkdir()
        start_chain(chain, bob_dir, back_link=False)
        if not args.reports:
            for component, name, p, _ in list(runner.procs):
                if component == "shovel":
                    runner.stop(p)
        bob_log = next(log for c, n, _, log in runner.procs if n == "bob_C")
        A = chain.pumps["A"]
        poster = Poster(A.url("alice"), "xs_" + A.user("alice"), src)
        one_run(chain, poster, src, bob_dir, bob_log, "warmup", 50, args.size, 0)
        burst_rates, burst_p50, burst_p99, paced_p50, paced_p99 = [], [], [], [], []
        for k in range(args.runs):
            rate, lat = one_run(chain, poster, src, bob_dir, bob_log, "burst%d" % k,
                                args.files, args.size, 0)
            burst_rates.append(rate)
            burst_p50.append(statistics.median(lat))
            burst_p99.append(percentile(lat, 99))
            print("run %d burst: %7.1f files/s, latency median %6.3f s p99 %6.3f s"
                  % (k + 1, rate, burst_p50[-1], burst_p99[-1]), flush=True)
            _, lat = one_run(chain, poster, src, bob_dir, bob_log, "paced%d" % k,
                             args.files, args.size, args.rate)
            paced_p50.append(statistics.median(lat))
            paced_p99.append(percentile(lat, 99))
            print("run %d paced %g/s: latency median %6.3f s p99 %6.3f s"
                  % (k + 1, args.rate, paced_p50[-1], paced_p99[-1]), flush=True)
        m = statistics.median
        print("%-44s %10.1f files/s (%d files of %d B, 3 pumps + subscriber, median of %d)"
              % ("chain A->B->C burst:", m(burst_rates), args.files, args.size, args.runs))
        print("%-44s median %6.3f s, p99 %6.3f s" % ("chain burst latency (queueing incl.):",
                                                    m(burst_p50), m(burst_p99)))
        print("%-44s median %6.3f s, p99 %6.3f s" % ("chain paced latency (%g files/s):"
                                                    % args.rate, m(paced_p50), m(paced_p99)))
    finally:
        if poster is not None:
            poster.close()
        chain.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
