"""sr: run every configuration of a host together (service-provider mode; see man sr).

    sr [-h] <action> [<component>[/<config>] ...]

Actions: start stop restart status list sanity cleanup declare setup dump check.  Without names
an action applies to every enabled configuration of every component (stop, status and
sanity also to configurations that still have instances or a recorded count); a name is
``subscribe/dd_all``, ``sr_subscribe/dd_all``, ``sarra`` (all of a component) or a glob
(``sarra/*``, ``*/dd_*``).

Instances are kept up by one supervisor process per user (sarra/ops/supervisor.py) that
`start` launches; `stop` without names stops it and everything it ran.
"""

import dataclasses
import fnmatch
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import psutil

from sarra import paths
from sarra.commands import actions
from sarra.config import parser as config, options
from sarra.ops import health, instances, logs, supervisor

SINGLE_INSTANCE = ("watch", "poll", "post")
from sarra.commands import common, srmonitor

PROG = "sr"
ACTIONS = ("start", "stop", "restart", "status", "list", "sanity", "cleanup", "declare",
           "setup", "dump", "check")
START_WAIT, SETTLE = 5.0, 1.0
QUEUE_TIMEOUT = 3.0
STOP_TIMEOUT = 10.0

USAGE_TEXT = f"""usage: sr [-h] [--version] <action> [<component>[/<config>] ...]

actions:
  start     record the instance count of each configuration, start the supervisor,
            wait for the instances
  stop      stop the instances (counts set to 0); without names also the supervisor
  restart   stop, then start
  status    table of configurations: state, instances running/expected, queue depth,
            lag, messages/s, bytes/s, last activity, retry queue, restarts, then each
            instance's figures; exit 1 if something that should run does not;
            --json: the same as JSON
  check     a Nagios/Icinga plugin: one line with performance data, exit 0 OK,
            1 WARNING, 2 CRITICAL, 3 UNKNOWN; thresholds --queue W,C --lag W,C
            --idle W,C --failures W,C (percent) --quota W,C (percent), or off
  list      configurations of every component, enabled or not
  sanity    restart what should run and does not (the supervisor too), and hung instances
  cleanup   delete queues and state;  declare / setup: declare queues (and bind them)
  dump      processes, counts and state files as JSON, for debugging

names: subscribe/dd_all  sr_subscribe/dd_all  sarra  'sarra/*'  '*/dd_*'
See man sr."""


@dataclasses.dataclass(frozen=True)
class Item:
    component: str
    name: str
    enabled: bool          # <name>.conf exists (False: disabled or removed)

    @property
    def prog(self) -> str:
        return paths.program_name(self.component)

    @property
    def label(self) -> str:
        return f"{self.prog} {self.name}"


def _err(text: str) -> None:
    print(text, file=sys.stderr)


# ---------------------------------------------------------------- selection

def _state_names(component: str) -> List[str]:
    """Configurations with a recorded count or pid files (possibly removed since)."""
    d = Path(paths.state_dir(component, None, create=False))
    try:
        names = sorted(p.name for p in d.iterdir() if p.is_dir())
    except OSError:
        return []
    return [n for n in names
            if instances.read_expected(component, n) > 0 or instances.pid_files(component, n)]


def known(with_state: bool = True) -> List[Item]:
    """Every configuration of every runnable component (disabled ones included)."""
    items = {}
    for comp in supervisor.RUNNABLE:
        for name, enabled in actions.list_configs(comp):
            items[(comp, name)] = Item(comp, name, enabled)
        if with_state:
            for name in _state_names(comp):
                items.setdefault((comp, name), Item(comp, name, False))
    return list(items.values())


def select(words: List[str], action: str) -> Tuple[List[Item], List[str]]:
    """(items, errors) for the action; see the module docstring."""
    everything = known()
    if not words:
        if action == "list":
            return known(with_state=False), []
        if action in ("stop", "status", "sanity"):
            live = {(c, n) for c in supervisor.RUNNABLE for n in _state_names(c)}
            return [i for i in everything if i.enabled or (i.component, i.name) in live], []
        return [i for i in everything if i.enabled], []
    chosen, errors = {}, []
    for word in words:
        comp_pat, _, name_pat = word.partition("/")
        comp_pat = paths.canonical_component(comp_pat)
        name_pat = name_pat or "*"
        for suffix in (".conf.off", ".conf"):
            if name_pat.endswith(suffix):
                name_pat = name_pat[: -len(suffix)]
        globbing = any(ch in name_pat for ch in "*?[")
        found = [i for i in everything if fnmatch.fnmatchcase(i.component, comp_pat)
                 and fnmatch.fnmatchcase(i.name, name_pat)]
        if action in ("start", "restart", "declare", "setup") and globbing:
            found = [i for i in found if i.enabled]
        if not found:
            errors.append(f"{PROG}: no configuration matches {word!r}; see: sr list")
        for i in found:
            if not i.enabled and action in ("start", "restart", "declare", "setup"):
                errors.append(f"{i.label}: disabled (enable it with: {i.prog} enable "
                              f"{i.name})")
                continue
            chosen[(i.component, i.name)] = i
    return list(chosen.values()), errors


# ---------------------------------------------------------------- start / stop

def _load(item: Item):
    """The parsed configuration, or None after printing why not."""
    try:
        return config.load(item.component, item.name, set_state_host=False)
    except config.ConfigError as e:
        _err(f"{item.label}: {e} (skipped)")
    except Exception as e:          # a broken config must never stop the others
        _err(f"{item.label}: cannot read the configuration: {e} (skipped)")
    return None


def do_start(items: List[Item]) -> int:
    rc, todo, t0, offsets = common.OK, [], time.time(), {}
    for it in items:
        if not supervisor.has_command(it.component):
            _err(f"{it.label}: {it.prog} is not available in this version (skipped)")
            rc = max(rc, common.SOME_FAILED)
            continue
        cfg = _load(it)
        if cfg is None:
            rc = common.USAGE
            continue
        # posters and watchers are single-instance: several would post everything twice
        count = 1 if it.component in SINGLE_INSTANCE else max(1, int(cfg.instances or 1))
        with instances.locked(it.component, it.name):
            instances.write_expected(it.component, it.name, count)
        todo.append((it, count))
        for n in range(1, count + 1):    # where this start's lines begin in each log
            offsets[(it.component, it.name, n)] = health.log_size(
                logs.log_file(it.component, it.name, n))
    try:
        pid, new = supervisor.ensure_running()
        print(f"{PROG}: supervisor {'started' if new else 'running'} (pid {pid}), "
              f"log {supervisor.log_file()}")
    except (RuntimeError, OSError) as e:
        _err(f"{PROG}: {e}; starting the instances without supervision")
        for it, count in todo:
            instances.start(it.component, it.name, count)
        rc = max(rc, common.SOME_FAILED)
    return max(rc, _report_started(todo, t0, offsets))


def _report_started(todo: List[Tuple[Item, int]], t0: float,
                    offsets: Optional[dict] = None) -> int:
    """Wait until the instances run (and still run SETTLE s later); one line per config,
    naming the instances that are not running or died since t0, with the log line that
    explains it (offsets: where this start's lines begin in each instance's log)."""
    def missing():
        return [(it, c) for it, c in todo
                if len(instances.status(it.component, it.name).running) < c]
    deadline = time.monotonic() + START_WAIT
    while missing() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(SETTLE if todo else 0)
    summary = supervisor.read_summary()
    rc = common.OK
    for it, count in todo:
        st = instances.status(it.component, it.name)
        line = f"{it.label}: {len(st.running)}/{count} instance(s) running"
        up = {n for n, _ in st.running}
        bad = False
        for n in range(1, count + 1):
            info = summary.get(f"{it.component}/{it.name}/{n:02d}", {})
            died = (info.get("died") or 0) >= t0
            if n not in up or died:
                bad = True
                lpath = logs.log_file(it.component, it.name, n)
                why = health.failure_line(lpath, (offsets or {}).get(
                    (it.component, it.name, n), 0))
                line += (f"; {n:02d} {info.get('last_exit') if died else 'not started'}"
                         f"{': ' + why if why else ''}, see {lpath}")
        if bad:
            rc = common.SOME_FAILED
            _err(line)
        else:
            print(line)
    return rc


def do_stop(items: List[Item], everything: bool) -> int:
    if everything:
        pid = supervisor.terminate()
        if pid:
            print(f"{PROG}: supervisor (pid {pid}) stopped")
    counts = instances.stop_many([(i.component, i.name) for i in items], STOP_TIMEOUT)
    for it in items:
        n = counts.get((it.component, it.name), 0)
        if n or not everything:
            print(f"{it.label}: stopped {n} instance(s)")
    return common.OK


# ---------------------------------------------------------------- sanity

def _hung(item: Item, cfg, running: List[Tuple[int, int]], now: float) -> List[int]:
    return health.hung_instances(item.component, item.name, cfg, running, now)


def do_sanity(items: List[Item]) -> int:
    rc = common.OK
    for it in items:
        expected = instances.read_expected(it.component, it.name)
        if expected <= 0:
            continue
        cfg = _load(it) if it.enabled else None
        st = instances.status(it.component, it.name)
        for n in _hung(it, cfg, st.running, time.time()):
            print(f"{it.label}: instance {n:02d} hung (holding messages with no sign of "
                  f"life; see man sr): restarting it")
            instances.stop_instance(it.component, it.name, n)
        st = instances.status(it.component, it.name)
        if len(st.running) >= expected:
            continue
        if not it.enabled:
            _err(f"{it.label}: {len(st.running)}/{expected} running but the configuration "
                 f"is disabled or removed: not restarted")
            rc = common.SOME_FAILED
            continue
        up = {n for n, _ in st.running}
        started = instances.start(it.component, it.name, expected)
        gone = [f"{n:02d}" for n in range(1, expected + 1) if n not in up]
        print(f"{it.label}: restarted instance(s) {' '.join(gone)}")
        if started.failed:
            rc = common.SOME_FAILED
    if supervisor.state() == "dead":      # after the instances: they are not its to start
        try:
            pid = supervisor.launch()
            print(f"{PROG}: supervisor was not running: restarted (pid {pid})")
        except (RuntimeError, OSError) as e:
            _err(f"{PROG}: cannot restart the supervisor: {e}")
            rc = common.SOME_FAILED
    return rc


# ---------------------------------------------------------------- status

def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    s = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * size:
            return f"{s / size:.0f}{unit}"
    return f"{s:.0f}s"


def _rate(stats: dict, now: Optional[float] = None) -> Optional[float]:
    """Messages received per second by one live instance (health.rate; now: the time of
    the stats file's last write unless given)."""
    try:
        now = float(stats["time"]) if now is None else now
    except (KeyError, TypeError, ValueError):
        return None
    return health.rate(stats, now)


def _stats_of(item: Item, running: List[Tuple[int, int]], now: Optional[float] = None
              ) -> Tuple[Optional[float], Optional[float], int, bool]:
    """(messages/s of the live instances, last activity, retry queue, any stats at all)."""
    live = {pid for _, pid in running}
    d = instances.stats_file(item.component, item.name, 1).parent
    rate, last, retry, seen = None, None, 0, False
    for path in sorted(d.glob(f"{item.prog}_{item.name}_[0-9][0-9].stats")):
        s = instances.read_stats(item.component, item.name, int(path.name[-8:-6]))
        if not s:
            continue
        seen = True
        if s.get("last_activity"):
            last = max(last or 0.0, float(s["last_activity"]))
        retry += int(s.get("retry_queue") or 0)
        if s.get("pid") in live:
            r = _rate(s, time.time() if now is None else now)
            if r is not None:
                rate = (rate or 0.0) + r
    return rate, last, retry, seen


def _queue_name(item: Item, cfg) -> Optional[str]:
    if cfg.queue_name:
        return cfg.queue_name
    d = instances.stats_file(item.component, item.name, 1).parent
    if not d.is_dir():
        return None
    try:
        from sarra.flow import consumer
        text = Path(consumer.queue_file(cfg)).read_text().strip()
    except (OSError, ImportError):
        return None
    return text or None


def queue_depths(queries: List[Tuple[int, str, str]], timeout: float = QUEUE_TIMEOUT
                 ) -> Tuple[Dict[int, Optional[int]], Dict[str, str]]:
    """{key: messages waiting (None: unknown)}, {broker: error} for (key, broker URL,
    queue) queries; one connection per broker, all in parallel, within ``timeout`` s."""
    from sarra.broker.client import Broker, BrokerError, redact
    from sarra.config.credentials import Credentials, CredentialsError
    depths: Dict[int, Optional[int]] = {}
    errors: Dict[str, str] = {}
    by_broker: Dict[str, List[Tuple[int, str]]] = {}
    for key, url, queue in queries:
        by_broker.setdefault(url, []).append((key, queue))
    try:
        creds = Credentials.load()
    except CredentialsError as e:
        return depths, {"credentials": str(e)}
    quiet = logging.getLogger("sarra.sr.quiet")
    quiet.propagate, quiet.disabled = False, True

    def password(url):
        try:
            return creds.password_for(url)
        except CredentialsError:
            return None

    def ask(url, wanted):
        b = None
        try:
            b = Broker(url, password_lookup=password, heartbeat=0, reconnect=False,
                       connect_timeout=timeout, logger=quiet)
            b.connect()
            for key, queue in wanted:
                try:
                    depths[key] = b.declare_queue(queue, passive=True)[1]
                except BrokerError:
                    depths[key] = None
        except Exception as e:
            errors[redact(url)] = str(e)
        finally:
            if b is not None:
                try:
                    b.close()
                except Exception:
                    pass

    threads = [threading.Thread(target=ask, args=(u, w), daemon=True)
               for u, w in by_broker.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 0.5
    for (url, _), t in zip(by_broker.items(), threads):
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            errors[redact(url)] = f"no answer within {timeout:g}s"
    return dict(depths), errors


COLUMNS = ("COMPONENT", "CONFIG", "STATE", "RUN/EXP", "QUEUE", "LAG", "MSG/S", "BYTES/S",
           "LAST", "RETRY", "RESTARTS")
PROBLEMS = health.PROBLEMS
FLAPPING_DELAY = health.FLAPPING_DELAY


def _flapping(infos: List[dict], now: float) -> List[dict]:
    return health.flapping(infos, now)


def status_rows(items: List[Item], now: Optional[float] = None,
                query_broker: bool = True) -> Tuple[List[dict], List[str]]:
    """One dict per configuration (keys: COLUMNS, lower case, plus 'problem') and notes."""
    now = time.time() if now is None else now
    summary = supervisor.read_summary()
    rows, notes, queries = [], [], []
    for idx, it in enumerate(sorted(items, key=lambda i: (i.component, i.name))):
        cfg, error = None, None
        if it.enabled:
            try:
                cfg = config.load(it.component, it.name, set_state_host=False)
            except Exception as e:
                error = str(e)
                notes.append(f"{it.label}: {e}")
        h = health.config_health(it.component, it.name, cfg, it.enabled, error, summary, now)
        notes += h.notes
        rate, last, retry, seen = _stats_of(it, h.running, now)
        state, running, expected, restarts = h.state, len(h.running), h.expected, h.restarts
        rows.append({"component": it.component, "config": it.name, "state": state,
                     "run/exp": f"{running}/{expected}", "queue": "-",
                     "msg/s": "-" if rate is None else f"{rate:.1f}",
                     "last": _age(now - last) if last else ("never" if seen else "-"),
                     "retry": str(retry) if seen else "-", "restarts": str(restarts),
                     "problem": state in PROBLEMS})
        if query_broker and cfg is not None and it.component in options.CONSUMERS \
                and cfg.broker:
            queue = _queue_name(it, cfg)
            if queue:
                queries.append((idx, cfg.broker, queue))
    if queries:
        depths, errors = queue_depths(queries)
        for idx, _, _ in queries:
            if depths.get(idx) is not None:
                rows[idx]["queue"] = str(depths[idx])
        notes += [f"queue depth unknown for {url}: {text}" for url, text in errors.items()]
    srmonitor.add_figures(rows, now)     # bytes/s, lag, each instance's figures
    return rows, notes


def do_status(items: List[Item]) -> int:
    sup = supervisor.state()
    rc = common.OK
    if sup == "running":
        print(f"supervisor: running (pid {supervisor.read_pid()})")
    elif sup == "dead":
        print(f"supervisor: DEAD (it did not exit normally; pid file "
              f"{supervisor.pid_file()}); sr sanity restarts it")
        rc = common.SOME_FAILED
    else:
        print("supervisor: stopped")
    rows, notes = status_rows(items)
    table = [list(COLUMNS)] + [[r[c.lower()] for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())
    extra = srmonitor.instance_lines(rows)     # after a blank line: each instance's figures
    for line in ([""] + extra) if extra else []:
        print(line)
    for note in notes:
        print(f"note: {note}")
    if any(r["problem"] for r in rows):
        rc = common.SOME_FAILED
    return rc


# ---------------------------------------------------------------- the others

def do_list(items: List[Item]) -> int:
    print(f"configurations in {paths.config_dir()}:")
    labels = {it: f"{it.component}/{it.name}" for it in items}
    width = max([len(v) for v in labels.values()] + [0])
    for it in sorted(items, key=lambda i: (i.component, i.name)):
        print(f"  {labels[it]:<{width}}  {'enabled' if it.enabled else 'disabled'}")
    if not items:
        print("  (none)")
    return common.OK


def do_component_action(items: List[Item], action: str) -> int:
    """cleanup / declare / setup: the component command's own action, per configuration."""
    rc = common.OK
    for it in items:
        if not supervisor.has_command(it.component):
            _err(f"{it.label}: {it.prog} is not available in this version (skipped)")
            rc = max(rc, common.SOME_FAILED)
            continue
        try:
            code = _config_action(it.component, action, it.name)
        except Exception as e:
            _err(f"{it.label}: {action} failed: {e}")
            code = common.SOME_FAILED
        rc = max(rc, code or 0)
    return rc


def _config_action(component: str, action: str, name: str) -> int:
    """The component's own action on one configuration (its lines, its exit code), called
    as a function, not through the command's argv."""
    if component == "watch":
        from sarra.commands import watch
        return watch.config_action(action, name)
    if component == "poll":
        from sarra.commands import poll
        return poll.config_action(action, name)
    if component == "audit":
        from sarra.commands import audit
        return audit.config_action(action, name)
    from sarra.commands import consumer
    return consumer.queue_action(component, action, name)


def do_dump(items: List[Item]) -> int:
    out = {"supervisor": {"state": supervisor.state(), "pid": supervisor.read_pid(),
                          "instances": supervisor.read_summary()},
           "configurations": []}
    for it in items:
        st = instances.status(it.component, it.name)
        out["configurations"].append({
            "component": it.component, "config": it.name, "enabled": it.enabled,
            "expected": st.expected, "running": dict((f"{n:02d}", p) for n, p in st.running),
            "stale_pid_files": st.stale,
            "state_dir": str(instances.state_file(it.component, it.name).parent),
            "stats": {f"{n:02d}": instances.read_stats(it.component, it.name, n)
                      for n in range(1, max([st.expected] + [n for n, _ in st.running]) + 1)}})
    print(json.dumps(out, indent=1, default=str))
    return common.OK


# ---------------------------------------------------------------- main

def run(argv: List[str]) -> int:
    if common.wants_version(argv):
        return common.print_version(PROG)
    if not argv or any(a in ("-h", "--help", "help") for a in argv):
        print(USAGE_TEXT)
        return common.OK if argv else common.USAGE
    if "check" in argv or "--json" in argv:
        return srmonitor.run(argv)          # sr check, sr status --json: srmonitor.py
    flags = [a for a in argv if a.startswith("-")]
    if flags:
        return common.fail(PROG, f"unknown option {flags[0]} (see sr --help)", common.USAGE)
    words = [a for a in argv if a not in ACTIONS]
    acts = [a for a in argv if a in ACTIONS]
    if len(acts) != 1:
        return common.fail(PROG, "give one action: " + " ".join(ACTIONS), common.USAGE)
    action = acts[0]
    try:        # statehost: default.conf's, as the supervisor's (see paths.set_state_host)
        config.use_default_state_host()
    except config.ConfigError as e:
        return common.fail(PROG, str(e), common.USAGE)
    logs.setup_named_logging(PROG, None, level="warning")
    common.quiet_third_party()
    items, errors = select(words, action)
    for e in errors:
        _err(e)
    rc = common.USAGE if errors else common.OK
    if action == "start":
        if items or not errors:     # (no supervisor for names that match nothing)
            rc = max(rc, do_start(items))
    elif action == "stop":
        rc = max(rc, do_stop(items, everything=not words))
    elif action == "restart":
        do_stop(items, everything=False)
        rc = max(rc, do_start([i for i in items if i.enabled]))
    elif action == "status":
        rc = max(rc, do_status(items))
    elif action == "sanity":
        rc = max(rc, do_sanity(items))
    elif action == "list":
        rc = max(rc, do_list(items))
    elif action == "dump":
        rc = max(rc, do_dump(items))
    else:
        rc = max(rc, do_component_action(items, action))
    return rc


@common.pipe_safe
def main(argv: Optional[List[str]] = None) -> int:
    return run(sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
