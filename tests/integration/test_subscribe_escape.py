"""Nothing is ever written outside the target directory through a symbolic link: not when a
link post plants a link on a temporary name (inflight .tmp suffix, inflight tmp/ directory,
the temporary file of blocks assembled in place), not when such a link is already there,
and a link post whose target resolves outside the target directory is refused (403).
Real broker, sr_subscribe as a subprocess, data from a loopback HTTP server."""

import hashlib
import os

from sarra import checksum, message
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    files_under, post_msg, stub_http, sub_env)

PRECIOUS = b"precious data that must never change\n"


def _outside(tmp_path, name="victim.txt"):
    """A directory beside the target directory, holding one file that must stay as it is."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / name).write_bytes(PRECIOUS)
    return d, d / name


def _link_post(base, relpath, target):
    return message.make_post(message.now(), base, relpath, {
        "link": target, "sum": "L," + checksum.name_sum("L", target)})


def _by_relpath(reports):
    return {r["relpath"]: r for r in reports}


def _untouched(outside, *names):
    assert sorted(p.name for p in outside.iterdir()) == sorted(names)
    for n in names:
        assert (outside / n).read_bytes() == PRECIOUS, n


def test_link_post_on_the_temporary_name_is_refused(sub_env, stub_http, tmp_path):
    """The review's case: a link post for x.txt.tmp (the inflight name of x.txt) pointing
    at a file outside, then a post of x.txt."""
    env, stub = sub_env, stub_http
    outside, victim = _outside(tmp_path)
    env.config()
    env.setup()
    base = stub.url + env.uid
    data = b"PWNED\n"
    stub.files[f"/{env.uid}/x.txt"] = data
    env.publish_msg(_link_post(base, "/x.txt.tmp", str(victim)))
    env.publish_msg(post_msg(base, "/x.txt", data))
    p = env.foreground()
    reports = _by_relpath(env.reports.wait(2, timeout=30))
    refused = reports["/x.txt.tmp"]
    assert refused["code"] == 403, refused["body"]
    assert "outside the target directory" in refused["headers"]["message"]
    assert reports["/x.txt"]["code"] == 201, env.log_text()
    _untouched(outside, "victim.txt")
    final = env.dst / "x.txt"
    assert not final.is_symlink() and final.read_bytes() == data
    assert files_under(env.dst) == ["x.txt"]
    log = [line for line in env.log_text().splitlines() if "x.txt.tmp" in line]
    assert any(str(victim) in line and "outside the target directory" in line for line in log)
    env.stop(p)


def test_link_already_on_the_temporary_name_is_not_written_through(sub_env, stub_http,
                                                                    tmp_path):
    env, stub = sub_env, stub_http
    outside, victim = _outside(tmp_path)
    os.symlink(victim, env.dst / "x.txt.tmp")       # left there by someone else
    os.symlink(victim, env.dst / "y.txt")           # the final name itself is a link
    env.config()
    env.setup()
    base = stub.url + env.uid
    stub.files[f"/{env.uid}/x.txt"] = b"new x\n"
    stub.files[f"/{env.uid}/y.txt"] = PRECIOUS      # same checksum as the link's target
    env.publish_msg(post_msg(base, "/x.txt", b"new x\n"))
    env.publish_msg(post_msg(base, "/y.txt", PRECIOUS))
    p = env.foreground()
    reports = _by_relpath(env.reports.wait(2, timeout=30))
    assert [reports[r]["code"] for r in ("/x.txt", "/y.txt")] == [201, 201], env.log_text()
    _untouched(outside, "victim.txt")
    for name, data in (("x.txt", b"new x\n"), ("y.txt", PRECIOUS)):
        final = env.dst / name
        assert not final.is_symlink() and final.read_bytes() == data, name
    assert files_under(env.dst) == ["x.txt", "y.txt"]
    assert "symbolic link was on the temporary file name" in env.log_text()
    env.stop(p)


def test_inflight_directory_never_leads_outside(sub_env, stub_http, tmp_path):
    """inflight tmp/: a link post named tmp is refused; a tmp link already there that
    leads outside makes the download a 403, with nothing written there."""
    env, stub = sub_env, stub_http
    outside, _ = _outside(tmp_path, "x.txt")        # what tmp/x.txt would overwrite
    (outside / "y.txt").write_bytes(PRECIOUS)
    (env.dst / "sub").mkdir()
    os.symlink(outside, env.dst / "sub" / "tmp")
    env.config(extra="inflight tmp/\nmirror on")
    env.setup()
    base = stub.url + env.uid
    stub.files[f"/{env.uid}/x.txt"] = b"x data\n"
    stub.files[f"/{env.uid}/sub/y.txt"] = b"y data\n"
    env.publish_msg(_link_post(base, "/tmp", str(outside)))
    env.publish_msg(post_msg(base, "/x.txt", b"x data\n"))
    env.publish_msg(post_msg(base, "/sub/y.txt", b"y data\n"))
    p = env.foreground()
    reports = _by_relpath(env.reports.wait(3, timeout=30))
    assert reports["/tmp"]["code"] == 403, reports["/tmp"]["body"]
    assert reports["/x.txt"]["code"] == 201, env.log_text()
    bad = reports["/sub/y.txt"]
    assert bad["code"] == 403, bad["body"]
    assert "outside the target directory" in bad["headers"]["message"]
    _untouched(outside, "x.txt", "y.txt")
    assert not (env.dst / "tmp").is_symlink()
    assert (env.dst / "x.txt").read_bytes() == b"x data\n"
    assert not (env.dst / "sub" / "y.txt").exists()
    env.stop(p)


def test_inplace_blocks_never_written_through_a_link(sub_env, stub_http, tmp_path):
    """Blocks assembled in x.bin.tmp: a link post for that name after the first block is
    refused, and a link put there by other means is replaced, not written through."""
    env, stub = sub_env, stub_http
    outside, victim = _outside(tmp_path)
    data = b"0123456789abcdefghijKLMNOPQRST"
    base = stub.url + env.uid
    stub.files[f"/{env.uid}/x.bin"] = data
    blocks = []
    for bno in range(3):
        chunk = data[bno * 10:bno * 10 + 10]
        blocks.append(message.make_post(message.now(), base, "/x.bin", {
            "sum": "d," + hashlib.md5(chunk).hexdigest(),
            "parts": str(checksum.Parts("i", 10, 3, 0, bno)), "mtime": "20240315123456.5"}))
    env.config(extra="inplace on")
    env.setup()
    temp = env.dst / "x.bin.tmp"
    env.publish_msg(blocks[0])
    p = env.foreground()
    first = env.reports.wait(1, timeout=30)
    assert first[0]["code"] == 201, env.log_text()
    assert temp.is_file() and not temp.is_symlink()
    env.publish_msg(_link_post(base, "/x.bin.tmp", str(victim)))
    refused = env.reports.wait(2, timeout=30)[1]
    assert (refused["relpath"], refused["code"]) == ("/x.bin.tmp", 403), refused["body"]
    os.symlink(victim, str(temp) + ".planted")
    os.replace(str(temp) + ".planted", temp)        # a link replaces the partial file
    for m in (blocks[1], blocks[2], blocks[0]):     # block 0 again: it was in the lost file
        env.publish_msg(m)
    later = env.reports.wait(5, timeout=30)[2:]
    assert [r["code"] for r in later] == [201, 201, 201], env.log_text()
    _untouched(outside, "victim.txt")
    final = env.dst / "x.bin"
    assert not final.is_symlink() and final.read_bytes() == data
    assert files_under(env.dst) == ["x.bin"]
    env.stop(p)


def test_link_posts_pointing_outside_are_refused(sub_env, stub_http, tmp_path):
    env, stub = sub_env, stub_http
    outside, victim = _outside(tmp_path)
    os.symlink(outside, env.dst / "dirlink")        # a linked directory leading outside
    env.config(extra="mirror on")
    env.setup()
    base = stub.url + env.uid
    links = {
        "/a/abs.lnk": str(victim),                       # absolute, outside
        "/a/up.lnk": "../../outside/victim.txt",         # climbs out with '..'
        "/a/via.lnk": "../dirlink/victim.txt",           # out through the linked directory
        "/a/rel.lnk": "../x.txt",                        # inside: made
        "/a/dotdot.lnk": "sub/../../a/y.txt",            # '..' after a name: refused
        "/a/inside_abs.lnk": str(env.dst / "x.txt"),     # absolute but inside: made
    }
    for rel, target in links.items():
        env.publish_msg(_link_post(base, rel, target))
    p = env.foreground()
    reports = _by_relpath(env.reports.wait(len(links), timeout=30))
    codes = {rel: reports[rel]["code"] for rel in links}
    # dotdot.lnk resolves inside now, but outside once a/sub is a link to '.' (treeguard)
    assert codes == {"/a/abs.lnk": 403, "/a/up.lnk": 403, "/a/via.lnk": 403,
                     "/a/rel.lnk": 201, "/a/dotdot.lnk": 403, "/a/inside_abs.lnk": 201}
    made = sorted(n for n in os.listdir(env.dst / "a"))
    assert made == ["inside_abs.lnk", "rel.lnk"]
    for name in made:
        assert os.readlink(env.dst / "a" / name) == links["/a/" + name]
    log = env.log_text()
    for rel in ("/a/abs.lnk", "/a/up.lnk", "/a/via.lnk"):
        line = next(x for x in log.splitlines() if rel in x and "Forbidden" in x)
        assert repr(links[rel]) in line and "outside the target directory" in line
    _untouched(outside, "victim.txt")
    env.stop(p)
