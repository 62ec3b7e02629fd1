import logging
import os
import types

import pytest

from sarra.flow.cache import DupCache, cache_key
from sarra.message import Message

MD5 = "d," + "a" * 32
MD5B = "d," + "b" * 32


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def msg(relpath, sumstr=MD5, parts="1,10,1,0,0"):
    headers = {"sum": sumstr}
    if parts is not None:
        headers["parts"] = parts
    return Message("20240101000000", "http://h/", relpath, headers)


# ------------------------------------------------------------------ keys

def test_key_path_basis_whole_file():
    assert cache_key(msg("a/b.txt")) == (MD5, "a/b.txt*1,10,1,0,0")


def test_key_uses_unescaped_relpath():
    assert cache_key(msg("a/x%20y%23z.txt"))[1] == "a/x y#z.txt*1,10,1,0,0"


def test_key_name_and_data_basis():
    m = msg("a/b/c.txt")
    assert cache_key(m, "name") == (MD5, "c.txt*1,10,1,0,0")
    assert cache_key(m, "data") == (MD5, "*1,10,1,0,0")
    assert cache_key(msg("x/c.txt"), "name") == cache_key(m, "name")
    assert cache_key(msg("x/other.txt"), "data") == cache_key(m, "data")
    assert cache_key(msg("x/other.txt"), "path") != cache_key(m, "path")
    with pytest.raises(ValueError):
        cache_key(m, "bogus")


def test_key_n_sum_whole_file_is_path_only():
    n = "n," + "c" * 32
    assert cache_key(msg("a/b.txt", n)) == (n, "a/b.txt")
    # partitioned n posts keep the parts
    assert cache_key(msg("a/b.txt", n, "i,4,3,2,1")) == (n, "a/b.txt*i,4,1")


def test_key_R_and_L_path_replaces_parts():
    r = "R," + "e" * 128
    assert cache_key(msg("a/gone", r, None)) == (r, "a/gone")
    assert cache_key(msg("a/gone", r, "1,0,1,0,0")) == (r, "a/gone")
    lk = "L," + "f" * 128
    assert cache_key(msg("a/link", lk, None), "name") == (lk, "link")


def test_key_partitioned_ignores_blktot_and_brem():
    a = cache_key(msg("big", MD5, "i,1048576,10,562816,3"))
    b = cache_key(msg("big", MD5, "i,1048576,12,100,3"))
    c = cache_key(msg("big", MD5, "i,1048576,10,562816,4"))
    d = cache_key(msg("big", MD5, "i,2097152,10,562816,3"))
    assert a == b
    assert a != c and a != d
    assert cache_key(msg("big", MD5, "p,1048576,10,0,3")) != a


def test_key_plain_object_with_relpath_only():
    o = types.SimpleNamespace(relpath="x/y", headers={"sum": MD5, "parts": "1,5,1,0,0"})
    assert cache_key(o) == (MD5, "x/y*1,5,1,0,0")


# ------------------------------------------------------------------ in memory

def test_expiry_is_decided_at_lookup():
    clock = Clock()
    c = DupCache(None, 300, clock=clock)
    k = (MD5, "a*1,10,1,0,0")
    assert c.check_and_add(k) is True
    clock.t += 299.9
    assert c.check_and_add(k) is False
    assert k in c
    clock.t += 0.2          # 300.1 s after the first add: expired
    assert k not in c
    assert c.check_and_add(k) is True
    clock.t += 100
    assert c.check_and_add(k) is False
    assert c.stats() == {"hits": 2, "misses": 2, "size": 1}


def test_hit_does_not_refresh():
    clock = Clock()
    c = DupCache(None, 10, clock=clock)
    k = (MD5, "a")
    assert c.check_and_add(k) is True
    clock.t += 4
    assert c.check_and_add(k) is False
    clock.t += 4
    assert c.check_and_add(k) is False
    clock.t += 2.5   # seen 2.5 s ago, but first recorded 10.5 s ago: let through again
    assert c.check_and_add(k) is True
    clock.t += 1
    assert c.check_and_add(k) is False


def test_different_keys_independent():
    c = DupCache(None, 300, clock=Clock())
    assert c.check_and_add((MD5, "a"))
    assert c.check_and_add((MD5B, "a"))
    assert c.check_and_add((MD5, "b"))
    assert not c.check_and_add((MD5, "a"))


def test_compaction_bounds_memory(monkeypatch):
    import sarra.flow.cache as mod
    monkeypatch.setattr(mod, "MIN_COMPACT", 8)
    clock = Clock()
    c = DupCache(None, 10, clock=clock)
    for i in range(1000):
        c.check_and_add((MD5, f"f{i}"))
        clock.t += 1
    # at most ~lifetime live entries, and the dict compacted to about twice that
    assert len(c) <= 4 * 10 + 8


def test_remove_path():
    c = DupCache(None, 300, clock=Clock())
    c.check_and_add((MD5, "a/b.txt*1,10,1,0,0"))
    c.check_and_add((MD5B, "a/b.txt"))
    c.check_and_add((MD5, "a/b.txt.bak*1,10,1,0,0"))
    c.check_and_add((MD5, "dir/sub/x*1,10,1,0,0"))
    c.check_and_add((MD5, "dirx/y*1,10,1,0,0"))
    assert c.remove_path("a/b.txt") == 2
    assert c.check_and_add((MD5, "a/b.txt*1,10,1,0,0")) is True
    assert (MD5, "a/b.txt.bak*1,10,1,0,0") in c
    assert c.remove_path("dir/") == 1
    assert (MD5, "dirx/y*1,10,1,0,0") in c
    assert c.remove_path("q/b.txt.bak", basis="name") == 0
    c.check_and_add((MD5, "b.txt.bak*1,10,1,0,0"))
    assert c.remove_path("q/b.txt.bak", basis="name") == 1
    assert c.remove_path("anything", basis="data") == 0


# ------------------------------------------------------------------ persistence

def test_persist_and_reload(tmp_path):
    p = str(tmp_path / "state" / "recent_files_001.cache")
    clock = Clock()
    c = DupCache(p, 300, clock=clock)
    keys = [(MD5, "a b/c*1,10,1,0,0"), (MD5B, "x%y"), ("R," + "e" * 128, "")]
    for k in keys:
        assert c.check_and_add(k)
    c.flush(sync=True)
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"
    lines = open(p).read().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(MD5 + " ") and lines[0].endswith(" a%20b/c*1,10,1,0,0")
    c.close()

    clock.t += 100
    c2 = DupCache(p, 300, clock=clock)
    assert len(c2) == 3
    for k in keys:
        assert c2.check_and_add(k) is False
    clock.t += 250       # 350 s after they were recorded: expired on reload
    c3 = DupCache(p, 300, clock=clock)
    assert len(c3) == 0
    assert c3.check_and_add(keys[0]) is True


def test_unflushed_lines_are_not_on_disk_until_flush(tmp_path):
    p = str(tmp_path / "c.cache")
    c = DupCache(p, 300, clock=Clock())
    c.check_and_add((MD5, "a"))
    assert not os.path.exists(p) or os.path.getsize(p) == 0
    c.flush()
    assert os.path.getsize(p) > 0


def test_remove_path_persists(tmp_path):
    p = str(tmp_path / "c.cache")
    clock = Clock()
    with DupCache(p, 300, clock=clock) as c:
        c.check_and_add((MD5, "a/b*1,10,1,0,0"))
        c.check_and_add((MD5, "a/c*1,10,1,0,0"))
        c.remove_path("a/b")
    c2 = DupCache(p, 300, clock=clock)
    assert (MD5, "a/b*1,10,1,0,0") not in c2
    assert (MD5, "a/c*1,10,1,0,0") in c2


def test_corrupt_lines_ignored_with_one_warning(tmp_path, caplog):
    p = tmp_path / "c.cache"
    t = 1_000_000.0
    p.write_bytes(
        f"{MD5} {t} good1\n".encode()
        + b"garbage line without enough fields\n"
        + f"{MD5} notatime x\n".encode()
        + b"\xff\xfe %s x\n"
        + f"{MD5B} {t} good2\n".encode()
        + f"{MD5} {t} torn".encode())          # no newline: interrupted append
    caplog.set_level(logging.WARNING, logger="sarra.cache")
    c = DupCache(str(p), 300, clock=Clock(t + 1))
    assert len(c) == 2
    assert (MD5, "good1") in c and (MD5B, "good2") in c
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{p}:2:" in warnings[0].getMessage()
    # the torn tail was cut off, so the next append starts on a fresh line
    assert p.read_bytes().endswith(b"good2\n")
    c.check_and_add((MD5, "new"))
    c.close()
    assert DupCache(str(p), 300, clock=Clock(t + 1)).__contains__((MD5, "new"))


def test_compaction_rewrites_file(tmp_path, monkeypatch):
    import sarra.flow.cache as mod
    monkeypatch.setattr(mod, "MIN_COMPACT", 4)
    p = str(tmp_path / "c.cache")
    clock = Clock()
    c = DupCache(p, 5, clock=clock)
    for i in range(40):
        c.check_and_add((MD5, f"f{i}"))
        clock.t += 1
    c.flush()
    n_lines = len(open(p).read().splitlines())
    assert n_lines < 40          # the file was rewritten, not only appended
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    c.close()
    c2 = DupCache(p, 5, clock=clock)
    assert (MD5, "f39") in c2 and (MD5, "f0") not in c2


def test_clear(tmp_path):
    p = str(tmp_path / "c.cache")
    c = DupCache(p, 300, clock=Clock())
    c.check_and_add((MD5, "a"))
    c.clear()
    assert len(c) == 0 and os.path.getsize(p) == 0
    assert c.check_and_add((MD5, "a")) is True
