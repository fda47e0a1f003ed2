//! The pure domain layer: identifiers, validated values, the event
//! aggregate, RSVP seat arithmetic, datetime handling and error codes.
//!
//! Nothing here does I/O or knows about transports; every face of the
//! service (HTTP, NATS) and the store build on these types, so a rule is
//! written once.

pub mod calendar;
pub mod commands;
pub mod error;
pub mod event;
pub mod ids;
pub mod rsvp;
pub mod rules;
pub mod series;
pub mod time;
pub mod values;

pub use calendar::{
    ApplyTo, Horizon, LocalShift, Recurrence, RecurrenceError, SeriesLink, TimeZone,
};
pub use error::{DomainError, ErrorCode, UnknownErrorCode};
pub use event::{
    CancelOutcome, Event, EventField, EventPatch, EventStatus, NewEvent, NewEventFields,
    PatchOutcome, SeriesEdit, Tri,
};
pub use ids::{ANONYMIZED_USER_ID, EventId, InvalidId, SeriesId, TenantId, UserId};
pub use rsvp::{RequestedRsvp, RsvpChangeReason, RsvpCounts, RsvpStatus, Seats, promotable};
pub use rules::{MaxGuests, Reminders, RsvpRules};
pub use time::{
    DatetimeInput, UtcDisplay, format_utc, parse_datetime, parse_datetime_str, truncate_to_micros,
    utc_str,
};
pub use values::{
    CancelReason, Capacity, Description, FieldError, GameId, LocationText, LocationUrl, Scope,
    ScopeId, ScopeType, Title, Visibility, visibility_fits_scope, visibility_scope_mismatch,
};
pub mod ics;
pub mod ics_import;
pub mod published;
