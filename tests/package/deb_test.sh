#!/bin/sh
# deb_test.sh - the Debian package, end to end, on this machine (as root):
# build the .deb from a copy of the tree, lintian (no E: tags), dpkg -i, then
# check what the package promised (the relayd user, /var/spool/relayd 0700
# relayd's, the conffile, the unit enabled but not started), start the
# installed /usr/sbin/relayd as root with a test configuration (loopback
# ports, a self-signed certificate, a sasldb, a sink MX), send a message with
# swaks and see it delivered, check that relayd runs unprivileged and
# sandboxed (/proc/PID/status: Uid, NoNewPrivs, Seccomp), that relayctl
# works for root and is refused to another user, and finally dpkg --purge.
# Every check prints "ok" or "FAIL: <what>"; the exit code is 1 if any failed.
#
# Usage: sh tests/package/deb_test.sh        (ctest: -L package)
# It installs and purges the package relayd on this machine: run it on a
# CI machine or a container, not on a server that runs relayd.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
fails=0
ok()   { echo "ok   $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() { # check "what" command...
	what=$1; shift
	if "$@"; then ok "$what"; else fail "$what"; return 1; fi
}
die() { echo "FAIL: $*"; echo "deb_test: stopped early"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (dpkg -i)"
if dpkg-query -W -f='${Status}' relayd 2>/dev/null | grep -q "ok installed"; then
	die "the package relayd is already installed here; not touching it"
fi

work=$(mktemp -d /tmp/relayd-debtest.XXXXXX)
relayd_pid=""
sink_pid=""
cleanup() {
	[ -n "$relayd_pid" ] && kill "$relayd_pid" 2>/dev/null && sleep 1
	[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
	if dpkg-query -W -f='${Status}' relayd 2>/dev/null | grep -q installed; then
		dpkg --purge relayd >/dev/null 2>&1
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

echo "== build =="
sh "$top/tests/package/build_deb.sh" "$work/out" >/dev/null || die "the package does not build"
deb=$(ls "$work"/out/relayd_*.deb)
ok "built $(basename "$deb")"

echo "== lintian =="
lintian "$deb" >"$work/lintian.txt" 2>&1
cat "$work/lintian.txt"
check "lintian reports no errors" sh -c "! grep -q '^E:' '$work/lintian.txt'"

echo "== install =="
dpkg -i "$deb" >"$work/dpkg.txt" 2>&1 || { cat "$work/dpkg.txt"; die "dpkg -i failed"; }
ok "dpkg -i"
check "user relayd exists" getent passwd relayd
check "user relayd is a system user with no shell" \
	sh -c '[ "$(getent passwd relayd | cut -d: -f3)" -lt 1000 ] && getent passwd relayd | grep -q ":/usr/sbin/nologin$"'
check "/var/spool/relayd is relayd:relayd 0700" \
	sh -c '[ "$(stat -c %U:%G:%a /var/spool/relayd)" = relayd:relayd:700 ]'
check "/var/log/relayd belongs to relayd" sh -c '[ "$(stat -c %U /var/log/relayd)" = relayd ]'
check "/etc/relayd/relayd.conf is a conffile" \
	sh -c "dpkg-query -W -f='\${Conffiles}' relayd | grep -q ' /etc/relayd/relayd.conf '"
check "the unit is enabled" test -L /etc/systemd/system/multi-user.target.wants/relayd.service
installed_relayd_running() {
	for p in $(pgrep -x relayd); do
		[ "$(readlink "/proc/$p/exe")" = /usr/sbin/relayd ] && return 0
	done
	return 1
}
if installed_relayd_running; then fail "relayd was not started by the install"; else ok "relayd was not started by the install"; fi
check "the installed example configuration names only files under /etc/relayd" \
	sh -c '/usr/sbin/relayd -n -c /etc/relayd/relayd.conf 2>&1 | grep -v "/etc/relayd/" | grep -q . && exit 1 || exit 0'

echo "== run the installed relayd as root =="
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port); tls_port=$(free_port)
cfg="$work/etc"
mkdir -p "$cfg"
# As an admin would: the files relayd reads are group-readable by relayd.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
	-subj "/CN=relay.test" -addext "subjectAltName=DNS:relay.test,IP:127.0.0.1" \
	-keyout "$cfg/key.pem" -out "$cfg/cert.pem" 2>/dev/null || die "openssl"
echo "secretpw" | saslpasswd2 -p -c -f "$cfg/sasldb2" -u relay.test alice || die "saslpasswd2"
echo "alice: alice@example.org" >"$cfg/senders"
# The sink MX: accepts one message, writes its recipients to $work/delivered,
# and exits a little later.
cat >"$work/sink.py" <<EOS
import sys
sys.path.insert(0, "$top/tests/harness")
from smtpsink import SinkMX
sink = SinkMX("127.0.0.2", 0)
print(sink.port, flush=True)
import time
m = sink.wait_for_messages(1, timeout=60)[0]
open("$work/delivered", "w").write(repr(m.rcpt_addrs))
time.sleep(3)   # let the 250 reach relayd before the sink goes away
sink.stop()
EOS
python3 "$work/sink.py" >"$work/sink.port" 2>"$work/sink.err" &
sink_pid=$!
for _ in $(seq 50); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
sink_port=$(cat "$work/sink.port")
[ -n "$sink_port" ] || die "the sink did not start: $(cat "$work/sink.err")"
cat >"$cfg/relayd.conf" <<EOS
# deb_test.sh: the installed paths, loopback ports.
hostname = "relay.test";
queue_dir = "/var/spool/relayd";
control_socket = "/run/relayd/control.sock";
log_file = "/var/log/relayd/relayd.log";
submit = {
  listen = [ "127.0.0.1:$port" ];
  listen_tls = [ "127.0.0.1:$tls_port" ];
  tls_cert = "$cfg/cert.pem";
  tls_key = "$cfg/key.pem";
  sasl_db = "$cfg/sasldb2";
  sasl_realm = "relay.test";
  senders = "$cfg/senders";
};
router = {
  routes = ( { domain = "*"; hosts = [ "127.0.0.2:$sink_port" ]; tls = "none"; } );
};
EOS
chown -R root:relayd "$cfg"
chgrp relayd "$work"   # searchable by relayd: it re-reads these files as relayd
chmod 0750 "$work" "$cfg"
chmod 0640 "$cfg"/*
check "relayd -n accepts the test configuration" /usr/sbin/relayd -n -c "$cfg/relayd.conf"
check "relayd -n finds every file readable by relayd (no warning)" \
	sh -c "! /usr/sbin/relayd -n -c $cfg/relayd.conf 2>&1 | grep -q warning"
/usr/sbin/relayd -c "$cfg/relayd.conf" >"$work/relayd.out" 2>&1 &
relayd_pid=$!
up=0
for _ in $(seq 100); do
	if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then
		up=1; break
	fi
	kill -0 "$relayd_pid" 2>/dev/null || break
	sleep 0.1
done
[ $up = 1 ] || die "relayd did not start: $(cat "$work/relayd.out"; tail -5 /var/log/relayd/relayd.log 2>/dev/null)"
ok "relayd listens on 127.0.0.1:$port (pid $relayd_pid)"

swaks --server "127.0.0.1:$port" --tls --auth PLAIN --auth-user alice --auth-password secretpw \
	--from alice@example.org --to bob@example.net --body "deb_test" >"$work/swaks.txt" 2>&1
check "swaks: the message is queued" grep -q "queued as" "$work/swaks.txt" ||
	tail -20 "$work/swaks.txt"
for _ in $(seq 100); do [ -s "$work/delivered" ] && break; sleep 0.1; done
check "the message reached the sink MX" grep -q "bob@example.net" "$work/delivered"
for _ in $(seq 50); do grep -q "event=delivered" /var/log/relayd/relayd.log && break; sleep 0.1; done
check "the log says delivered" grep -q "event=delivered" /var/log/relayd/relayd.log ||
	tail -20 /var/log/relayd/relayd.log

status=/proc/$relayd_pid/status
grep -E "^(Uid|Gid|NoNewPrivs|Seccomp):" "$status"
check "relayd runs with a non-zero uid (real, effective, saved)" \
	awk '/^Uid:/ { exit !($2 != 0 && $3 != 0 && $4 != 0) }' "$status"
check "relayd runs as the user relayd" \
	awk -v u="$(id -u relayd)" '/^Uid:/ { exit !($3 == u) }' "$status"
check "relayd has NoNewPrivs: 1" grep -q "^NoNewPrivs:[[:space:]]*1$" "$status"
check "relayd has Seccomp: 2 (filter)" grep -q "^Seccomp:[[:space:]]*2$" "$status"

check "relayctl stats works for root" /usr/sbin/relayctl -s /run/relayd/control.sock stats
runuser -u nobody -- /usr/sbin/relayctl -s /run/relayd/control.sock stats >"$work/ctl.out" 2>&1
rc=$?
cat "$work/ctl.out"
check "relayctl is refused to nobody with exit 1" [ $rc -eq 1 ]
check "relayctl tells nobody 'permission denied'" grep -qi "permission denied" "$work/ctl.out"

kill -TERM "$relayd_pid"
for _ in $(seq 100); do kill -0 "$relayd_pid" 2>/dev/null || break; sleep 0.1; done
wait "$relayd_pid"; rc=$?
relayd_pid=""
check "relayd stops on SIGTERM with exit 0" [ $rc -eq 0 ]

echo "== purge =="
dpkg --purge relayd >"$work/dpkg.txt" 2>&1 || { cat "$work/dpkg.txt"; fail "dpkg --purge"; }
check "purge removes /var/spool/relayd" test ! -e /var/spool/relayd
check "purge removes /etc/relayd/relayd.conf" test ! -e /etc/relayd/relayd.conf
check "purge removes the unit's enable link" test ! -e /etc/systemd/system/multi-user.target.wants/relayd.service

echo
if [ $fails -gt 0 ]; then
	echo "deb_test: $fails check(s) FAILED"
	exit 1
fi
echo "deb_test: all checks passed"
