"""sr_subscribe option `delete`: the source of a file is deleted once our copy is complete
and verified (a whole file, or the last block of a file announced in blocks), over SFTP (a
real sshd) and file: URLs; never after a checksum mismatch; over http it cannot be done
(one error per message, the source stays)."""

import os

from tests.integration.subkit import (  # noqa: F401  (fixture)
    files_under, make_tree, md5, post_msg, sub_env)

BLOCK = 256 * 1024


def _sources(env, root):
    """Under root/<uid>: good/ (5 small files and one file of 4 blocks), posted with sr_post,
    and bad.txt, announced by hand with the checksum of other bytes of the same size."""
    src = root / env.uid
    good = src / "good"
    tree = make_tree(good, 5, size=300, subdirs=2)
    big = good / "big" / "blocks.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(3 * BLOCK + 1000))
    tree["big/blocks.bin"] = md5(big)
    bad = src / "bad.txt"
    bad.write_bytes(b"A" * 100)
    env.src = src
    return good, {f"{env.uid}/good/{rel}": digest for rel, digest in tree.items()}, bad


def _run_delete(env, root, base_url):
    good, expected, bad = _sources(env, root)
    env.config(extra="mirror on\ndelete on")
    env.setup()
    env.post(good, blocksize="256K", base_url=base_url, extra=("--post_base_dir", str(root)))
    env.publish_msg(post_msg(base_url, f"/{env.uid}/bad.txt", b"B" * 100))
    p = env.foreground()
    reports = env.reports.wait(11, timeout=60)           # 5 files + 4 blocks + bad.txt twice
    missing = env.wait_files(expected, timeout=20)
    assert missing == {}, env.log_text()[-3000:]
    codes = {}
    for r in reports:
        codes.setdefault(r["relpath"].rsplit("/", 1)[-1], []).append(r["code"])
    assert codes.pop("bad.txt") == [417, 417], env.log_text()[-3000:]   # tried once more
    assert codes.pop("blocks.bin") == [201] * 4             # no block found its source gone
    assert sorted(codes.values()) == [[201]] * 5
    assert len(env.reports.settle(0.5)) == 11
    env.stop(p)
    assert p.returncode == 0
    # every verified source is gone; the one whose checksum did not match is still there
    assert files_under(root / env.uid) == ["bad.txt"]
    assert bad.read_bytes() == b"A" * 100
    assert files_under(env.dst) == sorted(expected)
    log = env.log_text()
    assert log.count("source deleted (option delete)") == 6, log[-3000:]
    assert "cannot delete" not in log


def test_sftp_delete_after_verified_download(sub_env, sftp_server):
    env = sub_env
    host = f"{sftp_server.user}@{sftp_server.host}:{sftp_server.port}"
    env.credentials(f"sftp://{host} ssh_keyfile={sftp_server.keyfile}\n")
    _run_delete(env, sftp_server.root, f"sftp://{host}")


def test_file_url_delete_after_verified_download(sub_env, tmp_path):
    env = sub_env
    root = tmp_path / "local"
    root.mkdir()
    _run_delete(env, root, f"file:{root}")


def test_without_delete_sources_stay(sub_env, tmp_path):
    env = sub_env
    root = tmp_path / "local"
    root.mkdir()
    good, expected, _ = _sources(env, root)
    before = files_under(root)
    env.config(extra="mirror on")
    env.setup()
    env.post(good, blocksize="256K", base_url=f"file:{root}",
             extra=("--post_base_dir", str(root)))
    p = env.foreground()
    assert env.wait_files(expected, timeout=60) == {}, env.log_text()[-3000:]
    env.reports.wait(9, timeout=30)
    env.stop(p)
    assert files_under(root) == before
    assert "option delete" not in env.log_text()


def test_http_cannot_delete(sub_env, http_server):
    env = sub_env
    root = http_server.root
    src = root / env.uid
    tree = make_tree(src, 2, size=200, subdirs=1)
    expected = {f"{env.uid}/{rel}": digest for rel, digest in tree.items()}
    env.src = src
    env.config(extra="mirror on\ndelete on")
    env.setup()
    env.post(src, base_url=http_server.url, extra=("--post_base_dir", str(root)))
    p = env.foreground()
    assert env.wait_files(expected, timeout=60) == {}, env.log_text()[-3000:]
    assert sorted(env.reports.wait(2, timeout=30) and env.reports.codes()) == [201, 201]
    env.stop(p)
    assert files_under(src) == sorted(tree)                 # nothing deleted over http
    log = env.log_text()
    assert log.count("cannot delete over http (option delete): source left in place") == 2, \
        log[-3000:]
