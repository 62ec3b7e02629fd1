"""Issue 16 item 4: the bounds of one download (sarra/transfer/bounds.py) and their use by
LocalWriter and the HTTP driver's redirect rule."""

import os
import signal
import time

import pytest

from sarra.transfer import LocalWriter, bounds
from sarra.transfer.http import same_origin


class _Limited:
    """What fetch.py hands the drivers in the hasher's place: here only its limit."""

    def __init__(self, limit):
        self.limit = limit

    def update(self, data):
        pass


def test_writer_refuses_a_byte_past_the_announced_size(tmp_path):
    path = str(tmp_path / "f")
    with pytest.raises(bounds.TransferRefused) as e:
        with LocalWriter(path, hasher=_Limited(21)) as out:
            out.write(b"x" * 20)
            out.write(b"y")             # 21: still the announced size
            out.write(b"z")             # 22: refused, never written
    assert e.value.code == 413 and "21 bytes announced" in str(e.value)
    assert os.path.getsize(path) == 21


def test_writer_refuses_a_longer_body_up_front(tmp_path):
    path = str(tmp_path / "f")
    with LocalWriter(path, hasher=_Limited(21)) as out:
        out.expect(21)
        out.expect(None)                # unknown length: bounded by write()
        with pytest.raises(bounds.TransferRefused) as e:
            out.expect(1 << 30, "http://h/f")
    assert e.value.code == 413 and "1073741824 bytes, 21 announced" in str(e.value)


def test_writer_without_limit_takes_anything(tmp_path):
    with LocalWriter(str(tmp_path / "f"), hasher=None) as out:
        out.expect(1 << 40)
        out.write(b"x" * 100)
    assert out.count == 100


def test_block_limit_is_its_length_not_the_file_size(tmp_path):
    path = str(tmp_path / "f")
    with open(path, "wb") as f:
        f.write(b"." * 100)
    with pytest.raises(bounds.TransferRefused):
        with LocalWriter(path, write_offset=50, hasher=_Limited(10)) as out:
            out.write(b"a" * 11)


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", " deflate", "br", "x-gzip, gzip"])
def test_unasked_content_encoding_refused(encoding):
    with pytest.raises(bounds.TransferRefused) as e:
        bounds.refuse_encoding(encoding, "http://h/f")
    assert e.value.code == 415


@pytest.mark.parametrize("encoding", [None, "", "identity", "Identity "])
def test_identity_accepted(encoding):
    bounds.refuse_encoding(encoding, "http://h/f")


@pytest.mark.parametrize("target,same", [
    ("http://h:8080/b", True), ("http://H:8080/x/../b", True),
    ("http://h:8081/b", False), ("https://h:8080/b", False), ("http://other:8080/b", False),
    ("http://h/b", False), ("http://h:8080@evil/b", False), ("http://h:bad/b", False),
])
def test_redirects_only_to_the_same_origin(target, same):
    assert same_origin("http://h:8080/a", target) is same


def test_default_ports_are_the_same_origin():
    assert same_origin("http://h/a", "http://h:80/b")
    assert same_origin("https://h/a", "https://h:443/b")


def test_deadline_from_size_and_rate():
    assert bounds.deadline_for(21, 4096, 30) == pytest.approx(30.005, abs=0.001)
    assert bounds.deadline_for(1 << 30, 4096, 30) == 30 + (1 << 30) / 4096
    assert bounds.deadline_for(100, 0, 30) is None


def test_guard_lets_a_transfer_run_its_grace_then_wants_the_rate():
    g = bounds.Guard(1 << 20, 1000, 10)
    g.check(g.start + 9.9)                  # nothing received yet: still in grace
    g.count = 5000
    g.check(g.start + 14.9)                 # 5000 bytes cover 5 s past the grace
    with pytest.raises(bounds.TransferDeadline) as e:
        g.check(g.start + 15.1)
    assert "5000 bytes" in e.value.message
    g.check(g.start + 100)                  # raised once, never twice


def test_slow_transfers_of_one_source_hold_at_most_its_slots(tmp_path):
    slots = bounds.SlowSlots(str(tmp_path / "slow"), slots=1, penalty=60)
    assert not slots.busy("source bob")
    first = bounds.Guard(100, 1, 1, slots, "source bob")
    second = bounds.Guard(100, 1, 1, slots, "source bob")
    other = bounds.Guard(100, 1, 1, slots, "source alice")
    for g in (first, second, other):
        g.count = 50
    first.check(first.start + 2)            # past grace: takes bob's slot
    assert slots.busy("source bob") and not slots.busy("source alice")
    with pytest.raises(bounds.TransferDeferred):
        second.check(second.start + 2)      # bob's only slot is taken
    other.check(other.start + 2)            # alice has her own
    first.release()
    assert not slots.busy("source bob")
    first.release(penalise=True)            # bob missed a deadline: held back
    assert slots.busy("source bob")
    assert not slots.busy("source bob", now=time.time() + 61)
    other.release()


def test_a_claim_renewed_keeps_the_slot_busy(tmp_path):
    slots = bounds.SlowSlots(str(tmp_path), slots=2)
    a = bounds.Guard(100, 1, 0, slots, "k")
    b = bounds.Guard(100, 1, 0, slots, "k")
    a.count = b.count = 100
    a.check(a.start + 1)
    assert not slots.busy("k")              # one of two slots taken
    b.check(b.start + 1)
    assert slots.busy("k")
    assert not slots.busy("k", now=time.time() + bounds.CLAIM + 1)     # died: expires
    a.check(a.next_renew + 0.1)
    assert slots.busy("k", now=time.time() + bounds.CLAIM - 1)
    a.release()
    b.release()


def test_timer_interrupts_a_blocked_call():
    fired = []

    def fire():
        fired.append(1)
        raise bounds.TransferDeadline("late")
    assert bounds.arm(0.05, fire, 0.05)
    try:
        with pytest.raises(bounds.TransferDeadline):
            time.sleep(2)
    finally:
        bounds.disarm()
    assert fired == [1]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# --- fetch(): what a bound becomes ----------------------------------------------------------

class _Cfg:
    attempts = 3
    transfer_min_rate = 1000
    transfer_grace = 0.3
    transfer_penalty = 60
    instances = 2
    source_from_exchange = True

    def __init__(self, state):
        self.state = state

    def state_dir(self):
        return self.state


class _Flow:
    def __init__(self, tmp_path, driver):
        import threading
        from types import SimpleNamespace
        from sarra.flow.attempts import Interruptible
        self.cfg = _Cfg(str(tmp_path / "state"))
        self.hooks = SimpleNamespace(has=lambda name: False)
        self.stop_event = threading.Event()
        self.interruptible = Interruptible()
        self.counters = {"bytes": 0}
        self.log = SimpleNamespace(warning=lambda *a: None)
        self.driver = driver
        self.transfers = {("http", "h", None, None): driver}
        self._by_base = {"http://h/": driver}

    def transfer_for(self, url, baseurl=None):
        return self.driver

    def tick_brokers(self):
        pass


class _Driver:
    """Writes ``pieces`` (bytes) through a LocalWriter, sleeping ``pause`` before each."""

    def __init__(self, pieces, pause=0.0):
        self.pieces, self.pause, self.calls, self.closed = pieces, pause, 0, False

    def get(self, url, dest, offset=0, length=None, hasher=None, write_offset=None):
        self.calls += 1
        with LocalWriter(dest, write_offset, hasher) as out:
            for piece in self.pieces:
                time.sleep(self.pause)
                out.write(piece)
        return out.count

    def close(self):
        self.closed = True


def _work(size, source="bob"):
    from types import SimpleNamespace
    from sarra.checksum import parse_sum
    msg = SimpleNamespace(url="http://h/f", download_url="http://h/f", baseurl="http://h/",
                          parts=SimpleNamespace(filesize=size, method="1"), headers={"source": source})
    return SimpleNamespace(msg=msg, sum=parse_sum("d,d41d8cd98f00b204e9800998ecf8427e"))


def test_fetch_refuses_more_than_announced_once_and_drops_the_driver(tmp_path):
    from sarra.flow.fetch import fetch
    from sarra.flow.work import Outcome
    drv = _Driver([b"x" * 21, b"y"])
    flow = _Flow(tmp_path, drv)
    with pytest.raises(Outcome) as e:
        fetch(flow, _work(21), str(tmp_path / "f"), 0, None, None)
    assert (e.value.code, e.value.retry, drv.calls) == (413, False, 1)
    assert drv.closed and not flow.transfers and not flow._by_base


def test_fetch_cuts_a_slow_transfer_then_defers_its_source(tmp_path):
    from sarra.flow.fetch import fetch
    from sarra.flow.work import Outcome
    drv = _Driver([b"x"] * 50, pause=0.1)       # 10 B/s, 1000 wanted after 0.3 s
    flow = _Flow(tmp_path, drv)
    start = time.monotonic()
    with pytest.raises(Outcome) as e:
        fetch(flow, _work(50), str(tmp_path / "f"), 0, None, None)
    assert (e.value.code, e.value.retry, drv.calls) == (504, True, 1)
    assert time.monotonic() - start < 2
    flow.driver = fresh = _Driver([b"x"])
    with pytest.raises(Outcome) as e:           # bob is held back: not even tried
        fetch(flow, _work(1), str(tmp_path / "g"), 0, None, None)
    assert (e.value.code, e.value.retry, fresh.calls) == (503, True, 0)
    assert fetch(flow, _work(1, source="alice"), str(tmp_path / "h"), 0, None, None)


def test_fetch_interrupts_a_read_blocked_past_the_deadline(tmp_path):
    from sarra.flow.fetch import fetch
    from sarra.flow.work import Outcome
    drv = _Driver([b"x"], pause=30)             # a server silent for 30 s
    flow = _Flow(tmp_path, drv)
    start = time.monotonic()
    with pytest.raises(Outcome) as e:
        fetch(flow, _work(1), str(tmp_path / "f"), 0, None, None)
    assert e.value.code == 504 and time.monotonic() - start < 3
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_file_driver_refuses_a_file_longer_than_announced(tmp_path):
    from sarra.transfer.file import FileTransfer
    src = tmp_path / "big"
    src.write_bytes(b"x" * 1000)
    with pytest.raises(bounds.TransferRefused) as e:
        FileTransfer().get("file:" + str(src), str(tmp_path / "out"), hasher=_Limited(21))
    assert e.value.code == 413 and not (tmp_path / "out").exists()
    assert FileTransfer().get("file:" + str(src), str(tmp_path / "ok"),
                              hasher=_Limited(1000)) == 1000
