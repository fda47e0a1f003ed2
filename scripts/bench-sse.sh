#!/usr/bin/env bash
# The cost of live streams: one service instance, `rsvp` over NATS without
# streams and with STREAMS open live streams (GET /stream, one user each, all
# seeing every change), interleaved ROUNDS times; prints the RSVP rate and
# p99 of each run and, with streams, how long a change took to reach them
# (from the message's `time` to its arrival: p50, p99, max). Needs the local
# Postgres and NATS, like the tests.
#
#   STREAMS=1000 DURATION=10 ROUNDS=2 PROFILE=release scripts/bench-sse.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STREAMS=${STREAMS:-1000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CONCURRENCY=${CONCURRENCY:-64}
PROFILE=${PROFILE:-release}
PORT=${PORT:-18006}
id=$(date +%s)
DB="events_bench_sse_$id"

if [ "$PROFILE" = release ]; then
    cargo build --release --locked --bin events-svc --bin events-bench
    dir=target/release
else
    cargo build --locked --bin events-svc --bin events-bench
    dir=target/debug
fi

export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB}"
export EVENTS_SUBJECT_PREFIX="benchsse$id" EVENTS_STREAM="BENCHSSE$id" EVENTS_HTTP_ADDR="127.0.0.1:${PORT}"
export BFF_INTERNAL_HMAC_SECRET="bench-secret-$id" RUST_LOG=warn EVENTS_DB_MAX_CONNECTIONS=32
export EVENTS_SSE_MAX_CONNECTIONS=$((STREAMS + 100))
unset EVENTS_DEV EVENTS_AUTHZ ACCESS_BASE_URL
log=$(mktemp)
results=$(mktemp)
"$dir/events-svc" serve >"$log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"${DB}\" WITH (FORCE)" >/dev/null 2>&1 || true
    python3 scripts/delete-stream.py "BENCHSSE$id" || true
    rm -f "$log" "$results"
}
trap cleanup EXIT
for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || { cat "$log" >&2; exit 1; }
# A new instance checks cached reads against Postgres for 15 s in case
# others exist; measure the steady state of one.
sleep 16

for round in $(seq 1 "$ROUNDS"); do
    for scenario in rsvp sse; do
        echo "==> round $round: $scenario" >&2
        "$dir/events-bench" "$scenario" --json --pid "$pid" --http-url "http://127.0.0.1:${PORT}" \
            --duration "$DURATION" --concurrency "$CONCURRENCY" --events 100 --streams "$STREAMS" >>"$results"
    done
done

python3 - "$results" "$STREAMS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"| run | streams | rsvp/s | rsvp p99 ms | messages delivered | streams dropped | delivery p50 ms | p99 ms | max ms |")
print("|---|---|---|---|---|---|---|---|---|")
for i, r in enumerate(rows):
    sse = r["scenario"] == "sse"
    print("| {} | {} | {:,.0f} | {:.1f} | {} | {} | {} | {} | {} |".format(
        i // 2 + 1, r.get("streams", 0) if sse else 0, r["throughput_rps"], r["p99_us"] / 1000,
        f'{r.get("messages_received", 0):,}' if sse else "", r.get("streams_dropped", "") if sse else "",
        r.get("delivery_p50_ms", "") if sse else "",
        r.get("delivery_p99_ms", "") if sse else "", r.get("delivery_max_ms", "") if sse else ""))
base = [r["throughput_rps"] for r in rows if r["scenario"] == "rsvp"]
withs = [r["throughput_rps"] for r in rows if r["scenario"] == "sse"]
if base and withs:
    print(f"\nrsvp with {sys.argv[2]} streams / without: {sum(withs)/len(withs) / (sum(base)/len(base)):.2f}")
PY
