import logging
import sys
import textwrap
import time
import types

import pytest

from sarra.message import Message, format_time
from sarra.plugin import Hooks, PluginError, get_option, load, load_all


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))


@pytest.fixture
def pdir(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    return d


def write(d, name, text):
    p = d / name
    p.write_text(textwrap.dedent(text))
    return p


class Parent:
    def __init__(self, **kw):
        self.logger = logging.getLogger("test.parent")
        self.msg = None
        self.__dict__.update(kw)


def a_msg(relpath="a/b.txt", pubtime=None):
    return Message(pubtime or "20240101000000", "http://h/", relpath,
                   {"sum": "d," + "a" * 32, "parts": "1,10,1,0,0"}, topic="v02.post.a")


# ------------------------------------------------------------------ loading

def test_stock_plugin_by_name():
    import sarra.plugins.file_log as fl
    assert load("file_log", "on_file") is fl.on_file
    assert load("file_log.py", "on_file") is fl.on_file


def test_stock_alias_msg_delay():
    import sarra.plugins.delay as d
    assert load("msg_delay", "on_message") is d.on_message


def test_missing_hook_is_an_error():
    with pytest.raises(PluginError, match=r"^plugin file_log: defines no on_message$"):
        load("file_log", "on_message")


def test_not_found(pdir):
    with pytest.raises(PluginError, match=r"plugin nosuch: not found"):
        load("nosuch", "on_file", [str(pdir)])
    with pytest.raises(PluginError, match=r"unknown hook"):
        load("file_log", "on_frobnicate")
    with pytest.raises(PluginError, match="no such file"):
        load(str(pdir / "missing.py"), "on_file")


def test_modern_file_by_path_and_by_name(pdir):
    p = write(pdir, "mine.py", """
        def on_file(parent):
            parent.seen.append("mine")
            return True
    """)
    for name, dirs in ((str(p), []), ("mine", [str(pdir)]), ("mine.py", [str(pdir)])):
        f = load(name, "on_file", dirs)
        par = Parent(seen=[])
        assert f(par) is True and par.seen == ["mine"]


def test_user_dir_shadows_stock(pdir):
    write(pdir, "file_log.py", "def on_file(parent):\n    return 'user'\n")
    assert load("file_log", "on_file", [str(pdir)])(None) == "user"


def test_main_fallback(pdir):
    write(pdir, "only_main.py", "def main(parent):\n    return 42\n")
    assert load("only_main", "on_post", [str(pdir)])(None) == 42


def test_dotted_import_path(tmp_path, monkeypatch):
    pkg = tmp_path / "pkgdir" / "myplugs"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("def check(parent):\n    return 'dotted'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgdir"))
    assert load("myplugs.mod:check", "on_message")(None) == "dotted"
    with pytest.raises(PluginError, match="has no callable"):
        load("myplugs.mod:nothing", "on_message")
    with pytest.raises(PluginError, match="cannot import"):
        load("no_such_pkg_xyz.mod:f", "on_message")
    sys.modules.pop("myplugs.mod", None)
    sys.modules.pop("myplugs", None)


def test_v2_single_hook_style(pdir):
    write(pdir, "v2_single.py", """
        class Transformer(object):
            def __init__(self, parent):
                parent.declare_option('v2_opt')   # no-op when the parent lacks it
                parent.declared = True
                self.tag = 'v2'

            def on_message(self, parent):
                parent.msg.headers['seen_by'] = self.tag
                parent.logger.info('v2 plugin saw %s', parent.msg.relpath)
                return True

        self.logger.info('loading v2_single')   # proxied to the parent
        transformer = Transformer(self)
        self.on_message = transformer.on_message
    """)
    par = Parent(msg=a_msg())
    f = load("v2_single", "on_message", [str(pdir)], parent=par)
    assert par.declared is True            # attribute writes go to the parent
    assert f(par) is True
    assert par.msg.headers["seen_by"] == "v2"
    with pytest.raises(PluginError, match=r"^plugin v2_single: defines no on_file$"):
        load("v2_single", "on_file", [str(pdir)], parent=par)


def test_v2_multi_hook_style(pdir):
    write(pdir, "v2_multi.py", """
        class Multi(object):
            def __init__(self, parent):
                self.count = 0
                self.threshold = int(parent.multi_threshold[-1])

            def on_message(self, parent):
                self.count += 1
                return self.count <= self.threshold

            def on_file(self, parent):
                parent.files.append(parent.msg.relpath)

            def helper(self):
                pass

        self.plugin = 'Multi'
    """)
    par = Parent(multi_threshold=["9", "1"], files=[], msg=a_msg())
    hooks, schemes = load_all("v2_multi", [str(pdir)], parent=par)
    assert sorted(hooks) == ["on_file", "on_message"] and schemes is None
    h = Hooks(par, search_dirs=[str(pdir)])
    h.add("plugin", "v2_multi")
    assert h.has("on_message") and h.has("on_file") and not h.has("on_post")
    assert h.run("on_message") is True
    assert h.run("on_message") is False      # second message exceeds threshold 1
    assert h.run("on_file") is True and par.files == ["a/b.txt"]
    # the single-hook loader also takes a method from a multi-hook class
    assert load("v2_multi", "on_file", [str(pdir)], parent=par)


def test_v2_plugin_class_missing(pdir):
    write(pdir, "v2_bad.py", "self.plugin = 'Nope'\n")
    with pytest.raises(PluginError, match="does not define"):
        load("v2_bad", "on_message", [str(pdir)], parent=Parent())


def test_load_errors_name_file_and_line(pdir):
    p = write(pdir, "broken.py", "x = 1\ndef on_file(parent)\n    pass\n")
    with pytest.raises(PluginError, match=rf"plugin broken: {p}:2: SyntaxError"):
        load("broken", "on_file", [str(pdir)])
    p2 = write(pdir, "raises.py", "a = 1\nb = 1 / 0\n")
    with pytest.raises(PluginError, match=rf"plugin raises: {p2}:2: ZeroDivisionError"):
        load("raises", "on_file", [str(pdir)])


# ------------------------------------------------------------------ Hooks

def recorder(tag, result=True, log=None):
    def f(parent, *args):
        (log if log is not None else parent.calls).append((tag, args))
        return result
    return f


def test_hook_list_order_and_false_stops():
    par = Parent(calls=[])
    h = Hooks(par, search_dirs=[])
    h.add_callable("on_message", recorder("x"))
    h.add_callable("on_message", recorder("y", None))
    h.add_callable("on_message", recorder("z", False), name="z")
    h.add_callable("on_message", recorder("never"))
    assert h.run("on_message", 1) is False
    assert par.calls == [("x", (1,)), ("y", (1,)), ("z", (1,))]
    assert h.names("on_message") == ["f", "f", "z", "f"]


def test_clearing_with_none(pdir):
    par = Parent()
    h = Hooks(par, search_dirs=[str(pdir)])
    h.add("on_file", "file_log")
    h.add("on_post", "post_log")
    for off in (None, "None", "none", "off"):
        h.add("on_file", "file_log")
        assert h.has("on_file")
        h.add("on_file", off)
        assert not h.has("on_file")
    assert h.has("on_post")
    h.add("on_file", "file_log")
    h.add("on_file", "file_log")
    assert h.names("on_file") == ["file_log", "file_log"]
    with pytest.raises(PluginError):
        h.add("on_frob", "file_log")


def test_exception_logged_once_with_name_and_relpath(pdir, caplog):
    write(pdir, "boom.py", "def on_file(parent):\n    return 1 / 0\n")
    par = Parent(calls=[], msg=a_msg("a/b.txt"))
    h = Hooks(par, search_dirs=[str(pdir)])
    h.add("on_file", "boom")
    h.add_callable("on_file", recorder("after"))
    caplog.set_level(logging.DEBUG)
    assert h.run("on_file") is False              # filtering hook: exception = False
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["plugin boom on_file failed for a/b.txt: "
                      "ZeroDivisionError: division by zero"]
    assert par.calls == []
    # the flow goes on: the next message runs the hooks again
    par.msg = a_msg("c/d.txt")
    caplog.clear()
    assert h.run("on_file") is False
    assert "for c/d.txt" in [r for r in caplog.records if r.levelno >= logging.ERROR][0].getMessage()


def test_exception_ignored_for_non_filter_hooks(caplog):
    par = Parent(calls=[])
    h = Hooks(par, search_dirs=[])

    def bad(parent):
        raise RuntimeError("nope")
    h.add_callable("on_heartbeat", bad, name="bad")
    h.add_callable("on_heartbeat", recorder("next"))
    assert h.run("on_heartbeat") is True
    assert par.calls == [("next", ())]
    assert "plugin bad on_heartbeat failed: RuntimeError: nope" in caplog.text
    # on_start/on_stop results are ignored: all run
    h.add_callable("on_start", recorder("s1", False))
    h.add_callable("on_start", recorder("s2"))
    assert h.run("on_start") is True
    assert [c[0] for c in par.calls][-2:] == ["s1", "s2"]


def test_run_first_and_schemes(pdir):
    write(pdir, "v2_dl.py", """
        class Downloader(object):
            def __init__(self, parent):
                pass
            def registered_as(self):
                return ['download']
            def do_download(self, parent):
                parent.calls.append('plugin')
                return True
        self.plugin = 'Downloader'
    """)
    par = Parent(calls=[])
    h = Hooks(par, search_dirs=[str(pdir)])
    assert h.run_first("do_download") is None
    h.add("plugin", "v2_dl")
    assert h.schemes("do_download") == ["download"]
    assert h.run_first("do_download", scheme="http") is None
    assert h.run_first("do_download", scheme="download") is True
    h.add_callable("do_send", lambda p: None, name="pass")
    h.add_callable("do_send", lambda p: False, name="fail")
    assert h.run_first("do_send") is False

    def bad(parent):
        raise OSError("disk")
    h.add_callable("do_download", bad, name="bad")
    assert h.run_first("do_download", scheme="sftp") is False


def test_run_data():
    h = Hooks(Parent(), search_dirs=[])
    assert h.run_data(b"abc") == b"abc"
    h.add_callable("on_data", lambda p, c: c.upper())
    h.add_callable("on_data", lambda p, c: c + b"!")
    assert h.run_data(b"abc") == b"ABC!"
    h.add_callable("on_data", lambda p, c: 1 / 0, name="bad")
    with pytest.raises(PluginError, match="plugin bad: on_data failed"):
        h.run_data(b"x")


def test_get_option():
    assert get_option(Parent(x=["a", "b"]), "x") == "b"
    assert get_option(Parent(), "x", 5) == 5
    assert get_option(Parent(x=[]), "x", 5) == 5

    class WithGetter(Parent):
        def get_option(self, name, default=None):
            return {"y": ["1"]}.get(name, default)
    assert get_option(WithGetter(), "y") == "1"
    assert get_option(WithGetter(), "z", "d") == "d"
    assert get_option(None, "z", "d") == "d"


# ------------------------------------------------------------------ stock plugins

def test_file_log(caplog):
    par = Parent(msg=a_msg())
    caplog.set_level(logging.INFO)
    h = Hooks(par, search_dirs=[])
    h.add("on_file", "file_log")
    assert h.run("on_file") is True
    assert "downloaded a/b.txt" in caplog.text
    par.msg.new_dir, par.msg.new_file = "/data/x", "f.bin"
    h.run("on_file")
    assert "downloaded /data/x/f.bin" in caplog.text


def test_post_and_msg_log(caplog):
    par = Parent(msg=a_msg("dir/f%20g.txt"))
    caplog.set_level(logging.INFO)
    h = Hooks(par, search_dirs=[])
    h.add("on_post", "post_log")
    h.add("on_message", "msg_log")
    assert h.run("on_post") and h.run("on_message")
    assert "posted http://h/dir/f%20g.txt topic v02.post.a" in caplog.text
    assert "topic v02.post.a url http://h/dir/f%20g.txt" in caplog.text
    assert "parts=1,10,1,0,0" in caplog.text and " lag " in caplog.text


def test_hb_log(caplog):
    caplog.set_level(logging.INFO)
    h = Hooks(Parent(counters={"received": 3, "failed": 1}), search_dirs=[])
    h.add("on_heartbeat", "hb_log")
    assert h.run("on_heartbeat")
    assert "heartbeat failed=1 received=3" in caplog.text
    h2 = Hooks(Parent(), search_dirs=[])
    h2.add("on_heartbeat", "hb_log")
    assert h2.run("on_heartbeat")


def test_run_command(tmp_path, caplog):
    target = tmp_path / "got.txt"
    f = tmp_path / "in file.txt"
    f.write_text("x")
    par = Parent(msg=a_msg(), run_command_cmd=["cp -p"])
    par.msg.new_dir, par.msg.new_file = str(tmp_path), "in file.txt"
    h = Hooks(par, search_dirs=[])
    h.add("on_file", "run_command")
    # path with a space arrives as one argument: cp -p '<dir>/in file.txt' (missing dest)
    caplog.set_level(logging.INFO)
    assert h.run("on_file") is False
    assert "exited with status" in caplog.text
    script = tmp_path / "copy.sh"
    script.write_text(f'#!/bin/sh\ncp "$1" "{target}"\n')
    script.chmod(0o755)
    par.run_command_cmd = [str(script)]
    assert h.run("on_file") is True and target.read_text() == "x"
    par.run_command_cmd = ["/no/such/program"]
    assert h.run("on_file") is False and "cannot run /no/such/program" in caplog.text
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 5\ntrue\n")
    slow.chmod(0o755)
    par.run_command_cmd = [str(slow)]
    par.run_command_timeout = ["0.2"]
    t0 = time.monotonic()
    assert h.run("on_file") is False and "timed out" in caplog.text
    assert time.monotonic() - t0 < 3      # the sleeping grandchild was killed too
    del par.run_command_cmd
    assert h.run("on_file") is False and "run_command_cmd is not set" in caplog.text


def test_delay_sleeps_until_old_enough(monkeypatch):
    import sarra.plugins.delay as d
    now = 1_700_000_000.0
    slept = []
    monkeypatch.setattr(d, "_now", lambda: now)
    monkeypatch.setattr(d, "_sleep", slept.append)
    par = Parent(msg_delay=["30"], msg=a_msg(pubtime=format_time(now - 10)))
    assert d.on_message(par) is True
    assert slept == [pytest.approx(20.0)]
    par.msg = a_msg(pubtime=format_time(now - 40))
    assert d.on_message(par) is True and len(slept) == 1
    par.msg = a_msg(pubtime=format_time(now + 3600))    # clock skew: capped at msg_delay
    d.on_message(par)
    assert slept[-1] == pytest.approx(30.0)
    par.msg_delay = ["0"]
    par.msg = a_msg(pubtime=format_time(now))
    assert d.on_message(par) is True and len(slept) == 2


def test_delay_defers_via_retry(monkeypatch):
    import sarra.plugins.delay as d
    now = 1_700_000_000.0
    monkeypatch.setattr(d, "_now", lambda: now)
    monkeypatch.setattr(d, "_sleep", lambda s: pytest.fail("must not sleep"))
    deferred = []
    par = Parent(msg_delay=["30"], msg=a_msg(pubtime=format_time(now - 10)),
                 consumer=types.SimpleNamespace(msg_to_retry=lambda: deferred.append(1)))
    assert d.on_message(par) is False and deferred == [1]
