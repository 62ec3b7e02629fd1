"""Prerequisites a machine may lack (a tool, a library, root, user namespaces), the broker
excepted: the test command starts the broker, so a broker that cannot be reached fails.

Raising :class:`Missing` anywhere in a test or its fixtures (tests/integration/servers.py
does, for sshd, openssl, useradd, pyftpdlib) turns the test into a skip that says what is
missing (tests/conftest.py, pytest_runtest_makereport); it stays a RuntimeError for the
scripts that use the same helpers outside pytest.
"""

import importlib.util
import os
import shutil
import subprocess


class Missing(RuntimeError):
    """This machine lacks something a test needs; the text says what and how to get it."""


def need_tool(name, package):
    """The path of the program name, or Missing naming the Debian package that has it."""
    path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
    if not path:
        raise Missing("%s not found: install %s" % (name, package))
    return path


def need_module(name, package):
    """Missing when the Python module name cannot be imported."""
    if importlib.util.find_spec(name) is None:
        raise Missing("Python module %s not found: pip install %s" % (name, package))


def need_root(why):
    if os.geteuid() != 0:
        raise Missing("%s needs root" % why)


def works(argv, timeout=10):
    """Whether argv runs and exits 0 here (e.g. unshare -Ur true)."""
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def need_working(argv, what):
    """Missing unless argv runs and exits 0: what says which feature it probes."""
    if not works(argv):
        raise Missing("%s not available here (%s fails)" % (what, " ".join(argv)))
