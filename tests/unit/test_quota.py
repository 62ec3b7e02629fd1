"""Quotas per source (issue 23, item 2): the option's value, the shared ledger and the
work step that refuses a post over quota (sarra/flow/quota.py)."""

import logging
import os
import types

import pytest

from sarra import message
from sarra.config import options, quotaspec
from sarra.flow import quota
from sarra.flow.work import Outcome, Work


def test_option_value_parsed_and_bad_entries_refused():
    opt = next(o for o in options.OPTIONS if o.name == "quota")
    words = options.convert(opt, "alice=10M/3, *=1G, bob=off")
    limits = quotaspec.parse(words)
    assert limits == {"alice": (10 << 20, 3), "*": (1 << 30, None), "bob": (None, None)}
    assert quotaspec.limits_for(limits, "carol") == (1 << 30, None)
    assert quotaspec.limits_for(limits, "bob") == (None, None)
    for bad in ("alice", "alice=lots", "alice=1M/0", "a b=1M", "=1M"):
        with pytest.raises(ValueError, match="quota entry"):
            options.convert(opt, bad)


def test_ledger_counts_and_refuses_over_bytes_and_files(tmp_path):
    led = quota.Ledger(str(tmp_path), "alice")
    assert led.charge("/t/a", 600, 1000, None) == (None, None)
    why, old = led.charge("/t/b", 500, 1000, None)
    assert old is None and "over quota" in why and "600" in why and "1000" in why
    assert led.usage() == (600, 1)
    assert led.charge("/t/a", 600, 1000, None) == (None, 600)  # known: never refused
    assert led.charge("/t/b", 500, 1000, None, force=True)[0] is None  # a retry
    assert led.usage() == (1100, 2)
    led.release("/t/a")
    assert led.usage() == (500, 1)
    c = quota.Ledger(str(tmp_path), "carol")
    c.charge("/x1", 1, None, 2), c.charge("/x2", 1, None, 2)
    assert "2 of 2 files" in c.charge("/x3", 1, None, 2)[0]


def test_two_processes_share_one_ledger_by_reading_only_new_lines(tmp_path):
    a, b = quota.Ledger(str(tmp_path), "alice"), quota.Ledger(str(tmp_path), "alice")
    a.charge("/t/1", 400, 1000, None)
    assert b.charge("/t/2", 700, 1000, None)[0] is not None    # b sees a's 400
    b.release("/t/1")
    assert a.usage() == (0, 0)
    offset = a._offset
    b.charge("/t/3", 10, 1000, None)
    a.usage()
    assert a._offset > offset and a.bytes == 10


def test_hostile_source_names_stay_in_the_state_dir(tmp_path):
    led = quota.Ledger(str(tmp_path), "../../etc/x\nevil")
    led.charge("/t/a\nb c", 5, None, None)
    assert os.path.dirname(led.path) == str(tmp_path)
    assert "/" not in os.path.basename(led.path)[6:]
    assert quota.Ledger(str(tmp_path), "../../etc/x\nevil").usage() == (5, 1)


def test_drift_check_takes_real_sizes_and_drops_files_gone(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "kept").write_bytes(b"x" * 30)
    led = quota.Ledger(str(tmp_path), "alice")
    led.charge(str(tree / "kept"), 100, None, None, now=1000.0)
    led.charge(str(tree / "gone"), 50, None, None, now=1000.0)
    led.charge(str(tree / "coming"), 70, None, None, now=9000.0)   # within GRACE
    fixed = led.check(now=1000.0 + quota.GRACE + 10)
    assert fixed == 100 + 50 - 30
    assert led.usage() == (30 + 70, 2)
    assert quota.Ledger(str(tmp_path), "alice").usage() == (100, 2)  # rewritten on disk


def _flow(tmp_path, spec="alice=1000/10"):
    cfg = types.SimpleNamespace(quota=options.convert(
        next(o for o in options.OPTIONS if o.name == "quota"), spec) if spec else [],
        quota_check=600)
    return types.SimpleNamespace(cfg=cfg, user_cache_dir=str(tmp_path / "state"),
                                 log=logging.getLogger("test"))


def _work(tmp_path, name, size, source="alice", parts=None, algo="d", retry=None):
    h = {"sum": f"{algo}," + "0" * (32 if algo == "d" else 128), "parts": parts or f"1,{size},1,0,0", "source": source}
    if algo == "R":
        del h["parts"]
    w = Work(message.make_post("20240101000000.0", "http://h/", "/" + name, h),
             retry_entry=retry)
    w.new_dir, w.new_file = str(tmp_path / "tree"), name
    return w


def test_work_step_refuses_over_quota_with_403_and_others_pass(tmp_path):
    flow, done = _flow(tmp_path), []

    def step(flow, work):
        done.append(work.new_file)
        work.local_path = os.path.join(work.new_dir, work.new_file)
    guarded = quota.guarded(step)
    guarded(flow, _work(tmp_path, "a", 800))
    with pytest.raises(Outcome) as e:
        guarded(flow, _work(tmp_path, "b", 300))
    assert e.value.code == 403 and not e.value.retry
    assert "over quota" in e.value.text and "alice" in e.value.text
    guarded(flow, _work(tmp_path, "big", 5000, source="bob"))     # bob has no quota
    assert not [n for n in os.listdir(flow.user_cache_dir) if "bob" in n]    # nor a ledger
    guarded(flow, _work(tmp_path, "b", 300, retry=object()))      # accepted before
    assert done == ["a", "big", "b"]


def test_blocks_of_an_accepted_file_are_never_refused(tmp_path):
    flow = _flow(tmp_path, "alice=1000")
    guarded = quota.guarded(lambda f, w: None)
    with pytest.raises(Outcome, match="over quota"):    # the whole file's 1200 bytes
        guarded(flow, _work(tmp_path, "f", 0, parts="i,400,3,0,0"))
    flow = _flow(tmp_path, "alice=2000")
    guarded = quota.guarded(lambda f, w: None)
    guarded(flow, _work(tmp_path, "f", 0, parts="i,400,3,0,0"))
    quota.Ledger(flow.user_cache_dir, "alice").charge("/other", 800, None, None)
    for bno in (2, 1):            # the ledger is full now, the file's blocks still go
        guarded(flow, _work(tmp_path, "f", 0, parts=f"i,400,3,0,{bno}"))


def test_removal_frees_quota_and_a_failed_transfer_releases_its_charge(tmp_path):
    flow = _flow(tmp_path, "alice=1000")

    def step(flow, work):
        work.local_path = os.path.join(work.new_dir, work.new_file)
        if work.new_file == "404":
            raise Outcome(499, "http download failed")
    guarded = quota.guarded(step)
    guarded(flow, _work(tmp_path, "a", 900))
    with pytest.raises(Outcome):
        guarded(flow, _work(tmp_path, "b", 900))
    guarded(flow, _work(tmp_path, "a", 0, algo="R"))
    guarded(flow, _work(tmp_path, "b", 900))
    guarded(flow, _work(tmp_path, "a", 0, algo="R"))
    with pytest.raises(Outcome, match="download failed"):
        guarded(flow, _work(tmp_path, "404", 50))
    assert quota.Ledger(flow.user_cache_dir, "alice").usage() == (900, 1)


def test_no_quota_option_no_ledger(tmp_path):
    flow = _flow(tmp_path, "")
    quota.guarded(lambda f, w: None)(flow, _work(tmp_path, "a", 10 ** 12))
    assert not os.path.exists(flow.user_cache_dir)


def test_a_reload_applies_new_limits_and_a_restart_shows_every_source(tmp_path):
    flow = _flow(tmp_path, "alice=1000")
    guarded = quota.guarded(lambda f, w: None)
    guarded(flow, _work(tmp_path, "a", 900))
    with pytest.raises(Outcome):
        guarded(flow, _work(tmp_path, "b", 900))
    flow.cfg.quota = ["alice=2000"]                   # what a reload does
    guarded(flow, _work(tmp_path, "b", 900))
    fresh = _flow(tmp_path, "alice=2000")           # a new process: no message yet
    quota.tick(fresh)
    assert fresh.quota.summary() == {"alice": {"bytes": 1800, "files": 2,
                                               "max_bytes": 2000, "max_files": None}}


@pytest.mark.parametrize("source", ["alice", "a.b", "a%41", "алиса", "x" * 300, "a/../b"])
def test_ledger_names_are_one_per_source_and_read_back(source):
    name = quota._file_name(source)
    assert "/" not in name and "." not in name[6:] and len(name) < 140
    back = quota._source_of(name + ".ledger")
    assert back == source or (back is None and len(source) > 100)
    assert quota._file_name("alicE") != quota._file_name("alice")


def test_a_file_whose_blocks_keep_coming_is_not_dropped_by_the_drift_check(tmp_path):
    led = quota.Ledger(str(tmp_path), "alice")
    final = str(tmp_path / "big")                   # assembled at its last block only
    led.charge(final, 100, 100, None, now=1000.0)
    led.charge(final, 100, 100, None, now=1000.0 + quota.GRACE * 0.9)     # a later block
    led.check(now=1000.0 + quota.GRACE * 1.5)
    assert led.usage() == (100, 1)
    assert led.charge(final, 100, 100, None, now=1000.0 + quota.GRACE * 1.6)[0] is None
