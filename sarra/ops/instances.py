"""Background instances of one configuration: pid/state files, start, stop, status.

Files (config.md §1), in paths.state_dir(component, config):
  sr_<component>_<config>_NN.pid   pid of instance NN, written by the instance at start
  sr_<component>_<config>.state    number of instances that should run: written by `start`,
                                   set to 0 by `stop` (so nothing restarts a stopped config)
  sr_<component>_<config>.options  command-line options of that `start` (JSON list), given
                                   to every instance launched until the next start or stop
  sr_<component>_<config>_NN.stats counters written by the instance at each heartbeat
  .sr_<component>_<config>.lock    lock taken while instances are started or stopped, so
                                   that `start`, `stop` and the supervisor never race
  sr_<component>_<config>_NN.ident identity of that process (start time, uid, state dir),
                                   see procident: pid files stay bare pids
An instance is alive when its pid exists, is not a zombie, is the very process recorded
(procident.verify: same start time, same user, same HOME; so a recycled pid, another HOME's
or another user's instance is never mistaken for ours), and its command line names the
component and the configuration.  Nothing that signals looks processes up by name.
"""

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import psutil

from sarra import locks, paths
from sarra.ops import procident, proctitle, secretargs
from sarra.ops.logs import component_name, log_file, program_name

logger = logging.getLogger("sarra.instances")

COMMANDS_PACKAGE = "sarra.commands"

# ---------------------------------------------------------------- files

def _state_dir(component: str, config: str) -> Path:
    return Path(paths.state_dir(component_name(component), config, create=False))


def pid_file(component: str, config: str, n: int) -> Path:
    return _state_dir(component, config) / f"{program_name(component)}_{config}_{int(n):02d}.pid"


def state_file(component: str, config: str) -> Path:
    return _state_dir(component, config) / f"{program_name(component)}_{config}.state"


def stats_file(component: str, config: str, n: int) -> Path:
    return _state_dir(component, config) / f"{program_name(component)}_{config}_{int(n):02d}.stats"


def read_stats(component: str, config: str, n: int) -> Optional[dict]:
    """The counters the instance wrote at its last heartbeat (None: none or unreadable)."""
    try:
        data = json.loads(stats_file(component, config, n).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_held: Dict[str, List[int]] = {}     # lock path -> [fd, depth] (re-entrant in a process)


@contextlib.contextmanager
def locked(component: str, config: str, blocking: bool = True) -> Iterator[bool]:
    """Hold the configuration's start/stop lock; yields False (not held) when blocking is
    false and another process has it.  Re-entrant within one process."""
    path = _state_dir(component, config) / f".{program_name(component)}_{config}.lock"
    key = str(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield True
        finally:
            _held[key][1] -= 1
        return
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        held = locks.acquire(fd, str(path), blocking=blocking)
    except BaseException:
        os.close(fd)
        raise
    if held is None:
        os.close(fd)
        yield False
        return
    _held[key] = [fd, 1]
    try:
        yield True
    finally:
        del _held[key]
        held.release()
        os.close(fd)


def _write(path: Path, text: str) -> None:
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    paths.atomic_write(str(path), text.encode("utf-8"), mode=0o600)


def _read_int(path: Path) -> Optional[int]:
    """Integer in a small state file; None when missing or unreadable (logged)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        logger.warning("%s: cannot read: %s", path, e.strerror or e)
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        logger.warning("%s: not a number: %r (ignored)", path, text[:40])
        return None


def pid_files(component: str, config: str) -> List[Tuple[int, Path]]:
    """(n, path) of every pid file of the configuration, sorted by n."""
    d = _state_dir(component, config)
    prefix = f"{program_name(component)}_{config}_"
    found = []
    try:
        entries = list(d.iterdir())
    except FileNotFoundError:
        return []
    for p in entries:
        name = p.name
        if not (name.startswith(prefix) and name.endswith(".pid")):
            continue
        num = name[len(prefix):-4]
        if num.isdigit():
            found.append((int(num), p))
    return sorted(found)


def read_pid(component: str, config: str, n: int) -> Optional[int]:
    return _read_int(pid_file(component, config, n))


def write_pid(component: str, config: str, n: int, pid: Optional[int] = None,
              remove_at_exit: bool = True) -> Path:
    """Record the pid of instance n (the calling process by default).

    With remove_at_exit (and pid being ours) the file is removed at normal interpreter exit,
    provided it still holds our pid.
    """
    pid = os.getpid() if pid is None else int(pid)
    path = pid_file(component, config, n)
    _write(path, f"{pid}\n")
    procident.record(path, pid)
    if remove_at_exit and pid == os.getpid():
        atexit.register(_remove_if_ours, path, pid)
    return path


def _remove_if_ours(path: Path, pid: int) -> None:
    if _read_int(path) == pid:
        with contextlib.suppress(OSError):
            path.unlink()
        procident.forget(path)


def _unlink_pid(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    procident.forget(path)


def remove_pid(component: str, config: str, n: int) -> None:
    _unlink_pid(pid_file(component, config, n))


def options_file(component: str, config: str) -> Path:
    return _state_dir(component, config) / f"{program_name(component)}_{config}.options"


def read_expected(component: str, config: str) -> int:
    """Instance count recorded by the last start (0 when none)."""
    return _read_int(state_file(component, config)) or 0


def read_options(component: str, config: str) -> List[str]:
    """The instances' extra arguments recorded by the last start ([] when none)."""
    path = options_file(component, config)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        logger.warning("%s: unreadable, ignored: %s", path, e)
        return []
    return [str(a) for a in data] if isinstance(data, list) else []


def write_expected(component: str, config: str, count: int, argv_extra: Sequence[str] = ()
                   ) -> None:
    """Record the instance count and the instances' extra arguments (none: removed)."""
    _write(state_file(component, config), f"{int(count)}\n")
    if argv_extra:
        _write(options_file(component, config), json.dumps(list(argv_extra)) + "\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            options_file(component, config).unlink()


# ---------------------------------------------------------------- processes

def _names_config(arg: str, config: str) -> bool:
    """Is this argument the configuration: 'name', or a path/file 'name.conf'?"""
    if arg == config:
        return True
    base = os.path.basename(arg)
    for ext in (".conf.off", ".conf"):
        if base.endswith(ext):
            return base[: -len(ext)] == config
    return "/" in arg and base == config


def cmdline_matches(cmdline: Sequence[str], component: str, config: str,
                    n: Optional[int] = None) -> bool:
    """Does this command line belong to an instance of component/config (number n)?

    The configuration must be one of the arguments (not an ``--option=value`` one: start
    passes options so) and the component name must appear in another one (program path or
    module name); with n, a ``--no`` value must equal n.
    """
    comp = component_name(component)
    titled = proctitle.parse(cmdline)        # `sr_subscribe obs 01 ...` (proctitle)
    if titled is not None and titled[:2] == (paths.canonical_component(comp), config) \
            and (n is None or titled[2] == int(n)):
        return True
    args = list(cmdline)
    is_conf = [i > 0 and not a.startswith("-") and _names_config(a, config)
               for i, a in enumerate(args)]
    if not any(is_conf):
        return False
    names = [a for i, (a, c) in enumerate(zip(args, is_conf))
             if not c and not (i == 0 and os.path.basename(a).startswith("python"))]
    if not any(comp in a for a in names):
        return False
    if n is not None and "--no" in args:
        i = args.index("--no")
        if i + 1 < len(args) and args[i + 1].isdigit() and int(args[i + 1]) != int(n):
            return False
    return True


def process_of(pid: Optional[int], component: str, config: str,
               n: Optional[int] = None) -> Optional[psutil.Process]:
    """The live process with that pid if it is an instance of component/config, verified
    against the pid file of instance n (of any instance when n is None) of the caller's
    own state (procident.verify)."""
    if not pid or pid <= 0:
        return None
    if n is not None:
        candidates = [pid_file(component, config, n)]
    else:
        candidates = [path for _, path in pid_files(component, config)]
    p = None
    for path in candidates:
        if _read_int(path) == pid:
            p = procident.verify(pid, path)
            if p is not None:
                break
    if p is None:
        return None
    try:
        if not cmdline_matches(p.cmdline(), component, config, n):
            return None
        return p
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


@dataclasses.dataclass
class Status:
    running: List[Tuple[int, int]]   # (instance number, pid)
    expected: int                    # count recorded by the last start
    stale: List[int]                 # instance numbers whose pid file names no live instance

    @property
    def state(self) -> str:
        if not self.running:
            return "stopped"
        if len(self.running) >= self.expected:
            return "running"
        return "partial"


def status(component: str, config: str) -> Status:
    running, stale = [], []
    for n, path in pid_files(component, config):
        pid = _read_int(path)
        if process_of(pid, component, config, n) is not None:
            running.append((n, pid))
        else:
            stale.append(n)
    return Status(running=running, expected=read_expected(component, config), stale=stale)


def state(component: str, config: str) -> str:
    """'running' (all expected instances alive), 'partial' or 'stopped'."""
    return status(component, config).state


def clean_stale(component: str, config: str) -> List[int]:
    """Remove the pid files naming no live instance; return their instance numbers."""
    removed = []
    for n, path in pid_files(component, config):
        pid = _read_int(path)
        if process_of(pid, component, config, n) is None:
            try:
                path.unlink()
                procident.forget(path)
                removed.append(n)
            except FileNotFoundError:
                pass
            except OSError as e:
                logger.warning("%s: cannot remove stale pid file: %s", path, e.strerror or e)
    return removed


# ---------------------------------------------------------------- start

class Started(list):
    """pids of the instances started and still alive after the start-up wait.

    ``failed`` lists (n, exit code) of the instances that exited during the wait;
    ``why`` {n: the log line that explains it} for those whose log has one.
    """

    def __init__(self, pids=(), failed=(), why=None):
        super().__init__(pids)
        self.failed: List[Tuple[int, int]] = list(failed)
        self.why: Dict[int, str] = dict(why or {})


def _module_path(component: str, module: Optional[str]) -> str:
    name = module or component_name(component)
    return name if "." in name else f"{COMMANDS_PACKAGE}.{name}"


def instance_command(component: str, config: str, n: int, argv_extra: Iterable[str] = (),
                     module: Optional[str] = None) -> List[str]:
    """The instance's full command (with any password: see secretargs, spawn)."""
    return [sys.executable, "-m", _module_path(component, module), *argv_extra,
            "--no", str(int(n)), "foreground", config]


def _spawn(cmd: List[str], log_path: Path, env=None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                start_new_session=True, close_fds=True, env=env)
    finally:
        os.close(fd)


def spawn(component: str, config: str, n: int, argv_extra: Optional[Iterable[str]] = None,
          module: Optional[str] = None, env=None) -> subprocess.Popen:
    """Launch instance n detached and record its pid file; the caller holds ``locked()``.
    argv_extra None: the recorded ones (see start).  OSError: the program cannot be run."""
    if argv_extra is None:
        argv_extra = read_options(component, config)
    cmd = instance_command(component, config, n, argv_extra, module)
    # passwords go to the child's environment, never to its command line (ps); the
    # child is marked as this HOME's (procident.ENV_MARK)
    cmd, env = secretargs.split(cmd, procident.child_env(env))
    proc = _spawn(cmd, log_file(component, config, n), env)
    write_pid(component, config, n, proc.pid, remove_at_exit=False)
    return proc


def start(component: str, config: str, instances: int,
          argv_extra: Optional[Iterable[str]] = None, module: Optional[str] = None,
          wait: float = 1.0, env=None) -> Started:
    """Start instances 1..instances that are not running; return the new pids.

    Each child is ``python -m sarra.commands.<module> [argv_extra] --no N foreground
    <config>``, detached (own session, stdin /dev/null, stdout/stderr appended to its log
    file); argv_extra (None: the recorded ones) is recorded with the count, for instances
    started later (supervisor, sanity).  Its pid file is written at once by us (the child
    rewrites it); we then watch the children up to ``wait`` seconds (capped at 2) and
    report any that exit.
    """
    instances = int(instances)
    prog = program_name(component)
    children, offsets = [], {}
    with locked(component, config):
        argv_extra = read_options(component, config) if argv_extra is None else list(argv_extra)
        write_expected(component, config, instances, argv_extra)
        clean_stale(component, config)
        for n in range(1, instances + 1):
            if process_of(read_pid(component, config, n), component, config, n) is not None:
                continue
            lpath = log_file(component, config, n)
            offsets[n] = _size(lpath)
            try:
                proc = spawn(component, config, n, argv_extra, module, env)
            except OSError as e:
                logger.error("%s %s: cannot start instance %02d (%s): %s", prog, config, n,
                             sys.executable, e.strerror or e)
                children.append((n, None, lpath))
                continue
            children.append((n, proc, lpath))
    return _watch_start(component, config, children, min(max(wait, 0.0), 2.0), offsets)


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _watch_start(component, config, children, wait, offsets=None) -> Started:
    prog = program_name(component)
    deadline = time.monotonic() + wait
    live = [c for c in children if c[1] is not None]
    failed = [(n, -1) for n, proc, _ in children if proc is None]
    exited = {}
    while True:
        for n, proc, lpath in live:
            if n not in exited and proc.poll() is not None:
                exited[n] = proc.returncode
        if len(exited) == len(live) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    pids, reasons = [], {}
    for n, proc, lpath in live:
        if n in exited:
            code = exited[n]
            failed.append((n, code))
            if read_pid(component, config, n) == proc.pid:
                remove_pid(component, config, n)
            from sarra.ops.health import failure_line     # (health imports this module)
            why = failure_line(lpath, (offsets or {}).get(n, 0))
            if why:
                reasons[n] = why
            logger.error("%s %s: instance %02d exited at once with code %s%s, see %s",
                         prog, config, n, code, f": {why}" if why else "", lpath)
        else:
            pids.append(proc.pid)
    return Started(pids, failed, reasons)


# ---------------------------------------------------------------- stop

def _descendants(procs: Iterable[psutil.Process]) -> List[psutil.Process]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            out.extend(p.children(recursive=True))
    return out


def _signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.send_signal(sig)


def _is_gone(p: psutil.Process) -> bool:
    try:
        p.wait(timeout=0)        # reaps it when it is our child
        return True
    except psutil.TimeoutExpired:
        pass
    except psutil.NoSuchProcess:
        return True
    try:
        return p.status() == psutil.STATUS_ZOMBIE   # dead, waiting for its parent
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return True


def _wait_gone(procs: List[psutil.Process], timeout: float) -> List[psutil.Process]:
    """Wait until the processes are dead (zombies count as dead); return the survivors."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while True:
        alive = [p for p in alive if not _is_gone(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def stop(component: str, config: str, timeout: float = 5.0) -> int:
    """SIGTERM every instance of the configuration, SIGKILL what is left after ``timeout``
    seconds, then their leftover child processes; remove the pid files.  The recorded
    instance count becomes 0 first, so that no supervisor or `sanity` restarts them.

    Returns the number of instances that were running.
    """
    return stop_many([(component, config)], timeout)[(component, config)]


def stop_many(configs: Iterable[Tuple[str, str]], timeout: float = 5.0
              ) -> Dict[Tuple[str, str], int]:
    """stop() for several configurations at once (all signalled together, one wait).

    Returns {(component, config): number of instances that were running}.
    """
    configs = list(dict.fromkeys((c, n) for c, n in configs))
    with contextlib.ExitStack() as locks:
        for comp, name in sorted(configs):
            locks.enter_context(locked(comp, name))
        targets: Dict[int, Tuple[psutil.Process, Tuple[str, str]]] = {}
        for comp, name in configs:
            if state_file(comp, name).exists():
                write_expected(comp, name, 0)
            for n, path in pid_files(comp, name):
                p = process_of(_read_int(path), comp, name, n)
                if p is not None:
                    targets[p.pid] = (p, (comp, name))
        for p, key in _find_lost(configs):   # instances whose pid file went missing
            targets.setdefault(p.pid, (p, key))
        _terminate([p for p, _ in targets.values()], timeout,
                   lambda p: "%s %s" % (program_name(targets[p.pid][1][0]),
                                        targets[p.pid][1][1]))
        for comp, name in configs:
            for n, path in pid_files(comp, name):
                _unlink_pid(path)
    counts = {key: 0 for key in configs}
    for _, key in targets.values():
        counts[key] += 1
    return counts


def stop_instance(component: str, config: str, n: int, timeout: float = 5.0) -> bool:
    """Stop instance n only (e.g. a hung one), keeping the recorded instance count;
    return whether it was running."""
    with locked(component, config):
        p = process_of(read_pid(component, config, n), component, config, n)
        if p is not None:
            _terminate([p], timeout, lambda p: f"{program_name(component)} {config}")
        remove_pid(component, config, n)
    return p is not None


def _find_lost(configs: List[Tuple[str, str]]) -> List[Tuple[psutil.Process, Tuple[str, str]]]:
    """Instances of these configurations that this HOME started (procident.marked: our
    uid, our cache directory in their environment) and whose pid file is gone; never a
    look-up by name alone."""
    found = []
    for p in procident.marked():
        try:
            cmd = p.cmdline()
            if "--no" not in cmd and proctitle.parse(cmd) is None:
                continue
            for comp, name in configs:
                if cmdline_matches(cmd, comp, name):
                    found.append((p, (comp, name)))
                    break
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _terminate(procs: List[psutil.Process], timeout: float, who: Callable) -> None:
    """SIGTERM (and SIGCONT, for a stopped process), wait up to timeout, SIGKILL the rest,
    then end their leftover children."""
    if not procs:
        return
    children = _descendants(procs)
    _signal_all(procs, signal.SIGTERM)
    _signal_all(procs, signal.SIGCONT)
    alive = _wait_gone(procs, max(0.0, timeout))
    if alive:
        children.extend(_descendants(alive))
        for p in alive:
            logger.warning("%s: pid %d still running after %.1fs, killing it", who(p),
                           p.pid, timeout)
        _signal_all(alive, signal.SIGKILL)
        _wait_gone(alive, 2.0)
    _stop_orphans(children, min(1.0, max(0.1, timeout)))


def _stop_orphans(children: List[psutil.Process], grace: float) -> None:
    """Children of the instances still alive: SIGTERM, up to grace seconds, SIGKILL."""
    alive = [c for c in children if not _is_gone(c)]
    if not alive:
        return
    _signal_all(alive, signal.SIGTERM)
    alive = _wait_gone(alive, grace)
    _signal_all(alive, signal.SIGKILL)
    _wait_gone(alive, 1.0)


# ---------------------------------------------------------------- inside the instance

#: process groups of commands the instance started in sessions of their own (run_command):
#: a second stop signal ends them before the instance exits at once
_CHILD_GROUPS = set()


def track_child_group(pgid: int) -> None:
    _CHILD_GROUPS.add(pgid)


def untrack_child_group(pgid: int) -> None:
    _CHILD_GROUPS.discard(pgid)


def _kill_child_groups() -> None:
    for pgid in list(_CHILD_GROUPS):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


def instance_signals(on_stop: Optional[Callable[[], None]] = None,
                     on_reload: Optional[Callable[[], None]] = None) -> threading.Event:
    """Install the instance's signal handlers (main thread only); return the stop event.

    SIGTERM/SIGINT: set the event and call on_stop once; a second one kills the tracked
    child process groups and exits at once (exit status 128 + signal).  SIGHUP: call
    on_reload when given.
    """
    stopping = threading.Event()

    def _stop(signum, frame):
        if stopping.is_set():
            _kill_child_groups()
            os._exit(128 + signum)
        stopping.set()
        if on_stop is not None:
            try:
                on_stop()
            except Exception as e:  # a failing hook must not prevent the stop
                logger.error("on_stop failed: %s", e)

    def _reload(signum, frame):
        try:
            on_reload()
        except Exception as e:
            logger.error("reload failed: %s", e)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if on_reload is not None and hasattr(signal, "SIGHUP"):      # no SIGHUP on Windows
        signal.signal(signal.SIGHUP, _reload)
    return stopping
