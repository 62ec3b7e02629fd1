"""The ``reload`` action on a configuration's instances (signals; the reload itself is in
sarra/flow/reload.py, inside each instance).

As v2: every running instance numbered up to the configuration's ``instances`` gets
SIGHUP (it re-reads its configuration between two batches, nothing lost); instances
numbered above it are stopped; the missing ones are started by the caller
(instances.start, which also records the new count).  Processes are the verified
instances of this HOME (instances.process_of), never looked up by name.
"""

import dataclasses
import signal
import time
from typing import List, Tuple

import psutil

from sarra.ops import instances


#: no SIGHUP (Windows): an instance is stopped and started again instead
SIGHUP = getattr(signal, "SIGHUP", None)


@dataclasses.dataclass
class Reloaded:
    signalled: List[Tuple[int, int]]     # (instance number, pid) sent SIGHUP
    stopped: List[int]                   # instance numbers above the count, stopped
    missing: List[int]                   # instance numbers to start


def signal_instances(component: str, config: str, wanted: int) -> Reloaded:
    """SIGHUP to instances 1..wanted that run, stop the ones above; see the docstring."""
    wanted = max(1, int(wanted))
    out = Reloaded([], [], [])
    with instances.locked(component, config):
        running = dict(instances.status(component, config).running)
        for n, pid in sorted(running.items()):
            if n > wanted:
                continue
            p = instances.process_of(pid, component, config, n)
            if p is None:
                continue
            if SIGHUP is None:
                instances.stop_instance(component, config, n)     # started again below
                continue
            _wait_started(component, config, n, pid)
            try:
                p.send_signal(SIGHUP)
                out.signalled.append((n, pid))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        for n in sorted(running):
            if n > wanted and instances.stop_instance(component, config, n):
                out.stopped.append(n)
        done = {n for n, _ in out.signalled}
        out.missing = [n for n in range(1, wanted + 1) if n not in done]
    return out


#: seconds a just started instance gets to install its signal handlers (a SIGHUP before
#: them would end it): until its first stats file, which it writes once running
START_GRACE = 3.0


def _wait_started(component: str, config: str, n: int, pid: int) -> None:
    deadline = time.monotonic() + START_GRACE
    while time.monotonic() < deadline:
        stats = instances.read_stats(component, config, n)
        if stats is not None and stats.get("pid") == pid:
            return
        try:
            if time.time() - psutil.Process(pid).create_time() > START_GRACE:
                return          # long running (its stats may be older, or not written)
        except psutil.Error:
            return
        time.sleep(0.1)
