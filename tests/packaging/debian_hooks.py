"""Run on the system where the .deb is installed: the private internals of py-amqp,
http.client and paramiko that sarra relies on (tests/unit/test_private_hooks.py's HOOKS) are
there in DEBIAN's python3-amqp and python3-paramiko, whose versions differ from the PyPI
majors setup.py pins.  usage: python3 debian_hooks.py test_private_hooks.py  (no pytest)"""

import importlib.util
import sys
import types

# the hooks module imports pytest for its decorators only
stub = types.ModuleType("pytest")
stub.mark = types.SimpleNamespace(parametrize=lambda *a, **k: (lambda f: f))
stub.fail = lambda msg, pytrace=True: (_ for _ in ()).throw(AssertionError(msg))
sys.modules["pytest"] = stub

# what sarra does without (the reason), where Debian 12's version lacks it
TOLERATED = {
    "paramiko SFTPFile.prefetch(max_concurrent_requests=...) is gone":
        "sarra/transfer/sftp.py _prefetch: sequential reads (paramiko 2.12 cannot bound them)",
}

spec = importlib.util.spec_from_file_location("hooks", sys.argv[1])
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)
bad = 0
for what, user, check in hooks.HOOKS:
    try:
        problem = check()
    except Exception as e:      # noqa: BLE001 - a changed internal may fail any way
        problem = "%s: %s" % (type(e).__name__, e)
    problems = problem if isinstance(problem, (list, tuple)) else [problem] if problem else []
    for p in problems:
        if str(p) in TOLERATED:
            print("debian_hooks: %s: %s; %s" % (what, p, TOLERATED[str(p)]))
        else:
            bad += 1
            print("debian_hooks: %s, used by %s: %s" % (what, user, p), file=sys.stderr)
if bad:
    sys.exit(1)
print("debian_hooks: OK, the %d private hooks sarra uses are in Debian's libraries"
      % len(hooks.HOOKS))
