#!/bin/sh
# test.sh - the one command that runs every test: installs what is missing,
# builds relayd three times (warnings as errors; then with AddressSanitizer
# and UndefinedBehaviorSanitizer; then with ThreadSanitizer), each with the
# test hooks (RELAY_TEST_HOOKS), and runs the whole ctest suite on each
# build; it also compiles everything once without the hooks (no run).  In CI (CI=true, or RELAYD_FUZZ=1) it then builds the libFuzzer
# targets (clang, RELAY_FUZZ) and fuzzes each for RELAYD_FUZZ_SECONDS (60)
# seconds; a crash, leak or hang fails the run and leaves its input in
# build-fuzz/artifacts/.
set -eu
cd "$(dirname "$0")/.."

sh contrib/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)

echo "== build (Werror) =="
cmake -S . -B build -DRELAY_WERROR=ON -DRELAY_TEST_HOOKS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"

echo "== build (no test hooks: what the README's build and the package compile) =="
# Every target, tests included, must build without RELAY_TEST_HOOKS too: a
# test calling a hook outside #ifdef RELAY_TEST_HOOKS broke the quickstart
# on a fresh machine while every leg below passed.
cmake -S . -B build-plain -DRELAY_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-plain -j"$jobs"

echo "== tests =="
# RELAYD_TEST_SUBMIT_WORKERS (tests/harness/relay.py): this leg runs every
# relayd with submit.workers = 1, the single loop; the sanitizer legs with
# two session threads, whatever the machine's CPU count.  Tests that set
# submit.workers themselves keep theirs.
(cd build && RELAYD_TEST_SUBMIT_WORKERS=1 ctest --output-on-failure -j2 --timeout 300)

echo "== build (ASan + UBSan) =="
cmake -S . -B build-asan -DRELAY_WERROR=ON -DRELAY_SANITIZE=ON -DRELAY_TEST_HOOKS=ON \
    -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"

echo "== tests under ASan + UBSan =="
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp"
(cd build-asan && RELAYD_TEST_SUBMIT_WORKERS=2 ctest --output-on-failure -j2 --timeout 600)

# ThreadSanitizer (RELAY_TSAN; it cannot share a build with ASan): the whole
# suite once more, the queue's threads and the libuv thread pool jobs against
# the loop.  A report fails the test: a unit test exits 66, the harness
# (tests/harness/relay.py, close()) raises one found in relayd's stderr.
# ignore_noninstrumented_modules: races are looked for in relayd's code only,
# not in the libc calls of libraries built without TSan (libuv, OpenSSL, Cyrus
# SASL), which still synchronise; die_after_fork=0: unit tests fork children
# that start threads.  tests/tsan.supp says what else is suppressed and why.
# ASAN_OPTIONS stays set: the tests that allow a sanitizer build more time
# look for it.
echo "== build (TSan) =="
cmake -S . -B build-tsan -DRELAY_WERROR=ON -DRELAY_TSAN=ON -DRELAY_TEST_HOOKS=ON \
    -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-tsan -j"$jobs"

echo "== tests under TSan =="
# Every TSan binary reads the suppressions at start, also the relayctl that
# test_foundation runs as another user: the checkout may sit where that user
# cannot look (/root/...), so the file goes where everyone can read it.
tsan_supp=$(mktemp /tmp/relayd-tsan-supp.XXXXXX)
cp tests/tsan.supp "$tsan_supp"
chmod 0644 "$tsan_supp"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:die_after_fork=0:suppressions=$tsan_supp"
tsan_rc=0
# RELAYD_TEST_SUBMIT_WORKERS: the sessions on two threads, as under ASan,
# so that their crossings are checked.
(cd build-tsan && RELAYD_TEST_SUBMIT_WORKERS=2 ctest --output-on-failure -j2 --timeout 600) ||
    tsan_rc=$?
unset TSAN_OPTIONS
rm -f "$tsan_supp"
[ "$tsan_rc" -eq 0 ] || exit "$tsan_rc"

# Fuzzing (tests/fuzz/, README "Fuzzing"): every target for a minute, from
# its committed seeds and regression inputs; the corpus it grows stays in
# build-fuzz/corpus/ (not committed).
if [ "${CI:-}" = true ] || [ "${RELAYD_FUZZ:-}" = 1 ]; then
	echo "== fuzz (tests/fuzz, ${RELAYD_FUZZ_SECONDS:-60} s per target) =="
	CC=clang cmake -S . -B build-fuzz -DRELAY_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build-fuzz -j"$jobs"
	(cd build-fuzz && ctest --output-on-failure --timeout 300)
	for src in tests/fuzz/fuzz_*.c; do
		t=${src#tests/fuzz/fuzz_}
		t=${t%.c}
		case $t in main|util) continue ;; esac
		mkdir -p "build-fuzz/corpus/$t" build-fuzz/artifacts
		echo "-- fuzz_$t"
		build-fuzz/tests/fuzz/fuzz_"$t" -max_total_time="${RELAYD_FUZZ_SECONDS:-60}" \
		    -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
		    -artifact_prefix="build-fuzz/artifacts/$t-" "build-fuzz/corpus/$t" \
		    "tests/fuzz/corpus/$t" "tests/fuzz/regress/$t" 2>"build-fuzz/fuzz_$t.log" || {
			tail -60 "build-fuzz/fuzz_$t.log"
			echo "fuzz_$t failed: its input is in build-fuzz/artifacts/" >&2
			exit 1
		}
		grep -E '^stat::number_of_executed_units|Done [0-9]+ runs' "build-fuzz/fuzz_$t.log" | tail -1
	done
fi

# The Debian package end to end: build, lintian, dpkg -i, run the installed
# relayd as root (it must switch to relayd, sandboxed), relayctl for root and
# for a stranger, dpkg --purge.  It installs a package on this machine, so it
# runs only in CI (CI=true) or when asked (RELAYD_PACKAGE_TEST=1), as root.
if [ "${CI:-}" = true ] || [ "${RELAYD_PACKAGE_TEST:-}" = 1 ]; then
	echo "== package (tests/package/deb_test.sh) =="
	sh tests/package/deb_test.sh
fi
