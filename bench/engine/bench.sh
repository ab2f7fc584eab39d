#!/usr/bin/env bash
# Engine benchmark (not a test), as root. Starts a berth daemon (runtime: berth-runtime) on
# temporary directories, a private dockerd (Debian's docker.io) and podman on temporary
# roots, all with the same busybox image imported from Debian's busybox-static, and measures
# side by side in one run:
#   1. `run --rm busybox true` end to end: berth CLI -> berth daemon (default bridge and
#      --network none), docker CLI -> berth daemon, docker CLI -> dockerd, podman;
#   2. daemon idle RSS, and the memory of one running container's monitor;
#   3. GET /containers/json with 1000 containers;
#   4. 200 containers started concurrently.
# dockerd runs with --iptables=false --ip-masq=false (it must not touch the host's
# firewall here) and --bridge=bbd<pid>, a bridge this script makes with an address of its
# own: a plain `docker run` takes docker's default-bridge path (veth, address, the
# bridge) as berth's does. A user-defined network of dockerd's (embedded DNS) and
# --network none are rows too; podman runs with --network none. Each row is compared with
# berth's default (bridge) figure and with berth's own figure in the same network mode
# (like for like). DOCKERD_BRIDGE=none runs dockerd with --bridge=none instead.
#
# Usage: bench/engine/bench.sh [RUNS]   (default 40). Binaries: $BIN (default
# target/release, built with `cargo build --release --workspace --bins`). ONLY=run: the
# run and memory sections alone; KEEP=DIR: keep hyperfine's output there.
set -euo pipefail
RUNS=${1:-40}
cd "$(dirname "$0")/../.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
for b in berth berth-runtime berth-monitor; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: cargo build --release --workspace --bins" >&2; exit 1; }
done
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
T=$(mktemp -d /tmp/berth-ebench.XXXX)
SOCK=$T/berth.sock
DSOCK=$T/docker.sock
BR=bbench$$
cleanup() {
  set +e
  curl -s --unix-socket "$SOCK" "http://x/containers/json?all=1" | jq -r '.[].Id' 2>/dev/null |
    xargs -r -P 8 -I{} curl -s -X DELETE --unix-socket "$SOCK" "http://x/containers/{}?force=1" >/dev/null
  [ -n "${BPID:-}" ] && kill "$BPID" && wait "$BPID"
  [ -n "${DPID:-}" ] && DOCKER_HOST=unix://$DSOCK $DOCKER network rm "bbnet$$" >/dev/null 2>&1
  [ -n "${DPID:-}" ] && kill "$DPID" && wait "$DPID"
  ip link del "bbd$$" 2>/dev/null; ip link del "bbu$$" 2>/dev/null
  [ -n "${PODMAN:-}" ] && $PODMAN rm -af >/dev/null 2>&1
  grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  ip link del "$BR" 2>/dev/null
  for t in filter nat; do
    iptables -t $t -S | grep -o -- "-j BBENCH[A-Z0-9_-]*" | sort -u | while read -r _ c; do
      iptables -t $t -S | grep -- "-j $c" | sed 's/^-A/-D/' | xargs -r -L1 iptables -t $t
      iptables -t $t -F "$c"; iptables -t $t -X "$c"
    done
  done
  rm -rf "$T"
}
trap cleanup EXIT
trap "exit 130" INT TERM
# Each engine's run-time state (berth's --run-root, dockerd's --exec-root, podman's
# runroot) on a tmpfs, as /run is on a systemd host; data roots stay on the disk under $T.
# (Where /run is on the disk, as on this build machine's journal-less ext4, every file
# created there also pays ext4's scan of recently deleted inodes: docs/benchmarks.md.)
RUN=$T/run
mkdir -p "$RUN" && mount -t tmpfs -o mode=0711 berth-bench "$RUN"
scripts/busybox-rootfs.sh > "$T/busybox.tar"

# --- berth
BERTH_MONITOR=$BIN/berth-monitor "$BIN/berth" daemon --root "$T/broot" --run-root "$RUN/brun" \
  -H "unix://$SOCK" --runtime "$BIN/berth-runtime" --bridge "$BR" --bip 10.213.$((RANDOM % 200)).1/24 \
  --iptables-chain-prefix BBENCH 2>"$T/berth.log" &
BPID=$!
for _ in $(seq 100); do curl -sf --unix-socket "$SOCK" http://x/_ping >/dev/null && break; sleep 0.05; done
"$BIN/berth" -H "unix://$SOCK" import "$T/busybox.tar" busybox:latest >/dev/null
BERTH="$BIN/berth -H unix://$SOCK"

# --- dockerd (optional)
DOCKER=/usr/bin/docker; [ -x $DOCKER ] || DOCKER=$(command -v docker || true)
if command -v dockerd >/dev/null && [ -n "$DOCKER" ]; then
  echo '{}' > "$T/daemon.json"
  # DOCKERD_BRIDGE=none: dockerd with no default bridge at all (--bridge=none), its
  # fastest set-up; a plain `docker run` then gets no network.
  DBRIDGE=${DOCKERD_BRIDGE:-bbd$$}
  if [ "$DBRIDGE" != none ]; then
    DNET=10.218.$((RANDOM % 200))
    ip link add "$DBRIDGE" type bridge && ip addr add "$DNET.1/24" dev "$DBRIDGE" && ip link set "$DBRIDGE" up
  fi
  dockerd --config-file "$T/daemon.json" --data-root "$T/ddata" --exec-root "$RUN/dexec" \
    --pidfile "$T/dockerd.pid" -H "unix://$DSOCK" --bridge="$DBRIDGE" --iptables=false --ip-masq=false \
    --containerd-namespace "bbench$$" --containerd-plugins-namespace "bbench$$-p" >"$T/dockerd.log" 2>&1 &
  DPID=$!
  for _ in $(seq 200); do DOCKER_HOST=unix://$DSOCK $DOCKER version >/dev/null 2>&1 && break; sleep 0.1; done
  DOCKER_HOST=unix://$DSOCK $DOCKER import "$T/busybox.tar" busybox:latest >/dev/null || DPID_BAD=1
fi

# --- podman (optional)
if command -v podman >/dev/null; then
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' > "$T/containers.conf"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/proot"\nrunroot = "%s/prun"\n' "$T" "$RUN" > "$T/storage.conf"
  export CONTAINERS_CONF=$T/containers.conf CONTAINERS_STORAGE_CONF=$T/storage.conf
  PODMAN="podman --root $T/proot --runroot $RUN/prun --tmpdir $T/ptmp --cgroup-manager cgroupfs --events-backend file"
  $PODMAN import "$T/busybox.tar" localhost/busybox:latest >/dev/null 2>&1 || PODMAN=
  [ -n "$PODMAN" ] && ! $PODMAN run --rm --network none localhost/busybox true >/dev/null 2>&1 && PODMAN=
fi

echo "== run --rm busybox true ($RUNS runs each, hyperfine -N, after 5 warm-ups)"
# `same` is the row of berth's own CLI and daemon with the same network mode as the row
# (0: bridge, 1: none), for the like-for-like ratio.
cmds=("$BERTH run --rm busybox true" "$BERTH run --rm --network none busybox true")
names=("berth CLI -> berth daemon (bridge)" "berth CLI -> berth daemon (--network none)")
same=(0 1)
if [ -n "$DOCKER" ]; then
  cmds+=("env DOCKER_HOST=unix://$SOCK $DOCKER run --rm busybox true")
  names+=("docker CLI -> berth daemon (bridge)")
  same+=(0)
fi
if [ -n "${DPID:-}" ] && [ -z "${DPID_BAD:-}" ]; then
  cmds+=("env DOCKER_HOST=unix://$DSOCK $DOCKER run --rm busybox true")
  if [ "$DBRIDGE" = none ]; then
    names+=("docker CLI -> dockerd --bridge=none (none)")
    same+=(1)
  else
    names+=("docker CLI -> dockerd (default bridge)")
    same+=(0)
  fi
  cmds+=("env DOCKER_HOST=unix://$DSOCK $DOCKER run --rm --network none busybox true")
  names+=("docker CLI -> dockerd (--network none)")
  same+=(1)
  # A user-defined network of dockerd's (its embedded DNS; no iptables, as above).
  if DOCKER_HOST=unix://$DSOCK $DOCKER network create --subnet "10.219.$((RANDOM % 200)).0/24" \
    -o com.docker.network.bridge.name="bbu$$" "bbnet$$" >/dev/null 2>&1; then
    cmds+=("env DOCKER_HOST=unix://$DSOCK $DOCKER run --rm --network bbnet$$ busybox true")
    names+=("docker CLI -> dockerd (user-defined network)")
    same+=(0)
  fi
fi
if [ -n "${PODMAN:-}" ]; then
  cmds+=("$PODMAN run --rm --network none localhost/busybox true")
  names+=("podman (--network none)")
  same+=(1)
fi
hyperfine -N -w 5 -r "$RUNS" --export-json "$T/run.json" "${cmds[@]}" >"$T/hyperfine.log" 2>&1 || { cat "$T/hyperfine.log"; exit 1; }
# KEEP=DIR keeps hyperfine's own output and JSON (means, ranges, every run) there.
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$T/hyperfine.log" "$T/run.json" "$KEEP/"
med() { jq -r ".results[$1].median * 1000" "$T/run.json"; }
base=$(med 0)
printf '| %-45s | %10s | %16s | %18s |\n' "command" "median ms" "berth(bridge) ÷" "berth(same net) ÷"
printf '|%s|%s|%s|%s|\n' "-----------------------------------------------" "------------" "------------------" "--------------------"
for i in "${!names[@]}"; do
  m=$(med "$i")
  printf '| %-45s | %10.1f | %16.3f | %18.3f |\n' "${names[$i]}" "$m" "$(echo "$base / $m" | bc -l)" \
    "$(echo "$(med "${same[$i]}") / $m" | bc -l)"
done

echo
echo "== memory"
echo "berth daemon idle RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$BPID/status)"
cid=$($BERTH run -d busybox sleep 600)
# The monitor is the parent of the container's init.
ipid=$($BERTH inspect -f '{{.State.Pid}}' "$cid")
mpid=$(ps -o ppid= -p "$ipid" | tr -d ' ')
echo "monitor of one running container (pid $mpid): $(grep -E 'VmRSS|RssAnon' /proc/$mpid/status | tr -s ' \t' ' ' | paste -sd ',')"
echo "  PSS: $(awk '/^Pss:/ {s+=$2} END {print s " kB"}' /proc/$mpid/smaps_rollup)"
$BERTH rm -f "$cid" >/dev/null

# ONLY=run stops here (the sections below leave the kernel tearing down 1000 containers'
# cgroups and namespaces for a minute, which would load a run that follows at once).
[ "${ONLY:-}" = run ] && exit 0

echo
echo "== 1000 containers: create, then GET /containers/json?all=1"
s=$(date +%s.%N)
seq 1000 | xargs -P 16 -I{} curl -sf --unix-socket "$SOCK" -X POST -H 'Content-Type: application/json' \
  -d '{"Image":"busybox","Cmd":["true"]}' http://x/containers/create -o /dev/null
echo "created 1000 in $(echo "$(date +%s.%N) - $s" | bc) s"
hyperfine -N -w 3 -r 30 --export-json "$T/list.json" "curl -sf --unix-socket $SOCK http://x/containers/json?all=1 -o /dev/null" >/dev/null 2>&1
echo "GET /containers/json?all=1 (1000 containers, curl): median $(jq -r '.results[0].median * 1000' "$T/list.json") ms"
echo "response size: $(curl -sf --unix-socket "$SOCK" 'http://x/containers/json?all=1' | wc -c) bytes"

echo
echo "== 200 concurrent starts"
curl -sf --unix-socket "$SOCK" "http://x/containers/json?all=1&limit=200" | jq -r '.[].Id' > "$T/ids"
s=$(date +%s.%N)
xargs -P 200 -I{} sh -c "curl -sf --unix-socket $SOCK -X POST http://x/containers/{}/start -o /dev/null || echo fail" < "$T/ids" > "$T/fails"
e=$(date +%s.%N)
echo "200 starts in $(echo "$e - $s" | bc) s, failures: $(grep -c fail "$T/fails" || true)"
sleep 1
echo "exited with code 0: $(curl -sf --unix-socket "$SOCK" 'http://x/containers/json?all=1&filters=%7B%22exited%22%3A%5B%220%22%5D%7D' | jq length)"
