//! Master flags: the identity provider's account-level facts about a user, carried in
//! `X-Master-Flags` as a compact JSON object (`{"system_admin":true}`).

use serde_json::{Map, Value};

/// Parsed `X-Master-Flags`. Parsing never fails: the original treats anything that is
/// not a JSON object as "no flags" and lets the request through, and callers (the BFF)
/// depend on that.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MasterFlags {
    map: Map<String, Value>,
}

impl MasterFlags {
    /// Missing, empty, invalid JSON, or JSON that is not an object: no flags.
    pub fn parse(raw: Option<&str>) -> Self {
        let map = raw
            .filter(|s| !s.is_empty())
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|v| match v {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .unwrap_or_default();
        Self { map }
    }

    /// The whole object, including keys this service does not interpret, so it can be
    /// forwarded to Access unchanged.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// `suspended` or `banned` is the JSON literal `true`, or `status` lower-cased is
    /// `suspended` or `banned`.
    pub fn is_suspended_or_banned(&self) -> bool {
        self.is_suspended() || self.is_banned()
    }

    /// `suspended` is the JSON literal `true`, or `status` is `suspended`.
    pub fn is_suspended(&self) -> bool {
        self.flag_or_status("suspended")
    }

    /// `banned` is the JSON literal `true`, or `status` is `banned`.
    pub fn is_banned(&self) -> bool {
        self.flag_or_status("banned")
    }

    fn flag_or_status(&self, key: &str) -> bool {
        self.map.get(key) == Some(&Value::Bool(true))
            || self
                .map
                .get("status")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(key))
    }

    /// `system_admin` or `is_system_admin` is the JSON literal `true`. Truthy look-alikes
    /// (`"true"`, `1`, `"yes"`, even `"no"`) are refused: the original's DSAR check
    /// accepted any truthy value, which made `"system_admin":"no"` an administrator.
    pub fn is_system_admin(&self) -> bool {
        ["system_admin", "is_system_admin"]
            .iter()
            .any(|key| self.map.get(*key) == Some(&Value::Bool(true)))
    }

    /// `membership_status` when it is a string, for forwarding to Access.
    pub fn membership_status(&self) -> Option<&str> {
        self.map.get("membership_status").and_then(Value::as_str)
    }

    /// Compact JSON for an outgoing `X-Master-Flags` header; `None` when there are no
    /// flags, so the header can be left out.
    pub fn to_header_value(&self) -> Option<String> {
        if self.map.is_empty() {
            return None;
        }
        serde_json::to_string(&self.map).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(raw: &str) -> MasterFlags {
        MasterFlags::parse(Some(raw))
    }

    #[test]
    fn missing_empty_invalid_and_non_object_are_empty() {
        for raw in [
            None,
            Some(""),
            Some("   "),
            Some("suspended"),
            Some("suspended,banned"),
            Some("{not json"),
            Some("[1,2]"),
            Some("true"),
            Some("\"system_admin\""),
            Some("null"),
            Some("42"),
        ] {
            let f = MasterFlags::parse(raw);
            assert!(f.is_empty(), "{raw:?}");
            assert!(!f.is_system_admin());
            assert!(!f.is_suspended_or_banned());
        }
    }

    #[test]
    fn keeps_the_whole_object() {
        let f = flags(r#"{"email_verified":true,"system_admin":true,"x":{"y":[1]}}"#);
        assert_eq!(f.as_map().len(), 3);
        assert_eq!(f.get("email_verified"), Some(&Value::Bool(true)));
        let round_trip = MasterFlags::parse(f.to_header_value().as_deref());
        assert_eq!(round_trip, f);
        assert_eq!(MasterFlags::default().to_header_value(), None);
    }

    #[test]
    fn system_admin_requires_literal_true() {
        assert!(flags(r#"{"system_admin":true}"#).is_system_admin());
        assert!(flags(r#"{"is_system_admin":true}"#).is_system_admin());
        for raw in [
            r#"{"system_admin":"no"}"#,
            r#"{"system_admin":"yes"}"#,
            r#"{"system_admin":"true"}"#,
            r#"{"system_admin":1}"#,
            r#"{"system_admin":false}"#,
            r#"{"system_admin":null}"#,
            r#"{"system_admin":[true]}"#,
            r#"{"is_system_admin":"true"}"#,
            r#"{"admin":true}"#,
        ] {
            assert!(!flags(raw).is_system_admin(), "{raw}");
        }
    }

    #[test]
    fn suspended_or_banned() {
        for raw in [
            r#"{"suspended":true}"#,
            r#"{"banned":true}"#,
            r#"{"status":"suspended"}"#,
            r#"{"status":"BANNED"}"#,
            r#"{"status":"Suspended"}"#,
            r#"{"suspended":true,"system_admin":true}"#,
        ] {
            assert!(flags(raw).is_suspended_or_banned(), "{raw}");
        }
        for raw in [
            r#"{"suspended":false}"#,
            r#"{"suspended":"true"}"#,
            r#"{"banned":1}"#,
            r#"{"status":"active"}"#,
            r#"{"status":true}"#,
            r#"{"status":"suspended-pending"}"#,
            r#"{}"#,
        ] {
            assert!(!flags(raw).is_suspended_or_banned(), "{raw}");
        }
    }

    #[test]
    fn membership_status_only_when_a_string() {
        assert_eq!(
            flags(r#"{"membership_status":"active"}"#).membership_status(),
            Some("active")
        );
        assert_eq!(
            flags(r#"{"membership_status":1}"#).membership_status(),
            None
        );
        assert_eq!(flags("{}").membership_status(), None);
    }
}
