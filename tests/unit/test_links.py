"""links.conf (sarra/ops/links.py): the declaration of a pump's neighbours, its errors
(file:line), and the configurations sr_police makes from it."""

import os

import pytest

from sarra import paths
from sarra.config import parser as config
from sarra.config.names import ConfigError
from sarra.ops import audit, links


def write(relpath, text):
    path = os.path.join(paths.config_dir(), relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


HEAD = "cluster pumpB\npost_base_dir /var/www/my\\ pump\npost_base_url http://b.example.org/\n"
B_LINKS = HEAD + ("link pumpA amqp://pumpB@a.example.org/pump\n"
                  "link pumpC amqp://b_on_c@c.example.org/ behind pumpD, pumpE "
                  "peer_user c_feed   # C feeds D and E\n")


def pump_b(home, text=B_LINKS):
    write("admin.conf", "admin amqp://boss@b.example.org/pump\n"
                        "feeder amqp://feeder@b.example.org/pump\n"
                        "declare source eve\ndeclare subscriber carol\n")
    write("links.conf", text)
    return links.linked_pump(config.load("audit"))


def test_parse_and_peers(home):
    pump = pump_b(home)
    decl = pump.links
    assert decl.cluster == "pumpB" and decl.post_base_dir == "/var/www/my pump"
    a, c = decl.links
    assert (a.name, a.account, a.peer_user, a.behind) == ("pumpA", "pumpB", "pumpA", [])
    assert (c.name, c.account, c.peer_user, c.behind) == ("pumpC", "b_on_c", "c_feed",
                                                          ["pumpD", "pumpE"])
    assert a.where.endswith("links.conf:4")
    # the neighbours' accounts are subscribers here, with their xs_ exchanges
    assert pump.roles["pumpA"] == pump.roles["c_feed"] == "subscriber"
    assert pump.peers == ["pumpA", "c_feed"]
    assert "xs_c_feed" in pump.expected_exchanges()
    # their reports are relayed by ln_*2xreport, not filtered by rr_<user>2xreport
    assert set(audit.report_shovels(pump)) == {"rr_eve2xreport", "rr_carol2xreport",
                                               "rr_xreport_route"}


def test_no_links_conf_is_a_standalone_pump(home):
    write("admin.conf", "admin amqp://boss@h/\nfeeder amqp://feeder@h/\ndeclare source s\n")
    pump = links.linked_pump(config.load("audit"))
    assert pump.links is None and pump.peers == []
    assert links.wanted_configs(pump) == {}


@pytest.mark.parametrize("text, line, what", [
    (HEAD + "link pumpB amqp://x@h/\n", 4, "this pump itself"),
    (HEAD + "link pumpA amqp://x@h/ behind pumpB\n", 4, "'pumpB' is already reached at"),
    (HEAD + "link pumpA amqp://x@h/ behind pumpC\nlink pumpC amqp://y@h/\n", 5,
     "'pumpC' is already reached at .*links.conf:4"),
    (HEAD + "link pumpA amqp://x@h/ behind pumpD\nlink pumpC amqp://y@h/ behind pumpD\n", 5,
     "two routes to one cluster make a loop"),
    (HEAD + "link pumpA amqp://x@h/\nlink pumpA amqp://y@h/\n", 5, "already reached"),
    (HEAD + "link pumpA amqp://x@h/\nlink pumpC amqp://y@h/ peer_user pumpA\n", 5,
     "peer_user 'pumpA' is already"),
    (HEAD + "link pumpA http://x@h/\n", 4, "amqp://"),
    (HEAD + "link pumpA amqp://x:s3cret@h/\n", 4, "credentials.conf"),
    (HEAD + "link pumpA amqp://x@h/ via pumpC\n", 4, "unexpected 'via'"),
    (HEAD + "link pumpA amqp://x@h/ behind ../etc\n", 4, "not a name"),
    (HEAD + "link pumpA\n", 4, "expected 'link <cluster>"),
    (HEAD + "cluster pumpZ\n", 4, "second 'cluster' line .*links.conf:1"),
    (HEAD + "gateway_for pumpA\n", 4, "unknown word 'gateway_for'"),
    ("cluster pumpB\npost_base_url http://b/\n", None, "no 'post_base_dir' line"),
])
def test_errors_name_file_and_line(home, text, line, what):
    with pytest.raises(ConfigError, match=what) as e:
        pump_b(home, text)
    where = os.path.join(paths.config_dir(), "links.conf") + (":%d:" % line if line else ":")
    assert str(e.value).startswith(where)
    assert "s3cret" not in str(e.value)


def test_peer_user_declared_in_admin_conf_is_an_error(home):
    with pytest.raises(ConfigError, match="links.conf:4: peer_user 'carol' is declared "
                                          "subscriber in admin.conf"):
        pump_b(home, HEAD + "link pumpA amqp://x@h/ peer_user carol\n")


def conf(text):
    """{option: [values]} of a generated configuration."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.split(" ", 1)
            out.setdefault(k, []).append(v)
    return out


def test_wanted_configs(home):
    pump = pump_b(home)
    want = links.wanted_configs(pump)
    assert set(want) == {("sarra", "ln_ingest"), ("sarra", "ln_from_pumpA"),
                         ("sarra", "ln_from_pumpC"), ("shovel", "ln_reports2pumpA"),
                         ("shovel", "ln_reports2pumpC"), ("shovel", "ln_pumpA2xreport"),
                         ("shovel", "ln_pumpC2xreport")}
    for text in want.values():
        assert text.startswith(links.MARK)
    ingest = conf(want[("sarra", "ln_ingest")])
    assert ingest["exchange"] == ["xs_eve"] and ingest["source_from_exchange"] == ["on"]
    assert ingest["cluster"] == ["pumpB"] and ingest["cluster_routing"] == ["on"]
    assert ingest["gateway_for"] == ["pumpA,pumpC,pumpD,pumpE"]
    assert ingest["cluster_aliases"] == ["b.example.org"]
    assert ingest["post_base_dir"] == ["/var/www/my\\ pump"]
    # pulling from C: what is for B, or for A (through B); never D/E back to C
    from_c = conf(want[("sarra", "ln_from_pumpC")])
    assert from_c["broker"] == ["amqp://b_on_c@c.example.org/"]
    assert from_c["gateway_for"] == ["pumpA"] and from_c["cluster_routing"] == ["on"]
    assert from_c["post_broker"] == ["amqp://feeder@b.example.org/pump"]
    assert from_c["reject"] == [r".*/[0-9]{8}/eve/.*"]         # eve's tree is hers alone
    assert want[("sarra", "ln_from_pumpC")].index("reject") < \
        want[("sarra", "ln_from_pumpC")].index("accept .*")
    from_a = conf(want[("sarra", "ln_from_pumpA")])
    assert from_a["gateway_for"] == ["pumpC,pumpD,pumpE"]
    # reports about data from C, D, E go back to C as our account there
    out_c = conf(want[("shovel", "ln_reports2pumpC")])
    assert out_c["msg_from_cluster"] == ["pumpC,pumpD,pumpE"]
    assert out_c["post_exchange"] == ["xs_b_on_c"] and out_c["exchange"] == ["xreport"]
    # what C relays (as c_feed) may only be about data from B or A
    in_c = conf(want[("shovel", "ln_pumpC2xreport")])
    assert in_c["exchange"] == ["xs_c_feed"] and in_c["post_exchange"] == ["xreport"]
    assert in_c["msg_from_cluster"] == ["pumpB,pumpA"] and in_c["cluster_routing"] == ["on"]


def test_write_configs_follows_the_declaration(home):
    pump = pump_b(home)
    found = links.write_configs(pump)
    written = [f for f in found if f.result == "fixed"]
    # 7 from links.conf + rr_* shovels (links imply report routing)
    assert len(written) == 7 + 3, [f.line() for f in found]
    d = paths.config_dir()
    assert os.path.exists(os.path.join(d, "shovel", "rr_xreport_route.conf"))
    assert not os.path.exists(os.path.join(d, "shovel", "rr_pumpA2xreport.conf"))
    assert links.write_configs(pump) == []                       # second run: no change
    # a hand-written file is never overwritten; a .off twin stops the writing
    hand = os.path.join(d, "sarra", "ln_from_pumpA.conf")
    with open(hand, "w") as f:
        f.write("broker amqp://x@h/\n")
    os.rename(os.path.join(d, "shovel", "ln_pumpC2xreport.conf"),
              os.path.join(d, "shovel", "ln_pumpC2xreport.conf.off"))
    found = links.write_configs(pump)
    assert [f.problem for f in found] == ["written by hand where links.conf wants its own; "
                                          "rename it .off or remove it"]
    os.unlink(hand)
    # pump C leaves: its link goes, so do its configurations (but not the .off one)
    write("links.conf", HEAD + "link pumpA amqp://pumpB@a.example.org/pump\n")
    links.refresh(pump)
    assert pump.peers == ["pumpA"] and "c_feed" not in pump.roles
    dry = links.write_configs(pump, dry_run=True)
    assert {f.result for f in dry} == {"would fix"}
    found = links.write_configs(pump)
    gone = sorted(os.path.basename(f.what) for f in found
                  if f.done == "stopped and deleted")
    assert gone == ["ln_from_pumpC.conf", "ln_reports2pumpC.conf"]
    assert os.path.exists(os.path.join(d, "shovel", "ln_pumpC2xreport.conf.off"))
    ingest = open(os.path.join(d, "sarra", "ln_ingest.conf")).read()
    assert "gateway_for pumpA\n" in ingest            # rewritten: C, D, E no longer behind
    assert os.path.exists(os.path.join(d, "sarra", "ln_from_pumpA.conf"))


def test_refresh_keeps_the_pump_on_an_error(home):
    pump = pump_b(home)
    write("links.conf", HEAD + "link pumpB amqp://x@h/\n")
    with pytest.raises(ConfigError):
        links.refresh(pump)
    assert pump.peers == ["pumpA", "c_feed"] and pump.links.cluster == "pumpB"


# ------------------------------------------------------------------ a block sent as its part file

class _Work:
    def __init__(self, algo="d"):
        from types import SimpleNamespace
        self.sum = SimpleNamespace(algo=algo)
        self.new_file = self.local_path = None


@pytest.mark.parametrize("name, method, want", [
    ("big.bin.4096.4.100.3.d.Part", "p", "big.bin"),          # the next hop's target
    ("big.bin.4096.4.100.3.d.Part", "i", None),               # inplace: the name is the file
    ("big.bin.4096.4.100.2.d.Part", "p", None),               # suffix and header disagree
    ("big.bin.4096.4.100.3.s.Part", "p", None),               # another sum algorithm
    ("..4096.4.100.3.d.Part", "p", None),                     # no '.' or '..' target
    (".4096.4.100.3.d.Part", "p", None),
    ("big.bin", "p", None),                                   # no suffix: kept as is
])
def test_part_file_block_target(name, method, want):
    from sarra.checksum import Parts
    from sarra.flow.partname import block_target
    w = _Work()
    final = os.path.join("/tree/d", name)
    got = block_target(w, final, Parts(method, 4096, 4, 100, 3))
    if want is None:
        assert got == final and w.new_file is None
    else:
        assert got == "/tree/d/" + want and (w.new_file, w.local_path) == (want, got)


def test_check_without_fix_writes_nothing(home):
    pump = pump_b(home)
    found = links.write_configs(pump, apply=False)
    assert found and {f.result for f in found if "ln_" in f.what} == {"found"}
    assert not os.path.exists(os.path.join(paths.config_dir(), "sarra", "ln_ingest.conf"))


def test_sr_police_setup_refuses_a_loop_with_file_and_line(home, capsys):
    from sarra.commands import audit as audit_cmd
    write("admin.conf", "admin amqp://boss@b.example.org/\n")
    path = write("links.conf", HEAD + "link pumpA amqp://x@h/ behind pumpC\n"
                                      "link pumpC amqp://y@h/\n")
    assert audit_cmd.main(["setup"]) == 2
    err = capsys.readouterr().err
    assert "%s:5: cluster 'pumpC' is already reached at %s:4" % (path, path) in err
    assert len(err.strip().splitlines()) == 1


def test_a_configuration_naming_an_unknown_cluster(home):
    pump = pump_b(home)
    p = write("sender/out.conf", "broker amqp://feeder@b.example.org/pump\n"
                                 "to pumpC,pumpZ\n")
    write("poll/ok.conf", "to pumpD\nmsg_to_clusters pumpA\n")
    found = [f for f in links.write_configs(pump) if "pumpZ" in f.problem]
    assert [f.what for f in found] == ["config %s:2" % p]
    assert found[0].result == "found" and found[0].setup      # setup fails: exit 1
    assert "to names cluster 'pumpZ', unknown to" in found[0].problem


def test_show_describes_the_links(home):
    pump = pump_b(home)
    lines = links.describe(pump)
    assert lines[0].startswith("cluster pumpB (") and lines[0].endswith("links.conf)")
    assert lines[2] == ("link pumpC amqp://b_on_c@c.example.org/ behind pumpD,pumpE, its "
                        "account here c_feed")
    assert "sarra/ln_from_pumpA" in lines[-1] and "shovel/ln_pumpC2xreport" in lines[-1]
