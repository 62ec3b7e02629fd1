"""sr_poll's listing parsers (sarra/poll/listing.py): ls lines unix and DOS style, MLSD
facts, HTML index pages of Apache, nginx and python's http.server, hostile names; and
the pieces of a poll that need no server (posts, state, lister plugins)."""

import calendar
import logging
import types

import pytest

from sarra.poll import announce, lister, listing
from sarra.poll.listing import Entry
from sarra.poll.state import PollState

NOW = calendar.timegm((2026, 12, 5, 12, 0, 0))


def t(*ymdhms):
    return float(calendar.timegm(ymdhms + (0,) * (6 - len(ymdhms))))


# ------------------------------------------------------------------ ls lines

@pytest.mark.parametrize("line, name, size, mtime, isdir", [
    ("-rw-r--r--   1 ftp      ftp          1234 Mar 22 22:54 a file.txt",
     "a file.txt", 1234, t(2026, 3, 22, 22, 54), False),
    ("-rw-r--r--   1 ftp      ftp          1234 Dec 24 22:54 last-year.txt",  # future: -1 y
     "last-year.txt", 1234, t(2025, 12, 24, 22, 54), False),
    ("drwxr-xr-x    2 0        0            4096 Jan  3  2020 sub", "sub", 4096,
     t(2020, 1, 3), True),
    ("-rw-r--r-- 1 owner 77 Jun 30 2019 nogroup.bin", "nogroup.bin", 77, t(2019, 6, 30), False),
    ("-rw-r--r--   1 1000     1000         8123 24 Mar 22:54 2017-03-25-swob.xml",  # paramiko
     "2017-03-25-swob.xml", 8123, t(2026, 3, 24, 22, 54), False),
    ("-rw-r--r-- 1 - - 5 2021-09-06 11:09:00 iso.txt", "iso.txt", 5, t(2021, 9, 6, 11, 9), False),
    ("-rw-r--r--   1 ftp ftp 3 Mar 22 22:54  two  spaces ", " two  spaces ", 3,
     t(2026, 3, 22, 22, 54), False),
    ("03-25-17  10:54PM       1234 dos name.txt", "dos name.txt", 1234,
     t(2017, 3, 25, 22, 54), False),
    ("03-25-2017  12:05AM       <DIR>          dosdir", "dosdir", None,
     t(2017, 3, 25, 0, 5), True),
])
def test_ls_lines(line, name, size, mtime, isdir):
    e = listing.parse_line(line, NOW)
    assert (e.name, e.size, e.mtime, e.isdir) == (name, size, mtime, isdir)
    assert e.line == line


def test_ls_line_link_and_mode():
    e = listing.parse_line("lrwxrwxrwx 1 u g 7 Jan  3  2020 ln -> ../../etc/passwd", NOW)
    assert (e.name, e.link, e.mode) == ("ln", True, 0o777)
    e = listing.parse_line("-rwSr-x--T 1 u g 7 Jan  3  2020 f", NOW)
    assert e.mode == 0o650


@pytest.mark.parametrize("line", ["total 12", "", "garbage line here",
                                  "-rw-r--r-- 1 u g 12 Foo 22 22:54 badmonth",
                                  "-rw-r--r-- 1 u g 12 Feb 31 22:54 badday",
                                  "x" * (listing.MAX_LINE + 1)])
def test_ls_lines_that_are_not_entries(line):
    assert listing.parse_line(line, NOW) is None or listing.parse_line(line, NOW).mtime is None


def test_ls_line_round_trip():
    e = Entry("a b", 12, t(2026, 11, 30, 8, 5), False, 0o640)
    back = listing.parse_line(listing.ls_line(e, NOW), NOW)
    assert (back.name, back.size, back.mtime, back.mode) == ("a b", 12, e.mtime, 0o640)
    old = Entry("old", 1, t(2019, 1, 2), True)
    back = listing.parse_line(listing.ls_line(old, NOW), NOW)
    assert (back.name, back.isdir, back.mtime) == ("old", True, t(2019, 1, 2))


def test_mlsd_facts():
    e = listing.mlsd_entry("f.txt", {"type": "file", "size": "3",
                                     "modify": "20200101120000.5", "unix.mode": "0644"})
    assert (e.size, e.mtime, e.mode, e.isdir) == (3, t(2020, 1, 1, 12) + 0.5, 0o644, False)
    assert listing.mlsd_entry(".", {"type": "cdir"}) is None
    assert listing.mlsd_entry("..", {"type": "pdir"}) is None
    assert listing.mlsd_entry("d", {"Type": "dir"}).isdir
    assert listing.mlsd_entry("x", {"type": "file", "modify": "bogus"}).mtime is None


def test_sftp_attributes():
    attr = types.SimpleNamespace(filename="s.bin", st_size=9, st_mtime=1_600_000_000,
                                 st_mode=0o100640)
    e = listing.sftp_entry(attr)
    assert (e.name, e.size, e.mtime, e.mode, e.isdir) == ("s.bin", 9, 1.6e9, 0o640, False)
    assert e.line.startswith("-rw-r----- 1 - - 9 ")


# ------------------------------------------------------------------ HTML index pages

APACHE = """<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html><head><title>Index of /data</title></head><body><h1>Index of /data</h1>
<table><tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th>
<th><a href="?C=S;O=A">Size</a></th></tr>
<tr><td><a href="/">Parent Directory</a></td><td>&nbsp;</td><td align="right">  - </td></tr>
<tr><td><a href="obs%20one.txt">obs one.txt</a></td><td align="right">2026-11-25 10:54  </td>
<td align="right">1.2K</td></tr>
<tr><td><a href="exact.bin">exact.bin</a></td><td align="right">2026-11-26 11:00  </td>
<td align="right">512</td></tr>
<tr><td><a href="sub/">sub/</a></td><td align="right">2026-11-20 09:00  </td>
<td align="right">  - </td></tr>
</table></body></html>"""

NGINX = """<html><head><title>Index of /pub/</title></head><body><h1>Index of /pub/</h1><hr><pre>
<a href="../">../</a>
<a href="radar/">radar/</a>                                             05-Dec-2026 10:00       -
<a href="a%23b.grib2">a#b.grib2</a>                                      04-Dec-2026 22:54    123456
<a href="t%C3%A9l%C3%A9.txt">t&#233;l&#233;.txt</a>                       01-Dec-2026 01:02        7
</pre><hr></body></html>"""

PYTHON = """<!DOCTYPE HTML><html><head><title>Directory listing for /x/</title></head>
<body><h1>Directory listing for /x/</h1><hr><ul>
<li><a href="a.txt">a.txt</a></li><li><a href="b%20c.txt">b c.txt</a></li>
<li><a href="d/">d/</a></li><li><a href="ln%40">ln@</a></li></ul><hr></body></html>"""


def by_name(entries):
    return {e.name: e for e in entries}


def test_apache_index():
    got = by_name(listing.html_entries(APACHE, NOW))
    assert sorted(got) == ["exact.bin", "obs one.txt", "sub"]
    assert got["obs one.txt"].size is None                 # 1.2K is not a size: HEAD
    assert got["obs one.txt"].mtime == t(2026, 11, 25, 10, 54)
    assert got["exact.bin"].size == 512
    assert got["sub"].isdir and got["sub"].mtime == t(2026, 11, 20, 9)
    assert got["obs one.txt"].listed       # the page's words: a change in them is a change


def test_nginx_index():
    got = by_name(listing.html_entries(NGINX, NOW))
    assert sorted(got) == ["a#b.grib2", "radar", "télé.txt"]
    assert (got["a#b.grib2"].size, got["a#b.grib2"].mtime) == (123456, t(2026, 12, 4, 22, 54))
    assert got["radar"].isdir and got["télé.txt"].size == 7


def test_python_http_server_index():
    got = by_name(listing.html_entries(PYTHON, NOW))
    assert sorted(got) == ["a.txt", "b c.txt", "d", "ln@"]
    assert all(e.size is None and e.mtime is None and not e.listed
               for n, e in got.items() if n != "d")
    assert got["d"].isdir


def test_index_links_that_name_nothing_here_are_left_out():
    page = ('<a href="http://elsewhere/x">x</a><a href="/abs/y">y</a><a href="#top">t</a>'
            '<a href="z?download=1">z</a><a href="./ok.txt">ok</a><a>no href</a>'
            '<a href="..">up</a><a href="">empty</a>')
    assert [e.name for e in listing.html_entries(page, NOW)] == ["ok.txt"]


def test_broken_html_lists_what_it_can():
    page = '<a href="a.txt">a</a><table><tr><td>' + '<b>' * 1000 + '<a href="b.txt"'
    assert [e.name for e in listing.html_entries(page, NOW)] == ["a.txt"]


# ------------------------------------------------------------------ hostile names

@pytest.mark.parametrize("name, why", [
    ("", "empty"), (".", "itself"), ("..", "parent"), ("a/b", "'/'"),
    ("../../etc/passwd", "'/'"), ("x\x00y", "control"), ("x\ny", "control"),
    ("x\x1b[31m", "control"), ("x\x7f", "control"), ("n" * 256, "longer than 255"),
    ("é" * 128, "longer than 255"), ("bad\udcff", "UTF-8"),
])
def test_hostile_names_refused(name, why):
    assert why in listing.refuse_name(name)


@pytest.mark.parametrize("name", ["a", "a b", "#x", "é" * 127, "n" * 255, ".hidden", "a..b"])
def test_ordinary_names_pass(name):
    assert listing.refuse_name(name) is None


def test_checked_bounds_and_logs(caplog, monkeypatch):
    monkeypatch.setattr(listing, "MAX_ENTRIES", 3)
    log = logging.getLogger("t")
    entries = [Entry(n) for n in ("a", "../x", "b", "a", "c\x01", "d", "e", "f")]
    with caplog.at_level(logging.WARNING):
        out = listing.checked(entries, log, "ftp://h/d")
    assert [e.name for e in out] == ["a", "b", "d"]
    assert "'../x' refused: holds a '/'" in caplog.text
    assert "listed twice" in caplog.text and "c\\x01" in caplog.text
    assert "more than 3 entries" in caplog.text


def test_html_parser_bounded(monkeypatch):
    monkeypatch.setattr(listing, "MAX_ENTRIES", 10)
    page = "".join('<a href="f%d">f</a>' % i for i in range(100))
    assert len(listing.html_entries(page, NOW)) <= 12


# ------------------------------------------------------------------ lister plugins

class Drv:
    def __init__(self, raw):
        self.raw = raw

    def listdir(self, url, limit=None):
        return self.raw


class Parent:
    line = data = None
    entries = {}
    chmod = 0o400


def test_on_line_rewrites_and_drops():
    from sarra import plugin
    parent = Parent()
    hooks = plugin.Hooks(parent, logging.getLogger("t"), search_dirs=[])
    hooks.add("on_line", "line_mode")

    def rename(p):
        if " drop" in p.line:
            return False
        p.line = p.line.replace("old", "new")
        return True

    hooks.add_callable("on_line", rename)
    raw = ["-rw-r--r-- 1 u g 3 Mar 22 22:54 old.txt", "--w------- 1 u g 3 Mar 22 22:54 wo",
           "-rw-r--r-- 1 u g 3 Mar 22 22:54 drop", "total 3"]
    got = lister.list_directory(Drv(raw), "ftp://h/", hooks, parent, logging.getLogger("t"),
                                "ftp://h/")
    assert [e.name for e in got] == ["new.txt"]         # wo: mode lacks 0400 (line_mode)


def test_on_html_page_plugin_gives_entries():
    from sarra import plugin
    parent = Parent()
    hooks = plugin.Hooks(parent, logging.getLogger("t"), search_dirs=[])

    def page(p):
        p.entries = {"x.txt": "-rw-r--r-- 1 u g 5 Mar 22 22:54 x.txt", "bad/": "nonsense"}

    hooks.add_callable("on_html_page", page)
    got = lister.list_directory(Drv("<html></html>"), "http://h/", hooks, parent,
                                logging.getLogger("t"), "http://h/")
    assert [(e.name, e.size) for e in got] == [("x.txt", 5)]
    hooks.clear("on_html_page")
    hooks.add("on_html_page", "html_page")      # the default: the built-in parser
    got = lister.list_directory(Drv(PYTHON), "http://h/", hooks, parent,
                                logging.getLogger("t"), "http://h/")
    assert sorted(e.name for e in got) == ["a.txt", "b c.txt", "d", "ln@"]


def test_listing_failure_is_one_error():
    from sarra.transfer import TransferError

    class Broken:
        def listdir(self, url, limit=None):
            raise TransferError(499, "ftp list failed: 421 closing ftp://h/d")

    with pytest.raises(lister.ListingError, match="cannot list ftp://h/d: ftp list failed"):
        lister.list_directory(Broken(), "ftp://h/d", None, Parent(), logging.getLogger("t"),
                              "ftp://h/d")


# ------------------------------------------------------------------ posts and state

def cfg(**kw):
    base = dict(post_base_url=None, destination="ftp://u:secret@h/", post_base_dir=None,
                to="pump", preserve_time=True, sum=None, source=None, cluster=None,
                headers={}, post_topic_prefix="v02.post", post_exchange="xs_u")
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_post_of_a_listed_file():
    c = cfg()
    base = announce.base_url(c)
    assert base == "ftp://u@h/"                         # the password never posted
    m = announce.file_post(c, base, "/data/a b#.txt", 12, t(2026, 1, 2, 3, 4, 5))
    topic, body, headers = m.encode()
    assert body.split()[1:] == ["ftp://u@h/", "/data/a%20b%23.txt"]
    assert topic == "v02.post.data"
    assert headers["sum"] == "z,d" and headers["parts"] == "1,12,1,0,0"
    assert headers["mtime"] == headers["atime"] == "20260102030405"
    assert headers["to_clusters"] == "pump"
    assert announce.sum_header("s") == "z,s" and announce.sum_header("z,d") == "z,d"
    m = announce.file_post(cfg(post_base_dir="/data"), base, "/data/x", 1, None, rename="/r/")
    assert m.encode()[1].split()[2] == "/x" and m.headers["rename"] == "/r/x"


def test_directory_urls():
    assert announce.dir_url("ftp://h/", "/data") == "ftp://h//data/"     # absolute
    assert announce.dir_url("ftp://h/", "data") == "ftp://h/data/"       # login-relative
    assert announce.dir_url("ftp://h/", ".") == "ftp://h/"
    assert announce.dir_url("http://h/", "/data") == "http://h/data/"


def test_state_commits_only_what_was_confirmed(tmp_path):
    path = str(tmp_path / "s.ls")
    s = PollState(path)
    s.stage("/d", {"a": [1, 2, ""]})
    assert s.get("/d") == {"a": [1, 2, ""]}
    s.rollback()                                    # the broker did not confirm
    assert s.get("/d") == {} and PollState(path).dirs == {}
    s.stage("/d", {"a": [1, 2, ""]})
    s.stage("/e", {"b": [3, 4, ""]})
    s.commit()
    assert PollState(path).dirs == {"/d": {"a": [1, 2, ""]}, "/e": {"b": [3, 4, ""]}}
    s.commit(keep={"/e"})                           # /d no longer polled (a date rolled)
    assert PollState(path).dirs == {"/e": {"b": [3, 4, ""]}}
    (tmp_path / "s.ls").write_text("{not json")
    assert PollState(path, logging.getLogger("t")).dirs == {}


# ------------------------------------------------------------------ the source: commit/rollback

def test_source_commits_on_done_and_rolls_back_on_failed(home, monkeypatch):
    """done(): the poll's record is what was announced (nothing again); failed(): it is
    dropped and the duplicate cache forgets the posts (announced again next poll)."""
    import threading
    from sarra import plugin
    from sarra.config import parser as config
    from sarra.flow.cache import DupCache, cache_key
    from sarra.poll import poller as pollmod
    from sarra.poll.source import PollSource

    d = home / ".config" / "sarra" / "poll"
    d.mkdir(parents=True)
    (d / "u.conf").write_text("post_broker amqp://guest@localhost/\n"
                              "destination ftp://h/\ndirectory /d\naccept .*\n")
    cfg = config.load("poll", "u")
    import time
    recent = time.time() - 3600
    listed = [listing.ls_line(Entry("a.txt", 3, recent))]
    monkeypatch.setattr(pollmod.Poller, "driver", lambda self, url: Drv(listed))
    parent = types.SimpleNamespace()
    hooks = plugin.Hooks(parent, logging.getLogger("t"), search_dirs=[])
    cache = DupCache(None, 1200)
    flow = types.SimpleNamespace(cfg=cfg, log=logging.getLogger("t"), hooks=hooks,
                                 stop_event=threading.Event(), plugin_parent=parent, no=1,
                                 credentials=None, cache=cache)
    src = PollSource(flow)
    batch = src.get(0)
    assert [w.msg.path for w in batch] == ["/d/a.txt"]
    for w in batch:                      # what the engine's post step does
        cache.check_and_add(cache_key(w.msg))
    src.failed(batch, RuntimeError("posts not confirmed"))
    assert cache_key(batch[0].msg) not in cache
    src._next = 0
    batch = src.get(0)
    assert [w.msg.path for w in batch] == ["/d/a.txt"]      # announced again
    src.done(batch)
    src._next = 0
    assert src.get(0) == []
    src2 = PollSource(flow)                                  # a restart
    assert src2.get(0) == []
    listed[0] = listing.ls_line(Entry("a.txt", 5, recent + 60))     # it grew
    src2._next = 0
    assert [w.msg.headers["parts"] for w in src2.get(0)] == ["1,5,1,0,0"]


def test_destination_timezone(home):
    from sarra.config import parser as config
    from sarra.poll.poller import time_zone
    e = listing.parse_line("-rw-r--r-- 1 u g 3 Jul 01 2024 summer.txt", NOW)
    assert e.wall and e.mtime == t(2024, 7, 1)
    cfg = types.SimpleNamespace(destination_timezone="America/Toronto")
    listing.in_zone(e, time_zone(cfg))
    assert e.mtime == t(2024, 7, 1, 4)          # midnight in Toronto (EDT) is 04:00 UTC
    listing.in_zone(e, time_zone(cfg))
    assert e.mtime == t(2024, 7, 1, 4)          # once only
    m = listing.mlsd_entry("m", {"type": "file", "modify": "20240701000000"})
    assert listing.in_zone(m, time_zone(cfg)).mtime == t(2024, 7, 1)   # true UTC already
    assert time_zone(types.SimpleNamespace(destination_timezone="UTC")) is None
    d = home / ".config" / "sarra" / "poll"
    d.mkdir(parents=True)
    (d / "z.conf").write_text("destination ftp://h/\ndestination_timezone Mars/Olympus\n")
    with pytest.raises(ValueError, match=r"z.conf:2: option destination_timezone: unknown "
                                         r"time zone 'Mars/Olympus'"):
        time_zone(config.load("poll", "z"))
