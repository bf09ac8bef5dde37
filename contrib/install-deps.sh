#!/bin/sh
# install-deps.sh - install what building and testing relayd needs, from
# Debian packages.  Idempotent and non-interactive: packages already present
# are left alone, and apt-get runs only when something is missing.
set -eu

# Build: compiler, cmake, the libraries (libsystemd for sd_notify, libseccomp
# for the sandbox).  Test: sasl2-bin (saslpasswd2), swaks and
# libnet-ssleay-perl (swaks's TLS; only a recommendation of swaks, so
# --no-install-recommends would drop it), mandoc (man page lint), systemd
# (systemd-analyze on the unit file), logrotate and fail2ban (their shipped
# configuration is tested with the real tools).  Package: debhelper,
# dpkg-dev, fakeroot, lintian (tests/package/deb_test.sh).  libldap-dev for
# submit.senders_ldap; slapd and ldap-utils for its tests (they run their own
# slapd; the system one that slapd's postinst sets up is not used).
PKGS="build-essential gcc make cmake pkg-config openssl ca-certificates
      libuv1-dev libssl-dev libsasl2-dev libconfig-dev libc-ares-dev
      libsystemd-dev libseccomp-dev libldap-dev
      sasl2-bin libsasl2-modules swaks libnet-ssleay-perl procps
      mandoc systemd logrotate fail2ban slapd ldap-utils python3-dkim
      debhelper dpkg-dev fakeroot lintian clang libclang-rt-14-dev"

# libcurl (OpenSSL flavour) for the HTTPS client (http/: MTA-STS policies,
# TLSRPT reports)
PKGS="$PKGS libcurl4-openssl-dev"

# zlib: TLSRPT reports (RFC 8460) are sent gzipped (tlsrpt/)
PKGS="$PKGS zlib1g-dev"

# Cyrus's SQL auxprop plugin and SQLite, for the AUTH backend tests
PKGS="$PKGS libsasl2-modules-sql sqlite3"

# testssl.sh scans both submission ports (tests/integration/test_tls_scan.py);
# it runs openssl, hexdump (bsdextrautils), ps (procps) and dig (dnsutils).
PKGS="$PKGS testssl.sh bsdextrautils dnsutils"

# The metrics endpoint: libmicrohttpd (its HTTP server, on relayd's loop);
# prometheus for promtool, which checks a live scrape
# (tests/integration/test_metrics.py).  Debian ships promtool only in the
# prometheus package: 19 MB to download, 96 MB installed; its postinst starts
# the prometheus server where systemd runs (the tests never use it).
PKGS="$PKGS libmicrohttpd-dev prometheus"
# HAProxy in front of relayd, sending the PROXY protocol (tests/integration/test_proxy.py)
PKGS="$PKGS haproxy"
# ss (iproute2): test_submit_fds.py reads relayd's socket's send queue
PKGS="$PKGS iproute2"

# cluster/ (shared state in Redis): hiredis to build; redis-server for the
# two-node test (tests/integration/test_cluster.py runs its own, and HAProxy).
PKGS="$PKGS libhiredis-dev redis-server"
# strace watches relayd's own system calls where no other witness exists:
# that a state file's rename is followed by an fsync of its directory
# (tests/integration/test_state_files.py).
PKGS="$PKGS strace"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
# The tests need a python3 (>= 3.9) with its standard library; any one on PATH will do.
if ! command -v python3 >/dev/null 2>&1; then
	missing="$missing python3"
fi

if [ -n "$missing" ]; then
	echo "install-deps: installing:$missing"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -qq --no-install-recommends $missing
else
	echo "install-deps: everything is installed"
fi
