"""Where a downloaded file goes: mirror, strip, flatten, rename, inflight names, and the
refusal of anything that would land outside the target directory."""

import os

import pytest

from sarra.flow.placement import PlacementError, check_inside, inflight_path, local_name


@pytest.mark.parametrize("relpath,kw,expected", [
    ("/a/b/c.txt", {}, ("/t", "c.txt")),
    ("/a/b/c.txt", {"mirror": True}, ("/t/a/b", "c.txt")),
    ("/c.txt", {"mirror": True}, ("/t", "c.txt")),
    ("/a/b/c.txt", {"mirror": True, "strip": 1}, ("/t/b", "c.txt")),
    ("/a/b/c.txt", {"mirror": True, "strip": "2"}, ("/t", "c.txt")),
    ("/a/b/c.txt", {"mirror": True, "strip": 9}, ("/t", "c.txt")),      # keeps the name
    ("/a/b/c.txt", {"mirror": True, "strip": "^a/"}, ("/t/b", "c.txt")),  # regex
    ("/a/b/c.txt", {"flatten": "-"}, ("/t", "a-b-c.txt")),
    ("/a/b%20x/c%23d.txt", {"mirror": True}, ("/t/a/b x", "c#d.txt")),  # v02 escapes undone
    ("/a/b/c.txt", {"rename": "new/name.txt", "mirror": True}, ("/t/new", "name.txt")),
    ("/a/b/c.txt", {"rename": "new/dir/", "mirror": True}, ("/t/new/dir", "c.txt")),
    ("/a/b/c.txt", {"rename": "only.txt"}, ("/t", "only.txt")),
])
def test_local_name(relpath, kw, expected):
    assert local_name(relpath, "/t", **kw) == expected


@pytest.mark.parametrize("relpath,rename", [
    ("/../x.txt", None),
    ("/a/../../x.txt", None),
    ("/a/./x.txt", None),
    ("/a/x.txt", "../x.txt"),
    ("/a/x.txt", "/etc/passwd"),          # absolute rename
    ("/a/x.txt", "~/x.txt"),
    ("/", None),                           # names no file
    ("/a/x\0y", None),
])
def test_escapes_are_refused(relpath, rename):
    with pytest.raises(PlacementError) as e:
        local_name(relpath, "/t", mirror=True, rename=rename)
    assert e.value.code == 403


def test_check_inside(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")              # a directory symlink escaping the tree
    os.symlink(root / "sub", root / "inner")        # one staying inside
    assert check_inside(str(root / "sub"), "f", str(root)) == str(root / "sub" / "f")
    assert check_inside(str(root / "inner"), "f", str(root)) == str(root / "inner" / "f")
    assert check_inside(str(root / "new" / "dir"), "f", str(root))    # not created yet
    with pytest.raises(PlacementError, match="outside the target directory"):
        check_inside(str(root / "link"), "f", str(root))
    with pytest.raises(PlacementError):
        check_inside(str(root / "link" / "deeper"), "f", str(root))
    with pytest.raises(PlacementError):
        check_inside(str(root), "a/b", str(root))
    with pytest.raises(PlacementError):
        check_inside(str(root), "..", str(root))
    # a root that is itself reached through a symlink is fine
    os.symlink(root, tmp_path / "alias")
    assert check_inside(str(tmp_path / "alias" / "sub"), "f", str(tmp_path / "alias"))


@pytest.mark.parametrize("inflight,expected", [
    (".tmp", "/d/f.txt.tmp"),
    ("tmp", "/d/f.txt.tmp"),
    (".", "/d/.f.txt"),
    ("tmp/", "/d/tmp/f.txt"),
    (None, "/d/.f.txt.sarra-tmp"),          # NONE still writes under a hidden name
    ("NONE", "/d/.f.txt.sarra-tmp"),
    (10.0, "/d/.f.txt.sarra-tmp"),          # a posters' age setting: not a name
])
def test_inflight_path(inflight, expected):
    assert inflight_path("/d/f.txt", inflight) == expected


def test_check_inside_deep_links(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    os.symlink(outside, root / "a" / "b" / "esc")          # deep in the tree
    os.symlink("../../..", root / "a" / "b" / "up")         # relative, climbing out
    os.symlink("../b", root / "a" / "b" / "side")           # relative, staying in
    real = os.path.realpath(root)
    for d in ("a/b/esc", "a/b/esc/x", "a/b/up", "a/b/up/outside"):
        with pytest.raises(PlacementError):
            check_inside(str(root / d), "f", str(root), real)
    assert check_inside(str(root / "a/b/side/new"), "f", str(root), real)
    # out through the link and back in: the real path is inside, like os.path.realpath says
    assert check_inside(str(root / "a/b/up/root/a"), "f", str(root), real)
