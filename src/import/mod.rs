//! `events-svc import django`: the cut-over from the Django service.
//!
//! Reads the original's tables in one snapshot ([`source`]), maps each row
//! to ours ([`mapping`]), and writes it through the decide step like any
//! other write (counters, revisions, the same writers), batch by batch,
//! each batch one transaction together with its record in `django_import`.
//! That record makes the import idempotent and resumable: a re-run skips
//! rows whose source fingerprint is unchanged, updates changed ones, and
//! reports recorded rows that are gone from the source. History publishes
//! nothing; the source's unpublished outbox rows are carried over as
//! pending rows with their own ids, in their order.

pub mod mapping;
pub mod progress;
pub mod source;
pub mod verify;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use crate::actors::ScopeKey;
use crate::domain::commands::{Command, CommandKind, Outcome, Refusal};
use crate::domain::{EventId, EventPatch, TenantId, Tri, UserId};
use crate::names::Subjects;
use crate::store::batch::{BatchEffects, apply_history};
use crate::store::imports::{self, CarriedRow, Entry, Kind};
use progress::Progress;
use source::Source;

/// Event types the stream carries; a source row of another type is refused.
const OUTBOX_TYPES: [&str; 5] = [
    "event.created",
    "event.updated",
    "event.cancelled",
    "event.rsvp.changed",
    "event.attendance.marked",
];

#[derive(Debug, Clone)]
pub struct Options {
    pub tenant: Option<Uuid>,
    pub dry_run: bool,
    pub fix: bool,
    pub batch: i64,
}

/// A source row left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub table: &'static str,
    pub id: String,
    pub reason: String,
}

/// What one table's rows did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub fixed: u64,
    pub refused: u64,
}

impl Tally {
    /// A row written: created, or updated when it was imported before.
    fn written(&mut self, before: bool) {
        if before {
            self.updated += 1;
        } else {
            self.created += 1;
        }
    }
}

/// The whole run.
#[derive(Debug, Default)]
pub struct Report {
    pub tallies: BTreeMap<&'static str, Tally>,
    pub refusals: Vec<Listed>,
    /// Recorded rows that the source no longer has: `(table, id)`.
    pub gone: Vec<(&'static str, String)>,
    /// Events whose rows changed, by scope: what running instances must reload.
    pub changed: HashMap<ScopeKey, Vec<EventId>>,
    /// Per tenant, the source's unpublished outbox rows that are carried
    /// over (now or by an earlier run). Counted here, not from the record:
    /// a row the Django publisher stamped since an earlier run is no
    /// longer unpublished there, but stays recorded here.
    pub outbox_here: HashMap<Uuid, i64>,
}

impl Report {
    fn tally(&mut self, table: &'static str) -> &mut Tally {
        self.tallies.entry(table).or_default()
    }

    fn refuse(&mut self, table: &'static str, id: impl ToString, reason: impl Into<String>) {
        self.tally(table).refused += 1;
        self.refusals.push(Listed {
            table,
            id: id.to_string(),
            reason: reason.into(),
        });
    }

    fn note(&mut self, effects: &BatchEffects) {
        for e in &effects.changed {
            self.changed
                .entry(ScopeKey::of(&e.event))
                .or_default()
                .push(e.event.id);
        }
    }
}

/// Runs the import. `Err` is a failure to read or write (the message says
/// which side); refusals and gone rows are in the report.
pub async fn run(
    source: &mut Source,
    db: &PgPool,
    subjects: &Subjects,
    options: &Options,
    progress: &mut Progress,
) -> Result<Report, String> {
    let src = |e: sqlx::Error| format!("reading the source failed: {e}");
    let dst = |e: sqlx::Error| format!("writing here failed: {e}");
    let totals = source.totals().await.map_err(src)?;
    let mut report = Report::default();
    let batch = options.batch.max(1);

    progress.start("events", totals[0]);
    let mut seen_events = HashSet::new();
    let mut after = None;
    loop {
        let rows = source.events(after, batch).await.map_err(src)?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        seen_events.extend(rows.iter().map(|r| (r.id, Uuid::nil())));
        events_batch(db, subjects, options, &rows, &mut report)
            .await
            .map_err(dst)?;
        progress.advance(rows.len());
    }
    progress.finish();

    progress.start("rsvps", totals[1]);
    let mut seen_rsvps = HashSet::new();
    let mut after = 0;
    loop {
        let rows = source.rsvps(after, batch).await.map_err(src)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        seen_rsvps.extend(rows.iter().map(|r| (r.event_id, r.user_id)));
        rsvps_batch(db, subjects, options, &rows, &mut report)
            .await
            .map_err(dst)?;
        progress.advance(rows.len());
    }
    progress.finish();

    progress.start("attendance", totals[2]);
    let mut seen_marks = HashSet::new();
    let mut after = 0;
    loop {
        let rows = source.attendance(after, batch).await.map_err(src)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        seen_marks.extend(rows.iter().map(|r| (r.event_id, r.user_id)));
        attendance_batch(db, subjects, options, &rows, &mut report)
            .await
            .map_err(dst)?;
        progress.advance(rows.len());
    }
    progress.finish();

    progress.start("outbox", totals[3]);
    let mut after = None;
    loop {
        let rows = source.unpublished(after, batch).await.map_err(src)?;
        let Some(last) = rows.last() else { break };
        after = Some((last.occurred_at, last.id));
        outbox_batch(db, subjects, options, &rows, &mut report)
            .await
            .map_err(dst)?;
        progress.advance(rows.len());
    }
    progress.finish();

    for (kind, table, seen) in [
        (Kind::Event, "events", &seen_events),
        (Kind::Rsvp, "rsvps", &seen_rsvps),
        (Kind::Attendance, "attendance", &seen_marks),
    ] {
        let mut gone: Vec<_> = imports::recorded(db, kind, options.tenant)
            .await
            .map_err(dst)?
            .into_iter()
            .filter(|k| !seen.contains(k))
            .collect();
        gone.sort();
        for (row, user) in gone {
            let id = if user.is_nil() {
                row.to_string()
            } else {
                format!("{row}/{user}")
            };
            report.gone.push((table, id));
        }
    }
    Ok(report)
}

/// Splits rows into new or changed ones (with their fingerprints) and
/// counts the unchanged ones.
async fn classify<'r, R: serde::Serialize>(
    db: &PgPool,
    kind: Kind,
    rows: &'r [R],
    key: impl Fn(&R) -> imports::Key,
    tally: &mut Tally,
) -> Result<Vec<(&'r R, Vec<u8>, bool)>, sqlx::Error> {
    let keys: Vec<imports::Key> = rows.iter().map(&key).collect();
    let mut conn = db.acquire().await?;
    let known = imports::fingerprints(&mut conn, kind, &keys).await?;
    let mut todo = Vec::new();
    for row in rows {
        let print = source::fingerprint(row);
        match known.get(&key(row)) {
            Some(p) if *p == print => tally.unchanged += 1,
            Some(_) => todo.push((row, print, true)),
            None => todo.push((row, print, false)),
        }
    }
    Ok(todo)
}

async fn events_batch(
    db: &PgPool,
    subjects: &Subjects,
    options: &Options,
    rows: &[source::SourceEvent],
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    let todo = classify(
        db,
        Kind::Event,
        rows,
        |r| (r.id, Uuid::nil()),
        report.tally("events"),
    )
    .await?;
    let mut tx = db.begin().await?;
    let ids: Vec<Uuid> = todo.iter().map(|(r, _, _)| r.id).collect();
    let here = imports::event_tenants(&mut tx, &ids).await?;
    let now = Utc::now();
    // Per tenant: the commands, and for each its ledger entry and whether it creates.
    let mut by_tenant: BTreeMap<Uuid, Vec<(Command, Entry, bool)>> = BTreeMap::new();
    for (row, print, _) in todo {
        let mapped = match mapping::event(row, options.fix) {
            Ok(m) => m,
            Err(refused) => {
                let hint = if refused.fixable {
                    " (--fix imports it with the values it names)"
                } else {
                    ""
                };
                report.refuse(
                    "events",
                    row.id,
                    format!("{}{hint}", refused.reasons.join("; ")),
                );
                continue;
            }
        };
        let fixed = !mapped.fixes.is_empty();
        if fixed {
            report.tally("events").fixed += 1;
            report.refusals.push(Listed {
                table: "events",
                id: row.id.to_string(),
                reason: format!("fixed: {}", mapped.fixes.join("; ")),
            });
        }
        let entry = Entry {
            key: (row.id, Uuid::nil()),
            tenant: row.tenant_id,
            fingerprint: print,
            fixed,
        };
        let kind = match here.get(&row.id) {
            None => (
                CommandKind::Create {
                    event: Box::new(mapped.event.clone()),
                },
                true,
            ),
            Some(t) if *t != row.tenant_id => {
                report.refuse(
                    "events",
                    row.id,
                    "an event with this id belongs to another tenant here",
                );
                continue;
            }
            Some(_) => (
                CommandKind::Update {
                    event_id: mapped.event.id,
                    patch: Box::new(full_patch(&mapped.event)),
                },
                false,
            ),
        };
        let at = if kind.1 { mapped.event.updated_at } else { now };
        let command = Command {
            actor: mapped.event.created_by,
            at,
            kind: kind.0,
        };
        by_tenant
            .entry(row.tenant_id)
            .or_default()
            .push((command, entry, kind.1));
    }
    if options.dry_run {
        for (_, commands) in by_tenant {
            for (_, _, creates) in commands {
                report.tally("events").written(!creates);
            }
        }
        return Ok(());
    }
    for (tenant, items) in by_tenant {
        let commands: Vec<Command> = items.iter().map(|(c, _, _)| c.clone()).collect();
        let (verdicts, effects) =
            apply_history(&mut tx, subjects, TenantId::from(tenant), &commands).await?;
        report.note(&effects);
        let mut entries = Vec::new();
        for ((command, entry, creates), verdict) in items.into_iter().zip(verdicts) {
            match verdict {
                Ok(Outcome::Updated { changed: false, .. }) => {
                    report.tally("events").unchanged += 1;
                    entries.push(entry);
                }
                Ok(_) => {
                    report.tally("events").written(!creates);
                    entries.push(entry);
                }
                Err(refusal) => {
                    report.refuse("events", command.kind.event_id(), why(&refusal, "event"))
                }
            }
        }
        imports::record(&mut tx, Kind::Event, &entries).await?;
    }
    tx.commit().await
}

/// Every field the source has, as a patch (capacity is ours alone: kept).
fn full_patch(event: &crate::domain::Event) -> EventPatch {
    fn opt<T>(v: Option<T>) -> Tri<T> {
        v.map_or(Tri::Null, Tri::Set)
    }
    EventPatch {
        title: Tri::Set(event.title.clone()),
        description: Tri::Set(event.description.clone()),
        starts_at: Tri::Set(event.starts_at),
        ends_at: Tri::Set(event.ends_at),
        location_text: Tri::Set(event.location_text.clone()),
        location_url: opt(event.location_url.clone()),
        game_id: opt(event.game_id.clone()),
        visibility: Tri::Set(event.visibility),
        // Ours alone, like capacity: the RSVP rules.
        ..EventPatch::default()
    }
}

fn why(refusal: &Refusal, what: &str) -> String {
    match refusal {
        Refusal::NotFound => format!(
            "its event is not here in this tenant (refused, or missing at the source): the {what} cannot be imported"
        ),
        Refusal::Domain(e) => format!("refused here: {e}"),
    }
}

/// An RSVP command, its ledger entry, whether it was imported before, and
/// the source's time.
type RsvpItem = (Command, Entry, bool, chrono::DateTime<Utc>);

async fn rsvps_batch(
    db: &PgPool,
    subjects: &Subjects,
    options: &Options,
    rows: &[source::SourceRsvp],
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    let todo = classify(
        db,
        Kind::Rsvp,
        rows,
        |r| (r.event_id, r.user_id),
        report.tally("rsvps"),
    )
    .await?;
    let mut by_tenant: BTreeMap<Uuid, Vec<RsvpItem>> = BTreeMap::new();
    for (row, print, known) in todo {
        let requested = match mapping::rsvp_status(&row.status) {
            Ok(s) => s,
            Err(reason) => {
                report.refuse("rsvps", row.id, reason);
                continue;
            }
        };
        let at = crate::domain::truncate_to_micros(row.updated_at);
        let command = Command {
            actor: UserId::from(row.user_id),
            at,
            kind: CommandKind::SetRsvp {
                event_id: EventId::from(row.event_id),
                user: UserId::from(row.user_id),
                requested: Some(requested),
                guests: 0,
                // History: it happened, whenever it happened.
                window: false,
            },
        };
        let entry = Entry {
            key: (row.event_id, row.user_id),
            tenant: row.tenant_id,
            fingerprint: print,
            fixed: false,
        };
        by_tenant
            .entry(row.tenant_id)
            .or_default()
            .push((command, entry, known, at));
    }
    if options.dry_run {
        for (_, items) in by_tenant {
            for (_, _, known, _) in items {
                report.tally("rsvps").written(known);
            }
        }
        return Ok(());
    }
    let mut tx = db.begin().await?;
    for (tenant, items) in by_tenant {
        let commands: Vec<Command> = items.iter().map(|i| i.0.clone()).collect();
        let (verdicts, effects) =
            apply_history(&mut tx, subjects, TenantId::from(tenant), &commands).await?;
        report.note(&effects);
        let (mut entries, mut times) = (Vec::new(), Vec::new());
        for ((command, entry, known, at), verdict) in items.into_iter().zip(verdicts) {
            match verdict {
                Ok(_) => {
                    report.tally("rsvps").written(known);
                    times.push((entry.key.0, entry.key.1, at));
                    entries.push(entry);
                }
                Err(refusal) => {
                    let id = format!("{}/{}", command.kind.event_id(), entry.key.1);
                    report.refuse("rsvps", id, why(&refusal, "RSVP"));
                }
            }
        }
        imports::keep_rsvp_times(&mut tx, &times).await?;
        imports::record(&mut tx, Kind::Rsvp, &entries).await?;
    }
    tx.commit().await
}

async fn attendance_batch(
    db: &PgPool,
    subjects: &Subjects,
    options: &Options,
    rows: &[source::SourceAttendance],
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    let todo = classify(
        db,
        Kind::Attendance,
        rows,
        |r| (r.event_id, r.user_id),
        report.tally("attendance"),
    )
    .await?;
    if options.dry_run {
        for (_, _, known) in todo {
            report.tally("attendance").written(known);
        }
        return Ok(());
    }
    let mut tx = db.begin().await?;
    let mut by_tenant: BTreeMap<Uuid, Vec<(Command, Entry)>> = BTreeMap::new();
    let mut rewrites = Vec::new();
    let mut rewritten = Vec::new();
    for (row, print, known) in todo {
        let at = crate::domain::truncate_to_micros(row.marked_at);
        let entry = Entry {
            key: (row.event_id, row.user_id),
            tenant: row.tenant_id,
            fingerprint: print,
            fixed: false,
        };
        if known {
            rewrites.push((row.event_id, row.user_id, row.marked_by, at));
            rewritten.push(entry);
            continue;
        }
        let command = Command {
            actor: UserId::from(row.marked_by),
            at,
            kind: CommandKind::MarkAttendance {
                event_id: EventId::from(row.event_id),
                user: UserId::from(row.user_id),
            },
        };
        by_tenant
            .entry(row.tenant_id)
            .or_default()
            .push((command, entry));
    }
    let changed = imports::rewrite_marks(&mut tx, &rewrites).await?;
    report.tally("attendance").updated += changed.len() as u64;
    imports::record(&mut tx, Kind::Attendance, &rewritten).await?;
    for (tenant, items) in by_tenant {
        let commands: Vec<Command> = items.iter().map(|i| i.0.clone()).collect();
        let (verdicts, effects) =
            apply_history(&mut tx, subjects, TenantId::from(tenant), &commands).await?;
        report.note(&effects);
        let mut entries = Vec::new();
        for ((command, entry), verdict) in items.into_iter().zip(verdicts) {
            match verdict {
                Ok(_) => {
                    report.tally("attendance").created += 1;
                    entries.push(entry);
                }
                Err(refusal) => {
                    let id = format!("{}/{}", command.kind.event_id(), entry.key.1);
                    report.refuse("attendance", id, why(&refusal, "attendance"));
                }
            }
        }
        imports::record(&mut tx, Kind::Attendance, &entries).await?;
    }
    tx.commit().await
}

async fn outbox_batch(
    db: &PgPool,
    subjects: &Subjects,
    options: &Options,
    rows: &[source::SourceOutbox],
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    // Carried over once: a row recorded earlier is never sent again, even
    // after it was published and purged here.
    let keys: Vec<imports::Key> = rows.iter().map(|r| (r.id, Uuid::nil())).collect();
    let mut tx = db.begin().await?;
    let known = imports::fingerprints(&mut tx, Kind::Outbox, &keys).await?;
    let (mut carried, mut entries) = (Vec::new(), Vec::new());
    for row in rows {
        if known.contains_key(&(row.id, Uuid::nil())) {
            report.tally("outbox").unchanged += 1;
            *report.outbox_here.entry(row.tenant_id).or_default() += 1;
            continue;
        }
        if !OUTBOX_TYPES.contains(&row.event_type.as_str()) {
            report.refuse(
                "outbox",
                row.id,
                format!(
                    "event_type {:?} is not one the stream carries",
                    row.event_type
                ),
            );
            continue;
        }
        let event = row
            .payload
            .get("event_id")
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s.trim()).ok());
        let Some(event) = event else {
            report.refuse("outbox", row.id, "its payload names no event_id");
            continue;
        };
        if !row.payload.is_object() {
            report.refuse("outbox", row.id, "its payload is not a JSON object");
            continue;
        }
        carried.push(CarriedRow {
            id: row.id,
            tenant: row.tenant_id,
            event,
            event_type: row.event_type.clone(),
            subject: subjects.domain_event(&row.tenant_id, &row.event_type),
            payload: row.payload.clone(),
            occurred_at: crate::domain::truncate_to_micros(row.occurred_at),
        });
        entries.push(Entry {
            key: (row.id, Uuid::nil()),
            tenant: row.tenant_id,
            fingerprint: source::fingerprint(row),
            fixed: false,
        });
    }
    report.tally("outbox").created += carried.len() as u64;
    if options.dry_run {
        return Ok(());
    }
    for row in &carried {
        *report.outbox_here.entry(row.tenant).or_default() += 1;
    }
    imports::carry_outbox(&mut tx, &carried).await?;
    imports::record(&mut tx, Kind::Outbox, &entries).await?;
    tx.commit().await
}
