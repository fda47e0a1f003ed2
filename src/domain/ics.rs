//! The iCalendar (RFC 5545) export of one event (`GET /{id}/ics`, see
//! `docs/http-api.md`).
//!
//! The document keeps the previous service's content lines, order, TEXT
//! escaping and 75-octet folding, and adds what calendar clients need to
//! notice changes (the previous service's file had none of it, so an edited
//! or cancelled event never changed in a calendar that had imported it):
//! - `SEQUENCE` is `version - 1`: RFC 5545 starts the sequence at 0 and our
//!   `version` starts at 1, and both grow by one per change, so a client that
//!   re-imports the file sees every edit and the cancel as a newer revision.
//! - `LAST-MODIFIED` (`updated_at`) and `CREATED` (`created_at`).
//! - `STATUS:CONFIRMED` or `STATUS:CANCELLED`, so a cancelled event is shown
//!   as cancelled instead of silently staying in the user's calendar.
//!
//! There is deliberately no `METHOD` line. RFC 5545 §3.7.2 says that without
//! it "a scheduling transaction MUST NOT be assumed" and the object is a
//! snapshot, which is exactly what a download is; and when `METHOD` is
//! present, the `Content-Type` must carry the same `method=` parameter, which
//! the contract's `text/calendar; charset=utf-8` does not. Leaving it out
//! also keeps the preamble byte-identical to the previous service's.
//!
//! The tenant slug is not trusted in `UID` (the previous service copied the
//! `X-Tenant-Slug` header into it as it came): it is reduced to `[a-z0-9-]`
//! (ASCII letters lower-cased, everything else dropped, and `tenant` if
//! nothing is left), so a header cannot inject content lines or make two
//! spellings of one tenant yield different UIDs for one event.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::domain::calendar::TimeZone;
use crate::domain::event::{Event, EventStatus};
use crate::domain::series::Series;

/// The `Content-Type` of the document.
pub const CONTENT_TYPE: &str = "text/calendar; charset=utf-8";

/// The longest physical line, in octets of UTF-8, CRLF excluded (RFC 5545
/// §3.1).
const MAX_LINE_OCTETS: usize = 75;

const CRLF: &str = "\r\n";

/// The slug used in `UID` when the sanitised tenant slug is empty.
const FALLBACK_SLUG: &str = "tenant";

/// The calendar document for `event`, as sent to the client: content lines
/// joined with CRLF, with a trailing CRLF, each folded to 75 octets.
///
/// `now` becomes `DTSTAMP`. `tenant_slug` is sanitised before it goes into
/// `UID` (see the module documentation).
pub fn render(event: &Event, tenant_slug: &str, now: DateTime<Utc>) -> String {
    let mut doc = Doc::default();
    preamble(&mut doc);
    vtimezone(&mut doc, event.time_zone, event.starts_at, event.ends_at);
    vevent(&mut doc, event, &sanitize_slug(tenant_slug), now);
    doc.line("END:VCALENDAR");
    doc.out
}

/// The name calendar clients show for a subscribed feed.
pub const FEED_NAME: &str = "UpdSpace Events";

/// A subscribable feed: one `VEVENT` per event, each exactly as the
/// single-event export writes it (same `UID`, `SEQUENCE`, `STATUS`), in
/// the order given. `DTSTAMP` is each event's `updated_at` (RFC 5545
/// §3.8.7.2: without `METHOD`, the time the information was last revised),
/// so the document depends on the events alone and an unchanged feed is
/// byte-identical, which is what its `ETag` relies on.
pub fn render_feed(events: &[Event], series: &[Series], tenant_slug: &str) -> String {
    let slug = sanitize_slug(tenant_slug);
    // Occurrences of a series given here are written as the series (its
    // rule and overrides); every other event as its own VEVENT.
    let of_series = |e: &Event| {
        e.series
            .and_then(|l| series.iter().find(|s| s.id == l.series_id))
    };
    let mut doc = Doc::default();
    preamble(&mut doc);
    doc.line(&format!("X-WR-CALNAME:{}", escape_text(FEED_NAME)));
    // One zone definition per zone the events use, covering all of them.
    let mut zones: Vec<(TimeZone, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut spans: Vec<(TimeZone, DateTime<Utc>, DateTime<Utc>)> = events
        .iter()
        .map(|e| (e.time_zone, e.starts_at, e.ends_at))
        .collect();
    for s in series {
        let own: Vec<Event> = events
            .iter()
            .filter(|e| e.series.is_some_and(|l| l.series_id == s.id))
            .cloned()
            .collect();
        let (from, to) = series_span(s, &own);
        spans.push((s.time_zone, from, to));
    }
    for (zone, start, end) in spans {
        match zones.iter_mut().find(|(z, _, _)| *z == zone) {
            Some((_, from, to)) => {
                *from = (*from).min(start);
                *to = (*to).max(end);
            }
            None => zones.push((zone, start, end)),
        }
    }
    for (zone, from, to) in zones {
        vtimezone(&mut doc, zone, from, to);
    }
    for event in events {
        if of_series(event).is_none() {
            vevent(&mut doc, event, &slug, event.updated_at);
        }
    }
    for s in series {
        let own: Vec<Event> = events
            .iter()
            .filter(|e| e.series.is_some_and(|l| l.series_id == s.id))
            .cloned()
            .collect();
        if !own.is_empty() {
            series_vevents(&mut doc, s, &own, &slug, s.updated_at);
        }
    }
    doc.line("END:VCALENDAR");
    doc.out
}

fn preamble(doc: &mut Doc) {
    doc.line("BEGIN:VCALENDAR");
    doc.line("VERSION:2.0");
    doc.line("PRODID:-//UpdSpace//Events//EN");
    doc.line("CALSCALE:GREGORIAN");
}

/// One event's `VEVENT`; `slug` is already sanitised.
fn vevent(doc: &mut Doc, event: &Event, slug: &str, dtstamp: DateTime<Utc>) {
    doc.line("BEGIN:VEVENT");
    doc.line(&format!("UID:{}@{}.updspace", event.id, slug));
    doc.line(&format!("DTSTAMP:{}", ics_utc(dtstamp)));
    doc.line(&zoned("DTSTART", event.time_zone, event.starts_at));
    doc.line(&zoned("DTEND", event.time_zone, event.ends_at));
    // A stored version below 1 would be a bug elsewhere; clamping keeps the
    // property valid (SEQUENCE is a non-negative integer) rather than
    // publishing a value clients reject.
    doc.line(&format!(
        "SEQUENCE:{}",
        event.version.saturating_sub(1).max(0)
    ));
    doc.line(&format!("LAST-MODIFIED:{}", ics_utc(event.updated_at)));
    doc.line(&format!("CREATED:{}", ics_utc(event.created_at)));
    doc.line(match event.status {
        EventStatus::Scheduled => "STATUS:CONFIRMED",
        EventStatus::Cancelled => "STATUS:CANCELLED",
    });
    doc.line(&format!("SUMMARY:{}", escape_text(event.title.as_str())));
    if !event.description.is_empty() {
        doc.line(&format!(
            "DESCRIPTION:{}",
            escape_text(event.description.as_str())
        ));
    }
    if !event.location_text.is_empty() {
        doc.line(&format!(
            "LOCATION:{}",
            escape_text(event.location_text.as_str())
        ));
    }
    if let Some(url) = event.location_url.as_ref().filter(|u| !u.is_empty()) {
        doc.line(&format!("URL:{}", uri_value(url.as_str())));
    }
    doc.line("END:VEVENT");
}

/// The calendar of a series: one `VEVENT` with `RRULE` (and `EXDATE` for
/// excluded instances and for instances that have no occurrence any more),
/// and one `VEVENT` with `RECURRENCE-ID` per occurrence changed or
/// cancelled on its own. `occurrences` are those the reader may see.
pub fn render_series(
    series: &Series,
    occurrences: &[Event],
    tenant_slug: &str,
    now: DateTime<Utc>,
) -> String {
    let (from, to) = series_span(series, occurrences);
    let mut doc = Doc::default();
    doc.line("BEGIN:VCALENDAR");
    doc.line("VERSION:2.0");
    doc.line("PRODID:-//UpdSpace//Events//EN");
    doc.line("CALSCALE:GREGORIAN");
    vtimezone(&mut doc, series.time_zone, from, to);
    series_vevents(
        &mut doc,
        series,
        occurrences,
        &sanitize_slug(tenant_slug),
        now,
    );
    doc.line("END:VCALENDAR");
    doc.out
}

/// What a series' calendar covers: its first instance to its last made.
fn series_span(series: &Series, occurrences: &[Event]) -> (DateTime<Utc>, DateTime<Utc>) {
    let last = occurrences
        .iter()
        .map(|o| o.ends_at)
        .max()
        .unwrap_or(series.dtstart + series.duration)
        .max(series.materialised_until);
    (series.dtstart, last)
}

/// A series' `VEVENT`s: the rule, and the overrides of `occurrences`;
/// `slug` is already sanitised.
fn series_vevents(
    doc: &mut Doc,
    series: &Series,
    occurrences: &[Event],
    slug: &str,
    now: DateTime<Utc>,
) {
    let zone = series.time_zone;
    let uid = format!("series-{}@{slug}.updspace", series.id);
    let template = &series.template;
    doc.line("BEGIN:VEVENT");
    doc.line(&format!("UID:{uid}"));
    doc.line(&format!("DTSTAMP:{}", ics_utc(now)));
    doc.line(&zoned("DTSTART", zone, series.dtstart));
    doc.line(&zoned("DTEND", zone, series.dtstart + series.duration));
    doc.line(&format!("RRULE:{}", series.recurrence.rule()));
    // Instances already made whose occurrence is gone (cut off by a split,
    // or hidden from this reader) are excluded too, so a calendar shows
    // exactly the occurrences there are.
    let made: std::collections::BTreeSet<DateTime<Utc>> = occurrences
        .iter()
        .filter_map(|o| o.series.map(|l| l.recurrence_id))
        .collect();
    let mut excluded: Vec<DateTime<Utc>> = series.recurrence.exdates().to_vec();
    excluded.extend(
        series
            .recurrence
            .instances(
                series.dtstart,
                zone,
                None,
                Some(series.materialised_until),
                usize::MAX,
            )
            .into_iter()
            .filter(|at| !made.contains(at)),
    );
    excluded.sort();
    excluded.dedup();
    if !excluded.is_empty() {
        let values: Vec<String> = excluded.iter().map(|at| zoned_value(zone, *at)).collect();
        doc.line(&format!("EXDATE{}:{}", tzid(zone), values.join(",")));
    }
    doc.line(&format!(
        "SEQUENCE:{}",
        series.version.saturating_sub(1).max(0)
    ));
    doc.line(&format!("LAST-MODIFIED:{}", ics_utc(series.updated_at)));
    doc.line(&format!("CREATED:{}", ics_utc(template.created_at)));
    doc.line(if series.cancelled {
        "STATUS:CANCELLED"
    } else {
        "STATUS:CONFIRMED"
    });
    details(doc, template);
    doc.line("END:VEVENT");

    for o in occurrences {
        let Some(link) = o.series else { continue };
        let overridden = link.exception || (o.is_cancelled() && !series.cancelled);
        if !overridden {
            continue;
        }
        doc.line("BEGIN:VEVENT");
        doc.line(&format!("UID:{uid}"));
        doc.line(&format!("DTSTAMP:{}", ics_utc(now)));
        doc.line(&zoned("RECURRENCE-ID", zone, link.recurrence_id));
        doc.line(&zoned("DTSTART", o.time_zone, o.starts_at));
        doc.line(&zoned("DTEND", o.time_zone, o.ends_at));
        doc.line(&format!("SEQUENCE:{}", o.version.saturating_sub(1).max(0)));
        doc.line(&format!("LAST-MODIFIED:{}", ics_utc(o.updated_at)));
        doc.line(match o.status {
            EventStatus::Scheduled => "STATUS:CONFIRMED",
            EventStatus::Cancelled => "STATUS:CANCELLED",
        });
        details(doc, o);
        doc.line("END:VEVENT");
    }
}

/// SUMMARY, DESCRIPTION, LOCATION and URL.
fn details(doc: &mut Doc, event: &Event) {
    doc.line(&format!("SUMMARY:{}", escape_text(event.title.as_str())));
    if !event.description.is_empty() {
        doc.line(&format!(
            "DESCRIPTION:{}",
            escape_text(event.description.as_str())
        ));
    }
    if !event.location_text.is_empty() {
        doc.line(&format!(
            "LOCATION:{}",
            escape_text(event.location_text.as_str())
        ));
    }
    if let Some(url) = event.location_url.as_ref().filter(|u| !u.is_empty()) {
        doc.line(&format!("URL:{}", uri_value(url.as_str())));
    }
}

/// `;TZID=<zone>` unless the zone is UTC.
fn tzid(zone: TimeZone) -> String {
    if zone.is_utc() {
        String::new()
    } else {
        format!(";TZID={}", zone.name())
    }
}

/// A DATE-TIME value: UTC with `Z`, or the local time in `zone`.
fn zoned_value(zone: TimeZone, at: DateTime<Utc>) -> String {
    if zone.is_utc() {
        ics_utc(at)
    } else {
        zone.local(at).format("%Y%m%dT%H%M%S").to_string()
    }
}

/// `NAME;TZID=zone:local`, or `NAME:utcZ` for UTC.
fn zoned(name: &str, zone: TimeZone, at: DateTime<Utc>) -> String {
    format!("{name}{}:{}", tzid(zone), zoned_value(zone, at))
}

/// A `VTIMEZONE` for `zone` covering `from` .. `to` (a year either side):
/// one observance per offset change in that span, found from the tz
/// database, each with its own `DTSTART` (no rules to interpret), and the
/// offset in effect before the first change. Nothing for UTC.
fn vtimezone(doc: &mut Doc, zone: TimeZone, from: DateTime<Utc>, to: DateTime<Utc>) {
    if zone.is_utc() {
        return;
    }
    let start = from - chrono::Duration::days(366);
    let end = to.max(from) + chrono::Duration::days(366);
    let mut changes = Vec::new();
    let mut day = start;
    let mut offset = zone.offset_secs(day);
    let initial = offset;
    // A change is at most once a day in every zone; look day by day, then
    // find the second by halving.
    while day < end {
        let next = day + chrono::Duration::days(1);
        let next_offset = zone.offset_secs(next);
        if next_offset != offset {
            let (mut lo, mut hi) = (day, next);
            while hi - lo > chrono::Duration::seconds(1) {
                let mid = lo + (hi - lo) / 2;
                if zone.offset_secs(mid) == offset {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            changes.push((hi, offset, next_offset));
            offset = next_offset;
        }
        day = next;
    }
    doc.line("BEGIN:VTIMEZONE");
    doc.line(&format!("TZID:{}", zone.name()));
    let observance = |doc: &mut Doc, at_local: String, from: i32, to: i32, daylight: bool| {
        let kind = if daylight { "DAYLIGHT" } else { "STANDARD" };
        doc.line(&format!("BEGIN:{kind}"));
        doc.line(&format!("DTSTART:{at_local}"));
        doc.line(&format!("TZOFFSETFROM:{}", utc_offset(from)));
        doc.line(&format!("TZOFFSETTO:{}", utc_offset(to)));
        doc.line(&format!("END:{kind}"));
    };
    observance(doc, "19700101T000000".into(), initial, initial, false);
    for (at, before, after) in changes {
        let local = (at + chrono::Duration::seconds(i64::from(before)))
            .naive_utc()
            .format("%Y%m%dT%H%M%S")
            .to_string();
        observance(doc, local, before, after, after > before);
    }
    doc.line("END:VTIMEZONE");
}

/// `+HHMM` / `-HHMM` (seconds only when there are any).
fn utc_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m, s) = (a / 3600, (a % 3600) / 60, a % 60);
    if s == 0 {
        format!("{sign}{h:02}{m:02}")
    } else {
        format!("{sign}{h:02}{m:02}{s:02}")
    }
}

/// The download name, `event-{id}.ics`.
pub fn filename(event: &Event) -> String {
    format!("event-{}.ics", event.id)
}

/// `attachment; filename="event-{id}.ics"`. The previous service sent the
/// name unquoted; quoting is always valid, and the name holds only a UUID,
/// so nothing inside needs escaping.
pub fn content_disposition(filename: &str) -> String {
    format!("attachment; filename=\"{filename}\"")
}

/// The output being built, one folded content line at a time.
#[derive(Default)]
struct Doc {
    out: String,
}

impl Doc {
    fn line(&mut self, line: &str) {
        fold_into(&mut self.out, line);
        self.out.push_str(CRLF);
    }
}

/// `%Y%m%dT%H%M%SZ` in UTC; fractions of a second are dropped, as the
/// previous service did.
fn ics_utc(dt: DateTime<Utc>) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// The slug reduced to `[a-z0-9-]`, or `tenant` if nothing is left. Only
/// ASCII letters are lower-cased: Unicode case mapping can turn a non-ASCII
/// letter into an ASCII one (KELVIN SIGN → `k`), which would let a look-alike
/// slug pass as another tenant's.
fn sanitize_slug(slug: &str) -> String {
    let clean: String = slug
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    if clean.is_empty() {
        FALLBACK_SLUG.to_owned()
    } else {
        clean
    }
}

/// Control characters that RFC 5545 forbids in a property value (CONTROL in
/// §3.1, i.e. U+0000–U+001F and U+007F, less HTAB). CR and LF are included:
/// `escape_text` turns them into `\n` before this applies.
fn is_removed_control(c: char) -> bool {
    c.is_ascii_control() && c != '\t'
}

/// A URI property value: no TEXT escaping, since backslashes would change
/// the address, but CR and LF removed (as the previous service did) because
/// they would end the content line, and the other forbidden controls with
/// them.
/// `LocationUrl` already refuses control characters; this guards rows
/// written before it did.
fn uri_value(s: &str) -> String {
    s.chars().filter(|c| !is_removed_control(*c)).collect()
}

/// RFC 5545 TEXT escaping with the previous service's rules, applied in one
/// pass.
///
/// The previous service replaced, in order: `\r\n` → LF, lone CR → LF,
/// `\` → `\\`, `;` → `\;`, `,` → `\,`, LF → `\n`. No replacement produces
/// a character a later one rewrites (the backslashes they add come after the
/// `\` step), so mapping each character once gives the same result.
///
/// Beyond the previous service, the other control characters (NUL, VT, ESC,
/// DEL …) are dropped: a raw one makes the whole document invalid, and
/// strict parsers refuse it. They are dropped after the CR/LF rules, so
/// `CR NUL LF` is still two line breaks, as it was.
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            c if is_removed_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends `line` folded as the previous service did: a character that
/// would take the physical line past 75 octets starts a new one, prefixed by
/// a space that counts toward the 75. Breaks fall only between characters,
/// never inside a multi-byte one; one may separate the two halves of an
/// escape such as `\,`, which RFC 5545 allows since unfolding comes first.
///
/// `line` must not contain CR or LF; escaped TEXT and the fixed lines don't.
fn fold_into(out: &mut String, line: &str) {
    let mut used = 0;
    for c in line.chars() {
        let width = c.len_utf8();
        if used > 0 && used + width > MAX_LINE_OCTETS {
            out.push_str("\r\n ");
            used = 1;
        }
        out.push(c);
        used += width;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{EventId, TenantId, UserId};
    use crate::domain::time::parse_datetime_str;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const TENANT: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    const USER: &str = "11111111-2222-4333-8444-555555555555";
    const EVENT: &str = "0b5e2f7c-1d2e-4f3a-9b8c-7d6e5f4a3b2c";

    fn at(s: &str) -> DateTime<Utc> {
        parse_datetime_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn user() -> UserId {
        UserId::parse(USER).unwrap_or_else(|e| panic!("{e}"))
    }

    fn body(extra: Value) -> Value {
        let mut body = json!({
            "scopeType": "COMMUNITY",
            "scopeId": "guild-1",
            "title": "Raid night",
            "startsAt": "2026-01-10T10:00:00.999Z",
            "endsAt": "2026-01-10T12:30:00Z",
        });
        if let (Some(obj), Value::Object(extra)) = (body.as_object_mut(), extra) {
            obj.extend(extra);
        }
        body
    }

    fn event(extra: Value) -> Event {
        let tenant = TenantId::parse(TENANT).unwrap_or_else(|e| panic!("{e}"));
        let id = EventId::parse(EVENT).unwrap_or_else(|e| panic!("{e}"));
        let body = body(extra);
        crate::app::requests::new_event(tenant, &body)
            .unwrap_or_else(|e| panic!("{body}: {e:?}"))
            .into_event(id, user(), at("2026-01-01T09:15:30.250Z"))
    }

    fn patched(e: &Event, patch: Value, now: &str) -> Event {
        let patch = crate::app::requests::patch(&patch).unwrap_or_else(|e| panic!("{e:?}"));
        e.apply_patch(&patch, at(now), user())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .event
    }

    fn now() -> DateTime<Utc> {
        at("2026-01-05T08:09:10.987654Z")
    }

    /// The physical lines of a document (its trailing CRLF checked).
    fn physical(doc: &str) -> Vec<&str> {
        let body = doc
            .strip_suffix(CRLF)
            .unwrap_or_else(|| panic!("no trailing CRLF: {doc:?}"));
        body.split(CRLF).collect()
    }

    /// RFC 5545 §3.1 unfolding: CRLF followed by one space disappears.
    fn unfold(s: &str) -> String {
        s.replace("\r\n ", "")
    }

    fn folded(line: &str) -> String {
        let mut out = String::new();
        fold_into(&mut out, line);
        out
    }

    /// The unfolded content line `name:…` of a document.
    fn content_line(doc: &str, name: &str) -> Option<String> {
        let prefix = format!("{name}:");
        unfold(doc)
            .split(CRLF)
            .find(|l| l.starts_with(&prefix))
            .map(str::to_owned)
    }

    /// The previous service's escaping, literally: ordered replacements.
    fn reference_escape(s: &str) -> String {
        s.replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace('\\', "\\\\")
            .replace(';', "\\;")
            .replace(',', "\\,")
            .replace('\n', "\\n")
            .chars()
            .filter(|c| !is_removed_control(*c))
            .collect()
    }

    #[test]
    fn a_feed_is_each_event_as_exported_with_its_change_as_dtstamp() {
        let a = event(json!({"title": "First"}));
        let mut b = event(json!({"title": "Second"}));
        b.id = EventId::parse("1b5e2f7c-1d2e-4f3a-9b8c-7d6e5f4a3b2c")
            .unwrap_or_else(|e| panic!("{e}"));
        b.status = EventStatus::Cancelled;
        let feed = render_feed(&[a.clone(), b.clone()], &[], "Acme!");
        assert!(feed.starts_with(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//UpdSpace//Events//EN\r\n\
             CALSCALE:GREGORIAN\r\nX-WR-CALNAME:UpdSpace Events\r\n"
        ));
        assert!(feed.ends_with("END:VEVENT\r\nEND:VCALENDAR\r\n"));
        for e in [&a, &b] {
            // The single export's VEVENT, with DTSTAMP = the last change.
            let single = render(e, "acme", e.updated_at);
            let start = single.find("BEGIN:VEVENT").unwrap_or(0);
            let end = single.find("END:VCALENDAR").unwrap_or(single.len());
            assert!(feed.contains(&single[start..end]), "{feed}");
        }
        assert_eq!(feed.matches("STATUS:CANCELLED").count(), 1);
        // Rendering depends on the events alone.
        assert_eq!(feed, render_feed(&[a, b], &[], "Acme!"));
        assert_eq!(
            render_feed(&[], &[], "x"),
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//UpdSpace//Events//EN\r\n\
             CALSCALE:GREGORIAN\r\nX-WR-CALNAME:UpdSpace Events\r\nEND:VCALENDAR\r\n"
        );
    }

    #[test]
    fn whole_document_for_a_simple_event() {
        let e = event(json!({
            "description": "Bring snacks, water; and\nfun",
            "locationText": "Hall 3",
            "locationUrl": "https://example.com/raid?a=1,2;b",
        }));
        let expected = concat!(
            "BEGIN:VCALENDAR\r\n",
            "VERSION:2.0\r\n",
            "PRODID:-//UpdSpace//Events//EN\r\n",
            "CALSCALE:GREGORIAN\r\n",
            "BEGIN:VEVENT\r\n",
            "UID:0b5e2f7c-1d2e-4f3a-9b8c-7d6e5f4a3b2c@acme.updspace\r\n",
            "DTSTAMP:20260105T080910Z\r\n",
            "DTSTART:20260110T100000Z\r\n",
            "DTEND:20260110T123000Z\r\n",
            "SEQUENCE:0\r\n",
            "LAST-MODIFIED:20260101T091530Z\r\n",
            "CREATED:20260101T091530Z\r\n",
            "STATUS:CONFIRMED\r\n",
            "SUMMARY:Raid night\r\n",
            "DESCRIPTION:Bring snacks\\, water\\; and\\nfun\r\n",
            "LOCATION:Hall 3\r\n",
            "URL:https://example.com/raid?a=1,2;b\r\n",
            "END:VEVENT\r\n",
            "END:VCALENDAR\r\n",
        );
        assert_eq!(render(&e, "acme", now()), expected);
    }

    #[test]
    fn optional_lines_are_omitted_when_empty() {
        let e = event(json!({"description": "", "locationText": null, "locationUrl": ""}));
        let expected = concat!(
            "BEGIN:VCALENDAR\r\n",
            "VERSION:2.0\r\n",
            "PRODID:-//UpdSpace//Events//EN\r\n",
            "CALSCALE:GREGORIAN\r\n",
            "BEGIN:VEVENT\r\n",
            "UID:0b5e2f7c-1d2e-4f3a-9b8c-7d6e5f4a3b2c@acme.updspace\r\n",
            "DTSTAMP:20260105T080910Z\r\n",
            "DTSTART:20260110T100000Z\r\n",
            "DTEND:20260110T123000Z\r\n",
            "SEQUENCE:0\r\n",
            "LAST-MODIFIED:20260101T091530Z\r\n",
            "CREATED:20260101T091530Z\r\n",
            "STATUS:CONFIRMED\r\n",
            "SUMMARY:Raid night\r\n",
            "END:VEVENT\r\n",
            "END:VCALENDAR\r\n",
        );
        assert_eq!(render(&e, "acme", now()), expected);
        // Whitespace is content: only the empty string means "none".
        let e = event(json!({"description": " ", "locationText": "\t"}));
        let doc = render(&e, "acme", now());
        assert!(doc.contains("\r\nDESCRIPTION: \r\n"), "{doc}");
        assert!(doc.contains("\r\nLOCATION:\t\r\n"), "{doc}");
        assert!(!doc.contains("URL:"), "{doc}");
    }

    #[test]
    fn the_originals_escape_example() {
        assert_eq!(escape_text("T, a;b\\c"), "T\\, a\\;b\\\\c");
        let e = event(json!({"title": "T, a;b\\c"}));
        let doc = render(&e, "acme", now());
        assert!(doc.contains("\r\nSUMMARY:T\\, a\\;b\\\\c\r\n"), "{doc}");
    }

    #[test]
    fn line_breaks_are_normalised_before_escaping() {
        assert_eq!(escape_text("a\r\nb\rc\nd"), "a\\nb\\nc\\nd");
        assert_eq!(escape_text("\r\r\n\n"), "\\n\\n\\n");
        assert_eq!(escape_text("x\\\ny"), "x\\\\\\ny");
        assert_eq!(escape_text("\r\n\r\n"), "\\n\\n");
        let e = event(json!({"description": "one\r\ntwo\rthree\nfour"}));
        let doc = render(&e, "acme", now());
        assert!(
            doc.contains("\r\nDESCRIPTION:one\\ntwo\\nthree\\nfour\r\n"),
            "{doc}"
        );
    }

    #[test]
    fn forbidden_control_characters_are_dropped() {
        assert_eq!(escape_text("a\u{0}b\u{b}c\u{1b}d\u{7f}e\tf"), "abcde\tf");
        // Dropped after the CR rule, so a CR still counts as a line break.
        assert_eq!(escape_text("\r\u{0}\n"), "\\n\\n");
        // C1 controls are valid UTF-8 text for RFC 5545 and are kept.
        assert_eq!(escape_text("\u{85}"), "\u{85}");
    }

    #[test]
    fn long_cyrillic_title_folds_on_character_boundaries() {
        let title = "Очень длинное название события с юникодом и переносом строк, \
                     которое не помещается в одну строку календаря";
        let e = event(json!({ "title": title }));
        let doc = render(&e, "acme", now());
        let lines = physical(&doc);
        let start = lines
            .iter()
            .position(|l| l.starts_with("SUMMARY:"))
            .unwrap_or_else(|| panic!("{doc}"));
        let summary = &lines[start..start + 4];
        assert_eq!(
            summary,
            [
                "SUMMARY:Очень длинное название события с юни",
                " кодом и переносом строк\\, которое не поме",
                " щается в одну строку календаря",
                "END:VEVENT",
            ]
        );
        assert_eq!(summary[0].len(), 75);
        assert_eq!(summary[1].len(), 75);
        assert_eq!(summary[2].len(), 57);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE_OCTETS));
        assert_eq!(
            unfold(&summary[..3].join(CRLF)),
            format!("SUMMARY:{}", escape_text(title))
        );
    }

    #[test]
    fn a_fold_may_split_an_escape_pair() {
        let line = format!("SUMMARY:{}", escape_text(&format!("{},", "a".repeat(66))));
        let out = folded(&line);
        assert_eq!(out, format!("SUMMARY:{}\\\r\n ,", "a".repeat(66)));
        assert_eq!(unfold(&out), line);
    }

    #[test]
    fn four_byte_characters_are_never_split() {
        // 74 octets used: the emoji (4) would make 78, so it moves down.
        let line = format!("SUMMARY:{}😀b", "a".repeat(66));
        let out = folded(&line);
        assert_eq!(out, format!("SUMMARY:{}\r\n 😀b", "a".repeat(66)));
        // 71 octets used: the emoji fits exactly into 75.
        let line = format!("SUMMARY:{}😀b", "a".repeat(63));
        let out = folded(&line);
        assert_eq!(out, format!("SUMMARY:{}😀\r\n b", "a".repeat(63)));
        assert_eq!(out.split(CRLF).next().map(str::len), Some(75));
        // A run of emoji: 1 + 18 × 4 = 73, a 19th would make 77.
        let line = "😀".repeat(60);
        let out = folded(&line);
        let lines: Vec<&str> = out.split(CRLF).collect();
        assert_eq!(lines[0], "😀".repeat(18));
        assert_eq!(lines[1], format!(" {}", "😀".repeat(18)));
        assert_eq!(lines[3], format!(" {}", "😀".repeat(6)));
        assert_eq!(unfold(&out), line);
    }

    #[test]
    fn exactly_75_octets_is_not_folded() {
        let line = "x".repeat(75);
        assert_eq!(folded(&line), line);
        let line = "x".repeat(76);
        assert_eq!(folded(&line), format!("{}\r\n x", "x".repeat(75)));
        assert_eq!(folded(""), "");
    }

    #[test]
    fn cancelled_events_say_so() {
        let e = event(json!({}));
        let cancelled = e.cancel(None, user(), at("2026-01-03T04:05:06.789Z")).event;
        let doc = render(&cancelled, "acme", now());
        assert!(doc.contains("\r\nSTATUS:CANCELLED\r\n"), "{doc}");
        assert!(!doc.contains("CONFIRMED"), "{doc}");
        assert!(doc.contains("\r\nSEQUENCE:1\r\n"), "{doc}");
        assert!(
            doc.contains("\r\nLAST-MODIFIED:20260103T040506Z\r\n"),
            "{doc}"
        );
        assert!(doc.contains("\r\nCREATED:20260101T091530Z\r\n"), "{doc}");
    }

    #[test]
    fn sequence_and_last_modified_follow_changes() {
        let v1 = event(json!({}));
        let v2 = patched(
            &v1,
            json!({"title": "Raid night II"}),
            "2026-01-02T10:00:00Z",
        );
        let v3 = patched(
            &v2,
            json!({"startsAt": "2026-01-10T11:00:00Z"}),
            "2026-01-03T10:00:00Z",
        );
        let seq = |e: &Event| content_line(&render(e, "acme", now()), "SEQUENCE");
        assert_eq!(seq(&v1).as_deref(), Some("SEQUENCE:0"));
        assert_eq!(seq(&v2).as_deref(), Some("SEQUENCE:1"));
        assert_eq!(seq(&v3).as_deref(), Some("SEQUENCE:2"));
        let doc = render(&v3, "acme", now());
        assert!(
            doc.contains("\r\nLAST-MODIFIED:20260103T100000Z\r\n"),
            "{doc}"
        );
        assert!(doc.contains("\r\nDTSTART:20260110T110000Z\r\n"), "{doc}");
        // A patch that changes nothing leaves the revision alone.
        let same = patched(
            &v3,
            json!({"title": "Raid night II"}),
            "2026-01-04T10:00:00Z",
        );
        assert_eq!(render(&same, "acme", now()), doc);
    }

    #[test]
    fn sequence_is_never_negative() {
        let mut e = event(json!({}));
        e.version = 0;
        assert_eq!(
            content_line(&render(&e, "acme", now()), "SEQUENCE").as_deref(),
            Some("SEQUENCE:0")
        );
        e.version = i64::MIN;
        assert_eq!(
            content_line(&render(&e, "acme", now()), "SEQUENCE").as_deref(),
            Some("SEQUENCE:0")
        );
    }

    #[test]
    fn the_slug_is_sanitised_in_the_uid() {
        assert_eq!(sanitize_slug("acme"), "acme");
        assert_eq!(sanitize_slug("Acme-Corp_2"), "acme-corp2");
        assert_eq!(sanitize_slug("acme\r\nX-EVIL:1"), "acmex-evil1");
        assert_eq!(sanitize_slug("a.b c@d"), "abcd");
        assert_eq!(sanitize_slug("\u{212a}elvin"), "elvin");
        assert_eq!(sanitize_slug(""), "tenant");
        assert_eq!(sanitize_slug("Привет!"), "tenant");
        let e = event(json!({}));
        let doc = render(&e, "Evil\r\nEND:VCALENDAR", now());
        assert!(
            doc.contains(
                "\r\nUID:0b5e2f7c-1d2e-4f3a-9b8c-7d6e5f4a3b2c@evilendvcalendar.updspace\r\n"
            ),
            "{doc}"
        );
        assert_eq!(doc.matches("END:VCALENDAR").count(), 1, "{doc}");
    }

    #[test]
    fn a_long_slug_is_folded_like_any_line() {
        let e = event(json!({}));
        let doc = render(&e, &"s".repeat(100), now());
        assert!(physical(&doc).iter().all(|l| l.len() <= MAX_LINE_OCTETS));
        let uid = format!("UID:{EVENT}@{}.updspace", "s".repeat(100));
        assert_eq!(content_line(&doc, "UID"), Some(uid));
    }

    #[test]
    fn url_keeps_its_text_but_loses_line_breaks() {
        let mut e = event(json!({"locationUrl": "https://example.com/a\\b"}));
        let doc = render(&e, "acme", now());
        assert!(
            doc.contains("\r\nURL:https://example.com/a\\b\r\n"),
            "{doc}"
        );
        assert_eq!(
            uri_value("https://example.com/\r\na\rb\nc\u{0}d\te,f;g"),
            "https://example.com/abcd\te,f;g"
        );
        e.location_url = None;
        assert!(!render(&e, "acme", now()).contains("URL"));
        let long = format!("https://example.com/{}", "p".repeat(200));
        let e = event(json!({ "locationUrl": long }));
        let doc = render(&e, "acme", now());
        assert!(physical(&doc).iter().all(|l| l.len() <= MAX_LINE_OCTETS));
        assert_eq!(content_line(&doc, "URL"), Some(format!("URL:{long}")));
    }

    #[test]
    fn file_names() {
        let e = event(json!({}));
        assert_eq!(filename(&e), format!("event-{EVENT}.ics"));
        assert_eq!(
            content_disposition(&filename(&e)),
            format!("attachment; filename=\"event-{EVENT}.ics\"")
        );
        assert_eq!(CONTENT_TYPE, "text/calendar; charset=utf-8");
    }

    fn check_folding(logical: &str, out: &str) -> Result<(), TestCaseError> {
        for line in out.as_bytes().split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            prop_assert!(line.len() <= MAX_LINE_OCTETS, "{} octets", line.len());
            prop_assert!(std::str::from_utf8(line).is_ok());
        }
        prop_assert_eq!(unfold(out), logical);
        Ok(())
    }

    proptest! {
        #[test]
        fn folding_is_bounded_and_reversible(
            s in any::<String>().prop_map(|s| s.replace(['\r', '\n'], "")),
        ) {
            check_folding(&s, &folded(&s))?;
            let summary = format!("SUMMARY:{s}");
            check_folding(&summary, &folded(&summary))?;
        }

        #[test]
        fn escaping_matches_the_originals_ordered_replacements(s in any::<String>()) {
            let escaped = escape_text(&s);
            prop_assert_eq!(&escaped, &reference_escape(&s));
            prop_assert!(!escaped.contains(['\r', '\n']));
        }

        #[test]
        fn any_title_renders_to_bounded_reversible_lines(
            // Valid titles only: not blank, no NUL (Title::parse rejects the rest).
            title in "[^\\x00\\s][^\\x00]{0,254}",
        ) {
            prop_assert!(crate::domain::values::Title::parse(&title).is_ok());
            let e = event(json!({ "title": title }));
            let doc = render(&e, "acme", now());
            let logical = format!("SUMMARY:{}", escape_text(&title));
            prop_assert!(doc.ends_with(CRLF));
            for line in physical(&doc) {
                prop_assert!(line.len() <= MAX_LINE_OCTETS, "{} octets: {:?}", line.len(), line);
            }
            prop_assert_eq!(content_line(&doc, "SUMMARY"), Some(logical.clone()));
            let unfolded = unfold(&doc);
            prop_assert_eq!(unfolded.matches(CRLF).count(), 16);
            let summary_start = doc.find("\r\nSUMMARY:").map(|i| i + 2);
            let summary_end = doc.find("\r\nEND:VEVENT");
            let (Some(a), Some(b)) = (summary_start, summary_end) else {
                return Err(TestCaseError::fail("no SUMMARY"));
            };
            check_folding(&logical, &doc[a..b])?;
        }
    }
}
