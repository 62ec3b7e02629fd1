"""Variants of issue 16's attacks found by a second look (red team): each is refused."""

import os

from sarra import message
from sarra.config import parser as config
from sarra.flow import presets as components, download
from sarra.flow.engine import Flow
from sarra.flow.work import Outcome, Work
from tests.support.flowfakes import FakeReporter


def _flow(directory, extra=()):
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", directory), ("mirror", "on")]
                      + list(extra))
    flow = Flow(cfg, components.preset("subscribe"))
    flow.reporter = FakeReporter()
    return flow


def _run(flow, relpath, headers):
    w = Work(message.make_post("20240101000000.0", "http://h/", relpath, headers))
    try:
        download.destination(flow, w)
        download.download(flow, w)
    except Outcome as e:
        return e.code, e.text
    return w.code, w.text


def test_source_header_with_a_path_cannot_move_the_directory(tmp_path):
    """directory .../${SOURCE} (the guide's form) and an upstream's source '../../victim':
    a removal post then deleted a file outside the tree."""
    victim = tmp_path / "victim" / "a"
    victim.mkdir(parents=True)
    (victim / "f").write_text("keep me")
    flow = _flow(str(tmp_path / "tree" / "${SOURCE}"))
    for source in ("../victim", "..", "x/../../victim"):
        code, text = _run(flow, "/a/f", {"sum": "R," + "0" * 128, "source": source})
        assert code == 403 and "not a plain name" in text, (source, code, text)
    assert (victim / "f").read_text() == "keep me"
    assert not os.path.exists(tmp_path / "tree")
    # a plain source name still works
    (tmp_path / "tree" / "alice" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "alice" / "a" / "f").write_text("x")
    code, _ = _run(flow, "/a/f", {"sum": "R," + "0" * 128, "source": "alice"})
    assert code == 201 and not (tmp_path / "tree" / "alice" / "a" / "f").exists()


def _ingest_reports(home, exchange, extra=()):
    """The (code, text) sr_sarra (source_from_exchange, binding xs_alice) reports for one
    post delivered from ``exchange``."""
    from sarra.broker.client import Delivery, DeliveryTag
    from tests.support.flowfakes import FakeConsumer
    cfg = config.load("sarra", None, [("broker", "amqp://u:p@pump:5672/"),
                                      ("exchange", "xs_alice"),
                                      ("source_from_exchange", "on")] + list(extra))
    flow = Flow(cfg, components.preset("sarra"))
    flow.consumer, flow.reporter = FakeConsumer(), FakeReporter()
    got = []
    flow.reporter.report = lambda msg, code, text, received: got.append((code, text))
    flow.hooks.run = lambda *a, **k: False      # stop after the check: no transfer here
    m = message.make_post("20240101000000.0", "http://pump/", "/20240101/alice/f",
                          {"sum": "d," + "0" * 32, "parts": "1,1,1,0,0", "source": "alice"})
    topic, body, hdrs = m.encode()
    flow.consumer.inbox.append(Delivery(exchange, topic, body, b"", hdrs,
                                        DeliveryTag(1, 0), False, {}))
    flow.handle(flow.gather())
    return got


def test_pump_refuses_what_an_exchange_to_exchange_binding_brings(home):
    """alice binds xs_alice to xpublic (her permissions allow it): the pump's own posts came
    back to its ingest from 'xpublic' with their sources as claimed, and every file was
    fetched and published again one level deeper, ~170 times over."""
    got = _ingest_reports(home, "xpublic")
    assert len(got) == 1 and got[0][0] == 403 and "does not bind" in got[0][1], got
    assert _ingest_reports(home, "xs_alice") == []      # bound: on to on_message
    cfg = config.load("sarra", None, [("broker", "amqp://u:p@pump:5672/"),
                                      ("exchange", "xs_alice"), ("exchange_split", "on")])
    assert not components.delivered_unbound("xs_alice01", cfg)     # an instance's split
    assert components.delivered_unbound("xs_alice_x", cfg)
    assert not components.delivered_unbound("", cfg)


def test_report_shovel_drops_what_an_exchange_to_exchange_binding_brings(home):
    """alice binds xs_alice to xr_alice: her rr_alice2xreport shovel got back every report
    routed to her (delivered from 'xr_alice', so not stamped) and put it on xreport again:
    one report of hers circulated for ever (~500 a second)."""
    import types
    from sarra.message import Message, Report
    from sarra.plugins import msg_by_user
    cfg = config.load("shovel", None, [("broker", "amqp://feeder:p@pump/"),
                                       ("exchange", "xs_alice"), ("subtopic", "#")])

    def parent(exchange):
        msg = Message("20240315121500.11", "https://pump/", "/a", {"source": "alice"},
                      topic="v02.report.a", exchange=exchange, kind="report",
                      report=Report(201, "h", "alice", 0.1))
        p = types.SimpleNamespace(msg=types.SimpleNamespace(msg=msg), cfg=cfg, logger=None)
        p.get_option = lambda name, default=None: {"msg_by_user": ["alice"]}.get(name, default)
        return p
    assert msg_by_user.on_message(parent("xs_alice")) is True
    assert msg_by_user.on_message(parent("xr_alice")) is False
    assert msg_by_user.on_message(parent("xreport")) is False


def test_a_pump_reposts_oldname_and_newname_in_its_own_tree(home, tmp_path):
    """alice's post carried oldname /<day>/bob/precious.dat (bob's file in the pump's public
    tree); the pump re-posted it as is, so a downstream v2 subscriber renaming by oldname
    (spec components.md: 'oldname: try a local rename of the old file') moved bob's file to
    alice's name. The names are now placed as the relpath is: in alice's tree."""
    tree = tmp_path / "pump"
    cfg = config.load("sarra", None, [
        ("broker", "amqp://feeder:p@pump/"), ("exchange", "xs_alice"),
        ("source_from_exchange", "on"), ("mirror", "on"), ("post_base_dir", str(tree)),
        ("directory", str(tree) + "/20240101/${SOURCE}"),
        ("post_base_url", "http://pump/"), ("post_exchange", "xpublic")])
    flow = Flow(cfg, components.preset("sarra"))
    work = Work(message.make_post("20240101000000.0", "http://alice/", "/new.dat", {
        "sum": "d," + "0" * 32, "parts": "1,1,1,0,0", "source": "alice",
        "oldname": "/20240101/bob/precious.dat", "newname": "../../x"},
        exchange="xs_alice"))
    download.destination(flow, work)
    post = download.repost(flow, work, work.local_path)
    assert post.relpath == "/20240101/alice/new.dat"
    assert post.headers["oldname"] == "/20240101/alice/20240101/bob/precious.dat"
    assert "newname" not in post.headers        # '..': not placed in the tree at all


def test_an_sftp_session_is_not_reused_for_another_password(monkeypatch):
    """As ftp and http (tests/integration/test_hostile_more.py): a session opened with the
    password one URL gives is not reused for a URL naming the same user with another.
    (paramiko faked: the logins the driver makes are recorded.)"""
    import logging
    import types
    from sarra.transfer import sftp
    logins = []

    class Client:
        def load_system_host_keys(self):
            pass

        def set_missing_host_key_policy(self, policy):
            pass

        def connect(self, host, password=None, **kw):
            logins.append(password)

        def get_transport(self):
            return types.SimpleNamespace(set_keepalive=lambda n: None, is_active=lambda: True)

        def close(self):
            pass
    channel = types.SimpleNamespace(settimeout=lambda t: None)
    monkeypatch.setattr(sftp.paramiko, "SSHClient", Client)
    monkeypatch.setattr(sftp.paramiko.SFTPClient, "from_transport", classmethod(
        lambda cls, t, **kw: types.SimpleNamespace(get_channel=lambda: channel,
                                                   close=lambda: None)))
    t = sftp.SftpTransfer(credentials=lambda url: None, timeout=5,
                          logger=logging.getLogger("t"))
    t._session("sftp://alice:right@h/a")
    t._session("sftp://alice:right@h/b")
    t._session("sftp://alice:guessed@h/private")
    assert logins == ["right", "guessed"]


def test_a_flow_keeps_a_bounded_number_of_transfer_drivers(home, monkeypatch):
    """One driver, and its open connection, per scheme/host/port/user a message names: a
    source naming a thousand users of its own server held a thousand sockets (kept alive by
    that server) in every pump instance, until none could open a file (EMFILE)."""
    from sarra.flow import engine as flowmod
    from sarra.transfer.http import HttpTransfer
    closed = []
    monkeypatch.setattr(HttpTransfer, "close", lambda self: closed.append(self))
    bound = getattr(flowmod, "MAX_DRIVERS", 64)
    f = _flow(str(home / "dst"))
    for i in range(3 * bound):
        f.transfer_for("http://u%d@h/f" % i, "http://u%d@h/" % i)
    assert len(f.transfers) <= bound and len(f._by_base) <= bound
    assert len(closed) >= 2 * bound
    same = f.transfer_for("http://u0@h/g")          # below the bound: still reused
    assert f.transfer_for("http://u0@h/h") is same


def test_a_name_whose_temporary_name_is_too_long_is_refused_once(home):
    """A name of 252 to 255 bytes passed the NAME_MAX check, but its temporary name (.tmp,
    or a part file's .<bsz>.<blktot>.<brem>.<bno>.<algo>.Part.tmp) did not fit: 499, retried
    from the retry queue again and again. Now 403 before any transfer, not retried."""
    import pytest
    from sarra.flow import msgbounds
    for inplace, name, parts in (("off", "n" * 253, "1,16,1,0,0"),
                                 ("off", "n" * 240, "p,16,3,0,1"),
                                 ("on", "n" * 253, "i,16,3,0,1")):
        flow = _flow(str(home / "dst"), [("inplace", inplace)])
        w = Work(message.make_post("20240101000000.0", "http://h/", "/" + name,
                                   {"sum": "d," + "0" * 32, "parts": parts}))
        download.destination(flow, w)
        with pytest.raises(Outcome) as e:
            msgbounds.check_work(flow, w)
        assert e.value.code == 403 and not e.value.retry, (parts, e.value.text)
    ok = Work(message.make_post("20240101000000.0", "http://h/", "/" + "n" * 200,
                                {"sum": "d," + "0" * 32, "parts": "p,16,3,0,1"}))
    download.destination(flow, ok)
    msgbounds.check_work(flow, ok)


def test_a_link_whose_temporary_name_is_too_long_is_refused_once(home):
    import pytest
    from sarra.flow import msgbounds
    flow = _flow(str(home / "dst"))
    w = Work(message.make_post("20240101000000.0", "http://h/", "/" + "l" * 248,
                               {"sum": "L," + "0" * 128, "link": "x"}))
    download.destination(flow, w)
    with pytest.raises(Outcome) as e:
        msgbounds.check_work(flow, w)
    assert e.value.code == 403 and not e.value.retry
