#!/usr/bin/env bash
# Berth's cgroup tests on a cgroup v2-only host: builds (or reuses) the test binaries on
# this machine, then runs them inside the VM of cgroup2-vm.sh, where only cgroup2 is
# mounted, with every controller. The build machine is a hybrid host (v1 controllers plus
# a cgroup2 mount), so without this the pure-v2 code paths would only meet fakes.
#
#   scripts/vm/cgroup2-tests.sh            # the cgroups crate's tests and tests/runtime_e2e.rs
#   scripts/vm/cgroup2-tests.sh --engine   # ... and tests/engine_{features,lifecycle}.rs
#
# --engine is not part of ./test.sh: under QEMU's emulator (TCG, what this build machine
# gets, see cgroup2-vm.sh) a debug daemon is too slow for those tests' 25 s API timeouts
# (1 of 10 passed); it is meant for hosts where the VM runs under real KVM.
#
# Uses $CARGO_TARGET_DIR like cargo does (after `cargo nextest run` nothing is rebuilt).
# Exit status 0 only when every test binary passed inside the VM; the summary line
# ("run-suites: SUMMARY ...") gives the counts.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The whole workspace's lib tests are named so that cargo resolves features as
# `cargo nextest run --workspace` did (nothing rebuilt); only these binaries run.
targets=(--lib --test runtime_e2e)
wanted='["cgroups", "runtime_e2e"]'
if [ "${1:-}" = --engine ]; then
  targets+=(--test engine_features --test engine_lifecycle)
  wanted='["cgroups", "runtime_e2e", "engine_features", "engine_lifecycle"]'
  shift
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "cgroup2-tests: SKIPPED: the VM runs Debian's amd64 kernel, and this host is $(uname -m)" >&2
  exit 0
fi

json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo test --locked --no-run --workspace "${targets[@]}" --message-format=json-render-diagnostics >"$json"
# DIR=BINARY for each test binary: cargo runs a test in its package's directory.
mapfile -t suites < <(jq -r --argjson wanted "$wanted" 'select(.reason == "compiler-artifact"
    and .profile.test and .executable != null and (.target.name | IN($wanted[])))
  | "\(.manifest_path | sub("/Cargo.toml$"; ""))=\(.executable)"' "$json")
if [ ${#suites[@]} -eq 0 ]; then
  echo "cgroup2-tests: cargo built no test binary" >&2
  exit 1
fi
exec scripts/vm/cgroup2-vm.sh "$PWD/scripts/vm/run-suites.sh" "${suites[@]}"
