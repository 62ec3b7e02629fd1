"""Packaging for sarra, a Python re-implementation of the Sarracenia v2 commands."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    path = os.path.join(HERE, "sarra", "__init__.py")
    with open(path, encoding="utf-8") as f:
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', f.read(), re.M)
    if not match:
        raise RuntimeError("%s: no __version__ line" % path)
    return match.group(1)


def read_readme():
    path = os.path.join(HERE, "README.rst")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


def man_pages():
    """Install man/*.1, *.7, *.8 into share/man/manN (only the sections that exist)."""
    sections = {}
    mandir = os.path.join(HERE, "man")
    if os.path.isdir(mandir):
        for name in sorted(os.listdir(mandir)):
            suffix = os.path.splitext(name)[1].lstrip(".")
            if suffix in ("1", "7", "8"):
                sections.setdefault(suffix, []).append(os.path.join("man", name))
    return [("share/man/man" + s, files) for s, files in sorted(sections.items())]


# console script name -> module in sarra/commands/ (each module has main())
COMMANDS = {
    "sr_post": "post",
    "sr_watch": "watch",
    "sr_poll": "poll",
    "sr_subscribe": "subscribe",
    "sr_sarra": "sarra",
    "sr_sender": "sender",
    "sr_shovel": "shovel",
    "sr_winnow": "winnow",
    "sr_log": "report",  # 2016 name of sr_report
    "sr_report": "report",
    "sr_police": "audit",  # 2016 name of sr_audit
    "sr_audit": "audit",
    "sr_readers": "readers",  # a source's readers of its data on every pump (issue 22)
    "sr": "sr",  # umbrella: start/stop/status ... over every configuration
}

setup(
    name="sarra",
    version=read_version(),
    description="Sarracenia v2 compatible data pump (v02 messages over AMQP 0-9-1)",
    long_description=read_readme(),
    long_description_content_type="text/x-rst",
    license="GPL-2.0-or-later",
    python_requires=">=3.9",
    packages=find_packages(exclude=["tests", "tests.*"]),
    include_package_data=True,
    # the example configurations `sr_<component> list` shows and `add` copies
    package_data={"sarra": ["examples/*/*.conf"]},
    install_requires=[
        # sarra uses private internals of these two (tests/unit/test_private_hooks.py lists
        # them): one major version at a time, moved after that test passes on the next
        "amqp>=5,<6",
        "paramiko>=5,<6",
        "requests",
        "appdirs",
        "psutil",
        # watchdog is the well-kept inotify library used by sr_watch
        "watchdog",
        # setproctitle: the command's name in ps (sr_subscribe obs 01); optional at run time
        "setproctitle",
    ],
    extras_require={
        # pyOpenSSL: pyftpdlib's TLS handler (the FTPS test server)
        # prometheus_client: its text parser reads the metrics files in the tests
        # wheel: `make dist` builds the wheel with the .venv's setuptools (no network)
        # pytest-xdist: `make test` runs the tests in 3 processes (most of them wait on
        # servers and the broker, not on the 2 CPUs)
        "test": ["pytest", "pytest-xdist", "hypothesis", "pyftpdlib", "pyOpenSSL",
                 "prometheus_client", "wheel"],
    },
    entry_points={
        "console_scripts": [
            "%s = sarra.commands.%s:main" % (name, module)
            for name, module in COMMANDS.items()
        ],
    },
    data_files=man_pages(),
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Networking",
    ],
)
