"""MetPX-Sarracenia v2, installed from the package index into a venv of the benchmarks' own.

For comparison only: nothing of sarra imports it.  The venv lives outside the work tree
(bench/ is scanned by the unit tests), in $SARRA_BENCH_V2VENV or /tmp/sarra-bench-v2venv,
and is made on first use with ``python3 -m venv`` and ``pip install 'metpx-sarracenia<3'``.

    v2 = v2env.find()        # a V2 or a one-line reason why v2 cannot be used
    if isinstance(v2, str): print("v2 skipped:", v2)
"""

import os
import subprocess
import sys

VENV = os.environ.get("SARRA_BENCH_V2VENV", "/tmp/sarra-bench-v2venv")
REQUIREMENT = "metpx-sarracenia<3"


class V2:
    def __init__(self, venv):
        self.venv = venv
        self.bin = os.path.join(venv, "bin")

    def cmd(self, program):
        """Path of a v2 entry point (sr_sarra, sr_subscribe, sr_shovel, sr_post, ...)."""
        return os.path.join(self.bin, program)

    def argv(self, program):
        """argv running a v2 entry point with the venv's python named (so that the process's
        command line is argv itself: common.run_child then finds it and reads its RSS)."""
        return [os.path.join(self.bin, "python"), self.cmd(program)]

    def version(self):
        r = subprocess.run([os.path.join(self.bin, "python"), "-c",
                            "from importlib.metadata import version; "
                            "print(version('metpx-sarracenia'))"],
                           capture_output=True, text=True)
        return r.stdout.strip() or "?"


def find(install=True, venv=VENV):
    """A V2 for the venv (made if missing and install is true), or a reason string."""
    if os.path.exists(os.path.join(venv, "bin", "sr_subscribe")):
        return V2(venv)
    if not install:
        return "no v2 venv at %s" % venv
    try:
        subprocess.run([sys.executable if not os.path.exists("/usr/bin/python3")
                        else "/usr/bin/python3", "-m", "venv", venv], check=True,
                       capture_output=True, timeout=120)
        r = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", REQUIREMENT,
                            "psutil"], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        return "cannot make a venv at %s: %s" % (venv, e)
    if r.returncode != 0 or not os.path.exists(os.path.join(venv, "bin", "sr_subscribe")):
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return "pip install %r failed in %s: %s" % (REQUIREMENT, venv, last)
    return V2(venv)


if __name__ == "__main__":
    v2 = find()
    print("v2 skipped: " + v2 if isinstance(v2, str) else
          "MetPX-Sarracenia %s in %s (helper of the other benchmarks)" % (v2.version(), v2.venv))
