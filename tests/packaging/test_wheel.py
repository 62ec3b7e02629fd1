"""make dist (an sdist, and the wheel built from it), then the wheel installed with pip in a
fresh virtualenv: sr_post --help, every command's --version, the example configurations,
and a post/subscribe round trip (tests/packaging/roundtrip.sh) from the venv's commands."""

import glob
import os
import subprocess
import sys
import sysconfig

from tests.packaging.conftest import REPO, run_script
from tests.support.setupinfo import setup_commands

import sarra


def _base_python():
    """The interpreter the .venv was made from (not the .venv itself: a fresh venv)."""
    return getattr(sys, "_base_executable", None) or sysconfig.get_config_var("BINDIR") + "/python3"


def test_wheel_installs_in_fresh_venv_and_round_trips(tmp_path, broker_url):
    out = tmp_path / "dist"
    run_script([os.path.join(REPO, "scripts", "build-dist.sh"), str(out)], timeout=300,
               env=dict(os.environ, PYTHON=sys.executable))
    v = sarra.__version__
    assert os.path.exists(out / ("sarra-%s.tar.gz" % v))
    wheels = glob.glob(str(out / ("sarra-%s-*.whl" % v)))
    assert len(wheels) == 1

    venv = tmp_path / "venv"
    subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", wheels[0]],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    bindir = venv / "bin"
    env = dict(os.environ, PATH=str(bindir) + os.pathsep + os.environ["PATH"],
               HOME=str(tmp_path / "home"))
    env.pop("PYTHONPATH", None)
    os.makedirs(env["HOME"])

    r = subprocess.run([str(bindir / "sr_post"), "--help"], capture_output=True, text=True,
                       env=env, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout.startswith("usage: sr_post"), r.stdout + r.stderr
    for c in setup_commands():
        r = subprocess.run([str(bindir / c), "--version"], capture_output=True, text=True,
                           env=env, timeout=60, cwd=str(tmp_path))
        assert (r.returncode, r.stdout) == (0, "%s %s\n" % (c, v)), (c, r.stdout, r.stderr)
    # the installed package, not this tree, and its example configurations came along
    r = subprocess.run([str(bindir / "python"), "-c",
                        "import sarra, os; print(os.path.dirname(sarra.__file__))"],
                       capture_output=True, text=True, env=env, timeout=60, cwd=str(tmp_path),
                       check=True)
    pkg = r.stdout.strip()
    assert pkg.startswith(str(venv)), pkg
    assert glob.glob(os.path.join(pkg, "examples", "subscribe", "*.conf"))
    assert os.path.exists(venv / "share" / "man" / "man1" / "sr_subscribe.1")

    r = run_script(["sh", os.path.join(REPO, "tests", "packaging", "roundtrip.sh"), broker_url],
                   timeout=120, env=env)
    assert "roundtrip: OK" in r.stdout and ("(%s)" % (bindir / "sr_post")) in r.stdout
