//! What callers see: the JSON shapes of the original API plus our additive
//! fields. Keys are camelCase except inside `rsvpCounts` (snake_case, as the
//! frontend reads them); datetimes are UTC with `Z`.

use serde_json::{Value, json};

use crate::domain::{Event, RsvpCounts, RsvpStatus, format_utc};

pub fn counts(c: &RsvpCounts) -> Value {
    json!({
        "interested": c.interested,
        "going": c.going,
        "not_going": c.not_going,
        "waitlisted": c.waitlisted,
    })
}

fn non_empty(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { json!(s) }
}

pub fn event(e: &Event, c: &RsvpCounts, my_rsvp: Option<RsvpStatus>) -> Value {
    json!({
        "id": e.id.to_string(),
        "tenantId": e.tenant_id.to_string(),
        "scopeType": e.scope_type().as_str(),
        "scopeId": e.scope_id().as_str(),
        "title": e.title.as_str(),
        "description": non_empty(e.description.as_str()),
        "startsAt": format_utc(&e.starts_at),
        "endsAt": format_utc(&e.ends_at),
        "locationText": non_empty(e.location_text.as_str()),
        "locationUrl": e.location_url.as_ref().map(|u| u.as_str()),
        "gameId": e.game_id.as_ref().map(|g| g.as_str()),
        "visibility": e.visibility.as_str(),
        "createdBy": e.created_by.to_string(),
        "createdAt": format_utc(&e.created_at),
        "updatedAt": format_utc(&e.updated_at),
        "status": e.status.as_str(),
        "capacity": e.seat_capacity(),
        "version": e.version,
        "cancelledAt": e.cancelled_at.as_ref().map(format_utc),
        "cancelReason": e.cancel_reason.as_ref().map(|r| r.as_str()),
        "rsvpCounts": counts(c),
        "myRsvp": my_rsvp.map(|s| s.as_str()),
    })
}

pub fn page(items: Vec<Value>, total: i64, limit: i64, offset: i64) -> Value {
    json!({"items": items, "meta": {"total": total, "limit": limit, "offset": offset}})
}
