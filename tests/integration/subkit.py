"""Shared helpers of the sr_subscribe integration tests (this module holds no test).

`sub_env` gives each test its own exchange, report exchange (with a tap bound to it),
source and destination trees, a configuration name, and helpers to write the config,
post with sr_post, publish hand-made v02 messages, run `sr_subscribe foreground` as a
subprocess and wait for reports or files. Everything it started is stopped and the queue
removed (`sr_subscribe cleanup`) when the test ends.
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import amqp
import pytest

from sarra import message
from tests.conftest import amqp_connect, command_argv, command_env

PLUGIN_ON_FILE = '''\
import os
from sarra.plugin import get_option


def _record(parent, hook):
    path = os.path.join(parent.msg.new_dir, parent.msg.new_file)
    line = ("%d %s %s\\n" % (os.getpid(), hook, path)).encode()
    fd = os.open(get_option(parent, "count_file_log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return True


def on_file(parent):
    pause = float(get_option(parent, "count_file_sleep", 0))
    if pause:
        import time
        time.sleep(pause)          # keeps a test's subscriber busy for a predictable time
    return _record(parent, "on_file")


def on_part(parent):
    return _record(parent, "on_part")
'''


def md5(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_tree(root: Path, count: int, size: int = 100, subdirs: int = 10, prefix="f"):
    """count files of about size bytes (distinct content) under root/d<k>/; {rel: md5}."""
    out = {}
    for i in range(count):
        rel = f"d{i % subdirs}/{prefix}{i:05d}.txt"
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = (f"{prefix} {i} ".encode() * (size // 8 + 1))[:size]
        p.write_bytes(data)
        out[rel] = hashlib.md5(data).hexdigest()
    return out


class Reports:
    """Reports read from the report exchange tap: parsed 7-field bodies plus headers."""

    def __init__(self, tap):
        self.tap = tap
        self.items = []

    def wait(self, count, timeout=60.0):
        deadline = time.monotonic() + timeout
        while len(self.items) < count and time.monotonic() < deadline:
            for key, body, headers in self.tap.get(count - len(self.items), timeout=0.5):
                f = body.split(" ")
                self.items.append({"key": key, "body": body, "fields": f,
                                   "code": int(f[3]) if len(f) > 3 and f[3].isdigit() else None,
                                   "relpath": f[2] if len(f) > 2 else None,
                                   "headers": {k: (v.decode() if isinstance(v, bytes) else v)
                                               for k, v in headers.items()}})
        return self.items

    def settle(self, quiet=1.0):
        """Read until nothing arrives for `quiet` seconds."""
        while True:
            n = len(self.items)
            self.wait(n + 1, timeout=quiet)
            if len(self.items) == n:
                return self.items

    def codes(self, relpath=None):
        return [r["code"] for r in self.items if relpath is None or r["relpath"] == relpath]


class SubEnv:
    def __init__(self, home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path):
        self.home, self.uid, self.broker = Path(home), uid, broker_url
        self.tmp = Path(tmp_path)
        self.exchange = amqp_exchange(f"xs_guest_sub{uid}", durable=True)
        self.report_exchange = amqp_exchange(f"xs_guest_rep{uid}")
        self.reports = Reports(amqp_tap(self.report_exchange))
        self.src = self.tmp / "src"
        self.dst = self.tmp / "dst"
        self.src.mkdir()
        self.dst.mkdir()
        self.name = f"t{uid}"
        self.cfgdir = self.home / ".config" / "sarra" / "subscribe"
        self.cfgdir.mkdir(parents=True, exist_ok=True)
        self.plugdir = self.home / ".config" / "sarra" / "plugins"
        self.plugdir.mkdir(parents=True, exist_ok=True)
        self.on_file_log = self.tmp / "on_file.log"
        (self.plugdir / "count_file.py").write_text(PLUGIN_ON_FILE)
        self.procs = []
        self.logs = []
        self._conn = None

    # ---------------------------------------------------------------- config
    @property
    def config_path(self) -> Path:
        return self.cfgdir / f"{self.name}.conf"

    def config(self, extra="", directory=None, report=True, count_files=True, accept=True):
        lines = [f"broker {self.broker}", f"exchange {self.exchange}", "expire 5m",
                 f"directory {directory or self.dst}", "heartbeat 2"]
        if report:
            rx = report if isinstance(report, str) else self.report_exchange
            lines.append(f"report_exchange {rx}")
        else:
            lines.append("report_back off")
        if count_files:
            lines += ["on_file count_file", f"count_file_log {self.on_file_log}"]
            if count_files == "parts":
                lines.append("on_part count_file")
        lines += [x.strip() for x in extra.strip().splitlines() if x.strip()]
        if accept:
            lines.append("accept .*")
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def credentials(self, text):
        p = self.home / ".config" / "sarra" / "credentials.conf"
        p.write_text(text)
        os.chmod(p, 0o600)

    # ---------------------------------------------------------------- commands
    def cmd(self, *args, timeout=60, check=False):
        argv = command_argv("sr_subscribe") + [str(a) for a in args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=command_env(), cwd=str(self.home), stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError("sr_subscribe %s exited %d\n%s%s" % (
                " ".join(map(str, args)), r.returncode, r.stdout, r.stderr))
        return r

    def setup(self):
        """Declare and bind the queue now, so that posts made before start are kept."""
        self.cmd("setup", self.name, check=True)

    def foreground(self, *extra):
        """`sr_subscribe foreground <name>` as a subprocess; stderr kept in a log file."""
        log = self.tmp / f"fg{len(self.logs) + 1}.log"
        fh = open(log, "wb")
        p = subprocess.Popen(command_argv("sr_subscribe") + [*extra, "foreground", self.name],
                             stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, env=command_env(),
                             cwd=str(self.home), start_new_session=True)
        fh.close()
        self.procs.append(p)
        self.logs.append(log)
        return p

    def log_text(self, i=None):
        logs = self.logs if i is None else [self.logs[i]]
        return "".join(p.read_text(errors="replace") for p in logs if p.exists())

    def stop(self, p, sig=signal.SIGTERM, timeout=10):
        if p.poll() is None:
            p.send_signal(sig)
        return p.wait(timeout)

    def post(self, *paths, blocksize="0", extra=(), base_url=None):
        argv = command_argv("sr_post") + [
            "--post_broker", self.broker, "--post_exchange", self.exchange,
            "--post_base_url", base_url or self.base_url, "--post_base_dir", str(self.src),
            "--blocksize", blocksize, *extra, *[str(p) for p in paths]]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           env=command_env(), cwd=str(self.home), stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        return r

    # ---------------------------------------------------------------- raw publishing
    def channel(self):
        if self._conn is None:
            self._conn = amqp_connect(self.broker)
            self._ch = self._conn.channel()
        return self._ch

    def publish(self, body, headers, topic=None):
        """Publish one message as given (bytes/str body, any headers)."""
        if topic is None:
            fields = body.split() if isinstance(body, str) else []
            topic = message.topic_for("v02.post", fields[2]) if len(fields) >= 3 else "v02.post"
        props = {"application_headers": headers, "delivery_mode": 2,
                 "content_type": "text/plain", "content_encoding": "utf-8"}
        self.channel().basic_publish(amqp.Message(body, **props), exchange=self.exchange,
                                     routing_key=topic)

    def publish_msg(self, msg):
        topic, body, headers = msg.encode(allow_long_headers=True)
        self.publish(body, headers, topic)

    def queue_depth(self, queue):
        _, count, _ = self.channel().queue_declare(queue, passive=True)
        return count

    # ---------------------------------------------------------------- state
    def state_dir(self) -> Path:
        return self.home / ".cache" / "sarra" / "subscribe" / self.name

    def queue_name(self):
        files = list(self.state_dir().glob("*.qname"))
        return files[0].read_text().strip() if files else None

    def hook_lines(self, hook="on_file"):
        """[(pid, path)] recorded by the count_file plugin for that hook."""
        try:
            text = self.on_file_log.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            pid, h, path = line.split(" ", 2)
            if h == hook:
                out.append((int(pid), path))
        return out

    def on_file_lines(self):
        return [path for _, path in self.hook_lines("on_file")]

    def wait_files(self, expected, timeout=60.0, root=None):
        """Wait until every rel of expected {rel: md5} exists under root with that md5."""
        root = Path(root or self.dst)
        pending = dict(expected)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for rel, digest in list(pending.items()):
                p = root / rel
                try:
                    if p.is_file() and md5(p) == digest:
                        del pending[rel]
                except OSError:
                    pass
            if pending:
                time.sleep(0.2)
        return pending

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)
        try:
            self.cmd("cleanup", self.name, timeout=30)
        except Exception:
            pass
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass


@pytest.fixture
def sub_env(home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path):
    env = SubEnv(home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path)
    try:
        yield env
    finally:
        env.close()


def post_msg(base_url, relpath, data=b"", headers=None, algo="d"):
    """A v02 post for data served at base_url+relpath (whole file, md5 by default)."""
    h = {"sum": f"{algo}," + (hashlib.md5(data).hexdigest() if algo == "d"
                             else hashlib.sha512(data).hexdigest()),
         "parts": f"1,{len(data)},1,0,0", "mtime": "20240315123456.5", "mode": "644"}
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    return message.make_post(message.now(), base_url, relpath, h)


class HttpStub:
    """A small keep-alive HTTP/1.1 server in a thread of the test process, for what the
    module fixture server cannot do: count requests, hold a response half-way until a gate
    opens (`gates`), trickle a body slowly (`trickle`), serve bytes from memory."""

    def __init__(self):
        self.files = {}          # path -> bytes
        self.gates = {}          # path -> threading.Event: half the body, then wait
        self.trickle = {}        # path -> bytes per 10 ms
        self.requests = []       # paths asked for, in order
        self.redirects = {}      # path -> location (302)
        self.short = set()       # paths whose body stops half-way (connection closed)
        self.chunked = set()     # paths sent with Transfer-Encoding: chunked
        self.ignore_range = False
        self.close_after = False  # close the connection after every answer
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self, path):
        return sum(1 for p in self.requests if p == path)

    def close(self):
        self.closing = True
        for g in self.gates.values():
            g.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            while not self.closing:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                hdrs = {k.strip().lower(): v.strip() for k, _, v in
                        (line.partition(":") for line in lines[1:])}
                self.requests.append(path)
                self.headers = hdrs
                if not self._answer(conn, path, hdrs.get("range")) or self.close_after:
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, conn, path, rng):
        """Send one answer; False when the connection must be closed after it."""
        from urllib.parse import unquote
        name = unquote(path)
        if name in self.redirects:
            conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {self.redirects[name]}\r\n"
                         "Content-Length: 0\r\n\r\n".encode())
            return True
        data = self.files.get(name)
        if data is None:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
            return True
        status = "200 OK"
        extra = ""
        m = re.match(r"bytes=(\d+)-(\d*)$", rng or "")
        if m and not self.ignore_range:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            extra = f"Content-Range: bytes {start}-{end}/{len(data)}\r\n"
            data, status = data[start:end + 1], "206 Partial Content"
        if name in self.chunked:
            half = len(data) // 2
            conn.sendall(f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\nX-Folded: a\r\n"
                         f" b\r\n{extra}\r\n".encode() + b"".join(
                             b"%x\r\n%s\r\n" % (len(c), c) for c in (data[:half], data[half:]))
                         + b"0\r\n\r\n")
            return True
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(data)}\r\n{extra}\r\n"
                     .encode())
        gate, step = self.gates.get(name), self.trickle.get(name)
        if name in self.short:
            conn.sendall(data[:len(data) // 2])
            return False
        if gate is not None:
            conn.sendall(data[:len(data) // 2])
            gate.wait(60)
            conn.sendall(data[len(data) // 2:])
        elif step:
            for i in range(0, len(data), step):
                if self.closing:
                    return False
                conn.sendall(data[i:i + step])
                time.sleep(0.01)
        else:
            conn.sendall(data)
        return True


@pytest.fixture
def stub_http():
    srv = HttpStub()
    try:
        yield srv
    finally:
        srv.close()


def wait_for(predicate, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def files_under(root: Path):
    """Every file (relative path) under root, temporary names included."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


def retry_entries(env):
    """Live entries of the instance's on-disk retry queue."""
    live = {}
    for f in env.state_dir().glob("*.retry"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if r["op"] == "add":
                live[r["id"]] = r
            elif r["op"] == "del":
                live.pop(r["id"], None)
    return list(live.values())
