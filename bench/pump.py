#!/usr/bin/env python3
"""Files/s and end-to-end latency through a multi-user pump: sr_post -> sr_sarra -> sr_subscribe.

A fresh pump (scripts/pump_demo.Pump: its own vhost set up by sr_police, report shovels running)
moves N files of SIZE bytes (default 10,000 x 1 KiB) that alice posts with one sr_post call.

* post time of a file: the pubtime of its announcement, read from a tap on xs_alice;
* arrival time: the ctime of the file in carol's tree (the last thing the subscriber does to a
  file is write/rename/set its times, which sets ctime to now);
* throughput: N / (last arrival - first pubtime); latency: arrival - pubtime (median, p99).

Limits measured in the same run, on the same files and machine:
* sr_post's own rate (N / its wall time, process start included): nothing can go faster than
  the posting;
* a plain HTTP keep-alive GET loop over the pump's HTTP server (one connection, files read to
  memory): the cost of the transfer alone, which sarra and the subscriber each pay once.

The latency above is that of a saturated pump (sr_post posts ~10x faster than the pump moves,
so it is mostly queueing); a second, light-load run posts LIGHT files in batches of 10 every
0.5 s and gives the latency of an idle pump.

usage: bench/pump.py [N] [SIZE] [--instances K] [--light LIGHT]
"""

import argparse
import http.client
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.pump_demo import Pump  # noqa: E402


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def pubtime_epoch(stamp):
    t = time.strptime(stamp[:14], "%Y%m%d%H%M%S")
    import calendar
    return calendar.timegm(t) + (float("0" + stamp[14:]) if len(stamp) > 14 else 0.0)


def tap_pubtimes(pump, n, timeout):
    """relpath -> pubtime of alice's announcements (admin's queue bound to xs_alice)."""
    import amqp
    conn = amqp.Connection(host=pump.netloc, userid=pump.admin, password=pump.admin_pw,
                           virtual_host=pump.vhost, connect_timeout=10)
    conn.connect()
    ch = conn.channel()
    q, _, _ = ch.queue_declare("", exclusive=True, auto_delete=True)
    ch.queue_bind(q, "xs_" + pump.users["alice"], "#")
    return conn, ch, q


def drain(ch, q, n, timeout):
    got = {}
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = ch.basic_get(q, no_ack=True)
        if m is None:
            time.sleep(0.05)
            continue
        body = m.body.decode() if isinstance(m.body, bytes) else m.body
        f = body.split()
        got[f[2].lstrip("/")] = pubtime_epoch(f[0])
    return got


def http_loop(pump, rels):
    s = pump.http["pump"]
    conn = http.client.HTTPConnection(s.host, s.port, timeout=30)
    t0 = time.monotonic()
    for rel in rels:
        conn.request("GET", "/" + quote(rel))
        r = conn.getresponse()
        data = r.read()
        if r.status != 200 or not data:
            raise RuntimeError("GET %s: %d" % (rel, r.status))
    conn.close()
    return time.monotonic() - t0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=10000)
    ap.add_argument("size", nargs="?", type=int, default=1024)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--light", type=int, default=200, help="files of the light-load latency run")
    a = ap.parse_args(argv)
    pump = Pump()
    try:
        pump.setup()
        pump.start_http()
        pump.configure(instances=a.instances)
        conn, ch, q = tap_pubtimes(pump, a.n, 0)
        pump.start_pump()
        pump.wait_consumers(pump.standard_consumers())
        files = pump.make_files("alice", a.n, a.size, sub="bench")
        day = time.strftime("%Y%m%d", time.gmtime())
        prefix = os.path.join(day, pump.users["alice"])
        want = {os.path.join(prefix, rel): s for rel, s in files.items()}

        t0 = time.monotonic()
        r = pump.post("alice", [os.path.join(pump.src["alice"], "bench")])
        post_wall = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError("sr_post exited %d: %s" % (r.returncode, r.stderr[-500:]))
        n = pump.wait_files(want, max(120, a.n / 20))
        pub = drain(ch, q, a.n, 30)
        conn.close()
        time.sleep(1)
        got = pump.arrived(want)
        intact = sum(1 for k in want if got.get(k) == want[k])
        arrival = {}
        for rel in files:
            p = os.path.join(pump.dst, prefix, rel)
            if os.path.exists(p):
                arrival[rel] = os.stat(p).st_ctime
        lat = [arrival[rel] - pub[rel] for rel in arrival if rel in pub]
        first, last = min(pub.values()), max(arrival.values())
        rate = len(arrival) / (last - first)
        # light load: batches of 10 files posted every 0.5 s (well below the pump's rate)
        conn, ch, q = tap_pubtimes(pump, 0, 0)
        light = pump.make_files("alice", a.light, a.size, sub="light")
        for i in range(0, a.light, 10):
            batch = sorted(light)[i:i + 10]
            t = time.monotonic()
            pump.post("alice", [os.path.join(pump.src["alice"], rel) for rel in batch])
            time.sleep(max(0.0, 0.5 - (time.monotonic() - t)))
        lwant = {os.path.join(prefix, rel): s for rel, s in light.items()}
        pump.wait_files(lwant, 60)
        lpub = drain(ch, q, a.light, 30)
        conn.close()
        time.sleep(0.5)
        llat = [os.stat(os.path.join(pump.dst, prefix, rel)).st_ctime - lpub[rel]
                for rel in light if rel in lpub and os.path.exists(os.path.join(pump.dst, prefix,
                                                                                rel))]
        http_wall = http_loop(pump, [os.path.join(prefix, rel) for rel in files])
        print("pump bench: %d files of %d B, sarra instances %d, vhost %s" % (
            a.n, a.size, a.instances, pump.vhost))
        print("  arrived %d/%d, intact %d, pubtimes seen %d" % (n, a.n, intact, len(pub)))
        print("  post -> sarra -> subscribe : %8.0f files/s  (first post to last arrival %.1f s)"
              % (rate, last - first))
        print("  latency post -> on disk    : median %.3f s, p99 %.3f s, max %.3f s" % (
            statistics.median(lat), percentile(lat, 99), max(lat)))
        if llat:
            print("  latency, light load        : median %.3f s, p99 %.3f s (%d/%d files, "
                  "batches of 10 every 0.5 s)" % (statistics.median(llat), percentile(llat, 99),
                                                  len(llat), a.light))
        print("  limit: sr_post alone       : %8.0f files/s  (%.1f s wall, start-up included)"
              % (a.n / post_wall, post_wall))
        print("  limit: HTTP keep-alive GET : %8.0f files/s  (%.1f s, one connection; sarra and "
              "the subscriber each do one GET per file)" % (a.n / http_wall, http_wall))
        return 0 if intact == a.n else 1
    finally:
        pump.close()


if __name__ == "__main__":
    sys.exit(main())
