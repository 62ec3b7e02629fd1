"""Issue 16, item 4 (and the redirect of item 7): transfers are bounded, against a whole pump
(scripts/pump_demo.Pump, two sr_sarra instances) and a hostile HTTP server written here.

bob, a source, posts raw v02 messages on his own xs_ exchange whose base URL is his hostile
server: a body longer than announced (with and without a Content-Length), a gzip body he
serves with Content-Encoding: gzip, a redirect to another port, and a body that drips one
byte every two seconds. Each is refused (413, 415, 403) or cut at its deadline (504, then
retried later with backoff), nothing lands in the pump's tree, and alice's good file still
reaches carol, in a few seconds also while bob's drips are being served.

The pump runs with small bounds so that the test takes seconds: transfer_grace 2 s and
transfer_min_rate 1 KiB/s.
"""

import gzip
import os
import socket
import threading
import time
from collections import Counter

import pytest

from tests.integration import pumpkit
from tests.integration.pumpkit import admin_tap, in_tree, post_good_file, wait_arrived

DRIP_EVERY = 2.0            # seconds between two bytes of a drip
DRIP = b"0123456789abcdefghij\n"    # 21 bytes: 42 s at DRIP_EVERY
LIFETIME = 240.0            # the hostile server stops by itself after this long
BIG = 64 << 20              # most a hostile answer sends
SARRA_BOUNDS = "transfer_grace 2\ntransfer_min_rate 1k\ntransfer_penalty 30\n"


class Hostile:
    """An HTTP/1.1 server on loopback whose every path misbehaves (first path word):

    /long/...     Content-Length: 64 MiB, zeros, whatever was announced
    /endless/...  no Content-Length (Connection: close), zeros until the client goes
    /gzip/...     GZIP (64 MiB of zeros, compressed) with Content-Encoding: gzip
    /redir/...    302 to the same path on another port (``elsewhere``)
    /drip/...     DRIP, one byte every DRIP_EVERY seconds

    One thread per connection; it counts what each path sent (``sent``) and stops by itself
    after LIFETIME seconds (or at stop())."""

    GZIP = gzip.compress(b"\0" * BIG, 9)

    def __init__(self, elsewhere):
        self.elsewhere = elsewhere
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.3)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d/" % self.port
        self.sent = Counter()
        self.requests = Counter()
        self.until = time.monotonic() + LIFETIME
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def alive(self):
        return not self.done.is_set() and time.monotonic() < self.until

    def stop(self):
        self.done.set()
        self.thread.join(5)
        self.sock.close()

    def _accept(self):
        while self.alive():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(5)
        try:
            while self.alive():
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    data = conn.recv(4096)
                    if not data:
                        return
                    head += data
                path = head.split(b" ", 2)[1].decode("latin-1")
                kind = path.strip("/").split("/")[0]
                self.requests[kind] += 1
                if not getattr(self, "_" + kind, self._missing)(conn, path, kind):
                    return          # the answer ended the connection
        except OSError:
            pass
        finally:
            conn.close()

    def _send(self, conn, kind, data):
        conn.sendall(data)
        self.sent[kind] += len(data)

    def _zeros(self, conn, kind, head):
        conn.sendall(head)
        chunk = b"\0" * 65536
        while self.sent[kind] < BIG and self.alive():
            self._send(conn, kind, chunk)       # OSError once the client has gone

    def _long(self, conn, path, kind):
        self._zeros(conn, kind, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)

    def _endless(self, conn, path, kind):
        self._zeros(conn, kind, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")

    def _gzip(self, conn, path, kind):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                     % len(self.GZIP))
        self._send(conn, kind, self.GZIP)
        return True

    def _redir(self, conn, path, kind):
        target = self.elsewhere + path.strip("/").split("/", 1)[1]
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n"
                     % target.encode())
        return True

    def _drip(self, conn, path, kind):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(DRIP))
        for i in range(len(DRIP)):
            if not self.alive():
                return False
            self._send(conn, kind, DRIP[i:i + 1])
            time.sleep(DRIP_EVERY)
        return True

    def _missing(self, conn, path, kind):
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True


def hostile_server(p):
    """bob's hostile server; the redirect's target: alice's server, where the file is
    (followed, it would land). Stopped with the pump."""
    p.hostile = Hostile(p.http_url("alice"))
    return p.hostile.stop


def start_two_instances(p):
    for name in p.rr_shovels():
        p.start(name, "sr_shovel", "foreground", name)
    for no in (1, 2):
        p.start("sarra%d" % no, "sr_sarra", "foreground", "ingest", "--no", str(no))
    p.start("subscribe", "sr_subscribe", "foreground", "feed")


@pytest.fixture(scope="module")
def pump(tmp_path_factory, broker_url):
    with pumpkit.running(tmp_path_factory, broker_url, "hostile_transfer",
                         prepare=hostile_server, start=start_two_instances,
                         sarra_extra=SARRA_BOUNDS, instances=2) as p:
        yield p


def publish(pump, role, base, posts):
    """Raw v02 posts [(relpath, announced bytes)] by role on its own xs_ exchange."""
    pumpkit.publish_posts(pump, role, [(base, rel, pumpkit.sum_headers(data))
                                       for rel, data in posts])


def codes(reports, marker):
    """{report code} of the reports whose relpath contains marker."""
    return [(b.split()[3], h.get("message", "")) for b, h in reports
            if len(b.split()) > 3 and marker in b.split()[2]]


def refused(pump, posts, code, timeout=30):
    """bob's posts, each refused with code (once: not retried); alice's file then arrives."""
    conn, xreport = admin_tap(pump, "xreport")
    try:
        publish(pump, "bob", pump.hostile.url, posts)
        names = [rel for rel, _ in posts]
        reports = xreport(timeout, until=lambda got: all(codes(got, n) for n in names))
        time.sleep(2)
        reports += xreport(0.5)
        for name in names:
            got = codes(reports, name)
            assert [c for c, _ in got] == [code], (name, got, pump.log_tail(30))
            assert not in_tree(pump, name.split("/")[-1]), pump.pump_files()
        assert not in_tree(pump, pump.users["bob"]), pump.pump_files()
        want = post_good_file(pump, "after_%s.bin" % code)
        assert wait_arrived(pump, want, 30), pump.log_tail(30)
        return reports
    finally:
        conn.close()


def test_body_longer_than_announced_is_refused(pump):
    """21 bytes announced, 64 MiB served (with a Content-Length, and without one): 413,
    not retried, and the pump stopped reading well before the end."""
    reports = refused(pump, [("/long/a.bin", DRIP), ("/endless/b.bin", DRIP)], "413")
    assert "Payload Too Large" in codes(reports, "/long/a.bin")[0][1]
    assert pump.hostile.requests["long"] == 1 and pump.hostile.requests["endless"] == 1
    assert pump.hostile.sent["endless"] < 16 << 20, pump.hostile.sent


def test_unrequested_gzip_is_refused_not_decoded(pump):
    """A 64 KiB gzip body (64 MiB once decoded), announced as what is served: 415."""
    reports = refused(pump, [("/gzip/c.bin", Hostile.GZIP)], "415")
    assert "Content-Encoding 'gzip'" in codes(reports, "/gzip/c.bin")[0][1]


def test_redirect_to_another_port_is_refused(pump):
    """A 302 to alice's server (another port), where the file exists: 403, not followed."""
    data = b"a file at another server\n"
    with open(os.path.join(pump.src["alice"], "moved.txt"), "wb") as f:
        f.write(data)
    reports = refused(pump, [("/redir/moved.txt", data)], "403")
    assert "redirect" in codes(reports, "moved.txt")[0][1]


def test_slow_drip_does_not_hold_the_pump(pump):
    """Four drips (42 s each unbounded) on a pump of two instances: each is cut at its
    deadline (504) and later ones are deferred (503) while bob is held back; alice's file,
    posted right after them, reaches carol in seconds."""
    conn, xreport = admin_tap(pump, "xreport")
    try:
        drips = ["/drip/d%d.bin" % i for i in range(4)]
        publish(pump, "bob", pump.hostile.url, [(rel, DRIP) for rel in drips])
        time.sleep(0.5)
        start = time.monotonic()
        want = post_good_file(pump, "during_slow.bin")
        assert wait_arrived(pump, want, 15), pump.log_tail(30)
        took = time.monotonic() - start
        reports = xreport(20, until=lambda got: all(codes(got, rel) for rel in drips))
        for rel in drips:
            got = [c for c, _ in codes(reports, rel)]
            assert got and set(got) <= {"503", "504"}, (rel, reports, pump.log_tail(30))
        assert "504" in [c for rel in drips for c, _ in codes(reports, rel)], reports
        assert took < 12, took
        assert not in_tree(pump, pump.users["bob"]), pump.pump_files()
        assert pump.hostile.sent["drip"] < 4 * 6, pump.hostile.sent   # cut after ~2 s each
    finally:
        conn.close()
