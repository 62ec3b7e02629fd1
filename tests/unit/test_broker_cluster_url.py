"""Issue 24 item 1: a broker URL naming several nodes of a cluster (failover), and quorum
queues (queue_type). The real cluster test is tests/cluster/test_broker_cluster.py."""

import logging

import pytest

from sarra.broker import connection
from sarra.broker.client import Broker
from sarra.config.brokerurl import parse_url


def test_several_nodes_in_one_url():
    u = parse_url('amqp://u:secret@h1,h2:5673,[::1]:9/vh')
    assert (u.host, u.port, u.user, u.password, u.vhost) == ('h1', 5672, 'u', 'secret', 'vh')
    assert u.nodes == (('h1', 5672), ('h2', 5673), ('::1', 9))
    assert u.node(1).hostport == 'h2:5673' and u.node(1).others == ()
    assert u.node(2).hostport == '[::1]:9' and u.node(2).password == 'secret'
    assert u.node(3).hostport == 'h1:5672'        # wraps around


def test_one_node_url_unchanged():
    u = parse_url('amqps://u:a,b@h/')               # a comma in the password is no node list
    assert u.nodes == (('h', 5671),) and u.password == 'a,b'


@pytest.mark.parametrize('url, why', [
    ('amqp://u:secret@h1,/', 'empty host'),
    ('amqp://u:secret@h1,h2:x/', "port 'x' is not a number"),
])
def test_bad_node_list_names_the_whole_url_without_password(url, why):
    with pytest.raises(ValueError) as e:
        parse_url(url)
    text = str(e.value)
    assert why in text and 'secret' not in text and text.startswith('amqp://u@h1,')


class _Chan:
    def __init__(self):
        self.declared = []

    def queue_declare(self, name, **kw):
        self.declared.append((name, kw))

        class Ok:
            queue, message_count, consumer_count = name, 0, 0
        return Ok()


def _offline_broker(url='amqp://u:p@h1,h2,h3/'):
    b = Broker(url, reconnect=False, logger=logging.getLogger('test'))
    b._chan = _Chan()
    b._do = lambda op, what: op()
    return b


def test_quorum_queue_declared_durable_with_its_type():
    b = _offline_broker()
    b.declare_queue('q1', durable=False, expire_s=300, queue_type='quorum')
    b.declare_queue('q2', expire_s=300, queue_type='classic')
    b.declare_queue('q3', passive=True, queue_type='quorum')
    (_, q1), (_, q2), (_, q3) = b._chan.declared
    assert q1['durable'] is True and q1['arguments'] == {'x-queue-type': 'quorum',
                                                          'x-expires': 300000}
    assert q2['arguments'] == {'x-expires': 300000}          # classic: as before
    assert q3['arguments'] is None and q3['passive']
    # replayed on reconnection with the same arguments
    assert b._declarations[('queue', 'q1')][3]['x-queue-type'] == 'quorum'


def test_connect_fails_over_to_the_next_node(monkeypatch):
    b = _offline_broker()
    tried, down = [], {'h1', 'h3'}

    def open_node(u):
        tried.append(u.host)
        if u.host in down:
            raise connection._RetryableConnectFailure('cannot connect to %s' % u.host)
    monkeypatch.setattr(b, '_open_node', open_node)
    b._open()
    assert tried == ['h1', 'h2'] and b._node_index == 1
    # the connection to h2 is lost: the next attempt starts at h3, then h1, then h2
    b._connection_lost(OSError(104, 'Connection reset by peer'), quiet=True)
    tried.clear()
    down = {'h1', 'h2', 'h3'}
    with pytest.raises(connection._RetryableConnectFailure):
        b._open()
    assert tried == ['h3', 'h1', 'h2']
    tried.clear()
    down = {'h3'}
    b._open()
    assert tried == ['h2'] and b._node_index == 1      # the last node tried, now back


def test_one_node_broker_keeps_its_node():
    b = _offline_broker('amqp://u:p@h1/')
    b._connection_lost(OSError(104, 'Connection reset by peer'), quiet=True)
    assert b._node_index == 0


def test_password_of_a_cluster_url_from_its_own_line_or_the_nodes(tmp_path):
    from sarra.config.credentials import Credentials
    p = tmp_path / 'credentials.conf'
    p.write_text('amqp://u:pw1@h1,h2:5673/\namqp://v:pw2@h2:5673/\n')
    p.chmod(0o600)
    creds = Credentials.load(str(p))
    u = Broker('amqp://u@h1,h2:5673/', password_lookup=creds.password_for)
    assert u._password(u.parsed.node(0)) == 'pw1'          # the line naming the cluster
    v = Broker('amqp://v@h1,h2:5673/', password_lookup=creds.password_for)
    assert v._password(v.parsed.node(1)) == 'pw2'          # the node's own line
    assert v._password(v.parsed.node(0)) == '' and v._no_password
