#!/bin/sh
# build_deb.sh - builds the relayd .deb from a copy of the source tree, so
# that dpkg-buildpackage's output (../relayd_*.deb, .buildinfo, .changes)
# and debian/ build directories never land in the repository.
# Usage: sh tests/package/build_deb.sh OUTDIR   (the .deb files end up there)
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: build_deb.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/relayd-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
mkdir "$work/relayd"
# The tracked files plus uncommitted changes, without build trees.
(cd "$top" && git ls-files -z --cached --others --exclude-standard) |
	(cd "$top" && xargs -0 cp --parents -t "$work/relayd" 2>/dev/null || true)
cd "$work/relayd"
dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1 || {
	tail -50 "$work/build.log"; echo "build_deb: dpkg-buildpackage failed" >&2; exit 1; }
cp "$work"/relayd_*.deb "$work"/relayd-dbgsym_*.deb "$out"/ 2>/dev/null || cp "$work"/relayd_*.deb "$out"/
ls "$out"/relayd_*.deb
