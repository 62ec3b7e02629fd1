"""The configuration syntax of v2 in full (issue 19, item 1): word splitting, backslash
escapes, comments, includes, variables, and every option family the v2 example configs
use (configs written here, not copied: v2's 2.x package ships 44 of them).
"""

import logging
import os

import pytest

from sarra import paths
from sarra.config import words
from sarra.config.parser import ConfigError, load
from sarra.flow.poster import resolve_path


def write(relpath, text):
    path = os.path.join(paths.config_dir(), relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


# ------------------------------------------------------------------ words of a line

@pytest.mark.parametrize("line,expected", [
    ("path sub\\ dir/with\\ space.txt", ["path", "sub dir/with space.txt"]),
    ("path a\\ \\ b", ["path", "a  b"]),                  # two escaped spaces
    ("path a\\   b", ["path", "a b"]),                    # then more blanks: one space
    ("  accept\t.*\\.tmp$   ", ["accept", ".*\\.tmp$"]),   # a backslash inside stays
    ("directory C:\\", ["directory", "C:\\"]),           # one ending the line stays
    ('header x="a b"', ["header", 'x="a', 'b"']),        # no quotes
    ("accept .*#.*", ["accept", ".*#.*"]),
])
def test_split_words(line, expected):
    assert words.split_words(line) == expected


@pytest.mark.parametrize("line,expected", [
    ("# a comment", None), ("   \t# indented", None), ("", None), ("   ", None),
    ("subtopic #", ("subtopic", ["#"])),
    ("expire 1d # one day", ("expire", ["1d"])),
    ("accept .*a.* # the a files", ("accept", [".*a.*"])),
    ("accept .*a.* fname#1", ("accept", [".*a.*", "fname#1"])),
    ("mirror", ("mirror", [])),
    ("mirror   ", ("mirror", [])),
    ("--mirror on", ("mirror", ["on"])),              # copied from a command line
    ("-pbd /data", ("pbd", ["/data"])),
])
def test_option_line(line, expected):
    assert words.option_line(line) == expected


# ------------------------------------------------------------------ in a configuration

def test_escaped_spaces_in_paths_regexes_and_directories(home):
    write("post/p.conf", "\n".join([
        "post_base_dir /data",
        "path sub\\ dir/with\\ space.txt",
        "path a.txt b.txt",                       # v2: each word is a path
        "accept .*/my\\ file.*",
        "directory /srv/my\\ data",
        "accept .*x.* DESTFN=keep\\ name",
        "strip .*/in\\ box/",
    ]) + "\n")
    cfg = load("post", "p")
    assert cfg.paths == ["sub dir/with space.txt", "a.txt", "b.txt"]
    assert cfg.masks[0].pattern == ".*/my file.*"
    assert cfg.masks[0].match("http://h/my file.txt")
    assert cfg.masks[1].directory == "/srv/my data"
    assert cfg.masks[1].filename == "DESTFN=keep name"
    assert cfg.strip == ".*/in box/"


def test_comments_and_hash_in_values(home):
    write("subscribe/c.conf", "\n".join([
        "# whole line",
        "    # indented whole line",
        "broker amqp://anonymous@localhost/   ",       # trailing blanks
        "subtopic #",
        "accept .*#.*",
        "expire 1d # a day",
        "prefetch 7 # seven",
        "directory /data/#1 # a trailing comment",
        "reject .*\\.tmp$ # no filename option",
    ]) + "\n")
    cfg = load("subscribe", "c")
    assert cfg.broker == "amqp://anonymous@localhost/"
    assert cfg.bindings[0].subtopic == "#"
    assert [m.pattern for m in cfg.masks] == [".*#.*", ".*\\.tmp$"]
    assert cfg.masks[1].filename is None
    assert cfg.prefetch == 7
    assert cfg.directory == "/data/#1"


def test_variables_expand_per_word(home, monkeypatch):
    monkeypatch.setenv("MY_TOP", "/srv/my top")        # a blank inside the value
    write("watch/w.conf", "\n".join([
        "post_broker amqp://bob@localhost/",
        "post_base_url http://h/",
        "path ${MY_TOP}/a ${MY_TOP}/b",
        "directory ${MY_TOP}/${CONFIG}",
    ]) + "\n")
    cfg = load("watch", "w")
    assert cfg.paths == ["/srv/my top/a", "/srv/my top/b"]
    assert cfg.directory == "/srv/my top/w"


def test_declare_env_then_use(home, monkeypatch):
    monkeypatch.delenv("SYNTAX_PEER", raising=False)
    monkeypatch.setenv("SYNTAX_PEER", "placeholder")   # restored after the test
    write("sarra/s.conf", "\n".join([
        "declare env SYNTAX_PEER=amqp://peer.example.org",
        "broker ${SYNTAX_PEER}",
        "post_broker amqp://tfeed@localhost",
        "exchange xs_peer_public",
        "mirror ",
        "preserve_time no",
        "report_back False",
        "post_url http://h:8080",
        "post_base_dir /srv/mesh",
    ]) + "\n")
    cfg = load("sarra", "s")
    assert cfg.broker == "amqp://peer.example.org" and cfg.mirror is True
    assert cfg.preserve_time is False and cfg.post_base_url == "http://h:8080"


def test_include_without_extension_glob_and_component_dir(home, tmp_path):
    write("shovel/quiet.inc", "reject .*/\\.tar\nreject .*/grib2/.*\n")
    write("shovel/feeds/a.inc", "accept .*/a/.*\n")
    write("shovel/feeds/b.inc", "accept .*/b/.*\n")
    write("shovel/top.conf", "broker amqp://u@localhost/\ninclude quiet\n"
                             "include feeds/*.inc\n")
    cfg = load("shovel", "top")
    assert [m.pattern for m in cfg.masks] == [".*/\\.tar", ".*/grib2/.*", ".*/a/.*", ".*/b/.*"]
    # a config given by path includes from the component's directory when not beside it
    other = tmp_path / "elsewhere.conf"
    other.write_text("broker amqp://u@localhost/\ninclude quiet\n")
    assert len(load("shovel", str(other)).masks) == 2
    write("shovel/none.conf", "include feeds/*.nothing\n")
    with pytest.raises(ConfigError) as e:
        load("shovel", "none")
    assert "none.conf:1: include feeds/*.nothing: no file matches" in str(e.value)


def test_command_line_values_are_one_word(home):
    cfg = load("subscribe", None, ["--accept", ".*my file.*", "--directory", "/a\\ b"])
    assert cfg.masks[0].pattern == ".*my file.*"
    assert cfg.directory == "/a\\ b"                   # the shell did the quoting


# ------------------------------------------------------------------ errors name file:line

@pytest.mark.parametrize("line,reason", [
    ("destination <scheme>://<user>@<host>:<port>/", "placeholder (<scheme>)"),
    ("broker ${SYNTAX_UNSET_BROKER}", "variable ${SYNTAX_UNSET_BROKER} is not set"),
    ("strip .?*/sci/", "bad regex '.?*/sci/'"),
    ("accept [a-", "bad regex '[a-'"),
    ("directroy /data", "did you mean directory?"),
])
def test_errors_name_file_line_and_reason(home, monkeypatch, line, reason):
    monkeypatch.delenv("SYNTAX_UNSET_BROKER", raising=False)
    path = write("subscribe/bad.conf", "broker amqp://u@localhost/\n# two\n%s\n" % line)
    with pytest.raises(ConfigError) as e:
        load("subscribe", "bad")
    assert str(e.value).startswith(path + ":3: ") and reason in str(e.value)
    assert "\n" not in str(e.value)


def test_url_with_commas_in_its_query(home):
    write("sender/q.conf", "broker amqp://u@localhost/\n"
          "destination http://h/nwis/iv/?format=waterml,2.0&site={0:}&cd=00060,00065\n")
    cfg = load("sender", "q")
    assert cfg.destination.endswith("cd=00060,00065")
    write("post/rr.conf", "post_base_url http://a/,http://b/\n")    # v2 round robin list
    assert load("post", "rr").post_base_url.startswith("http://a/")
    write("post/bad.conf", "post_base_url http://a/,nothing\n")
    with pytest.raises(ConfigError):
        load("post", "bad")


# ------------------------------------------------------------------ option families

FAMILIES = {
    # a datamart subscriber: bindings, masks in order, plugins, timing
    "subscribe/dd.conf": """
broker amqps://anonymous@dd.example.org/
exchange xpublic
topic_prefix v02.post
subtopic bulletins.alphanumeric.#
subtopic observations.swob-ml.#
expire 1d
instances 2
mirror True
no_download off
directory ${HOME}/datamart
reject .*citypage.*
accept .*/AC/.*
get .*/SA/.*
directory ${HOME}/other
accept .*\\.xml$
report_back False
timeout 30
retry off
on_message msg_log
on_file file_log
loglevel info
suppress_duplicates 600
inflight .tmp
queue_name q_anonymous.sr_subscribe.dd.${RANDID}
accept_unmatch off
""",
    # a sarra peer: exchanges, post_*, source_from_exchange
    "sarra/peer.conf": """
broker amqp://tsource@localhost/
exchange_suffix mesh
subtopic #
source_from_exchange on
strip 2
accept .*
post_broker amqp://tfeed@localhost/
post_exchange xpublic
post_exchange_suffix mesh
post_topic_prefix v02.post
post_base_url http://localhost:8090/
post_base_dir /srv/data
""",
    # a watch: events, symlinks, timing, checksum, blocks
    "watch/tree.conf": """
post_broker amqp://user@localhost/
post_exchange xs_user
blocksize 0
path /home/user/public_html
post_base_url http://server/~user
post_base_dir /home/user/public_html
events create|delete|link|modify
sleep 5s
to broker
force_polling off
follow_symlinks off
sum d
caching on
""",
    # a poll: destination, directory lines, sleep, plugins of the poll
    "poll/ingest.conf": """
post_broker amqp://tsource@localhost/
post_exchange xs_tsource
destination sftp://feeder@ftp.example.org/
directory /incoming
accept .*\\.nc$
directory /outgoing
get .*\\.grib2$
sleep 300
source usgs
on_line line_mode
on_html_page html_page
""",
    # a sender: destination, plugins, credentials-free URLs
    "sender/push.conf": """
broker amqp://${USER}@localhost/
exchange_suffix local
destination sftp://collab@collab.example.org/
expire 10m
directory /remote/in
accept .*
on_message msg_log
post_base_url http://collab.example.org/~collab/
post_broker amqp://collab@collab.example.org/
""",
    # a shovel with an include
    "shovel/feed.conf": """
broker amqp://tfeed@localhost/
exchange xpublic
topic_prefix v02.post
subtopic #
include trouble.inc
accept .*
post_broker amqp://tfeed@localhost/
post_exchange xcopy
""",
    "shovel/trouble.inc": """
reject .*/\\.tar
reject .*/grib2/.*
""",
    # sr_post
    "post/mesh.conf": """
post_broker amqp://tsource@localhost/
post_exchange xs_tsource
post_base_url http://localhost:8090/
post_base_dir /srv/mesh
path /srv/mesh/one\\ file.txt /srv/mesh/two.txt
""",
}


def test_option_families_of_the_v2_examples_load(home, caplog):
    for rel, text in FAMILIES.items():
        write(rel, text.lstrip("\n"))
    for rel in FAMILIES:
        if not rel.endswith(".conf"):
            continue
        comp, name = rel[:-5].split("/")
        cfg = load(comp, name)
        assert cfg.files[-1].endswith(rel) or any(f.endswith(rel) for f in cfg.files)
    dd = load("subscribe", "dd")
    assert [b.subtopic for b in dd.bindings] == ["bulletins.alphanumeric.#",
                                                 "observations.swob-ml.#"]
    assert [m.directory for m in dd.masks] == [os.path.expanduser("~/datamart")] * 3 + \
        [os.path.expanduser("~/other")]
    assert dd.masks[2].accept and dd.masks[2].pattern == ".*/SA/.*"
    assert load("shovel", "feed").masks[0].pattern == ".*/\\.tar"
    assert load("post", "mesh").paths == ["/srv/mesh/one file.txt", "/srv/mesh/two.txt"]
    assert load("poll", "ingest").masks[1].directory == "/outgoing"


# ------------------------------------------------------------------ post_base_dir paths

def test_resolve_path_under_post_base_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "obs").mkdir(parents=True)
    (data / "obs" / "f.txt").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "local").mkdir(parents=True)
    (elsewhere / "local" / "g.txt").write_text("y")
    monkeypatch.chdir(elsewhere)
    assert resolve_path("obs/f.txt", str(data)) == str(data / "obs" / "f.txt")
    assert resolve_path("local/g.txt", str(data)) == "local/g.txt"   # found here: as given
    assert resolve_path("obs/f.txt", None) == "obs/f.txt"
    assert resolve_path("/obs/f.txt", str(data)) == str(data / "obs" / "f.txt")
    assert resolve_path("/nowhere/x", str(data)) == "/nowhere/x"
    assert resolve_path("gone.txt", str(data)) == str(data / "gone.txt")   # a removal
