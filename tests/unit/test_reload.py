"""Reload and rename (issue 19, item 5): the pure parts, on fakes.

* flow/reload.py: a requested reload is applied between two batches; accept/reject apply
  from the next message, with no reconnection; a broker change reconnects; a configuration
  that no longer loads, or that the flow would refuse, leaves the one in force;
* ops/rename.py: which state and log files follow a renamed configuration;
* commands: the actions are known to sr_subscribe and sr_watch.
"""

import os
import signal
import threading

import pytest

from sarra.commands import common
from sarra.config import parser as config
from sarra.flow import reload
from sarra.flow.work import Outcome
from sarra.ops import instances, rename
from tests.support.flowfakes import delivery, make_flow, run_batches


def _done(flow, work):
    work.code, work.text = 201, "Downloaded"


def _cfg(home, *extra):
    return config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                           ("directory", str(home / "dst")), *extra])


def _flow(home, extra, deliveries):
    flow = make_flow(home, _done, extra, deliveries)
    flow.connects = 0
    flow.connect = lambda: setattr(flow, "connects", flow.connects + 1)
    flow.close = lambda: None
    flow.consumer.bindings = lambda: iter(())
    return flow


def test_differences_of_the_same_config_are_none(home):
    assert reload.differences(_cfg(home), _cfg(home)) == set()
    assert reload.differences(_cfg(home, ("accept", ".*a.*")),
                              _cfg(home, ("accept", ".*b.*"))) == {"accept"}
    assert "subtopic" in reload.differences(_cfg(home, ("subtopic", "a.#")),
                                            _cfg(home, ("subtopic", "b.#")))
    assert "broker" in reload.differences(_cfg(home), _cfg(home, ("broker",
                                                                  "amqp://v@localhost/")))


def test_new_accept_applies_between_batches_without_reconnecting(home):
    flow = _flow(home, [("accept", ".*/a/.*"), ("reject", ".*")],
                 [delivery("/a/1"), delivery("/b/1")])
    run_batches(flow)
    assert flow.reporter.sent == [("/a/1", 201)]
    flow.load_config = lambda: _cfg(home, ("accept", ".*/b/.*"), ("reject", ".*"))
    assert not reload.between_batches(flow)         # nothing asked for yet
    flow.reload_event.set()
    assert reload.between_batches(flow)
    assert not flow.reload_event.is_set()
    flow.consumer.inbox += [delivery("/a/2"), delivery("/b/2")]
    run_batches(flow)
    assert flow.reporter.sent == [("/a/1", 201), ("/b/2", 201)]
    assert sorted(flow.consumer.acked) == ["/a/1", "/a/2", "/b/1", "/b/2"]  # none lost
    assert flow.connects == 0


def test_a_broker_change_reconnects(home):
    flow = _flow(home, [], [])
    flow.load_config = lambda: _cfg(home, ("broker", "amqp://other@localhost/"))
    flow.reload_event.set()
    assert reload.between_batches(flow)
    assert flow.connects == 1 and flow.cfg.broker == "amqp://other@localhost/"


def test_a_post_broker_change_reconnects_through_flow_connect(home):
    flow = _flow(home, [], [])
    flow.load_config = lambda: _cfg(home, ("post_broker", "amqp://p@localhost/"))
    flow.reload_event.set()
    assert reload.between_batches(flow)
    assert flow.connects == 1 and flow.cfg.post_broker == "amqp://p@localhost/"


def test_a_config_that_no_longer_loads_keeps_the_one_in_force(home, caplog):
    flow = _flow(home, [("accept", ".*/a/.*")], [])
    before = flow.cfg

    def broken():
        raise config.ConfigError("/x/t.conf:3: option 'accept': bad regular expression")
    flow.load_config = broken
    flow.reload_event.set()
    with caplog.at_level("ERROR"):
        assert not reload.between_batches(flow)
    assert flow.cfg is before
    assert "/x/t.conf:3" in caplog.text and "configuration in force kept" in caplog.text


def test_a_plugin_that_does_not_load_keeps_everything(home, caplog):
    flow = _flow(home, [], [])
    before, hooks = flow.cfg, flow.hooks
    flow.load_config = lambda: _cfg(home, ("on_message", "no_such_plugin_here"))
    flow.reload_event.set()
    with caplog.at_level("ERROR"):
        assert not reload.between_batches(flow)
    assert flow.cfg is before and flow.hooks is hooks


def test_a_statehost_change_needs_a_restart(home, caplog):
    flow = _flow(home, [], [])
    flow.load_config = lambda: _cfg(home, ("statehost", "on"))
    flow.reload_event.set()
    with caplog.at_level("ERROR"):
        assert not reload.between_batches(flow)
    assert "statehost" in caplog.text


def test_without_a_loader_it_says_so(home, caplog):
    flow = _flow(home, [], [])
    flow.reload_event.set()
    assert not reload.between_batches(flow)
    assert "restart" in caplog.text


def test_instance_signals_reload_does_not_end_the_process():
    seen = threading.Event()
    old = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        instances.instance_signals(on_reload=seen.set)
        os.kill(os.getpid(), signal.SIGHUP)
        assert seen.wait(2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ------------------------------------------------------------------ rename

def _touch(p, text="x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_rename_moves_state_files_and_logs(home):
    cache = home / ".cache" / "sarra"
    st = cache / "subscribe" / "a"
    for n in ("sr_subscribe_a_01.pid", "sr_subscribe_a.state", "sr_subscribe_a_01.retry",
              "sr_subscribe.a.guest.qname", ".sr_subscribe_a.lock", "recent_files_001.cache",
              "sr_subscribe_ab_01.pid"):
        _touch(st / n)
    log = cache / "log"
    for n in ("sr_subscribe_a_01.log", "sr_subscribe_a_01.log.2026-12-01",
              "sr_subscribe_a_b_01.log", "sr_sarra_a_01.log"):
        _touch(log / n)
    rename.move("subscribe", "a", "b")
    assert not st.exists()
    assert sorted(os.listdir(cache / "subscribe" / "b")) == [
        ".sr_subscribe_b.lock", "recent_files_001.cache", "sr_subscribe.b.guest.qname",
        "sr_subscribe_ab_01.pid", "sr_subscribe_b.state", "sr_subscribe_b_01.pid",
        "sr_subscribe_b_01.retry"]
    assert sorted(os.listdir(log)) == [
        "sr_sarra_a_01.log", "sr_subscribe_a_b_01.log", "sr_subscribe_b_01.log",
        "sr_subscribe_b_01.log.2026-12-01"]


def test_rename_refuses_a_state_directory_that_exists(home):
    cache = home / ".cache" / "sarra" / "subscribe"
    _touch(cache / "a" / "sr_subscribe_a.state")
    _touch(cache / "b" / "sr_subscribe_b.state")
    with pytest.raises(rename.RenameError) as e:
        rename.move("subscribe", "a", "b")
    assert str(cache / "b") in str(e.value)
    assert (cache / "a" / "sr_subscribe_a.state").exists()     # nothing moved


def test_the_actions_are_known():
    assert "reload" in common.CONSUMER_ACTIONS and "rename" in common.CONSUMER_ACTIONS
    from sarra.commands import watch
    assert "reload" in watch.ACTIONS and "rename" in watch.ACTIONS


def test_reload_is_not_an_outcome():
    assert not issubclass(reload.ReloadRefused, Outcome)
