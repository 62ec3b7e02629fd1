"""Three pumps linked from their declarations alone (links.conf), each on a real RabbitMQ
broker of its own (issue 21's done-when): three standalone nodes on loopback
(tests/support/rmqcluster.py, ``clustered=False``: own AMQP and management ports, data
dirs), so the ln_* sarras and shovels really cross brokers. The scenario is the one of
tests/integration/test_pump_links.py (three vhosts of one broker, in make test):
tests/integration/linkkit.py.
"""

import pytest

from tests.integration import linkkit
from tests.support.rmqcluster import RabbitCluster


@pytest.fixture(scope="module")
def brokers(tmp_path_factory):
    b = RabbitCluster(tmp_path_factory.mktemp("rmqbrokers"), clustered=False,
                      management=True).start()
    try:
        yield b
    finally:
        for i in range(len(b.nodes)):   # their data is thrown away: no graceful stop
            b.kill(i)


@pytest.fixture
def net(tmp_path, uid, brokers):
    n = linkkit.Net(tmp_path, uid, [(node.url, node.mgmt_url) for node in brokers.nodes],
                    label="three RabbitMQ brokers")
    try:
        yield n
    finally:
        n.close()


def test_three_pumps_on_three_brokers(net, tmp_path):
    figures = linkkit.three_linked_pumps(net, tmp_path)
    # every link crossed brokers: each pump's broker holds its own vhost only
    ports = {p.port for p in net.pumps.values()}
    assert len(ports) == 3, ports
    for p in net.pumps.values():
        assert p.api.vhost(p.vhost) is not None
        assert all(p.api.vhost(q.vhost) is None for q in net.pumps.values() if q is not p)
    assert figures["median_latency"] < 2.0
