"""The .deb runs on Debian 12, whose python3-paramiko (2.12) has SFTPFile.prefetch without
max_concurrent_requests: an SFTP download there reads sequentially instead of failing
(tests/packaging/debian_hooks.py checks the other private hooks in the real package)."""

from sarra.transfer import sftp


class NewFile:
    def __init__(self):
        self.calls = []

    def prefetch(self, file_size=None, max_concurrent_requests=None):
        self.calls.append((file_size, max_concurrent_requests))


class OldFile:
    """paramiko 2.12's signature: prefetch(self, file_size=None)."""
    def __init__(self):
        self.calls = []

    def prefetch(self, file_size=None):
        self.calls.append(file_size)


def test_prefetch_bounds_requests_when_paramiko_can():
    f = NewFile()
    sftp._prefetch(f, 4096, 8)
    assert f.calls == [(4096, 8)]


def test_prefetch_of_old_paramiko_is_skipped_not_an_error():
    f = OldFile()
    sftp._prefetch(f, 4096, 8)      # TypeError before: every download failed
    assert f.calls == []            # unbounded prefetch would hold the whole file
