"""sr_post and sr_subscribe over amqps:// against the real local broker.

The broker itself is not reconfigured: TlsProxy, a TLS-terminating relay on a free loopback
port of this process, sits in front of its plain AMQP port. Certificates come from a
throw-away CA (servers.make_tls_certs). The CA is trusted only the documented way
(man sr_post, ENVIRONMENT): SSL_CERT_FILE. Every CA variable of the caller's environment is
removed first, so an untrusted certificate stays untrusted.
"""

import re
import selectors
import socket
import ssl
import subprocess
import threading

import pytest

from tests.conftest import command_argv, command_env, parse_broker_url
from tests.integration import servers
from tests.integration.subkit import (  # noqa: F401  (fixture)
    files_under, make_tree, md5, sub_env, wait_for)

CA_VARIABLES = servers.CA_VARIABLES
PASSWORD = "guest"


# ------------------------------------------------------------------ the TLS proxy

class TlsProxy:
    """TLS on 127.0.0.1:<port> in front of a plain TCP target: every accepted connection
    does its handshake, then gets its own thread relaying bytes both ways (non-blocking
    sockets, one selector) until either side closes. ``events`` records one line per
    connection: 'relayed ...' or 'handshake failed: ...'."""

    def __init__(self, target, cert, key):
        self.target = target
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.sock = socket.create_server((servers.HOST, 0), backlog=64)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.events = []
        self.closing = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def url(self, host=servers.HOST, password=PASSWORD):
        return "amqps://guest:%s@%s:%d/" % (password, host, self.port)

    def close(self):
        self.closing.set()
        self.threads[0].join(10)            # no new connection threads after this
        for t in self.threads[1:]:
            t.join(10)
        self.sock.close()

    def _accept(self):
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while not self.closing.is_set():
                if not sel.select(0.2):
                    continue
                try:
                    conn, addr = self.sock.accept()
                except BlockingIOError:
                    continue
                t = threading.Thread(target=self._serve, args=(conn, addr), daemon=True)
                self.threads.append(t)
                t.start()

    def _serve(self, conn, addr):
        conn.setblocking(True)
        conn.settimeout(10)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except OSError as e:
            self.events.append("handshake failed: %s" % e)
            conn.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError as e:
            self.events.append("cannot reach %s:%d: %s" % (*self.target, e))
            tls.close()
            return
        try:
            up, down = self._relay(tls, upstream)
            self.events.append("relayed %s:%d: %d bytes up, %d down" % (*addr, up, down))
        finally:
            tls.close()
            upstream.close()

    def _relay(self, tls, upstream):
        """Copy until EOF on either side (what is buffered for the other is flushed)."""
        out = {tls: bytearray(), upstream: bytearray()}     # bytes waiting to go to key
        peer = {tls: upstream, upstream: tls}
        moved = {tls: 0, upstream: 0}                       # bytes read from key
        for s in (tls, upstream):
            s.setblocking(False)
        # anything the handshake already took in from the client is not signalled again
        eof = self._read(tls, out[upstream], moved)
        with selectors.DefaultSelector() as sel:
            for s in (tls, upstream):
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if out[s] else 0)
                sel.register(s, want)
            while not eof and not self.closing.is_set():
                for key, mask in sel.select(0.2):
                    s = key.fileobj
                    if mask & selectors.EVENT_READ:
                        eof = self._read(s, out[peer[s]], moved) or eof
                    if mask & selectors.EVENT_WRITE and out[s]:
                        try:
                            del out[s][:s.send(out[s][:65536])]
                        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                            pass
                        except OSError:
                            eof = True
                for s in (tls, upstream):
                    want = selectors.EVENT_READ | (selectors.EVENT_WRITE if out[s] else 0)
                    if sel.get_key(s).events != want:
                        sel.modify(s, want)
        for s in (tls, upstream):
            if out[s]:
                try:
                    s.settimeout(5)
                    s.sendall(out[s])
                except OSError:
                    pass
        return moved[tls], moved[upstream]

    @staticmethod
    def _read(s, into, moved):
        """Read what s has now (TLS records already decrypted included); True at EOF."""
        while True:
            try:
                data = s.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except OSError:
                return True
            if not data:
                return True
            into += data
            moved[s] += len(data)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return servers.make_tls_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def localhost_cert(tls_files, tmp_path_factory):
    """(cert, key) signed by the same CA for DNS:localhost only (no IP address)."""
    work = tmp_path_factory.mktemp("tls_localhost")
    cert, key, csr, ext = (work / n for n in ("localhost.pem", "localhost.key",
                                              "localhost.csr", "localhost.ext"))
    servers._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", key, "-out", csr,
                     "-subj", "/O=sarra tests/CN=localhost")
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=DNS:localhost\n")
    ca_dir = tls_files.ca.parent
    servers._openssl("x509", "-req", "-in", csr, "-CA", tls_files.ca,
                     "-CAkey", ca_dir / "ca.key", "-CAcreateserial", "-out", cert,
                     "-days", 2, "-extfile", ext)
    return cert, key


def _proxy(broker_url, cert, key):
    host, port = parse_broker_url(broker_url)[:2]
    return TlsProxy((host, port), cert, key)


@pytest.fixture
def amqps_proxy(broker_url, tls_files):
    proxy = _proxy(broker_url, *tls_files.pair)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def localhost_proxy(broker_url, localhost_cert):
    proxy = _proxy(broker_url, *localhost_cert)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def no_ca(monkeypatch):
    """No CA variable from the caller's environment: only what the test sets counts."""
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ------------------------------------------------------------------ helpers

def _sr_post(home, broker, exchange, src, base_url, *paths):
    argv = command_argv("sr_post") + [
        "--post_broker", broker, "--post_exchange", exchange, "--post_base_url", base_url,
        "--post_base_dir", str(src), "--blocksize", "0", *[str(p) for p in paths]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env=command_env(), cwd=str(home), stdin=subprocess.DEVNULL)


def _one_line_refusal(r, proxy, host, reason):
    """sr_post failed with exit 3 and one stderr line naming the broker and the reason."""
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    shown = re.escape("amqps://guest@%s:%d/" % (host, proxy.port))
    assert re.fullmatch(r"sr_post: cannot connect to %s: .*certificate verify failed: %s.*"
                        % (shown, reason), lines[0]), lines[0]
    assert "guest:" not in r.stderr and "Traceback" not in r.stderr
    # the client gave up during the handshake: nothing reached the broker
    assert wait_for(lambda: proxy.events, timeout=5), proxy.events
    assert all(e.startswith("handshake failed") for e in proxy.events), proxy.events
    return lines[0]


# ------------------------------------------------------------------ trusted CA

def test_post_over_amqps_announces_every_file(home, uid, amqp_exchange, amqp_tap,
                                              amqps_proxy, tls_files, no_ca, tmp_path):
    no_ca.setenv("SSL_CERT_FILE", str(tls_files.ca))
    exchange = amqp_exchange("xs_guest_tls%s" % uid, durable=True)
    tap = amqp_tap(exchange)
    src = tmp_path / "src"
    tree = make_tree(src, 10, size=333, subdirs=3)
    r = _sr_post(home, amqps_proxy.url(), exchange, src, "http://example.invalid/data/", src)
    assert r.returncode == 0, r.stderr
    assert ":%s@" % PASSWORD not in r.stderr
    got = tap.get(10, timeout=20) + tap.get(1, timeout=0.5)
    announced = {}
    for key, body, headers in got:
        fields = body.split()
        assert fields[1] == "http://example.invalid/data/", body
        rel = fields[2].lstrip("/")
        assert key == "v02.post." + ".".join(rel.split("/")[:-1]), (key, body)
        announced[rel] = headers["sum"]
    assert announced == {rel: "d," + digest for rel, digest in tree.items()}
    assert len(got) == 10
    # it went through the TLS relay (the only way to that port) and carried the posts
    assert wait_for(lambda: amqps_proxy.events, timeout=5), "no connection relayed"
    assert len(amqps_proxy.events) == 1 and amqps_proxy.events[0].startswith("relayed"), \
        amqps_proxy.events
    up = int(re.search(r"(\d+) bytes up", amqps_proxy.events[0]).group(1))
    assert up > 10 * 333 // 2, amqps_proxy.events       # headers + bodies, at least


def test_subscribe_over_amqps_downloads_what_was_posted_over_amqps(
        amqps_proxy, tls_files, no_ca, sub_env, http_server):
    # sub_env after the proxy: its cleanup (queue removal over amqps) runs before the
    # proxy stops
    no_ca.setenv("SSL_CERT_FILE", str(tls_files.ca))
    env = sub_env
    env.broker = amqps_proxy.url()      # sr_post, setup, foreground and cleanup use it
    env.src = http_server.root / env.uid
    env.base_url = http_server.url + env.uid + "/"
    env.src.mkdir()
    tree = make_tree(env.src, 10, size=500, subdirs=2)
    env.config(extra="mirror on")
    env.setup()
    env.post(env.src)
    p = env.foreground()
    reports = env.reports.wait(10, timeout=60)
    assert env.wait_files(tree, timeout=10) == {}, env.log_text()[-3000:]
    assert sorted(r["code"] for r in reports) == [201] * 10, [r["body"] for r in reports]
    assert len(env.reports.settle(0.5)) == 10
    assert files_under(env.dst) == sorted(tree)
    assert all(md5(env.dst / rel) == digest for rel, digest in tree.items())
    env.stop(p)
    assert p.returncode == 0, env.log_text()[-3000:]
    log = env.log_text()
    assert "Traceback" not in log and ":%s@" % PASSWORD not in log, log[-3000:]
    # setup, post, and the subscriber: all connections were TLS ones through the relay
    assert wait_for(lambda: len(amqps_proxy.events) >= 3, timeout=5), amqps_proxy.events
    assert all(e.startswith("relayed") for e in amqps_proxy.events), amqps_proxy.events


# ------------------------------------------------------------------ refusals

def test_post_untrusted_certificate(home, uid, amqp_exchange, amqps_proxy, no_ca, tmp_path):
    exchange = amqp_exchange("xs_guest_tls%s" % uid, durable=True)
    src = tmp_path / "src"
    make_tree(src, 2)
    r = _sr_post(home, amqps_proxy.url(), exchange, src, "http://example.invalid/", src)
    _one_line_refusal(r, amqps_proxy, servers.HOST, "unable to get local issuer certificate")
    assert "unknown ca" in amqps_proxy.events[0], amqps_proxy.events


def test_subscribe_untrusted_certificate(amqps_proxy, no_ca, sub_env):
    """A certificate that does not verify will not start verifying: the subscriber stops
    with exit code 3 and the reason, rather than retrying forever."""
    env = sub_env
    env.broker = amqps_proxy.url()
    env.config()
    p = env.foreground()
    assert p.wait(30) == 3, env.log_text()
    log = env.log_text()
    shown = re.escape("amqps://guest@%s:%d/" % (servers.HOST, amqps_proxy.port))
    hits = re.findall(r"(?m)^.*cannot connect to %s: .*certificate verify failed: "
                      r"unable to get local issuer certificate.*$" % shown, log)
    assert len(hits) == 1 and "[ERROR] sr_subscribe" in hits[0], log   # said once
    assert "Traceback" not in log and ":%s@" % PASSWORD not in log, log
    assert amqps_proxy.events and all("unknown ca" in e for e in amqps_proxy.events), \
        amqps_proxy.events
    assert files_under(env.dst) == []


def test_post_hostname_mismatch(home, uid, amqp_exchange, amqp_tap, localhost_proxy,
                                tls_files, no_ca, tmp_path):
    no_ca.setenv("SSL_CERT_FILE", str(tls_files.ca))
    exchange = amqp_exchange("xs_guest_tls%s" % uid, durable=True)
    tap = amqp_tap(exchange)
    src = tmp_path / "src"
    make_tree(src, 2)
    # certificate for localhost only, broker URL names 127.0.0.1
    r = _sr_post(home, localhost_proxy.url(), exchange, src, "http://example.invalid/", src)
    _one_line_refusal(r, localhost_proxy, servers.HOST,
                      re.escape("IP address mismatch, certificate is not valid for '%s'"
                                % servers.HOST))
    assert tap.get(1, timeout=0.5) == []
    # the same CA, certificate and relay, with the name the certificate gives: accepted
    del localhost_proxy.events[:]
    r = _sr_post(home, localhost_proxy.url(host="localhost"), exchange, src,
                 "http://example.invalid/", src)
    assert r.returncode == 0, r.stderr
    assert len(tap.get(2, timeout=20)) == 2
    assert wait_for(lambda: localhost_proxy.events, timeout=5)
    assert localhost_proxy.events[0].startswith("relayed"), localhost_proxy.events

