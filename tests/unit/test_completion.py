"""completion/sarra.bash, loaded in a real bash: every command is completed, with its own
actions (the same lists as the commands'), then the names of the user's configurations."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from sarra.commands import audit, common, poll, report, sr, watch
from tests.conftest import COMMANDS, REPO

SCRIPT = REPO / "completion" / "sarra.bash"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")


def bash(home, script, path_dir=None):
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    if path_dir:
        env["PATH"] = "%s:%s" % (path_dir, env["PATH"])
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c",
                        "source %s\n%s" % (shlex.quote(str(SCRIPT)), script)],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert not r.stderr, r.stderr
    return r.stdout


def complete(home, line, path_dir=None):
    """COMPREPLY for the command line `line` (the cursor at its end)."""
    words = line.split(" ")
    script = ("COMP_WORDS=(%s)\nCOMP_CWORD=%d\nCOMP_LINE=%s\nCOMP_POINT=%d\n"
              "_sarra_complete %s\nprintf '%%s\\n' \"${COMPREPLY[@]}\"\n"
              % (" ".join(shlex.quote(w) for w in words), len(words) - 1, shlex.quote(line),
                 len(line), shlex.quote(words[0])))
    return sorted(w for w in bash(home, script, path_dir).splitlines() if w)


def test_every_command_is_completed_by_the_function(home):
    out = bash(home, "complete -p")
    done = {cmd: fn for fn, cmd in re.findall(r"complete -F (\S+) (\S+)", out)}
    assert set(done) >= set(COMMANDS), set(COMMANDS) - set(done)
    assert {done[c] for c in COMMANDS} == {"_sarra_complete"}


@pytest.mark.parametrize("command,actions", [
    ("sr_subscribe", common.CONSUMER_ACTIONS), ("sr_sarra", common.CONSUMER_ACTIONS),
    ("sr_sender", common.CONSUMER_ACTIONS), ("sr_shovel", common.CONSUMER_ACTIONS),
    ("sr_winnow", common.CONSUMER_ACTIONS), ("sr_report", report.ACTIONS),
    ("sr_log", report.ACTIONS), ("sr_watch", watch.ACTIONS), ("sr_poll", poll.ACTIONS),
    ("sr_audit", audit.ACTIONS), ("sr_police", audit.ACTIONS), ("sr", sr.ACTIONS)])
def test_actions_are_the_commands_own(home, command, actions):
    assert complete(home, command + " ") == sorted(actions)


def test_an_action_prefix(home):
    assert complete(home, "sr_subscribe st") == ["start", "status", "stop"]
    assert complete(home, "sr_report su") == ["summary"]


def test_config_names_after_an_action(home):
    sub = home / ".config" / "sarra" / "subscribe"
    sub.mkdir(parents=True)
    for n in ("obs.conf", "model.conf", "old.conf.off", "notes.txt", "shared.inc"):
        (sub / n).write_text("")
    (home / ".config" / "sarra" / "sender").mkdir()
    (home / ".config" / "sarra" / "sender" / "push.conf").write_text("")
    assert complete(home, "sr_subscribe start ") == ["model", "obs"]
    assert complete(home, "sr_subscribe start o") == ["obs"]
    assert complete(home, "sr_subscribe --no 2 stop m") == ["model"]
    assert complete(home, "sr_subscribe enable ") == ["old"]
    assert complete(home, "sr_subscribe remove ") == ["model", "obs", "old"]
    assert complete(home, "sr_sender foreground ") == ["push"]
    assert complete(home, "sr_post -c ") == []
    (home / ".config" / "sarra" / "post").mkdir()
    (home / ".config" / "sarra" / "post" / "obs.conf").write_text("")
    assert complete(home, "sr_post -c ") == ["obs"]


def test_xdg_config_home_is_followed(home, tmp_path):
    d = tmp_path / "xdg" / "sarra" / "subscribe"
    d.mkdir(parents=True)
    (d / "elsewhere.conf").write_text("")
    script = ("XDG_CONFIG_HOME=%s\nCOMP_WORDS=(sr_subscribe start '')\nCOMP_CWORD=2\n"
              "_sarra_complete sr_subscribe\necho \"${COMPREPLY[@]}\"\n"
              % shlex.quote(str(tmp_path / "xdg")))
    assert bash(home, script).split() == ["elsewhere"]


def test_add_offers_the_packaged_examples(home, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    w = bindir / "sr_subscribe"
    w.write_text("#!/bin/sh\nPYTHONPATH=%s exec %s -c \"import sys; sys.argv[0]="
                 "'sr_subscribe'; from sarra.commands.subscribe import main; "
                 "sys.exit(main())\" \"$@\"\n" % (shlex.quote(str(REPO)),
                                                   shlex.quote(sys.executable)))
    w.chmod(0o755)
    got = complete(home, "sr_subscribe add dd", path_dir=bindir)
    assert "dd_mirror" in got
