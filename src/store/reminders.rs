//! Reminders due: one row per (event, going user, offset), kept in step
//! with the events and RSVPs in the transaction of every change, and
//! claimed by the scheduler when due (`crate::actors::reminders`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::commands::EventChanges;
use crate::domain::published::{self, Published, ReminderDue};
use crate::domain::{EventId, RsvpStatus, TenantId, UserId};

/// Brings the reminders of `events` in line with what was just written
/// (call it after the rows are written, in the same transaction):
///
/// - an event whose row changed (moved, reminders changed, cancelled)
///   loses every reminder not sent yet, and gets one per going user and
///   offset again (none once cancelled);
/// - otherwise, a user who became going gets theirs, a user who is not
///   going any more loses those not sent yet.
///
/// A reminder already sent is never sent again for the same offset, and
/// one whose time is past at `now` is not created (a user who RSVPs an
/// hour before the start gets no "in a day" reminder).
pub async fn sync(
    tx: &mut PgConnection,
    events: &[EventChanges],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // An event whose stored row changed has all its reminders rebuilt.
    let rebuilds = |e: &EventChanges| e.row_changed && !e.is_new;
    let rebuilt: Vec<Uuid> = events
        .iter()
        .filter(|e| rebuilds(e))
        .map(|e| Uuid::from(e.event.id))
        .collect();
    let mut going: Vec<Pair> = Vec::new();
    let mut gone: Vec<Pair> = Vec::new();
    for e in events
        .iter()
        .filter(|e| !rebuilds(e) && !e.event.rules.reminders.is_empty())
    {
        for (user, row) in &e.rsvps {
            let pair = (Uuid::from(e.event.id), Uuid::from(*user));
            if row.is_some_and(|r| r.status == RsvpStatus::Going) {
                going.push(pair);
            } else {
                gone.push(pair);
            }
        }
    }
    if !rebuilt.is_empty() {
        sqlx::query("DELETE FROM event_reminders WHERE event_id = ANY($1) AND sent_at IS NULL")
            .bind(&rebuilt)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO event_reminders (event_id, user_id, minutes_before, tenant_id, due_at)
             SELECT r.event_id, r.user_id, m, r.tenant_id, e.starts_at - make_interval(mins => m)
             FROM events e
             JOIN event_rsvps r ON r.event_id = e.id AND r.status = 'going'
             CROSS JOIN LATERAL unnest(e.reminders) AS m
             WHERE e.id = ANY($1) AND e.status = 'scheduled'
               AND e.starts_at - make_interval(mins => m) > $2
             ON CONFLICT (event_id, user_id, minutes_before) DO NOTHING",
        )
        .bind(&rebuilt)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    if !gone.is_empty() {
        sqlx::query(
            "DELETE FROM event_reminders d USING UNNEST($1::uuid[], $2::uuid[]) AS x(e, u)
             WHERE d.event_id = x.e AND d.user_id = x.u AND d.sent_at IS NULL",
        )
        .bind(gone.iter().map(|p| p.0).collect::<Vec<_>>())
        .bind(gone.iter().map(|p| p.1).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !going.is_empty() {
        sqlx::query(
            "INSERT INTO event_reminders (event_id, user_id, minutes_before, tenant_id, due_at)
             SELECT e.id, x.u, m, e.tenant_id, e.starts_at - make_interval(mins => m)
             FROM UNNEST($1::uuid[], $2::uuid[]) AS x(e, u)
             JOIN events e ON e.id = x.e
             CROSS JOIN LATERAL unnest(e.reminders) AS m
             WHERE e.status = 'scheduled' AND e.starts_at - make_interval(mins => m) > $3
             ON CONFLICT (event_id, user_id, minutes_before) DO NOTHING",
        )
        .bind(going.iter().map(|p| p.0).collect::<Vec<_>>())
        .bind(going.iter().map(|p| p.1).collect::<Vec<_>>())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// An event and a user.
type Pair = (Uuid, Uuid);

type DueRow = (
    Uuid,
    Uuid,
    i32,
    Uuid,
    DateTime<Utc>,
    String,
    String,
    String,
    DateTime<Utc>,
);

/// Claims up to `limit` reminders due at `now` (skipping those another
/// transaction holds), marks them sent, and returns their domain events
/// for the outbox rows the caller writes in the same transaction: so a
/// reminder is committed exactly once, or not at all.
pub async fn claim_due(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Published>, sqlx::Error> {
    // Only for events still scheduled and users still going: the rows are
    // kept in step with both, so this is a second line, not the rule.
    let rows: Vec<DueRow> = sqlx::query_as(
        "WITH due AS (
             SELECT d.event_id, d.user_id, d.minutes_before FROM event_reminders d
             WHERE d.sent_at IS NULL AND d.due_at <= $1
             ORDER BY d.due_at, d.event_id, d.user_id, d.minutes_before
             LIMIT $2 FOR UPDATE SKIP LOCKED),
         sent AS (
             UPDATE event_reminders d SET sent_at = $1 FROM due
             WHERE d.event_id = due.event_id AND d.user_id = due.user_id
               AND d.minutes_before = due.minutes_before
             RETURNING d.event_id, d.user_id, d.minutes_before, d.tenant_id, d.due_at)
         SELECT s.event_id, s.user_id, s.minutes_before, s.tenant_id, s.due_at,
                e.scope_type::text, e.scope_id, e.title, e.starts_at
         FROM sent s
         JOIN events e ON e.id = s.event_id AND e.status = 'scheduled'
         JOIN event_rsvps r ON r.event_id = s.event_id AND r.user_id = s.user_id AND r.status = 'going'
         ORDER BY s.due_at, s.event_id, s.user_id, s.minutes_before DESC",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(event, user, minutes, tenant, due_at, scope_type, scope_id, title, starts_at)| {
                published::reminder_due(&ReminderDue {
                    event_id: EventId::from(event),
                    tenant_id: TenantId::from(tenant),
                    user_id: UserId::from(user),
                    scope_type,
                    scope_id,
                    title,
                    starts_at,
                    minutes_before: u32::try_from(minutes).unwrap_or(0),
                    due_at,
                })
            },
        )
        .collect())
}
