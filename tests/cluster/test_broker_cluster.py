"""Issue 24 items 1 and 3 (broker side): a subscriber on a three-node RabbitMQ cluster with a
quorum queue loses nothing when the broker node it is connected to is killed (kill -9)
mid-flow: it fails over to another node named in its broker URL, the unacked messages are
redelivered there, and the duplicate cache keeps them from being written twice.

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


def test_quorum_queue_survives_the_subscribers_broker_node(rabbit_cluster, home, uid,
                                                          tmp_path):
    cluster = rabbit_cluster
    src, dst = tmp_path / 'src', tmp_path / 'dst'
    src.mkdir()
    dst.mkdir()
    rng = random.Random(24)
    expected = {}
    for i in range(FILES):
        rel = 'd%d/f%04d.bin' % (i % 6, i)
        data = rng.randbytes(rng.randint(512, 4096))
        (src / rel).parent.mkdir(exist_ok=True)
        (src / rel).write_bytes(data)
        expected[rel] = hashlib.md5(data).hexdigest()
    http = servers.start_http(src, tmp_path)
    base_url = 'http://%s:%d/' % (http.host, http.port)

    # the subscriber names node 1 first (it connects there), the publisher node 2 first
    ports = [n.port for n in cluster.nodes]
    sub_url = cluster.url
    pub_url = 'amqp://guest:guest@' + ','.join(
        '127.0.0.1:%d' % p for p in ports[1:] + ports[:1]) + '/'
    exchange = 'xs_guest_cl%s' % uid
    name = 'c%s' % uid
    cfgdir = home / '.config' / 'sarra' / 'subscribe'
    plugdir = home / '.config' / 'sarra' / 'plugins'
    cfgdir.mkdir(parents=True)
    plugdir.mkdir(parents=True)
    (plugdir / 'count_file.py').write_text(PLUGIN_ON_FILE)
    on_file_log = tmp_path / 'on_file.log'
    (cfgdir / ('%s.conf' % name)).write_text('\n'.join([
        'broker %s' % sub_url, 'exchange %s' % exchange, 'queue_type quorum',
        'expire 5m', 'heartbeat 2', 'prefetch 20', 'report_back off',
        'suppress_duplicates on', 'directory %s' % dst, 'mirror on',
        'on_file count_file', 'count_file_log %s' % on_file_log,
        'count_file_sleep 0.02', 'accept .*']) + '\n')

    pub = Broker(pub_url, heartbeat=2, backoff_initial=0.2, backoff_max=1.0)
    log = open(tmp_path / 'sub.log', 'ab')
    sub = None
    killed = None
    try:
        pub.connect()
        pub.declare_exchange(exchange)
        sub = subprocess.Popen(command_argv('sr_subscribe') + ['foreground', name],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               env=command_env(), cwd=str(home), start_new_session=True)
        qname_file = home / '.cache' / 'sarra' / 'subscribe' / name

        def consuming():
            qfiles = list(qname_file.glob('*.qname')) if qname_file.exists() else []
            if not qfiles:
                return None
            info = _queue_info(cluster, 1, qfiles[0].read_text().strip())
            return info if info and info[2] == '1' else None
        info = _wait(consuming, 60)
        assert info, 'subscriber never consumed: %s' % (tmp_path / 'sub.log').read_text()[-2000:]
        assert info[1] == 'quorum', info
        assert _connections_to(cluster, 0, via=1), 'the subscriber is not on node 1'

        msgs = []
        for rel in expected:
            data = (src / rel).read_bytes()
            h = {'sum': 'd,' + expected[rel], 'parts': '1,%d,1,0,0' % len(data),
                 'mtime': '20240315123456.5', 'mode': '644'}
            msgs.append(message.make_post(message.now(), base_url, rel, h))
        rng.shuffle(msgs)

        def publish(batch):
            for m in batch:
                topic, body, headers = m.encode(allow_long_headers=True)
                pub.publish(exchange, topic, body, headers)
            assert pub.wait_confirms(60) is not False

        publish(msgs[:FILES // 2])
        # mid-flow: some files written, many messages still queued or unacked
        assert _wait(lambda: on_file_log.exists()
                     and len(on_file_log.read_text().splitlines()) >= 20, 60)
        t_kill = time.monotonic()
        cluster.kill(0)
        killed = 0
        publish(msgs[FILES // 2:])        # the publisher's node lives: confirms still mean it

        missing = {}

        def all_there():
            missing.clear()
            for rel, digest in expected.items():
                p = dst / rel
                if not (p.is_file() and md5(p) == digest):
                    missing[rel] = digest
            return not missing
        _wait(all_there, 90, step=0.5)
        recovered_s = time.monotonic() - t_kill
        lines = on_file_log.read_text().splitlines()
        paths = [ln.split(' ', 2)[2] for ln in lines if ' on_file ' in ln]
        corrupt = [r for r in missing if (dst / r).is_file()]
        duplicates = len(paths) - len(set(paths))
        sublog = (tmp_path / 'sub.log').read_text(errors='replace')
        received = [int(x) for x in re.findall(r' received=(\d+)', sublog)]
        redelivered = max(received, default=FILES) - FILES
        print('\nbroker node kill -9 mid-flow: %d files, lost %d, corrupt %d, duplicate '
              'on_file %d, redelivered %d (handled as already there), all in %.1f s after '
              'the kill' % (FILES, len(missing) - len(corrupt), len(corrupt), duplicates,
                            redelivered, recovered_s))
        assert not missing, 'lost or corrupt: %s\n%s' % (sorted(missing)[:10], sublog[-3000:])
        assert 'connection lost' in sublog, sublog[-3000:]      # it really failed over
        assert duplicates == 0, sublog[-3000:]
    finally:
        if sub is not None:
            os.killpg(sub.pid, 15)
            try:
                sub.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(sub.pid, 9)
                sub.wait(10)
        log.close()
        pub.close()
        http.stop()
        if killed is not None:
            cluster.restart(killed)       # the next test gets three nodes again
