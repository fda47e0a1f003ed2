//! Recurring events: creating a series, changes of several occurrences at
//! once (`applyTo: following | all`), and reading a series (`series.get`,
//! `series.ics`). A change of one occurrence is an ordinary update or
//! cancel of that event.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};

use super::views::{self, EventView, View};
use super::{App, AppError, CallMeta, Reply};
use crate::actors::ScopeKey;
use crate::authz::{Guard, Sight};
use crate::domain::series::{self as plans, Series};
use crate::domain::{
    ApplyTo, CancelReason, DomainError, Event, EventId, EventPatch, NewEvent, Recurrence, SeriesId,
    Visibility, format_utc, ics,
};
use crate::store::series::{self, Created, SeriesWritten};

impl App {
    /// A recurring create: the series and every occurrence up to the
    /// horizon in one transaction; the reply is the first occurrence.
    pub(super) async fn create_series(
        &self,
        guard: &Guard<'_>,
        new: NewEvent,
        recurrence: Recurrence,
        fingerprint: String,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let meta = self.meta(guard, meta);
        let first = new.into_event(EventId::new_v4(), guard.user(), meta.now);
        let start = Series::start(
            SeriesId::new_v4(),
            &first,
            recurrence,
            meta.tenant_slug.clone(),
        );
        let config = self.inner.series;
        let made = start.materialise(
            config.horizon_end().max(first.starts_at),
            config.horizon.max_occurrences,
            meta.now,
        );
        let Some(head) = made.occurrences.first() else {
            return Err(
                DomainError::field("recurrence.rrule", "the rule gives no occurrence").into(),
            );
        };
        let result = views::event(head, &Default::default(), None);
        let shared = self.inner.registry.shared().clone();
        let created = series::create(
            &self.inner.db,
            &shared.subjects,
            &meta,
            &made.series,
            made.occurrences,
            fingerprint,
            result,
        )
        .await?;
        match created {
            Created::Earlier(result) => Ok(Reply::Json(result)),
            Created::New(written) => {
                self.after_series_write(&written).await;
                let (event, counts) = written.events.into_iter().next().ok_or_else(|| {
                    AppError::internal("series", "a created series without occurrences")
                })?;
                Ok(Reply::View(View::Event(EventView::new(
                    Arc::new(event),
                    counts,
                    None,
                ))))
            }
        }
    }

    /// An update of `anchor` and the occurrences `apply` names with it.
    pub(super) async fn update_series(
        &self,
        guard: &Guard<'_>,
        anchor: &Event,
        patch: EventPatch,
        apply: ApplyTo,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let Some(link) = anchor.series else {
            return Err(AppError::internal("series", "not an occurrence"));
        };
        let meta = self.meta(guard, meta);
        let (now, by, anchor_id) = (meta.now, guard.user(), anchor.id);
        let shared = self.inner.registry.shared().clone();
        let written = series::change(
            &self.inner.db,
            &shared.subjects,
            &meta,
            link.series_id,
            |series, occurrences| {
                let anchor = occurrences
                    .iter()
                    .find(|o| o.id == anchor_id)
                    .ok_or(AppError::NotFound)?;
                plans::plan_update(series, anchor, occurrences, &patch, apply, now, by)
                    .map_err(AppError::from)
            },
        )
        .await?;
        self.after_series_write(&written).await;
        self.anchor_view(guard, written, anchor_id).await
    }

    /// A cancel of `anchor` and the occurrences `apply` names with it.
    pub(super) async fn cancel_series(
        &self,
        guard: &Guard<'_>,
        anchor: &Event,
        reason: Option<CancelReason>,
        apply: ApplyTo,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let Some(link) = anchor.series else {
            return Err(AppError::internal("series", "not an occurrence"));
        };
        let meta = self.meta(guard, meta);
        let (now, anchor_id) = (meta.now, anchor.id);
        let shared = self.inner.registry.shared().clone();
        let written = series::change(
            &self.inner.db,
            &shared.subjects,
            &meta,
            link.series_id,
            |series, occurrences| {
                let anchor = occurrences
                    .iter()
                    .find(|o| o.id == anchor_id)
                    .ok_or(AppError::NotFound)?;
                Ok(plans::plan_cancel(
                    series,
                    anchor,
                    occurrences,
                    reason,
                    apply,
                    now,
                ))
            },
        )
        .await?;
        self.after_series_write(&written).await;
        self.anchor_view(guard, written, anchor_id).await
    }

    /// The named occurrence after a change of several: as written, or (when
    /// the change left it alone, e.g. it was cancelled already) as stored.
    async fn anchor_view(
        &self,
        guard: &Guard<'_>,
        written: SeriesWritten,
        anchor: EventId,
    ) -> Result<Reply, AppError> {
        let mine = crate::store::reads::rsvp_of(&self.inner.db, anchor, guard.user()).await?;
        if let Some((event, counts)) = written.events.into_iter().find(|(e, _)| e.id == anchor) {
            return Ok(Reply::View(View::Event(EventView::new(
                Arc::new(event),
                counts,
                mine,
            ))));
        }
        let snapshot = self.visible(guard, anchor).await?;
        Ok(Reply::View(View::Event(EventView::new(
            snapshot.event,
            snapshot.counts,
            mine,
        ))))
    }

    /// Caches here and on the other instances forget what changed, new
    /// occurrences are found by their scope, and the publisher wakes.
    pub(crate) async fn after_series_write(&self, written: &SeriesWritten) {
        let mut by_scope: HashMap<ScopeKey, Vec<EventId>> = HashMap::new();
        for (event, _) in &written.events {
            let key = ScopeKey::of(event);
            self.inner.index.insert(event.id, key.clone());
            by_scope.entry(key).or_default().push(event.id);
        }
        for (key, ids) in by_scope {
            self.inner.registry.invalidate(&key, &ids).await;
        }
        self.inner.registry.shared().outbox_wakeup.notify_one();
    }

    /// The series and the occurrences the caller may see.
    async fn visible_series(
        &self,
        guard: &Guard<'_>,
        id: SeriesId,
    ) -> Result<(Series, Vec<Event>), AppError> {
        let mut conn = self.inner.db.acquire().await?;
        let series = series::get(&mut conn, guard.tenant(), id)
            .await?
            .ok_or(AppError::NotFound)?;
        match guard.sight(&series.template).await? {
            Sight::Visible => {}
            Sight::Hidden => return Err(AppError::NotFound),
            Sight::Blocked => return Err(AppError::Forbidden("Permission denied")),
        }
        let occurrences = series::occurrences(&mut conn, guard.tenant(), id).await?;
        drop(conn);
        // Occurrences share the series' scope; only their visibility can
        // differ (changed one by one), so each visibility is judged once.
        let mut sights: HashMap<Visibility, bool> = HashMap::new();
        let mut shown = Vec::with_capacity(occurrences.len());
        for occurrence in occurrences {
            let visible = match sights.get(&occurrence.visibility) {
                Some(v) => *v,
                None => {
                    let v = matches!(guard.sight(&occurrence).await?, Sight::Visible);
                    sights.insert(occurrence.visibility, v);
                    v
                }
            };
            if visible {
                shown.push(occurrence);
            }
        }
        Ok((series, shown))
    }

    pub(super) async fn series_get(
        &self,
        guard: &Guard<'_>,
        id: SeriesId,
    ) -> Result<Reply, AppError> {
        let (series, occurrences) = self.visible_series(guard, id).await?;
        Ok(Reply::Json(series_json(&series, &occurrences)))
    }

    pub(super) async fn series_ics(
        &self,
        guard: &Guard<'_>,
        id: SeriesId,
    ) -> Result<Reply, AppError> {
        let (series, occurrences) = self.visible_series(guard, id).await?;
        Ok(Reply::Calendar {
            filename: format!("series-{}.ics", series.id),
            body: ics::render_series(&series, &occurrences, &guard.ctx().tenant_slug, Utc::now()),
        })
    }
}

/// The `series.get` reply.
fn series_json(series: &Series, occurrences: &[Event]) -> Value {
    let items: Vec<Value> = occurrences
        .iter()
        .map(|o| {
            json!({
                "id": o.id.to_string(),
                "recurrenceId": o.series.map(|l| format_utc(&l.recurrence_id)),
                "startsAt": format_utc(&o.starts_at),
                "endsAt": format_utc(&o.ends_at),
                "status": o.status.as_str(),
                "changed": o.series.is_some_and(|l| l.exception),
            })
        })
        .collect();
    json!({
        "seriesId": series.id.to_string(),
        "rrule": series.recurrence.rule(),
        "exdates": series.recurrence.exdates().iter().map(format_utc).collect::<Vec<_>>(),
        "timeZone": series.time_zone.name(),
        "title": series.template.title.as_str(),
        "startsAt": format_utc(&series.dtstart),
        "durationMinutes": series.duration.num_minutes(),
        "cancelled": series.cancelled,
        "complete": series.complete,
        "materialisedUntil": format_utc(&series.materialised_until),
        "occurrences": items,
    })
}
