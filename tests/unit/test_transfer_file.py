"""file: driver and the scheme-independent helpers of sarra.transfer."""

import hashlib
import os

import pytest

from sarra.transfer import (Transfer, TransferError, close_pool, credential_flag,
                            credential_user_password, credential_value, decode_path, for_url,
                            redact, remote_path, split_url)
from sarra.transfer.file import FileTransfer, local_path_of
from sarra.transfer.ftp import FtpTransfer, ftp_modes
from sarra.transfer.http import HttpTransfer, quote_url
from sarra.transfer.sftp import SftpTransfer


def _data(n):
    out, block = bytearray(), b'seed'
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


class _Recorder:
    def __init__(self):
        self.data = bytearray()

    def update(self, b):
        self.data += b


@pytest.fixture
def src(tmp_path):
    p = tmp_path / 'src dir' / 'a b#c%25.bin'
    p.parent.mkdir()
    p.write_bytes(_data(100_001))
    return p


def _url(path):
    return 'file:' + str(path).replace(' ', '%20').replace('#', '%23')


# --- helpers ------------------------------------------------------------------------------------

def test_decode_only_space_and_hash():
    assert decode_path('/a%20b%23c%25d%2Fe') == '/a b#c%25d%2Fe'
    assert local_path_of('file:/x%20y/%23z%41') == '/x y/#z%41'
    assert local_path_of('file:///abs/p') == '/abs/p'
    assert local_path_of('file://localhost/abs/p') == '/abs/p'


def test_split_url_and_remote_paths():
    ep = split_url('sftp://bob:p%40ss@Data.Example.org:2222//abs/a%20b?c')
    assert (ep.scheme, ep.host, ep.port, ep.user, ep.password) == \
        ('sftp', 'data.example.org', 2222, 'bob', 'p@ss')
    assert ep.path == '//abs/a%20b?c'                 # untouched, '?' is part of the name
    assert remote_path(ep.path) == '/abs/a b?c'       # '//' -> absolute
    assert remote_path('/rel/x%23y') == 'rel/x#y'     # '/' -> relative to the login dir
    assert remote_path('') == '.'
    assert split_url('ftp://h/').key == ('ftp', 'h', None, None)
    with pytest.raises(TransferError) as ei:
        split_url('no scheme here')
    assert ei.value.code == 499


def test_redact_removes_password_only():
    assert redact('ftp://u:p%40w@h:21/x:y@z') == 'ftp://u@h:21/x:y@z'
    assert redact('sftp://u@h/a') == 'sftp://u@h/a'
    assert redact('http://h/a:b@c') == 'http://h/a:b@c'


def test_quote_url_encodes_non_ascii_not_percent():
    url = 'http://h:8/' + '/dir%20a%23b+c%20é日本/x y%zz.txt'
    assert quote_url(url) == \
        'http://h:8//dir%20a%23b+c%20%C3%A9%E6%97%A5%E6%9C%AC/x%20y%zz.txt'
    assert quote_url('http://h/a#b') == 'http://h/a%23b'


def test_credential_lookup_forms():
    class Cred:
        url = 'sftp://alice:pw%3A1@host'
        options = {'ssh_keyfile': '~/k', 'passive': True}

    assert credential_value(Cred(), 'ssh_keyfile') == '~/k'
    assert credential_user_password(Cred()) == ('alice', 'pw:1')
    assert credential_flag({'options': ['tls', 'prot_p']}, 'prot_p')
    assert not credential_flag({'options': ['tls']}, 'active')
    assert credential_value({'options': ['bt=abc']}, 'bearer_token', 'bt') == 'abc'
    assert credential_flag({'binary': 'no'}, 'binary', default=True) is False
    assert credential_user_password(None) == (None, None)


def test_ftp_modes_from_either_option_spelling():
    class Parsed:                       # options stored as passive/binary booleans
        def __init__(self, **options):
            self.options = options

        @property
        def passive(self):
            return self.options.get('passive', True)

        @property
        def binary(self):
            return self.options.get('binary', True)

        @property
        def tls(self):
            return self.options.get('tls', False)

    assert ftp_modes(None) == (False, False, True, False)
    assert ftp_modes(None, 'ftps') == (True, False, True, False)
    assert ftp_modes({'options': ['active', 'ascii']}) == (False, False, False, True)
    assert ftp_modes({'options': {'ssl': True, 'prot_p': True}}) == (True, True, True, False)
    assert ftp_modes(Parsed(passive=False, binary=False)) == (False, False, False, True)
    assert ftp_modes(Parsed(tls=True)) == (True, False, True, False)


def test_for_url_pools_per_endpoint():
    pool = {}
    a = for_url('sftp://u@h:22//x', pool)
    assert isinstance(a, SftpTransfer)
    assert for_url('sftp://u@h:22/y', pool) is a
    assert for_url('sftp://v@h:22/y', pool) is not a
    assert isinstance(for_url('https://h/x', pool), HttpTransfer)
    assert isinstance(for_url('ftps://h/x', pool), FtpTransfer)
    assert isinstance(for_url('file:/x', pool), FileTransfer)
    assert for_url('file:/other', pool) is for_url('file:/x', pool)
    with pytest.raises(TransferError) as ei:
        for_url('gopher://h/x', pool)
    assert ei.value.code == 499 and 'gopher' in ei.value.message
    close_pool(pool)
    assert pool == {}


def test_unsupported_operations_name_the_scheme(tmp_path):
    with pytest.raises(TransferError) as ei:
        HttpTransfer().put(str(tmp_path / 'x'), 'http://h/x')
    assert (ei.value.code, ei.value.message) == (499, 'http does not support put')
    with pytest.raises(TransferError) as ei:
        Transfer().delete('x')
    assert ei.value.code == 499


# --- file driver --------------------------------------------------------------------------------

def test_get_whole_file_feeds_hasher(src, tmp_path):
    out, rec = tmp_path / 'out', _Recorder()
    drv = FileTransfer()
    assert drv.get(_url(src), str(out), hasher=rec) == 100_001
    assert out.read_bytes() == src.read_bytes() == bytes(rec.data)


def test_get_blocks_in_place_any_order(src, tmp_path):
    data = src.read_bytes()
    out = tmp_path / 'out'
    drv = FileTransfer(bufsize=4096)
    for off in (90_000, 30_000, 0, 60_000):
        ln = min(30_000, len(data) - off)
        h = hashlib.md5()
        assert drv.get(_url(src), str(out), off, ln, hasher=h, write_offset=off) == ln
        assert h.hexdigest() == hashlib.md5(data[off:off + ln]).hexdigest()
    assert out.read_bytes() == data


def test_get_without_hasher_and_with_write_offset_keeps_other_bytes(src, tmp_path):
    data = src.read_bytes()
    out = tmp_path / 'out'
    out.write_bytes(b'z' * 50)
    assert FileTransfer().get(_url(src), str(out), 10, 20, write_offset=5) == 20
    assert out.read_bytes() == b'z' * 5 + data[10:30] + b'z' * 25
    assert FileTransfer().get(_url(src), str(out), 99_990) == 11    # rest of file, truncating
    assert out.read_bytes() == data[99_990:]


def test_get_errors(src, tmp_path):
    drv = FileTransfer()
    with pytest.raises(TransferError) as ei:
        drv.get('file:' + str(tmp_path / 'missing%20x'), str(tmp_path / 'o'))
    assert ei.value.code == 404
    assert ei.value.message == 'file download failed: 404 Not Found file:%s/missing%%20x' % tmp_path
    with pytest.raises(TransferError) as ei:
        drv.get(_url(src), str(tmp_path / 'o'), 100_000, 5)
    assert ei.value.code == 499 and 'beyond end' in ei.value.message
    with pytest.raises(TransferError) as ei:
        drv.get(_url(src), str(tmp_path / 'no' / 'dir' / 'o'))
    assert ei.value.code == 499


def test_get_onto_itself_only_hashes(src):
    data = src.read_bytes()
    h = hashlib.sha512()
    assert FileTransfer().get(_url(src), str(src), hasher=h) == len(data)
    assert src.read_bytes() == data
    assert h.digest() == hashlib.sha512(data).digest()
    with pytest.raises(TransferError):
        FileTransfer().get(_url(src), str(src), 10, 5, write_offset=0)
    assert src.read_bytes() == data


def test_put_remote_offset_and_mkdirs(src, tmp_path):
    data = src.read_bytes()
    dest = tmp_path / 'new dir' / 'sub' / 'd.bin'
    drv = FileTransfer()
    for off in (50_000, 0):
        assert drv.put(str(src), _url(dest), off, 50_000, remote_offset=off) == 50_000
    assert drv.put(str(src), _url(dest), 100_000, 1, remote_offset=100_000) == 1
    assert dest.read_bytes() == data
    assert drv.put(str(src), _url(dest), 3, 4) == 4                     # truncates
    assert dest.read_bytes() == data[3:7]
    with pytest.raises(TransferError) as ei:
        drv.put(str(tmp_path / 'nope'), _url(dest))
    assert ei.value.code == 404
    assert dest.read_bytes() == data[3:7]                               # untouched


def test_symlink_rename_delete(src, tmp_path):
    drv = FileTransfer()
    link = tmp_path / 'the link'
    drv.symlink('target one', _url(link))
    drv.symlink(str(src), _url(link))                                   # replaced
    assert os.readlink(link) == str(src)
    moved = tmp_path / 'moved#1'
    (tmp_path / 'moved#1').write_bytes(b'old')
    drv.rename(_url(src), _url(moved))
    assert not src.exists() and len(moved.read_bytes()) == 100_001
    drv.delete(_url(moved))
    drv.delete(_url(link))
    assert not moved.exists() and not os.path.lexists(link)
    with pytest.raises(TransferError) as ei:
        drv.delete(_url(moved))
    assert ei.value.code == 404
    with pytest.raises(TransferError) as ei:
        drv.rename(_url(moved), _url(tmp_path / 'x'))
    assert ei.value.code == 404
    d = tmp_path / 'made' / 'deeper'
    drv.mkdirs(_url(d))
    assert d.is_dir()
    drv.delete(_url(d))
    assert not d.exists()


def test_set_attributes(src):
    FileTransfer().set_attributes(_url(src), mode=0o640, mtime=1_000_000_000.5)
    st = os.stat(src)
    assert st.st_mode & 0o7777 == 0o640
    assert st.st_mtime == pytest.approx(1_000_000_000.5)
