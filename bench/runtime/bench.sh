#!/usr/bin/env bash
# Benchmark: `run` of /bin/true on a busybox bundle (create -> start -> wait -> delete),
# berth-runtime side by side with runc (and crun when it works here), plus peak RSS.
#
# Usage: bench/runtime/bench.sh [RUNS]   (as root; builds berth-runtime in release mode)
# Writes bench/runtime/RESULTS.md.
set -euo pipefail

RUNS=${1:-100}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/runtime}
BERTH=${BERTH_RUNTIME:-$CARGO_TARGET_DIR/release/berth-runtime}
if [ -z "${BERTH_RUNTIME:-}" ]; then
    (cd "$REPO" && cargo build --release --bin berth-runtime >&2)
fi

WORK=$(mktemp -d /tmp/berth-bench-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# A busybox bundle running /bin/true with runc's default config (no terminal).
mkdir -p "$WORK/bundle/rootfs"/{bin,proc,sys,dev,tmp,etc}
cp /bin/busybox "$WORK/bundle/rootfs/bin/"
for a in sh true; do ln -s busybox "$WORK/bundle/rootfs/bin/$a"; done
(cd "$WORK/bundle" && "$BERTH" spec)
# ociVersion 1.0.2: what every runtime here accepts (Debian's crun 1.8 refuses 1.2).
jq '.ociVersion="1.0.2" | .process.terminal=false | .process.args=["/bin/true"]' "$WORK/bundle/config.json" > "$WORK/c.json"
mv "$WORK/c.json" "$WORK/bundle/config.json"

cmds=("$BERTH --root $WORK/berth run -b $WORK/bundle bench-berth")
names=("berth-runtime")
if command -v runc >/dev/null; then
    cmds+=("runc --root $WORK/runc run -b $WORK/bundle bench-runc")
    names+=("runc")
fi
if command -v crun >/dev/null && crun --root "$WORK/crun" run -b "$WORK/bundle" bench-crun-probe >"$WORK/crun.err" 2>&1; then
    cmds+=("crun --root $WORK/crun run -b $WORK/bundle bench-crun")
    names+=("crun")
else
    echo "crun: not installed or does not run on this host ($(cat "$WORK/crun.err" 2>/dev/null)); skipped" >&2
fi

hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$WORK/h.json" "${cmds[@]}" >&2
# The same, each run 150 ms after the last (as a container engine calls a runtime now and
# then): back to back, a run's cgroup join often comes within a grace period of the last
# one's and does not wait; spaced out, every run pays the kernel's attach grace period.
SPACED=${SPACED:-$(( RUNS < 40 ? RUNS : 40 ))}
hyperfine -N --warmup 3 --runs "$SPACED" --prepare "sleep 0.15" --export-json "$WORK/s.json" "${cmds[@]}" >&2

median() { jq -r ".results[$1].median * 1000" "${2:-$WORK/h.json}"; }
rss_kib() { # peak RSS of the command (max over it and the children it waits for)
    /usr/bin/time -f '%M' -o "$WORK/rss" $1 >/dev/null 2>&1 || true
    tail -1 "$WORK/rss"
}

berth_ms=$(median 0)
{
    echo "# berth-runtime benchmark"
    echo
    echo "\`run\` of \`/bin/true\` in a busybox bundle (runc's default config: pid, net, ipc, uts, mount,"
    echo "cgroup namespaces, cgroup created and removed): create, start, wait, delete. $RUNS runs each"
    echo "after 10 warm-up runs, with \`hyperfine -N\`, side by side in one run; then $SPACED runs each with"
    echo "\`--prepare 'sleep 0.15'\` (spaced)."
    echo
    echo "Host: $(uname -r), $(nproc) cores, $(runc --version 2>/dev/null | head -1 || echo 'no runc')."
    echo "Date: $(date -u +%Y-%m-%dT%H:%MZ)."
    echo
    echo "| runtime | median (ms) | mean ± σ (ms) | ratio to berth-runtime | spaced 150 ms: median (ms), ratio | peak RSS (KiB) |"
    echo "|---|---|---|---|---|---|"
    berth_spaced=$(median 0 "$WORK/s.json")
    for i in "${!names[@]}"; do
        med=$(median "$i")
        mean=$(jq -r ".results[$i].mean * 1000" "$WORK/h.json")
        sd=$(jq -r ".results[$i].stddev * 1000" "$WORK/h.json")
        rss=$(rss_kib "${cmds[$i]% *} rss-${names[$i]}")
        ratio=$(echo "$med $berth_ms" | awk '{printf "%.2f", $1/$2}')
        spaced=$(median "$i" "$WORK/s.json")
        sratio=$(echo "$spaced $berth_spaced" | awk '{printf "%.2f", $1/$2}')
        printf '| %s | %.2f | %.2f ± %.2f | %sx | %.2f, %sx | %s |\n' "${names[$i]}" "$med" "$mean" "$sd" "$ratio" "$spaced" "$sratio" "$rss"
    done
    echo
    echo "Targets: berth-runtime median < 10 ms, at most half of runc's; peak RSS < 5 MiB (5120 KiB)."
    echo
    echo 'Notes:'
    echo '- Peak RSS is `/usr/bin/time -f %M` of one `run` (the maximum over the runtime and the'
    echo '  children it waits for); most of it is file-backed (the binary and libc mapped in).'
    echo '- The largest single cost is the cgroup v1 migration of the init (writing cgroup.procs'
    echo '  waits for an RCU grace period); berth-runtime starts that grace period from a forked'
    echo '  child as soon as the cgroups exist and overlaps it with the rootfs setup. "Spaced"'
    echo '  runs come 150 ms apart, so each pays it (back to back, many runs do not).'
    echo '- The host is shared with parallel builds, so the spread is wide: compare medians from'
    echo '  the same run only. crun is skipped when missing or when it refuses this hybrid host.'
} > "$HERE/RESULTS.md"
cat "$HERE/RESULTS.md"
