"""Issue 17 items 5 and 6: a checksum mismatch (417) is retried once then counted failed,
long transfers log their progress, and base URL + relpath never gives '//' for http(s)."""

import hashlib
import time
from types import SimpleNamespace

import pytest

from sarra import checksum, message
from sarra.flow import download, fetch
from sarra.transfer import progress
from sarra.flow.work import Outcome

from tests.support.flowfakes import delivery, make_flow, run_batches


# ------------------------------------------------------------------ joining

@pytest.mark.parametrize("base, rel, url", [
    ("http://h:8080/", "/dir/file", "http://h:8080/dir/file"),     # v2's form: one slash
    ("HTTPS://u@h/pre/", "/dir/file", "HTTPS://u@h/pre/dir/file"),
    ("http://h", "/dir/file", "http://h/dir/file"),
    ("http://h/", "dir/file", "http://h/dir/file"),                # sr3's form
    ("http://h/", "//dir/file", "http://h//dir/file"),             # only the boundary
    ("sftp://u@h/", "/abs/file", "sftp://u@h//abs/file"),          # '//': absolute there
    ("ftp://u@h:2121/", "/abs/file", "ftp://u@h:2121//abs/file"),
    ("file:", "/tmp/x", "file:/tmp/x"),
    ("file://", "/tmp/x", "file:///tmp/x"),
    ("http:/", "/evil.example/x", "http://evil.example/x"),        # no host: left alone
    ("http://", "/evil.example/x", "http:///evil.example/x"),      # never joined into a host
])
def test_join_url(base, rel, url):
    assert message.join_url(base, rel) == url


def test_message_keeps_v2_wire_form_and_url():
    m = message.make_post("20240101000000.0", "http://h/", "/dir/a%20b",
                          {"sum": "d," + "0" * 32, "parts": "1,1,1,0,0"})
    topic, body, headers = m.encode()
    assert body.split(" ")[1:] == ["http://h/", "/dir/a%20b"]      # on the wire: unchanged
    assert m.url == "http://h//dir/a%20b"                          # v2's view (masks, logs)
    assert m.download_url == "http://h/dir/a%20b"                   # what is fetched
    back = message.decode(topic, body, headers)
    assert (back.baseurl, back.relpath, back.download_url) == (m.baseurl, m.relpath,
                                                               m.download_url)


def test_fetch_and_fetch_policy_use_the_joined_url(tmp_path):
    seen = []

    class Driver:
        def get(self, url, dest, offset=0, length=None, hasher=None, write_offset=None):
            seen.append(url)
            hasher.update(b"x")
            return 1

    flow = _flow(Driver())
    msg = message.make_post("20240101000000.0", "http://h/", "/d/f",
                            {"sum": "d," + hashlib.md5(b"x").hexdigest(), "parts": "1,1,1,0,0"})
    work = SimpleNamespace(msg=msg, sum=msg.sum)
    fetch.fetch(flow, work, str(tmp_path / "f"), 0, None, None)
    assert seen == ["http://h/d/f"]


# ------------------------------------------------------------------ 417

def _mismatch_work(retry_entry=None):
    s = checksum.parse_sum("d," + hashlib.md5(b"announced").hexdigest())
    return SimpleNamespace(sum=s, retry_entry=retry_entry, msg=None)


def test_a_first_mismatch_is_retried_and_a_second_is_final():
    with pytest.raises(Outcome) as first:
        download._check(_mismatch_work(), hashlib.md5(b"received").hexdigest())
    assert (first.value.code, first.value.retry, first.value.failed) == (417, True, True)
    with pytest.raises(Outcome) as again:
        download._check(_mismatch_work(retry_entry=object()), hashlib.md5(b"r").hexdigest())
    assert (again.value.code, again.value.retry, again.value.failed) == (417, False, True)
    assert "not retried" in again.value.text


def test_mismatch_counted_failed_retried_once_then_dropped(home, monkeypatch):
    calls = []

    def work(flow, w):          # the server never has the announced bytes
        calls.append(w.msg.path)
        w.sum = w.msg.sum
        download._check(w, hashlib.md5(b"other bytes").hexdigest())

    flow = make_flow(home, work, deliveries=[delivery("/bad")])
    run_batches(flow)
    assert flow.consumer.acked == ["/bad"]
    assert flow.counters["failed"] == 1 and len(flow.retry) == 1       # one retry, later
    monkeypatch.setattr(flow.retry, "clock", lambda: time.time() + 30)  # backoff over
    run_batches(flow, 2)
    assert calls == ["/bad", "/bad"]
    assert flow.reporter.sent == [("/bad", 417), ("/bad", 417)]
    assert flow.counters["failed"] == 2 and len(flow.retry) == 0       # not a third time
    assert "failed=2" in flow.counters.line()
    run_batches(flow, 2)
    assert calls == ["/bad", "/bad"]


def test_other_refusals_are_not_counted_failed(home):
    def work(flow, w):
        raise Outcome(403, "Forbidden: refused")
    flow = make_flow(home, work, deliveries=[delivery("/x")])
    run_batches(flow)
    assert flow.counters["failed"] == 0 and len(flow.retry) == 0


# ------------------------------------------------------------------ progress

class _Log:
    def __init__(self):
        self.lines = []

    def info(self, fmt, *args):
        self.lines.append(fmt % args)

    warning = error = debug = info


def test_progress_lines_at_a_steady_interval():
    log = _Log()
    p = progress.Progress(log, "http://u:secret@h/big", 50_000_000, 100.0)
    for t, count in ((105.0, 6_000_000), (110.0, 12_500_000), (115.0, 20_000_000),
                     (120.0, 22_500_000), (125.0, 30_000_000)):
        p.count = count
        p.tick(t)
    assert log.lines == [
        "http://u@h/big: progress: 12.5 MB of 50.0 MB (25%) in 10 s, 1.2 MB/s",
        "http://u@h/big: progress: 22.5 MB of 50.0 MB (45%) in 20 s, 1.0 MB/s"]


def test_progress_without_a_known_size():
    log = _Log()
    p = progress.Progress(log, "sftp://h/x", None, 0.0)
    p.count = 999
    p.tick(10.0)
    assert log.lines == ["sftp://h/x: progress: 999 B in 10 s, 99 B/s"]


class _FakeClock:
    """time.monotonic() advancing 3 s at every read."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        self.now += 3.0
        return self.now


def _flow(driver):
    import threading
    from sarra.flow.attempts import Interruptible
    return SimpleNamespace(
        cfg=SimpleNamespace(attempts=1, transfer_min_rate=0), log=_Log(),
        hooks=SimpleNamespace(has=lambda name: False), stop_event=threading.Event(),
        interruptible=Interruptible(), counters={"bytes": 0}, tick_brokers=lambda: None,
        transfer_for=lambda url, base=None: driver)


def test_fetch_logs_progress_of_a_long_transfer(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "time", _FakeClock())
    pieces = [b"x" * 1000] * 20

    class Driver:
        def get(self, url, dest, offset=0, length=None, hasher=None, write_offset=None):
            for piece in pieces:         # one piece every 3 s (fake clock): 60 s
                hasher.update(piece)
            return 20000

    flow = _flow(Driver())
    data = b"x" * 20000
    msg = message.make_post("20240101000000.0", "http://h/", "/slow",
                            {"sum": "d," + hashlib.md5(data).hexdigest(),
                             "parts": "1,20000,1,0,0"})
    work = SimpleNamespace(msg=msg, sum=msg.sum)
    fetch.fetch(flow, work, str(tmp_path / "f"), 0, None, None)
    lines = [x for x in flow.log.lines if "progress" in x]
    assert len(lines) == 5, flow.log.lines          # every 10 s of the 60
    assert lines[0].startswith("http://h/slow: progress: ")
    assert "of 20.0 kB (" in lines[0] and lines[-1].endswith(" B/s")


def test_the_watcher_logs_while_one_piece_takes_long():
    """A driver blocked in one long read calls nothing of ours: the watcher thread logs."""
    log = _Log()
    p = progress.Progress(log, "http://h/blocked", 100, time.monotonic(), every=1.0)
    p.count = 40
    progress.watch(p)
    try:
        time.sleep(2.6)
    finally:
        progress.unwatch(p)
    n = len(log.lines)
    assert n >= 1 and log.lines[0].startswith("http://h/blocked: progress: 40 B of 100 B (40%)")
    time.sleep(1.2)
    assert len(log.lines) == n          # unwatched: no more lines
