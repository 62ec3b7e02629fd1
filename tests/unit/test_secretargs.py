"""secretargs: passwords given on a command line never reach a child's (issue 16, item 7)."""

import json
import os
import time

import psutil
import pytest

from sarra.ops import instances, secretargs
from tests.conftest import REPO


@pytest.mark.parametrize("word,shown", [
    ("--broker=amqp://u:secret@h:5672/", "--broker=amqp://u@h:5672/"),
    ("amqps://u:pa/ss@h/vhost", "amqps://u@h/vhost"),
    ("--destination=sftp://me:p%40ss@host//dir", "--destination=sftp://me@host//dir"),
    ("--broker=amqp://u@h/", "--broker=amqp://u@h/"),
    ("--x=http://h/a@b", "--x=http://h/a@b"),
    ("--no", "--no"),
    ("foreground", "foreground"),
])
def test_visible(word, shown):
    assert secretargs.visible(word) == shown


def test_split_and_restore():
    argv = ["python", "-m", "x", "--broker=amqp://u:secret@h/", "--no", "1", "cfg"]
    shown, env = secretargs.split(argv, {"A": "1"})
    assert not any("secret" in a for a in shown)
    assert shown[3] == "--broker=amqp://u@h/" and env["A"] == "1"
    assert "secret" in env[secretargs.ENV]
    assert secretargs.restore(shown[1:], env) == argv[1:]
    assert secretargs.ENV not in env                # nothing the child starts inherits it


def test_no_secret_no_environment_change():
    shown, env = secretargs.split(["a", "--broker=amqp://u@h/"])
    assert shown == ["a", "--broker=amqp://u@h/"] and env is None


def test_restore_puts_back_passwords_only():
    """The variable can only give back a password hidden from a word, not new words."""
    env = {secretargs.ENV: json.dumps([["cfg", "--evil=1"],
                                       ["--broker=amqp://u@h/", "--broker=amqp://u@x/"],
                                       "junk", ["--broker=amqp://u@h/",
                                                "--broker=amqp://u:pw@h/"]])}
    assert secretargs.restore(["--broker=amqp://u@h/", "cfg"], env) == \
        ["--broker=amqp://u:pw@h/", "cfg"]
    assert secretargs.restore(["a"], {secretargs.ENV: "not json"}) == ["a"]


def test_spawned_instance_has_no_password_in_its_command_line(home, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.chdir(REPO)
    pids = instances.start("dummy", "sec", 1, module="tests.integration.dummy_instance",
                           argv_extra=["--broker=amqp://u:Sup3rSecret@h/"], wait=0.3)
    try:
        assert len(pids) == 1
        p = psutil.Process(pids[0])
        cmd = " ".join(p.cmdline())
        assert "Sup3rSecret" not in cmd and "--broker=amqp://u@h/" in cmd
        assert "Sup3rSecret" in p.environ()[secretargs.ENV]   # same user only
        # recorded for later starts in a private file, not on a command line
        opts = instances.options_file("dummy", "sec")
        assert oct(opts.stat().st_mode & 0o777) == "0o600"
    finally:
        assert instances.stop("dummy", "sec", timeout=2) == 1
