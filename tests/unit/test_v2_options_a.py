"""Issue 19 item 4 (first half): vip, save/restore, outlet, reset, persistent."""
import logging

import pytest

from sarra.ops import vip


# --- vip ------------------------------------------------------------------------------

def test_vip_holds_loopback_and_not_a_foreign_address():
    assert vip.holds("127.0.0.1")
    assert not vip.holds("192.0.2.77")          # TEST-NET-1: on no interface here
    assert not vip.holds("not-an-address")
    assert not vip.holds("")


def test_vip_holds_on_a_named_interface_only():
    assert vip.holds("127.0.0.1", "lo")
    assert not vip.holds("127.0.0.1", "no-such-if0")


def test_vip_holds_reads_the_interfaces(monkeypatch):
    class A:
        def __init__(self, address):
            self.address = address
    table = {"lo": [A("127.0.0.1")], "eth9": [A("fe80::1%eth9"), A("198.51.100.7")]}
    monkeypatch.setattr(vip.psutil, "net_if_addrs", lambda: table)
    assert vip.holds("198.51.100.7")
    assert vip.holds("fe80::1")
    assert not vip.holds("198.51.100.8")
    monkeypatch.setattr(vip.psutil, "net_if_addrs", lambda: (_ for _ in ()).throw(OSError("x")))
    assert not vip.holds("198.51.100.7")


def test_vip_gate_checks_every_few_seconds_and_logs_each_change_once(caplog):
    now = [0.0]
    held = [False]
    calls = []

    def probe(address, interface):
        calls.append(now[0])
        return held[0]
    g = vip.Gate("198.51.100.7", every=5, clock=lambda: now[0], probe=probe,
                 logger=logging.getLogger("t.vip"))
    with caplog.at_level(logging.INFO, logger="t.vip"):
        assert not g.active() and g.standby
        now[0] = 1
        assert not g.active()
        assert calls == [0.0]                      # no look before `every` seconds
        held[0] = True
        now[0] = 5
        assert g.active() and not g.standby
        now[0] = 11
        assert g.active()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "standby" in lines[0] and "active" in lines[1]


def test_vip_gate_without_address_is_always_active():
    g = vip.Gate(None, probe=lambda *a: pytest.fail("no look without vip"))
    assert g.active() and not g.standby


# --- outlet ---------------------------------------------------------------------------

class _Cfg(dict):
    def get(self, name, default=None):
        return dict.get(self, name, default)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _msg():
    from sarra.message import Message
    return Message("20261127120000.5", "http://h.invalid/", "a/b%20c.txt",
                   {"sum": "d,d41d8cd98f00b204e9800998ecf8427e", "parts": "1,0,1,0,0"},
                   topic="v02.post.a")


def _flow(**cfg):
    import io
    import types
    return types.SimpleNamespace(cfg=_Cfg(cfg), outlet_stream=io.StringIO())


def test_outlet_json_writes_topic_headers_body_as_v2():
    import json
    import types
    from sarra.flow import outlet
    f = _flow(outlet="json")
    outlet.emit(f, types.SimpleNamespace(posts=[], msg=_msg()))
    topic, headers, body = json.loads(f.outlet_stream.getvalue())
    assert topic == "v02.post.a" and body == "20261127120000.5 http://h.invalid/ a/b%20c.txt"
    assert headers["sum"] == "d,d41d8cd98f00b204e9800998ecf8427e"


def test_outlet_url_writes_the_url_and_post_writes_nothing():
    import types
    from sarra.flow import outlet
    f = _flow(outlet="url")
    outlet.emit(f, types.SimpleNamespace(posts=[], msg=_msg()))
    assert f.outlet_stream.getvalue() == "http://h.invalid/a/b%20c.txt\n"
    f = _flow(outlet="post")
    outlet.emit(f, types.SimpleNamespace(posts=[], msg=_msg()))
    assert f.outlet_stream.getvalue() == ""


def test_outlet_reset_vip_act_and_interface_is_ignored_with_its_reason():
    from sarra.config import options
    for c in ("subscribe", "sarra", "sender", "shovel", "winnow", "report"):
        assert options.acted_on("outlet", c) and options.acted_on("reset", c)
        assert options.acted_on("vip", c) and options.acted_on("persistent", c)
    assert not options.acted_on("interface", "subscribe")
    assert "vip is enough" in options.ignored_text("interface")


# --- reset ----------------------------------------------------------------------------

def test_reset_empties_the_retry_queue_and_the_cache(tmp_path, caplog):
    import types
    from sarra.flow import cache, reset, retry
    q = retry.RetryQueue(str(tmp_path / "r.retry"), ttl=0)
    q.add("v02.post.a", "t b r", {}, "xs_x")
    c = cache.DupCache(str(tmp_path / "c.cache"), 300)
    c.check_and_add(("k", "p"))
    flow = types.SimpleNamespace(cfg=_Cfg(reset=True), no=2, cache=c, retry=q,
                                 log=logging.getLogger("t.reset"))
    reset.at_start(flow)
    assert len(flow.retry) == 0 and len(c) == 0
    assert len(retry.RetryQueue(str(tmp_path / "r.retry"), ttl=0)) == 0   # on disk too
    flow.retry.add("v02.post.a", "t b r", {}, "xs_x")
    flow.cfg = _Cfg(reset=False)
    reset.at_start(flow)
    assert len(flow.retry) == 1           # off: nothing touched


# --- spool: posts kept while the post broker is down -----------------------------------

class FakeBroker:
    """Publishes into .posted once confirmed; .up False: the connection is gone."""
    display = "amqp://fake/"

    def __init__(self, world):
        self.world = world          # shared by siblings: {"up": bool, "nack": bool, ...}
        self.reconnect = True
        self.pending = []

    @property
    def connected(self):
        return self.world["up"]

    def sibling(self, **kw):
        return FakeBroker(self.world)

    def connect(self):
        from sarra.broker.client import BrokerError
        if not self.world["up"]:
            raise BrokerError("fake: connection refused")

    def publish(self, exchange, rk, body, headers, persistent=True, expiration=None):
        from sarra.broker.client import BrokerError
        if not self.world["up"]:
            raise BrokerError("fake: connection lost")
        self.pending.append(body)

    def wait_confirms(self, timeout=30):
        from sarra.broker.client import BrokerError
        if not self.world["up"]:
            raise BrokerError("fake: connection lost")
        if self.world.get("nack"):
            self.pending = []
            raise BrokerError("fake: nack")
        self.world["posted"] += self.pending
        self.pending = []

    def tick(self):
        pass

    def close(self):
        self.pending = []


def _spool(tmp_path, world, now):
    from sarra.flow import spool
    return spool.Spool(FakeBroker(world), str(tmp_path / "x.posts"),
                       logging.getLogger("t.spool"), clock=lambda: now[0])


def test_spool_keeps_posts_on_disk_during_an_outage_and_replays_them_in_order(tmp_path):
    from sarra.flow import spool
    world, now = {"up": True, "posted": []}, [0.0]
    s = _spool(tmp_path, world, now)
    s.publish("xpublic", "v02.post.a", "m0", {})
    s.wait_confirms()
    assert world["posted"] == ["m0"]
    s.publish("xpublic", "v02.post.a", "m1", {})      # sent, not yet confirmed...
    world["up"] = False                               # ...when the broker goes away
    s.wait_confirms()                                 # no error: m1 is on disk
    for m in ("m2", "m3"):
        s.publish("xpublic", "v02.post.a", m, {})
    s.wait_confirms()
    assert s.down and len(s.journal) == 3 and world["posted"] == ["m0"]
    world["up"] = True
    now[0] = spool.RETRY_EVERY / 2
    s.tick()                                          # too early to try again
    assert world["posted"] == ["m0"]
    s.publish("xpublic", "v02.post.a", "m4", {})      # after the kept ones
    now[0] = spool.RETRY_EVERY + 0.1
    s.tick()
    assert world["posted"] == ["m0", "m1", "m2", "m3", "m4"]
    assert not s.down and len(s.journal) == 0
    s.close()


def test_spool_journal_survives_the_process_and_is_posted_first(tmp_path):
    world, now = {"up": False, "posted": []}, [0.0]
    s = _spool(tmp_path, world, now)
    s.connect()                                       # down at start: no error, no wait
    s.publish("xpublic", "v02.post.a", "k1", {"h": "1"})
    s.publish("xpublic", "v02.post.a", "k2", {})
    del s                                             # killed: nothing closed
    world["up"] = True
    s = _spool(tmp_path, world, now)
    s.connect()
    s.publish("xpublic", "v02.post.a", "new", {})
    s.wait_confirms()
    assert world["posted"] == ["k1", "k2", "new"]
    s.close()


def test_spool_raises_a_refusal_of_a_broker_that_is_up(tmp_path):
    from sarra.broker.client import BrokerError
    world, now = {"up": True, "posted": [], "nack": True}, [0.0]
    s = _spool(tmp_path, world, now)
    s.publish("nosuch", "v02.post.a", "m", {})
    with pytest.raises(BrokerError):
        s.wait_confirms()
    assert len(s.journal) == 0 and not s.down
    s.close()


def test_spool_is_not_used_when_the_post_broker_is_the_consumed_one(tmp_path):
    import types
    from sarra.flow import spool
    cfg = _Cfg(broker="amqp://u@h/", post_broker="amqp://u@h/", component="shovel",
               name="n")
    flow = types.SimpleNamespace(cfg=cfg, source=None, user_cache_dir=str(tmp_path), no=1,
                                 log=logging.getLogger("t"))
    b = FakeBroker({"up": True, "posted": []})
    assert spool.wrap(flow, b) is b
    flow.cfg = _Cfg(cfg, post_broker="amqp://u@other/")
    assert isinstance(spool.wrap(flow, b), spool.Spool)


# --- save -----------------------------------------------------------------------------

def test_save_file_path_follows_save_file_and_the_instance(tmp_path):
    import types
    from sarra.flow import saving
    flow = types.SimpleNamespace(cfg=_Cfg(component="shovel", name="n"), no=2,
                                 user_cache_dir=str(tmp_path))
    assert saving.path(flow) == str(tmp_path / "sr_shovel_n_02.save")
    flow.cfg = _Cfg(component="shovel", name="n", save_file=str(tmp_path / "k"))
    assert saving.path(flow) == str(tmp_path / "k_02.save")


def test_vip_that_is_not_an_address_is_refused_naming_file_and_line(home):
    from sarra.config import parser
    d = home / ".config" / "sarra" / "shovel"
    d.mkdir(parents=True)
    (d / "v.conf").write_text("broker amqp://u@h/\nvip 192.0.2.1\nvip node-a.example\n")
    with pytest.raises(parser.ConfigError) as e:
        parser.load("shovel", "v")
    assert "v.conf:3" in str(e.value) and "not an IP address" in str(e.value)
    (d / "v.conf").write_text("broker amqp://u@h/\nvip 192.0.2.1\nvip fe80::1\n")
    assert parser.load("shovel", "v").vip


def test_reset_of_sr_watch_empties_its_cache_and_forgets_its_state(tmp_path):
    import types
    from sarra.flow import cache, reset
    from sarra.watch.state import FileState
    state_path = tmp_path / "w.files"
    st = FileState(str(state_path))
    st.started()
    assert state_path.exists()
    c = cache.DupCache(str(tmp_path / "c.cache"), 300)
    c.check_and_add(("k", "p"))
    src = types.SimpleNamespace(consumes=False, state=st)
    flow = types.SimpleNamespace(cfg=_Cfg(reset=True, component="watch"), no=1, cache=c,
                                 source=src, log=logging.getLogger("t.reset"))
    reset.at_start(flow)
    assert len(c) == 0 and src.state is not st and not src.state.restarted
