#!/usr/bin/env bash
# A/B of `berth run --rm busybox true` (not a test), as root: two berth daemons of the same
# binaries, daemon A started with the environment $ENV_A and B with $ENV_B (e.g.
# ENV_B=BERTH_CGROUP_WARMUP=0), each on its own temporary root and bridge, and runs
# alternating A, B, A, B... so that both see the same machine weather. Prints each one's
# median, mean and minimum and the ratio of the medians. BLOCK=N alternates blocks of N
# runs, with a 0.3 s pause between blocks, for changes whose effect outlives a run
# (kernel state such as the cgroup-attach switch, which one daemon's runs would leave on
# for the other's).
# Usage: ENV_A="..." ENV_B="..." [BLOCK=N] BIN=target/release bench/engine/ab.sh [RUNS]
# (default 60 runs each)
set -euo pipefail
RUNS=${1:-60}
cd "$(dirname "$0")/../.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
T=$(mktemp -d /tmp/berth-ab.XXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p"; wait "$p"; done
  grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  for s in a b; do ip link del "bab$s$$" 2>/dev/null; done
  for t in filter nat; do
    iptables -t $t -S | grep -o -- "-j BAB[A-Z0-9_-]*" | sort -u | while read -r _ c; do
      iptables -t $t -S | grep -- "-j $c" | sed 's/^-A/-D/' | xargs -r -L1 iptables -t $t
      iptables -t $t -F "$c"; iptables -t $t -X "$c"
    done
  done
  rm -rf "$T"
}
trap cleanup EXIT
trap "exit 130" INT TERM
scripts/busybox-rootfs.sh > "$T/busybox.tar"
start() { # $1: a|b, $2: the environment (space-separated NAME=VALUE)
  local sock=$T/$1.sock
  # shellcheck disable=SC2086
  env $2 BERTH_MONITOR="$BIN/berth-monitor" "$BIN/berth" daemon --root "$T/$1root" \
    --run-root "$T/$1run" -H "unix://$sock" --runtime "$BIN/berth-runtime" --bridge "bab$1$$" \
    --bip "10.21$([ "$1" = a ] && echo 5 || echo 6).$((RANDOM % 200)).1/24" \
    --iptables-chain-prefix "BAB$(echo "$1" | tr a-z A-Z)" 2>"$T/$1.log" &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf --unix-socket "$sock" http://x/_ping >/dev/null && break; sleep 0.05; done
  "$BIN/berth" -H "unix://$sock" import "$T/busybox.tar" busybox:latest >/dev/null
  for _ in 1 2 3; do "$BIN/berth" -H "unix://$sock" run --rm busybox true; done
}
start a "${ENV_A:-}"
start b "${ENV_B:-}"
BLOCK=${BLOCK:-1}
for i in $(seq $(( (RUNS + BLOCK - 1) / BLOCK ))); do
  for s in a b; do
    [ "$BLOCK" -gt 1 ] && sleep 0.3
    for j in $(seq "$BLOCK"); do
      t0=$(date +%s%N)
      "$BIN/berth" -H "unix://$T/$s.sock" run --rm busybox true
      echo "$s $(( ($(date +%s%N) - t0) / 1000 ))" >> "$T/times"
    done
  done
done
python3 - "$T/times" "${ENV_A:-}" "${ENV_B:-}" <<'PY'
import sys, statistics as st
t = {"a": [], "b": []}
for l in open(sys.argv[1]):
    s, us = l.split()
    t[s].append(int(us) / 1000)
for s, env in (("a", sys.argv[2]), ("b", sys.argv[3])):
    v = t[s]
    print(f"{s} [{env or 'default'}]: median {st.median(v):6.2f} ms  mean {st.mean(v):6.2f} ms  min {min(v):6.2f} ms  n={len(v)}")
print(f"median a/b: {st.median(t['a']) / st.median(t['b']):.3f}")
PY
