#!/usr/bin/env bash
# Installs Berth on a fresh Debian/Ubuntu machine: system packages, a release build, and
# `berth` + `berth-runtime` on the PATH (/usr/local/bin). Run as root.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/deps.sh
cargo build --release --locked --workspace --bins
install -m 0755 target/release/berth target/release/berth-runtime target/release/berth-monitor /usr/local/bin/
echo "installed: $(command -v berth) $(command -v berth-runtime)"
