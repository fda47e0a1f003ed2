//! The verification at the end of an import: per tenant, what the source
//! holds against what was imported here, and per event the RSVP counts.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use sqlx::PgPool;
use uuid::Uuid;

use super::source::{Source, SourceCounts};
use crate::store::imports;

/// One tenant's line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCheck {
    pub tenant: Uuid,
    /// `(what, source, imported)`.
    pub rows: Vec<(&'static str, i64, i64)>,
    /// Events whose RSVP counts here differ from the source's.
    pub differing_events: Vec<Uuid>,
}

impl TenantCheck {
    pub fn agrees(&self) -> bool {
        self.differing_events.is_empty() && self.rows.iter().all(|(_, s, i)| s == i)
    }
}

/// Compares the source's snapshot with what is stored here.
///
/// `outbox_here`: per tenant, the snapshot's unpublished outbox rows that
/// are carried over (the run counted them).
pub async fn check(
    source: &mut Source,
    db: &PgPool,
    tenant: Option<Uuid>,
    outbox_here: &HashMap<Uuid, i64>,
) -> Result<Vec<TenantCheck>, String> {
    let src = |e: sqlx::Error| format!("reading the source failed: {e}");
    let dst = |e: sqlx::Error| format!("reading here failed: {e}");
    let counts = source.counts().await.map_err(src)?;
    let per_event = source.per_event_rsvps().await.map_err(src)?;
    let ours = imports::imported_counts(db, tenant).await.map_err(dst)?;
    let our_events = imports::imported_event_counts(db, tenant)
        .await
        .map_err(dst)?;

    let mut differing: HashMap<Uuid, BTreeSet<Uuid>> = HashMap::new();
    let mut in_source = BTreeSet::new();
    for (event, i, g, n) in &per_event {
        in_source.insert(*event);
        // RSVPs of an event that was not imported show in the totals.
        if let Some((t, oi, og, on)) = our_events.get(event)
            && (oi, og, on) != (i, g, n)
        {
            differing.entry(*t).or_default().insert(*event);
        }
    }
    for (event, (t, i, g, n)) in &our_events {
        if !in_source.contains(event) && (*i, *g, *n) != (0, 0, 0) {
            differing.entry(*t).or_default().insert(*event);
        }
    }

    let mut tenants: BTreeSet<Uuid> = counts.iter().map(|(t, _)| *t).collect();
    tenants.extend(ours.keys().copied());
    let by_tenant: HashMap<Uuid, SourceCounts> = counts.into_iter().collect();
    Ok(tenants
        .into_iter()
        .map(|t| {
            let s = by_tenant.get(&t).cloned().unwrap_or_default();
            let o = ours.get(&t).copied().unwrap_or_default();
            TenantCheck {
                tenant: t,
                rows: vec![
                    ("events", s.events, o[0]),
                    ("rsvps interested", s.interested, o[1]),
                    ("rsvps going", s.going, o[2]),
                    ("rsvps not_going", s.not_going, o[3]),
                    ("rsvps other", s.other_status, o[4]),
                    ("attendance", s.attendance, o[5]),
                    (
                        "unpublished outbox",
                        s.unpublished_outbox,
                        outbox_here.get(&t).copied().unwrap_or(0),
                    ),
                ],
                differing_events: differing
                    .remove(&t)
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default(),
            }
        })
        .collect())
}

/// The table, for stdout.
pub fn render(checks: &[TenantCheck]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<38} {:<20} {:>10} {:>10}  ",
        "tenant", "rows", "source", "imported"
    );
    for c in checks {
        for (what, s, i) in &c.rows {
            let mark = if s == i { "ok" } else { "DIFFERS" };
            let _ = writeln!(
                out,
                "{:<38} {:<20} {:>10} {:>10}  {mark}",
                c.tenant, what, s, i
            );
        }
        let n = c.differing_events.len();
        let mark = if n == 0 { "ok" } else { "DIFFERS" };
        let _ = writeln!(
            out,
            "{:<38} {:<20} {:>21}  {mark}",
            c.tenant,
            "per-event rsvpCounts",
            format!("{n} differ")
        );
        for e in c.differing_events.iter().take(20) {
            let _ = writeln!(
                out,
                "    event {e}: RSVP counts here differ from the source"
            );
        }
    }
    out
}
