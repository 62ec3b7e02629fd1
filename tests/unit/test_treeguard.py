"""The tree stays closed (sarra/flow/treeguard.py, and its use by download.py): no link, move or
rename leaves an entry of the target directory resolving outside it."""

import os

import pytest

from sarra import message
from sarra.config import parser as config
from sarra.flow import presets as components, download, treeguard
from sarra.flow.engine import Flow
from sarra.flow.work import Outcome, Work
from tests.support.flowfakes import FakeReporter


@pytest.mark.parametrize("target,depth,ok", [
    ("x", 0, True),
    ("../x", 1, True),
    ("../../x/y", 2, True),
    ("./a/./b", 0, True),
    ("..", 1, True),                    # the root itself
    ("../x", 0, False),
    ("../../../x", 2, False),
    ("a/../x", 3, False),               # '..' after a name: 'a' may become a link
    ("a/../../x", 5, False),
    ("", 3, False),
    ("a\0b", 3, False),
    ("/etc/passwd", 9, False),
])
def test_target_rule(target, depth, ok):
    assert (treeguard.target_escapes(target, depth) is None) == ok


def test_absolute_targets_only_inside_the_root():
    roots = ("/srv/tree", "/real/tree")
    assert treeguard.target_escapes("/srv/tree/a/b", 0, roots) is None
    assert treeguard.target_escapes("/real/tree", 0, roots) is None
    assert treeguard.target_escapes("/srv/treex/a", 0, roots) is not None
    assert treeguard.target_escapes("/srv/tree/../etc", 0, roots) is not None
    assert treeguard.target_escapes("/srv/tree/a/../../etc", 0, roots) is not None


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "secret").write_text("secret")
    return root


def _check(root, path, target):
    treeguard.check_link(str(root), os.path.realpath(root), str(path), target)


def test_check_link_uses_the_physical_depth(tree, tmp_path):
    _check(tree, tree / "a" / "b" / "c" / "l", "../../../x")
    with pytest.raises(treeguard.Escape, match="outside the target directory"):
        _check(tree, tree / "a" / "l", "../../secret")
    os.symlink("a/b/c", tree / "deep")                  # a linked directory: 3 deep really
    _check(tree, tree / "deep" / "l", "../../../x")
    os.symlink("a/b", tree / "ab")
    with pytest.raises(treeguard.Escape):               # 2 deep really, not 1 + 2
        _check(tree, tree / "ab" / "l", "../../../x")


def test_check_link_refuses_an_existing_link_leading_out(tree, tmp_path):
    os.symlink(str(tmp_path), tree / "out")            # put there by other means
    with pytest.raises(treeguard.Escape, match="resolves to"):
        _check(tree, tree / "a" / "l", "../out/secret")


def test_check_move_of_a_link_and_of_a_directory_of_links(tree):
    real = os.path.realpath(tree)
    os.symlink("../../../x", tree / "a" / "b" / "c" / "l")
    with pytest.raises(treeguard.Escape, match=r"climbs 3 directories from 0"):
        treeguard.check_move(str(tree), real, str(tree / "a/b/c/l"), str(tree / "l"))
    treeguard.check_move(str(tree), real, str(tree / "a/b/c/l"), str(tree / "a/b/c/m"))
    with pytest.raises(treeguard.Escape, match=r"climbs 3 directories from 1"):
        treeguard.check_move(str(tree), real, str(tree / "a/b/c"), str(tree / "c"))
    treeguard.check_move(str(tree), real, str(tree / "a/b/c"), str(tree / "x/y/c"))


def test_sweep_removes_links_leading_out_after_the_fact(tree):
    real = os.path.realpath(tree)
    os.symlink("../../../x", tree / "a" / "b" / "c" / "l")
    os.symlink("../ok", tree / "a" / "b" / "c" / "m")
    os.replace(tree / "a" / "b" / "c", tree / "c")     # moved behind our back
    removed = treeguard.sweep(str(tree), real, str(tree / "c"))
    assert [os.path.basename(p) for p, _ in removed] == ["l"]
    assert sorted(os.listdir(tree / "c")) == ["m"]


# ------------------------------------------------------------------ through download.py

def _flow(dst):
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(dst)), ("mirror", "on")])
    flow = Flow(cfg, components.preset("subscribe"))
    flow.reporter = FakeReporter()
    return flow


def _run(flow, relpath, headers):
    w = Work(message.make_post("20240101000000.0", "http://h/", relpath, headers))
    download.destination(flow, w)
    try:
        download.download(flow, w)
    except Outcome as e:
        return e.code, e.text
    return w.code, w.text


def _link(target):
    return {"sum": "L," + "0" * 128, "link": target}


def _moved_to(newname):
    return {"sum": "R," + "0" * 128, "newname": newname}


DEEP = "/" + "/".join(["d"] * 40)


def test_deep_link_moved_to_the_top_is_refused(tmp_path):
    dst = tmp_path / "dst"
    flow = _flow(dst)
    target = "../" * 40 + "etc/passwd"
    assert _run(flow, DEEP + "/l", _link(target)) == (201, "Linked")
    code, text = _run(flow, DEEP + "/l", _moved_to("/l"))
    assert code == 403 and "outside the target directory" in text, text
    assert not os.path.lexists(dst / "l")
    assert os.readlink(str(dst) + DEEP + "/l") == target     # left where it was


def test_directory_of_links_moved_up_is_refused(tmp_path):
    dst = tmp_path / "dst"
    flow = _flow(dst)
    assert _run(flow, DEEP + "/sub/l", _link("../" * 41 + "etc/passwd"))[0] == 201
    code, text = _run(flow, DEEP + "/sub", _moved_to("/sub"))
    assert code == 403, text
    assert not os.path.lexists(dst / "sub")


def test_harmless_moves_still_happen(tmp_path):
    dst = tmp_path / "dst"
    flow = _flow(dst)
    assert _run(flow, "/a/b/l", _link("../x"))[0] == 201
    assert _run(flow, "/a/b/l", _moved_to("/a/c/l")) == (201, "moved")
    assert os.readlink(dst / "a" / "c" / "l") == "../x"
    assert _run(flow, "/a/c", _moved_to("/e/f/c")) == (201, "moved")   # deeper: fine
    assert os.readlink(dst / "e" / "f" / "c" / "l") == "../x"


def test_link_through_a_name_that_can_change_is_refused(tmp_path):
    """a/../../x resolves inside while 'a' is a directory, outside once 'a -> .'"""
    dst = tmp_path / "dst"
    flow = _flow(dst)
    (dst / "s" / "a").mkdir(parents=True)
    code, text = _run(flow, "/s/l", _link("a/../../x"))
    assert code == 403 and "'..' after a name" in text
    assert _run(flow, "/s/a2", _link("."))[0] == 201


def test_a_link_slipped_in_during_a_move_is_removed(tmp_path, monkeypatch):
    """Another writer puts an escaping link into the directory between the check and the
    rename: it is removed after the rename, and the move reported 403."""
    dst = tmp_path / "dst"
    flow = _flow(dst)
    (dst / "a" / "b").mkdir(parents=True)
    real_check = treeguard.check_move

    def racing_check(*args):
        real_check(*args)
        os.symlink("../../x", dst / "a" / "b" / "late")
    monkeypatch.setattr(treeguard, "check_move", racing_check)
    code, text = _run(flow, "/a/b", _moved_to("/b"))
    assert code == 403 and "late" in text, text
    assert os.path.isdir(dst / "b") and os.listdir(dst / "b") == []


# ------------------------------------------------------------------ sr_sender, report texts

@pytest.mark.parametrize("directory,new_dir,target,ok", [
    ("/srv/out", "/srv/out/a/b", "../../x", True),
    ("/srv/out", "/srv/out/a/b", "../../../x", False),
    ("/srv/out", "/srv/out", "/srv/out/x", True),
    ("/srv/out", "/srv/out/a", "/etc/shadow", False),
    ("out", "out/a", "../x", True),
    ("out", "out", "../x", False),
    ("", "a/b", "../../x", True),
    ("", "", "../x", False),
    ("", "a", "/etc/shadow", False),            # relative destination: no absolute target
    ("", "a/b", "c/../../../x", False),
])
def test_sender_links_stay_in_the_destination(directory, new_dir, target, ok):
    from types import SimpleNamespace as NS
    from sarra.flow import send
    flow = NS(cfg=NS(directory=directory))
    work = NS(mask=None, new_dir=new_dir, new_file="l")
    if ok:
        send._check_remote_link(flow, work, target)
    else:
        with pytest.raises(Outcome) as e:
            send._check_remote_link(flow, work, target)
        assert e.value.code == 403 and "outside the destination directory" in e.value.text


def test_report_texts_fit_a_v02_header():
    from sarra.flow import report
    text = report.fit_text("Forbidden: link " + "d/" * 200 + "l")
    assert len(text.encode()) < message.MAX_HEADER_BYTES and text.endswith("...")
    assert report.fit_text("Forbidden: short") == "Forbidden: short"
    assert len(report.fit_text("é" * 300).encode()) < message.MAX_HEADER_BYTES


def test_newname_climbing_out_is_refused(tmp_path):
    dst = tmp_path / "dst"
    flow = _flow(dst)
    (dst / "a").mkdir(parents=True)
    (dst / "a" / "f").write_text("x")
    for newname in ("/../f", "/a/../../f"):
        code, text = _run(flow, "/a/f", _moved_to(newname))
        assert code == 403 and "'..'" in text, text
    assert (dst / "a" / "f").read_text() == "x" and sorted(os.listdir(tmp_path)) == ["dst"]


def test_a_link_to_a_link_is_judged_link_by_link(tmp_path):
    dst = tmp_path / "dst"
    flow = _flow(dst)
    assert _run(flow, "/a/b/l2", _link("../../x"))[0] == 201     # to the root's x
    assert _run(flow, "/l1", _link("a/b/l2"))[0] == 201          # to l2: inside
    code, text = _run(flow, "/a/b/l2", _moved_to("/l2"))         # l1 would follow it out
    assert code == 403, text
    assert escaping(dst) == []


def escaping(top):
    """Entries below top whose resolved path is outside it."""
    real_top = os.path.realpath(top)
    return [os.path.join(d, n) for d, ds, fs in os.walk(top) for n in ds + fs
            if not (os.path.realpath(os.path.join(d, n)) + "/").startswith(real_top + "/")]


def test_newname_onto_a_block_manifest_is_refused(tmp_path):
    """A removal's newname is a local name too: it may not take the place of a block
    manifest of the pump nodes (nodeparts), whose name anyone can compute from a path."""
    from sarra.flow import nodeparts
    dst = tmp_path / "dst"
    flow = _flow(dst)
    (dst / "a").mkdir(parents=True)
    (dst / "a" / "f").write_text("mine")
    victim = nodeparts.name_of(str(dst / "a" / "big"))
    (dst / "a" / victim).write_text("{}")
    code, text = _run(flow, "/a/f", _moved_to("/a/" + victim))
    assert code == 403 and "manifest" in text, text
    assert (dst / "a" / victim).read_text() == "{}" and (dst / "a" / "f").read_text() == "mine"
