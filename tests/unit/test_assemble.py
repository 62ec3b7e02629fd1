"""The block manifest: completion decided from the record of verified blocks, in any order,
exactly once across processes, per generation."""

import multiprocessing
import os
import random

import pytest

from sarra.flow import assemble
from sarra.checksum import Parts


def _gen(blktot=4, bsz=10, brem=5, mtime="20240101000000"):
    return assemble.generation(Parts("i", bsz, blktot, brem, 0), mtime)


def test_out_of_order_completion(tmp_path):
    man = assemble.Manifest(str(tmp_path / "state"), str(tmp_path / "f"))
    gen = _gen()
    with man.locked():
        assert man.state(gen) == "new"
        man.start(gen, "f", "f.tmp")
    results = []
    for bno in (3, 1, 0):
        with man.locked():
            assert man.state(gen) == "partial"
            results.append(man.add(gen, bno))
            assert man.has(gen, bno)
    assert results == [False, False, False]
    with man.locked():
        assert man.missing(gen) == [2]
        assert man.add(gen, 1) is False          # a repeated block changes nothing
        assert man.add(gen, 2) is True           # the last missing block completes it
        assert man.state(gen) == "complete"
        assert man.add(gen, 2) is False          # completion is reported once only
    # persisted: a new object (another process) sees the same record
    again = assemble.Manifest(str(tmp_path / "state"), str(tmp_path / "f"))
    with again.locked():
        assert again.state(gen) == "complete"


def test_new_generation_restarts(tmp_path):
    man = assemble.Manifest(str(tmp_path), str(tmp_path / "f"))
    old, new = _gen(mtime="1"), _gen(mtime="2")
    with man.locked():
        man.start(old, "f", "t")
        man.add(old, 0)
    with man.locked():
        assert man.state(new) == "new"
        assert not man.has(new, 0)
        man.start(new, "f", "t")
        assert man.add(old, 1) is False          # a late block of the old file is ignored
        assert man.missing(new) == [0, 1, 2, 3]


def test_torn_manifest_is_rebuilt(tmp_path):
    man = assemble.Manifest(str(tmp_path), str(tmp_path / "f"))
    with open(man.path, "w") as f:
        f.write('{"gen": "10,4,5,x", "blo')
    with man.locked():
        assert man.state(_gen()) == "new"


def test_finish_truncates_and_renames(tmp_path):
    temp, final = tmp_path / "t", tmp_path / "f"
    assemble.open_for_blocks(str(temp))
    with open(temp, "r+b") as f:
        f.write(b"x" * 20)
    assemble.open_for_blocks(str(temp))          # never truncates what is there
    assert temp.stat().st_size == 20
    assemble.finish(str(temp), str(final), 15)
    assert final.read_bytes() == b"x" * 15 and not temp.exists()


def _worker(state, final, blocks, out):
    man = assemble.Manifest(state, final)
    gen = _gen(blktot=40)
    done = 0
    for bno in blocks:
        with man.locked():
            if man.state(gen) == "new":
                man.start(gen, final, final + ".tmp")
            if man.add(gen, bno):
                done += 1
    out.put(done)


@pytest.mark.parametrize("seed", [1, 2])
def test_exactly_one_process_sees_completion(tmp_path, seed):
    blocks = list(range(40)) * 2           # every block twice (redeliveries)
    random.Random(seed).shuffle(blocks)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), str(tmp_path / "f"),
                                                blocks[i::4], out)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sorted(out.get(timeout=5) for _ in procs) == [0, 0, 0, 1]
    assert os.path.exists(assemble.Manifest(str(tmp_path), str(tmp_path / "f")).path)


def test_prune_old_manifests_and_their_temporary_files(tmp_path):
    state = tmp_path / "state"
    done = assemble.Manifest(str(state), str(tmp_path / "done"))
    stuck = assemble.Manifest(str(state), str(tmp_path / "stuck"))
    fresh = assemble.Manifest(str(state), str(tmp_path / "fresh"))
    gen = _gen(blktot=1)
    temp = tmp_path / "stuck.tmp"
    temp.write_bytes(b"half")
    for man, t in ((done, "done.tmp"), (stuck, str(temp)), (fresh, "fresh.tmp")):
        with man.locked():
            man.start(gen, man.final, t)
            if man is done:
                man.add(gen, 0)
    old = 1_000_000.0
    for man in (done, stuck):
        os.utime(man.path, (old, old))
    os.utime(temp, (old, old))
    assert assemble.prune(str(state), 3600, now=old + 7200) == 2
    assert not os.path.exists(done.path) and not os.path.exists(stuck.path)
    assert not temp.exists()                       # the never-completed file's temp
    assert os.path.exists(fresh.path)              # not old enough
    assert assemble.prune(str(tmp_path / "nowhere"), 1) == 0
