//! `event.import`: the VEVENTs of an iCalendar document become events of
//! one scope, keyed by (tenant, scope, UID, RECURRENCE-ID) so that
//! importing the same calendar again updates what changed, leaves the rest
//! and creates no duplicates.
//!
//! Every write goes through the decide step under the counter locks, with
//! outbox rows (`event.created`, `event.updated`, `event.cancelled`) like
//! any other write, all in one transaction together with the keys and the
//! audit entry, so an import is applied whole or not at all. Imports into
//! one scope are serialised by a transaction-scoped advisory lock: two at
//! once cannot both create the same UID.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::actors::ScopeKey;
use crate::app::requests::ImportSpec;
use crate::app::{App, AppError, CallMeta, Reply};
use crate::authz::{Guard, Permission};
use crate::domain::commands::{Command, CommandKind, Outcome, Refusal, Verdict};
use crate::domain::ics_import::{self, Imported, Item, Refused};
use crate::domain::{
    ErrorCode, EventId, EventPatch, NewEvent, NewEventFields, Scope, Tri, Visibility,
};
use crate::store::audit::{self, AuditEntry};
use crate::store::batch::{ImportTrace, apply_imported};
use crate::store::ics_imports::{self, Key};

/// Items decided per call of the decide step (all in one transaction).
const CHUNK: usize = 500;

/// What one imported VEVENT asks of the decide step.
struct Planned {
    key: Key,
    uid: String,
    line: usize,
    print: [u8; 32],
    event: EventId,
    /// The ICS says `STATUS:CANCELLED`.
    cancelled: bool,
    creates: bool,
    /// Index of its first command in the chunk, and whether a cancel follows.
    first: usize,
    cancel: bool,
}

#[derive(Default)]
struct Tally {
    created: u64,
    updated: u64,
    unchanged: u64,
    skipped: Vec<Value>,
}

impl Tally {
    fn skip(&mut self, uid: &str, line: usize, reason: impl Into<String>) {
        self.skipped
            .push(json!({"uid": uid, "line": line, "reason": reason.into()}));
    }
}

fn refusal_reason(r: &Refusal) -> String {
    match r {
        Refusal::NotFound => "its event is no longer here".into(),
        Refusal::Domain(e) => e.message(),
    }
}

/// Every imported value as a patch (capacity, game and the rest are ours:
/// kept as they are).
fn patch_of(imported: &Imported, visibility: Visibility) -> EventPatch {
    EventPatch {
        title: Tri::Set(imported.title.clone()),
        description: Tri::Set(imported.description.clone()),
        starts_at: Tri::Set(imported.starts_at),
        ends_at: Tri::Set(imported.ends_at),
        location_text: Tri::Set(imported.location_text.clone()),
        location_url: imported.location_url.clone().map_or(Tri::Null, Tri::Set),
        game_id: Tri::Absent,
        visibility: Tri::Set(visibility),
        capacity: Tri::Absent,
        time_zone: Tri::Set(imported.time_zone),
        // The RSVP rules are ours: kept as they are.
        ..EventPatch::default()
    }
}

impl App {
    pub(super) async fn import(
        &self,
        guard: &Guard<'_>,
        spec: ImportSpec,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let ImportSpec {
            ics,
            scope,
            visibility,
        } = spec;
        guard.require(Permission::EventCreate, &scope).await?;
        if ics.len() > ics_import::MAX_BYTES {
            return Err(AppError::rejected(
                ErrorCode::PayloadTooLarge,
                format!(
                    "The calendar is larger than {} bytes",
                    ics_import::MAX_BYTES
                ),
            ));
        }
        let items = tokio::task::spawn_blocking(move || ics_import::read(&ics))
            .await
            .map_err(|e| AppError::internal("calendar parser", e))?
            .map_err(|refused| match refused {
                Refused::TooLarge(message) => {
                    AppError::rejected(ErrorCode::PayloadTooLarge, message)
                }
                Refused::Malformed { line, message } => AppError::Calendar { line, message },
            })?;
        let command_meta = self.meta(guard, meta);
        let tenant = guard.tenant();
        let mut tally = Tally::default();

        // One VEVENT per key: a later one with the same key is skipped.
        let mut first_line: HashMap<Key, usize> = HashMap::new();
        let mut todo: Vec<(Key, Imported, usize)> = Vec::new();
        for Item {
            uid,
            recurrence_id,
            line,
            outcome,
        } in items
        {
            match outcome {
                Err(reason) => tally.skip(&uid, line, reason),
                Ok(imported) => {
                    let key = (uid, recurrence_id);
                    if let Some(first) = first_line.get(&key) {
                        let reason = format!("the same UID as the VEVENT of line {first}");
                        tally.skip(&key.0, line, reason);
                    } else {
                        first_line.insert(key.clone(), line);
                        todo.push((key, imported, line));
                    }
                }
            }
        }

        let shared = self.inner.registry.shared().clone();
        let trace = ImportTrace {
            traceparent: command_meta.traceparent.clone(),
            tracestate: command_meta.tracestate.clone(),
            tenant_slug: command_meta.tenant_slug.clone(),
            now: command_meta.now,
        };
        let mut tx = self.inner.db.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "ics-import:{}:{}:{}",
                tenant,
                scope.scope_type(),
                scope.scope_id()
            ))
            .execute(&mut *tx)
            .await?;
        let keys: Vec<Key> = todo.iter().map(|(k, _, _)| k.clone()).collect();
        let known = ics_imports::known(&mut tx, tenant, &scope, &keys).await?;
        let extra = visibility.as_str();
        let mut changed_ids: Vec<EventId> = Vec::new();
        let mut recorded: Vec<(Key, EventId, [u8; 32])> = Vec::new();
        for chunk in todo.chunks(CHUNK) {
            let mut commands: Vec<Command> = Vec::new();
            let mut plans: Vec<Planned> = Vec::new();
            for (key, imported, line) in chunk {
                let print = imported.fingerprint(extra);
                let command = |kind: CommandKind| Command {
                    actor: command_meta.actor,
                    at: command_meta.now,
                    kind,
                };
                let (event, creates) = match known.get(key) {
                    Some(k) if k.fingerprint[..] == print[..] => {
                        tally.unchanged += 1;
                        continue;
                    }
                    Some(_) if imported.recurrence.is_some() => {
                        tally.skip(&key.0, *line, SERIES_NOT_UPDATED);
                        continue;
                    }
                    Some(k) => {
                        commands.push(command(CommandKind::Update {
                            event_id: k.event,
                            patch: Box::new(patch_of(imported, visibility)),
                        }));
                        (k.event, false)
                    }
                    None => {
                        let new = NewEvent::new(tenant, new_fields(imported, &scope, visibility));
                        let new = match new {
                            Ok(new) => new,
                            Err(e) => {
                                tally.skip(&key.0, *line, e.message());
                                continue;
                            }
                        };
                        let event =
                            new.into_event(EventId::new_v4(), command_meta.actor, command_meta.now);
                        if let Some(rule) = &imported.recurrence {
                            // A recurring VEVENT becomes a series, made like
                            // a recurring create, in this transaction.
                            if imported.cancelled {
                                tally.skip(
                                    &key.0,
                                    *line,
                                    "a cancelled recurring event is not imported",
                                );
                                continue;
                            }
                            let made = match self.series_of(&event, rule, &command_meta) {
                                Ok(made) => made,
                                Err(reason) => {
                                    tally.skip(&key.0, *line, reason);
                                    continue;
                                }
                            };
                            crate::store::series::insert_in(&mut tx, &made.series).await?;
                            let first_id = made.occurrences.first().map_or(event.id, |o| o.id);
                            let first = commands.len();
                            for occurrence in made.occurrences {
                                commands.push(command(CommandKind::Create {
                                    event: Box::new(occurrence),
                                }));
                            }
                            plans.push(Planned {
                                key: key.clone(),
                                uid: key.0.clone(),
                                line: *line,
                                print,
                                event: first_id,
                                cancelled: false,
                                creates: true,
                                first,
                                cancel: false,
                            });
                            continue;
                        }
                        let id = event.id;
                        commands.push(command(CommandKind::Create {
                            event: Box::new(event),
                        }));
                        (id, true)
                    }
                };
                let first = commands.len() - 1;
                // A new event is written as created first; a cancel of it
                // is decided after that commit step (see below).
                if imported.cancelled && !creates {
                    commands.push(command(CommandKind::Cancel {
                        event_id: event,
                        reason: None,
                    }));
                }
                plans.push(Planned {
                    key: key.clone(),
                    uid: key.0.clone(),
                    line: *line,
                    print,
                    event,
                    cancelled: imported.cancelled,
                    creates,
                    first,
                    cancel: imported.cancelled && !creates,
                });
            }
            if commands.is_empty() {
                continue;
            }
            let (verdicts, effects) =
                apply_imported(&mut tx, &shared.subjects, tenant, &commands, &trace).await?;
            changed_ids.extend(effects.changed.iter().map(|c| c.event.id));
            // VEVENTs new here and cancelled in the calendar: created
            // above, cancelled now, in the same transaction.
            let late: Vec<usize> = plans
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.creates
                        && p.cancelled
                        && matches!(verdicts.get(p.first), Some(Ok(Outcome::Created { .. })))
                })
                .map(|(i, _)| i)
                .collect();
            let mut late_verdicts: HashMap<usize, Verdict> = HashMap::new();
            if !late.is_empty() {
                let cancels: Vec<Command> = late
                    .iter()
                    .map(|i| Command {
                        actor: command_meta.actor,
                        at: command_meta.now,
                        kind: CommandKind::Cancel {
                            event_id: plans[*i].event,
                            reason: None,
                        },
                    })
                    .collect();
                let (verdicts, effects) =
                    apply_imported(&mut tx, &shared.subjects, tenant, &cancels, &trace).await?;
                changed_ids.extend(effects.changed.iter().map(|c| c.event.id));
                late_verdicts.extend(late.into_iter().zip(verdicts));
            }
            for (i, plan) in plans.into_iter().enumerate() {
                let main = verdicts.get(plan.first);
                let cancel = if plan.cancel {
                    verdicts.get(plan.first + 1)
                } else {
                    late_verdicts.get(&i)
                };
                self.count(&mut tally, &mut recorded, plan, main, cancel);
            }
        }
        ics_imports::record(&mut tx, tenant, &scope, &recorded).await?;
        let ctx = guard.ctx();
        let mut owed = command_meta.audit.clone();
        owed.push(AuditEntry {
            tenant_id: Some(ctx.tenant_id),
            actor_user_id: Some(ctx.user_id),
            action: "event.imported",
            target_type: "scope",
            target_id: Some(format!("{}:{}", scope.scope_type(), scope.scope_id())),
            request_id: Some(ctx.request_id.clone()),
            details: json!({
                "created": tally.created,
                "updated": tally.updated,
                "unchanged": tally.unchanged,
                "skipped": tally.skipped.len(),
            }),
        });
        audit::insert(&mut tx, &owed).await?;
        tx.commit().await?;

        if !changed_ids.is_empty() {
            let key = ScopeKey {
                tenant,
                scope_type: scope.scope_type(),
                scope_id: scope.scope_id().as_str().to_string(),
            };
            for id in &changed_ids {
                self.inner.index.insert(*id, key.clone());
            }
            self.inner.registry.invalidate(&key, &changed_ids).await;
            shared.outbox_wakeup.notify_one();
        }
        Ok(Reply::Json(json!({
            "created": tally.created,
            "updated": tally.updated,
            "unchanged": tally.unchanged,
            "skipped": tally.skipped,
        })))
    }

    /// Counts one planned VEVENT by the verdicts of its commands.
    fn count(
        &self,
        tally: &mut Tally,
        recorded: &mut Vec<(Key, EventId, [u8; 32])>,
        plan: Planned,
        main: Option<&Verdict>,
        cancel: Option<&Verdict>,
    ) {
        let newly_cancelled = matches!(cancel, Some(Ok(Outcome::Cancelled { already: false, .. })));
        match main {
            Some(Ok(Outcome::Created { .. })) => {
                tally.created += 1;
                recorded.push((plan.key, plan.event, plan.print));
            }
            Some(Ok(Outcome::Updated { changed, .. })) => {
                if *changed || newly_cancelled {
                    tally.updated += 1;
                } else {
                    tally.unchanged += 1;
                }
                recorded.push((plan.key, plan.event, plan.print));
            }
            // Cancelled here and cancelled in the calendar: nothing to do.
            Some(Err(Refusal::Domain(crate::domain::DomainError::EventCancelled)))
                if plan.cancelled && !plan.creates =>
            {
                tally.unchanged += 1;
                recorded.push((plan.key, plan.event, plan.print));
            }
            Some(Err(Refusal::Domain(crate::domain::DomainError::EventCancelled))) => {
                tally.skip(
                    &plan.uid,
                    plan.line,
                    "the event was cancelled here; a cancelled event is not updated",
                );
            }
            Some(Err(r)) => tally.skip(&plan.uid, plan.line, refusal_reason(r)),
            Some(Ok(_)) | None => tally.skip(&plan.uid, plan.line, "not imported"),
        }
    }
}

/// Why an imported recurring VEVENT is not changed by a later import.
const SERIES_NOT_UPDATED: &str = "a recurring event already imported is not updated by import: change it in the service (applyTo: all)";

impl App {
    /// The series an imported recurring VEVENT makes, with its occurrences
    /// up to the horizon; a rule the service does not take is a reason.
    fn series_of(
        &self,
        first: &crate::domain::Event,
        rule: &crate::domain::ics_import::ImportedRule,
        meta: &crate::store::batch::CommandMeta,
    ) -> Result<crate::domain::series::Materialised, String> {
        let recurrence = crate::domain::Recurrence::parse(
            &rule.rrule,
            rule.exdates.clone(),
            first.starts_at,
            first.time_zone,
        )
        .map_err(|e| format!("RRULE not imported: {}", e.message))?;
        let start = crate::domain::series::Series::start(
            crate::domain::SeriesId::new_v4(),
            first,
            recurrence,
            meta.tenant_slug.clone(),
        );
        let config = self.inner.series;
        let made = start.materialise(
            config.horizon_end().max(first.starts_at),
            config.horizon.max_occurrences,
            meta.now,
        );
        if made.occurrences.is_empty() {
            return Err("RRULE not imported: the rule gives no occurrence".into());
        }
        Ok(made)
    }
}

fn new_fields(imported: &Imported, scope: &Scope, visibility: Visibility) -> NewEventFields {
    NewEventFields {
        scope: scope.clone(),
        title: imported.title.clone(),
        description: imported.description.clone(),
        starts_at: imported.starts_at,
        ends_at: imported.ends_at,
        location_text: imported.location_text.clone(),
        location_url: imported.location_url.clone(),
        game_id: None,
        visibility,
        capacity: None,
        time_zone: imported.time_zone,
        rules: Default::default(),
        reminders_sent: false,
    }
}
