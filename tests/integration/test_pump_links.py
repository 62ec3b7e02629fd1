"""Three pumps linked from their declarations alone (links.conf), as three vhosts of the
local RabbitMQ (tests/integration/linkkit.py draws the network and runs the scenario:
20 files for bob on C, two in parts, one removal, every consumer's report home to alice,
her sr_report summary, then C's link removed). The same scenario on three real brokers
is tests/cluster/test_pump_links_brokers.py (make test-cluster).
"""

import os

import pytest

from tests.integration import linkkit


@pytest.fixture
def net(tmp_path, uid, broker_url):
    n = linkkit.Net(tmp_path, uid, [(broker_url, os.environ.get("SARRA_TEST_MGMT"))] * 3)
    try:
        yield n
    finally:
        n.close()


def test_three_linked_pumps(net, tmp_path):
    linkkit.three_linked_pumps(net, tmp_path)
