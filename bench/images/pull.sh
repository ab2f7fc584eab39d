#!/usr/bin/env bash
# Benchmark: pull (download + extract) and load of a 5-layer ~100 MB image, Berth against
# a private dockerd, side by side in one run, from Debian's docker-registry on 127.0.0.1.
# See crates/distribution/examples/pull_vs_docker.rs for what exactly is timed.
#
# Usage: bench/images/pull.sh [RUNS] [MB] [LAYERS]   (as root; needs docker.io and
#        docker-registry; builds the example in release mode)
# Prints the report; with WRITE_RESULTS=1 also writes bench/images/RESULTS.md.
set -euo pipefail

RUNS=${1:-5}
MB=${2:-100}
LAYERS=${3:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/interop}

for c in dockerd /usr/bin/docker docker-registry; do
    command -v "$c" >/dev/null || { echo "missing $c (apt-get install docker.io docker-registry)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (private dockerd)" >&2; exit 1; }

(cd "$REPO" && cargo build --release -p distribution --example pull_vs_docker >&2)
BIN=$CARGO_TARGET_DIR/release/examples/pull_vs_docker

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
"$BIN" --runs "$RUNS" --mb "$MB" --layers "$LAYERS" | tee "$OUT"

if [ "${WRITE_RESULTS:-0}" = 1 ]; then
    {
        echo "# Image pull / load: berth vs docker"
        echo
        echo "Command: \`WRITE_RESULTS=1 bench/images/pull.sh $RUNS $MB $LAYERS\`"
        echo "($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), load average before: $LOAD, commit $(cd "$REPO" && git rev-parse --short HEAD))"
        echo
        echo '```text'
        cat "$OUT"
        echo '```'
        cat <<'NOTES'

What is timed (see crates/distribution/examples/pull_vs_docker.rs):

- The image: 5 gzip layers, each a tar of 1 MiB random files (3/4 of it) and 100 KiB
  hex-text files (gzip halves those), built with the store's API and pushed with Berth's
  client into Debian's `docker-registry` 2.8 on 127.0.0.1, the server for both sides.
- **pull, docker**: `docker pull -q` against a private dockerd 20.10 (overlay2, own data
  root), after `docker rmi` of every image and `docker image prune -a -f` (nothing left to
  reuse: it downloads and extracts every layer again).
- **pull, berth**: `RegistryClient::pull` into a fresh `Store` plus `Store::unpack` (every
  layer extracted into its overlay snapshot, diff ids verified), in-process. Berth also
  keeps the compressed blobs in its content store (fsynced); docker keeps only the
  extracted layers. After each run the bench checks that the snapshots really hold the
  extracted bytes.
- **load**: the archive `docker save` wrote for this image (docker-archive, uncompressed
  layers); `docker load -q -i` after clearing docker's images vs `Store::load` into a
  fresh store (which extracts and verifies every layer before registering the image).
- Runs are interleaved (docker, berth, docker, berth, ...), `sync` before each timed step,
  one untimed warm-up pull per side. MB/s: compressed layer bytes for pulls, archive bytes
  for loads. Docker's times include the docker CLI process (tens of ms).
- The machine is shared with other builds (2 cores), so single runs vary by ~20 %; the
  medians and the ratio are the figures to read.
NOTES
    } > "$HERE/RESULTS.md"
    echo "wrote $HERE/RESULTS.md" >&2
fi
