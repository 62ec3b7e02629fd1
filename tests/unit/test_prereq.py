"""What a machine lacks (tests.support.prereq.Missing) skips a test and says what; a broker
test carries the `broker` marker (tests/conftest.py). Run in a child pytest on a small file."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SAMPLE = '''
import pytest
from tests.support.prereq import Missing, need_tool

@pytest.fixture
def server():
    need_tool("no-such-tool-sarra", "sarra-imaginary-package")

def test_fixture_lacks_a_tool(server):
    pass

def test_body_lacks_root():
    raise Missing("creating user x needs root")

def test_other_errors_still_fail():
    raise RuntimeError("a real failure")

def test_uses_the_broker(broker_url):
    pass

def test_needs_nothing():
    pass
'''


def _pytest(tmp_path, *args):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
           "SARRA_TEST_BROKER": "amqp://guest:guest@127.0.0.1:1/"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "tests.conftest", "-rs", "-q", *args, "test_sample.py"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_missing_prerequisite_skips_and_says_which(tmp_path):
    r = _pytest(tmp_path, "-m", "not broker")
    out = r.stdout
    assert "2 skipped" in out and "1 failed" in out and "1 passed" in out, out
    assert "missing prerequisite: no-such-tool-sarra not found: install " \
           "sarra-imaginary-package" in out, out
    assert "missing prerequisite: creating user x needs root" in out, out
    assert "a real failure" in out


def test_broker_tests_carry_the_broker_marker(tmp_path):
    r = _pytest(tmp_path, "--co", "-m", "broker")
    assert "test_uses_the_broker" in r.stdout and "1/5 tests collected" in r.stdout, r.stdout
