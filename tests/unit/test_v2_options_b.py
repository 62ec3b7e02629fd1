"""v2 options of issue 19 item 4 (second half): each acts as v2 documents it, is refused at
start with a reason, or is ignored with a reason (options.NOT_ACTED_ON)."""

import logging
import os

import pytest

from sarra import message, paths
from sarra.config import options, v2refuse
from sarra.config.parser import ConfigError, load
from sarra.flow import outbound


def write(home, rel, text):
    path = os.path.join(paths.config_dir(), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


# ------------------------------------------------------------------ the lists

def test_every_ignored_option_says_why():
    for name, (comps, why) in options.NOT_ACTED_ON.items():
        assert comps and why and len(why) > 10, name
        assert options.ignored_text(name).endswith(why)


@pytest.mark.parametrize("name", ["queue_share", "inline", "inline_max", "inline_encoding",
                                  "cache_stat"])
def test_meaningless_options_are_ignored_with_a_reason(name):
    comps, why = options.NOT_ACTED_ON[name]
    assert "*" in comps
    assert options.NOT_YET != why


@pytest.mark.parametrize("name", ["filename", "post_exchange_split", "header", "batch",
                                  "tls_rigour", "realpath_post", "realpath_filter",
                                  "destfn_script", "chmod_log", "logrotate_interval"])
def test_options_that_now_act(name):
    opt = options.lookup(name)
    for comp in ("subscribe", "sender", "post"):
        if opt.used_by(comp):
            assert options.acted_on(name, comp), (name, comp)
    assert options.acted_on("delete", "sender")


# ------------------------------------------------------------------ refusals

@pytest.mark.parametrize("line,name", [
    ("on_data some_plugin", "on_data"), ("do_get some_plugin", "do_get"),
    ("do_put some_plugin", "do_put"), ("do_task some_plugin", "do_task"),
    ("randomize on", "randomize"), ("tls_rigour lax", "tls_rigour"),
])
def test_refused_at_start_naming_file_line_and_reason(home, line, name):
    path = write(home, "subscribe/r.conf", "broker amqp://u@h/\n%s\n" % line)
    with pytest.raises(ConfigError) as e:
        load("subscribe", "r")
    text = str(e.value)
    assert text.startswith("%s:2: option '%s'" % (path, name)), text
    assert "refused: " in text and "\n" not in text
    assert "instead" in text or "remove it" in text


@pytest.mark.parametrize("value", ["medium", "strict"])
def test_tls_rigour_medium_and_strict_load_quietly(home, caplog, value):
    write(home, "subscribe/t.conf", "broker amqp://u@h/\ntls_rigour %s\n" % value)
    with caplog.at_level(logging.WARNING):
        cfg = load("subscribe", "t")
    assert cfg.tls_rigour == value
    assert not [r for r in caplog.records if "tls_rigour" in r.getMessage()]


def test_defaults_of_refused_options_load(home):
    write(home, "post/d.conf", "randomize off\ntls_rigour medium\n")
    load("post", "d")


@pytest.mark.parametrize("header", ["sum=d,abc", "parts=1,1,1,0,0", "to_clusters=x",
                                    "source=mallory", "mtime=None", "bad name=1",
                                    "x\x07y=1", "Rename=/etc/passwd"])
def test_hostile_or_reserved_header_refused(home, header):
    path = write(home, "post/h.conf", "header %s\n" % header)
    with pytest.raises(ConfigError) as e:
        load("post", "h")
    assert str(e.value).startswith("%s:1: option 'header'" % path), str(e.value)
    assert "\n" not in str(e.value)


def test_reserved_header_names_the_option_to_use():
    assert "use the option to instead" in v2refuse.header_problem("to_clusters")
    assert v2refuse.header_problem("product_class") is None
    assert v2refuse.header_problem("x" * 65) is not None


# ------------------------------------------------------------------ outbound

class _Cfg:
    def __init__(self, **kw):
        self.post_exchange = kw.pop("post_exchange", "xs_u")
        self.post_exchange_split = kw.pop("post_exchange_split", 0)
        self.post_base_url = kw.pop("post_base_url", None)
        self.headers = kw.pop("headers", {})


def _msg(sumstr="d,d41d8cd98f00b204e9800998ecf8427e", base="http://a/", headers=None):
    h = {"sum": sumstr}
    h.update(headers or {})
    return message.Message("20261205120000.0", base, "/f.txt", h)


def test_shard_is_v2s_sum_of_the_sum_header_bytes():
    s = "d,d41d8cd98f00b204e9800998ecf8427e"
    assert outbound.shard(s, 3) == sum(s.encode("ascii")) % 3
    ob = outbound.Outbound(_Cfg(post_exchange_split=2))
    got = {ob.exchange_for({"sum": "d,%032x" % i}) for i in range(20)}
    assert got == {"xs_u00", "xs_u01"}
    assert ob.exchange_for({"sum": s}) == "xs_u%02d" % (sum(s.encode()) % 2)
    assert outbound.Outbound(_Cfg()).exchange_for({"sum": s}) == "xs_u"


def test_header_adds_where_absent_and_removes_none():
    ob = outbound.Outbound(_Cfg(headers={"product": "radar", "flow": "x", "old": None}))
    m = _msg(headers={"flow": "kept", "old": "gone"})
    ob.prepare(m)
    assert m.headers["product"] == "radar"
    assert m.headers["flow"] == "kept"          # v2 adds, never replaces
    assert "old" not in m.headers


def test_base_url_round_robin_in_turn_without_passwords():
    cfg = _Cfg(post_base_url="sftp://u:pw@a.example/,sftp://u@b.example/,http://c/")
    assert outbound.first_url(cfg.post_base_url) == "sftp://u:pw@a.example/"
    ob = outbound.Outbound(cfg)
    seen = []
    for _ in range(4):
        m = _msg(base="sftp://u@a.example/")
        ob.prepare(m)
        seen.append(m.baseurl)
    assert seen == ["sftp://u@a.example/", "sftp://u@b.example/", "http://c/",
                    "sftp://u@a.example/"]
    m = _msg(base="sftp://u@a.example")             # the sender's form, '/' stripped
    ob.prepare(m)
    assert m.baseurl == "sftp://u@b.example"
    m = _msg(base="http://elsewhere/")               # not built from post_base_url
    ob.prepare(m)
    assert m.baseurl == "http://elsewhere/"


def test_outbound_of_is_one_per_config():
    cfg = _Cfg(post_base_url="http://a/,http://b/")
    assert outbound.Outbound.of(cfg) is outbound.Outbound.of(cfg)


# ------------------------------------------------------------------ filename rules

from sarra.flow import naming  # noqa: E402
from sarra.flow.placement import PlacementError  # noqa: E402

SUNDEW = "SACN43_CWAO_012000_AAA41:CWAO:SA:3:Direct:20261205120000"


@pytest.mark.parametrize("option,name,want", [
    ("WHATFN", SUNDEW, "SACN43_CWAO_012000_AAA41"),
    ("HEADFN", SUNDEW, "SACN43_CWAO"),
    ("NONE", SUNDEW, "SACN43_CWAO_012000_AAA41:CWAO:SA:3:Direct"),       # PDS: five fields
    ("NONE", "A:B:C:D:E:F:G", "A:B:C:D:E:F"),                            # PX: six
    ("WHATFN:TIME", SUNDEW, "SACN43_CWAO_012000_AAA41:20261205120000"),   # its own time
    ("TIME", "x.txt", "x.txt:20261205093000"),                           # the pubtime
    ("SENDER", "AAA:BBB:SENDER=out.txt", "out.txt"),
    ("NONE", "AAA:BBB:SENDER=out.txt", "AAA:BBB"),
    ("NONESENDER", "AAA:BBB:SENDER=out.txt", "AAA:BBB:SENDER=out.txt"),
    ("DESTFN=fixed.dat", SUNDEW, "fixed.dat"),
    ("WHATFN:SATNET=1,2,3,A", SUNDEW, "SACN43_CWAO_012000_AAA41:SATNET=1,2,3,A"),
    ("SENDER", "no_sender_field", "no_sender_field"),
])
def test_filename_rules_give_the_documented_names(option, name, want):
    assert naming.apply_rules(option, name, "20261205T093000.25") == want


def test_filename_destfnscript_and_sundew_extension():
    got = naming.apply_rules("WHATFN:DESTFNSCRIPT=up", "ab:cd", None, None,
                             lambda current, plugin: current.upper() + "." + plugin)
    assert got == "AB.up"
    assert naming.apply_rules("NONE", "w:x", None, "a:b:c:d:e") == "w:a:b:c:d:e"


@pytest.mark.parametrize("value", ["WHATFN:BOGUS", "NAME", "whatfn"])
def test_unknown_filename_keyword_refused_with_file_line(home, value):
    path = write(home, "subscribe/fn.conf", "filename %s\n" % value)
    with pytest.raises(ConfigError) as e:
        load("subscribe", "fn")
    assert str(e.value).startswith("%s:1: option 'filename'" % path)
    assert "unknown filename keyword" in str(e.value)
    path = write(home, "sender/fn.conf", "accept .* %s\n" % value)
    with pytest.raises(ConfigError):
        load("sender", "fn")


class _Hooks:
    def __init__(self, fn=None):
        self.fn, self.parent, self.search_dirs = fn, type("P", (), {})(), []

    def has(self, hook):
        return self.fn is not None

    def run(self, hook):
        return self.fn(self.parent)


class _Flow:
    def __init__(self, filename=None, fn=None):
        self.cfg = type("C", (), {"filename": filename})()
        self.hooks = _Hooks(fn)


class _Work:
    def __init__(self, headers=None):
        self.mask, self.new_file = None, None
        self.msg = message.Message("20261205120000.0", "http://h/", "/x", dict(headers or {}))


def test_dest_name_a_hostile_result_is_refused():
    flow = _Flow("NONE")
    w = _Work({"sundew_extension": "../../etc/passwd"})
    with pytest.raises(PlacementError):
        naming.dest_name(flow, w, "name:x")
    assert naming.dest_name(_Flow(), _Work(), "same") == "same"


def test_dest_name_runs_destfn_script_plugins():
    def fn(parent):
        parent.new_file = "renamed_" + parent.new_file
    assert naming.dest_name(_Flow("WHATFN", fn), _Work(), "a:b") == "renamed_a"
    with pytest.raises(PlacementError):
        naming.dest_name(_Flow(None, lambda p: setattr(p, "new_file", "../x")), _Work(), "a")


# ------------------------------------------------------------------ chmod_log, logrotate_interval

from sarra.ops import logs  # noqa: E402


@pytest.mark.parametrize("every,want", [(86400, ("midnight", 1)), (2 * 86400, ("midnight", 2)),
                                        (6 * 3600, ("H", 6)), (90, ("S", 90)), (600, ("M", 10))])
def test_logrotate_interval_maps_to_the_rotation(every, want):
    assert logs.rotation(every) == want


def test_chmod_log_and_logrotate_interval_reach_the_log_file(home):
    write(home, "subscribe/lg.conf", "chmod_log 0640\nlogrotate_interval 6h\nlogdays 3\n")
    cfg = load("subscribe", "lg")
    log = logs.setup_logging("subscribe", "lg", 1, **logs.from_config(cfg))
    try:
        handler = [h for h in log.handlers if getattr(h, "_sarra_handler", False)][0]
        assert (handler.when, handler.interval, handler.backupCount) == ("H", 6 * 3600, 3)
        log.info("hello")
        assert os.stat(handler.baseFilename).st_mode & 0o777 == 0o640
    finally:
        logs.setup_logging("subscribe", "lg", None, foreground=True)


def test_tls_rigour_normal_is_v2s_name_of_medium(home):
    write(home, "subscribe/n.conf", "tls_rigor normal\n")
    assert load("subscribe", "n").tls_rigour == "medium"
