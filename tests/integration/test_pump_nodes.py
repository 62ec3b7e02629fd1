"""Pump nodes (issue 24 item 2): the same sr_subscribe configuration with ``node_shares``
run by two "hosts" (their own HOME, state directory and process group; one shared data
tree) on the real broker. Every file of a directory reaches one node (the consistent-hash
exchange hashes the v02 topic), a file in shuffled parts is assembled by one node with
on_file fired once, and a node killed with kill -9 hands its shards to the other with
nothing lost and nothing handled twice."""

import collections
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from sarra import checksum, message
from tests.conftest import command_argv, command_env
from tests.integration.winnowkit import wenv  # noqa: F401  (fixture)
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    make_tree, md5, sub_env, wait_for)

from tests.integration.nodekit import (  # noqa: F401
    SHARES, FILES, _files, _second_host, _run_node, _publish_tree, _publish_parted, _on_file_counts, _config, _posts)

pytestmark = pytest.mark.broker

def test_two_nodes_share_the_files_each_once(sub_env, http_server, tmp_path):
    env = sub_env
    _config(env)
    home2 = _second_host(env, tmp_path)
    env.setup()
    a = _run_node(env, env.home, "a")
    b = _run_node(env, home2, "b")
    expected = _publish_tree(env, http_server, _files())
    expected.update(_publish_parted(env, http_server, 4))
    pending = env.wait_files(expected, timeout=120)
    assert not pending, (len(pending), env.log_text())
    counts = wait_for(lambda: len(_on_file_counts(env)) >= len(expected)
                      and _on_file_counts(env), timeout=30)
    assert counts, env.log_text()
    time.sleep(0.5)                                  # nothing more may come
    counts = _on_file_counts(env)
    assert set(counts) == set(expected)
    assert {n for n in counts.values()} == {1}, [r for r, n in counts.items() if n > 1]
    pids = collections.Counter(pid for pid, _ in env.hook_lines("on_file"))
    assert set(pids) == {a.pid, b.pid}, pids         # both nodes did work
    # the first node held every shard; the fair part was handed to the second one
    assert "handed to the next consumer (2 consumers, fair part 4" in env.log_text()
    # a node's queue name is the same on every host, and nothing random is saved
    assert not list(env.state_dir().glob("*.qname"))
    _, waiting, consumers = env.channel().queue_declare(
        f"q_guest.sr_subscribe.{env.name}.nodes.s00", passive=True)
    assert (waiting, consumers) == (0, 2)


def test_node_killed_mid_flow_hands_its_share_over(sub_env, http_server, tmp_path,
                                                    amqp_exchange, amqp_tap):
    """Each node re-announces what it wrote (as a pump node does); node a is killed with
    kill -9 half-way: every file is announced downstream, none twice, none corrupt."""
    env = sub_env
    out = amqp_exchange(f"xs_guest_out{env.uid}")
    tap = amqp_tap(out)
    env.config(extra=f"node_shares {SHARES}\nprefetch 5\ncount_file_sleep 0.01\nmirror on\n"
               f"post_broker {env.broker}\npost_exchange {out}\n"
               f"post_base_url file:{env.dst}/\npost_base_dir {env.dst}", report=False)
    home2 = _second_host(env, tmp_path)
    env.setup()
    a = _run_node(env, env.home, "a")
    b = _run_node(env, home2, "b")
    expected = _publish_tree(env, http_server, _files(), seed=3)
    assert wait_for(lambda: "handed to the next consumer" in env.log_text()
                    and sum(1 for pid, _ in env.hook_lines("on_file") if pid == a.pid) >= 20,
                    timeout=60), env.log_text()
    os.killpg(a.pid, signal.SIGKILL)
    a.wait(10)
    pending = env.wait_files(expected, timeout=120)
    assert not pending, (len(pending), env.log_text())          # nothing lost
    posts = _posts(tap)
    lost = sorted(set(expected) - set(posts))
    dups = sorted(r for r, n in posts.items() if n > 1)
    print(f"pump node killed: {len(expected)} files, {len(lost)} lost, {len(dups)} duplicated")
    assert lost == [], lost                                      # every file announced
    assert dups == [], dups          # its batch's posts were never committed (batchtx.py)
    assert all(md5(env.dst / r) == d for r, d in expected.items())   # nothing corrupt
    counts = _on_file_counts(env)
    assert max(counts.values()) == 1                             # on_file never twice
    assert b.poll() is None


def test_two_node_winnow_lets_one_copy_out(wenv, tmp_path):
    """Two redundant sources (two exchanges, every product on both, the second copy a
    little later) through sr_winnow on two hosts sharing the work with node_shares: once
    the shards are spread (after a warm-up), exactly one copy of each product comes out."""
    from tests.integration.winnowkit import publish as wpublish
    env = wenv
    env.config(f"node_shares {SHARES}\nprefetch 10")
    env.cmd("setup", env.name)
    home2 = _second_host(env, tmp_path)
    procs = [env.start(1)]
    log2 = tmp_path / "winnow-b.log"
    with open(log2, "wb") as fh:
        procs.append(subprocess.Popen(
            command_argv("sr_winnow") + ["--no", "1", "foreground", env.name],
            stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, env=command_env({"HOME": str(home2)}),
            cwd=str(home2), start_new_session=True))
    env.procs.append(procs[1])
    rnd = random.Random(5)
    ch = env.ch

    def product(i, tag):
        return f"/{tag}/{i % 40:02d}/p{i:05d}.grib", "d,%032x" % rnd.getrandbits(128)

    # warm-up: single copies until both nodes hold shards
    warm = 0
    deadline = time.monotonic() + 60
    log_b = lambda: log2.read_text(errors="replace")            # noqa: E731
    while "handed to the next consumer" not in env.log(1) + log_b():
        assert time.monotonic() < deadline, env.log(1)[-2000:]
        for _ in range(20):
            rel, s = product(warm, "warm")
            wpublish(ch, env.xa, rel, s)
            warm += 1
        time.sleep(0.05)
    got = env.tap.get(warm, timeout=30)
    env.tap.get(10 * warm, timeout=1.0)
    products = _files()
    firsts = {}
    for i in range(products):
        rel, s = product(i, "obs")
        a, b = (env.xa, env.xb) if rnd.random() < 0.5 else (env.xb, env.xa)
        wpublish(ch, a, rel, s, baseurl="http://first.example/")
        wpublish(ch, b, rel, s, baseurl="http://second.example/")
        firsts[rel] = s
    got = env.tap.get(products, timeout=60)
    time.sleep(1.5)
    got += env.tap.get(products, timeout=0.5)
    rels = collections.Counter(body.split()[2] for _, body, _ in got)
    dups = sorted(r for r, n in rels.items() if n > 1)
    print(f"two-node winnow: {products} products, {len(set(firsts) - set(rels))} lost, "
          f"{len(dups)} duplicated")
    assert set(rels) == set(firsts) and dups == [], dups
    # both nodes passed products
    assert "handed to the next consumer" in env.log(1) + log_b()
    for p in procs:
        assert p.poll() is None
