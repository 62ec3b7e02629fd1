"""Pump nodes (issue 24, review): no posted name can take the place of a block manifest on
the shared data tree, whatever inflight (sarra/flow/nodeparts.py check, msgbounds.check_work),
and something other than a regular file where a manifest should be fails the block's
message once, never a retry loop (assemble.NotAManifest, inplace.locked)."""

import os
import types

import pytest

from sarra import message
from sarra.checksum import Parts
from sarra.flow import download, inplace, msgbounds, nodeparts
from sarra.flow.work import Outcome

H = "0123456789abcdef0123456789abcdef01234567"


def _check(tmp_path, rel, inflight):
    flow = types.SimpleNamespace(
        preset=types.SimpleNamespace(work=download.download, posts=False),
        cfg=types.SimpleNamespace(inflight=inflight, inplace=True), post_broker=None)
    msg = message.make_post(message.now(), "http://h/", "/" + rel,
                            {"sum": "d," + "0" * 32, "parts": "i,10,4,5,0"})
    work = types.SimpleNamespace(local_path=str(tmp_path / rel), msg=msg)
    try:
        msgbounds.check_work(flow, work)
    except Outcome as e:
        return e.code
    return None


@pytest.mark.parametrize("inflight", [None, ".", ".tmp", ".sarra-tmp", "tmp/"])
@pytest.mark.parametrize("rel", [
    f"d/sarra-parts-{H}",                   # inflight None: .sarra-parts-<h>.sarra-tmp
    f"d/sarra-parts-{H}.sarra-tmp",         # inflight '.'
    f"d/.sarra-parts-{H}",                  # a suffix inflight '.sarra-tmp'
    f"d/.sarra-parts-{H}.sarra-tmp",        # the manifest's own name
    f"a/.sarra-parts-{H}.sarra-tmp/x",      # a directory where a manifest goes
    f"d/.SARRA-PARTS-{H.upper()}.SARRA-TMP",  # a file system blind to case
])
def test_every_name_of_the_family_is_refused_whatever_inflight(tmp_path, rel, inflight):
    assert _check(tmp_path, rel, inflight) == 403


@pytest.mark.parametrize("inflight", [None, ".", ".tmp", "tmp/"])
def test_ordinary_names_pass(tmp_path, inflight):
    for rel in ("d/big.bin", "d/sarra-part.txt", "parts-list/x", "d/.hidden"):
        assert _check(tmp_path, rel, inflight) is None, rel


def test_no_derived_temporary_name_is_a_manifest_name_once_checked(tmp_path):
    """By construction: a name that passes check has no temporary name of the family."""
    from sarra.flow import placement
    final = str(tmp_path / "d" / "sarra-parts-x")
    with pytest.raises(Outcome):
        nodeparts.check(final, placement.inflight_path(final, None))
    name = nodeparts.name_of(str(tmp_path / "d" / "f"))
    for inflight in (None, ".", ".tmp", "tmp/"):
        temp = placement.inflight_path(str(tmp_path / "d" / name[1:-len(".sarra-tmp")]),
                                       inflight)
        with pytest.raises(Outcome):
            nodeparts.check(str(tmp_path / "d" / "ok"), temp)


def _block_flow(tmp_path):
    cfg = types.SimpleNamespace(node_shares=4, retry_ttl=0, expire=300.0, inflight=None,
                                inplace=True, overwrite=False,
                                get=lambda k, d=None: 4 if k == "node_shares" else d)
    return types.SimpleNamespace(cfg=cfg, user_cache_dir=str(tmp_path / "state"),
                                 step_state=None, log=None)


@pytest.mark.parametrize("what", ["directory", "symlink", "fifo"])
def test_a_non_regular_file_where_the_manifest_goes_fails_once(tmp_path, what):
    tree = tmp_path / "tree"
    tree.mkdir()
    final = str(tree / "big.bin")
    where = tree / nodeparts.name_of(final)
    if what == "directory":
        where.mkdir()
    elif what == "symlink":
        os.symlink(str(tmp_path / "elsewhere"), str(where))
    else:
        os.mkfifo(str(where))
    parts = Parts("i", 10, 4, 5, 0)
    msg = types.SimpleNamespace(headers={"mtime": "20240101000000"}, pubtime="20240101000000",
                                parts=parts)
    work = types.SimpleNamespace(msg=msg, sum=types.SimpleNamespace(algo="d", value="x"),
                                 new_dir=str(tree), root=str(tree))
    with pytest.raises(Outcome) as e:
        inplace.block(_block_flow(tmp_path), work, final, parts)
    assert e.value.code >= 400 and not e.value.retry and e.value.failed
    assert "not a regular file" in e.value.text and str(tree) not in e.value.text
    assert where.is_dir() if what == "directory" else True    # left for the admin
