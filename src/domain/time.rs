//! Datetime parsing and formatting.
//!
//! Input is as lenient as the previous service's pydantic "lax" mode,
//! because the BFF and the SPA already send all of these spellings; output
//! is one canonical form, UTC with `Z`. The previous service echoed times
//! back as they were sent (any offset, or none), so one instant had many
//! spellings; that defect we do not keep.
//!
//! Accepted:
//! - RFC 3339 / ISO 8601 with an offset (`Z`, `z`, `+03:00`, `+0300`, `+03`),
//!   normalised to UTC;
//! - naive `2026-01-10T10:00:00[.fff…]`, `2026-01-10 10:00[:00]` (separator
//!   `T`, `t`, space or `_`), read as UTC;
//! - a date `2026-01-10`, read as midnight UTC;
//! - Unix seconds or milliseconds as a JSON number or a numeric string; as in
//!   pydantic, an absolute value above 2e10 means milliseconds.
//!
//! Values are truncated to microseconds (what Python and Postgres keep), and
//! years outside 1..=9999 are refused.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};

const SYNTAX: &str = "must be an ISO 8601 datetime or a Unix timestamp";
const OUT_OF_RANGE: &str = "datetime is out of range (years 1 to 9999)";
const WRONG_TYPE: &str = "must be a datetime string or a Unix timestamp";

/// Above this absolute value a Unix timestamp is read as milliseconds
/// (pydantic's rule).
const MILLIS_THRESHOLD: i64 = 20_000_000_000;

/// A datetime as a request body sends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DatetimeInput<'a> {
    Text(&'a str),
    /// A Unix timestamp sent as an integer.
    Integer(i64),
    /// A Unix timestamp sent as any other number.
    Number(Option<f64>),
    /// Anything else (a boolean, an object, …).
    WrongType,
}

/// Parses a datetime given in a request body.
pub fn parse_datetime(input: DatetimeInput<'_>) -> Result<DateTime<Utc>, String> {
    match input {
        DatetimeInput::Text(s) => parse_text(s),
        DatetimeInput::Integer(i) => from_unix_int(i),
        DatetimeInput::Number(Some(f)) => from_unix_float(f),
        DatetimeInput::Number(None) => Err(OUT_OF_RANGE.to_owned()),
        DatetimeInput::WrongType => Err(WRONG_TYPE.to_owned()),
    }
}

/// Parses a datetime given as text (a query parameter such as `from`).
///
/// Beyond what `parse_datetime` accepts, this forgives a `+` of the offset
/// that reached us as a space because the caller did not percent-encode it
/// (`?from=2026-01-10T10:00:00+03:00`), which the previous service refused
/// with 400.
pub fn parse_datetime_str(s: &str) -> Result<DateTime<Utc>, String> {
    match parse_text(s) {
        Ok(dt) => Ok(dt),
        Err(first) => match s.trim().rsplit_once(' ') {
            Some((head, tail)) if looks_like_offset(tail) && head.contains([':']) => {
                parse_text(&format!("{head}+{tail}")).map_err(|_| first)
            }
            _ => Err(first),
        },
    }
}

/// RFC 3339 in UTC with `Z`; milliseconds only when non-zero, sub-millisecond
/// digits truncated: `2026-01-10T10:00:00Z`, `2026-01-10T11:00:00.123Z`.
pub fn format_utc(dt: &DateTime<Utc>) -> String {
    let mut out = String::with_capacity(24);
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", UtcDisplay(dt));
    out
}

/// [`format_utc`] into a stack buffer: the hot path of every view, where
/// `fmt` machinery costs more than the digits.
pub fn utc_str<'b>(dt: &DateTime<Utc>, buf: &'b mut [u8; 28]) -> &'b str {
    fn put(buf: &mut [u8], at: usize, width: usize, mut v: u32) {
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let year = dt.year();
    if !(0..=9999).contains(&year) {
        // Out of the four-digit range the general formatter is right.
        let text = format_utc_slow(dt);
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        return std::str::from_utf8(&buf[..n]).unwrap_or("");
    }
    put(buf, 0, 4, year as u32);
    buf[4] = b'-';
    put(buf, 5, 2, dt.month());
    buf[7] = b'-';
    put(buf, 8, 2, dt.day());
    buf[10] = b'T';
    put(buf, 11, 2, dt.hour());
    buf[13] = b':';
    put(buf, 14, 2, dt.minute());
    buf[16] = b':';
    put(buf, 17, 2, dt.second());
    let millis = (dt.nanosecond() % 1_000_000_000) / 1_000_000;
    let mut n = 19;
    if millis != 0 {
        buf[19] = b'.';
        put(buf, 20, 3, millis);
        n = 23;
    }
    buf[n] = b'Z';
    std::str::from_utf8(&buf[..=n]).unwrap_or("")
}

fn format_utc_slow(dt: &DateTime<Utc>) -> String {
    UtcDisplay(dt).to_string()
}

/// [`format_utc`] as a `Display`, for writers that need no `String`.
pub struct UtcDisplay<'a>(pub &'a DateTime<Utc>);

impl std::fmt::Display for UtcDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dt = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )?;
        // A leap second is stored as nanoseconds past 1e9.
        let millis = (dt.nanosecond() % 1_000_000_000) / 1_000_000;
        if millis != 0 {
            write!(f, ".{millis:03}")?;
        }
        f.write_str("Z")
    }
}

/// Drops sub-microsecond precision, so a value survives a round trip through
/// Postgres unchanged and "did it change" comparisons are honest.
pub fn truncate_to_micros(dt: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = dt.nanosecond();
    dt.with_nanosecond(nanos - nanos % 1_000).unwrap_or(dt)
}

/// `#[serde(with = "crate::domain::time::serde_utc")]` for views: writes
/// `format_utc`, reads anything `parse_datetime_str` accepts.
pub mod serde_utc {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(dt: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_utc(dt))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        super::parse_datetime_str(&s).map_err(serde::de::Error::custom)
    }
}

/// Like `serde_utc`, for `Option<DateTime<Utc>>` (null when `None`).
pub mod serde_utc_option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        dt: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match dt {
            Some(dt) => serializer.serialize_some(&super::format_utc(dt)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.map(|s| super::parse_datetime_str(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn looks_like_offset(tail: &str) -> bool {
    let b = tail.as_bytes();
    let d = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    match b.len() {
        2 => d(0) && d(1),
        4 => (0..4).all(d),
        5 => d(0) && d(1) && b[2] == b':' && d(3) && d(4),
        _ => false,
    }
}

fn parse_text(raw: &str) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    if is_numeric(s) {
        return if s.contains('.') {
            s.parse::<f64>()
                .map_err(|_| SYNTAX.to_owned())
                .and_then(from_unix_float)
        } else {
            // Too many digits for i64 is far outside years 1..=9999 anyway.
            s.parse::<i64>()
                .map_err(|_| OUT_OF_RANGE.to_owned())
                .and_then(from_unix_int)
        };
    }
    parse_iso(s).map_err(|e| e.message().to_owned())
}

fn is_numeric(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| f.bytes().all(|b| b.is_ascii_digit()))
}

fn from_unix_int(n: i64) -> Result<DateTime<Utc>, String> {
    let (secs, nanos) = if n.unsigned_abs() > MILLIS_THRESHOLD.unsigned_abs() {
        (n.div_euclid(1000), n.rem_euclid(1000) * 1_000_000)
    } else {
        (n, 0)
    };
    let nanos = u32::try_from(nanos).map_err(|_| OUT_OF_RANGE.to_owned())?;
    DateTime::from_timestamp(secs, nanos)
        .ok_or_else(|| OUT_OF_RANGE.to_owned())
        .and_then(check_year)
}

fn from_unix_float(x: f64) -> Result<DateTime<Utc>, String> {
    if !x.is_finite() {
        return Err(SYNTAX.to_owned());
    }
    let secs = if x.abs() > MILLIS_THRESHOLD as f64 {
        x / 1000.0
    } else {
        x
    };
    // Year 9999 ends near 2.5e11 s; this bound keeps the casts below exact.
    if secs.abs() > 1e12 {
        return Err(OUT_OF_RANGE.to_owned());
    }
    let whole = secs.floor();
    let mut micros = ((secs - whole) * 1e6).round() as i64;
    let mut whole = whole as i64;
    if micros >= 1_000_000 {
        whole += 1;
        micros -= 1_000_000;
    }
    let nanos = u32::try_from(micros * 1_000).map_err(|_| OUT_OF_RANGE.to_owned())?;
    DateTime::from_timestamp(whole, nanos)
        .ok_or_else(|| OUT_OF_RANGE.to_owned())
        .and_then(check_year)
}

fn check_year(dt: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if (1..=9999).contains(&dt.year()) {
        Ok(dt)
    } else {
        Err(OUT_OF_RANGE.to_owned())
    }
}

enum IsoError {
    Syntax,
    InvalidDate,
    OutOfRange,
}

impl IsoError {
    fn message(&self) -> &'static str {
        match self {
            IsoError::Syntax => SYNTAX,
            IsoError::InvalidDate => "must be a valid calendar date and time",
            IsoError::OutOfRange => OUT_OF_RANGE,
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn digits(&mut self, n: usize) -> Result<u32, IsoError> {
        let end = self.pos + n;
        let slice = self.bytes.get(self.pos..end).ok_or(IsoError::Syntax)?;
        let mut value = 0u32;
        for &b in slice {
            if !b.is_ascii_digit() {
                return Err(IsoError::Syntax);
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos = end;
        Ok(value)
    }
}

fn parse_iso(s: &str) -> Result<DateTime<Utc>, IsoError> {
    let mut c = Cursor {
        bytes: s.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)?;
    if !c.eat(b'-') {
        return Err(IsoError::Syntax);
    }
    let month = c.digits(2)?;
    if !c.eat(b'-') {
        return Err(IsoError::Syntax);
    }
    let day = c.digits(2)?;
    if year == 0 {
        return Err(IsoError::OutOfRange);
    }
    let year = i32::try_from(year).map_err(|_| IsoError::Syntax)?;
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or(IsoError::InvalidDate)?;
    if c.done() {
        return date
            .and_hms_opt(0, 0, 0)
            .map(|naive| Utc.from_utc_datetime(&naive))
            .ok_or(IsoError::InvalidDate);
    }

    match c.peek() {
        Some(b'T' | b't' | b' ' | b'_') => c.pos += 1,
        _ => return Err(IsoError::Syntax),
    }
    let hour = c.digits(2)?;
    if !c.eat(b':') {
        return Err(IsoError::Syntax);
    }
    let minute = c.digits(2)?;
    let mut second = 0;
    let mut nanos = 0;
    if c.eat(b':') {
        second = c.digits(2)?;
        if c.eat(b'.') || c.eat(b',') {
            let start = c.pos;
            let mut scale = 100_000_000u32;
            while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
                nanos += u32::from(b - b'0') * scale;
                scale /= 10;
                c.pos += 1;
            }
            if c.pos == start {
                return Err(IsoError::Syntax);
            }
        }
    }
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos - nanos % 1_000)
        .filter(|_| second < 60)
        .ok_or(IsoError::InvalidDate)?;

    let offset_secs = match c.peek() {
        None => 0,
        Some(b'Z' | b'z') => {
            c.pos += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            c.pos += 1;
            let hours = c.digits(2)?;
            let minutes = if c.done() {
                0
            } else {
                c.eat(b':');
                c.digits(2)?
            };
            if hours > 23 || minutes > 59 {
                return Err(IsoError::InvalidDate);
            }
            let secs = i32::try_from(hours * 3600 + minutes * 60).map_err(|_| IsoError::Syntax)?;
            if sign == b'-' { -secs } else { secs }
        }
        Some(_) => return Err(IsoError::Syntax),
    };
    if !c.done() {
        return Err(IsoError::Syntax);
    }
    let offset = FixedOffset::east_opt(offset_secs).ok_or(IsoError::InvalidDate)?;
    let local = date.and_time(time);
    let dt = offset
        .from_local_datetime(&local)
        .single()
        .ok_or(IsoError::OutOfRange)?
        .with_timezone(&Utc);
    check_year(dt).map_err(|_| IsoError::OutOfRange)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stack_formatter_matches_the_general_one() {
        use chrono::TimeZone;
        let cases = [
            Utc.with_ymd_and_hms(2026, 1, 10, 10, 0, 0).single(),
            Utc.timestamp_opt(1_767_000_000, 5_000_000).single(),
            Utc.timestamp_opt(1_767_000_000, 999_999_999).single(),
            Utc.timestamp_opt(0, 1_000_000).single(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).single(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).single(),
        ];
        for dt in cases.into_iter().flatten() {
            let mut buf = [0u8; 28];
            assert_eq!(super::utc_str(&dt, &mut buf), super::format_utc(&dt));
        }
    }

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// What the request layer hands over for a JSON value.
    fn input(v: &serde_json::Value) -> DatetimeInput<'_> {
        match v {
            serde_json::Value::String(s) => DatetimeInput::Text(s),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => DatetimeInput::Integer(i),
                None => DatetimeInput::Number(n.as_f64()),
            },
            _ => DatetimeInput::WrongType,
        }
    }

    fn parse_value(v: &serde_json::Value) -> Result<DateTime<Utc>, String> {
        parse_datetime(input(v))
    }

    fn utc(s: &str) -> DateTime<Utc> {
        match DateTime::parse_from_rfc3339(s) {
            Ok(dt) => dt.with_timezone(&Utc),
            Err(e) => panic!("bad fixture {s}: {e}"),
        }
    }

    fn ok(v: serde_json::Value) -> String {
        match parse_value(&v) {
            Ok(dt) => format_utc(&dt),
            Err(e) => panic!("{v} did not parse: {e}"),
        }
    }

    #[test]
    fn rfc3339_with_offsets_becomes_utc() {
        assert_eq!(ok(json!("2026-01-10T10:00:00Z")), "2026-01-10T10:00:00Z");
        assert_eq!(ok(json!("2026-01-10T10:00:00z")), "2026-01-10T10:00:00Z");
        assert_eq!(
            ok(json!("2026-01-10T13:00:00+03:00")),
            "2026-01-10T10:00:00Z"
        );
        assert_eq!(
            ok(json!("2026-01-10T13:00:00+0300")),
            "2026-01-10T10:00:00Z"
        );
        assert_eq!(ok(json!("2026-01-10T13:00:00+03")), "2026-01-10T10:00:00Z");
        assert_eq!(
            ok(json!("2026-01-10T01:30:00-09:30")),
            "2026-01-10T11:00:00Z"
        );
        assert_eq!(
            ok(json!("2026-01-01T01:00:00+02:00")),
            "2025-12-31T23:00:00Z"
        );
        assert_eq!(
            ok(json!("2026-01-10T10:00:00+00:00")),
            "2026-01-10T10:00:00Z"
        );
    }

    #[test]
    fn naive_and_space_separated_are_utc() {
        assert_eq!(ok(json!("2026-01-10T10:00:00")), "2026-01-10T10:00:00Z");
        assert_eq!(
            ok(json!("2026-01-10T10:00:00.5")),
            "2026-01-10T10:00:00.500Z"
        );
        assert_eq!(
            ok(json!("2026-01-10T10:00:00.123456")),
            "2026-01-10T10:00:00.123Z"
        );
        assert_eq!(ok(json!("2026-01-10 10:00")), "2026-01-10T10:00:00Z");
        assert_eq!(ok(json!("2026-01-10 10:00:07")), "2026-01-10T10:00:07Z");
        assert_eq!(ok(json!("2026-01-10T10:00")), "2026-01-10T10:00:00Z");
        assert_eq!(ok(json!(" 2026-01-10T10:00:00Z ")), "2026-01-10T10:00:00Z");
    }

    #[test]
    fn date_is_midnight_utc() {
        assert_eq!(ok(json!("2026-01-10")), "2026-01-10T00:00:00Z");
        assert_eq!(ok(json!("2024-02-29")), "2024-02-29T00:00:00Z");
    }

    #[test]
    fn unix_seconds_and_millis() {
        assert_eq!(ok(json!(1768039200)), "2026-01-10T10:00:00Z");
        assert_eq!(ok(json!(1768039200123i64)), "2026-01-10T10:00:00.123Z");
        assert_eq!(ok(json!("1768039200")), "2026-01-10T10:00:00Z");
        assert_eq!(ok(json!("1768039200123")), "2026-01-10T10:00:00.123Z");
        assert_eq!(ok(json!(1768039200.5)), "2026-01-10T10:00:00.500Z");
        assert_eq!(ok(json!("1768039200.25")), "2026-01-10T10:00:00.250Z");
        assert_eq!(ok(json!(0)), "1970-01-01T00:00:00Z");
        assert_eq!(ok(json!(-86400)), "1969-12-31T00:00:00Z");
        // The threshold itself is still seconds, one more is milliseconds.
        assert_eq!(ok(json!(20_000_000_000i64)), "2603-10-11T11:33:20Z");
        assert_eq!(ok(json!(20_000_000_001i64)), "1970-08-20T11:33:20.001Z");
        assert_eq!(ok(json!(-20_000_000_001i64)), "1969-05-14T12:26:39.999Z");
        assert_eq!(ok(json!(2.5e10)), "1970-10-17T08:26:40Z");
    }

    #[test]
    fn sub_microsecond_digits_are_dropped() {
        let parsed = parse_datetime_str("2026-01-10T10:00:00.123456789Z");
        assert_eq!(parsed.map(|d| d.nanosecond()), Ok(123_456_000));
    }

    #[test]
    fn rejects_garbage_and_impossible_dates() {
        for bad in [
            json!(""),
            json!("abc"),
            json!("2026-02-30"),
            json!("2026-13-01"),
            json!("2026-01-10T24:00:00"),
            json!("2026-01-10T10:60:00"),
            json!("2026-01-10T10:00:60"),
            json!("2026-01-10T10:00:00+3"),
            json!("2026-01-10T10:00:00+24:00"),
            json!("2026-01-10T10:00:00.Z"),
            json!("2026-01-10T10:00:00Zjunk"),
            json!("2026-1-10"),
            json!("26-01-10"),
            json!("2026/01/10"),
            json!("2026-01-10X10:00"),
        ] {
            assert!(parse_value(&bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn rejects_wrong_types() {
        for bad in [json!(null), json!(true), json!({}), json!([1])] {
            assert_eq!(parse_value(&bad), Err(WRONG_TYPE.to_owned()));
        }
    }

    #[test]
    fn keeps_years_one_to_9999() {
        assert_eq!(ok(json!("0001-01-01T00:00:00Z")), "0001-01-01T00:00:00Z");
        assert_eq!(ok(json!("9999-12-31T23:59:59Z")), "9999-12-31T23:59:59Z");
        for bad in [
            json!("0000-06-01"),
            json!("9999-12-31T23:59:59-01:00"),
            json!("0001-01-01T00:00:00+01:00"),
            json!("10000-01-01"),
            json!(1e300),
            json!(i64::MAX),
            json!(u64::MAX),
            json!("99999999999999999999999"),
        ] {
            assert!(parse_value(&bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(
            parse_value(&json!("0000-06-01")),
            Err(OUT_OF_RANGE.to_owned())
        );
    }

    #[test]
    fn query_forgives_an_unencoded_plus() {
        assert_eq!(
            parse_datetime_str("2026-01-10T13:00:00 03:00"),
            Ok(utc("2026-01-10T10:00:00Z"))
        );
        assert_eq!(
            parse_datetime_str("2026-01-10 13:00 0300"),
            Ok(utc("2026-01-10T10:00:00Z"))
        );
        assert!(parse_datetime_str("2026-01-10T13:00:00%2B03:00").is_err());
        assert!(parse_datetime_str("2026-01-10 03:00").is_ok());
        assert!(parse_datetime_str("2026-01-10 03").is_err());
        // Bodies keep pydantic's behaviour.
        assert!(parse_value(&json!("2026-01-10T13:00:00 03:00")).is_err());
    }

    #[test]
    fn formats_without_zero_millis() {
        assert_eq!(
            format_utc(&utc("2026-01-10T10:00:00Z")),
            "2026-01-10T10:00:00Z"
        );
        assert_eq!(
            format_utc(&utc("2026-01-10T11:00:00.123Z")),
            "2026-01-10T11:00:00.123Z"
        );
        assert_eq!(
            format_utc(&utc("2026-01-10T11:00:00.000999Z")),
            "2026-01-10T11:00:00Z"
        );
        assert_eq!(
            format_utc(&utc("2026-01-10T11:00:00.0109Z")),
            "2026-01-10T11:00:00.010Z"
        );
        assert_eq!(
            format_utc(&utc("0042-03-04T05:06:07Z")),
            "0042-03-04T05:06:07Z"
        );
    }

    #[test]
    fn truncates_to_micros() {
        let dt = utc("2026-01-10T11:00:00.123456789Z");
        assert_eq!(truncate_to_micros(dt).nanosecond(), 123_456_000);
    }

    #[test]
    fn serde_helpers() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct View {
            #[serde(with = "serde_utc")]
            at: DateTime<Utc>,
            #[serde(with = "serde_utc_option")]
            maybe: Option<DateTime<Utc>>,
        }
        let view = View {
            at: utc("2026-01-10T11:00:00.123Z"),
            maybe: None,
        };
        let v = serde_json::to_value(&view).ok();
        assert_eq!(
            v,
            Some(json!({"at": "2026-01-10T11:00:00.123Z", "maybe": null}))
        );
        let back: Option<View> = serde_json::from_value(
            json!({"at": "2026-01-10T14:00:00.123+03:00", "maybe": "2026-01-10"}),
        )
        .ok();
        assert_eq!(
            back.map(|b| (b.at, b.maybe)),
            Some((view.at, Some(utc("2026-01-10T00:00:00Z"))))
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips_at_millis(
            ms in -62_135_596_800_000i64..=253_402_300_799_999i64
        ) {
            let dt = DateTime::from_timestamp_millis(ms);
            prop_assert!(dt.is_some());
            let dt = dt.unwrap_or_default();
            let text = format_utc(&dt);
            prop_assert_eq!(parse_datetime_str(&text), Ok(dt));
            prop_assert_eq!(parse_value(&serde_json::Value::String(text)), Ok(dt));
        }

        #[test]
        fn offsets_normalise_to_the_same_instant(
            secs in 0i64..4_000_000_000i64,
            offset_min in -1439i32..=1439i32,
        ) {
            let dt = DateTime::from_timestamp(secs, 0).unwrap_or_default();
            let Some(offset) = FixedOffset::east_opt(offset_min * 60) else {
                return Err(TestCaseError::fail("offset out of range"));
            };
            let text = dt.with_timezone(&offset).to_rfc3339();
            prop_assert_eq!(parse_datetime_str(&text), Ok(dt));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_datetime_str(&s);
        }
    }
}
