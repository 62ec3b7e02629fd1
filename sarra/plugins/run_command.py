"""run_command (on_file): run a command on each file written.

Options:
  run_command_cmd <command line>   split like a shell (shlex), no shell is involved; the
                                   file's path is appended as the last argument.
  run_command_timeout <seconds>    (default 60) the command is killed after that.

A missing option, a command that cannot be started, a timeout or a non-zero exit status is
logged as an error and returns False (the file is not re-posted).  On a timeout the
command's whole process group is killed.  Its standard output is discarded; the last line of
its standard error is logged when it fails.
"""

import os
import shlex
import signal
import subprocess

from sarra.plugin import get_option, plugin_logger
from sarra.plugins.file_log import local_path

OPTIONS = ("run_command_cmd", "run_command_timeout")


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
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # the command and anything it started
        except OSError:
            pass
        proc.communicate()
        log.error("run_command: %s timed out after %gs for %s", args[0], timeout, path)
        return False
    if proc.returncode != 0:
        err = stderr.decode("utf-8", "replace").strip().splitlines()
        log.error("run_command: %s exited with status %d for %s%s", args[0], proc.returncode,
                  path, f": {err[-1]}" if err else "")
        return False
    log.debug("run_command: %s ok for %s", args[0], path)
    return True
