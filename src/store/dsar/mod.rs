//! DSAR (data subject access requests) and retention: export everything the
//! service holds about one user in one tenant, erase it, and purge old
//! published outbox rows. The shapes are the original service's
//! (reference §7), with the deliberate differences listed on each function.
//!
//! Which outbox rows concern a user (the "matcher", reference §7.1, widened
//! to the user-id keys our payloads carry) is decided in SQL: a row of the
//! tenant matches when its event is one the user created (`event_id` column
//! or `payload->>'event_id'`), or when one of `payload.created_by`,
//! `user_id`, `marked_by`, `updated_by`, `cancelled_by`, `actor_user_id`,
//! trimmed and case-insensitively, is the user's id.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Utc};
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::app::AppError;
use crate::domain::published::{self, Published};
use crate::domain::{
    ANONYMIZED_USER_ID, ErrorCode, Event, EventId, RsvpChangeReason, RsvpCounts, RsvpStatus,
    TenantId, UserId, format_utc, promotions_after_capacity_change, truncate_to_micros,
};
use crate::store::audit::AuditEntry;
use crate::store::rows::{EVENT_COLUMNS, EventRow, parse_rsvp_status};
use crate::subjects::Subjects;

/// What erase writes over an erased user's id inside outbox payloads, and
/// what export shows in place of other users' ids.
pub const REDACTED: &str = "[redacted]";

/// Payload keys that carry a user id.
const USER_ID_KEYS: [&str; 6] = [
    "created_by",
    "user_id",
    "marked_by",
    "updated_by",
    "cancelled_by",
    "actor_user_id",
];

/// An erase that finds rows of the user appearing outside the events it
/// locked (the user acting while being erased) starts over; this bounds it.
const MAX_ERASE_ATTEMPTS: usize = 5;

/// Rows deleted per statement by the retention purge, so it never holds
/// locks on a large part of the outbox for long.
const PURGE_CHUNK: i64 = 5_000;

/// The outbox matcher, as a SQL condition on `outbox o`. Parameters:
/// `$1` tenant id, `$2` user id (canonical text), `$3` the user's created
/// event ids (`uuid[]`), `$4` the same as canonical text (`text[]`).
macro_rules! outbox_matcher {
    () => {
        r"o.tenant_id = $1 AND (
            o.event_id = ANY($3::uuid[])
            OR lower(btrim(o.payload->>'event_id')) = ANY($4::text[])
            OR EXISTS (
                SELECT 1
                FROM unnest(ARRAY['created_by', 'user_id', 'marked_by', 'updated_by',
                                  'cancelled_by', 'actor_user_id']) AS k(key)
                WHERE o.payload->>k.key ~* ('^\s*' || $2::text || '\s*$')
            )
        )"
    };
}

/// Every event of the tenant on which the user still has something: an
/// RSVP, an attendance row (as attendee or marker), or their id as
/// creator or canceller. `$1` tenant, `$2` user.
const USER_EVENTS_SQL: &str =
    "SELECT event_id FROM event_rsvps WHERE tenant_id = $1 AND user_id = $2
     UNION SELECT event_id FROM event_attendance
           WHERE tenant_id = $1 AND (user_id = $2 OR marked_by = $2)
     UNION SELECT id FROM events WHERE tenant_id = $1 AND (created_by = $2 OR cancelled_by = $2)
     ORDER BY 1";

/// The result of [`erase`].
#[derive(Debug, Clone)]
pub struct Erased {
    /// The original's summary JSON (reference §7.2).
    pub summary: Value,
    /// Every event whose row, counters, RSVPs or attendance the erase
    /// changed, as stored after it, so the caller can invalidate caches.
    pub changed_events: Vec<Event>,
    /// Outbox rows written (one per promoted waitlisted user), so the caller
    /// can wake the publisher.
    pub outbox_rows: usize,
}

/// Exports what the service holds about `user` in `tenant`: the original's
/// bundle `{service, tenant_id, user_id, exported_at, events_created,
/// rsvps, attendance, outbox}` with its selections and orders (reference
/// §7.1), read in one `REPEATABLE READ, READ ONLY` transaction, so every
/// section comes from the same snapshot (the original read them apart).
///
/// Deliberate differences from the original:
/// - datetimes are RFC 3339 UTC with `Z` ([`format_utc`]);
/// - `events_created` entries keep exactly the original's keys (our extra
///   columns such as `cancelled_by` could carry another user's id);
/// - `rsvps` and `attendance` entries have no integer `id` (our rows are
///   keyed by event and user): `rsvps` = `{event_id, tenant_id, user_id,
///   status, created_at, updated_at}` (`status` may be `waitlisted`;
///   `created_at` is when the user first answered), ordered by
///   `updated_at, event_id`; `attendance` = `{event_id, tenant_id,
///   user_id, marked_by, marked_at}`, ordered by `marked_at, event_id,
///   user_id`;
/// - the export never reveals another user's id (the original did, §11
///   S5): in `attendance`, a `user_id` or `marked_by` that is neither the
///   subject nor the anonymised id becomes `"[redacted]"` (the attendee of
///   a row the subject marked, and whoever marked the subject); in `outbox`
///   payloads, the values of user-id keys (`created_by`, `user_id`,
///   `marked_by`, `updated_by`, `cancelled_by`, `actor_user_id`, nested
///   too) are redacted the same way, e.g. another user's RSVP on an event
///   the subject created;
/// - the outbox matcher runs in SQL and also recognises `updated_by`,
///   `cancelled_by` and `actor_user_id`; outbox entries are ordered by
///   `occurred_at` then insertion order, and `published_at` is null until
///   published;
/// - the nil user id (what erase writes over erased users) is nobody's:
///   exporting it returns empty sections.
pub async fn export(db: &PgPool, tenant: TenantId, user: UserId) -> Result<Value, AppError> {
    let exported_at = Utc::now();
    let t = Uuid::from(tenant);
    let u = Uuid::from(user);
    let mut bundle = json!({
        "service": "events",
        "tenant_id": tenant.to_string(),
        "user_id": user.to_string(),
        "exported_at": format_utc(&exported_at),
        "events_created": [],
        "rsvps": [],
        "attendance": [],
        "outbox": [],
        "role_bindings": [],
        "memberships": [],
        // Calendar feed tokens: none are stored by this version.
        "feed_tokens": [],
    });
    if user.is_anonymized() {
        return Ok(bundle);
    }

    let mut tx = db
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let events: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events e
         WHERE e.tenant_id = $1 AND e.created_by = $2 ORDER BY e.created_at, e.id"
    )))
    .bind(t)
    .bind(u)
    .fetch_all(&mut *tx)
    .await?;
    let rsvps: Vec<RsvpExportRow> = sqlx::query_as(
        "SELECT event_id, tenant_id, user_id, status::text AS status, created_at, updated_at
         FROM event_rsvps WHERE tenant_id = $1 AND user_id = $2 ORDER BY updated_at, event_id",
    )
    .bind(t)
    .bind(u)
    .fetch_all(&mut *tx)
    .await?;
    let attendance: Vec<(Uuid, Uuid, Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT event_id, tenant_id, user_id, marked_by, marked_at FROM event_attendance
         WHERE tenant_id = $1 AND (user_id = $2 OR marked_by = $2)
         ORDER BY marked_at, event_id, user_id",
    )
    .bind(t)
    .bind(u)
    .fetch_all(&mut *tx)
    .await?;
    let created: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let outbox: Vec<OutboxRow> = sqlx::query_as(concat!(
        "SELECT o.id, o.tenant_id, o.event_type, o.payload, o.occurred_at, o.published_at
         FROM outbox o WHERE ",
        outbox_matcher!(),
        " ORDER BY o.occurred_at, o.seq"
    ))
    .bind(t)
    .bind(user.to_string())
    .bind(&created)
    .bind(as_text(&created))
    .fetch_all(&mut *tx)
    .await?;
    let bindings: Vec<(Uuid, String, String, String, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, role, scope_type::text, scope_id, created_by, created_at FROM role_bindings
         WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, id",
    )
    .bind(t)
    .bind(u)
    .fetch_all(&mut *tx)
    .await?;
    let memberships: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT scope_type::text, scope_id, created_at FROM scope_memberships
         WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, scope_type, scope_id",
    )
    .bind(t)
    .bind(u)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    bundle["role_bindings"] = bindings
        .into_iter()
        .map(|(id, role, scope_type, scope_id, created_by, created_at)| {
            json!({
                "id": id.to_string(),
                "tenant_id": tenant.to_string(),
                "user_id": user.to_string(),
                "role": role,
                "scope_type": scope_type,
                "scope_id": scope_id,
                "created_by": shown_id(created_by, user),
                "created_at": format_utc(&created_at),
            })
        })
        .collect();
    bundle["memberships"] = memberships
        .into_iter()
        .map(|(scope_type, scope_id, created_at)| {
            json!({
                "tenant_id": tenant.to_string(),
                "user_id": user.to_string(),
                "scope_type": scope_type,
                "scope_id": scope_id,
                "created_at": format_utc(&created_at),
            })
        })
        .collect();
    bundle["events_created"] = events.iter().map(event_json).collect();
    bundle["rsvps"] = rsvps
        .into_iter()
        .map(|r| {
            json!({
                "event_id": r.event_id.to_string(),
                "tenant_id": r.tenant_id.to_string(),
                "user_id": r.user_id.to_string(),
                "status": r.status,
                "created_at": format_utc(&r.created_at),
                "updated_at": format_utc(&r.updated_at),
            })
        })
        .collect();
    bundle["attendance"] = attendance
        .into_iter()
        .map(|(event_id, tenant_id, attendee, marked_by, marked_at)| {
            json!({
                "event_id": event_id.to_string(),
                "tenant_id": tenant_id.to_string(),
                "user_id": shown_id(attendee, user),
                "marked_by": shown_id(marked_by, user),
                "marked_at": format_utc(&marked_at),
            })
        })
        .collect();
    bundle["outbox"] = outbox
        .into_iter()
        .map(|row| {
            let mut payload = row.payload;
            redact_other_users(&mut payload, user);
            json!({
                "id": row.id.to_string(),
                "tenant_id": row.tenant_id.to_string(),
                "event_type": row.event_type,
                "payload": payload,
                "occurred_at": format_utc(&row.occurred_at),
                "published_at": row.published_at.as_ref().map(format_utc),
            })
        })
        .collect();
    Ok(bundle)
}

/// Erases `user` from `tenant` in one transaction and returns the
/// original's summary (reference §7.2):
/// `{service, tenant_id, user_id, mode: "hybrid", erased_at, counts:
/// {events_anonymized, rsvps_deleted, attendance_deleted,
/// attendance_marked_by_redacted, outbox_scrubbed}}`.
///
/// The transaction first locks the `event_counters` rows of every event the
/// user has anything on, in id order (as the batch writer does, so the two
/// cannot deadlock and no batch decides seats on stale counters), then:
/// - sets `created_by` of the user's events to the nil UUID, and
///   `cancelled_by` too where the user cancelled an event (a column the
///   original did not have); `events_anonymized` counts the events changed.
///   Neither `version` nor `updated_at` moves and no domain event is
///   written: erase emits none, as in the original;
/// - deletes the user's RSVPs (`rsvps_deleted`) and keeps `event_counters`
///   exact. Seats freed on an event that is not cancelled go to the
///   earliest waitlisted users (by `waitlist_seq`) exactly as the batch
///   writer does, and each promotion writes an `event.rsvp.changed` outbox
///   row (`reason: "promoted"`). The user's own removal writes none;
/// - deletes the user's attendance (`attendance_deleted`, `attended`
///   counter decremented) and sets `marked_by` to the nil UUID where they
///   marked others (`attendance_marked_by_redacted`);
/// - in every tenant outbox row the matcher selects (with the ids of the
///   events the user created), pending, dead and published alike, replaces
///   every string value that is the user's id (trimmed, any spelling of the
///   UUID), in nested objects and arrays too, with `"[redacted]"`;
///   `outbox_scrubbed` counts the rows that changed. Object keys are left
///   alone. Messages already in the JetStream stream are not covered (they
///   expire with the stream's max age), nor is free text the user wrote;
/// - deletes the user's create idempotency keys (their cached results
///   carry the user's id). The audit log is kept.
///
/// If rows of the user appear on other events while it runs (the user
/// acting during their own erasure), the transaction is rolled back and
/// run again, so nothing of the user is left behind unlocked. Erasing the
/// nil user id changes nothing and returns zero counts.
pub async fn erase(
    db: &PgPool,
    subjects: &Subjects,
    tenant: TenantId,
    user: UserId,
    audit: &[AuditEntry],
) -> Result<Erased, AppError> {
    if user.is_anonymized() {
        return Ok(Erased {
            summary: summary(tenant, user, Utc::now(), &Counts::default()),
            changed_events: Vec::new(),
            outbox_rows: 0,
        });
    }
    for attempt in 1..=MAX_ERASE_ATTEMPTS {
        let mut tx = db.begin().await?;
        match erase_in(&mut tx, subjects, tenant, user, audit).await {
            Ok(Some(erased)) => {
                tx.commit().await?;
                return Ok(erased);
            }
            Ok(None) => {
                tx.rollback().await?;
                tracing::info!(
                    attempt,
                    "DSAR erase raced with the user's own writes; starting over"
                );
            }
            Err(e) if is_transient(&e) && attempt < MAX_ERASE_ATTEMPTS => {
                let _ = tx.rollback().await;
                tracing::warn!(attempt, error = %e, "DSAR erase hit a transient conflict; starting over");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::internal(
        "dsar erase",
        "the user's rows kept changing while they were being erased",
    ))
}

/// Deletes outbox rows published before `now - days` and returns the
/// original's `purge_retention` output (reference §7.4):
/// `{"counts":{"published_outbox_deleted":n},"cutoffs":{"published_outbox_before":"<iso>"},
/// "executed_at":"<iso>","service":"events"}`. Pending and dead rows are
/// never purged, whatever their age. Rows are deleted in chunks, each its
/// own statement, so a large backlog does not hold one long transaction.
pub async fn purge_published_outbox(db: &PgPool, days: u32) -> Result<Value, AppError> {
    let executed_at = truncate_to_micros(Utc::now());
    let cutoff = chrono::Duration::try_days(i64::from(days))
        .and_then(|window| executed_at.checked_sub_signed(window))
        .filter(|cutoff| cutoff.year() >= 1)
        .ok_or_else(|| {
            AppError::rejected(
                ErrorCode::ValidationError,
                format!("a retention of {days} days reaches before year 1"),
            )
        })?;
    let mut deleted: u64 = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox
                 WHERE state = 'published' AND published_at < $1
                 ORDER BY published_at LIMIT $2)",
        )
        .bind(cutoff)
        .bind(PURGE_CHUNK)
        .execute(db)
        .await?
        .rows_affected();
        deleted += n;
        if n < PURGE_CHUNK as u64 {
            break;
        }
    }
    Ok(json!({
        "counts": {"published_outbox_deleted": deleted},
        "cutoffs": {"published_outbox_before": format_utc(&cutoff)},
        "executed_at": format_utc(&executed_at),
        "service": "events",
    }))
}

#[derive(sqlx::FromRow)]
struct RsvpExportRow {
    event_id: Uuid,
    tenant_id: Uuid,
    user_id: Uuid,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: Uuid,
    tenant_id: Uuid,
    event_type: String,
    payload: Value,
    occurred_at: DateTime<Utc>,
    published_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    events_anonymized: usize,
    rsvps_deleted: usize,
    attendance_deleted: usize,
    attendance_marked_by_redacted: u64,
    outbox_scrubbed: usize,
    role_bindings_deleted: u64,
    memberships_deleted: u64,
    feed_tokens_deleted: u64,
    audit_entries_anonymized: usize,
}

fn summary(tenant: TenantId, user: UserId, at: DateTime<Utc>, c: &Counts) -> Value {
    json!({
        "service": "events",
        "tenant_id": tenant.to_string(),
        "user_id": user.to_string(),
        "mode": "hybrid",
        "erased_at": format_utc(&at),
        "counts": {
            "events_anonymized": c.events_anonymized,
            "rsvps_deleted": c.rsvps_deleted,
            "attendance_deleted": c.attendance_deleted,
            "attendance_marked_by_redacted": c.attendance_marked_by_redacted,
            "outbox_scrubbed": c.outbox_scrubbed,
            "role_bindings_deleted": c.role_bindings_deleted,
            "memberships_deleted": c.memberships_deleted,
            "feed_tokens_deleted": c.feed_tokens_deleted,
            "audit_entries_anonymized": c.audit_entries_anonymized,
        },
    })
}

/// The locked counters of one event, as the erase changes them.
struct Counter {
    rsvp: RsvpCounts,
    attended: u32,
    dirty: bool,
}

/// One attempt of [`erase`]. `None`: rows of the user appeared outside the
/// locked events; the caller rolls back and tries again.
async fn erase_in(
    tx: &mut PgConnection,
    subjects: &Subjects,
    tenant: TenantId,
    user: UserId,
    audit: &[AuditEntry],
) -> Result<Option<Erased>, sqlx::Error> {
    let now = truncate_to_micros(Utc::now());
    let t = Uuid::from(tenant);
    let u = Uuid::from(user);
    let nil = Uuid::from(ANONYMIZED_USER_ID);
    // First, so that the erase's own entries are anonymised with the rest.
    crate::store::audit::insert(tx, audit).await?;

    let touched: Vec<Uuid> = sqlx::query_scalar(USER_EVENTS_SQL)
        .bind(t)
        .bind(u)
        .fetch_all(&mut *tx)
        .await?;
    let locked: Vec<(Uuid, i32, i32, i32, i32, i32)> = sqlx::query_as(
        "SELECT event_id, interested, going, not_going, waitlisted, attended FROM event_counters
         WHERE tenant_id = $1 AND event_id = ANY($2) ORDER BY event_id FOR UPDATE",
    )
    .bind(t)
    .bind(&touched)
    .fetch_all(&mut *tx)
    .await?;
    // Every change to an event or its RSVPs moves its revision: caches and
    // group commits that hold an older one read the event again.
    sqlx::query("UPDATE event_counters SET revision = revision + 1 WHERE event_id = ANY($1)")
        .bind(locked.iter().map(|row| row.0).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    let count = |v: i32| u32::try_from(v).unwrap_or(0);
    let mut counters: BTreeMap<Uuid, Counter> = locked
        .into_iter()
        .map(|(id, i, g, n, w, a)| {
            let rsvp = RsvpCounts {
                interested: count(i),
                going: count(g),
                not_going: count(n),
                waitlisted: count(w),
            };
            (
                id,
                Counter {
                    rsvp,
                    attended: count(a),
                    dirty: false,
                },
            )
        })
        .collect();

    // Events: the creator and canceller ids.
    let created: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE events SET created_by = $3
         WHERE tenant_id = $1 AND created_by = $2 AND id = ANY($4) RETURNING id",
    )
    .bind(t)
    .bind(u)
    .bind(nil)
    .bind(&touched)
    .fetch_all(&mut *tx)
    .await?;
    let cancelled: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE events SET cancelled_by = $3
         WHERE tenant_id = $1 AND cancelled_by = $2 AND id = ANY($4) RETURNING id",
    )
    .bind(t)
    .bind(u)
    .bind(nil)
    .bind(&touched)
    .fetch_all(&mut *tx)
    .await?;
    let anonymized: BTreeSet<Uuid> = created.iter().chain(&cancelled).copied().collect();

    // RSVPs, with exact counters.
    let deleted: Vec<(Uuid, String)> = sqlx::query_as(
        "DELETE FROM event_rsvps WHERE tenant_id = $1 AND user_id = $2 AND event_id = ANY($3)
         RETURNING event_id, status::text",
    )
    .bind(t)
    .bind(u)
    .bind(&touched)
    .fetch_all(&mut *tx)
    .await?;
    let mut rsvp_events: BTreeSet<Uuid> = BTreeSet::new();
    for (event_id, status) in &deleted {
        rsvp_events.insert(*event_id);
        if let (Some(c), Some(status)) = (counters.get_mut(event_id), parse_rsvp_status(status)) {
            c.rsvp.remove(status);
            c.dirty = true;
        }
    }

    // Attendance.
    let attended: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM event_attendance WHERE tenant_id = $1 AND user_id = $2 AND event_id = ANY($3)
         RETURNING event_id",
    )
    .bind(t)
    .bind(u)
    .bind(&touched)
    .fetch_all(&mut *tx)
    .await?;
    for event_id in &attended {
        if let Some(c) = counters.get_mut(event_id) {
            c.attended = c.attended.saturating_sub(1);
            c.dirty = true;
        }
    }
    let marked_by_redacted = sqlx::query(
        "UPDATE event_attendance SET marked_by = $3
         WHERE tenant_id = $1 AND marked_by = $2 AND event_id = ANY($4)",
    )
    .bind(t)
    .bind(u)
    .bind(nil)
    .bind(&touched)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    // Anything of the user left now was written on an event we did not
    // lock, after we listed them: start over rather than leave it.
    let left: Vec<Uuid> = sqlx::query_scalar(USER_EVENTS_SQL)
        .bind(t)
        .bind(u)
        .fetch_all(&mut *tx)
        .await?;
    if !left.is_empty() {
        return Ok(None);
    }

    let events = load_events(tx, t, &touched).await?;

    // Seats freed by the deleted RSVPs go to the earliest waitlisted.
    let mut wanted: (Vec<Uuid>, Vec<i64>) = Default::default();
    for event_id in &rsvp_events {
        let (Some(c), Some(event)) = (
            counters.get(event_id),
            events.get(&EventId::from(*event_id)),
        ) else {
            continue;
        };
        if event.is_cancelled() {
            continue;
        }
        let capacity = event.seat_capacity();
        let n = promotions_after_capacity_change(&c.rsvp.seats(capacity), capacity);
        if n > 0 {
            wanted.0.push(*event_id);
            wanted.1.push(i64::from(n));
        }
    }
    let mut outbox: Vec<Published> = Vec::new();
    if !wanted.0.is_empty() {
        let mut promoted: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
            "WITH wanted AS (SELECT * FROM UNNEST($1::uuid[], $2::bigint[]) AS w(event_id, n)),
                  queue AS (
                      SELECT r.event_id, r.user_id, r.waitlist_seq,
                             row_number() OVER (PARTITION BY r.event_id ORDER BY r.waitlist_seq) AS place
                      FROM event_rsvps r JOIN wanted w ON w.event_id = r.event_id
                      WHERE r.status = 'waitlisted'),
                  chosen AS (
                      SELECT q.event_id, q.user_id, q.waitlist_seq
                      FROM queue q JOIN wanted w ON w.event_id = q.event_id WHERE q.place <= w.n)
             UPDATE event_rsvps r SET status = 'going', waitlist_seq = NULL, updated_at = $3
             FROM chosen c WHERE r.event_id = c.event_id AND r.user_id = c.user_id
             RETURNING r.event_id, r.user_id, c.waitlist_seq",
        )
        .bind(&wanted.0)
        .bind(&wanted.1)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        promoted.sort_by_key(|(event_id, _, seq)| (*event_id, *seq));
        for (event_id, promoted_user, _) in promoted {
            if let Some(c) = counters.get_mut(&event_id) {
                c.rsvp
                    .transition(Some(RsvpStatus::Waitlisted), Some(RsvpStatus::Going));
                c.dirty = true;
            }
            if let Some(event) = events.get(&EventId::from(event_id)) {
                outbox.push(published::rsvp_changed(
                    event,
                    UserId::from(promoted_user),
                    Some(RsvpStatus::Going),
                    Some(RsvpStatus::Waitlisted),
                    RsvpChangeReason::Promoted,
                    now,
                ));
            }
        }
    }

    write_counters(tx, &counters, now).await?;
    let outbox_scrubbed = scrub_outbox(tx, t, user, &created).await?;
    let outbox_rows = insert_outbox(tx, subjects, &outbox).await?;
    sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND user_id = $2")
        .bind(t)
        .bind(u)
        .execute(&mut *tx)
        .await?;
    let role_bindings_deleted =
        sqlx::query("DELETE FROM role_bindings WHERE tenant_id = $1 AND user_id = $2")
            .bind(t)
            .bind(u)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    // Bindings the user granted to others stay, without the user's id.
    sqlx::query(
        "UPDATE role_bindings SET created_by = $3 WHERE tenant_id = $1 AND created_by = $2",
    )
    .bind(t)
    .bind(u)
    .bind(nil)
    .execute(&mut *tx)
    .await?;
    let memberships_deleted =
        sqlx::query("DELETE FROM scope_memberships WHERE tenant_id = $1 AND user_id = $2")
            .bind(t)
            .bind(u)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let audit_entries_anonymized = anonymize_audit(tx, t, user).await?;

    let counts = Counts {
        events_anonymized: anonymized.len(),
        rsvps_deleted: deleted.len(),
        attendance_deleted: attended.len(),
        attendance_marked_by_redacted: marked_by_redacted,
        outbox_scrubbed,
        role_bindings_deleted,
        memberships_deleted,
        feed_tokens_deleted: 0,
        audit_entries_anonymized,
    };
    Ok(Some(Erased {
        summary: summary(tenant, user, now, &counts),
        changed_events: events.into_values().collect(),
        outbox_rows,
    }))
}

/// The events (as stored now) with the given ids, in id order. A row that
/// does not validate is logged and left out: it must not block an erase.
async fn load_events(
    tx: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<BTreeMap<EventId, Event>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.tenant_id = $1 AND e.id = ANY($2)"
    )))
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut events = BTreeMap::new();
    for row in rows {
        match Event::try_from(row) {
            Ok(event) => {
                events.insert(event.id, event);
            }
            Err(e) => tracing::error!(error = %e, "DSAR erase: an event row does not validate"),
        }
    }
    Ok(events)
}

async fn write_counters(
    tx: &mut PgConnection,
    counters: &BTreeMap<Uuid, Counter>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let dirty: Vec<(&Uuid, &Counter)> = counters.iter().filter(|(_, c)| c.dirty).collect();
    if dirty.is_empty() {
        return Ok(());
    }
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    sqlx::query(
        "UPDATE event_counters c SET interested = u.i, going = u.g, not_going = u.n,
                waitlisted = u.w, attended = u.a, updated_at = $7
         FROM UNNEST($1::uuid[], $2::int[], $3::int[], $4::int[], $5::int[], $6::int[])
           AS u(id, i, g, n, w, a)
         WHERE c.event_id = u.id",
    )
    .bind(dirty.iter().map(|(id, _)| **id).collect::<Vec<_>>())
    .bind(
        dirty
            .iter()
            .map(|(_, c)| n(c.rsvp.interested))
            .collect::<Vec<_>>(),
    )
    .bind(
        dirty
            .iter()
            .map(|(_, c)| n(c.rsvp.going))
            .collect::<Vec<_>>(),
    )
    .bind(
        dirty
            .iter()
            .map(|(_, c)| n(c.rsvp.not_going))
            .collect::<Vec<_>>(),
    )
    .bind(
        dirty
            .iter()
            .map(|(_, c)| n(c.rsvp.waitlisted))
            .collect::<Vec<_>>(),
    )
    .bind(dirty.iter().map(|(_, c)| n(c.attended)).collect::<Vec<_>>())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Replaces the user's id in every matching outbox row of the tenant;
/// returns how many rows changed.
async fn scrub_outbox(
    tx: &mut PgConnection,
    tenant: Uuid,
    user: UserId,
    created: &[Uuid],
) -> Result<usize, sqlx::Error> {
    let rows: Vec<(Uuid, Value)> = sqlx::query_as(concat!(
        "SELECT o.id, o.payload FROM outbox o WHERE ",
        outbox_matcher!(),
        " ORDER BY o.seq FOR UPDATE"
    ))
    .bind(tenant)
    .bind(user.to_string())
    .bind(created)
    .bind(as_text(created))
    .fetch_all(&mut *tx)
    .await?;
    let mut ids = Vec::new();
    let mut payloads = Vec::new();
    for (id, mut payload) in rows {
        if scrub(&mut payload, user) {
            ids.push(id);
            payloads.push(payload);
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "UPDATE outbox o SET payload = u.p
         FROM UNNEST($1::uuid[], $2::jsonb[]) AS u(id, p) WHERE o.id = u.id",
    )
    .bind(&ids)
    .bind(&payloads)
    .execute(&mut *tx)
    .await?;
    Ok(ids.len())
}

/// Replaces the user's id by the nil UUID in the tenant's audit entries by
/// or about them (actor, target, and anywhere in the details); returns how
/// many entries changed. The entries stay: the trail keeps what was done.
async fn anonymize_audit(
    tx: &mut PgConnection,
    tenant: Uuid,
    user: UserId,
) -> Result<usize, sqlx::Error> {
    let rows: Vec<(Uuid, Option<Uuid>, Option<String>, Value)> = sqlx::query_as(
        "SELECT id, actor_user_id, target_id, details FROM audit_log
         WHERE tenant_id = $1
           AND (actor_user_id = $2 OR target_id ~* ('^\\s*' || $3 || '\\s*$')
                OR details::text ~* $3)
         FOR UPDATE",
    )
    .bind(tenant)
    .bind(Uuid::from(user))
    .bind(user.to_string())
    .fetch_all(&mut *tx)
    .await?;
    let nil = Uuid::from(ANONYMIZED_USER_ID);
    let (mut ids, mut actors, mut targets, mut details) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, actor, target, mut detail) in rows {
        let actor_matches = actor == Some(Uuid::from(user));
        let target_matches = target.as_deref().is_some_and(|t| is_user(t, user));
        let detail_matches = replace_user(&mut detail, user, &nil.to_string());
        if actor_matches || target_matches || detail_matches {
            ids.push(id);
            actors.push(if actor_matches { Some(nil) } else { actor });
            targets.push(if target_matches {
                Some(nil.to_string())
            } else {
                target
            });
            details.push(detail);
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "UPDATE audit_log a SET actor_user_id = u.a, target_id = u.t, details = u.d
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[]) AS u(id, a, t, d)
         WHERE a.id = u.id",
    )
    .bind(&ids)
    .bind(&actors)
    .bind(&targets)
    .bind(&details)
    .execute(&mut *tx)
    .await?;
    Ok(ids.len())
}

/// Writes domain events like the batch writer does (no trace context: an
/// erase is not a traced user request of the promoted users).
async fn insert_outbox(
    tx: &mut PgConnection,
    subjects: &Subjects,
    rows: &[Published],
) -> Result<usize, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::new_v4()).collect();
    let tenants: Vec<Uuid> = rows.iter().map(|p| Uuid::from(p.tenant_id)).collect();
    let events: Vec<Uuid> = rows.iter().map(|p| Uuid::from(p.event_id)).collect();
    let types: Vec<&str> = rows.iter().map(|p| p.event_type).collect();
    let subject_names: Vec<String> = rows
        .iter()
        .map(|p| subjects.domain_event(&Uuid::from(p.tenant_id), p.event_type))
        .collect();
    let payloads: Vec<&Value> = rows.iter().map(|p| &p.data).collect();
    let occurred: Vec<DateTime<Utc>> = rows.iter().map(|p| p.occurred_at).collect();
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload, occurred_at)
         SELECT id, t, e, ty, s, p, o
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[],
                     $7::timestamptz[]) WITH ORDINALITY AS x(id, t, e, ty, s, p, o, n)
         ORDER BY n",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&events)
    .bind(&types)
    .bind(&subject_names)
    .bind(&payloads)
    .bind(&occurred)
    .execute(&mut *tx)
    .await?;
    Ok(rows.len())
}

/// An event the subject created, with exactly the original's keys.
fn event_json(e: &EventRow) -> Value {
    json!({
        "id": e.id.to_string(),
        "tenant_id": e.tenant_id.to_string(),
        "scope_type": e.scope_type,
        "scope_id": e.scope_id,
        "title": e.title,
        "description": e.description,
        "starts_at": format_utc(&e.starts_at),
        "ends_at": format_utc(&e.ends_at),
        "location_text": e.location_text,
        "location_url": e.location_url,
        "game_id": e.game_id,
        "visibility": e.visibility,
        "created_by": e.created_by.to_string(),
        "created_at": format_utc(&e.created_at),
        "updated_at": format_utc(&e.updated_at),
    })
}

fn as_text(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(|id| id.hyphenated().to_string()).collect()
}

/// Whether `s` is the user's id: trimmed, in any spelling of the UUID.
fn is_user(s: &str, user: UserId) -> bool {
    UserId::parse(s).is_ok_and(|id| id == user)
}

/// Replaces every string value that is the user's id with `"[redacted]"`,
/// recursively; returns whether anything changed.
fn scrub(value: &mut Value, user: UserId) -> bool {
    replace_user(value, user, REDACTED)
}

/// Replaces every string value that is the user's id with `with`,
/// recursively (object keys stay); returns whether anything changed.
fn replace_user(value: &mut Value, user: UserId, with: &str) -> bool {
    match value {
        Value::String(s) if is_user(s, user) => {
            *value = Value::String(with.to_string());
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| replace_user(v, user, with) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, v| replace_user(v, user, with) | changed),
        _ => false,
    }
}

/// An id as the export shows it: the subject's and the anonymised id as
/// they are, anyone else's as `"[redacted]"`.
fn shown_id(id: Uuid, subject: UserId) -> Value {
    if id == Uuid::from(subject) || id == Uuid::from(ANONYMIZED_USER_ID) {
        Value::String(id.hyphenated().to_string())
    } else {
        Value::String(REDACTED.to_string())
    }
}

/// Redacts other users' ids under the user-id keys of a payload, nested
/// objects and arrays included.
fn redact_other_users(value: &mut Value, subject: UserId) {
    match value {
        Value::Object(map) => redact_in_object(map, subject),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| redact_other_users(v, subject)),
        _ => {}
    }
}

fn redact_in_object(map: &mut Map<String, Value>, subject: UserId) {
    for (key, v) in map.iter_mut() {
        if let Value::String(s) = v
            && USER_ID_KEYS.contains(&key.as_str())
        {
            if let Ok(id) = UserId::parse(s) {
                *v = shown_id(Uuid::from(id), subject);
            }
        } else {
            redact_other_users(v, subject);
        }
    }
}

/// Deadlocks and serialisation failures: the erase may simply run again.
fn is_transient(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("6f1c2a3b-0000-4000-8000-000000000001").expect("valid")
    }

    #[test]
    fn scrub_replaces_nested_and_padded_ids_only() {
        let u = user().to_string();
        let mut v = json!({
            "user_id": u,
            "nested": {"list": [format!("  {u}\n"), "other", {"deep": u.to_uppercase()}]},
            "n": 1,
            u.clone(): "key stays",
        });
        assert!(scrub(&mut v, user()));
        assert_eq!(v["user_id"], REDACTED);
        assert_eq!(v["nested"]["list"][0], REDACTED);
        assert_eq!(v["nested"]["list"][1], "other");
        assert_eq!(v["nested"]["list"][2]["deep"], REDACTED);
        assert_eq!(v[&u], "key stays");
        assert!(!scrub(&mut v, user()));
    }

    #[test]
    fn export_redaction_keeps_subject_and_nil() {
        let other = Uuid::new_v4().to_string();
        let mut v = json!({
            "user_id": other,
            "created_by": user().to_string(),
            "marked_by": Uuid::nil().to_string(),
            "title": other,
            "inner": [{"actor_user_id": other}],
        });
        redact_other_users(&mut v, user());
        assert_eq!(v["user_id"], REDACTED);
        assert_eq!(v["created_by"], user().to_string());
        assert_eq!(v["marked_by"], Uuid::nil().to_string());
        assert_eq!(v["title"], other);
        assert_eq!(v["inner"][0]["actor_user_id"], REDACTED);
    }
}
