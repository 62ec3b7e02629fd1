"""Checksum speed of sr_post's real code path next to plain hashlib, same 1 GiB file.

    python bench/checksum.py [--runs 3] [--size-mib 1024] [--dir DIR]

Writes a 1 GiB file of random bytes (removed at the end), reads it once so the page cache
is warm for everyone, then RUNS times, alternating, each in a fresh child process:

* ours: sarra.flow.poster.file_posts() with the options sr_post builds from its configuration
  (sarra.commands.post.post_options: default bufsize, ``--sum d|s``, ``--blocksize 1``
  = whole file, or ``--blocksize 64M`` = 16 parts hashed by the block-hashing threads);
  the file's cached-sum xattrs are removed before each run, so it really hashes;
* hashlib: one hashlib object fed by readinto() of an 8 MiB buffer over the same file.

Prints MB/s (10^6 bytes/s) for each, the ratio (target >= 90%), and the peak RSS of our
child (its own VmHWM; target < 40 MB).  Medians of RUNS runs.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (also puts the repository on sys.path)

TARGET = 0.90
RSS_LIMIT = 40_000_000
MIB = 1 << 20

OURS = common.HWM_SNIPPET + r"""
import json, os, sys, time
from sarra import config, poster
from sarra.commands.post import post_options
path, algo, blocksize = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = config.load("post", None, [("post_broker", "amqp://bench@127.0.0.1/"),
                                 ("post_base_url", "file:"),
                                 ("post_base_dir", os.path.dirname(path)),
                                 ("sum", algo), ("blocksize", blocksize)])
opts = post_options(cfg)
for name in ("user.sr_sum", "user.sr_mtime"):
    try:
        os.removexattr(path, name)
    except OSError:
        pass
t = time.perf_counter()
msgs = poster.file_posts(path, opts)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "posts": len(msgs), "bufsize": opts.bufsize,
                  "first": msgs[0].headers["sum"], "parts": msgs[0].headers["parts"],
                  "hwm": _hwm()}))
"""

HASHLIB = common.HWM_SNIPPET + r"""
import hashlib, json, sys, time
path, algo = sys.argv[1], sys.argv[2]
h = {"d": hashlib.md5, "s": hashlib.sha512}[algo]()
buf = bytearray(8 << 20)
view = memoryview(buf)
t = time.perf_counter()
with open(path, "rb", buffering=0) as f:
    while True:
        n = f.readinto(buf)
        if not n:
            break
        h.update(view[:n])
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "digest": h.hexdigest(), "hwm": _hwm()}))
"""


def make_file(path: Path, size: int):
    chunk = 64 * MIB
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def warm(path: Path):
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 * MIB)
        while f.readinto(buf):
            pass


def child(code, *args, env=None):
    r = common.run_child([sys.executable, "-c", code] + [str(a) for a in args], env=env)
    if r.returncode != 0:
        sys.exit("benchmark child failed (%d):\n%s" % (r.returncode, r.stderr[-2000:]))
    return r.json()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--dir", default=None, help="where to write the test file")
    args = ap.parse_args()
    size = args.size_mib * MIB
    tmp = Path(tempfile.mkdtemp(prefix="sarra-bench-sum-", dir=args.dir))
    home = tmp / "home"
    home.mkdir()
    env = common.child_env({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                            "XDG_CACHE_HOME": str(home / ".cache")})
    path = tmp / "one-gib.bin"
    try:
        t = time.perf_counter()
        make_file(path, size)
        warm(path)
        print("%d MiB test file written and read once (page cache warm) in %.1f s; "
              "%d runs each, medians" % (size // MIB, time.perf_counter() - t, args.runs))
        modes = (("whole", "1"), ("64 MiB parts", "64M"))
        results = []
        for algo in ("d", "s"):
            base, ours = [], {m: [] for m, _ in modes}
            rss = {m: [] for m, _ in modes}
            ref_digest = None
            for _ in range(args.runs):
                b = child(HASHLIB, path, algo, env=env)
                base.append(size / b["seconds"] / 1e6)
                ref_digest = b["digest"]
                for mode, blocksize in modes:
                    o = child(OURS, path, algo, blocksize, env=env)
                    want_posts = 1 if blocksize == "1" else -(-size // (64 * MIB))
                    if o["posts"] != want_posts:
                        sys.exit("%s %s: %d posts, expected %d" % (algo, mode, o["posts"],
                                                                   want_posts))
                    if blocksize == "1" and o["first"] != "%s,%s" % (algo, ref_digest):
                        sys.exit("%s whole: sum %s differs from hashlib's" % (algo,
                                                                              o["first"]))
                    ours[mode].append(size / o["seconds"] / 1e6)
                    rss[mode].append(o["hwm"])
            results.append((algo, common.median(base), {m: common.median(v) for m, v in
                                                        ours.items()},
                            {m: common.median(v) for m, v in rss.items()}))
        print("(ours: sarra.flow.poster.file_posts with sr_post's options; hashlib: one object, "
              "8 MiB readinto)")
        for algo, base, ours, rss in results:
            name = {"d": "md5 (sum d)", "s": "sha512 (sum s)"}[algo]
            print("  %-16s hashlib %8.1f MB/s" % (name, base))
            for mode, _ in modes:
                print("  %-16s ours    %8.1f MB/s  %-13s (peak RSS %s)"
                      % (name, ours[mode], mode, common.mb(rss[mode])))
        for algo, base, ours, rss in results:
            for mode, _ in modes:
                common.ratio_line("sum %s %s / hashlib" % (algo, mode), ours[mode], base,
                                  "MB/s", TARGET)
        peak = max(v for _, _, _, rss in results for v in rss.values())
        common.limit_line("peak RSS of our hashing (worst case)", peak, RSS_LIMIT)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
