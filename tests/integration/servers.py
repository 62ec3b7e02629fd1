"""Real servers on loopback for the integration tests.

Each server runs in its own process, started and stopped by PID:

* HTTP/1.1 (keep-alive, Range) and FTP (pyftpdlib) run this module:
      python -m tests.integration.servers http <dir> <port> [user:password] [--tls CERT KEY]
      python -m tests.integration.servers ftp <dir> <port> <user> <password> [--tls CERT KEY]
  Port 0 lets the server pick a free port; either way the server prints
  "PORT <n>" on stdout once it is listening. --tls makes it HTTPS, or explicit
  FTPS that requires AUTH TLS, PROT P and, as vsftpd does by default, data
  connections that resume the control connection's TLS session; make_tls_certs()
  writes a throw-away CA and a server certificate for 127.0.0.1/localhost.
* SFTP is the system's OpenSSH sshd with a generated host key, a generated
  client key and its own configuration (internal-sftp); with password_auth it
  accepts passwords instead of keys (ensure_password_user() makes the account).

The start_* functions return a ServerProcess; call stop() to end it.
"""

import base64
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from tests.support.prereq import Missing, need_module, need_root, need_tool

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SSHD = "/usr/sbin/sshd"
#: where a client may be told what CA to trust; TLS tests clear them all, then set theirs
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
                "NIX_SSL_CERT_FILE", "AWS_CA_BUNDLE")


# ---------------------------------------------------------------- helpers

def free_port(host=HOST):
    """A TCP port that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host, port, timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ServerProcess:
    """A server child process in its own process group, with its log file."""

    def __init__(self, name, proc, host, port, log_path):
        self.name = name
        self.proc = proc
        self.host = host
        self.port = port
        self.log_path = Path(log_path)

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, lines=20):
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, why):
        self.stop()
        raise RuntimeError("%s server on %s:%s %s; log %s:\n%s" % (
            self.name, self.host, self.port, why, self.log_path, self.log_tail()))

    def stop(self, timeout=5):
        """End the process group this server leads (only processes it started)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout)
        else:
            # leader gone; children it left (e.g. sshd sessions) share its group
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.stdout:
            self.proc.stdout.close()


def _spawn(args, log_path, stdout=subprocess.PIPE, env=None):
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=log,
            start_new_session=True, env=env, cwd=str(REPO))
    finally:
        log.close()


def _read_port(server, timeout=15):
    """Wait for the "PORT <n>" line the child prints once it listens."""
    sel = selectors.DefaultSelector()
    sel.register(server.proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                server.fail("did not report its port within %ss" % timeout)
            if not sel.select(left):
                continue
            chunk = os.read(server.proc.stdout.fileno(), 256)
            if not chunk:
                server.fail("exited with code %s before listening" % server.proc.poll())
            buf += chunk
    finally:
        sel.close()
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("PORT "):
        server.fail("printed %r instead of its port" % line)
    server.port = int(line.split()[1])
    return server


def _module_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------- starters

def _tls_args(tls):
    return ["--tls", str(tls[0]), str(tls[1])] if tls else []


def start_http(root, log_dir, auth=None, tls=None):
    """HTTP/1.1 server for directory root; auth = (user, password) or None;
    tls = (certfile, keyfile) for HTTPS."""
    args = [sys.executable, "-m", "tests.integration.servers", "http", str(root), "0"]
    if auth:
        args.append("%s:%s" % auth)
    args += _tls_args(tls)
    name = "HTTPS" if tls else "HTTP"
    log = Path(log_dir) / ("%s.log" % name.lower())
    server = ServerProcess(name, _spawn(args, log, env=_module_env()), HOST, 0, log)
    return _read_port(server)


def start_ftp(root, log_dir, user, password, tls=None):
    """FTP server (pyftpdlib); tls = (certfile, keyfile) for explicit FTPS that requires
    AUTH TLS on the control connection, PROT P and TLS session reuse on data connections."""
    need_module("pyftpdlib", "pyftpdlib")
    if tls:
        need_module("OpenSSL", "pyOpenSSL")
    args = [sys.executable, "-m", "tests.integration.servers", "ftp",
            str(root), "0", user, password] + _tls_args(tls)
    name = "FTPS" if tls else "FTP"
    log = Path(log_dir) / ("%s.log" % name.lower())
    server = ServerProcess(name, _spawn(args, log, env=_module_env()), HOST, 0, log)
    return _read_port(server)


class TlsFiles(NamedTuple):
    ca: Path        # the CA certificate clients must trust
    cert: Path      # server certificate (CN 127.0.0.1, SAN IP:127.0.0.1 and DNS:localhost)
    key: Path       # its private key

    @property
    def pair(self):
        return self.cert, self.key


def _openssl(*args):
    r = subprocess.run(["openssl", *map(str, args)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], " ".join(r.stderr.split())[:300]))


def make_tls_certs(work, name="sarra test CA"):
    """A throw-away CA and a server certificate it signs, written under work/ with the
    openssl command (EC P-256, valid 2 days)."""
    need_tool("openssl", "openssl")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = TlsFiles(work / "ca.pem", work / "server.pem", work / "server.key")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", work / "ca.key", "-out", out.ca, "-days", 2,
             "-subj", "/O=sarra tests/CN=%s" % name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", *ec, "-keyout", out.key, "-out", work / "server.csr",
             "-subj", "/O=sarra tests/CN=%s" % HOST)
    ext = work / "server.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=IP:%s,DNS:localhost\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n" % HOST)
    _openssl("x509", "-req", "-in", work / "server.csr", "-CA", out.ca,
             "-CAkey", work / "ca.key", "-CAcreateserial", "-out", out.cert, "-days", 2,
             "-extfile", ext)
    return out


def make_ssh_keys(work):
    """Generate a host key and a client key (ed25519) under work/."""
    work = Path(work)
    host_key = work / "ssh_host_ed25519_key"
    client_key = work / "id_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                            "sarra-test", "-f", str(key)], check=True,
                           stdin=subprocess.DEVNULL, capture_output=True)
    return host_key, client_key


def start_sshd(root, work, user, attempts=3, password_auth=False):
    """OpenSSH sshd on a free loopback port serving internal-sftp.

    Sessions start in root (relative paths resolve there). With password_auth the
    server takes passwords (checked against /etc/shadow: UsePAM no) and no keys.
    Returns (ServerProcess, client_key_path, host_public_key_path).
    """
    work = Path(work)
    if not os.path.exists(SSHD):
        raise Missing("%s not found: install openssh-server" % SSHD)
    need_tool("ssh-keygen", "openssh-client")
    if not os.path.isdir("/run/sshd"):
        # privilege separation directory; only root can create it
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_key, client_key = make_ssh_keys(work)
    authorized = work / "authorized_keys"
    shutil.copyfile(str(client_key) + ".pub", authorized)
    os.chmod(authorized, 0o600)
    last = None
    for _ in range(attempts):
        port = free_port()
        config = work / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress %s:%d" % (HOST, port),
            "HostKey %s" % host_key,
            "PidFile %s" % (work / "sshd.pid"),
            "AuthorizedKeysFile %s" % authorized,
            "AllowUsers %s" % user,
            "PubkeyAuthentication %s" % ("no" if password_auth else "yes"),
            "PasswordAuthentication %s" % ("yes" if password_auth else "no"),
            "PermitEmptyPasswords no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "MaxStartups 200",
            "MaxSessions 200",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp -d %s" % Path(root).resolve(),
            "",
        ]))
        log = work / "sshd.log"
        proc = _spawn([SSHD, "-D", "-e", "-f", str(config)], log,
                      stdout=subprocess.DEVNULL)
        server = ServerProcess("SFTP (sshd)", proc, HOST, port, log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if port_open(HOST, port):
                return server, client_key, Path(str(host_key) + ".pub")
            time.sleep(0.05)
        last = server.log_tail()
        server.stop()
    raise RuntimeError("sshd did not start on %s after %d attempts; log %s:\n%s" % (
        HOST, attempts, work / "sshd.log", last))


def ensure_password_user(name, password):
    """Create the local account name (no home, no login shell) if missing and set its
    password. Needs root and useradd/chpasswd; RuntimeError says what is missing."""
    need_root("creating user %s" % name)
    for tool in ("useradd", "chpasswd"):
        need_tool(tool, "passwd")
    import pwd
    try:
        pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
                            "-c", "sarra integration tests", name],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode not in (0, 9):          # 9: created meanwhile by another run
            raise RuntimeError("useradd %s failed: %s" % (name, r.stderr.strip()))
    r = subprocess.run(["chpasswd"], input="%s:%s\n" % (name, password),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("chpasswd for %s failed (exit %d)" % (name, r.returncode))


def lock_password_user(name):
    """Lock the password of an account made by ensure_password_user (best effort)."""
    subprocess.run(["usermod", "-L", name], stdin=subprocess.DEVNULL, capture_output=True)


# ---------------------------------------------------------------- HTTP server

def _http_handler_class(root, auth):
    from http.server import SimpleHTTPRequestHandler

    expected = None
    if auth:
        expected = "Basic " + base64.b64encode(auth.encode()).decode()

    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # keep-alive
        disable_nagle_algorithm = True  # no 40 ms stalls between header and body

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=root, **kwargs)

        def log_message(self, fmt, *args):
            pass  # thousands of requests: keep the log for errors

        def log_error(self, fmt, *args):
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

        def _authorized(self):
            if expected is None or self.headers.get("Authorization") == expected:
                return True
            body = b"authentication required\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="sarra-test"')
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return False

        def do_GET(self):
            if self._authorized():
                super().do_GET()

        def do_HEAD(self):
            if self._authorized():
                super().do_HEAD()

        def _parse_range(self, size):
            """(start, end) inclusive, None for no/ignored Range, 'bad' for 416."""
            value = self.headers.get("Range")
            if not value:
                return None
            unit, _, spec = value.strip().partition("=")
            if unit.strip().lower() != "bytes" or "," in spec:
                return None  # unknown unit or multiple ranges: send it all
            first, dash, last = spec.strip().partition("-")
            if not dash:
                return None
            try:
                if first == "":
                    n = int(last)
                    if n <= 0:
                        return "bad"
                    start, end = max(0, size - n), size - 1
                else:
                    start = int(first)
                    end = int(last) if last else size - 1
            except ValueError:
                return None
            if start < 0 or (last and end < start):
                return None
            if start >= size:
                return "bad"
            return start, min(end, size - 1)

        def send_head(self):
            path = self.translate_path(self.path)
            if os.path.isdir(path) or "Range" not in self.headers:
                return super().send_head()
            try:
                f = open(path, "rb")
            except OSError:
                self.send_error(404, "File not found")
                return None
            try:
                size = os.fstat(f.fileno()).st_size
                rng = self._parse_range(size)
                if rng is None:
                    f.close()
                    return super().send_head()
                if rng == "bad":
                    f.close()
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % size)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                start, end = rng
                f.seek(start)
                self._remaining = end - start + 1
                self.send_response(206)
                self.send_header("Content-Type", self.guess_type(path))
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
                self.send_header("Content-Length", str(self._remaining))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                return f
            except Exception:
                f.close()
                raise

        def copyfile(self, source, outputfile):
            remaining = getattr(self, "_remaining", None)
            if remaining is None:
                return super().copyfile(source, outputfile)
            self._remaining = None
            while remaining > 0:
                chunk = source.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                outputfile.write(chunk)
                remaining -= len(chunk)

    return Handler


def serve_http(root, port, auth=None, tls=None):
    from http.server import ThreadingHTTPServer

    context = None
    if tls:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

        def finish_request(self, request, client_address):
            if context is not None:
                # handshake in the request's thread; one line for a refused one
                try:
                    request = context.wrap_socket(request, server_side=True)
                except OSError as e:
                    sys.stderr.write("%s TLS handshake failed: %s\n" % (client_address[0], e))
                    return
            super().finish_request(request, client_address)

    server = Server((HOST, port), _http_handler_class(os.path.abspath(root), auth))
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


# ---------------------------------------------------------------- FTP server

def _session_reuse_dtp(base):
    """A TLS data-connection handler that, like vsftpd's default require_ssl_reuse,
    refuses a data connection that does not resume the control connection's session."""
    # pyOpenSSL has no public call for this; cryptography's binding has had it for years
    from OpenSSL._util import lib
    reused = getattr(lib, "SSL_session_reused", None)
    if reused is None:
        raise Missing("pyOpenSSL/cryptography without SSL_session_reused: "
                      "cannot check TLS session reuse")

    class Handler(base):
        def handle_ssl_established(self):
            if not reused(self.socket._ssl):
                sys.stderr.write("FTPS data connection without TLS session reuse refused\n")
                self.cmd_channel.respond("522 SSL connection failed: session reuse required")
                self.close()
                return
            super().handle_ssl_established()

    return Handler


def serve_ftp(root, port, user, password, tls=None):
    import logging

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    logging.basicConfig(level=logging.WARNING)
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, os.path.abspath(root), perm="elradfmwMT")
    if tls:
        from pyftpdlib.handlers import TLS_FTPHandler   # needs pyOpenSSL
        handler = type("Handler", (TLS_FTPHandler,), {})
        handler.certfile, handler.keyfile = tls
        handler.tls_control_required = True     # no login before AUTH TLS
        handler.tls_data_required = True        # no transfer before PROT P
        handler.dtp_handler = _session_reuse_dtp(handler.dtp_handler)
    else:
        handler = type("Handler", (FTPHandler,), {})
    handler.authorizer = authorizer
    handler.auth_failed_timeout = 0.1
    handler.banner = "sarra test ftp"
    server = FTPServer((HOST, port), handler)
    server.max_cons = 256
    print("PORT %d" % server.address[1], flush=True)
    server.serve_forever(handle_exit=True)


def main(argv):
    usage = ("usage: python -m tests.integration.servers "
             "http <dir> <port> [user:password] [--tls CERT KEY] | "
             "ftp <dir> <port> <user> <password> [--tls CERT KEY]")
    argv = list(argv)
    tls = None
    if "--tls" in argv:
        i = argv.index("--tls")
        tls = tuple(argv[i + 1:i + 3])
        del argv[i:i + 3]
        if len(tls) != 2:
            print(usage, file=sys.stderr)
            return 2
    if len(argv) >= 3 and argv[0] == "http" and len(argv) <= 4:
        serve_http(argv[1], int(argv[2]), argv[3] if len(argv) == 4 else None, tls)
    elif len(argv) == 5 and argv[0] == "ftp":
        serve_ftp(argv[1], int(argv[2]), argv[3], argv[4], tls)
    else:
        print(usage, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main(sys.argv[1:]))
