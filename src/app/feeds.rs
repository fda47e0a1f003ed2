//! Subscribable calendar feeds (`feed.create`, `feed.list`, `feed.revoke`)
//! and the unsigned `GET /feeds/<token>.ics` that calendar apps poll.
//!
//! The token is the credential: 256 random bits, shown once, stored only
//! as its SHA-256. A feed is rendered at request time from what the owner
//! may see at that moment, judged as the owner by roles and memberships
//! alone (a context without master flags: no admin bypass). Nothing about
//! visibility is cached: every request runs the owner's listing again;
//! only the rendered text is kept, keyed by the token and by a digest of
//! the events it was rendered from, so a changed event, a lost membership
//! or a revoke can never be answered from the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::app::requests::{Checked, FeedSpec};
use crate::app::{App, AppError, Reply};
use crate::auth::{InternalContext, MasterFlags, SignatureVersion};
use crate::authz::Guard;
use crate::domain::{Event, format_utc, ics};
use crate::store::audit::AuditEntry;
use crate::store::feeds::{self, Feed};
use crate::store::reads::ListFilter;

/// How far back a feed reaches.
pub const FEED_DAYS_BACK: i64 = 30;
/// The most events one feed holds (the earliest first).
pub const FEED_MAX_EVENTS: i64 = 2_000;
/// Bytes of randomness in a token (256 bits), and the length of its text.
const TOKEN_BYTES: usize = 32;
const TOKEN_CHARS: usize = 43;
/// The most feeds one user may hold in a tenant (409 `CONFLICT` beyond).
pub const MAX_FEEDS: i64 = 50;
/// Entries kept before a map is emptied (the cache and the rate limiter).
const MAX_ENTRIES: usize = 50_000;

/// The path of a feed under the BFF's prefix.
pub fn feed_url(token: &str) -> String {
    format!("/api/v1/events/feeds/{token}.ics")
}

/// A new token: 256 bits from the thread's CSPRNG, URL-safe base64
/// without padding (43 characters).
fn new_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What `GET /feeds/<token>.ics` answers.
#[derive(Debug)]
pub enum FeedAnswer {
    Calendar { body: Arc<String>, etag: String },
    NotModified { etag: String },
}

/// A rendered feed and the digest of the events it was rendered from.
struct Rendered {
    digest: [u8; 32],
    body: Arc<String>,
    etag: String,
}

/// The per-instance state of the feeds: the rate limiter and the cache of
/// rendered documents.
pub struct FeedState {
    per_minute: u32,
    buckets: Mutex<HashMap<[u8; 32], (f64, Instant)>>,
    rendered: Mutex<HashMap<[u8; 32], Rendered>>,
}

impl FeedState {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::default(),
            rendered: Mutex::default(),
        }
    }

    /// Takes one request from the token's bucket (`per_minute` requests,
    /// refilled evenly over the minute); `Err` holds the seconds to wait.
    fn take(&self, key: &[u8; 32], now: Instant) -> Result<(), u32> {
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_ENTRIES && !buckets.contains_key(key) {
            buckets.clear();
        }
        let (tokens, at) = buckets.entry(*key).or_insert((capacity, now));
        let refilled =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(capacity);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            let wait = ((1.0 - refilled) / per_sec).ceil();
            Err(wait.clamp(1.0, 3600.0) as u32)
        }
    }

    fn cached(&self, key: &[u8; 32], digest: &[u8; 32]) -> Option<(Arc<String>, String)> {
        let rendered = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rendered
            .get(key)
            .filter(|r| r.digest == *digest)
            .map(|r| (r.body.clone(), r.etag.clone()))
    }

    fn keep(&self, key: [u8; 32], rendered: Rendered) {
        let mut map = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, rendered);
    }

    fn forget(&self, key: &[u8; 32]) {
        self.rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Forgets every rendering (a revoke knows the feed's id, not its
    /// token: the cache is dropped whole; it is only a cache).
    fn forget_all(&self) {
        self.rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

fn feed_json(feed: &Feed) -> Value {
    json!({
        "id": feed.id.to_string(),
        "scopeType": feed.scope.as_ref().map(|s| s.scope_type().as_str()),
        "scopeId": feed.scope.as_ref().map(|s| s.scope_id().as_str()),
        "myRsvp": feed.my_rsvp.map(|s| s.as_str()),
        "createdAt": format_utc(&feed.created_at),
    })
}

/// Whether an `If-None-Match` value names `etag` (a list, `*`, weak tags).
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

impl App {
    /// Notes what a signed request says of its caller's standing: feeds of
    /// a suspended or banned owner answer 404 until the owner, no longer
    /// blocked, calls a feed operation again.
    pub(super) async fn note_feed_owner(&self, guard: &Guard<'_>, feed_op: bool) {
        let blocked = guard.is_blocked();
        if !blocked && !feed_op {
            return;
        }
        if let Err(e) =
            feeds::mark_owner_blocked(&self.inner.db, guard.tenant(), guard.user(), blocked).await
        {
            tracing::warn!(error = %e, "the feeds' owner mark could not be written");
        }
    }

    pub(super) async fn feed_create(
        &self,
        guard: &Guard<'_>,
        spec: Checked<FeedSpec>,
    ) -> Result<Reply, AppError> {
        if guard.is_blocked() {
            return Err(AppError::Forbidden("Permission denied"));
        }
        let spec = spec?;
        let token = new_token();
        let ctx = guard.ctx();
        let feed = Feed {
            id: uuid::Uuid::new_v4(),
            tenant: guard.tenant(),
            owner: guard.user(),
            tenant_slug: ctx.tenant_slug.clone(),
            scope: spec.scope,
            my_rsvp: spec.my_rsvp,
            owner_blocked: false,
            created_at: crate::domain::truncate_to_micros(Utc::now()),
        };
        let mut owed = guard.take_audit();
        owed.push(AuditEntry {
            tenant_id: Some(ctx.tenant_id),
            actor_user_id: Some(ctx.user_id),
            action: "feed.created",
            target_type: "feed",
            target_id: Some(feed.id.to_string()),
            request_id: Some(ctx.request_id.clone()),
            details: json!({}),
        });
        if !feeds::create(&self.inner.db, &feed, &token_hash(&token), &owed, MAX_FEEDS).await? {
            return Err(AppError::rejected(
                crate::domain::ErrorCode::Conflict,
                format!("At most {MAX_FEEDS} feeds per user; revoke one first"),
            ));
        }
        let mut reply = feed_json(&feed);
        reply["token"] = Value::String(token.clone());
        reply["url"] = Value::String(feed_url(&token));
        Ok(Reply::Json(reply))
    }

    pub(super) async fn feed_list(&self, guard: &Guard<'_>) -> Result<Reply, AppError> {
        let items: Vec<Value> = feeds::list(&self.inner.db, guard.tenant(), guard.user())
            .await?
            .iter()
            .map(feed_json)
            .collect();
        Ok(Reply::Json(json!({ "items": items })))
    }

    /// The owner revokes their feed; a tenant admin any feed of the tenant.
    /// Another's feed is 404 to everyone else, as a missing one.
    pub(super) async fn feed_revoke(
        &self,
        guard: &Guard<'_>,
        id: Checked<uuid::Uuid>,
    ) -> Result<Reply, AppError> {
        let id = id?;
        let tenant = guard.tenant();
        let feed = feeds::get(&self.inner.db, tenant, id)
            .await?
            .ok_or_else(|| {
                AppError::rejected(crate::domain::ErrorCode::NotFound, "Feed not found")
            })?;
        let own = feed.owner == guard.user();
        if !own && !guard.is_tenant_admin().await? {
            return Err(AppError::rejected(
                crate::domain::ErrorCode::NotFound,
                "Feed not found",
            ));
        }
        let ctx = guard.ctx();
        let mut owed = guard.take_audit();
        owed.push(AuditEntry {
            tenant_id: Some(ctx.tenant_id),
            actor_user_id: Some(ctx.user_id),
            action: "feed.revoked",
            target_type: "feed",
            target_id: Some(id.to_string()),
            request_id: Some(ctx.request_id.clone()),
            details: json!({"owner": feed.owner.to_string(), "via": if own { "owner" } else { "tenant_admin" }}),
        });
        let revoked = feeds::revoke(&self.inner.db, tenant, id, &owed).await?;
        self.inner.feeds.forget_all();
        Ok(Reply::Json(json!({ "revoked": u8::from(revoked) })))
    }

    /// `GET /feeds/<token>.ics`: no signature, the token is the credential.
    /// `file` is the last path segment (`<token>.ics`). Unknown, revoked
    /// and malformed tokens and blocked owners are all 404.
    pub async fn feed_calendar(
        &self,
        file: &str,
        if_none_match: Option<&str>,
    ) -> Result<FeedAnswer, AppError> {
        let not_found = || AppError::rejected(crate::domain::ErrorCode::NotFound, "Feed not found");
        let token = file.strip_suffix(".ics").unwrap_or(file);
        let key = token_hash(token);
        // Counted before anything is looked up, unknown tokens too: a
        // guesser is slowed down as much as a client that polls too often.
        self.inner
            .feeds
            .take(&key, Instant::now())
            .map_err(|retry_after| AppError::TooManyRequests { retry_after })?;
        if token.len() != TOKEN_CHARS
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(not_found());
        }
        let Some(feed) = feeds::by_token_hash(&self.inner.db, &key).await? else {
            self.inner.feeds.forget(&key);
            return Err(not_found());
        };
        if feed.owner_blocked {
            return Err(not_found());
        }
        let events = self.feed_events(&feed).await?;
        // The series of the occurrences shown, written as their rules.
        let mut series_ids: Vec<crate::domain::SeriesId> = events
            .iter()
            .filter_map(|e| e.series.map(|l| l.series_id))
            .collect();
        series_ids.sort();
        series_ids.dedup();
        let mut series = Vec::with_capacity(series_ids.len());
        if !series_ids.is_empty() {
            let mut conn = self.inner.db.acquire().await?;
            for id in series_ids {
                if let Some(s) = crate::store::series::get(&mut conn, feed.tenant, id).await? {
                    series.push(s);
                }
            }
        }
        let digest = {
            let mut h = Sha256::new();
            h.update(feed.tenant_slug.as_bytes());
            for e in &events {
                h.update(uuid::Uuid::from(e.id).as_bytes());
                h.update(e.version.to_be_bytes());
                h.update(e.updated_at.timestamp_micros().to_be_bytes());
            }
            for s in &series {
                h.update(uuid::Uuid::from(s.id).as_bytes());
                h.update(s.version.to_be_bytes());
                h.update(s.updated_at.timestamp_micros().to_be_bytes());
            }
            <[u8; 32]>::from(h.finalize())
        };
        let (body, etag) = match self.inner.feeds.cached(&key, &digest) {
            Some(hit) => hit,
            None => {
                let body = Arc::new(ics::render_feed(&events, &series, &feed.tenant_slug));
                let etag = format!(
                    "\"{}\"",
                    hex::encode(&Sha256::digest(body.as_bytes())[..16])
                );
                self.inner.feeds.keep(
                    key,
                    Rendered {
                        digest,
                        body: body.clone(),
                        etag: etag.clone(),
                    },
                );
                (body, etag)
            }
        };
        if if_none_match.is_some_and(|v| matches_etag(v, &etag)) {
            return Ok(FeedAnswer::NotModified { etag });
        }
        Ok(FeedAnswer::Calendar { body, etag })
    }

    /// The events of the feed the owner may see now, judged as the owner
    /// with no master flags.
    async fn feed_events(&self, feed: &Feed) -> Result<Vec<Event>, AppError> {
        let ctx = InternalContext {
            request_id: format!("feed-{}", feed.id),
            tenant_id: feed.tenant.into(),
            tenant_slug: feed.tenant_slug.clone(),
            user_id: feed.owner.into(),
            master_flags: MasterFlags::default(),
            signature_version: SignatureVersion::V2,
            signature: String::new(),
            timestamp: Utc::now().timestamp(),
        };
        let guard = Guard::new(
            &ctx,
            self.inner.authorizer.as_ref(),
            "feed.calendar",
            self.inner.authz_max_calls,
        );
        let filter = ListFilter {
            from: Some(Utc::now() - chrono::Duration::days(FEED_DAYS_BACK)),
            scope: feed
                .scope
                .as_ref()
                .map(|s| (s.scope_type(), s.scope_id().as_str().to_string())),
            my_rsvp: feed.my_rsvp,
            limit: FEED_MAX_EVENTS,
            offset: 0,
            ..ListFilter::default()
        };
        let (rows, _, partial) = match self.visible_rows(&guard, &filter).await {
            Ok(listed) => listed,
            // The owner may no longer read there: the feed is gone for them.
            Err(AppError::Forbidden(_)) => {
                return Err(AppError::rejected(
                    crate::domain::ErrorCode::NotFound,
                    "Feed not found",
                ));
            }
            Err(e) => return Err(e),
        };
        if partial {
            // A feed missing some events would make calendar apps delete
            // them; better to be retried.
            return Err(AppError::Unavailable {
                code: crate::domain::ErrorCode::PortalUnavailable,
                message: "Memberships could not be checked; try again shortly".into(),
            });
        }
        Ok(rows
            .into_iter()
            .map(|(e, _, _, _)| Arc::unwrap_or_clone(e))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_CHARS);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn the_bucket_refuses_past_its_rate_and_refills() {
        let state = FeedState::new(2);
        let key = [7u8; 32];
        let t0 = Instant::now();
        assert!(state.take(&key, t0).is_ok());
        assert!(state.take(&key, t0).is_ok());
        let wait = state.take(&key, t0);
        assert_eq!(wait, Err(30));
        assert!(
            state
                .take(&key, t0 + std::time::Duration::from_secs(31))
                .is_ok()
        );
        assert!(state.take(&[8u8; 32], t0).is_ok());
    }

    #[test]
    fn etags_match_lists_and_weak_forms() {
        assert!(matches_etag("\"abc\"", "\"abc\""));
        assert!(matches_etag("\"x\", W/\"abc\"", "\"abc\""));
        assert!(matches_etag("*", "\"abc\""));
        assert!(!matches_etag("\"abd\"", "\"abc\""));
    }
}
