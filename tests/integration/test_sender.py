"""sr_sender against the real broker and real servers (sshd, pyftpdlib, local files).

Files are announced with sr_post (http base URL, relpaths under the source tree: the
sender finds them through base_dir, as on a pump), pushed by `sr_sender foreground`, and
checked byte for byte on the server side. The SSH sessions are counted in the sshd log
("Accepted publickey" lines): 1,000 files go over one session, and a killed session is
replaced by exactly one new one.

The helpers (Runner, the runner and env fixtures) are in senderkit.py, shared with
test_shovel.py and test_routing.py.
"""

import os
import threading
import time

import pytest

from tests.integration.senderkit import (  # noqa: F401  (fixtures runner, env)
    accepted_sessions, codes, env, make_files, md5, posted, runner, sender_config, sr_post,
    sshd_children, wait_for)


# ------------------------------------------------------------------ tests

def test_file_destination_placement_post_remove_link(runner, env, tmp_path):
    out = tmp_path / "out"
    files = make_files(env.src, 12, prefix="a", subdirs=3)
    sender_config(runner, env, "file:%s" % out, """
        directory sub
        strip 1
        post_broker %s
        post_exchange %s
        post_base_url http://downstream.invalid/
    """ % (env.broker, env.post_exchange))
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    p = runner.start("sender", env.name)
    runner.wait_consuming(p, env.name)
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src])
    delivered = codes(env.reports, 12)
    assert sorted(delivered) == sorted(("/" + r, 201) for r in files), delivered
    for rel, digest in files.items():
        target = out / "sub" / rel.split("/", 1)[1]          # strip 1: d<k>/ dropped
        assert md5(target) == digest, target
        assert not (out / "sub" / (target.name + ".tmp")).exists()
    # every delivery announced downstream: base URL + remote path, original headers
    msgs = posted(env.posts, 12)
    assert len(msgs) == 12
    for key, body, headers in msgs:
        pubtime, base, rel = body.split()
        assert base == "http://downstream.invalid" and rel.startswith("/sub/a"), body
        assert headers["sum"].startswith("d,") and headers["parts"].startswith("1,")
        assert key == "v02.post.sub"
    # removal: the remote file goes
    victim = sorted(files)[0]
    (env.src / victim).unlink()
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src / victim],
            "--events", "create,delete,link,modify")
    assert codes(env.reports, 1) == [("/" + victim, 205)]
    assert not (out / "sub" / victim.split("/", 1)[1]).exists()
    # link
    os.symlink("a00001.txt", env.src / "d1" / "link.txt")
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src / "d1" / "link.txt"])
    assert codes(env.reports, 1) == [("/d1/link.txt", 205)]
    assert os.readlink(out / "sub" / "link.txt") == "a00001.txt"
    assert runner.stop(p) == 0


def test_sftp_thousand_files_one_session(runner, env, sftp_server):
    n = 1000
    files = make_files(env.src, n, size=100, prefix="k")
    host = "%s@%s:%d" % (sftp_server.user, sftp_server.host, sftp_server.port)
    runner.credentials("sftp://%s ssh_keyfile=%s" % (host, sftp_server.keyfile))
    sub = "thousand_%s" % env.name
    sender_config(runner, env, "sftp://%s/" % host, "directory %s\nreport_back off" % sub)
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    before = accepted_sessions(sftp_server)
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src])
    t0 = time.monotonic()
    p = runner.start("sender", env.name)
    root = sftp_server.root / sub

    def done():
        return sum(1 for rel in files if (root / rel).exists()) == n
    wait_for(done, 120, "1000 files on the sftp server", step=0.5)
    elapsed = time.monotonic() - t0
    for rel, digest in files.items():
        assert md5(root / rel) == digest, rel
    assert not list(root.rglob("*.tmp"))
    assert accepted_sessions(sftp_server) - before == 1, runner.log()
    assert runner.stop(p) == 0
    print("1000 files over one SSH session in %.1f s" % elapsed)


def test_sftp_session_dropped_by_server(runner, env, sftp_server):
    host = "%s@%s:%d" % (sftp_server.user, sftp_server.host, sftp_server.port)
    runner.credentials("sftp://%s ssh_keyfile=%s" % (host, sftp_server.keyfile))
    sub = "drop_%s" % env.name
    sender_config(runner, env, "sftp://%s/" % host, "directory %s" % sub)
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    p = runner.start("sender", env.name)
    runner.wait_consuming(p, env.name)
    before = accepted_sessions(sftp_server)
    first = make_files(env.src, 20, prefix="one")
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src])
    assert len(codes(env.reports, 20)) == 20
    assert accepted_sessions(sftp_server) - before == 1
    killed = 0
    for child in sshd_children(sftp_server):       # the server end of our session
        child.kill()
        killed += 1
    assert killed
    second = make_files(env.src / "later", 20, prefix="two")
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src / "later"])
    got = codes(env.reports, 20)
    assert sorted(c for _, c in got) == [201] * 20, runner.log()
    root = sftp_server.root / sub
    for rel, digest in first.items():
        assert md5(root / rel) == digest
    for rel, digest in second.items():
        assert md5(root / "later" / rel) == digest
    assert accepted_sessions(sftp_server) - before == 2, runner.log()
    assert runner.stop(p) == 0


def test_sftp_parts_sent_as_parts(runner, env, sftp_server):
    host = "%s@%s:%d" % (sftp_server.user, sftp_server.host, sftp_server.port)
    runner.credentials("sftp://%s ssh_keyfile=%s" % (host, sftp_server.keyfile))
    sub = "parts_%s" % env.name
    big = env.src / "big.bin"
    big.write_bytes(os.urandom((3 << 20) + 12345))
    sender_config(runner, env, "sftp://%s/" % host, """
        directory %s
        post_broker %s
        post_exchange %s
    """ % (sub, env.broker, env.post_exchange))
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    p = runner.start("sender", env.name)
    runner.wait_consuming(p, env.name)
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [big], "--blocksize", "1M")
    got = codes(env.reports, 4)
    assert sorted(c for _, c in got) == [201] * 4, runner.log()
    remote = sftp_server.root / sub / "big.bin"
    assert md5(remote) == md5(big)
    msgs = posted(env.posts, 4)
    parts = sorted(h["parts"] for _, _, h in msgs)
    assert [x.split(",")[0] for x in parts] == ["i"] * 4, parts      # announced as blocks
    assert sorted(int(x.split(",")[4]) for x in parts) == [0, 1, 2, 3]
    assert all(body.split()[1].startswith("sftp://") for _, body, _ in msgs)
    assert runner.stop(p) == 0


def test_ftp_destination(runner, env, ftp_server):
    files = make_files(env.src, 5, prefix="ftp", subdirs=2)
    sub = "ftp_%s" % env.name
    sender_config(runner, env, ftp_server.url, "directory %s\ninflight .part" % sub)
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    p = runner.start("sender", env.name)
    runner.wait_consuming(p, env.name)
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src])
    assert sorted(c for _, c in codes(env.reports, 5)) == [201] * 5, runner.log()
    for rel, digest in files.items():
        assert md5(ftp_server.root / sub / rel) == digest
    assert not list((ftp_server.root / sub).rglob("*.part"))
    victim = sorted(files)[-1]
    (env.src / victim).unlink()
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src / victim],
            "--events", "create,delete,link,modify")
    assert codes(env.reports, 1) == [("/" + victim, 205)]
    assert not (ftp_server.root / sub / victim).exists()
    assert runner.stop(p) == 0


def test_missing_local_file_and_unreachable_server_retry(runner, env, tmp_path):
    """A file missing here is 404 (kept for retry); a server that refuses is 497."""
    (env.src / "gone.txt").write_text("x")
    sender_config(runner, env, "sftp://nobody@127.0.0.1:9/", "attempts 1")
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src / "gone.txt"])
    (env.src / "here.txt").write_text("y")
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src / "here.txt"])
    (env.src / "gone.txt").unlink()
    p = runner.start("sender", env.name)
    got = dict(codes(env.reports, 2))
    assert got == {"/gone.txt": 404, "/here.txt": 497}, got
    assert "nobody@127.0.0.1:9" in runner.log() and "password" not in runner.log().lower()
    assert runner.stop(p) == 0


def test_only_files_under_base_dir_are_sent(runner, env, tmp_path, amqp_channel):
    import amqp
    out = tmp_path / "out"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for export")
    (env.src / "ok.txt").write_text("fine")
    sender_config(runner, env, "file:%s" % out)
    p = runner.start("sender", env.name)
    runner.wait_consuming(p, env.name)
    for base, rel in (("file:%s" % tmp_path, "/secret.txt"), (env.base_url, "/../secret.txt"),
                      (env.base_url, "/ok.txt")):
        amqp_channel.basic_publish(amqp.Message(
            "20261127120000 %s %s" % (base, rel),
            application_headers={"sum": "d,d41d8cd98f00b204e9800998ecf8427e",
                                 "parts": "1,4,1,0,0"}), exchange=env.exchange,
            routing_key="v02.post")
    got = codes(env.reports, 3)
    assert sorted(c for _, c in got) == [201, 403, 403], got
    assert (out / "ok.txt").read_text() == "fine"
    assert not list(out.rglob("secret.txt"))
    assert runner.stop(p) == 0


def test_sender_posting_into_its_own_exchange_is_refused(runner, env):
    sender_config(runner, env, "file:/tmp/never", """
        post_broker %s
        post_exchange %s
    """ % (env.broker, env.exchange))
    r = runner.run("sr_sender", "foreground", env.name, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if "refused" in line]
    assert len(lines) == 1 and env.exchange in lines[0] and "loop" in lines[0], r.stderr


# ---------------------------------------------------------------- blocks, FTP refusals

def _sftp(runner, env, sftp_server):
    host = "%s@%s:%d" % (sftp_server.user, sftp_server.host, sftp_server.port)
    runner.credentials("sftp://%s ssh_keyfile=%s" % (host, sftp_server.keyfile))
    return "sftp://%s/" % host


def _blocks_over_longer_remote(runner, env, dest, remote_file, extra=""):
    """An older, longer version is on the remote; the new (shorter) version is sent as
    1 MiB blocks: the remote must end up identical to the new file."""
    remote_file.parent.mkdir(parents=True, exist_ok=True)
    remote_file.write_bytes(b"OLD" * (2 << 20))          # 6 MiB old version
    big = env.src / "big.bin"
    big.write_bytes(os.urandom((3 << 20) + 12345))       # 3 MiB + a bit: 4 blocks
    sender_config(runner, env, dest, extra)
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    p = runner.start("sender", env.name)
    runner.wait_consuming(p, env.name)
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [big], "--blocksize", "1M")
    got = codes(env.reports, 4)
    assert sorted(c for _, c in got) == [201] * 4, runner.log()
    assert remote_file.stat().st_size == big.stat().st_size
    assert md5(remote_file) == md5(big)
    runner.stop(p)


def test_sftp_blocks_over_longer_remote_file(runner, env, sftp_server):
    sub = "stale_%s" % env.name
    _blocks_over_longer_remote(runner, env, _sftp(runner, env, sftp_server),
                               sftp_server.root / sub / "big.bin", "directory %s" % sub)


def test_file_blocks_over_longer_remote_file(runner, env, tmp_path):
    out = tmp_path / "out"
    _blocks_over_longer_remote(runner, env, "file:%s" % out, out / "big.bin")


def test_ftp_blocks(runner, env, ftp_server):
    """FTP cannot write at an offset: every block is refused alike (499 'ftp cannot
    deliver partitioned files', no retry); block 0 is not STORed as if it were the file."""
    sub = "ftpblk_%s" % env.name
    big = env.src / "big.bin"
    big.write_bytes(os.urandom((3 << 20) + 12345))
    sender_config(runner, env, ftp_server.url, "directory %s\nattempts 1" % sub)
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    p = runner.start("sender", env.name)
    runner.wait_consuming(p, env.name)
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [big], "--blocksize", "1M")
    got = codes(env.reports, 4, timeout=30)
    remote = ftp_server.root / sub / "big.bin"
    runner.stop(p)
    assert not remote.exists(), "a block stored as the whole file, codes %s" % got
    assert [c for _, c in got] == [499] * 4, got          # reports.md: 499, no retry


@pytest.fixture
def ftp_nodelete(tmp_path):
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer
    root = tmp_path / "ftproot"
    root.mkdir()
    auth = DummyAuthorizer()
    auth.add_user("u", "p", str(root), perm="elrawmfM")       # everything but 'd' (delete)
    handler = type("H", (FTPHandler,), {"authorizer": auth})
    srv = FTPServer(("127.0.0.1", 0), handler)
    port = srv.socket.getsockname()[1]
    t = threading.Thread(target=srv.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    t.start()
    yield root, "ftp://u:p@127.0.0.1:%d/" % port
    srv.close_all()


def test_ftp_delete_refused_by_the_server_is_a_failure(runner, env, ftp_nodelete):
    root, url = ftp_nodelete
    (root / "keep.txt").write_text("still here\n")
    sender_config(runner, env, url, "attempts 1")
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    p = runner.start("sender", env.name)
    runner.wait_consuming(p, env.name)
    victim = env.src / "keep.txt"
    victim.write_text("x")
    victim.unlink()
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [victim],
            "--events", "create,delete,link,modify")
    got = codes(env.reports, 1)
    runner.stop(p)
    assert (root / "keep.txt").exists()
    assert got and got[0][1] == 497, "delete refused by the server but reported %s" % got
