//! The RSVP rules of an event: when RSVPs are taken (the window), how many
//! guests a party may bring, whether a manager approves each `going`, and
//! when going users are reminded.

use chrono::{DateTime, Duration, Utc};

use crate::domain::error::DomainError;
use crate::domain::values::FieldError;

/// Most guests one user may bring (`maxGuests` at most this).
pub const MAX_GUESTS: u32 = 50;
/// Most reminders an event may have.
pub const MAX_REMINDERS: usize = 5;
/// The earliest reminder, in minutes before the start (30 days).
pub const MAX_REMINDER_MINUTES: u32 = 43_200;

/// Reminder offsets in minutes before the start: distinct, each in
/// `1..=MAX_REMINDER_MINUTES`, at most [`MAX_REMINDERS`], kept in
/// descending order (the earliest reminder first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Reminders(Vec<u32>);

impl Reminders {
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// From offsets as sent; duplicates are one reminder.
    pub fn new(minutes: &[i64]) -> Result<Self, FieldError> {
        let mut out = Vec::with_capacity(minutes.len());
        for &m in minutes {
            match u32::try_from(m) {
                Ok(m) if (1..=MAX_REMINDER_MINUTES).contains(&m) => out.push(m),
                _ => {
                    return Err(FieldError::new(format!(
                        "each reminder must be a whole number of minutes between 1 and {MAX_REMINDER_MINUTES}"
                    )));
                }
            }
        }
        out.sort_unstable_by(|a, b| b.cmp(a));
        out.dedup();
        if out.len() > MAX_REMINDERS {
            return Err(FieldError::new(format!(
                "at most {MAX_REMINDERS} reminders"
            )));
        }
        Ok(Self(out))
    }

    pub fn minutes(&self) -> &[u32] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A guest limit: `0..=MAX_GUESTS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MaxGuests(u32);

impl MaxGuests {
    pub fn new(n: i64) -> Result<Self, FieldError> {
        match u32::try_from(n) {
            Ok(n) if n <= MAX_GUESTS => Ok(Self(n)),
            _ => Err(FieldError::new(format!(
                "must be an integer between 0 and {MAX_GUESTS}"
            ))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// The RSVP rules of one event. The default is what an event had before
/// rules existed: RSVPs taken until the end, no guests, no approval, no
/// reminders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RsvpRules {
    /// RSVPs are taken from here on; `None`: from creation.
    pub opens_at: Option<DateTime<Utc>>,
    /// RSVPs are taken until (excluding) this; `None`: until the event ends.
    pub closes_at: Option<DateTime<Utc>>,
    pub max_guests: MaxGuests,
    /// `going` becomes `pending` until a manager approves it.
    pub approval: bool,
    pub reminders: Reminders,
}

pub const RSVP_OPENS_AT: &str = "rsvpOpensAt";
pub const RSVP_CLOSES_AT: &str = "rsvpClosesAt";

impl RsvpRules {
    /// When RSVPs close for an event ending at `ends_at`.
    pub fn closes(&self, ends_at: DateTime<Utc>) -> DateTime<Utc> {
        self.closes_at.unwrap_or(ends_at)
    }

    /// Whether an RSVP made at `at` is inside the window: from `opens_at`
    /// (inclusive) to the close (exclusive).
    pub fn is_open(&self, at: DateTime<Utc>, ends_at: DateTime<Utc>) -> bool {
        self.opens_at.is_none_or(|o| at >= o) && at < self.closes(ends_at)
    }

    /// The window fits the event: it opens before it closes, and closes
    /// no later than the event ends (422 on the field at fault).
    pub fn check_window(&self, ends_at: DateTime<Utc>) -> Result<(), DomainError> {
        if let Some(closes) = self.closes_at
            && closes > ends_at
        {
            return Err(DomainError::field(
                RSVP_CLOSES_AT,
                "must not be after endsAt",
            ));
        }
        if let Some(opens) = self.opens_at
            && opens >= self.closes(ends_at)
        {
            let message = if self.closes_at.is_some() {
                "must be before rsvpClosesAt"
            } else {
                "must be before endsAt"
            };
            return Err(DomainError::field(RSVP_OPENS_AT, message));
        }
        Ok(())
    }

    /// When the reminder `minutes` before `starts_at` is due.
    pub fn due_at(starts_at: DateTime<Utc>, minutes: u32) -> DateTime<Utc> {
        starts_at - Duration::minutes(i64::from(minutes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn the_window_at_its_edges() {
        let ends = at("2026-05-01T20:00:00Z");
        let rules = RsvpRules {
            opens_at: Some(at("2026-04-01T10:00:00Z")),
            closes_at: Some(at("2026-05-01T18:00:00Z")),
            ..RsvpRules::default()
        };
        assert!(!rules.is_open(at("2026-04-01T09:59:59.999999Z"), ends));
        assert!(rules.is_open(at("2026-04-01T10:00:00Z"), ends));
        assert!(rules.is_open(at("2026-05-01T17:59:59.999999Z"), ends));
        assert!(!rules.is_open(at("2026-05-01T18:00:00Z"), ends));
        let open = RsvpRules::default();
        assert!(open.is_open(at("2000-01-01T00:00:00Z"), ends));
        assert!(open.is_open(at("2026-05-01T19:59:59Z"), ends));
        assert!(!open.is_open(ends, ends));
    }

    #[test]
    fn the_window_must_fit_the_event() {
        let ends = at("2026-05-01T20:00:00Z");
        let field = |r: &RsvpRules| match r.check_window(ends) {
            Err(DomainError::Validation { fields }) => fields.keys().cloned().collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        let mut r = RsvpRules {
            opens_at: Some(at("2026-05-01T12:00:00Z")),
            closes_at: Some(at("2026-05-01T12:00:00Z")),
            ..RsvpRules::default()
        };
        assert_eq!(field(&r), ["rsvpOpensAt"]);
        r.closes_at = Some(at("2026-05-01T20:00:01Z"));
        assert_eq!(field(&r), ["rsvpClosesAt"]);
        r.closes_at = Some(ends);
        assert!(r.check_window(ends).is_ok());
        r.closes_at = None;
        r.opens_at = Some(ends);
        assert_eq!(field(&r), ["rsvpOpensAt"]);
    }

    #[test]
    fn reminders_and_guest_limits() {
        let r = Reminders::new(&[60, 1440, 60]).map(|r| r.minutes().to_vec());
        assert_eq!(r.ok(), Some(vec![1440, 60]));
        assert!(Reminders::new(&[0]).is_err());
        assert!(Reminders::new(&[-5]).is_err());
        assert!(Reminders::new(&[43_201]).is_err());
        assert!(Reminders::new(&[1, 2, 3, 4, 5, 6]).is_err());
        assert!(Reminders::new(&[1, 2, 3, 4, 5, 5]).is_ok());
        assert!(MaxGuests::new(-1).is_err());
        assert!(MaxGuests::new(51).is_err());
        assert_eq!(MaxGuests::new(50).map(MaxGuests::get).ok(), Some(50));
        assert_eq!(
            RsvpRules::due_at(at("2026-05-01T20:00:00Z"), 90),
            at("2026-05-01T18:30:00Z")
        );
    }
}
