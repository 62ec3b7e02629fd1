"""kbytes_ps and message_rate_max (issue 23 item 1): the token bucket, the read loops it
paces, and the flow's use of it. A fake clock: no real sleeping."""

import io
import threading
import types

import pytest

from sarra import transfer
from sarra.config import options
from sarra.flow import pacing
from sarra.transfer import throttle


class Clock:
    def __init__(self):
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s
        self.slept += s


@pytest.fixture(autouse=True)
def no_pacer():
    throttle.pacer = None
    yield
    throttle.pacer = None


def _max_window(events, window):
    """Most units taken in any window of `window` seconds (events: (time, n))."""
    best = 0
    for i, (t0, _) in enumerate(events):
        best = max(best, sum(n for t, n in events[i:] if t < t0 + window))
    return best


def test_bucket_holds_the_rate_for_one_large_stream_of_pieces():
    clock = Clock()
    b = throttle.TokenBucket(200 * 1024, clock=clock, sleep=clock.sleep)
    piece = b.piece(1 << 20)
    assert piece == int(200 * 1024 * throttle.PIECE_TIME)
    events = []
    for _ in range(2000):                       # 20 MiB in pieces
        b.take(piece)
        events.append((clock.now, piece))
    elapsed = clock.now - events[0][0]
    assert 200 * 1024 * 0.98 <= sum(n for _, n in events) / elapsed <= 200 * 1024 * 1.02
    # any 10 s window: within 2 % of the rate
    assert _max_window(events[::1], 10.0) <= 200 * 1024 * 10 * 1.02


def test_bucket_many_small_takes_and_idle_saves_little():
    clock = Clock()
    b = throttle.TokenBucket(1000, clock=clock, sleep=clock.sleep)
    events = []
    for i in range(3000):
        if i % 500 == 0:
            clock.now += 60             # idle a minute: at most `burst` is saved up
        b.take(7)
        events.append((clock.now, 7))
    assert _max_window(events, 10.0) <= 1000 * 10 * 1.02 + 7


def test_first_take_is_immediate_then_the_debt_is_paid():
    clock = Clock()
    b = throttle.TokenBucket(100, clock=clock, sleep=clock.sleep)
    assert b.take(50) == 0.0
    assert b.take(1) == pytest.approx(0.5)


def test_long_wait_is_cut_in_steps_and_keeps_alive():
    clock = Clock()
    ticks = []
    b = throttle.TokenBucket(10, clock=clock, sleep=clock.sleep, on_wait=lambda: ticks.append(1))
    b.take(100)
    b.take(1)                                   # 10 s of debt: ticks along the way
    assert len(ticks) >= 8


def test_a_stop_ends_the_wait():
    stop = threading.Event()
    stop.set()
    b = throttle.TokenBucket(1, sleep=stop.wait)
    b.take(1000)
    assert b.take(1) == 0.0                     # returned at once, did not sleep 1000 s


def test_bad_rate_refused():
    with pytest.raises(ValueError):
        throttle.TokenBucket(0)


def test_read_blocks_is_paced_only_when_a_pacer_is_set():
    data = b"x" * 100_000
    sizes = []

    def reader():
        f = io.BytesIO(data)

        def read(n):
            sizes.append(n)
            return f.read(n)
        return read
    assert b"".join(transfer.read_blocks(reader(), len(data), 1 << 20)) == data
    assert sizes == [len(data)]                 # unlimited: one block, nothing else
    clock = Clock()
    throttle.pacer = throttle.TokenBucket(20_000, clock=clock, sleep=clock.sleep)
    sizes.clear()
    assert b"".join(transfer.read_blocks(reader(), len(data), 1 << 20)) == data
    assert max(sizes) <= throttle.MIN_PIECE * 1 or max(sizes) <= 20_000 * throttle.PIECE_TIME
    assert clock.slept >= (len(data) - 20_000 * throttle.BURST_TIME - 1000) / 20_000 - 0.1


def test_read_local_and_file_copies_are_paced(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"y" * 50_000)
    clock = Clock()
    throttle.pacer = throttle.TokenBucket(10_000, clock=clock, sleep=clock.sleep)
    assert b"".join(transfer.read_local(str(src))) == b"y" * 50_000
    assert clock.slept >= 4.0
    clock.slept = 0.0
    from sarra.transfer.file import FileTransfer
    FileTransfer().put(str(src), "file://" + str(tmp_path / "dst"))
    assert (tmp_path / "dst").read_bytes() == b"y" * 50_000
    assert clock.slept >= 4.0


def test_use_keeps_the_bucket_while_the_rate_is_the_same():
    b = throttle.use(1024)
    assert throttle.use(1024) is b and throttle.pacer is b
    assert throttle.use(2048) is not b
    assert throttle.use(0) is None and throttle.pacer is None


class _Cfg(types.SimpleNamespace):
    pass


class _Flow:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_byte_rate_of_a_configuration():
    assert pacing.byte_rate(_Cfg(kbytes_ps=0, kbytes_ps_shared=0)) == 0
    assert pacing.byte_rate(_Cfg(kbytes_ps=100, kbytes_ps_shared=0)) == 100 * 1024
    assert pacing.byte_rate(_Cfg(kbytes_ps=100, kbytes_ps_shared=50)) == 50 * 1024
    assert pacing.byte_rate(_Cfg(kbytes_ps=0, kbytes_ps_shared=70)) == 70 * 1024


def test_flow_apply_sets_and_clears_the_pacer():
    flow = types.SimpleNamespace(cfg=_Cfg(kbytes_ps=100, kbytes_ps_shared=0))
    pacing.apply(flow)
    assert throttle.pacer.rate == 100 * 1024
    flow.cfg = _Cfg(kbytes_ps=0, kbytes_ps_shared=0)        # a reload removed it
    pacing.apply(flow)
    assert throttle.pacer is None


def test_message_rate_max(monkeypatch):
    clock = Clock()
    real = throttle.TokenBucket.__init__
    monkeypatch.setattr(throttle.TokenBucket, "__init__",
                        lambda self, *a, **k: real(self, *a, **dict(k, clock=clock)))
    stop = threading.Event()

    def wait(s):
        clock.sleep(s)
        return False
    monkeypatch.setattr(stop, "wait", wait)
    flow = _Flow(cfg=_Cfg(message_rate_max=5), stop_event=stop, tick_brokers=lambda: None)
    for _ in range(51):
        pacing.per_message(flow)
    assert clock.now - 1000.0 == pytest.approx(10.0, abs=0.3)     # 50 intervals of 0.2 s


def test_options_act_now():
    assert options.acted_on("kbytes_ps", "sender")
    assert options.acted_on("kbytes_ps", "subscribe")
    assert options.lookup("messageRateMax").name == "message_rate_max"
    assert options.lookup("kbytes_ps_shared") is not None


# ---------------------------------------------------------------- the shared meter

class _MeterCfg(_Cfg):
    def broker_user(self):
        return "alice"


def test_meter_names_are_the_same_on_every_node():
    from sarra.flow import meter
    cfg = _MeterCfg(queue_name=None, program="sr_sender", name="far", kbytes_ps_shared=100)
    assert meter.upstream_queue(cfg) == "q_alice.sr_sender.far.meter"
    assert meter.work_queue(cfg) == "q_alice.sr_sender.far.metered"
    assert meter.exchange(cfg) == "xs_alice_far_meter"
    assert meter.queues(cfg) == ["q_alice.sr_sender.far.meter", "q_alice.sr_sender.far.metered"]
    cfg.queue_name = "q_alice.mine"
    assert meter.work_queue(cfg) == "q_alice.mine.metered"
    cfg.kbytes_ps_shared = 0
    assert meter.queues(cfg) == []


def test_meter_counts_the_announced_part():
    from sarra.flow import meter
    d = types.SimpleNamespace(headers={"parts": "1,123456,1,0,0"})
    assert meter.announced_size(d) == 123456
    d.headers = {"parts": "i,1024,10,0,3"}          # one block of a file in blocks
    assert meter.announced_size(d) == 1024
    for h in ({}, {"parts": "garbage"}, None):      # a link, a removal, a hostile header
        assert meter.announced_size(types.SimpleNamespace(headers=h)) == 0


def test_unlimited_flow_consumes_its_own_queue(monkeypatch):
    from sarra.flow import meter
    made = []
    monkeypatch.setattr(meter, "Consumer", lambda *a: made.append(a) or "plain")
    cfg = _MeterCfg(kbytes_ps_shared=0)
    assert meter.make_consumer(cfg, None, None, None) == "plain" and made


class _FakeBroker:
    """What the meter uses of a Broker; get() hands out the deliveries, then stops."""

    def __init__(self, deliveries, clock, stop):
        self.deliveries, self.clock, self.stop = list(deliveries), clock, stop
        self.released, self.acked = [], []

    def sibling(self, **kw):
        return self

    def get(self, timeout):
        if not self.deliveries:
            self.stop.set()
            return None
        return self.deliveries.pop(0)

    def declare_queue(self, name, passive=False, **kw):
        return name, 0, 0

    def publish(self, exchange, key, body, headers):
        self.released.append((self.clock.now, headers["parts"]))

    def ack(self, tag):
        self.acked.append(tag)

    def __getattr__(self, name):            # connect, bind, consume, wait_confirms, close
        return lambda *a, **k: None


def test_meter_releases_at_the_byte_rate_and_bounds_a_lying_size():
    from sarra.flow import meter
    clock, stop = Clock(), threading.Event()
    sizes = [100 * 1024, 50 * 1024, 10 ** 15, 1024]       # the third one lies
    deliveries = [types.SimpleNamespace(routing_key="v02.post.a", raw=b"x", delivery_tag=i,
                                        headers={"parts": "1,%d,1,0,0" % n})
                  for i, n in enumerate(sizes)]
    b = _FakeBroker(deliveries, clock, stop)
    cfg = _MeterCfg(kbytes_ps_shared=100, queue_name=None, program="sr_sender", name="m",
                    durable=True, expire=0, message_ttl=0, bindings=[], instances=1,
                    get=lambda k, d=None: d)
    m = meter.Meter(cfg, b, __import__("logging").getLogger("t"), stop)
    m.bucket = throttle.TokenBucket(100 * 1024, burst=0.0, clock=clock,
                                    sleep=lambda s: clock.sleep(s) or False)
    m.serve()
    times = [t - 1000.0 for t, _ in b.released]
    assert b.acked == [0, 1, 2, 3]              # each acked once released
    assert times[0] == pytest.approx(1.0)       # paid before it goes: 100 KiB at 100 KiB/s
    assert times[1] - times[0] == pytest.approx(0.5)
    assert times[2] - times[1] == pytest.approx(meter.MAX_CHARGE)   # not 10**15 bytes' time
    assert times[3] - times[2] == pytest.approx(0.01)


def test_a_paced_download_is_not_cut_as_too_slow():
    cfg = _Cfg(transfer_min_rate=4096, kbytes_ps=2, kbytes_ps_shared=0)
    assert pacing.min_rate(cfg) == 1024             # half of 2 KiB/s, under the 4 KiB/s
    cfg.kbytes_ps = 0
    assert pacing.min_rate(cfg) == 4096
    cfg.kbytes_ps = 1000
    assert pacing.min_rate(cfg) == 4096
