"""The version comes from one place (sarra/__init__.py) and the packaging agrees with it and
with setup.py's commands: debian/changelog, debian/control, the man pages, the lists the
packaging tests check (tests/packaging/), and the Debian policy bits of issue 25."""

import os
import re
import subprocess
import sys

import sarra
from tests.support.setupinfo import setup_commands

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(*parts):
    with open(os.path.join(REPO, *parts), encoding="utf-8") as f:
        return f.read()


def test_changelog_top_entry_is_the_package_version():
    first = _read("debian", "changelog").splitlines()[0]
    m = re.match(r"sarra \(([^)]+)\) ", first)
    assert m, first
    assert m.group(1).split("-")[0] == sarra.__version__, (
        "debian/changelog is at %s, sarra/__init__.py at %s: add a changelog entry"
        % (m.group(1), sarra.__version__))


def test_setup_py_reads_the_version_from_the_package():
    assert "version=read_version()" in _read("setup.py")
    r = subprocess.run([sys.executable, "setup.py", "-q", "--version"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == sarra.__version__


def test_every_command_is_in_control_and_has_a_man_page_and_is_checked():
    control = _read("debian", "control")
    description = control.split("Description:", 1)[1]
    words = set(re.findall(r"\bsr\w*", description))
    man = set(os.listdir(os.path.join(REPO, "man")))
    checked = _read("tests", "packaging", "check-installed.sh")
    for c in setup_commands():
        assert c in words, "debian/control's description does not name %s" % c
        assert c + ".1" in man or c + ".8" in man, "man/: no page for %s" % c
        assert re.search(r"\b%s\b" % c, checked), "check-installed.sh does not check %s" % c


def test_debian_policy_bits():
    rules = _read("debian", "rules")
    # the unit ships disabled until configured
    assert re.search(r"dh_installsystemd --no-enable --no-start", rules)
    postinst = _read("debian", "sarra.postinst")
    assert re.search(r"adduser .*--system", postinst) and "/var/lib/sarra" in postinst
    assert "adduser" in control_depends()
    # examples, docs and completion in Debian's places
    assert "usr/share/doc/sarra/examples" in _read("debian", "sarra.links")
    assert "doc/admin-guide.rst" in rules and "doc/user-guide.rst" in rules
    assert "bash-completion/completions" in rules


def control_depends():
    m = re.search(r"^Depends:(.*?)^\S", _read("debian", "control"), re.S | re.M)
    return m.group(1)


def test_runtime_requirements_have_their_debian_package():
    """Every install_requires of setup.py is a Depends (or Recommends) of the .deb."""
    src = _read("setup.py")
    reqs = re.search(r"install_requires=\[(.*?)\]", src, re.S).group(1)
    names = re.findall(r'^\s*"([A-Za-z0-9_.-]+)', reqs, re.M)
    control = _read("debian", "control")
    for n in names:
        assert "python3-%s" % n.lower() in control, "debian/control lacks python3-%s" % n


def test_make_test_leaves_packaging_to_make_test_packaging_which_ci_runs():
    makefile = _read("Makefile")
    assert re.search(r"^test:.*\n\t.*--ignore=tests/packaging", makefile, re.M)
    assert re.search(r"^test-packaging:.*\n\t.*tests/packaging", makefile, re.M)
    assert re.search(r"^deb:", makefile, re.M) and re.search(r"^dist:", makefile, re.M)
    ci = _read(".ci", "run")
    assert "make test\n" in ci and "make test-packaging" in ci
