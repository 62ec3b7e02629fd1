#!/bin/bash
# Prepare this machine for sarra: system packages, the .venv virtualenv with
# sarra installed in editable mode (plus test tools), and a running RabbitMQ.
# Run as root on Debian 12 / Ubuntu. Idempotent: steps already done are skipped.
set -eu

cd "$(dirname "$0")/.."
REPO=$(pwd)

log() { echo "setup-host: $*"; }

# --- system packages --------------------------------------------------------
# apache2: the web door of private data (tests/integration/test_private_data.py)
PACKAGES="rabbitmq-server openssh-server openssl curl groff-base python3-venv python3-pip apache2"
# iproute2: the vip tests put an address on lo and take it away (ip addr)
PACKAGES="$PACKAGES iproute2"
# make deb / make test-packaging: the Debian build tools, lintian, and debootstrap (the clean
# Debian 12 chroot the .deb is installed in)
PACKAGES="$PACKAGES debhelper dh-python python3-all python3-setuptools lintian debootstrap"
missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        log "missing packages:$missing (run this script as root)" >&2
        exit 1
    fi
    log "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null
fi

# sshd (used by the SFTP tests) needs its privilege separation directory.
if [ "$(id -u)" = 0 ] && [ ! -d /run/sshd ]; then
    mkdir -p /run/sshd && chmod 0755 /run/sshd
fi

# --- virtualenv -------------------------------------------------------------
VENV="$REPO/.venv"
STAMP="$VENV/.sarra-setup"
want=$(cat setup.py sarra/__init__.py | sha256sum | cut -d' ' -f1)

venv_ok() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c 'import sarra, amqp, paramiko, requests, appdirs, psutil, setproctitle, watchdog, pytest, xdist, hypothesis, pyftpdlib, OpenSSL' 2>/dev/null
}

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    log "removing broken virtualenv $VENV"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv .venv with $(command -v python3)"
    python3 -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ] || ! venv_ok; then
    log "installing sarra and test tools into .venv"
    # pip honours PIP_FIND_LINKS, PIP_INDEX_URL etc. from the environment.
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    echo "$want" > "$STAMP"
fi
venv_ok || { log "virtualenv $VENV is missing modules after install" >&2; exit 1; }

# --- broker -----------------------------------------------------------------
"$REPO/scripts/start-broker.sh"
