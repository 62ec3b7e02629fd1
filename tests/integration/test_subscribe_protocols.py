"""sr_subscribe over SFTP (a real sshd, key from credentials.conf), FTP (a real FTP server,
password from credentials.conf) and file: URLs, small files and a file in blocks."""

import os

from tests.integration.subkit import (  # noqa: F401  (fixture)
    files_under, make_tree, md5, sub_env)


def _tree(env, root):
    env.src = root / env.uid
    env.src.mkdir()
    tree = make_tree(env.src, 50, size=500)
    big = env.src / "big" / "blocks.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(1_000_000))           # 4 blocks of 256 KiB, the last short
    tree["big/blocks.bin"] = md5(big)
    return tree


def _run(env, tree, base_url, base_dir):
    env.config(extra="mirror on")
    env.setup()
    env.post(env.src, blocksize="256K", base_url=base_url,
             extra=("--post_base_dir", str(base_dir)))
    p = env.foreground()
    reports = env.reports.wait(54, timeout=60)
    got = env.wait_files({f"{env.uid}/{rel}": d for rel, d in tree.items()}, timeout=10)
    assert got == {}, env.log_text()[-3000:]
    assert sorted(r["code"] for r in reports) == [201] * 54, [r["body"] for r in reports
                                                               if r["code"] != 201]
    assert sum(r["headers"]["parts"].startswith("i,262144,4,") for r in reports) == 4
    assert len(env.on_file_lines()) == 51                   # 50 files + the assembled one
    assert len(env.reports.settle(0.5)) == 54
    assert files_under(env.dst) == sorted(f"{env.uid}/{rel}" for rel in tree)
    env.stop(p)
    assert p.returncode == 0


def test_sftp_with_key_from_credentials(sub_env, sftp_server):
    env = sub_env
    tree = _tree(env, sftp_server.root)
    host = f"{sftp_server.user}@{sftp_server.host}:{sftp_server.port}"
    env.credentials(f"sftp://{host} ssh_keyfile={sftp_server.keyfile}\n")
    # one '/' after the host: relative to the login directory (the server's root)
    _run(env, tree, f"sftp://{host}", sftp_server.root)
    assert "password" not in env.log_text().lower()


def test_ftp_with_password_from_credentials(sub_env, ftp_server):
    env = sub_env
    tree = _tree(env, ftp_server.root)
    host = f"{ftp_server.host}:{ftp_server.port}"
    env.credentials(f"ftp://{ftp_server.user}:{ftp_server.password}@{host}\n")
    _run(env, tree, f"ftp://{ftp_server.user}@{host}", ftp_server.root)
    assert ftp_server.password not in env.log_text()


def test_file_urls(sub_env, tmp_path):
    env = sub_env
    root = tmp_path / "local"
    root.mkdir()
    tree = _tree(env, root)
    _run(env, tree, f"file:{root}", root)
