"""What a daemon imports before it has anything to do (issue 20: every daemon under 40 MB
RSS). The heavy libraries are imported where they are used, on first use: paramiko and
cryptography when an sftp URL is first fetched, requests (and urllib3) when the HTTP
driver hands a proxy or a redirect to it, or sr_police calls the management API.

Measured on the test VM (VmRSS after the import of sarra.commands.subscribe): 35.9 MB when
sarra.flow.readers brought in sr_police's audit and with it requests; 28.8 MB without.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: never imported by a daemon that has not used them
HEAVY = ("requests", "urllib3", "charset_normalizer", "idna", "paramiko", "cryptography",
         "nacl", "bcrypt", "ftplib", "sarra.transfer.sftp", "sarra.transfer.ftp",
         "sarra.broker.admin", "sarra.ops.audit")

#: the daemons that download, copy or send
DAEMONS = ("subscribe", "sarra", "shovel", "sender", "winnow", "report")


def _modules(code):
    r = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                        "print(json.dumps(sorted(sys.modules)))"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.splitlines()[-1]))


@pytest.mark.parametrize("component", DAEMONS)
def test_no_heavy_module_at_start(component):
    loaded = _modules(f"import sarra.commands.{component}")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_http_driver_leaves_requests_out():
    """Fetching an http(s) URL takes the project's own HTTP client: requests stays out
    until a proxy or a redirect needs it."""
    loaded = _modules("import sarra.commands.subscribe\n"
                      "from sarra import transfer\n"
                      "transfer.driver_class('http'); transfer.driver_class('file')\n"
                      "transfer.for_url('http://example.invalid/a', {})")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_sftp_loads_paramiko_on_first_use():
    """The positive control: the sftp driver (and paramiko with it) comes in when an sftp
    URL is first used, so the checks above do see it when it is there."""
    pytest.importorskip("paramiko")
    loaded = _modules("import sarra.commands.subscribe\n"
                      "from sarra import transfer\n"
                      "transfer.driver_class('sftp')")
    assert {"paramiko", "sarra.transfer.sftp"} <= loaded


def test_readers_leave_the_web_door_out():
    """flow.readers (every posting flow) imports the web door's .htaccess text where it
    writes it (htaccess on): sr_police's audit stays out of the daemons."""
    assert "sarra.ops.webdoor" not in _modules("import sarra.flow.readers")
