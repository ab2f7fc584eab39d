#!/usr/bin/env bash
# Where `berth run --rm busybox true` spends its time (not a test): runs it N times (default
# 20) against a daemon logging `berth::timing` phases and prints each phase's median and
# minimum. Usage: BIN=target/release bench/engine/phases.sh [N]
# (NET="--network none" for no network; RT=/path/to/other-runtime to have the monitor exec it)
set -euo pipefail
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
N=${1:-20}
T=$(mktemp -d /tmp/berth-pt.XXXX)
SOCK=$T/s.sock
BR=bpt$$
cleanup() { set +e; kill $BPID; wait $BPID; grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l; ip link del $BR 2>/dev/null
  for t in filter nat; do iptables -t $t -S | grep -o -- "-j BPT[A-Z0-9_-]*" | sort -u | while read -r _ c; do iptables -t $t -S | grep -- "-j $c" | sed 's/^-A/-D/' | xargs -r -L1 iptables -t $t; iptables -t $t -F $c; iptables -t $t -X $c; done; done
  rm -rf $T; }
trap cleanup EXIT
"$(dirname "$0")/../../scripts/busybox-rootfs.sh" > $T/bb.tar
RUST_LOG=berth::timing=debug BERTH_MONITOR=$BIN/berth-monitor $BIN/berth daemon --debug --root $T/r --run-root $T/rr -H unix://$SOCK --runtime ${RT:-$BIN/berth-runtime} --bridge $BR --bip 10.214.$((RANDOM % 200)).1/24 --iptables-chain-prefix BPT 2>$T/d.log &
BPID=$!
for _ in $(seq 100); do curl -sf --unix-socket $SOCK http://x/_ping >/dev/null && break; sleep 0.05; done
$BIN/berth -H unix://$SOCK import $T/bb.tar busybox:latest >/dev/null
for i in 1 2 3; do $BIN/berth -H unix://$SOCK run --rm ${NET:-} busybox true; done
for n in rustc cc ld cargo cc1 collect2; do pkill -STOP -x $n || true; done
hyperfine -N -w 2 -r $N "$BIN/berth -H unix://$SOCK run --rm ${NET:-} busybox true" 2>&1 | grep -E "Time|Range"
for n in rustc cc ld cargo cc1 collect2; do pkill -CONT -x $n || true; done
python3 - "$T/d.log" <<'PY'
import re, sys, statistics as st
ph = {}
for l in open(sys.argv[1]):
    l = re.sub(r'\x1b\[[0-9;]*m', '', l)
    m = re.search(r'berth::timing: (\w+) (.*)', l)
    if m:
        for k, v in re.findall(r'([\w+-]+)=([\d.]+)ms', m.group(2)):
            ph.setdefault(m.group(1) + '.' + k, []).append(float(v))
for k, v in ph.items():
    print(f"{k:28s} median {st.median(v):7.2f} ms  min {min(v):7.2f} ms  n={len(v)}")
PY
