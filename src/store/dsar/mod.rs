//! DSAR (data subject access requests) and retention: export everything the
//! service holds about one user in one tenant ([`export`]), erase it
//! ([`erase`]), and purge old published outbox rows
//! ([`purge_published_outbox`]). The shapes are the original service's,
//! with the deliberate differences listed on each function.
//!
//! Which outbox rows concern a user (the "matcher", widened to the user-id
//! keys our payloads carry) is decided in SQL: a row of the tenant matches
//! when its event is one the user created (`event_id` column or
//! `payload->>'event_id'`), or when one of `payload.created_by`,
//! `user_id`, `marked_by`, `updated_by`, `cancelled_by`, `actor_user_id`,
//! trimmed and case-insensitively, is the user's id.

use uuid::Uuid;

/// The outbox matcher, as a SQL condition on `outbox o`. Parameters:
/// `$1` tenant id, `$2` user id (canonical text), `$3` the user's created
/// event ids (`uuid[]`), `$4` the same as canonical text (`text[]`).
macro_rules! outbox_matcher {
    () => {
        r"o.tenant_id = $1 AND (
            o.event_id = ANY($3::uuid[])
            OR lower(btrim(o.payload->>'event_id')) = ANY($4::text[])
            OR EXISTS (
                SELECT 1
                FROM unnest(ARRAY['created_by', 'user_id', 'marked_by', 'updated_by',
                                  'cancelled_by', 'actor_user_id']) AS k(key)
                WHERE o.payload->>k.key ~* ('^\s*' || $2::text || '\s*$')
            )
        )"
    };
}

mod erase;
mod export;
mod retention;

pub use erase::{Erased, erase};
pub use export::export;
pub use retention::purge_published_outbox;

/// What erase writes over an erased user's id inside outbox payloads, and
/// what export shows in place of other users' ids.
pub const REDACTED: &str = "[redacted]";

fn as_text(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(|id| id.hyphenated().to_string()).collect()
}
