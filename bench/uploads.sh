#!/usr/bin/env bash
# The image library's pipeline against sharp (libvips, the editor origin's), same images, same
# run, same 2 threads: every image stored inside 2048 px (JPEG q90) with a thumbnail inside 300 px
# (q80). Then Easel's upload path over HTTP (16 senders of 2 MB JPEGs) with its peak RSS.
# Usage: bench/uploads.sh [THREADS=2] [IMAGES=100]. Installs sharp from npm into
# /tmp/anchors/sharp once and makes its 4000x3000 camera-like JPEGs there.
set -euo pipefail
THREADS=${1:-2}; N=${2:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHORS:-$ROOT/../shared/anchors}/sharp
W=/tmp/anchors/sharp
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin easel-bench
BENCH=${EASEL_BENCH_BIN:-$ROOT/target/release/easel-bench}
mkdir -p "$W" && cp "$ANCHOR/package.json" "$ANCHOR/make_images.js" "$ANCHOR/bench.js" "$W/"
(cd "$W" && { [ -d node_modules/sharp ] || npm install --silent --no-audit --no-fund; } \
  && node make_images.js "$W/images" "$N" >/dev/null)

sharp=$(cd "$W" && node bench.js "$W/images" "$THREADS" | tee /dev/stderr | grep RESULT)
easel=$("$BENCH" uploads --dir "$W/images" --images "$N" --threads "$THREADS" | tee /dev/stderr)
per_s() { grep "$1" <<<"$2" | sed -E 's/.*per_s=([0-9.]+).*/\1/'; }
sharp_pipeline=$(per_s 'sharp pipeline' "$sharp")
sharp_thumbs=$(per_s 'sharp thumbnail' "$sharp")
easel_pipeline=$(per_s 'uploads pipeline' "$easel")
echo "RESULT ratio easel_pipeline_over_sharp_pipeline=$(echo "scale=2; $easel_pipeline / $sharp_pipeline" | bc)" \
  "easel_pipeline_over_sharp_thumbnail_only=$(echo "scale=2; $easel_pipeline / $sharp_thumbs" | bc)"
