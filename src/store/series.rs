//! Recurring events in Postgres: the series rows, and the three writers
//! that change a series together with its occurrences in one transaction
//! (create, a change of several occurrences, extension as time passes).
//!
//! Each writer locks the series row first, then the occurrences' counter
//! rows in id order (as every writer does), decides with the one decide
//! step and writes with the group commit's writers, outbox rows included.
//! Holding the series row serialises everything that makes or moves
//! occurrences of one series, across instances: an occurrence is made
//! once, and a change of several occurrences sees all of them.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::commands::{self, Command, CommandKind, Outcome, Refusal};
use crate::domain::series::{Series, SeriesPlan};
use crate::domain::{Event, Recurrence, SeriesId, TenantId};
use crate::error::AppError;
use crate::names::Subjects;
use crate::store::batch::write::Trace;
use crate::store::batch::{
    BatchEffects, CommandMeta, Envelope, WriteCommand, WriteOutcome, claims, load, write,
};
use crate::store::rows::{EVENT_COLUMNS, EventRow};

/// The columns of a series, the template as an events row.
const SERIES_COLUMNS: &str = "s.id, s.tenant_id, s.scope_type::text AS scope_type, s.scope_id, s.title, \
     s.description, s.dtstart AS starts_at, s.dtstart + make_interval(secs => s.duration_secs) AS ends_at, \
     s.location_text, s.location_url, s.game_id, s.visibility::text AS visibility, 'scheduled' AS status, \
     s.capacity, s.created_by, s.created_at, s.updated_at, s.version, NULL::timestamptz AS cancelled_at, \
     NULL::uuid AS cancelled_by, NULL::text AS cancel_reason, s.time_zone, NULL::uuid AS series_id, \
     NULL::timestamptz AS recurrence_id, false AS series_exception, \
     s.rsvp_opens_at, s.rsvp_closes_at, s.max_guests, s.rsvp_approval, s.reminders, \
     s.rrule, s.exdates, s.duration_secs, s.materialised_until, s.complete, s.cancelled, s.tenant_slug";

#[derive(sqlx::FromRow)]
struct SeriesRow {
    #[sqlx(flatten)]
    template: EventRow,
    rrule: String,
    exdates: Vec<DateTime<Utc>>,
    duration_secs: i64,
    materialised_until: DateTime<Utc>,
    complete: bool,
    cancelled: bool,
    tenant_slug: Option<String>,
}

impl SeriesRow {
    fn into_series(self) -> Result<Series, sqlx::Error> {
        let id = SeriesId::from_uuid(self.template.id);
        let version = self.template.version;
        let updated_at = self.template.updated_at;
        let template = Event::try_from(self.template).map_err(|e| sqlx::Error::Decode(e.into()))?;
        Ok(Series {
            id,
            recurrence: Recurrence::from_stored(self.rrule, self.exdates),
            time_zone: template.time_zone,
            dtstart: template.starts_at,
            duration: Duration::seconds(self.duration_secs),
            template,
            materialised_until: self.materialised_until,
            complete: self.complete,
            cancelled: self.cancelled,
            version,
            updated_at,
            tenant_slug: self.tenant_slug,
        })
    }
}

/// One series of the tenant, as stored.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: SeriesId,
) -> Result<Option<Series>, sqlx::Error> {
    fetch(conn, tenant, id, "").await
}

async fn fetch(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: SeriesId,
    lock: &str,
) -> Result<Option<Series>, sqlx::Error> {
    let row: Option<SeriesRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SERIES_COLUMNS} FROM event_series s WHERE s.id = $1 AND s.tenant_id = $2 {lock}"
    )))
    .bind(Uuid::from(id))
    .bind(Uuid::from(tenant))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(SeriesRow::into_series).transpose()
}

/// Every occurrence of a series, in instance order.
pub async fn occurrences(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: SeriesId,
) -> Result<Vec<Event>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.series_id = $1 AND e.tenant_id = $2
         ORDER BY e.recurrence_id"
    )))
    .bind(Uuid::from(id))
    .bind(Uuid::from(tenant))
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| Event::try_from(r).map_err(|e| sqlx::Error::Decode(e.into())))
        .collect()
}

/// Stores a new series in the caller's transaction (the ICS import makes
/// its occurrences with its own commands).
pub(crate) async fn insert_in(conn: &mut PgConnection, s: &Series) -> Result<(), sqlx::Error> {
    insert(conn, s).await
}

async fn insert(conn: &mut PgConnection, s: &Series) -> Result<(), sqlx::Error> {
    let t = &s.template;
    sqlx::query(
        "INSERT INTO event_series (id, tenant_id, scope_type, scope_id, rrule, exdates, time_zone, dtstart,
             duration_secs, title, description, location_text, location_url, game_id, visibility, capacity,
             materialised_until, complete, cancelled, version, tenant_slug, created_by, created_at, updated_at,
             rsvp_opens_at, rsvp_closes_at, max_guests, rsvp_approval, reminders)
         VALUES ($1, $2, $3::scope_type, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::event_visibility,
             $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)",
    )
    .bind(Uuid::from(s.id))
    .bind(Uuid::from(t.tenant_id))
    .bind(t.scope_type().as_str())
    .bind(t.scope_id().as_str())
    .bind(s.recurrence.rule())
    .bind(s.recurrence.exdates())
    .bind(s.time_zone.name())
    .bind(s.dtstart)
    .bind(s.duration.num_seconds())
    .bind(t.title.as_str())
    .bind(t.description.as_str())
    .bind(t.location_text.as_str())
    .bind(t.location_url.as_ref().map(|u| u.as_str()))
    .bind(t.game_id.as_ref().map(|g| g.as_str()))
    .bind(t.visibility.as_str())
    .bind(capacity(t))
    .bind(s.materialised_until)
    .bind(s.complete)
    .bind(s.cancelled)
    .bind(s.version)
    .bind(s.tenant_slug.as_deref())
    .bind(Uuid::from(t.created_by))
    .bind(t.created_at)
    .bind(s.updated_at)
    .bind(t.rules.opens_at)
    .bind(t.rules.closes_at)
    .bind(max_guests(t))
    .bind(t.rules.approval)
    .bind(reminders(t))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn max_guests(t: &Event) -> i32 {
    i32::try_from(t.rules.max_guests.get()).unwrap_or(0)
}

fn reminders(t: &Event) -> Vec<i32> {
    t.rules
        .reminders
        .minutes()
        .iter()
        .map(|m| i32::try_from(*m).unwrap_or(i32::MAX))
        .collect()
}

fn capacity(t: &Event) -> Option<i32> {
    t.seat_capacity()
        .map(|c| i32::try_from(c).unwrap_or(i32::MAX))
}

async fn update(conn: &mut PgConnection, s: &Series) -> Result<(), sqlx::Error> {
    let t = &s.template;
    sqlx::query(
        "UPDATE event_series SET rrule = $2, exdates = $3, dtstart = $4, duration_secs = $5, title = $6,
             description = $7, location_text = $8, location_url = $9, game_id = $10,
             visibility = $11::event_visibility, capacity = $12, materialised_until = $13, complete = $14,
             cancelled = $15, version = $16, updated_at = $17, rsvp_opens_at = $18, rsvp_closes_at = $19,
             max_guests = $20, rsvp_approval = $21, reminders = $22
         WHERE id = $1",
    )
    .bind(Uuid::from(s.id))
    .bind(s.recurrence.rule())
    .bind(s.recurrence.exdates())
    .bind(s.dtstart)
    .bind(s.duration.num_seconds())
    .bind(t.title.as_str())
    .bind(t.description.as_str())
    .bind(t.location_text.as_str())
    .bind(t.location_url.as_ref().map(|u| u.as_str()))
    .bind(t.game_id.as_ref().map(|g| g.as_str()))
    .bind(t.visibility.as_str())
    .bind(capacity(t))
    .bind(s.materialised_until)
    .bind(s.complete)
    .bind(s.cancelled)
    .bind(s.version)
    .bind(s.updated_at)
    .bind(t.rules.opens_at)
    .bind(t.rules.closes_at)
    .bind(max_guests(t))
    .bind(t.rules.approval)
    .bind(reminders(t))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What a series write did, for caches and the outbox publisher.
#[derive(Debug)]
pub struct SeriesWritten {
    /// Every event the write created or changed, in command order, with
    /// its counters.
    pub events: Vec<(Event, crate::domain::RsvpCounts)>,
    pub effects: BatchEffects,
}

/// The answer to a recurring create.
#[derive(Debug)]
pub enum Created {
    /// The series and its first occurrences.
    New(SeriesWritten),
    /// A retried create: the first answer.
    Earlier(Value),
}

fn trace<'a>(meta: Option<&'a CommandMeta>, slug: Option<&'a str>) -> Trace<'a> {
    match meta {
        Some(m) => Trace {
            parent: m.traceparent.as_deref(),
            state: m.tracestate.as_deref(),
            tenant_slug: m.tenant_slug.as_deref(),
        },
        None => Trace {
            parent: None,
            state: None,
            tenant_slug: slug,
        },
    }
}

async fn begin(db: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    db.begin().await
}

/// Refuses a replayed request: its key is claimed in this transaction.
async fn claim_replay(conn: &mut PgConnection, meta: &CommandMeta) -> Result<(), AppError> {
    let Some(key) = meta.replay_key else {
        return Ok(());
    };
    let claimed =
        crate::store::replays::claim_all(&mut *conn, &[key], &[meta.replay_expires_at]).await?;
    if claimed.contains(&key) {
        Ok(())
    } else {
        Err(crate::auth::AuthError::from(crate::auth::UnauthorizedReason::Replayed).into())
    }
}

/// Decides `kinds` under the locks and writes them; refused as a whole
/// when any one is refused.
async fn decide_and_write(
    tx: &mut PgConnection,
    subjects: &Subjects,
    tenant: TenantId,
    actor: crate::domain::UserId,
    now: DateTime<Utc>,
    kinds: Vec<CommandKind>,
    trace: Trace<'_>,
) -> Result<SeriesWritten, AppError> {
    let commands: Vec<Command> = kinds
        .into_iter()
        .map(|kind| Command {
            actor,
            at: now,
            kind,
        })
        .collect();
    let loaded = load::for_batch(tx, tenant, &commands, &HashMap::new()).await?;
    let decision = commands::decide(loaded.locked, &commands);
    let mut events = Vec::with_capacity(decision.outcomes.len());
    for verdict in decision.outcomes {
        match verdict {
            Ok(
                Outcome::Created { event, counts }
                | Outcome::Updated { event, counts, .. }
                | Outcome::Cancelled { event, counts, .. },
            ) => events.push((event, counts)),
            Ok(other) => {
                return Err(AppError::internal(
                    "series",
                    format!("unexpected outcome {other:?}"),
                ));
            }
            Err(Refusal::NotFound) => return Err(AppError::NotFound),
            Err(Refusal::Domain(e)) => return Err(e.into()),
        }
    }
    let effects = write::batch(
        tx,
        subjects,
        decision.events,
        &decision.published,
        |_| trace,
        &loaded.revisions,
        now,
    )
    .await?;
    Ok(SeriesWritten { events, effects })
}

/// Creates a series and its first occurrences (already made by
/// [`Series::materialise`]) in one transaction, claiming the request's
/// replay and idempotency keys like a single create does.
pub async fn create(
    db: &PgPool,
    subjects: &Subjects,
    meta: &CommandMeta,
    series: &Series,
    occurrences: Vec<Event>,
    request_hash: String,
    result: Value,
) -> Result<Created, AppError> {
    let Some(first) = occurrences.first().cloned() else {
        return Err(AppError::internal("series", "a series without occurrences"));
    };
    let mut tx = begin(db).await?;
    claim_replay(&mut tx, meta).await?;
    let envelope = [Envelope {
        meta: meta.clone(),
        command: WriteCommand::Create {
            event: Box::new(first),
            request_hash,
            result,
        },
    }];
    let mut answered = [None];
    claims::claim_idempotency_keys(&mut tx, &envelope, &mut answered).await?;
    match answered[0].take() {
        Some(Ok(WriteOutcome::CreatedEarlier { result })) => {
            tx.commit().await?;
            return Ok(Created::Earlier(result));
        }
        Some(Err(e)) => return Err(e),
        Some(Ok(_)) | None => {}
    }
    insert(&mut tx, series).await?;
    let kinds = occurrences
        .into_iter()
        .map(|event| CommandKind::Create {
            event: Box::new(event),
        })
        .collect();
    let written = decide_and_write(
        &mut tx,
        subjects,
        meta.tenant,
        meta.actor,
        meta.now,
        kinds,
        trace(Some(meta), None),
    )
    .await?;
    crate::store::audit::insert(&mut tx, &meta.audit).await?;
    tx.commit().await?;
    Ok(Created::New(written))
}

/// A change of several occurrences: `plan` is given the series and its
/// occurrences as they are under the locks, and says what to write.
pub async fn change(
    db: &PgPool,
    subjects: &Subjects,
    meta: &CommandMeta,
    id: SeriesId,
    plan: impl FnOnce(&Series, &[Event]) -> Result<SeriesPlan, AppError>,
) -> Result<SeriesWritten, AppError> {
    let mut tx = begin(db).await?;
    claim_replay(&mut tx, meta).await?;
    let series = fetch(&mut tx, meta.tenant, id, "FOR UPDATE")
        .await?
        .ok_or(AppError::NotFound)?;
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM events WHERE series_id = $1 AND tenant_id = $2")
            .bind(Uuid::from(id))
            .bind(Uuid::from(meta.tenant))
            .fetch_all(&mut *tx)
            .await?;
    // Read under the counter locks, so the plan sees what every writer
    // before it committed.
    let mut ids = ids;
    ids.sort();
    load::lock_counters(&mut tx, meta.tenant, &ids).await?;
    let mut current = load::read_events(&mut tx, meta.tenant, &ids).await?;
    current.sort_by_key(|e| e.series.map(|l| l.recurrence_id));
    let plan = plan(&series, &current)?;
    if let Some(split) = &plan.split_off {
        insert(&mut tx, split).await?;
    }
    update(&mut tx, &plan.series).await?;
    let written = decide_and_write(
        &mut tx,
        subjects,
        meta.tenant,
        meta.actor,
        meta.now,
        plan.commands,
        trace(Some(meta), None),
    )
    .await?;
    crate::store::audit::insert(&mut tx, &meta.audit).await?;
    tx.commit().await?;
    Ok(written)
}

/// Series that still grow and have not reached `until`, oldest first.
pub async fn behind(
    db: &PgPool,
    until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(TenantId, SeriesId)>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT tenant_id, id FROM event_series
         WHERE NOT complete AND materialised_until < $1
         ORDER BY materialised_until LIMIT $2",
    )
    .bind(until)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, s)| (TenantId::from_uuid(t), SeriesId::from_uuid(s)))
        .collect())
}

/// Makes the occurrences of one series up to `until` (at most `max`).
/// A series another instance is extending right now is skipped: that one
/// makes them. Returns what was made.
pub async fn extend(
    db: &PgPool,
    subjects: &Subjects,
    tenant: TenantId,
    id: SeriesId,
    until: DateTime<Utc>,
    max: usize,
    now: DateTime<Utc>,
) -> Result<Option<SeriesWritten>, AppError> {
    let mut tx = begin(db).await?;
    let Some(series) = fetch(&mut tx, tenant, id, "FOR UPDATE SKIP LOCKED").await? else {
        return Ok(None);
    };
    let made = series.materialise(until, max, now);
    if made.series == series {
        return Ok(None);
    }
    update(&mut tx, &made.series).await?;
    let kinds = made
        .occurrences
        .into_iter()
        .map(|event| CommandKind::Create {
            event: Box::new(event),
        })
        .collect();
    let written = decide_and_write(
        &mut tx,
        subjects,
        tenant,
        series.template.created_by,
        now,
        kinds,
        trace(None, series.tenant_slug.as_deref()),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(written))
}
