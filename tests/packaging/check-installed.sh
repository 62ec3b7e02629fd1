#!/bin/sh
# Run on the system where the sarra .deb was just installed (scripts/test-deb.sh, in a fresh
# chroot): everything the package promises is where Debian users look for it.
set -u
fail=0
no() { echo "check-installed: $*" >&2; fail=1; }
have() { [ -e "$1" ] || no "missing $1"; }

version=$(dpkg-query -W -f='${Version}' sarra)
# every command: on PATH, prints '<name> <version>', has a man page and a bash completion
for c in sr sr_post sr_watch sr_poll sr_subscribe sr_sarra sr_sender sr_shovel sr_winnow \
         sr_report sr_log sr_audit sr_police sr_readers; do
    have "/usr/bin/$c"
    out=$("$c" --version 2>&1) || no "$c --version exited $?"
    [ "$out" = "$c ${version%%-*}" ] || no "$c --version says '$out', not '$c ${version%%-*}'"
    [ -e /usr/share/man/man1/"$c".1.gz ] || [ -e /usr/share/man/man8/"$c".8.gz ] ||
        no "no man page for $c in /usr/share/man/man1 or man8"
    have "/usr/share/bash-completion/completions/$c"
done
have /usr/share/man/man7/sr_config.7.gz
have /usr/share/man/man7/sr_post.7.gz
have /usr/share/doc/sarra/copyright
have /usr/share/doc/sarra/README.rst.gz
have /usr/share/doc/sarra/admin-guide.rst.gz
[ -z "${SARRA_EXPECT_USER_GUIDE:-}" ] || have /usr/share/doc/sarra/user-guide.rst.gz
ls /usr/share/doc/sarra/examples/subscribe/*.conf >/dev/null 2>&1 ||
    no "no example configurations in /usr/share/doc/sarra/examples/subscribe/"
# ... and the commands find them (sr_subscribe list names them, as a plain user would see)
out=$(HOME=$(mktemp -d) sr_subscribe list 2>&1) || no "sr_subscribe list exited $?: $out"
echo "$out" | grep -q "^examples in /usr/lib/python3/dist-packages/sarra/examples/subscribe" ||
    no "sr_subscribe list does not show the packaged examples: $out"

# the system user, its home and the directories sarra.service uses
getent passwd sarra | grep -q ':/var/lib/sarra:' || no "no system user sarra with home /var/lib/sarra"
for d in /var/lib/sarra/.config/sarra /var/lib/sarra/.cache/sarra; do
    [ "$(stat -c %U "$d" 2>/dev/null)" = sarra ] || no "$d missing or not owned by sarra"
done
# the unit is shipped, and disabled until configured
have /lib/systemd/system/sarra.service
for w in /etc/systemd/system/*.wants/sarra.service; do
    [ ! -e "$w" ] || no "sarra.service is enabled ($w): it must wait until configured"
done

[ $fail = 0 ] && echo "check-installed: OK (sarra $version: commands, man pages, docs, examples, completion, user, unit)"
exit $fail
