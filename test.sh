#!/usr/bin/env bash
# Runs every check and test of Berth: installs what a fresh machine lacks, then
# formatting, clippy (warnings are errors), the whole test suite with nextest, and the
# cgroup tests again inside a cgroup v2-only VM (scripts/vm).
set -euo pipefail
cd "$(dirname "$0")"
./scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast "$@"
# The cgroup tests (cgroups crate, tests/runtime_e2e.rs) once more on a cgroup v2-only
# kernel, in a QEMU VM: this host mounts v1 controllers plus cgroup2 (hybrid). About 3
# minutes; left out when test.sh is given arguments (a filtered run).
if [ $# -eq 0 ]; then
  scripts/vm/cgroup2-tests.sh
else
  echo "test.sh: cgroup v2 VM check not run (arguments given); run scripts/vm/cgroup2-tests.sh"
fi
