"""sr_subscribe (and sr_sender) over HTTPS and explicit FTPS with a throw-away CA, and over
SFTP with a password from credentials.conf, against real servers on loopback.

The CA is trusted only the documented ways (man sr_subscribe, ENVIRONMENT):
REQUESTS_CA_BUNDLE for https, SSL_CERT_FILE for ftps. Every CA variable of the caller's
environment is removed first, so an untrusted certificate stays untrusted.
"""

import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration import servers
from tests.integration.senderkit import (  # noqa: F401  (fixtures runner, env)
    codes, env, make_files, runner, sender_config, sr_post)
from tests.integration.subkit import (  # noqa: F401  (fixture)
    files_under, make_tree, md5, sub_env, wait_for)

CA_VARIABLES = servers.CA_VARIABLES
SFTP_USER = "sarratest"


# ------------------------------------------------------------------ servers

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return servers.make_tls_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_server(tmp_path_factory, tls_files):
    base = tmp_path_factory.mktemp("https")
    root = base / "root"
    root.mkdir()
    proc = servers.start_http(root, base, tls=tls_files.pair)
    try:
        proc.root = root
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def ftps_server(tmp_path_factory, tls_files):
    base = tmp_path_factory.mktemp("ftps")
    root = base / "root"
    root.mkdir()
    proc = servers.start_ftp(root, base, "sarra", "ftps:pass/word", tls=tls_files.pair)
    try:
        proc.root, proc.user, proc.password = root, "sarra", "ftps:pass/word"
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def sftp_password_server(tmp_path_factory):
    """A second sshd that takes passwords (and no keys) for the local user sarratest,
    whose password is new for every run; its tree is world-readable, under /tmp."""
    if os.geteuid() != 0:
        pytest.skip("the SFTP password tests create the user %s: they need root" % SFTP_USER)
    missing = [t for t in ("useradd", "chpasswd") if not shutil.which(t)]
    if missing:
        pytest.skip("the SFTP password tests need %s" % " and ".join(missing))
    password = secrets.token_urlsafe(12) + "%/:@"   # characters that must be URL-encoded
    servers.ensure_password_user(SFTP_USER, password)
    root = Path(tempfile.mkdtemp(prefix="sarra-sftp-pw-"))
    os.chmod(root, 0o755)
    work = tmp_path_factory.mktemp("sftp_pw")
    proc = None
    try:
        proc, _, _ = servers.start_sshd(root, work, SFTP_USER, password_auth=True)
        proc.root, proc.password = root, password
        yield proc
    finally:
        if proc is not None:
            proc.stop()
        servers.lock_password_user(SFTP_USER)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def no_ca(monkeypatch):
    """No CA variable from the caller's environment: only what the test sets counts."""
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ------------------------------------------------------------------ helpers

def _tree(env, root):
    """10 small files and a 1,000,000-byte file (4 blocks of 256 KiB) under root/<uid>."""
    env.src = root / env.uid
    env.src.mkdir()
    tree = make_tree(env.src, 10, size=700, subdirs=3)
    big = env.src / "big" / "blocks.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(1_000_000))
    tree["big/blocks.bin"] = md5(big)
    return tree


def _download(env, tree, base_url, base_dir):
    env.config(extra="mirror on")
    env.setup()
    env.post(env.src, blocksize="256K", base_url=base_url,
             extra=("--post_base_dir", str(base_dir)))
    p = env.foreground()
    reports = env.reports.wait(14, timeout=60)
    got = env.wait_files({f"{env.uid}/{rel}": d for rel, d in tree.items()}, timeout=10)
    assert got == {}, env.log_text()[-3000:]
    assert sorted(r["code"] for r in reports) == [201] * 14, [r["body"] for r in reports
                                                               if r["code"] != 201]
    assert len(env.reports.settle(0.5)) == 14
    assert files_under(env.dst) == sorted(f"{env.uid}/{rel}" for rel in tree)
    env.stop(p)
    assert p.returncode == 0
    assert "Traceback" not in env.log_text()


def _fails_cleanly(env, base_url, base_dir, rel, pattern):
    """One file announced, its download fails: a 499 report, one-line errors matching
    pattern (a regular expression) at a retry pace, the process alive, no file written.
    Returns the log."""
    env.src = base_dir / env.uid
    env.src.mkdir(exist_ok=True)
    (env.src / rel).write_bytes(b"never delivered\n")
    env.config()
    env.setup()
    env.post(env.src / rel, base_url=base_url + env.uid, extra=("--post_base_dir", str(env.src)))
    p = env.foreground()
    first = env.reports.wait(1, timeout=30)
    assert [r["code"] for r in first] == [499], [r["body"] for r in first]
    assert re.search(pattern, first[0]["headers"]["message"]), first[0]["headers"]
    time.sleep(4)
    assert p.poll() is None, env.log_text()                # kept running: no crash loop
    lines = [x for x in env.log_text().splitlines() if re.search(pattern, x)]
    assert lines, env.log_text()
    # attempts 3, then the retry queue's backoff: a handful in 4 s, not a loop
    assert len(lines) <= 12, "\n".join(lines)
    assert "Traceback" not in env.log_text()
    assert files_under(env.dst) == []                       # nothing, not even a temp file
    env.stop(p)
    return env.log_text()


# ------------------------------------------------------------------ https

def test_https_download_trusting_a_private_ca(sub_env, https_server, tls_files, no_ca):
    no_ca.setenv("REQUESTS_CA_BUNDLE", str(tls_files.ca))
    tree = _tree(sub_env, https_server.root)
    _download(sub_env, tree, "https://%s:%d" % (https_server.host, https_server.port),
              https_server.root)
    assert "TLS handshake failed" not in https_server.log_tail()


def test_https_untrusted_certificate(sub_env, https_server, no_ca):
    url = "https://%s:%d/" % (https_server.host, https_server.port)
    log = _fails_cleanly(sub_env, url, https_server.root, "secret.txt",
                         r"certificate verify failed")
    want = re.escape("%s%s/secret.txt" % (url, sub_env.uid))
    assert re.search(r"ERROR.*http download failed: cannot connect to %s: .*CERTIFICATE_VERIFY"
                     r"_FAILED.*certificate verify failed" % want, log), log
    # the server saw the client give up on the handshake
    assert wait_for(lambda: "unknown ca" in https_server.log_tail(50), timeout=5)


# ------------------------------------------------------------------ ftps

def _ftps_credentials(env, server, options="prot_p"):
    host = "%s:%d" % (server.host, server.port)
    env.credentials("ftps://%s:%s@%s %s\n" % (server.user, quote(server.password, safe=""),
                                               host, options))
    return "ftps://%s@%s" % (server.user, host)


def test_ftps_download_with_protected_data(sub_env, ftps_server, tls_files, no_ca):
    no_ca.setenv("SSL_CERT_FILE", str(tls_files.ca))
    base = _ftps_credentials(sub_env, ftps_server)
    tree = _tree(sub_env, ftps_server.root)
    # the server refuses logins before AUTH TLS and transfers before PROT P
    _download(sub_env, tree, base, ftps_server.root)
    assert ftps_server.password not in sub_env.log_text()


def test_ftps_untrusted_certificate(sub_env, ftps_server, no_ca):
    base = _ftps_credentials(sub_env, ftps_server)
    log = _fails_cleanly(sub_env, base + "/", ftps_server.root, "secret.txt",
                         r"certificate verify failed")
    where = re.escape("%s@%s:%d" % (ftps_server.user, ftps_server.host, ftps_server.port))
    assert re.search(r"ERROR.*ftp cannot connect to %s: .*certificate verify failed" % where,
                     log), log
    assert ftps_server.password not in log


def test_ftps_sender(runner, env, ftps_server, tls_files, no_ca):   # noqa: F811 (fixture)
    no_ca.setenv("SSL_CERT_FILE", str(tls_files.ca))
    host = "%s:%d" % (ftps_server.host, ftps_server.port)
    runner.credentials("ftps://%s:%s@%s prot_p" % (ftps_server.user,
                                                   quote(ftps_server.password, safe=""), host))
    files = make_files(env.src, 4, prefix="tls", subdirs=2)
    sub = "ftps_%s" % env.name
    sender_config(runner, env, "ftps://%s@%s/" % (ftps_server.user, host),
                  "directory %s\ninflight .part" % sub)
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    p = runner.start("sender", env.name)
    runner.wait_consuming(p, env.name)
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src])
    assert sorted(c for _, c in codes(env.reports, 4)) == [201] * 4, runner.log()
    for rel, digest in files.items():
        assert md5(ftps_server.root / sub / rel) == digest
    assert not list((ftps_server.root / sub).rglob("*.part"))
    assert runner.stop(p) == 0
    assert ftps_server.password not in runner.log()


# ------------------------------------------------------------------ sftp with a password

def _sftp_sessions(server, word):
    return server.log_path.read_text(errors="replace").count(
        "%s password for %s" % (word, SFTP_USER))


def _secrets_in(text, password):
    return [s for s in (password, quote(password, safe="")) if s in text]


def test_sftp_password_from_credentials(sub_env, sftp_password_server):
    e, srv = sub_env, sftp_password_server
    host = "%s:%d" % (srv.host, srv.port)
    e.credentials("sftp://%s:%s@%s/\n" % (SFTP_USER, quote(srv.password, safe=""), host))
    before = _sftp_sessions(srv, "Accepted")
    tree = _tree(e, srv.root)
    _download(e, tree, "sftp://%s@%s" % (SFTP_USER, host), srv.root)
    assert _sftp_sessions(srv, "Accepted") > before        # logged in with the password
    assert _secrets_in(e.log_text(), srv.password) == []


def test_sftp_wrong_password(sub_env, sftp_password_server):
    e, srv = sub_env, sftp_password_server
    host = "%s:%d" % (srv.host, srv.port)
    wrong = "not-" + srv.password
    e.credentials("sftp://%s:%s@%s/\n" % (SFTP_USER, quote(wrong, safe=""), host))
    before = _sftp_sessions(srv, "Failed")
    log = _fails_cleanly(e, "sftp://%s@%s/" % (SFTP_USER, host), srv.root, "secret.txt",
                         r"sftp authentication failed")
    assert re.search(r"ERROR.*sftp authentication failed for %s@%s \(tried: .*password\)" % (
        SFTP_USER, re.escape(host)), log), log
    assert _sftp_sessions(srv, "Failed") > before
    assert _secrets_in(log, wrong) == [] and _secrets_in(log, srv.password) == []
    for logfile in e.home.rglob("*.log"):                 # instance logs, if any
        assert _secrets_in(logfile.read_text(errors="replace"), wrong) == [], logfile
