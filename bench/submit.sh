#!/usr/bin/env bash
# Submit throughput: Easel's POST /v1/images/generate (API role: accept and queue, SQLite WAL,
# synchronous=FULL) against the anchor's bare axum server, both driven by wrk -t2 -c64 on the
# same 2 cores in the same run. Prints one RESULT line per measurement and the ratios.
# Usage: bench/submit.sh [DURATION=10] [CONNECTIONS=64]
set -euo pipefail
T=${1:-10}; C=${2:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHORS:-$ROOT/../shared/anchors}/http
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin easel
CARGO_TARGET_DIR=/tmp/anchors/target cargo build --release --quiet --manifest-path "$ANCHOR/Cargo.toml"
EASEL=$ROOT/target/release/easel
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
rss() { awk '/VmRSS/{print $2}' /proc/$1/status; }

# --- anchor: minimal axum, same wrk settings
PORT=4001 THREADS=2 /tmp/anchors/target/release/anchor-http 2>/dev/null & APID=$!
sleep 0.5
wrk -t2 -c$C -d2s -s "$ANCHOR/report.lua" http://127.0.0.1:4001/hello >/dev/null
hello=$(wrk -t2 -c$C -d${T}s --latency -s "$ANCHOR/report.lua" http://127.0.0.1:4001/hello | grep RESULT)
echo "anchor GET /hello  c$C: $hello"
echo_=$(wrk -t2 -c$C -d${T}s --latency -s "$ANCHOR/post_report.lua" http://127.0.0.1:4001/echo | grep RESULT)
echo "anchor POST /echo  c$C: $echo_"
kill $APID; wait $APID 2>/dev/null || true

# --- easel: API role only, so the figure is accepted (durably queued) jobs per second
KEY=$("$EASEL" --data-dir "$WORK" create-tenant bench 1000000000 1000 | grep -o 'img_[A-Za-z0-9]*')
RUST_LOG=warn "$EASEL" --data-dir "$WORK" serve --role api --port 4002 >/dev/null 2>&1 & EPID=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:4002/health >/dev/null && break; sleep 0.1; done
idle=$(rss $EPID)
EASEL_KEY=$KEY wrk -t2 -c$C -d2s -s "$ROOT/bench/submit.lua" http://127.0.0.1:4002/v1/images/generate >/dev/null
submit=$(EASEL_KEY=$KEY wrk -t2 -c$C -d${T}s --latency -s "$ROOT/bench/submit.lua" http://127.0.0.1:4002/v1/images/generate | grep RESULT)
loaded=$(rss $EPID)
echo "easel  POST submit c$C: $submit"
echo "easel  RSS idle ${idle} kB, after load ${loaded} kB"
kill $EPID; wait $EPID 2>/dev/null || true

rate() { sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$1"; }
echo "ratio submit/hello: $(echo "scale=3; $(rate "$submit") / $(rate "$hello")" | bc)"
echo "ratio submit/echo:  $(echo "scale=3; $(rate "$submit") / $(rate "$echo_")" | bc)"
