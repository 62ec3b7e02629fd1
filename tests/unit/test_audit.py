"""sr_police without a broker: permission regexes, the pump model, the survey against an
in-memory management API, report routing shovels and plugins, sr_sarra's source check."""

import base64
import hashlib
import io
import os
import re
import types
from contextlib import redirect_stdout

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sarra import paths
from sarra.ops import audit
from sarra.config import parser as config
from sarra.ops.audit import Police, Pump, pump_from_config, role_permissions
from sarra.commands import audit as audit_cmd
from sarra.message import Message, Report
from sarra.broker.admin import ApiError, api_url_for, password_matches


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    (h / ".config").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(h / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(h / ".cache"))
    return h


def write(relpath, text, mode=0o644):
    path = os.path.join(paths.config_dir(), relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def can(regex, name):
    return re.search(regex, name) is not None      # RabbitMQ searches, unanchored


# ------------------------------------------------------------------ regexes

USERS = ["alice", "alice2", "bob"]


@pytest.mark.parametrize("name,kind,expected", [
    ("q_alice.sr_subscribe.x.1.2", "configure", True),
    ("q_alice2.sr_subscribe.x.1.2", "configure", False),
    ("q_alice", "configure", False),
    ("q_alicex.y", "configure", False),
    ("xs_alice", "configure", False),            # no exchange can be declared or deleted
    ("xpublic", "configure", False),
    ("xs_alice", "write", True),
    ("xs_alice_private", "write", True),
    ("xs_alice07", "write", True),
    ("xs_alice2", "write", False),
    ("xs_alice2_private", "write", False),
    ("xs_alice200", "write", False),
    ("xs_bob", "write", False),
    ("xpublic", "write", False),
    ("xreport", "write", False),
    ("xr_alice", "write", False),
    ("q_alice.a.b", "write", True),               # queue.bind needs write on the queue
    ("xpublic", "read", True),
    ("xr_alice", "read", True),
    ("xr_alice2", "read", False),
    ("xr_alice_x", "read", False),
    ("xreport", "read", False),
    ("xs_alice2", "read", False),
    ("xs_bob", "read", False),
    ("q_alice2.a", "read", False),
    ("amq.default", "write", False),
    ("xpublicity", "read", False),
])
def test_source_alice(name, kind, expected):
    c, w, r = role_permissions("alice", "source", USERS)
    regex = {"configure": c, "write": w, "read": r}[kind]
    assert can(regex, name) is expected


def test_subscriber_reads_xpublic_but_no_report_exchange():
    c, w, r = role_permissions("carol", "subscriber", ["carol", "alice"])
    assert can(r, "xpublic") and can(r, "q_carol.x")
    assert not can(r, "xr_carol") and not can(r, "xr_alice") and not can(r, "xreport")
    assert can(w, "xs_carol") and not can(w, "xs_alice")
    assert not can(c, "xs_carol")


def test_admin_and_feeder_have_everything():
    assert role_permissions("f", "feeder") == (".*", ".*", ".*")
    assert role_permissions("a", "admin") == (".*", ".*", ".*")
    with pytest.raises(ValueError):
        role_permissions("x", "nobody")


def test_prefix_users_with_separators():
    users = ["alice", "alice_b", "alice12", "alice.x"]
    c, w, r = role_permissions("alice", "source", users)
    for mine in ("xs_alice", "xs_alice_bx", "xs_alice_private", "xs_alice07"):
        assert can(w, mine), mine
    for theirs in ("xs_alice_b", "xs_alice_b_p", "xs_alice_b00", "xs_alice12",
                   "xs_alice12_p", "xs_alice1200"):
        assert not can(w, theirs) and not can(r, theirs), theirs
    assert can(c, "q_alice.sr_x.y") and not can(c, "q_alice.x.sr_x.y")


def test_metacharacters_are_escaped():
    c, w, r = role_permissions("a.b+", "source", ["a.b+"])
    assert can(w, "xs_a.b+") and not can(w, "xs_aXbb")


NAME = st.text(alphabet="ab_.1", min_size=1, max_size=5)


def owned_names(user, users):
    """Names user may own, by the kinds the spec generates, that user's regexes grant."""
    cands = ["q_%s.sr_subscribe.c.1.2" % user, "xs_%s" % user, "xs_%s_p" % user,
             "xs_%s_1" % user, "xs_%s00" % user, "xs_%s12" % user, "xr_%s" % user]
    c, w, r = role_permissions(user, "source", users)
    return [n for n in cands if can(w, n) or can(r, n)]


@settings(max_examples=300, deadline=None)
@given(NAME, NAME)
def test_no_user_reaches_another_users_names(u, v):
    if u == v:
        return
    users = [u, v]
    cu, wu, ru = role_permissions(u, "source", users)
    for name in owned_names(v, users):
        if name.startswith("xr_") or name.startswith("q_"):
            assert not can(ru, name), (u, v, name)
        assert not can(wu, name) and not can(cu, name), (u, v, name)
    # every user keeps its basic names
    assert can(cu, "q_%s.sr_post.c.1.2" % u)
    assert can(wu, "xs_%s" % u) and can(ru, "xr_%s" % u) and can(ru, "xpublic")


# ------------------------------------------------------------------ pump model

def test_pump_from_config(home):
    write("admin.conf", "admin amqp://boss@pump.example.org/\n"
                        "feeder amqp://feeder@pump.example.org/\n"
                        "declare source alice\ndeclare subscriber anonymous carol\n"
                        "declare subscriber alice\ndeclare exchange xcustom\n"
                        "declare exchange xotherpublic\n")
    cfg = config.load("audit")
    pump = pump_from_config(cfg)
    assert pump.roles == {"boss": "admin", "feeder": "feeder", "alice": "source",
                          "anonymous": "subscriber", "carol": "subscriber"}
    assert any("alice" in n for n in pump.notes)
    assert pump.api_url == "http://pump.example.org:15672/"
    assert pump.vhost == "/"
    assert pump.expected_exchanges() == ["xpublic", "xreport", "xcustom", "xotherpublic",
                                         "xs_alice", "xp_alice", "xr_alice", "xs_anonymous",
                                         "xp_anonymous", "xs_carol", "xp_carol"]
    assert can(pump.permissions("carol")[2], "xotherpublic")
    assert pump.user_url("carol") == "amqp://carol@pump.example.org:5672/"
    assert pump.owns_exchange("xs_alice_priv") and not pump.owns_exchange("xs_mallory")
    assert pump.owns_exchange("xl_carol") and not pump.owns_exchange("xr_carol")
    assert pump.queue_owner("q_carol.sr_subscribe.x") == "carol"
    assert pump.queue_owner("q_mallory.x") is None


def test_pump_config_errors(home):
    with pytest.raises(config.ConfigError, match="admin.conf"):
        pump_from_config(config.load("audit"))
    write("admin.conf", "admin amqp://boss@h/\ndeclare exchange public\n")
    with pytest.raises(config.ConfigError, match="does not start with 'x'"):
        pump_from_config(config.load("audit"))


def test_api_url():
    assert api_url_for("amqps://u@h.example/") == "https://h.example:15671/"
    assert api_url_for("amqp://u@[::1]/") == "http://[::1]:15672/"
    assert api_url_for("amqp://u@h/", "http://x:1") == "http://x:1/"


def test_password_matches():
    salt = b"\x01\x02\x03\x04"
    stored = base64.b64encode(salt + hashlib.sha256(salt + "pé".encode()).digest()).decode()
    info = {"password_hash": stored, "hashing_algorithm": "rabbit_password_hashing_sha256"}
    assert password_matches(info, "pé") is True
    assert password_matches(info, "pe") is False
    assert password_matches({"password_hash": ""}, "x") is False
    assert password_matches({"password_hash": stored, "hashing_algorithm": "odd"}, "x") is None


# ------------------------------------------------------------------ survey (fake API)

class FakeAPI:
    """Just enough of ManagementAPI, in memory."""

    def __init__(self):
        self.vhosts = set()
        self.users_ = {}
        self.perms = {}         # (vhost, user) -> dict
        self.exch = {}          # (vhost, name) -> dict
        self.qs = {}            # (vhost, name) -> dict
        self.binds = []
        self.writes = []

    def _w(self, *what):
        self.writes.append(what)

    def vhost(self, v):
        return {"name": v} if v in self.vhosts else None

    def put_vhost(self, v):
        self._w("vhost", v)
        self.vhosts.add(v)

    def users(self):
        return list(self.users_.values())

    def put_user(self, name, password, tags="", keep=None):
        self._w("user", name)
        if password is None:
            h, a = keep["password_hash"], keep["hashing_algorithm"]
        else:
            salt = os.urandom(4)
            h = base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest())
            h, a = h.decode(), "rabbit_password_hashing_sha256"
        self.users_[name] = {"name": name, "password_hash": h, "hashing_algorithm": a,
                             "tags": [t for t in tags.split(",") if t]}

    def delete_user(self, name):
        self._w("deluser", name)
        self.users_.pop(name, None)
        for k in [k for k in self.perms if k[1] == name]:
            del self.perms[k]

    def permissions(self, v):
        return [dict(p, user=u, vhost=vh) for (vh, u), p in self.perms.items() if vh == v]

    def user_permissions(self, name):
        return [dict(p, user=u, vhost=vh) for (vh, u), p in self.perms.items() if u == name]

    def put_permission(self, v, user, c, w, r):
        self._w("perm", user)
        self.perms[(v, user)] = {"configure": c, "write": w, "read": r}

    def delete_permission(self, v, user):
        self._w("delperm", user)
        self.perms.pop((v, user), None)

    def exchanges(self, v):
        return [e for (vh, _), e in self.exch.items() if vh == v]

    def put_exchange(self, v, name, type_="topic", durable=True):
        self._w("exchange", name)
        self.exch[(v, name)] = {"name": name, "type": type_, "durable": durable,
                                "auto_delete": False}

    def delete_exchange(self, v, name):
        self._w("delexchange", name)
        self.exch.pop((v, name), None)

    def queues(self, v):
        return [q for (vh, _), q in self.qs.items() if vh == v]

    def delete_queue(self, v, name):
        self._w("delqueue", name)
        self.qs.pop((v, name), None)

    def bindings(self, v):
        return list(self.binds)

    def delete_exchange_binding(self, v, s, d, k):
        self._w("delbinding", s, d)
        self.binds = [b for b in self.binds if (b["source"], b["destination"]) != (s, d)]


PASSWORDS = {"boss": "bp", "feeder": "fp", "alice": "ap", "alice2": "a2p", "carol": "cp"}


def make_pump():
    return Pump("amqp://boss@h/", "amqp://feeder@h/",
                {"boss": "admin", "feeder": "feeder", "alice": "source", "alice2": "source",
                 "carol": "subscriber"}, [], "http://h:15672/")


def police(api, **kw):
    return Police(make_pump(), api, PASSWORDS.get, **kw)


def test_setup_then_nothing_to_do():
    api = FakeAPI()
    found = police(api).run(fix_setup=True, fix_all=False)
    assert found and all(f.result == "fixed" for f in found)
    assert api.users_["boss"]["tags"] == ["administrator"]
    assert api.perms[("/", "alice")] == dict(zip(("configure", "write", "read"),
                                                 make_pump().permissions("alice")))
    assert ("/", "xr_alice2") in api.exch and ("/", "xr_carol") not in api.exch
    api.writes.clear()
    assert police(api).run(fix_setup=True, fix_all=False) == []
    assert api.writes == []


def test_setup_without_password_cannot_create():
    api = FakeAPI()
    p = Police(make_pump(), api, lambda u: None if u == "carol" else PASSWORDS[u])
    found = p.run(True, False)
    carol = [f for f in found if f.what.startswith("user 'carol'") and f.fix is None]
    assert carol and "credentials.conf" in carol[0].problem and carol[0].result == "found"
    assert "carol" not in api.users_


def test_password_and_tags_drift_is_repaired_keeping_hash():
    api = FakeAPI()
    police(api).run(True, False)
    api.users_["carol"]["tags"] = ["management"]
    h = api.users_["carol"]["password_hash"]
    found = police(api).run(True, False)
    assert [f.what for f in found] == ["user 'carol' (subscriber)"]
    assert api.users_["carol"]["tags"] == [] and api.users_["carol"]["password_hash"] == h
    api.put_user("alice", "other")
    found = police(api).run(True, False)
    assert "password differs" in found[0].problem
    assert password_matches(api.users_["alice"], "ap")


def test_check_reports_and_fixes_conventions():
    api = FakeAPI()
    police(api).run(True, False)
    api.perms[("/", "alice")] = {"configure": ".*", "write": ".*", "read": ".*"}
    api.put_exchange("/", "badx")
    api.put_exchange("/", "xs_mallory")
    api.put_exchange("/", "xcustom")                   # x* but not a user's: left alone
    api.qs[("/", "foo")] = {"name": "foo", "messages": 1, "consumers": 0}
    api.qs[("/", "q_carol.big")] = {"name": "q_carol.big", "messages": 30, "consumers": 0}
    api.qs[("/", "q_carol.busy")] = {"name": "q_carol.busy", "messages": 30, "consumers": 1}
    api.users_["mallory"] = {"name": "mallory", "tags": []}
    api.perms[("/", "mallory")] = {"configure": ".*", "write": ".*", "read": ".*"}
    api.binds.append({"source": "xpublic", "destination": "xs_alice",
                      "destination_type": "exchange", "routing_key": "#",
                      "properties_key": "%23"})
    p = police(api, max_queue_size=10)
    found = p.run(False, False)
    text = "\n".join(f.line() for f in found)
    assert all(f.result == "found" for f in found)
    for what in ("user 'alice' (source)", "user 'mallory'", "exchange 'badx'",
                 "exchange 'xs_mallory'", "queue 'foo'", "queue 'q_carol.big'",
                 "binding 'xpublic' -> exchange 'xs_alice'"):
        assert what in text
    assert "xcustom" not in text and "q_carol.busy" not in text
    assert "write permission is '.*'" in text
    found = p.run(False, True)
    assert all(f.result == "fixed" for f in found), [f.line() for f in found]
    assert "mallory" not in api.users_ and ("/", "badx") not in api.exch
    assert ("/", "foo") not in api.qs and api.binds == []
    assert police(api, max_queue_size=10).run(False, False) == []


def test_dry_run_changes_nothing():
    api = FakeAPI()
    found = police(api, dry_run=True).run(True, True)
    assert found[0].what == "vhost '/'" and len(found) > 1   # the plan goes past the vhost
    assert all(f.result == "would fix" for f in found) and api.writes == []
    api.vhosts.add("/")
    found = police(api, dry_run=True).run(True, True)
    assert found and all(f.result == "would fix" for f in found) and api.writes == []


def test_dry_run_on_a_fresh_vhost_lists_what_the_run_does():
    plan = police(FakeAPI(), dry_run=True).run(True, False)
    api = FakeAPI()
    done = police(api).run(True, False)
    assert [f.what for f in plan] == [f.what for f in done]
    assert [f.result for f in plan] == ["would fix"] * len(plan)
    assert [f.result for f in done] == ["fixed"] * len(done)
    assert len(done) == len(api.writes) == 1 + 5 * 2 + 10   # vhost, users+perms, exchanges (xp_: readers)


def test_failed_vhost_creation_stops_the_run():
    api = FakeAPI()

    def refuse(*a, **k):
        raise ApiError("refused")
    api.put_vhost = refuse
    found = police(api).run(True, False)
    assert found[0].result == "failed" and api.writes == []
    assert all(f.result == "found" for f in found[1:])


def test_failed_fix_is_reported():
    api = FakeAPI()
    api.vhosts.add("/")

    def refuse(*a, **k):
        raise ApiError("PUT http://h:15672/api/exchanges/%2F/xpublic: HTTP 500 boom")
    api.put_exchange = refuse
    found = police(api).run(True, False)
    bad = [f for f in found if f.result == "failed"]
    assert bad and "boom" in bad[0].line() and bad[0].line().startswith("FAILED")


# ------------------------------------------------------------------ report shovels

def test_report_shovels_written_once(home, tmp_path):
    pump = make_pump()
    pump.feeder_url = "amqp://feeder:secret@h/"
    d = tmp_path / "shovel"
    found = audit.write_report_shovels(pump, directory=str(d))
    names = sorted(os.listdir(d))
    assert names == ["rr_alice22xreport.conf", "rr_alice2xreport.conf",
                     "rr_carol2xreport.conf", "rr_xreport_route.conf"]
    text = (d / "rr_carol2xreport.conf").read_text()
    assert "secret" not in text
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    assert lines.index("exchange xs_carol") < lines.index("subtopic #")
    assert "msg_by_user carol" in lines and "post_exchange xreport" in lines
    assert "report_back off" in lines and "on_message msg_by_user" in lines
    text = (d / "rr_xreport_route.conf").read_text()
    assert "post_exchange xr_" in text and "msg_by_source alice,alice2" in text
    assert "post_exchange_by_source on" in text
    assert len(found) == 4
    os.rename(d / "rr_carol2xreport.conf", d / "rr_carol2xreport.conf.off")
    assert audit.write_report_shovels(pump, directory=str(d)) == []
    pump.feeder_url = None
    assert audit.write_report_shovels(pump, directory=str(d))[0].fix is None


def test_shovel_config_parses(home):
    pump = make_pump()
    for name, text in audit.report_shovels(pump).items():
        write("shovel/%s.conf" % name, text)
    cfg = config.load("shovel", "rr_xreport_route", warn_unknown=False)
    assert cfg.exchange == "xreport" and cfg.post_exchange == "xr_"
    assert cfg.post_exchange_by_source is True
    assert [b.key for b in cfg.bindings] == ["v02.report.#", "v02.log.#", "v02.post"]
    assert cfg.report_back is False and cfg.plugins["on_message"] == ["msg_by_source"]
    assert cfg.msg_by_source == ["alice,alice2"]


# ------------------------------------------------------------------ plugins

def report(user="carol", source="alice", code=201, text="Downloaded"):
    return Message("20240315121500.11", "https://pump.example.org/", "/a/b%20c.txt",
                   {"sum": "d,x", "source": source, "message": text}, topic="v02.report.a",
                   kind="report", report=Report(code, "ws3.example.net", user, 0.052113))


class Parent:
    def __init__(self, msg, **opts):
        self.msg = types.SimpleNamespace(msg=msg, received=1710505502.0)
        self.opts = opts
        self.logger = None

    def get_option(self, name, default=None):
        return self.opts.get(name, default)


def test_msg_by_user():
    from sarra.plugins import msg_by_user
    assert msg_by_user.on_message(Parent(report("carol"), msg_by_user=["carol"])) is True
    assert msg_by_user.on_message(Parent(report("bob"), msg_by_user=["carol"])) is False
    assert msg_by_user.on_message(Parent(report("bob"), msg_by_user=["carol,bob"])) is True
    post = report()
    post.report, post.kind = None, "post"
    assert msg_by_user.on_message(Parent(post, msg_by_user=["carol"])) is False
    assert msg_by_user.on_message(Parent(report("carol"))) is False


def test_msg_by_source():
    from sarra.plugins import msg_by_source
    assert msg_by_source.on_message(Parent(report(source="alice"),
                                           msg_by_source=["alice"])) is True
    assert msg_by_source.on_message(Parent(report(source="alice2"),
                                           msg_by_source=["alice"])) is False
    m = report()
    del m.headers["source"]
    assert msg_by_source.on_message(Parent(m, msg_by_source=["alice"])) is False


def test_report_line(capsys):
    from sarra.plugins import report_line
    assert report_line.on_message(Parent(report(code=499, text="http  download failed")))
    out = capsys.readouterr().out
    assert out == ("2024-03-15 12:25:02Z  carol@ws3.example.net  499 http download failed  "
                   "0.052s  https://pump.example.org//a/b%20c.txt\n")
    post = report()
    post.report = None
    assert report_line.on_message(Parent(post)) is True
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------ sr_sarra's source check

def sarra_work(exchange, headers):
    from sarra.flow.engine import Work
    msg = Message("20240315121500.11", "http://src/", "/f.txt", dict(headers, sum="d," + "0" * 32),
                  topic="v02.post", exchange=exchange)
    return Work(msg)


def sarra_flow():
    cfg = types.SimpleNamespace(source_from_exchange=True, exchange_suffix=None,
                                cluster=None, broker_netloc=lambda: "pump:5672")
    return types.SimpleNamespace(cfg=cfg)


def test_impersonation_refused():
    from sarra.flow.presets import sarra_check
    from sarra.flow.engine import Outcome
    with pytest.raises(Outcome) as e:
        sarra_check(sarra_flow(), sarra_work("xs_alice", {"source": "bob"}))
    assert e.value.code == 403


def test_source_forced_to_exchange_owner():
    from sarra.flow.presets import sarra_check
    w = sarra_work("xs_alice2", {"from_cluster": "liar"})
    sarra_check(sarra_flow(), w)
    assert w.msg.headers["source"] == "alice2" and w.msg.headers["from_cluster"] == "pump:5672"
    w = sarra_work("xs_alice", {"source": "alice"})
    sarra_check(sarra_flow(), w)
    assert w.msg.headers["source"] == "alice"


# ------------------------------------------------------------------ command line

def test_take_fix():
    assert audit_cmd._take_fix(["--fix", "check"]) == (["check"], True)
    assert audit_cmd._take_fix(["check", "--fix", "off"]) == (["check"], False)
    assert audit_cmd._take_fix(["--fix=on", "check", "x"]) == (["check", "x"], True)
    assert audit_cmd._take_fix(["check"]) == (["check"], None)


def test_exit_codes(home):
    out = io.StringIO()
    with redirect_stdout(out):
        assert audit_cmd.main(["check"]) == 2                 # no admin line
        assert audit_cmd.main([]) == 2
        assert audit_cmd.main(["frobnicate"]) == 2
    write("admin.conf", "admin amqp://boss@127.0.0.1/\ndeclare source alice\n")
    with redirect_stdout(out):
        assert audit_cmd.main(["check"]) == 2                 # no admin password
    write("credentials.conf", "amqp://boss:pw@127.0.0.1/\n", 0o600)
    with redirect_stdout(out):
        assert audit_cmd.main(["--management_url", "http://127.0.0.1:9/", "check"]) == 3
        assert audit_cmd.main(["show"]) == 0
    assert "^q_alice\\..*$" in out.getvalue()
