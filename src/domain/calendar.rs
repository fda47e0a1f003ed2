//! Time zones and recurring events: the zone an event is shown in, the
//! recurrence rule of a series, and the arithmetic that keeps a series'
//! local time of day across daylight-saving changes.
//!
//! Instants stay UTC everywhere; a zone only decides what "the same time
//! next week" means. Rules are RFC 5545 RRULEs, parsed and expanded by the
//! `rrule` crate in the series' zone, with limits that keep a hostile rule
//! from costing more than a normal one.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone as _, Utc};
use serde::Serialize;

use crate::domain::ids::SeriesId;
use crate::domain::values::{FieldError, wire_enum};

/// An IANA time zone from the tz database (`Europe/Berlin`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    pub const UTC: TimeZone = TimeZone(chrono_tz::Tz::UTC);

    /// Exactly the names of the tz database (case-sensitive, as IANA
    /// spells them), at most 64 characters.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if s.is_empty() || s.len() > 64 {
            return Err(FieldError::new(
                "must be an IANA time zone name such as Europe/Berlin",
            ));
        }
        s.parse::<chrono_tz::Tz>().map(TimeZone).map_err(|_| {
            FieldError::new(format!(
                "unknown time zone {s:?}: use an IANA name such as Europe/Berlin or UTC"
            ))
        })
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.0
    }

    /// Whether calendars need no zone definition for it.
    pub fn is_utc(&self) -> bool {
        matches!(self.0, chrono_tz::Tz::UTC | chrono_tz::Tz::Etc__UTC)
    }

    /// The wall-clock time of `at` in this zone.
    pub fn local(&self, at: DateTime<Utc>) -> NaiveDateTime {
        at.with_timezone(&self.0).naive_local()
    }

    /// The instant a wall-clock time names in this zone. A time skipped by
    /// a daylight-saving change moves forward by the gap (02:30 on the
    /// spring-forward night becomes 03:30); a repeated one takes its first
    /// occurrence, as RFC 5545 §3.3.5 asks.
    pub fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        match self.0.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
            LocalResult::None => {
                let later = local + Duration::hours(1);
                match self.0.from_local_datetime(&later) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
                    LocalResult::None => local.and_utc(),
                }
            }
        }
    }

    /// The UTC offset in effect at `at`, in seconds east of Greenwich.
    pub fn offset_secs(&self, at: DateTime<Utc>) -> i32 {
        use chrono::Offset as _;
        self.0
            .offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc()
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone::UTC
    }
}

impl std::fmt::Display for TimeZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TimeZone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// An occurrence's place in its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLink {
    pub series_id: SeriesId,
    /// The instance of the rule this occurrence is: its start as the rule
    /// gives it (UTC), wherever the occurrence itself was moved.
    pub recurrence_id: DateTime<Utc>,
    /// Changed on its own (`applyTo: this`), apart from the series.
    pub exception: bool,
}

wire_enum! {
    /// Which occurrences of a series an update or a cancel is for.
    #[derive(Default)]
    ApplyTo, "applyTo" {
        #[default]
        This => "this",
        Following => "following",
        All => "all",
    }
}

/// How far ahead occurrences exist, and how many at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    pub days: u32,
    /// At most this many occurrences are made in one go.
    pub max_occurrences: usize,
}

impl Default for Horizon {
    fn default() -> Self {
        Horizon {
            days: 400,
            max_occurrences: 500,
        }
    }
}

/// The longest RRULE accepted, in bytes.
pub const MAX_RRULE_LEN: usize = 512;
/// The largest `COUNT` accepted.
pub const MAX_COUNT: u32 = 500;
/// The most `exdates` a series keeps.
pub const MAX_EXDATES: usize = 500;
/// How far after its start a rule's `UNTIL` may reach.
pub const MAX_UNTIL_YEARS: i64 = 10;
/// The largest `INTERVAL` accepted.
pub const MAX_INTERVAL: u16 = 1000;

const RULE_PARTS: [&str; 9] = [
    "FREQ",
    "INTERVAL",
    "COUNT",
    "UNTIL",
    "BYDAY",
    "BYMONTHDAY",
    "BYMONTH",
    "BYSETPOS",
    "WKST",
];

/// A validated recurrence: an RRULE and the instances it excludes.
///
/// Only rules that make at most one occurrence per day are accepted
/// (`FREQ` `DAILY` to `YEARLY`, no `BYHOUR`/`BYMINUTE`/`BYSECOND`): a
/// community event is not a cron job, and every occurrence is a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    /// Normalised: upper case, parts in the order given, no spaces.
    rule: String,
    exdates: Vec<DateTime<Utc>>,
}

/// A recurrence that could not be accepted, with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrenceError {
    pub field: &'static str,
    pub message: String,
}

impl RecurrenceError {
    fn rule(message: impl Into<String>) -> Self {
        RecurrenceError {
            field: "recurrence.rrule",
            message: message.into(),
        }
    }
}

impl Recurrence {
    /// Checks `rule` against `dtstart` in `zone`: syntax (by the `rrule`
    /// crate), the parts this service supports, and the limits.
    pub fn parse(
        rule: &str,
        exdates: Vec<DateTime<Utc>>,
        dtstart: DateTime<Utc>,
        zone: TimeZone,
    ) -> Result<Recurrence, RecurrenceError> {
        let rule = rule.trim();
        let rule = rule.strip_prefix("RRULE:").unwrap_or(rule);
        if rule.is_empty() {
            return Err(RecurrenceError::rule("must not be empty"));
        }
        if rule.len() > MAX_RRULE_LEN {
            return Err(RecurrenceError::rule(format!(
                "must be at most {MAX_RRULE_LEN} characters"
            )));
        }
        if rule.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(RecurrenceError::rule(
                "must be one RRULE value, such as FREQ=WEEKLY;BYDAY=TU;COUNT=10",
            ));
        }
        let normalised = rule.to_ascii_uppercase();
        let mut seen = Vec::new();
        for part in normalised.split(';') {
            let Some((name, value)) = part.split_once('=') else {
                return Err(RecurrenceError::rule(format!("{part:?} is not NAME=VALUE")));
            };
            if value.is_empty() {
                return Err(RecurrenceError::rule(format!("{name} has no value")));
            }
            if !RULE_PARTS.contains(&name) {
                return Err(RecurrenceError::rule(format!(
                    "{name} is not supported; a rule may use {}",
                    RULE_PARTS.join(", ")
                )));
            }
            if seen.contains(&name) {
                return Err(RecurrenceError::rule(format!("{name} is given twice")));
            }
            seen.push(name);
            if name == "FREQ" && !["DAILY", "WEEKLY", "MONTHLY", "YEARLY"].contains(&value) {
                return Err(RecurrenceError::rule(format!(
                    "FREQ={value} is not supported: use DAILY, WEEKLY, MONTHLY or YEARLY"
                )));
            }
        }
        if !seen.contains(&"FREQ") {
            return Err(RecurrenceError::rule("FREQ is required"));
        }
        if seen.contains(&"COUNT") && seen.contains(&"UNTIL") {
            return Err(RecurrenceError::rule(
                "COUNT and UNTIL cannot both be given",
            ));
        }
        let parsed: rrule::RRule<rrule::Unvalidated> = normalised
            .parse()
            .map_err(|e: rrule::RRuleError| RecurrenceError::rule(e.to_string()))?;
        if parsed.get_count().is_some_and(|c| c == 0 || c > MAX_COUNT) {
            return Err(RecurrenceError::rule(format!(
                "COUNT must be between 1 and {MAX_COUNT}"
            )));
        }
        if parsed.get_interval() == 0 || parsed.get_interval() > MAX_INTERVAL {
            return Err(RecurrenceError::rule(format!(
                "INTERVAL must be between 1 and {MAX_INTERVAL}"
            )));
        }
        if let Some(until) = parsed.get_until() {
            let until = until.with_timezone(&Utc);
            if until < dtstart {
                return Err(RecurrenceError::rule("UNTIL is before the event starts"));
            }
            if until > dtstart + Duration::days(366 * MAX_UNTIL_YEARS) {
                return Err(RecurrenceError::rule(format!(
                    "UNTIL must be within {MAX_UNTIL_YEARS} years of the start"
                )));
            }
        }
        if exdates.len() > MAX_EXDATES {
            return Err(RecurrenceError {
                field: "recurrence.exdates",
                message: format!("at most {MAX_EXDATES} dates"),
            });
        }
        let mut exdates: Vec<DateTime<Utc>> = exdates
            .into_iter()
            .map(crate::domain::time::truncate_to_micros)
            .collect();
        exdates.sort();
        exdates.dedup();
        let recurrence = Recurrence {
            rule: normalised,
            exdates,
        };
        // Validation by the crate needs the start; its errors are the
        // rule's (BYMONTHDAY=40, an UNTIL the start's zone cannot take).
        recurrence
            .set(dtstart, zone)
            .map_err(RecurrenceError::rule)?;
        // RFC 5545 leaves a start the rule does not give undefined; calendar
        // clients disagree on it, so it is refused.
        if recurrence.instances(dtstart, zone, None, None, 1).first() != Some(&dtstart) {
            return Err(RecurrenceError::rule(format!(
                "startsAt is not an occurrence of the rule in {zone}: start on a day the rule \
                 gives (BYDAY=TU needs a Tuesday start)"
            )));
        }
        Ok(recurrence)
    }

    /// A recurrence as stored (already validated when it was accepted).
    pub fn from_stored(rule: String, exdates: Vec<DateTime<Utc>>) -> Recurrence {
        Recurrence { rule, exdates }
    }

    pub fn rule(&self) -> &str {
        &self.rule
    }

    pub fn exdates(&self) -> &[DateTime<Utc>] {
        &self.exdates
    }

    /// Whether the rule ends by itself (`COUNT` or `UNTIL`).
    pub fn is_bounded(&self) -> bool {
        self.parts().any(|(n, _)| n == "COUNT" || n == "UNTIL")
    }

    fn parts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rule.split(';').filter_map(|p| p.split_once('='))
    }

    fn count(&self) -> Option<u32> {
        self.parts()
            .find(|(n, _)| *n == "COUNT")
            .and_then(|(_, v)| v.parse().ok())
    }

    fn set(&self, dtstart: DateTime<Utc>, zone: TimeZone) -> Result<rrule::RRuleSet, String> {
        let tz = rrule::Tz::Tz(zone.tz());
        let parsed: rrule::RRule<rrule::Unvalidated> = self
            .rule
            .parse()
            .map_err(|e: rrule::RRuleError| e.to_string())?;
        let start = dtstart.with_timezone(&tz);
        // Limited: a rule that matches nothing (the 30th of February) stops
        // after the crate's bound on iterations instead of running for ever.
        let set = parsed.build(start).map_err(|e| e.to_string())?.limit();
        Ok(self
            .exdates
            .iter()
            .fold(set, |set, ex| set.exdate(ex.with_timezone(&tz))))
    }

    /// The rule's instances (their starts, UTC) after `after` (exclusive)
    /// up to `until` (inclusive), at most `max`, excluded dates left out.
    pub fn instances(
        &self,
        dtstart: DateTime<Utc>,
        zone: TimeZone,
        after: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let Ok(set) = self.set(dtstart, zone) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for at in &set {
            let at = at.with_timezone(&Utc);
            if until.is_some_and(|u| at > u) || out.len() >= max {
                break;
            }
            if after.is_some_and(|a| at <= a) {
                continue;
            }
            out.push(at);
        }
        out
    }

    /// How many instances of the rule (excluded ones too, as `COUNT`
    /// counts them) start before `before`.
    fn instances_before(
        &self,
        dtstart: DateTime<Utc>,
        zone: TimeZone,
        before: DateTime<Utc>,
    ) -> u32 {
        let bare = Recurrence {
            rule: self.rule.clone(),
            exdates: Vec::new(),
        };
        let n = bare
            .instances(
                dtstart,
                zone,
                None,
                Some(before - Duration::microseconds(1)),
                MAX_COUNT as usize + 1,
            )
            .len();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The rule cut so that its last instance starts before `before`
    /// (`COUNT` dropped, `UNTIL` set one second earlier).
    pub fn ending_before(&self, before: DateTime<Utc>) -> Recurrence {
        let mut parts: Vec<String> = self
            .parts()
            .filter(|(n, _)| *n != "COUNT" && *n != "UNTIL")
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        let until = before - Duration::seconds(1);
        parts.push(format!("UNTIL={}", until.format("%Y%m%dT%H%M%SZ")));
        Recurrence {
            rule: parts.join(";"),
            exdates: self
                .exdates
                .iter()
                .copied()
                .filter(|d| *d < before)
                .collect(),
        }
    }

    /// The rest of the rule from the instance `from` on, as a rule of its
    /// own starting there: a `COUNT` is reduced by the instances before it,
    /// and the excluded dates before it are dropped. `shift` moves the
    /// excluded dates with the occurrences.
    pub fn from_instance(
        &self,
        dtstart: DateTime<Utc>,
        zone: TimeZone,
        from: DateTime<Utc>,
        shift: impl Fn(DateTime<Utc>) -> DateTime<Utc>,
    ) -> Recurrence {
        let parts: Vec<String> = match self.count() {
            Some(count) => {
                let left = count
                    .saturating_sub(self.instances_before(dtstart, zone, from))
                    .max(1);
                self.parts()
                    .map(|(n, v)| {
                        if n == "COUNT" {
                            format!("COUNT={left}")
                        } else {
                            format!("{n}={v}")
                        }
                    })
                    .collect()
            }
            None => self.parts().map(|(n, v)| format!("{n}={v}")).collect(),
        };
        Recurrence {
            rule: parts.join(";"),
            exdates: self
                .exdates
                .iter()
                .copied()
                .filter(|d| *d >= from)
                .map(shift)
                .collect(),
        }
    }
}

/// A move of an occurrence's start, kept as wall-clock time so that
/// applying it to every occurrence of a series keeps them at the same
/// local time of day across daylight-saving changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalShift {
    zone: TimeZone,
    by: Duration,
}

impl LocalShift {
    /// The shift that moves `from` to `to`, both read in `zone`.
    pub fn between(zone: TimeZone, from: DateTime<Utc>, to: DateTime<Utc>) -> LocalShift {
        LocalShift {
            zone,
            by: zone.local(to) - zone.local(from),
        }
    }

    pub fn is_none(&self) -> bool {
        self.by.is_zero()
    }

    /// Whether the shift moves occurrences to another day.
    pub fn changes_day(&self, at: DateTime<Utc>) -> bool {
        let local = self.zone.local(at);
        local.date() != (local + self.by).date()
    }

    pub fn apply(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        if self.by.is_zero() {
            return at;
        }
        self.zone.instant(self.zone.local(at) + self.by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::parse(name).unwrap_or_default()
    }

    #[test]
    fn zones_are_iana_names_only() {
        assert_eq!(zone("Europe/Berlin").name(), "Europe/Berlin");
        assert!(TimeZone::parse("europe/berlin").is_err());
        assert!(TimeZone::parse("CEST").is_err());
        assert!(TimeZone::parse("").is_err());
        assert!(TimeZone::parse(&"A/".repeat(40)).is_err());
        assert!(TimeZone::UTC.is_utc());
        assert!(!zone("Europe/Berlin").is_utc());
    }

    #[test]
    fn a_weekly_rule_keeps_local_time_across_dst_in_berlin() {
        let berlin = zone("Europe/Berlin");
        // 18:00 CET on Tue 2026-10-20 (UTC+2 until 25 Oct, then UTC+1).
        let start = at("2026-10-20T16:00:00Z");
        let r = Recurrence::parse("FREQ=WEEKLY;BYDAY=TU;COUNT=3", vec![], start, berlin)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let got = r.instances(start, berlin, None, None, 10);
        assert_eq!(
            got,
            vec![
                at("2026-10-20T16:00:00Z"),
                at("2026-10-27T17:00:00Z"),
                at("2026-11-03T17:00:00Z")
            ]
        );
        assert!(got.iter().all(|t| berlin.local(*t).hour() == 18));
    }

    #[test]
    fn hostile_rules_are_refused_with_the_field() {
        let start = at("2026-12-01T18:00:00Z");
        for bad in [
            "FREQ=SECONDLY",
            "FREQ=HOURLY;COUNT=3",
            "FREQ=DAILY;COUNT=100000",
            "FREQ=DAILY;COUNT=0",
            "FREQ=DAILY;BYHOUR=1,2,3",
            "FREQ=WEEKLY;COUNT=2;UNTIL=20270101T000000Z",
            "FREQ=DAILY;UNTIL=20600101T000000Z",
            "FREQ=DAILY;UNTIL=20200101T000000Z",
            "FREQ=WEEKLY;BYDAY=XX",
            "FREQ=MONTHLY;BYMONTHDAY=40",
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
            "BYDAY=MO",
            "FREQ=DAILY;FREQ=WEEKLY",
            "FREQ=DAILY\nRRULE:FREQ=DAILY",
            "garbage",
            "",
            &format!("FREQ=DAILY;{}", "BYDAY=MO;".repeat(80)),
        ] {
            let e = Recurrence::parse(bad, vec![], start, TimeZone::UTC);
            assert!(
                matches!(
                    &e,
                    Err(RecurrenceError {
                        field: "recurrence.rrule",
                        ..
                    })
                ),
                "{bad:?} gave {e:?}"
            );
        }
    }

    #[test]
    fn a_rule_cut_and_continued_gives_the_same_instances() {
        let ny = zone("America/New_York");
        let start = at("2027-03-02T23:00:00Z"); // 18:00 EST, DST from 14 March
        let r = Recurrence::parse(
            "FREQ=WEEKLY;COUNT=6",
            vec![at("2027-03-16T22:00:00Z")],
            start,
            ny,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let all = r.instances(start, ny, None, None, 10);
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|t| ny.local(*t).hour() == 18));
        let k = all[2];
        let head = r.ending_before(k);
        let tail = r.from_instance(start, ny, k, |d| d);
        let mut joined = head.instances(start, ny, None, None, 10);
        joined.extend(tail.instances(k, ny, None, None, 10));
        assert_eq!(joined, all);
    }

    #[test]
    fn a_local_shift_keeps_wall_clock_time() {
        let berlin = zone("Europe/Berlin");
        let shift = LocalShift::between(
            berlin,
            at("2026-10-20T16:00:00Z"),
            at("2026-10-20T17:00:00Z"),
        );
        // 18:00 → 19:00 local, also after the change to winter time.
        assert_eq!(
            shift.apply(at("2026-10-27T17:00:00Z")),
            at("2026-10-27T18:00:00Z")
        );
        assert!(!shift.changes_day(at("2026-10-27T17:00:00Z")));
        let day = LocalShift::between(
            berlin,
            at("2026-10-20T16:00:00Z"),
            at("2026-10-21T16:00:00Z"),
        );
        assert!(day.changes_day(at("2026-10-20T16:00:00Z")));
    }
}
