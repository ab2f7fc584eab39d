#!/usr/bin/env bash
# System packages Berth and its tests need; installs only what is missing.
set -euo pipefail
pkgs=(busybox-static pkg-config libseccomp-dev iptables iproute2 curl jq docker-registry apache2-utils runc skopeo docker.io podman
  qemu-system-x86)  # qemu: the cgroup v2-only VM of scripts/vm (its kernel is fetched there)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The distribution's docker-registry starts itself as a service on :5000; tests start their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
