#!/usr/bin/env bash
# Scale-out throughput: 2 `easel serve --role api` and 3 `easel serve --role worker` processes
# (release build) on one PostgreSQL and one Redis, sharing one image folder; the workers call
# the fake Gemini upstream (`easel-bench fake-gemini`, 0 ms) through 4 keys of concurrency 64.
# Load generators and servers share the same cores.
#   1. submit: the two APIs alone (no worker yet), one wrk -t1 -c32 per API, both at once for
#      DURATION s (after 2 s of warm-up); the figure is the sum: jobs accepted (committed
#      QUEUED) per second.
#   2. drain: the 3 workers start on that backlog; jobs/s from the first start to the last
#      SUCCEEDED (database timestamps).
#   3. end to end: both wrk again for DURATION s while the workers run; jobs/s from the first
#      submit to the last SUCCEEDED of those jobs, and submit-to-SUCCEEDED p50/p99.
# Every job must end SUCCEEDED, and no key may have seen more than 64 requests at once.
#
# Usage: bench/scale.sh [DURATION=10]
#   PG_URL=postgres://... and REDIS_URL=redis://... use existing servers (a schema and a key
#   prefix of this run's own); otherwise private ones are started (PostgreSQL with default
#   settings: fsync on) on PG_PORT (5444) and REDIS_PORT (6394) and removed at the end.
#   API ports: API_PORT_1 (4021), API_PORT_2 (4022).
set -euo pipefail
T=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
command -v psql >/dev/null || { echo "needs psql (apt-get install postgresql-client)"; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin easel --bin easel-bench
BIN=$ROOT/target/release
P1=${API_PORT_1:-4021}; P2=${API_PORT_2:-4022}
WORK=$(mktemp -d /tmp/easel-scale.XXXXXX); chmod 711 "$WORK"
PIDS=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
stop_services() { :; }
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${SCHEMA:-}" ] && psql "$PG_URL" -qX -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  stop_services
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${PG_URL:-}" ]; then
  PG_PORT=${PG_PORT:-5444}
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  mkdir -p "$WORK/pg"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK/pg"
  as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK/pg" start >/dev/null
  PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
  STOP_PG=1
fi
if [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT=${REDIS_PORT:-6394}
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$WORK/redis.pid" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  REDIS_URL=redis://127.0.0.1:$REDIS_PORT
  STOP_REDIS=1
fi
stop_services() {
  [ -n "${STOP_REDIS:-}" ] && { redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; }
  [ -n "${STOP_PG:-}" ] && { as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true; }
  return 0
}
SCHEMA=easel_scale_bench_$$
psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE SCHEMA $SCHEMA"
case "$PG_URL" in *\?*) SEP='&' ;; *) SEP='?' ;; esac
PSQL=(psql "$PG_URL" -qAtX -v ON_ERROR_STOP=1 -c "SET search_path = $SCHEMA")
echo "# $(date -Is) scale: ${T}s per load phase, $(psql "$PG_URL" -AtX -c 'show server_version'), $(redis-server --version | grep -o 'v=[0-9.]*')"

KEYS=bench-k1,bench-k2,bench-k3,bench-k4
"$BIN/easel-bench" fake-gemini --latency-ms 0 --keys $KEYS > "$WORK/fake.out" 2>&1 & FAKE=$!
PIDS+=("$FAKE")
for _ in $(seq 50); do grep -q base_url "$WORK/fake.out" && break; sleep 0.1; done
FAKE_URL=$(grep -o 'http://[0-9.:]*' "$WORK/fake.out")

export RUST_LOG=warn
export DATABASE_URL="$PG_URL${SEP}options=-c%20search_path%3D$SCHEMA"
export REDIS_URL EASEL_REDIS__PREFIX="easel-scale-bench-$$:"
export EASEL_STORAGE__PATH="$WORK/objects"
export EASEL_STORAGE__SIGNING_SECRET=$(head -c 32 /dev/urandom | base64)
export EASEL_MASTER_KEY=$(head -c 32 /dev/urandom | base64)
export EASEL_PROVIDERS__DEFAULT=gemini EASEL_PROVIDERS__GEMINI__BASE_URL=$FAKE_URL
export EASEL_SERVER__HOST=127.0.0.1 EASEL_WORKER__POLL_MS=50
export GLOBAL_RPM_LIMIT=1000000000 GLOBAL_CONCURRENCY_LIMIT=100000
KEY=$("$BIN/easel" --data-dir "$WORK/admin" create-tenant bench 1000000000 100000 | grep -o 'img_[A-Za-z0-9]*')
for k in ${KEYS//,/ }; do
  "$BIN/easel" --data-dir "$WORK/admin" add-provider-key gemini "$k" 1000000000 64 >/dev/null
done

for n in 1 2; do
  port=$([ $n = 1 ] && echo "$P1" || echo "$P2")
  "$BIN/easel" --data-dir "$WORK/api-$n" serve --role api --port "$port" > "$WORK/api-$n.log" 2>&1 &
  PIDS+=($!)
done
for port in $P1 $P2; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done

load() {  # seconds -> "sum_rps line1 | line2"
  EASEL_KEY=$KEY wrk -t1 -c32 -d"$1"s --latency -s "$ROOT/bench/submit.lua" \
    "http://127.0.0.1:$P1/v1/images/generate" > "$WORK/wrk1" 2>&1 &
  local w1=$!
  EASEL_KEY=$KEY wrk -t1 -c32 -d"$1"s --latency -s "$ROOT/bench/submit.lua" \
    "http://127.0.0.1:$P2/v1/images/generate" > "$WORK/wrk2" 2>&1 &
  local w2=$!
  wait $w1 $w2
  local r1 r2
  r1=$(grep RESULT "$WORK/wrk1"); r2=$(grep RESULT "$WORK/wrk2")
  rate() { sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$1"; }
  echo "sum_rps=$(echo "$(rate "$r1") + $(rate "$r2")" | bc) | api-1: ${r1#RESULT } | api-2: ${r2#RESULT }"
}
wait_done() {
  for _ in $(seq 6000); do
    [ "$("${PSQL[@]}" -c "SELECT count(*) FROM jobs WHERE status NOT IN ('SUCCEEDED','FAILED','CANCELED')" | tail -1)" = 0 ] && return 0
    sleep 0.1
  done
  echo "jobs still open after 600 s"; exit 1
}

# 1. submit, APIs alone
load 2 >/dev/null
echo "submit, 2 APIs (no worker running): $(load "$T")"
queued=$("${PSQL[@]}" -c "SELECT count(*) FROM jobs" | tail -1)

# 2. drain the backlog with 3 workers
for n in 1 2 3; do
  "$BIN/easel" --data-dir "$WORK/worker-$n" serve --role worker > "$WORK/worker-$n.log" 2>&1 &
  PIDS+=($!)
done
wait_done
"${PSQL[@]}" -c "SELECT 'drain, 3 workers: jobs=' || count(*) || ' seconds=' ||
  round((max(finished_at) - min(started_at)) / 1000.0, 2) || ' jobs_per_s=' ||
  round(count(*) * 1000.0 / greatest(max(finished_at) - min(started_at), 1))
  FROM jobs" | tail -1
before=$("${PSQL[@]}" -c "SELECT max(seq) FROM jobs" | tail -1)

# 3. end to end: submit while the workers run
echo "submit, 2 APIs with 3 workers running: $(load "$T")"
wait_done
"${PSQL[@]}" -c "SELECT 'end to end, 2 APIs + 3 workers: jobs=' || count(*) || ' seconds=' ||
  round((max(finished_at) - min(created_at)) / 1000.0, 2) || ' jobs_per_s=' ||
  round(count(*) * 1000.0 / greatest(max(finished_at) - min(created_at), 1)) ||
  ' submit_to_succeeded_p50_ms=' || percentile_disc(0.5) WITHIN GROUP (ORDER BY finished_at - created_at) ||
  ' p99_ms=' || percentile_disc(0.99) WITHIN GROUP (ORDER BY finished_at - created_at)
  FROM jobs WHERE seq > $before" | tail -1
bad=$("${PSQL[@]}" -c "SELECT count(*) FROM jobs WHERE status <> 'SUCCEEDED'" | tail -1)
[ "$bad" = 0 ] || { echo "error: $bad jobs did not succeed"; exit 1; }

kill "$FAKE"; wait "$FAKE" 2>/dev/null || true
grep RESULT "$WORK/fake.out" | sed 's/^RESULT /upstream: /'
over=$(grep -oP 'max_in_flight=\K[0-9]+' "$WORK/fake.out" | awk '$1 > 64' | wc -l)
[ "$over" = 0 ] || { echo "error: a key saw more than 64 requests at once"; exit 1; }
echo "all $(( queued + $("${PSQL[@]}" -c "SELECT count(*) FROM jobs WHERE seq > $before" | tail -1) )) jobs SUCCEEDED"
