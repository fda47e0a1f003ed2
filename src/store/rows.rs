//! Rows as Postgres returns them, and their conversion into domain types.
//! Values are validated again on the way in: the schema's constraints make
//! failures impossible in practice, and a failure is reported, not trusted.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    CancelReason, Capacity, Description, Event, EventStatus, GameId, LocationText, LocationUrl,
    MaxGuests, Reminders, RsvpCounts, RsvpRules, RsvpStatus, Scope, ScopeId, ScopeType, SeriesLink,
    TimeZone, Title, Visibility,
};

/// The column list matching [`EventRow`], for `SELECT {EVENT_COLUMNS} FROM events`.
pub const EVENT_COLUMNS: &str = "e.id, e.tenant_id, e.scope_type::text AS scope_type, e.scope_id, e.title, \
     e.description, e.starts_at, e.ends_at, e.location_text, e.location_url, e.game_id, \
     e.visibility::text AS visibility, e.status::text AS status, e.capacity, e.created_by, \
     e.created_at, e.updated_at, e.version, e.cancelled_at, e.cancelled_by, e.cancel_reason, \
     e.time_zone, e.series_id, e.recurrence_id, e.series_exception, \
     e.rsvp_opens_at, e.rsvp_closes_at, e.max_guests, e.rsvp_approval, e.reminders";

/// The column list matching [`CountsRow`] (from `event_counters c`).
pub const COUNT_COLUMNS: &str = "COALESCE(c.interested, 0) AS interested, COALESCE(c.going, 0) AS going, \
     COALESCE(c.not_going, 0) AS not_going, COALESCE(c.waitlisted, 0) AS waitlisted, \
     COALESCE(c.pending, 0) AS pending, COALESCE(c.declined, 0) AS declined, \
     COALESCE(c.guests, 0) AS guests, COALESCE(c.revision, 0) AS revision";

#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scope_type: String,
    pub scope_id: String,
    pub title: String,
    pub description: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub location_text: String,
    pub location_url: Option<String>,
    pub game_id: Option<String>,
    pub visibility: String,
    pub status: String,
    pub capacity: Option<i32>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancelled_by: Option<Uuid>,
    pub cancel_reason: Option<String>,
    pub time_zone: String,
    pub series_id: Option<Uuid>,
    pub recurrence_id: Option<DateTime<Utc>>,
    pub series_exception: bool,
    pub rsvp_opens_at: Option<DateTime<Utc>>,
    pub rsvp_closes_at: Option<DateTime<Utc>>,
    pub max_guests: i32,
    pub rsvp_approval: bool,
    pub reminders: Vec<i32>,
}

#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct CountsRow {
    pub interested: i32,
    pub going: i32,
    pub not_going: i32,
    pub waitlisted: i32,
    pub pending: i32,
    pub declined: i32,
    pub guests: i32,
    pub revision: i64,
}

impl From<CountsRow> for RsvpCounts {
    fn from(r: CountsRow) -> Self {
        let n = |v: i32| u32::try_from(v).unwrap_or(0);
        RsvpCounts {
            interested: n(r.interested),
            going: n(r.going),
            not_going: n(r.not_going),
            waitlisted: n(r.waitlisted),
            pending: n(r.pending),
            declined: n(r.declined),
            guests: n(r.guests),
        }
    }
}

/// A stored value that does not pass the domain's validation.
#[derive(Debug, thiserror::Error)]
#[error("stored event {id} has an invalid {field}: {message}")]
pub struct CorruptRow {
    pub id: Uuid,
    pub field: &'static str,
    pub message: String,
}

impl TryFrom<EventRow> for Event {
    type Error = CorruptRow;

    fn try_from(r: EventRow) -> Result<Self, CorruptRow> {
        let id = r.id;
        let bad = |field: &'static str| {
            move |e: &dyn std::fmt::Display| CorruptRow {
                id,
                field,
                message: e.to_string(),
            }
        };
        let scope_type: ScopeType = r.scope_type.parse().map_err(|e| bad("scope_type")(&e))?;
        let scope_id = ScopeId::parse(&r.scope_id).map_err(|e| bad("scope_id")(&e))?;
        Ok(Event {
            id: id.into(),
            tenant_id: r.tenant_id.into(),
            scope: Scope::from_stored(scope_type, scope_id),
            title: Title::parse(&r.title).map_err(|e| bad("title")(&e))?,
            description: Description::parse(&r.description).map_err(|e| bad("description")(&e))?,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            location_text: LocationText::parse(&r.location_text)
                .map_err(|e| bad("location_text")(&e))?,
            location_url: r
                .location_url
                .as_deref()
                .map(LocationUrl::parse)
                .transpose()
                .map_err(|e| bad("location_url")(&e))?,
            game_id: r
                .game_id
                .as_deref()
                .map(GameId::parse)
                .transpose()
                .map_err(|e| bad("game_id")(&e))?,
            visibility: r
                .visibility
                .parse::<Visibility>()
                .map_err(|e| bad("visibility")(&e))?,
            status: r
                .status
                .parse::<EventStatus>()
                .map_err(|e| bad("status")(&e))?,
            capacity: r
                .capacity
                .map(|c| Capacity::new(i64::from(c)))
                .transpose()
                .map_err(|e| bad("capacity")(&e))?,
            created_by: r.created_by.into(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            cancelled_at: r.cancelled_at,
            cancelled_by: r.cancelled_by.map(Into::into),
            cancel_reason: r
                .cancel_reason
                .as_deref()
                .map(CancelReason::parse)
                .transpose()
                .map_err(|e| bad("cancel_reason")(&e))?,
            time_zone: TimeZone::parse(&r.time_zone).map_err(|e| bad("time_zone")(&e))?,
            series: match (r.series_id, r.recurrence_id) {
                (Some(series_id), Some(recurrence_id)) => Some(SeriesLink {
                    series_id: series_id.into(),
                    recurrence_id,
                    exception: r.series_exception,
                }),
                _ => None,
            },
            rules: RsvpRules {
                opens_at: r.rsvp_opens_at,
                closes_at: r.rsvp_closes_at,
                max_guests: MaxGuests::new(i64::from(r.max_guests))
                    .map_err(|e| bad("max_guests")(&e))?,
                approval: r.rsvp_approval,
                reminders: Reminders::new(
                    &r.reminders
                        .iter()
                        .map(|m| i64::from(*m))
                        .collect::<Vec<_>>(),
                )
                .map_err(|e| bad("reminders")(&e))?,
            },
        })
    }
}

pub fn parse_rsvp_status(text: &str) -> Option<RsvpStatus> {
    text.parse().ok()
}
