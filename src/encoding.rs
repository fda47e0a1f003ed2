//! The wire encodings of request and reply bodies and of domain events:
//! JSON and msgpack, carrying the same values (maps with field names,
//! UUIDs and datetimes as strings).

use bytes::Bytes;
use serde_json::Value;

use crate::domain::{DomainError, ErrorCode};
use crate::error::AppError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Msgpack,
}

impl Encoding {
    pub const fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Msgpack => "application/msgpack",
        }
    }

    /// The `Content-Type` of a domain event in this encoding (a CloudEvents
    /// structured envelope).
    pub const fn cloudevents_content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/cloudevents+json",
            Encoding::Msgpack => "application/cloudevents+msgpack",
        }
    }

    /// Decodes a body the service wrote itself (a domain event, a reply):
    /// `Value::Null` when it cannot be read.
    pub fn decode_lenient(self, body: &[u8]) -> Value {
        match self {
            Encoding::Json => serde_json::from_slice(body).unwrap_or(Value::Null),
            Encoding::Msgpack => rmp_serde::from_slice(body).unwrap_or(Value::Null),
        }
    }

    /// The request's encoding: its Content-Type, or, without one, JSON when
    /// the body starts with `{` (no msgpack request can) and msgpack otherwise.
    pub fn of_request(content_type: Option<&str>, body: &[u8]) -> Result<Encoding, AppError> {
        match content_type.map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        }) {
            Some(c) if c == "application/json" => Ok(Encoding::Json),
            Some(c) if c == "application/msgpack" || c == "application/x-msgpack" => {
                Ok(Encoding::Msgpack)
            }
            Some(c) if !c.is_empty() => Err(AppError::rejected(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "Content-Type {c} is not supported; use application/msgpack or application/json"
                ),
            )),
            _ => Ok(if body.first() == Some(&b'{') {
                Encoding::Json
            } else {
                Encoding::Msgpack
            }),
        }
    }

    pub fn decode(self, body: &[u8]) -> Result<Value, AppError> {
        if body.is_empty() {
            return Ok(Value::Null);
        }
        let decoded = match self {
            Encoding::Json => serde_json::from_slice::<Value>(body).map_err(|e| e.to_string()),
            Encoding::Msgpack => decode_msgpack(body),
        };
        decoded.map_err(|e| {
            let kind = if self == Encoding::Json {
                "JSON"
            } else {
                "msgpack"
            };
            DomainError::InvalidBody(format!("Cannot parse request body as {kind}: {e}")).into()
        })
    }

    pub fn encode<T: serde::Serialize + ?Sized>(self, value: &T) -> Bytes {
        let bytes = match self {
            Encoding::Json => serde_json::to_vec(value).unwrap_or_default(),
            // Maps with field names, never positional arrays.
            Encoding::Msgpack => rmp_serde::to_vec_named(value).unwrap_or_default(),
        };
        Bytes::from(bytes)
    }
}

/// How deeply msgpack values may nest: serde_json's own limit. rmp-serde's
/// default (1024) let a 200 KB body of nested arrays overflow a 2 MiB
/// worker stack and abort the whole process.
const MAX_MSGPACK_DEPTH: usize = 128;

/// One msgpack value filling the whole body, nested at most
/// [`MAX_MSGPACK_DEPTH`] deep, holding only what JSON can. `rmp_serde::from_slice`
/// stops after the first value and ignores what follows, so a body with
/// trailing bytes was accepted where the same mistake in JSON is a 400.
fn decode_msgpack(body: &[u8]) -> Result<Value, String> {
    use serde::Deserialize;
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(body));
    de.set_max_depth(MAX_MSGPACK_DEPTH);
    let JsonValue(value) = JsonValue::deserialize(&mut de).map_err(|e| e.to_string())?;
    let used = usize::try_from(de.position()).unwrap_or(usize::MAX);
    if used == body.len() {
        Ok(value)
    } else {
        Err(format!(
            "{} trailing bytes after the value",
            body.len().saturating_sub(used)
        ))
    }
}

/// A JSON value read from msgpack, refusing what JSON cannot hold: NaN and
/// infinities, which `serde_json::Value` silently turns into `null` (so a
/// msgpack `capacity: NaN` made an event unlimited), and non-string keys.
struct JsonValue(Value);

impl<'de> serde::Deserialize<'de> for JsonValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor).map(JsonValue)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value JSON can represent")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("NaN and infinite numbers are not allowed"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // No capacity from the declared length: a hostile header may claim billions.
        let mut items = Vec::new();
        while let Some(JsonValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((key, JsonValue(value))) = map.next_entry::<String, JsonValue>()? {
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}
