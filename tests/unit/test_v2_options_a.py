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
