"""Waiting on conditions and processes, for the tests that start and stop daemons
(tests/integration/test_sr.py, test_hostile_stop.py)."""

import time

import psutil


def wait_for(cond, timeout=10.0, step=0.1):
    """Whether cond() holds within timeout seconds (polled every step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def alive(pid):
    """Whether process pid runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
