//! The domain events the service publishes: their types and `data`
//! payloads (the contract is `docs/domain-events.md`). Payloads are
//! snake_case and a superset of what the previous service wrote, so its
//! consumers keep working.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::domain::{
    Event, EventField, EventId, RsvpChangeReason, RsvpStatus, TenantId, UserId, format_utc,
};

pub const EVENT_CREATED: &str = "event.created";
pub const EVENT_UPDATED: &str = "event.updated";
pub const EVENT_CANCELLED: &str = "event.cancelled";
pub const RSVP_CHANGED: &str = "event.rsvp.changed";
pub const ATTENDANCE_MARKED: &str = "event.attendance.marked";

/// One domain event, ready to be written to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub event_type: &'static str,
    pub tenant_id: TenantId,
    pub event_id: EventId,
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
}

fn base(event: &Event) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("event_id".into(), json!(event.id.to_string()));
    m.insert("tenant_id".into(), json!(event.tenant_id.to_string()));
    m.insert("scope_type".into(), json!(event.scope_type().as_str()));
    m.insert("scope_id".into(), json!(event.scope_id().as_str()));
    m.insert("title".into(), json!(event.title.as_str()));
    m.insert("visibility".into(), json!(event.visibility.as_str()));
    m
}

fn created_fields(event: &Event) -> Map<String, Value> {
    let mut m = base(event);
    m.insert("starts_at".into(), json!(format_utc(&event.starts_at)));
    m.insert("ends_at".into(), json!(format_utc(&event.ends_at)));
    m.insert("created_by".into(), json!(event.created_by.to_string()));
    m.insert("created_at".into(), json!(format_utc(&event.created_at)));
    m.insert("capacity".into(), json!(event.seat_capacity()));
    m.insert("status".into(), json!(event.status.as_str()));
    m.insert("version".into(), json!(event.version));
    m.insert("time_zone".into(), json!(event.time_zone.name()));
    if let Some(link) = event.series {
        m.insert("series_id".into(), json!(link.series_id.to_string()));
        m.insert(
            "recurrence_id".into(),
            json!(format_utc(&link.recurrence_id)),
        );
    }
    m
}

pub fn created(event: &Event) -> Published {
    let mut m = created_fields(event);
    m.insert("actor_user_id".into(), json!(event.created_by.to_string()));
    Published {
        event_type: EVENT_CREATED,
        tenant_id: event.tenant_id,
        event_id: event.id,
        occurred_at: event.created_at,
        data: Value::Object(m),
    }
}

pub fn updated(event: &Event, changed: &[EventField], by: UserId) -> Published {
    let mut m = created_fields(event);
    let fields: Vec<&str> = changed.iter().map(|f| f.as_snake_str()).collect();
    m.insert("updated_fields".into(), json!(fields));
    m.insert("updated_by".into(), json!(by.to_string()));
    m.insert("updated_at".into(), json!(format_utc(&event.updated_at)));
    m.insert("actor_user_id".into(), json!(by.to_string()));
    Published {
        event_type: EVENT_UPDATED,
        tenant_id: event.tenant_id,
        event_id: event.id,
        occurred_at: event.updated_at,
        data: Value::Object(m),
    }
}

pub fn cancelled(event: &Event) -> Published {
    let mut m = base(event);
    let by = event.cancelled_by.map(|u| u.to_string());
    let at = event.cancelled_at.unwrap_or(event.updated_at);
    m.insert("cancelled_by".into(), json!(by));
    m.insert("cancelled_at".into(), json!(format_utc(&at)));
    m.insert(
        "reason".into(),
        json!(event.cancel_reason.as_ref().map(|r| r.as_str())),
    );
    m.insert("version".into(), json!(event.version));
    if let Some(link) = event.series {
        m.insert("series_id".into(), json!(link.series_id.to_string()));
    }
    m.insert("actor_user_id".into(), json!(by));
    Published {
        event_type: EVENT_CANCELLED,
        tenant_id: event.tenant_id,
        event_id: event.id,
        occurred_at: at,
        data: Value::Object(m),
    }
}

pub fn rsvp_changed(
    event: &Event,
    user: UserId,
    status: Option<RsvpStatus>,
    previous: Option<RsvpStatus>,
    reason: RsvpChangeReason,
    at: DateTime<Utc>,
) -> Published {
    let mut m = base(event);
    m.insert("user_id".into(), json!(user.to_string()));
    m.insert("status".into(), json!(status.map(|s| s.as_str())));
    m.insert(
        "previous_status".into(),
        json!(previous.map(|s| s.as_str())),
    );
    m.insert("reason".into(), json!(reason.as_str()));
    m.insert("updated_at".into(), json!(format_utc(&at)));
    m.insert("actor_user_id".into(), json!(user.to_string()));
    Published {
        event_type: RSVP_CHANGED,
        tenant_id: event.tenant_id,
        event_id: event.id,
        occurred_at: at,
        data: Value::Object(m),
    }
}

pub fn attendance_marked(event: &Event, user: UserId, by: UserId, at: DateTime<Utc>) -> Published {
    let data = json!({
        "event_id": event.id.to_string(),
        "tenant_id": event.tenant_id.to_string(),
        "scope_type": event.scope_type().as_str(),
        "scope_id": event.scope_id().as_str(),
        "visibility": event.visibility.as_str(),
        "user_id": user.to_string(),
        "marked_by": by.to_string(),
        "marked_at": format_utc(&at),
        "actor_user_id": by.to_string(),
    });
    Published {
        event_type: ATTENDANCE_MARKED,
        tenant_id: event.tenant_id,
        event_id: event.id,
        occurred_at: at,
        data,
    }
}
