//! DSAR erase: everything of one user in one tenant, removed or
//! anonymised in one transaction, with the seats it frees given to the
//! waitlist by the same decide step as every other write.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{REDACTED, as_text};
use crate::domain::commands::{self, Command, CommandKind, EventState, Locked, Outcome};
use crate::domain::{ANONYMIZED_USER_ID, Event, TenantId, UserId, format_utc, truncate_to_micros};
use crate::error::AppError;
use crate::names::Subjects;
use crate::store::audit::AuditEntry;
use crate::store::batch::load;
use crate::store::batch::write::{self, OutboxRow, Trace, Writes};

/// An erase that finds rows of the user appearing outside the events it
/// locked (the user acting while being erased) starts over; this bounds it.
const MAX_ERASE_ATTEMPTS: usize = 5;

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
    /// The original's summary JSON.
    pub summary: Value,
    /// Every event whose row, counters, RSVPs or attendance the erase
    /// changed, as stored after it, so the caller can invalidate caches.
    pub changed_events: Vec<Event>,
    /// Outbox rows written (one per promoted waitlisted user), so the caller
    /// can wake the publisher.
    pub outbox_rows: usize,
}

/// Erases `user` from `tenant` in one transaction and returns the
/// original's summary:
/// `{service, tenant_id, user_id, mode: "hybrid", erased_at, counts:
/// {events_anonymized, rsvps_deleted, attendance_deleted,
/// attendance_marked_by_redacted, outbox_scrubbed, role_bindings_deleted,
/// memberships_deleted, feed_tokens_deleted, audit_entries_anonymized}}`
/// (`feed_tokens_deleted`: the user's calendar feeds in the tenant).
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
///   earliest waitlisted users (by `waitlist_seq`): the batch writer's
///   decide step decides it, and its writers write it, so each promotion
///   writes an `event.rsvp.changed` outbox row (`reason: "promoted"`). The
///   user's own removal writes none;
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
///   carry the user's id) and the import's record of their rows;
/// - deletes the user's role bindings (`role_bindings_deleted`) and
///   community and team memberships (`memberships_deleted`) in the tenant;
///   those the user granted or added for others stay, with the nil UUID as
///   `created_by`;
/// - keeps the audit log, but replaces the user's id by the nil UUID in
///   the tenant's entries by or about them (actor, target, anywhere in the
///   details), the erase's own entry included; `audit_entries_anonymized`
///   counts the entries changed.
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

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    events_anonymized: usize,
    rsvps_deleted: u64,
    attendance_deleted: u64,
    attendance_marked_by_redacted: u64,
    outbox_scrubbed: usize,
    role_bindings_deleted: u64,
    memberships_deleted: u64,
    feed_tokens_deleted: u64,
    series_anonymized: u64,
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
            "series_anonymized": c.series_anonymized,
            "audit_entries_anonymized": c.audit_entries_anonymized,
        },
    })
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
    let counters = load::lock_counters(tx, tenant, &touched).await?;

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

    // The RSVPs and attendance, decided like any other write: read after
    // the ids above were rewritten, so the events are as they are stored.
    let mut events = load::read_events(tx, tenant, &touched).await?;
    events.sort_by_key(|e| e.id);
    let mut locked = Locked::default();
    for event in &events {
        if let Some(c) = counters.get(&event.id) {
            let mut state = EventState::new(event.clone(), c.counts);
            state.attended = c.attended;
            locked.insert(state);
        }
    }
    // The erase acts for no user: promotions name only the promoted.
    let erasures: Vec<Command> = locked
        .events
        .keys()
        .map(|event_id| Command {
            actor: ANONYMIZED_USER_ID,
            at: now,
            kind: CommandKind::EraseUser {
                event_id: *event_id,
                user,
            },
        })
        .collect();
    let decided: BTreeSet<Uuid> = locked.events.keys().map(|id| Uuid::from(*id)).collect();
    let named = load::named_rows(&erasures);
    load::rsvps(tx, &mut locked, &named.rsvps).await?;
    load::attendance(tx, &mut locked, &named.attendance).await?;
    load::waitlist_heads(tx, &mut locked, &erasures).await?;
    let decision = commands::decide(locked, &erasures);
    let (mut rsvps_deleted, mut attendance_deleted) = (0u64, 0u64);
    for outcome in &decision.outcomes {
        if let Ok(Outcome::Erased {
            rsvp, attendance, ..
        }) = outcome
        {
            rsvps_deleted += u64::from(rsvp.is_some());
            attendance_deleted += u64::from(*attendance);
        }
    }

    // Before the promotions are written: those rows are not the user's.
    let outbox_scrubbed = scrub_outbox(tx, t, user, &created).await?;

    // Every locked event changed (its creator, canceller, or something of
    // the user on it), so every one's revision moves with its counters.
    let mut w = Writes::default();
    write::write_rsvps(&mut w, &decision.events)?;
    write::write_attendance(&mut w, &decision.events)?;
    write::write_counters(&mut w, &decision.events.iter().collect::<Vec<_>>())?;
    // No trace context: an erase is not a traced request of the promoted.
    let rows: Vec<OutboxRow<'_>> = decision
        .published
        .iter()
        .map(|e| OutboxRow {
            event: &e.event,
            trace: Trace::default(),
        })
        .collect();
    let outbox_rows = write::insert_outbox(&mut w, subjects, &rows)?;
    w.execute(tx).await?;
    // The promoted get their reminders; the user's go below.
    crate::store::reminders::sync(tx, &decision.events, now).await?;

    // Events that could not be decided (a row that does not validate) must
    // not keep the user or block the erase: their rows go, and their
    // counters are counted again from what is left.
    let undecided: Vec<Uuid> = touched
        .iter()
        .filter(|id| !decided.contains(id))
        .copied()
        .collect();
    if !undecided.is_empty() {
        let (rsvps, attendance) = erase_undecided(tx, t, u, &undecided).await?;
        rsvps_deleted += rsvps;
        attendance_deleted += attendance;
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

    // Reminders name the user too, sent or not.
    sqlx::query("DELETE FROM event_reminders WHERE tenant_id = $1 AND user_id = $2")
        .bind(t)
        .bind(u)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND user_id = $2")
        .bind(t)
        .bind(u)
        .execute(&mut *tx)
        .await?;
    // The import's record of the user's rows names the user too.
    sqlx::query("DELETE FROM django_import WHERE tenant_id = $1 AND user_id = $2")
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
    // Memberships the user added for others stay, without the user's id.
    sqlx::query(
        "UPDATE scope_memberships SET created_by = $3 WHERE tenant_id = $1 AND created_by = $2",
    )
    .bind(t)
    .bind(u)
    .bind(nil)
    .execute(&mut *tx)
    .await?;
    // Series the user created stay, without the user's id (occurrences made
    // later would otherwise name them as their creator).
    let series_anonymized = sqlx::query(
        "UPDATE event_series SET created_by = $3 WHERE tenant_id = $1 AND created_by = $2",
    )
    .bind(t)
    .bind(u)
    .bind(nil)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Calendar feeds are the user's alone: their tokens stop working.
    let feed_tokens_deleted =
        sqlx::query("DELETE FROM feed_tokens WHERE tenant_id = $1 AND owner_id = $2")
            .bind(t)
            .bind(u)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let audit_entries_anonymized = anonymize_audit(tx, t, user).await?;

    let counts = Counts {
        events_anonymized: anonymized.len(),
        rsvps_deleted,
        attendance_deleted,
        attendance_marked_by_redacted: marked_by_redacted,
        outbox_scrubbed,
        role_bindings_deleted,
        memberships_deleted,
        feed_tokens_deleted,
        series_anonymized,
        audit_entries_anonymized,
    };
    Ok(Some(Erased {
        summary: summary(tenant, user, now, &counts),
        changed_events: events,
        outbox_rows,
    }))
}

/// Deletes the user's RSVPs and attendance on events that could not be
/// decided, and counts those events' counters again from their rows
/// (moving their revisions); returns how many RSVPs and marks went.
async fn erase_undecided(
    tx: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
    events: &[Uuid],
) -> Result<(u64, u64), sqlx::Error> {
    let rsvps = sqlx::query(
        "DELETE FROM event_rsvps WHERE tenant_id = $1 AND user_id = $2 AND event_id = ANY($3)",
    )
    .bind(tenant)
    .bind(user)
    .bind(events)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let attendance = sqlx::query(
        "DELETE FROM event_attendance WHERE tenant_id = $1 AND user_id = $2 AND event_id = ANY($3)",
    )
    .bind(tenant)
    .bind(user)
    .bind(events)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE event_counters c SET
             interested = (SELECT count(*) FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'interested'),
             going = (SELECT count(*) FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'going'),
             not_going = (SELECT count(*) FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'not_going'),
             waitlisted = (SELECT count(*) FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'waitlisted'),
             attended = (SELECT count(*) FROM event_attendance a WHERE a.event_id = c.event_id),
             revision = c.revision + 1, updated_at = now()
         WHERE c.tenant_id = $1 AND c.event_id = ANY($2)",
    )
    .bind(tenant)
    .bind(events)
    .execute(&mut *tx)
    .await?;
    Ok((rsvps, attendance))
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
}
