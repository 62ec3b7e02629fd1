"""Helpers shared by the benchmarks in bench/: timing, medians, peak RSS, result lines.

Not a benchmark itself (``make bench`` runs it and it says so).  Each benchmark:

* runs the measured thing N times and keeps the median (``median``),
* measures the peak RSS (VmHWM) of a child process (``run_child``; children that can
  print it themselves at exit use ``HWM_SNIPPET``),
* prints one ``name: ours ... vs limit/reference ... -> ok/BELOW`` line per target
  (``verdict``).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


def broker_url() -> str:
    """The broker the benchmarks use (same variable as the tests)."""
    return os.environ.get("SARRA_TEST_BROKER", DEFAULT_BROKER)


def median(values):
    return statistics.median(values)


def child_env(extra=None):
    """Environment for a child running sarra code from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if extra:
        env.update(extra)
    return env


class ChildResult:
    def __init__(self, returncode, wall, peak_rss, stdout, stderr):
        self.returncode = returncode
        self.wall = wall                  # seconds, spawn to exit
        self.peak_rss = peak_rss          # bytes: VmHWM of the child (polled), or None
        self.stdout = stdout
        self.stderr = stderr

    def json(self):
        """The last stdout line parsed as JSON (children report their timings that way)."""
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        if not lines:
            raise RuntimeError("child printed nothing; stderr:\n" + self.stderr)
        return json.loads(lines[-1])


def vm_hwm(pid="self"):
    """Peak resident set size (VmHWM of /proc/<pid>/status) in bytes, or None."""
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# A child that prints its own peak RSS as the last step (exact, unlike polling).
HWM_SNIPPET = ("def _hwm():\n"
               "    for _l in open('/proc/self/status'):\n"
               "        if _l.startswith('VmHWM:'):\n"
               "            return int(_l.split()[1]) * 1024\n")


def run_child(argv, env=None, cwd=None, timeout=600) -> ChildResult:
    """Run argv; return its exit code, wall time and peak RSS.

    The peak RSS is the child's VmHWM polled every 2 ms once it has exec'd (the
    high-water mark only grows, so the last sample is the peak unless it grew in its
    last 2 ms).  os.wait4's ru_maxrss is NOT used: Linux carries the parent's high-water
    mark over the fork+exec, so it reports the benchmark's own size.
    Output goes to temporary files (no pipe to drain while waiting).
    """
    want = "\0".join(str(a) for a in argv).encode()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env or child_env(), cwd=cwd)
        deadline = time.monotonic() + timeout
        peak, execd = None, False
        while True:
            if not execd:
                try:
                    with open("/proc/%d/cmdline" % proc.pid, "rb") as f:
                        execd = f.read().rstrip(b"\0") == want
                except OSError:
                    pass
            if execd:
                hwm = vm_hwm(proc.pid)
                if hwm is not None:     # None once it has exited (zombie)
                    peak = hwm
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildResult(proc.returncode, wall, peak,
                           out.read().decode("utf-8", "replace"),
                           err.read().decode("utf-8", "replace"))


def mb(nbytes) -> str:
    return "%.1f MB" % (nbytes / 1e6)


def verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def ratio_line(name, ours, reference, unit, target_ratio):
    """'name: ours X unit vs reference Y unit = Z% (target >= T%) ok'"""
    r = ours / reference if reference else 0.0
    print("%-44s ours %10.1f %s vs %10.1f %s = %5.1f%% (target >= %d%%) %s" % (
        name + ":", ours, unit, reference, unit, 100 * r, round(100 * target_ratio),
        verdict(r >= target_ratio)))
    return r


def limit_line(name, ours_bytes, limit_bytes):
    """'name: ours X MB vs limit Y MB ok'"""
    if ours_bytes is None:
        print("%-44s not measured (no /proc)" % (name + ":"))
        return False
    print("%-44s ours %10s vs limit %s %s" % (name + ":", mb(ours_bytes), mb(limit_bytes),
                                            verdict(ours_bytes < limit_bytes)))
    return ours_bytes < limit_bytes


if __name__ == "__main__":
    print("bench/common.py: helpers shared by the other benchmarks; nothing to measure here")
