//! The list read model: per tenant, every event in list order with its
//! counters, so that `event.list` filters, counts and pages in memory
//! instead of making Postgres count every visible event on every request.
//!
//! A tenant is loaded from Postgres on its first list. From then on the
//! scope actors keep it: each group commit applies the events it changed
//! before its callers get their replies, so a caller lists its own writes.
//! A change this model cannot apply itself (made by another instance, the
//! CLI, a DSAR erasure) drops the tenant, and the next list loads it again.
//! Entries carry the event's revision, and the newer revision wins, so
//! commits that finish out of order, and commits that land while a load
//! runs, leave the newest state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Event, EventId, RsvpCounts, Scope, ScopeType, TenantId, UserId, Visibility};
use crate::store::reads::ListFilter;

/// One listed event as of one revision.
#[derive(Debug, Clone)]
pub struct Listed {
    pub event: Arc<Event>,
    pub counts: RsvpCounts,
    pub revision: i64,
}

/// Who is looking.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// A system admin: every event.
    Everything,
    /// Public events, the viewer's own, and membership-gated events of the
    /// scopes the viewer is a member of.
    Member {
        user: UserId,
        member_of: HashSet<Scope>,
    },
}

impl Viewer {
    fn sees(&self, e: &Event) -> bool {
        match self {
            Viewer::Everything => true,
            Viewer::Member { user, member_of } => {
                e.visibility == Visibility::Public
                    || e.created_by == *user
                    || (is_gated(e) && member_of.contains(&e.scope))
            }
        }
    }
}

/// Whether an event passes a list's filters (those [`Listing::answers`]
/// takes), exactly as `store::reads::list` filters in SQL.
fn matches(f: &ListFilter, e: &Event) -> bool {
    if let Some((scope_type, scope_id)) = &f.scope
        && (e.scope.scope_type() != *scope_type || e.scope.scope_id().as_str() != scope_id)
    {
        return false;
    }
    // Overlap with [from, to], bounds included.
    f.from.is_none_or(|from| e.ends_at >= from)
        && f.to.is_none_or(|to| e.starts_at <= to)
        && f.visibility.is_none_or(|v| e.visibility == v)
        && f.created_by.is_none_or(|by| e.created_by == by)
}

/// List order: `starts_at`, then the id (as Postgres orders uuids: bytewise).
type Position = (DateTime<Utc>, Uuid);

struct Events {
    ordered: BTreeMap<Position, Listed>,
    at: HashMap<EventId, Position>,
    /// Events only members of their scope may see: while there are none,
    /// a list needs no memberships.
    gated: usize,
    loaded: Instant,
}

fn is_gated(e: &Event) -> bool {
    matches!(
        (e.visibility, e.scope.scope_type()),
        (Visibility::Community, ScopeType::Community) | (Visibility::Team, ScopeType::Team)
    )
}

impl Events {
    fn new() -> Self {
        Self {
            ordered: BTreeMap::new(),
            at: HashMap::new(),
            gated: 0,
            loaded: Instant::now(),
        }
    }

    fn expired(&self) -> bool {
        self.loaded.elapsed() >= LIFETIME
    }

    /// Takes `listed` unless a newer revision of the event is here.
    fn apply(&mut self, listed: Listed) {
        let id = listed.event.id;
        if let Some(position) = self.at.get(&id) {
            if self
                .ordered
                .get(position)
                .is_some_and(|old| old.revision > listed.revision)
            {
                return;
            }
            if let Some(old) = self.ordered.remove(position)
                && is_gated(&old.event)
            {
                self.gated -= 1;
            }
        }
        if is_gated(&listed.event) {
            self.gated += 1;
        }
        let position = (listed.event.starts_at, Uuid::from(id));
        self.at.insert(id, position);
        self.ordered.insert(position, listed);
    }
}

enum Tenant {
    Loaded(Events),
    /// A load is running: commits are kept here and applied on top of it.
    Loading {
        generation: u64,
        pending: Vec<Listed>,
    },
    /// More events than one tenant may hold here: Postgres lists them.
    TooLarge,
}

/// A loaded tenant is read again after this long: a bound on staleness
/// should a change ever bypass the paths that apply or forget it.
const LIFETIME: Duration = Duration::from_secs(60);
/// Tenants with more events than this are listed by Postgres.
pub const MAX_EVENTS_PER_TENANT: usize = 20_000;
/// All tenants together (an event here costs about 1 KB, shared with the
/// scope actors' caches where both hold it).
const MAX_EVENTS: usize = 100_000;

/// The read model of every tenant that was listed on this instance.
#[derive(Default)]
pub struct Listing {
    tenants: RwLock<HashMap<TenantId, Tenant>>,
    generation: AtomicU64,
}

/// A load the caller runs and hands back with [`Listing::install`].
pub struct Load {
    pub tenant: TenantId,
    generation: u64,
}

impl Listing {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<TenantId, Tenant>> {
        self.tenants.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TenantId, Tenant>> {
        self.tenants.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The events a commit changed (of one tenant), applied where the tenant
    /// is loaded or loading.
    pub fn apply(&self, tenant: TenantId, changed: impl IntoIterator<Item = Listed>) {
        let mut tenants = self.write();
        match tenants.get_mut(&tenant) {
            Some(Tenant::Loaded(events)) => changed.into_iter().for_each(|l| events.apply(l)),
            Some(Tenant::Loading { pending, .. }) => pending.extend(changed),
            Some(Tenant::TooLarge) | None => {}
        }
    }

    /// Forgets a tenant whose events changed in a way this model cannot
    /// apply; a load running now is discarded when it ends.
    pub fn forget(&self, tenant: TenantId) {
        self.write().remove(&tenant);
    }

    /// Whether this model can answer a list with these filters: not by text
    /// or by the caller's RSVP, which it does not hold.
    pub fn answers(filter: &ListFilter) -> bool {
        filter.q.is_none() && filter.my_rsvp.is_none()
    }

    /// One page of what `viewer` may see of `tenant`, and how many events
    /// that is in all; `None` when the tenant is not loaded. Filters the
    /// model does not [answer](Self::answers) are ignored.
    pub fn page(
        &self,
        tenant: TenantId,
        query: &ListFilter,
        viewer: &Viewer,
    ) -> Option<(Vec<Listed>, usize)> {
        let offset = usize::try_from(query.offset).unwrap_or(0);
        let limit = usize::try_from(query.limit).unwrap_or(0);
        let tenants = self.read();
        let Some(Tenant::Loaded(events)) = tenants.get(&tenant) else {
            return None;
        };
        if events.expired() {
            return None;
        }
        let mut total = 0;
        let mut page = Vec::with_capacity(limit.min(events.at.len()));
        // `from` bounds `ends_at`, not the order: the walk starts at the first event.
        let end = query.to.map(|to| (to, Uuid::max()));
        let range = match end {
            Some(end) => events.ordered.range(..=end),
            None => events.ordered.range(..),
        };
        for listed in range.map(|(_, l)| l) {
            if !(matches(query, &listed.event) && viewer.sees(&listed.event)) {
                continue;
            }
            if total >= offset && page.len() < limit {
                page.push(listed.clone());
            }
            total += 1;
        }
        Some((page, total))
    }

    /// Whether a loaded tenant has events only members may see (`None`:
    /// not loaded).
    pub fn has_gated(&self, tenant: TenantId) -> Option<bool> {
        match self.read().get(&tenant) {
            Some(Tenant::Loaded(events)) if !events.expired() => Some(events.gated > 0),
            _ => None,
        }
    }

    /// Starts a load of `tenant` unless it is loaded, loading or too large
    /// (then `None`: the caller lists from Postgres this time).
    pub fn begin_load(&self, tenant: TenantId) -> Option<Load> {
        let mut tenants = self.write();
        match tenants.get(&tenant) {
            Some(Tenant::Loaded(events)) if events.expired() => {}
            Some(_) => return None,
            None => {}
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        tenants.insert(
            tenant,
            Tenant::Loading {
                generation,
                pending: Vec::new(),
            },
        );
        Some(Load { tenant, generation })
    }

    /// Ends a load with what Postgres returned: `Ok(None)` when the tenant
    /// has more than [`MAX_EVENTS_PER_TENANT`], `Err` when the read failed
    /// (the next list tries again). Commits made meanwhile are applied on
    /// top; if the tenant was forgotten meanwhile, the load is dropped.
    pub fn install<E>(&self, load: Load, rows: Result<Option<Vec<Listed>>, E>) {
        let mut tenants = self.write();
        let ours = matches!(
            tenants.get(&load.tenant),
            Some(Tenant::Loading { generation, .. }) if *generation == load.generation
        );
        if !ours {
            return;
        }
        let Some(Tenant::Loading { pending, .. }) = tenants.remove(&load.tenant) else {
            return;
        };
        let rows = match rows {
            Ok(Some(rows)) => rows,
            Ok(None) => {
                tenants.insert(load.tenant, Tenant::TooLarge);
                return;
            }
            Err(_) => return,
        };
        let mut events = Events::new();
        rows.into_iter()
            .chain(pending)
            .for_each(|l| events.apply(l));
        let held: usize = tenants
            .values()
            .map(|t| match t {
                Tenant::Loaded(events) => events.at.len(),
                _ => 0,
            })
            .sum();
        if held + events.at.len() > MAX_EVENTS {
            // Rarely reached: the tenants listed again load again.
            tenants.retain(|_, t| !matches!(t, Tenant::Loaded(_)));
        }
        tenants.insert(load.tenant, Tenant::Loaded(events));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TENANT: &str = "7d0a3f4e-4d3c-4b1e-9a55-0c2f8e1b6a10";

    fn tenant() -> TenantId {
        TenantId::parse(TENANT).unwrap_or_else(|e| panic!("{e}"))
    }

    fn user(n: u8) -> UserId {
        UserId::from(Uuid::from_bytes([n; 16]))
    }

    fn listed(n: u8, starts: &str, visibility: &str, revision: i64) -> Listed {
        let body = json!({
            "scopeType": "TENANT", "scopeId": TENANT, "title": format!("Event {n}"),
            "startsAt": starts, "endsAt": "2031-01-01T00:00:00Z", "visibility": visibility,
        });
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_timezone(&Utc);
        let event = crate::app::requests::new_event(tenant(), &body)
            .unwrap_or_else(|e| panic!("{body}: {e:?}"))
            .into_event(EventId::from(Uuid::from_bytes([n; 16])), user(1), at);
        Listed {
            event: Arc::new(event),
            counts: RsvpCounts::default(),
            revision,
        }
    }

    fn loaded(rows: Vec<Listed>) -> Listing {
        let listing = Listing::default();
        let load = begin(&listing);
        listing.install::<()>(load, Ok(Some(rows)));
        listing
    }

    fn titles(listing: &Listing, query: &ListFilter, viewer: &Viewer) -> (Vec<String>, usize) {
        let (page, total) = listing
            .page(tenant(), query, viewer)
            .unwrap_or_else(|| panic!("loaded"));
        let titles = page.iter().map(|l| l.event.title.to_string()).collect();
        (titles, total)
    }

    fn query(offset: i64, limit: i64) -> ListFilter {
        ListFilter {
            offset,
            limit,
            ..ListFilter::default()
        }
    }

    fn begin(listing: &Listing) -> Load {
        listing
            .begin_load(tenant())
            .unwrap_or_else(|| panic!("a load"))
    }

    #[test]
    fn pages_in_start_order_and_counts_everything_visible() {
        let listing = loaded(vec![
            listed(3, "2030-01-03T00:00:00Z", "public", 1),
            listed(1, "2030-01-01T00:00:00Z", "public", 1),
            listed(2, "2030-01-02T00:00:00Z", "private", 1),
            listed(4, "2030-01-04T00:00:00Z", "public", 1),
        ]);
        let stranger = Viewer::Member {
            user: user(9),
            member_of: HashSet::new(),
        };
        assert_eq!(
            titles(&listing, &query(1, 2), &stranger),
            (vec!["Event 3".to_string(), "Event 4".to_string()], 3)
        );
        // The creator sees their private event; an admin sees it too.
        let creator = Viewer::Member {
            user: user(1),
            member_of: HashSet::new(),
        };
        assert_eq!(titles(&listing, &query(0, 10), &creator).1, 4);
        assert_eq!(titles(&listing, &query(0, 10), &Viewer::Everything).1, 4);
        let upto = ListFilter {
            to: Some(
                listed(2, "2030-01-02T00:00:00Z", "public", 1)
                    .event
                    .starts_at,
            ),
            ..query(0, 10)
        };
        assert_eq!(titles(&listing, &upto, &stranger).0, vec!["Event 1"]);
    }

    #[test]
    fn members_see_the_gated_events_of_their_scopes_only() {
        let community = |n: u8, scope: &str| {
            let mut l = listed(n, "2030-01-01T00:00:00Z", "public", 1);
            let mut e = (*l.event).clone();
            e.scope = Scope::from_stored(
                ScopeType::Community,
                crate::domain::ScopeId::parse(scope).unwrap_or_else(|e| panic!("{e}")),
            );
            e.visibility = Visibility::Community;
            e.created_by = user(2);
            l.event = Arc::new(e);
            l
        };
        let listing = loaded(vec![listed(1, "2030-01-01T00:00:00Z", "public", 1)]);
        assert_eq!(listing.has_gated(tenant()), Some(false));
        listing.apply(tenant(), [community(2, "guild"), community(3, "other")]);
        assert_eq!(listing.has_gated(tenant()), Some(true));
        let member = Viewer::Member {
            user: user(9),
            member_of: [community(2, "guild").event.scope.clone()].into(),
        };
        assert_eq!(titles(&listing, &query(0, 10), &member).1, 2);
        // Made public: no longer gated.
        let mut opened = community(2, "guild");
        let mut e = (*opened.event).clone();
        e.visibility = Visibility::Public;
        opened.event = Arc::new(e);
        opened.revision = 2;
        let mut closed = community(3, "other");
        let mut e = (*closed.event).clone();
        e.visibility = Visibility::Private;
        closed.event = Arc::new(e);
        closed.revision = 2;
        listing.apply(tenant(), [opened, closed]);
        assert_eq!(listing.has_gated(tenant()), Some(false));
    }

    #[test]
    fn the_newer_revision_wins_and_a_moved_event_moves() {
        let listing = loaded(vec![
            listed(1, "2030-01-01T00:00:00Z", "public", 1),
            listed(2, "2030-01-02T00:00:00Z", "public", 1),
        ]);
        listing.apply(tenant(), [listed(1, "2030-01-05T00:00:00Z", "public", 3)]);
        // A commit that finished later but is older changes nothing.
        listing.apply(tenant(), [listed(1, "2030-01-01T00:00:00Z", "public", 2)]);
        let (order, total) = titles(&listing, &query(0, 10), &Viewer::Everything);
        assert_eq!(
            (order, total),
            (vec!["Event 2".into(), "Event 1".into()], 2)
        );
    }

    #[test]
    fn commits_during_a_load_are_kept_and_a_forgotten_load_is_dropped() {
        let listing = Listing::default();
        let load = begin(&listing);
        assert!(listing.begin_load(tenant()).is_none(), "one load at a time");
        listing.apply(tenant(), [listed(5, "2030-01-05T00:00:00Z", "public", 1)]);
        listing.install::<()>(
            load,
            Ok(Some(vec![listed(1, "2030-01-01T00:00:00Z", "public", 1)])),
        );
        assert_eq!(titles(&listing, &query(0, 10), &Viewer::Everything).1, 2);

        listing.forget(tenant());
        assert!(
            listing
                .page(tenant(), &query(0, 10), &Viewer::Everything)
                .is_none()
        );
        let stale = begin(&listing);
        listing.forget(tenant());
        listing.install::<()>(stale, Ok(Some(Vec::new())));
        assert!(
            listing
                .page(tenant(), &query(0, 10), &Viewer::Everything)
                .is_none(),
            "a load that a change overtook is not installed"
        );
    }

    #[test]
    fn a_tenant_too_large_is_not_loaded_again_until_it_changes() {
        let listing = Listing::default();
        let load = begin(&listing);
        listing.install::<()>(load, Ok(None));
        assert!(listing.begin_load(tenant()).is_none());
        listing.forget(tenant());
        assert!(listing.begin_load(tenant()).is_some());
    }
}
