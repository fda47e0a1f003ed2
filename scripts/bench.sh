#!/usr/bin/env bash
# Builds the service in release mode, starts it with a database, subject
# prefix and stream of its own, runs every benchmark scenario, measures the
# Postgres and NATS ceilings of this machine in the same run, and writes
# BENCHMARKS.md. Needs Postgres (127.0.0.1:5432, user postgres, trust) and
# NATS with JetStream (127.0.0.1:4222), like the tests.
#
#   scripts/bench.sh                 # 10 s per scenario
#   DURATION=5 scripts/bench.sh      # shorter
#   OUT=/tmp/b.md scripts/bench.sh   # write elsewhere
#   SOAK=600 scripts/bench.sh        # also a 10-minute soak (mixed load, RSS curve,
#                                    # stream checked against the outbox)
#   SOAK=600 SOAK_FAULT_CMD='…' SOAK_FAULT_EVERY=60 scripts/bench.sh
#                                    # … with a fault injected every minute
#   INSTANCES=3 scripts/bench.sh     # also commit-to-stream latency with three
#                                    # instances writing (scripts/bench-instances.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
OUT=${OUT:-BENCHMARKS.md}
PORT=${PORT:-18005}
RUN_ID=$(date +%s)
DB="events_bench_${RUN_ID}"
PGB_DB="pgbench_${RUN_ID}"
PREFIX="bench${RUN_ID}"
STREAM="BENCH${RUN_ID}"
RESULTS=$(mktemp)
SERVICE_LOG=$(mktemp)

log() { printf '\n==> %s\n' "$*" >&2; }

log "building release"
cargo build --release --locked --bin events-svc --bin events-bench
BIN=target/release/events-svc
BENCH=target/release/events-bench

export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB}"
export EVENTS_SUBJECT_PREFIX="$PREFIX" EVENTS_STREAM="$STREAM" EVENTS_HTTP_ADDR="127.0.0.1:${PORT}"
export BFF_INTERNAL_HMAC_SECRET="bench-secret-${RUN_ID}" RUST_LOG=warn EVENTS_LOG_FORMAT=json
export EVENTS_ACTOR_IDLE_TIMEOUT=15s EVENTS_DB_MAX_CONNECTIONS=32
unset EVENTS_DEV EVENTS_AUTHZ ACCESS_BASE_URL

# Deletes this run's JetStream stream (hundreds of thousands of messages).
delete_stream() { python3 scripts/delete-stream.py "$1" || true; }

cleanup() {
    if [ -n "${SERVICE_PID:-}" ]; then stop_service; fi
    delete_stream "$STREAM"
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"${DB}\" WITH (FORCE)" -c "DROP DATABASE IF EXISTS \"${PGB_DB}\" WITH (FORCE)" >/dev/null 2>&1 || true
    cp "$RESULTS" "${TMPDIR:-/tmp}/events-bench-results.jsonl" 2>/dev/null || true
    rm -f "$RESULTS" "$SERVICE_LOG"
}
trap cleanup EXIT

# One core's speed, timed the same way before and after the run: the
# machine is shared with its host, and its speed can drift between runs
# (and within one). Compare runs by this before comparing their figures.
cpu_check() {
    local start end
    start=$(date +%s.%N)
    head -c 256M /dev/zero | sha256sum >/dev/null
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }'
}
CPU_BEFORE=$(cpu_check)

start_service() {
    "$BIN" serve >>"$SERVICE_LOG" 2>&1 &
    SERVICE_PID=$!
    for _ in $(seq 1 120); do
        if curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null 2>&1; then break; fi
        sleep 0.5
    done
    curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || { cat "$SERVICE_LOG" >&2; exit 1; }
    # For its first 15 s an instance checks cached reads against Postgres in
    # case other instances exist; measure the steady state of a single instance.
    sleep 16
}
stop_service() {
    kill "$SERVICE_PID" 2>/dev/null || true
    wait "$SERVICE_PID" 2>/dev/null || true
    SERVICE_PID=
}

log "starting the service (local authorization, database ${DB})"
start_service

bench() {
    log "bench $*"
    "$BENCH" "$@" --json --pid "$SERVICE_PID" --http-url "http://127.0.0.1:${PORT}" >>"$RESULTS"
}

bench echo --duration "$DURATION" --concurrency 64
bench get --duration "$DURATION" --concurrency 64 --events 1000
bench list --duration "$DURATION" --concurrency 64 --events 1000
bench rsvp --duration "$DURATION" --concurrency 64 --events 1000
bench rsvp-hot --duration "$DURATION" --concurrency 64 --capacity 100
bench mixed --duration "$DURATION" --concurrency 64 --events 1000
bench create --duration "$DURATION" --concurrency 64
bench create-series --duration "$DURATION" --concurrency 8 --occurrences 52
bench get --transport http --duration "$DURATION" --concurrency 64 --events 1000
# The same over v2: v1 reads are checked in the shared replay bucket, v2
# reads only by the instance; writes are claimed in Postgres either way.
bench get --transport http --signature 2 --duration "$DURATION" --concurrency 64 --events 1000
bench rsvp --transport http --duration "$DURATION" --concurrency 64 --events 1000
bench rsvp --transport http --signature 2 --duration "$DURATION" --concurrency 64 --events 1000
bench outbox-drain --events 100000
bench outbox-latency --duration "$DURATION" --rate 2000
bench memory --events 100000 --scopes 10000 --concurrency 64 --settle 45
if [ "${SOAK:-0}" -gt 0 ]; then
    # The soak judges the service's own growth over its run, so it starts
    # with a fresh process (same database and stream): an instance that has
    # just run every scenario above carries what they left in its allocator.
    log "restarting the service for the soak"
    stop_service
    start_service
    fault=()
    if [ -n "${SOAK_FAULT_CMD:-}" ]; then
        fault=(--fault-cmd "$SOAK_FAULT_CMD" --fault-every "${SOAK_FAULT_EVERY:-60}")
    fi
    bench soak --duration "$SOAK" --concurrency 64 --events 1000 --sample 30 "${fault[@]}"
fi

if [ "${INSTANCES:-0}" -gt 1 ]; then
    log "commit-to-stream latency with ${INSTANCES} instances writing"
    BIN_DIR=target/release JSON=1 DURATION="$DURATION" INSTANCES="$INSTANCES" RATE=2000 \
        scripts/bench-instances.sh |
        python3 -c 'import json, sys; [print(json.dumps({**json.loads(l), "transport": "nats, '"$INSTANCES"' instances"})) for l in sys.stdin if l.startswith("{")]' \
            >>"$RESULTS"
fi

log "pgbench: single-row updates, 16 clients (random rows, then one hot row)"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"${PGB_DB}\""
psql -h 127.0.0.1 -U postgres -d "$PGB_DB" -qc "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL); INSERT INTO t SELECT g, 0 FROM generate_series(1, 10000) g"
SCRIPT=$(mktemp)
printf '\\set id random(1, 10000)\nUPDATE t SET n = n + 1 WHERE id = :id;\n' >"$SCRIPT"
PGB_RANDOM=$(pgbench -h 127.0.0.1 -U postgres -n -f "$SCRIPT" -c 16 -j 2 -T "$DURATION" "$PGB_DB" 2>/dev/null | awk '/^tps/ {print $3}')
printf 'UPDATE t SET n = n + 1 WHERE id = 1;\n' >"$SCRIPT"
PGB_HOT=$(pgbench -h 127.0.0.1 -U postgres -n -f "$SCRIPT" -c 16 -j 2 -T "$DURATION" "$PGB_DB" 2>/dev/null | awk '/^tps/ {print $3}')
rm -f "$SCRIPT"

CPU_AFTER=$(cpu_check)

log "writing ${OUT}"
python3 - "$RESULTS" "$OUT" "$PGB_RANDOM" "$PGB_HOT" "$DURATION" "$CPU_BEFORE" "$CPU_AFTER" <<'PY'
import json, os, platform, subprocess, sys, datetime

results_path, out, pgb_random, pgb_hot, duration, cpu_before, cpu_after = sys.argv[1:8]
rows = [json.loads(l) for l in open(results_path) if l.strip().startswith("{")]
pgb_random, pgb_hot = float(pgb_random or 0), float(pgb_hot or 0)

def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, shell=True).stdout.strip().splitlines()[0]
    except Exception:
        return "?"

def find(scenario, transport="nats"):
    for r in rows:
        if r["scenario"] == scenario and r["transport"] == transport:
            return r
    return None

echo = find("echo")
echo_rps = echo["throughput_rps"] if echo else 0
cpu = version("lscpu | grep 'Model name' | sed 's/Model name: *//'")
lines = []
lines.append("# Benchmarks\n")
lines.append(f"Measured {datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC')} by `scripts/bench.sh` "
             f"({duration} s per scenario, 64 requests in flight unless stated).\n")
lines.append("## Machine and versions\n")
mem = version("free -g | awk '/Mem/ {print $2}'")
lines.append(f"- CPU: {cpu}; {version('nproc')} cores; memory {mem} GiB")
lines.append(f"- {version('uname -sr')}")
sync = version("psql -h 127.0.0.1 -U postgres -Atc 'show synchronous_commit'")
lines.append(f"- {version('psql --version')} (`synchronous_commit` = {sync})")
lines.append(f"- {version('nats-server --version')}")
lines.append(f"- {version('rustc --version')}")
lines.append(f"- One core's speed (SHA-256 of 256 MiB): {cpu_before} s before the run, {cpu_after} s after. "
             "The machine shares its host; compare runs by this first.")
lines.append("- Postgres, NATS, the service and the load generator all run on this one machine.\n")
lines.append("## Method\n")
lines.append("The service runs from a release build with local authorization, its own database, "
             "subject prefix and stream, `RUST_LOG=warn`. HTTP requests are signed with v1, as the BFF signs them, "
             "unless the transport says `http v2`: v1 reads are checked in the shared replay bucket (a JetStream "
             "key-value create per read), v2 reads only in the instance's memory. `events-bench <scenario>` seeds its own tenant "
             "and data through the public API, warms up for 1 s, then measures: each of 64 workers sends a "
             "request and waits for its reply; latency is recorded in an HDR histogram. RSS is the service "
             "process's resident memory at the end. Ceilings come from the same run: `echo` (NATS request/reply "
             "to a trivial responder), and `pgbench` with a single-row `UPDATE` at 16 clients, over random rows "
             "and over one hot row.\n")
lines.append("## Ceilings of this run\n")
lines.append(f"- NATS echo: **{echo_rps:,.0f}** req/s")
lines.append(f"- pgbench single-row update, 16 clients, random rows: **{pgb_random:,.0f}** tx/s")
lines.append(f"- pgbench single-row update, 16 clients, one hot row: **{pgb_hot:,.0f}** tx/s\n")
lines.append("## Results\n")
lines.append("| scenario | transport | requests | errors | throughput (/s) | p50 µs | p90 µs | p99 µs | max µs | RSS MB | ratio to ceiling |")
lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    ratio = ""
    t = r["throughput_rps"]
    if r["scenario"] in ("get", "list", "mixed", "create") and echo_rps:
        ratio = f"{t / echo_rps:.2f} × echo"
    if r["scenario"] == "rsvp" and pgb_random:
        ratio = f"{t / pgb_random:.2f} × pgbench"
    if r["scenario"] == "rsvp-hot" and pgb_hot:
        ratio = f"{t / pgb_hot:.2f} × pgbench hot row"
    if r["scenario"] == "outbox-drain":
        ratio = "messages/s"
    if r["scenario"] == "create-series":
        ratio = f"series of {r.get('occurrences_per_series')}: {r.get('occurrences_per_s', 0):,.0f} occurrences/s"
    lines.append(f"| {r['scenario']} | {r['transport']} | {r['requests']:,} | {r['errors']} | {t:,.0f} | "
                 f"{r['p50_us']:,} | {r['p90_us']:,} | {r['p99_us']:,} | {r['max_us']:,} | {r.get('rss_mb') or '?'} | {ratio} |")
extras = [r for r in rows if r["scenario"] != "soak" and any(k not in ("scenario","transport","concurrency","requests","errors","throughput_rps","p50_us","p90_us","p99_us","max_us","rss_mb","seconds") for k in r)]
if extras:
    lines.append("\nScenario details:\n")
    for r in extras:
        detail = {k: v for k, v in r.items() if k not in ("scenario","transport","concurrency","requests","errors","throughput_rps","p50_us","p90_us","p99_us","max_us","rss_mb","seconds")}
        label = r["scenario"] if r["transport"] == "nats" else f"{r['scenario']}, {r['transport']}"
        lines.append(f"- `{label}`: `{json.dumps(detail)}`")
soak = find("soak")
if soak:
    lines.append("\n## Soak\n")
    lines.append(f"{soak['seconds']:.0f} s of mixed load (80% get/list by 10,000 members, 20% rsvp.set by "
                 f"{soak.get('rsvp_users', '?')} members on 1,000 events) at 64 in flight, against a fresh instance "
                 "(restarted after the scenarios above, same database); "
                 f"{soak['requests']:,} requests, {soak['errors']} errors, {soak['faults']} faults injected. "
                 f"Outbox rows of the run: {soak['outbox_rows']:,}; in the stream: {soak['stream_messages']:,}; "
                 f"**lost {soak['lost']}, duplicated {soak['duplicated']}**.\n")
    if soak.get("faults"):
        lines.append(f"Each fault ran `{os.environ.get('SOAK_FAULT_CMD', '?')}`, every "
                     f"{os.environ.get('SOAK_FAULT_EVERY', '60')} s; the errors are the requests "
                     "answered with an error or not at all while it lasted.\n")
    lines.append("RSS beside what the service caches: the RSVPs in its cached RSVP maps and its live scope actors "
                 "(`events_cached_rsvps`, `events_live_scope_actors`).\n")
    lines.append("| seconds | RSS MB | cached RSVPs | live scope actors |")
    lines.append("|---:|---:|---:|---:|")
    for sample in soak["rss_samples"]:
        t, mb, rsvps, actors = (list(sample) + [None, None])[:4]
        mb = f"{mb:.1f}" if mb is not None else "?"
        rsvps = f"{rsvps:,.0f}" if rsvps is not None else "?"
        actors = f"{actors:,.0f}" if actors is not None else "?"
        lines.append(f"| {t} | {mb} | {rsvps} | {actors} |")
def rate(scenario, transport="nats"):
    return (find(scenario, transport) or {}).get("throughput_rps", 0)

def p99_ms(scenario, transport="nats"):
    r = find(scenario, transport)
    return r["p99_us"] / 1000 if r else None

def soak_flat():
    # Flat: the RSS at the end is within 10% of the RSS once everything
    # bounded by a time window is full. The longest window is the replay
    # guard's (every signed request of the last 300 s, the signatures'
    # validity): it grows with the request rate for five minutes, then
    # forgets as fast as it learns. The reference is the first sample a
    # minute after that, or two minutes in for a soak too short for it.
    samples = (soak or {}).get("rss_samples") or []
    duration = (soak or {}).get("seconds") or 0
    start = 360 if duration >= 540 else 120
    warm = [(s[0], s[1]) for s in samples if s[0] >= start and s[1] is not None]
    if len(warm) < 2:
        return None, "not run (SOAK=600)"
    (t0, first), (t1, last) = warm[0], warm[-1]
    early = [s[1] for s in samples if s[0] >= 120 and s[1] is not None][:1]
    note = f"; {early[0]:.0f} MB at 2 min" if early and start != 120 else ""
    return last <= 1.10 * first, f"{first:.0f} MB at {t0} s → {last:.0f} MB at {t1} s{note}"

memory = find("memory") or {}
three = find("outbox-latency", "nats, 3 instances")
pgb_note = "" if pgb_random >= 7000 else f" (pgbench did {pgb_random:,.0f} < 7,000: the 15,000/s floor does not apply)"
budgets = [
    ("`rsvp` ≥ 2× pgbench random rows, and ≥ 15,000/s where pgbench ≥ 7,000; p99 ≤ 20 ms",
     f"{rate('rsvp'):,.0f}/s = {rate('rsvp') / pgb_random if pgb_random else 0:.2f}× pgbench, p99 {p99_ms('rsvp') or 0:.1f} ms{pgb_note}",
     rate("rsvp") >= 2 * pgb_random and (pgb_random < 7000 or rate("rsvp") >= 15000) and (p99_ms("rsvp") or 1e9) <= 20),
    ("`rsvp-hot` ≥ 5,000/s, capacity never exceeded",
     f"{rate('rsvp-hot'):,.0f}/s",
     rate("rsvp-hot") >= 5000 and (find("rsvp-hot") or {}).get("capacity_respected", False)),
    ("HTTP `rsvp` ≥ 10,000/s (v1, as the BFF signs)",
     f"{rate('rsvp', 'http'):,.0f}/s (v2: {rate('rsvp', 'http v2'):,.0f}/s)",
     rate("rsvp", "http") >= 10000),
    ("`get` ≥ 35% of echo",
     f"{rate('get'):,.0f}/s = {rate('get') / echo_rps if echo_rps else 0:.2f}× echo",
     echo_rps > 0 and rate("get") >= 0.35 * echo_rps),
    ("HTTP `get` ≥ 25,000/s (v1, as the BFF signs)",
     f"{rate('get', 'http'):,.0f}/s (v2: {rate('get', 'http v2'):,.0f}/s)",
     rate("get", "http") >= 25000),
    ("`list` (limit 100 over 1,000 events) ≥ 3,100/s",
     f"{rate('list'):,.0f}/s",
     rate("list") >= 3100),
    ("commit→stream p99 ≤ 50 ms at 2,000 changes/s, one instance",
     f"{p99_ms('outbox-latency') or 0:.1f} ms" if find("outbox-latency") else "not run",
     (p99_ms("outbox-latency") or 1e9) <= 50),
    ("commit→stream p99 ≤ 50 ms at 2,000 changes/s, three instances writing",
     f"{three['p99_us'] / 1000:.1f} ms" if three else "not run (INSTANCES=3)",
     bool(three) and three["p99_us"] <= 50000),
    ("`outbox-drain` ≥ 30,000 messages/s",
     f"{rate('outbox-drain'):,.0f}/s",
     rate("outbox-drain") >= 30000),
    ("memory: ≤ 200 MB RSS after 100,000 events in 10,000 scopes",
     f"{memory.get('rss_touched_mb') or 0:.0f} MB, {memory.get('rss_settled_mb') or 0:.0f} MB after passivation",
     (memory.get("rss_touched_mb") or 1e9) <= 200),
    ("memory flat over a 10-minute mixed soak (end within 10% of the RSS once the 5-minute replay window is full, at 6 min)",
     soak_flat()[1],
     bool(soak_flat()[0])),
]
lines.append("\n## Budgets\n")
lines.append("| budget | measured | met |")
lines.append("|---|---|---|")
for name, measured, ok in budgets:
    lines.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
lines.append("")
analysis = "docs/performance.md"
lines.append(f"Where the time goes, what was changed to get here, and what stands in the way of the budgets not met: see [`{analysis}`]({analysis}).\n")
# What follows this heading (scripts/compare-builds.sh, the import rate) stays: it is not this run's.
KEPT = "## Comparisons between builds"
try:
    previous = open(out).read()
except OSError:
    previous = ""
if KEPT in previous:
    lines.append(previous[previous.index(KEPT):].rstrip() + "\n")
open(out, "w").write("\n".join(lines))
print(f"wrote {out}")
PY
