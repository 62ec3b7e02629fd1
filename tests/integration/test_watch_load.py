"""sr_watch under load: a burst of 10,000 files in 100 new directories, each posted once."""

import collections
import time

import pytest

from tests.integration.test_watch import MODES, watch_env  # noqa: F401  (fixture)

FILES, DIRS = 10000, 100


@pytest.mark.parametrize("mode", MODES)
def test_burst_of_10000_files_in_100_new_directories_each_posted_once(watch_env, mode):
    env, root = watch_env, watch_env.root
    w = env.start(["on_post None"], mode=mode)
    t0 = time.monotonic()
    per = FILES // DIRS
    for d in range(DIRS):                       # directories created during the burst
        dd = root / f"d{d:03d}"
        dd.mkdir()
        for i in range(per):
            (dd / f"f{i:03d}").write_bytes(b"%d/%d\n" % (d, i))
    created = time.monotonic() - t0
    got = env.msgs.get(FILES, timeout=120)
    took = time.monotonic() - t0
    counts = collections.Counter(m.relpath for m in got)
    assert len(got) == FILES, (len(got), w.text()[-3000:])
    assert len(counts) == FILES and set(counts.values()) == {1}
    assert counts.keys() == {f"/watched/d{d:03d}/f{i:03d}" for d in range(DIRS) for i in range(per)}
    env.msgs.none(2.0)                          # and nothing posted twice afterwards
    print(f"{mode}: {FILES} files created in {created:.1f} s, all announced after {took:.1f} s")
