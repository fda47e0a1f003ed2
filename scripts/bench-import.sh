#!/usr/bin/env bash
# The import rate of `events-svc import django`: builds a Django database of
# TENANTS × EVENTS events with 4 RSVPs each and attendance for every `going`
# RSVP, imports it into a fresh database, then imports it again (nothing
# changed), and prints both times and rates. Needs the local Postgres and NATS.
#   TENANTS=10 EVENTS=5000 PROFILE=release scripts/bench-import.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=${TENANTS:-10}
EVENTS=${EVENTS:-5000}
PROFILE=${PROFILE:-release}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
id=$(date +%s)
src="bench_django_src_$id"
dst="bench_django_dst_$id"
if [ "$PROFILE" = release ]; then cargo build --release --locked --bin events-svc; bin=target/release/events-svc
else cargo build --locked --bin events-svc; bin=target/debug/events-svc; fi
psql "$PG/postgres" -qc "CREATE DATABASE $src"
trap 'psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $src WITH (FORCE)" -c "DROP DATABASE IF EXISTS $dst WITH (FORCE)"' EXIT
psql "$PG/$src" -q -f tests/fixtures/django_schema.sql
psql "$PG/$src" -q <<SQL
INSERT INTO events_event
SELECT gen_random_uuid(), t, 'TENANT', t::text, 'Event ' || n, '', now() + n * interval '1 hour',
       now() + n * interval '1 hour' + interval '2 hours', '', NULL, NULL, 'public', gen_random_uuid(), now(), now()
FROM (SELECT gen_random_uuid() t FROM generate_series(1, $TENANTS)) ts, generate_series(1, $EVENTS) n;
INSERT INTO events_rsvp (event_id, tenant_id, user_id, status, updated_at)
SELECT e.id, e.tenant_id, gen_random_uuid(), (ARRAY['going','interested','not_going'])[1 + (random() * 2)::int], now()
FROM events_event e, generate_series(1, 4);
INSERT INTO events_attendance (event_id, tenant_id, user_id, marked_by, marked_at)
SELECT event_id, tenant_id, user_id, user_id, now() FROM events_rsvp WHERE status = 'going';
SQL
rows=$(psql "$PG/$src" -Atc "SELECT (SELECT count(*) FROM events_event) + (SELECT count(*) FROM events_rsvp) + (SELECT count(*) FROM events_attendance)")
echo "source: $rows rows ($TENANTS tenants × $EVENTS events, 4 RSVPs each, attendance of the going)"
for run in first again; do
    start=$(date +%s.%N)
    DATABASE_URL="$PG/$dst" EVENTS_SUBJECT_PREFIX="benchimport$id" NATS_URL=nats://127.0.0.1:4222 \
        "$bin" import django --source "$PG/$src" --quiet | tail -n 1
    end=$(date +%s.%N)
    awk -v r="$run" -v n="$rows" -v a="$start" -v b="$end" \
        'BEGIN { printf "%s import: %.1f s, %.0f rows/s\n", r, b - a, n / (b - a) }'
done
