"""The per-user supervisor behind `sr start`: keeps the instances of every configuration up.

One supervisor per user: it holds an flock on ~/.cache/sarra/sr_supervisor.lock for its
whole life and writes its pid to ~/.cache/sarra/sr_supervisor.pid (removed when it exits
normally, so a pid file without a live supervisor means it died).  Every TICK seconds it
reads the instance count recorded for each configuration (instances.state_file: written by
`start`, set to 0 by `stop`) and makes the process table match it:

* an instance that should run and does not is started, as a child of the supervisor;
* a death is logged (exit code or signal when the instance was our child) and the instance
  is started again after a backoff: 1 s, doubling up to 5 min, back to 1 s once it had
  stayed up STABLE_AFTER seconds;
* an instance whose log, stats file and start are all older than `sanity_log_dead` (hung)
  gets SIGTERM (and SIGCONT), SIGKILL TERM_GRACE seconds later, and is then restarted;
* instances started by ``sr_<component> start`` are adopted (their exit status is unknown:
  they are not our children); instances numbered above the count are stopped.

Starting and stopping happen under instances.locked(), so `sr stop` and `sr_<comp> stop`
(which set the count to 0 before killing) never race with a restart.

SIGHUP: look now.  SIGTERM/SIGINT: stop every instance (counts set to 0) and exit 0.
Log: ~/.cache/sarra/log/sr_supervisor.log.  ~/.cache/sarra/sr_supervisor.json holds, per
instance, the restarts, last exit and next start, for `sr status`.
"""

import dataclasses
import errno
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import psutil

from sarra import locks, paths
from sarra.config import parser as config
from sarra.ops import instances, logs, procident

NAME = "sr_supervisor"
#: the command that runs it (``python -m sarra.commands.supervisor``); MODULES: the ones a
#: running supervisor may have been started as (by this version or an earlier one)
COMMAND_MODULE = "sarra.commands.supervisor"
MODULES = (COMMAND_MODULE, "sarra.ops.supervisor", "sarra.supervisor")
# Components whose configurations run as daemons (sr_post runs once).
RUNNABLE = tuple(c for c in paths.COMPONENTS if c != "post")
TICK = 0.5
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 300.0, 60.0
TERM_GRACE = 5.0
STOP_TIMEOUT = 10.0
MISSING_CONFIG_RETRY = 60.0

Key = Tuple[str, str, int]


# ---------------------------------------------------------------- files and probes

def pid_file() -> Path:
    return Path(paths.host_cache_dir()) / f"{NAME}.pid"


def lock_file() -> Path:
    return Path(paths.host_cache_dir()) / f"{NAME}.lock"


def summary_file() -> Path:
    return Path(paths.host_cache_dir()) / f"{NAME}.json"


def log_file() -> Path:
    return logs.named_log_file(NAME)


def has_command(component: str) -> bool:
    """Is there a sarra.commands.<component> module to run instances with?"""
    try:
        return importlib.util.find_spec(f"sarra.commands.{component}") is not None
    except (ImportError, ValueError):
        return False


def is_running() -> bool:
    """Does a supervisor hold the lock?  (A probe: it takes the free lock for an instant.)"""
    path = lock_file()
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        held = locks.acquire(fd, str(path), blocking=False)
        if held is None:
            return True
        held.release()
    finally:
        os.close(fd)
    return False


def read_pid() -> Optional[int]:
    try:
        return int(pid_file().read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def verified_pid() -> Optional[psutil.Process]:
    """The running supervisor named by our pid file, verified as the very process that
    wrote it (procident: same user, same start time, this HOME), else None."""
    pid = read_pid()
    p = procident.verify(pid, pid_file()) if pid else None
    try:
        cmd = " ".join(p.cmdline()) if p is not None else ""
        if p is not None and (any(m in cmd for m in MODULES) or cmd.split()[:1] == [NAME]):
            return p
    except psutil.Error:
        pass
    return None


def state() -> str:
    """'running'; 'dead' (its pid file is there but it is not: it did not exit normally);
    or 'stopped'."""
    if is_running():
        return "running"
    return "dead" if pid_file().exists() else "stopped"


def read_summary() -> dict:
    """What the running supervisor knows of each instance, keyed 'component/config/NN'."""
    try:
        data = json.loads(summary_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("instances", {}) if isinstance(data, dict) else {}


def launch(timeout: float = 10.0, env=None) -> int:
    """Start a detached supervisor; return its pid once it holds the lock.

    Raises RuntimeError (one line, naming the log) when it does not come up.
    """
    log = log_file()
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        proc = subprocess.Popen([sys.executable, "-m", COMMAND_MODULE],
                                stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                start_new_session=True, close_fds=True, env=env)
    finally:
        os.close(fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = proc.poll()
        if is_running():
            pid = read_pid()
            if pid == proc.pid or (rc is not None and pid):
                return pid
        elif rc is not None:
            raise RuntimeError(f"supervisor exited at once with code {rc}; see {log}")
        time.sleep(0.05)
    raise RuntimeError(f"supervisor (pid {proc.pid}) not ready after {timeout:g}s; see {log}")


def ensure_running(env=None) -> Tuple[int, bool]:
    """(pid, started now): launch the supervisor unless one runs, else wake it up."""
    if is_running():
        pid = read_pid()
        if pid:
            wake(pid)
            return pid, False
    return launch(env=env), True


def wake(pid: Optional[int] = None) -> None:
    """Make the supervisor look at the configurations now (SIGHUP)."""
    p = verified_pid() if is_running() else None
    if p is not None and (pid is None or p.pid == pid):
        try:
            p.send_signal(signal.SIGHUP)
        except psutil.Error:
            pass


def terminate(timeout: float = STOP_TIMEOUT + 20.0) -> Optional[int]:
    """Ask the supervisor to stop everything and exit (SIGTERM); SIGKILL it after timeout.
    Returns its pid (None when none was running).  A dead one's pid file is removed."""
    pid = read_pid()
    if not is_running():
        _remove_pid_file(None)
        return None
    if not pid:
        return None
    proc = verified_pid()
    if proc is None:
        logging.getLogger("sarra.supervisor").error(
            "%s names pid %d, not this HOME's supervisor: not signalled", pid_file(), pid)
        return None
    try:
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running():
            break
        time.sleep(0.05)
    else:
        try:
            proc.send_signal(signal.SIGKILL)     # psutil: never a reused pid
        except psutil.NoSuchProcess:
            pass
    try:
        proc.wait(5)       # gone, or a zombie of an exited parent
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass
    _remove_pid_file(pid)
    return pid


def _remove_pid_file(pid: Optional[int]) -> None:
    if pid is None or read_pid() == pid:
        try:
            pid_file().unlink()
        except FileNotFoundError:
            pass
        procident.forget(pid_file())


# ---------------------------------------------------------------- pure helpers

def next_delay(previous: float, uptime: float, first: float = BACKOFF_FIRST,
               maximum: float = BACKOFF_MAX, stable: float = STABLE_AFTER) -> float:
    """Wait before restarting an instance that died after ``uptime`` seconds, given the
    wait used before its previous start (0: none)."""
    if previous <= 0 or uptime >= stable:
        return first
    return min(max(previous * 2, first), maximum)


def describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "is gone (exit status unknown: not started by the supervisor)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


def last_sign_of_life(component: str, config_name: str, n: int, started: float) -> float:
    """Latest of: instance start, log write, stats write (heartbeat)."""
    t = started
    for p in (instances.log_file(component, config_name, n), 
              instances.stats_file(component, config_name, n)):
        try:
            t = max(t, os.stat(p).st_mtime)
        except OSError:
            pass
    return t


def config_path(component: str, name: str) -> Path:
    return Path(paths.component_config_dir(component)) / f"{name}.conf"


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


# ---------------------------------------------------------------- the supervisor

@dataclasses.dataclass
class Slot:
    """What the supervisor knows of one instance (component, config, number)."""
    proc: Optional[subprocess.Popen] = None   # our child
    pid: Optional[int] = None                 # our child or an adopted instance
    started: float = 0.0
    delay: float = 0.0
    next_start: float = 0.0
    restarts: int = 0
    last_exit: Optional[str] = None
    died: Optional[float] = None
    term_at: Optional[float] = None           # when we sent SIGTERM to it as hung
    warned: bool = False                      # config missing: said once

    def summary(self) -> dict:
        return {"pid": self.pid, "started": self.started or None, "restarts": self.restarts,
                "last_exit": self.last_exit, "died": self.died,
                "next_start": self.next_start if self.pid is None else None,
                "hung": self.term_at is not None, "delay": self.delay}


class Supervisor:
    def __init__(self, components=RUNNABLE, modules: Optional[Dict[str, str]] = None,
                 tick: float = TICK, logger: Optional[logging.Logger] = None, env=None):
        self.components = tuple(components)
        self.modules = dict(modules or {})
        self.tick_s = tick
        self.log = logger or logging.getLogger("sarra.supervisor")
        self.env = env
        self.slots: Dict[Key, Slot] = {}
        self._sld: Dict[Tuple[str, str], Tuple[float, Optional[float]]] = {}
        self.stopping = False
        self.wakeup = threading.Event()
        self.dirty = True
        self._lock_fd: Optional[int] = None
        self._lock: Optional[locks.Lock] = None

    # ------------------------------------------------------------ what should run
    def expected_counts(self) -> Dict[Tuple[str, str], int]:
        out = {}
        for comp in self.components:
            d = Path(paths.state_dir(comp, None, create=False))
            try:
                names = sorted(p.name for p in d.iterdir() if p.is_dir())
            except OSError:
                continue
            for name in names:
                if instances.state_file(comp, name).exists():
                    count = instances.read_expected(comp, name)
                    if count > 0:
                        out[(comp, name)] = count
        return out

    def sanity_log_dead(self, component: str, name: str) -> Optional[float]:
        """The config's sanity_log_dead (re-read when the file changes); None: no check."""
        try:
            mtime = config_path(component, name).stat().st_mtime
        except OSError:
            return None
        cached = self._sld.get((component, name))
        if cached and cached[0] == mtime:
            return cached[1]
        try:
            cfg = config.load(component, name, set_state_host=False)
            sld = float(cfg.sanity_log_dead or 0) or None
        except Exception as e:   # a broken config must not stop the supervision of others
            self.log.error("%s (hang detection off for %s/%s)", e, component, name)
            sld = None
        self._sld[(component, name)] = (mtime, sld)
        return sld

    # ------------------------------------------------------------ one look
    def tick(self, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        wanted = self.expected_counts()
        for key in list(self.slots):
            comp, name, n = key
            if n > wanted.get((comp, name), 0):
                self._unwanted(key, self.slots[key], (comp, name) in wanted)
        for (comp, name), count in wanted.items():
            for n, _ in instances.pid_files(comp, name):
                if n > count and (comp, name, n) not in self.slots:
                    self._unwanted((comp, name, n), Slot(), True)
            for n in range(1, count + 1):
                self._check((comp, name, n), now)

    def _who(self, key: Key) -> str:
        return f"{instances.program_name(key[0])}/{key[1]}/{key[2]:02d}"

    def _alive(self, key: Key, slot: Slot) -> Tuple[bool, Optional[int]]:
        """(alive, exit code when our child ended)."""
        if slot.proc is not None:
            rc = slot.proc.poll()
            return rc is None, rc
        return instances.process_of(slot.pid, *key) is not None, None

    def _unwanted(self, key: Key, slot: Slot, config_wanted: bool) -> None:
        """An instance beyond the recorded count: a stopped config is the stopper's job
        (we only reap); a surplus instance of a running config is stopped here."""
        if config_wanted:
            comp, name, n = key
            if instances.process_of(instances.read_pid(comp, name, n), *key) is not None:
                self.log.info("%s is not configured any more: stopping it", self._who(key))
                instances.stop_instance(comp, name, n, TERM_GRACE)
        alive, _ = self._alive(key, slot) if slot.pid else (False, None)
        if not (alive and slot.proc is not None):
            self.slots.pop(key, None)
            self.dirty = True

    def _check(self, key: Key, now: float) -> None:
        slot = self.slots.setdefault(key, Slot())
        if slot.pid is not None:
            alive, rc = self._alive(key, slot)
            if alive:
                self._check_hung(key, slot, now)
                return
            self._died(key, slot, rc, now)
        comp, name, n = key
        p = instances.process_of(instances.read_pid(comp, name, n), *key)
        if p is not None:
            self._adopt(key, slot, p)
        elif now >= slot.next_start:
            self._start(key, slot, now)

    def _adopt(self, key: Key, slot: Slot, p: psutil.Process) -> None:
        slot.proc, slot.pid = None, p.pid
        try:
            slot.started = p.create_time()
        except psutil.Error:
            slot.started = time.time()
        slot.term_at = None
        self.dirty = True
        self.log.info("%s (pid %d) watched", self._who(key), p.pid)

    def _died(self, key: Key, slot: Slot, rc: Optional[int], now: float) -> None:
        uptime = max(0.0, now - slot.started)
        what = describe_exit(rc)
        if slot.term_at is not None:
            what += " after being stopped as hung"
        comp, name, n = key
        self.dirty = True
        slot.proc, pid, slot.pid, slot.term_at = None, slot.pid, None, None
        if instances.read_expected(comp, name) < n or \
                self._restarted_by_someone(key, slot, now):
            self.log.info("%s (pid %d) %s: stopped by a stop or restart", self._who(key),
                          pid, what)
            slot.delay, slot.next_start = 0.0, now
            return
        slot.delay = next_delay(slot.delay, uptime)
        slot.next_start = now + slot.delay
        slot.restarts += 1
        slot.last_exit, slot.died = what, now
        self.log.warning("%s (pid %d) %s after %s up; restart in %gs", self._who(key), pid,
                         what, _age(uptime), slot.delay)

    @staticmethod
    def _restarted_by_someone(key: Key, slot: Slot, now: float) -> bool:
        """Was the count rewritten (a stop then a start: `sr restart`) after this instance
        started and shortly before it ended?  Then its end was asked for."""
        try:
            changed = instances.state_file(key[0], key[1]).stat().st_mtime
        except OSError:
            return False
        return changed > slot.started + 1.0 and now - changed <= STOP_TIMEOUT + 5

    def _start(self, key: Key, slot: Slot, now: float) -> None:
        comp, name, n = key
        with instances.locked(comp, name, blocking=False) as got:
            if not got:                # being started or stopped by someone else
                return
            if instances.read_expected(comp, name) < n:
                return
            p = instances.process_of(instances.read_pid(comp, name, n), *key)
            if p is not None:
                self._adopt(key, slot, p)
                return
            if not config_path(comp, name).is_file():
                if not slot.warned:
                    self.log.error("%s: no enabled configuration %s: not started",
                                   self._who(key), config_path(comp, name))
                    slot.warned = True
                slot.next_start = now + MISSING_CONFIG_RETRY
                return
            slot.warned = False
            try:
                proc = instances.spawn(comp, name, n, module=self.modules.get(comp),
                                       env=self.env)
            except OSError as e:
                slot.delay = next_delay(slot.delay, 0.0)
                slot.next_start = now + slot.delay
                self.log.error("%s: cannot start %s: %s", self._who(key), sys.executable,
                               e.strerror or e)
                return
        slot.proc, slot.pid, slot.started = proc, proc.pid, now
        self.dirty = True
        self.log.info("%s started (pid %d)%s", self._who(key), proc.pid,
                      f", restart {slot.restarts}" if slot.restarts else "")

    def _check_hung(self, key: Key, slot: Slot, now: float) -> None:
        if slot.term_at is not None:
            if now - slot.term_at > TERM_GRACE:
                self.log.warning("%s (pid %d) still there %gs after SIGTERM: SIGKILL",
                                 self._who(key), slot.pid, TERM_GRACE)
                _kill(slot.pid, signal.SIGKILL)
                slot.term_at = now          # again after another grace if need be
            return
        sld = self.sanity_log_dead(key[0], key[1])
        if not sld:
            return
        idle = now - last_sign_of_life(*key, slot.started)
        if idle > sld:
            self.log.warning("%s (pid %d) hung: no log nor heartbeat for %s "
                             "(sanity_log_dead %gs): stopping it", self._who(key), slot.pid,
                             _age(idle), sld)
            _kill(slot.pid, signal.SIGTERM)
            _kill(slot.pid, signal.SIGCONT)
            slot.term_at = now
            self.dirty = True

    # ------------------------------------------------------------ summary for `sr status`
    def write_summary(self) -> None:
        data = {"pid": os.getpid(), "time": time.time(),
                "instances": {f"{c}/{name}/{n:02d}": s.summary()
                              for (c, name, n), s in sorted(self.slots.items())}}
        try:
            paths.atomic_write(str(summary_file()), json.dumps(data, indent=1))
            self.dirty = False
        except OSError as e:
            self.log.warning("cannot write %s: %s", summary_file(), e.strerror or e)

    # ------------------------------------------------------------ life
    def acquire(self, wait: float = 2.0) -> bool:
        """Take the supervisor lock (retrying up to wait s: `sr` probes it briefly)."""
        path = lock_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._lock = locks.acquire(fd, str(path), wait=wait)
        except BaseException:
            os.close(fd)
            raise
        if self._lock is None:
            os.close(fd)
            return False
        self._lock_fd = fd
        paths.atomic_write(str(pid_file()), f"{os.getpid()}\n")
        procident.record(pid_file(), os.getpid())
        return True

    def release(self) -> None:
        _remove_pid_file(os.getpid())
        try:
            summary_file().unlink()
        except FileNotFoundError:
            pass
        if self._lock_fd is not None:
            self._lock.release()
            os.close(self._lock_fd)
            self._lock_fd = None

    def request_stop(self, *_args) -> None:
        self.stopping = True
        self.wakeup.set()

    def run(self) -> int:
        if not self.acquire():
            self.log.info("another supervisor (pid %s) is running; exiting", read_pid())
            return 0
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        if hasattr(signal, "SIGHUP"):                          # not on Windows
            signal.signal(signal.SIGHUP, lambda *a: self.wakeup.set())
        try:
            os.chdir(os.path.expanduser("~"))
        except OSError:
            pass
        self.log.info("supervisor started (pid %d)", os.getpid())
        try:
            while not self.stopping:
                try:
                    self.tick()
                    if self.dirty:
                        self.write_summary()
                except Exception:       # one bad look must not end the supervision
                    self.log.exception("supervision pass failed")
                self.wakeup.wait(self.tick_s)
                self.wakeup.clear()
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Stop every instance (counts set to 0, so nothing restarts them) and let go."""
        configs = set(self.expected_counts()) | {(c, name) for c, name, _ in self.slots}
        try:
            counts = instances.stop_many(sorted(configs), STOP_TIMEOUT)
            self.log.info("stopped %d instance(s) of %d configuration(s)",
                          sum(counts.values()), len(configs))
        except Exception:
            self.log.exception("stopping the instances failed")
        for slot in self.slots.values():
            if slot.proc is not None:
                try:
                    slot.proc.wait(1)
                except (subprocess.TimeoutExpired, OSError):
                    pass
        self.log.info("supervisor exits")
        self.release()


def _kill(pid: Optional[int], sig: int) -> None:
    if pid:
        try:
            os.kill(pid, sig)
        except OSError as e:
            if e.errno != errno.ESRCH:
                logging.getLogger("sarra.supervisor").warning("cannot signal pid %d: %s",
                                                              pid, e.strerror)
