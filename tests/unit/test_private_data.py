"""Issue 22: readers declarations (sarra/flow/readers.py), what sr_sarra takes, where
restricted posts go, the .htaccess files, and the permission that lets a user read its
own xp_ exchange only."""

import re
import types

import pytest

from sarra import message
from sarra.flow import readers
from sarra.flow.work import Outcome
from sarra.ops.audit import role_permissions


class FakeBroker:
    def __init__(self):
        self.declared = []

    def declare_exchange(self, name):
        self.declared.append(name)


def make_flow(tmp_path, **opts):
    cfg = types.SimpleNamespace(cluster="A", declared={"source": ["alice"]},
                                downstream_accounts=[], htaccess=False, post_base_dir=None,
                                broker_netloc=lambda: "localhost")
    vars(cfg).update(opts)
    cfg.state_dir = lambda: str(tmp_path)
    return types.SimpleNamespace(cfg=cfg, preset=types.SimpleNamespace(component="sarra"),
                                 post_broker=FakeBroker())


def adm(exchange, relpath="/data/", readers_="bob", **headers):
    h = {"readers": readers_, "sum": "0,0"}
    h.update(headers)
    m = message.decode("v02.adm.readers", "20261205120000.0 adm: " + relpath, h, exchange)
    return types.SimpleNamespace(msg=m, posts=[], retry_entry=None)


def post(relpath, source="alice"):
    return message.Message("20261205120000.0", "http://a/", relpath,
                           {"source": source, "sum": "d,x"})


def test_declaration_round_trip():
    m = readers.declaration("alice", "/data/obs", ["carol", "bob", "bob"], "C", "20261205120000.0")
    topic, body, headers = m.encode()
    assert topic == "v02.adm.readers" and body.split()[1:] == ["adm:", "/data/obs/"]
    d = message.decode(topic, body, headers, "xs_alice")
    assert d.kind == "adm" and d.headers["readers"] == "bob,carol"
    w = readers.declaration("alice", "", None, "", "20261205120000.0")
    assert w.headers["readers"] == "*" and w.relpath == "/"


@pytest.mark.parametrize("bad", ["a/../b", "a//b", "./x/..", "a\\b", "x\x00y", "a" * 300])
def test_hostile_prefixes_refused(bad):
    with pytest.raises(ValueError):
        readers.check_prefix(bad)


@pytest.mark.parametrize("bad", ["bob carol", "-x", "a/b", "x" * 70, ",".join("u%d" % i
                                                                           for i in range(70))])
def test_hostile_reader_names_refused(bad):
    with pytest.raises(ValueError):
        readers.check_readers(bad)


def test_private_and_withdraw_values():
    assert readers.check_readers("") == [] and readers.check_readers("*") is None


def test_rule_covers_the_source_tree_below_a_date_and_source_head(tmp_path):
    rules = readers.Rules(str(tmp_path / "r.json"))
    rules.set("alice", "data/", ["bob"])
    rules.set("alice", "data/secret/", [])
    assert rules.match("alice", "/data/x/f")[0] == "data/"
    assert rules.match("alice", "/data/secret/f")[0] == "data/secret/"
    assert rules.match("alice", "/20261205/alice/data/f")[2] == "20261205/alice/"
    # a path of alice's own naming 'alice' inside data/ stays covered
    assert rules.match("alice", "/data/alice/f")[0] == "data/"
    assert rules.match("eve", "/data/x/f") is None          # eve's data: not alice's rule
    assert rules.match("alice", "/pub/f") is None


def test_sarra_takes_a_declaration_from_its_source_and_passes_it_on(tmp_path):
    flow = make_flow(tmp_path, downstream_accounts=["b_on_a"])
    work = adm("xs_alice")
    with pytest.raises(Outcome) as o:
        readers.accept(flow, work, "alice", None)
    assert o.value.code == 201 and work.posts == [work.msg]
    assert readers.exchanges_for(flow, work.msg, "xpublic") == ["xp_b_on_a"]
    again = adm("xs_alice")                  # the same again (or a loop): not passed on
    with pytest.raises(Outcome) as o:
        readers.accept(flow, again, "alice", None)
    assert o.value.code == 201 and again.posts == []


@pytest.mark.parametrize("exchange,owner,claimed,why", [
    ("xs_eve", "eve", "alice", "claims source alice"),      # eve forging alice
    ("xs_carol", "carol", None, "not a source"),             # a subscriber
    ("xpublic", None, None, "not xpublic"),                  # no one writes there but us
])
def test_forged_declarations_refused(tmp_path, exchange, owner, claimed, why):
    flow = make_flow(tmp_path)
    work = adm(exchange, source=claimed or "alice")
    with pytest.raises(Outcome) as o:
        readers.accept(flow, work, owner, claimed)
    assert o.value.code == 403 and why in o.value.text and work.posts == []
    assert readers.rules_of(flow).data == {}


def test_upstream_declaration_from_xp_exchange(tmp_path):
    flow = make_flow(tmp_path)
    with pytest.raises(Outcome) as o:
        readers.accept(flow, adm("xp_b_on_a", source="alice"), None, None)
    assert o.value.code == 201
    assert readers.rules_of(flow).get("alice", "data/")["readers"] == ["bob"]


def test_restricted_posts_go_to_the_readers_exchanges_only(tmp_path):
    flow = make_flow(tmp_path, downstream_accounts=["b_on_a"])
    with pytest.raises(Outcome):
        readers.accept(flow, adm("xs_alice", readers_="bob,carol"), "alice", None)
    assert readers.exchanges_for(flow, post("/data/d1/f"), "xpublic") == [
        "xp_alice", "xp_b_on_a", "xp_bob", "xp_carol"]
    assert "xp_bob" in flow.post_broker.declared
    assert readers.exchanges_for(flow, post("/pub/f"), "xpublic") == ["xpublic"]
    assert readers.exchanges_for(flow, post("/data/f", "eve"), "xpublic") == ["xpublic"]
    with pytest.raises(Outcome):
        readers.accept(flow, adm("xs_alice", readers_="*"), "alice", None)
    assert readers.exchanges_for(flow, post("/data/d1/f"), "xpublic") == ["xpublic"]


def test_htaccess_written_changed_and_withdrawn(tmp_path):
    tree = tmp_path / "tree"
    flow = make_flow(tmp_path, htaccess=True, post_base_dir=str(tree))
    with pytest.raises(Outcome):
        readers.accept(flow, adm("xs_alice"), "alice", None)
    readers.exchanges_for(flow, post("/20261205/alice/data/d1/f"), "xpublic")
    h = tree / "20261205" / "alice" / "data" / ".htaccess"
    assert re.search(r"^Require user alice bob$", h.read_text(), re.M)
    with pytest.raises(Outcome):         # changed: the files already there follow it
        readers.accept(flow, adm("xs_alice", readers_="carol"), "alice", None)
    assert re.search(r"^Require user alice carol$", h.read_text(), re.M)
    with pytest.raises(Outcome):
        readers.accept(flow, adm("xs_alice", readers_="*"), "alice", None)
    assert not h.exists()


def test_a_user_reads_its_own_private_exchange_only():
    users = ["alice", "bob", "bob2", "eve"]
    for role in ("source", "subscriber"):
        _, _, read = role_permissions("bob", role, users)
        assert re.fullmatch(read, "xp_bob")
        assert not re.fullmatch(read, "xp_bob2") and not re.fullmatch(read, "xp_alice")


def test_police_repairs_drift_of_the_access_rules(tmp_path, monkeypatch):
    from sarra.ops import webdoor
    monkeypatch.setattr(webdoor, "rules_files", lambda: [str(tmp_path / "readers.json")])
    tree = tmp_path / "tree"
    flow = make_flow(tmp_path, htaccess=True, post_base_dir=str(tree),
                     downstream_accounts=["b_on_a"])
    with pytest.raises(Outcome):
        readers.accept(flow, adm("xs_alice"), "alice", None)
    readers.exchanges_for(flow, post("/data/d1/f"), "xpublic")
    h = tree / "data" / ".htaccess"
    good = h.read_text()
    assert "Require user alice b_on_a bob" in good
    assert webdoor.police(fix=False) == []
    h.unlink()                                           # deleted by hand
    (tree / "20261205" / "alice" / "data").mkdir(parents=True)   # made before its rule
    found = webdoor.police(fix=False)
    assert len(found) == 2 and all(f.result == "found" and f.fix for f in found)
    assert "missing" in found[0].problem
    assert [f.result for f in webdoor.police(fix=True)] == ["fixed", "fixed"]
    assert h.read_text() == good
    assert (tree / "20261205" / "alice" / "data" / ".htaccess").read_text() == good
    h.write_text("Require all granted\n")                # changed by hand
    assert "differs" in webdoor.police(fix=False)[0].problem
    assert webdoor.police(fix=False, dry_run=True)[0].result == "found"
    assert webdoor.police(fix=True, dry_run=True)[0].result == "would fix"


def test_site_config_and_htpasswd(tmp_path, monkeypatch):
    import bcrypt
    from sarra.ops import webdoor
    monkeypatch.setattr(webdoor.paths, "config_dir", lambda: str(tmp_path))
    d = tmp_path / "web"
    written = webdoor.write_web({"bob": "pw1", "eve": "pw2", "bad:name": "x"}, str(tmp_path),
                                "*:443", "/c.pem", "/k.pem", directory=str(d))
    assert len(written) == 2 and webdoor.is_set_up()
    lines = (d / "htpasswd").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["bob", "eve"]
    h = lines[0].split(":", 1)[1]
    assert h.startswith("$2y$") and bcrypt.checkpw(b"pw1", ("$2b$" + h[4:]).encode())
    assert oct((d / "htpasswd").stat().st_mode & 0o777) == "0o640"
    site = (d / "sarra-site.conf").read_text()
    assert "AllowOverride AuthConfig" in site and "SSLEngine on" in site
    assert 'AuthUserFile "%s"' % (d / "htpasswd") in site
    # the same users again: nothing rewritten; a changed password: the htpasswd only
    assert webdoor.write_web({"bob": "pw1", "eve": "pw2"}, str(tmp_path), "*:443", "/c.pem",
                             "/k.pem", directory=str(d)) == []
    assert webdoor.write_web({"bob": "new", "eve": "pw2"}, str(tmp_path), "*:443", "/c.pem",
                             "/k.pem", directory=str(d)) == [str(d / "htpasswd")]


@pytest.mark.parametrize("exchange,baseurl,expected", [
    ("xp_bob", "https://pumpc.example/", "https://bob@pumpc.example/"),
    ("xp_b@x", "http://h:81/d/", "http://b%40x@h:81/d/"),
    ("xp_bob", "https://carol@pumpc.example/", "https://carol@pumpc.example/"),
    ("xp_bob", "sftp://pumpc.example/", "sftp://pumpc.example/"),
    ("xpublic", "https://pumpc.example/", "https://pumpc.example/"),
])
def test_restricted_data_is_fetched_as_the_reader(tmp_path, exchange, baseurl, expected):
    m = message.Message("20261205120000.0", baseurl, "/data/f", {"sum": "d,x"},
                        exchange=exchange)
    readers.fetch_as_reader(make_flow(tmp_path), types.SimpleNamespace(msg=m))
    assert m.baseurl == expected


def test_a_source_restricts_a_bounded_number_of_prefixes(tmp_path):
    flow = make_flow(tmp_path)
    for i in range(readers.MAX_RULES):
        with pytest.raises(Outcome) as o:
            readers.accept(flow, adm("xs_alice", relpath="/d%d/" % i), "alice", None)
        assert o.value.code == 201
    with pytest.raises(Outcome) as o:
        readers.accept(flow, adm("xs_alice", relpath="/more/"), "alice", None)
    assert o.value.code == 403 and "at most" in o.value.text
    with pytest.raises(Outcome) as o:      # changing or withdrawing one still works
        readers.accept(flow, adm("xs_alice", relpath="/d0/", readers_="*"), "alice", None)
    assert o.value.code == 201
