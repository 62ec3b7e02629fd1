#!/bin/sh
# A post/subscribe round trip with the INSTALLED commands (whatever sr_post and sr_subscribe
# are first on PATH: /usr/bin in the .deb's chroot, the fresh venv's bin/ for the wheel):
# a loopback HTTP server serves two files, sr_post announces them on the broker, sr_subscribe
# (from its own config, in a throwaway HOME) downloads them, and they are compared.
# usage: roundtrip.sh BROKER_URL     (exit 0: both files arrived intact)
set -eu
BROKER=${1:-amqp://guest:guest@127.0.0.1:5672/}
PY=$(command -v python3)
top=$(mktemp -d /tmp/sarra-rt.XXXXXX)
export HOME="$top/home" XDG_CONFIG_HOME="$top/home/.config" XDG_CACHE_HOME="$top/home/.cache"
mkdir -p "$HOME/.config/sarra/subscribe" "$top/src/obs" "$top/dst"
tag=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
exchange="xs_guest_pkg$tag"
echo "temperature 21.5" > "$top/src/obs/report 1.txt"
head -c 200000 /dev/urandom > "$top/src/obs/big.bin"

port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$top/src" >/dev/null 2>&1 &
http=$!
sub=""
cleanup() {
    [ -z "$sub" ] || { kill "$sub" 2>/dev/null; wait "$sub" 2>/dev/null || true; }
    sr_subscribe cleanup rt >/dev/null 2>&1 || true
    kill "$http" 2>/dev/null || true
    "$PY" - "$BROKER" "$exchange" <<'PYEOF' >/dev/null 2>&1 || true
import sys, urllib.parse, amqp
u = urllib.parse.urlsplit(sys.argv[1])
with amqp.Connection("%s:%d" % (u.hostname, u.port or 5672), userid=u.username,
                     password=u.password) as c:
    c.channel().exchange_delete(sys.argv[2])
PYEOF
    rm -rf "$top"
}
trap cleanup EXIT

"$PY" - "$BROKER" "$exchange" <<'PYEOF'
import sys, urllib.parse, amqp
u = urllib.parse.urlsplit(sys.argv[1])
with amqp.Connection("%s:%d" % (u.hostname, u.port or 5672), userid=u.username,
                     password=u.password) as c:
    c.channel().exchange_declare(sys.argv[2], "topic", durable=True, auto_delete=False)
PYEOF

cat > "$HOME/.config/sarra/subscribe/rt.conf" <<CONF
broker $BROKER
exchange $exchange
expire 10m
directory $top/dst
mirror on
accept .*
report_back off
CONF
sr_subscribe declare rt
sr_subscribe setup rt
sr_subscribe foreground rt > "$top/sub.log" 2>&1 &
sub=$!
sr_post --post_broker "$BROKER" --post_exchange "$exchange" \
    --post_base_url "http://127.0.0.1:$port/" --post_base_dir "$top/src" "$top/src"

i=0
while [ $i -lt 300 ]; do
    if cmp -s "$top/src/obs/report 1.txt" "$top/dst/obs/report 1.txt" &&
       cmp -s "$top/src/obs/big.bin" "$top/dst/obs/big.bin"; then
        echo "roundtrip: OK, sr_subscribe downloaded what sr_post announced ($(command -v sr_post))"
        exit 0
    fi
    sleep 0.1
    i=$((i + 1))
done
echo "roundtrip: FAILED, files missing or different after 30 s; sr_subscribe log:" >&2
cat "$top/sub.log" >&2
exit 1
