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
use serde::ser::Serializer;
use serde_json::Value;
use utoipa::ToSchema;

use crate::actors::forward::RsvpDone;
use crate::domain::{
    Event, EventId, EventStatus, RsvpCounts, RsvpStatus, ScopeType, Visibility, utc_str,
};

pub fn counts(c: &RsvpCounts) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
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

/// An event as every read and write returns it (borrowed from the stored
/// event: this is what is serialised). Every key is always present;
/// datetimes are UTC with `Z`, milliseconds only when not zero.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = EventView)]
struct EventRef<'a> {
    #[schema(value_type = String, format = "uuid")]
    id: Id,
    #[schema(value_type = String, format = "uuid")]
    tenant_id: Id,
    scope_type: ScopeType,
    /// The tenant id for TENANT scope; the community or team id otherwise.
    #[schema(value_type = String)]
    scope_id: &'a str,
    #[schema(value_type = String)]
    title: &'a str,
    /// `null` when empty.
    #[schema(value_type = Option<String>, required = true)]
    description: Option<&'a str>,
    #[schema(value_type = String, format = DateTime)]
    starts_at: Time<'a>,
    #[schema(value_type = String, format = DateTime)]
    ends_at: Time<'a>,
    /// `null` when empty.
    #[schema(value_type = Option<String>, required = true)]
    location_text: Option<&'a str>,
    #[schema(value_type = Option<String>, format = "uri", required = true)]
    location_url: Option<&'a str>,
    #[schema(value_type = Option<String>, required = true)]
    game_id: Option<&'a str>,
    visibility: Visibility,
    /// The nil UUID once the creator's data was erased.
    #[schema(value_type = String, format = "uuid")]
    created_by: Id,
    #[schema(value_type = String, format = DateTime)]
    created_at: Time<'a>,
    /// Moves on every update that changes something.
    #[schema(value_type = String, format = DateTime)]
    updated_at: Time<'a>,
    status: EventStatus,
    /// Seats for `going`; `null` is unlimited.
    #[schema(minimum = 1, maximum = 1_000_000, required = true)]
    capacity: Option<u32>,
    /// 1, then one more per change (update or cancel).
    #[schema(minimum = 1)]
    version: i64,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    cancelled_at: Option<Time<'a>>,
    #[schema(value_type = Option<String>, required = true)]
    cancel_reason: Option<&'a str>,
    /// People per status (a party counts once, guests not counted).
    #[schema(value_type = RsvpCounts)]
    rsvp_counts: &'a RsvpCounts,
    /// Seats, guests included.
    seats: SeatsView,
    /// RSVPs are taken from this time; `null`: from creation.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    rsvp_opens_at: Option<Time<'a>>,
    /// RSVPs are taken until (excluding) this time; `null`: until `endsAt`.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    rsvp_closes_at: Option<Time<'a>>,
    /// Guests each going user may bring.
    #[schema(minimum = 0, maximum = 50)]
    max_guests: u32,
    /// Whether `going` waits for a manager's approval (`pending`).
    rsvp_approval: bool,
    /// Minutes before the start at which going users are reminded,
    /// earliest first.
    #[schema(value_type = Vec<u32>)]
    reminders: &'a [u32],
    /// The caller's own RSVP; `null` when none.
    #[schema(required = true)]
    my_rsvp: Option<RsvpStatus>,
    /// The IANA zone the event is shown in (`UTC` unless set); the times
    /// above are UTC instants whatever it is.
    #[schema(value_type = String, example = "Europe/Berlin")]
    time_zone: &'static str,
    /// The series of a recurring event's occurrence; `null` otherwise.
    #[schema(value_type = Option<String>, format = "uuid", required = true)]
    series_id: Option<Id>,
    /// Which instance of its series' rule the occurrence is (the start the
    /// rule gives it, UTC); `null` when not an occurrence.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    recurrence_id: Option<Time<'a>>,
    /// The guests the caller brings (0 without a party).
    #[schema(minimum = 0)]
    my_guests: u32,
}

/// The seats of an event, guests included.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct SeatsView {
    /// `null`: unlimited.
    #[schema(required = true)]
    pub capacity: Option<u32>,
    /// Seats taken by going parties (each user and their guests).
    pub taken: u32,
    /// Seats free; `null` when unlimited; 0 when capacity was lowered below
    /// the seats taken.
    #[schema(required = true)]
    pub available: Option<u32>,
}

impl SeatsView {
    pub fn of(capacity: Option<u32>, counts: &RsvpCounts) -> Self {
        let seats = counts.seats(capacity);
        Self {
            capacity,
            taken: seats.taken,
            available: seats.free(),
        }
    }
}

impl<'a> EventRef<'a> {
    fn new(
        e: &'a Event,
        counts: &'a RsvpCounts,
        my_rsvp: Option<RsvpStatus>,
        my_guests: u32,
    ) -> Self {
        Self {
            id: Id(e.id.as_uuid()),
            tenant_id: Id(e.tenant_id.as_uuid()),
            scope_type: e.scope_type(),
            scope_id: e.scope_id().as_str(),
            title: e.title.as_str(),
            description: non_empty(e.description.as_str()),
            starts_at: Time(&e.starts_at),
            ends_at: Time(&e.ends_at),
            location_text: non_empty(e.location_text.as_str()),
            location_url: e.location_url.as_ref().map(|u| u.as_str()),
            game_id: e.game_id.as_ref().map(|g| g.as_str()),
            visibility: e.visibility,
            created_by: Id(e.created_by.as_uuid()),
            created_at: Time(&e.created_at),
            updated_at: Time(&e.updated_at),
            status: e.status,
            capacity: e.seat_capacity(),
            version: e.version,
            cancelled_at: e.cancelled_at.as_ref().map(Time),
            cancel_reason: e.cancel_reason.as_ref().map(|r| r.as_str()),
            rsvp_counts: counts,
            seats: SeatsView::of(e.seat_capacity(), counts),
            rsvp_opens_at: e.rules.opens_at.as_ref().map(Time),
            rsvp_closes_at: e.rules.closes_at.as_ref().map(Time),
            max_guests: e.rules.max_guests.get(),
            rsvp_approval: e.rules.approval,
            reminders: e.rules.reminders.minutes(),
            my_rsvp,
            time_zone: e.time_zone.name(),
            series_id: e.series.as_ref().map(|l| Id(l.series_id.as_uuid())),
            recurrence_id: e.series.as_ref().map(|l| Time(&l.recurrence_id)),
            my_guests,
        }
    }
}

// `RsvpCounts` is the domain's; its keys are snake_case on the wire.
impl utoipa::PartialSchema for RsvpCounts {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let count = || {
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::Integer)
                .minimum(Some(0))
        };
        let mut object = utoipa::openapi::ObjectBuilder::new().description(Some(
            "RSVP counters, in people (a party counts once); every key always present, snake_case (`waitlisted`, `pending` and `declined` are new).",
        ));
        for status in RsvpStatus::ALL {
            object = object
                .property(status.as_str(), count())
                .required(status.as_str());
        }
        object.into()
    }
}

impl ToSchema for RsvpCounts {}

/// An event with its counters and the caller's RSVP.
#[derive(Debug, Clone)]
pub struct EventView {
    pub event: Arc<Event>,
    pub counts: RsvpCounts,
    pub my_rsvp: Option<RsvpStatus>,
    pub my_guests: u32,
}

impl EventView {
    pub fn new(event: Arc<Event>, counts: RsvpCounts, my_rsvp: Option<RsvpStatus>) -> Self {
        Self {
            event,
            counts,
            my_rsvp,
            my_guests: 0,
        }
    }

    /// The view with the caller's guests.
    pub fn with_guests(mut self, guests: u32) -> Self {
        self.my_guests = guests;
        self
    }
}

// The view serialises as an `EventRef`, so that is its schema.
impl utoipa::PartialSchema for EventView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        EventRef::schema()
    }
}

impl ToSchema for EventView {
    fn name() -> std::borrow::Cow<'static, str> {
        EventRef::name()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        EventRef::schemas(schemas);
    }
}

impl Serialize for EventView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EventRef::new(&self.event, &self.counts, self.my_rsvp, self.my_guests).serialize(s)
    }
}

/// The event view as a JSON value (kept where a result is stored).
pub fn event(e: &Event, c: &RsvpCounts, my_rsvp: Option<RsvpStatus>) -> Value {
    serde_json::to_value(EventRef::new(e, c, my_rsvp, 0)).unwrap_or(Value::Null)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PageMeta {
    /// Everything that matches and the caller may see.
    #[schema(minimum = 0)]
    pub total: i64,
    #[schema(minimum = 1)]
    pub limit: i64,
    #[schema(minimum = 0)]
    pub offset: i64,
    /// Present, and `true`, only when the membership authority could not be
    /// reached and members-only events were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub partial: Option<bool>,
}

/// A page of a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
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
    pub seats: SeatsView,
    pub my_rsvp: Option<&'static str>,
    pub my_guests: u32,
}

fn shown<S: Serializer>(id: &EventId, s: S) -> Result<S::Ok, S::Error> {
    Id(id.as_uuid()).serialize(s)
}

impl RsvpView {
    pub fn new(done: &RsvpDone) -> Self {
        Self {
            event_id: done.event_id,
            status: done.status.map(|s| s.as_str()),
            rsvp_counts: done.counts,
            seats: SeatsView::of(done.capacity, &done.counts),
            my_rsvp: done.status.map(|s| s.as_str()),
            my_guests: done.guests,
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
            json!({"interested": 0, "going": 2, "not_going": 0, "waitlisted": 1,
                   "pending": 0, "declined": 0})
        );
        assert_eq!(value["timeZone"], json!("UTC"));
        assert_eq!(value["seriesId"], Value::Null);
        assert_eq!(value["recurrenceId"], Value::Null);
        assert_eq!(value.as_object().map(|o| o.len()), Some(32));
        assert_eq!(
            value["seats"],
            json!({"capacity": 3, "taken": 2, "available": 1})
        );
        assert_eq!(value["myGuests"], json!(0));
        assert_eq!(value["maxGuests"], json!(0));
        assert_eq!(value["rsvpApproval"], json!(false));
        assert_eq!(value["reminders"], json!([]));
        assert_eq!(value["rsvpOpensAt"], Value::Null);
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

    /// The keys of an object schema, and its required ones.
    fn keys_of(
        schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    ) -> (Vec<String>, Vec<String>) {
        let value = serde_json::to_value(schema).expect("a schema encodes");
        let mut keys: Vec<String> = value["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let mut required: Vec<String> = value["required"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        required.sort();
        (keys, required)
    }

    #[test]
    fn the_schemas_name_exactly_the_keys_that_are_written() {
        use utoipa::PartialSchema;
        let stored = sample();
        let value = event(&stored, &RsvpCounts::default(), None);
        let mut written: Vec<String> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        written.sort();
        let (keys, required) = keys_of(EventView::schema());
        assert_eq!(keys, written);
        assert_eq!(required, written, "every key is always present");
        let counts = serde_json::to_value(RsvpCounts::default()).expect("encodes");
        let mut written: Vec<String> = counts
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        written.sort();
        assert_eq!(keys_of(RsvpCounts::schema()), (written.clone(), written));
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
