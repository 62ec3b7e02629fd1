"""Issue 18, item 4: one of each concept; a test on each remaining implementation.

(The URL redaction has its own module: test_redaction.py.)
"""
import ast
import os
from pathlib import Path

import pytest

from sarra.config.credentials import Credentials, CredentialsError

ROOT = Path(__file__).resolve().parents[2]

CREDS = """\
amqp://feeder:pw@localhost:5672/
sftp://bob:sftppw@data.example.org
amqps://alice:S3cr%3At@pump.example.org/
"""


# ------------------------------------------------------------------ the password lookup
@pytest.mark.parametrize("url, password", [
    ("amqp://feeder@localhost/", "pw"),                   # from the matching entry
    ("amqp://feeder:inurl@localhost/", "inurl"),          # written in the URL: it wins
    ("amqps://alice@pump.example.org/", "S3cr:t"),        # %-decoded
    ("sftp://bob@data.example.org/x", "sftppw"),
    ("sftp://carol@data.example.org/x", None),            # no entry for this user
    ("amqp://localhost/", "anonymous"),                    # AMQP without a user
])
def test_password_for(url, password):
    assert Credentials(Credentials.parse(CREDS)).password_for(url) == password


def test_password_for_a_non_url_says_so_without_the_secret():
    with pytest.raises(CredentialsError) as e:
        Credentials(Credentials.parse(CREDS)).password_for("amqp://u:hunter2@h:99999999/")
    assert "hunter2" not in str(e.value)


def test_one_password_lookup():
    """Nobody but credentials.py turns a Credential into a password for a login."""
    bad = []
    for path in sorted((ROOT / "sarra").rglob("*.py")):
        if path.name == "credentials.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr == "password"
                    and isinstance(node.value, ast.Call)
                    and ast.unparse(node.value.func).endswith(".lookup")):
                bad.append("%s:%d" % (path.relative_to(ROOT), node.lineno))
            if (isinstance(node, ast.IfExp) and ast.unparse(node.body).endswith(".password")):
                bad.append("%s:%d" % (path.relative_to(ROOT), node.lineno))
    assert not bad, "password lookups of their own (use Credentials.password_for): %s" % bad


# ------------------------------------------------------------------ the list of components
def test_one_list_of_components():
    """paths.COMPONENTS is the one list: setup.py installs exactly sr_<each> (plus the 2016
    names, sr and sr_readers), each has its command module, the supervisor runs all but sr_post, and
    the test suite's table of commands is setup.py's."""
    from sarra import paths
    from sarra.flow import presets
    from sarra.ops import supervisor
    from tests.conftest import COMMANDS, setup_commands
    assert COMMANDS == setup_commands()
    want = {paths.program_name(c): c for c in paths.COMPONENTS}
    want.update({"sr_" + old: new for old, new in paths.COMPONENT_ALIASES.items()})
    want["sr"] = "sr"
    want["sr_readers"] = "readers"      # a source's one-shot command: no configurations
    assert COMMANDS == want
    for module in set(COMMANDS.values()):
        assert (ROOT / "sarra" / "commands" / (module + ".py")).is_file(), module
    assert supervisor.RUNNABLE == tuple(c for c in paths.COMPONENTS if c != "post")
    assert set(presets.PRESETS) <= set(paths.COMPONENTS)


# ------------------------------------------------------------------ the scheme -> driver table
def test_one_lazy_driver_table():
    """transfer.DRIVER_MODULES is the one scheme table: each scheme's module is imported
    when the scheme is first used, and only then (paramiko is big); a plugin's registered
    scheme does not hide the built-in ones."""
    import subprocess
    import sys
    code = """if True:
        import sys
        from sarra import transfer
        from sarra.flow import engine
        assert not hasattr(engine, "DRIVER_MODULES")      # no second table
        class Mine(transfer.Transfer):
            schemes = ("mine",)
        transfer.register(Mine)                            # a plugin's driver first
        assert transfer.driver_class("MINE") is Mine
        assert "sarra.transfer.sftp" not in sys.modules
        assert transfer.driver_class("https").__module__ == "sarra.transfer.http"
        assert transfer.driver_class("ftps").__module__ == "sarra.transfer.ftp"
        assert "sarra.transfer.sftp" not in sys.modules and "paramiko" not in sys.modules
        assert transfer.driver_class("sftp").__module__ == "sarra.transfer.sftp"
        for scheme in ("gopher", "mine2"):
            try:
                transfer.driver_class(scheme)
            except transfer.TransferError as e:
                assert str(e).endswith("unsupported URL scheme: " + scheme), e
            else:
                raise AssertionError(scheme)
        """
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_flow_refuses_an_unknown_scheme_with_keyerror():
    from types import SimpleNamespace
    from sarra.flow.engine import Flow
    flow = Flow.__new__(Flow)
    flow.__dict__.update(_by_base={}, transfers={}, cfg=SimpleNamespace(timeout=1))
    with pytest.raises(KeyError):
        flow.transfer_for("gopher://h/x")


# ------------------------------------------------------------------ the atomic symlink
def test_atomic_symlink_replaces_what_is_there(tmp_path):
    from sarra import paths
    final, tmp = tmp_path / "f", tmp_path / "f.sarra-link"
    final.write_text("a file")
    tmp.symlink_to("stale")                                   # left by a crash: replaced
    paths.atomic_symlink("t1", str(final), str(tmp))
    assert os.readlink(final) == "t1" and not os.path.lexists(tmp)
    paths.atomic_symlink("t2", str(final), str(tmp))           # a link over a link
    assert os.readlink(final) == "t2"


def test_atomic_symlink_failing_leaves_no_temporary_link(tmp_path):
    from sarra import paths
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("a non-empty directory cannot be replaced")
    tmp = tmp_path / "d.tmp-link"
    with pytest.raises(OSError):
        paths.atomic_symlink("t", str(tmp_path / "d"), str(tmp))
    assert not os.path.lexists(tmp) and (tmp_path / "d" / "x").exists()


def test_the_local_file_driver_and_the_download_share_the_symlink_helper(tmp_path, monkeypatch):
    from sarra import paths
    from sarra.flow import download
    from sarra.transfer import file as filedrv
    calls = []
    monkeypatch.setattr(paths, "atomic_symlink", lambda *a: calls.append(a))
    monkeypatch.setattr(download, "atomic_symlink", lambda *a: calls.append(a))
    monkeypatch.setattr(filedrv, "atomic_symlink", lambda *a: calls.append(a))
    download._symlink("t", str(tmp_path / "a"))
    filedrv.FileTransfer().symlink("t", "file://" + str(tmp_path / "b"))
    assert [c[:2] for c in calls] == [("t", str(tmp_path / "a")), ("t", str(tmp_path / "b"))]
    assert calls[0][2] == str(tmp_path / "a") + ".sarra-link"
    assert calls[1][2].startswith(str(tmp_path / "b") + ".tmp-link-")


# ------------------------------------------------------------------ the journal reader
@pytest.mark.parametrize("torn_is_unreadable, warned", [(False, "2 in all"), (True, "3 in all")])
def test_journal_reader(tmp_path, caplog, torn_is_unreadable, warned):
    import logging
    from sarra.flow import journal
    p = tmp_path / "j"
    p.write_bytes(b"1\nx\n2\n\xff\n3\n4")                 # torn last line: no newline
    got = []
    caplog.set_level(logging.WARNING, logger="t.journal")
    n = journal.read(str(p), lambda line: got.append(int(line)), logging.getLogger("t.journal"),
                     "ignoring bad line (%d in all)", torn_is_unreadable=torn_is_unreadable)
    assert n == 5 and got == [1, 2, 3]
    assert p.read_bytes() == b"1\nx\n2\n\xff\n3\n"          # the torn tail is cut off
    assert [r.getMessage() for r in caplog.records] == [
        "%s:2: ignoring bad line (%s)" % (p, warned)]
    assert journal.read(str(tmp_path / "none"), got.append, logging.getLogger("t"), "") is None


def test_cache_and_retry_queue_read_through_the_one_journal_reader(tmp_path, monkeypatch):
    from sarra.flow import cache, journal, retry
    seen = []
    real = journal.read
    monkeypatch.setattr(journal, "read", lambda path, *a, **k: seen.append(path) or real(
        path, *a, **k))
    (tmp_path / "c").write_text("")
    (tmp_path / "q").write_text("")
    cache.DupCache(str(tmp_path / "c"), 300).close()
    retry.RetryQueue(str(tmp_path / "q"), 300).close()
    assert seen == [str(tmp_path / "c"), str(tmp_path / "q")]


# ------------------------------------------------------------------ the placement rule
def test_one_placement_rule_for_download_and_send():
    from types import SimpleNamespace as NS
    from sarra.flow import placement
    cfg = NS(directory="/cfg", mirror=True, strip=1, flatten=None)
    assert placement.rule(cfg, None, ".") == ("/cfg", True, 1, "/")
    clause = NS(directory="/clause", mirror=False, strip=0, flatten="-")
    assert placement.rule(cfg, clause, ".") == ("/clause", False, 0, "-")
    clause.directory = None                     # a clause without a directory: the config's
    assert placement.rule(cfg, clause, ".")[0] == "/cfg"
    cfg.directory = None                        # nothing anywhere: the step's default
    assert placement.rule(cfg, clause, ".")[0] == "." and placement.rule(cfg, None, "")[0] == ""


def test_download_and_send_place_by_the_one_rule(monkeypatch):
    """A rule changed in placement.py changes where both steps put a file."""
    from types import SimpleNamespace as NS
    from sarra.flow import download, placement, send
    monkeypatch.setattr(placement, "rule", lambda cfg, mask, default: ("sub", True, 0, "/"))
    msg = NS(relpath="a/b/f.txt", headers={})
    cfg = NS(directory="ignored", mirror=False, strip=0, flatten="/", base_dir=None,
             post_base_dir=None)
    flow = NS(cfg=cfg)
    assert send.remote_name(flow, NS(msg=msg, mask=None)) == ("sub/a/b", "f.txt")
    work = NS(msg=msg, mask=None)
    assert download.destination(flow, work) == os.path.join(os.getcwd(), "sub/a/b/f.txt")


# ------------------------------------------------------------------ the argv parser
@pytest.mark.parametrize("argv, pairs, words", [
    (["--broker", "amqp://u@h/", "-p", "a", "b", "--reset", "--mirror", "off", "-n",
      "foreground", "cfg", "--sd=300"],
     [("broker", "amqp://u@h/"), ("p", "a"), ("reset", None), ("mirror", "off"), ("n", None),
      ("sd", "300")], ["b", "foreground", "cfg"]),
    (["--prefetch", "-3", "-", "-5", "--", "--x"], [("prefetch", "-3")], ["-", "-5", "--x"]),
    (["--accept", "--reset"], [("accept", None), ("reset", None)], []),
    (["--bogus", "show", "cfg"], [("bogus", None)], ["show", "cfg"]),      # show: an action
    (["--bogus", "1", "--no", "2"], [("bogus", "1"), ("no", "2")], []),
])
def test_one_argv_parser(argv, pairs, words):
    from sarra.config import cli, parser
    assert cli.split_argv(argv, ("show",), valued=("no",)) == (pairs, words)
    assert parser.parse_cli is cli.parse_cli is cli.split_argv     # load() with a raw argv


def test_the_commands_split_argv_with_the_one_parser():
    from sarra.commands import common
    from sarra.config import cli
    argv = ["--bogus", "status", "cfg", "--no", "3", "--reset", "-p=x", "--strip", "-1"]
    pairs, words, no = common.split_argv(argv)
    found, words2 = cli.split_argv(argv, common.CONSUMER_ACTIONS, valued=("no",))
    assert no == 3 and words == words2 == ["status", "cfg"]
    assert pairs == [kv for kv in found if kv[0] != "no"]
    assert load_raw(argv[4:]) == [kv for kv in found if kv[0] != "no"][1:]


def load_raw(argv):
    """The pairs config.load takes from a raw argv list: the same parser's."""
    from sarra.config import parser
    return parser.parse_cli(argv)[0]


def test_no_import_circle_between_the_options_table_and_the_command_line():
    tree = ast.parse((ROOT / "sarra" / "config" / "options.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and "cli" in m}


def test_discard_removes_a_file_or_a_link_and_ignores_the_rest(tmp_path):
    from sarra import paths
    from sarra.flow import download
    (tmp_path / "f").write_text("x")
    (tmp_path / "l").symlink_to("nowhere")
    (tmp_path / "d").mkdir()
    for name in ("f", "l", "missing", "d"):
        paths.discard(str(tmp_path / name))
    assert sorted(os.listdir(tmp_path)) == ["d"]
    assert download._discard is paths.discard


# ------------------------------------------------------------------ the drivers' read loop
@pytest.mark.parametrize("data, length, bufsize, blocks", [
    (b"abcdefg", None, 3, [b"abc", b"def", b"g"]),      # to the end
    (b"abcdefg", 5, 3, [b"abc", b"de"]),                 # never past length
    (b"abcdefg", 0, 3, []),
    (b"abc", 5, 2, [b"ab", b"c"]),                       # short: the caller sees it
])
def test_read_blocks(data, length, bufsize, blocks):
    import io
    from sarra import transfer
    asked = []
    f = io.BytesIO(data)

    def read(n):
        asked.append(n)
        return f.read(n)

    assert list(transfer.read_blocks(read, length, bufsize)) == blocks
    assert all(n <= bufsize for n in asked)


def test_read_local_reads_through_read_blocks(tmp_path):
    from sarra import transfer
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    assert b"".join(transfer.read_local(str(p), 2, 5, bufsize=2)) == b"23456"
    with pytest.raises(transfer.TransferError) as e:
        list(transfer.read_local(str(p), 8, 5, bufsize=2))
    assert "file shorter than offset 8 + length 5" in str(e.value)


def test_one_short_read_and_one_missing_source_message(tmp_path):
    from sarra import transfer
    e = transfer.short_read("ftp download", 3, 10, "ftp://u@h/f")
    assert (e.code, str(e)) == (499, "ftp download failed: short read, got 3 of 10 bytes "
                                     "ftp://u@h/f")
    with pytest.raises(transfer.TransferError) as info:
        transfer.check_source("sftp", str(tmp_path / "missing"))
    assert info.value.code == 404
    assert str(tmp_path / "missing") in str(info.value) and "sftp upload failed" in str(info.value)
    transfer.check_source("sftp", __file__)                    # there: nothing said
    for name in ("ftp", "sftp", "http", "splice", "file"):     # nobody words it again
        text = (ROOT / "sarra" / "transfer" / (name + ".py")).read_text(encoding="utf-8")
        assert "short read, got" not in text and "upload failed: 404" not in text, name
