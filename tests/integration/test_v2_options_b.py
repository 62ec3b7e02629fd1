"""v2 options of issue 19 item 4 (second half) against the real broker and real servers:
post_exchange_split, header, post_base_url round robin (sr_post and a consumer), sr_sender
delete and batch (real sshd), filename rules (sr_subscribe from the real HTTP server)."""

import hashlib
import os

import pytest

from tests.integration.senderkit import (  # noqa: F401  (fixtures runner, env)
    accepted_sessions, codes, env, make_files, posted, runner, sender_config, sr_post,
    wait_for)

pytestmark = pytest.mark.broker


def _shard(headers, n):
    return sum(headers["sum"].encode("ascii")) % n


def test_post_split_header_and_round_robin(runner, broker_url, uid, amqp_exchange, amqp_tap,
                                           tmp_path):
    x = "xs_guest_split%s" % uid
    taps = [amqp_tap(amqp_exchange("%s%02d" % (x, k), durable=True)) for k in range(2)]
    plain = amqp_tap(amqp_exchange(x, durable=True))
    src = tmp_path / "src"
    files = make_files(src, 12, prefix="s", subdirs=2)
    runner.config("post", "split", """
        post_broker %s
        post_exchange %s
        post_exchange_split 2
        post_base_url http://a.invalid/,http://b.invalid/
        post_base_dir %s
        header product=radar
        header flow=north
    """ % (broker_url, x, src))
    r = runner.run("sr_post", "-c", "split", *sorted(str(src / f) for f in files))
    assert r.returncode == 0, r.stdout + r.stderr
    got = [[], []]

    def arrived():
        for k in range(2):
            got[k] += taps[k].get(12, timeout=0.05)
        return sum(len(g) for g in got) >= 12
    wait_for(arrived, 15, "12 posts on the two shards")
    assert sum(len(g) for g in got) == 12, got
    bases = []
    for k in range(2):
        assert got[k], "shard %02d got nothing" % k
        for key, body, headers in got[k]:
            assert _shard(headers, 2) == k, (k, headers["sum"])      # v2's shard
            assert headers["product"] == "radar" and headers["flow"] == "north"
            bases.append((body.split()[0], body.split()[1]))
    assert not plain.get(1, timeout=0.2), "a post went to the unsplit exchange"
    # round robin: the posts take the two URLs in turn
    urls = [b for _, b in sorted(bases)]
    assert urls.count("http://a.invalid/") == 6 and urls.count("http://b.invalid/") == 6


def test_shovel_adds_header_and_splits(runner, env, broker_url, uid, amqp_exchange,
                                       amqp_tap, tmp_path):
    out = "xs_guest_shsplit%s" % uid
    taps = [amqp_tap(amqp_exchange("%s%02d" % (out, k), durable=True)) for k in range(3)]
    runner.config("shovel", env.name, """
        broker %s
        exchange %s
        expire 5m
        post_broker %s
        post_exchange %s
        post_exchange_split 3
        header origin_pump=west
        report_back off
    """ % (broker_url, env.exchange, broker_url, out))
    assert runner.run("sr_shovel", "setup", env.name).returncode == 0
    p = runner.start("shovel", env.name)
    runner.wait_consuming(p, env.name)
    make_files(env.src, 9, prefix="h", subdirs=1)
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src, [env.src])
    got = [[] for _ in taps]

    def arrived():
        for k, t in enumerate(taps):
            got[k] += t.get(9, timeout=0.2)
        return sum(len(g) for g in got) >= 9
    wait_for(arrived, 20, "9 shovelled posts")
    for k in range(3):
        for key, body, headers in got[k]:
            assert _shard(headers, 3) == k, (k, headers["sum"])
            assert headers["origin_pump"] == "west"
    assert sum(len(g) for g in got) == 9 and sum(1 for g in got if g) >= 2
    assert runner.stop(p) == 0


def test_sender_delete_and_batch_over_sftp(runner, env, sftp_server):
    host = "%s@%s:%d" % (sftp_server.user, sftp_server.host, sftp_server.port)
    runner.credentials("sftp://%s ssh_keyfile=%s" % (host, sftp_server.keyfile))
    sub = "del_%s" % env.name
    files = make_files(env.src, 4, prefix="d", subdirs=1)
    keep = env.src / "keep.txt"            # not announced: never touched
    keep.write_bytes(b"stay")
    sender_config(runner, env, "sftp://%s/" % host, """
        directory %s
        delete on
        batch 2
        post_broker %s
        post_exchange %s
    """ % (sub, env.broker, env.post_exchange))
    assert runner.run("sr_sender", "setup", env.name).returncode == 0
    before = accepted_sessions(sftp_server)
    sr_post(runner, env.broker, env.exchange, env.base_url, env.src,
            [env.src / f for f in sorted(files)])
    p = runner.start("sender", env.name)
    assert sorted(codes(env.reports, 4)) == sorted(("/" + f, 201) for f in files)
    assert len(posted(env.posts, 4)) == 4
    root = sftp_server.root / sub
    for rel, digest in files.items():
        assert hashlib.md5((root / rel).read_bytes()).hexdigest() == digest
    wait_for(lambda: not any((env.src / f).exists() for f in files), 15,
             "the sent files removed")
    assert keep.read_bytes() == b"stay"
    assert runner.stop(p) == 0
    # batch 2: four files, two sessions
    assert accepted_sessions(sftp_server) - before == 2, runner.log()


def test_sender_delete_without_base_dir_is_refused(runner, env):
    path = runner.config("sender", env.name, """
        broker %s
        exchange %s
        destination file:/tmp/nowhere
        delete on
    """ % (env.broker, env.exchange))
    r = runner.run("sr_sender", "foreground", env.name, timeout=30)
    assert r.returncode == 2
    assert "%s:4: option 'delete' refused: it needs base_dir" % path in r.stderr + r.stdout


# ------------------------------------------------------------------ filename (Sundew rules)

from tests.integration.subkit import sub_env  # noqa: E402,F401  (fixture)


def test_subscribe_filename_rules(sub_env, http_server):
    env = sub_env
    d = http_server.root / ("fn%s" % env.uid)
    d.mkdir()
    named = {"WHAT1_CWAO:CWAO:SA:3:Direct:20261205120000": "WHAT1_CWAO",
             "WX_X:ORIG:SENDER=out.txt": "out.txt",
             "plain.bin": "fixed.txt",
             "lower:part.txt": "LOWER",
             "timed.txt": None}
    digests = {}
    for i, name in enumerate(named):
        data = ("file %d %s\n" % (i, name)).encode()
        (d / name).write_bytes(data)
        digests[name] = hashlib.md5(data).hexdigest()
    (env.plugdir / "upper.py").write_text(
        "def destfn_script(parent):\n"
        "    parent.new_file = parent.new_file.upper()\n")
    env.config("""
        mirror off
        accept .*/lower.* WHATFN:DESTFNSCRIPT=upper
        accept .*/WHAT1_.* WHATFN
        accept .*SENDER=.* SENDER
        filename DESTFN=fixed.txt
        accept .*/plain\\.bin
        filename NONE:TIME
        accept .*/timed\\.txt
    """, accept=False)
    env.setup()
    p = env.foreground()
    env.post(*[d / n for n in named], base_url=http_server.url,
             extra=("--post_base_dir", str(http_server.root)))
    got = env.reports.wait(5, timeout=30)
    assert len(got) == 5, (got, env.log_text())
    want = {named[n]: digests[n] for n in named if named[n]}
    assert env.wait_files(want, timeout=10) == {}, (os.listdir(env.dst), env.log_text())
    timed = [f for f in os.listdir(env.dst) if f.startswith("timed.txt:")]
    assert len(timed) == 1 and len(timed[0]) == len("timed.txt:") + 14, os.listdir(env.dst)
    assert sorted(os.listdir(env.dst)) == sorted(list(want) + timed)
    env.stop(p)


# ------------------------------------------------------------------ realpath_* (sr_post)

def test_post_realpath_post_and_filter(runner, broker_url, uid, amqp_exchange, amqp_tap,
                                       tmp_path):
    x = "xs_guest_real%s" % uid
    tap = amqp_tap(amqp_exchange(x, durable=True))
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    (src / "real" / "f.txt").write_bytes(b"data")
    (src / "link").symlink_to("real")

    def post(*extra):
        r = runner.run("sr_post", "--post_broker", broker_url, "--post_exchange", x,
                       "--post_base_url", "http://h.invalid/", "--post_base_dir", str(src),
                       *extra, str(src / "link" / "f.txt"))
        assert r.returncode == 0, r.stdout + r.stderr
        return [body.split()[2] for _, body, _ in tap.get(1, timeout=2)]
    assert post() == ["/link/f.txt"]
    assert post("--realpath_post", "on") == ["/real/f.txt"]
    # the filter sees /real/ only with realpath_filter
    assert post("--reject", ".*/real/.*") == ["/link/f.txt"]
    assert post("--realpath_filter", "on", "--reject", ".*/real/.*") == []


def test_winnow_with_exchange_split_reads_the_split_posts(runner, broker_url, uid,
                                                          amqp_exchange, amqp_tap, tmp_path):
    x = "xs_guest_wsplit%s" % uid
    for k in range(2):
        amqp_exchange("%s%02d" % (x, k), durable=True)
    out = amqp_tap(amqp_exchange("xs_guest_wout%s" % uid, durable=True))
    name = "w%s" % uid
    runner.config("winnow", name, """
        broker %s
        exchange %s
        exchange_split on
        instances 2
        expire 5m
        post_broker %s
        post_exchange xs_guest_wout%s
        report_back off
    """ % (broker_url, x, broker_url, uid))
    assert runner.run("sr_winnow", "setup", name).returncode == 0
    p = runner.start("winnow", name)
    runner.wait_consuming(p, name)
    src = tmp_path / "src"
    files = make_files(src, 6, prefix="w", subdirs=1)
    for _ in range(2):      # the same six files twice: winnow passes each once
        r = runner.run("sr_post", "--post_broker", broker_url, "--post_exchange", x,
                       "--post_exchange_split", "2", "--post_base_url", "http://h.invalid/",
                       "--post_base_dir", str(src), *[str(src / f) for f in files])
        assert r.returncode == 0, r.stdout + r.stderr
    got = out.get(6, timeout=15)
    got += out.get(1, timeout=1)     # a duplicate passed would be here by now
    assert sorted(body.split()[2] for _, body, _ in got) == sorted("/" + f for f in files)
    assert runner.stop(p) == 0
