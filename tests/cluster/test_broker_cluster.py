"""Issue 24 items 1 and 3 (broker side): a subscriber on a three-node RabbitMQ cluster with a
quorum queue loses nothing when the broker node it is connected to is killed (kill -9)
mid-flow: it fails over to another node named in its broker URL, the unacked messages are
redelivered there and handled as already done (a file already there is not written or
announced again). And when the publisher's node is killed with messages unconfirmed, the
publisher reconnects to another node and publishes them again: nothing lost either.

Real parts: the cluster (tests/support/rmqcluster.py), an HTTP server on loopback, the
sr_subscribe command as a subprocess; the publisher is sarra's Broker with confirms.
"""

import hashlib
import os
import random
import re
import subprocess
import time

from sarra import message
from sarra.broker.client import Broker
from tests.conftest import command_argv, command_env
from tests.integration import servers
from tests.integration.subkit import PLUGIN_ON_FILE, md5

FILES = 240


def _connections_to(cluster, index, via):
    """Client connections the cluster's node *index* serves, as rabbitmqctl on node *via*
    lists them ('127.0.0.1:<client port> -> 127.0.0.1:<node port>')."""
    r = cluster.ctl(via, 'list_connections', 'name', '-q', '--no-table-headers', check=False)
    port = cluster.nodes[index].port
    return [line for line in r.stdout.splitlines()
            if line.strip().endswith(':%d' % port)]


def _queue_info(cluster, via, name):
    r = cluster.ctl(via, 'list_queues', 'name', 'type', 'consumers', 'messages', '-q',
                    '--no-table-headers', check=False)
    for line in r.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            return fields
    return None


def _wait(predicate, timeout, step=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


class Flow:
    """FILES files served over HTTP, one publisher (sarra's Broker, confirms) whose URL
    names node 2 first, one sr_subscribe with a quorum queue whose URL names node 1 first
    (node indexes 1 and 0), counting on_file calls."""

    def __init__(self, cluster, home, uid, tmp_path):
        self.cluster, self.tmp = cluster, tmp_path
        self.src, self.dst = tmp_path / 'src', tmp_path / 'dst'
        self.src.mkdir()
        self.dst.mkdir()
        rng = random.Random(24)
        self.expected = {}
        for i in range(FILES):
            rel = 'd%d/f%04d.bin' % (i % 6, i)
            data = rng.randbytes(rng.randint(512, 4096))
            (self.src / rel).parent.mkdir(exist_ok=True)
            (self.src / rel).write_bytes(data)
            self.expected[rel] = hashlib.md5(data).hexdigest()
        self.http = servers.start_http(self.src, tmp_path)
        base_url = 'http://%s:%d/' % (self.http.host, self.http.port)
        self.msgs = []
        for rel, digest in self.expected.items():
            size = (self.src / rel).stat().st_size
            h = {'sum': 'd,' + digest, 'parts': '1,%d,1,0,0' % size,
                 'mtime': '20240315123456.5', 'mode': '644'}
            self.msgs.append(message.make_post(message.now(), base_url, rel, h))
        rng.shuffle(self.msgs)
        ports = [n.port for n in cluster.nodes]
        pub_url = 'amqp://guest:guest@' + ','.join(
            '127.0.0.1:%d' % p for p in ports[1:] + ports[:1]) + '/'
        self.exchange = 'xs_guest_cl%s' % uid
        self.home, self.name = home, 'c%s' % uid
        cfgdir = home / '.config' / 'sarra' / 'subscribe'
        plugdir = home / '.config' / 'sarra' / 'plugins'
        cfgdir.mkdir(parents=True)
        plugdir.mkdir(parents=True)
        (plugdir / 'count_file.py').write_text(PLUGIN_ON_FILE)
        self.on_file_log = tmp_path / 'on_file.log'
        (cfgdir / ('%s.conf' % self.name)).write_text('\n'.join([
            'broker %s' % cluster.url, 'exchange %s' % self.exchange, 'queue_type quorum',
            'expire 5m', 'heartbeat 2', 'prefetch 20', 'report_back off',
            'suppress_duplicates on', 'directory %s' % self.dst, 'mirror on',
            'on_file count_file', 'count_file_log %s' % self.on_file_log,
            'count_file_sleep 0.02', 'accept .*']) + '\n')
        self.pub = Broker(pub_url, backoff_initial=0.2, backoff_max=1.0)
        self.log = open(tmp_path / 'sub.log', 'ab')
        self.sub = None

    def start(self):
        self.pub.connect()
        self.pub.declare_exchange(self.exchange)
        self.sub = subprocess.Popen(
            command_argv('sr_subscribe') + ['foreground', self.name],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=command_env(),
            cwd=str(self.home), start_new_session=True)
        state = self.home / '.cache' / 'sarra' / 'subscribe' / self.name

        def consuming():
            qfiles = list(state.glob('*.qname')) if state.exists() else []
            if not qfiles:
                return None
            info = _queue_info(self.cluster, 1, qfiles[0].read_text().strip())
            return info if info and info[2] == '1' else None
        info = _wait(consuming, 60)
        assert info, 'subscriber never consumed: %s' % self.sublog()[-2000:]
        assert info[1] == 'quorum', info
        assert _connections_to(self.cluster, 0, via=1), 'the subscriber is not on node 1'
        assert _connections_to(self.cluster, 1, via=1), 'the publisher is not on node 2'

    def publish(self, batch, confirm=True):
        for m in batch:
            topic, body, headers = m.encode(allow_long_headers=True)
            self.pub.publish(self.exchange, topic, body, headers)
        if confirm:
            self.pub.wait_confirms(60)      # raises unless every message is confirmed

    def on_file_count(self):
        try:
            return len(self.on_file_log.read_text().splitlines())
        except FileNotFoundError:
            return 0

    def sublog(self):
        return (self.tmp / 'sub.log').read_text(errors='replace')

    def check(self, what, t_kill):
        """Wait for every file; print and return the loss/duplicate counts."""
        missing = {}

        def all_there():
            missing.clear()
            for rel, digest in self.expected.items():
                p = self.dst / rel
                if not (p.is_file() and md5(p) == digest):
                    missing[rel] = digest
            return not missing
        _wait(all_there, 90, step=0.5)
        recovered_s = time.monotonic() - t_kill
        lines = self.on_file_log.read_text().splitlines()
        paths = [ln.split(' ', 2)[2] for ln in lines if ' on_file ' in ln]
        corrupt = [r for r in missing if (self.dst / r).is_file()]
        duplicates = len(paths) - len(set(paths))

        def received():     # the subscriber's running count, logged every heartbeat (2 s)
            return max(map(int, re.findall(r' received=(\d+)', self.sublog())), default=0)
        _wait(lambda: received() >= FILES, 6)
        sublog = self.sublog()
        redelivered = received() - FILES
        print('\n%s: %d files, lost %d, corrupt %d, duplicate on_file %d, received twice %d '
              '(handled as already there), all in %.1f s after the kill' % (
                  what, FILES, len(missing) - len(corrupt), len(corrupt), duplicates,
                  redelivered, recovered_s))
        assert not missing, 'lost or corrupt: %s\n%s' % (sorted(missing)[:10], sublog[-3000:])
        assert duplicates == 0, sublog[-3000:]
        return sublog

    def close(self):
        if self.sub is not None:
            os.killpg(self.sub.pid, 15)
            try:
                self.sub.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.sub.pid, 9)
                self.sub.wait(10)
        self.log.close()
        self.pub.close()
        self.http.stop()


def test_quorum_queue_survives_the_subscribers_broker_node(rabbit_cluster, home, uid,
                                                          tmp_path):
    flow = Flow(rabbit_cluster, home, uid, tmp_path)
    killed = None
    try:
        flow.start()
        flow.publish(flow.msgs[:FILES // 2])
        # mid-flow: some files written, many messages still queued or unacked
        assert _wait(lambda: flow.on_file_count() >= 20, 60), flow.sublog()[-2000:]
        t_kill = time.monotonic()
        rabbit_cluster.kill(0)
        killed = 0
        flow.publish(flow.msgs[FILES // 2:])  # the publisher's node lives: confirms hold
        sublog = flow.check("the subscriber's broker node killed (kill -9) mid-flow", t_kill)
        assert 'connection lost' in sublog, sublog[-3000:]      # it really failed over
    finally:
        flow.close()
        if killed is not None:
            rabbit_cluster.restart(killed)       # the next test gets three nodes again


def test_publisher_fails_over_and_republishes_the_unconfirmed(rabbit_cluster, home, uid,
                                                              tmp_path, caplog):
    flow = Flow(rabbit_cluster, home, uid, tmp_path)
    killed = None
    try:
        flow.start()
        flow.publish(flow.msgs[:FILES // 3])
        flow.publish(flow.msgs[FILES // 3:FILES // 2], confirm=False)   # in flight
        unconfirmed = flow.pub.unconfirmed
        t_kill = time.monotonic()
        rabbit_cluster.kill(1)                  # the publisher's node
        killed = 1
        flow.publish(flow.msgs[FILES // 2:])    # reconnects to node 3, re-publishes
        print('\npublisher node killed with %d of %d messages unconfirmed' % (
            unconfirmed, FILES // 2 - FILES // 3))
        flow.check("the publisher's broker node killed (kill -9) mid-flow", t_kill)
        assert flow.pub.unconfirmed == 0
        assert any('connection lost' in r.getMessage() for r in caplog.records)
    finally:
        flow.close()
        if killed is not None:
            rabbit_cluster.restart(killed)
