"""Unknown options: the nearest known one, misspellings of the table as errors, options
that may be plugins' as warnings; --help marks ignored options; --version."""

import logging
import os

import pytest

import sarra
from sarra import paths
from sarra.config import hints as optionhints
from sarra.commands import common
from sarra.config.parser import ConfigError, load
from sarra.config.cli import IGNORED_MARK, render_help


def write(rel, text):
    path = os.path.join(paths.config_dir(), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.mark.parametrize("typo,meant", [
    ("directroy", "directory"), ("diretory", "directory"), ("brokr", "broker"),
    ("post_brokr", "post_broker"), ("instnaces", "instances"), ("exchnage", "exchange"),
    ("Directory_", "directory"), ("loglevl", "loglevel"), ("acept", "accept")])
def test_misspellings_of_the_table_are_named(typo, meant):
    assert optionhints.nearest(typo) == meant
    assert optionhints.misspelled(typo) == meant
    assert optionhints.hint(typo) == f": did you mean {meant}?"


@pytest.mark.parametrize("name", [
    "msg_fdelay", "msg_total_interval", "hb_memory_max", "file_rxpipe_name",
    "msg_from_cluster",        # a stock plugin's option, alike the table's from_cluster
    "post_override_del", "bogus", "tls", "run_comand_timeout",
    "post", "watch", "message"])     # short or plain words: a hint at most
def test_options_that_may_be_plugins_are_not_misspellings(name):
    assert optionhints.misspelled(name) is None


def test_declared_options_are_neither_errors_nor_far():
    assert optionhints.misspelled("mine_levle", ["mine_level"]) is None
    assert optionhints.hint("mine_levle", ["mine_level"]) == ": did you mean mine_level?"
    # a name a configured plugin reads is not a misspelling of the table's
    assert optionhints.misspelled("directroy", ["directroy"]) is None
    assert optionhints.hint("completely_different") == ""


def test_misspelled_option_in_a_file_is_a_config_error(home, caplog):
    path = write("subscribe/obs.conf", "broker amqp://h/\nsubtopic #\ndirectroy /data\n"
                 "msg_fdelay 30\n")
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError) as e:
        load("subscribe", "obs")
    assert str(e.value) == f"{path}:3: unknown option 'directroy': did you mean directory?"
    assert f"{path}:4: unknown option 'msg_fdelay'" in caplog.text     # still a warning


def test_misspelled_option_on_the_command_line_is_an_error(home):
    with pytest.raises(ConfigError) as e:
        load("subscribe", None, [("instnaces", "3")])
    assert "command line: unknown option 'instnaces' (it took '3' as its value): " \
           "did you mean instances?" == str(e.value)


def test_v2_plugin_options_keep_loading(home, caplog):
    write("subscribe/old.conf", "broker amqp://h/\nmsg_fdelay 30\nmsg_from_cluster DDI\n"
          "on_message msg_to_clusters\nmsg_to_clusters DD\nhb_memory_max 1G\n")
    with caplog.at_level(logging.WARNING):
        cfg = load("subscribe", "old")
    assert cfg.msg_fdelay == ["30"] and cfg.msg_from_cluster == ["DDI"]
    assert "msg_to_clusters" not in caplog.text
    assert caplog.text.count("unknown option") == 3


def test_help_marks_ignored_options_per_component():
    sub = render_help("subscribe").splitlines()
    sender = render_help("sender").splitlines()

    def entry(lines, flag):
        i = next(i for i, x in enumerate(lines) if x.startswith("  " + flag + " ")
                 or x.startswith("  " + flag + ","))
        return lines[i + 1]

    assert IGNORED_MARK in entry(sub, "--queue_share")
    assert IGNORED_MARK not in entry(sub, "--directory")
    assert IGNORED_MARK not in entry(sub, "--delete")
    assert IGNORED_MARK not in entry(sender, "--delete")     # sr_sender acts on it too
    poll = render_help("poll").splitlines()
    assert IGNORED_MARK in entry(poll, "--filename")
    assert IGNORED_MARK not in entry(sender, "--filename")


def test_version(capsys, monkeypatch):
    assert common.wants_version(["--version"])
    assert common.wants_version(["-x", "--version", "show"])
    assert not common.wants_version(["show", "--", "--version"])
    assert not common.wants_version([])
    monkeypatch.setattr("sys.argv", ["/usr/bin/sr_log"])
    assert common.print_version("sr_report") == 0
    monkeypatch.setattr("sys.argv", ["/usr/bin/pytest"])
    assert common.print_version("sr_report") == 0
    assert capsys.readouterr().out == \
        f"sr_log {sarra.__version__}\nsr_report {sarra.__version__}\n"
