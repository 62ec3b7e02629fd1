"""What the sr_watch tests share (test_watch.py, test_watch_bad.py, test_watch_load.py,
test_watch_sync.py): the watch_env fixture (a tree, an exchange with a tap, sr_watch started
as a subprocess), Msgs/Msg to read its posts, MODES (inotify and polling), the golden
samples' headers, md5."""

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import command_argv, command_env

BASE_URL = "http://127.0.0.1:8090/"
MODES = ["inotify", "polling"]
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
FILE_HEADERS = ["to_clusters", "mtime", "atime", "mode", "parts", "sum"]
CAPTURED = {"create": [FILE_HEADERS], "symlink": [["to_clusters", "link", "sum"]] * 2,
            "rename": [["to_clusters", "sum", "newname"], FILE_HEADERS + ["oldname"]],
            "remove": [["to_clusters", "sum"]] * 2}


def sample_headers(case):
    """Header names, in wire order, of the messages of a captured v2 sr_watch sample (the
    spec's samples/v2_watch_<case>.json; a copy of them when the spec is not there)."""
    try:
        with open(SAMPLES / f"v2_watch_{case}.json") as f:
            return [list(m["headers"]) for m in json.load(f)["messages"]]
    except FileNotFoundError:
        return CAPTURED[case]


class WatchProc:
    """`sr_watch foreground <name>` as a subprocess, output in a file."""

    def __init__(self, home: Path, name: str, lines, wrapper=(), env=None):
        cdir = home / ".config" / "sarra" / "watch"
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / f"{name}.conf").write_text("\n".join(lines) + "\n")
        self.out = home / f"{name}.out"
        with open(self.out, "ab") as fh:
            self.proc = subprocess.Popen(
                list(wrapper) + command_argv("sr_watch") + ["foreground", name],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                env=command_env(env), cwd=str(home))

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 15.0, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if text.count(needle) >= count:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in the sr_watch output "
                             f"(exit {self.proc.poll()}):\n{self.text()[-4000:]}")

    def stop(self, sig=signal.SIGTERM, timeout=15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class Msgs:
    """What arrived on the tap: (relpath, headers) with bytes decoded."""

    def __init__(self, tap):
        self.tap = tap

    def get(self, count, timeout=10.0):
        out = []
        for key, body, headers in self.tap.get(count, timeout=timeout):
            h = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in headers.items()}
            out.append(Msg(key, body, h))
        return out

    def none(self, wait=1.5):
        extra = self.get(1, timeout=wait)
        assert extra == [], f"unexpected post(s): {extra}"


class Msg:
    def __init__(self, key, body, headers):
        self.key, self.body, self.h = key, body, headers
        self.pubtime, self.baseurl, self.relpath = body.split(" ")[:3]
        self.algo = headers["sum"].split(",")[0]

    def __repr__(self):
        extra = {k: v for k, v in self.h.items() if k in ("parts", "newname", "oldname", "link")}
        return f"<{self.algo} {self.relpath} {extra}>"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class WatchEnv:
    def __init__(self, home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path):
        self.home, self.uid, self.broker = Path(home), uid, broker_url
        self.base = Path(tmp_path) / "src"
        self.root = self.base / "watched"
        self.root.mkdir(parents=True)
        self.exchange = amqp_exchange(f"xs_guest_w{uid}", durable=True)
        self.msgs = Msgs(amqp_tap(self.exchange))
        self.procs = []

    def lines(self, extra=(), root=None, mode="inotify"):
        lines = [f"post_broker {self.broker}", f"post_base_url {BASE_URL}",
                 f"post_base_dir {self.base}", f"post_exchange {self.exchange}",
                 f"path {root or self.root}"]
        if mode == "polling":
            lines.append("force_polling on")
        return lines + list(extra)

    def start(self, extra=(), mode="inotify", name=None, root=None, wrapper=(), ready=True):
        w = WatchProc(self.home, name or f"w{self.uid}", self.lines(extra, root, mode), wrapper)
        self.procs.append(w)
        if ready:
            w.wait_for("watching ")
        return w

    def close(self):
        for w in self.procs:
            w.stop()


@pytest.fixture
def watch_env(home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path):
    env = WatchEnv(home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path)
    yield env
    env.close()
