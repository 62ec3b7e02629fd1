"""A running subscriber's memory (issue 20: every daemon under 40 MB RSS).

A real sr_subscribe fetches a file in blocks big enough for the hash thread and the splice
path (transfer/splice.py) from the HTTP server on loopback. It must do it without the
libraries it never uses (requests and its compiled charset_normalizer, paramiko's
cryptography: their shared objects would be in its memory map) and below 40 MB of peak
RSS (VmHWM). Measured on the test VM: 42.5 MB before (requests at start, one 2 MiB
read-back buffer kept per block until the batch ended), 33 MB after.
"""

import os

import pytest

from sarra import checksum, message
from tests.integration.subkit import md5, sub_env  # noqa: F401  (fixtures)

SIZE = 48 << 20
BSZ = 12 << 20          # 4 blocks, each big enough for the hash thread (8 MiB and more)
RSS_LIMIT = 40_000_000
#: shared objects of libraries a subscriber fetching over http never needs
NEVER_MAPPED = ("/charset_normalizer/", "/cryptography/", "/bcrypt/", "/nacl/")


def _hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for %d" % pid)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc (Linux)")
def test_subscriber_fetching_blocks_stays_small(sub_env, http_server):
    env = sub_env
    path = http_server.root / "mem.bin"
    with open(path, "wb") as f:
        for _ in range(SIZE // (4 << 20)):
            f.write(os.urandom(4 << 20))
    parts = checksum.plan_parts(SIZE, BSZ)
    sums = checksum.hash_parts(str(path), "d", parts)
    env.config(extra="prefetch 10")         # the blocks in one batch, as a burst comes
    env.setup()
    mtime = message.format_time(os.stat(path).st_mtime)    # one version of the file
    for p, s in zip(parts, sums):
        env.publish_msg(message.make_post(message.now(), http_server.url, "/mem.bin", {
            "sum": "d," + s, "parts": str(p), "mtime": mtime, "mode": "644"}))
    proc = env.foreground()
    reports = env.reports.wait(len(parts), timeout=120)
    assert [r["code"] for r in reports] == [201] * len(parts), env.log_text()
    assert md5(env.dst / "mem.bin") == md5(path)
    with open(f"/proc/{proc.pid}/maps") as f:
        maps = f.read()
    assert not [lib for lib in NEVER_MAPPED if lib in maps], \
        sorted({line.split()[-1] for line in maps.splitlines()
                if any(lib in line for lib in NEVER_MAPPED)})
    peak = _hwm(proc.pid)
    assert peak < RSS_LIMIT, "sr_subscribe peaked at %.1f MB" % (peak / 1e6)
