import os
import stat

import pytest

from sarra import paths


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


def test_defaults_follow_home(xdg):
    assert paths.config_dir() == str(xdg / ".config" / "sarra")
    assert paths.cache_dir() == str(xdg / ".cache" / "sarra")
    assert paths.credentials_path() == str(xdg / ".config" / "sarra" / "credentials.conf")
    assert paths.component_config_dir("sr_subscribe") == str(xdg / ".config/sarra/subscribe")


def test_xdg_variables_read_at_call_time(xdg, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "k"))
    assert paths.config_dir() == str(tmp_path / "c" / "sarra")
    assert paths.cache_dir() == str(tmp_path / "k" / "sarra")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "k2"))
    assert paths.cache_dir() == str(tmp_path / "k2" / "sarra")


def test_relative_or_empty_xdg_ignored(xdg, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    assert paths.config_dir() == str(xdg / ".config" / "sarra")
    assert paths.cache_dir() == str(xdg / ".cache" / "sarra")


@pytest.mark.parametrize("given,expected", [
    ("subscribe", "subscribe"), ("sr_sarra", "sarra"), ("log", "report"),
    ("sr_log", "report"), ("police", "audit"), ("sr_police", "audit"),
])
def test_component_aliases(given, expected):
    assert paths.canonical_component(given) == expected
    assert paths.program_name(given) == "sr_" + expected


def test_state_and_log_dirs_created_on_demand(xdg):
    expected = xdg / ".cache" / "sarra" / "subscribe" / "dd_swob"
    assert not expected.exists()
    assert paths.state_dir("subscribe", "dd_swob", create=False) == str(expected)
    assert not expected.exists()
    assert paths.state_dir("sr_subscribe", "dd_swob") == str(expected)
    assert expected.is_dir()
    assert paths.log_dir() == str(xdg / ".cache" / "sarra" / "log")
    assert os.path.isdir(paths.log_dir())
    host = paths.state_dir("log", "x", host="node1")
    assert host == str(xdg / ".cache" / "sarra" / "node1" / "report" / "x")
    assert paths.log_dir(host="node1").endswith("sarra/node1/log")


def test_plugin_dirs_user_first(xdg):
    dirs = paths.plugin_dirs()
    assert dirs[0] == str(xdg / ".config" / "sarra" / "plugins")
    assert dirs[-1].endswith(os.path.join("sarra", "plugins"))
    assert os.path.isdir(dirs[-1])


def test_atomic_write_replaces_content_and_mode(tmp_path):
    target = tmp_path / "sub" / "state"
    paths.atomic_write(str(target), "one")
    assert target.read_text() == "one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    paths.atomic_write(str(target), b"two\x00", mode=0o644)
    assert target.read_bytes() == b"two\x00"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path / "sub")) == ["state"]  # no temp file left


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "state"
    target.write_text("old")
    with pytest.raises(TypeError):
        paths.atomic_write(str(target), 12345)  # not bytes/str
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state"]


def test_statehost_setting_moves_state_logs_and_supervisor_files(xdg):
    root = xdg / ".cache" / "sarra"
    paths.set_state_host("node1")
    try:
        assert paths.state_host() == "node1"
        assert paths.state_dir("subscribe", "a", create=False) == str(root / "node1/subscribe/a")
        assert paths.log_dir(create=False) == str(root / "node1" / "log")
        assert paths.host_cache_dir() == str(root / "node1")
        # an explicit host wins, None means no host level at all
        assert paths.state_dir("subscribe", "a", host=None, create=False) == \
            str(root / "subscribe" / "a")
        assert paths.log_dir(host="n2", create=False) == str(root / "n2" / "log")
    finally:
        paths.set_state_host(None)
    assert paths.state_dir("subscribe", "a", create=False) == str(root / "subscribe" / "a")
    assert paths.host_cache_dir() == str(root)
