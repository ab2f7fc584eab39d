#!/usr/bin/env bash
# Engine benchmarks (not a test): starts a berth daemon on temporary directories and measures
#   1. `docker run --rm busybox true` end to end through our daemon (hyperfine, median),
#   2. the same as raw API calls (create + start + wait + delete) with curl,
#   3. daemon idle RSS and monitor RSS,
#   4. GET /containers/json with 1000 containers,
#   5. 200 concurrent starts.
# Usage: bench/engine/bench.sh [path/to/berth] [runtime]   (defaults: target/release/berth, runc)
set -euo pipefail
cd "$(dirname "$0")/../.."
BERTH=${1:-target/release/berth}
RUNTIME=${2:-/usr/sbin/runc}
[ -x "$BERTH" ] || { echo "build first: cargo build --release -p berth -p engine" >&2; exit 1; }
MON=$(dirname "$BERTH")/berth-monitor
[ -x "$MON" ] || { echo "missing $MON: cargo build --release -p engine --bin berth-monitor" >&2; exit 1; }
T=$(mktemp -d /tmp/berth-bench.XXXX)
SOCK=$T/d.sock
cleanup() {
  curl -s --unix-socket "$SOCK" "http://x/containers/json?all=1" | jq -r '.[].Id' 2>/dev/null |
    while read -r id; do curl -s -X DELETE --unix-socket "$SOCK" "http://x/containers/$id?force=1" >/dev/null; done
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
BERTH_MONITOR=$MON "$BERTH" daemon --root "$T/root" --run-root "$T/run" -H "unix://$SOCK" --runtime "$RUNTIME" 2>"$T/daemon.log" &
DPID=$!
for _ in $(seq 100); do curl -sf --unix-socket "$SOCK" http://x/_ping >/dev/null && break; sleep 0.05; done
scripts/busybox-rootfs.sh | curl -sf --unix-socket "$SOCK" -X POST --data-binary @- \
  "http://x/images/create?fromSrc=-&repo=busybox&tag=latest" >/dev/null
export DOCKER_HOST=unix://$SOCK
api_run() {
  id=$(curl -sf --unix-socket "$SOCK" -X POST -H 'Content-Type: application/json' \
    -d '{"Image":"busybox","Cmd":["true"]}' http://x/containers/create | jq -r .Id)
  curl -sf --unix-socket "$SOCK" -X POST "http://x/containers/$id/start" >/dev/null
  curl -sf --unix-socket "$SOCK" -X POST "http://x/containers/$id/wait" >/dev/null
  curl -sf --unix-socket "$SOCK" -X DELETE "http://x/containers/$id" >/dev/null
}
export -f api_run; export SOCK
echo "== docker run --rm busybox true (through berth)"
hyperfine -N -w 3 -r 30 "docker run --rm busybox true" 2>/dev/null | grep -E "Time|Range" || true
echo "== API create+start+wait+delete (curl)"
hyperfine -w 3 -r 30 "bash -c api_run" 2>/dev/null | grep -E "Time|Range" || true
echo "== runc alone (create+start+delete of a prepared bundle) for comparison: see bench/runtime"
echo "== daemon idle RSS"
grep VmRSS "/proc/$DPID/status"
docker run -d busybox sleep 300 >/dev/null
MPID=$(pgrep -f "berth-monitor.*$T" | head -1)
echo "== monitor RSS (pid $MPID)"
grep -E "VmRSS|RssAnon" "/proc/$MPID/status"
echo "== create 1000 containers, then GET /containers/json?all=1"
for i in $(seq 1000); do
  curl -sf --unix-socket "$SOCK" -X POST -H 'Content-Type: application/json' \
    -d '{"Image":"busybox","Cmd":["true"]}' http://x/containers/create >/dev/null &
  (( i % 50 == 0 )) && wait
done; wait
hyperfine -N -w 3 -r 20 "curl -sf --unix-socket $SOCK http://x/containers/json?all=1" 2>/dev/null | grep -E "Time|Range" || true
echo "== 200 concurrent starts"
ids=$(curl -sf --unix-socket "$SOCK" "http://x/containers/json?all=1&limit=200" | jq -r '.[].Id')
start=$(date +%s.%N); fails=0
for id in $ids; do
  ( curl -sf --unix-socket "$SOCK" -X POST "http://x/containers/$id/start" >/dev/null || echo fail >>"$T/fails" ) &
done; wait
end=$(date +%s.%N)
[ -f "$T/fails" ] && fails=$(wc -l <"$T/fails")
echo "200 starts in $(echo "$end - $start" | bc) s, failures: $fails"
