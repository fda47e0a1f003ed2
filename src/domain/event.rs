//! The event aggregate: creating one from a request body, patching it, and
//! cancelling it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::calendar::{SeriesLink, TimeZone};
use crate::domain::error::DomainError;
use crate::domain::ids::{EventId, TenantId, UserId};
use crate::domain::rules::{MaxGuests, Reminders, RsvpRules};
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
    RsvpOpensAt,
    RsvpClosesAt,
    MaxGuests,
    RsvpApproval,
    Reminders,
    TimeZone,
    /// The occurrence moved to another series (a split); never in a
    /// request body.
    Series,
}

impl EventField {
    /// The fields a request may patch.
    pub const ALL: [EventField; 15] = [
        EventField::Title,
        EventField::Description,
        EventField::StartsAt,
        EventField::EndsAt,
        EventField::LocationText,
        EventField::LocationUrl,
        EventField::GameId,
        EventField::Visibility,
        EventField::Capacity,
        EventField::RsvpOpensAt,
        EventField::RsvpClosesAt,
        EventField::MaxGuests,
        EventField::RsvpApproval,
        EventField::Reminders,
        EventField::TimeZone,
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
            EventField::RsvpOpensAt => "rsvp_opens_at",
            EventField::RsvpClosesAt => "rsvp_closes_at",
            EventField::MaxGuests => "max_guests",
            EventField::RsvpApproval => "rsvp_approval",
            EventField::Reminders => "reminders",
            EventField::TimeZone => "time_zone",
            EventField::Series => "series_id",
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
            EventField::RsvpOpensAt => "rsvpOpensAt",
            EventField::RsvpClosesAt => "rsvpClosesAt",
            EventField::MaxGuests => "maxGuests",
            EventField::RsvpApproval => "rsvpApproval",
            EventField::Reminders => "reminders",
            EventField::TimeZone => "timeZone",
            EventField::Series => "seriesId",
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
    /// The zone the event is shown in; the instants above stay UTC.
    pub time_zone: TimeZone,
    /// Set on an occurrence of a recurring event.
    pub series: Option<SeriesLink>,
    /// The RSVP window, guests, approval and reminders.
    pub rules: RsvpRules,
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
    /// An occurrence of a series: the template's fields at its own times.
    pub fn occurrence(
        template: &Event,
        id: EventId,
        link: SeriesLink,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> Event {
        // The RSVP window keeps its distance from the start.
        let moved = starts_at - template.starts_at;
        let mut rules = template.rules.clone();
        rules.opens_at = rules.opens_at.map(|t| t + moved);
        rules.closes_at = rules.closes_at.map(|t| t + moved);
        Event {
            id,
            starts_at,
            ends_at,
            series: Some(link),
            rules,
            ..template.clone()
        }
    }

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
        if let Some(opens_at) = patch.rsvp_opens_at.into_option_update() {
            set(EventField::RsvpOpensAt, opens_at != next.rules.opens_at);
            next.rules.opens_at = opens_at;
        }
        if let Some(closes_at) = patch.rsvp_closes_at.into_option_update() {
            set(EventField::RsvpClosesAt, closes_at != next.rules.closes_at);
            next.rules.closes_at = closes_at;
        }
        if let Some(max_guests) = patch.max_guests.resolve(MaxGuests::default) {
            set(EventField::MaxGuests, max_guests != next.rules.max_guests);
            next.rules.max_guests = max_guests;
        }
        if let Tri::Set(approval) = patch.rsvp_approval {
            set(EventField::RsvpApproval, approval != next.rules.approval);
            next.rules.approval = approval;
        }
        if let Some(reminders) = patch.reminders.resolve(Reminders::none) {
            set(EventField::Reminders, reminders != next.rules.reminders);
            next.rules.reminders = reminders;
        }
        if let Some(zone) = patch.time_zone.resolve(|| TimeZone::UTC) {
            set(EventField::TimeZone, zone != next.time_zone);
            next.time_zone = zone;
        }
        match patch.series {
            // Changed on its own: the series must not overwrite it.
            SeriesEdit::This => {
                if !changed.is_empty()
                    && let Some(link) = &mut next.series
                {
                    link.exception = true;
                }
            }
            SeriesEdit::Relink(link) => {
                if next.series != Some(link) {
                    changed.push(EventField::Series);
                    next.series = Some(link);
                }
            }
        }

        // The original checked the range even when the times were not in the
        // patch; so do we, against the merged values.
        if next.starts_at >= next.ends_at {
            return Err(DomainError::InvalidTimeRange);
        }
        next.rules.check_window(next.ends_at)?;

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
    time_zone: TimeZone,
    rules: RsvpRules,
    /// `reminders` was sent (else the service's default applies).
    reminders_sent: bool,
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
    pub time_zone: TimeZone,
    pub rules: RsvpRules,
    /// `reminders` was sent; when not, [`NewEvent::default_reminders`]
    /// may set them.
    pub reminders_sent: bool,
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
        f.rules.check_window(f.ends_at)?;
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
            time_zone: f.time_zone,
            rules: f.rules,
            reminders_sent: f.reminders_sent,
        })
    }

    /// Gives the event `reminders` unless the request sent its own.
    pub fn default_reminders(&mut self, reminders: &Reminders) {
        if !self.reminders_sent {
            self.rules.reminders = reminders.clone();
        }
    }

    pub fn rules(&self) -> &RsvpRules {
        &self.rules
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
            time_zone: self.time_zone,
            series: None,
            rules: self.rules,
        }
    }

    pub fn time_zone(&self) -> TimeZone {
        self.time_zone
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
    /// null: none (open from creation).
    pub rsvp_opens_at: Tri<DateTime<Utc>>,
    /// null: none (closes when the event ends).
    pub rsvp_closes_at: Tri<DateTime<Utc>>,
    /// null: 0.
    pub max_guests: Tri<MaxGuests>,
    /// null is ignored.
    pub rsvp_approval: Tri<bool>,
    /// null: none.
    pub reminders: Tri<Reminders>,
    /// null → UTC.
    pub time_zone: Tri<TimeZone>,
    /// Set by the service, never read from a request.
    pub series: SeriesEdit,
}

/// What a patch does to an occurrence's link to its series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SeriesEdit {
    /// A change of this occurrence alone: once something changes, it is
    /// remembered as an exception of its series.
    #[default]
    This,
    /// Part of a change of the series: the occurrence's link becomes this
    /// one (another series after a split, a moved instance after a
    /// series-wide move), and it is not made an exception.
    Relink(SeriesLink),
}

impl EventPatch {
    /// No field present at all (only possible for a patch built by hand).
    pub fn is_empty(&self) -> bool {
        *self == EventPatch::default()
    }
}
