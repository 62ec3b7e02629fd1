"""Reports in the batch's transaction (flow/report.py Reporter.tx, sarra/flow/batchtx.py):
an error there loses that report, it never switches reports off."""

from sarra.broker.client import BrokerError
from sarra.flow import batchtx, report
from tests.support.txfakes import FakeBroker, FakeFlow, delivery, work_of


class OwnConnection:
    """The reporter's own connection: where the first report is published, confirmed."""

    def __init__(self):
        self.published = []

    def publish(self, *args):
        self.published.append(args[0])

    def wait_confirms(self, timeout=30):
        pass


def test_a_channel_error_in_the_transaction_does_not_switch_reports_off():
    b, flow = FakeBroker(), FakeFlow()
    tx = batchtx.BatchTx(flow, b)
    rep = report.Reporter(OwnConnection(), "xr", "u")
    rep.tx = tx
    m = work_of(delivery("/a"))
    b._unacked.add(int(m.delivery.delivery_tag))
    flow.msg = m
    rep.report(m.msg, 201, "Downloaded", 0.0)             # the first: confirmed, ours
    real = b._do

    def refuse(op, what):
        if what.startswith("select"):
            raise BrokerError("amqp://u@localhost/: select transaction mode: channel error")
        return real(op, what)
    b._do = refuse
    rep.report(m.msg, 201, "Downloaded", 0.0)             # this one is lost ...
    assert rep.enabled and rep.sent == 1
    b._do = real
    rep.report(m.msg, 201, "Downloaded", 0.0)             # ... the next ones are not
    assert rep.enabled and rep.sent == 2
    tx.commit([m], [m.delivery])
    assert [x[:2] for x in b.log if x[0] == "publish"] == [("publish", "xr")]


def test_a_refused_first_report_still_switches_reports_off():
    class Refusing(OwnConnection):
        def publish(self, *args):
            raise BrokerError("access refused to exchange 'xr'")

    b, flow = FakeBroker(), FakeFlow()
    rep = report.Reporter(Refusing(), "xr", "u")
    rep.tx = batchtx.BatchTx(flow, b)
    m = work_of(delivery("/a"))
    flow.msg = m
    rep.report(m.msg, 201, "Downloaded", 0.0)
    assert not rep.enabled
