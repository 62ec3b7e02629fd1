"""The flow's seams (issue 18 item 3): the interruptible-transfer context, the one retry
loop, Work.outcome as an enum, the work steps' own state, and the plugins' adapter."""

import threading
from types import SimpleNamespace

import pytest

from sarra.flow import attempts
from sarra.flow.work import Outcome, Result, TransferInterrupted, Work, download_stopped
from sarra.transfer import CannotDeliver, TransferError


class _Log:
    def __init__(self):
        self.lines = []

    def warning(self, fmt, *args):
        self.lines.append(fmt % args)


def _flow(tries=3):
    return SimpleNamespace(cfg=SimpleNamespace(attempts=tries), log=_Log(),
                           stop_event=threading.Event())


def test_interruptible_only_inside_the_context_and_never_while_paused():
    gate = attempts.Interruptible()
    gate.interrupt()                            # outside: nothing happens
    with gate():
        with gate.paused():
            gate.interrupt()                    # broker I/O: nothing happens
        assert gate.on
        with pytest.raises(TransferInterrupted):
            gate.interrupt()
    assert not gate.on


def test_repeat_tries_attempts_times_then_ends_with_final():
    flow, calls = _flow(3), []

    def op(attempt):
        calls.append(attempt)
        raise TransferError(499, "boom")
    with pytest.raises(Outcome) as e:
        attempts.repeat(flow, "http://h/f", op,
                        lambda err, last: Outcome(499, err.message, retry=True) if last else None)
    assert calls == [1, 2, 3] and e.value.code == 499 and e.value.retry
    assert flow.log.lines == ["http://h/f: attempt 1/3 failed: boom",
                              "http://h/f: attempt 2/3 failed: boom"]


def test_repeat_returns_the_first_success_and_calls_again_between_tries():
    flow, again = _flow(5), []

    def op(attempt):
        if attempt < 2:
            raise TransferError(499, "once")
        return "ok"
    flow.stop_event.wait = lambda t: None
    assert attempts.repeat(flow, "u", op, lambda e, last: None, lambda: again.append(1)) == "ok"
    assert again == [1]


def test_repeat_stops_at_once_on_a_stop_request_and_on_a_final_error():
    flow = _flow(5)
    flow.stop_event.set()
    seen = []

    def op(attempt):
        seen.append(attempt)
        raise CannotDeliver("no")
    with pytest.raises(Outcome):
        attempts.repeat(flow, "u", op, lambda e, last: Outcome(497, "x") if last else None)
    assert seen == [1]

    def stopped(attempt):
        raise TransferInterrupted()
    with pytest.raises(download_stopped):
        attempts.repeat(_flow(), "u", stopped, lambda e, last: None)


def test_send_and_fetch_use_the_one_retry_loop():
    import inspect
    from sarra.flow import fetch, send
    for mod in (fetch, send):
        src = inspect.getsource(mod)
        assert "attempts.repeat(" in src and "for attempt in range" not in src, mod.__name__


def test_work_outcome_is_an_enum_that_still_compares_with_strings():
    from sarra.message import Message
    w = Work(Message("20250101000000.0", "http://h/", "f", {"sum": "0,0"}))
    assert w.outcome is Result.DONE
    w.outcome = "failed"                        # a v2 plugin
    assert w.outcome is Result.FAILED and w.outcome == "failed" and f"{w.outcome}" == "failed"
    with pytest.raises(ValueError):
        w.outcome = "lost"


def test_the_work_steps_keep_their_state_in_objects_of_their_own():
    import re
    from pathlib import Path
    from sarra.flow import presets
    from sarra.flow.stepstate import DownloadState, SendState
    assert presets.preset("subscribe").state is DownloadState
    assert presets.preset("sarra").state is DownloadState
    assert presets.preset("sender").state is SendState
    here = Path(presets.__file__).parent
    for name in ("download.py", "inplace.py", "fetch.py", "send.py", "engine.py"):
        text = (here / name).read_text()
        assert not re.search(r"(flow|self)\.__dict__", text), name
    flow = SimpleNamespace()                     # a preset made without a state
    st = DownloadState.of(flow)
    assert DownloadState.of(flow) is st and flow.step_state is st


def test_plugins_see_the_flow_through_an_adapter(home, tmp_path):
    from sarra.flow.engine import Flow
    from sarra.flow.pluginview import PluginParent
    from sarra.flow.retry import RetryQueue
    from tests.support.flowfakes import delivery, make_flow, run_batches
    assert "__getattr__" not in Flow.__dict__       # the engine forwards nothing
    seen = []
    plugin = tmp_path / "v2plugin.py"
    plugin.write_text(
        "class Counter:\n"
        "    def __init__(self, parent):\n"
        "        parent.counted = 0\n"
        "    def on_message(self, parent):\n"
        "        parent.counted += 1\n"
        "        SEEN.append((parent.directory, parent.msg.relpath, parent.counted,\n"
        "                     type(parent.retry).__name__, parent.no, parent.logger))\n"
        "        parent.msg_to_retry()\n"
        "        return False\n"
        "self.plugin = 'Counter'\n")
    flow = make_flow(home, lambda f, w: None, deliveries=[delivery("/a"), delivery("/b")])
    parent = flow.hooks.parent
    assert isinstance(parent, PluginParent)
    import builtins
    builtins.SEEN = seen
    try:
        flow.hooks.add("plugin", str(plugin))
        run_batches(flow)
    finally:
        del builtins.SEEN
    assert [s[:3] for s in seen] == [(str(home / "dst"), "/a", 1), (str(home / "dst"), "/b", 2)]
    assert seen[0][3] == RetryQueue.__name__ and seen[0][4] == 1 and seen[0][5] is flow.log
    assert len(flow.retry) == 2                 # msg_to_retry reached the flow
    assert not hasattr(flow, "counted")         # a plugin's own state stays on its parent
    with pytest.raises(AttributeError):
        flow.directory                          # options are read from flow.cfg
