#!/usr/bin/env python3
"""sr_subscribe throughput, next to the limits measured in the same run.

    python bench/subscribe.py [--files 10000] [--runs 3] [--big-mib 1024] [--server auto]
                              [--big-sum d|s] [--big-parts MIB] [--big-instances N]
                              [--settle S] [--no-primer]

1. 10,000 announced files of 1 KiB, served by a fast keep-alive HTTP server (nginx when
   installed, else a selectors/sendfile server in its own process), drained by
   `sr_subscribe foreground` (1 instance) and `sr_subscribe start` with `instances 2`.
   Limit: a plain download loop over one persistent connection (requests.Session, the
   HTTP stack the subscriber uses; an http.client loop is printed too), each body written
   to a file like the subscriber does. Rate = files / (last - first file written), from
   the subscriber's own log (file_log lines), so start-up is not counted.
2. One 1 GiB file through sr_subscribe over HTTP, next to `curl -o` of the same URL, both
   written to the tmpfs and to a disk file system (tempfile's default directory); also
   curl to /dev/null and the time MD5 (SHA-512 with --big-sum s) takes over the same
   bytes, measured in every run beside the transfers (a download verified against a
   whole-file sum cannot beat it: the hash is sequential). sr_subscribe's time runs from
   the publish on an already open broker connection (curl's has no connection to a
   broker in it either) to the rename of the file. By default the file is announced as sr_post announces it by default
   (200 MiB blocks, sum d) and fetched by two subscriber processes (instances 2, prefetch
   1) that download and hash blocks side by side; --big-parts 0 posts it whole and
   --big-instances 1 runs one process. Each transfer starts after os.sync() and --settle
   seconds of quiet: on the test VM, memory freed by the previous GiB is handed back to
   the host after a moment, and whoever ran right after a deletion was up to 2x faster
   or slower than the same program a few seconds later (curl included). So before each
   of them a primer writes and deletes as many bytes in the tmpfs (--no-primer: none);
   without it, whichever of curl and sr_subscribe went first in a run paid the slow case.
   CPU floors, from the busy CPU-seconds of the whole machine (/proc/stat) during each
   transfer: a verified download does at least what curl does plus the hash, so on N
   cores it cannot take less than (curl's CPU-seconds + the hash's) / N (the "verified
   floor"); nor less than (CPU of curl to /dev/null + CPU of writing the bytes from
   memory into a file there + the hash's) / N (the "absolute floor": receive, store,
   hash, nothing else). Where a floor is above 80 % of curl's time, the target cannot
   be met on this machine by any download that checks an MD5 sum.
3. Peak RSS (VmHWM) of every subscriber instance.

Files are served from and written to /dev/shm when it exists (--dir to change).
Medians of --runs runs. Targets: 1 instance >= 70 % of the loop, 1 GiB >= 80 % of curl,
< 40 MB RSS per instance. Everything lives in a temporary directory (its own HOME) and on
private exchanges/queues of the local broker, removed at the end.
"""

import argparse
import hashlib
import http.client
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sarra import message  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import floorline  # noqa: E402
from sarra.broker.client import Broker  # noqa: E402

BROKER = os.environ.get("SARRA_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672/")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: nothing listens on 127.0.0.1:{port}")


# ------------------------------------------------------------------ servers

def start_nginx(root, work, port):
    conf = os.path.join(work, "nginx.conf")
    for d in ("body", "proxy", "fastcgi"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
master_process off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_requests 10000000; keepalive_timeout 600s;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    default_type application/octet-stream;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    p = subprocess.Popen([NGINX, "-c", conf, "-p", work], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "nginx.out"), "wb"),
                         start_new_session=True)
    wait_port(port)
    return p, "nginx " + subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()


def serve_python(root, port):
    """HTTP/1.1 keep-alive GET server: one process, selectors, sendfile (the fallback)."""
    sel = selectors.DefaultSelector()
    lsock = socket.create_server(("127.0.0.1", port), backlog=128)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ)
    bufs = {}
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is lsock:
                c, _ = lsock.accept()
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                bufs[c] = b""
                sel.register(c, selectors.EVENT_READ)
                continue
            data = s.recv(65536)
            if not data:
                sel.unregister(s)
                s.close()
                bufs.pop(s, None)
                continue
            buf = bufs[s] + data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ", 2)[1].decode()
                full = os.path.join(root, path.lstrip("/").replace("%20", " "))
                s.setblocking(True)
                try:
                    fd = os.open(full, os.O_RDONLY)
                except OSError:
                    s.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    s.setblocking(False)
                    continue
                size = os.fstat(fd).st_size
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                off = 0
                while off < size:
                    off += os.sendfile(s.fileno(), fd, off, size - off)
                os.close(fd)
                s.setblocking(False)
            bufs[s] = buf


def start_python_server(root, port):
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", root, str(port)],
                         stdin=subprocess.DEVNULL, start_new_session=True)
    wait_port(port)
    return p, "python selectors+sendfile server"


# ------------------------------------------------------------------ data

def make_files(root, n, size=1024):
    rels = []
    for i in range(n):
        rel = f"d{i % 100:02d}/f{i:05d}.txt"
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        data = (b"%08d" % i) * (size // 8)
        with open(p, "wb") as f:
            f.write(data)
        rels.append((rel, data))
    return rels


def make_big(path, mib, algo="d", part_mib=0):
    """Write the large file; return (size, [(parts header, sum header)] as sr_post would
    announce it: one whole-file post, or one `i` post per block of part_mib MiB)."""
    new = hashlib.md5 if algo == "d" else hashlib.sha512
    bsz = (part_mib << 20) or (mib << 20)
    digests, h, filled = [], new(), 0
    with open(path, "wb") as f:
        block = os.urandom(16 << 20)
        for i in range(mib // 16):
            chunk = block[i % 7:] + block[:i % 7]      # cheap, distinct content per block
            f.write(chunk)
            view = memoryview(chunk)
            while view:
                take = min(len(view), bsz - filled)
                h.update(view[:take])
                view, filled = view[take:], filled + take
                if filled == bsz:
                    digests.append(h.hexdigest())
                    h, filled = new(), 0
    if filled:
        digests.append(h.hexdigest())
    size = os.path.getsize(path)
    if len(digests) == 1:
        return size, [(f"1,{size},1,0,0", f"{algo},{digests[0]}")]
    brem = size % bsz
    return size, [(f"i,{bsz},{len(digests)},{brem},{k}", f"{algo},{d}")
                  for k, d in enumerate(digests)]


def posts(base_url, rels):
    out = []
    for rel, data in rels:
        m = message.make_post(message.now(), base_url, "/" + rel, {
            "sum": "d," + hashlib.md5(data).hexdigest(), "parts": f"1,{len(data)},1,0,0",
            "mtime": "20240315123456.5", "atime": "20240315123456.5", "mode": "644"})
        out.append(m.encode())
    return out


# ------------------------------------------------------------------ limits

def loop_requests(base_url, rels, dst):
    import requests
    s = requests.Session()
    s.trust_env = False        # no proxy/netrc look-ups per request: the fastest plain loop
    t0 = time.perf_counter()
    for rel, _ in rels:
        r = s.get(base_url + rel)
        with open(os.path.join(dst, rel.replace("/", "_")), "wb") as f:
            f.write(r.content)
    dt = time.perf_counter() - t0
    s.close()
    return len(rels) / dt


def loop_http_client(port, rels, dst):
    c = http.client.HTTPConnection("127.0.0.1", port)
    t0 = time.perf_counter()
    for rel, _ in rels:
        c.request("GET", "/" + rel)
        body = c.getresponse().read()
        with open(os.path.join(dst, rel.replace("/", "_")), "wb") as f:
            f.write(body)
    dt = time.perf_counter() - t0
    c.close()
    return len(rels) / dt


def prime(where, size):
    """Write `size` bytes to a file in `where` and delete it. On the test VM, a GiB written
    right after memory was freed a few seconds ago is about twice as fast as one written
    when the freed memory has already gone back to the host (measured: curl -o to tmpfs
    1.7 s vs 3.0 s). Without a primer, whoever of curl and sr_subscribe went first in a
    pair paid the slow case; with one, both start from the same state.
    Returns the busy CPU-seconds of the write (see busy())."""
    path = os.path.join(where, ".primer")
    block = bytes(4 << 20)
    b0 = busy()
    with open(path, "wb") as f:
        for _ in range(max(1, size // len(block))):
            f.write(block)
    cpu = cpu_since(b0)
    os.unlink(path)
    return cpu


def write_cpu(where, size):
    """Busy CPU-seconds of writing ``size`` bytes from memory into a new file in ``where``
    (the second of two writes: the first may pay for memory the VM handed back)."""
    prime(where, size)
    return prime(where, size)


def busy():
    """CPU-seconds the whole machine has spent busy so far (all cores, every process and
    the kernel: /proc/stat less idle and iowait); None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def cpu_since(b0):
    b1 = busy()
    return None if b0 is None or b1 is None else b1 - b0


def curl(url, dst, cpu=None):
    b0 = busy()
    t0 = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-o", dst, url], check=True)
    dt = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(cpu_since(b0))
    return dt


# ------------------------------------------------------------------ sr_subscribe

class Sub:
    def __init__(self, top, port):
        self.top = top
        self.home = os.path.join(top, "home")
        self.env = dict(os.environ, HOME=self.home,
                        XDG_CONFIG_HOME=os.path.join(self.home, ".config"),
                        XDG_CACHE_HOME=os.path.join(self.home, ".cache"),
                        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.tag = uuid.uuid4().hex[:8]
        self.exchange = f"xs_guest_bench{self.tag}"
        self.report_exchange = f"xs_guest_benchrep{self.tag}"
        self.name = "bench"
        self.dst = os.path.join(top, "sub_dst")
        with Broker(BROKER) as b:
            for x in (self.exchange, self.report_exchange):
                b.declare_exchange(x)
        cdir = os.path.join(self.home, ".config", "sarra", "subscribe")
        os.makedirs(cdir, exist_ok=True)
        self.conf = os.path.join(cdir, "bench.conf")
        self.logdir = os.path.join(self.home, ".cache", "sarra", "log")
        self.profile = None
        self.extra = ""

    def configure(self, instances):
        with open(self.conf, "w") as f:
            f.write(f"broker {BROKER}\nexchange {self.exchange}\nexpire 10m\n"
                    f"report_exchange {self.report_exchange}\ninstances {instances}\n"
                    f"directory {self.dst}\nmirror on\nheartbeat 300\n{self.extra}accept .*\n")

    def cmd(self, *args, **kw):
        return subprocess.run([sys.executable, "-m", "sarra.commands.subscribe", *args],
                              env=self.env, cwd=self.home, capture_output=True, text=True, **kw)

    def publish(self, encoded):
        with Broker(BROKER) as b:        # a fresh connection: idle ones miss heartbeats
            for topic, body, headers in encoded:
                b.publish(self.exchange, topic, body, headers)
            b.wait_confirms(timeout=120)

    def reset_dst(self):
        shutil.rmtree(self.dst, ignore_errors=True)
        os.makedirs(self.dst)
        shutil.rmtree(self.logdir, ignore_errors=True)

    def drain(self, encoded, instances):
        """Publish, run the subscriber until every file is written; (files/s, [rss])."""
        self.reset_dst()
        self.configure(instances)
        r = self.cmd("setup", self.name)
        if r.returncode:
            raise SystemExit("bench: sr_subscribe setup failed: " + r.stderr)
        self.publish(encoded)
        n = len(encoded)
        if instances == 1:
            os.makedirs(self.logdir, exist_ok=True)
            logs = [os.path.join(self.logdir, "fg.log")]
            prof = ["-m", "cProfile", "-o", self.profile] if self.profile else []
            p = subprocess.Popen([sys.executable, *prof, "-m", "sarra.commands.subscribe",
                                  "foreground", self.name], env=self.env, cwd=self.home,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=open(logs[0], "wb"), start_new_session=True)
            pids = [p.pid]
        else:
            r = self.cmd("start", self.name)
            if r.returncode:
                raise SystemExit("bench: sr_subscribe start failed: " + r.stdout + r.stderr)
            logs = [os.path.join(self.logdir, f"sr_subscribe_bench_{k:02d}.log")
                    for k in range(1, instances + 1)]
            sdir = os.path.join(self.home, ".cache", "sarra", "subscribe", self.name)
            pids = [int(open(os.path.join(sdir, f"sr_subscribe_bench_{k:02d}.pid")).read())
                    for k in range(1, instances + 1)]
        try:
            deadline = time.monotonic() + 600
            while _count(logs) < n:
                if time.monotonic() > deadline or (instances == 1 and p.poll() is not None):
                    raise SystemExit(f"bench: only {_count(logs)} of {n} files; see {logs}")
                time.sleep(0.5)
            rss = [_hwm(pid) for pid in pids]
        finally:
            if instances == 1:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
            else:
                self.cmd("stop", self.name)
        first, last = _span(logs)
        return (n - 1) / (last - first), rss

    def big(self, rel, posts_, size, base_url, dst=None, instances=1):
        """One large file through running subscribers: (seconds from publish to rename,
        peak RSS, CPU-seconds the machine was busy meanwhile)."""
        saved, self.dst = self.dst, dst or self.dst
        try:
            return self._big(rel, posts_, size, base_url, instances)
        finally:
            shutil.rmtree(self.dst, ignore_errors=True)
            self.dst = saved

    def _big(self, rel, posts_, size, base_url, instances):
        self.reset_dst()
        saved = self.extra
        if instances > 1:
            self.extra += "prefetch 1\n"   # one block per instance at a time
        self.configure(1)
        self.extra = saved
        self.cmd("setup", self.name)
        os.makedirs(self.logdir, exist_ok=True)
        procs, logs = [], []
        for k in range(instances):      # foreground processes of one config share its queue
            log = os.path.join(self.logdir, f"big{k}.log")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "sarra.commands.subscribe", "foreground", self.name],
                env=self.env, cwd=self.home, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True))
        for p, log in zip(procs, logs):
            while "started, queue" not in open(log, errors="replace").read():
                if p.poll() is not None:
                    raise SystemExit(f"bench: sr_subscribe exited; see {log}")
                time.sleep(0.05)
        now = message.now()
        msgs = [message.make_post(now, base_url, "/" + rel, {
            "sum": sumh, "parts": parts, "mode": "644"}).encode() for parts, sumh in posts_]
        final = os.path.join(self.dst, rel)
        # connected before the clock starts: curl's time has no broker connection in it either
        pub = Broker(BROKER).connect()
        try:
            b0 = busy()
            t0 = time.perf_counter()
            for topic, body, headers in msgs:
                pub.publish(self.exchange, topic, body, headers)
            pub.wait_confirms(timeout=120)
            while not os.path.exists(final):
                if any(p.poll() is not None for p in procs) or time.perf_counter() - t0 > 600:
                    raise SystemExit("bench: the large file did not arrive:\n" + "".join(
                        open(log, errors="replace").read()[-3000:] for log in logs))
                time.sleep(0.005)
            dt = time.perf_counter() - t0
            cpu = cpu_since(b0)
            rss = max(_hwm(p.pid) or 0 for p in procs)
        finally:
            pub.close()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(30)
        if os.path.getsize(final) != size:
            raise SystemExit("bench: the large file arrived with the wrong size")
        return dt, rss, cpu

    def close(self):
        self.cmd("cleanup", self.name)
        with Broker(BROKER) as b:
            for x in (self.exchange, self.report_exchange):
                try:
                    b.delete_exchange(x)
                except Exception:
                    pass


def _count(logs):
    n = 0
    for path in logs:
        try:
            with open(path, "rb") as f:
                n += f.read().count(b" downloaded /")
        except OSError:
            pass
    return n


def _span(logs):
    stamps = []
    for path in logs:
        with open(path, errors="replace") as f:
            for line in f:
                if " downloaded /" in line:
                    stamps.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return min(stamps), max(stamps)


def _hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--big-sum", choices=("d", "s"), default="d",
                    help="checksum announced for the large file: d (MD5, the v2 default) or "
                         "s (SHA-512, the sr3 default)")
    ap.add_argument("--big-parts", type=int, default=200, metavar="MIB",
                    help="announce the large file in blocks of MIB MiB (default 200: "
                         "sr_post's default blocksize); 0 = one whole-file post")
    ap.add_argument("--big-instances", type=int, default=2,
                    help="subscriber processes sharing the queue for the large file "
                         "(default 2: one per CPU here)")
    ap.add_argument("--settle", type=float, default=3.0, metavar="S",
                    help="seconds of quiet before each large-file transfer (after sync)")
    ap.add_argument("--no-primer", dest="primer", action="store_false",
                    help="no 1 GiB write+delete in the tmpfs before each large-file "
                         "transfer (see prime(): it puts curl and us in the same state)")
    ap.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    ap.add_argument("--skip", default="", help="comma list: small, two, big")
    ap.add_argument("--dir", help="where files are served from and written to "
                    "(default /dev/shm when writable, else the temporary directory)")
    ap.add_argument("--config", action="append", default=[],
                    help="extra line for the subscriber's configuration (experiments)")
    ap.add_argument("--profile", help="write cProfile stats of the 1-instance runs here")
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve_python(a.serve[0], int(a.serve[1]))
        return 0
    skip = set(filter(None, a.skip.split(",")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))     # clean up on timeout(1)
    # tmpfs when there is one: file-system metadata costs of a shared VM disk vary by 5x
    # from one second to the next and would drown what is measured (both sides write there)
    base = a.dir or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    top = tempfile.mkdtemp(prefix="sarra-bench-sub-", dir=base)
    root = os.path.join(top, "www")
    os.makedirs(root)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/"
    rels = make_files(root, a.files)
    big_posts = big_size = None
    if "big" not in skip:
        big_size, big_posts = make_big(os.path.join(root, "big.bin"), a.big_mib, a.big_sum,
                                       a.big_parts)
    use_nginx = a.server == "nginx" or (a.server == "auto" and NGINX)
    server, server_name = (start_nginx(root, top, port) if use_nginx
                           else start_python_server(root, port))
    sub = None
    try:
        sub = Sub(top, port)
        sub.profile = a.profile and os.path.abspath(a.profile)
        sub.extra = "".join(line + "\n" for line in a.config)
        encoded = posts(base_url, rels)
        print(f"server: {server_name} on 127.0.0.1:{port}; {a.files} files of 1 KiB; "
              f"{a.runs} runs each, medians; {os.cpu_count()} CPUs; files in {top}")
        res = {"loop": [], "httpc": [], "one": [], "two": [], "curl": [], "curlnull": [],
               "bigsub": [], "curldisk": [], "bigdisk": [], "hash": []}
        disk = tempfile.mkdtemp(prefix="sarra-bench-disk-")     # the same on a disk file system
        rss = {"one": [], "two": [], "big": []}
        cpu = {"curl": [], "bigsub": [], "curldisk": [], "bigdisk": [], "curlnull": [],
               "write_curl": [], "write_curldisk": []}
        for r in range(a.runs):
            ldst = os.path.join(top, "loop_dst")
            for key, fn in (("loop", lambda: loop_requests(base_url, rels, ldst)),
                            ("httpc", lambda: loop_http_client(port, rels, ldst))):
                shutil.rmtree(ldst, ignore_errors=True)
                os.makedirs(ldst)
                res[key].append(fn())
            if "small" not in skip:
                rate, m = sub.drain(encoded, 1)
                res["one"].append(rate)
                rss["one"] += m
            if "two" not in skip:
                rate, m = sub.drain(encoded, 2)
                res["two"].append(rate)
                rss["two"] += m
            if "big" not in skip:
                # each transfer starts with nothing dirty in the page cache (os.sync), and
                # who goes first alternates: writeback of the previous GiB slows the next
                for where, cu, su in ((top, "curl", "bigsub"), (disk, "curldisk", "bigdisk")):
                    steps = [cu, su] if r % 2 == 0 else [su, cu]
                    for step in steps:
                        if a.primer:
                            prime(top, big_size)
                        os.sync()
                        time.sleep(a.settle)
                        if step == cu:
                            cdst = os.path.join(where, "curl.bin")
                            res[cu].append(curl(base_url + "big.bin", cdst, cpu[cu]))
                            os.unlink(cdst)
                        else:
                            dt, m, c = sub.big("big.bin", big_posts, big_size, base_url,
                                               os.path.join(where, "sub_big"), a.big_instances)
                            res[su].append(dt)
                            cpu[su].append(c)
                            rss["big"].append(m)
                    if where == top:
                        os.sync()
                        time.sleep(a.settle)
                        res["curlnull"].append(curl(base_url + "big.bin", "/dev/null",
                                                    cpu["curlnull"]))
                    cpu["write_" + cu].append(write_cpu(where, big_size))
                # the other half of the floor, in the same run: how long hashing the bytes
                # with the announced sum takes now (the machine may be shared)
                res["hash"].append(md5_time(os.path.join(root, "big.bin"), a.big_sum))
            print(f"  run {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in res.items() if v))
        md5s = statistics.median(res["hash"]) if res["hash"] else None
        report(res, rss, a, big_size, md5s, top, disk, cpu)
    finally:
        if sub is not None:
            sub.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
    return 0


def _median_of(cpu, key):
    vals = [v for v in (cpu or {}).get(key, ()) if v is not None]
    return statistics.median(vals) if vals else None


def md5_time(path, algo="d"):
    """Seconds to hash the file here (MD5 for d, SHA-512 for s), from the page cache: the
    floor of a download verified against that sum (the hash is sequential)."""
    h = hashlib.md5() if algo == "d" else hashlib.sha512()
    with open(path, "rb", buffering=0) as f:
        t0 = time.perf_counter()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        return time.perf_counter() - t0


def report(res, rss, a, big_size, md5s, tmp, disk, cpu=None):
    med = {k: statistics.median(v) for k, v in res.items() if v}
    mib = 1 << 20
    limit = med["loop"]
    print()
    print(f"limit   requests.Session loop      {limit:8.0f} files/s")
    print(f"        http.client loop           {med['httpc']:8.0f} files/s")
    if "one" in med:
        ok = med["one"] >= 0.7 * limit
        print(f"ours    sr_subscribe, 1 instance   {med['one']:8.0f} files/s  "
              f"{100 * med['one'] / limit:5.1f}% of the loop (target 70%)  "
              f"{100 * med['one'] / med['httpc']:5.1f}% of http.client  -> "
              f"{'ok' if ok else 'BELOW'}")
    if "two" in med:
        print(f"ours    sr_subscribe, 2 instances  {med['two']:8.0f} files/s  "
              f"{100 * med['two'] / limit:5.1f}% of the loop")
    if "curl" in med:
        how = f"in {a.big_parts} MiB blocks" if a.big_parts else "whole"
        print(f"large   {big_size / mib:.0f} MiB announced {how}, sum {a.big_sum}, "
              f"{a.big_instances} subscriber process(es), {a.settle:g} s settle before each"
              + (", after a primer write" if a.primer else ""))
        n = big_size / med["curlnull"] / mib
        print(f"limit   curl -o /dev/null, {big_size / mib:.0f} MiB  {n:6.0f} MiB/s ({med['curlnull']:.2f} s)"
              f"  (network only: no file, no checksum)")
        if md5s:
            name = "MD5" if a.big_sum == "d" else "SHA-512"
            print(f"        {name:7s} of {big_size / mib:.0f} MiB in memory {big_size / md5s / mib:6.0f} MiB/s "
                  f"({md5s:.2f} s)  (floor of any download verified against a '{a.big_sum}' sum)")
        for cu, sub, where in (("curl", "bigsub", tmp), ("curldisk", "bigdisk", disk)):
            c, s = big_size / med[cu] / mib, big_size / med[sub] / mib
            print(f"limit   curl -o file in {where}")
            print(f"                                   {c:6.0f} MiB/s ({med[cu]:.2f} s)")
            print(f"ours    sr_subscribe to {where}")
            print(f"                                   {s:6.0f} MiB/s ({med[sub]:.2f} s)  "
                  f"{100 * s / c:5.1f}% of curl (target 80%)  -> {'ok' if s >= 0.8 * c else 'BELOW'}")
            print(floorline.floor_line(where, med[sub], med[cu], md5s)) if md5s else None
            cc, sc = _median_of(cpu, cu), _median_of(cpu, sub)
            if cc is not None and sc is not None and md5s:
                # a verified download does at least curl's work and the hash's: spread
                # perfectly over every core, it still takes (their CPU-seconds) / cores
                ncpu = os.cpu_count() or 1
                floor = (cc + md5s) / ncpu
                print(f"        busy CPU-seconds, whole machine: curl {cc:.2f}, ours {sc:.2f} "
                      f"({100 * sc / (med[sub] * ncpu):.0f}% of {ncpu} cores)")
                print(f"limit   verified floor (curl's CPU + the hash's) / {ncpu} cores: "
                      f"{floor:.2f} s = {100 * med[cu] / floor:.1f}% of curl; "
                      f"ours is {100 * floor / med[sub]:.1f}% of that floor")
                nc, wc = _median_of(cpu, "curlnull"), _median_of(cpu, "write_" + cu)
                if nc is not None and wc is not None:
                    # the least any verified download can do: receive the bytes (curl to
                    # /dev/null), put them in a file (a write from memory), hash them
                    low = (nc + wc + md5s) / ncpu
                    print(f"limit   absolute floor (network {nc:.2f} + write {wc:.2f} + hash "
                          f"{md5s:.2f} CPU-s) / {ncpu} cores: {low:.2f} s = "
                          f"{100 * med[cu] / low:.1f}% of curl; ours is "
                          f"{100 * low / med[sub]:.1f}% of that floor")
    for k, label in (("one", "1 instance"), ("two", "2 instances"), ("big", "large file")):
        vals = [v for v in rss[k] if v]
        if vals:
            peak = max(vals) / 1e6
            print(f"rss     peak per instance, {label:12s} {peak:6.1f} MB (target < 40 MB)  -> "
                  f"{'ok' if peak < 40 else 'ABOVE'}")


if __name__ == "__main__":
    sys.exit(main())
