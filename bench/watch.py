"""sr_watch: files/s from creation to announcement, next to sr_post on the same tree.

A burst of N files (default 10,000 in 100 directories) is created in a watched directory;
the rate is N / (time of the last announcement received - time the first file was
created).  The same run then posts the same tree with sr_post (rate = N / (last message -
sr_post start)).  Every file must be announced exactly once.  Three runs; medians printed.

    python bench/watch.py [--files N] [--dirs D] [--runs R] [--size BYTES]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import broker_url, child_env, median  # noqa: E402

import amqp  # noqa: E402


class Tap:
    """A private queue on the exchange; a thread records (arrival time, relpath)."""

    def __init__(self, url, exchange):
        from urllib.parse import urlparse
        u = urlparse(url)
        self.conn = amqp.Connection(host=f"{u.hostname}:{u.port or 5672}", userid=u.username,
                                    password=u.password, virtual_host="/")
        self.conn.connect()
        self.ch = self.conn.channel()
        self.ch.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        self.exchange = exchange
        self.q, _, _ = self.ch.queue_declare("", exclusive=True, auto_delete=True)
        self.ch.queue_bind(self.q, exchange, "#")
        self.ch.basic_qos(0, 2000, False)
        self.got = []
        self.stop = threading.Event()
        self.ch.basic_consume(self.q, callback=self._on, no_ack=True)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on(self, msg):
        body = msg.body.decode() if isinstance(msg.body, bytes) else msg.body
        self.got.append((time.perf_counter(), body.split(" ")[2]))

    def _run(self):
        while not self.stop.is_set():
            try:
                self.conn.drain_events(timeout=0.1)
            except OSError:            # socket.timeout
                pass

    def wait(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.got) >= n

    def reset(self):
        self.got = []

    def close(self):
        self.stop.set()
        self.thread.join()
        self.ch.exchange_delete(self.exchange)
        self.conn.close()


def command(name):
    module = {"sr_watch": "watch", "sr_post": "post"}[name]
    return [sys.executable, "-c", f"import sys; sys.argv[0]={name!r}; "
            f"from sarra.commands.{module} import main; sys.exit(main())"]


def make_files(root, files, dirs, size):
    per = files // dirs
    payload = os.urandom(size)
    t0 = time.perf_counter()
    for d in range(dirs):
        dd = root / f"d{d:03d}"
        dd.mkdir()
        for i in range(per):
            with open(dd / f"f{i:05d}", "wb") as f:
                f.write(payload[:size - 8] + b"%08d" % (d * per + i))
    return t0, time.perf_counter()


def check_once(tap, n, what):
    time.sleep(1.0)                     # late duplicates would show up here
    paths = [p for _, p in tap.got]
    if len(paths) != n or len(set(paths)) != n:
        raise SystemExit(f"{what}: {len(paths)} posts for {len(set(paths))} distinct files, "
                         f"expected {n} exactly once")


def run_watch(base, tap, env, mode, files, dirs, size):
    root = base / f"watched_{mode}"
    root.mkdir()
    conf = [f"post_broker {broker_url()}", "post_base_url http://127.0.0.1:8090/",
            f"post_base_dir {base}", f"post_exchange {tap.exchange}", f"path {root}",
            "on_post None"]
    if mode == "polling":
        conf.append("force_polling on")
    cdir = Path(env["HOME"]) / ".config" / "sarra" / "watch"
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / f"bench_{mode}.conf").write_text("\n".join(conf) + "\n")
    out = base / f"watch_{mode}.log"
    with open(out, "wb") as fh:
        p = subprocess.Popen(command("sr_watch") + ["foreground", f"bench_{mode}"], env=env,
                             stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "watching" not in out.read_text() and time.monotonic() < deadline:
            if p.poll() is not None:
                raise SystemExit(f"sr_watch exited:\n{out.read_text()}")
            time.sleep(0.05)
        tap.reset()
        t0, t_made = make_files(root, files, dirs, size)
        if not tap.wait(files, timeout=300):
            raise SystemExit(f"sr_watch {mode}: only {len(tap.got)} of {files} posted\n"
                             f"{out.read_text()[-3000:]}")
        t_last = max(t for t, _ in tap.got[:files])
        check_once(tap, files, f"sr_watch {mode}")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    return files / (t_last - t0), files / (t_made - t0), root


def run_post(base, tap, env, root, files):
    tap.reset()
    t0 = time.perf_counter()
    r = subprocess.run(command("sr_post") + [
        "--post_broker", broker_url(), "--post_base_url", "http://127.0.0.1:8090/",
        "--post_base_dir", str(base), "--post_exchange", tap.exchange, "--on_post", "None",
        str(root)], env=env, capture_output=True, text=True)
    if r.returncode != 0 or not tap.wait(files, timeout=300):
        raise SystemExit(f"sr_post failed ({r.returncode}): {r.stderr[-2000:]}")
    t_last = max(t for t, _ in tap.got[:files])
    check_once(tap, files, "sr_post")
    return files / (t_last - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--no-polling", action="store_true", help="skip the force_polling runs")
    ap.add_argument("--where", nargs="*", default=[tempfile.gettempdir(), "/dev/shm"],
                    help="directories to create the trees in (default: the temp dir, and "
                         "/dev/shm where file creation is not the bottleneck)")
    a = ap.parse_args()
    for where in a.where:
        if os.path.isdir(where):
            bench(a, where)


def bench(a, where):
    fs = subprocess.run(["stat", "-f", "-c", "%T", where], capture_output=True, text=True)
    print(f"== trees in {where} ({fs.stdout.strip() or '?'})", flush=True)
    results = {"inotify": [], "polling": [], "sr_post": [], "creation": []}
    for run in range(1, a.runs + 1):
        base = Path(tempfile.mkdtemp(prefix="bench_watch_", dir=where))
        home = base / "home"
        (home / ".config").mkdir(parents=True)
        env = child_env({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                         "XDG_CACHE_HOME": str(home / ".cache")})
        tap = Tap(broker_url(), f"xs_guest_benchwatch{uuid.uuid4().hex[:8]}")
        try:
            rate, made, root = run_watch(base, tap, env, "inotify", a.files, a.dirs, a.size)
            results["inotify"].append(rate)
            results["creation"].append(made)
            results["sr_post"].append(run_post(base, tap, env, root, a.files))
            line = (f"run {run}: creation {made:8.0f} files/s | sr_watch inotify {rate:7.0f} "
                    f"files/s | sr_post {results['sr_post'][-1]:7.0f} files/s")
            if not a.no_polling:
                rate, _, _ = run_watch(base, tap, env, "polling", a.files, a.dirs, a.size)
                results["polling"].append(rate)
                line += f" | sr_watch polling {rate:7.0f} files/s"
            print(line, flush=True)
        finally:
            tap.close()
            shutil.rmtree(base, ignore_errors=True)
    print(f"{a.files} files in {a.dirs} directories, {a.size} bytes each, in {where}: "
          f"median of {a.runs} runs (files/s from creation to announcement):")
    for key, label in (("inotify", "sr_watch (inotify)"), ("polling", "sr_watch (force_polling)"),
                       ("sr_post", "sr_post on the same tree"),
                       ("creation", "file creation alone")):
        if results[key]:
            print(f"  {label:28s} {median(results[key]):8.0f} files/s")
    print(flush=True)

if __name__ == "__main__":
    sys.exit(main())
