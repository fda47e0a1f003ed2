//! The managers' CSV exports of one event's RSVPs and attendance, read in
//! pages (keyset, in the listings' order) so an event of any size is
//! streamed without being held in memory.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{EventId, format_utc};

/// Rows read per page (and written per chunk).
const PAGE: i64 = 1_000;

/// Which listing to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Rsvps,
    Attendance,
}

impl Listing {
    pub fn header(self) -> &'static [&'static str] {
        match self {
            Listing::Rsvps => &[
                "user_id",
                "status",
                "guests",
                "waitlist_position",
                "created_at",
                "updated_at",
            ],
            Listing::Attendance => &["user_id", "marked_by", "marked_at"],
        }
    }
}

/// Where the next page starts: after this (time, user).
type Cursor = Option<(DateTime<Utc>, Uuid)>;

type RsvpLine = (Uuid, String, i32, Option<i64>, DateTime<Utc>, DateTime<Utc>);
type AttendanceLine = (Uuid, Uuid, DateTime<Utc>);

async fn page(
    db: &PgPool,
    listing: Listing,
    event: Uuid,
    after: Cursor,
) -> Result<(Vec<Vec<String>>, Cursor), sqlx::Error> {
    let (at, user) = after.map_or((None, None), |(t, u)| (Some(t), Some(u)));
    match listing {
        Listing::Rsvps => {
            let rows: Vec<RsvpLine> = sqlx::query_as(
                "SELECT r.user_id, r.status::text, r.guests,
                        CASE WHEN r.status = 'waitlisted' THEN (
                            SELECT count(*) FROM event_rsvps w
                            WHERE w.event_id = r.event_id AND w.status = 'waitlisted'
                              AND w.waitlist_seq <= r.waitlist_seq) END,
                        r.created_at, r.updated_at
                 FROM event_rsvps r
                 WHERE r.event_id = $1 AND ($2::timestamptz IS NULL OR (r.created_at, r.user_id) > ($2, $3))
                 ORDER BY r.created_at, r.user_id LIMIT $4",
            )
            .bind(event)
            .bind(at)
            .bind(user)
            .bind(PAGE)
            .fetch_all(db)
            .await?;
            let next = rows.last().map(|r| (r.4, r.0));
            let lines = rows
                .into_iter()
                .map(|(u, status, guests, position, created, updated)| {
                    vec![
                        u.to_string(),
                        status,
                        guests.to_string(),
                        position.map(|p| p.to_string()).unwrap_or_default(),
                        format_utc(&created),
                        format_utc(&updated),
                    ]
                })
                .collect();
            Ok((lines, next))
        }
        Listing::Attendance => {
            let rows: Vec<AttendanceLine> = sqlx::query_as(
                "SELECT user_id, marked_by, marked_at FROM event_attendance
                 WHERE event_id = $1 AND ($2::timestamptz IS NULL OR (marked_at, user_id) > ($2, $3))
                 ORDER BY marked_at, user_id LIMIT $4",
            )
            .bind(event)
            .bind(at)
            .bind(user)
            .bind(PAGE)
            .fetch_all(db)
            .await?;
            let next = rows.last().map(|r| (r.2, r.0));
            let lines = rows
                .into_iter()
                .map(|(u, by, at)| vec![u.to_string(), by.to_string(), format_utc(&at)])
                .collect();
            Ok((lines, next))
        }
    }
}

/// Lines as RFC 4180 CSV (CRLF line ends, fields quoted when needed).
pub fn encode(lines: &[Vec<String>]) -> Result<Bytes, std::io::Error> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for line in lines {
        writer.write_record(line).map_err(std::io::Error::other)?;
    }
    writer
        .into_inner()
        .map(Bytes::from)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// The export as a stream of CSV chunks: the header, then one chunk per
/// page. A failure mid-way ends the stream with an error (the response is
/// cut short, never silently complete).
pub fn stream(
    db: PgPool,
    listing: Listing,
    event: EventId,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let header: Vec<String> = listing.header().iter().map(|h| (*h).to_string()).collect();
    let first = stream::once(async move { encode(&[header]) });
    let event = Uuid::from(event);
    let pages = stream::unfold(Some(None), move |state: Option<Cursor>| {
        let db = db.clone();
        async move {
            let after = state?;
            match page(&db, listing, event, after).await {
                Ok((lines, _)) if lines.is_empty() => None,
                Ok((lines, next)) => {
                    let more = (lines.len() as i64) == PAGE;
                    Some((encode(&lines), more.then_some(next)))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "an export failed while streaming");
                    Some((Err(std::io::Error::other("export failed")), None))
                }
            }
        }
    });
    first.chain(pages).boxed()
}
