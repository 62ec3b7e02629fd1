"""make deb, then the .deb installed with `apt install ./sarra_*.deb` in a fresh Debian 12
(bookworm, debootstrap minbase) chroot: scripts/test-deb.sh checks what it installed where
(tests/packaging/check-installed.sh) and runs a post/subscribe round trip from /usr/bin as
the `sarra` user against the test broker on loopback."""

import glob
import os
import subprocess

from tests.packaging.conftest import REPO, run_script

import sarra


def test_deb_builds_lintian_clean_installs_and_round_trips(tmp_path, broker_url):
    run_script([os.path.join(REPO, "scripts", "build-deb.sh"), str(tmp_path)], timeout=300)
    debs = glob.glob(str(tmp_path / "sarra_*_all.deb"))
    assert [os.path.basename(d) for d in debs] == ["sarra_%s_all.deb" % sarra.__version__]
    listing = subprocess.run(["dpkg-deb", "-c", debs[0]], capture_output=True, text=True,
                             check=True).stdout
    # the unit ships, the changelog and the docs are where Debian puts them
    for path in ("lib/systemd/system/sarra.service", "usr/share/doc/sarra/admin-guide.rst.gz",
                 "usr/share/man/man7/sr_config.7.gz",
                 "usr/share/bash-completion/completions/sr_subscribe"):
        assert "./" + path in listing, path
    r = run_script([os.path.join(REPO, "scripts", "test-deb.sh"), debs[0], broker_url],
                   timeout=600)
    assert "check-installed: OK" in r.stdout
    assert "debian_hooks: OK" in r.stdout       # Debian's python3-amqp/-paramiko suffice
    assert "roundtrip: OK" in r.stdout and "(/usr/bin/sr_post)" in r.stdout
