#!/usr/bin/env bash
# Berth's cgroup tests on a cgroup v2-only host: builds (or reuses) the test binaries on
# this machine, then runs them inside the VM of cgroup2-vm.sh, where only cgroup2 is
# mounted, with every controller. The build machine is a hybrid host (v1 controllers plus
# a cgroup2 mount), so without this the pure-v2 code paths would only meet fakes.
#
#   scripts/vm/cgroup2-tests.sh            # the cgroups crate's tests and tests/runtime_e2e.rs
#   scripts/vm/cgroup2-tests.sh --engine   # ... and the engine end-to-end tests with limits
#
# Uses $CARGO_TARGET_DIR like cargo does (after `cargo nextest run` nothing is rebuilt).
# Exit status 0 only when every test binary passed inside the VM; the summary line
# ("run-suites: SUMMARY ...") gives the counts.
set -euo pipefail
cd "$(dirname "$0")/../.."

tests=(-p cgroups -p berth --lib --test runtime_e2e)
if [ "${1:-}" = --engine ]; then
  tests+=(--test engine_features --test engine_lifecycle)
  shift
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "cgroup2-tests: SKIPPED: the VM runs Debian's amd64 kernel, and this host is $(uname -m)" >&2
  exit 0
fi

json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo test --locked --no-run "${tests[@]}" --message-format=json-render-diagnostics >"$json"
# DIR=BINARY for each test binary: cargo runs a test in its package's directory.
mapfile -t suites < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
  | "\(.manifest_path | sub("/Cargo.toml$"; ""))=\(.executable)"' "$json")
if [ ${#suites[@]} -eq 0 ]; then
  echo "cgroup2-tests: cargo built no test binary" >&2
  exit 1
fi
exec scripts/vm/cgroup2-vm.sh "$PWD/scripts/vm/run-suites.sh" "${suites[@]}"
