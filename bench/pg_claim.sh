#!/usr/bin/env bash
# Job claim throughput on PostgreSQL: Easel's `Store::job_claim` (the fair claim: tenant rows
# locked SKIP LOCKED, the tenant concurrency check, the job rows locked SKIP LOCKED, a new
# fence and lease, the RUNNING event) against the anchor's bare
# `UPDATE jobs ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING` pgbench script.
# Both with 8 clients on 2 client threads, 100,000 queued jobs over 100 tenants, on the same
# cluster in the same run, each in a schema of its own; the anchor goes first.
#
# Usage: bench/pg_claim.sh [SECONDS=10] [JOBS=100000] [BATCH=1]
#   BATCH is the `max` of each Easel claim call (the worker asks for as many as it has free
#   slots; the anchor always claims 1).
#   PG_URL=postgres://user@host:port/db runs on an existing cluster (needs CREATE SCHEMA);
#   without it a private cluster with default settings (fsync on, synchronous_commit on) is
#   started on 127.0.0.1:$PG_PORT (5443) under /tmp and removed at the end.
#   SYNC=off runs both sides with synchronous_commit=off.
set -euo pipefail
T=${1:-10}; N=${2:-100000}; BATCH=${3:-1}; SYNC=${SYNC:-on}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHORS:-$ROOT/../shared/anchors}/pg
command -v pgbench >/dev/null || { echo "needs pgbench and psql (apt-get install postgresql)"; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin easel-bench

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() { :; }
on_exit() {
  [ -n "${SCHEMA:-}" ] && { "${PSQL[@]}" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true; }
  cleanup
}
trap on_exit EXIT
trap 'exit 130' INT TERM
if [ -z "${PG_URL:-}" ]; then
  PG_PORT=${PG_PORT:-5443}
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  PG_DIR=$(mktemp -d /tmp/easel-pg-claim.XXXXXX)
  cleanup() { as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"; }
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
  as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_DIR" start >/dev/null
  PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
fi
PSQL=(psql "$PG_URL" -q -X -v ON_ERROR_STOP=1)
SCHEMA=anchor_claim_$$
echo "# $(date -Is) pg_claim: ${T}s, $N jobs, Easel batch $BATCH, synchronous_commit=$SYNC, $("${PSQL[@]}" -Atc 'show server_version')"

# --- anchor: its own fill (100k QUEUED rows, index on (status, created_at)) and claim script
"${PSQL[@]}" -c "CREATE SCHEMA $SCHEMA"
PGOPTIONS="-c search_path=$SCHEMA" "${PSQL[@]}" -f "$ANCHOR/claim_fill.sql" >/dev/null
"${PSQL[@]}" -c CHECKPOINT
out=$(PGOPTIONS="-c search_path=$SCHEMA -c synchronous_commit=$SYNC" \
  pgbench -n -M prepared -f "$ANCHOR/claim.sql" -c 8 -j 2 -T "$T" "$PG_URL" 2>&1)
tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out")
lat=$(grep -oP 'latency average = \K[0-9.]+' <<<"$out")
claimed=$(PGOPTIONS="-c search_path=$SCHEMA" "${PSQL[@]}" -Atc "select count(*) from jobs where status='RUNNING'")
echo "anchor bare SKIP LOCKED claim (pgbench -c8 -j2 -M prepared): tps=$tps lat_avg_ms=$lat claimed_rows=$claimed"
if [ "$claimed" -ge 100000 ]; then
  echo "warning: the anchor drained its queue, so its tps counts empty UPDATEs; use fewer SECONDS"
fi
"${PSQL[@]}" -c "DROP SCHEMA $SCHEMA CASCADE"

# --- easel: fills through Store::job_submit, then 8 claimers through Store::job_claim
URL=$PG_URL
if [ "$SYNC" != on ]; then
  case "$URL" in *\?*) URL="$URL&" ;; *) URL="$URL?" ;; esac
  URL="${URL}options=-c%20synchronous_commit%3D$SYNC"
fi
easel=$("$ROOT/target/release/easel-bench" claim --database-url "$URL" --jobs "$N" --workers 8 \
  --batch "$BATCH" --tenants 100 --seconds "$T")
echo "$easel"
rate=$(grep -oP 'claims_per_s=\K[0-9.]+' <<<"$easel")
echo "ratio easel claims/s / anchor tps: $(echo "scale=3; $rate / $tps" | bc)  (target >= 0.7)"
