"""A stand-in for an sr_<component> instance, used by test_instances.py.

    python -m tests.integration.dummy_instance [--ignore-term] [--child] [--crash N]
           --no N foreground <config>

Writes its pid file (component 'dummy'), prints 'dummy <config> <n> ready', loops until SIGTERM/SIGINT, exits 0 and removes
the pid file.  --ignore-term: ignore SIGTERM (to test the SIGKILL escalation).  --child:
start a grandchild that ignores SIGTERM (to test that stop leaves no orphan).  --crash N:
exit with code N at once.
"""

import signal
import subprocess
import sys
import time

from sarra.ops import instances

COMPONENT = "dummy"


def main(argv):
    ignore = "--ignore-term" in argv
    child = "--child" in argv
    if "--crash" in argv:
        sys.exit(int(argv[argv.index("--crash") + 1]))
    n = int(argv[argv.index("--no") + 1])
    config = argv[-1]
    instances.write_pid(COMPONENT, config, n)
    stop = instances.instance_signals(on_stop=lambda: None)
    if ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if child:
        subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, "
                          "signal.SIG_IGN); time.sleep(30)"])
    print(f"dummy {config} {n} ready", flush=True)  # stdout is the instance log
    deadline = time.monotonic() + 60  # never outlive a broken test run for long
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
