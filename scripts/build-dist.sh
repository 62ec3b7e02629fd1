#!/bin/bash
# make dist: the sdist (sarra-<version>.tar.gz) and, built from it, the wheel
# (sarra-<version>-py3-none-any.whl) into dist/ (or $1).  Building the wheel from the sdist
# proves the sdist is complete.  No network: the .venv's setuptools does both.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=$(realpath -m "${1:-dist}")
mkdir -p "$OUT"
version=$("$PYTHON" setup.py -q --version)
rm -f "$OUT/sarra-$version.tar.gz" "$OUT"/sarra-"$version"-*.whl
work=$(mktemp -d /tmp/sarra-dist.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$PYTHON" setup.py -q sdist -d "$OUT" > "$work/sdist.log" 2>&1 || {
    cat "$work/sdist.log" >&2; exit 1; }
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$OUT" \
    "$OUT/sarra-$version.tar.gz" > "$work/wheel.log" 2>&1 || { cat "$work/wheel.log" >&2; exit 1; }
ls "$OUT/sarra-$version.tar.gz" "$OUT"/sarra-"$version"-*.whl
