#!/usr/bin/env bash
# The seed demo of issue 6: a Debian base image made with debootstrap, imported with
# `berth import`, then `berth build` of an nginx image (apt-get through the build's default
# bridge network and its NAT), `berth run --rm -d -p PORT:80` and curl of the page.
#
# Usage: scripts/seed-demo.sh [PORT]
#   BERTH=path/to/berth         the berth binary (default: target/debug/berth, else on PATH)
#   BERTH_HOST=unix:///PATH     use this running daemon; otherwise a private daemon is
#                               started on temporary directories with its own bridge,
#                               subnet and firewall chains, and removed at the end
#   DOCKER_TOO=1                also build the same Dockerfile with the real `docker build`
#                               (classic builder) pointed at the daemon
#   BERTH_DEBIAN_TAR=FILE       the debootstrap tarball cache
#                               (default /var/cache/berth-test/debian-bookworm-minbase.tar;
#                               made with `debootstrap --variant=minbase bookworm` from
#                               deb.debian.org when missing)
# Exit status 0 only when curl got the nginx welcome page. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-0}
BERTH=${BERTH:-}
if [ -z "$BERTH" ]; then
  for c in "${CARGO_TARGET_DIR:-target}/debug/berth" target/debug/berth "$(command -v berth || true)"; do
    [ -n "$c" ] && [ -x "$c" ] && { BERTH=$c; break; }
  done
fi
[ -n "$BERTH" ] && [ -x "$BERTH" ] || { echo "seed-demo: no berth binary (cargo build --bins, or set BERTH)" >&2; exit 1; }
BERTH=$(readlink -f "$BERTH")
TAR=${BERTH_DEBIAN_TAR:-/var/cache/berth-test/debian-bookworm-minbase.tar}
T=$(mktemp -d /tmp/berth-seed.XXXX)
TAG=seed-nginx-$$
NAME=seed-web-$$
say() { printf '== %s\n' "$*"; }

# A free TCP port when none was given.
if [ "$PORT" = 0 ]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi

# 1. The Debian base tarball (cached).
if [ ! -s "$TAR" ]; then
  command -v debootstrap >/dev/null || { echo "seed-demo: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 2; }
  say "debootstrap --variant=minbase bookworm (cached at $TAR)"
  mkdir -p "$(dirname "$TAR")"
  debootstrap --variant=minbase bookworm "$T/rootfs" http://deb.debian.org/debian >"$T/debootstrap.log" 2>&1 ||
    { tail -20 "$T/debootstrap.log" >&2; echo "seed-demo: debootstrap failed (is deb.debian.org reachable?)" >&2; exit 2; }
  tar --numeric-owner -C "$T/rootfs" -cf "$TAR.tmp.$$" . && mv "$TAR.tmp.$$" "$TAR"
  rm -rf "$T/rootfs"
fi

# 2. The daemon: the given one, or a private one.
DPID=
BRIDGE=
CHAINS=
cleanup() {
  set +e
  [ -n "${B:-}" ] && { $B rm -f "$NAME" >/dev/null 2>&1; $B rmi -f "$TAG" "$TAG-docker" >/dev/null 2>&1; }
  if [ -n "$DPID" ]; then
    kill "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null
    grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    ip link del "$BRIDGE" 2>/dev/null
    for table in filter nat; do
      iptables-save -t "$table" | grep -E "^-A [^ ]+ .*$CHAINS" | grep -v "^-A $CHAINS" |
        sed 's/^-A //' | while read -r rule; do eval iptables -t "$table" -D $rule 2>/dev/null; done
      for ch in $(iptables-save -t "$table" | sed -n "s/^:\($CHAINS[^ ]*\).*/\1/p"); do iptables -t "$table" -F "$ch" 2>/dev/null; done
      for ch in $(iptables-save -t "$table" | sed -n "s/^:\($CHAINS[^ ]*\).*/\1/p"); do iptables -t "$table" -X "$ch" 2>/dev/null; done
    done
  fi
  rm -rf "$T"
}
trap cleanup EXIT
if [ -z "${BERTH_HOST:-}" ]; then
  hex=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
  BRIDGE=sd$hex
  CHAINS=SD${hex^^}
  routes=$(ip -4 route)
  while :; do
    r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
    pre="10.$((160 + r % 40)).$((r / 40 % 256))."
    case "$routes" in *"$pre"*) ;; *) break ;; esac
  done
  MON=$(dirname "$BERTH")/berth-monitor
  RT=$(dirname "$BERTH")/berth-runtime
  say "starting a private berth daemon (bridge $BRIDGE, ${pre}0/24)"
  BERTH_MONITOR=$MON "$BERTH" daemon --root "$T/root" --run-root "$T/run" -H "unix://$T/d.sock" \
    --runtime "$RT" --bridge "$BRIDGE" --bip "${pre}0/24" --iptables-chain-prefix "$CHAINS" 2>"$T/daemon.log" &
  DPID=$!
  export BERTH_HOST=unix://$T/d.sock
  for _ in $(seq 200); do curl -sf --unix-socket "$T/d.sock" http://x/_ping >/dev/null && break; sleep 0.05; done
fi
B="$BERTH -H $BERTH_HOST"

# 3. Import, build, run, curl.
say "berth import $TAR debian:bookworm"
$B import "$TAR" debian:bookworm
mkdir -p "$T/ctx"
cat >"$T/ctx/Dockerfile" <<'EOF'
FROM debian:bookworm
RUN apt-get update && apt-get install -y nginx && rm -rf /var/lib/apt/lists/*
CMD ["nginx", "-g", "daemon off;"]
EOF
say "berth build -t $TAG"
start=$(date +%s.%N)
$B build -t "$TAG" "$T/ctx"
echo "build took $(echo "$(date +%s.%N) - $start" | bc) s"
say "berth build -t $TAG again (cached)"
start=$(date +%s.%N)
$B build -t "$TAG" "$T/ctx" | tail -3
echo "cached rebuild took $(echo "$(date +%s.%N) - $start" | bc) s"
say "berth run --rm -d -p $PORT:80 $TAG"
$B run --rm -d --name "$NAME" -p "$PORT:80" "$TAG"
page=
for _ in $(seq 100); do
  page=$(curl -sf "http://127.0.0.1:$PORT/" || true)
  [ -n "$page" ] && break
  sleep 0.1
done
say "curl http://127.0.0.1:$PORT/"
echo "$page" | grep -E "<title>|<h1>" || true
echo "$page" | grep -q "Welcome to nginx!" || { echo "seed-demo: no nginx page on port $PORT" >&2; exit 1; }
$B stop "$NAME" >/dev/null

if [ "${DOCKER_TOO:-0}" = 1 ]; then
  say "docker build (classic builder) with DOCKER_HOST=$BERTH_HOST"
  DOCKER_HOST=$BERTH_HOST DOCKER_BUILDKIT=0 DOCKER_CONFIG=$T/docker-config \
    docker build --no-cache -t "$TAG-docker" "$T/ctx" 2>&1 | grep -vE "DEPRECATED|BuildKit|environment-variable|^ *$"
  DOCKER_HOST=$BERTH_HOST DOCKER_CONFIG=$T/docker-config docker run --rm -d --name "$NAME" -p "$PORT:80" "$TAG-docker" >/dev/null
  page=
  for _ in $(seq 100); do
    page=$(curl -sf "http://127.0.0.1:$PORT/" || true)
    [ -n "$page" ] && break
    sleep 0.1
  done
  echo "$page" | grep -q "Welcome to nginx!" || { echo "seed-demo: no nginx page from the docker-built image" >&2; exit 1; }
  echo "docker-built image serves the nginx page too"
  DOCKER_HOST=$BERTH_HOST DOCKER_CONFIG=$T/docker-config docker stop "$NAME" >/dev/null
fi
say "seed demo OK"
