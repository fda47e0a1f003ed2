//! Reading an iCalendar (RFC 5545) document for `event.import`.
//!
//! The document is parsed by the `icalendar` crate (its `parser` feature:
//! unfolding, content lines, parameters, TEXT unescaping, the component
//! tree). What this module adds is what the crate leaves to its user:
//! - a check of the component structure on the physical lines first, which
//!   gives every error its line number in the document as sent, bounds the
//!   nesting (the crate's parser recurses once per level) and counts the
//!   `VEVENT`s before anything is parsed;
//! - the meaning of the values: times with `TZID` (IANA names, the Windows
//!   names Outlook writes, or a `VTIMEZONE` of one fixed offset),
//!   `DURATION`, all-day dates, and the limits of our fields.
//!
//! Nothing here does I/O: [`read`] turns text into [`Item`]s, each an event
//! to import or a VEVENT skipped with its reason.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::domain::values::{Description, LocationText, LocationUrl, Title};

/// The largest document accepted, in bytes.
pub const MAX_BYTES: usize = 1024 * 1024;
/// The most `VEVENT`s one document may hold.
pub const MAX_EVENTS: usize = 5_000;
/// The deepest nesting of components (VCALENDAR > VTIMEZONE > STANDARD is 3).
const MAX_DEPTH: usize = 8;
/// The longest `UID` (and `RECURRENCE-ID`) kept as a key.
const MAX_UID_CHARS: usize = 1_000;

/// The one place that says what becomes of a recurring VEVENT (`RRULE` or
/// `RDATE`, and the `RECURRENCE-ID` overrides of such a series).
/// RDATE lists are not a rule a series can take.
pub const RDATE_SKIPPED: &str =
    "RDATE (a list of extra dates) is not supported: only RRULE series are imported";
/// A change of one occurrence of an imported series (`RECURRENCE-ID`).
pub const OVERRIDE_SKIPPED: &str = "changes of single occurrences (RECURRENCE-ID) are not imported: change the occurrence in the service";

/// Why a document is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Over [`MAX_BYTES`] or [`MAX_EVENTS`] (413).
    TooLarge(String),
    /// Not a calendar the parser reads (422), with the line (from 1) where
    /// the problem is.
    Malformed { line: usize, message: String },
}

/// The values of one VEVENT as they will be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub title: Title,
    pub description: Description,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub location_text: LocationText,
    pub location_url: Option<LocationUrl>,
    /// `STATUS:CANCELLED`.
    pub cancelled: bool,
    /// The IANA zone of `DTSTART`'s `TZID`; `UTC` for UTC, floating and
    /// fixed-offset times.
    pub time_zone: crate::domain::TimeZone,
    /// A recurring VEVENT's `RRULE` and `EXDATE`s, as written.
    pub recurrence: Option<ImportedRule>,
}

/// The recurrence of an imported VEVENT, checked when the series is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRule {
    pub rrule: String,
    pub exdates: Vec<DateTime<Utc>>,
}

impl Imported {
    /// SHA-256 of every imported value (and `extra`, the import's own
    /// settings): equal prints mean an unchanged VEVENT.
    pub fn fingerprint(&self, extra: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            self.title.as_str(),
            self.description.as_str(),
            &self.starts_at.to_rfc3339(),
            &self.ends_at.to_rfc3339(),
            self.location_text.as_str(),
            self.location_url.as_ref().map_or("", |u| u.as_str()),
            self.time_zone.name(),
            self.recurrence.as_ref().map_or("", |r| r.rrule.as_str()),
            &self
                .recurrence
                .as_ref()
                .map(|r| {
                    r.exdates
                        .iter()
                        .map(|d| d.to_rfc3339())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            if self.cancelled { "cancelled" } else { "" },
            extra,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.finalize().into()
    }
}

/// One VEVENT of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `UID`; empty when it has none (then it is skipped).
    pub uid: String,
    /// `RECURRENCE-ID` as a UTC instant (`YYYYMMDDTHHMMSSZ`), or as written
    /// when it is not a time; empty when there is none.
    pub recurrence_id: String,
    /// The line of its `BEGIN:VEVENT`.
    pub line: usize,
    pub outcome: Result<Imported, String>,
}

/// Reads the document (see the module documentation).
pub fn read(text: &str) -> Result<Vec<Item>, Refused> {
    if text.len() > MAX_BYTES {
        return Err(Refused::TooLarge(format!(
            "The calendar is larger than {MAX_BYTES} bytes"
        )));
    }
    let structure = scan(text)?;
    let unfolded = icalendar::parser::unfold(&structure.normalized);
    let components = icalendar::parser::read_calendar_simple(&unfolded).map_err(|e| {
        let offset = unfolded.len().saturating_sub(e.input.len());
        let logical = unfolded[..offset.min(unfolded.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count();
        Refused::Malformed {
            line: structure
                .logical_lines
                .get(logical)
                .copied()
                .unwrap_or(structure.last_line),
            message: "the calendar could not be parsed here".into(),
        }
    })?;
    let Some(calendar) = components
        .iter()
        .find(|c| c.name.as_str().eq_ignore_ascii_case("VCALENDAR"))
    else {
        return Err(Refused::Malformed {
            line: 1,
            message: "no VCALENDAR".into(),
        });
    };
    let zones = time_zones(calendar, chrono::Datelike::year(&Utc::now()));
    let events: Vec<&icalendar::parser::Component<'_>> = calendar
        .components
        .iter()
        .filter(|c| c.name.as_str().eq_ignore_ascii_case("VEVENT"))
        .collect();
    let recurring: std::collections::HashSet<String> = events
        .iter()
        .filter(|e| prop(e, "RRULE").is_some() || prop(e, "RDATE").is_some())
        .filter_map(|e| prop(e, "UID").map(|p| p.val.as_str().trim().to_string()))
        .collect();
    // The parser keeps values as slices of the unfolded text where it can:
    // their offset gives their line.
    let starts: Vec<usize> = std::iter::once(0)
        .chain(unfolded.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let base = unfolded.as_ptr() as usize;
    let line_of = |value: &str| -> Option<usize> {
        let at = (value.as_ptr() as usize).checked_sub(base)?;
        if at > unfolded.len() {
            return None;
        }
        let logical = starts.partition_point(|s| *s <= at).saturating_sub(1);
        structure.logical_lines.get(logical).copied()
    };
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let line = structure.vevent_lines.get(i).copied().unwrap_or(0);
            item(event, line, &zones, &recurring, &line_of)
        })
        .collect()
}

/// What the scan of the physical lines found.
struct Structure {
    /// The document with blank lines dropped and every line ended by CRLF.
    normalized: String,
    /// For each unfolded line of `normalized`, its line in the document.
    logical_lines: Vec<usize>,
    /// The `BEGIN:VEVENT` lines directly inside the VCALENDAR, in order.
    vevent_lines: Vec<usize>,
    last_line: usize,
}

/// Checks the component structure line by line: the document starts with
/// `BEGIN:VCALENDAR`, every `BEGIN` has its `END`, nesting stays shallow,
/// no control character but tab, and at most [`MAX_EVENTS`] VEVENTs.
fn scan(text: &str) -> Result<Structure, Refused> {
    let malformed = |line: usize, message: String| Refused::Malformed { line, message };
    let mut normalized = String::with_capacity(text.len() + text.len() / 32);
    let mut logical_lines = Vec::new();
    let mut vevent_lines = Vec::new();
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut vevents = 0usize;
    let mut last_line = 1;
    let mut seen_calendar = false;
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        last_line = n;
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(malformed(
                n,
                format!("control character U+{:04X} in the line", c as u32),
            ));
        }
        let continuation = line.starts_with([' ', '\t']);
        // Component names are case-insensitive (RFC 5545 §2); the parser
        // reads them upper-case.
        let mut structural = None;
        if continuation {
            if logical_lines.is_empty() {
                return Err(malformed(n, "a folded line continues nothing".into()));
            }
        } else {
            logical_lines.push(n);
            let upper = line.trim_end().to_ascii_uppercase();
            if upper.starts_with("BEGIN:") || upper.starts_with("END:") {
                structural = Some(upper.clone());
            }
            if !seen_calendar && upper != "BEGIN:VCALENDAR" {
                return Err(malformed(
                    n,
                    "the calendar must start with BEGIN:VCALENDAR".into(),
                ));
            }
            if let Some(name) = upper.strip_prefix("BEGIN:") {
                if stack.is_empty() && seen_calendar {
                    return Err(malformed(n, "content after END:VCALENDAR".into()));
                }
                seen_calendar = true;
                if name == "VEVENT" {
                    vevents += 1;
                    if vevents > MAX_EVENTS {
                        return Err(Refused::TooLarge(format!(
                            "The calendar has more than {MAX_EVENTS} VEVENTs"
                        )));
                    }
                    if stack.len() == 1 {
                        vevent_lines.push(n);
                    }
                }
                stack.push((name.to_string(), n));
                if stack.len() > MAX_DEPTH {
                    return Err(malformed(n, "components are nested too deeply".into()));
                }
            } else if let Some(name) = upper.strip_prefix("END:") {
                match stack.pop() {
                    Some((open, _)) if open == name => {}
                    Some((open, at)) => {
                        return Err(malformed(
                            n,
                            format!("END:{name} where BEGIN:{open} of line {at} is open"),
                        ));
                    }
                    None => return Err(malformed(n, format!("END:{name} without BEGIN"))),
                }
            } else if stack.is_empty() {
                return Err(malformed(n, "content outside VCALENDAR".into()));
            }
        }
        normalized.push_str(structural.as_deref().unwrap_or(line));
        normalized.push_str("\r\n");
    }
    if let Some((open, at)) = stack.last() {
        return Err(malformed(*at, format!("BEGIN:{open} is never ended")));
    }
    if !seen_calendar {
        return Err(malformed(1, "the calendar is empty".into()));
    }
    Ok(Structure {
        normalized,
        logical_lines,
        vevent_lines,
        last_line,
    })
}

type Component<'a> = icalendar::parser::Component<'a>;
type Property<'a> = icalendar::parser::Property<'a>;

fn prop<'c>(c: &'c Component<'_>, name: &str) -> Option<&'c Property<'c>> {
    c.properties
        .iter()
        .find(|p| p.name.as_str().eq_ignore_ascii_case(name))
}

fn param<'p>(p: &'p Property<'_>, name: &str) -> Option<&'p str> {
    p.params
        .iter()
        .find(|q| q.key.as_str().eq_ignore_ascii_case(name))
        .and_then(|q| q.val.as_ref())
        .map(|v| v.as_str().trim_matches('"'))
}

/// A zone a `TZID` can name.
#[derive(Debug, Clone, Copy)]
enum Zone {
    Iana(chrono_tz::Tz),
    Fixed(FixedOffset),
}

impl Zone {
    fn instant(self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        // A time in a DST gap does not exist: read it an hour later, as
        // calendar clients do; an ambiguous one is its first occurrence.
        let first = |r: chrono::LocalResult<DateTime<Utc>>| r.earliest();
        match self {
            Zone::Iana(tz) => first(
                tz.from_local_datetime(&local)
                    .map(|d| d.with_timezone(&Utc)),
            )
            .or_else(|| {
                first(
                    tz.from_local_datetime(&(local + Duration::hours(1)))
                        .map(|d| d.with_timezone(&Utc)),
                )
            }),
            Zone::Fixed(off) => first(
                off.from_local_datetime(&local)
                    .map(|d| d.with_timezone(&Utc)),
            ),
        }
    }
}

/// The VTIMEZONEs of the document that name a zone we can use, by TZID.
fn time_zones(calendar: &Component<'_>, year: i32) -> HashMap<String, Zone> {
    let mut zones = HashMap::new();
    for tz in calendar
        .components
        .iter()
        .filter(|c| c.name.as_str().eq_ignore_ascii_case("VTIMEZONE"))
    {
        let Some(id) = prop(tz, "TZID").map(|p| p.val.as_str().trim().to_string()) else {
            continue;
        };
        if let Some(zone) = zone_by_name(&id) {
            zones.insert(id, zone);
            continue;
        }
        // A zone of one offset all year (a single STANDARD, no DAYLIGHT)
        // is exactly that offset, whatever it is called.
        let parts: Vec<&Component<'_>> = tz.components.iter().collect();
        let daylight = parts
            .iter()
            .any(|p| p.name.as_str().eq_ignore_ascii_case("DAYLIGHT"));
        let standard: Vec<&&Component<'_>> = parts
            .iter()
            .filter(|p| p.name.as_str().eq_ignore_ascii_case("STANDARD"))
            .collect();
        if !daylight
            && standard.len() == 1
            && let Some(off) = prop(standard[0], "TZOFFSETTO").and_then(|p| offset(p.val.as_str()))
        {
            zones.insert(id, Zone::Fixed(off));
            continue;
        }
        // With daylight saving time: the IANA zone whose offsets and
        // switch months are the VTIMEZONE's (this year's rules).
        let summer = parts
            .iter()
            .find(|p| p.name.as_str().eq_ignore_ascii_case("DAYLIGHT"));
        if let (Some(summer), [winter]) = (summer, standard.as_slice())
            && let Some(zone) = matching_zone(winter, summer, year)
        {
            zones.insert(id, Zone::Iana(zone));
        }
    }
    zones
}

/// The month a STANDARD or DAYLIGHT part starts in: its `RRULE`'s
/// `BYMONTH`, else its `DTSTART`'s month.
fn switch_month(part: &Component<'_>) -> Option<u32> {
    let by_month = prop(part, "RRULE").and_then(|r| {
        r.val.as_str().split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.eq_ignore_ascii_case("BYMONTH")
                .then(|| v.trim().parse::<u32>().ok())
                .flatten()
        })
    });
    by_month
        .or_else(|| {
            prop(part, "DTSTART").and_then(|d| d.val.as_str().get(4..6)?.parse::<u32>().ok())
        })
        .filter(|m| (1..=12).contains(m))
}

/// The first IANA zone (in the database's order) that, in `year`, is at
/// the winter offset before the summer month and at the summer offset
/// after it, and back at the winter offset after the winter month.
fn matching_zone(
    winter: &Component<'_>,
    summer: &Component<'_>,
    year: i32,
) -> Option<chrono_tz::Tz> {
    use chrono::Offset;
    let winter_off = offset(prop(winter, "TZOFFSETTO")?.val.as_str())?.local_minus_utc();
    let summer_off = offset(prop(summer, "TZOFFSETTO")?.val.as_str())?.local_minus_utc();
    let (to_summer, to_winter) = (switch_month(summer)?, switch_month(winter)?);
    if winter_off == summer_off {
        return None;
    }
    // Midnight UTC on the first of a month (month 13 is next January).
    let first = |month: u32| {
        let (y, m) = if month > 12 {
            (year + 1, month - 12)
        } else {
            (year, month)
        };
        NaiveDate::from_ymd_opt(y, m, 1).map(|d| d.and_time(chrono::NaiveTime::MIN))
    };
    let checks = [
        (first(to_summer)?, winter_off),
        (first(to_summer + 1)?, summer_off),
        (first(to_winter)?, summer_off),
        (first(to_winter + 1)?, winter_off),
    ];
    chrono_tz::TZ_VARIANTS.iter().copied().find(|tz| {
        !tz.name().starts_with("Etc/")
            && checks
                .iter()
                .all(|(at, want)| tz.offset_from_utc_datetime(at).fix().local_minus_utc() == *want)
    })
}

/// An IANA name (also behind a `/mozilla.org/…/` style prefix) or a
/// Windows zone name.
fn zone_by_name(id: &str) -> Option<Zone> {
    let id = id.trim().trim_matches('"');
    if let Ok(tz) = chrono_tz::Tz::from_str(id) {
        return Some(Zone::Iana(tz));
    }
    // `/citadel.org/20070227_1/Europe/Berlin` and the like.
    let parts: Vec<&str> = id.split('/').collect();
    for start in 0..parts.len() {
        if let Ok(tz) = chrono_tz::Tz::from_str(&parts[start..].join("/")) {
            return Some(Zone::Iana(tz));
        }
    }
    WINDOWS_ZONES
        .iter()
        .find(|(windows, _)| windows.eq_ignore_ascii_case(id))
        .and_then(|(_, iana)| chrono_tz::Tz::from_str(iana).ok())
        .map(Zone::Iana)
}

/// Windows zone names (as Outlook and Exchange write them in `TZID`) and
/// the IANA zone of their main region (CLDR's `windowsZones`, territory
/// `001`). The common ones; a name missing here is still read when its
/// VTIMEZONE has a single offset.
const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("Dateline Standard Time", "Etc/GMT+12"),
    ("UTC-11", "Etc/GMT+11"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("Pacific Standard Time (Mexico)", "America/Tijuana"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Mountain Standard Time", "America/Denver"),
    ("Central America Standard Time", "America/Guatemala"),
    ("Central Standard Time", "America/Chicago"),
    ("Central Standard Time (Mexico)", "America/Mexico_City"),
    ("Canada Central Standard Time", "America/Regina"),
    ("SA Pacific Standard Time", "America/Bogota"),
    ("Eastern Standard Time", "America/New_York"),
    ("US Eastern Standard Time", "America/Indianapolis"),
    ("Venezuela Standard Time", "America/Caracas"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("SA Western Standard Time", "America/La_Paz"),
    ("Pacific SA Standard Time", "America/Santiago"),
    ("Newfoundland Standard Time", "America/St_Johns"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("Argentina Standard Time", "America/Buenos_Aires"),
    ("Greenland Standard Time", "America/Godthab"),
    ("UTC-02", "Etc/GMT+2"),
    ("Azores Standard Time", "Atlantic/Azores"),
    ("Cape Verde Standard Time", "Atlantic/Cape_Verde"),
    ("UTC", "Etc/UTC"),
    ("Coordinated Universal Time", "Etc/UTC"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("W. Central Africa Standard Time", "Africa/Lagos"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("Egypt Standard Time", "Africa/Cairo"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Arab Standard Time", "Asia/Riyadh"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("E. Africa Standard Time", "Africa/Nairobi"),
    ("Iran Standard Time", "Asia/Tehran"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("Afghanistan Standard Time", "Asia/Kabul"),
    ("Pakistan Standard Time", "Asia/Karachi"),
    ("India Standard Time", "Asia/Calcutta"),
    ("Nepal Standard Time", "Asia/Katmandu"),
    ("Bangladesh Standard Time", "Asia/Dhaka"),
    ("SE Asia Standard Time", "Asia/Bangkok"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("Taipei Standard Time", "Asia/Taipei"),
    ("W. Australia Standard Time", "Australia/Perth"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("Cen. Australia Standard Time", "Australia/Adelaide"),
    ("AUS Central Standard Time", "Australia/Darwin"),
    ("E. Australia Standard Time", "Australia/Brisbane"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("West Pacific Standard Time", "Pacific/Port_Moresby"),
    ("Tasmania Standard Time", "Australia/Hobart"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
    ("Tonga Standard Time", "Pacific/Tongatapu"),
];

/// `+HHMM`, `-HHMM` or `+HHMMSS`.
fn offset(s: &str) -> Option<FixedOffset> {
    let s = s.trim();
    let (sign, digits) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if !(digits.len() == 4 || digits.len() == 6) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[0..2].parse().ok()?;
    let m: i32 = digits[2..4].parse().ok()?;
    let sec: i32 = if digits.len() == 6 {
        digits[4..6].parse().ok()?
    } else {
        0
    };
    FixedOffset::east_opt(sign * (h * 3600 + m * 60 + sec))
}

/// A `DTSTART`, `DTEND` or `RECURRENCE-ID` value.
#[derive(Debug, Clone, Copy)]
enum When {
    /// An all-day date.
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

impl When {
    fn instant(self) -> DateTime<Utc> {
        match self {
            // All-day events start at midnight UTC: the date carries no
            // zone, and our events are instants.
            When::Date(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
            When::Instant(i) => i,
        }
    }
}

/// What is wrong with a VEVENT: a value that is not what its type must be
/// (the whole calendar is refused, at that line), or a VEVENT we cannot
/// import (skipped with the reason).
#[derive(Debug)]
enum Issue {
    Malformed(String),
    Skip(String),
}

impl From<String> for Issue {
    fn from(s: String) -> Self {
        Issue::Skip(s)
    }
}

impl From<&str> for Issue {
    fn from(s: &str) -> Self {
        Issue::Skip(s.to_string())
    }
}

fn when(p: &Property<'_>, zones: &HashMap<String, Zone>) -> Result<When, Issue> {
    let name = p.name.as_str().to_ascii_uppercase();
    let value = p.val.as_str().trim();
    let is_date = param(p, "VALUE").is_some_and(|v| v.eq_ignore_ascii_case("DATE"))
        || (value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit()));
    if is_date {
        return NaiveDate::parse_from_str(value, "%Y%m%d")
            .map(When::Date)
            .map_err(|_| Issue::Malformed(format!("{name} {value:?} is not a valid date")));
    }
    let (local, utc) = match value.strip_suffix(['Z', 'z']) {
        Some(v) => (v, true),
        None => (value, false),
    };
    let naive = NaiveDateTime::parse_from_str(local, "%Y%m%dT%H%M%S")
        .map_err(|_| Issue::Malformed(format!("{name} {value:?} is not a valid date-time")))?;
    if utc {
        return Ok(When::Instant(naive.and_utc()));
    }
    match param(p, "TZID") {
        // A floating time (no zone) is read as UTC.
        None => Ok(When::Instant(naive.and_utc())),
        Some(id) => {
            let zone = zones
                .get(id)
                .copied()
                .or_else(|| zone_by_name(id))
                .ok_or_else(|| Issue::Skip(format!("unknown time zone {id:?} in {name}")))?;
            zone.instant(naive)
                .map(When::Instant)
                .ok_or_else(|| Issue::Skip(format!("{name} {value:?} does not exist in {id}")))
        }
    }
}

/// An RFC 5545 `DURATION` (`P1W`, `P1DT2H30M`, `PT45M`, signed).
fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let rest = rest.strip_prefix(['P', 'p'])?;
    let mut total = Duration::zero();
    let mut number = String::new();
    let mut in_time = false;
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            '0'..='9' => number.push(c),
            'T' if number.is_empty() => in_time = true,
            unit => {
                let n: i64 = number.parse().ok()?;
                number.clear();
                any = true;
                total += match (unit, in_time) {
                    ('W', false) => Duration::try_weeks(n)?,
                    ('D', false) => Duration::try_days(n)?,
                    ('H', true) => Duration::try_hours(n)?,
                    ('M', true) => Duration::try_minutes(n)?,
                    ('S', true) => Duration::try_seconds(n)?,
                    _ => return None,
                };
            }
        }
    }
    if !number.is_empty() || !any {
        return None;
    }
    Some(if neg { -total } else { total })
}

/// Cuts `s` to at most `max` characters.
fn at_most(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn item(
    event: &Component<'_>,
    line: usize,
    zones: &HashMap<String, Zone>,
    recurring: &std::collections::HashSet<String>,
    line_of: &dyn Fn(&str) -> Option<usize>,
) -> Result<Item, Refused> {
    let uid = prop(event, "UID")
        .map(|p| p.val.as_str().trim().to_string())
        .unwrap_or_default();
    let recurrence = prop(event, "RECURRENCE-ID");
    let recurrence_id = match recurrence {
        Some(p) => match when(p, zones) {
            Ok(w) => w.instant().format("%Y%m%dT%H%M%SZ").to_string(),
            Err(_) => p.val.as_str().trim().to_string(),
        },
        None => String::new(),
    };
    let outcome = if uid.is_empty() {
        Err("the VEVENT has no UID".to_string())
    } else if uid.chars().count() > MAX_UID_CHARS || recurrence_id.chars().count() > MAX_UID_CHARS {
        Err(format!("UID longer than {MAX_UID_CHARS} characters"))
    } else if prop(event, "RDATE").is_some() {
        Err(RDATE_SKIPPED.to_string())
    } else if recurrence.is_some() && recurring.contains(&uid) {
        Err(OVERRIDE_SKIPPED.to_string())
    } else {
        match imported(event, zones, line_of) {
            Ok(imported) => Ok(imported),
            Err(Ok(reason)) => Err(reason),
            Err(Err((message, at))) => {
                return Err(Refused::Malformed {
                    line: at.unwrap_or(line),
                    message,
                });
            }
        }
    };
    Ok(Item {
        uid,
        recurrence_id,
        line,
        outcome,
    })
}

/// A malformed value, at the line of its property when the parser kept it
/// as a slice of the document.
type Located = (String, Option<usize>);

fn imported(
    event: &Component<'_>,
    zones: &HashMap<String, Zone>,
    line_of: &dyn Fn(&str) -> Option<usize>,
) -> Result<Imported, Result<String, Located>> {
    let at = |p: &Property<'_>, issue: Issue| match issue {
        Issue::Skip(reason) => Ok(reason),
        Issue::Malformed(message) => Err((message, line_of(p.val.as_str()))),
    };
    let start = prop(event, "DTSTART").ok_or(Ok("the VEVENT has no DTSTART".to_string()))?;
    let start = when(start, zones).map_err(|i| at(start, i))?;
    let end = match (prop(event, "DTEND"), prop(event, "DURATION")) {
        (Some(end), _) => when(end, zones).map_err(|i| at(end, i))?.instant(),
        (None, Some(d)) => {
            let d = duration(d.val.as_str()).ok_or_else(|| {
                at(
                    d,
                    Issue::Malformed(format!("DURATION {:?} is not a duration", d.val.as_str())),
                )
            })?;
            start
                .instant()
                .checked_add_signed(d)
                .ok_or(Ok("DURATION is out of range".to_string()))?
        }
        // RFC 5545 §3.6.1: an all-day event without an end lasts the day.
        (None, None) => match start {
            When::Date(_) => start.instant() + Duration::days(1),
            When::Instant(_) => {
                return Err(Ok("the VEVENT has neither DTEND nor DURATION".into()));
            }
        },
    };
    let starts_at = start.instant();
    if starts_at >= end {
        return Err(Ok("the VEVENT must start before it ends".into()));
    }
    let text = |name: &str| {
        prop(event, name)
            .map(|p| p.val.as_str().to_string())
            .unwrap_or_default()
    };
    let summary = text("SUMMARY");
    let summary = summary.trim();
    let title = if summary.is_empty() {
        "Untitled event"
    } else {
        at_most(summary, Title::MAX_CHARS)
    };
    let title = Title::parse(title).map_err(|e| Ok(e.into_message()))?;
    let description = Description::parse(at_most(&text("DESCRIPTION"), Description::MAX_CHARS))
        .map_err(|e| Ok(e.into_message()))?;
    let location_text =
        LocationText::parse(at_most(text("LOCATION").trim(), LocationText::MAX_CHARS))
            .map_err(|e| Ok(e.into_message()))?;
    let location_url = prop(event, "URL").and_then(|p| LocationUrl::parse(p.val.as_str()).ok());
    let cancelled = prop(event, "STATUS")
        .is_some_and(|p| p.val.as_str().trim().eq_ignore_ascii_case("CANCELLED"));
    let start_prop = prop(event, "DTSTART");
    let zone = start_prop
        .and_then(|p| param(p, "TZID"))
        .and_then(|id| zones.get(id).copied().or_else(|| zone_by_name(id)));
    let time_zone = match zone {
        Some(Zone::Iana(tz)) => {
            crate::domain::TimeZone::parse(tz.name()).unwrap_or(crate::domain::TimeZone::UTC)
        }
        _ => crate::domain::TimeZone::UTC,
    };
    let recurrence = match prop(event, "RRULE") {
        None => None,
        Some(rule) => {
            if matches!(zone, Some(Zone::Fixed(_))) {
                return Err(Ok(
                    "a recurring event needs a named time zone (TZID of the tz database), not a fixed offset"
                        .into(),
                ));
            }
            let mut exdates = Vec::new();
            for ex in event
                .properties
                .iter()
                .filter(|p| p.name.as_str().eq_ignore_ascii_case("EXDATE"))
            {
                for value in ex.val.as_str().split(',') {
                    let one = Property {
                        name: ex.name.clone(),
                        params: ex.params.clone(),
                        val: value.trim().into(),
                    };
                    exdates.push(when(&one, zones).map_err(|i| at(ex, i))?.instant());
                }
            }
            Some(ImportedRule {
                rrule: rule.val.as_str().trim().to_string(),
                exdates,
            })
        }
    };
    Ok(Imported {
        title,
        description,
        starts_at: crate::domain::truncate_to_micros(starts_at),
        ends_at: crate::domain::truncate_to_micros(end),
        location_text,
        location_url,
        cancelled,
        time_zone,
        recurrence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(body: &str) -> String {
        format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n{body}END:VCALENDAR\r\n")
    }

    fn one(body: &str) -> Item {
        let items = read(&doc(body)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(items.len(), 1, "{items:?}");
        items
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("one item"))
    }

    #[test]
    fn reads_a_plain_event_with_escapes_and_folding() {
        let it = one(
            "BEGIN:VEVENT\r\nUID:a@x\r\nDTSTART:20300110T180000Z\r\nDTEND:20300110T210000Z\r\n\
             SUMMARY:Raid\\, night\\; bring snacks\r\nLOCATION:Hall\r\n  A\r\nEND:VEVENT\r\n",
        );
        assert_eq!(it.uid, "a@x");
        assert_eq!(it.line, 4);
        let ev = it.outcome.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.title.as_str(), "Raid, night; bring snacks");
        assert_eq!(ev.location_text.as_str(), "Hall A");
        assert_eq!(ev.starts_at.to_rfc3339(), "2030-01-10T18:00:00+00:00");
    }

    #[test]
    fn tzid_windows_names_and_durations() {
        let it = one(
            "BEGIN:VEVENT\r\nUID:b\r\nDTSTART;TZID=W. Europe Standard Time:20300710T180000\r\n\
             DURATION:PT1H30M\r\nSUMMARY:x\r\nEND:VEVENT\r\n",
        );
        let ev = it.outcome.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.starts_at.to_rfc3339(), "2030-07-10T16:00:00+00:00");
        assert_eq!(ev.ends_at.to_rfc3339(), "2030-07-10T17:30:00+00:00");
        let it = one(
            "BEGIN:VEVENT\r\nUID:c\r\nDTSTART;TZID=\"America/New_York\":20300110T180000\r\n\
             DTEND;TZID=America/New_York:20300110T190000\r\nSUMMARY:x\r\nEND:VEVENT\r\n",
        );
        let ev = it.outcome.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.starts_at.to_rfc3339(), "2030-01-10T23:00:00+00:00");
    }

    #[test]
    fn a_vtimezone_of_one_offset_is_that_offset() {
        let it = one(
            "BEGIN:VTIMEZONE\r\nTZID:Custom Zone\r\nBEGIN:STANDARD\r\nDTSTART:16010101T000000\r\n\
             TZOFFSETFROM:+0530\r\nTZOFFSETTO:+0530\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n\
             BEGIN:VEVENT\r\nUID:d\r\nDTSTART;TZID=Custom Zone:20300110T120000\r\n\
             DTEND;TZID=Custom Zone:20300110T130000\r\nEND:VEVENT\r\n",
        );
        let ev = it.outcome.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.starts_at.to_rfc3339(), "2030-01-10T06:30:00+00:00");
        assert_eq!(ev.title.as_str(), "Untitled event");
    }

    #[test]
    fn an_unknown_zone_with_dst_is_matched_by_its_offsets_and_months() {
        let it = one("BEGIN:VTIMEZONE\r\nTZID:Mitteleuropa (custom)\r\n\
             BEGIN:STANDARD\r\nDTSTART:16011028T030000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n\
             TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n\
             BEGIN:DAYLIGHT\r\nDTSTART:16010325T020000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n\
             TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n\
             BEGIN:VEVENT\r\nUID:m\r\nDTSTART;TZID=Mitteleuropa (custom):20300710T180000\r\n\
             DTEND;TZID=Mitteleuropa (custom):20300110T190000\r\nEND:VEVENT\r\n");
        // Summer: +02:00; the end is in winter (+01:00) and before the start.
        assert_eq!(
            it.outcome,
            Err("the VEVENT must start before it ends".into())
        );
        let it = one("BEGIN:VTIMEZONE\r\nTZID:Mitteleuropa (custom)\r\n\
             BEGIN:STANDARD\r\nDTSTART:16011028T030000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n\
             TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n\
             BEGIN:DAYLIGHT\r\nDTSTART:16010325T020000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n\
             TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n\
             BEGIN:VEVENT\r\nUID:m\r\nDTSTART;TZID=Mitteleuropa (custom):20300710T180000\r\n\
             DTEND;TZID=Mitteleuropa (custom):20301210T190000\r\nEND:VEVENT\r\n");
        let ev = it.outcome.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.starts_at.to_rfc3339(), "2030-07-10T16:00:00+00:00");
        assert_eq!(ev.ends_at.to_rfc3339(), "2030-12-10T18:00:00+00:00");
    }

    #[test]
    fn recurring_and_broken_events_are_skipped_with_reasons() {
        let items = read(&doc(
            "BEGIN:VEVENT\r\nUID:r\r\nDTSTART:20300110T180000Z\r\nDTEND:20300110T190000Z\r\n\
             RRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\n\
             BEGIN:VEVENT\r\nUID:r\r\nRECURRENCE-ID:20300117T180000Z\r\n\
             DTSTART:20300117T190000Z\r\nDTEND:20300117T200000Z\r\nEND:VEVENT\r\n\
             BEGIN:VEVENT\r\nUID:bad\r\nDTSTART:20300110T180000Z\r\nDTEND:20300110T170000Z\r\nEND:VEVENT\r\n\
             BEGIN:VEVENT\r\nDTSTART:20300110T180000Z\r\nEND:VEVENT\r\n",
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        let reasons: Vec<String> = items
            .iter()
            .map(|i| i.outcome.clone().err().unwrap_or_default())
            .collect();
        // The rule is read (the series is made when imported); a change of
        // one of its occurrences is skipped.
        assert_eq!(reasons[0], "");
        assert_eq!(
            items[0]
                .outcome
                .as_ref()
                .ok()
                .and_then(|i| i.recurrence.as_ref())
                .map(|r| r.rrule.as_str()),
            Some("FREQ=WEEKLY")
        );
        assert_eq!(reasons[1], OVERRIDE_SKIPPED);
        assert_eq!(items[1].recurrence_id, "20300117T180000Z");
        assert_eq!(reasons[2], "the VEVENT must start before it ends");
        assert_eq!(reasons[3], "the VEVENT has no UID");
        assert_eq!(
            items.iter().map(|i| i.line).collect::<Vec<_>>(),
            vec![4, 10, 16, 21]
        );
    }

    #[test]
    fn malformed_documents_name_the_line() {
        let refused = |text: &str| match read(text) {
            Err(Refused::Malformed { line, .. }) => line,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n"), 2);
        assert_eq!(refused("hello"), 1);
        assert_eq!(
            refused("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"),
            3
        );
        assert_eq!(
            refused("BEGIN:VCALENDAR\r\nSUMMARY:a\u{1}b\r\nEND:VCALENDAR\r\n"),
            2
        );
        let deep = format!("BEGIN:VCALENDAR\r\n{}", "BEGIN:X\r\n".repeat(100_000));
        assert!(matches!(
            read(&deep),
            Err(Refused::Malformed { .. }) | Err(Refused::TooLarge(_))
        ));
        assert_eq!(
            refused("BEGIN:VCALENDAR\r\nBROKEN LINE\r\nEND:VCALENDAR\r\n"),
            2
        );
    }

    #[test]
    fn component_names_are_case_insensitive() {
        let items = read(
            "begin:vcalendar\r\nVERSION:2.0\r\nBegin:VEvent\r\nUID:x\r\n\
             DTSTART:20300110T180000Z\r\nDTEND:20300110T190000Z\r\nend:vevent\r\nEND:vcalendar\r\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(items.len(), 1);
        assert!(items[0].outcome.is_ok(), "{items:?}");
    }

    #[test]
    fn too_many_events_is_too_large() {
        let many = doc(&"BEGIN:VEVENT\r\nEND:VEVENT\r\n".repeat(MAX_EVENTS + 1));
        assert!(matches!(read(&many), Err(Refused::TooLarge(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(duration("PT1H30M"), Some(Duration::minutes(90)));
        assert_eq!(duration("P1W"), Some(Duration::weeks(1)));
        assert_eq!(duration("P1DT1S"), Some(Duration::seconds(86_401)));
        assert_eq!(duration("-PT5M"), Some(Duration::minutes(-5)));
        assert_eq!(duration("P"), None);
        assert_eq!(duration("PT5"), None);
        assert_eq!(duration("P5H"), None);
    }
}
