#!/usr/bin/env bash
# Runs every check and test of Berth: installs what a fresh machine lacks, then
# formatting, clippy (warnings are errors) and the whole test suite with nextest.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast "$@"
