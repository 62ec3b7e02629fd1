#!/bin/bash
# make test-packaging (the .deb half): install a built sarra_*.deb on a clean Debian 12
# system as a user would (`apt install ./sarra_*.deb` in a fresh debootstrap --variant=minbase
# chroot of bookworm), check what it installed where, then run a post/subscribe round trip
# from the installed commands, as the `sarra` user, against the host's broker on loopback.
# The chroot's base (and apt's downloads and lists) are cached under $SARRA_DEB_CACHE
# (/var/cache/sarra-packaging) so re-runs are fast; every run starts from a fresh copy.
# usage: test-deb.sh SARRA_DEB [BROKER_URL]       exit 77: cannot run here (not root...)
set -eu
DEB=$(realpath "$1")
BROKER=${2:-amqp://guest:guest@127.0.0.1:5672/}
SUITE=bookworm
MIRROR=${SARRA_DEB_MIRROR:-http://deb.debian.org/debian}
CACHE=${SARRA_DEB_CACHE:-/var/cache/sarra-packaging}
HERE=$(cd "$(dirname "$0")/.." && pwd)
skip() { echo "test-deb: cannot run: $*" >&2; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root (chroot, mount)"
command -v debootstrap >/dev/null || skip "debootstrap is not installed (apt-get install debootstrap)"

mkdir -p "$CACHE/archives/partial" "$CACHE/lists/partial"
base="$CACHE/$SUITE-minbase.tar"
if [ ! -s "$base" ]; then
    echo "test-deb: debootstrap --variant=minbase $SUITE (once; cached in $base)"
    tmp=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
    if ! debootstrap --variant=minbase "$SUITE" "$tmp/root" "$MIRROR" > "$tmp.log" 2>&1; then
        tail -5 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"
        skip "debootstrap of $SUITE from $MIRROR failed (no network?)"
    fi
    tar -C "$tmp/root" -cf "$base.part" . && mv "$base.part" "$base"
    rm -rf "$tmp" "$tmp.log"
fi

root=$(mktemp -d /tmp/sarra-chroot.XXXXXX)
mounts=()
cleanup() {
    for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT
tar -C "$root" -xf "$base"
mount -t proc proc "$root/proc"; mounts+=("$root/proc")
mount --bind "$CACHE/archives" "$root/var/cache/apt/archives"; mounts+=("$root/var/cache/apt/archives")
mount --bind "$CACHE/lists" "$root/var/lib/apt/lists"; mounts+=("$root/var/lib/apt/lists")
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$DEB" "$root/tmp/"
cp "$HERE/tests/packaging/roundtrip.sh" "$HERE/tests/packaging/check-installed.sh" \
   "$HERE/tests/packaging/debian_hooks.py" "$root/tmp/"
mkdir -p "$root/tmp/hooks/tests/unit"
cp "$HERE/tests/unit/test_private_hooks.py" "$root/tmp/hooks/tests/unit/"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }

echo "test-deb: apt install ./$(basename "$DEB") in a fresh $SUITE chroot"
in_root apt-get -q update > "$root/apt.log" 2>&1 || {
    tail -5 "$root/apt.log" >&2; skip "apt-get update in the chroot failed (no network to $MIRROR?)"; }
# policy-rc.d: no service starts inside the chroot (the unit is disabled anyway)
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
(cd "$root/tmp" && in_root sh -c "cd /tmp && apt install -y -q ./$(basename "$DEB")") \
    >> "$root/apt.log" 2>&1 || { tail -30 "$root/apt.log" >&2; echo "test-deb: apt install failed" >&2; exit 1; }

# the user guide must be installed once the tree has one
guide=""; [ ! -e "$HERE/doc/user-guide.rst" ] || guide=1
in_root SARRA_EXPECT_USER_GUIDE=$guide sh /tmp/check-installed.sh
# Debian's python3-amqp and python3-paramiko still have what sarra uses of them
in_root python3 /tmp/debian_hooks.py /tmp/hooks/tests/unit/test_private_hooks.py
in_root runuser -u sarra -- sh /tmp/roundtrip.sh "$BROKER"
echo "test-deb: OK"
