"""The one report routing shovel (issue 20, review): a source's xr_ exchange gone (the
source removed before the shovel reloads, a shovel edited by hand) stalls no other
source's reports (sarra/flow/sourcex.py). A real broker; the shovel as sr_police writes
it (post_exchange_by_source on, msg_by_source, its batches in AMQP transactions)."""

import time

import amqp
import pytest

from tests.integration.senderkit import Runner, wait_for

SUM = "d,d41d8cd98f00b204e9800998ecf8427e"


@pytest.fixture
def runner(home, tmp_path):
    r = Runner(home, tmp_path)
    yield r
    r.cleanup()


def report(channel, exchange, source, n):
    rel = "/20261205/%s/rr/f%05d.bin" % (source, n)
    channel.basic_publish(
        amqp.Message("20261205120000.25 http://pump.invalid/ %s 201 host.example.org "
                     "carol 0.5" % rel, content_type="text/plain",
                     application_headers={"sum": SUM, "parts": "1,0,1,0,0", "source": source}),
        exchange=exchange, routing_key="v02.report.20261205.%s.rr" % source)
    return rel


def test_a_missing_source_exchange_stalls_no_other_source(runner, broker_url, uid,
                                                          amqp_channel, amqp_exchange,
                                                          amqp_tap):
    xreport = amqp_exchange("xreport_%s" % uid)
    prefix = "xr_%s_" % uid
    taps = {s: amqp_tap(amqp_exchange(prefix + s), ("#",)) for s in ("alice", "bob")}
    name = "rr%s" % uid
    runner.config("shovel", name, """
        broker %s
        exchange %s
        topic_prefix v02.report
        subtopic #
        expire 5m
        heartbeat 2
        post_exchange %s
        post_exchange_by_source on
        on_message msg_by_source
        msg_by_source alice,bob
        report_back off
    """ % (broker_url, xreport, prefix))
    p = runner.start("shovel", name)
    runner.wait_consuming(p, name)
    # both exchanges there: each source gets its own
    report(amqp_channel, xreport, "alice", 1)
    report(amqp_channel, xreport, "bob", 1)
    for s in ("alice", "bob"):
        got = taps[s].get(1, timeout=15)
        assert [h["source"] for _, _, h in got] == [s], runner.log(name)
    # alice's exchange deleted (the shovel knew it existed): bob's reports still pass
    amqp_channel.exchange_delete(prefix + "alice")
    sent = []
    for n in range(2, 5):
        report(amqp_channel, xreport, "alice", n)
        sent.append(report(amqp_channel, xreport, "bob", n))
    got = taps["bob"].get(3, timeout=15)
    assert sorted(b.split()[2] for _, b, _ in got) == sorted(sent), runner.log(name)
    # alice's refused and acked once each (not redelivered and refused again forever)
    wait_for(lambda: runner.log(name).count("does not exist") >= 1, 10, "the refusal")
    time.sleep(1.5)
    log = runner.log(name)
    assert log.count("%salice' does not exist" % prefix) == 1, log    # once per name
    assert "bob' does not exist" not in log
    assert p.poll() is None
    # and what comes after for bob passes at once (no pause: nothing comes back)
    t0 = time.monotonic()
    rel = report(amqp_channel, xreport, "bob", 9)
    assert [b.split()[2] for _, b, _ in taps["bob"].get(1, timeout=10)] == [rel]
    assert time.monotonic() - t0 < 5
