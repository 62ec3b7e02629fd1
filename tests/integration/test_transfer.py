"""sarra.transfer drivers against real servers on loopback: HTTP/1.1, OpenSSH sshd, pyftpdlib.

The servers are private fixtures of this module (names start with '_'): each one runs in
its own process group, logs what the tests check (HTTP request lines with the client port,
sshd logins, FTP sessions) and is killed by PID at teardown.
"""

import getpass
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import psutil
import pytest

from sarra.transfer import TransferError, close_pool, for_url
from sarra.transfer.ftp import FtpTransfer
from sarra.transfer.http import BIG_BODY, BIG_READ, HttpTransfer, RequestsHttpTransfer
from sarra.transfer.sftp import SftpTransfer

HOST = '127.0.0.1'
# a name with the characters v02 escapes (space, #) and raw UTF-8 ones it does not
ODD_DIR = 'dir a#b+c é日本'
ODD_NAME = 'name x#y+z é日本.txt'
ODD_REL = '/dir%20a%23b+c%20é日本/name%20x%23y+z%20é日本.txt'

# ------------------------------------------------------------------------------ servers

_HTTP_SERVER = r'''
import os, re, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote
ROOT, LOG = sys.argv[1], sys.argv[2]
class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def do_GET(self):
        rng = self.headers.get('Range', '-')
        with open(LOG, 'a', encoding='utf-8') as log:
            # the raw request target: http.server itself collapses a leading '//' in self.path
            log.write('%d\t%s\t%s\t%s\n' % (self.client_address[1], self.requestline.split()[1], rng,
                                             self.headers.get('Authorization', '-')))
        rel = unquote(self.path.split('?', 1)[0]).lstrip('/')
        path = os.path.join(ROOT, rel)
        if not os.path.isfile(path):
            return self.reply(404, b'not found')
        with open(path, 'rb') as f:
            data = f.read()
        m = re.match(r'bytes=(\d+)-(\d*)$', rng)
        if m and not rel.startswith('norange/'):
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data) or end < start:
                return self.reply(416, b'', {'Content-Range': 'bytes */%d' % len(data)})
            return self.reply(206, data[start:end + 1],
                              {'Content-Range': 'bytes %d-%d/%d' % (start, end, len(data))})
        self.reply(200, data)
    def reply(self, code, body, headers=()):
        self.send_response(code)
        for k, v in dict(headers).items():
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = ThreadingHTTPServer(('127.0.0.1', 0), H)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
srv.serve_forever()
'''

_FTP_SERVER = r'''
import logging, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
ROOT, LOG = sys.argv[1], sys.argv[2]
logging.basicConfig(filename=LOG, level=logging.INFO)
auth = DummyAuthorizer()
auth.add_user('user', 'S3cret', ROOT, perm='elradfmwMT')
FTPHandler.authorizer = auth
FTPHandler.auth_failed_timeout = 0.1
srv = FTPServer(('127.0.0.1', 0), FTPHandler)
print(srv.address[1], flush=True)
srv.serve_forever()
'''


class _Server:
    def __init__(self, proc, port, log, root):
        self.proc, self.port, self.log, self.root = proc, port, log, root

    def log_lines(self):
        try:
            with open(self.log, encoding='utf-8', errors='replace') as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _start_script(tmp, script, root):
    """Run a server script printing its port on stdout; returns a _Server."""
    path = tmp / ('server-%s.py' % uuid.uuid4().hex[:8])
    path.write_text(script)
    log = str(tmp / (path.stem + '.log'))
    proc = subprocess.Popen([sys.executable, str(path), str(root), log], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError('server %s did not start: %r' % (path, line))
    return _Server(proc, int(line), log, root)


def _free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _start_sshd(tmp, root):
    if not os.path.exists('/usr/sbin/sshd'):
        pytest.skip('/usr/sbin/sshd not installed')
    os.makedirs('/run/sshd', mode=0o755, exist_ok=True)
    for key in ('host_key', 'client_key'):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(tmp / key)],
                       check=True, capture_output=True)
    shutil.copy(tmp / 'client_key.pub', tmp / 'authorized_keys')
    port = _free_port()
    cfg = tmp / 'sshd_config'
    cfg.write_text(textwrap.dedent('''\
        ListenAddress 127.0.0.1:%d
        HostKey %s
        PidFile %s
        AuthorizedKeysFile %s
        PermitRootLogin prohibit-password
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        StrictModes no
        UsePAM no
        UseDNS no
        LogLevel INFO
        Subsystem sftp internal-sftp -d %s
        ''') % (port, tmp / 'host_key', tmp / 'sshd.pid', tmp / 'authorized_keys', root))
    log = str(tmp / 'sshd.log')
    with open(log, 'wb') as err:
        proc = subprocess.Popen(['/usr/sbin/sshd', '-D', '-e', '-f', str(cfg)], stderr=err,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError('sshd did not start: %s' % open(log).read()[-500:])
            time.sleep(0.05)
    server = _Server(proc, port, log, root)
    server.client_key = str(tmp / 'client_key')
    return server


@pytest.fixture(scope='module')
def _http(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('http')
    root = tmp / 'www'
    root.mkdir()
    server = _start_script(tmp, _HTTP_SERVER, root)
    yield server
    server.stop()


@pytest.fixture(scope='module')
def _sshd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('sshd')
    root = tmp / 'home'
    root.mkdir()
    server = _start_sshd(tmp, root)
    yield server
    server.stop()


@pytest.fixture(scope='module')
def _ftpd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ftp')
    root = tmp / 'ftproot'
    root.mkdir()
    server = _start_script(tmp, _FTP_SERVER, root)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.setenv('XDG_CONFIG_HOME', str(home / '.config'))
    monkeypatch.setenv('XDG_CACHE_HOME', str(home / '.cache'))
    monkeypatch.delenv('SSH_AUTH_SOCK', raising=False)
    for var in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy',
                'ALL_PROXY'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    return home


# ------------------------------------------------------------------------------ helpers

def _data(n, seed=1):
    """n pseudo-random bytes (not a repeating pattern, so misplaced ranges are caught)."""
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _unique(prefix='f'):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:10])


class _Recorder:
    """A hasher stand-in that keeps every byte it is fed."""

    def __init__(self):
        self.data = bytearray()

    def update(self, b):
        self.data += b


def _blocks(size, bsz):
    """(offset, length) of every block, the last one short (parts §3 formulas)."""
    return [(o, min(bsz, size - o)) for o in range(0, size, bsz)]


# ------------------------------------------------------------------------------ HTTP

def _http_requests(server, since):
    return [line.split('\t') for line in server.log_lines()[since:]]


def test_http_whole_and_ranged_over_one_connection(_http, tmp_path):
    name = _unique() + '.bin'
    payload = _data(1_000_003)
    (_http.root / name).write_bytes(payload)
    base = 'http://%s:%d/' % (HOST, _http.port)
    url = base + '/' + name                          # v2 relpath form: GET //name
    before = len(_http.log_lines())
    drv = RequestsHttpTransfer(bufsize=65536, timeout=10)
    try:
        whole, rec = tmp_path / 'whole', _Recorder()
        assert drv.get(url, str(whole), hasher=rec) == len(payload)
        assert whole.read_bytes() == payload and bytes(rec.data) == payload

        # blocks in reverse order, written in place into one file; block 0 is ranged too
        target = tmp_path / 'target'
        md5s = {}
        for off, ln in reversed(_blocks(len(payload), 300_000)):
            h = hashlib.md5()
            assert drv.get(url, str(target), off, ln, hasher=h, write_offset=off) == ln
            md5s[off] = h.hexdigest()
        assert target.read_bytes() == payload
        for off, ln in _blocks(len(payload), 300_000):
            assert md5s[off] == hashlib.md5(payload[off:off + ln]).hexdigest()

        session = drv.session
        for _ in range(10):
            drv.get(url, str(tmp_path / 'again'), 10, 20)
        assert drv.session is session
    finally:
        drv.close()
    reqs = _http_requests(_http, before)
    assert len(reqs) == 1 + 4 + 10
    assert {r[1] for r in reqs} == {'//' + name}      # '//' kept, nothing normalised
    assert reqs[0][2] == '-'                          # whole file: no Range
    assert reqs[1][2] == 'bytes=900000-1000002'       # last short block
    assert reqs[4][2] == 'bytes=0-299999'             # block 0 uses a Range too
    assert len({r[0] for r in reqs}) == 1, 'all requests must share one TCP connection'


def test_http_write_offset_keeps_surrounding_bytes(_http, tmp_path):
    name = _unique()
    payload = _data(5000, seed=2)
    (_http.root / name).write_bytes(payload)
    local = tmp_path / 'local'
    local.write_bytes(b'x' * 8000)
    with RequestsHttpTransfer(timeout=10) as drv:
        n = drv.get('http://%s:%d/%s' % (HOST, _http.port, name), str(local), 1000, 500,
                    write_offset=3000)
        assert n == 500
        assert local.read_bytes() == b'x' * 3000 + payload[1000:1500] + b'x' * 4500
        empty = _unique()
        (_http.root / empty).write_bytes(b'')                     # parts 1,0,1,0,0
        assert drv.get('http://%s:%d/%s' % (HOST, _http.port, empty), str(local)) == 0
        assert local.read_bytes() == b''
        assert drv.get('http://%s:%d/%s' % (HOST, _http.port, name), str(local), 0, 0) == 0


def test_http_server_ignoring_range_is_skipped_not_written_whole(_http, tmp_path):
    (_http.root / 'norange').mkdir(exist_ok=True)
    name = 'norange/' + _unique()
    payload = _data(100_000, seed=3)
    (_http.root / name).write_bytes(payload)
    out, h = tmp_path / 'blk', hashlib.sha1()
    with RequestsHttpTransfer(bufsize=4096, timeout=10) as drv:
        url = 'http://%s:%d/%s' % (HOST, _http.port, name)
        assert drv.get(url, str(out), 70_000, 20_000, hasher=h) == 20_000
        assert out.read_bytes() == payload[70_000:90_000]
        assert h.digest() == hashlib.sha1(payload[70_000:90_000]).digest()
        assert drv.get(url, str(out), 0, 1000) == 1000
        assert out.read_bytes() == payload[:1000]


def test_http_big_bodies_spliced_or_read_into_lent_buffers(_http, tmp_path):
    """Bodies of BIG_BODY and more, wanted from their first byte, are spliced into the file
    and hashed from it (whole, and in place at an offset); when the server ignores Range,
    they go through buffers lent by the hash thread (no copy, no allocation per piece) and
    are skipped to the offset. The digest is right; the pool never grows past POOL."""
    from sarra.flow.fetch import _HashThread
    (_http.root / 'norange').mkdir(exist_ok=True)
    size = BIG_BODY + 3 * BIG_READ + 12_345            # not a multiple of anything
    payload = os.urandom(size)
    name = _unique()
    (_http.root / name).write_bytes(payload)
    (_http.root / 'norange' / name).write_bytes(payload)
    base = 'http://%s:%d/' % (HOST, _http.port)
    with HttpTransfer(timeout=10) as drv:
        h = _HashThread(hashlib.md5())
        out = tmp_path / 'whole'
        assert drv.get(base + name, str(out), hasher=h) == size
        assert h.hexdigest() == hashlib.md5(payload).hexdigest()
        assert out.read_bytes() == payload
        assert h.made == 0 and h.range_fd is not None       # spliced, hashed from the file

        # a block of BIG_BODY+ bytes written in place between other bytes
        off, ln = BIG_READ + 7, BIG_BODY + BIG_READ
        inplace = tmp_path / 'inplace'
        inplace.write_bytes(b'x' * size)
        h = _HashThread(hashlib.sha512())
        assert drv.get(base + name, str(inplace), off, ln, hasher=h, write_offset=off) == ln
        assert h.hexdigest() == hashlib.sha512(payload[off:off + ln]).hexdigest()
        assert inplace.read_bytes() == b'x' * off + payload[off:off + ln] + b'x' * (size - off - ln)
        assert h.made == 0 and h.range_fd is not None

        # the server answers 200 with the whole body: 2+ lent buffers are skipped unwritten
        h = _HashThread(hashlib.md5())
        skipped = tmp_path / 'skipped'
        off = 2 * BIG_READ + 99
        assert drv.get(base + 'norange/' + name, str(skipped), off, 1000, hasher=h) == 1000
        assert h.hexdigest() == hashlib.md5(payload[off:off + 1000]).hexdigest()
        assert skipped.read_bytes() == payload[off:off + 1000]
        assert 1 <= h.made <= _HashThread.POOL and h.range_fd is None

        # no hasher: one buffer of the writer's own, reused
        plain = tmp_path / 'plain'
        assert drv.get(base + name, str(plain)) == size
        assert plain.read_bytes() == payload


def test_http_escaped_and_non_ascii_names(_http, tmp_path):
    (_http.root / ODD_DIR).mkdir(exist_ok=True)
    (_http.root / ODD_DIR / ODD_NAME).write_bytes(b'odd content')
    before = len(_http.log_lines())
    with RequestsHttpTransfer(timeout=10) as drv:
        assert drv.get('http://%s:%d/' % (HOST, _http.port) + ODD_REL, str(tmp_path / 'o')) == 11
    assert (tmp_path / 'o').read_bytes() == b'odd content'
    (req,) = _http_requests(_http, before)
    assert req[1] == ('//dir%20a%23b+c%20%C3%A9%E6%97%A5%E6%9C%AC/'
                      'name%20x%23y+z%20%C3%A9%E6%97%A5%E6%9C%AC.txt')


def test_http_404_and_errors(_http, tmp_path):
    local = tmp_path / 'keep'
    local.write_bytes(b'previous')
    url = 'http://user:S3cretPW@%s:%d//missing/%s' % (HOST, _http.port, _unique())
    with RequestsHttpTransfer(timeout=10) as drv:
        with pytest.raises(TransferError) as ei:
            drv.get(url, str(local))
        assert ei.value.code == 404
        assert ei.value.message.startswith('http download failed: 404 Not Found http://user@')
        assert 'S3cretPW' not in str(ei.value)
        assert local.read_bytes() == b'previous'       # not truncated by a failed download

        name = _unique()
        (_http.root / name).write_bytes(b'0123456789')
        with pytest.raises(TransferError) as ei:       # beyond the end: 416
            drv.get('http://%s:%d/%s' % (HOST, _http.port, name), str(local), 50, 10)
        assert ei.value.code == 499 and '416' in ei.value.message

    port = _free_port()
    with RequestsHttpTransfer(timeout=5) as drv:
        with pytest.raises(TransferError) as ei:
            drv.get('http://%s:%d/x' % (HOST, port), str(tmp_path / 'y'))
    assert ei.value.code == 499
    assert 'cannot connect to http://%s:%d/x' % (HOST, port) in ei.value.message


def test_http_authorization_headers(_http, tmp_path):
    name = _unique()
    (_http.root / name).write_bytes(b'abc')
    before = len(_http.log_lines())
    with RequestsHttpTransfer(credentials={'options': {'bearer_token': 'tok123'}}, timeout=10) as drv:
        drv.get('http://%s:%d/%s' % (HOST, _http.port, name), str(tmp_path / 'a'))
    with RequestsHttpTransfer(timeout=10) as drv:
        drv.get('http://bob:pw@%s:%d/%s' % (HOST, _http.port, name), str(tmp_path / 'b'))
    reqs = _http_requests(_http, before)
    assert reqs[0][3] == 'Bearer tok123'
    assert reqs[1][3] == 'Basic Ym9iOnB3'             # base64('bob:pw')
    assert reqs[1][1] == '/' + name                    # credentials not left in the URL


# ------------------------------------------------------------------------------ SFTP

def _sftp_base(server, user=None):
    return 'sftp://%s@%s:%d/' % (user or getpass.getuser(), HOST, server.port)


def _logins(server):
    return sum('Accepted publickey' in line for line in server.log_lines())


def test_sftp_get_ranges_one_session(_sshd, tmp_path):
    name = _unique()
    payload = _data(2_500_000, seed=4)
    (_sshd.root / name).write_bytes(payload)
    creds = {'options': {'ssh_keyfile': _sshd.client_key}}
    pool = {}
    abs_url = _sftp_base(_sshd) + str(_sshd.root / name)   # '//abs/path'
    rel_url = _sftp_base(_sshd) + name                            # relative to login dir
    before = _logins(_sshd)
    try:
        drv = for_url(abs_url, pool, credentials=creds, timeout=10, bufsize=1 << 18)
        rec = _Recorder()
        assert drv.get(abs_url, str(tmp_path / 'w'), hasher=rec) == len(payload)
        assert (tmp_path / 'w').read_bytes() == payload and bytes(rec.data) == payload
        transport = drv.transport
        target = tmp_path / 'target'
        target.write_bytes(b'')
        for off, ln in reversed(_blocks(len(payload), 1_000_000)):
            h = hashlib.md5()
            assert drv.get(rel_url, str(target), off, ln, hasher=h, write_offset=off) == ln
            assert h.digest() == hashlib.md5(payload[off:off + ln]).digest()
        assert target.read_bytes() == payload
        assert for_url(rel_url, pool, credentials=creds) is drv
        for _ in range(5):
            drv.get(abs_url, str(tmp_path / 'x'), 7, 9)
        assert (tmp_path / 'x').read_bytes() == payload[7:16]
        assert drv.transport is transport
        assert _logins(_sshd) - before == 1, 'one SSH session for all gets'
    finally:
        close_pool(pool)


def test_sftp_escaped_names_404_and_keys_from_home(_sshd, tmp_path, _home):
    (_sshd.root / ODD_DIR).mkdir(exist_ok=True)
    (_sshd.root / ODD_DIR / ODD_NAME).write_bytes(b'odd sftp')
    ssh = _home / '.ssh'
    ssh.mkdir()
    shutil.copy(_sshd.client_key, ssh / 'id_ed25519')   # no credentials: ~/.ssh keys
    with SftpTransfer(timeout=10) as drv:
        assert drv.get(_sftp_base(_sshd) + ODD_REL.lstrip('/'), str(tmp_path / 'o')) == 8
        assert (tmp_path / 'o').read_bytes() == b'odd sftp'
        with pytest.raises(TransferError) as ei:
            drv.get(_sftp_base(_sshd) + 'no%20such', str(tmp_path / 'n'))
        assert ei.value.code == 404 and 'no%20such' in ei.value.message
        assert not (tmp_path / 'n').exists()
        (_sshd.root / 'empty').write_bytes(b'')
        assert drv.get(_sftp_base(_sshd) + 'empty', str(tmp_path / 'o')) == 0
        assert (tmp_path / 'o').read_bytes() == b''
        with pytest.raises(TransferError) as ei:      # range beyond the end
            drv.get(_sftp_base(_sshd) + ODD_REL.lstrip('/'), str(tmp_path / 'o'), 4, 100)
        assert ei.value.code == 499


def test_sftp_bad_key_fails_cleanly(_sshd, tmp_path):
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(tmp_path / 'k')],
                   check=True, capture_output=True)
    with SftpTransfer(credentials={'ssh_keyfile': str(tmp_path / 'k')}, timeout=10) as drv:
        with pytest.raises(TransferError) as ei:
            drv.get(_sftp_base(_sshd) + 'x', str(tmp_path / 'x'))
    assert ei.value.code == 499 and ei.value.message.startswith('sftp authentication failed')


def test_sftp_put_remote_offset_delete_symlink_rename(_sshd, tmp_path):
    payload = _data(700_001, seed=5)
    src = tmp_path / 'src'
    src.write_bytes(payload)
    sub = _unique('d')
    dest = _sshd.root / sub / 'deep' / 'out.bin'
    url = _sftp_base(_sshd) + str(dest)
    with SftpTransfer(credentials={'ssh_keyfile': _sshd.client_key}, timeout=10) as drv:
        for off, ln in reversed(_blocks(len(payload), 256_000)):   # parents created on demand
            assert drv.put(str(src), url, off, ln, remote_offset=off) == ln
        assert dest.read_bytes() == payload
        assert drv.put(str(src), url, 10, 5) == 5                  # no remote_offset: truncate
        assert dest.read_bytes() == payload[10:15]

        link = _sftp_base(_sshd) + '%s/link' % sub                 # relative to the login dir
        drv.symlink('deep/out.bin', link)
        drv.symlink('deep/out.bin', link)                          # replaces an existing link
        assert os.readlink(_sshd.root / sub / 'link') == 'deep/out.bin'

        new_url = _sftp_base(_sshd) + '%s/renamed%%20x' % sub
        (_sshd.root / sub / 'renamed x').write_bytes(b'old')
        drv.rename(url, new_url)                                   # overwrites the target
        assert (_sshd.root / sub / 'renamed x').read_bytes() == payload[10:15]
        assert not dest.exists()
        drv.delete(new_url)
        assert not (_sshd.root / sub / 'renamed x').exists()
        with pytest.raises(TransferError) as ei:
            drv.delete(new_url)
        assert ei.value.code == 404


def test_sftp_reconnects_after_session_drop(_sshd, tmp_path):
    name = _unique()
    (_sshd.root / name).write_bytes(b'payload')
    url = _sftp_base(_sshd) + name
    before = _logins(_sshd)
    with SftpTransfer(credentials={'ssh_keyfile': _sshd.client_key}, timeout=10) as drv:
        assert drv.get(url, str(tmp_path / 'a')) == 7
        old = drv.transport
        # kill the per-connection sshd processes (children of the sshd we started)
        for child in psutil.Process(_sshd.proc.pid).children(recursive=True):
            child.kill()
        deadline = time.monotonic() + 5
        while old.is_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert drv.get(url, str(tmp_path / 'b')) == 7
        assert drv.transport is not old
    assert (tmp_path / 'b').read_bytes() == b'payload'
    assert _logins(_sshd) - before == 2


# ------------------------------------------------------------------------------ FTP

def _ftp_base(server):
    return 'ftp://user:S3cret@%s:%d/' % (HOST, server.port)


def _ftp_sessions(server):
    return sum('FTP session opened' in line for line in server.log_lines())


def test_ftp_put_get_ranges_delete_one_connection(_ftpd, tmp_path):
    payload = _data(600_000, seed=6)
    src = tmp_path / 'src'
    src.write_bytes(payload)
    sub = _unique('d')
    url = _ftp_base(_ftpd) + '%s/new/file.bin' % sub     # relative to the login directory
    before = _ftp_sessions(_ftpd)
    with FtpTransfer(timeout=10, bufsize=65536) as drv:
        assert drv.put(str(src), url) == len(payload)    # creates the missing directories
        assert (_ftpd.root / sub / 'new' / 'file.bin').read_bytes() == payload
        control = drv.ftp
        rec = _Recorder()
        assert drv.get(url, str(tmp_path / 'w'), hasher=rec) == len(payload)
        assert bytes(rec.data) == payload
        target = tmp_path / 't'
        for off, ln in reversed(_blocks(len(payload), 250_000)):   # REST + early stop
            h = hashlib.md5()
            assert drv.get(url, str(target), off, ln, hasher=h, write_offset=off) == ln
            assert h.digest() == hashlib.md5(payload[off:off + ln]).digest()
        assert target.read_bytes() == payload
        for _ in range(5):
            assert drv.get(url, str(tmp_path / 's'), 3, 4) == 4
        assert (tmp_path / 's').read_bytes() == payload[3:7]

        with pytest.raises(TransferError) as ei:
            drv.put(str(src), url, 250_000, 250_000, remote_offset=250_000)
        assert ei.value.code == 499
        assert ei.value.message.startswith('ftp cannot deliver partitioned files')

        new = _ftp_base(_ftpd) + '%s/new/moved%%20%%23x' % sub
        drv.rename(url, new)
        assert (_ftpd.root / sub / 'new' / 'moved #x').read_bytes() == payload
        drv.delete(new)
        assert not (_ftpd.root / sub / 'new' / 'moved #x').exists()
        with pytest.raises(TransferError) as ei:
            drv.get(new, str(tmp_path / 'gone'))
        assert ei.value.code == 404
        assert 'S3cret' not in ei.value.message
        with pytest.raises(TransferError) as ei:
            drv.symlink('a', new)
        assert ei.value.message == 'ftp does not support symlink'
        assert drv.ftp is control
    assert _ftp_sessions(_ftpd) - before == 1, 'one FTP control connection for everything'


def test_ftp_odd_names_absolute_path_and_reconnect(_ftpd, tmp_path):
    (_ftpd.root / ODD_DIR).mkdir(exist_ok=True)
    (_ftpd.root / ODD_DIR / ODD_NAME).write_bytes(b'odd ftp')
    before = _ftp_sessions(_ftpd)
    with FtpTransfer(timeout=10) as drv:
        # pyftpdlib's virtual root is the user's directory, so '//' names the same file
        assert drv.get(_ftp_base(_ftpd) + ODD_REL, str(tmp_path / 'a')) == 7
        assert drv.get(_ftp_base(_ftpd) + '/' + ODD_REL, str(tmp_path / 'b')) == 7
        drv.ftp.sock.shutdown(socket.SHUT_RDWR)       # the control connection drops
        assert drv.get(_ftp_base(_ftpd) + ODD_REL, str(tmp_path / 'c'), 4, 3) == 3
    assert (tmp_path / 'c').read_bytes() == b'ftp'
    assert _ftp_sessions(_ftpd) - before == 2


def test_ftp_login_failure(_ftpd, tmp_path):
    with FtpTransfer(timeout=10) as drv:
        with pytest.raises(TransferError) as ei:
            drv.get('ftp://user:wrong@%s:%d/x' % (HOST, _ftpd.port), str(tmp_path / 'x'))
    assert ei.value.code == 499
    assert ei.value.message.startswith('ftp login failed for user@%s:%d' % (HOST, _ftpd.port))
    assert 'wrong' not in ei.value.message


class _RawHttp:
    """A one-thread HTTP/1.1 server on loopback that answers every GET with a body of
    BIG_BODY+ bytes sent as told: 'full', 'short' (half, then close) or 'stall' (half,
    then silence); counts the connections it accepted."""

    def __init__(self, payload, mode):
        import threading
        self.payload, self.mode, self.accepted = payload, mode, 0
        self.srv = socket.create_server((HOST, 0))
        self.port = self.srv.getsockname()[1]
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                buf = b''
                while True:
                    while b'\r\n\r\n' not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    if b'\r\n\r\n' not in buf:
                        break
                    buf = buf.split(b'\r\n\r\n', 1)[1]
                    body = self.payload
                    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % len(body))
                    if self.mode == 'full':
                        conn.sendall(body)
                        continue
                    conn.sendall(body[:len(body) // 2])
                    if self.mode == 'stall':
                        self.stop.wait(10)
                    break

    def close(self):
        self.stop.set()
        self.srv.close()


@pytest.mark.parametrize('mode', ['full', 'short', 'stall'])
def test_http_spliced_body_reuses_the_connection_and_fails_cleanly(tmp_path, mode):
    """The splice path: two bodies over one kept-alive connection; a body cut short or a
    server gone silent half-way is one TransferError that says so, not a hang."""
    from sarra.flow.fetch import _HashThread
    payload = os.urandom(BIG_BODY + 5 * 4096 + 3)
    srv = _RawHttp(payload, mode)
    try:
        url = 'http://%s:%d/f' % (HOST, srv.port)
        with HttpTransfer(timeout=1) as drv:
            if mode == 'full':
                for name in ('a', 'b'):
                    h = _HashThread(hashlib.md5())
                    assert drv.get(url, str(tmp_path / name), hasher=h) == len(payload)
                    assert h.hexdigest() == hashlib.md5(payload).hexdigest()
                    assert h.range_fd is not None
                    assert (tmp_path / name).read_bytes() == payload
                assert srv.accepted == 1
                return
            t0 = time.monotonic()
            with pytest.raises(TransferError) as e:
                drv.get(url, str(tmp_path / 'x'), hasher=_HashThread(hashlib.md5()))
            assert time.monotonic() - t0 < 5
            said = str(e.value)
            assert ('short read' if mode == 'short' else 'timed out') in said, said
            assert url in said
    finally:
        srv.close()


def test_http_spliced_body_reports_every_piece_and_each_range_once(tmp_path):
    """The splice path hands the hasher contiguous ranges that cover the body once, and
    calls step() after every piece (where the flow checks for a stop and keeps its broker
    connections alive during a slow body)."""
    from sarra.transfer.splice import PIECE

    class Recorder:
        def __init__(self):
            self.ranges, self.steps = [], 0

        def update(self, data):
            self.ranges.append(('bytes', len(data)))

        def update_range(self, fd, start, end):
            self.ranges.append((start, end))

        def step(self):
            self.steps += 1

    payload = os.urandom(BIG_BODY + 3 * PIECE + 17)
    srv = _RawHttp(payload, 'full')
    try:
        rec = Recorder()
        with HttpTransfer(timeout=5) as drv:
            assert drv.get('http://%s:%d/f' % (HOST, srv.port), str(tmp_path / 'f'),
                           hasher=rec) == len(payload)
        head = sum(n for kind, n in rec.ranges if kind == 'bytes')   # read with the headers
        spans = [r for r in rec.ranges if r[0] != 'bytes']
        assert spans[0][0] == head and spans[-1][1] == len(payload)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert rec.steps >= (len(payload) - head) // PIECE
    finally:
        srv.close()


@pytest.mark.parametrize('where', ['file', 'socket'])
def test_http_splice_refused_falls_back_to_copying(tmp_path, monkeypatch, where):
    """A file system (or socket) that cannot splice (EINVAL) gets the bytes copied through
    a buffer instead: the file and digest are right, bytes already in the pipe included."""
    import errno as _errno
    from sarra.flow.fetch import _HashThread
    real = os.splice
    calls = []

    def splice(src, dst, count, offset_src=None, offset_dst=None, flags=0):
        to_file = offset_dst is not None
        calls.append(to_file)
        if to_file == (where == 'file'):
            raise OSError(_errno.EINVAL, 'Invalid argument')
        return real(src, dst, count, offset_src=offset_src, offset_dst=offset_dst)
    monkeypatch.setattr(os, 'splice', splice)
    payload = os.urandom(BIG_BODY + 3 * 4096 + 5)
    srv = _RawHttp(payload, 'full')
    try:
        with HttpTransfer(timeout=5) as drv:
            h = _HashThread(hashlib.md5())
            assert drv.get('http://%s:%d/f' % (HOST, srv.port), str(tmp_path / 'f'),
                           hasher=h) == len(payload)
            assert h.hexdigest() == hashlib.md5(payload).hexdigest()
        assert (tmp_path / 'f').read_bytes() == payload
        assert len(calls) <= 2              # one refusal, then copying
    finally:
        srv.close()
