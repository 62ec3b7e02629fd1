"""A block written in place reaches the file its caller opened (download.py's block
assembly), given to the driver as its local_path argument (transfer.PinnedPath), not
through module state: whatever is at the path by then, and for each caller its own."""

import os

import pytest

from sarra import transfer
from sarra.paths import NOFOLLOW
from sarra.transfer import LocalWriter, PinnedPath, open_in_place
from sarra.transfer.file import FileTransfer


@pytest.fixture
def pinned(tmp_path):
    """(path, fd of the file first at path, path of the file that replaced it)."""
    path = tmp_path / "f.tmp"
    path.write_bytes(b"." * 16)
    fd = os.open(path, os.O_RDWR | NOFOLLOW)
    newer = tmp_path / "newer"
    newer.write_bytes(b"n" * 16)
    os.replace(newer, path)          # another instance's newer version took the name
    yield str(path), fd
    os.close(fd)


def content(fd):
    return os.pread(fd, 64, 0)


def test_a_pinned_path_is_the_path(pinned):
    path, fd = pinned
    p = PinnedPath(path, fd)
    assert p == path and isinstance(p, str) and os.fspath(p) == path and p.fd == fd


def test_local_writer_writes_in_place_into_the_pinned_file(pinned):
    path, fd = pinned
    with LocalWriter(PinnedPath(path, fd), write_offset=4) as out:
        out.write(b"BLOCK")
    assert content(fd) == b"....BLOCK......."
    assert open(path, "rb").read() == b"n" * 16          # the newer file is left alone
    os.fstat(fd)                                          # still the caller's, still open


def test_a_plain_path_is_opened_by_name(pinned):
    path, fd = pinned
    with LocalWriter(path, write_offset=0) as out:
        out.write(b"X")
    assert open(path, "rb").read() == b"X" + b"n" * 15
    assert content(fd) == b"." * 16


def test_each_caller_writes_into_its_own_file(pinned, tmp_path):
    path, fd = pinned
    other = os.open(path, os.O_RDWR)            # a second caller, the same name, now
    try:
        first, second = PinnedPath(path, fd), PinnedPath(path, other)
        for p, data in ((second, b"2"), (first, b"1")):
            dup = open_in_place(p)
            try:
                os.pwrite(dup, data, 0)
            finally:
                os.close(dup)
        assert content(fd)[:1] == b"1" and content(other)[:1] == b"2"
    finally:
        os.close(other)


def test_the_file_driver_writes_a_block_into_the_pinned_file(pinned, tmp_path):
    path, fd = pinned
    src = tmp_path / "src"
    src.write_bytes(b"0123456789abcdef")
    n = FileTransfer().get("file:" + str(src), PinnedPath(path, fd), 4, 6, write_offset=4)
    assert n == 6
    assert content(fd) == b"....456789......"
    assert open(path, "rb").read() == b"n" * 16


def test_no_module_state_pins_paths():
    assert not hasattr(transfer, "pinned") and not hasattr(transfer, "_PINNED")
