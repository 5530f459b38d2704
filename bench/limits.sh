#!/usr/bin/env bash
# Limiter decisions per second: Easel's `Limiter` trait (memory, and Redis through its Lua
# script) against the anchor's bare Redis GCRA Lua script driven by redis-benchmark -c 50, on
# a private redis-server, in the same run.
# Usage: bench/limits.sh [SECONDS=5]
set -euo pipefail
S=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHORS:-$ROOT/../shared/anchors}/redis
PORT=6391
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin easel-bench
redis-server --port $PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
trap 'redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true' EXIT
for _ in $(seq 50); do redis-cli -p $PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
SHA=$(redis-cli -p $PORT script load "$(cat "$ANCHOR/gcra.lua")")
anchor=$(redis-benchmark -p $PORT -c 50 -n 400000 -r 10000 --csv EVALSHA "$SHA" 1 rl:__rand_int__ 10 20 2>/dev/null | tail -1)
anchor_rps=$(echo "$anchor" | cut -d, -f2 | tr -d '"')
echo "anchor bare GCRA Lua (redis-benchmark -c 50 -P 1): $anchor_rps ops/s"
redis_line=$("$ROOT/target/release/easel-bench" limiter --redis "redis://127.0.0.1:$PORT" --seconds "$S" --concurrency 50)
echo "easel $redis_line"
mem_line=$("$ROOT/target/release/easel-bench" limiter --seconds "$S" --concurrency 50)
echo "easel $mem_line"
rate() { sed -E 's/.*decisions_per_s=([0-9.]+).*/\1/' <<<"$1"; }
echo "ratio easel redis / bare Lua: $(echo "scale=3; $(rate "$redis_line") / $anchor_rps" | bc)"
