//! `event.import`: calendars shaped like Google's and Outlook's exports, the
//! round trip from a feed of one scope into another, idempotent and changed
//! re-imports, and hostile input that must write nothing.

use serde_json::{Value, json};
use updspace_events::client::Identity;
use uuid::Uuid;

use crate::feeds::{call, create_event, event, parse_with_python};
use crate::helpers::{HttpReply, TestApp, admin, identity};

const EVENTS: &str = "/api/v1/events";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn import_http(app: &TestApp, who: &Identity, query: &str, body: Vec<u8>) -> HttpReply {
    app.signed(
        "POST",
        &format!("{EVENTS}/import?{query}"),
        who,
        Some(body),
        2,
    )
    .await
}

async fn counts(app: &TestApp) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox),
                (SELECT count(*) FROM ics_import_keys)",
    )
    .fetch_one(&app.db)
    .await
    .expect("counts")
}

async fn stored(
    app: &TestApp,
    scope_id: &str,
) -> Vec<(String, String, String, String, String, String)> {
    sqlx::query_as(
        "SELECT title, to_char(starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI'),
                to_char(ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI'),
                location_text, description, status::text
         FROM events WHERE scope_id = $1 AND series_id IS NULL ORDER BY starts_at, title",
    )
    .bind(scope_id)
    .fetch_all(&app.db)
    .await
    .expect("events")
}

/// A Google-shaped export (CRLF, folded lines, VTIMEZONE, VALARM, ATTENDEE,
/// escaped commas and semicolons, an all-day event, a weekly series): the
/// times honour the TZID, the texts are unescaped, the weekly VEVENT
/// becomes a series in its zone; importing it again changes nothing and
/// sends nothing to the stream; a changed SUMMARY updates that one event.
#[tokio::test]
async fn a_google_export_imports_once_and_reimports_idempotently() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let ics = fixture("google.ics");
    let query = "scopeType=COMMUNITY&scopeId=guild&visibility=community";
    let first = import_http(&app, &boss, query, ics.clone().into_bytes()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let reply = first.json();
    assert_eq!(
        (
            reply["created"].as_u64(),
            reply["updated"].as_u64(),
            reply["unchanged"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{reply}"
    );
    let skipped = reply["skipped"].as_array().expect("skipped");
    assert!(skipped.is_empty(), "{reply}");
    // The weekly VEVENT is a series expanded in Berlin time (18:00 CET).
    let series: (String, String, String) = sqlx::query_as(
        "SELECT s.rrule, s.time_zone,
                (SELECT to_char(min(e.starts_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')
                 FROM events e WHERE e.series_id = s.id)
         FROM event_series s WHERE s.scope_id = 'guild'",
    )
    .fetch_one(&app.db)
    .await
    .expect("the imported series");
    assert_eq!(
        series,
        (
            "FREQ=WEEKLY;BYDAY=SA".to_string(),
            "Europe/Berlin".to_string(),
            "2030-01-05T17:00".to_string()
        )
    );
    let rows = stored(&app, "guild").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let raid = &rows[0];
    assert_eq!(raid.0, "Summer raid night");
    assert_eq!(
        (raid.1.as_str(), raid.2.as_str()),
        ("2030-07-10T17:00", "2030-07-10T20:00")
    );
    assert_eq!(raid.3, "Clubhouse, Main Street 1, Berlin");
    assert!(
        raid.4.starts_with(
            "Bring your own snacks, drinks are provided.\nSecond line; with a semicolon"
        ),
        "{:?}",
        raid.4
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2.as_str()),
        ("Tournament day", "2030-08-01T00:00", "2030-08-02T00:00")
    );
    let outbox: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'event.created'")
            .fetch_one(&app.db)
            .await
            .expect("outbox");
    assert_eq!(outbox, 3, "imported events are published like any other");

    let before = counts(&app).await;
    let again = import_http(&app, &boss, query, ics.clone().into_bytes()).await;
    assert_eq!(again.status, 200, "{}", again.text);
    let reply = again.json();
    assert_eq!(
        (
            reply["created"].as_u64(),
            reply["updated"].as_u64(),
            reply["unchanged"].as_u64()
        ),
        (Some(0), Some(0), Some(3)),
        "{reply}"
    );
    assert_eq!(
        counts(&app).await,
        before,
        "a second import wrote something"
    );

    let changed = ics.replace(
        "SUMMARY:Summer raid night",
        "SUMMARY:Summer raid night (moved)",
    );
    let third = import_http(&app, &boss, query, changed.into_bytes()).await;
    let reply = third.json();
    assert_eq!(
        (
            reply["created"].as_u64(),
            reply["updated"].as_u64(),
            reply["unchanged"].as_u64()
        ),
        (Some(0), Some(1), Some(2)),
        "{reply}"
    );
    let after = counts(&app).await;
    assert_eq!(after.0, before.0, "no duplicate");
    assert_eq!(after.1, before.1 + 1, "one event.updated");
    assert_eq!(
        stored(&app, "guild").await[0].0,
        "Summer raid night (moved)"
    );
}

/// An Outlook-shaped export: Windows zone names in quoted TZIDs, a folded
/// UID, LANGUAGE parameters, a cancelled VEVENT (kept as cancelled).
#[tokio::test]
async fn an_outlook_export_maps_windows_zones() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let body = json!({"ics": fixture("outlook.ics"), "scopeType": "TEAM", "scopeId": "board", "visibility": "team"});
    let reply = call(&app, "event.import", &boss, body).await;
    assert_eq!(reply["created"], 2, "{reply}");
    let rows = stored(&app, "board").await;
    assert_eq!(rows[0].0, "Board meeting");
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2.as_str()),
        ("2030-01-15T17:30", "2030-01-15T19:00")
    );
    assert_eq!(rows[0].3, "Room 4, Town Hall");
    assert_eq!(rows[1].0, "Cancelled workshop");
    assert_eq!(rows[1].5, "cancelled");
    let uid: String = sqlx::query_scalar("SELECT uid FROM ics_import_keys ORDER BY uid LIMIT 1")
        .fetch_one(&app.db)
        .await
        .expect("uid");
    assert!(
        uid.ends_with("0A1B2C3D4E5F60718293A4B5C6D7E8F9"),
        "the folded UID is unfolded: {uid}"
    );
}

/// A feed of scope A imported into scope B gives the same titles, times and
/// locations (and Python's icalendar reads the same from both feeds).
#[tokio::test]
async fn a_feed_of_one_scope_imports_into_another_unchanged() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let owner_id = Uuid::new_v4();
    let owner = identity(tenant, owner_id);
    app.join(tenant, owner_id, "COMMUNITY", "a").await;
    app.join(tenant, owner_id, "COMMUNITY", "b").await;
    for (i, title) in ["Opening; night, one", "Second \\ round", "Ünïcödé finale"]
        .iter()
        .enumerate()
    {
        let day = 10 + i as i64;
        create_event(
            &app,
            &boss,
            event(
                ("COMMUNITY", "a"),
                title,
                "community",
                &format!("2030-03-{day}T18:00:00Z"),
                &format!("2030-03-{day}T20:30:00Z"),
            ),
        )
        .await;
    }
    let feed_a = call(
        &app,
        "feed.create",
        &owner,
        json!({"scopeType": "COMMUNITY", "scopeId": "a"}),
    )
    .await;
    let text_a = app
        .http
        .get(app.url(feed_a["url"].as_str().expect("url")))
        .send()
        .await
        .expect("feed")
        .text()
        .await
        .expect("text");
    let imported = import_http(
        &app,
        &boss,
        "scopeType=COMMUNITY&scopeId=b&visibility=community",
        text_a.clone().into_bytes(),
    )
    .await;
    assert_eq!(imported.status, 200, "{}", imported.text);
    assert_eq!(imported.json()["created"], 3);
    let strip = |rows: Vec<(String, String, String, String, String, String)>| -> Vec<(String, String, String, String)> {
        rows.into_iter().map(|r| (r.0, r.1, r.2, r.3)).collect()
    };
    assert_eq!(
        strip(stored(&app, "a").await),
        strip(stored(&app, "b").await)
    );
    let feed_b = call(
        &app,
        "feed.create",
        &owner,
        json!({"scopeType": "COMMUNITY", "scopeId": "b"}),
    )
    .await;
    let text_b = app
        .http
        .get(app.url(feed_b["url"].as_str().expect("url")))
        .send()
        .await
        .expect("feed")
        .text()
        .await
        .expect("text");
    let view = |v: Value| -> Vec<(Value, Value, Value, Value)> {
        v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["summary"].clone(),
                    e["dtstart"].clone(),
                    e["dtend"].clone(),
                    e["location"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        view(parse_with_python(&text_a)),
        view(parse_with_python(&text_b))
    );
}

/// Hostile calendars are refused with 4xx and write nothing: unterminated
/// BEGIN (422 with the line), an invalid date (422), a control character
/// (422), a 10 MB body and 100,000 VEVENTs (413), 5,001 VEVENTs within
/// 1 MiB (413), not UTF-8 (422); and a caller without
/// `events.event.create` at the scope (403).
#[tokio::test]
async fn hostile_calendars_are_refused_and_write_nothing() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let query = "scopeType=COMMUNITY&scopeId=c1&visibility=public";
    let ok_event = "BEGIN:VEVENT\r\nUID:ok\r\nDTSTART:20300110T180000Z\r\nDTEND:20300110T190000Z\r\nSUMMARY:fine\r\nEND:VEVENT\r\n";
    let cal = |body: &str| format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{body}END:VCALENDAR\r\n");
    let cases: Vec<(&str, Vec<u8>, u16, Option<u64>)> = vec![
        (
            "unterminated BEGIN",
            format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{ok_event}BEGIN:VEVENT\r\nUID:x\r\n").into_bytes(),
            422,
            Some(9),
        ),
        (
            "invalid date",
            cal(&format!("{ok_event}BEGIN:VEVENT\r\nUID:d\r\nDTSTART:20309999T250000Z\r\nDTEND:20300110T190000Z\r\nEND:VEVENT\r\n")).into_bytes(),
            422,
            Some(11),
        ),
        (
            "control character",
            cal(&format!("{ok_event}BEGIN:VEVENT\r\nUID:c\r\nSUMMARY:bell\u{7}\r\nEND:VEVENT\r\n")).into_bytes(),
            422,
            Some(11),
        ),
        ("10 MB", cal(&ok_event.repeat(10_000_000 / ok_event.len())).into_bytes(), 413, None),
        ("100k VEVENTs", cal(&"BEGIN:VEVENT\r\nEND:VEVENT\r\n".repeat(100_000)).into_bytes(), 413, None),
        ("5001 VEVENTs", cal(&ok_event.repeat(5_001)).into_bytes(), 413, None),
        ("not UTF-8", [cal(ok_event).into_bytes(), vec![0xff, 0xfe]].concat(), 422, None),
        ("not a calendar", b"hello world".to_vec(), 422, Some(1)),
    ];
    for (what, body, status, line) in cases {
        let reply = import_http(&app, &boss, query, body).await;
        assert_eq!(
            reply.status,
            status,
            "{what}: {}",
            &reply.text[..reply.text.len().min(500)]
        );
        if let Some(line) = line {
            assert_eq!(
                reply.json()["error"]["details"]["line"].as_u64(),
                Some(line),
                "{what}: {}",
                reply.text
            );
        }
        assert_eq!(counts(&app).await, (0, 0, 0), "{what} wrote something");
    }
    // No permission at the scope.
    let nobody = identity(tenant, Uuid::new_v4());
    let refused = import_http(&app, &nobody, query, cal(ok_event).into_bytes()).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(counts(&app).await, (0, 0, 0));
    // And the same calendar from an organizer goes in.
    let fine = import_http(&app, &boss, query, cal(ok_event).into_bytes()).await;
    assert_eq!(fine.json()["created"], 1, "{}", fine.text);
}

/// 5,000 VEVENTs (just under 1 MiB) import in one request; the time is
/// printed (`cargo test --test api import_of_5000 -- --nocapture`), and a
/// re-import finds them all unchanged.
#[tokio::test]
async fn import_of_5000_events() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let mut body = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n");
    for i in 0..5_000 {
        body.push_str(&format!(
            "BEGIN:VEVENT\r\nUID:e{i}@x\r\nDTSTART:20300110T{:02}0000Z\r\nDTEND:20300110T{:02}3000Z\r\nSUMMARY:Event {i}\r\nLOCATION:Hall {i}\r\nEND:VEVENT\r\n",
            i % 20,
            i % 20
        ));
    }
    body.push_str("END:VCALENDAR\r\n");
    assert!(body.len() < 1024 * 1024, "{}", body.len());
    let started = std::time::Instant::now();
    let reply = import_http(
        &app,
        &boss,
        "scopeType=COMMUNITY&scopeId=big&visibility=public",
        body.clone().into_bytes(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        reply.status,
        200,
        "{}",
        &reply.text[..reply.text.len().min(500)]
    );
    assert_eq!(reply.json()["created"], 5_000);
    let started = std::time::Instant::now();
    let again = import_http(
        &app,
        &boss,
        "scopeType=COMMUNITY&scopeId=big&visibility=public",
        body.into_bytes(),
    )
    .await;
    let took_again = started.elapsed();
    assert_eq!(again.json()["unchanged"], 5_000);
    // A feed of that scope: the first 2,000 of them, rendered, then a
    // conditional request answered from the same listing and the cache.
    let feed = call(
        &app,
        "feed.create",
        &identity(tenant, Uuid::new_v4()),
        json!({"scopeType": "COMMUNITY", "scopeId": "big"}),
    )
    .await;
    let url = app.url(feed["url"].as_str().expect("url"));
    let started = std::time::Instant::now();
    let first = app.http.get(&url).send().await.expect("feed");
    let etag = first.headers()["etag"].to_str().expect("etag").to_string();
    let text = first.text().await.expect("text");
    let took_feed = started.elapsed();
    assert_eq!(text.matches("BEGIN:VEVENT").count(), 2_000);
    let started = std::time::Instant::now();
    let second = app
        .http
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("feed");
    let took_304 = started.elapsed();
    assert_eq!(second.status().as_u16(), 304);
    println!(
        "import of 5,000 VEVENTs: {:.2} s; re-import (all unchanged): {:.2} s; \
         feed of 2,000 events ({} bytes): {:.0} ms, then 304: {:.0} ms",
        took.as_secs_f64(),
        took_again.as_secs_f64(),
        text.len(),
        took_feed.as_secs_f64() * 1000.0,
        took_304.as_secs_f64() * 1000.0
    );
}

/// A UID twice in one file: the first is imported, the second skipped
/// naming the first's line. An event cancelled here is not updated by a
/// changed re-import (skipped with the reason); a VEVENT that is
/// cancelled in the calendar cancels its event on re-import.
#[tokio::test]
async fn duplicates_and_cancellations_on_reimport() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let vevent = |uid: &str, summary: &str, extra: &str| {
        format!(
            "BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART:20300110T180000Z\r\nDTEND:20300110T190000Z\r\n\
             SUMMARY:{summary}\r\n{extra}END:VEVENT\r\n"
        )
    };
    let cal = |body: String| format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{body}END:VCALENDAR\r\n");
    let query = "scopeType=COMMUNITY&scopeId=dup&visibility=public";
    let first = import_http(
        &app,
        &boss,
        query,
        cal(format!(
            "{}{}{}",
            vevent("a", "A", ""),
            vevent("a", "A again", ""),
            vevent("b", "B", "")
        ))
        .into_bytes(),
    )
    .await
    .json();
    assert_eq!(first["created"], 2, "{first}");
    assert_eq!(
        first["skipped"],
        json!([{"uid": "a", "line": 9, "reason": "the same UID as the VEVENT of line 3"}])
    );
    let a: String =
        sqlx::query_scalar("SELECT event_id::text FROM ics_import_keys WHERE uid = 'a'")
            .fetch_one(&app.db)
            .await
            .expect("a");
    call(&app, "event.cancel", &boss, json!({"eventId": a})).await;
    let second = import_http(
        &app,
        &boss,
        query,
        cal(format!(
            "{}{}",
            vevent("a", "A changed", ""),
            vevent("b", "B", "STATUS:CANCELLED\r\n")
        ))
        .into_bytes(),
    )
    .await
    .json();
    assert_eq!(
        (second["created"].as_u64(), second["updated"].as_u64()),
        (Some(0), Some(1)),
        "{second}"
    );
    assert_eq!(second["skipped"][0]["uid"], "a");
    assert_eq!(
        second["skipped"][0]["reason"],
        "the event was cancelled here; a cancelled event is not updated"
    );
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "SELECT title, status::text FROM events WHERE scope_id = 'dup' ORDER BY title",
    )
    .fetch_all(&app.db)
    .await
    .expect("events");
    assert_eq!(
        statuses,
        vec![
            ("A".to_string(), "cancelled".to_string()),
            ("B".to_string(), "cancelled".to_string())
        ]
    );
    let cancelled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'event.cancelled'")
            .fetch_one(&app.db)
            .await
            .expect("outbox");
    assert_eq!(cancelled, 2, "the import's cancel is published");
}
