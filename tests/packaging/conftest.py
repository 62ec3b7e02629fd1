"""tests/packaging: the .deb and the wheel built from this tree and installed as a user
would (a fresh Debian 12 chroot, a fresh virtualenv). Minutes of their own: `make
test-packaging` runs them (and .ci/run after `make test`); `make test` leaves them out."""

import os
import subprocess

import pytest

from tests.support.prereq import Missing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CANNOT_RUN = 77     # scripts/build-deb.sh and test-deb.sh: this machine cannot do it


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "packaging: builds and installs the .deb or the wheel (make test-packaging)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/packaging/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.packaging)


def run_script(argv, timeout, env=None):
    """Run one of scripts/*.sh; its exit 77 is a skip (Missing) with the script's reason."""
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env=env, stdin=subprocess.DEVNULL)
    if r.returncode == CANNOT_RUN:
        raise Missing(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else argv[0])
    assert r.returncode == 0, "%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
        " ".join(argv), r.returncode, r.stdout[-4000:], r.stderr[-4000:])
    return r
