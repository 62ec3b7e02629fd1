"""Fixtures starting real servers on free loopback ports, one per test module.

http_server  HttpServer(host, port, root)            .url -> 'http://127.0.0.1:<port>/'
sftp_server  SftpServer(host, port, user, keyfile, root)   .url, .host_pubkey
ftp_server   FtpServer(host, port, user, password, root)   .url (with credentials)

Each root is an empty directory that the test module may fill; each server
process is stopped (by its PID / process group) when the module ends.
"""

import getpass
from pathlib import Path
from typing import NamedTuple

import pytest

from sarra.broker.client import Broker
from tests.integration import servers


class HttpServer(NamedTuple):
    host: str
    port: int
    root: Path

    @property
    def url(self):
        return "http://%s:%d/" % (self.host, self.port)


class SftpServer(NamedTuple):
    host: str
    port: int
    user: str
    keyfile: Path
    root: Path

    @property
    def url(self):
        return "sftp://%s@%s:%d/" % (self.user, self.host, self.port)

    @property
    def host_pubkey(self):
        return self.keyfile.parent / "ssh_host_ed25519_key.pub"


class FtpServer(NamedTuple):
    host: str
    port: int
    user: str
    password: str
    root: Path

    @property
    def url(self):
        return "ftp://%s:%s@%s:%d/" % (self.user, self.password, self.host, self.port)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("http")
    root = base / "root"
    root.mkdir()
    proc = servers.start_http(root, base)
    try:
        yield HttpServer(proc.host, proc.port, root)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("sftp")
    root = (base / "root")
    root.mkdir()
    work = base / "ssh"
    work.mkdir()
    proc, keyfile, _ = servers.start_sshd(root.resolve(), work, getpass.getuser())
    try:
        yield SftpServer(proc.host, proc.port, getpass.getuser(), keyfile, root.resolve())
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def ftp_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("ftp")
    root = base / "root"
    root.mkdir()
    user, password = "sarra", "ftppass"
    proc = servers.start_ftp(root, base, user, password)
    try:
        yield FtpServer(proc.host, proc.port, user, password, root)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def pump(tmp_path_factory, broker_url):
    """A whole pump (tests/integration/pumpkit.running: scripts/pump_demo.Pump) with its
    standard configuration, one per module; a module needing its own defines its own."""
    from tests.integration import pumpkit
    with pumpkit.running(tmp_path_factory, broker_url) as p:
        yield p


@pytest.fixture
def make_broker(broker_url, home):
    """Factory for Brokers on the test broker; closes them after the test."""
    made = []

    def make(url=None, **kw):
        kw.setdefault('backoff_initial', 0.05)
        kw.setdefault('backoff_max', 0.2)
        b = Broker(url or broker_url, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
