#!/usr/bin/env bash
# Compares this checkout's build with an older commit's, by interleaved runs:
# both services run at once (each with its own database, subject prefix,
# stream and port), and every scenario is run on one then the other, the
# order alternating by round, so that the machine's drift hits both alike.
# Prints one line per run, then the median of each scenario per build, and
# appends that table to $OUT when it is set.
#
#   scripts/compare-builds.sh 3409525            # 3 rounds of 5 s per scenario
#   ROUNDS=5 DURATION=10 scripts/compare-builds.sh 3409525
#   OUT=BENCHMARKS.md scripts/compare-builds.sh 3409525
#   ONLY="rsvp-nats outbox-drain outbox-latency" scripts/compare-builds.sh 3409525
#   OLD_BIN_DIR=/tmp/old scripts/compare-builds.sh 3409525
#                       # the older build's binaries are already there (built
#                       # from that commit): nothing is built for it
#
# Needs Postgres and NATS as the tests do. HTTP rows run with v1 signatures
# (as the BFF signs) and, on this build, also with v2.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD_REV=${1:?usage: scripts/compare-builds.sh <older commit> }
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
RUN=$(date +%s)
WORK=${TMPDIR:-/tmp}/compare-builds
RESULTS="$WORK/results-$RUN.jsonl"
mkdir -p "$WORK"

log() { printf '==> %s\n' "$*" >&2; }

log "building this checkout (release)"
cargo build --release --locked --bin events-svc --bin events-bench
NEW=target/release/events-svc
NEW_BENCH=(target/release/events-bench)

OLD_DIR=${OLD_BIN_DIR:-$WORK/target-$OLD_REV/release}
if [ -z "${OLD_BIN_DIR:-}" ]; then
    log "building $OLD_REV (release, in a worktree of its own)"
    OLD_TREE="$WORK/tree-$OLD_REV"
    if [ ! -d "$OLD_TREE" ]; then
        git worktree add --detach "$OLD_TREE" "$OLD_REV" >/dev/null
    fi
    (cd "$OLD_TREE" && CARGO_TARGET_DIR="$WORK/target-$OLD_REV" cargo build --release --locked --bins)
fi
OLD="$OLD_DIR/events-svc"
# The load generator was once a subcommand of the service.
if [ -x "$OLD_DIR/events-bench" ]; then
    OLD_BENCH=("$OLD_DIR/events-bench")
else
    OLD_BENCH=("$OLD" bench)
fi

env_of() { # build → the environment of its instance
    local port=$1 name=$2
    echo "DATABASE_URL=postgres://postgres@127.0.0.1:5432/cmp_${name}_${RUN}" \
        "EVENTS_SUBJECT_PREFIX=cmp${name}${RUN}" "EVENTS_STREAM=CMP${name^^}${RUN}" \
        "EVENTS_HTTP_ADDR=127.0.0.1:${port}" "BFF_INTERNAL_HMAC_SECRET=compare-${RUN}" \
        RUST_LOG=warn EVENTS_LOG_FORMAT=json EVENTS_ACTOR_IDLE_TIMEOUT=15s EVENTS_DB_MAX_CONNECTIONS=32
}
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for name in old new; do
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS cmp_${name}_${RUN} WITH (FORCE)" >/dev/null 2>&1 || true
        python3 scripts/delete-stream.py "CMP${name^^}${RUN}" || true
    done
}
trap cleanup EXIT

start() { # name binary port
    # shellcheck disable=SC2046
    env -u EVENTS_DEV -u EVENTS_AUTHZ -u ACCESS_BASE_URL $(env_of "$3" "$1") "$2" serve >"$WORK/$1.log" 2>&1 &
    PIDS+=("$!")
}
start old "$OLD" 18101
OLD_PID=${PIDS[0]}
start new "$NEW" 18102
NEW_PID=${PIDS[1]}
for port in 18101 18102; do
    for _ in $(seq 1 120); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.5; done
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null
done
# For its first 15 s an instance checks cached reads against Postgres in
# case other instances exist; compare steady states.
sleep 16

bench() { # label build scenario args…
    local label=$1 build=$2 port pid
    shift 2
    local cmd
    if [ "$build" = old ]; then port=18101; pid=$OLD_PID; cmd=("${OLD_BENCH[@]}"); else port=18102; pid=$NEW_PID; cmd=("${NEW_BENCH[@]}"); fi
    # shellcheck disable=SC2046
    env $(env_of "$port" "$build") "${cmd[@]}" "$@" --json --pid "$pid" \
        --http-url "http://127.0.0.1:$port" --duration "$DURATION" --concurrency 64 2>/dev/null |
        python3 -c "import json,sys; r=json.load(sys.stdin); r.update(label='$label', build='$build', round=$round); print(json.dumps(r))" \
        >>"$RESULTS"
    tail -1 "$RESULTS" | python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"round {r['round']}  {r['build']:<3}  {r['label']:<13} {r['throughput_rps']:>9.0f}/s  p99 {r['p99_us']} µs  errors {r['errors']}\")"
}

SCENARIOS=(
    "get-nats get --events 1000"
    "rsvp-nats rsvp --events 1000"
    "list-nats list --events 1000"
    "get-http get --transport http --events 1000"
    "rsvp-http rsvp --transport http --events 1000"
    "outbox-drain outbox-drain --events 100000"
    "outbox-latency outbox-latency --rate 2000"
)
# ONLY="rsvp-nats outbox-drain" runs only the scenarios so labelled.
if [ -n "${ONLY:-}" ]; then
    kept=()
    for s in "${SCENARIOS[@]}"; do
        case " $ONLY " in *" ${s%% *} "*) kept+=("$s") ;; esac
    done
    SCENARIOS=("${kept[@]}")
fi
for round in $(seq 1 "$ROUNDS"); do
    order=(old new)
    if [ $((round % 2)) = 0 ]; then order=(new old); fi
    for s in "${SCENARIOS[@]}"; do
        read -r -a words <<<"$s"
        for build in "${order[@]}"; do bench "${words[0]}" "$build" "${words[@]:1}"; done
    done
    if [ -z "${ONLY:-}" ]; then
        bench get-http-v2 new get --transport http --signature 2 --events 1000
        bench rsvp-http-v2 new rsvp --transport http --signature 2 --events 1000
    fi
done

TABLE=$(python3 - "$RESULTS" "$OLD_REV" "$(git rev-parse --short HEAD)" "$ROUNDS" "$DURATION" <<'PY'
import json, statistics, sys
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1])]
old_rev, new_rev, rounds, duration = sys.argv[2:6]
by = defaultdict(list)
for r in rows:
    by[(r["label"], r["build"])].append(r)
print(f"Interleaved, {rounds} rounds of {duration} s per scenario, 64 in flight; old = `{old_rev}`, new = `{new_rev}`.\n")
print("| scenario | old /s (median) | new /s (median) | new ÷ old | old p99 µs | new p99 µs | runs old | runs new | RSS MB old → new, after each round |")
print("|---|---:|---:|---:|---:|---:|---|---|---|")
for label in dict.fromkeys(r["label"] for r in rows):
    old, new = by.get((label, "old"), []), by.get((label, "new"), [])
    med = lambda rs, k: statistics.median(r[k] for r in rs) if rs else None
    o, n = med(old, "throughput_rps"), med(new, "throughput_rps")
    ratio = f"{n / o:.2f}" if o and n else ""
    fmt = lambda v: f"{v:,.0f}" if v is not None else ""
    runs = lambda rs: ", ".join(f"{r['throughput_rps']:,.0f}" for r in rs)
    rss = lambda rs: ", ".join(f"{r['rss_mb']:.0f}" if r.get("rss_mb") is not None else "?" for r in rs)
    print(f"| {label} | {fmt(o)} | {fmt(n)} | {ratio} | {fmt(med(old, 'p99_us'))} | {fmt(med(new, 'p99_us'))} | {runs(old)} | {runs(new)} | {rss(old)} → {rss(new)} |")
PY
)
echo
echo "$TABLE"
if [ -n "${OUT:-}" ]; then
    printf '\n%s\n' "$TABLE" >>"$OUT"
fi
