"""Pump nodes (issue 24): the block manifest of a file in parts follows the file's shard by
living on the shared data tree, beside the temporary file (sarra/flow/nodeparts.py)."""

import json
import os
import types

import pytest

from sarra.checksum import Parts
from sarra.flow import assemble, inplace, nodeparts
from sarra.flow.work import Outcome
from sarra.watch import ready


def _gen(blktot=4):
    return assemble.generation(Parts("i", 10, blktot, 5, 0), "20240101000000")


def _flow(tmp_path, node_shares):
    cfg = types.SimpleNamespace(node_shares=node_shares, retry_ttl=0, expire=300.0,
                                get=lambda k, d=None: node_shares if k == "node_shares" else d)
    return types.SimpleNamespace(cfg=cfg, user_cache_dir=str(tmp_path / "host-state"),
                                 step_state=None)


def test_with_node_shares_the_manifest_is_beside_the_temporary_file(tmp_path):
    tree = tmp_path / "tree" / "d"
    tree.mkdir(parents=True)
    final, temp = str(tree / "big.bin"), str(tree / "big.bin.tmp")
    man = inplace.manifest(_flow(tmp_path, 8), final, temp)
    assert isinstance(man, nodeparts.TreeManifest)
    assert os.path.dirname(man.path) == str(tree)
    name = os.path.basename(man.path)
    assert nodeparts.is_manifest_name(name) and len(name) < 80
    # hidden, and of the family sr_watch never announces (whatever its inflight)
    assert name.startswith(".") and ready.temp_name(name, ".tmp") and ready.temp_name(name)
    # without node_shares: the host's state directory, as before
    old = inplace.manifest(_flow(tmp_path, 0), final, temp)
    assert not isinstance(old, nodeparts.TreeManifest)
    assert old.path.startswith(str(tmp_path / "host-state"))


def test_a_second_host_continues_from_the_tree_manifest(tmp_path):
    """Host a records blocks 0 and 2; host b (its own state directory) sees them."""
    tree = tmp_path / "tree"
    tree.mkdir()
    final, temp = str(tree / "f"), str(tree / "f.tmp")
    gen = _gen()
    a = inplace.manifest(_flow(tmp_path / "a", 4), final, temp)
    with a.locked():
        a.start(gen, final, temp)
        a.add(gen, 0)
        a.add(gen, 2)
    b = inplace.manifest(_flow(tmp_path / "b", 4), final, temp)
    with b.locked():
        assert b.state(gen) == "partial" and b.missing(gen) == [1, 3]
        assert b.add(gen, 1) is False and b.add(gen, 3) is True
    # only base names are kept: no path of the server shows in the tree
    data = json.loads(open(b.path).read())
    assert (data["final"], data["temp"]) == ("f", "f.tmp")
    # the old per-host manifests: host b knows nothing of host a's blocks
    a_old = inplace.manifest(_flow(tmp_path / "a", 0), final, temp)
    with a_old.locked():
        a_old.start(gen, final, temp)
        a_old.add(gen, 0)
    b_old = inplace.manifest(_flow(tmp_path / "b", 0), final, temp)
    with b_old.locked():
        assert b_old.state(gen) == "new"


def test_a_link_or_fifo_on_the_manifest_name_is_never_written_through(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    outside = tmp_path / "outside"
    outside.write_text("keep")
    final, temp = str(tree / "f"), str(tree / "f.tmp")
    man = nodeparts.manifest(None, final, temp)
    os.symlink(outside, man.path)
    with pytest.raises(OSError):
        with man.locked():
            pass
    assert outside.read_text() == "keep"
    os.unlink(man.path)
    os.mkfifo(man.path)
    with pytest.raises(OSError):
        with man.locked():
            pass


def test_a_message_naming_a_manifest_is_refused(tmp_path):
    name = nodeparts.name_of(str(tmp_path / "x"))
    with pytest.raises(Outcome) as e:
        nodeparts.check(str(tmp_path / "d" / name))
    assert e.value.code == 403
    with pytest.raises(Outcome):            # the family: any name holding sarra-parts-
        nodeparts.check(str(tmp_path / "d" / ".sarra-parts-x.sarra-tmp"))
    nodeparts.check(str(tmp_path / "d" / "f.bin"))


def test_prune_beside_removes_old_manifests_and_their_temp_in_that_directory_only(tmp_path):
    d = tmp_path / "tree"
    d.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("x")
    gen = _gen()
    for i, temp in enumerate(["a.tmp", "../victim", "f2.tmp"]):
        (d / f"f{i}.tmp").write_text("blocks")
        man = nodeparts.manifest(None, str(d / f"f{i}"), str(d / f"f{i}.tmp"))
        with man.locked():
            man.start(gen, str(d / f"f{i}"), str(d / temp))
    fresh = nodeparts.manifest(None, str(d / "new"), str(d / "new.tmp"))
    with fresh.locked():
        fresh.start(gen, "new", "new.tmp")
    (d / "product").write_text("p")
    old = 1_000_000.0
    for n in os.listdir(d):
        if n != os.path.basename(fresh.path):
            os.utime(d / n, (old, old))
    assert assemble.prune(str(d), 3600, now=old + 7200, match=nodeparts.is_manifest_name,
                          beside=True) == 3
    left = sorted(os.listdir(d))
    assert os.path.basename(fresh.path) in left and "product" in left
    assert victim.read_text() == "x"            # "../victim": its base name, here only
    assert "f0.tmp" in left                      # named a.tmp: not f0's temp
    assert "f2.tmp" not in left                  # an incomplete file's temp goes with it


def test_the_download_step_refuses_a_posted_manifest_name(tmp_path):
    """msgbounds.check_work, before any transfer of sr_sarra / sr_subscribe: a source
    cannot plant (or overwrite) a block manifest by posting a file of that name."""
    from sarra import message
    from sarra.flow import download, msgbounds
    flow = types.SimpleNamespace(
        preset=types.SimpleNamespace(work=download.download, posts=False),
        cfg=types.SimpleNamespace(inflight=".tmp", inplace=True), post_broker=None)
    name = nodeparts.name_of(str(tmp_path / "d" / "big.bin"))
    for rel, code in ((f"d/{name}", 403), ("d/big.bin", None)):
        msg = message.make_post(message.now(), "http://h/", "/" + rel,
                                {"sum": "d," + "0" * 32, "parts": "1,10,1,0,0"})
        work = types.SimpleNamespace(local_path=str(tmp_path / rel), msg=msg)
        try:
            msgbounds.check_work(flow, work)
            got = None
        except Outcome as e:
            got = e.code
        assert got == code, rel
