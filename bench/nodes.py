#!/usr/bin/env python3
"""Pump nodes (node_shares): throughput with one and two pump nodes, beside the single
node (one plain queue) measured in the same run.

    python bench/nodes.py [--files 2000] [--big 4] [--big-mib 64] [--shares 8] [--runs 1]

A pump node here is what the pump does per file: `sr_subscribe foreground` downloads it
over HTTP (a keep-alive threaded server in this process, files in /dev/shm when it
exists) into the shared tree and re-announces it on an output exchange (post_broker),
as sr_sarra does. Three set-ups drain the same announcements, queued before they start:

* single: one process on a plain queue (no node_shares), today's pump;
* 1 node: node_shares N, one process (the cost of the shards alone);
* 2 nodes: node_shares N, two processes with their own HOME and state (two "hosts").

Rate = files (or bytes) / (start of the processes -> last re-announcement counted on
the output exchange), so start-up is included (a few tenths of a second). Two "hosts" on
one machine share its cores, disk and the one broker: the figure says what the sharing
costs and whether two processes keep up, not what two real hosts would do (see the admin
guide, "A pump of several nodes", for how it scales there).
"""

import argparse
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import amqp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import broker_url, child_env, median  # noqa: E402
from sarra import message  # noqa: E402


class _Quiet(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()             # no 40 ms delayed-ACK stall per keep-alive response
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass


def _serve(root):
    handler = lambda *a, **k: _Quiet(*a, directory=root, **k)     # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _argv(cmd):
    return [sys.executable, "-c", "import sys; sys.argv[0] = %r; "
            "from sarra.commands.%s import main; sys.exit(main())" % (cmd, cmd[3:]),
            ]


def _publish(ch, exchange, url, files):
    for rel, size, digest in files:
        h = {"sum": "d," + digest, "parts": f"1,{size},1,0,0", "mtime": "20240315123456.5",
             "mode": "644"}
        m = message.make_post(message.now(), url, "/" + rel, h)
        topic, body, headers = m.encode()
        ch.basic_publish(amqp.Message(body, application_headers=headers, delivery_mode=2),
                         exchange=exchange, routing_key=topic)


def _run(tmp, url, ch, xin, files, nodes, shares, tag):
    """Seconds to drain the files through `nodes` processes (shares 0: plain queue)."""
    dst = os.path.join(tmp, "dst-" + tag)
    xout = f"xs_guest_bnout{uuid.uuid4().hex[:8]}"
    ch.exchange_declare(xout, "topic", durable=False, auto_delete=False)
    tap, _, _ = ch.queue_declare("", exclusive=True)
    ch.queue_bind(tap, xout, "#")
    name = "bn" + tag
    homes = []
    for k in range(max(1, nodes)):
        home = os.path.join(tmp, f"home-{tag}-{k}")
        d = os.path.join(home, ".config", "sarra", "subscribe")
        os.makedirs(d)
        with open(os.path.join(d, name + ".conf"), "w") as f:
            f.write("\n".join([
                f"broker {broker_url()}", f"exchange {xin}", "subtopic #", f"directory {dst}",
                "mirror on", f"post_broker {broker_url()}", f"post_exchange {xout}",
                f"post_base_url file:{dst}/", f"post_base_dir {dst}", "report_back off",
                "prefetch 25", "expire 10m", "accept .*"]
                + ([f"node_shares {shares}"] if shares else [])) + "\n")
        homes.append(home)

    def cmd(home, *args, **kw):
        return subprocess.run(_argv("sr_subscribe") + list(args), cwd=home, timeout=60,
                              env=child_env({"HOME": home}), capture_output=True, **kw)
    cmd(homes[0], "setup", name, check=True)
    if not shares:          # a plain queue: the other homes would make their own
        homes = homes[:1]
    _publish(ch, xin, url, files)
    t0 = time.monotonic()
    procs = [subprocess.Popen(_argv("sr_subscribe") + ["foreground", name], cwd=h,
                              env=child_env({"HOME": h}), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
             for h in homes]
    try:
        while ch.queue_declare(tap, passive=True)[1] < len(files):
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"{tag}: not drained in 600 s")
            time.sleep(0.02)
        return time.monotonic() - t0
    finally:
        for p in procs:
            os.killpg(p.pid, 9)
            p.wait()
        cmd(homes[0], "cleanup", name)
        ch.exchange_delete(xout)
        shutil.rmtree(dst, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--big", type=int, default=4, help="large files (0: none)")
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--shares", type=int, default=8)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="sarra-bench-nodes-", dir=base)
    srv = _serve(os.path.join(tmp, "src"))
    url = "http://127.0.0.1:%d" % srv.server_address[1]

    def make(rel, size):             # served from src/: (relpath, size, md5)
        data = os.urandom(size)
        p = os.path.join(tmp, "src", rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        return rel, size, hashlib.md5(data).hexdigest()
    small = [make(f"d{i % 50:02d}/f{i:05d}", 1024) for i in range(a.files)]
    big = [make(f"big/b{i}.bin", a.big_mib << 20) for i in range(a.big)]
    conn = amqp.Connection(broker_url().split("//")[1].split("@")[1].rstrip("/"),
                           userid="guest", password="guest")
    conn.connect()
    ch = conn.channel()
    xin = f"xs_guest_bnin{uuid.uuid4().hex[:8]}"
    ch.exchange_declare(xin, "topic", durable=False, auto_delete=False)
    setups = (("single", 1, 0), ("1 node", 1, a.shares), ("2 nodes", 2, a.shares))
    try:
        print(f"nodes: {a.files} files of 1 KiB, {a.big} of {a.big_mib} MiB, "
              f"node_shares {a.shares}, {os.cpu_count()} CPUs, median of {a.runs}")
        for what, files, unit in (("1 KiB files", small, "files/s"),
                                  (f"{a.big_mib} MiB files", big, "MB/s")):
            if not files:
                continue
            figures = {}
            for label, nodes, shares in setups:
                secs = median([_run(tmp, url, ch, xin, files, nodes, shares,
                                    f"{label[0]}{r}{uuid.uuid4().hex[:4]}")
                               for r in range(a.runs)])
                figures[label] = (len(files) if unit == "files/s"
                                  else sum(f[1] for f in files) / 1e6) / secs
            single = figures["single"]
            print(f"{what}: " + ", ".join(f"{k} {v:.1f} {unit} ({v / single:.2f}x)"
                                         for k, v in figures.items()))
    finally:
        ch.exchange_delete(xin)
        conn.close()
        srv.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
