#!/bin/sh
# fresh-check.sh - proves the README's two commands on a fresh Debian 12:
# builds a minimal bookworm root with mmdebstrap (from the Debian archive this
# machine's apt sources point to; no other mirror), copies in a clean clone
# of the repository (what is committed in the current HEAD), and inside it
# (chroot, with /proc, /sys, /dev mounted for the run) runs
# `sh contrib/quickstart.sh` in the background, sends one message through it
# with swaks, stops it, then runs `sh contrib/test.sh`.  Prints how long each
# step took.  Exit 0 only if everything passed.
#
# Usage (as root): sh contrib/fresh-check.sh [WORKDIR]
#   WORKDIR (default: a new /tmp/relayd-fresh.XXXXXX) holds the root; it is
#   removed at the end unless FRESH_KEEP=1.  Logs: WORKDIR/*.log.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "fresh-check: run as root (mmdebstrap, chroot, mount)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || apt-get install -y -qq --no-install-recommends mmdebstrap

work=${1:-$(mktemp -d /tmp/relayd-fresh.XXXXXX)}
root="$work/root"
mkdir -p "$work"
mounted=""
chroot_pids() { # processes whose root is the chroot (only ours can be there)
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && echo "${p#/proc/}"
	done
	return 0
}
cleanup() {
	pids=$(chroot_pids)
	[ -n "$pids" ] && kill $pids 2>/dev/null && sleep 2
	pids=$(chroot_pids)
	[ -n "$pids" ] && kill -9 $pids 2>/dev/null
	for m in $mounted; do umount -l "$root$m" 2>/dev/null || true; done
	if [ "${FRESH_KEEP:-0}" != 1 ]; then
		rm -rf --one-file-system "$root"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

t0=$(date +%s)
step() { echo "== $(( $(date +%s) - t0 ))s: $*"; }

# The Debian archive(s) this machine uses for bookworm, as one-line sources.
sources=$(python3 - <<'EOS'
import glob, re
out = []
def add(uri, suite, comps):
    if "debian" in uri and suite.startswith("bookworm"):
        line = "deb %s %s %s" % (uri.rstrip("/"), suite, " ".join(comps) or "main")
        if line not in out:
            out.append(line)
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(f).read()):
        kv = {}
        for l in stanza.splitlines():
            if l.startswith("#") or ":" not in l:
                continue
            k, v = l.split(":", 1)
            kv[k.strip().lower()] = v.split()
        if "deb" not in kv.get("types", []) or kv.get("enabled", ["yes"]) == ["no"]:
            continue
        for uri in kv.get("uris", []):
            for s in kv.get("suites", []):
                add(uri, s, kv.get("components", []))
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(f).read().splitlines()
    except OSError:
        continue
    for l in lines:
        l = re.sub(r"\[[^]]*\]", "", l.split("#", 1)[0]).split()
        if len(l) >= 3 and l[0] == "deb":
            add(l[1], l[2], l[3:])
print("\n".join(out))
EOS
)
[ -n "$sources" ] || { echo "fresh-check: no bookworm Debian archive in /etc/apt/sources*" >&2; exit 1; }
step "mmdebstrap (variant apt) from:"
echo "$sources"
echo "$sources" | mmdebstrap --variant=apt --include=git,ca-certificates \
	bookworm "$root" - >"$work/mmdebstrap.log" 2>&1 || {
	tail -30 "$work/mmdebstrap.log"; echo "fresh-check: mmdebstrap failed" >&2; exit 1; }
cp /etc/resolv.conf "$root/etc/resolv.conf"

step "clean clone of $(git -C "$top" rev-parse --short HEAD)"
git clone -q "$top" "$root/root/relayd"

for m in /proc /sys /dev /dev/pts; do
	case $m in
	/proc) mount -t proc proc "$root$m" ;;
	/sys)  mount -t sysfs sysfs "$root$m" ;;
	*)     mount --bind "$m" "$root$m" ;;
	esac
	mounted="$m $mounted"
done
mkdir -p "$root/dev/shm"
# The test harness claims each port it hands out by an flock on a file in
# /tmp/relayd-test-ports (tests/harness/relay.py); the root shares this
# machine's loopback, so it shares that directory too: a suite running here
# at the same time (CI) and the suite inside the root see each other's claims.
mkdir -p /tmp/relayd-test-ports "$root/tmp/relayd-test-ports"
chmod 1777 /tmp/relayd-test-ports
mount --bind /tmp/relayd-test-ports "$root/tmp/relayd-test-ports"
mounted="/tmp/relayd-test-ports $mounted"

# Ports free on this machine (the chroot shares its network).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tls_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cat >"$root/root/fresh-run.sh" <<EOS
#!/bin/sh
# Runs inside the fresh root: the README's two commands.
set -eu
cd /root/relayd
export DEBIAN_FRONTEND=noninteractive
t0=\$(date +%s)
step() { echo "== inside \$(( \$(date +%s) - t0 ))s: \$*"; }
step "sh contrib/quickstart.sh (background; ports $port, $tls_port)"
QUICKSTART_PORT=$port QUICKSTART_TLS_PORT=$tls_port sh contrib/quickstart.sh >/root/quickstart.log 2>&1 &
qs=\$!
i=0
until grep -q "event=listening" /root/quickstart.log 2>/dev/null ||
      grep -q "quick start" /root/quickstart.log 2>/dev/null && sleep 1 &&
      (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do
	kill -0 \$qs 2>/dev/null || { tail -40 /root/quickstart.log; echo "quickstart exited"; exit 1; }
	i=\$((i + 1)); [ \$i -lt 1800 ] || { echo "quickstart: not listening after 30 min"; exit 1; }
	sleep 1
done
step "quickstart listens; swaks"
# The password as quickstart printed it (its directory depends on where the
# clone is: ./quickstart, or /var/lib/relayd-quickstart when relayd's user
# cannot reach the clone).
pw=\$(sed -n 's/.*demo user: *demo *password: *\\([0-9a-f]*\\).*/\\1/p' /root/quickstart.log | head -n 1)
[ -n "\$pw" ] || { cat /root/quickstart.log; echo "quickstart printed no password"; exit 1; }
swaks --server 127.0.0.1:$port --tls --auth PLAIN --auth-user demo --auth-password "\$pw" \
	--from demo@example.test --to someone@example.net >/root/swaks.log 2>&1 || true
if ! grep -q "queued as" /root/swaks.log; then
	cat /root/swaks.log; echo "swaks: no 'queued as'"; kill \$qs; exit 1
fi
grep "queued as" /root/swaks.log
kill -TERM \$qs; wait \$qs || true
step "sh contrib/test.sh"
sh contrib/test.sh
step "done"
EOS
step "chroot: quickstart, swaks, test.sh"
# bash: the wait loop uses /dev/tcp.
if chroot "$root" /bin/bash /root/fresh-run.sh >"$work/run.log" 2>&1; then
	rc=0
else
	rc=$?
fi
grep -E "^== inside|queued as|tests passed|tests failed|FAILED|Failed|\(Failed\)|\*\*\*" "$work/run.log" || true
[ $rc -eq 0 ] || tail -60 "$work/run.log"
step "finished, exit $rc (logs: $work/*.log)"
exit $rc
