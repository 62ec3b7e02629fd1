"""sarra.commands.actions: list, add, remove, edit, enable, disable, resolve in a private HOME."""

import os
import stat

import pytest

from sarra import paths
from sarra.commands import actions
from sarra.ops import instances

COMP = "subscribe"


@pytest.fixture
def cdir(home):
    d = home / ".config" / "sarra" / COMP
    d.mkdir(parents=True)
    return d


def test_list_configs_and_output(cdir, capsys):
    assert actions.list_configs(COMP) == []
    assert actions.list_action(COMP) == 0
    assert "no configuration" in capsys.readouterr().out
    (cdir / "b.conf").write_text("broker amqp://x/\n")
    (cdir / "a.conf.off").write_text("x\n")
    (cdir / "notes.txt").write_text("x\n")
    (cdir / "c.inc").write_text("x\n")
    assert actions.list_configs(COMP) == [("a", False), ("b", True)]
    assert actions.list_action(COMP) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sr_subscribe configurations in ")
    assert out[1].split() == ["a", "disabled"] and out[2].split() == ["b", "enabled"]
    assert out[3].startswith("examples in ") and "dd_mirror" in out[4]     # packaged ones
    assert len(out) == 5


def test_list_one_prints_content(cdir, capsys):
    (cdir / "b.conf").write_text("broker amqp://x/\nsubtopic #\n")
    assert actions.list_action(COMP, "b") == 0
    assert capsys.readouterr().out == "broker amqp://x/\nsubtopic #\n"
    assert actions.list_action(COMP, "nope") == 2
    err = capsys.readouterr().err
    assert "nope" in err and "sr_subscribe list" in err and len(err.splitlines()) == 1


def test_list_plugins(cdir, capsys, home):
    pdir = home / ".config" / "sarra" / "plugins"
    pdir.mkdir()
    (pdir / "my_plugin.py").write_text("")
    assert actions.list_action(COMP, "plugins") == 0
    assert "my_plugin.py" in capsys.readouterr().out


def test_resolve(cdir, tmp_path):
    (cdir / "a.conf").write_text("")
    (cdir / "d.conf.off").write_text("")
    assert actions.resolve(COMP, "a") == cdir / "a.conf"
    assert actions.resolve(COMP, "a.conf") == cdir / "a.conf"
    other = tmp_path / "elsewhere.conf"
    other.write_text("")
    assert actions.resolve(COMP, str(other)) == other
    with pytest.raises(actions.ActionError) as e:
        actions.resolve(COMP, "d")
    assert e.value.code == 2 and "enable d" in str(e.value)
    assert actions.resolve(COMP, "d", disabled=True) == cdir / "d.conf.off"
    with pytest.raises(actions.ActionError) as e:
        actions.resolve(COMP, "zz")
    assert "sr_subscribe list" in str(e.value) and str(cdir) in str(e.value)
    with pytest.raises(actions.ActionError):
        actions.resolve(COMP, str(tmp_path / "missing.conf"))


def test_add_from_cwd_and_path(home, tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "dd_swob.conf").write_text("subtopic observations.swob-ml.#\n")
    (src / "plain").write_text("x\n")
    monkeypatch.chdir(src)
    assert actions.add(COMP, "dd_swob.conf") == 0
    dest = home / ".config" / "sarra" / COMP / "dd_swob.conf"
    assert dest.read_text() == "subtopic observations.swob-ml.#\n"
    assert "added" in capsys.readouterr().out
    # refuse to overwrite, content untouched
    (src / "dd_swob.conf").write_text("changed\n")
    assert actions.add(COMP, str(src / "dd_swob.conf")) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.splitlines()) == 1
    assert dest.read_text() == "subtopic observations.swob-ml.#\n"
    # name without extension: found as name.conf; file without extension gets .conf
    (src / "other.conf").write_text("o\n")
    assert actions.add(COMP, "other") == 0
    assert actions.add(COMP, "plain") == 0
    assert (dest.parent / "plain.conf").read_text() == "x\n"
    assert actions.add(COMP, "missing.conf") == 1
    assert "not found" in capsys.readouterr().err
    (src / "adir").mkdir()
    assert actions.add(COMP, str(src / "adir")) == 1
    assert capsys.readouterr().err.strip().endswith(
        f"add: is a directory, not a configuration file: {src / 'adir'}")


def test_add_refuses_when_disabled_copy_exists(cdir, tmp_path, capsys):
    (cdir / "x.conf.off").write_text("old\n")
    (tmp_path / "x.conf").write_text("new\n")
    assert actions.add(COMP, str(tmp_path / "x.conf")) == 1
    assert not (cdir / "x.conf").exists()


def test_remove(cdir, capsys):
    (cdir / "a.conf").write_text("")
    (cdir / "b.conf.off").write_text("")
    state = instances.state_file(COMP, "a")
    state.parent.mkdir(parents=True)
    state.write_text("2\n")
    assert actions.remove(COMP, "a") == 0
    assert not (cdir / "a.conf").exists() and not state.parent.exists()
    assert "removed state directory" in capsys.readouterr().out
    assert actions.remove(COMP, "b") == 0
    assert not (cdir / "b.conf.off").exists()
    assert actions.remove(COMP, "a") == 2
    assert "sr_subscribe list" in capsys.readouterr().err


def test_remove_keeps_state_of_running_instance(cdir, capsys, monkeypatch):
    (cdir / "r.conf").write_text("")
    # this (live) test process poses as instance 1: its command line is accepted as ours
    instances.write_pid(COMP, "r", 1, os.getpid(), remove_at_exit=False)
    monkeypatch.setattr(instances, "cmdline_matches", lambda *a, **k: True)
    assert actions.remove(COMP, "r") == 0
    assert not (cdir / "r.conf").exists()
    assert instances.pid_file(COMP, "r", 1).exists()
    assert "still running" in capsys.readouterr().err


def test_enable_disable(cdir, capsys):
    (cdir / "a.conf").write_text("x\n")
    assert actions.disable(COMP, "a") == 0
    assert (cdir / "a.conf.off").exists() and not (cdir / "a.conf").exists()
    assert actions.disable(COMP, "a.conf") == 0
    assert "already disabled" in capsys.readouterr().out
    assert actions.enable(COMP, "a") == 0
    assert (cdir / "a.conf").read_text() == "x\n" and not (cdir / "a.conf.off").exists()
    assert actions.enable(COMP, "a") == 0
    assert "already enabled" in capsys.readouterr().out
    assert actions.enable(COMP, "zz") == 2
    assert actions.disable(COMP, "zz") == 2
    (cdir / "a.conf.off").write_text("y\n")
    assert actions.disable(COMP, "a") == 1   # both exist: refuse, touch nothing
    assert (cdir / "a.conf").read_text() == "x\n"


@pytest.fixture
def editor(tmp_path, monkeypatch):
    """An $EDITOR that appends 'edited' to the file it is given."""
    script = tmp_path / "ed.sh"
    script.write_text('#!/bin/sh\necho edited >> "$1"\n')
    script.chmod(0o755)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(script))
    return script


def test_edit(cdir, editor, home):
    (cdir / "a.conf").write_text("x\n")
    assert actions.edit(COMP, "a") == 0
    assert (cdir / "a.conf").read_text() == "x\nedited\n"
    (cdir / "d.conf.off").write_text("")
    assert actions.edit(COMP, "d") == 0
    assert (cdir / "d.conf.off").read_text() == "edited\n"
    assert actions.edit(COMP, "new") == 0           # a new configuration
    assert (cdir / "new.conf").read_text() == "edited\n"
    assert actions.edit(COMP, "default") == 0
    assert (home / ".config" / "sarra" / "default.conf").read_text() == "edited\n"
    assert actions.edit(COMP, "credentials") == 0
    cred = home / ".config" / "sarra" / "credentials.conf"
    assert cred.read_text() == "edited\n"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600


def test_edit_editor_failures(cdir, monkeypatch, capsys):
    (cdir / "a.conf").write_text("x\n")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", "false")
    assert actions.edit(COMP, "a") == 1
    monkeypatch.setenv("EDITOR", "/nonexistent/editor --wait")
    assert actions.edit(COMP, "a") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "/nonexistent/editor" in err[1]
    monkeypatch.setenv("EDITOR", "true")
    assert actions.edit(COMP, "a") == 0


def test_component_aliases(home, capsys):
    d = paths.component_config_dir("report")
    os.makedirs(d)
    open(os.path.join(d, "r.conf"), "w").close()
    assert actions.list_configs("sr_log") == [("r", True)]
    assert actions.list_configs("sr_report") == [("r", True)]
