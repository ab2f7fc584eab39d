#!/usr/bin/env bash
# Memory of the per-container monitors (not a test): starts a berth daemon on temporary
# directories, runs N (default 20) detached busybox containers and prints the monitors'
# total and per-monitor PSS and anonymous memory. Usage: N=20 BIN=target/release bench/engine/monitor_mem.sh
set -euo pipefail
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
T=$(mktemp -d /tmp/berth-mem.XXXX); SOCK=$T/s.sock; BR=bm2$$
cleanup() { set +e; $BIN/berth -H unix://$SOCK rm -f $($BIN/berth -H unix://$SOCK ps -aq) >/dev/null 2>&1; kill $BPID; wait $BPID; grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l; ip link del $BR 2>/dev/null
  for t in filter nat; do iptables -t $t -S | grep -o -- "-j BMM[A-Z0-9_-]*" | sort -u | while read -r _ c; do iptables -t $t -S | grep -- "-j $c" | sed 's/^-A/-D/' | xargs -r -L1 iptables -t $t; iptables -t $t -F $c; iptables -t $t -X $c; done; done; rm -rf $T; }
trap cleanup EXIT
"$(dirname "$0")/../../scripts/busybox-rootfs.sh" > $T/bb.tar
BERTH_MONITOR=$BIN/berth-monitor $BIN/berth daemon --root $T/r --run-root $T/rr -H unix://$SOCK --runtime $BIN/berth-runtime --bridge $BR --bip 10.219.$((RANDOM % 200)).1/24 --iptables-chain-prefix BMM 2>$T/d.log &
BPID=$!
for _ in $(seq 100); do curl -sf --unix-socket $SOCK http://x/_ping >/dev/null && break; sleep 0.05; done
$BIN/berth -H unix://$SOCK import $T/bb.tar busybox:latest >/dev/null
N=${N:-20}
for i in $(seq $N); do $BIN/berth -H unix://$SOCK run -d busybox sleep 600 >/dev/null; done
sleep 1
tot=0; anon=0; n=0
# Each container's monitor is the parent of its init.
for c in $($BIN/berth -H unix://$SOCK ps -q --no-trunc); do mp=$(ps -o ppid= -p "$($BIN/berth -H unix://$SOCK inspect -f '{{.State.Pid}}' "$c")" | tr -d ' '); p=$(awk '/^Pss:/{print $2}' /proc/$mp/smaps_rollup); a=$(awk '/^Anonymous:/{print $2}' /proc/$mp/smaps_rollup); tot=$((tot+p)); anon=$((anon+a)); n=$((n+1)); done
echo "monitors: $n, total PSS ${tot} kB, per monitor $((tot/n)) kB PSS, $((anon/n)) kB anonymous"
