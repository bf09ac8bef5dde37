#!/bin/sh
# test.sh - the one command that runs every test: installs what is missing,
# builds relayd twice (warnings as errors; then with AddressSanitizer and
# UndefinedBehaviorSanitizer), both with the test hooks (RELAY_TEST_HOOKS),
# and runs the whole ctest suite on each build.
set -eu
cd "$(dirname "$0")/.."

sh contrib/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)

echo "== build (Werror) =="
cmake -S . -B build -DRELAY_WERROR=ON -DRELAY_TEST_HOOKS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"

echo "== tests =="
(cd build && ctest --output-on-failure -j2 --timeout 300)

echo "== build (ASan + UBSan) =="
cmake -S . -B build-asan -DRELAY_WERROR=ON -DRELAY_SANITIZE=ON -DRELAY_TEST_HOOKS=ON \
    -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"

echo "== tests under ASan + UBSan =="
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp"
(cd build-asan && ctest --output-on-failure -j2 --timeout 600)

# The Debian package end to end: build, lintian, dpkg -i, run the installed
# relayd as root (it must switch to relayd, sandboxed), relayctl for root and
# for a stranger, dpkg --purge.  It installs a package on this machine, so it
# runs only in CI (CI=true) or when asked (RELAYD_PACKAGE_TEST=1), as root.
if [ "${CI:-}" = true ] || [ "${RELAYD_PACKAGE_TEST:-}" = 1 ]; then
	echo "== package (tests/package/deb_test.sh) =="
	sh tests/package/deb_test.sh
fi
