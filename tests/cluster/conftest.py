"""Fixtures of the broker-cluster tests (issue 24): a real three-node RabbitMQ cluster.

rabbit_cluster  RabbitCluster (tests/support/rmqcluster.py), started once per session
                (~30 s) and stopped at its end; a skip saying why when it cannot start.
                .urls (one per node), .url (all nodes, sarra's failover form),
                .kill(i) (kill -9 node i), .restart(i), .ctl(i, *rabbitmqctl args)

Every test here carries the ``cluster`` marker: ``make test-cluster`` runs only them,
``make test`` leaves them out (``-m 'not cluster'``).
"""

import pytest

from tests.support.rmqcluster import RabbitCluster


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cluster: needs the three-node RabbitMQ cluster (tests/cluster, "
                   "make test-cluster)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/cluster/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory):
    cluster = RabbitCluster(tmp_path_factory.mktemp("rmqcluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()
