#!/bin/bash
# make deb: build the Debian package (dpkg-buildpackage -us -uc -b, no network) from a
# copy of the working tree (the build's clean step must not touch the shared tree or its
# .venv), check it with lintian (no errors) and put it in dist/ (or $1).
# exit 77: the build packages are missing.  Needs: apt-get install debhelper dh-python python3-all python3-setuptools lintian
set -eu
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=$(realpath -m "${1:-dist}")

version=$(sed -n 's/^__version__ *= *["'\'']\([^"'\'']*\)["'\''].*/\1/p' sarra/__init__.py)
changelog=$(dpkg-parsechangelog -S Version)
if [ "${changelog%%-*}" != "$version" ]; then
    echo "build-deb: debian/changelog is at $changelog, sarra/__init__.py __version__ is" \
         "$version: add a changelog entry (dch -v $version)" >&2
    exit 1
fi

missing=""
for p in debhelper dh-python python3-all python3-setuptools lintian; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "build-deb: missing build packages:$missing (apt-get install$missing)" >&2
    exit 77     # cannot build here (the packaging tests skip with this reason)
fi

work=$(mktemp -d /tmp/sarra-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src="$work/sarra-$version"
mkdir -p "$src"
# the tree as it is now (tracked and new files, not ignored ones; not deleted ones)
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    xargs -0 cp --parents -t "$src"
chmod +x "$src/debian/rules"

(cd "$src" && dpkg-buildpackage -us -uc -b) > "$work/build.log" 2>&1 || {
    tail -40 "$work/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
deb=$(ls "$work"/sarra_"$version"*_all.deb)
mkdir -p "$OUT"
rm -f "$OUT"/sarra_*.deb
cp "$deb" "$OUT/"
deb="$OUT/$(basename "$deb")"

# lintian: errors fail the build; warnings are shown
lintian --tag-display-limit 0 "$deb" > "$work/lintian.log" 2>&1 || true
cat "$work/lintian.log"
if grep -q '^E: ' "$work/lintian.log"; then
    echo "build-deb: lintian reports errors for $deb" >&2
    exit 1
fi
echo "$deb"
