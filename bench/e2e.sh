#!/usr/bin/env bash
# End to end: `easel serve` (API + worker in one process, SQLite WAL synchronous=FULL, the
# local renderer at 0 ms and 8x8 px) driven by wrk -t2 -c64 for DURATION seconds; then
# `easel-bench stats` waits for every job to end and reports jobs/s from first submit to last
# SUCCEEDED, with submit-to-SUCCEEDED p50/p99 (queueing included: the load saturates).
# Then `easel-bench` in-process at a steady rate for Easel's own overhead below saturation.
# Usage: bench/e2e.sh [DURATION=10] [RATE=1000]
set -euo pipefail
T=${1:-10}; RATE=${2:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin easel --bin easel-bench
BIN=$ROOT/target/release
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
KEY=$("$BIN/easel" --data-dir "$WORK" create-tenant bench 1000000000 1000000 | grep -o 'img_[A-Za-z0-9]*')
export EASEL_PROVIDERS__LOCAL__DRAFT_SIZE=8 EASEL_WORKER__CONCURRENCY=256 EASEL_WORKER__POLL_MS=50
# The origin's global defaults (GLOBAL_RPM_LIMIT 1000) would be the bottleneck, not Easel.
export GLOBAL_RPM_LIMIT=1000000000 GLOBAL_CONCURRENCY_LIMIT=100000
RUST_LOG=warn "$BIN/easel" --data-dir "$WORK" serve --port 4003 >/dev/null 2>&1 & EPID=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:4003/health >/dev/null && break; sleep 0.1; done
idle=$(awk '/VmRSS/{print $2}' /proc/$EPID/status)
peak=$idle
( while kill -0 $EPID 2>/dev/null; do awk '/VmRSS/{print $2}' /proc/$EPID/status; sleep 0.2; done ) > "$WORK/rss.txt" &
load=$(EASEL_KEY=$KEY wrk -t2 -c64 -d${T}s --latency -s "$ROOT/bench/submit.lua" http://127.0.0.1:4003/v1/images/generate | grep RESULT)
echo "submit under e2e load c64: $load"
"$BIN/easel-bench" stats "$WORK/easel.db"
peak=$(sort -n "$WORK/rss.txt" | tail -1)
echo "easel RSS idle ${idle} kB, peak ${peak} kB"
kill $EPID; wait $EPID 2>/dev/null || true
"$BIN/easel-bench" --jobs 2000 --rate "$RATE" --seconds 5 | grep -E "overhead|RSS"
