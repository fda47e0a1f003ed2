//! What callers see: the JSON shapes of the original API plus our additive
//! fields. Keys are camelCase except inside `rsvpCounts` (snake_case, as the
//! frontend reads them); datetimes are UTC with `Z`.
//!
//! Hot replies (an event, a page of events, an RSVP) are typed views that
//! serialise straight into the wire encoding: building a `serde_json::Value`
//! first costs an allocation per key and a sorted map per object, which was
//! most of the service's time on `event.get` and `event.list`.

use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use serde_json::Value;

use crate::domain::{Event, EventId, RsvpCounts, RsvpStatus, utc_str};

pub fn counts(c: &RsvpCounts) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

/// An event as callers see it, borrowed.
struct EventRef<'a> {
    event: &'a Event,
    counts: &'a RsvpCounts,
    my_rsvp: Option<RsvpStatus>,
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A UTC datetime as `format_utc` writes it.
struct Time<'a>(&'a chrono::DateTime<chrono::Utc>);

impl Serialize for Time<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 28];
        s.serialize_str(utc_str(self.0, &mut buf))
    }
}

/// An id as its hyphenated text, without a `String`.
struct Id(uuid::Uuid);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = uuid::Uuid::encode_buffer();
        s.serialize_str(self.0.hyphenated().encode_lower(&mut buf))
    }
}

impl Serialize for EventRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut m = s.serialize_struct("Event", 22)?;
        m.serialize_field("id", &Id(e.id.as_uuid()))?;
        m.serialize_field("tenantId", &Id(e.tenant_id.as_uuid()))?;
        m.serialize_field("scopeType", e.scope_type().as_str())?;
        m.serialize_field("scopeId", e.scope_id().as_str())?;
        m.serialize_field("title", e.title.as_str())?;
        m.serialize_field("description", &non_empty(e.description.as_str()))?;
        m.serialize_field("startsAt", &Time(&e.starts_at))?;
        m.serialize_field("endsAt", &Time(&e.ends_at))?;
        m.serialize_field("locationText", &non_empty(e.location_text.as_str()))?;
        m.serialize_field("locationUrl", &e.location_url.as_ref().map(|u| u.as_str()))?;
        m.serialize_field("gameId", &e.game_id.as_ref().map(|g| g.as_str()))?;
        m.serialize_field("visibility", e.visibility.as_str())?;
        m.serialize_field("createdBy", &Id(e.created_by.as_uuid()))?;
        m.serialize_field("createdAt", &Time(&e.created_at))?;
        m.serialize_field("updatedAt", &Time(&e.updated_at))?;
        m.serialize_field("status", e.status.as_str())?;
        m.serialize_field("capacity", &e.seat_capacity())?;
        m.serialize_field("version", &e.version)?;
        m.serialize_field("cancelledAt", &e.cancelled_at.as_ref().map(Time))?;
        m.serialize_field(
            "cancelReason",
            &e.cancel_reason.as_ref().map(|r| r.as_str()),
        )?;
        m.serialize_field("rsvpCounts", self.counts)?;
        m.serialize_field("myRsvp", &self.my_rsvp.map(|s| s.as_str()))?;
        m.end()
    }
}

/// An event with its counters and the caller's RSVP.
#[derive(Debug, Clone)]
pub struct EventView {
    pub event: Arc<Event>,
    pub counts: RsvpCounts,
    pub my_rsvp: Option<RsvpStatus>,
}

impl EventView {
    pub fn new(event: Arc<Event>, counts: RsvpCounts, my_rsvp: Option<RsvpStatus>) -> Self {
        Self {
            event,
            counts,
            my_rsvp,
        }
    }
}

impl Serialize for EventView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EventRef {
            event: &self.event,
            counts: &self.counts,
            my_rsvp: self.my_rsvp,
        }
        .serialize(s)
    }
}

/// The event view as a JSON value (kept where a result is stored).
pub fn event(e: &Event, c: &RsvpCounts, my_rsvp: Option<RsvpStatus>) -> Value {
    serde_json::to_value(EventRef {
        event: e,
        counts: c,
        my_rsvp,
    })
    .unwrap_or(Value::Null)
}

#[derive(Debug, Clone, Serialize)]
pub struct PageMeta {
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    /// Present (and true) when some memberships could not be checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<bool>,
}

/// `{"items": [...], "meta": {...}}`.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub meta: PageMeta,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: i64, limit: i64, offset: i64) -> Self {
        Self {
            items,
            meta: PageMeta {
                total,
                limit,
                offset,
                partial: None,
            },
        }
    }
}

pub fn page(items: Vec<Value>, total: i64, limit: i64, offset: i64) -> Value {
    serde_json::to_value(Page::new(items, total, limit, offset)).unwrap_or(Value::Null)
}

/// The answer to `rsvp.set` / `rsvp.clear`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RsvpView {
    #[serde(serialize_with = "shown")]
    pub event_id: EventId,
    pub status: Option<&'static str>,
    pub rsvp_counts: RsvpCounts,
    pub my_rsvp: Option<&'static str>,
}

fn shown<S: Serializer>(id: &EventId, s: S) -> Result<S::Ok, S::Error> {
    Id(id.as_uuid()).serialize(s)
}

impl RsvpView {
    pub fn new(event_id: EventId, counts: RsvpCounts, status: Option<RsvpStatus>) -> Self {
        Self {
            event_id,
            status: status.map(|s| s.as_str()),
            rsvp_counts: counts,
            my_rsvp: status.map(|s| s.as_str()),
        }
    }
}

/// A typed reply body.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum View {
    Event(EventView),
    Events(Page<EventView>),
    Rsvp(RsvpView),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TenantId, UserId};
    use serde_json::json;

    fn sample() -> Event {
        let body = json!({
            "title": "Game night", "scopeType": "TENANT",
            "scopeId": "00000000-0000-0000-0000-000000000001",
            "startsAt": "2026-01-10T10:00:00Z", "endsAt": "2026-01-10T11:00:00.123Z",
            "capacity": 3, "locationUrl": "https://example.org/x",
        });
        let tenant = TenantId::from(uuid::Uuid::from_u128(1));
        let new = crate::app::requests::new_event(tenant, &body).expect("valid body");
        new.into_event(
            EventId::from(uuid::Uuid::from_u128(2)),
            UserId::from(uuid::Uuid::from_u128(3)),
            chrono::DateTime::from_timestamp(1_767_000_000, 5_000_000).expect("time"),
        )
    }

    #[test]
    fn typed_views_encode_like_the_json_shape() {
        let event = sample();
        let counts = RsvpCounts {
            going: 2,
            waitlisted: 1,
            ..Default::default()
        };
        let view = View::Event(EventView::new(
            Arc::new(event.clone()),
            counts,
            Some(RsvpStatus::Going),
        ));
        let value = serde_json::to_value(&view).expect("encodes");
        assert_eq!(value["id"], json!("00000000-0000-0000-0000-000000000002"));
        assert_eq!(value["endsAt"], json!("2026-01-10T11:00:00.123Z"));
        assert_eq!(value["createdAt"], json!("2025-12-29T09:20:00.005Z"));
        assert_eq!(value["description"], Value::Null);
        assert_eq!(value["cancelledAt"], Value::Null);
        assert_eq!(value["capacity"], json!(3));
        assert_eq!(value["myRsvp"], json!("going"));
        assert_eq!(
            value["rsvpCounts"],
            json!({"interested": 0, "going": 2, "not_going": 0, "waitlisted": 1})
        );
        assert_eq!(value.as_object().map(|o| o.len()), Some(22));
        // msgpack carries the same map.
        let packed = rmp_serde::to_vec_named(&view).expect("packs");
        let unpacked: Value = rmp_serde::from_slice(&packed).expect("unpacks");
        assert_eq!(unpacked, value);
        assert_eq!(event_value(&event, &counts), {
            let mut v = value.clone();
            v["myRsvp"] = Value::Null;
            v
        });
    }

    fn event_value(e: &Event, c: &RsvpCounts) -> Value {
        event(e, c, None)
    }

    #[test]
    fn pages_carry_partial_only_when_set() {
        let mut page = Page::new(vec![1, 2], 7, 2, 0);
        assert_eq!(
            serde_json::to_value(&page).expect("encodes"),
            json!({"items": [1, 2], "meta": {"total": 7, "limit": 2, "offset": 0}})
        );
        page.meta.partial = Some(true);
        assert_eq!(
            serde_json::to_value(&page).expect("encodes")["meta"]["partial"],
            json!(true)
        );
    }
}
