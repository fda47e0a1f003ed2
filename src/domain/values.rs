//! Validated field types and the scope/visibility enums.
//!
//! Each type keeps its value private and is built only through a checking
//! constructor, so an `Event` made of them cannot carry an over-long title or
//! a `javascript:` URL (the previous service let both reach Postgres or the
//! UI). Lengths count Unicode scalar values, as the contract
//! says, not bytes.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::ids::{EventId, TenantId, UserId};

/// Why a value was refused, in words fit for `details.fields`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    message: String,
}

impl FieldError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn into_message(self) -> String {
        self.message
    }
}

/// Declares a fieldless enum whose wire spelling is fixed, with `as_str`,
/// strict case-sensitive `FromStr` (its error lists the allowed values),
/// `Display` and string serde.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $field:literal {
            $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::values::FieldError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => {
                        let allowed: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                        Err($crate::domain::values::FieldError::new(format!(
                            "{} must be one of: {}",
                            $field,
                            allowed.join(", ")
                        )))
                    }
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = ::std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }

        // The wire spellings, exactly: parsing is case-sensitive and untrimmed.
        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                ::utoipa::openapi::ObjectBuilder::new()
                    .schema_type(::utoipa::openapi::schema::Type::String)
                    .enum_values(Some($name::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }

        impl ::utoipa::ToSchema for $name {}
    };
}
pub(crate) use wire_enum;

wire_enum! {
    /// The kind of scope an event belongs to.
    ScopeType, "scopeType" {
        Tenant => "TENANT",
        Community => "COMMUNITY",
        Team => "TEAM",
    }
}

wire_enum! {
    /// Who may see an event (`docs/authorization.md`).
    #[derive(Default)]
    Visibility, "visibility" {
        #[default]
        Public => "public",
        Community => "community",
        Team => "team",
        Private => "private",
    }
}

/// `community` needs a COMMUNITY scope and `team` a TEAM scope, since their
/// audience is that scope's members; `public` and `private` fit any scope.
pub fn visibility_fits_scope(visibility: Visibility, scope_type: ScopeType) -> bool {
    match visibility {
        Visibility::Public | Visibility::Private => true,
        Visibility::Community => scope_type == ScopeType::Community,
        Visibility::Team => scope_type == ScopeType::Team,
    }
}

/// The message for a visibility that does not fit the scope.
pub fn visibility_scope_mismatch(visibility: Visibility, scope_type: ScopeType) -> FieldError {
    FieldError::new(format!(
        "visibility {visibility} is not allowed for scopeType {scope_type}"
    ))
}

/// Implements the common read-only surface of a validated string type.
macro_rules! text_value {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl FromStr for $name {
            type Err = FieldError;

            fn from_str(s: &str) -> Result<Self, FieldError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = FieldError;

            fn try_from(s: String) -> Result<Self, FieldError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        // Deserialising validates, so serde cannot smuggle in a bad value.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

fn check_max(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if char_len(s) > max {
        Err(FieldError::new(format!(
            "{field} must be at most {max} characters"
        )))
    } else {
        Ok(())
    }
}

/// Postgres text cannot hold U+0000: refused here with a 422 rather than
/// failing the insert with a 500.
fn check_no_nul(field: &str, s: &str) -> Result<(), FieldError> {
    if s.contains('\0') {
        Err(FieldError::new(format!(
            "{field} must not contain NUL characters"
        )))
    } else {
        Ok(())
    }
}

fn check_not_blank(field: &str, s: &str) -> Result<(), FieldError> {
    if s.trim().is_empty() {
        Err(FieldError::new(format!("{field} must not be empty")))
    } else {
        Ok(())
    }
}

/// An event title: 1..=255 characters, not only whitespace. Stored as given
/// (not trimmed), like the original.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Title(String);
text_value!(Title);

impl Title {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        check_not_blank("title", s)?;
        check_max("title", s, Self::MAX_CHARS)?;
        check_no_nul("title", s)?;
        Ok(Self(s.to_owned()))
    }
}

/// The id of a scope: 1..=128 characters, no control characters. A UUID in
/// any spelling is stored in its canonical form, so that the same community
/// is never two scopes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(String);
text_value!(ScopeId);

impl ScopeId {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        check_not_blank("scopeId", s)?;
        check_max("scopeId", s, Self::MAX_CHARS)?;
        // Control characters have no business in an id that ends up in
        // Portal URLs, logs and subjects.
        if s.chars().any(char::is_control) {
            return Err(FieldError::new(
                "scopeId must not contain control characters",
            ));
        }
        match uuid::Uuid::parse_str(s) {
            Ok(uuid) => Ok(Self(uuid.hyphenated().to_string())),
            Err(_) => Ok(Self(s.to_owned())),
        }
    }
}

impl From<TenantId> for ScopeId {
    fn from(tenant: TenantId) -> Self {
        Self(tenant.to_string())
    }
}

/// An event description, at most 20,000 characters; empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Description(String);
text_value!(Description);

impl Description {
    pub const MAX_CHARS: usize = 20_000;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        check_max("description", s, Self::MAX_CHARS)?;
        check_no_nul("description", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn empty() -> Self {
        Self::default()
    }
}

/// A free-text location, at most 255 characters; empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LocationText(String);
text_value!(LocationText);

impl LocationText {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        check_max("locationText", s, Self::MAX_CHARS)?;
        check_no_nul("locationText", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn empty() -> Self {
        Self::default()
    }
}

/// An absolute http or https URL of at most 2048 characters. Stored as the
/// caller wrote it (surrounding whitespace trimmed), not as the `url` crate
/// would re-serialise it, so what the organiser typed is what users see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocationUrl(String);
text_value!(LocationUrl);

impl LocationUrl {
    pub const MAX_CHARS: usize = 2048;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let s = s.trim();
        check_max("locationUrl", s, Self::MAX_CHARS)?;
        // The url crate silently drops tabs and newlines; refusing them keeps
        // the stored text equal to the URL that was checked.
        if s.chars().any(char::is_control) {
            return Err(FieldError::new(
                "locationUrl must not contain control characters",
            ));
        }
        let not_http = || FieldError::new("locationUrl must be an absolute http or https URL");
        // The WHATWG parser repairs `https:example.com` and `https:///x`
        // into valid URLs; requiring the literal `scheme://host` form keeps
        // the stored text a URL that every other client reads the same way.
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        let rest = if lower.starts_with("https://") {
            s.get(8..).unwrap_or_default()
        } else if lower.starts_with("http://") {
            s.get(7..).unwrap_or_default()
        } else {
            return Err(not_http());
        };
        if rest.is_empty() || rest.starts_with(['/', '\\']) {
            return Err(not_http());
        }
        let url = url::Url::parse(s).map_err(|_| not_http())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(not_http());
        }
        Ok(Self(s.to_owned()))
    }
}

/// The id of a game in the catalogue: 1..=128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GameId(String);
text_value!(GameId);

impl GameId {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        check_not_blank("gameId", s)?;
        check_max("gameId", s, Self::MAX_CHARS)?;
        check_no_nul("gameId", s)?;
        Ok(Self(s.to_owned()))
    }
}

/// Why an event was cancelled, at most 1000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CancelReason(String);
text_value!(CancelReason);

impl CancelReason {
    pub const MAX_CHARS: usize = 1000;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        check_max("reason", s, Self::MAX_CHARS)?;
        check_no_nul("reason", s)?;
        Ok(Self(s.to_owned()))
    }
}

/// How many `going` seats an event has: 1..=1,000,000. "Unlimited" is the
/// absence of a capacity (`Option<Capacity>`), never a magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Capacity(u32);

impl Capacity {
    pub const MAX: u32 = 1_000_000;

    pub fn new(n: i64) -> Result<Self, FieldError> {
        if n < 1 {
            return Err(FieldError::new(
                "capacity must be a positive integer or null",
            ));
        }
        match u32::try_from(n) {
            Ok(n) if n <= Self::MAX => Ok(Self(n)),
            _ => Err(FieldError::new(format!(
                "capacity must be at most {}",
                Self::MAX
            ))),
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Capacity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(deserializer)?;
        Self::new(n).map_err(serde::de::Error::custom)
    }
}

/// Where an event lives: `(scope_type, scope_id)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    scope_type: ScopeType,
    scope_id: ScopeId,
}

impl Scope {
    /// A scope of `tenant`. A TENANT scope must name the tenant itself: the
    /// previous service accepted any id there, which made
    /// tenant-wide events that no tenant-wide query could find.
    pub fn new(
        tenant: TenantId,
        scope_type: ScopeType,
        scope_id: ScopeId,
    ) -> Result<Self, FieldError> {
        if scope_type == ScopeType::Tenant && scope_id != ScopeId::from(tenant) {
            return Err(FieldError::new(
                "for TENANT scope, scopeId must be the tenant id",
            ));
        }
        Ok(Self {
            scope_type,
            scope_id,
        })
    }

    /// The tenant-wide scope of `tenant`.
    pub fn tenant(tenant: TenantId) -> Self {
        Self {
            scope_type: ScopeType::Tenant,
            scope_id: ScopeId::from(tenant),
        }
    }

    /// Rebuilds a scope read from storage without the TENANT rule, so rows
    /// written before the rule existed (the original's data) still load.
    pub fn from_stored(scope_type: ScopeType, scope_id: ScopeId) -> Self {
        Self {
            scope_type,
            scope_id,
        }
    }

    pub fn scope_type(&self) -> ScopeType {
        self.scope_type
    }

    pub fn scope_id(&self) -> &ScopeId {
        &self.scope_id
    }
}

// ---------------------------------------------------------------------------
// OpenAPI schemas: each states the rule its constructor enforces, so the
// document cannot promise more or less than the parser does.
// ---------------------------------------------------------------------------

/// What `str::trim` and `char::is_whitespace` treat as white space (Unicode
/// `White_Space`), as the body of a regex character class.
pub const WHITESPACE_CLASS: &str =
    "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
/// What `char::is_control` refuses (Unicode `Cc`), as a class body.
pub const CONTROL_CLASS: &str = "\\u0000-\\u001f\\u007f-\\u009f";
const HEX: &str = "[0-9a-fA-F]";

/// A UUID in any spelling `Uuid::parse_str` reads (hyphenated, simple,
/// braced, `urn:uuid:`), surrounding white space allowed.
pub fn uuid_input_pattern() -> String {
    let hyphenated = format!("{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}");
    format!(
        "^[{WHITESPACE_CLASS}]*({HEX}{{32}}|{hyphenated}|\\{{{hyphenated}\\}}|[uU][rR][nN]:[uU][uU][iI][dD]:{hyphenated})[{WHITESPACE_CLASS}]*$"
    )
}

/// A datetime as text: ISO 8601 (`T`, `t`, `_` or a space between date and
/// time; an offset `Z`, `±hh`, `±hhmm` or `±hh:mm`, or none for UTC), a
/// date alone, or Unix seconds or milliseconds as digits. With
/// `space_offset`, an offset whose `+` arrived as a space is read too (a
/// query parameter that was not percent-encoded).
pub fn datetime_text_pattern(space_offset: bool) -> String {
    let offset = if space_offset {
        "[Zz]|[+-][0-9]{2}(:?[0-9]{2})?| [0-9]{2}(:?[0-9]{2})?"
    } else {
        "[Zz]|[+-][0-9]{2}(:?[0-9]{2})?"
    };
    format!(
        "^[{WHITESPACE_CLASS}]*([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}([Tt _][0-9]{{2}}:[0-9]{{2}}(:[0-9]{{2}}([.,][0-9]+)?)?({offset})?)?|[+-]?[0-9]+(\\.[0-9]*)?)[{WHITESPACE_CLASS}]*$"
    )
}

/// The Unix-time range of years 1 to 9999; beyond ±2·10¹⁰ the number is
/// read as milliseconds.
pub const UNIX_INPUT_MIN: i64 = -62_135_596_800_000;
pub const UNIX_INPUT_MAX: i64 = 253_402_300_799_999;

const DATETIME_DESCRIPTION: &str = "ISO 8601 with any offset (normalised to UTC), naive (read as UTC), a date \
     (midnight UTC), or Unix seconds or milliseconds (a number, or digits in a string; above \
     2e10 in absolute value it is milliseconds). Years 1 to 9999; stored to the microsecond.";

fn string_schema(
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: String,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(min_length)
        .max_length(max_length)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// No NUL anywhere and at least one character that is not white space.
fn not_blank_pattern() -> String {
    format!("^[^\\u0000]*[^{WHITESPACE_CLASS}\\u0000][^\\u0000]*$")
}

fn no_nul_pattern() -> String {
    "^[^\\u0000]*$".to_owned()
}

macro_rules! schema_of {
    ($name:ident, $schema:expr) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

schema_of!(
    Title,
    string_schema(
        Some(1),
        Some(Title::MAX_CHARS),
        not_blank_pattern(),
        "1 to 255 characters, not only white space, no NUL; stored as sent (not trimmed).",
    )
);

schema_of!(
    ScopeId,
    string_schema(
        Some(1),
        Some(ScopeId::MAX_CHARS),
        format!("^[^{CONTROL_CLASS}]*[^{WHITESPACE_CLASS}{CONTROL_CLASS}][^{CONTROL_CLASS}]*$"),
        "1 to 128 characters, not only white space, no control characters. A UUID in any \
         spelling is stored in its canonical form. For a TENANT scope: the caller's tenant id.",
    )
);

schema_of!(
    Description,
    string_schema(
        None,
        Some(Description::MAX_CHARS),
        no_nul_pattern(),
        "Up to 20,000 characters, no NUL; empty means none.",
    )
);

schema_of!(
    LocationText,
    string_schema(
        None,
        Some(LocationText::MAX_CHARS),
        no_nul_pattern(),
        "Up to 255 characters, no NUL; empty means none.",
    )
);

schema_of!(LocationUrl, {
    let mut schema = string_schema(
        Some(1),
        Some(LocationUrl::MAX_CHARS),
        format!(
            "^[{WHITESPACE_CLASS}]*[hH][tT][tT][pP][sS]?://[^/\\\\{CONTROL_CLASS}][^{CONTROL_CLASS}]*[{WHITESPACE_CLASS}]*$"
        ),
        "An absolute `http://` or `https://` URL with a host (any letter case in the scheme), \
         at most 2048 characters once surrounding white space is trimmed, no control \
         characters; `javascript:`, `data:`, relative and host-less URLs are refused. Stored as \
         sent, trimmed.",
    );
    if let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(object)) = &mut schema
    {
        object.format = Some(utoipa::openapi::SchemaFormat::Custom("uri".into()));
    }
    schema
});

schema_of!(
    GameId,
    string_schema(
        Some(1),
        Some(GameId::MAX_CHARS),
        not_blank_pattern(),
        "1 to 128 characters, not only white space, no NUL.",
    )
);

schema_of!(
    CancelReason,
    string_schema(
        None,
        Some(CancelReason::MAX_CHARS),
        no_nul_pattern(),
        "Up to 1000 characters, no NUL; empty or only white space means no reason.",
    )
);

schema_of!(
    Capacity,
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(1))
        .maximum(Some(Capacity::MAX))
        .description(Some(
            "Seats for `going`, 1 to 1,000,000 (a number with a zero fraction such as `5.0` \
             counts). Absent or null: unlimited.",
        ))
        .into()
);

schema_of!(
    EventId,
    string_schema(
        None,
        None,
        uuid_input_pattern(),
        "An event id: a UUID in any spelling (upper case, no hyphens, braces, `urn:uuid:`).",
    )
);

schema_of!(
    UserId,
    string_schema(
        None,
        None,
        uuid_input_pattern(),
        "A user id: a UUID in any spelling (upper case, no hyphens, braces, `urn:uuid:`).",
    )
);

impl utoipa::PartialSchema for crate::domain::DatetimeInput<'_> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(datetime_text_pattern(false))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(UNIX_INPUT_MIN))
                    .maximum(Some(UNIX_INPUT_MAX)),
            )
            .description(Some(DATETIME_DESCRIPTION))
            .examples([
                serde_json::json!("2030-01-10T10:00:00+03:00"),
                serde_json::json!(1_893_567_600),
            ])
            .into()
    }
}

impl utoipa::ToSchema for crate::domain::DatetimeInput<'_> {
    fn name() -> std::borrow::Cow<'static, str> {
        "DatetimeInput".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg<T: fmt::Debug>(r: Result<T, FieldError>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.into_message(),
        }
    }

    #[test]
    fn enums_use_exact_wire_values() {
        let scope: Vec<&str> = ScopeType::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(scope, ["TENANT", "COMMUNITY", "TEAM"]);
        let vis: Vec<&str> = Visibility::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(vis, ["public", "community", "team", "private"]);
        assert_eq!(Visibility::default(), Visibility::Public);
        for v in Visibility::ALL {
            assert_eq!(v.as_str().parse::<Visibility>(), Ok(*v));
            assert_eq!(serde_json::to_value(v).ok(), Some(json!(v.as_str())));
        }
        for s in ScopeType::ALL {
            assert_eq!(s.as_str().parse::<ScopeType>(), Ok(*s));
        }
    }

    #[test]
    fn enum_parsing_is_strict_and_lists_allowed_values() {
        assert_eq!(
            msg("Public".parse::<Visibility>()),
            "visibility must be one of: public, community, team, private"
        );
        assert_eq!(
            msg("tenant".parse::<ScopeType>()),
            "scopeType must be one of: TENANT, COMMUNITY, TEAM"
        );
        assert!(" public".parse::<Visibility>().is_err());
        assert!(serde_json::from_value::<Visibility>(json!("PUBLIC")).is_err());
        assert_eq!(
            serde_json::from_value::<ScopeType>(json!("TEAM")).ok(),
            Some(ScopeType::Team)
        );
    }

    #[test]
    fn visibility_fits_scope_table() {
        use ScopeType as S;
        use Visibility as V;
        for s in S::ALL {
            assert!(visibility_fits_scope(V::Public, *s));
            assert!(visibility_fits_scope(V::Private, *s));
        }
        assert!(visibility_fits_scope(V::Community, S::Community));
        assert!(!visibility_fits_scope(V::Community, S::Team));
        assert!(!visibility_fits_scope(V::Community, S::Tenant));
        assert!(visibility_fits_scope(V::Team, S::Team));
        assert!(!visibility_fits_scope(V::Team, S::Community));
        assert!(!visibility_fits_scope(V::Team, S::Tenant));
    }

    #[test]
    fn title_bounds_count_characters() {
        assert!(Title::parse(&"a".repeat(255)).is_ok());
        assert_eq!(
            msg(Title::parse(&"a".repeat(256))),
            "title must be at most 255 characters"
        );
        // 255 two-byte characters are 510 bytes but still fit.
        assert!(Title::parse(&"я".repeat(255)).is_ok());
        assert!(Title::parse(&"я".repeat(256)).is_err());
        assert!(Title::parse(&"🎉".repeat(255)).is_ok());
        assert_eq!(msg(Title::parse("")), "title must not be empty");
        assert_eq!(msg(Title::parse(" \t\n")), "title must not be empty");
        assert_eq!(
            Title::parse("  Hi ").map(|t| t.into_string()),
            Ok("  Hi ".to_owned())
        );
    }

    #[test]
    fn scope_id_rules() {
        assert!(ScopeId::parse(&"x".repeat(128)).is_ok());
        assert!(ScopeId::parse(&"ж".repeat(128)).is_ok());
        assert_eq!(
            msg(ScopeId::parse(&"x".repeat(129))),
            "scopeId must be at most 128 characters"
        );
        assert!(ScopeId::parse("").is_err());
        assert!(ScopeId::parse("   ").is_err());
        assert_eq!(
            msg(ScopeId::parse("ab\ncd")),
            "scopeId must not contain control characters"
        );
        assert!(ScopeId::parse("a\u{7f}").is_err());
        assert_eq!(
            ScopeId::parse("{6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B}").map(String::from),
            Ok("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b".to_owned())
        );
        assert_eq!(
            ScopeId::parse("Guild-42").map(String::from),
            Ok("Guild-42".to_owned())
        );
    }

    #[test]
    fn free_text_limits() {
        assert!(Description::parse("").is_ok());
        assert!(Description::parse(&"д".repeat(20_000)).is_ok());
        assert_eq!(
            msg(Description::parse(&"d".repeat(20_001))),
            "description must be at most 20000 characters"
        );
        assert!(LocationText::parse(&"l".repeat(255)).is_ok());
        assert!(LocationText::parse(&"l".repeat(256)).is_err());
        assert!(CancelReason::parse(&"r".repeat(1000)).is_ok());
        assert!(CancelReason::parse(&"r".repeat(1001)).is_err());
        assert!(GameId::parse(&"g".repeat(128)).is_ok());
        assert!(GameId::parse(&"g".repeat(129)).is_err());
        assert_eq!(msg(GameId::parse("")), "gameId must not be empty");
    }

    #[test]
    fn location_url_accepts_only_http_and_https() {
        for good in [
            "https://example.com",
            "http://example.com/path?q=1#frag",
            "HTTPS://Example.com/Пример",
            "  https://example.com/x  ",
        ] {
            assert!(LocationUrl::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            LocationUrl::parse(" https://example.com/x ").map(String::from),
            Ok("https://example.com/x".to_owned())
        );
        for bad in [
            "",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "ftp://example.com/file",
            "/relative/path",
            "example.com",
            "http://",
            "https:///nohost",
            "https:example.com",
            "http:\\\\example.com",
            "https://\\\\example.com",
            "http://user@",
            "data:text/html,hi",
            "https://exa\nmple.com",
            "mailto:a@b.c",
        ] {
            assert!(LocationUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048 - 20));
        assert_eq!(long.chars().count(), 2048);
        assert!(LocationUrl::parse(&long).is_ok());
        assert_eq!(
            msg(LocationUrl::parse(&format!("{long}a"))),
            "locationUrl must be at most 2048 characters"
        );
    }

    #[test]
    fn capacity_bounds() {
        assert_eq!(Capacity::new(1).map(Capacity::get), Ok(1));
        assert_eq!(Capacity::new(1_000_000).map(Capacity::get), Ok(1_000_000));
        assert_eq!(
            msg(Capacity::new(0)),
            "capacity must be a positive integer or null"
        );
        assert!(Capacity::new(-5).is_err());
        assert_eq!(
            msg(Capacity::new(1_000_001)),
            "capacity must be at most 1000000"
        );
        assert!(Capacity::new(i64::MAX).is_err());
        assert!(serde_json::from_value::<Capacity>(json!(0)).is_err());
        assert_eq!(
            serde_json::to_value(Capacity::new(7).ok()).ok(),
            Some(json!(7))
        );
    }

    #[test]
    fn tenant_scope_must_name_the_tenant() {
        let tenant = match TenantId::parse("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b") {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let upper = ScopeId::parse("6F1C2A3B4D5E4F608A7B9C0D1E2F3A4B");
        let scope = upper.and_then(|id| Scope::new(tenant, ScopeType::Tenant, id));
        assert_eq!(scope, Ok(Scope::tenant(tenant)));
        let other =
            ScopeId::parse("guild").and_then(|id| Scope::new(tenant, ScopeType::Tenant, id));
        assert_eq!(
            msg(other),
            "for TENANT scope, scopeId must be the tenant id"
        );
        let community =
            ScopeId::parse("guild").and_then(|id| Scope::new(tenant, ScopeType::Community, id));
        assert_eq!(
            community.map(|s| s.scope_id().to_string()),
            Ok("guild".to_owned())
        );
    }

    #[test]
    fn text_values_serde_validates() {
        assert!(serde_json::from_value::<Title>(json!("")).is_err());
        assert_eq!(
            serde_json::from_value::<Title>(json!("Hi"))
                .map(|t| t == "Hi")
                .ok(),
            Some(true)
        );
        assert!(serde_json::from_value::<LocationUrl>(json!("javascript:x")).is_err());
    }
}
