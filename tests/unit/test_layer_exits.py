"""Issue 18 item 2: the core raises ordinary exceptions and returns data; the commands print
and map errors to exit codes, with the same lines and codes as before."""

import os

import pytest

from sarra import paths
from sarra.config import parser as config
from sarra.flow import presets, routing
from sarra.flow.engine import Flow
from sarra.ops import health


def _write_conf(component, name, text):
    d = paths.component_config_dir(component)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name + ".conf"), "w") as f:
        f.write(text)


def test_a_refused_config_is_an_ordinary_exception(home, tmp_path):
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(tmp_path)),
                                          ("cluster_routing", "on")])
    with pytest.raises(routing.ConfigRefused) as e:
        Flow(cfg, presets.preset("subscribe"))
    assert not isinstance(e.value, SystemExit)
    assert "refused: cluster_routing needs the name of the cluster" in str(e.value)


def test_the_command_maps_a_refused_config_to_exit_2(home, tmp_path, run_cmd):
    _write_conf("subscribe", "loop", "broker amqp://guest:guest@127.0.0.1/\n"
                f"directory {tmp_path}\ncluster_routing on\n")
    r = run_cmd(["sr_subscribe", "foreground", "loop"], timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refused: cluster_routing needs the name of the cluster" in r.stderr
    assert "Traceback" not in r.stderr


def test_status_lines_return_data_and_print_nothing(home, capsys):
    lines, code = health.status_lines("sr_subscribe", "subscribe", "nothing")
    assert lines and lines[0].startswith("sr_subscribe nothing: ")
    assert isinstance(code, int)
    assert capsys.readouterr() == ("", "")


def test_the_status_action_prints_the_lines(home, capsys):
    from sarra.commands import common
    lines, code = health.status_lines("sr_watch", "watch", "w", None, 1)
    assert common.print_status("sr_watch", "watch", "w", None, 1) == code
    assert capsys.readouterr().out == "".join(line + "\n" for line in lines)


CASES = [
    # (component, action, config text or None): no broker needed for any of them
    ("subscribe", "declare", None),                           # no such configuration
    ("subscribe", "setup", "directory /tmp\n"),               # option broker is required
    ("shovel", "cleanup", "directory /tmp\n"),
    ("sender", "declare", "broker amqp://u@127.0.0.1:1/\n"),  # destination is required
    ("watch", "declare", "post_broker amqp://u@127.0.0.1:1/\n"),
    ("audit", "cleanup", None),
]


@pytest.mark.parametrize("component, action, text", CASES)
def test_sr_calls_the_action_not_the_argv_entry_point(home, capsys, monkeypatch,
                                                      component, action, text):
    """`sr declare|setup|cleanup` says and returns what the component's command says for
    the same configuration, without going through that command's main(argv)."""
    import importlib
    from sarra.commands import sr
    if text is not None:
        _write_conf(component, "c1", text)
    module = importlib.import_module(f"sarra.commands.{component}")
    expected = module.main([action, "c1"])
    want = capsys.readouterr()

    def no_argv(*_a, **_k):
        raise AssertionError("sr called the command's argv entry point")

    monkeypatch.setattr(module, "main", no_argv)
    item = sr.Item(component, "c1", True)
    assert sr.do_component_action([item], action) == expected
    got = capsys.readouterr()
    assert (got.out, got.err) == (want.out, want.err)
    assert expected != 0 and want.err.strip()
