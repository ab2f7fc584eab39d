#!/usr/bin/env bash
# Build benchmarks (not a test). Starts a berth daemon and a private dockerd (Debian's
# docker.io) on temporary directories, imports the same busybox image into both, and
# measures side by side in one run:
#   1. a fully cached rebuild of a 7-step Dockerfile with a 50-file context:
#      `berth build` against berth vs `docker build` (classic builder, DOCKER_BUILDKIT=0)
#      against dockerd; hyperfine medians and the ratio berth/docker;
#   2. a cold build (--no-cache) of one COPY step of a large context (SIZE_MB, default
#      1024, in 16 files of random data), through both daemons, in MB/s of context,
#      next to the raw disk: dd with fsync, and cp -r of the same directory + sync.
#      COLD_RUNS rounds (default 3), each measuring cp -r + sync, berth and docker one
#      after the other (so the three see the same disk weather); medians at the end.
# Usage: bench/build/bench.sh [path/to/berth]   (default: target/release/berth)
#   RUNS=20 SIZE_MB=1024 COLD_RUNS=3 bench/build/bench.sh
#   ONLY=cold bench/build/bench.sh    (skip the cached rebuild; ONLY=cached skips the cold COPY)
set -euo pipefail
cd "$(dirname "$0")/../.."
BERTH=${1:-target/release/berth}
RUNS=${RUNS:-20}
SIZE_MB=${SIZE_MB:-1024}
COLD_RUNS=${COLD_RUNS:-3}
ONLY=${ONLY:-}
[ -x "$BERTH" ] || { echo "build first: cargo build --release -p berth -p engine" >&2; exit 1; }
BERTH=$(readlink -f "$BERTH")
MON=$(dirname "$BERTH")/berth-monitor
RT=$(dirname "$BERTH")/berth-runtime
[ -x "$MON" ] && [ -x "$RT" ] || { echo "missing berth-monitor/berth-runtime next to $BERTH" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "needs hyperfine" >&2; exit 1; }
DOCKER=/usr/bin/docker; [ -x "$DOCKER" ] || DOCKER=docker
T=$(mktemp -d /tmp/berth-bbench.XXXX)
hex=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
BRIDGE=bb$hex
CHAINS=BB${hex^^}
routes=$(ip -4 route)
while :; do
  r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
  pre="10.$((160 + r % 40)).$((r / 40 % 256))."
  case "$routes" in *"$pre"*) ;; *) break ;; esac
done
cleanup() {
  set +e
  [ -n "${BPID:-}" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip link del "$BRIDGE" 2>/dev/null
  for table in filter nat; do
    iptables-save -t "$table" | grep -E "^-A [^ ]+ .*$CHAINS" | grep -v "^-A $CHAINS" |
      sed 's/^-A //' | while read -r rule; do eval iptables -t "$table" -D $rule 2>/dev/null; done
    for ch in $(iptables-save -t "$table" | sed -n "s/^:\($CHAINS[^ ]*\).*/\1/p"); do iptables -t "$table" -F "$ch"; iptables -t "$table" -X "$ch"; done 2>/dev/null
  done
  rm -rf "$T"
}
trap cleanup EXIT

# Daemons.
BSOCK=$T/berth.sock
BERTH_MONITOR=$MON "$BERTH" daemon --root "$T/berth" --run-root "$T/berth-run" -H "unix://$BSOCK" \
  --runtime "$RT" --bridge "$BRIDGE" --bip "${pre}0/24" --iptables-chain-prefix "$CHAINS" 2>"$T/berth.log" &
BPID=$!
DSOCK=$T/docker.sock
mkdir -p "$T/dcfg"; echo '{}' >"$T/dcfg/daemon.json"
ns=berth-bench-$hex
dockerd --config-file "$T/dcfg/daemon.json" --data-root "$T/docker" --exec-root "$T/dexec" \
  --pidfile "$T/dockerd.pid" -H "unix://$DSOCK" --bridge=none --iptables=false --ip-masq=false \
  --userland-proxy=false --containerd-namespace "$ns" --containerd-plugins-namespace "$ns-p" \
  >"$T/dockerd.log" 2>&1 &
DPID=$!
for _ in $(seq 200); do curl -sf --unix-socket "$BSOCK" http://x/_ping >/dev/null && break; sleep 0.05; done
for _ in $(seq 600); do curl -sf --unix-socket "$DSOCK" http://x/_ping >/dev/null && break; sleep 0.1; done
curl -sf --unix-socket "$DSOCK" http://x/_ping >/dev/null || { tail "$T/dockerd.log"; echo "dockerd did not start" >&2; exit 1; }
B="$BERTH -H unix://$BSOCK"
D="env DOCKER_BUILDKIT=0 DOCKER_CONFIG=$T/dconf $DOCKER -H unix://$DSOCK"
scripts/busybox-rootfs.sh >"$T/bb.tar"
$B import "$T/bb.tar" busybox:latest >/dev/null
$D import "$T/bb.tar" busybox:latest >/dev/null
echo "berth: $($B version --format '{{.Server.Version}}' 2>/dev/null || echo ?) ($BERTH)"
echo "dockerd: $(dockerd --version)"
echo "host: $(nproc) cores, $(uname -r)"

# 1. Cached rebuild.
if [ "$ONLY" != cold ]; then
C=$T/ctx
mkdir -p "$C/files"
for i in $(seq -w 1 50); do head -c 4096 /dev/urandom >"$C/files/f$i.bin"; done
echo extra >"$C/extra.txt"
cat >"$C/Dockerfile" <<'EOF'
FROM busybox
ENV APP=/app
WORKDIR /app
COPY files/ /app/files/
RUN cat /app/files/* | wc -c > /app/size
COPY extra.txt /app/
CMD ["cat", "/app/size"]
EOF
$B build -q -t cached "$C" >/dev/null
$D build -q --network none -t cached "$C" >/dev/null
echo
echo "== fully cached rebuild: 7 steps, 50-file context ($RUNS runs each)"
hyperfine -N -w 3 -r "$RUNS" --export-json "$T/cached.json" \
  -n berth "$B build -q -t cached $C" \
  -n docker "$D build -q --network none -t cached $C" 2>/dev/null | grep -E "Time|Range|±" || true
read -r mb md < <(jq -r '[.results[] | .median] | "\(.[0]) \(.[1])"' "$T/cached.json")
printf 'median berth %.1f ms, docker %.1f ms, berth/docker = %.2f\n' \
  "$(echo "$mb*1000" | bc -l)" "$(echo "$md*1000" | bc -l)" "$(echo "$mb/$md" | bc -l)"
fi

# 2. Cold COPY of a large context.
[ "$ONLY" = cached ] && exit 0
L=$T/large
mkdir -p "$L/big"
per=$((SIZE_MB / 16))
for i in $(seq -w 1 16); do head -c $((per << 20)) /dev/urandom >"$L/big/part$i.bin"; done
printf 'FROM busybox\nCOPY big/ /big/\n' >"$L/Dockerfile"
total=$((per * 16))
sync
echo
echo "== cold COPY build of a ${total} MB context (16 files), --no-cache"
rate() { echo "scale=1; $total / $1" | bc -l; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t=$(secs dd if=/dev/zero of="$T/dd.bin" bs=1M count="$total" conv=fsync status=none); rm -f "$T/dd.bin"
printf 'dd (write + fsync):        %6.2f s  %7s MB/s\n' "$t" "$(rate "$t")"
: >"$T/cp.t"; : >"$T/berth.t"; : >"$T/docker.t"
for r in $(seq "$COLD_RUNS"); do
  # New mtimes each round: a new layer (diff id) for both daemons, nothing reused.
  touch -d "@$((1700000000 + r))" "$L"/big/*
  sync
  t=$(secs sh -c "cp -r '$L/big' '$T/cp' && sync"); rm -rf "$T/cp"; echo "$t" >>"$T/cp.t"
  printf '[%d] cp -r + sync:            %6.2f s  %7s MB/s\n' "$r" "$t" "$(rate "$t")"
  sync
  t=$(secs $B build -q --no-cache -t large "$L"); echo "$t" >>"$T/berth.t"
  printf '[%d] berth build --no-cache:  %6.2f s  %7s MB/s\n' "$r" "$t" "$(rate "$t")"
  sync
  t=$(secs $D build -q --no-cache -t large "$L"); echo "$t" >>"$T/docker.t"
  printf '[%d] docker build --no-cache: %6.2f s  %7s MB/s\n' "$r" "$t" "$(rate "$t")"
done
c=$(median <"$T/cp.t"); b=$(median <"$T/berth.t"); d=$(median <"$T/docker.t")
printf 'median of %d: cp -r + sync %s MB/s, berth %s MB/s, docker %s MB/s; berth/cp = %.2f, berth/docker = %.2f\n' \
  "$COLD_RUNS" "$(rate "$c")" "$(rate "$b")" "$(rate "$d")" "$(echo "$c/$b" | bc -l)" "$(echo "$d/$b" | bc -l)"
