//! From the original's values to ours: the rules a row must pass, what is
//! merely spelled differently (mapped silently), and what `--fix` replaces
//! with the nearest safe value. Pure, so every rule is unit-tested.

use chrono::Duration;

use super::source::SourceEvent;
use crate::domain::{
    Description, Event, EventId, EventStatus, GameId, LocationText, LocationUrl, RequestedRsvp,
    Scope, ScopeId, ScopeType, TenantId, Title, UserId, Visibility, truncate_to_micros,
};

/// A title the rules refuse becomes this under `--fix` when nothing of it is left.
pub const UNTITLED: &str = "Untitled event";
/// An event whose end is not after its start lasts this long under `--fix`.
pub const FIXED_LENGTH_HOURS: i64 = 1;

/// An event as we store it, and what `--fix` changed to get there.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub event: Event,
    /// One line per value replaced; empty when the row passed every rule.
    pub fixes: Vec<String>,
}

/// Why a row cannot be imported as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reasons: Vec<String>,
    /// `--fix` would import it (every reason has a safe replacement).
    pub fixable: bool,
}

/// Maps one `events_event` row. With `fix`, a fixable refusal comes back
/// as a [`Mapped`] whose `fixes` say what was replaced.
pub fn event(row: &SourceEvent, fix: bool) -> Result<Mapped, Refused> {
    let mut fixes = Vec::new();
    let mut fatal = Vec::new();
    let tenant = TenantId::from(row.tenant_id);

    // The original wrote its enums by hand: any case is the same value.
    let scope_type = match row
        .scope_type
        .trim()
        .to_ascii_uppercase()
        .parse::<ScopeType>()
    {
        Ok(t) => Some(t),
        Err(e) => {
            fatal.push(format!(
                "scope_type {:?}: {}",
                row.scope_type,
                e.into_message()
            ));
            None
        }
    };
    let scope = match scope_type {
        Some(ScopeType::Tenant) => {
            let named = ScopeId::parse(row.scope_id.trim()).ok();
            if named != Some(ScopeId::from(tenant)) {
                fixes.push(format!(
                    "scope_id {:?} of a TENANT event is not the tenant's id: the tenant id",
                    row.scope_id
                ));
            }
            Some(Scope::tenant(tenant))
        }
        Some(scope_type) => match ScopeId::parse(row.scope_id.trim()) {
            Ok(id) => Some(Scope::from_stored(scope_type, id)),
            Err(e) => {
                fatal.push(format!("scope_id {:?}: {}", row.scope_id, e.into_message()));
                None
            }
        },
        None => None,
    };

    let title = match Title::parse(&row.title) {
        Ok(t) => t,
        Err(e) => {
            let cleaned: String = row
                .title
                .replace('\0', "")
                .chars()
                .take(Title::MAX_CHARS)
                .collect();
            let title = Title::parse(&cleaned)
                .unwrap_or_else(|_| Title::parse(UNTITLED).expect("a valid title"));
            fixes.push(format!("title: {}: {:?}", e.into_message(), title.as_str()));
            title
        }
    };
    let description = Description::parse(&row.description).unwrap_or_else(|e| {
        fixes.push(format!("description: {}: shortened", e.into_message()));
        let cleaned: String = row
            .description
            .replace('\0', "")
            .chars()
            .take(Description::MAX_CHARS)
            .collect();
        Description::parse(&cleaned).unwrap_or_default()
    });
    let location_text = LocationText::parse(&row.location_text).unwrap_or_else(|e| {
        fixes.push(format!("location_text: {}: shortened", e.into_message()));
        let cleaned: String = row
            .location_text
            .replace('\0', "")
            .chars()
            .take(LocationText::MAX_CHARS)
            .collect();
        LocationText::parse(&cleaned).unwrap_or_default()
    });
    // The original stored "" and null alike for "none".
    let location_url = match row.location_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => match LocationUrl::parse(url) {
            Ok(url) => Some(url),
            Err(e) => {
                fixes.push(format!(
                    "location_url {url:?}: {}: dropped",
                    e.into_message()
                ));
                None
            }
        },
    };
    let game_id = match row.game_id.as_deref() {
        None => None,
        Some(g) if g.trim().is_empty() => None,
        Some(g) => match GameId::parse(g) {
            Ok(g) => Some(g),
            Err(e) => {
                fixes.push(format!("game_id {g:?}: {}: dropped", e.into_message()));
                None
            }
        },
    };

    let mut visibility = match row
        .visibility
        .trim()
        .to_ascii_lowercase()
        .parse::<Visibility>()
    {
        Ok(v) => v,
        Err(_) => {
            fixes.push(format!(
                "visibility {:?} is unknown: private",
                row.visibility
            ));
            Visibility::Private
        }
    };
    if let Some(scope) = &scope
        && !crate::domain::visibility_fits_scope(visibility, scope.scope_type())
    {
        fixes.push(format!(
            "visibility {} does not fit a {} scope: private",
            visibility.as_str(),
            scope.scope_type().as_str()
        ));
        visibility = Visibility::Private;
    }

    let starts_at = truncate_to_micros(row.starts_at);
    let mut ends_at = truncate_to_micros(row.ends_at);
    if ends_at <= starts_at {
        ends_at = starts_at + Duration::hours(FIXED_LENGTH_HOURS);
        fixes.push(format!(
            "ends_at {} is not after starts_at: {FIXED_LENGTH_HOURS} hour after the start",
            row.ends_at.to_rfc3339()
        ));
    }
    let created_at = truncate_to_micros(row.created_at);
    // Not a refusal: the original's clock, read twice, could disagree by
    // microseconds. An update cannot come before the creation.
    let updated_at = truncate_to_micros(row.updated_at).max(created_at);

    let Some(scope) = scope else {
        return Err(Refused {
            reasons: [fatal, fixes].concat(),
            fixable: false,
        });
    };
    if !fatal.is_empty() {
        return Err(Refused {
            reasons: [fatal, fixes].concat(),
            fixable: false,
        });
    }
    if !fixes.is_empty() && !fix {
        return Err(Refused {
            reasons: fixes,
            fixable: true,
        });
    }
    Ok(Mapped {
        event: Event {
            id: EventId::from(row.id),
            tenant_id: tenant,
            scope,
            title,
            description,
            starts_at,
            ends_at,
            location_text,
            location_url,
            game_id,
            visibility,
            status: EventStatus::Scheduled,
            capacity: None,
            created_by: UserId::from(row.created_by),
            created_at,
            updated_at,
            version: 1,
            cancelled_at: None,
            cancelled_by: None,
            cancel_reason: None,
            time_zone: crate::domain::TimeZone::UTC,
            series: None,
            rules: crate::domain::RsvpRules::default(),
        },
        fixes,
    })
}

/// The original's RSVP status, spelled as it wrote it (case and spaces aside).
pub fn rsvp_status(status: &str) -> Result<RequestedRsvp, String> {
    status
        .trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|e: crate::domain::FieldError| format!("status {status:?}: {}", e.into_message()))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;

    fn row() -> SourceEvent {
        let tenant = Uuid::new_v4();
        SourceEvent {
            id: Uuid::new_v4(),
            tenant_id: tenant,
            scope_type: "COMMUNITY".into(),
            scope_id: "C0FFEE00-0000-4000-8000-000000000001".into(),
            title: "Board games".into(),
            description: String::new(),
            starts_at: Utc.with_ymd_and_hms(2026, 5, 1, 18, 0, 0).unwrap(),
            ends_at: Utc.with_ymd_and_hms(2026, 5, 1, 21, 0, 0).unwrap(),
            location_text: String::new(),
            location_url: Some(String::new()),
            game_id: Some(String::new()),
            visibility: "community".into(),
            created_by: Uuid::new_v4(),
            created_at: Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
            updated_at: Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn a_clean_row_maps_with_canonical_ids_and_empty_strings_as_none() {
        let m = event(&row(), false).expect("maps");
        assert!(m.fixes.is_empty());
        assert_eq!(
            m.event.scope_id().as_str(),
            "c0ffee00-0000-4000-8000-000000000001"
        );
        assert_eq!(m.event.location_url, None);
        assert_eq!(m.event.game_id, None);
        assert_eq!(m.event.visibility, Visibility::Community);
    }

    #[test]
    fn a_misfit_visibility_is_refused_and_fixed_to_private_never_wider() {
        let mut r = row();
        r.scope_type = "TEAM".into();
        let refused = event(&r, false).expect_err("refused");
        assert!(refused.fixable);
        assert!(refused.reasons[0].contains("does not fit"), "{refused:?}");
        let fixed = event(&r, true).expect("fixed");
        assert_eq!(fixed.event.visibility, Visibility::Private);
        assert_eq!(fixed.fixes.len(), 1);
    }

    #[test]
    fn times_in_the_wrong_order_and_blank_titles_are_fixable() {
        let mut r = row();
        r.ends_at = r.starts_at;
        r.title = "   ".into();
        assert_eq!(event(&r, false).expect_err("refused").reasons.len(), 2);
        let fixed = event(&r, true).expect("fixed");
        assert_eq!(
            fixed.event.ends_at - fixed.event.starts_at,
            Duration::hours(1)
        );
        assert_eq!(fixed.event.title.as_str(), UNTITLED);
    }

    #[test]
    fn an_unknown_scope_type_is_never_imported() {
        let mut r = row();
        r.scope_type = "GUILD".into();
        let refused = event(&r, true).expect_err("refused even with --fix");
        assert!(!refused.fixable);
    }

    #[test]
    fn a_tenant_event_with_a_free_form_scope_id_gets_the_tenant_id_under_fix() {
        let mut r = row();
        r.scope_type = "tenant".into();
        r.scope_id = "acme".into();
        r.visibility = "PUBLIC".into();
        assert!(event(&r, false).is_err());
        let fixed = event(&r, true).expect("fixed");
        assert_eq!(fixed.event.scope_id().as_str(), r.tenant_id.to_string());
        assert_eq!(fixed.event.visibility, Visibility::Public);
    }

    #[test]
    fn a_javascript_url_is_dropped_not_kept() {
        let mut r = row();
        r.location_url = Some("javascript:alert(1)".into());
        let fixed = event(&r, true).expect("fixed");
        assert_eq!(fixed.event.location_url, None);
    }

    #[test]
    fn statuses_map_case_insensitively_and_unknown_ones_are_refused() {
        assert_eq!(rsvp_status(" Going "), Ok(RequestedRsvp::Going));
        assert!(rsvp_status("maybe").is_err());
    }
}
