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
pub const REMINDER_DUE: &str = "event.reminder.due";

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
    let rules = &event.rules;
    m.insert(
        "rsvp_opens_at".into(),
        json!(rules.opens_at.as_ref().map(format_utc)),
    );
    m.insert(
        "rsvp_closes_at".into(),
        json!(rules.closes_at.as_ref().map(format_utc)),
    );
    m.insert("max_guests".into(), json!(rules.max_guests.get()));
    m.insert("rsvp_approval".into(), json!(rules.approval));
    m.insert("reminders".into(), json!(rules.reminders.minutes()));
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

/// One RSVP change, as `event.rsvp.changed` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsvpChange {
    pub user: UserId,
    pub status: Option<RsvpStatus>,
    pub previous: Option<RsvpStatus>,
    /// The user's guests afterwards (0 unless the status keeps a party).
    pub guests: u32,
    pub reason: RsvpChangeReason,
    /// Who made the change: the user, or the manager who approved or
    /// declined it.
    pub actor: UserId,
    pub at: DateTime<Utc>,
}

pub fn rsvp_changed(event: &Event, c: &RsvpChange) -> Published {
    let mut m = base(event);
    m.insert("user_id".into(), json!(c.user.to_string()));
    m.insert("status".into(), json!(c.status.map(|s| s.as_str())));
    m.insert(
        "previous_status".into(),
        json!(c.previous.map(|s| s.as_str())),
    );
    m.insert("guests".into(), json!(c.guests));
    m.insert("reason".into(), json!(c.reason.as_str()));
    m.insert("updated_at".into(), json!(format_utc(&c.at)));
    m.insert("actor_user_id".into(), json!(c.actor.to_string()));
    Published {
        event_type: RSVP_CHANGED,
        tenant_id: event.tenant_id,
        event_id: event.id,
        occurred_at: c.at,
        data: Value::Object(m),
    }
}

/// A reminder that the event starts in `minutes_before` minutes, for one
/// going user, committed when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderDue {
    pub event_id: EventId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub scope_type: String,
    pub scope_id: String,
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub minutes_before: u32,
    pub due_at: DateTime<Utc>,
}

pub fn reminder_due(r: &ReminderDue) -> Published {
    let data = json!({
        "event_id": r.event_id.to_string(),
        "tenant_id": r.tenant_id.to_string(),
        "scope_type": r.scope_type,
        "scope_id": r.scope_id,
        "title": r.title,
        "user_id": r.user_id.to_string(),
        "starts_at": format_utc(&r.starts_at),
        "minutes_before": r.minutes_before,
        "due_at": format_utc(&r.due_at),
    });
    Published {
        event_type: REMINDER_DUE,
        tenant_id: r.tenant_id,
        event_id: r.event_id,
        occurred_at: r.due_at,
        data,
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
