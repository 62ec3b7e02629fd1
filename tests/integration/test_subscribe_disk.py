"""A full disk and an unwritable directory (issue 3, item 8): the error is one log line
naming the local path, a failure report is published, nothing is left under the final name
(nor a temporary file of a whole-file download), and the message is not acked as done: it
waits in the retry queue and arrives intact exactly once when the disk is usable again,
without being posted again. Other files keep flowing meanwhile.

The small disk is a real tmpfs (mount needs root: skipped otherwise); the unwritable
directory is one that even root cannot write (chattr +i, or a tmpfs remounted read-only).
"""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from sarra import checksum
from tests.integration.subkit import retry_entries as _retry_entries
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    files_under, md5, sub_env, wait_for)

MiB = 1 << 20
NOSPACE = "No space left on device"


# ------------------------------------------------------------------ helpers

def _run(*argv):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=30)


@pytest.fixture
def small_fs(tmp_path):
    """An 8 MiB tmpfs mounted at tmp_path/small (unmounted at the end, even on failure).
    Request it before sub_env so that the subscriber is stopped before the umount."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = _run("mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", mnt)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {mnt}: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        _run("mount", "-o", "remount,rw", mnt)
        _run("chattr", "-R", "-i", mnt)
        if _run("umount", mnt).returncode != 0:
            _run("umount", "-l", mnt)       # still busy: detach it anyway


def _free(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(mnt: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free on mnt."""
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (_free(mnt) - leave))
    assert leave - 64 * 1024 <= _free(mnt) <= leave + 64 * 1024, _free(mnt)
    return filler


def _source(env, http_server):
    """Files for this test on the module's HTTP server; sr_post announces them from there."""
    env.src = http_server.root / env.uid
    env.src.mkdir()
    env.base_url = http_server.url + env.uid + "/"
    return env.src


def _failures(env, rel, count=1, timeout=30.0):
    """Failure reports (4xx/5xx) about rel, once there are `count` of them (or timeout)."""
    def got():
        env.reports.wait(len(env.reports.items) + 1, timeout=0.5)
        found = [r for r in env.reports.items if r["relpath"] == rel and r["code"] >= 400]
        return found if len(found) >= count else None
    return wait_for(got, timeout=timeout) or []


def _reported(env, rel, code, timeout=10.0):
    """A report with that code about rel arrives within timeout."""
    def got():
        env.reports.wait(len(env.reports.items) + 1, timeout=0.5)
        return code in env.reports.codes(rel)
    return wait_for(got, timeout=timeout)


def _error_lines(env, text):
    return [line for line in env.log_text().splitlines() if text in line]


def _check_error_lines(env, text, path, rel):
    """Each failed try logs the error once, on one line that names the local path (no
    traceback, no second line from an in-process retry of the transfer)."""
    def tries():
        return len([r for r in env.reports.items if r["relpath"] == rel and r["code"] >= 400])
    before = tries()
    lines = _error_lines(env, text)
    env.reports.settle(0.5)
    assert lines, env.log_text()
    for line in lines:
        assert str(path) in line, line
    assert before <= len(lines) <= tries(), lines    # one line per report of a failure
    assert "Traceback" not in env.log_text()


# ------------------------------------------------------------------ full disk

def test_full_disk_whole_file_waits_then_arrives_once(small_fs, sub_env, http_server):
    env = sub_env
    src = _source(env, http_server)
    big = os.urandom(4 * MiB)
    (src / "big.bin").write_bytes(big)
    (src / "small.txt").write_bytes(b"this one fits\n")
    filler = _fill(small_fs, leave=MiB)
    env.config(directory=small_fs)
    env.setup()
    queue = env.queue_name()
    env.post(src / "big.bin")
    p = env.foreground()

    first = _failures(env, "/big.bin")[0]
    assert first["code"] == 499, first["body"]
    text = first["headers"]["message"]
    assert NOSPACE in text and str(small_fs / "big.bin") in text, text
    assert wait_for(lambda: len(_retry_entries(env)) == 1, timeout=10)
    assert env.queue_depth(queue) == 0          # acked only once safely in the retry queue
    assert files_under(small_fs) == ["filler"]  # no partial file, no temporary file

    # the flow does not stall: a file that fits is delivered while big.bin waits
    env.post(src / "small.txt")
    assert env.wait_files({"small.txt": md5(src / "small.txt")}, root=small_fs) == {}
    # big.bin is tried again (backoff), failing the same way, never given up on
    assert len(_failures(env, "/big.bin", 2)) >= 2
    assert all(NOSPACE in r["headers"]["message"] for r in _failures(env, "/big.bin", 2))
    assert files_under(small_fs) == ["filler", "small.txt"]
    assert len(_retry_entries(env)) == 1
    _check_error_lines(env, NOSPACE, small_fs / "big.bin", "/big.bin")

    os.unlink(filler)                           # space is freed: the next retry gets it
    assert env.wait_files({"big.bin": md5(src / "big.bin")}, root=small_fs,
                          timeout=60) == {}, env.log_text()
    assert _reported(env, "/big.bin", 201)
    assert wait_for(lambda: _retry_entries(env) == [], timeout=10)
    env.reports.settle(1.5)
    assert env.reports.codes("/big.bin").count(201) == 1
    assert env.reports.codes("/small.txt") == [201]
    assert env.on_file_lines().count(str(small_fs / "big.bin")) == 1   # exactly once
    assert files_under(small_fs) == ["big.bin", "small.txt"]
    assert (small_fs / "big.bin").read_bytes() == big
    env.stop(p)
    assert env.queue_depth(queue) == 0


@pytest.mark.parametrize("inplace", ["on", "off"])
def test_full_disk_blocks_wait_then_arrive_once(small_fs, sub_env, http_server, inplace):
    """A file announced in 1 MiB blocks with room for about one and a half: the blocks that
    do not fit wait in the retry queue; reassembly (inplace) or the part files (inplace off)
    complete once space is freed."""
    env = sub_env
    src = _source(env, http_server)
    big = os.urandom(4 * MiB)
    (src / "big.bin").write_bytes(big)
    filler = _fill(small_fs, leave=MiB + MiB // 2)
    env.config(directory=small_fs, extra=f"inplace {inplace}",
               count_files="parts" if inplace == "on" else True)
    env.setup()
    queue = env.queue_name()
    env.post(src / "big.bin", blocksize=str(MiB))
    p = env.foreground()

    reports = env.reports.wait(4, timeout=30)
    codes = sorted(r["code"] for r in reports)
    assert codes.count(201) >= 1 and codes.count(499) >= 2, [r["body"] for r in reports]
    for r in reports:
        if r["code"] == 499:
            assert NOSPACE in r["headers"]["message"], r["headers"]["message"]
            assert str(small_fs / "big.bin") in r["headers"]["message"]
    failed = codes.count(499)
    assert wait_for(lambda: len(_retry_entries(env)) == failed, timeout=10)
    assert env.queue_depth(queue) == 0
    assert not (small_fs / "big.bin").exists()  # nothing under the final name yet
    _check_error_lines(env, NOSPACE, small_fs / "big.bin", "/big.bin")

    os.unlink(filler)
    if inplace == "on":
        assert env.wait_files({"big.bin": md5(src / "big.bin")}, root=small_fs,
                              timeout=60) == {}, env.log_text()
        assert wait_for(lambda: _retry_entries(env) == [], timeout=10)
        env.reports.settle(1.5)
        assert env.reports.codes("/big.bin").count(201) == 4     # each block once
        assert env.on_file_lines() == [str(small_fs / "big.bin")]   # exactly once
        assert files_under(small_fs) == ["big.bin"]                # temporary file gone
        assert (small_fs / "big.bin").read_bytes() == big
    else:
        parts = checksum.plan_parts(len(big), MiB)
        want = {"big.bin" + pt.suffix("d"):
                hashlib.md5(big[pt.offset:pt.offset + pt.length]).hexdigest() for pt in parts}
        assert env.wait_files(want, root=small_fs, timeout=60) == {}, env.log_text()
        assert wait_for(lambda: _retry_entries(env) == [], timeout=10)
        env.reports.settle(1.5)
        assert env.reports.codes("/big.bin").count(201) == 4
        assert files_under(small_fs) == sorted(want)               # no temporary file
    env.stop(p)
    assert env.queue_depth(queue) == 0


# ------------------------------------------------------------------ unwritable directory

def _immutable(target: Path, mnt: Path):
    r = _run("chattr", "+i", target)
    if r.returncode != 0:
        pytest.skip(f"chattr +i {target} failed: {r.stderr.strip()}")
    return lambda: _run("chattr", "-i", target)


def _read_only(target: Path, mnt: Path):
    r = _run("mount", "-o", "remount,ro", mnt)
    if r.returncode != 0:
        pytest.skip(f"cannot remount {mnt} read-only: {r.stderr.strip()}")
    return lambda: _run("mount", "-o", "remount,rw", mnt)


@pytest.mark.parametrize("how, error, blocks", [
    (_immutable, "Operation not permitted", 0),
    (_read_only, "Read-only file system", 0),
    (_immutable, "Operation not permitted", 3),     # announced in 3 blocks, inplace
], ids=["immutable", "read-only", "immutable-blocks"])
def test_unwritable_directory_waits_then_arrives_once(small_fs, sub_env, http_server,
                                                      how, error, blocks):
    """A target directory that even root cannot write to; another directory still works."""
    env = sub_env
    src = _source(env, http_server)
    (src / "in").mkdir()
    data = os.urandom(3000)
    (src / "in" / "f.txt").write_bytes(data)
    (src / "ok.txt").write_bytes(b"content for the writable directory\n")
    target = small_fs / "target"
    target.mkdir()
    writable = env.dst
    # f.txt goes to the blocked directory, everything else to a writable one
    env.config(accept=False, count_files="parts" if blocks else True,
               extra=f"directory {target}\naccept .*/in/.*\ndirectory {writable}\naccept .*")
    undo = how(target, small_fs)
    try:
        env.setup()
        queue = env.queue_name()
        env.post(src / "in" / "f.txt", blocksize=str(1000 if blocks else 0))
        p = env.foreground()
        first = _failures(env, "/in/f.txt", max(1, blocks))
        assert {r["code"] for r in first} == {499}, [r["body"] for r in first]
        for r in first:
            text = r["headers"]["message"]
            assert error in text and str(target / "f.txt") in text, text
        assert wait_for(lambda: len(_retry_entries(env)) == max(1, blocks), timeout=10)
        assert env.queue_depth(queue) == 0
        env.post(src / "ok.txt")                 # the flow goes on meanwhile
        assert env.wait_files({"ok.txt": md5(src / "ok.txt")}, root=writable) == {}
        # retried (backoff), not dropped
        assert len(_failures(env, "/in/f.txt", 2 * max(1, blocks))) >= 2 * max(1, blocks)
        assert os.listdir(target) == []
        _check_error_lines(env, error, target / "f.txt", "/in/f.txt")
    finally:
        undo()
    assert env.wait_files({"f.txt": md5(src / "in" / "f.txt")}, root=target,
                          timeout=60) == {}, env.log_text()
    assert wait_for(lambda: _retry_entries(env) == [], timeout=10)
    env.reports.settle(1.5)
    assert env.reports.codes("/in/f.txt").count(201) == max(1, blocks)
    assert env.on_file_lines().count(str(target / "f.txt")) == 1
    assert os.listdir(target) == ["f.txt"]
    assert (target / "f.txt").read_bytes() == data
    env.stop(p)
    assert env.queue_depth(queue) == 0


def test_a_spliced_download_onto_a_full_disk_names_the_path(small_fs, tmp_path, monkeypatch):
    """Bodies of BIG_BODY+ bytes are spliced from the socket into the file: a disk that
    fills up half-way is a LocalWriteError naming the file (the retry queue's case), and
    the connection is not reused for the next request."""
    import http.server
    import threading
    from sarra.flow.fetch import _HashThread
    from sarra.transfer import LocalWriteError
    from sarra.transfer.http import BIG_BODY, HttpTransfer
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(BIG_BODY + MiB)          # more than the 8 MiB tmpfs holds
    (root / "big.bin").write_bytes(data)
    handler = type("H", (http.server.SimpleHTTPRequestHandler,), {
        "protocol_version": "HTTP/1.1", "log_message": lambda *a: None,
        "__init__": lambda self, *a, **k: http.server.SimpleHTTPRequestHandler.__init__(
            self, *a, directory=str(root), **k)})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    dest = small_fs / "big.bin"
    from sarra.transfer import splice
    calls = []
    real = splice.splice_into
    monkeypatch.setattr(splice, "splice_into", lambda *a, **k: calls.append(a) or real(*a, **k))
    try:
        with HttpTransfer(timeout=10) as drv:
            h = _HashThread(hashlib.md5())
            with pytest.raises(LocalWriteError) as e:
                drv.get(f"http://127.0.0.1:{srv.server_address[1]}/big.bin", str(dest),
                        hasher=h)
            h.abandon()
            assert str(dest) in str(e.value) and NOSPACE in str(e.value), str(e.value)
            assert len(calls) == 1                  # it was the splice path
            assert not drv._conns                   # the half-read answer's connection went
    finally:
        srv.shutdown()
        srv.server_close()
