"""sr_subscribe end to end over HTTP: many files, reports, mode/mtime, placement options."""

import os
import time

from sarra.message import parse_time
from tests.integration.subkit import (  # noqa: F401  (fixture)
    files_under, make_tree, sub_env)


def test_1000_files_over_http_exactly_once_with_reports(sub_env, http_server):
    env = sub_env
    env.src = http_server.root / env.uid
    env.base_url = http_server.url + env.uid + "/"
    env.src.mkdir()
    tree = make_tree(env.src, 1000, size=300)
    # give the files distinct modes and old mtimes so that applying them is visible
    for i, rel in enumerate(sorted(tree)):
        p = env.src / rel
        os.chmod(p, 0o640 if i % 2 else 0o604)
        os.utime(p, (1_600_000_000 + i, 1_500_000_000 + i))
    env.config()
    env.setup()
    env.post(env.src)
    t0 = time.monotonic()
    p = env.foreground()
    reports = env.reports.wait(1000, timeout=90)
    took = time.monotonic() - t0
    flat = {os.path.basename(rel): digest for rel, digest in tree.items()}
    assert env.wait_files(flat, timeout=10) == {}, env.log_text()[-3000:]
    assert len(reports) == 1000, (len(reports), env.log_text()[-3000:])
    # exactly once: one on_file per file, no temporary or extra file left
    lines = env.on_file_lines()
    assert len(lines) == 1000 and len(set(lines)) == 1000
    assert files_under(env.dst) == sorted(os.path.basename(r) for r in tree)
    for rel in tree:
        src, dst = env.src / rel, env.dst / os.path.basename(rel)
        s, d = os.stat(src), os.stat(dst)
        assert oct(d.st_mode & 0o777) == oct(s.st_mode & 0o777), rel
        assert abs(d.st_mtime - s.st_mtime) < 0.01, rel
    for r in reports:
        assert len(r["fields"]) == 7, r["body"]
        assert r["code"] == 201, r["body"]
        assert r["key"].startswith("v02.report."), r["key"]
        assert r["headers"]["message"] == "Downloaded"
        float(r["fields"][6])
        parse_time(r["fields"][0])
    assert sorted(r["relpath"] for r in reports) == sorted(
        "/" + rel for rel in tree)
    env.stop(p)
    assert p.returncode == 0
    print(f"1000 files in {took:.1f} s")
