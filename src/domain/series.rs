//! A recurring event: the series, the occurrences it makes as time passes,
//! and what a change of several occurrences at once (`applyTo: following`
//! or `all`) does to them and to the series.
//!
//! Every occurrence is an ordinary event; a series only remembers the rule,
//! the template of occurrences still to come and how far it has come. The
//! functions here decide what to write; the writes go through the decide
//! step like every other write (`domain::commands`).

use chrono::{DateTime, Duration, Utc};

use crate::domain::calendar::{ApplyTo, LocalShift, Recurrence, SeriesLink, TimeZone};
use crate::domain::commands::CommandKind;
use crate::domain::error::DomainError;
use crate::domain::event::{Event, EventPatch, SeriesEdit, Tri};
use crate::domain::ids::{EventId, SeriesId, UserId};
use crate::domain::time::truncate_to_micros;
use crate::domain::values::CancelReason;

/// A stored series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub id: SeriesId,
    pub recurrence: Recurrence,
    pub time_zone: TimeZone,
    /// The first instance of the rule.
    pub dtstart: DateTime<Utc>,
    pub duration: Duration,
    /// What occurrences still to be made look like (its id, times and link
    /// are not used).
    pub template: Event,
    /// Every instance starting at or before this exists (or was excluded).
    pub materialised_until: DateTime<Utc>,
    /// No instance will be made again.
    pub complete: bool,
    pub cancelled: bool,
    /// 1, then one more per change of the series (its calendar `SEQUENCE`).
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    /// The tenant slug of the request that created it, carried into the
    /// domain events of occurrences made later.
    pub tenant_slug: Option<String>,
}

/// Occurrences made by [`Series::materialise`].
#[derive(Debug, Clone, PartialEq)]
pub struct Materialised {
    pub occurrences: Vec<Event>,
    /// The series afterwards (`materialised_until`, `complete`).
    pub series: Series,
}

impl Series {
    /// The series a create starts: `first` is the event as created (its
    /// start is the rule's first instance), nothing made yet.
    pub fn start(
        id: SeriesId,
        first: &Event,
        recurrence: Recurrence,
        slug: Option<String>,
    ) -> Self {
        Series {
            id,
            time_zone: first.time_zone,
            dtstart: first.starts_at,
            duration: first.ends_at - first.starts_at,
            template: first.clone(),
            recurrence,
            materialised_until: first.starts_at - Duration::microseconds(1),
            complete: false,
            cancelled: false,
            version: 1,
            updated_at: first.created_at,
            tenant_slug: slug,
        }
    }

    /// Makes the instances after `materialised_until` up to `until`, at most
    /// `max` of them, each an event made from the template at `now`. When
    /// capped, the series has come as far as the last one made.
    pub fn materialise(
        &self,
        until: DateTime<Utc>,
        max: usize,
        now: DateTime<Utc>,
    ) -> Materialised {
        let mut next = self.clone();
        if self.complete || until <= self.materialised_until {
            return Materialised {
                occurrences: Vec::new(),
                series: next,
            };
        }
        let starts = self.recurrence.instances(
            self.dtstart,
            self.time_zone,
            Some(self.materialised_until),
            Some(until),
            max,
        );
        let capped = starts.len() >= max;
        let now = truncate_to_micros(now);
        let occurrences: Vec<Event> = starts
            .iter()
            .map(|at| {
                let mut event = Event::occurrence(
                    &self.template,
                    EventId::new_v4(),
                    SeriesLink {
                        series_id: self.id,
                        recurrence_id: *at,
                        exception: false,
                    },
                    *at,
                    *at + self.duration,
                );
                event.created_at = now;
                event.updated_at = now;
                event.version = 1;
                event
            })
            .collect();
        next.materialised_until = match (capped, starts.last()) {
            (true, Some(last)) => *last,
            _ => until,
        };
        next.complete = self.recurrence.is_bounded()
            && self
                .recurrence
                .instances(
                    self.dtstart,
                    self.time_zone,
                    Some(next.materialised_until),
                    None,
                    1,
                )
                .is_empty();
        Materialised {
            occurrences,
            series: next,
        }
    }

    /// Whether `event` is one of this series' occurrences.
    pub fn owns(&self, event: &Event) -> bool {
        event.series.is_some_and(|l| l.series_id == self.id)
    }

    fn touched(&self, now: DateTime<Utc>) -> Series {
        let mut next = self.clone();
        next.version = self.version.saturating_add(1);
        next.updated_at = truncate_to_micros(now);
        next
    }
}

/// What a change of several occurrences writes: the commands for the
/// decide step, the series rows to update, and a new series (a split).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPlan {
    pub commands: Vec<CommandKind>,
    /// The series as it is to be stored afterwards.
    pub series: Series,
    /// Made by `following`: it must exist before its occurrences move to it.
    pub split_off: Option<Series>,
}

/// The occurrences a change from `anchor` on is for: from the anchor's
/// instance on for `following`, all of them for `all`, in instance order.
pub fn in_scope<'a>(apply: ApplyTo, anchor: &Event, occurrences: &'a [Event]) -> Vec<&'a Event> {
    let from = anchor.series.map(|l| l.recurrence_id);
    occurrences
        .iter()
        .filter(|o| match (apply, o.series, from) {
            (ApplyTo::Following, Some(l), Some(from)) => l.recurrence_id >= from,
            (ApplyTo::This, _, _) => o.id == anchor.id,
            _ => true,
        })
        .collect()
}

/// `following` from the first instance is the whole series.
fn effective(apply: ApplyTo, series: &Series, anchor: &Event) -> ApplyTo {
    match (apply, anchor.series) {
        (ApplyTo::Following, Some(l)) if l.recurrence_id <= series.dtstart => ApplyTo::All,
        (apply, _) => apply,
    }
}

/// A patch of several occurrences (`following` or `all`) as seen from
/// `anchor`, the occurrence the request named: the anchor gets what the
/// patch says, every other occurrence in scope the same fields and the same
/// move in local time (so 18:00 → 19:00 is 19:00 on every one, across
/// daylight-saving changes). Cancelled occurrences stay as they are.
///
/// Refused (422): a time zone change (a series keeps its zone), and a move
/// to another day (the rule says which days; a day change would break it).
pub fn plan_update(
    series: &Series,
    anchor: &Event,
    occurrences: &[Event],
    patch: &EventPatch,
    apply: ApplyTo,
    now: DateTime<Utc>,
    by: UserId,
) -> Result<SeriesPlan, DomainError> {
    if anchor.is_cancelled() {
        return Err(DomainError::EventCancelled);
    }
    if !matches!(patch.time_zone, Tri::Absent) {
        return Err(DomainError::field(
            "timeZone",
            "a series keeps its time zone; change it on one occurrence (applyTo: this)",
        ));
    }
    let apply = effective(apply, series, anchor);
    let zone = series.time_zone;
    let new_start = match patch.starts_at {
        Tri::Set(t) => t,
        _ => anchor.starts_at,
    };
    let new_end = match patch.ends_at {
        Tri::Set(t) => t,
        _ => anchor.ends_at,
    };
    if new_start >= new_end {
        return Err(DomainError::InvalidTimeRange);
    }
    let start_shift = LocalShift::between(zone, anchor.starts_at, new_start);
    let end_shift = LocalShift::between(zone, anchor.ends_at, new_end);
    if start_shift.changes_day(anchor.starts_at) {
        return Err(DomainError::field(
            "startsAt",
            "a change of several occurrences can move their time of day, not their day; \
             move one occurrence with applyTo: this",
        ));
    }

    // The series the occurrences in scope belong to afterwards.
    let anchor_instance = anchor.series.map_or(series.dtstart, |l| l.recurrence_id);
    let (kept, target) = match apply {
        ApplyTo::Following => {
            let mut kept = series.touched(now);
            kept.recurrence = series.recurrence.ending_before(anchor_instance);
            kept.materialised_until = anchor_instance - Duration::microseconds(1);
            kept.complete = true;
            let mut split = series.touched(now);
            split.id = SeriesId::new_v4();
            split.version = 1;
            split.recurrence =
                series
                    .recurrence
                    .from_instance(series.dtstart, zone, anchor_instance, |d| {
                        start_shift.apply(d)
                    });
            split.dtstart = start_shift.apply(anchor_instance);
            (kept, Some(split))
        }
        _ => (series.touched(now), None),
    };
    let mut moved = target.clone().unwrap_or_else(|| kept.clone());
    if target.is_none() {
        moved.dtstart = start_shift.apply(series.dtstart);
        moved.recurrence = Recurrence::from_stored(
            series.recurrence.rule().to_owned(),
            series
                .recurrence
                .exdates()
                .iter()
                .map(|d| start_shift.apply(*d))
                .collect(),
        );
    }
    let template_end = end_shift.apply(series.dtstart + series.duration);
    moved.duration = (template_end - start_shift.apply(series.dtstart)).max(Duration::minutes(1));
    moved.materialised_until = start_shift.apply(series.materialised_until);
    moved.template = patched_template(&series.template, patch, now, by)?;

    let mut commands = Vec::new();
    for occurrence in in_scope(apply, anchor, occurrences) {
        if occurrence.is_cancelled() {
            continue;
        }
        let Some(link) = occurrence.series else {
            continue;
        };
        let mut own = patch.clone();
        if !matches!(patch.starts_at, Tri::Absent) || !matches!(patch.ends_at, Tri::Absent) {
            own.starts_at = Tri::Set(start_shift.apply(occurrence.starts_at));
            own.ends_at = Tri::Set(end_shift.apply(occurrence.ends_at));
        }
        own.series = SeriesEdit::Relink(SeriesLink {
            series_id: moved.id,
            recurrence_id: start_shift.apply(link.recurrence_id),
            exception: link.exception,
        });
        commands.push(CommandKind::Update {
            event_id: occurrence.id,
            patch: Box::new(own),
        });
    }
    Ok(match target {
        Some(_) => SeriesPlan {
            commands,
            series: kept,
            split_off: Some(moved),
        },
        None => SeriesPlan {
            commands,
            series: moved,
            split_off: None,
        },
    })
}

/// The template after the fields of `patch` other than the times.
fn patched_template(
    template: &Event,
    patch: &EventPatch,
    now: DateTime<Utc>,
    by: UserId,
) -> Result<Event, DomainError> {
    let fields = EventPatch {
        starts_at: Tri::Absent,
        ends_at: Tri::Absent,
        series: SeriesEdit::This,
        ..patch.clone()
    };
    let mut base = template.clone();
    // A template is never cancelled; its copy must not refuse the patch.
    base.status = crate::domain::event::EventStatus::Scheduled;
    base.cancelled_at = None;
    base.cancelled_by = None;
    base.cancel_reason = None;
    base.series = None;
    Ok(base.apply_patch(&fields, now, by)?.event)
}

/// A cancel of several occurrences: every one in scope not cancelled yet,
/// and the series stops (`following`: cut before the anchor; `all`:
/// cancelled).
pub fn plan_cancel(
    series: &Series,
    anchor: &Event,
    occurrences: &[Event],
    reason: Option<CancelReason>,
    apply: ApplyTo,
    now: DateTime<Utc>,
) -> SeriesPlan {
    let apply = effective(apply, series, anchor);
    let mut next = series.touched(now);
    next.complete = true;
    match apply {
        ApplyTo::Following => {
            let from = anchor.series.map_or(series.dtstart, |l| l.recurrence_id);
            next.recurrence = series.recurrence.ending_before(from);
            next.materialised_until = from - Duration::microseconds(1);
        }
        _ => next.cancelled = true,
    }
    let commands = in_scope(apply, anchor, occurrences)
        .into_iter()
        .filter(|o| !o.is_cancelled())
        .map(|o| CommandKind::Cancel {
            event_id: o.id,
            reason: reason.clone(),
        })
        .collect();
    SeriesPlan {
        commands,
        series: next,
        split_off: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewEvent, NewEventFields, Scope, TenantId, Title};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn berlin() -> TimeZone {
        TimeZone::parse("Europe/Berlin").unwrap_or_default()
    }

    fn first(starts: &str, ends: &str) -> Event {
        let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(7));
        let new = NewEvent::new(
            tenant,
            NewEventFields {
                scope: Scope::tenant(tenant),
                title: Title::parse("Game night").unwrap_or_else(|_| unreachable!()),
                description: Default::default(),
                starts_at: at(starts),
                ends_at: at(ends),
                location_text: Default::default(),
                location_url: None,
                game_id: None,
                visibility: Default::default(),
                capacity: None,
                time_zone: berlin(),
                rules: Default::default(),
                reminders_sent: false,
            },
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        new.into_event(
            EventId::new_v4(),
            UserId::from_uuid(uuid::Uuid::from_u128(9)),
            at(starts),
        )
    }

    fn series(rule: &str) -> (Series, Vec<Event>) {
        let first = first("2026-10-20T16:00:00Z", "2026-10-20T19:00:00Z");
        let rec = Recurrence::parse(rule, vec![], first.starts_at, berlin())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let s = Series::start(SeriesId::new_v4(), &first, rec, None);
        let m = s.materialise(at("2027-12-31T00:00:00Z"), 500, first.created_at);
        (m.series, m.occurrences)
    }

    #[test]
    fn a_series_is_made_once_up_to_the_horizon_and_then_extended() {
        let (s, made) = series("FREQ=WEEKLY;BYDAY=TU");
        let (s2, _) = {
            let first = first("2026-10-20T16:00:00Z", "2026-10-20T19:00:00Z");
            let rec = Recurrence::parse("FREQ=WEEKLY;BYDAY=TU", vec![], first.starts_at, berlin())
                .unwrap_or_else(|e| panic!("{e:?}"));
            let s = Series::start(s.id, &first, rec, None);
            let a = s.materialise(at("2027-06-01T00:00:00Z"), 500, first.created_at);
            let b = a
                .series
                .materialise(at("2027-12-31T00:00:00Z"), 500, first.created_at);
            let mut all: Vec<DateTime<Utc>> = a.occurrences.iter().map(|e| e.starts_at).collect();
            all.extend(b.occurrences.iter().map(|e| e.starts_at));
            (b.series, all)
        };
        assert!(!s.complete && !s2.complete);
        let starts: Vec<DateTime<Utc>> = made.iter().map(|e| e.starts_at).collect();
        let mut again = starts.clone();
        again.dedup();
        assert_eq!(again.len(), starts.len());
        // Nothing more to make at the same horizon.
        assert!(
            s.materialise(at("2027-12-31T00:00:00Z"), 500, at("2027-01-01T00:00:00Z"))
                .occurrences
                .is_empty()
        );
    }

    #[test]
    fn a_counted_series_completes() {
        let (s, made) = series("FREQ=WEEKLY;COUNT=4");
        assert_eq!(made.len(), 4);
        assert!(s.complete);
    }

    #[test]
    fn following_splits_and_moves_local_time() {
        let (s, made) = series("FREQ=WEEKLY;COUNT=6");
        let anchor = &made[2];
        let patch = EventPatch {
            starts_at: Tri::Set(anchor.starts_at + Duration::hours(1)),
            ..Default::default()
        };
        let by = UserId::from_uuid(uuid::Uuid::from_u128(9));
        let plan = plan_update(
            &s,
            anchor,
            &made,
            &patch,
            ApplyTo::Following,
            anchor.starts_at,
            by,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(plan.commands.len(), 4);
        let split = plan.split_off.unwrap_or_else(|| panic!("no split"));
        assert!(plan.series.complete);
        assert_eq!(
            plan.series
                .recurrence
                .instances(s.dtstart, berlin(), None, None, 10)
                .len(),
            2
        );
        assert_eq!(
            split
                .recurrence
                .instances(split.dtstart, berlin(), None, None, 10)
                .len(),
            4
        );
        let moved = LocalShift::between(
            berlin(),
            anchor.starts_at,
            anchor.starts_at + Duration::hours(1),
        );
        assert_eq!(split.dtstart, moved.apply(anchor.starts_at));
    }

    #[test]
    fn a_day_move_of_several_occurrences_is_refused() {
        let (s, made) = series("FREQ=WEEKLY;COUNT=6");
        let patch = EventPatch {
            starts_at: Tri::Set(made[1].starts_at + Duration::days(1)),
            ends_at: Tri::Set(made[1].ends_at + Duration::days(1)),
            ..Default::default()
        };
        let by = UserId::from_uuid(uuid::Uuid::from_u128(9));
        let e = plan_update(
            &s,
            &made[1],
            &made,
            &patch,
            ApplyTo::All,
            made[1].starts_at,
            by,
        );
        assert!(matches!(e, Err(DomainError::Validation { .. })), "{e:?}");
    }

    #[test]
    fn cancel_all_cancels_every_live_occurrence_and_the_series() {
        let (s, made) = series("FREQ=WEEKLY;COUNT=5");
        let plan = plan_cancel(&s, &made[3], &made, None, ApplyTo::All, made[0].starts_at);
        assert_eq!(plan.commands.len(), 5);
        assert!(plan.series.cancelled && plan.series.complete);
        let plan = plan_cancel(
            &s,
            &made[3],
            &made,
            None,
            ApplyTo::Following,
            made[0].starts_at,
        );
        assert_eq!(plan.commands.len(), 2);
        assert!(!plan.series.cancelled && plan.series.complete);
    }
}
