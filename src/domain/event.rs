//! The event aggregate: creating one from a request body, patching it, and
//! cancelling it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::error::DomainError;
use crate::domain::ids::{EventId, TenantId, UserId};
use crate::domain::time::truncate_to_micros;
use crate::domain::values::{
    CancelReason, Capacity, Description, GameId, LocationText, LocationUrl, Scope, ScopeId,
    ScopeType, Title, Visibility, visibility_fits_scope, visibility_scope_mismatch, wire_enum,
};

wire_enum! {
    /// Whether an event still takes place.
    #[derive(Default)]
    EventStatus, "status" {
        #[default]
        Scheduled => "scheduled",
        Cancelled => "cancelled",
    }
}

/// The editable fields, declared in the fixed order in which
/// `updated_fields` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventField {
    Title,
    Description,
    StartsAt,
    EndsAt,
    LocationText,
    LocationUrl,
    GameId,
    Visibility,
    Capacity,
}

impl EventField {
    pub const ALL: [EventField; 9] = [
        EventField::Title,
        EventField::Description,
        EventField::StartsAt,
        EventField::EndsAt,
        EventField::LocationText,
        EventField::LocationUrl,
        EventField::GameId,
        EventField::Visibility,
        EventField::Capacity,
    ];

    /// The name in domain events (`updated_fields`).
    pub const fn as_snake_str(self) -> &'static str {
        match self {
            EventField::Title => "title",
            EventField::Description => "description",
            EventField::StartsAt => "starts_at",
            EventField::EndsAt => "ends_at",
            EventField::LocationText => "location_text",
            EventField::LocationUrl => "location_url",
            EventField::GameId => "game_id",
            EventField::Visibility => "visibility",
            EventField::Capacity => "capacity",
        }
    }

    /// The name in request and response bodies and in `details.fields`.
    pub const fn as_camel_str(self) -> &'static str {
        match self {
            EventField::Title => "title",
            EventField::Description => "description",
            EventField::StartsAt => "startsAt",
            EventField::EndsAt => "endsAt",
            EventField::LocationText => "locationText",
            EventField::LocationUrl => "locationUrl",
            EventField::GameId => "gameId",
            EventField::Visibility => "visibility",
            EventField::Capacity => "capacity",
        }
    }
}

impl Serialize for EventField {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_snake_str())
    }
}

/// A stored event.
///
/// Fields are public so the store can rebuild an event from a row; every
/// value is already of a validated type, and the rules that span fields
/// (time range, visibility fitting the scope) are enforced by the operations
/// that produce a new state: `NewEvent::from_json`, `apply_patch`, `cancel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub tenant_id: TenantId,
    pub scope: Scope,
    pub title: Title,
    /// Empty means no description.
    pub description: Description,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Empty means no location text.
    pub location_text: LocationText,
    pub location_url: Option<LocationUrl>,
    pub game_id: Option<GameId>,
    pub visibility: Visibility,
    pub status: EventStatus,
    /// `None` means unlimited.
    pub capacity: Option<Capacity>,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Starts at 1 and grows by one with every change.
    pub version: i64,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancelled_by: Option<UserId>,
    pub cancel_reason: Option<CancelReason>,
}

/// The result of `Event::apply_patch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOutcome {
    /// The event after the patch; the original event when nothing changed.
    pub event: Event,
    /// Only the fields whose value really changed, in `EventField` order.
    /// Empty means: write nothing, emit nothing.
    pub changed: Vec<EventField>,
    /// Who asked for the patch, for `event.updated`'s `updated_by`.
    pub updated_by: UserId,
}

impl PatchOutcome {
    pub fn is_changed(&self) -> bool {
        !self.changed.is_empty()
    }
}

/// The result of `Event::cancel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOutcome {
    pub event: Event,
    /// The event was already cancelled: nothing changed, emit nothing.
    pub already_cancelled: bool,
}

impl Event {
    pub fn scope_type(&self) -> ScopeType {
        self.scope.scope_type()
    }

    pub fn scope_id(&self) -> &ScopeId {
        self.scope.scope_id()
    }

    pub fn is_cancelled(&self) -> bool {
        self.status == EventStatus::Cancelled
    }

    /// Capacity as the seat arithmetic in `rsvp` takes it.
    pub fn seat_capacity(&self) -> Option<u32> {
        self.capacity.map(Capacity::get)
    }

    /// Applies a patch. Only fields whose value differs count as changed; if
    /// none does, the event comes back as it was (same `version` and
    /// `updated_at`). Otherwise `version` grows by one and `updated_at`
    /// becomes `now`.
    ///
    /// Errors: a cancelled event cannot be patched (`EventCancelled`); a
    /// `visibility` in the patch must fit the scope (422, field
    /// `visibility`); the resulting times must satisfy `starts_at < ends_at`
    /// (`InvalidTimeRange`). Visibility is only checked when the patch
    /// supplies one, so an event stored before that rule existed can still
    /// have its other fields edited.
    pub fn apply_patch(
        &self,
        patch: &EventPatch,
        now: DateTime<Utc>,
        by: UserId,
    ) -> Result<PatchOutcome, DomainError> {
        if self.is_cancelled() {
            return Err(DomainError::EventCancelled);
        }

        let mut nulls = BTreeMap::new();
        for (field, value) in [
            (EventField::StartsAt, &patch.starts_at),
            (EventField::EndsAt, &patch.ends_at),
        ] {
            if value.is_null() {
                nulls.insert(field.as_camel_str().to_owned(), CANNOT_BE_NULL.to_owned());
            }
        }
        if !nulls.is_empty() {
            return Err(DomainError::Validation { fields: nulls });
        }
        if let Tri::Set(visibility) = patch.visibility
            && !visibility_fits_scope(visibility, self.scope_type())
        {
            return Err(DomainError::field(
                EventField::Visibility.as_camel_str(),
                visibility_scope_mismatch(visibility, self.scope_type()).into_message(),
            ));
        }

        let mut next = self.clone();
        let mut changed = Vec::new();
        let mut set = |field: EventField, differs: bool| {
            if differs {
                changed.push(field);
            }
        };

        if let Tri::Set(title) = &patch.title {
            set(EventField::Title, *title != next.title);
            next.title = title.clone();
        }
        if let Some(description) = patch.description.resolve(Description::empty) {
            set(EventField::Description, description != next.description);
            next.description = description;
        }
        if let Tri::Set(starts_at) = patch.starts_at {
            set(EventField::StartsAt, starts_at != next.starts_at);
            next.starts_at = starts_at;
        }
        if let Tri::Set(ends_at) = patch.ends_at {
            set(EventField::EndsAt, ends_at != next.ends_at);
            next.ends_at = ends_at;
        }
        if let Some(location_text) = patch.location_text.resolve(LocationText::empty) {
            set(
                EventField::LocationText,
                location_text != next.location_text,
            );
            next.location_text = location_text;
        }
        if let Some(location_url) = patch.location_url.clone().into_option_update() {
            set(EventField::LocationUrl, location_url != next.location_url);
            next.location_url = location_url;
        }
        if let Some(game_id) = patch.game_id.clone().into_option_update() {
            set(EventField::GameId, game_id != next.game_id);
            next.game_id = game_id;
        }
        if let Tri::Set(visibility) = patch.visibility {
            set(EventField::Visibility, visibility != next.visibility);
            next.visibility = visibility;
        }
        if let Some(capacity) = patch.capacity.into_option_update() {
            set(EventField::Capacity, capacity != next.capacity);
            next.capacity = capacity;
        }

        // The original checked the range even when the times were not in the
        // patch; so do we, against the merged values.
        if next.starts_at >= next.ends_at {
            return Err(DomainError::InvalidTimeRange);
        }

        if changed.is_empty() {
            return Ok(PatchOutcome {
                event: self.clone(),
                changed,
                updated_by: by,
            });
        }
        next.version = self.version.saturating_add(1);
        next.updated_at = truncate_to_micros(now);
        Ok(PatchOutcome {
            event: next,
            changed,
            updated_by: by,
        })
    }

    /// Cancels the event. Cancelling a cancelled event is a no-op reported
    /// by `already_cancelled`, so a retried cancel emits nothing new. An
    /// empty or blank reason is stored as none.
    pub fn cancel(
        &self,
        reason: Option<CancelReason>,
        by: UserId,
        now: DateTime<Utc>,
    ) -> CancelOutcome {
        if self.is_cancelled() {
            return CancelOutcome {
                event: self.clone(),
                already_cancelled: true,
            };
        }
        let now = truncate_to_micros(now);
        let mut next = self.clone();
        next.status = EventStatus::Cancelled;
        next.cancelled_at = Some(now);
        next.cancelled_by = Some(by);
        next.cancel_reason = reason.filter(|r| !r.trim().is_empty());
        next.version = self.version.saturating_add(1);
        next.updated_at = now;
        CancelOutcome {
            event: next,
            already_cancelled: false,
        }
    }
}

/// A validated create request, ready to become an `Event`.
///
/// Equal requests compare equal, which is what the create idempotency check
/// (same `X-Request-Id`, different body → conflict) needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewEvent {
    tenant_id: TenantId,
    scope: Scope,
    title: Title,
    description: Description,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    location_text: LocationText,
    location_url: Option<LocationUrl>,
    game_id: Option<GameId>,
    visibility: Visibility,
    capacity: Option<Capacity>,
}

const CANNOT_BE_NULL: &str = "cannot be null";

/// The parts of a create request, each valid on its own.
#[derive(Debug, Clone)]
pub struct NewEventFields {
    pub scope: Scope,
    pub title: Title,
    pub description: Description,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub location_text: LocationText,
    pub location_url: Option<LocationUrl>,
    pub game_id: Option<GameId>,
    pub visibility: Visibility,
    pub capacity: Option<Capacity>,
}

impl NewEvent {
    /// A create request, once the rules between its fields hold: the
    /// visibility fits the scope (422 on `visibility`) and it starts before
    /// it ends (400 `INVALID_TIME_RANGE`).
    pub fn new(tenant: TenantId, f: NewEventFields) -> Result<NewEvent, DomainError> {
        if !visibility_fits_scope(f.visibility, f.scope.scope_type()) {
            return Err(DomainError::field(
                "visibility",
                visibility_scope_mismatch(f.visibility, f.scope.scope_type()).into_message(),
            ));
        }
        if f.starts_at >= f.ends_at {
            return Err(DomainError::InvalidTimeRange);
        }
        Ok(NewEvent {
            tenant_id: tenant,
            scope: f.scope,
            title: f.title,
            description: f.description,
            starts_at: f.starts_at,
            ends_at: f.ends_at,
            location_text: f.location_text,
            location_url: f.location_url,
            game_id: f.game_id,
            visibility: f.visibility,
            capacity: f.capacity,
        })
    }

    /// The stored event this request creates: `scheduled`, version 1,
    /// `created_at = updated_at = now`.
    pub fn into_event(self, id: EventId, created_by: UserId, now: DateTime<Utc>) -> Event {
        let now = truncate_to_micros(now);
        Event {
            id,
            tenant_id: self.tenant_id,
            scope: self.scope,
            title: self.title,
            description: self.description,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            location_text: self.location_text,
            location_url: self.location_url,
            game_id: self.game_id,
            visibility: self.visibility,
            status: EventStatus::Scheduled,
            capacity: self.capacity,
            created_by,
            created_at: now,
            updated_at: now,
            version: 1,
            cancelled_at: None,
            cancelled_by: None,
            cancel_reason: None,
        }
    }

    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn title(&self) -> &Title {
        &self.title
    }

    pub fn description(&self) -> &Description {
        &self.description
    }

    pub fn starts_at(&self) -> DateTime<Utc> {
        self.starts_at
    }

    pub fn ends_at(&self) -> DateTime<Utc> {
        self.ends_at
    }

    pub fn location_text(&self) -> &LocationText {
        &self.location_text
    }

    pub fn location_url(&self) -> Option<&LocationUrl> {
        self.location_url.as_ref()
    }

    pub fn game_id(&self) -> Option<&GameId> {
        self.game_id.as_ref()
    }

    pub fn visibility(&self) -> Visibility {
        self.visibility
    }

    pub fn capacity(&self) -> Option<Capacity> {
        self.capacity
    }
}

/// A patch field as sent: key absent, explicit null, or a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tri<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Tri<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Tri::Absent)
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Tri::Null)
    }

    /// For fields where null means "empty": `None` if absent.
    fn resolve(&self, empty: impl FnOnce() -> T) -> Option<T>
    where
        T: Clone,
    {
        match self {
            Tri::Absent => None,
            Tri::Null => Some(empty()),
            Tri::Set(v) => Some(v.clone()),
        }
    }

    /// For optional fields where null means "none": `None` if absent.
    fn into_option_update(self) -> Option<Option<T>> {
        match self {
            Tri::Absent => None,
            Tri::Null => Some(None),
            Tri::Set(v) => Some(Some(v)),
        }
    }
}

/// A validated update. Each field is `Absent`, `Null` or `Set`; the null
/// rules of the API (which fields may be cleared) are applied when the
/// request is read:
/// - `title`: null is ignored;
/// - `description`: null or `""` → empty;
/// - `startsAt`, `endsAt`: null → 422 `VALIDATION_ERROR` "cannot be null"
///   (the original answered 500);
/// - `locationText`: null or `""` → empty;
/// - `locationUrl`, `gameId`: null or `""` → none (parsed as `Null`);
/// - `visibility`: null is ignored;
/// - `capacity`: null → unlimited.
///
/// A patch whose keys are all ignored nulls (e.g. `{"title": null}`) is
/// valid and changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPatch {
    pub title: Tri<Title>,
    pub description: Tri<Description>,
    pub starts_at: Tri<DateTime<Utc>>,
    pub ends_at: Tri<DateTime<Utc>>,
    pub location_text: Tri<LocationText>,
    pub location_url: Tri<LocationUrl>,
    pub game_id: Tri<GameId>,
    pub visibility: Tri<Visibility>,
    pub capacity: Tri<Capacity>,
}

impl EventPatch {
    /// No field present at all (only possible for a patch built by hand).
    pub fn is_empty(&self) -> bool {
        *self == EventPatch::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    const TENANT: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    const USER: &str = "11111111-2222-4333-8444-555555555555";

    fn tenant() -> TenantId {
        TenantId::parse(TENANT).unwrap_or_else(|e| panic!("{e}"))
    }

    fn user() -> UserId {
        UserId::parse(USER).unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(s: &str) -> DateTime<Utc> {
        crate::domain::time::parse_datetime_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn minimal() -> Value {
        json!({
            "scopeType": "COMMUNITY",
            "scopeId": "guild-1",
            "title": "Raid night",
            "startsAt": "2026-01-10T10:00:00Z",
            "endsAt": "2026-01-10T12:00:00Z",
        })
    }

    fn with(mut body: Value, key: &str, value: Value) -> Value {
        if let Some(obj) = body.as_object_mut() {
            obj.insert(key.to_owned(), value);
        }
        body
    }

    fn without(mut body: Value, key: &str) -> Value {
        if let Some(obj) = body.as_object_mut() {
            obj.remove(key);
        }
        body
    }

    fn create(body: &Value) -> NewEvent {
        crate::app::requests::new_event(tenant(), body).unwrap_or_else(|e| panic!("{body}: {e:?}"))
    }

    fn fields(result: Result<impl std::fmt::Debug, DomainError>) -> BTreeMap<String, String> {
        match result {
            Err(DomainError::Validation { fields }) => fields,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn event() -> Event {
        let body = with(minimal(), "capacity", json!(10));
        create(&body).into_event(EventId::new_v4(), user(), at("2026-01-01T00:00:00Z"))
    }

    fn patch(body: Value) -> EventPatch {
        crate::app::requests::patch(&body).unwrap_or_else(|e| panic!("{body}: {e:?}"))
    }

    fn apply(event: &Event, body: Value) -> Result<PatchOutcome, DomainError> {
        event.apply_patch(&patch(body), at("2026-01-02T00:00:00Z"), user())
    }

    #[test]
    fn creates_with_defaults() {
        let e = create(&minimal());
        assert_eq!(e.scope().scope_type(), ScopeType::Community);
        assert_eq!(e.scope().scope_id(), "guild-1");
        assert_eq!(e.title(), "Raid night");
        assert_eq!(e.description(), "");
        assert_eq!(e.location_text(), "");
        assert_eq!(e.location_url(), None);
        assert_eq!(e.game_id(), None);
        assert_eq!(e.visibility(), Visibility::Public);
        assert_eq!(e.capacity(), None);
        assert_eq!(e.tenant_id(), tenant());
        let stored = e.into_event(EventId::new_v4(), user(), at("2026-01-01T00:00:00Z"));
        assert_eq!(stored.version, 1);
        assert_eq!(stored.status, EventStatus::Scheduled);
        assert_eq!(stored.created_at, stored.updated_at);
        assert_eq!(stored.cancelled_at, None);
    }

    #[test]
    fn accepts_snake_case_and_prefers_camel_case() {
        let snake = json!({
            "scope_type": "TEAM",
            "scope_id": "team-9",
            "title": "T",
            "starts_at": "2026-01-10 10:00",
            "ends_at": "2026-01-10",
            "location_text": "Hall",
            "location_url": "https://example.com",
            "game_id": "cs2",
            "visibility": "team",
            "capacity": 3,
            "unknown": {"x": 1},
        });
        // 10:00 is after midnight: swap to get a valid range.
        let snake = with(snake, "ends_at", json!("2026-01-11"));
        let e = create(&snake);
        assert_eq!(e.scope().scope_type(), ScopeType::Team);
        assert_eq!(e.location_text(), "Hall");
        assert_eq!(
            e.location_url().map(|u| u.as_str()),
            Some("https://example.com")
        );
        assert_eq!(e.game_id().map(|g| g.as_str()), Some("cs2"));
        assert_eq!(e.capacity().map(Capacity::get), Some(3));
        assert_eq!(e.starts_at(), at("2026-01-10T10:00:00Z"));

        let both = with(
            with(minimal(), "title", json!("camel")),
            "scope_id",
            json!(7),
        );
        let both = with(both, "starts_at", json!("garbage"));
        let e = create(&both);
        assert_eq!(e.scope().scope_id(), "guild-1");
        assert_eq!(e.starts_at(), at("2026-01-10T10:00:00Z"));
    }

    #[test]
    fn reports_every_missing_field() {
        let f = fields(crate::app::requests::new_event(tenant(), &json!({})));
        let expected: BTreeMap<String, String> =
            ["endsAt", "scopeId", "scopeType", "startsAt", "title"]
                .into_iter()
                .map(|k| (k.to_owned(), crate::app::fields::REQUIRED.to_owned()))
                .collect();
        assert_eq!(f, expected);
    }

    #[test]
    fn reports_wrong_types() {
        let body = json!({
            "scopeType": "community",
            "scopeId": 42,
            "title": ["x"],
            "description": 5,
            "startsAt": true,
            "endsAt": "soon",
            "locationText": {},
            "locationUrl": "javascript:alert(1)",
            "gameId": 3,
            "visibility": "PUBLIC",
            "capacity": "10",
        });
        let f = fields(crate::app::requests::new_event(tenant(), &body));
        assert_eq!(f.len(), 11, "{f:?}");
        assert_eq!(f["scopeId"], "must be a string");
        assert_eq!(
            f["scopeType"],
            "scopeType must be one of: TENANT, COMMUNITY, TEAM"
        );
        assert_eq!(f["title"], "must be a string");
        assert_eq!(
            f["locationUrl"],
            "locationUrl must be an absolute http or https URL"
        );
        assert_eq!(f["capacity"], "must be an integer");
        assert!(f["startsAt"].contains("datetime"));
    }

    #[test]
    fn create_null_rules() {
        let body = with(minimal(), "description", json!(null));
        let body = with(body, "locationText", json!(null));
        let body = with(body, "locationUrl", json!(""));
        let body = with(body, "gameId", json!(null));
        let body = with(body, "capacity", json!(null));
        let e = create(&body);
        assert_eq!(e.description(), "");
        assert_eq!(e.location_text(), "");
        assert_eq!(e.location_url(), None);
        assert_eq!(e.game_id(), None);
        assert_eq!(e.capacity(), None);

        let e = create(&with(
            with(minimal(), "locationUrl", json!(null)),
            "gameId",
            json!(""),
        ));
        assert_eq!((e.location_url(), e.game_id()), (None, None));
        let e = create(&with(
            with(minimal(), "description", json!("")),
            "locationText",
            json!(""),
        ));
        assert_eq!(
            (e.description().as_str(), e.location_text().as_str()),
            ("", "")
        );

        let f = fields(crate::app::requests::new_event(
            tenant(),
            &with(minimal(), "visibility", json!(null)),
        ));
        assert_eq!(f["visibility"], CANNOT_BE_NULL);
        let f = fields(crate::app::requests::new_event(
            tenant(),
            &with(minimal(), "title", json!(null)),
        ));
        assert_eq!(f["title"], CANNOT_BE_NULL);
        let f = fields(crate::app::requests::new_event(
            tenant(),
            &with(minimal(), "capacity", json!(0)),
        ));
        assert_eq!(f["capacity"], "capacity must be a positive integer or null");
    }

    #[test]
    fn capacity_numbers() {
        let cap =
            |v: Value| crate::app::requests::new_event(tenant(), &with(minimal(), "capacity", v));
        assert_eq!(
            cap(json!(5.0)).map(|e| e.capacity().map(Capacity::get)),
            Ok(Some(5))
        );
        assert_eq!(fields(cap(json!(5.5)))["capacity"], "must be an integer");
        assert_eq!(
            fields(cap(json!(-1)))["capacity"],
            "capacity must be a positive integer or null"
        );
        assert_eq!(
            fields(cap(json!(u64::MAX)))["capacity"],
            "capacity must be at most 1000000"
        );
        assert_eq!(fields(cap(json!(true)))["capacity"], "must be an integer");
    }

    #[test]
    fn title_boundaries_count_characters() {
        let ok = create(&with(minimal(), "title", json!("ё".repeat(255))));
        assert_eq!(ok.title().chars().count(), 255);
        let f = fields(crate::app::requests::new_event(
            tenant(),
            &with(minimal(), "title", json!("ё".repeat(256))),
        ));
        assert_eq!(f["title"], "title must be at most 255 characters");
        let f = fields(crate::app::requests::new_event(
            tenant(),
            &with(minimal(), "title", json!("   ")),
        ));
        assert_eq!(f["title"], "title must not be empty");
    }

    #[test]
    fn visibility_must_fit_scope() {
        let body = with(minimal(), "visibility", json!("team"));
        let f = fields(crate::app::requests::new_event(tenant(), &body));
        assert_eq!(
            f["visibility"],
            "visibility team is not allowed for scopeType COMMUNITY"
        );
        // Reported together with other field errors.
        let f = fields(crate::app::requests::new_event(
            tenant(),
            &without(body, "title"),
        ));
        assert_eq!(f.len(), 2);
        assert!(
            create(&with(minimal(), "visibility", json!("community"))).visibility()
                == Visibility::Community
        );
        assert!(
            create(&with(minimal(), "visibility", json!("private"))).visibility()
                == Visibility::Private
        );
    }

    #[test]
    fn tenant_scope_is_the_tenant() {
        let body = with(
            with(minimal(), "scopeType", json!("TENANT")),
            "scopeId",
            json!(TENANT.to_uppercase()),
        );
        let e = create(&body);
        assert_eq!(e.scope(), &Scope::tenant(tenant()));
        let body = with(body, "scopeId", json!("guild-1"));
        let f = fields(crate::app::requests::new_event(tenant(), &body));
        assert_eq!(
            f["scopeId"],
            "for TENANT scope, scopeId must be the tenant id"
        );
    }

    #[test]
    fn time_range_is_checked_after_fields() {
        let same = with(minimal(), "endsAt", json!("2026-01-10T10:00:00Z"));
        assert_eq!(
            crate::app::requests::new_event(tenant(), &same),
            Err(DomainError::InvalidTimeRange)
        );
        let before = with(minimal(), "endsAt", json!("2026-01-10T09:59:59.999Z"));
        assert_eq!(
            crate::app::requests::new_event(tenant(), &before),
            Err(DomainError::InvalidTimeRange)
        );
        // Offsets are compared as instants: 12:30+03:00 is 09:30Z.
        let offset = with(minimal(), "endsAt", json!("2026-01-10T12:30:00+03:00"));
        assert_eq!(
            crate::app::requests::new_event(tenant(), &offset),
            Err(DomainError::InvalidTimeRange)
        );
        let offset = with(minimal(), "endsAt", json!("2026-01-10T13:30:00+03:00"));
        assert_eq!(create(&offset).ends_at(), at("2026-01-10T10:30:00Z"));
        // Field errors win over the time range.
        let both = with(same, "title", json!(""));
        assert!(matches!(
            crate::app::requests::new_event(tenant(), &both),
            Err(DomainError::Validation { .. })
        ));
    }

    #[test]
    fn non_objects_are_invalid_bodies() {
        for body in [json!(null), json!([]), json!("x"), json!(1)] {
            assert!(matches!(
                crate::app::requests::new_event(tenant(), &body),
                Err(DomainError::InvalidBody(_))
            ));
            assert!(matches!(
                crate::app::requests::patch(&body),
                Err(DomainError::InvalidBody(_))
            ));
        }
    }

    #[test]
    fn equal_requests_compare_equal() {
        let a = create(&minimal());
        let b = create(&json!({
            "scope_type": "COMMUNITY", "scope_id": "guild-1", "title": "Raid night",
            "startsAt": "2026-01-10T13:00:00+03:00", "endsAt": 1768046400,
            "visibility": "public", "description": null,
        }));
        assert_eq!(a, b);
        assert_ne!(a, create(&with(minimal(), "title", json!("Other"))));
    }

    #[test]
    fn patch_without_editable_keys_is_no_updates() {
        for body in [
            json!({}),
            json!({"foo": 1}),
            json!({"scopeType": "TEAM", "scopeId": "x", "scope_type": "TEAM"}),
        ] {
            assert_eq!(
                crate::app::requests::patch(&body),
                Err(DomainError::NoUpdates),
                "{body}"
            );
        }
    }

    #[test]
    fn patch_null_rules() {
        let p = patch(json!({
            "title": null, "description": null, "locationText": null,
            "locationUrl": null, "gameId": "", "visibility": null, "capacity": null,
        }));
        assert!(p.title.is_null());
        assert!(p.description.is_null());
        assert!(p.location_url.is_null());
        assert!(p.game_id.is_null());
        assert!(p.starts_at.is_absent());
        assert_eq!(patch(json!({"locationUrl": ""})).location_url, Tri::Null);

        let f = fields(crate::app::requests::patch(
            &json!({"startsAt": null, "ends_at": null}),
        ));
        assert_eq!(f["startsAt"], "cannot be null");
        assert_eq!(f["endsAt"], "cannot be null");
        let f = fields(crate::app::requests::patch(
            &json!({"title": "", "capacity": 0, "visibility": "x"}),
        ));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn ignored_nulls_change_nothing() {
        let e = event();
        let out = apply(&e, json!({"title": null, "visibility": null}));
        assert_eq!(
            out,
            Ok(PatchOutcome {
                event: e.clone(),
                changed: vec![],
                updated_by: user()
            })
        );
    }

    #[test]
    fn same_values_change_nothing() {
        let e = event();
        let out = apply(
            &e,
            json!({
                "title": "Raid night", "description": "", "startsAt": "2026-01-10T13:00:00+03:00",
                "ends_at": 1768046400, "locationText": null, "locationUrl": "", "gameId": null,
                "visibility": "public", "capacity": 10,
            }),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(out.changed.is_empty());
        assert!(!out.is_changed());
        assert_eq!(out.event, e);
        assert_eq!(out.event.version, 1);
        assert_eq!(out.event.updated_at, e.updated_at);
    }

    #[test]
    fn changes_are_listed_in_fixed_order() {
        let e = event();
        // Keys deliberately in a different order from the fixed one.
        let out = apply(
            &e,
            json!({
                "capacity": null, "visibility": "community", "game_id": "dota",
                "location_url": "https://x.example", "locationText": "Hall",
                "endsAt": "2026-01-11T00:00:00Z", "startsAt": "2026-01-10T09:00:00Z",
                "description": "Bring snacks", "title": "Raid night 2",
            }),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.changed, EventField::ALL.to_vec());
        let names: Vec<&str> = out.changed.iter().map(|f| f.as_snake_str()).collect();
        assert_eq!(
            names,
            [
                "title",
                "description",
                "starts_at",
                "ends_at",
                "location_text",
                "location_url",
                "game_id",
                "visibility",
                "capacity"
            ]
        );
        assert_eq!(serde_json::to_value(&out.changed).ok(), Some(json!(names)));
        assert_eq!(out.event.version, 2);
        assert_eq!(out.event.updated_at, at("2026-01-02T00:00:00Z"));
        assert_eq!(out.event.created_at, e.created_at);
        assert_eq!(out.event.capacity, None);
        assert_eq!(out.event.title, "Raid night 2");
    }

    #[test]
    fn only_real_changes_are_listed() {
        let e = event();
        let out = apply(
            &e,
            json!({"title": "Raid night", "description": "New", "capacity": 10}),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.changed, vec![EventField::Description]);
        let out = out.event.apply_patch(
            &patch(json!({"description": null})),
            at("2026-01-03T00:00:00Z"),
            user(),
        );
        let out = out.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.changed, vec![EventField::Description]);
        assert_eq!(out.event.description, "");
        assert_eq!(out.event.version, 3);
    }

    #[test]
    fn patch_checks_the_merged_time_range() {
        let e = event();
        assert_eq!(
            apply(&e, json!({"startsAt": "2026-01-10T12:00:00Z"})),
            Err(DomainError::InvalidTimeRange)
        );
        assert_eq!(
            apply(&e, json!({"endsAt": "2026-01-10T09:00:00Z"})),
            Err(DomainError::InvalidTimeRange)
        );
        let moved = apply(
            &e,
            json!({"startsAt": "2026-01-10T13:00:00Z", "endsAt": "2026-01-10T14:00:00Z"}),
        );
        assert_eq!(
            moved.map(|o| o.changed),
            Ok(vec![EventField::StartsAt, EventField::EndsAt])
        );
    }

    #[test]
    fn patch_checks_visibility_against_scope() {
        let e = event();
        let f = fields(apply(&e, json!({"visibility": "team"})));
        assert_eq!(
            f["visibility"],
            "visibility team is not allowed for scopeType COMMUNITY"
        );
        // A stored misfit does not block editing other fields.
        let mut legacy = e.clone();
        legacy.visibility = Visibility::Team;
        assert!(apply(&legacy, json!({"title": "Renamed"})).is_ok());
    }

    #[test]
    fn hand_built_null_times_are_refused() {
        let p = EventPatch {
            starts_at: Tri::Null,
            ..EventPatch::default()
        };
        let f = fields(event().apply_patch(&p, at("2026-01-02T00:00:00Z"), user()));
        assert_eq!(f["startsAt"], "cannot be null");
        assert!(EventPatch::default().is_empty());
    }

    #[test]
    fn cancelled_events_cannot_be_patched() {
        let cancelled = event()
            .cancel(None, user(), at("2026-01-05T00:00:00Z"))
            .event;
        assert_eq!(
            apply(&cancelled, json!({"title": "x"})),
            Err(DomainError::EventCancelled)
        );
        assert_eq!(
            apply(&cancelled, json!({"title": null})),
            Err(DomainError::EventCancelled)
        );
    }

    #[test]
    fn cancel_once() {
        let e = event();
        let reason = CancelReason::parse("Venue closed").ok();
        let first = e.cancel(reason.clone(), user(), at("2026-01-05T00:00:00.123456789Z"));
        assert!(!first.already_cancelled);
        assert!(first.event.is_cancelled());
        assert_eq!(first.event.cancel_reason, reason);
        assert_eq!(first.event.cancelled_by, Some(user()));
        assert_eq!(
            first.event.cancelled_at,
            Some(at("2026-01-05T00:00:00.123456Z"))
        );
        assert_eq!(first.event.updated_at, at("2026-01-05T00:00:00.123456Z"));
        assert_eq!(first.event.version, 2);
        let second = first.event.cancel(None, user(), at("2026-01-06T00:00:00Z"));
        assert!(second.already_cancelled);
        assert_eq!(second.event, first.event);
        let blank = e.cancel(
            CancelReason::parse("  ").ok(),
            user(),
            at("2026-01-05T00:00:00Z"),
        );
        assert_eq!(blank.event.cancel_reason, None);
    }

    #[test]
    fn cancel_body() {
        assert_eq!(
            crate::app::requests::cancel_reason_of(&json!(null)),
            Ok(None)
        );
        assert_eq!(crate::app::requests::cancel_reason_of(&json!({})), Ok(None));
        assert_eq!(
            crate::app::requests::cancel_reason_of(&json!({"reason": ""})),
            Ok(None)
        );
        assert_eq!(
            crate::app::requests::cancel_reason_of(&json!({"reason": null})),
            Ok(None)
        );
        assert_eq!(
            crate::app::requests::cancel_reason_of(&json!({"reason": "Rain"})),
            Ok(CancelReason::parse("Rain").ok())
        );
        assert_eq!(
            fields(crate::app::requests::cancel_reason_of(
                &json!({"reason": 1})
            ))["reason"],
            "must be a string"
        );
        assert!(
            crate::app::requests::cancel_reason_of(&json!({"reason": "r".repeat(1001)})).is_err()
        );
        assert!(matches!(
            crate::app::requests::cancel_reason_of(&json!([])),
            Err(DomainError::InvalidBody(_))
        ));
    }

    fn differs(a: &Event, b: &Event, field: EventField) -> bool {
        match field {
            EventField::Title => a.title != b.title,
            EventField::Description => a.description != b.description,
            EventField::StartsAt => a.starts_at != b.starts_at,
            EventField::EndsAt => a.ends_at != b.ends_at,
            EventField::LocationText => a.location_text != b.location_text,
            EventField::LocationUrl => a.location_url != b.location_url,
            EventField::GameId => a.game_id != b.game_id,
            EventField::Visibility => a.visibility != b.visibility,
            EventField::Capacity => a.capacity != b.capacity,
        }
    }

    fn maybe(values: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
        prop::option::of(prop::sample::select(values))
    }

    proptest! {
        #[test]
        fn changed_lists_exactly_the_differing_fields_in_order(
            title in maybe(vec![json!(null), json!("Raid night"), json!("Other")]),
            description in maybe(vec![json!(null), json!(""), json!("Text")]),
            starts in maybe(vec![json!("2026-01-10T10:00:00Z"), json!("2026-01-10T08:00:00Z")]),
            ends in maybe(vec![json!("2026-01-10T12:00:00Z"), json!("2026-01-10T15:00:00Z")]),
            location_text in maybe(vec![json!(null), json!(""), json!("Hall")]),
            location_url in maybe(vec![json!(null), json!(""), json!("https://a.example")]),
            game_id in maybe(vec![json!(null), json!(""), json!("cs2")]),
            visibility in maybe(vec![json!(null), json!("public"), json!("private"), json!("community")]),
            capacity in maybe(vec![json!(null), json!(10), json!(3)]),
        ) {
            let mut body = Map::new();
            for (k, v) in [
                ("title", title), ("description", description), ("startsAt", starts),
                ("endsAt", ends), ("locationText", location_text), ("locationUrl", location_url),
                ("gameId", game_id), ("visibility", visibility), ("capacity", capacity),
            ] {
                if let Some(v) = v {
                    body.insert(k.to_owned(), v);
                }
            }
            let body = Value::Object(body);
            let parsed = crate::app::requests::patch(&body);
            if body.as_object().is_some_and(Map::is_empty) {
                prop_assert_eq!(parsed, Err(DomainError::NoUpdates));
                return Ok(());
            }
            let p = parsed.unwrap_or_else(|e| panic!("{e:?}"));
            let e = event();
            let out = e.apply_patch(&p, at("2026-01-02T00:00:00Z"), user()).unwrap_or_else(|e| panic!("{e:?}"));
            let expected: Vec<EventField> =
                EventField::ALL.into_iter().filter(|f| differs(&e, &out.event, *f)).collect();
            prop_assert_eq!(&out.changed, &expected);
            if expected.is_empty() {
                prop_assert_eq!(&out.event, &e);
            } else {
                prop_assert_eq!(out.event.version, e.version + 1);
            }
        }
    }
}
