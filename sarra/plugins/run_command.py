"""run_command (on_file): run a command on each file written.

Options:
  run_command_cmd <command line>   split like a shell (shlex), no shell is involved; the
                                   file's path is appended as the last argument.
  run_command_timeout <seconds>    (default 60) the command is killed after that.

A missing option, a command that cannot be started, a timeout or a non-zero exit status is
logged as an error and returns False (the file is not re-posted).  On a timeout the
command's whole process group is killed.  Its standard output is discarded; the last line of
its standard error is logged when it fails.

Stop requests (SIGTERM, or Ctrl-C in a terminal): the command runs in a session of its own,
so a terminal's SIGINT never reaches it and the flow must end it.  The command is waited
for in short slices while the parent's ``stop_event`` (the flow's) is watched; once a stop
is requested the command has STOP_GRACE seconds left to finish by itself, then its process
group gets SIGTERM and, KILL_GRACE seconds later, SIGKILL; one line is logged and False is
returned, as for a timeout.  A second stop signal (the instance then exits at once) kills
the command's process group first.  The message is then finished like any other whose on_file
said False: the download succeeded, so it is acknowledged and the file stays in place, not
re-posted.  (Returning it to the queue would not run the command again: the restart finds
the same file with the same checksum and reports 304 without calling on_file.)
"""

import os
import shlex
import signal
import subprocess
import time

from sarra.ops import instances
from sarra.plugin import get_option, plugin_logger
from sarra.plugins.file_log import local_path

OPTIONS = ("run_command_cmd", "run_command_timeout")

#: how often the stop request is looked at while the command runs
SLICE = 0.2
#: once a stop is requested: time left to the command to finish by itself
STOP_GRACE = 0.5
#: after SIGTERM: time before SIGKILL
KILL_GRACE = 2.0


def _stop_event(parent):
    """The parent's stop event (Flow.stop_event), or None for parents without one."""
    try:
        ev = getattr(parent, "stop_event", None)
    except Exception:
        return None
    return ev if callable(getattr(ev, "is_set", None)) else None


def _killpg(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except OSError:
        pass


def _reap(proc, timeout):
    """Wait for the command's end and its stderr's EOF; a process that escaped the group
    and still holds stderr open must not keep us waiting."""
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if proc.stderr is not None:
            proc.stderr.close()
        proc.wait()


def _end(proc):
    """SIGTERM the command's process group, SIGKILL what is left after KILL_GRACE."""
    _killpg(proc, signal.SIGTERM)
    try:
        proc.communicate(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    _killpg(proc, signal.SIGKILL)      # the command, or children it left in its group
    _reap(proc, 1.0)


def on_file(parent):
    log = plugin_logger(parent, "run_command")
    cmd = get_option(parent, "run_command_cmd")
    if not cmd:
        log.error("run_command: option run_command_cmd is not set")
        return False
    try:
        timeout = float(get_option(parent, "run_command_timeout", 60))
    except (TypeError, ValueError):
        timeout = 60.0
    path = local_path(parent)
    try:
        args = shlex.split(str(cmd)) + [path]
    except ValueError as e:
        log.error("run_command: bad run_command_cmd %r: %s", cmd, e)
        return False
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        log.error("run_command: cannot run %s: %s", args[0], e.strerror or e)
        return False
    instances.track_child_group(proc.pid)    # a second stop signal kills it too
    try:
        return _wait(proc, args, path, timeout, _stop_event(parent), log)
    finally:
        instances.untrack_child_group(proc.pid)


def _wait(proc, args, path, timeout, stop, log):
    deadline = time.monotonic() + timeout
    stop_deadline = None
    while True:
        now = time.monotonic()
        if stop is not None and stop_deadline is None and stop.is_set():
            stop_deadline = now + STOP_GRACE
        end = deadline if stop_deadline is None else min(deadline, stop_deadline)
        try:
            _, stderr = proc.communicate(timeout=max(0.01, min(SLICE, end - now)))
            break
        except subprocess.TimeoutExpired:
            pass
        if stop_deadline is not None and time.monotonic() >= stop_deadline:
            _end(proc)
            log.warning("run_command: stopped, killed %s (pid %d) for %s", args[0], proc.pid,
                        path)
            return False
        if time.monotonic() >= deadline:
            _killpg(proc, signal.SIGKILL)   # the command and anything it started
            _reap(proc, 1.0)
            log.error("run_command: %s timed out after %gs for %s", args[0], timeout, path)
            return False
    if proc.returncode != 0:
        err = stderr.decode("utf-8", "replace").strip().splitlines()
        log.error("run_command: %s exited with status %d for %s%s", args[0], proc.returncode,
                  path, f": {err[-1]}" if err else "")
        return False
    log.debug("run_command: %s ok for %s", args[0], path)
    return True
