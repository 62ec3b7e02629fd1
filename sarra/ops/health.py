"""One truth for the state of a configuration (issue 17, item 1).

``sr_<component> status <config>`` and ``sr status`` both call ``config_health``; its
state and exit code are the same for both:

  running   every expected instance alive                                      exit 0
  stopped   no instance expected (never started, or stopped) and none running   exit 0
  disabled  like stopped, the configuration being disabled or removed          exit 0
  partial   some expected instances alive, not all                             exit 1
  down      instances expected (started, not stopped) and none alive: crashed  exit 1
  hung      an instance is alive but does nothing (see ``hung_instances``)      exit 1
  flapping  instances keep dying soon after they start (supervisor backoff)     exit 1
  error     the configuration cannot be read and nothing of it runs            exit 1
  standby   every instance alive and idle: its ``vip`` is on another node      exit 0

Hung, precisely: an alive instance whose stats file says it holds unacknowledged
messages (``unacked`` > 0) and was not rewritten for ``hung_after`` seconds
(sanity_log_dead when set, else HUNG_AFTER; at least MIN_HUNG_AFTER); an instance that
works rewrites it at least every STATS_EVERY seconds, a transfer in progress included
(see flow.Flow.stats_tick).  With sanity_log_dead set, an
instance whose log, stats file and start are all older than it is hung too.

Rates: messages received per second from the stats file's window mark (prev_time,
prev_received: 30 to 60 s before its last write, flow.RATE_WINDOW; since the start at
first) to its last write; when the file is older than a write while active would leave
it (the instance went idle), up to now, so that the figure falls instead of staying at the
last busy value (and reaches 0 once the heartbeats' writes move the window past the last
message).
"""

import dataclasses
import os
import time
from typing import List, Optional, Sequence, Tuple

import psutil

from sarra.ops import instances, supervisor

STATS_EVERY = 2.0          # seconds: stats file rewritten at least so often while active
HUNG_AFTER = 300.0         # seconds: holding messages without a stats write (no sld)
MIN_HUNG_AFTER = 5 * STATS_EVERY   # never less: a busy instance writes every STATS_EVERY
FLAPPING_DELAY = 4.0       # supervisor backoff reached by 3 quick deaths in a row
PROBLEMS = ("down", "partial", "hung", "flapping", "error")
OK_STATES = ("running", "stopped", "disabled", "standby")


def exit_code(state: str) -> int:
    """0 for running/stopped/disabled, 1 (some items failed) for the others."""
    return 0 if state in OK_STATES else 1


@dataclasses.dataclass
class Health:
    state: str
    running: List[Tuple[int, int]]        # (instance number, pid)
    expected: int
    hung: List[int]
    notes: List[str]
    restarts: int = 0

    @property
    def problem(self) -> bool:
        return self.state in PROBLEMS

    @property
    def exit_code(self) -> int:
        return exit_code(self.state)


def _sld(cfg) -> float:
    try:
        return float(getattr(cfg, "sanity_log_dead", 0) or 0) if cfg is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def stats_hung(stats: Optional[dict], now: float, hung_after: float,
               mtime: Optional[float] = None) -> bool:
    """Does this stats file show an instance holding messages and silent for hung_after s?"""
    if not stats:
        return False
    try:
        unacked = int(stats.get("unacked") or 0)
        written = float(stats.get("time") if mtime is None else mtime)
    except (TypeError, ValueError):
        return False
    return unacked > 0 and now - written > hung_after


def all_standby(component: str, name: str, running: Sequence[Tuple[int, int]]) -> bool:
    """Do the stats files of all these running instances say standby (option vip: the
    address is on another node)?"""
    for n, pid in running:
        stats = instances.read_stats(component, name, n)
        if not stats or stats.get("pid") != pid or not stats.get("standby"):
            return False
    return True


def hung_instances(component: str, name: str, cfg, running: Sequence[Tuple[int, int]],
                   now: float) -> List[int]:
    """Numbers of the running instances that are hung (see the module docstring)."""
    sld = _sld(cfg)
    hung_after = max(sld if sld > 0 else HUNG_AFTER, MIN_HUNG_AFTER)
    out = []
    for n, pid in running:
        stats = instances.read_stats(component, name, n)
        if stats is not None and stats.get("pid") not in (None, pid):
            stats = None                  # written by an earlier instance
        if stats_hung(stats, now, hung_after):
            out.append(n)
            continue
        if sld <= 0:
            continue
        try:
            started = psutil.Process(pid).create_time()
        except psutil.Error:
            continue
        if now - supervisor.last_sign_of_life(component, name, n, started) > sld:
            out.append(n)
    return out


def flapping(infos: List[dict], now: float) -> List[dict]:
    """Instances that keep dying soon after their start (backoff at FLAPPING_DELAY or
    more, last death within that delay plus the time an instance must stay up)."""
    return [v for v in infos if float(v.get("delay") or 0) >= FLAPPING_DELAY
            and now - float(v.get("died") or 0) <= float(v["delay"]) + supervisor.STABLE_AFTER]


def _age(seconds: float) -> str:
    s = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * size:
            return f"{s / size:.0f}{unit}"
    return f"{s:.0f}s"


def config_health(component: str, name: str, cfg=None, enabled: bool = True,
                  error: Optional[str] = None, summary: Optional[dict] = None,
                  now: Optional[float] = None) -> Health:
    """The state of one configuration (cfg: its parsed configuration, None when unread;
    error: why it could not be read; summary: supervisor.read_summary(), read when None)."""
    now = time.time() if now is None else now
    label = f"{instances.program_name(component)} {name}"
    st = instances.status(component, name)
    summary = supervisor.read_summary() if summary is None else summary
    mine = [v for k, v in summary.items() if k.startswith(f"{component}/{name}/")]
    restarts = sum(int(v.get("restarts") or 0) for v in mine)
    deaths = sorted((v.get("died") or 0, v.get("last_exit")) for v in mine if v.get("died"))
    hung = hung_instances(component, name, cfg, st.running, now)
    flap = flapping(mine, now)
    running, expected, notes = len(st.running), st.expected, []
    if error and not running:
        state = "error"
    elif flap:
        state = "flapping"
        last_exit = max(flap, key=lambda v: v["died"])["last_exit"]
        notes.append(f"{label}: instances keep dying soon after they start "
                     f"(last: {last_exit}); see its logs")
    elif hung:
        state = "hung"
        notes.append(f"{label}: instance(s) {' '.join(f'{n:02d}' for n in hung)} hung: "
                     f"holding messages with no sign of life; sr sanity restarts them")
    elif expected == 0:
        state = "running" if running else ("stopped" if enabled else "disabled")
    elif running == 0:
        state = "down"
    else:
        state = "partial" if running < expected else "running"
    if state == "running" and running and all_standby(component, name, st.running):
        state = "standby"           # vip elsewhere: alive, idle, and that is fine
    if state in ("down", "partial") and deaths:
        notes.append(f"{label}: last death {_age(now - deaths[-1][0])} ago: {deaths[-1][1]}")
    return Health(state, list(st.running), expected, hung, notes, restarts)


# ---------------------------------------------------------------- rates

def rate(stats: dict, now: Optional[float] = None, key: str = "received"
         ) -> Optional[float]:
    """Messages received per second by one live instance (see the module docstring);
    key="bytes": bytes transferred per second (prev_bytes: flow/monitor.py)."""
    now = time.time() if now is None else now
    try:
        t, received = float(stats["time"]), float(stats[key])
        if "prev_time" in stats and "prev_" + key in stats:
            t0, r0 = float(stats["prev_time"]), float(stats["prev_" + key])
            end = t if now - t <= 2 * STATS_EVERY + 1 else now
            if end > t0:
                return (received - r0) / (end - t0)
        start = stats.get("start")
        if start is None:
            start = psutil.Process(int(stats["pid"])).create_time()
        end = max(t, now)
        return received / (end - float(start)) if end > float(start) else None
    except (KeyError, TypeError, ValueError, psutil.Error):
        return None


# ---------------------------------------------------------------- a start that failed

def log_size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def failure_line(path, since: int = 0, limit: int = 65536) -> Optional[str]:
    """The line explaining why an instance ended: the last ERROR (else CRITICAL, else
    Traceback's last) line its log got after offset ``since``; None when there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(max(since, log_size(path) - limit, 0))
            text = f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    for marks in (("[ERROR]", "[CRITICAL]"),):
        found = [ln for ln in lines if any(m in ln for m in marks)]
        if found:
            return found[-1][:400]
    if any(ln.startswith("Traceback") for ln in lines):
        return lines[-1][:400]
    return None


def status_lines(program: str, component: str, name: str, cfg=None, wanted: int = 1,
                 enabled: bool = True, error: Optional[str] = None) -> Tuple[List[str], int]:
    """``<program> <name>: <state> (<running>/<expected> instances)`` and the notes, for
    a component's ``status`` action, and the state's exit code (as `sr status`)."""
    h = config_health(component, name, cfg, enabled, error)
    lines = [f"{program} {name}: {h.state} ({len(h.running)}/{max(h.expected, wanted)} "
             f"instances)"]
    lines += [f"note: {note}" for note in h.notes]
    return lines, h.exit_code
