"""sarra.locks (issue 19, item 9): one lock helper, flock where fcntl exists, lock files
with the holder's pid and start time elsewhere; both exclude other processes and a second
open in the same process, and a lock file left by a dead process is taken over."""
import ast
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sarra import locks

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["flock", "lockfile"]


def _open(path):
    return os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)


def _holder(path, backend, ready):
    """A child process that takes the lock, says so, and holds it until killed."""
    code = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from sarra import locks
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        held = locks.acquire(fd, {str(path)!r}, backend={backend!r})
        open({str(ready)!r}, "w").close()
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "holder did not start"
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("backend", BACKENDS)
def test_another_process_holding_the_lock_excludes_us_until_it_dies(tmp_path, backend):
    path = tmp_path / "a.lock"
    proc = _holder(path, backend, tmp_path / "ready")
    fd = _open(path)
    try:
        assert locks.acquire(fd, str(path), blocking=False, backend=backend) is None
        t0 = time.monotonic()
        assert locks.acquire(fd, str(path), wait=0.2, backend=backend) is None
        assert time.monotonic() - t0 >= 0.19
        proc.kill()
        proc.wait()
        held = locks.acquire(fd, str(path), wait=10, backend=backend)
        assert held is not None       # a dead holder's lock is free (flock: the kernel;
        held.release()                # lock file: its pid is gone)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(fd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_open_in_one_process_is_excluded_and_release_frees(tmp_path, backend):
    path = str(tmp_path / "b")
    fd1, fd2 = _open(path), _open(path)
    try:
        first = locks.acquire(fd1, path, backend=backend)
        assert first is not None
        assert locks.acquire(fd2, path, blocking=False, backend=backend) is None
        first.release()
        first.release()               # twice is harmless
        with locks.acquire(fd2, path, blocking=False, backend=backend) as second:
            assert second is not None
            assert locks.acquire(fd1, path, blocking=False, backend=backend) is None
        assert locks.acquire(fd1, path, blocking=False, backend=backend) is not None
    finally:
        os.close(fd1)
        os.close(fd2)


def test_lockfile_records_pid_and_start_time_and_is_removed_on_release(tmp_path):
    path = str(tmp_path / "c")
    fd = _open(path)
    try:
        held = locks.acquire(fd, path, backend="lockfile")
        rec = json.loads(Path(path + locks.SUFFIX).read_text())
        assert rec["pid"] == os.getpid() and rec["start"] > 0
        held.release()
        assert not os.path.exists(path + locks.SUFFIX)
    finally:
        os.close(fd)


def test_lockfile_of_a_dead_process_or_a_reused_pid_is_broken(tmp_path):
    path = str(tmp_path / "d")
    excl = path + locks.SUFFIX
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fd = _open(path)
    try:
        Path(excl).write_text(json.dumps({"pid": dead.pid, "start": time.time()}))
        held = locks.acquire(fd, path, blocking=False, backend="lockfile")
        assert held is not None
        held.release()
        # our own pid with another start time: a process before us that had our pid
        Path(excl).write_text(json.dumps({"pid": os.getpid(), "start": 1000.0}))
        held = locks.acquire(fd, path, blocking=False, backend="lockfile")
        assert held is not None
        held.release()
        # a live holder (our parent) is respected
        start = locks._start_time(os.getppid())
        Path(excl).write_text(json.dumps({"pid": os.getppid(), "start": start}))
        assert locks.acquire(fd, path, blocking=False, backend="lockfile") is None
        assert Path(excl).exists()
    finally:
        os.close(fd)


def test_empty_lockfile_counts_as_held_while_fresh_only(tmp_path):
    path = str(tmp_path / "e")
    excl = path + locks.SUFFIX
    Path(excl).write_text("")
    fd = _open(path)
    try:
        assert locks.acquire(fd, path, blocking=False, backend="lockfile") is None
        old = time.time() - locks.FRESH - 5
        os.utime(excl, (old, old))
        held = locks.acquire(fd, path, blocking=False, backend="lockfile")
        assert held is not None
        held.release()
    finally:
        os.close(fd)


def test_release_leaves_a_lockfile_someone_else_made_after_breaking_ours(tmp_path):
    path = str(tmp_path / "f")
    fd = _open(path)
    try:
        held = locks.acquire(fd, path, backend="lockfile")
        theirs = json.dumps({"pid": os.getppid(), "start": locks._start_time(os.getppid())})
        Path(path + locks.SUFFIX).write_text(theirs)
        held.release()
        assert Path(path + locks.SUFFIX).read_text() == theirs
    finally:
        os.close(fd)


def test_without_fcntl_the_backend_is_lockfile_and_extras_say_unknown():
    code = textwrap.dedent(f"""
        import sys
        sys.modules["fcntl"] = None
        sys.path.insert(0, {str(ROOT)!r})
        from sarra import locks
        print(locks.BACKEND, locks.read_lease_free(0), locks.set_pipe_size(0, 1))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["lockfile", "None", "None"], out.stderr


def test_every_module_imports_without_the_posix_only_parts():
    """Importing any sarra module needs neither fcntl, pwd, grp, termios, nor SIGHUP,
    SIGALRM, SIGIO, setitimer or os.getuid (a Windows Python has none of them)."""
    code = textwrap.dedent(f"""
        import importlib, os, pkgutil, signal, sys
        for m in ("fcntl", "pwd", "grp", "termios"):
            sys.modules[m] = None
        for a in ("SIGHUP", "SIGALRM", "SIGIO", "setitimer"):
            delattr(signal, a)
        del os.getuid
        sys.path.insert(0, {str(ROOT)!r})
        import sarra
        bad = []
        for mi in pkgutil.walk_packages(sarra.__path__, "sarra."):
            try:
                importlib.import_module(mi.name)
            except Exception as e:
                bad.append("%s: %s: %s" % (mi.name, type(e).__name__, e))
        print("\\n".join(bad) or "ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=str(ROOT))
    assert out.stdout.strip() == "ok", out.stdout + out.stderr


def _guarded(node, parents):
    """Is node inside a try whose handlers catch ImportError (or a parent of it)?"""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for h in node.handlers:
                names = ([h.type] if not isinstance(h.type, ast.Tuple) else h.type.elts) \
                    if h.type is not None else []
                if h.type is None or any(isinstance(t, ast.Name) and t.id in (
                        "ImportError", "ModuleNotFoundError", "Exception") for t in names):
                    return True
    return False


def test_fcntl_is_imported_by_sarra_locks_only():
    """Every lock goes through sarra.locks: no other module of sarra imports fcntl; the
    other POSIX-only modules (pwd, grp, termios) only inside a try that catches
    ImportError."""
    found = []
    for py in sorted((ROOT / "sarra").rglob("*.py")):
        tree = ast.parse(py.read_text(encoding="utf-8"))
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top == "fcntl" or (top in ("pwd", "grp", "termios")
                                      and not _guarded(node, parents)):
                    found.append(f"{py.relative_to(ROOT)}:{node.lineno}: {n}")
    assert found == ["sarra/locks.py:30: fcntl"]


def test_guarded_imports_are_told_apart():
    tree = ast.parse("try:\n    import grp\nexcept (ImportError, KeyError):\n    pass\n"
                     "import pwd\n")
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    imports = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Import)),
                     key=lambda n: n.lineno)
    assert [_guarded(n, parents) for n in imports] == [True, False]


def test_positional_io_fallbacks_leave_the_offset_alone(tmp_path):
    """sarra.oscompat: where os.pread/pwrite/preadv are missing (Windows) the fallbacks
    read and write at the offset given and put the file offset back."""
    from sarra import oscompat
    path = tmp_path / "p"
    path.write_bytes(b"0123456789")
    fd = os.open(str(path), os.O_RDWR)
    try:
        os.lseek(fd, 3, os.SEEK_SET)
        assert oscompat._pread(fd, 4, 5) == b"5678"
        assert oscompat._pwrite(fd, b"ab", 1) == 2
        a, b = bytearray(2), bytearray(5)
        assert oscompat._preadv(fd, [memoryview(a), memoryview(b)], 0) == 7
        assert (bytes(a), bytes(b)) == (b"0a", b"b3456")
        assert oscompat._preadv(fd, [bytearray(20)], 8) == 2      # short at the end
        assert os.lseek(fd, 0, os.SEEK_CUR) == 3
        assert os.read(fd, 2) == b"34"
    finally:
        os.close(fd)
    assert path.read_bytes() == b"0ab3456789"
    assert oscompat.pread is os.pread        # the os calls where they exist
