"""Pump nodes (issue 24): sr_winnow's claims follow a shard to the next node through the
shard's journal in nodes_state_dir (sarra/flow/nodeclaims.py)."""

import logging
import os
import types

from sarra.flow import nodeclaims, winnow
from sarra.flow.work import Result

SHARD = "q_u.sr_winnow.w.nodes.s03"
LOG = logging.getLogger("test")


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def _host(tmp_path, name, shared, clock, batch=True):
    store = winnow.ClaimStore(str(tmp_path / name / "recent_files.sqlite"), 1200, clock=clock,
                              batch=batch)
    return store, nodeclaims.NodeClaims(str(shared), store, LOG, clock=clock)


def _done():
    return types.SimpleNamespace(outcome=Result.DONE)


def _claim(store, nc, key, who):
    nc.sync(SHARD)
    first, _ = store.claim(key, who)
    if first:
        nc.claimed(SHARD, _done(), key, who)
    return first


def test_the_next_node_knows_the_products_the_first_one_passed(tmp_path):
    clock = Clock()
    shared = tmp_path / "shared"
    sa, a = _host(tmp_path, "a", shared, clock)
    sb, b = _host(tmp_path, "b", shared, clock)
    keys = [os.urandom(16) for _ in range(50)]
    for k in keys:
        assert _claim(sa, a, k, 1)
    sa.flush()
    assert a.end_batch(committed=True) == 50
    # the shard moves to host b: the second copies (another who) are duplicates there
    for k in keys:
        assert not _claim(sb, b, k, 2)
    sb.flush()
    b.end_batch(committed=True)
    assert b.imported == 50
    # and b's own new claims come back to a when the shard returns
    fresh = os.urandom(16)
    assert _claim(sb, b, fresh, 3)
    sb.flush()
    b.end_batch(committed=True)
    assert not _claim(sa, a, fresh, 4)


def test_without_the_journal_a_moved_shard_lets_the_copies_out(tmp_path):
    """The old behaviour the journal closes: claims per host."""
    clock = Clock()
    sa = winnow.ClaimStore(str(tmp_path / "a.sqlite"), 1200, clock=clock)
    sb = winnow.ClaimStore(str(tmp_path / "b.sqlite"), 1200, clock=clock)
    k = os.urandom(16)
    assert sa.claim(k, 1)[0] and sb.claim(k, 2)[0]


def test_a_batch_not_committed_or_not_done_writes_nothing(tmp_path):
    clock = Clock()
    shared = tmp_path / "shared"
    sa, a = _host(tmp_path, "a", shared, clock)
    sb, b = _host(tmp_path, "b", shared, clock)
    k1, k2 = os.urandom(16), os.urandom(16)
    assert _claim(sa, a, k1, 1)
    sa.flush()
    assert a.end_batch(committed=False) == 0      # the batch comes back: no claim known
    a.sync(SHARD)
    a.claimed(SHARD, types.SimpleNamespace(outcome=Result.FAILED), k2, 1)
    assert a.end_batch(committed=True) == 0
    assert _claim(sb, b, k1, 1) and _claim(sb, b, k2, 1)


def test_a_line_torn_by_a_killed_writer_is_skipped(tmp_path):
    clock = Clock()
    shared = tmp_path / "shared"
    sa, a = _host(tmp_path, "a", shared, clock)
    sb, b = _host(tmp_path, "b", shared, clock)
    k1, k2 = os.urandom(16), os.urandom(16)
    _claim(sa, a, k1, 1)
    sa.flush()
    a.end_batch(True)
    path = a.path(SHARD, a.epoch(clock()))
    with open(path, "ab") as f:
        f.write(b"%s 10" % k2.hex().encode()[:20])       # killed mid-line
    _claim(sb, b, os.urandom(16), 2)                     # b reads the torn tail: waits
    sb.flush()
    b.end_batch(True)
    assert b.imported == 1
    k3 = os.urandom(16)
    _claim(sb, b, k3, 2)
    sb.flush()
    b.end_batch(True)
    assert not _claim(sa, a, k3, 5)                      # a reads past the torn line
    assert sum(1 for line in open(path, "rb") if nodeclaims._LINE.match(line.strip())) == 3


def test_old_epochs_are_dropped_and_expired_claims_not_imported(tmp_path):
    clock = Clock()
    shared = tmp_path / "shared"
    sa, a = _host(tmp_path, "a", shared, clock)
    k = os.urandom(16)
    _claim(sa, a, k, 1)
    sa.flush()
    a.end_batch(True)
    first = a.path(SHARD, a.epoch(clock()))
    clock.t += 2500                                       # two lifetimes later
    _claim(sa, a, os.urandom(16), 1)
    sa.flush()
    a.end_batch(True)
    assert not os.path.exists(first)
    assert len([n for n in os.listdir(shared) if n.endswith(".claims")]) == 1
    sb, b = _host(tmp_path, "b", shared, clock)
    assert _claim(sb, b, k, 2)                            # expired: a new claim


def test_a_shard_is_read_once_per_batch(tmp_path):
    clock = Clock()
    shared = tmp_path / "shared"
    sa, a = _host(tmp_path, "a", shared, clock)
    sb, b = _host(tmp_path, "b", shared, clock)
    b.sync(SHARD)
    k = os.urandom(16)
    _claim(sa, a, k, 1)
    sa.flush()
    a.end_batch(True)
    assert b.sync(SHARD) == 0                 # already read in this batch
    b.end_batch(True)
    assert b.sync(SHARD) == 1                 # the next batch reads a's line
    assert b.sync(SHARD) == 0


def test_make_needs_node_shares_and_the_directory(tmp_path):
    store = winnow.ClaimStore(str(tmp_path / "s.sqlite"), 1200)

    def flow(**opts):
        cfg = types.SimpleNamespace(name="w1", get=lambda k, d=None: opts.get(k, d))
        return types.SimpleNamespace(cfg=cfg, log=LOG)
    assert nodeclaims.make(flow(node_shares=8), store) is None
    assert nodeclaims.make(flow(nodes_state_dir=str(tmp_path)), store) is None
    nc = nodeclaims.make(flow(node_shares=8, nodes_state_dir=str(tmp_path / "n")), store)
    assert nc.dir == str(tmp_path / "n" / "winnow" / "w1")


def test_only_the_works_the_commit_kept_are_written(tmp_path):
    """settle() hands the confirmed hook the works it committed (those delivered on a
    channel since lost come back): only their claims are journaled."""
    clock = Clock()
    sa, a = _host(tmp_path, "a", tmp_path / "shared", clock)
    kept, lost = _done(), _done()
    a.sync(SHARD)
    a.claimed(SHARD, kept, os.urandom(16), 1)
    a.claimed(SHARD, lost, os.urandom(16), 1)
    assert a.end_batch([kept]) == 1
