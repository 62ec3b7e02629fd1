"""Issue 17 items 1 and 2, pure parts: states and exit codes, hung, rates, the line that
explains a failed start, process titles."""

import os
import subprocess
import sys
import types

import pytest

from sarra.flow import engine as flow
from sarra.ops import health, instances, proctitle


def test_exit_codes_of_states():
    assert [health.exit_code(s) for s in ("running", "stopped", "disabled")] == [0, 0, 0]
    assert [health.exit_code(s) for s in health.PROBLEMS] == [1] * len(health.PROBLEMS)
    assert "down" in health.PROBLEMS and "hung" in health.PROBLEMS


def test_hung_means_holding_messages_without_a_stats_write():
    now = 1000.0
    assert health.stats_hung({"unacked": 3, "time": now - 301}, now, 300)
    assert not health.stats_hung({"unacked": 3, "time": now - 299}, now, 300)
    assert not health.stats_hung({"unacked": 0, "time": now - 5000}, now, 300)  # idle
    assert not health.stats_hung({"time": now - 5000}, now, 300)     # an older version
    assert not health.stats_hung(None, now, 300)
    assert not health.stats_hung({"unacked": "x", "time": 1}, now, 300)


def test_rate_over_the_last_window_then_falls_when_idle():
    s = {"time": 110.0, "received": 50, "prev_time": 100.0, "prev_received": 30}
    assert health.rate(s, now=111.0) == 2.0              # current file: its window
    assert health.rate(s, now=200.0) == pytest.approx(20 / 100)   # idle since: decays
    assert health.rate({"time": 110, "received": 50, "start": 60}, now=110) == 1.0
    assert health.rate({"time": 1}, now=5) is None


def test_failure_line_is_the_last_error_of_this_start(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("2026 [ERROR] an old start: other\n")
    since = health.log_size(log)
    with open(log, "a") as f:
        f.write("2026 [INFO] starting\n2026 [ERROR] amqp://u@h/: login refused\n"
                "2026 [INFO] stopped: received=0\n")
    assert health.failure_line(log, since) == "2026 [ERROR] amqp://u@h/: login refused"
    assert health.failure_line(log, health.log_size(log)) is None
    since = health.log_size(log)
    with open(log, "a") as f:
        f.write("Traceback (most recent call last):\n  File x\nValueError: boom\n")
    assert health.failure_line(log, since) == "ValueError: boom"
    assert health.failure_line(tmp_path / "none.log") is None


class _Stats:
    """What Flow.stats_tick reads and writes, without a broker."""

    def __init__(self):
        self.unacked, self.last_activity = 0, None
        self._stats_at, self._stats_unacked = 0.0, 0
        self.writes = []

    def write_stats(self):
        self.writes.append(self.unacked)
        self._stats_at, self._stats_unacked = self.now, self.unacked


def _tick(st, now):
    st.now = now
    flow.Flow.stats_tick(st, now)


def test_stats_written_on_activity_at_most_every_few_seconds():
    st = _Stats()
    _tick(st, 100.0)
    assert st.writes == []                        # nothing happened: no write
    st.last_activity = 100.5
    _tick(st, 100.5)
    assert st.writes == [0]                       # activity: written at once
    st.last_activity = 101.0
    _tick(st, 101.0)
    assert st.writes == [0]                       # not per message
    _tick(st, 100.5 + flow.STATS_EVERY)
    assert st.writes == [0, 0]                    # within STATS_EVERY
    st.unacked = 4                                # a long batch: written while in hand
    _tick(st, 110.0)
    _tick(st, 110.0 + flow.STATS_EVERY)
    assert st.writes == [0, 0, 4, 4]
    st.unacked = 0                                # finished: the file must say so
    _tick(st, 120.0)
    assert st.writes[-1] == 0
    _tick(st, 200.0)
    assert len(st.writes) == 5                    # idle: nothing more
    assert flow.STATS_EVERY == health.STATS_EVERY


def test_title_has_the_command_name_and_no_password():
    t = proctitle.title("sr_subscribe", "obs", 1,
                        ["--broker=amqp://bob:S3cret@host/", "--directory=/d x"])
    assert t == "sr_subscribe obs 01 --broker=amqp://bob@host/ --directory=/d x"
    assert "S3cret" not in t
    assert proctitle.title("sr_x", "a\nb", 2) == "sr_x a b 02"


def test_instance_extra_keeps_only_the_options():
    argv = ["--directory=/d", "--no", "3", "foreground", "obs"]
    assert proctitle.instance_extra(argv, "obs") == ["--directory=/d"]
    assert proctitle.instance_extra(["--no=2", "foreground", "/p/obs.conf"], "obs") == []


def test_titles_are_read_back():
    cmd = ["sr_subscribe obs 01 --directory=/d x"] + [""] * 10     # as psutil shows it
    assert proctitle.parse(cmd) == ("subscribe", "obs", 1)
    assert proctitle.parse(["sr_police", "admin", "01"]) == ("audit", "admin", 1)
    assert proctitle.parse(["sr_sender", "start", "/x/y/push.conf"]) is None
    assert proctitle.parse([sys.executable, "-m", "sarra.commands.subscribe", "--no", "1",
                            "foreground", "obs"]) is None
    assert instances.cmdline_matches(cmd, "subscribe", "obs")
    assert instances.cmdline_matches(cmd, "sr_subscribe", "obs", 1)
    assert not instances.cmdline_matches(cmd, "subscribe", "obs", 2)
    assert not instances.cmdline_matches(cmd, "sender", "obs")
    assert not instances.cmdline_matches(cmd, "subscribe", "ob")


def test_set_title_keeps_the_environment(tmp_path):
    pytest.importorskip("setproctitle")
    code = ("import os, psutil, sys; from sarra import proctitle;"
            "ok = proctitle.set_title('sr_subscribe obs 01');"
            "p = psutil.Process();"
            "print(ok, ' '.join(a for a in p.cmdline() if a), p.environ().get('MARK'),"
            " 'SPT_NOENV' in os.environ)")
    env = dict(os.environ, MARK="here", PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.stdout.split() == ["True", "sr_subscribe", "obs", "01", "here", "False"], \
        out.stdout + out.stderr


def test_set_title_without_the_library_runs_anyway(monkeypatch):
    monkeypatch.setitem(sys.modules, "setproctitle", None)       # import fails
    assert proctitle.set_title("sr_subscribe obs 01") is False


def test_config_health_of_a_crashed_instance(monkeypatch):
    st = instances.Status(running=[], expected=2, stale=[1, 2])
    monkeypatch.setattr(instances, "status", lambda c, n: st)
    h = health.config_health("subscribe", "obs", summary={}, now=1000.0)
    assert (h.state, h.exit_code) == ("down", 1)
    st.expected = 0
    assert health.config_health("subscribe", "obs", summary={}).state == "stopped"
    assert health.config_health("subscribe", "obs", enabled=False,
                                summary={}).state == "disabled"
    st.running, st.expected = [(1, os.getpid())], 2
    monkeypatch.setattr(instances, "read_stats",
                        lambda c, n, i: {"pid": os.getpid(), "unacked": 5, "time": 1.0})
    h = health.config_health("subscribe", "obs", summary={}, now=1000.0)
    assert (h.state, h.hung, h.exit_code) == ("hung", [1], 1)
    monkeypatch.setattr(instances, "read_stats",
                        lambda c, n, i: {"pid": os.getpid(), "unacked": 0, "time": 1.0})
    assert health.config_health("subscribe", "obs", summary={}, now=1000.0).state == \
        "partial"
    cfg = types.SimpleNamespace(sanity_log_dead=0)
    assert health.hung_instances("subscribe", "obs", cfg, [], 1000.0) == []
