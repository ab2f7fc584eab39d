#!/usr/bin/env bash
# One cold COPY build through a private berth daemon, with where its time goes (not a
# test). Starts `berth daemon --debug` on a temporary root, imports busybox, builds
# `FROM busybox` + `COPY big/ /big/` of a SIZE_MB context (16 files of random data)
# with --no-cache and prints the daemon's phase timings (context unpack, cache-key hash,
# files into the layer, layer tar + blob + snapshot) and the wall time.
# Usage: bench/build/cold_copy.sh [path/to/berth]   (default: target/release/berth)
#   SIZE_MB=1024  PERF=1 (system-wide perf record to /tmp/perf.data)
#   STRACE=1 (strace of the daemon to /tmp/strace.out)  NOCOPY=1 (context only)
#   SAVE=1 (then, after PUSH, `save` the image twice: the first makes the layer tar from its
#   snapshot and stores it, the second reads the stored blob)
#   PUSH=1 (then push the image to a `berth registry serve` on 127.0.0.1, timed)
#   DF=first|last (send the context with tar(1) and curl instead of the CLI, the
#   Dockerfile first, so that the daemon predicts the COPY's layer, or last, so that it
#   cannot: the same client either way, for an A/B of the prediction)
set -euo pipefail
cd "$(dirname "$0")/../.."
BERTH=$(readlink -f "${1:-target/release/berth}")
SIZE_MB=${SIZE_MB:-1024}
D=$(dirname $BERTH)
T=$(mktemp -d /tmp/berth-prof.XXXX)
hex=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
routes=$(ip -4 route)
while :; do
  r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
  pre="10.$((160 + r % 40)).$((r / 40 % 256))."
  case "$routes" in *"$pre"*) ;; *) break ;; esac
done
cleanup() { set +e; [ -n "${RPID:-}" ] && kill $RPID; kill $BPID 2>/dev/null; wait $BPID 2>/dev/null; grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l; ip link del bp$hex 2>/dev/null; CHAINS=BP${hex^^}
  for table in filter nat; do
    iptables-save -t "$table" | grep -E "^-A [^ ]+ .*$CHAINS" | grep -v "^-A $CHAINS" | sed 's/^-A //' | while read -r rule; do eval iptables -t "$table" -D $rule 2>/dev/null; done
    for ch in $(iptables-save -t "$table" | sed -n "s/^:\($CHAINS[^ ]*\).*/\1/p"); do iptables -t "$table" -F "$ch"; iptables -t "$table" -X "$ch"; done 2>/dev/null
  done
  rm -rf $T; }
trap cleanup EXIT
RUST_LOG=${RUST_LOG:-info,engine::build_backend=debug,build=debug,store::layer=debug} BERTH_MONITOR=$D/berth-monitor $BERTH daemon --debug --root $T/root --run-root $T/run -H unix://$T/s.sock --runtime $D/berth-runtime --bridge bp$hex --bip ${pre}0/24 --iptables-chain-prefix BP${hex^^} 2>$T/log &
BPID=$!
for _ in $(seq 100); do curl -sf --unix-socket $T/s.sock http://x/_ping >/dev/null && break; sleep 0.1; done
B="$BERTH -H unix://$T/s.sock"
scripts/busybox-rootfs.sh > $T/bb.tar
$B import $T/bb.tar busybox:latest >/dev/null
mkdir -p $T/ctx/big
per=$((SIZE_MB/16)); for i in $(seq -w 1 16); do head -c $((per<<20)) /dev/urandom > $T/ctx/big/p$i.bin; done
printf 'FROM busybox\nCOPY big/ /big/\n' > $T/ctx/Dockerfile
[ -n "${NOCOPY:-}" ] && printf 'FROM busybox\nENV A=1\n' > $T/ctx/Dockerfile
sync
if [ -n "${STRACE:-}" ]; then strace -f -tt -T -e trace=fsync,syncfs,fdatasync,rename,renameat2,mount,umount2,unlinkat,openat -p $BPID -o /tmp/strace.out & SPID=$!; sleep 1; fi
# The daemon's CPU time (user + system, all threads) over the build, in seconds.
cpu_s() { awk '{print ($14 + $15) / 100}' /proc/$BPID/stat; }
# Its minor page faults (every first touch of a fresh page of its own memory).
minflt() { awk '{print $10}' /proc/$BPID/stat; }
c0=$(cpu_s)
f0=$(minflt)
s=$(date +%s.%N)
if [ -n "${DF:-}" ]; then
  members="Dockerfile big"; [ "$DF" = last ] && members="big Dockerfile"
  /usr/bin/time -f "client: %e s, %U user %S sys" sh -c "tar --sort=name -C $T/ctx -cf - $members | curl -sf --unix-socket $T/s.sock -H 'Content-Type: application/x-tar' -X POST -T - 'http://x/build?t=large&q=1&nocache=1'" >/dev/null
elif [ -n "${PERF:-}" ]; then
  perf record -o /tmp/perf.data -F 999 -g -a -- $B build -q --no-cache -t large $T/ctx >/dev/null 2>/tmp/perf.err
else
  /usr/bin/time -f "CLI: %e s, %U user %S sys, %R minor faults" $B build -q --no-cache -t large $T/ctx >/dev/null
fi
e=$(date +%s.%N)
[ -n "${STRACE:-}" ] && { kill $SPID; wait $SPID 2>/dev/null || true; }
grep -E 'unpacked|hashed|copied|captured|prediction' $T/log | sed 's/\x1b\[[0-9;]*m//g' | sed 's/^.*Z //' | cut -c1-250 || true
echo "build: $(echo "$e - $s" | bc -l) s = $(echo "$SIZE_MB / ($e - $s)" | bc -l) MB/s, daemon CPU $(echo "$(cpu_s) - $c0" | bc -l) s, $(($(minflt) - f0)) minor faults"
if [ -n "${PUSH:-}" ]; then
  port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000))
  $BERTH registry serve --addr 127.0.0.1:$port --root $T/registry 2>/dev/null & RPID=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/v2/ >/dev/null && break; sleep 0.1; done
  $B tag large 127.0.0.1:$port/large:1
  s=$(date +%s.%N); $B push 127.0.0.1:$port/large:1 >/dev/null; e=$(date +%s.%N)
  echo "push: $(echo "$e - $s" | bc -l) s"
fi
if [ -n "${SAVE:-}" ]; then
  for i in 1 2; do
    s=$(date +%s.%N); $B save -o $T/saved.tar large; sync; e=$(date +%s.%N)
    echo "save $i: $(echo "$e - $s" | bc -l) s"; rm -f $T/saved.tar
  done
fi
[ -n "${KEEP:-}" ] && { echo "daemon pid $BPID root $T"; sleep $KEEP; }
true
