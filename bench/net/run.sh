#!/usr/bin/env bash
# Network benchmark of berth's `net` crate (needs root, iproute2, iptables).
#
#   bench/net/run.sh [ITERATIONS] [MEGABYTES]
#
# Reports, for fresh network namespaces standing in for containers:
#   * latency of connect with one published port (one call), of connect + publish_ports
#     (two calls), and of disconnect; with the state file on disk and on tmpfs (the
#     difference is the fsync of the crash-safe state write);
#   * TCP throughput into a sink inside the namespace, through the published port on
#     127.0.0.1 (kernel DNAT) versus straight to the container address.
# Only the host and namespaces created here carry traffic.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release -p net --example netbench
exec "$CARGO_TARGET_DIR/release/examples/netbench" "${1:-40}" "${2:-1024}"
