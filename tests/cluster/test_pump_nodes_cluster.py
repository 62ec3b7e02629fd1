"""Pump nodes over the three-node RabbitMQ cluster (issue 24 items 2 and 3): the issue's
5,000 files (some in parts, shuffled) through two pump nodes sharing the work with
node_shares and quorum shard queues; a broker node killed (kill -9) mid-flow, then a pump
node killed mid-flow: nothing lost, nothing announced twice, nothing corrupt.
The same test module as tests/integration/test_pump_nodes.py on one broker, at scale."""

import os
import signal

import pytest

from tests.integration.conftest import http_server  # noqa: F401  (fixture)
from tests.integration.subkit import md5, sub_env, wait_for  # noqa: F401  (fixtures)
from tests.integration.nodekit import (SHARES, _on_file_counts, _posts,
                                       _publish_parted, _publish_tree, _run_node,
                                       _second_host)

FILES = int(os.environ.get("SARRA_NODES_FILES", 5000))


@pytest.fixture(scope="module")
def broker_url(rabbit_cluster):
    """The test's own connections (publishing, taps) go to node 0, never killed here."""
    return rabbit_cluster.urls[0]


def test_5000_files_two_pump_nodes_broker_and_pump_node_killed(
        rabbit_cluster, sub_env, http_server, tmp_path, amqp_exchange, amqp_tap):  # noqa: F811
    env = sub_env
    out = amqp_exchange(f"xs_guest_out{env.uid}")
    tap = amqp_tap(out)
    # the pump nodes connect to node 1 first: it is the broker node killed
    u = rabbit_cluster.urls
    hosts = [x.split("@", 1)[1].rstrip("/") for x in (u[1], u[2], u[0])]
    failover = "amqp://guest:guest@" + ",".join(hosts) + "/"
    env.config(extra=f"node_shares {SHARES}\nqueue_type quorum\nprefetch 10\nmirror on\n"
               f"post_broker {failover}\npost_exchange {out}\n"
               f"post_base_url file:{env.dst}/\npost_base_dir {env.dst}", report=False)
    text = env.config_path.read_text().replace(f"broker {env.broker}\n",
                                               f"broker {failover}\n", 1)
    env.config_path.write_text(text)
    home2 = _second_host(env, tmp_path)
    env.setup()
    a = _run_node(env, env.home, "a")
    b = _run_node(env, home2, "b")
    expected = _publish_tree(env, http_server, FILES, subdirs=100, seed=7)
    expected.update(_publish_parted(env, http_server, 10))
    try:
        assert wait_for(lambda: len(env.hook_lines("on_file")) >= len(expected) // 4,
                        timeout=120), env.log_text()[-3000:]
        rabbit_cluster.kill(1)                                  # a broker node
        done_at_kill = len(env.hook_lines("on_file"))
        assert wait_for(lambda: len(env.hook_lines("on_file")) >= done_at_kill + FILES // 4,
                        timeout=120), env.log_text()[-3000:]
        os.killpg(a.pid, signal.SIGKILL)                        # a pump node
        a.wait(10)
        pending = env.wait_files(expected, timeout=300)
        assert not pending, (len(pending), env.log_text()[-3000:])
        posts = _posts(tap, quiet=3.0, by_part=True)       # a file in parts: a post a part
    finally:
        rabbit_cluster.restart(1)
    lost = sorted(set(expected) - {r for r, _ in posts})
    dups = sorted(r for r, n in posts.items() if n > 1)
    print(f"cluster: {len(expected)} files, broker node and pump node killed: "
          f"{len(lost)} lost, {len(dups)} announced twice")
    assert lost == [], lost[:20]
    # the broker node's loss requeues what both processes had in hand, the pump node's
    # what it had: done again, but announced once, their posts never committed with their
    # acks (batchtx.py; a commit whose reply the lost node took along is the one window)
    assert dups == [], dups
    assert all(md5(env.dst / r) == d for r, d in expected.items())
    assert max(_on_file_counts(env).values()) == 1
    assert b.poll() is None
