"""Issue 17 item 4, with the real commands (and the real broker where they connect):
a misspelled option names the option it misses and stops the command before anything
runs (exit 2, no instance), at `start`, `foreground` and `sr start` too; a v2 config with
the options of old plugins still loads and runs; every command has --version; --help
marks the options that are accepted but ignored.
"""

import ast
import re
import time

import psutil
import pytest

import sarra
from sarra.ops import instances
from tests.conftest import REPO


def _installed_commands():
    """The console scripts of setup.py (its COMMANDS table, read, not run)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "COMMANDS" for t in node.targets):
            return sorted(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no COMMANDS table")


def _write(home, component, name, text):
    d = home / ".config" / "sarra" / component
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.conf"
    path.write_text(text)
    return path


def _typo_config(home, broker_url, uid):
    dest = home / "data"
    return _write(home, "subscribe", f"obs{uid}", (
        f"broker {broker_url}\n"
        "subtopic #\n"
        f"directroy {dest}\n"
        "accept .*\n")), f"obs{uid}"


def _no_instance(home, name):
    st = instances.status("subscribe", name)
    return not st.running


def test_misspelled_option_names_the_nearest_and_start_refuses(home, run_cmd, broker_url, uid):
    path, name = _typo_config(home, broker_url, uid)
    want = f"{path}:3: unknown option 'directroy': did you mean directory?"
    for action in ("start", "foreground", "show"):
        r = run_cmd(["sr_subscribe", action, name], timeout=30)
        assert r.returncode == 2, (action, r.stdout, r.stderr)
        assert want in r.stderr, (action, r.stderr)
        assert "started" not in r.stdout, r.stdout
    assert _no_instance(home, name)
    assert not (home / "data").exists()

    r = run_cmd(["sr_subscribe", f"--directroy={home / 'x'}", "show", f"obs{uid}"])
    assert r.returncode == 2 and "did you mean directory?" in r.stderr, r.stderr


def test_sr_start_says_it_on_the_terminal_and_starts_nothing(home, run_cmd, broker_url, uid):
    path, name = _typo_config(home, broker_url, uid)
    try:
        r = run_cmd(["sr", "start", f"subscribe/{name}"], timeout=60)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert f"{path}:3: unknown option 'directroy': did you mean directory?" in r.stderr
        time.sleep(1)
        assert _no_instance(home, name)
        assert instances.status("subscribe", name).expected == 0
    finally:
        run_cmd(["sr", "stop"], timeout=60)


def test_v2_config_with_old_plugin_options_still_starts(home, run_cmd, broker_url, uid,
                                                        amqp_exchange, amqp_channel):
    exchange = f"xt_cfghelp_{uid}"
    amqp_exchange(exchange)
    name = f"old{uid}"
    path = _write(home, "subscribe", name, (
        f"broker {broker_url}\n"
        f"exchange {exchange}\n"
        "subtopic #\n"
        f"directory {home / 'data'}\n"
        "msg_fdelay 30\n"                 # v2 plugins' options, their plugins gone
        "msg_total_interval 5\n"
        "hb_memory_baseline_file /tmp/x\n"
        "file_rxpipe_name /tmp/pipe\n"
        "msg_from_cluster DDI\n"         # a stock plugin's, alike table's from_cluster
        "on_message msg_to_clusters\n"    # a stock plugin and its option
        "msg_to_clusters DDI\n"
        "accept .*\n"))
    try:
        r = run_cmd(["sr_subscribe", "start", name], timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "started 1 instance(s)" in r.stdout, r.stdout
        # each old option is a warning on the terminal, naming file and line
        assert f"{path}:5: unknown option 'msg_fdelay'" in r.stderr, r.stderr
        assert "did you mean directory" not in r.stderr, r.stderr
        assert "msg_to_clusters" not in r.stderr, r.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not instances.status("subscribe", name).running:
            time.sleep(0.2)
        running = instances.status("subscribe", name).running
        assert running, "the instance did not start"
        time.sleep(1.5)                   # and it keeps running
        assert all(psutil.pid_exists(pid) for _, pid in running)
    finally:
        run_cmd(["sr_subscribe", "stop", name], timeout=60)
        run_cmd(["sr_subscribe", "cleanup", name], timeout=60)


@pytest.mark.parametrize("command", _installed_commands())
def test_every_command_has_version(run_cmd, command):
    r = run_cmd([command, "--version"], timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout == f"{command} {sarra.__version__}\n"
    assert r.stderr == ""


def _help_entry(text, flag):
    """The help line following the flags line that starts with `flag`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^  %s[ ,]" % re.escape(flag), line + " "):
            return lines[i + 1]
    raise AssertionError(f"{flag} not in --help:\n{text}")


def test_help_marks_ignored_options(run_cmd):
    r = run_cmd(["sr_subscribe", "--help"])
    assert r.returncode == 0, r.stderr
    assert "IGNORED" in _help_entry(r.stdout, "--inline")
    assert "v03 messages only" in _help_entry(r.stdout, "--inline")     # and why
    assert "IGNORED" in _help_entry(r.stdout, "--interface")
    assert "IGNORED" not in _help_entry(r.stdout, "--kbytes_ps")      # acts (issue 23)
    assert "IGNORED" not in _help_entry(r.stdout, "--directory")
    assert "IGNORED" not in _help_entry(r.stdout, "--delete")
    assert "--version" in r.stdout
    r = run_cmd(["sr_sender", "--help"])       # delete: acted on by the sender too now
    assert "IGNORED" not in _help_entry(r.stdout, "--delete")
