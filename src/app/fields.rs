//! Reading the fields of a request body, the one way every operation does.
//!
//! The rule, for every operation and both transports:
//! - a key may be sent in camelCase or in snake_case; when both are sent,
//!   the camelCase one is read (whatever its value);
//! - what `null` means is the field's own rule: for most fields it means
//!   "not sent"; in an update it clears an optional field, and it is an
//!   error for a field that cannot be empty (`docs/nats-api.md` lists them);
//! - unknown keys are ignored;
//! - every field error of a body is reported at once (422, one entry per
//!   field under `details.fields`, keyed by the camelCase name).
//!
//! Bodies are JSON values here (msgpack is decoded to the same values);
//! what comes out are the domain's validated types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::domain::{Capacity, DatetimeInput, DomainError, FieldError, truncate_to_micros};

pub const REQUIRED: &str = "field required";
pub const CANNOT_BE_NULL: &str = "cannot be null";
pub const MUST_BE_STRING: &str = "must be a string";
pub const NOT_AN_OBJECT: &str = "request body must be a JSON object";

/// A field's two spellings.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub camel: &'static str,
    pub snake: &'static str,
}

impl Key {
    pub const fn new(camel: &'static str, snake: &'static str) -> Self {
        Self { camel, snake }
    }

    /// A field whose name is one word (the same in both spellings).
    pub const fn word(name: &'static str) -> Self {
        Self {
            camel: name,
            snake: name,
        }
    }
}

/// How a key appears in a body.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    Absent,
    Null,
    Value(&'a Value),
}

impl<'a> Raw<'a> {
    /// The value, with `null` counting as not sent.
    pub fn sent(self) -> Option<&'a Value> {
        match self {
            Raw::Value(v) => Some(v),
            Raw::Absent | Raw::Null => None,
        }
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// Field lookups over one request object, collecting every error.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: BTreeMap<String, String>,
}

impl<'a> Fields<'a> {
    /// The body as an object; no body (`null`) reads as an empty object.
    pub fn new(body: &'a Value) -> Result<Self, DomainError> {
        match body {
            Value::Object(obj) => Ok(Self {
                obj,
                errors: BTreeMap::new(),
            }),
            Value::Null => Ok(Self {
                obj: &EMPTY,
                errors: BTreeMap::new(),
            }),
            _ => Err(DomainError::InvalidBody(NOT_AN_OBJECT.to_owned())),
        }
    }

    pub fn raw(&self, key: Key) -> Raw<'a> {
        match self.obj.get(key.camel).or_else(|| self.obj.get(key.snake)) {
            None => Raw::Absent,
            Some(Value::Null) => Raw::Null,
            Some(value) => Raw::Value(value),
        }
    }

    /// The value, with `null` counting as not sent.
    pub fn sent(&self, key: Key) -> Option<&'a Value> {
        self.raw(key).sent()
    }

    pub fn present(&self, key: Key) -> bool {
        self.obj.contains_key(key.camel) || self.obj.contains_key(key.snake)
    }

    /// Records an error for `key` (the first one per field is kept).
    pub fn fail<T>(&mut self, key: Key, message: impl Into<String>) -> Option<T> {
        self.errors
            .entry(key.camel.to_owned())
            .or_insert_with(|| message.into());
        None
    }

    pub fn has_error(&self, key: Key) -> bool {
        self.errors.contains_key(key.camel)
    }

    /// Applies `parse` to a string value, recording a wrong type or a
    /// refused value.
    pub fn string<T>(
        &mut self,
        key: Key,
        value: &Value,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Option<T> {
        match value {
            Value::String(s) => match parse(s) {
                Ok(v) => Some(v),
                Err(e) => self.fail(key, e.into_message()),
            },
            _ => self.fail(key, MUST_BE_STRING),
        }
    }

    /// A string field that must be sent and cannot be null.
    pub fn required_string<T>(
        &mut self,
        key: Key,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Option<T> {
        match self.raw(key) {
            Raw::Absent => self.fail(key, REQUIRED),
            Raw::Null => self.fail(key, CANNOT_BE_NULL),
            Raw::Value(v) => self.string(key, v, parse),
        }
    }

    /// A datetime value: ISO 8601 text or a Unix timestamp.
    pub fn datetime(&mut self, key: Key, value: &Value) -> Option<DateTime<Utc>> {
        match datetime_of(value) {
            Ok(dt) => Some(truncate_to_micros(dt)),
            Err(e) => self.fail(key, e),
        }
    }

    pub fn required_datetime(&mut self, key: Key) -> Option<DateTime<Utc>> {
        match self.raw(key) {
            Raw::Absent => self.fail(key, REQUIRED),
            Raw::Null => self.fail(key, CANNOT_BE_NULL),
            Raw::Value(v) => self.datetime(key, v),
        }
    }

    /// A capacity: a positive integer (`5.0` counts, `5.5` does not).
    pub fn capacity(&mut self, key: Key, value: &Value) -> Option<Capacity> {
        let n = match value {
            Value::Number(n) => n,
            _ => return self.fail(key, "must be an integer"),
        };
        let int = if let Some(i) = n.as_i64() {
            Some(i)
        } else if n.is_u64() {
            Some(i64::MAX)
        } else {
            // pydantic's lax ints take 5.0 but not 5.5.
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        };
        match int {
            Some(i) => match Capacity::new(i) {
                Ok(c) => Some(c),
                Err(e) => self.fail(key, e.into_message()),
            },
            None => self.fail(key, "must be an integer"),
        }
    }

    /// An integer in `min..=max`, sent as a number or a numeric string (query
    /// parameters); `default` when not sent.
    pub fn integer(&mut self, key: Key, default: i64, min: i64, max: i64) -> i64 {
        let Some(v) = self.sent(key) else {
            return default;
        };
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                let bound = if max == i64::MAX {
                    format!("an integer ≥ {min}")
                } else {
                    format!("an integer between {min} and {max}")
                };
                self.fail::<()>(key, format!("must be {bound}"));
                default
            }
        }
    }

    /// The collected errors, as one 422.
    pub fn finish(self) -> Result<(), DomainError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Validation {
                fields: self.errors,
            })
        }
    }
}

/// A string or a number as text (query parameters arrive as strings, the
/// same values in a body may be numbers).
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A datetime from a body value: ISO 8601 text or a Unix timestamp (the
/// domain's rules, [`crate::domain::parse_datetime`]).
pub fn datetime_of(value: &Value) -> Result<DateTime<Utc>, String> {
    crate::domain::parse_datetime(match value {
        Value::String(s) => DatetimeInput::Text(s),
        Value::Number(n) => match n.as_i64() {
            Some(i) => DatetimeInput::Integer(i),
            None => DatetimeInput::Number(n.as_f64()),
        },
        _ => DatetimeInput::WrongType,
    })
}
