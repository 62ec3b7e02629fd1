"""The engine's source seam (sarra/flow/sources.py) with fakes: a built source's posts go
through the one post step, its state is committed only after the confirms, a failed
confirm gives the batch back, a one-shot run ends by itself, and the queue stays the
default source."""

import json
import logging
import os
import threading

import pytest

from sarra import message
from sarra.broker.client import BrokerError
from sarra.config import parser as config
from sarra.flow import engine, postsource, presets, sources
from sarra.flow.engine import Flow
from sarra.flow.pluginview import PluginParent
from sarra.flow.sources import Announced, QueueSource, Source


class FakeBroker:
    """Stands for sarra.broker.client.Broker in Flow.connect (records what is asked)."""
    made = []

    fail_confirms = False

    def __init__(self, url, **kw):
        self.url, self.kw = url, kw
        self.log = []
        FakeBroker.made.append(self)

    def connect(self):
        self.log.append("connect")

    def declare_exchange(self, name):
        self.log.append(("declare", name))

    def publish(self, exchange, topic, body, headers, persistent=True):
        self.log.append(("publish", exchange, body.split()[2]))

    def wait_confirms(self, timeout=30):
        self.log.append("confirms")
        if self.fail_confirms:
            raise BrokerError("connection lost while waiting for confirms")

    def tick(self):
        pass

    def close(self):
        self.log.append("close")


@pytest.fixture
def fake_broker(monkeypatch):
    FakeBroker.made = []
    monkeypatch.setattr(engine, "Broker", FakeBroker)
    return FakeBroker


def post(relpath, sum_=None):
    return message.make_post("20240101000000.0", "file:/", relpath,
                             {"sum": sum_ or "d,d41d8cd98f00b204e9800998ecf8427e",
                              "parts": "1,0,1,0,0"})


class ListSource(Source):
    """A one-shot source of prepared batches; records what the engine calls."""
    one_shot = True
    what = "a list"

    def __init__(self, flow, batches=()):
        super().__init__(flow)
        self.batches = [list(b) for b in batches]
        self.calls = []

    def start(self):
        self.calls.append("start")

    def get(self, wait):
        if not self.batches:
            return []
        return [Announced(m, 0.0) for m in self.batches.pop(0)]

    def done(self, batch):
        broker = self.flow.post_broker
        self.calls.append(("done", [w.msg.relpath for w in batch if w.posts],
                           broker.log[-1]))

    def failed(self, batch, error):
        self.calls.append(("failed", len(batch), str(error)))

    def finished(self):
        return not self.batches

    def close(self):
        self.calls.append("close")


def poster_cfg(home, *extra):
    return config.load("post", None, [("post_broker", "amqp://u:p@localhost/"),
                                      ("post_base_url", "file:/"),
                                      ("post_exchange", "xs_u"), *extra])


def test_a_built_batch_is_posted_then_confirmed_then_done(home, fake_broker):
    cfg = poster_cfg(home)
    flow = Flow(cfg, presets.preset("post"),
                source=lambda f: ListSource(f, [[post("/a"), post("/b")], [post("/c")]]))
    assert flow.run() == 0
    src, (broker,) = flow.source, fake_broker.made
    assert src.calls[0] == "start" and src.calls[-1] == "close"
    # each batch: published, then its confirms, and only then done()
    assert src.calls[1:3] == [("done", ["/a", "/b"], "confirms"), ("done", ["/c"], "confirms")]
    assert [e for e in broker.log if e[0] == "publish"] == [
        ("publish", "xs_u", "/a"), ("publish", "xs_u", "/b"), ("publish", "xs_u", "/c")]
    assert broker.log[:2] == ["connect", ("declare", "xs_u")]
    assert flow.counters["posted"] == 3 and flow.counters["received"] == 3
    assert flow.broker is None and flow.consumer is None     # no queue for a poster


def test_unconfirmed_posts_go_back_to_the_source_not_done(home, fake_broker, monkeypatch):
    cfg = poster_cfg(home)
    stop = threading.Event()
    flow = Flow(cfg, presets.preset("post"), stop_event=stop,
                source=lambda f: ListSource(f, [[post("/a")]]))
    flow.connect()
    flow.post_broker.fail_confirms = True
    monkeypatch.setattr(stop, "wait", lambda t=None: None)       # the 1 s pause
    flow.handle(flow.source.get(0))
    assert flow.source.calls == [("failed", 1, "connection lost while waiting for confirms")]


def test_the_default_failed_ends_a_one_shot_run_with_3(home, fake_broker, monkeypatch):
    class Once(ListSource):
        failed = Source.failed          # raise: the run ends, the command exits 3

    cfg = poster_cfg(home)
    flow = Flow(cfg, presets.preset("post"), source=lambda f: Once(f, [[post("/a")]]))
    monkeypatch.setattr(flow.stop_event, "wait", lambda t=None: None)
    monkeypatch.setattr(FakeBroker, "fail_confirms", True)     # every broker made
    assert flow.run() == 3
    assert "confirms" in str(flow.error)
    assert "close" in flow.source.calls


def test_poster_duplicates_are_suppressed_and_a_removal_forgets_the_path(home, fake_broker):
    cfg = poster_cfg(home, ("suppress_duplicates", "300"))
    removal = post("/a", sum_="R,0")
    flow = Flow(cfg, presets.preset("post"),
                source=lambda f: ListSource(f, [[post("/a"), post("/a")], [removal],
                                                [post("/a")]]))
    assert flow.run() == 0
    published = [e[2] for e in fake_broker.made[0].log if e[0] == "publish"]
    assert published == ["/a", "/a", "/a"]      # the second is a duplicate; after R: new
    assert flow.counters["duplicates"] == 1
    assert flow.source.calls[1] == ("done", ["/a"], "confirms")


def test_on_post_sees_the_plugin_parent_and_may_drop_a_post(home, fake_broker):
    cfg = poster_cfg(home)
    flow = Flow(cfg, presets.preset("post"),
                source=lambda f: ListSource(f, [[post("/keep"), post("/drop")]]))
    seen = []

    def on_post(parent):
        seen.append((type(parent), parent.msg.relpath, parent.post_exchange))
        return parent.msg.relpath != "/drop"
    flow.hooks.add_callable("on_post", on_post, "test")
    assert flow.run() == 0
    assert seen == [(PluginParent, "/keep", "xs_u"), (PluginParent, "/drop", "xs_u")]
    assert [e[2] for e in fake_broker.made[0].log if e[0] == "publish"] == ["/keep"]


def test_the_queue_is_the_default_source_and_a_preset_may_name_one_by_string(home):
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(home / "dst"))])
    flow = Flow(cfg, presets.preset("subscribe"))
    assert type(flow.source) is QueueSource and flow.source.consumes
    named = presets.Preset("post", posts=True, reports=False,
                           source="sarra.flow.postsource:PathSource")
    assert type(sources.make(flow, named.source)) is postsource.PathSource
    assert presets.preset("watch").source == "sarra.watch.daemon:WatchSource"


def test_sr_post_loads_only_the_plugins_it_runs(home):
    cfg = poster_cfg(home)
    log = logging.getLogger("test_flow_sources")
    log.setLevel(logging.INFO)
    flow = Flow(cfg, presets.preset("post"), logger=log)
    assert cfg.plugins.get("on_heartbeat")                # the table has defaults...
    assert flow.hooks.names("on_heartbeat") == []        # ...that sr_post does not load
    assert flow.hooks.names("on_post") == ["post_log"]   # at loglevel info
    log.setLevel(logging.WARNING)
    assert Flow(cfg, presets.preset("post"), logger=log).hooks.names("on_post") == []
    watch = config.load("watch", None, [("post_broker", "amqp://u:p@localhost/"),
                                        ("post_base_url", "file:/"), ("path", str(home))])
    wflow = Flow(watch, presets.preset("watch"), logger=log)
    wflow.source.close()
    assert wflow.hooks.names("on_heartbeat")             # sr_watch: as it always did


def test_path_source_reports_one_line_per_bad_path_and_posts_the_others(home, tmp_path,
                                                                        fake_broker):
    data = tmp_path / "data"
    (data / "d").mkdir(parents=True)
    (data / "d" / "one.txt").write_text("1")
    (data / "two.txt").write_text("2")
    cfg = poster_cfg(home, ("post_base_dir", str(data)))
    flow = Flow(cfg, presets.preset("post"))
    flow.source.paths = [str(data / "d"), str(data / "missing.txt"), str(data / "two.txt")]
    assert flow.run() == 0
    assert flow.source.errors == [f"{data / 'missing.txt'}: no such file or directory"]
    published = [e[2] for e in fake_broker.made[0].log if e[0] == "publish"]
    assert published == ["/d/one.txt", "/two.txt"]
    assert fake_broker.made[0].kw.get("reconnect") is False      # one-shot: no retry loop


def test_sr_post_posts_in_batches_and_waits_for_the_confirms_once(home, tmp_path,
                                                                   fake_broker, monkeypatch):
    """No pause in the publish pipeline per batch (Source.confirm_at_end): one wait for
    every confirm, before the run ends; a batch's done() comes after its publish."""
    monkeypatch.setattr(postsource, "BATCH", 3)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(7):
        (data / f"f{i}").write_text(str(i))
    cfg = poster_cfg(home, ("post_base_dir", str(data)))
    flow = Flow(cfg, presets.preset("post"))
    flow.source.paths = [str(data)]
    batches = []
    done = flow.source.done
    monkeypatch.setattr(flow.source, "done", lambda b: (batches.append(len(b)), done(b)))
    assert flow.run() == 0
    assert batches == [3, 3, 1]
    log = fake_broker.made[0].log
    kinds = [e if isinstance(e, str) else e[0] for e in log]
    assert kinds == ["connect", "declare"] + ["publish"] * 7 + ["confirms", "close"]


def test_stats_hold_the_source_fields_and_a_one_shot_writes_none(home, fake_broker):
    class Counting(ListSource):
        one_shot = False

        def stats(self):
            return {"watched": 42}

    cfg = poster_cfg(home)
    flow = Flow(cfg, presets.preset("post"), source=lambda f: Counting(f))
    flow.write_stats()
    path = os.path.join(flow.user_cache_dir, "sr_post_-_01.stats")
    with open(path) as f:
        assert json.load(f)["watched"] == 42
    os.unlink(path)
    flow = Flow(cfg, presets.preset("post"))
    flow.write_stats()
    assert not os.path.exists(path)


def test_source_heartbeat_runs_after_on_heartbeat(home, fake_broker):
    order = []

    class Beating(ListSource):
        def heartbeat(self, now):
            order.append("source")

    cfg = poster_cfg(home)
    flow = Flow(cfg, presets.preset("post"), source=lambda f: Beating(f))
    flow.hooks.add_callable("on_heartbeat", lambda parent: order.append("hook"), "t")
    flow._next_heartbeat = 0
    flow.heartbeat()
    assert order == ["hook", "source"]


def test_sr_post_confirms_refused_at_the_end_give_3(home, tmp_path, fake_broker,
                                                    monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("f")
    cfg = poster_cfg(home, ("post_base_dir", str(data)))
    flow = Flow(cfg, presets.preset("post"))
    flow.source.paths = [str(data / "f")]
    monkeypatch.setattr(FakeBroker, "fail_confirms", True)     # every broker made
    assert flow.run() == 3
    assert "confirms" in str(flow.error)
