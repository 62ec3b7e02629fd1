"""A file appended to while watched arrives whole at the subscriber after each step, and
only about the appended bytes cross the network (issue 19 item 10, the plan's gap 107).

Real broker, sr_watch (blocksize 64K, so that the file soon spans several blocks) and
sr_subscribe as subprocesses, and an HTTP server (tests/integration/servers.py's handler,
in this process) that serves the watched tree and counts the body bytes it sends. The
writer either keeps the file open and flushes each step (sr_watch posts it while open,
snapshot_interval), or closes it after each step. sr_watch posts every block of each
version; the subscriber copies the blocks its copy holds and downloads the others, and
renames each version into place once (on_file once per version).
"""

import collections
import hashlib
import os
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from tests.integration import servers
from tests.integration.subkit import sub_env  # noqa: F401  (fixture)
from tests.integration.watchkit import WatchEnv

pytestmark = pytest.mark.broker

BSZ = 64 * 1024
STEPS = 10


@pytest.fixture
def watcher(home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path):
    """watchkit's WatchEnv in a directory of its own (sub_env has tmp_path/src)."""
    env = WatchEnv(home, uid, broker_url, amqp_exchange, amqp_tap, tmp_path / "watch")
    yield env
    env.close()


class CountingHttp:
    """The test HTTP handler (Range, keep-alive) on the watched tree; ``sent[path]`` is the
    number of body bytes sent for that URL path."""

    def __init__(self, root):
        sent = self.sent = collections.Counter()
        base = servers._http_handler_class(os.path.abspath(root), None)

        class Counting:
            def __init__(self, out, path):
                self.out, self.path = out, path

            def write(self, b):
                sent[self.path] += len(b)
                return self.out.write(b)

        class Handler(base):
            def copyfile(self, source, outputfile):
                return super().copyfile(source, Counting(outputfile, self.path))

        self.srv = ThreadingHTTPServer((servers.HOST, 0), Handler)
        self.srv.daemon_threads = True
        self.url = "http://%s:%d/" % self.srv.server_address
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _same(path, data):
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


@pytest.mark.parametrize("writer,extra", [("open", []), ("closing", []),
                                          ("closing", ["suppress_duplicates on"])])
def test_a_file_appended_in_steps_arrives_whole_after_each(watcher, sub_env, writer, extra):
    """With suppress_duplicates on, sr_watch's cache (whose block keys leave out the
    block count) must not drop the unchanged blocks of the grown file."""
    w, s = watcher, sub_env
    http = CountingHttp(w.base)
    try:
        s.config()
        s.setup()
        sub = s.foreground()
        w.start([f"post_base_url {http.url}", f"post_exchange {s.exchange}",
                 "blocksize 64K", "snapshot_interval 0.5"] + extra)
        src, dst = w.root / "grow.bin", s.dst / "grow.bin"
        url_path = "/watched/grow.bin"
        data = b""
        # unbuffered: each step is one write(2), so no snapshot sees half of it
        f = open(src, "wb", buffering=0) if writer == "open" else None
        try:
            for step in range(1, STEPS + 1):
                more = os.urandom(40 * 1024 + 997 * step)    # ~7 blocks in all
                before = http.sent[url_path]
                if f is not None:
                    f.write(more)
                    f.flush()                          # written, never closed
                else:
                    with open(src, "ab", buffering=0) as g:
                        g.write(more)
                data += more
                assert _wait(lambda: _same(dst, data)), (
                    f"step {step}: {len(data)} bytes written, the subscriber has "
                    f"{dst.stat().st_size if dst.exists() else 'nothing'}\n"
                    + s.log_text()[-3000:] + w.procs[0].text()[-2000:])
                assert _wait(lambda: len(s.on_file_lines()) >= step, 10)
                assert len(s.on_file_lines()) == step, "on_file once per version"
                sent = http.sent[url_path] - before
                assert sent < len(more) + 2 * BSZ, (
                    f"step {step}: {sent} bytes sent for {len(more)} appended")
        finally:
            if f is not None:
                f.close()
        time.sleep(1.0)                                # the close changes nothing
        assert len(s.on_file_lines()) == STEPS
        total = sum(40 * 1024 + 997 * k for k in range(1, STEPS + 1))
        assert len(data) == total and http.sent[url_path] < total + STEPS * BSZ
        assert hashlib.md5(dst.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
        assert sorted(os.listdir(s.dst)) == ["grow.bin"]
        s.stop(sub)
    finally:
        http.close()
