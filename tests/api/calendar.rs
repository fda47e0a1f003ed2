//! Time zones and recurring events: series expanded in their zone, every
//! occurrence an event of its own, changes of one, the following or all
//! occurrences, the series calendar read back by an independent parser,
//! the extender making occurrences once as time passes, and hostile rules.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use updspace_events::client::{CallReply, EventsClient, Identity};
use uuid::Uuid;

use crate::helpers::{NATS_URL, TestApp, identity};
use crate::outbox::{read_stream, wait_for_stream};

const INSTALL: &str = "python3 -m pip install -r tests/fixtures/ics-requirements.txt";

struct World {
    app: TestApp,
    client: EventsClient,
    tenant: Uuid,
    org: Identity,
}

async fn world_with(adjust: impl FnOnce(&mut updspace_events::config::Settings)) -> World {
    let app = TestApp::spawn_with(adjust).await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let org_id = Uuid::new_v4();
    app.grant(
        tenant,
        org_id,
        "events.organizer",
        "TENANT",
        &tenant.to_string(),
    )
    .await;
    World {
        client,
        tenant,
        org: identity(tenant, org_id),
        app,
    }
}

async fn world() -> World {
    world_with(|_| {}).await
}

impl World {
    async fn call(&self, op: &str, body: Value) -> CallReply {
        self.client
            .call(op, &self.org, &body)
            .await
            .unwrap_or_else(|e| panic!("{op}: {e}"))
    }

    async fn ok(&self, op: &str, body: Value) -> Value {
        let r = self.call(op, body.clone()).await;
        assert_eq!(r.status, 200, "{op} {body}: {:?} {}", r.code, r.body);
        r.body
    }

    fn series_body(&self, starts: &str, ends: &str, zone: &str, rule: &str) -> Value {
        json!({
            "scopeType": "TENANT",
            "scopeId": self.tenant.to_string(),
            "title": "Game night",
            "startsAt": starts,
            "endsAt": ends,
            "timeZone": zone,
            "capacity": 2,
            "recurrence": {"rrule": rule},
        })
    }

    async fn series(&self, id: &str) -> Value {
        self.ok("series.get", json!({"seriesId": id})).await
    }

    async fn events_in_db(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.app.db)
            .await
            .unwrap_or(-1)
    }
}

fn starts(series: &Value) -> Vec<String> {
    series["occurrences"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["startsAt"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn occurrence_ids(series: &Value) -> Vec<String> {
    series["occurrences"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The local hour of a UTC instant in `zone`, read by Python's zoneinfo.
fn local_hours(instants: &[String], zone: &str) -> Vec<u32> {
    let script = "import sys, json; from datetime import datetime; from zoneinfo import ZoneInfo\n\
                  z = ZoneInfo(sys.argv[1])\n\
                  print(json.dumps([datetime.fromisoformat(s.replace('Z', '+00:00')).astimezone(z).hour for s in json.load(sys.stdin)]))";
    let out = python(
        &["-c", script, zone],
        &serde_json::to_string(instants).unwrap_or_default(),
    );
    serde_json::from_str(&out).unwrap_or_default()
}

fn python(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 cannot run ({e}); install Python 3 and `{INSTALL}`"));
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("stdin");
    }
    let out = child.wait_with_output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed (is `{INSTALL}` done?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_weekly_series_keeps_its_local_time_across_dst_in_berlin_and_new_york() {
    let w = world().await;
    // 18:00 in Berlin on Tuesdays from 13 October 2026: summer time ends on
    // 25 October, so the UTC start moves from 16:00 to 17:00.
    let first = w
        .ok(
            "event.create",
            w.series_body(
                "2026-10-13T16:00:00Z",
                "2026-10-13T19:00:00Z",
                "Europe/Berlin",
                "FREQ=WEEKLY;BYDAY=TU;COUNT=4",
            ),
        )
        .await;
    assert_eq!(first["startsAt"], "2026-10-13T16:00:00Z");
    assert_eq!(first["timeZone"], "Europe/Berlin");
    assert_eq!(first["recurrenceId"], "2026-10-13T16:00:00Z");
    let series_id = first["seriesId"].as_str().unwrap_or_default().to_string();
    let s = w.series(&series_id).await;
    assert_eq!(s["rrule"], "FREQ=WEEKLY;BYDAY=TU;COUNT=4");
    assert_eq!(s["timeZone"], "Europe/Berlin");
    assert_eq!(
        starts(&s),
        [
            "2026-10-13T16:00:00Z",
            "2026-10-20T16:00:00Z",
            "2026-10-27T17:00:00Z",
            "2026-11-03T17:00:00Z"
        ]
    );
    assert_eq!(local_hours(&starts(&s), "Europe/Berlin"), [18, 18, 18, 18]);
    // Each occurrence is an event of its own, with its own counters.
    for id in occurrence_ids(&s) {
        let e = w.ok("event.get", json!({"id": id})).await;
        assert_eq!(e["seriesId"], series_id.as_str());
        assert_eq!(e["capacity"], 2);
        assert_eq!(e["timeZone"], "Europe/Berlin");
    }

    // New York: every other Thursday at 19:00 until the end of March 2027
    // (DST starts on 14 March), one instance excluded.
    let ny = w
        .ok(
            "event.create",
            json!({
                "scopeType": "TENANT", "scopeId": w.tenant.to_string(), "title": "Chess club",
                "startsAt": "2027-02-04T00:00:00Z", "endsAt": "2027-02-04T02:00:00Z",
                "timeZone": "America/New_York",
                "recurrence": {"rrule": "FREQ=WEEKLY;INTERVAL=2;BYDAY=WE;UNTIL=20270401T000000Z",
                               "exdates": ["2027-03-04T00:00:00Z"]},
            }),
        )
        .await;
    let s = w.series(ny["seriesId"].as_str().unwrap_or_default()).await;
    // Wednesdays 19:00 EST = 00:00Z Thursday; after 14 March 19:00 EDT = 23:00Z.
    assert_eq!(
        starts(&s),
        [
            "2027-02-04T00:00:00Z",
            "2027-02-18T00:00:00Z",
            "2027-03-17T23:00:00Z",
            "2027-03-31T23:00:00Z"
        ]
    );
    assert_eq!(
        local_hours(&starts(&s), "America/New_York"),
        [19, 19, 19, 19]
    );
    assert_eq!(s["exdates"], json!(["2027-03-04T00:00:00Z"]));

    // Monthly on the 15th, three times; daily five times.
    for (rule, starts_at, expected) in [
        (
            "FREQ=MONTHLY;BYMONTHDAY=15;COUNT=3",
            "2027-01-15T18:00:00Z",
            vec![
                "2027-01-15T18:00:00Z",
                "2027-02-15T18:00:00Z",
                "2027-03-15T18:00:00Z",
            ],
        ),
        (
            "FREQ=DAILY;COUNT=3",
            "2027-05-30T18:00:00Z",
            vec![
                "2027-05-30T18:00:00Z",
                "2027-05-31T18:00:00Z",
                "2027-06-01T18:00:00Z",
            ],
        ),
    ] {
        let mut body = w.series_body(starts_at, "2027-12-31T00:00:00Z", "UTC", rule);
        body["endsAt"] = json!(starts_at.replace("T18:", "T20:"));
        let created = w.ok("event.create", body).await;
        let s = w
            .series(created["seriesId"].as_str().unwrap_or_default())
            .await;
        assert_eq!(starts(&s), expected, "{rule}");
    }

    // The stream: one event.created per occurrence, naming its series.
    let n = wait_for_stream(
        NATS_URL,
        &w.app.isolation.stream,
        14,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(n, 14);
    let messages = read_stream(NATS_URL, &w.app.isolation.stream).await;
    let of_series = messages
        .iter()
        .filter(|m| m.envelope["data"]["series_id"] == series_id.as_str())
        .count();
    assert_eq!(of_series, 4);
}

#[tokio::test]
async fn changes_to_this_following_and_all_occurrences_keep_their_rsvps() {
    let w = world().await;
    let first = w
        .ok(
            "event.create",
            w.series_body(
                "2027-10-12T16:00:00Z",
                "2027-10-12T19:00:00Z",
                "Europe/Berlin",
                "FREQ=WEEKLY;COUNT=6",
            ),
        )
        .await;
    let series_id = first["seriesId"].as_str().unwrap_or_default().to_string();
    let ids = occurrence_ids(&w.series(&series_id).await);
    assert_eq!(ids.len(), 6);
    // The organizer is going to every occurrence.
    for id in &ids {
        w.ok("rsvp.set", json!({"eventId": id, "status": "going"}))
            .await;
    }

    // This one: a new title on the second occurrence only.
    let one = w
        .ok(
            "event.update",
            json!({"id": ids[1], "title": "Special night", "applyTo": "this"}),
        )
        .await;
    assert_eq!(one["title"], "Special night");
    let s = w.series(&series_id).await;
    assert_eq!(s["occurrences"][1]["changed"], true);
    assert_eq!(s["occurrences"][2]["changed"], false);
    let third = w.ok("event.get", json!({"id": ids[2]})).await;
    assert_eq!(third["title"], "Game night");

    // Following from the fourth: an hour later (19:00 local), split off.
    let moved = w
        .ok(
            "event.update",
            json!({"id": ids[3], "startsAt": "2027-11-02T18:00:00Z",
                   "endsAt": "2027-11-02T21:00:00Z", "applyTo": "following"}),
        )
        .await;
    let split_id = moved["seriesId"].as_str().unwrap_or_default().to_string();
    assert_ne!(split_id, series_id);
    assert_eq!(moved["myRsvp"], "going");
    let old = w.series(&series_id).await;
    assert_eq!(occurrence_ids(&old), ids[..3].to_vec());
    assert!(old["complete"].as_bool().unwrap_or(false));
    let split = w.series(&split_id).await;
    assert_eq!(occurrence_ids(&split), ids[3..].to_vec());
    assert_eq!(
        local_hours(&starts(&split), "Europe/Berlin"),
        [19, 19, 19],
        "{split}"
    );
    assert_eq!(split["rrule"], "FREQ=WEEKLY;COUNT=3");
    for id in &ids {
        let e = w.ok("event.get", json!({"id": id})).await;
        assert_eq!(e["myRsvp"], "going", "{id} lost its RSVP");
        assert_eq!(e["rsvpCounts"]["going"], 1);
    }

    // All of the split series: a new title everywhere, times kept.
    w.ok(
        "event.update",
        json!({"id": ids[4], "title": "Late game night", "applyTo": "all"}),
    )
    .await;
    for id in &ids[3..] {
        let e = w.ok("event.get", json!({"id": id})).await;
        assert_eq!(e["title"], "Late game night");
    }
    for id in &ids[..3] {
        let e = w.ok("event.get", json!({"id": id})).await;
        assert_ne!(e["title"], "Late game night");
    }

    // A change of several occurrences cannot move them to another day or zone.
    for bad in [
        json!({"id": ids[4], "startsAt": "2027-11-10T18:00:00Z", "endsAt": "2027-11-10T21:00:00Z", "applyTo": "all"}),
        json!({"id": ids[4], "timeZone": "UTC", "applyTo": "following"}),
        json!({"id": ids[4], "title": "x", "applyTo": "sometimes"}),
    ] {
        let r = w.call("event.update", bad.clone()).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }

    // Cancel: this one, then the following ones, then all of the first series.
    let c = w
        .ok("event.cancel", json!({"id": ids[0], "applyTo": "this"}))
        .await;
    assert_eq!(c["status"], "cancelled");
    assert_eq!(
        w.ok("event.get", json!({"id": ids[1]})).await["status"],
        "scheduled"
    );
    w.ok(
        "event.cancel",
        json!({"id": ids[4], "applyTo": "following"}),
    )
    .await;
    let statuses = |s: &Value| -> Vec<String> {
        s["occurrences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| o["status"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        statuses(&w.series(&split_id).await),
        ["scheduled", "cancelled", "cancelled"]
    );
    w.ok("event.cancel", json!({"id": ids[2], "applyTo": "all"}))
        .await;
    let old = w.series(&series_id).await;
    assert_eq!(statuses(&old), ["cancelled", "cancelled", "cancelled"]);
    assert_eq!(old["cancelled"], true);

    // The stream has one message per occurrence changed, in commit order.
    let messages = read_stream(NATS_URL, &w.app.isolation.stream).await;
    let updated_split: Vec<&Value> = messages
        .iter()
        .filter(|m| m.envelope["type"] == "event.updated")
        .map(|m| &m.envelope["data"])
        .filter(|d| {
            d["updated_fields"]
                .as_array()
                .is_some_and(|f| f.contains(&json!("series_id")))
        })
        .collect();
    assert_eq!(
        updated_split.len(),
        3,
        "one event.updated per moved occurrence"
    );
}

#[tokio::test]
async fn the_series_calendar_read_by_an_independent_parser_equals_the_series() {
    let w = world().await;
    let first = w
        .ok(
            "event.create",
            w.series_body(
                "2026-10-13T16:00:00Z",
                "2026-10-13T19:00:00Z",
                "Europe/Berlin",
                "FREQ=WEEKLY;BYDAY=TU;COUNT=8",
            ),
        )
        .await;
    let series_id = first["seriesId"].as_str().unwrap_or_default().to_string();
    let ids = occurrence_ids(&w.series(&series_id).await);
    // One occurrence moved and renamed, one cancelled on its own.
    w.ok(
        "event.update",
        json!({"id": ids[2], "title": "Moved night", "startsAt": "2026-10-27T18:00:00Z",
               "endsAt": "2026-10-27T20:00:00Z"}),
    )
    .await;
    w.ok("event.cancel", json!({"id": ids[5]})).await;

    let reply = w
        .app
        .bff(
            "GET",
            &format!("/api/v1/events/series/{series_id}/ics"),
            &w.org,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains("BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin"));
    let parsed: Value =
        serde_json::from_str(&python(&["tests/fixtures/expand_ics.py"], &reply.text))
            .unwrap_or_default();
    assert_eq!(parsed["tzid"], "Europe/Berlin");
    let s = w.series(&series_id).await;
    let theirs = parsed["occurrences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ours = s["occurrences"].as_array().cloned().unwrap_or_default();
    assert_eq!(theirs.len(), ours.len(), "{parsed}\n{s}");
    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!(t["recurrenceId"], o["recurrenceId"]);
        assert_eq!(t["startsAt"], o["startsAt"]);
        assert_eq!(t["endsAt"], o["endsAt"]);
        let status = if o["status"] == "cancelled" {
            "CANCELLED"
        } else {
            "CONFIRMED"
        };
        assert_eq!(t["status"], status);
    }
    assert_eq!(theirs[2]["summary"], "Moved night");
    assert_eq!(theirs[3]["summary"], "Game night");

    // A single occurrence's own calendar carries its zone too.
    let one = w
        .app
        .bff(
            "GET",
            &format!("/api/v1/events/{}/ics", ids[0]),
            &w.org,
            None,
        )
        .await;
    assert!(
        one.text
            .contains("DTSTART;TZID=Europe/Berlin:20261013T180000"),
        "{}",
        one.text
    );

    // HTTP: the series, and a series id that is not one.
    let http = w
        .app
        .bff(
            "GET",
            &format!("/api/v1/events/series/{series_id}"),
            &w.org,
            None,
        )
        .await;
    assert_eq!(http.status, 200);
    assert_eq!(http.json()["occurrences"].as_array().map(Vec::len), Some(8));
    let bad = w
        .app
        .bff("GET", "/api/v1/events/series/not-a-uuid", &w.org, None)
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "INVALID_SERIES_ID");
    let missing = w
        .app
        .bff(
            "GET",
            &format!("/api/v1/events/series/{}", Uuid::new_v4()),
            &w.org,
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn hostile_rules_are_refused_with_422_and_write_nothing() {
    let w = world().await;
    let bad_rules = [
        "FREQ=SECONDLY",
        "FREQ=MINUTELY;COUNT=10",
        "FREQ=HOURLY",
        "FREQ=DAILY;COUNT=1000000",
        "FREQ=DAILY;COUNT=501",
        "FREQ=DAILY;UNTIL=21000101T000000Z",
        "FREQ=DAILY;BYHOUR=1,2,3,4,5,6,7,8",
        "FREQ=WEEKLY;BYDAY=FR",
        "FREQ=WEEKLY;BYDAY=XX",
        "FREQ=MONTHLY;BYMONTHDAY=99",
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
        "FREQ=DAILY;INTERVAL=100000",
        "FREQ=DAILY\r\nRRULE:FREQ=DAILY",
        "not a rule",
        "",
    ];
    for rule in bad_rules {
        let r = w
            .call(
                "event.create",
                w.series_body(
                    "2026-10-13T16:00:00Z",
                    "2026-10-13T19:00:00Z",
                    "Europe/Berlin",
                    rule,
                ),
            )
            .await;
        assert_eq!(r.status, 422, "{rule:?}: {}", r.body);
        assert!(
            r.body["error"]["details"]["fields"]
                .get("recurrence.rrule")
                .is_some(),
            "{rule:?}: {}",
            r.body
        );
    }
    for (field, body) in [
        ("timeZone", json!({"timeZone": "Mars/Olympus"})),
        ("timeZone", json!({"timeZone": 5})),
        ("recurrence", json!({"recurrence": "FREQ=DAILY"})),
        ("recurrence.rrule", json!({"recurrence": {"rrule": 5}})),
        (
            "recurrence.exdates",
            json!({"recurrence": {"rrule": "FREQ=DAILY;COUNT=3", "exdates": ["soon"]}}),
        ),
    ] {
        let mut create = w.series_body(
            "2026-10-13T16:00:00Z",
            "2026-10-13T19:00:00Z",
            "UTC",
            "FREQ=DAILY;COUNT=2",
        );
        for (k, v) in body.as_object().into_iter().flatten() {
            create[k] = v.clone();
        }
        let r = w.call("event.create", create).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert!(
            r.body["error"]["details"]["fields"].get(field).is_some(),
            "{body}: {}",
            r.body
        );
    }
    assert_eq!(w.events_in_db().await, 0);
    let series: i64 = sqlx::query_scalar("SELECT count(*) FROM event_series")
        .fetch_one(&w.app.db)
        .await
        .unwrap_or(-1);
    assert_eq!(series, 0);
    let r = w.call("series.get", json!({"seriesId": "nope"})).await;
    assert_eq!(
        (r.status, r.code.as_deref()),
        (400, Some("INVALID_SERIES_ID"))
    );
}

#[tokio::test]
async fn the_extender_makes_each_occurrence_once_as_time_passes_even_on_two_instances() {
    // 30 days ahead at first: an endless weekly series has 5 occurrences.
    let mut w = world_with(|s| {
        s.series_horizon_days = Some("30".into());
        s.series_extend_interval = Some("100ms".into());
    })
    .await;
    let now = chrono::Utc::now();
    let start = (now + chrono::Duration::days(1))
        .format("%Y-%m-%dT18:00:00Z")
        .to_string();
    let end = (now + chrono::Duration::days(1))
        .format("%Y-%m-%dT20:00:00Z")
        .to_string();
    let first = w
        .ok(
            "event.create",
            w.series_body(&start, &end, "UTC", "FREQ=WEEKLY"),
        )
        .await;
    let series_id = first["seriesId"].as_str().unwrap_or_default().to_string();
    let before = occurrence_ids(&w.series(&series_id).await).len();
    assert!((4..=5).contains(&before), "{before}");

    // Ninety days later, on two instances at once, each running its extender.
    w.app.stop().await;
    let later = |s: &mut updspace_events::config::Settings| {
        s.series_horizon_days = Some("30".into());
        s.series_extend_interval = Some("100ms".into());
        s.clock_offset = Some("90d".into());
    };
    let a = w.app.spawn_sibling(later).await;
    let b = w.app.spawn_sibling(later).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut after = 0;
    while tokio::time::Instant::now() < deadline {
        let s = w.series(&series_id).await;
        after = occurrence_ids(&s).len();
        if after >= before + 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (before + 12..=before + 13).contains(&after),
        "{before} → {after}"
    );
    // Once per instance of the rule, in the stream and in the table.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows: Vec<(chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "SELECT recurrence_id, count(*) FROM events WHERE series_id = $1::uuid GROUP BY 1",
    )
    .bind(&series_id)
    .fetch_all(&w.app.db)
    .await
    .unwrap_or_default();
    assert!(rows.iter().all(|(_, n)| *n == 1));
    wait_for_stream(
        NATS_URL,
        &w.app.isolation.stream,
        after as u64,
        Duration::from_secs(10),
    )
    .await;
    let messages = read_stream(NATS_URL, &w.app.isolation.stream).await;
    let mut created: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        if m.envelope["type"] == "event.created"
            && m.envelope["data"]["series_id"] == series_id.as_str()
        {
            *created
                .entry(
                    m.envelope["data"]["recurrence_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
                .or_default() += 1;
        }
    }
    assert_eq!(created.len(), after);
    assert!(created.values().all(|n| *n == 1), "{created:?}");
    // The later occurrences are extended from the template as it is now.
    drop((a, b));
}

#[tokio::test]
async fn dsar_exports_and_anonymises_the_series_a_user_created() {
    let w = world().await;
    let first = w
        .ok(
            "event.create",
            w.series_body(
                "2026-10-13T16:00:00Z",
                "2026-10-13T19:00:00Z",
                "UTC",
                "FREQ=DAILY;COUNT=2",
            ),
        )
        .await;
    let series_id = first["seriesId"].as_str().unwrap_or_default().to_string();
    let me = json!({"userId": w.org.user_id});
    let export = w.ok("dsar.export", me.clone()).await;
    assert_eq!(export["series_created"][0]["series_id"], series_id.as_str());
    assert_eq!(export["series_created"][0]["rrule"], "FREQ=DAILY;COUNT=2");
    let erased = w.ok("dsar.erase", me.clone()).await;
    assert_eq!(erased["counts"]["series_anonymized"], 1, "{erased}");
    let creator: Uuid =
        sqlx::query_scalar("SELECT created_by FROM event_series WHERE id = $1::uuid")
            .bind(&series_id)
            .fetch_one(&w.app.db)
            .await
            .expect("series");
    assert!(creator.is_nil());
    let again = w.ok("dsar.export", me).await;
    assert_eq!(again["series_created"], json!([]));
}

/// A recurring create and a change of several occurrences, each replayed to
/// another instance and to the first: refused, and nothing changes.
#[tokio::test]
async fn series_writes_replayed_are_refused_on_every_instance() {
    let w = world().await;
    let b = w.app.spawn_sibling(|_| {}).await;
    let count = |app: &TestApp| {
        let db = app.db.clone();
        async move {
            sqlx::query_as::<_, (i64, i64, i64)>(
                "SELECT (SELECT count(*) FROM events), (SELECT coalesce(sum(version), 0)::bigint FROM events),
                        (SELECT count(*) FROM event_series)",
            )
            .fetch_one(&db)
            .await
            .expect("counts")
        }
    };
    for version in [2u8, 1] {
        let body = w.series_body(
            "2026-10-13T16:00:00Z",
            "2026-10-13T19:00:00Z",
            "Europe/Berlin",
            "FREQ=WEEKLY;COUNT=3",
        );
        let create = crate::helpers::capture(
            "POST",
            "/api/v1/events/",
            &w.org,
            Some(body.to_string().into_bytes()),
            version,
        );
        let first = w.app.send(&create).await;
        assert_eq!(first.status, 200, "v{version}: {}", first.text);
        let anchor = first.json()["id"].as_str().unwrap_or_default().to_string();
        let patch = crate::helpers::capture(
            "PATCH",
            &format!("/api/v1/events/{anchor}"),
            &w.org,
            Some(
                json!({"title": format!("Renamed v{version}"), "applyTo": "all"})
                    .to_string()
                    .into_bytes(),
            ),
            version,
        );
        assert_eq!(w.app.send(&patch).await.status, 200);
        let before = count(&w.app).await;
        for (what, captured) in [("create", &create), ("update all", &patch)] {
            for target in [&b, &w.app] {
                let again = target.send(captured).await;
                assert_eq!(
                    (again.status, again.json()["error"]["code"].as_str()),
                    (401, Some("UNAUTHORIZED")),
                    "v{version} {what} replayed: {}",
                    again.text
                );
            }
        }
        assert_eq!(
            count(&w.app).await,
            before,
            "v{version}: a replay changed something"
        );
    }
}

/// A subscribed feed writes a series as its rule (with its overrides), and
/// a calendar app that expands it sees exactly the series' occurrences.
#[tokio::test]
async fn a_feed_writes_a_series_as_its_rule() {
    let w = world().await;
    let first = w
        .ok(
            "event.create",
            w.series_body(
                "2027-10-12T16:00:00Z",
                "2027-10-12T19:00:00Z",
                "Europe/Berlin",
                "FREQ=WEEKLY;COUNT=5",
            ),
        )
        .await;
    let series_id = first["seriesId"].as_str().unwrap_or_default().to_string();
    let ids = occurrence_ids(&w.series(&series_id).await);
    w.ok(
        "event.update",
        json!({"id": ids[1], "title": "Special night"}),
    )
    .await;
    let feed = w.ok("feed.create", json!({})).await;
    let url = feed["url"].as_str().unwrap_or_default().to_string();
    let response = w.app.http.get(w.app.url(&url)).send().await.expect("feed");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap_or_default();
    assert_eq!(text.matches("RRULE:").count(), 1, "{text}");
    assert_eq!(text.matches("RECURRENCE-ID").count(), 1, "{text}");
    let parsed: Value =
        serde_json::from_str(&python(&["tests/fixtures/expand_ics.py"], &text)).unwrap_or_default();
    let s = w.series(&series_id).await;
    let theirs: Vec<&Value> = parsed["occurrences"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(theirs.len(), 5, "{parsed}");
    for (t, o) in theirs
        .iter()
        .zip(s["occurrences"].as_array().into_iter().flatten())
    {
        assert_eq!(t["startsAt"], o["startsAt"]);
    }
    assert_eq!(theirs[1]["summary"], "Special night");
}

/// An imported VEVENT with RRULE becomes a series in its TZID's zone, its
/// EXDATE kept; a rule the service does not take is skipped with the
/// rule's reason and writes nothing.
#[tokio::test]
async fn an_imported_rrule_becomes_a_series() {
    let w = world().await;
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\n\
        BEGIN:VEVENT\r\nUID:chess@example.org\r\nDTSTAMP:20270101T000000Z\r\n\
        DTSTART;TZID=America/New_York:20270303T190000\r\nDTEND;TZID=America/New_York:20270303T210000\r\n\
        RRULE:FREQ=WEEKLY;COUNT=4\r\nEXDATE;TZID=America/New_York:20270310T190000\r\n\
        SUMMARY:Chess club\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:spam@example.org\r\nDTSTAMP:20270101T000000Z\r\n\
        DTSTART:20270303T190000Z\r\nDTEND:20270303T200000Z\r\nRRULE:FREQ=SECONDLY\r\n\
        SUMMARY:Every second\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let body = json!({"ics": ics, "scopeType": "TENANT", "scopeId": w.tenant.to_string(), "visibility": "public"});
    let reply = w.ok("event.import", body.clone()).await;
    assert_eq!(reply["created"], 1, "{reply}");
    let skipped = reply["skipped"].as_array().cloned().unwrap_or_default();
    assert_eq!(skipped.len(), 1, "{reply}");
    assert_eq!(skipped[0]["uid"], "spam@example.org");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("FREQ=SECONDLY"),
        "{reply}"
    );
    let series_id: String = sqlx::query_scalar("SELECT id::text FROM event_series")
        .fetch_one(&w.app.db)
        .await
        .expect("one series");
    let s = w.series(&series_id).await;
    assert_eq!(s["timeZone"], "America/New_York");
    // 19:00 EST, then EDT from 14 March; the 10th excluded.
    assert_eq!(
        starts(&s),
        [
            "2027-03-04T00:00:00Z",
            "2027-03-17T23:00:00Z",
            "2027-03-24T23:00:00Z"
        ]
    );
    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM events ORDER BY starts_at")
        .fetch_all(&w.app.db)
        .await
        .unwrap_or_default();
    assert_eq!(titles, ["Chess club", "Chess club", "Chess club"]);
    // Importing it again changes nothing.
    let again = w.ok("event.import", body).await;
    assert_eq!(
        (again["created"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(1)),
        "{again}"
    );
    assert_eq!(w.events_in_db().await, 3);
}
