//! Identifier newtypes.
//!
//! The previous service compared ids as raw strings, so an upper-case or
//! unhyphenated spelling of the right UUID silently failed every check.
//! Here every id is a parsed `Uuid`: any spelling `Uuid::parse_str` accepts
//! comes in, and only the canonical lower-case hyphenated form goes out.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A string that is not a UUID in any accepted spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be a UUID")]
pub struct InvalidId {
    /// Which id was expected, e.g. `"user id"`.
    pub kind: &'static str,
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Accepts any spelling `Uuid::parse_str` does (upper case, no
            /// hyphens, braces, `urn:uuid:`), after trimming whitespace.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|_| InvalidId { kind: $kind })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        // By hand rather than uuid's own impls: those write 16 raw bytes to
        // binary formats, and msgpack bodies must carry UUIDs as strings.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0.hyphenated())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_id!(
    /// The tenant every row and every request belongs to.
    TenantId,
    "tenant id"
);
uuid_id!(
    /// A user of the platform, as sent in `X-User-Id`.
    UserId,
    "user id"
);
uuid_id!(
    /// An event.
    EventId,
    "event id"
);

uuid_id!(
    /// A recurring event: the rule its occurrences come from.
    SeriesId,
    "series id"
);

impl SeriesId {
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }
}

/// What DSAR erase writes in place of an erased user's id in `created_by` and
/// `marked_by`.
pub const ANONYMIZED_USER_ID: UserId = UserId::from_uuid(Uuid::nil());

impl UserId {
    pub fn is_anonymized(&self) -> bool {
        *self == ANONYMIZED_USER_ID
    }
}

impl EventId {
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CANON: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";

    #[test]
    fn every_spelling_parses_to_the_canonical_form() {
        for spelling in [
            CANON,
            "6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B",
            "6f1c2a3b4d5e4f608a7b9c0d1e2f3a4b",
            "{6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b}",
            "urn:uuid:6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
            "  6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b\n",
        ] {
            let parsed = UserId::parse(spelling);
            assert_eq!(
                parsed.map(|id| id.to_string()),
                Ok(CANON.to_owned()),
                "{spelling}"
            );
        }
    }

    #[test]
    fn rejects_non_uuids() {
        for bad in ["", "internal", "6f1c2a3b-4d5e-4f60-8a7b", "123"] {
            assert_eq!(TenantId::parse(bad), Err(InvalidId { kind: "tenant id" }));
        }
        assert_eq!(
            EventId::parse("x").map_err(|e| e.to_string()),
            Err("event id must be a UUID".to_owned())
        );
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let id = EventId::parse("6F1C2A3B4D5E4F608A7B9C0D1E2F3A4B").ok();
        assert_eq!(serde_json::to_value(id).ok(), Some(json!(CANON)));
        let back: Result<EventId, _> =
            serde_json::from_value(json!("{6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B}"));
        assert_eq!(back.ok(), id);
        assert!(serde_json::from_value::<EventId>(json!("nope")).is_err());
        assert!(serde_json::from_value::<EventId>(json!(5)).is_err());
    }

    #[test]
    fn anonymized_user_is_nil() {
        assert_eq!(
            ANONYMIZED_USER_ID.to_string(),
            "00000000-0000-0000-0000-000000000000"
        );
        assert!(ANONYMIZED_USER_ID.is_anonymized());
        assert_ne!(EventId::new_v4(), EventId::new_v4());
    }

    #[test]
    fn debug_names_the_kind() {
        let id = TenantId::parse(CANON).map(|t| format!("{t:?}"));
        assert_eq!(id, Ok(format!("TenantId({CANON})")));
    }
}
