import datetime
import logging
import os

import pytest

from sarra import paths
from sarra.config import cli, parser as config, options
from sarra.config.parser import ConfigError, expand_message_vars, load, parse_cli, sundew_vars


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    (h / ".config").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(h / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(h / ".cache"))
    return h


def write(relpath, text):
    """Write a file under ~/.config/sarra; returns its path."""
    path = os.path.join(paths.config_dir(), relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


# ------------------------------------------------------------- value types

@pytest.mark.parametrize("text,expected", [
    ("10", 10), ("1K", 1024), ("10M", 10 << 20), ("200m", 200 << 20), ("2G", 2 << 30),
    ("1T", 1 << 40), ("5B", 5), ("1.5K", 1536),
])
def test_sizes(text, expected):
    assert options.parse_size(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0),
    ("1w", 604800.0), ("0.5", 0.5), ("1.5m", 90.0),
])
def test_durations(text, expected):
    assert options.parse_duration(text) == expected


@pytest.mark.parametrize("word,expected", [
    ("on", True), ("true", True), ("yes", True), ("1", True), ("On", True),
    ("off", False), ("false", False), ("no", False), ("0", False), ("none", False),
    ("None", False), (None, True), ("", True),
])
def test_booleans(word, expected):
    assert options.parse_bool(word) is expected


@pytest.mark.parametrize("bad", ["ten", "10X", "", "-1M"])
def test_bad_size(bad):
    with pytest.raises(ValueError):
        options.parse_size(bad)


def test_events_words_and_2016_names():
    assert options.parse_events("create|delete") == {"create", "delete"}
    assert options.parse_events("created,modified|linked") == {"create", "modify", "link"}
    with pytest.raises(ValueError):
        options.parse_events("create|explode")


def test_alias_table_unique_and_lookup():
    assert options.canonical("pb") == "post_broker"
    assert options.canonical("log_exchange") == "report_exchange"
    assert options.canonical("log_back") == "report_back"
    assert options.canonical("lock") == "inflight"
    assert options.canonical("url") == "post_base_url"
    assert options.canonical("document_root") == "post_base_dir"
    assert options.canonical("message-ttl") == "message_ttl"
    assert options.canonical("on_hb") == "on_heartbeat"
    assert options.canonical("nosuch") is None
    seen = set()
    for o in options.OPTIONS:
        for n in (o.name,) + o.aliases:
            assert n not in seen
            seen.add(n)


def test_defaults_for_component_presets():
    sub = options.defaults_for("subscribe")
    assert (sub["exchange"], sub["mirror"], sub["inplace"], sub["accept_unmatch"]) == (
        "xpublic", False, True, False)
    sarra = options.defaults_for("sr_sarra")
    assert (sarra["mirror"], sarra["accept_unmatch"], sarra["inflight"], sarra["report_back"],
            sarra["inplace"]) == (True, True, None, False, False)
    for comp in ("post", "watch"):
        d = options.defaults_for(comp)
        assert (d["blocksize"], d["accept_unmatch"], d["sum"]) == (200 << 20, True, "d")
    assert options.defaults_for("shovel")["accept_unmatch"] is True
    assert options.defaults_for("winnow")["suppress_duplicates"] == 1200
    assert options.defaults_for("log")["topic_prefix"] == "v02.report"
    # fresh copies: mutating one result does not leak into the next
    options.defaults_for("subscribe")["on_heartbeat"].append("x")
    assert "x" not in options.defaults_for("subscribe")["on_heartbeat"]


def test_render_help_lists_component_options():
    text = cli.render_help("subscribe")
    assert "--broker, -b" in text and "--accept_unmatch" in text
    assert "--blocksize" not in text     # a poster option
    assert "--blocksize" in cli.render_help("post")


# ------------------------------------------------------------- command line

def test_parse_cli():
    pairs, pos = parse_cli(["--broker", "amqp://u@h/", "-p", "a", "b", "--reset",
                            "--mirror", "off", "-n", "foreground", "cfg", "--sd=300"])
    assert pairs == [("broker", "amqp://u@h/"), ("p", "a"), ("reset", None),
                     ("mirror", "off"), ("n", None), ("sd", "300")]
    assert pos == ["b", "foreground", "cfg"]
    pairs, pos = parse_cli(["--unknownflag", "--x", "1", "--last"])
    assert pairs == [("unknownflag", None), ("x", "1"), ("last", None)]


# ------------------------------------------------------------- loading

def test_read_order_and_origins(home):
    write("default.conf", "heartbeat 60\nloglevel warning\n")
    write("admin.conf", "feeder amqp://feeder@localhost/\n")
    write("subscribe.conf", "heartbeat 120\nprefetch 10\n")
    path = write("subscribe/dd_swob.conf",
                 "# comment\n\nbroker amqps://anonymous@dd.weather.gc.ca/\nprefetch 5\n")
    cfg = load("subscribe", "dd_swob", [("prefetch", "7"), ("lr", "3")])
    assert cfg.name == "dd_swob" and cfg.config_path == path
    assert cfg.heartbeat == 120 and cfg.origin("heartbeat").endswith("subscribe.conf:1")
    assert cfg.prefetch == 7 and cfg.origin("prefetch") == "command line"
    assert cfg.logdays == 3
    assert cfg.loglevel == "warning"
    assert cfg.origin("broker") == path + ":3"
    assert cfg.origin("durable") == "default"
    assert cfg.feeder == "amqp://feeder@localhost/"
    text = cfg.show()
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert lines["prefetch"].split()[1:] == ["7", "command", "line"]
    assert lines["broker"].endswith(path + ":3")
    assert lines["durable"].split()[1:] == ["on", "default"]
    names = [line.split()[0] for line in text.splitlines() if line.split()[0] not in (
        "accept", "reject", "binding", "header", "path", "declare")]
    assert names == sorted(names)


def test_config_given_as_name_conf_or_path(home, tmp_path):
    write("sarra/a.conf", "prefetch 3\n")
    assert load("sarra", "a.conf").prefetch == 3
    other = tmp_path / "elsewhere.conf"
    other.write_text("prefetch 4\n")
    cfg = load("sarra", str(other))
    assert cfg.prefetch == 4 and cfg.name == "elsewhere"


def test_missing_and_disabled_config(home):
    with pytest.raises(ConfigError) as e:
        load("subscribe", "nothere")
    assert "nothere.conf" in str(e.value) and "No such file" in str(e.value)
    assert e.value.exit_code == 2
    write("subscribe/off.conf.off", "prefetch 1\n")
    with pytest.raises(ConfigError) as e:
        load("subscribe", "off")
    assert "disabled" in str(e.value) and "off.conf.off" in str(e.value)


def test_unreadable_config(home):
    path = write("subscribe/locked.conf", "prefetch 1\n")
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root")
        with pytest.raises(ConfigError) as e:
            load("subscribe", "locked")
        assert path in str(e.value) and "Permission denied" in str(e.value)
    finally:
        os.chmod(path, 0o600)


def test_bad_value_names_file_and_line(home):
    path = write("post/p.conf", "post_broker amqp://localhost/\n\nblocksize ten\n")
    with pytest.raises(ConfigError) as e:
        load("post", "p")
    assert str(e.value) == "%s:3: option 'blocksize': bad size 'ten'" % path
    path = write("post/q.conf", "accept [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load("post", "q")
    assert str(e.value).startswith("%s:1: option 'accept': bad regex" % path)
    with pytest.raises(ConfigError) as e:
        load("post", None, [("blocksize", "10X")])
    assert str(e.value).startswith("command line: option 'blocksize'")


@pytest.mark.parametrize("line,reason", [
    ("prefetch many", "bad integer"), ("expire soon", "bad duration"),
    ("mirror perhaps", "bad boolean"), ("chmod 999", "bad octal"),
    ("broker http://x/", "bad broker URL"), ("loglevel loud", "bad value"),
    ("events create|jump", "bad event"), ("header novalue", "expected name=value"),
    ("broker", "missing value"),
])
def test_bad_values(home, line, reason):
    path = write("subscribe/bad.conf", "\n" + line + "\n")
    with pytest.raises(ConfigError) as e:
        load("subscribe", "bad")
    assert str(e.value).startswith("%s:2: option '%s'" % (path, options.canonical(line.split()[0])))
    assert reason in str(e.value)


def test_broker_password_not_in_error(home):
    write("subscribe/bad.conf", "broker http://u:hunter2@x/\n")
    with pytest.raises(ConfigError) as e:
        load("subscribe", "bad")
    assert "hunter2" not in str(e.value)


def test_unknown_option_warns_and_is_kept(home, caplog):
    path = write("subscribe/u.conf", "msg_to_clusters DDI\nmsg_to_clusters DD\n")
    with caplog.at_level(logging.WARNING):
        cfg = load("subscribe", "u")
    assert "%s:2: unknown option 'msg_to_clusters'" % path in caplog.text
    assert caplog.text.count("unknown option") == 1
    assert cfg.msg_to_clusters == ["DDI", "DD"]
    assert cfg.origin("msg_to_clusters") == path + ":2"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cfg = load("subscribe", "u", warn_unknown=False)
        assert caplog.text == ""
        assert cfg.check_unknown(["msg_to_clusters"]) == []
        assert caplog.text == ""
        assert cfg.check_unknown() == ["msg_to_clusters"]
    assert "unknown option 'msg_to_clusters'" in caplog.text


def test_options_of_configured_plugins_are_not_unknown(home, caplog):
    plugdir = os.path.join(paths.config_dir(), "plugins")
    os.makedirs(plugdir)
    with open(os.path.join(plugdir, "mine.py"), "w") as f:
        f.write("def on_message(parent):\n    return parent.mine_level > 2\n")
    path = write("subscribe/p.conf", "on_file run_command\nrun_command_cmd /bin/true\n"
                 "on_message msg_to_clusters\nmsg_to_clusters DD\non_message mine\n"
                 "mine_level 3\nrun_comand_timeout 5\n")
    with caplog.at_level(logging.WARNING):
        cfg = load("subscribe", "p")
    # stock plugins declare theirs (OPTIONS); a plugin file's are the words in its text
    assert caplog.text.count("unknown option") == 1
    assert "%s:7: unknown option 'run_comand_timeout'" % path in caplog.text
    assert cfg.run_command_cmd == ["/bin/true"] and cfg.mine_level == ["3"]
    caplog.clear()
    write("subscribe/q.conf", "run_command_cmd /bin/true\n")      # the plugin is not used
    with caplog.at_level(logging.WARNING):
        load("subscribe", "q")
    assert "unknown option 'run_command_cmd'" in caplog.text


def test_unknown_command_line_option_names_the_word_it_took(home, caplog):
    """`sr_post --bogus /data/f`: the path became the option's value; the warning says so
    (passwords in it masked), so 'no path to post' that follows makes sense."""
    with caplog.at_level(logging.WARNING):
        load("post", None, [("bogus", "/data/f"), ("flag", None),
                            ("bogus_url", "amqp://u:secret@h/")])
    assert "command line: unknown option 'bogus' (it took '/data/f' as its value)" in caplog.text
    assert "command line: unknown option 'flag'\n" in caplog.text + "\n"
    assert "secret" not in caplog.text and "u:***@h" in caplog.text


def test_include_relative_and_loop(home):
    write("subscribe/common.inc", "prefetch 9\n")
    write("subscribe/top.conf", "include common.inc\nheartbeat 30\n")
    cfg = load("subscribe", "top")
    assert cfg.prefetch == 9 and cfg.origin("prefetch").endswith("common.inc:1")
    a = write("subscribe/a.conf", "prefetch 1\nconfig b.inc\n")
    b = write("subscribe/b.inc", "c a.conf\n")
    with pytest.raises(ConfigError) as e:
        load("subscribe", "a")
    msg = str(e.value)
    assert "include loop" in msg and msg.startswith(b + ":1")
    assert a in msg


def test_missing_include(home):
    path = write("subscribe/i.conf", "include nothere.inc\n")
    with pytest.raises(ConfigError) as e:
        load("subscribe", "i")
    assert str(e.value).startswith(path + ":1: include ")
    assert "nothere.inc" in str(e.value) and "No such file" in str(e.value)


def test_variables(home, monkeypatch):
    monkeypatch.setenv("MYDIR", "/data/x")
    write("subscribe/v.conf", "\n".join([
        "directory ${MYDIR}/${CONFIG}/${PROGRAM}/${YYYYMMDD}/${SOURCE}",
        "queue_name q_${BROKER_USER}.${CONFIG}.${RANDID}",
        "broker amqp://bob@localhost/",
        "cluster ${HOSTNAME}",
        "source ${NO_SUCH_VAR_HOPEFULLY}",
        "declare env LATER=/later",
        "base_dir ${LATER}/in",
    ]) + "\n")
    cfg = load("subscribe", "v")
    assert cfg.directory == "/data/x/v/sr_subscribe/${YYYYMMDD}/${SOURCE}"
    assert cfg.queue_name == "q_bob.v." + config.RANDID
    assert cfg.cluster and "${" not in cfg.cluster
    assert cfg.source == "${NO_SUCH_VAR_HOPEFULLY}"
    assert os.environ["LATER"] == "/later" and cfg.base_dir == "/later/in"
    assert cfg.declared["env"] == {"LATER": "/later"}
    monkeypatch.delenv("LATER")


def test_order_sensitive_directory_and_accept(home):
    write("subscribe/o.conf", "\n".join([
        "accept .*first.*",
        "directory /tmp/a",
        "mirror on",
        "accept .*second.* DESTFN=x",
        "strip 2",
        "flatten -",
        "directory /tmp/b",
        "reject .*third.*",
        "mirror off",
    ]) + "\n")
    cfg = load("subscribe", "o")
    first, second, third = cfg.masks
    assert (first.directory, first.mirror, first.strip, first.accept) == (".", False, 0, True)
    assert (second.directory, second.mirror, second.filename) == ("/tmp/a", True, "DESTFN=x")
    assert (third.directory, third.mirror, third.strip, third.flatten, third.accept) == (
        "/tmp/b", True, 2, "-", False)
    assert cfg.directory == "/tmp/b" and cfg.mirror is False     # global = last value
    assert cfg.filter("http://h/x/first.txt") == (True, first)
    assert cfg.filter("http://h/third/second.txt")[1] is second  # first match wins
    assert cfg.filter("http://h/third.txt") == (False, third)
    assert cfg.filter("http://h/other.txt") == (False, None)      # subscribe: unmatch off
    # regex is matched at the start only
    assert cfg.filter("xfirst")[1] is first and not first.match("")


def test_bindings_follow_exchange_and_topic_prefix(home):
    write("subscribe/b.conf", "\n".join([
        "subtopic a.#",
        "exchange xs_alice",
        "topic_prefix v02.report",
        "subtopic b.*",
        "broker amqp://carol@localhost/",
    ]) + "\n")
    cfg = load("subscribe", "b")
    assert [(b.exchange, b.key) for b in cfg.bindings] == [
        ("xpublic", "v02.post.a.#"), ("xs_alice", "v02.report.b.*")]
    cfg2 = load("subscribe", None, [("exchange", "xfoo"), ("broker", "amqp://u@h/")])
    assert [(b.exchange, b.key) for b in cfg2.bindings] == [("xfoo", "v02.post.#")]


def test_global_options_order_independent(home):
    write("subscribe/g1.conf", "exchange_suffix s1\nbroker amqp://dave@localhost/\n")
    write("subscribe/g2.conf", "broker amqp://dave@localhost/\nexchange_suffix s1\n")
    for name in ("g1", "g2"):
        cfg = load("subscribe", name)
        assert cfg.exchange == "xs_dave_s1"
        assert [b.exchange for b in cfg.bindings] == ["xs_dave_s1"]


def test_derived_defaults(home):
    write("admin.conf", "feeder amqp://feeder@pump.example.org:5672/\n")
    cfg = load("post", None, [("post_broker", "amqp://alice@pump.example.org:5672/")])
    assert cfg.post_exchange == "xs_alice" and cfg.to == "pump.example.org"
    assert cfg.origin("post_exchange") == "default"
    cfg = load("post", None, [("pb", "amqp://alice@h/"), ("post_exchange_suffix", "x")])
    assert cfg.post_exchange == "xs_alice_x"
    cfg = load("sarra")
    assert cfg.broker == cfg.post_broker == "amqp://feeder@pump.example.org:5672/"
    assert cfg.post_exchange == "xpublic" and cfg.report_exchange == "xreport"
    assert cfg.broker_netloc() == "pump.example.org:5672"
    cfg = load("subscribe", None, [("broker", "amqp://bob@pump.example.org/")])
    assert cfg.report_exchange == "xs_bob" and cfg.broker_user() == "bob"
    assert cfg.post_broker_user() == "anonymous" and cfg.inflight == ".tmp"
    assert cfg.retry_ttl == cfg.expire == 300 and cfg.sanity_log_dead == 450
    cfg = load("subscribe", None, [("broker", "amqp://bob@h/"), ("post_broker", "amqp://b@h/")])
    assert cfg.inflight is None
    cfg = load("report", None, [("broker", "amqp://alice@h/")])
    assert cfg.exchange == "xr_alice" and cfg.bindings[0].key == "v02.report.#"
    cfg = load("log", None, [("broker", "amqp://feeder@h/")])
    assert cfg.component == "report" and cfg.exchange == "xreport"


def test_queue_name_default(home):
    write("subscribe/dd_swob.conf", "broker amqps://anonymous@dd.weather.gc.ca/\n")
    cfg = load("subscribe", "dd_swob")
    assert cfg.queue_name_default("06413933.71328785") == \
        "q_anonymous.sr_subscribe.dd_swob.06413933.71328785"
    generated = cfg.queue_name_default()
    parts = generated.split(".")
    assert len(parts) == 5 and len(parts[3]) == 8 and parts[3].isdigit()
    cfg = load("subscribe", "dd_swob", [("queue_suffix", "S")])
    assert cfg.queue_name_default("1.2") == "q_anonymous.sr_subscribe.dd_swob.S.1.2"
    write("winnow/w.conf", "broker amqp://feeder@h/\nexchange_split on\nexchange xsarra\n")
    cfg = load("winnow", "w")
    assert cfg.queue_name_default("1.2", instance=3) == "q_feeder.sr_winnow02.w.1.2"
    assert [b.exchange for b in cfg.instance_bindings(3)] == ["xsarra02"]


def test_queue_name_prefix_warning(home, caplog):
    with caplog.at_level(logging.WARNING):
        load("subscribe", None, [("broker", "amqp://bob@h/"), ("queue_name", "q_alice.x")])
    assert "command line: queue_name 'q_alice.x' does not start with q_bob" in caplog.text


def test_plugins_and_headers(home):
    write("subscribe/p.conf", "\n".join([
        "on_message msg_log",
        "on_message msg_delay",
        "on_file None",
        "on_file mine",
        "plugin accel_wget",
        "header toto=1",
        "header gone=None",
        "suppress_duplicates on",
    ]) + "\n")
    cfg = load("subscribe", "p")
    assert cfg.plugins["on_message"] == ["msg_log", "msg_delay"]
    assert cfg.on_message is cfg.plugins["on_message"]
    assert cfg.plugins["on_file"] == ["mine"]
    assert cfg.plugins["on_post"] == ["post_log"]
    assert cfg.plugins["plugin"] == ["accel_wget"]
    assert cfg.plugins["on_heartbeat"] == ["hb_log", "hb_memory", "hb_cache", "hb_retry"]
    assert cfg.headers == {"toto": "1", "gone": None}
    assert cfg.suppress_duplicates == 300
    assert load("sender", None, [("broker", "amqp://f@h/")]).plugins["on_message"] == \
        ["msg_2localfile"]


def test_paths_declare_and_cli_booleans(home):
    write("admin.conf", "declare source alice\ndeclare subscriber anonymous\n"
                        "role subscribe bob\ndeclare exchange xcustom\n")
    cfg = load("post", None, ["-p", "/a", "--path", "/b", "--reset", "-pb", "amqp://u@h/",
                              "--preserve_mode", "off", "-e", "created|deleted"])
    assert cfg.paths == ["/a", "/b"] and cfg.path == ["/a", "/b"]
    assert cfg.reset is True and cfg.preserve_mode is False
    assert cfg.events == {"create", "delete"}
    assert cfg.declared["source"] == ["alice"]
    assert cfg.declared["subscriber"] == ["anonymous", "bob"]
    assert cfg.declared["exchange"] == ["xcustom"]
    with pytest.raises(ConfigError):
        load("post", None, ["-p", "/a", "stray"])


def test_show_masks_passwords(home):
    cfg = load("subscribe", None, [("broker", "amqp://bob:hunter2@h/"), ("accept", ".*")])
    text = cfg.show()
    assert "hunter2" not in text and "amqp://bob:***@h/" in text
    assert "command line" in text and "accept" in text


def test_attribute_errors_and_set(home):
    cfg = load("subscribe")
    with pytest.raises(AttributeError):
        cfg.no_such_option
    assert cfg.get("no_such_option", 5) == 5
    cfg.prefetch = 3
    assert cfg.prefetch == 3 and cfg.origin("prefetch") == "program"
    assert cfg.pb is None           # aliases resolve too


def test_debug_implies_loglevel(home):
    assert load("subscribe", None, [("debug", None)]).loglevel == "debug"


# ------------------------------------------------------------- per message

NOW = datetime.datetime(2024, 3, 1, 5, 6, 7, tzinfo=datetime.timezone.utc)


def test_expand_message_vars_dates():
    text = "/x/${YYYYMMDD}/${YYYY}-${MM}-${DD}T${HH}/${JJJ}"
    assert expand_message_vars(text, None, NOW) == "/x/20240301/2024-03-01T05/061"
    assert expand_message_vars("${YYYYMMDD-1D}/${JJJ-1D}", None, NOW) == "20240229/060"
    assert expand_message_vars("${HH-6H}", None, NOW.timestamp()) == "23"
    assert expand_message_vars("${YYYYMMDD+1d}", None, NOW) == "20240302"


def test_expand_message_vars_source_dirs_unknown(home):
    extra = {"PBD": "/pump", "BD": "/base"}
    out = expand_message_vars("${PBD}/${YYYYMMDD}/${SOURCE}/${BD}/${WHAT}", "alice", NOW, extra)
    assert out == "/pump/20240301/alice//base/${WHAT}"
    cfg = load("sarra", None, [("post_base_dir", "/var/www"), ("broker", "amqp://f@h/")])
    assert cfg.directory == "/var/www"
    assert cfg.expand_message_vars("${PDR}/${SOURCE}", "bob", NOW) == "/var/www/bob"
    assert cfg.expand_message_vars("${DR}", None, NOW) == "/var/www"


def test_sundew_vars():
    v = sundew_vars("SACN31_CWAO_211200_RRA:ncp1:CWAO:SA:3:Direct:20200121120005")
    assert (v["T1"], v["T2"], v["A1"], v["A2"], v["ii"], v["CCCC"]) == (
        "S", "A", "C", "N", "31", "CWAO")
    assert (v["YY"], v["GG"], v["Gg"], v["BBB"]) == ("21", "12", "00", "RRA")
    assert (v["RYYYY"], v["RMM"], v["RDD"], v["RHH"], v["RMN"], v["RSS"]) == (
        "2020", "01", "21", "12", "00", "05")
    out = expand_message_vars("/${T1}${T2}/${CCCC}/${RYYYY}", None, NOW,
                              sundew_vars("SACN31_CWAO_211200:x:20200121120005"))
    assert out == "/SA/CWAO/2020"


def test_config_that_is_a_directory(home):
    os.makedirs(os.path.join(paths.config_dir(), "subscribe", "dir.conf"))
    with pytest.raises(ConfigError) as e:
        load("subscribe", "dir")
    assert "dir.conf: cannot read: Is a directory" in str(e.value)


def test_size_rendering():
    blocksize = options.lookup("blocksize")
    assert options.format_value(blocksize, 200 << 20) == "200M"
    assert options.format_value(blocksize, 1536) == "1536"
    assert options.parse_size(options.format_value(blocksize, 3 << 30)) == 3 << 30


def test_sarra_refuses_discard(home):
    path = write("sarra/s.conf", "broker amqp://f@h/\ndiscard on\n")
    with pytest.raises(ConfigError) as e:
        load("sarra", "s")
    assert str(e.value) == "%s:2: option 'discard' is not allowed for sr_sarra" % path


def test_remote_include_fetched_and_cached(home, caplog):
    import http.server
    import threading

    body = b"prefetch 42\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = "http://127.0.0.1:%d/remote.conf" % server.server_port
    write("subscribe/r.conf", "include %s\n" % url)
    try:
        assert load("subscribe", "r").prefetch == 42
    finally:
        server.shutdown()
        server.server_close()
    with caplog.at_level(logging.WARNING):
        assert load("subscribe", "r").prefetch == 42     # server gone: cached copy
    assert "using cached copy" in caplog.text
    write("subscribe/r2.conf", "include http://127.0.0.1:%d/other.conf\n" % server.server_port)
    with pytest.raises(ConfigError) as e:
        load("subscribe", "r2")
    assert "r2.conf:1: include http://127.0.0.1" in str(e.value)


# ------------------------------------------------------------- options not acted on

NOT_ACTED_TEXT = "accepted for v2 compatibility, not acted on by sarra; ignored"


def _other_value(opt, component):
    """A config-file value for opt that differs from its default for component."""
    default = opt.default_for(component)
    if opt.type == options.BOOL:
        return "off" if default else "on"
    if opt.type in (options.INT, options.DURATION):
        return str(int(default or 0) + 7)
    if opt.type == options.OCTAL:
        return "0640" if default != 0o640 else "0644"
    if opt.type == options.CHOICE:
        return next(c for c in opt.choices if c != default)
    if opt.type == options.LIST:
        return "192.0.2.1,192.0.2.2"
    if opt.type == options.PLUGINS:
        return "some_plugin"
    assert opt.type == options.STR, opt.type
    return "value_%s" % opt.name


def _not_acted_warnings(caplog, name):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "option '%s'" % name in r.getMessage()
            and "not acted on" in r.getMessage()]


ALL_IGNORED = sorted(n for n, (comps, _why) in options.NOT_ACTED_ON.items() if "*" in comps)


def test_not_acted_on_set_lists_v2_stubs():
    for name in ("interface", "queue_share", "inline", "cache_stat"):
        assert not options.acted_on(name, "subscribe"), name
        assert options.NOT_ACTED_ON[name][1], name      # each says why
    assert options.acted_on("prefetch", "subscribe")
    assert options.acted_on("delete", "subscribe") and options.acted_on("delete", "sender")


@pytest.mark.parametrize("name", ALL_IGNORED)
def test_not_acted_on_option_in_file_warns_once(home, caplog, name):
    opt = options.lookup(name)
    value = _other_value(opt, "subscribe")
    path = write("subscribe/stub.conf", "broker amqp://u@h/\n%s %s\nprefetch 3\n%s %s\n"
                 % (name, value, name, value))
    with caplog.at_level(logging.WARNING):
        load("subscribe", "stub")
    got = _not_acted_warnings(caplog, name)
    assert got == ["%s:2: option '%s': %s" % (path, name, options.ignored_text(name))]


def test_not_acted_on_option_on_command_line_warns(home, caplog):
    with caplog.at_level(logging.WARNING):
        load("subscribe", None, ["--interface", "eth1", "--queue_share", "off", "--prefetch", "2"])
    assert _not_acted_warnings(caplog, "interface") == [
        "command line: option 'interface': " + options.ignored_text("interface")]
    assert _not_acted_warnings(caplog, "queue_share") == [
        "command line: option 'queue_share': " + options.ignored_text("queue_share")]
    assert not _not_acted_warnings(caplog, "prefetch")


def test_not_acted_on_alias_warns_under_canonical_name(home, caplog, monkeypatch):
    # no ignored option has an alias any longer (save_file acts): pretend it is ignored
    monkeypatch.setitem(options.NOT_ACTED_ON, "save_file", (options.ALL, "a test reason"))
    path = write("shovel/s.conf", "sf /tmp/saved\n")
    with caplog.at_level(logging.WARNING):
        load("shovel", "s")
    assert _not_acted_warnings(caplog, "save_file") == [
        "%s:1: option 'save_file': %s" % (path, options.ignored_text("save_file"))]


def test_acted_on_options_and_defaults_do_not_warn(home, caplog):
    write("subscribe/quiet.conf", "broker amqp://u@h/\nprefetch 3\ndelete on\n"
          "outlet post\nkbytes_ps 0\naccept .*\n")
    with caplog.at_level(logging.WARNING):
        cfg = load("subscribe", "quiet")
    assert cfg.delete is True
    assert not [r for r in caplog.records if "not acted on" in r.getMessage()]


def test_not_acted_on_per_component(home, caplog):
    partial = sorted((n, c) for n, (c, _w) in options.NOT_ACTED_ON.items() if "*" not in c)
    if not partial:
        pytest.skip("every option not acted on is ignored by all components")
    name, ignoring = partial[0]
    opt = options.lookup(name)
    acting = next(c for c in opt.components if c not in ignoring)
    for comp in (acting, ignoring[0]):
        write("%s/d.conf" % comp, "%s %s\n" % (name, _other_value(opt, comp)))
    with caplog.at_level(logging.WARNING):
        load(acting, "d")
    assert not _not_acted_warnings(caplog, name)
    with caplog.at_level(logging.WARNING):
        load(ignoring[0], "d")
    assert len(_not_acted_warnings(caplog, name)) == 1
    assert "d.conf:1: option '%s': %s" % (name, options.ignored_text(name)) in caplog.text


def test_accept_with_filename_rule_acts_in_subscribe(home, caplog):
    write("subscribe/fn.conf", "accept .*a WHATFN\naccept .*b\n")
    with caplog.at_level(logging.WARNING):
        cfg = load("subscribe", "fn")
    assert not _not_acted_warnings(caplog, "filename")
    assert [m.filename for m in cfg.masks] == ["WHATFN", None]


def test_post_base_url_round_robin_is_kept_whole(home, caplog):
    write("subscribe/rr.conf",
          "post_base_url sftp://u:secret@a.example/,sftp://u@b.example/\n")
    with caplog.at_level(logging.WARNING):
        cfg = load("subscribe", "rr")
    assert cfg.post_base_url == "sftp://u:secret@a.example/,sftp://u@b.example/"
    assert not _not_acted_warnings(caplog, "post_base_url")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load("subscribe", None, [("pbu", "http://one/")]).post_base_url == "http://one/"
    assert not _not_acted_warnings(caplog, "post_base_url")


def test_show_marks_not_acted_on_options(home):
    text = load("subscribe", None, [("interface", "eth5")]).show()
    lines = {line.split()[0]: line for line in text.splitlines()}
    for name in ("interface", "inline", "cache_stat", "queue_share"):
        assert lines[name].endswith(config.NOT_ACTED_MARK[:-1] + ": "
                                    + options.NOT_ACTED_ON[name][1] + "]"), name
    assert lines["interface"].split()[1:4] == ["eth5", "command", "line"]
    for name in ("prefetch", "delete", "broker"):
        assert "not acted on" not in lines[name], name
    sender = load("sender").show()
    assert "not acted on" not in [line for line in sender.splitlines()
                                  if line.split()[0] == "delete"][0]


# ------------------------------------------------------------- ranges, broker URLs, parts

NUMERIC = [o for o in options.OPTIONS if o.type in options.NUMERIC_TYPES]


def test_every_numeric_option_has_a_minimum():
    names = {o.name for o in NUMERIC}
    assert {"prefetch", "instances", "strip", "timeout", "blocksize", "bufsize", "expire",
            "heartbeat", "logdays", "suppress_duplicates", "parts"} <= names
    for o in NUMERIC:
        assert o.lo is not None, o.name
        default = o.default_for("subscribe")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert default >= o.lo and (o.hi is None or default <= o.hi), o.name
    assert (options.lookup("prefetch").lo, options.lookup("prefetch").hi) == (1, 65535)


@pytest.mark.parametrize("line, message", [
    ("prefetch -3", "option 'prefetch': -3 is below the minimum 1"),
    ("prefetch 0", "option 'prefetch': 0 is below the minimum 1"),
    ("prefetch 65536", "option 'prefetch': 65536 is above the maximum 65535"),
    ("instances 0", "option 'instances': 0 is below the minimum 1"),
    ("i -2", "option 'instances': -2 is below the minimum 1"),
    ("strip -1", "option 'strip': -1 is below the minimum 0"),
    ("timeout -1", "option 'timeout': bad duration '-1'"),
    ("heartbeat -5m", "option 'heartbeat': bad duration '-5m'"),
    ("attempts -1", "option 'attempts': -1 is below the minimum 0"),
    ("bufsize 0", "option 'bufsize': 0 is below the minimum 1"),
    ("logdays -1", "option 'logdays': -1 is below the minimum 0"),
    ("kbytes_ps -5", "option 'kbytes_ps': -5 is below the minimum 0"),
])
def test_out_of_range_value_is_an_error_naming_file_line(home, line, message):
    path = write("subscribe/r.conf", "broker amqp://u@h/\n%s\n" % line)
    with pytest.raises(ConfigError) as e:
        load("subscribe", "r")
    assert str(e.value) == "%s:2: %s" % (path, message)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("line, name, value", [
    ("prefetch 1", "prefetch", 1), ("prefetch 65535", "prefetch", 65535),
    ("instances 1", "instances", 1), ("strip 0", "strip", 0), ("strip 2", "strip", 2),
    ("timeout 1", "timeout", 1.0), ("timeout 0", "timeout", 0.0),     # v2 docs: 0
    ("heartbeat 0", "heartbeat", 0.0), ("attempts 0", "attempts", 0),
    ("expire 0", "expire", 0.0), ("logdays 0", "logdays", 0),
    ("strip ^/data/", "strip", "^/data/"),
])
def test_values_at_the_limits_are_accepted(home, line, name, value):
    write("subscribe/ok.conf", "broker amqp://u@h/\n%s\n" % line)
    assert getattr(load("subscribe", "ok"), name) == value


def test_out_of_range_on_the_command_line(home):
    with pytest.raises(ConfigError) as e:
        load("subscribe", None, ["--broker", "amqp://u@h/", "--prefetch", "-3"])
    assert str(e.value) == "command line: option 'prefetch': -3 is below the minimum 1"


@pytest.mark.parametrize("url, reason", [
    ("amqp://u:Pw-s3cr3t@127.0.0.1:notaport/",
     "amqp://u@127.0.0.1:notaport/: invalid broker URL (port 'notaport' is not a number)"),
    ("amqp://", "amqp:///: broker URL has no host name"),
    ("amqp://u:Pw-s3cr3t@[::1/",
     "amqp://u@[::1/: invalid broker URL (unbalanced [ ] around an IPv6 address)"),
    ("amqps://u:Pw-s3cr3t@h:70000/",
     "amqps://u@h:70000/: invalid broker URL (port 70000 is out of range 0-65535)"),
    ("http://u:Pw-s3cr3t@h/", "bad broker URL http://u@h/ (need amqp:// or amqps://)"),
])
@pytest.mark.parametrize("option", ["broker", "post_broker", "feeder", "admin"])
def test_unusable_broker_url_is_an_error_naming_file_line(home, url, reason, option):
    path = write("subscribe/b.conf", "subtopic #\n%s %s\n" % (option, url))
    with pytest.raises(ConfigError) as e:
        load("subscribe", "b")
    assert str(e.value) == "%s:2: option '%s': %s" % (path, option, reason)
    assert "s3cr3t" not in str(e.value)


def test_broker_url_with_comma_in_password_is_one_url(home):
    write("subscribe/c.conf", "broker amqp://u:a,b@h/\n")
    assert load("subscribe", "c").broker == "amqp://u:a,b@h/"


@pytest.mark.parametrize("value, blocksize, shown", [
    ("1", 1, "1"), ("0", 0, "0"), ("i,1M", 1 << 20, "i,1M"), ("i,10000", 10000, "i,10000"),
    ("I, 2M", 2 << 20, "i,2M"),
])
def test_v2_parts_sets_blocksize(home, value, blocksize, shown):
    path = write("post/p.conf", "blocksize 10M\nparts %s\n" % value)
    cfg = load("post", "p")
    assert cfg.blocksize == blocksize and cfg.origin("blocksize") == path + ":2"
    assert options.format_value(options.lookup("parts"), cfg.parts) == shown
    assert options.acted_on("parts", "post") and options.acted_on("parts", "watch")
    # the later of the two wins, as for any other option
    write("post/q.conf", "parts %s\nblocksize 10M\n" % value)
    assert load("post", "q").blocksize == 10 << 20


def test_v2_parts_does_not_warn_not_acted_on(home, caplog):
    write("post/p.conf", "parts i,1M\n")
    with caplog.at_level(logging.WARNING):
        load("post", "p")
    assert _not_acted_warnings(caplog, "parts") == []


@pytest.mark.parametrize("value, reason", [
    ("p,1M", "'p,1M': p (partitioned) cannot be posted; use 1, i,<size> or 0"),
    ("2", "bad parts '2' (use 1, i,<size> or 0)"),
    ("i,", "bad parts 'i,' (use 1, i,<size> or 0)"),
    ("i,lots", "bad size 'lots'"),
])
def test_v2_parts_bad_values(home, value, reason):
    path = write("post/bad.conf", "post_broker amqp://u@h/\nparts %s\n" % value)
    with pytest.raises(ConfigError) as e:
        load("post", "bad")
    assert str(e.value) == "%s:2: option 'parts': %s" % (path, reason)


def test_statehost_from_the_config_is_this_process_state_host(tmp_path, monkeypatch):
    import socket
    from sarra import paths
    from sarra.ops import instances, logs
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "k"))
    cdir = tmp_path / "c" / "sarra"
    (cdir / "subscribe").mkdir(parents=True)
    (cdir / "subscribe" / "a.conf").write_text("broker amqp://u@h/\nstatehost on\n"
                                               "hostform short\n")
    (cdir / "subscribe" / "b.conf").write_text("broker amqp://u@h/\n")
    short = socket.getfqdn().split(".")[0]
    hdir = tmp_path / "k" / "sarra" / short
    try:
        cfg = config.load("subscribe", "a")
        assert cfg.state_host() == short == paths.state_host()
        assert cfg.state_dir(create=False) == str(hdir / "subscribe" / "a")
        assert instances.pid_file("subscribe", "a", 1) == \
            hdir / "subscribe" / "a" / "sr_subscribe_a_01.pid"
        assert logs.log_file("subscribe", "a", 2) == hdir / "log" / "sr_subscribe_a_02.log"
        # the umbrella's loads leave the process setting alone
        config.load("subscribe", "b", set_state_host=False)
        assert paths.state_host() == short
        config.load("subscribe", "b")
        assert paths.state_host() is None
        assert instances.pid_file("subscribe", "b", 1).parent == \
            tmp_path / "k" / "sarra" / "subscribe" / "b"
        # default.conf decides for the umbrella command and the supervisor
        assert config.use_default_state_host() is None
        (cdir / "default.conf").write_text("statehost on\n")
        assert config.use_default_state_host() == socket.getfqdn() == paths.state_host()
    finally:
        paths.set_state_host(None)
