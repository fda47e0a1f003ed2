#!/usr/bin/env bash
# Commit-to-stream latency with several instances writing: starts
# INSTANCES (3) release instances of the service on one database, subject
# prefix and stream (NATS spreads the requests over them: most commits
# happen on an instance that is not the outbox publisher), then runs
# `events-bench outbox-latency` at RATE changes per second. Needs the same
# local Postgres and NATS as scripts/bench.sh.
#
#   scripts/bench-instances.sh                      # builds, 3 instances, 2000/s, 10 s
#   INSTANCES=3 RATE=2000 DURATION=10 BIN_DIR=/tmp/old scripts/bench-instances.sh
#   JSON=1 scripts/bench-instances.sh               # one JSON line (scripts/bench.sh)
#   EVENTS_ROUTE_WRITES=false scripts/bench-instances.sh   # every write where it arrives
set -euo pipefail
cd "$(dirname "$0")/.."

INSTANCES=${INSTANCES:-3}
RATE=${RATE:-2000}
DURATION=${DURATION:-10}
RUN_ID=$(date +%s)
DB="events_bench_${RUN_ID}"
STREAM="BENCH${RUN_ID}"
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release --locked --bin events-svc --bin events-bench >&2
    BIN_DIR=target/release
fi

export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB}"
export EVENTS_SUBJECT_PREFIX="bench${RUN_ID}" EVENTS_STREAM="$STREAM"
export BFF_INTERNAL_HMAC_SECRET="bench-secret-${RUN_ID}" RUST_LOG=warn EVENTS_LOG_FORMAT=json
export EVENTS_ACTOR_IDLE_TIMEOUT=15s EVENTS_DB_MAX_CONNECTIONS=16
unset EVENTS_DEV EVENTS_AUTHZ ACCESS_BASE_URL

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    python3 scripts/delete-stream.py "$STREAM" || true
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"${DB}\" WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

for i in $(seq 1 "$INSTANCES"); do
    port=$((18100 + i))
    EVENTS_HTTP_ADDR="127.0.0.1:${port}" "$BIN_DIR/events-svc" serve >"/tmp/bench-instance-$i.log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 1 120); do
        curl -fsS "http://127.0.0.1:${port}/health" >/dev/null 2>&1 && break
        sleep 0.5
    done
done
# Past the start-up grace, as scripts/bench.sh waits.
sleep 16
"$BIN_DIR/events-bench" outbox-latency --duration "$DURATION" --rate "$RATE" --pid "${pids[0]}" \
    --http-url "http://127.0.0.1:18101" ${JSON:+--json}
# How often, and how long, the publisher waited at a number whose transaction
# was still running, how the RSVPs were routed between instances, and the
# group commits (on stderr: the JSON line stays alone on stdout).
for i in $(seq 1 "$INSTANCES"); do
    curl -fsS "http://127.0.0.1:$((18100 + i))/metrics" 2>/dev/null |
        grep -E '^events_(outbox_gap_wait_seconds_(count|sum)|write_forwards?_(total|messages_total)|batch_size_(count|sum)|batch_commit_seconds_sum)' |
        sed "s/^/instance $i: /" >&2 || true
done
