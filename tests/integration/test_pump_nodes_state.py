"""Pump nodes (issue 24): the state that must follow a shard follows it. sr_sarra itself on
two "hosts" (their own HOME and state directory, one shared data tree) with node_shares:
a node killed with kill -9 in the middle of files in parts, the other finishes them from
the manifests kept on the tree (sarra/flow/nodeparts.py). sr_winnow on two hosts with
nodes_state_dir: a shard moved mid-flow (its node killed), the next node still knows the
products passed (sarra/flow/nodeclaims.py): one copy of each out."""

import collections
import os
import random
import re
import shutil
import signal
import time

import pytest

from sarra.flow import nodeparts
from tests.integration.nodekit import (
    SHARES, _component_cmd, _on_file_counts, _parted_posts, _posts, _run_node, _sarra_config,
    _second_host)
from tests.integration.subkit import sub_env, wait_for  # noqa: F401  (fixture)
from tests.integration.winnowkit import publish as wpublish, wenv  # noqa: F401  (fixture)

pytestmark = pytest.mark.broker


def _publish(env, msgs, waves=2, pause=0.3):
    """The posts in a few waves, a pause between them (parts spread over time)."""
    step = -(-len(msgs) // waves)
    for i in range(0, len(msgs), step):
        for m in msgs[i:i + step]:
            env.publish_msg(m)
        time.sleep(pause)


def test_sarra_nodes_finish_files_in_parts_after_a_node_is_killed(
        sub_env, http_server, tmp_path, amqp_exchange, amqp_tap):
    env = sub_env
    out = amqp_exchange(f"xs_guest_out{env.uid}")
    tap = amqp_tap(out)
    _sarra_config(env, f"node_shares {SHARES}\nprefetch 5\ninplace on\nmirror on\n"
                       f"post_broker {env.broker}\npost_exchange {out}\n"
                       f"post_base_url file:{env.dst}/\npost_base_dir {env.dst}")
    home2 = _second_host(env, tmp_path)
    _component_cmd(env, "sarra", "setup")
    try:
        a = _run_node(env, env.home, "a", "sarra")
        b = _run_node(env, home2, "b", "sarra")
        assert wait_for(lambda: env.log_text().count("started") >= 2, 30), env.log_text()
        expected, posts = _parted_posts(env, http_server, 4, size=200_000, bsz=16 << 10)
        rnd = random.Random(7)
        first, rest = [], []
        for rel, msgs in posts.items():
            msgs = list(msgs)
            rnd.shuffle(msgs)
            first += msgs[:len(msgs) // 2]
            rest += msgs[len(msgs) // 2:]
        rnd.shuffle(first)
        rnd.shuffle(rest)
        _publish(env, first)
        assert wait_for(lambda: len(env.hook_lines("on_part")) >= len(first), 60), \
            env.log_text()
        time.sleep(0.5)                           # their batches acked
        writers = collections.Counter(pid for pid, _ in env.hook_lines("on_part"))
        victim, survivor = (a, b) if writers[a.pid] >= writers[b.pid] else (b, a)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        # the manifests are on the tree, hidden, beside the temporary files
        manifests = [p.name for p in env.dst.rglob(".sarra-parts-*")]
        _publish(env, rest)
        pending = env.wait_files(expected, timeout=60)
        assert not pending, (sorted(pending), env.log_text()[-4000:])       # every file whole
        time.sleep(0.5)
        counts = _on_file_counts(env)
        assert {r: counts.get(r) for r in expected} == {r: 1 for r in expected}, counts
        assert survivor.poll() is None
        assert manifests and all(nodeparts.is_manifest_name(n) for n in manifests)
        # what a subscriber sees: the files, never a manifest or a temporary file
        posted = _posts(tap)
        assert set(expected) <= set(posted)
        assert not [r for r in posted if os.path.basename(r).startswith(".")], posted
        visible = {str(p.relative_to(env.dst)) for p in env.dst.rglob("*")
                   if p.is_file() and not p.name.startswith(".")}
        assert visible == set(expected), visible
    finally:
        _component_cmd(env, "sarra", "cleanup", check=False)


def _winnow_on_two_hosts(env, tmp_path):
    """The winnow configuration with node_shares and a shared nodes_state_dir, set up,
    and a second host's HOME with the same configuration; returns (that HOME, the shared
    state directory)."""
    shared = tmp_path / "shared-state"
    env.config(f"node_shares {SHARES}\nprefetch 10\nnodes_state_dir {shared}")
    env.cmd("setup", env.name)
    home2 = tmp_path / "host2"
    shutil.copytree(env.home / ".config", home2 / ".config")
    return home2, shared


def test_two_winnow_nodes_with_nodes_state_dir_let_one_copy_out_across_a_kill(wenv, tmp_path):
    """Node a alone holds every shard and passes the first copy of each product; it is
    killed; node b (its own claim store) takes the shards over and must drop every second
    copy, and pass once the products new to both."""
    env = wenv
    home2, shared = _winnow_on_two_hosts(env, tmp_path)
    a = env.start(1)
    rnd = random.Random(11)
    products = [(f"/obs/{i % 40:02d}/p{i:05d}.grib", "d,%032x" % rnd.getrandbits(128))
                for i in range(300)]
    for rel, s in products:
        wpublish(env.ch, env.xa, rel, s, baseurl="http://first.example/")
    got = env.tap.get(len(products), timeout=60)
    assert len(got) == len(products), env.log(1)[-3000:]
    journals = shared / "winnow" / env.name
    journaled = wait_for(lambda: sum(p.read_bytes().count(b"\n")
                                     for p in journals.glob("*.claims")) >= len(products), 10)
    b = env.start(1, home=home2)                # waits in line on every shard
    env.kill(a)                                 # kill -9: b becomes the active consumer
    later = [(f"/obs/{i % 40:02d}/q{i:05d}.grib", "d,%032x" % rnd.getrandbits(128))
             for i in range(100)]
    for rel, s in products + later:
        wpublish(env.ch, env.xb, rel, s, baseurl="http://second.example/")
    for rel, s in later:
        wpublish(env.ch, env.xa, rel, s, baseurl="http://first.example/")
    got = env.tap.get(len(later), timeout=60)
    got += env.tap.get(len(products), timeout=2.0)
    rels = collections.Counter(body.split()[2] for _, body, _ in got)
    again = sorted(r for r, _ in products if r in rels)
    dups = sorted(r for r, n in rels.items() if n > 1)
    print(f"winnow shard moved by a kill: {len(products)} products passed before, "
          f"{len(again)} passed again; {len(later)} new, "
          f"{len(set(r for r, _ in later) - set(rels))} lost, {len(dups)} duplicated")
    assert again == [] and dups == [], (again[:5], dups[:5], env.log(1, home=home2)[-3000:])
    assert set(rels) == {r for r, _ in later}
    assert journaled                # written after each commit, before the kill
    assert "claims of each shard also in" in env.log(1, home=home2)
    assert b.poll() is None


def test_winnow_shards_handed_to_a_joining_node_keep_their_claims(wenv, tmp_path):
    """Node a passes the first copy of each product; node b joins and the Balancer hands
    it half the shards (under load); the second copies then reach b for those shards:
    with nodes_state_dir b drops them all."""
    env = wenv
    home2, shared = _winnow_on_two_hosts(env, tmp_path)
    env.start(1)
    rnd = random.Random(13)
    products = [(f"/obs/{i % 40:02d}/p{i:05d}.grib", "d,%032x" % rnd.getrandbits(128))
                for i in range(200)]
    for rel, s in products:
        wpublish(env.ch, env.xa, rel, s, baseurl="http://first.example/")
    assert len(env.tap.get(len(products), timeout=60)) == len(products)
    b = env.start(1, home=home2)
    warm, deadline = 0, time.monotonic() + 60
    while "handed to the next consumer" not in env.log(1):     # load until a hands over
        assert time.monotonic() < deadline, env.log(1)[-2000:]
        for _ in range(20):
            wpublish(env.ch, env.xa, f"/warm/{warm % 40:02d}/w{warm:05d}", "d,%032x" % warm)
            warm += 1
        time.sleep(0.05)
    env.tap.get(warm, timeout=30)
    env.tap.get(10 * warm, timeout=1.0)
    for rel, s in products:
        wpublish(env.ch, env.xb, rel, s, baseurl="http://second.example/")
    got = env.tap.get(len(products), timeout=3.0)
    again = sorted(body.split()[2] for _, body, _ in got)
    assert b.poll() is None
    env.stop(b)
    m = re.search(r"stopped: .*duplicates=(\d+)", env.log(1, home=home2))
    dropped = int(m.group(1)) if m else 0
    print(f"winnow shards handed to a joining node: {len(products)} products, "
          f"{len(again)} passed again; {dropped} second copies dropped by the joining node")
    assert again == [], again[:5]
    assert dropped > 0, env.log(1, home=home2)[-2000:]     # b judged second copies
