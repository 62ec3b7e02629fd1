"""A portable core (issue 19, item 9): sr_post and sr_subscribe run where ``fcntl`` does not
exist (a Windows user's subscriber is in the plan).

Every command of the test runs in a Python where ``fcntl``, ``pwd``, ``grp`` and
``termios`` cannot be imported, the signal module has no SIGHUP, SIGALRM, SIGIO nor
setitimer, os has no uids, positional I/O, xattrs, splice nor O_CLOEXEC/O_NOFOLLOW, and
select no poll, as on Windows; credentials.conf is 0644, as Windows shows every file.
sr_post announces two files (one in blocks, so the subscriber's manifest locks are
taken), sr_subscribe downloads them from a real HTTP server through the real broker, and
the locks were the lock files of sarra.locks.
"""

import hashlib
import json
import os
import time

import pytest

from tests.integration import subkit
from tests.integration.subkit import sub_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.broker

#: run first in every command: the POSIX-only parts are gone, as on Windows; at exit the
#: command writes which lock backend it used and whether fcntl ever got imported
PROLOGUE = """\
import atexit, json, os, signal, sys
for _m in ("fcntl", "pwd", "grp", "termios"):
    sys.modules[_m] = None
for _a in ("SIGHUP", "SIGALRM", "SIGIO", "setitimer"):
    if hasattr(signal, _a):
        delattr(signal, _a)
for _a in ("getuid", "geteuid", "getgid", "fchmod", "fchown", "pread", "pwrite", "preadv",
           "pwritev", "splice", "pipe2", "O_CLOEXEC", "O_NOFOLLOW", "O_NOCTTY",
           "setxattr", "getxattr", "listxattr", "removexattr", "copy_file_range"):
    if hasattr(os, _a):
        delattr(os, _a)
import select
if hasattr(select, "poll"):
    del select.poll
def _report(path=os.environ.get("SARRA_PORTABLE_REPORT")):
    locks = sys.modules.get("sarra.locks")
    with open(path, "a") as f:
        f.write(json.dumps({"argv": sys.argv[0], "backend": getattr(locks, "BACKEND", None),
                            "fcntl": sys.modules.get("fcntl") is not None}) + "\\n")
atexit.register(_report)
"""


@pytest.fixture
def windows_like(monkeypatch, tmp_path):
    """Every command the sub_env runs starts with PROLOGUE; returns the report file."""
    report = tmp_path / "portable.jsonl"
    monkeypatch.setenv("SARRA_PORTABLE_REPORT", str(report))
    plain = subkit.command_argv

    def argv(name):
        python, dash_c, code = plain(name)
        assert dash_c == "-c"
        return [python, "-c", PROLOGUE + code]

    monkeypatch.setattr(subkit, "command_argv", argv)
    return report


def test_post_and_subscribe_without_fcntl(windows_like, sub_env, http_server):
    env = sub_env
    env.src = http_server.root / env.uid
    env.base_url = http_server.url + env.uid + "/"
    env.src.mkdir()
    small = b"portable core\n" * 10
    big = bytes(range(256)) * 48                     # 12,288 bytes: 3 blocks of 4 KiB
    (env.src / "small.txt").write_bytes(small)
    (env.src / "big.bin").write_bytes(big)
    env.config(count_files="parts")
    env.credentials(env.broker + "\n")
    os.chmod(env.home / ".config" / "sarra" / "credentials.conf", 0o644)   # Windows-like
    env.setup()
    env.post(env.src / "small.txt")
    env.post(env.src / "big.bin", blocksize="4096")
    p = env.foreground()
    try:
        missing = {"small.txt": hashlib.md5(small).hexdigest(),
                   "big.bin": hashlib.md5(big).hexdigest()}
        deadline = time.monotonic() + 60
        while missing and p.poll() is None and time.monotonic() < deadline:
            missing = env.wait_files(missing, timeout=1)
        assert missing == {}, env.log_text()[-3000:]
        reports = env.reports.wait(4, timeout=30)
        assert sorted(r["code"] for r in reports) == [201] * 4, env.log_text()[-3000:]
    finally:
        env.stop(p)
    assert p.returncode == 0, env.log_text()[-3000:]
    assert "Traceback" not in env.log_text(), env.log_text()[-3000:]
    ran = [json.loads(line) for line in windows_like.read_text().splitlines()]
    assert {r["argv"] for r in ran} >= {"sr_post", "sr_subscribe"}, ran
    assert all(not r["fcntl"] for r in ran), ran
    # the subscriber took its locks (queue name, block manifest) with lock files, and
    # released them all
    sub = [r for r in ran if r["argv"] == "sr_subscribe"]
    assert sub and all(r["backend"] == "lockfile" for r in sub), ran
    assert list(env.home.rglob("*.excl")) == []
