"""A real three-node RabbitMQ cluster on loopback, for the broker-cluster tests (issue 24).

Each node is its own ``rabbitmq-server`` (Erlang VM) with its own node name
(``sarraN_<tag>@localhost``), AMQP port, distribution port and data/log directories under
one work directory; they share one Erlang cookie (a private HOME holding .erlang.cookie) and
the only plugin is rabbitmq_consistent_hash_exchange (no management: no port clash with the
main broker). Nodes 2 and 3 join node 1 with ``rabbitmqctl join_cluster``.

    cluster = RabbitCluster(workdir).start()   # Missing when it cannot start here
    cluster.urls          # ['amqp://guest:guest@127.0.0.1:<port>/', ...] one per node
    cluster.url           # all nodes in one URL: 'amqp://guest:guest@127.0.0.1:p1,127.0.0.1:p2,...'
    cluster.kill(i)       # kill -9 node i's VM (0-based); cluster.restart(i) brings it back
    cluster.node_of(port) # which node index listens on that AMQP port
    cluster.stop()

Guest may log in from loopback (RabbitMQ's default), so the URLs use guest/guest.

Standalone brokers (issue 21: pumps on brokers of their own) are the same nodes, not joined,
each with the management plugin on a port of its own (guest is an administrator)::

    brokers = RabbitCluster(workdir, clustered=False, management=True).start()
    brokers.urls          # one independent broker per URL
    brokers.nodes[i].mgmt_url   # 'http://127.0.0.1:<port>/' its management API
"""

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support.prereq import Missing, need_tool

HOST = '127.0.0.1'
SBIN = '/usr/lib/rabbitmq/bin'


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_open(port, timeout=0.2):
    import socket
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tool(name):
    path = os.path.join(SBIN, name)
    return path if os.access(path, os.X_OK) else need_tool(name, 'rabbitmq-server')


class Node:
    def __init__(self, index, name, port, dist_port, base, mgmt_port=None):
        self.index, self.name, self.port, self.dist_port = index, name, port, dist_port
        self.base = base
        self.mgmt_port = mgmt_port      # the management API's port, when it has one
        self.proc = None

    @property
    def mgmt_url(self):
        return 'http://%s:%d/' % (HOST, self.mgmt_port) if self.mgmt_port else None

    @property
    def url(self):
        return 'amqp://guest:guest@%s:%d/' % (HOST, self.port)

    @property
    def log(self):
        return self.base / 'stdout.log'


class RabbitCluster:
    """Three RabbitMQ nodes clustered on loopback (or standalone: ``clustered=False``);
    see the module docstring."""

    def __init__(self, workdir, size=3, start_timeout=90, clustered=True, management=False):
        self.work = Path(workdir)
        self.size = size
        self.start_timeout = start_timeout
        self.clustered, self.management = clustered, management
        tag = secrets.token_hex(3)
        self.home = self.work / 'home'
        self.nodes = [Node(i, 'sarra%d_%s@localhost' % (i + 1, tag), _free_port(),
                           _free_port(), self.work / ('node%d' % (i + 1)),
                           _free_port() if management else None)
                      for i in range(size)]

    # ------------------------------------------------------------------ urls

    @property
    def urls(self):
        return [n.url for n in self.nodes]

    @property
    def url(self):
        """One URL naming every node (sarra's broker failover form)."""
        return 'amqp://guest:guest@' + ','.join('%s:%d' % (HOST, n.port)
                                                 for n in self.nodes) + '/'

    def node_of(self, port):
        for n in self.nodes:
            if n.port == port:
                return n.index
        return None

    # ------------------------------------------------------------------ processes

    def _env(self, node):
        env = dict(os.environ)
        for k in [k for k in env if k.startswith('RABBITMQ_')]:
            del env[k]
        env.update(
            HOME=str(self.home),
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(node.port),
            RABBITMQ_DIST_PORT=str(node.dist_port),
            RABBITMQ_MNESIA_BASE=str(node.base / 'mnesia'),
            RABBITMQ_LOG_BASE=str(node.base / 'log'),
            RABBITMQ_PID_FILE=str(node.base / 'pid'),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.work / 'enabled_plugins'),
            # .conf added by rabbitmq; a node with a management port has its own
            RABBITMQ_CONFIG_FILE=str((node.base if node.mgmt_port else self.work) / 'rabbitmq'),
            RABBITMQ_CONF_ENV_FILE=str(self.work / 'rabbitmq-env.conf'),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.work / 'advanced.config'),
        )
        return env

    def ctl(self, node, *args, timeout=60, check=True):
        """Run rabbitmqctl against *node* (a Node or an index)."""
        if isinstance(node, int):
            node = self.nodes[node]
        r = subprocess.run([_tool('rabbitmqctl'), '-n', node.name, *args],
                           env=self._env(node), capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError('rabbitmqctl -n %s %s failed: %s' % (
                node.name, ' '.join(args), (r.stderr or r.stdout).strip()[-400:]))
        return r

    def _spawn(self, node):
        node.base.mkdir(parents=True, exist_ok=True)
        out = open(node.log, 'ab')
        node.proc = subprocess.Popen([_tool('rabbitmq-server')], env=self._env(node),
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=str(node.base))    # its crash dumps stay there
        out.close()

    def _wait_ready(self, node):
        end = time.monotonic() + self.start_timeout
        while time.monotonic() < end:
            if node.proc.poll() is not None:
                raise Missing('RabbitMQ node %s exited (%s) at start: %s' % (
                    node.name, node.proc.returncode, self._tail(node)))
            if _port_open(node.port):
                r = self.ctl(node, 'await_startup', '--timeout', '30', check=False)
                if r.returncode == 0 and (not node.mgmt_port or _port_open(node.mgmt_port)):
                    return
            time.sleep(0.5)
        raise Missing('RabbitMQ node %s did not start within %d s: %s' % (
            node.name, self.start_timeout, self._tail(node)))

    @staticmethod
    def _tail(node, lines=5):
        try:
            text = node.log.read_text(errors='replace').strip().splitlines()
        except OSError:
            return '(no log)'
        return ' | '.join(text[-lines:])

    def start(self):
        """Start the nodes and cluster them (unless standalone); Missing (a skip) when
        impossible."""
        _tool('rabbitmq-server')
        _tool('rabbitmqctl')
        if shutil.which('epmd') is None and not os.path.exists('/usr/lib/erlang'):
            raise Missing('Erlang (epmd) not found: install rabbitmq-server')
        self.work.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        cookie = self.home / '.erlang.cookie'
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        # consistent-hash exchange for the pump-node routing (no port of its own); the
        # management API (sr_police's) only when asked: each node then has its own port
        (self.work / 'enabled_plugins').write_text('[rabbitmq_consistent_hash_exchange%s].\n'
                                                   % (',rabbitmq_management'
                                                      if self.management else ''))
        conf = ('loopback_users.guest = true\n'
                'log.console = false\n'
                'log.file.level = warning\n'
                # the test machine's disk may be nearly full: do not block publishers
                'disk_free_limit.absolute = 1\n'
                'vm_memory_high_watermark.relative = 0.9\n')
        (self.work / 'rabbitmq.conf').write_text(conf)
        for n in self.nodes:
            if n.mgmt_port:
                n.base.mkdir(parents=True, exist_ok=True)
                (n.base / 'rabbitmq.conf').write_text(conf + 'management.tcp.ip = %s\n'
                                                      'management.tcp.port = %d\n'
                                                      % (HOST, n.mgmt_port))
        (self.work / 'rabbitmq-env.conf').write_text('')
        (self.work / 'advanced.config').write_text('[].\n')
        try:
            for n in self.nodes:        # boot in parallel: each VM takes seconds
                self._spawn(n)
            for n in self.nodes:
                self._wait_ready(n)
            if not self.clustered:
                return self
            first = self.nodes[0]
            for n in self.nodes[1:]:
                self.ctl(n, 'stop_app')
                self.ctl(n, 'join_cluster', first.name)
                self.ctl(n, 'start_app')
            self.ctl(first, 'await_online_nodes', str(self.size), '--timeout', '60')
        except Exception:
            self.stop()
            raise
        return self

    def running(self, index):
        p = self.nodes[index].proc
        return p is not None and p.poll() is None

    def kill(self, index):
        """kill -9 the whole process group of node *index* (its Erlang VM)."""
        node = self.nodes[index]
        if node.proc is None:
            return
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(timeout=10)
        # the VM's children (erl_child_setup, inet_gethost) are in the same group

    def restart(self, index):
        """Start node *index* again (it rejoins the cluster from its own data dir)."""
        node = self.nodes[index]
        self._spawn(node)
        self._wait_ready(node)

    def stop(self):
        for n in self.nodes:
            if n.proc is None or n.proc.poll() is not None:
                continue
            try:
                os.killpg(n.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                n.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(n.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                n.proc.wait(timeout=10)


if __name__ == '__main__':          # manual check: start, print the URLs, stop
    import sys
    import tempfile
    d = tempfile.mkdtemp(prefix='rmqcluster-')
    t0 = time.monotonic()
    c = RabbitCluster(d).start()
    print('started in %.1f s:' % (time.monotonic() - t0), c.url)
    print(c.ctl(0, 'cluster_status').stdout[:600])
    if len(sys.argv) > 1:
        time.sleep(float(sys.argv[1]))
    c.stop()
    print('stopped; work dir', d)
