#!/usr/bin/env bash
# The OpenAI-compatible images API (`POST /v1/images/generations`) against LiteLLM's proxy, both
# in front of the anchor's fake upstream (1x1 PNG as b64_json after DELAY ms), and the upstream hit
# directly; wrk -c1 and -cC, upstream delay 0 and 200 ms, all in one run on the same 2 cores.
# Each Easel call is a whole job: submit, claim, the openai provider's call through the key pool,
# the image decoded and synced to disk, the answer when the job's event arrives.
# Usage: bench/openai_facade.sh [DURATION=10] [CONNECTIONS=64]
# Needs wrk and LiteLLM in /tmp/anchors/venv (python3 -m venv /tmp/anchors/venv &&
# /tmp/anchors/venv/bin/pip install 'litellm[proxy]'); set NO_LITELLM=1 to measure Easel alone.
set -euo pipefail
T=${1:-10}; C=${2:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHORS:-$ROOT/../shared/anchors}/litellm
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin easel
CARGO_TARGET_DIR=/tmp/anchors/target cargo build --release --quiet \
  --manifest-path "$ANCHOR/fakeupstream/Cargo.toml"
EASEL=${EASEL_BIN:-$ROOT/target/release/easel}
# EASEL_BENCH_KEEP=1 keeps the data folder: on an ext4 without journal, deleting tens of
# thousands of files makes creating files slower for minutes, which a next run would measure.
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -n "${EASEL_BENCH_KEEP:-}" ] || rm -rf "$WORK"' EXIT
peak_kb() { awk '/VmHWM/{print $2}' /proc/$1/status; }
tree_kb() { local t=0 p; for p in $1 $(pgrep -P $1); do t=$((t + $(ps -o rss= -p $p || echo 0))); done; echo $t; }
rate() { sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$1"; }
field() { sed -E "s/.*$2=([0-9.]+).*/\\1/" <<<"$1"; }
delay() { curl -sf -XPOST "127.0.0.1:4010/admin/delay?ms=$1" >/dev/null; }
load() { # load CONNS URL SCRIPT
  local th=$(( $1 == 1 ? 1 : 2 ))
  wrk -t$th -c$1 -d${T}s --timeout 30s -s "$3" "$2" | grep RESULT
}

PORT=4010 THREADS=1 /tmp/anchors/target/release/fakeupstream 2>/dev/null & FPID=$!
for _ in $(seq 50); do curl -sf 127.0.0.1:4010/stats >/dev/null && break; sleep 0.1; done

# --- Easel: one process (API + worker), SQLite, three upstream keys on the fake.
cat > "$WORK/easel.toml" <<TOML
[[openai_api.models]]
pattern = "fake-image"
provider = "openai"
model = "dall-e-3"
TOML
export EASEL_WORKER__CONCURRENCY=256 GLOBAL_CONCURRENCY_LIMIT=100000 GLOBAL_RPM_LIMIT=100000000
E="$EASEL --config $WORK/easel.toml --data-dir $WORK/data"
CREATED=$($E create-tenant bench 100000000 100000)
KEY=$(grep -o 'img_[A-Za-z0-9]*' <<<"$CREATED")
$E set-tenant-limits "$(grep -o 'ten_[a-z0-9]*' <<<"$CREATED")" 100000000 100000 --burst 50000000 >/dev/null
for k in a b c; do
  $E add-provider-key openai "sk-upstream-$k" 100000000 100000 --endpoint http://127.0.0.1:4010/v1 >/dev/null
done
BODY='{"model":"fake-image","prompt":"x","n":1,"size":"1024x1024","response_format":"b64_json"}'
t0=$(date +%s.%N)
RUST_LOG=warn $E serve --port 4002 >"$WORK/easel.log" 2>&1 & EPID=$!
until curl -sf -o /dev/null -XPOST 127.0.0.1:4002/v1/images/generations -H "Authorization: Bearer $KEY" \
  -H 'content-type: application/json' -d "$BODY"; do sleep 0.01; done
t1=$(date +%s.%N)
echo "easel cold start to first image: $(echo "$t1 - $t0" | bc) s; RSS $(awk '/VmRSS/{print $2}' /proc/$EPID/status) kB"
export EASEL_KEY=$KEY
delay 0; load 16 http://127.0.0.1:4002/v1/images/generations "$ROOT/bench/openai_images.lua" >/dev/null

declare -A R
for d in 0 200; do
  delay $d
  for c in 1 $C; do
    R[direct,$d,$c]=$(load $c http://127.0.0.1:4010/v1/images/generations "$ANCHOR/post_images.lua")
    R[easel,$d,$c]=$(load $c http://127.0.0.1:4002/v1/images/generations "$ROOT/bench/openai_images.lua")
    echo "d${d} c${c} direct ${R[direct,$d,$c]}"
    echo "d${d} c${c} easel  ${R[easel,$d,$c]}"
  done
done
echo "easel peak RSS $(peak_kb $EPID) kB"
kill $EPID; wait $EPID 2>/dev/null || true

if [ -z "${NO_LITELLM:-}" ]; then
  out=$("$ANCHOR/startup.sh"); LPID=$(cat /tmp/anchors/litellm.pid)
  echo "litellm $out"
  delay 0
  wrk -t2 -c16 -d5s --timeout 30s -s "$ANCHOR/post_images.lua" http://127.0.0.1:4000/v1/images/generations >/dev/null
  peak=0
  for d in 0 200; do
    delay $d
    for c in 1 $C; do
      ( while :; do tree_kb $LPID; sleep 0.5; done ) > "$WORK/litellm_rss" & SAMP=$!
      R[litellm,$d,$c]=$(load $c http://127.0.0.1:4000/v1/images/generations "$ANCHOR/post_images.lua")
      kill $SAMP; wait $SAMP 2>/dev/null || true
      p=$(sort -n "$WORK/litellm_rss" | tail -1); [ "${p:-0}" -gt $peak ] && peak=$p
      echo "d${d} c${c} litellm ${R[litellm,$d,$c]}"
      sleep 3 # the proxy drains what wrk left queued
    done
  done
  echo "litellm peak RSS ${peak} kB"
  kill $LPID; wait $LPID 2>/dev/null || true
  for d in 0 200; do
    for c in 1 $C; do
      echo "ratio easel/litellm d${d} c${c}: $(echo "scale=1; $(rate "${R[easel,$d,$c]}") / $(rate "${R[litellm,$d,$c]}")" | bc)"
    done
  done
fi
for d in 0 200; do
  for c in 1 $C; do
    for q in p50 p99; do
      added=$(echo "$(field "${R[easel,$d,$c]}" ${q}_ms) - $(field "${R[direct,$d,$c]}" ${q}_ms)" | bc)
      echo "easel added latency d${d} c${c} ${q}: ${added} ms"
    done
  done
done
