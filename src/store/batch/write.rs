//! Writing a decision: every row [`crate::domain::commands::decide`] asked
//! for, in one statement of data-modifying CTEs, plus the waitlist places
//! drawn for users who joined. Shared by every writer that decides with
//! it, so rows are written one way.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{BatchEffects, ChangedEvent};
use crate::domain::commands::{Emitted, EventChanges};
use crate::domain::{Event, EventId};
use crate::names::Subjects;

/// A batch's decision, written: places drawn, then every row in one
/// statement. `trace` gives the trace context of the command (by its index
/// in the decision) an outbox row comes from.
pub(crate) async fn batch<'c>(
    tx: &mut PgConnection,
    subjects: &Subjects,
    mut events: Vec<EventChanges>,
    published: &[Emitted],
    trace: impl Fn(usize) -> Trace<'c>,
    revisions: &HashMap<EventId, i64>,
    now: DateTime<Utc>,
) -> Result<BatchEffects, sqlx::Error> {
    draw_waitlist_places(tx, &mut events).await?;
    let mut w = Writes::default();
    insert_events(&mut w, &events)?;
    update_events(&mut w, &events)?;
    write_rsvps(&mut w, &events)?;
    write_attendance(&mut w, &events)?;
    // New events got their counter rows with the events.
    let counted: Vec<&EventChanges> = events
        .iter()
        .filter(|e| e.is_changed() && !e.is_new)
        .collect();
    write_counters(&mut w, &counted)?;
    let rows: Vec<OutboxRow<'_>> = published
        .iter()
        .map(|e| OutboxRow {
            event: &e.event,
            trace: trace(e.command),
        })
        .collect();
    let outbox_rows = insert_outbox(&mut w, subjects, &rows)?;
    w.execute(tx).await?;
    // After the rows above, which it reads.
    crate::store::reminders::sync(tx, &events, now).await?;

    let changed = events
        .into_iter()
        .filter(EventChanges::is_changed)
        .map(|e| ChangedEvent {
            revision: if e.is_new {
                0
            } else {
                revisions.get(&e.event.id).map_or(0, |r| r + 1)
            },
            is_new: e.is_new,
            rsvps: e.rsvp_statuses(),
            counts: e.counts,
            event: e.event,
        })
        .collect();
    Ok(BatchEffects {
        changed,
        outbox_rows,
    })
}

/// Gives every user who joined a waitlist its place, drawn now from the
/// sequence: events in id order, users in the order they joined, so places
/// follow join order.
pub(crate) async fn draw_waitlist_places(
    tx: &mut PgConnection,
    events: &mut [EventChanges],
) -> Result<(), sqlx::Error> {
    let joiners: usize = events.iter().map(|e| e.waitlist_joins.len()).sum();
    if joiners == 0 {
        return Ok(());
    }
    let mut seqs: Vec<i64> =
        sqlx::query_scalar("SELECT nextval('rsvp_waitlist_seq') FROM generate_series(1, $1)")
            .bind(joiners as i64)
            .fetch_all(&mut *tx)
            .await?;
    seqs.sort_unstable();
    let mut seqs = seqs.into_iter();
    events.sort_by_key(|e| e.event.id);
    for e in events.iter_mut() {
        for user in &e.waitlist_joins {
            let row = e.rsvps.iter_mut().find(|(u, _)| u == user);
            if let (Some((_, Some(row))), Some(seq)) = (row, seqs.next()) {
                row.seq = Some(seq);
            }
        }
    }
    Ok(())
}

/// Every write of a decision as one statement of data-modifying CTEs: one
/// round trip instead of one per table. The sub-statements touch distinct
/// rows, and constraint checks run at the end of the statement, so the
/// order Postgres runs them in does not matter.
#[derive(Default)]
pub(crate) struct Writes {
    ctes: Vec<String>,
    args: sqlx::postgres::PgArguments,
    n: usize,
}

impl Writes {
    /// Binds a value; returns its placeholder.
    fn p<'t, T>(&mut self, value: T) -> Result<String, sqlx::Error>
    where
        T: sqlx::Encode<'t, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        use sqlx::Arguments;
        self.args.add(value).map_err(sqlx::Error::Encode)?;
        self.n += 1;
        Ok(format!("${}", self.n))
    }

    fn cte(&mut self, sql: String) {
        self.ctes.push(sql);
    }

    pub(crate) async fn execute(self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.ctes.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = self
            .ctes
            .iter()
            .enumerate()
            .map(|(i, c)| format!("w{i} AS ({c})"))
            .collect();
        let sql = format!("WITH {} SELECT 1", parts.join(", "));
        sqlx::query_with(sqlx::AssertSqlSafe(sql), self.args)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// Inserts the events created, with their (zero) counter rows.
pub(crate) fn insert_events(w: &mut Writes, events: &[EventChanges]) -> Result<(), sqlx::Error> {
    let new: Vec<&Event> = events
        .iter()
        .filter(|e| e.is_new)
        .map(|e| &e.event)
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let c = EventColumns::of(&new);
    let sql = format!(
        "INSERT INTO events (id, tenant_id, scope_type, scope_id, title, description, starts_at, ends_at,
                             location_text, location_url, game_id, visibility, status, capacity, created_by,
                             created_at, updated_at, version, time_zone, series_id, recurrence_id,
                             series_exception, rsvp_opens_at, rsvp_closes_at, max_guests,
                             rsvp_approval, reminders)
         SELECT id, tenant_id, scope_type::scope_type, scope_id, title, description, starts_at, ends_at,
                location_text, location_url, game_id, visibility::event_visibility, status::event_status,
                capacity, created_by, created_at, updated_at, version, time_zone, series_id, recurrence_id,
                series_exception, rsvp_opens_at, rsvp_closes_at, max_guests,
                rsvp_approval, ARRAY(SELECT jsonb_array_elements_text(reminders)::int)
         FROM UNNEST({}::uuid[], {}::uuid[], {}::text[], {}::text[], {}::text[], {}::text[], {}::timestamptz[],
                     {}::timestamptz[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::int[],
                     {}::uuid[], {}::timestamptz[], {}::timestamptz[], {}::bigint[], {}::text[], {}::uuid[],
                     {}::timestamptz[], {}::bool[], {}::timestamptz[],
                     {}::timestamptz[], {}::int[], {}::bool[], {}::jsonb[])
           AS u(id, tenant_id, scope_type, scope_id, title, description, starts_at, ends_at, location_text,
                location_url, game_id, visibility, status, capacity, created_by, created_at, updated_at, version,
                time_zone, series_id, recurrence_id, series_exception,
                rsvp_opens_at, rsvp_closes_at, max_guests, rsvp_approval, reminders)",
        w.p(&c.id)?,
        w.p(&c.tenant_id)?,
        w.p(&c.scope_type)?,
        w.p(&c.scope_id)?,
        w.p(&c.title)?,
        w.p(&c.description)?,
        w.p(&c.starts_at)?,
        w.p(&c.ends_at)?,
        w.p(&c.location_text)?,
        w.p(&c.location_url)?,
        w.p(&c.game_id)?,
        w.p(&c.visibility)?,
        w.p(&c.status)?,
        w.p(&c.capacity)?,
        w.p(&c.created_by)?,
        w.p(&c.created_at)?,
        w.p(&c.updated_at)?,
        w.p(&c.version)?,
        w.p(&c.time_zone)?,
        w.p(&c.series_id)?,
        w.p(&c.recurrence_id)?,
        w.p(&c.series_exception)?,
        w.p(&c.rsvp_opens_at)?,
        w.p(&c.rsvp_closes_at)?,
        w.p(&c.max_guests)?,
        w.p(&c.rsvp_approval)?,
        w.p(&c.reminders)?,
    );
    w.cte(sql);
    let sql = format!(
        "INSERT INTO event_counters (event_id, tenant_id) SELECT * FROM UNNEST({}::uuid[], {}::uuid[])",
        w.p(&c.id)?,
        w.p(&c.tenant_id)?,
    );
    w.cte(sql);
    Ok(())
}

/// Rewrites the rows of the events that changed.
pub(crate) fn update_events(w: &mut Writes, events: &[EventChanges]) -> Result<(), sqlx::Error> {
    let changed: Vec<&Event> = events
        .iter()
        .filter(|e| !e.is_new && e.row_changed)
        .map(|e| &e.event)
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let c = EventColumns::of(&changed);
    let cancelled_at: Vec<Option<DateTime<Utc>>> = changed.iter().map(|e| e.cancelled_at).collect();
    let cancelled_by: Vec<Option<Uuid>> = changed
        .iter()
        .map(|e| e.cancelled_by.map(Uuid::from))
        .collect();
    let cancel_reason: Vec<Option<String>> = changed
        .iter()
        .map(|e| e.cancel_reason.as_ref().map(|r| r.as_str().to_string()))
        .collect();
    let sql = format!(
        "UPDATE events e SET title = u.title, description = u.description, starts_at = u.starts_at,
                ends_at = u.ends_at, location_text = u.location_text, location_url = u.location_url,
                game_id = u.game_id, visibility = u.visibility::event_visibility, status = u.status::event_status,
                capacity = u.capacity, updated_at = u.updated_at, version = u.version,
                cancelled_at = u.cancelled_at, cancelled_by = u.cancelled_by, cancel_reason = u.cancel_reason,
                time_zone = u.time_zone, series_id = u.series_id, recurrence_id = u.recurrence_id,
                series_exception = u.series_exception,
                rsvp_opens_at = u.rsvp_opens_at, rsvp_closes_at = u.rsvp_closes_at, max_guests = u.max_guests,
                rsvp_approval = u.rsvp_approval,
                reminders = ARRAY(SELECT jsonb_array_elements_text(u.reminders)::int)
         FROM UNNEST({}::uuid[], {}::text[], {}::text[], {}::timestamptz[], {}::timestamptz[], {}::text[],
                     {}::text[], {}::text[], {}::text[], {}::text[], {}::int[], {}::timestamptz[], {}::bigint[],
                     {}::timestamptz[], {}::uuid[], {}::text[], {}::text[], {}::uuid[], {}::timestamptz[],
                     {}::bool[], {}::timestamptz[], {}::timestamptz[], {}::int[],
                     {}::bool[], {}::jsonb[])
           AS u(id, title, description, starts_at, ends_at, location_text, location_url, game_id, visibility,
                status, capacity, updated_at, version, cancelled_at, cancelled_by, cancel_reason, time_zone,
                series_id, recurrence_id, series_exception,
                rsvp_opens_at, rsvp_closes_at, max_guests, rsvp_approval, reminders)
         WHERE e.id = u.id",
        w.p(&c.id)?,
        w.p(&c.title)?,
        w.p(&c.description)?,
        w.p(&c.starts_at)?,
        w.p(&c.ends_at)?,
        w.p(&c.location_text)?,
        w.p(&c.location_url)?,
        w.p(&c.game_id)?,
        w.p(&c.visibility)?,
        w.p(&c.status)?,
        w.p(&c.capacity)?,
        w.p(&c.updated_at)?,
        w.p(&c.version)?,
        w.p(&cancelled_at)?,
        w.p(&cancelled_by)?,
        w.p(&cancel_reason)?,
        w.p(&c.time_zone)?,
        w.p(&c.series_id)?,
        w.p(&c.recurrence_id)?,
        w.p(&c.series_exception)?,
        w.p(&c.rsvp_opens_at)?,
        w.p(&c.rsvp_closes_at)?,
        w.p(&c.max_guests)?,
        w.p(&c.rsvp_approval)?,
        w.p(&c.reminders)?,
    );
    w.cte(sql);
    Ok(())
}

/// Column vectors of RSVP rows, for UNNEST.
#[derive(Default)]
struct RsvpColumns {
    event: Vec<Uuid>,
    user: Vec<Uuid>,
    tenant: Vec<Uuid>,
    status: Vec<&'static str>,
    seq: Vec<Option<i64>>,
    guests: Vec<i32>,
}

/// Column vectors of attendance rows, for UNNEST.
#[derive(Default)]
struct AttendanceColumns {
    event: Vec<Uuid>,
    user: Vec<Uuid>,
    tenant: Vec<Uuid>,
    marked_by: Vec<Uuid>,
    marked_at: Vec<DateTime<Utc>>,
}

/// Upserts or deletes every RSVP that changed.
pub(crate) fn write_rsvps(w: &mut Writes, events: &[EventChanges]) -> Result<(), sqlx::Error> {
    let mut upsert = RsvpColumns::default();
    let mut delete: (Vec<Uuid>, Vec<Uuid>) = Default::default();
    for e in events {
        for (user, row) in &e.rsvps {
            match row {
                Some(row) => {
                    upsert.event.push(Uuid::from(e.event.id));
                    upsert.user.push(Uuid::from(*user));
                    upsert.tenant.push(Uuid::from(e.event.tenant_id));
                    upsert.status.push(row.status.as_str());
                    upsert.seq.push(row.seq);
                    upsert.guests.push(i32::try_from(row.guests).unwrap_or(0));
                }
                None => {
                    delete.0.push(Uuid::from(e.event.id));
                    delete.1.push(Uuid::from(*user));
                }
            }
        }
    }
    if !upsert.event.is_empty() {
        let sql = format!(
            "INSERT INTO event_rsvps (event_id, user_id, tenant_id, status, waitlist_seq, guests, created_at,
                                      updated_at)
             SELECT e, u, t, s::rsvp_status, q, g, now(), now()
             FROM UNNEST({}::uuid[], {}::uuid[], {}::uuid[], {}::text[], {}::bigint[], {}::int[])
               AS x(e, u, t, s, q, g)
             ON CONFLICT (event_id, user_id) DO UPDATE
                 SET status = EXCLUDED.status, waitlist_seq = EXCLUDED.waitlist_seq, guests = EXCLUDED.guests,
                     updated_at = now()",
            w.p(upsert.event)?,
            w.p(upsert.user)?,
            w.p(upsert.tenant)?,
            w.p(upsert.status)?,
            w.p(upsert.seq)?,
            w.p(upsert.guests)?,
        );
        w.cte(sql);
    }
    if !delete.0.is_empty() {
        let sql = format!(
            "DELETE FROM event_rsvps r USING UNNEST({}::uuid[], {}::uuid[]) AS x(e, u)
             WHERE r.event_id = x.e AND r.user_id = x.u",
            w.p(delete.0)?,
            w.p(delete.1)?,
        );
        w.cte(sql);
    }
    Ok(())
}

/// Inserts or deletes every attendance mark that changed.
pub(crate) fn write_attendance(w: &mut Writes, events: &[EventChanges]) -> Result<(), sqlx::Error> {
    let mut insert = AttendanceColumns::default();
    let mut delete: (Vec<Uuid>, Vec<Uuid>) = Default::default();
    for e in events {
        for (user, mark) in &e.attendance {
            match mark {
                Some(mark) => {
                    insert.event.push(Uuid::from(e.event.id));
                    insert.user.push(Uuid::from(*user));
                    insert.tenant.push(Uuid::from(e.event.tenant_id));
                    insert.marked_by.push(Uuid::from(mark.by));
                    insert.marked_at.push(mark.at);
                }
                None => {
                    delete.0.push(Uuid::from(e.event.id));
                    delete.1.push(Uuid::from(*user));
                }
            }
        }
    }
    if !insert.event.is_empty() {
        let sql = format!(
            "INSERT INTO event_attendance (event_id, user_id, tenant_id, marked_by, marked_at)
             SELECT * FROM UNNEST({}::uuid[], {}::uuid[], {}::uuid[], {}::uuid[], {}::timestamptz[])
             ON CONFLICT (event_id, user_id) DO UPDATE
                 SET marked_by = EXCLUDED.marked_by, marked_at = EXCLUDED.marked_at",
            w.p(insert.event)?,
            w.p(insert.user)?,
            w.p(insert.tenant)?,
            w.p(insert.marked_by)?,
            w.p(insert.marked_at)?,
        );
        w.cte(sql);
    }
    if !delete.0.is_empty() {
        let sql = format!(
            "DELETE FROM event_attendance a USING UNNEST({}::uuid[], {}::uuid[]) AS x(e, u)
             WHERE a.event_id = x.e AND a.user_id = x.u",
            w.p(delete.0)?,
            w.p(delete.1)?,
        );
        w.cte(sql);
    }
    Ok(())
}

/// Writes the counters of `events` and moves their revisions: every
/// change of an event or its RSVPs does, so caches and later batches that
/// hold an older revision read the event again.
pub(crate) fn write_counters(w: &mut Writes, events: &[&EventChanges]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let sql = format!(
        "UPDATE event_counters c SET interested = u.i, going = u.g, not_going = u.n, waitlisted = u.w,
                pending = u.p, declined = u.d, guests = u.gu,
                attended = c.attended + u.a, revision = c.revision + 1, updated_at = now()
         FROM UNNEST({}::uuid[], {}::int[], {}::int[], {}::int[], {}::int[], {}::int[], {}::int[], {}::int[],
                     {}::int[])
           AS u(id, i, g, n, w, a, p, d, gu)
         WHERE c.event_id = u.id",
        w.p(events.iter().map(|e| Uuid::from(e.event.id)).collect::<Vec<_>>())?,
        w.p(events.iter().map(|e| n(e.counts.interested)).collect::<Vec<_>>())?,
        w.p(events.iter().map(|e| n(e.counts.going)).collect::<Vec<_>>())?,
        w.p(events.iter().map(|e| n(e.counts.not_going)).collect::<Vec<_>>())?,
        w.p(events.iter().map(|e| n(e.counts.waitlisted)).collect::<Vec<_>>())?,
        w.p(events.iter().map(|e| e.attended_delta).collect::<Vec<_>>())?,
        w.p(events.iter().map(|e| n(e.counts.pending)).collect::<Vec<_>>())?,
        w.p(events.iter().map(|e| n(e.counts.declined)).collect::<Vec<_>>())?,
        w.p(events.iter().map(|e| n(e.counts.guests)).collect::<Vec<_>>())?,
    );
    w.cte(sql);
    Ok(())
}

/// The trace context an outbox row carries (that of the request whose
/// command caused it).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Trace<'a> {
    pub(crate) parent: Option<&'a str>,
    pub(crate) state: Option<&'a str>,
    /// The slug of the tenant as the request that caused it named it.
    pub(crate) tenant_slug: Option<&'a str>,
}

/// One domain event to write to the outbox.
pub(crate) struct OutboxRow<'a> {
    pub(crate) event: &'a crate::domain::published::Published,
    pub(crate) trace: Trace<'a>,
}

/// Inserts the outbox rows in the order given; returns how many.
pub(crate) fn insert_outbox(
    w: &mut Writes,
    subjects: &Subjects,
    rows: &[OutboxRow<'_>],
) -> Result<usize, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::new_v4()).collect();
    let tenants: Vec<Uuid> = rows.iter().map(|r| Uuid::from(r.event.tenant_id)).collect();
    let events: Vec<Uuid> = rows.iter().map(|r| Uuid::from(r.event.event_id)).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event.event_type).collect();
    let subject_names: Vec<String> = rows
        .iter()
        .map(|r| subjects.domain_event(&Uuid::from(r.event.tenant_id), r.event.event_type))
        .collect();
    // Every payload says which tenant slug the change was made under
    // (`null` for changes no request made), for consumers that address
    // tenants by slug.
    let payloads: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut data = r.event.data.clone();
            if let Value::Object(map) = &mut data {
                map.insert(
                    "tenant_slug".into(),
                    r.trace.tenant_slug.map_or(Value::Null, Value::from),
                );
            }
            data
        })
        .collect();
    let traceparents: Vec<Option<&str>> = rows.iter().map(|r| r.trace.parent).collect();
    let tracestates: Vec<Option<&str>> = rows.iter().map(|r| r.trace.state).collect();
    let occurred: Vec<DateTime<Utc>> = rows.iter().map(|r| r.event.occurred_at).collect();
    // WITH ORDINALITY keeps the insertion order, so `seq` follows the order
    // in which the changes were decided.
    let sql = format!(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload, traceparent, tracestate, occurred_at)
         SELECT id, t, e, ty, s, p, tp, ts, o
         FROM UNNEST({}::uuid[], {}::uuid[], {}::uuid[], {}::text[], {}::text[], {}::jsonb[], {}::text[], {}::text[],
                     {}::timestamptz[]) WITH ORDINALITY AS x(id, t, e, ty, s, p, tp, ts, o, n)
         ORDER BY n",
        w.p(ids)?,
        w.p(tenants)?,
        w.p(events)?,
        w.p(types)?,
        w.p(subject_names)?,
        w.p(payloads)?,
        w.p(traceparents)?,
        w.p(tracestates)?,
        w.p(occurred)?,
    );
    w.cte(sql);
    Ok(rows.len())
}

/// Column vectors of events, for UNNEST statements.
struct EventColumns {
    id: Vec<Uuid>,
    tenant_id: Vec<Uuid>,
    scope_type: Vec<&'static str>,
    scope_id: Vec<String>,
    title: Vec<String>,
    description: Vec<String>,
    starts_at: Vec<DateTime<Utc>>,
    ends_at: Vec<DateTime<Utc>>,
    location_text: Vec<String>,
    location_url: Vec<Option<String>>,
    game_id: Vec<Option<String>>,
    visibility: Vec<&'static str>,
    status: Vec<&'static str>,
    capacity: Vec<Option<i32>>,
    created_by: Vec<Uuid>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    version: Vec<i64>,
    time_zone: Vec<&'static str>,
    series_id: Vec<Option<Uuid>>,
    recurrence_id: Vec<Option<DateTime<Utc>>>,
    series_exception: Vec<bool>,
    rsvp_opens_at: Vec<Option<DateTime<Utc>>>,
    rsvp_closes_at: Vec<Option<DateTime<Utc>>>,
    max_guests: Vec<i32>,
    rsvp_approval: Vec<bool>,
    /// Each event's reminders as a JSON array (UNNEST cannot take an
    /// array of arrays of different lengths).
    reminders: Vec<Value>,
}

impl EventColumns {
    fn of(events: &[&Event]) -> Self {
        Self {
            id: events.iter().map(|e| Uuid::from(e.id)).collect(),
            tenant_id: events.iter().map(|e| Uuid::from(e.tenant_id)).collect(),
            scope_type: events.iter().map(|e| e.scope_type().as_str()).collect(),
            scope_id: events
                .iter()
                .map(|e| e.scope_id().as_str().to_string())
                .collect(),
            title: events
                .iter()
                .map(|e| e.title.as_str().to_string())
                .collect(),
            description: events
                .iter()
                .map(|e| e.description.as_str().to_string())
                .collect(),
            starts_at: events.iter().map(|e| e.starts_at).collect(),
            ends_at: events.iter().map(|e| e.ends_at).collect(),
            location_text: events
                .iter()
                .map(|e| e.location_text.as_str().to_string())
                .collect(),
            location_url: events
                .iter()
                .map(|e| e.location_url.as_ref().map(|u| u.as_str().to_string()))
                .collect(),
            game_id: events
                .iter()
                .map(|e| e.game_id.as_ref().map(|g| g.as_str().to_string()))
                .collect(),
            visibility: events.iter().map(|e| e.visibility.as_str()).collect(),
            status: events.iter().map(|e| e.status.as_str()).collect(),
            capacity: events
                .iter()
                .map(|e| {
                    e.seat_capacity()
                        .map(|c| i32::try_from(c).unwrap_or(i32::MAX))
                })
                .collect(),
            created_by: events.iter().map(|e| Uuid::from(e.created_by)).collect(),
            created_at: events.iter().map(|e| e.created_at).collect(),
            updated_at: events.iter().map(|e| e.updated_at).collect(),
            version: events.iter().map(|e| e.version).collect(),
            time_zone: events.iter().map(|e| e.time_zone.name()).collect(),
            series_id: events
                .iter()
                .map(|e| e.series.map(|l| Uuid::from(l.series_id)))
                .collect(),
            recurrence_id: events
                .iter()
                .map(|e| e.series.map(|l| l.recurrence_id))
                .collect(),
            series_exception: events
                .iter()
                .map(|e| e.series.is_some_and(|l| l.exception))
                .collect(),
            rsvp_opens_at: events.iter().map(|e| e.rules.opens_at).collect(),
            rsvp_closes_at: events.iter().map(|e| e.rules.closes_at).collect(),
            max_guests: events
                .iter()
                .map(|e| i32::try_from(e.rules.max_guests.get()).unwrap_or(0))
                .collect(),
            rsvp_approval: events.iter().map(|e| e.rules.approval).collect(),
            reminders: events
                .iter()
                .map(|e| Value::from(e.rules.reminders.minutes().to_vec()))
                .collect(),
        }
    }
}
