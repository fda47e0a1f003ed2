//! DSAR export: everything the service holds about one user, from one
//! snapshot.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{REDACTED, as_text};
use crate::domain::{ANONYMIZED_USER_ID, TenantId, UserId, format_utc};
use crate::error::AppError;
use crate::store::rows::{EVENT_COLUMNS, EventRow};

/// A calendar feed of the subject: id, scope type and id, RSVP filter, creation.
type FeedRow = (
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
);

/// Payload keys that carry a user id.
const USER_ID_KEYS: [&str; 6] = [
    "created_by",
    "user_id",
    "marked_by",
    "updated_by",
    "cancelled_by",
    "actor_user_id",
];

/// Exports what the service holds about `user` in `tenant`: the original's
/// bundle `{service, tenant_id, user_id, exported_at, events_created,
/// rsvps, attendance, outbox}` with its selections and orders, read in one `REPEATABLE READ, READ ONLY` transaction, so every
/// section comes from the same snapshot (the original read them apart).
///
/// Deliberate differences from the original:
/// - datetimes are RFC 3339 UTC with `Z` ([`format_utc`]);
/// - `events_created` entries keep exactly the original's keys (our extra
///   columns such as `cancelled_by` could carry another user's id);
/// - `rsvps` and `attendance` entries have no integer `id` (our rows are
///   keyed by event and user): `rsvps` = `{event_id, tenant_id, user_id,
///   status, guests, created_at, updated_at}` (`status` may be `waitlisted`, `pending` or `declined`;
///   `created_at` is when the user first answered), ordered by
///   `updated_at, event_id`; `attendance` = `{event_id, tenant_id,
///   user_id, marked_by, marked_at}`, ordered by `marked_at, event_id,
///   user_id`;
/// - the export never reveals another user's id (the original did): in `attendance`, a `user_id` or `marked_by` that is neither the
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
        "series_created": [],
        // Calendar feeds, without their token hashes.
        "feed_tokens": [],
        "reminders": [],
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
    let series: Vec<SeriesExportRow> = sqlx::query_as(
        "SELECT id, scope_type::text AS scope_type, scope_id, title, rrule, dtstart, created_at
         FROM event_series WHERE tenant_id = $1 AND created_by = $2 ORDER BY created_at, id",
    )
    .bind(t)
    .bind(u)
    .fetch_all(&mut *tx)
    .await?;
    let rsvps: Vec<RsvpExportRow> = sqlx::query_as(
        "SELECT event_id, tenant_id, user_id, status::text AS status, guests, created_at, updated_at
         FROM event_rsvps WHERE tenant_id = $1 AND user_id = $2 ORDER BY updated_at, event_id",
    )
    .bind(t)
    .bind(u)
    .fetch_all(&mut *tx)
    .await?;
    type ReminderLine = (Uuid, i32, DateTime<Utc>, Option<DateTime<Utc>>);
    let reminders: Vec<ReminderLine> = sqlx::query_as(
        "SELECT event_id, minutes_before, due_at, sent_at FROM event_reminders
         WHERE tenant_id = $1 AND user_id = $2 ORDER BY due_at, event_id, minutes_before",
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
         FROM outbox_view o WHERE ",
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
    let feeds: Vec<FeedRow> = sqlx::query_as(
        "SELECT id, scope_type::text, scope_id, my_rsvp::text, created_at FROM feed_tokens
             WHERE tenant_id = $1 AND owner_id = $2 ORDER BY created_at, id",
    )
    .bind(t)
    .bind(u)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    bundle["feed_tokens"] = feeds
        .into_iter()
        .map(|(id, scope_type, scope_id, my_rsvp, created_at)| {
            json!({
                "id": id.to_string(),
                "tenant_id": tenant.to_string(),
                "user_id": user.to_string(),
                "scope_type": scope_type,
                "scope_id": scope_id,
                "my_rsvp": my_rsvp,
                "created_at": format_utc(&created_at),
            })
        })
        .collect();
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
    bundle["series_created"] = series
        .into_iter()
        .map(|s| {
            json!({
                "series_id": s.id.to_string(),
                "tenant_id": tenant.to_string(),
                "scope_type": s.scope_type,
                "scope_id": s.scope_id,
                "title": s.title,
                "rrule": s.rrule,
                "starts_at": format_utc(&s.dtstart),
                "created_at": format_utc(&s.created_at),
            })
        })
        .collect();
    bundle["rsvps"] = rsvps
        .into_iter()
        .map(|r| {
            json!({
                "event_id": r.event_id.to_string(),
                "tenant_id": r.tenant_id.to_string(),
                "user_id": r.user_id.to_string(),
                "status": r.status,
                "guests": r.guests,
                "created_at": format_utc(&r.created_at),
                "updated_at": format_utc(&r.updated_at),
            })
        })
        .collect();
    bundle["reminders"] = reminders
        .into_iter()
        .map(|(event_id, minutes, due_at, sent_at)| {
            json!({
                "event_id": event_id.to_string(),
                "minutes_before": minutes,
                "due_at": format_utc(&due_at),
                "sent_at": sent_at.as_ref().map(format_utc),
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

#[derive(sqlx::FromRow)]
struct SeriesExportRow {
    id: Uuid,
    scope_type: String,
    scope_id: String,
    title: String,
    rrule: String,
    dtstart: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RsvpExportRow {
    event_id: Uuid,
    tenant_id: Uuid,
    user_id: Uuid,
    status: String,
    guests: i32,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("6f1c2a3b-0000-4000-8000-000000000001").expect("valid")
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
