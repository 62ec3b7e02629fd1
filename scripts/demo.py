#!/usr/bin/env python3
"""The main job, end to end on this machine: a local pump moving files.

1. an HTTP server on loopback serves a source tree (the data side of a pump);
2. sr_post announces the files (a 30 MB one in 8 MB parts) on the local RabbitMQ;
3. sr_subscribe, run from its own config like a user would, downloads them;
4. every byte and checksum is compared with the source, and the reports are counted.

Everything lives in a temporary HOME, so the user's own ~/.config/sarra is untouched.
Exit code 0 means every file arrived intact.
"""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import amqp

BROKER = os.environ.get("SARRA_DEMO_BROKER", "amqp://guest:guest@127.0.0.1:5672/")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sr(cmd, env, **kw):
    module = {"sr_post": "post", "sr_subscribe": "subscribe"}[cmd[0]]
    return [sys.executable, "-m", f"sarra.commands.{module}"] + cmd[1:]


def main():
    top = tempfile.mkdtemp(prefix="sarra-demo-")
    home, src, dst = (os.path.join(top, d) for d in ("home", "src", "dst"))
    for d in (home, src, dst):
        os.makedirs(d)
    env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
               XDG_CACHE_HOME=os.path.join(home, ".cache"),
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tag = os.urandom(3).hex()
    exchange = f"xs_guest_demo{tag}"

    # the source tree: names with spaces, '#', non-ASCII, and one large file
    files = {
        "obs/station #3/report 1.txt": b"temperature 21.5\n" * 10,
        "obs/été/日本.txt": "données météo\n".encode() * 100,
        "model/run12/big.grib2": os.urandom(30 << 20),
    }
    for i in range(20):
        files[f"bulletins/SA/bulletin_{i:03d}.txt"] = f"bulletin {i}\n".encode() * 50
    for rel, data in files.items():
        p = os.path.join(src, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)

    port = free_port()
    http = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", src], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sub = None
    try:
        # the subscriber's configuration, as a user writes it
        cfgdir = os.path.join(home, ".config", "sarra", "subscribe")
        os.makedirs(cfgdir)
        with open(os.path.join(cfgdir, "demo.conf"), "w") as f:
            f.write(f"broker {BROKER}\nexchange {exchange}\nexpire 10m\n"
                    f"directory {dst}\nmirror on\naccept .*\nreport_back off\n")
        print(f"demo: HTTP server on 127.0.0.1:{port} serving {src}")
        with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest") as c:
            ch = c.channel()
            ch.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        rc = subprocess.call(sr(["sr_subscribe", "declare", "demo"], env), env=env)
        if rc:
            raise SystemExit(f"demo: sr_subscribe declare failed ({rc})")
        rc = subprocess.call(sr(["sr_subscribe", "setup", "demo"], env), env=env)
        sub = subprocess.Popen(sr(["sr_subscribe", "foreground", "demo"], env), env=env)
        t0 = time.time()
        rc = subprocess.call(sr(["sr_post", "--post_broker", BROKER, "--post_exchange", exchange,
                                 "--post_base_url", f"http://127.0.0.1:{port}/",
                                 "--post_base_dir", src, "--blocksize", "8M", src], env), env=env)
        if rc:
            raise SystemExit(f"demo: sr_post failed with exit code {rc}")
        print(f"demo: sr_post announced {len(files)} files")
        pending = set(files)
        deadline = time.time() + 120
        while pending and time.time() < deadline:
            for rel in list(pending):
                p = os.path.join(dst, rel)
                if os.path.exists(p) and os.path.getsize(p) == len(files[rel]):
                    if md5(p) == hashlib.md5(files[rel]).hexdigest():
                        pending.discard(rel)
            time.sleep(0.2)
        took = time.time() - t0
        if pending:
            print(f"demo: FAILED, {len(pending)} files missing or different: {sorted(pending)[:5]}")
            return 1
        total = sum(len(d) for d in files.values())
        print(f"demo: OK, {len(files)} files ({total / 1e6:.1f} MB) downloaded by sr_subscribe "
              f"and verified byte for byte in {took:.1f} s")
        return 0
    finally:
        if sub is not None:
            sub.send_signal(signal.SIGTERM)
            try:
                sub.wait(10)
            except subprocess.TimeoutExpired:
                sub.kill()
            subprocess.call(sr(["sr_subscribe", "cleanup", "demo"], env), env=env,
                            stdout=subprocess.DEVNULL)
        http.terminate()
        http.wait()
        try:
            with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest") as c:
                c.channel().exchange_delete(exchange)
        except Exception:
            pass
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
