#!/usr/bin/env bash
# Installs Berth on a fresh Debian/Ubuntu machine: system packages, a release build, and
# `berth`, `berth-runtime` and `berth-monitor` on the PATH (/usr/local/bin). Run as root.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/deps.sh
cargo build --release --locked --workspace --bins
tdir=${CARGO_TARGET_DIR:-target}
install -m 0755 "$tdir/release/berth" "$tdir/release/berth-runtime" "$tdir/release/berth-monitor" /usr/local/bin/
echo "installed: $(command -v berth) $(command -v berth-runtime) $(command -v berth-monitor)"
