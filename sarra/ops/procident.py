"""Is the process a pid file names really the one that wrote it?  (issue 16, item 6)

Every action that signals or removes a process acts only on what the caller's own state
records, and only after checking that the live process is the same one:

* same user (real uid of the caller: root stopping its pump never touches another user's);
* same process: its start time equals the one recorded when the pid file was written
  (boot-relative clock ticks from /proc where available, immune to clock steps; else
  psutil ``create_time()`` within a second).  Without a record (pid files of an older
  version), the process must have started before the pid file was written: a pid reused
  afterwards is refused;
* same state: the recorded state directory must be the pid file's, and the sarra cache
  directory the spawner put in the instance's environment (ENV_MARK), when it can be
  read, must hold the pid file, so that another HOME's instance of a configuration of the
  same name is never ours.

Records: ``<name>.pid`` stays a bare pid (v2 and scripts read it so); ``<name>.ident``
next to it holds the identity as JSON.  Nothing here scans the process table by name.
"""

import contextlib
import json
import os
from pathlib import Path
from typing import Optional

import psutil

from sarra import paths

#: environment variable giving an instance the sarra cache directory (HOME) it belongs to
ENV_MARK = "SARRA_INSTANCE_CACHE_DIR"
START_SLACK = 1.0       # seconds: create_time tolerance (no /proc), mtime comparison


def ident_path(pid_path: Path) -> Path:
    return Path(pid_path).with_suffix(".ident")


def _real(directory) -> str:
    return os.path.realpath(str(directory))


def start_ticks(pid: int) -> Optional[int]:
    """Start time of the process in clock ticks since boot (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:   # the name (field 2) may hold spaces and ')': fields after its last ')'
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _uid(p: psutil.Process):
    """The real uid of p (its user name where there are no uids: Windows)."""
    return p.uids().real if hasattr(p, "uids") else p.username()


def _my_uid():
    return os.getuid() if hasattr(os, "getuid") else _uid(psutil.Process())


def identity(pid: int, state_dir) -> Optional[dict]:
    """The record of live process pid (None: it does not exist)."""
    try:
        p = psutil.Process(int(pid))
        return {"pid": p.pid, "create_time": p.create_time(), "ticks": start_ticks(p.pid),
                "uid": _uid(p), "state_dir": _real(state_dir)}
    except psutil.Error:
        return None


def record(pid_path: Path, pid: int) -> None:
    """Write the identity of process pid next to its pid file (nothing when it is gone)."""
    pid_path = Path(pid_path)
    ident = identity(pid, pid_path.parent)
    if ident is None:
        forget(pid_path)
        return
    paths.atomic_write(str(ident_path(pid_path)), json.dumps(ident) + "\n", mode=0o600)


def forget(pid_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        ident_path(pid_path).unlink()


def read_record(pid_path: Path) -> Optional[dict]:
    try:
        data = json.loads(ident_path(pid_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _env_mark(p: psutil.Process) -> Optional[str]:
    """The cache directory in the process's environment (None: absent or unreadable)."""
    try:
        return p.environ().get(ENV_MARK)
    except (psutil.Error, OSError):
        return None


def same_process(p: psutil.Process, rec: dict) -> bool:
    """Does the live process p match the recorded identity (start time, uid)?"""
    try:
        if int(rec.get("pid") or 0) != p.pid:
            return False
        if rec.get("uid") is not None and rec["uid"] != _uid(p):
            return False
        ticks = rec.get("ticks")
        now_ticks = start_ticks(p.pid) if ticks is not None else None
        if ticks is not None and now_ticks is not None:
            return int(ticks) == now_ticks
        return abs(float(rec["create_time"]) - p.create_time()) <= START_SLACK
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def verify(pid: Optional[int], pid_path: Path) -> Optional[psutil.Process]:
    """The live process pid if it is the one the pid file pid_path recorded (see the module
    docstring); None for a stale, reused, foreign or vanished one."""
    if not pid or pid <= 0:
        return None
    pid_path = Path(pid_path)
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        if _uid(p) != _my_uid():
            return None
        mine = _real(pid_path.parent)
        rec = read_record(pid_path)
        if rec is not None and int(rec.get("pid") or 0) == p.pid:
            if rec.get("state_dir") not in (None, mine) or not same_process(p, rec):
                return None
        else:     # no record of this pid: it must have started before the file was written
            if p.create_time() > pid_path.stat().st_mtime + START_SLACK:
                return None
        if not _under_mark(p, mine):
            return None
        return p
    except (psutil.Error, OSError, ValueError):
        return None


def _under_mark(p: psutil.Process, directory: str) -> bool:
    """Is directory inside the cache directory marked in p's environment (or no mark)?"""
    mark = _env_mark(p)
    if mark is None:
        return True
    mark = _real(mark)
    return directory == mark or directory.startswith(mark.rstrip(os.sep) + os.sep)


def marked() -> list:
    """The caller's own processes marked (ENV_MARK) with the caller's own cache directory:
    instances this HOME started, also those whose pid file was lost.  Only processes of
    the caller's uid are looked at; a process is never chosen by its name (the caller
    still checks the command line names the configuration)."""
    mine = _real(paths.cache_dir())
    found = []
    me, uid = os.getpid(), _my_uid()
    for p in psutil.process_iter(["pid", "status"]):
        try:
            info = p.info
            if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if _uid(p) != uid:
                continue
            mark = _env_mark(p)
            if mark is not None and _real(mark) == mine:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def child_env(env=None) -> dict:
    """The environment of a child instance: env (None: ours) marked with our cache dir."""
    out = dict(os.environ if env is None else env)
    out[ENV_MARK] = _real(paths.cache_dir())
    return out
