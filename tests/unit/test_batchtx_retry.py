"""What a batch whose commit did not happen leaves behind (sarra/flow/batchtx.py): no retry
entry for a message the queue gives back (it would be done, and posted, twice), and the
201 of a redelivered message only when its own first delivery placed the file."""

import os
import time

from sarra import message
from sarra.broker.client import BrokerError, Delivery, DeliveryTag
from sarra.flow import batchtx, report
from sarra.flow.work import Result
from tests.support.txfakes import delivery, tx_flow, work_of


def work(flow, relpath, outcome, generation=0):
    d = delivery(relpath, generation=generation)
    if generation == flow.broker._generation:
        flow.broker._unacked.add(int(d.delivery_tag))
    w = work_of(d)
    w.outcome = outcome
    flow.msg = w
    flow.batchtx.publish("xr", "v02.report", "its report", {})
    flow.msg = None
    return w


def lose_before_commit(b):
    real = b._do

    def do(op, what):
        if what.startswith("commit"):
            b._generation += 1                  # lost, back again: the tx was dropped
            b._unacked = set()
        return real(op, what)
    b._do = do


def lose_after_commit(b):
    real = b._do

    def do(op, what):
        if not what.startswith("commit"):
            return real(op, what)
        op()                                    # the commit left ...
        b._generation += 1                      # ... and its reply was lost with the link
        return op()
    b._do = do


def refuse_commit(b):
    real = b._do

    def do(op, what):
        if what.startswith("commit"):
            raise BrokerError("amqp://u@localhost/: exchange 'xr' not found")
        return real(op, what)
    b._do = do


def test_a_refused_commit_leaves_no_retry_entry_for_what_comes_back(home):
    flow = tx_flow(home)
    refuse_commit(flow.broker)
    flow.settle([work(flow, "/failed", Result.FAILED), work(flow, "/ok", Result.DONE)])
    assert len(flow.retry) == 0                 # /failed comes back from the queue


def test_a_commit_lost_before_it_left_leaves_no_retry_entry(home):
    flow = tx_flow(home)
    lose_before_commit(flow.broker)
    flow.settle([work(flow, "/failed", Result.FAILED)])
    assert len(flow.retry) == 0


def test_a_commit_in_doubt_keeps_the_retry_entry(home):
    """Maybe committed (acked): the retry entry is all that is left of the message."""
    flow = tx_flow(home)
    lose_after_commit(flow.broker)
    flow.settle([work(flow, "/failed", Result.FAILED)])
    assert len(flow.retry) == 1


def test_a_committed_batch_keeps_the_entries_of_what_it_acked_only(home):
    flow = tx_flow(home)
    stale = work(flow, "/stale", Result.FAILED, generation=0)
    flow.broker._generation = 1                 # its channel was lost during the batch
    flow.broker._unacked = set()
    acked = work(flow, "/acked", Result.FAILED, generation=1)
    flow.settle([stale, acked])
    assert [e.body.split()[-1] for e in flow.retry._entries.values()] == ["/acked"]


def redelivered(relpath, pubtime="20240101000000.0"):
    d = delivery(relpath)
    topic, body, hdrs = message.make_post(pubtime, "http://h/", relpath, d.headers).encode()
    return work_of(Delivery("xs_a", topic, body, body.encode(), hdrs,
                            DeliveryTag(int(d.delivery_tag), 0), True, {}))


def test_the_201_goes_to_the_message_whose_lost_commit_placed_the_file(home):
    flow = tx_flow(home)
    path = home / "a"
    path.write_bytes(b"x")                      # placed by this process (after it started)
    lose_before_commit(flow.broker)
    w = work(flow, "/a", Result.DONE)           # placed /a (201) and lost its commit
    flow.settle([w])
    again = redelivered("/a")
    assert batchtx.redone(flow, again, report.SAME_CHECKSUM, str(path)) == report.DOWNLOADED
    other = redelivered("/a", "20240101000001.0")   # unprocessed in prefetch, same file
    assert batchtx.redone(flow, other, report.SAME_CHECKSUM, str(path)) == \
        report.SAME_CHECKSUM


def test_a_file_placed_before_this_process_started(home, monkeypatch):
    """By the instance before (killed before its commit): the 201 when the file changed
    after the message was published; an older message placed it otherwise."""
    flow = tx_flow(home)
    path = home / "a"
    path.write_bytes(b"x")
    monkeypatch.setattr(batchtx, "STARTED", time.time() + 60)
    os.utime(path, (0, 0))                      # mtime says nothing: ctime is the change
    w = redelivered("/a")                       # published in 2024: before the change
    assert batchtx.redone(flow, w, report.SAME_CHECKSUM, str(path)) == report.DOWNLOADED
    later = redelivered("/a", message.format_time(time.time() + 30))
    assert batchtx.redone(flow, later, report.SAME_CHECKSUM, str(path)) == \
        report.SAME_CHECKSUM
    assert batchtx.redone(flow, w, report.SAME_CHECKSUM, str(home / "gone")) == \
        report.SAME_CHECKSUM
