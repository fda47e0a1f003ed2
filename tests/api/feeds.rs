//! Subscribable calendar feeds: what a feed shows its owner, revoking,
//! blocked owners, conditional requests, the rate limit, DSAR. Feeds are
//! read back with Python's `icalendar` package (tests/fixtures/parse_ics.py),
//! a parser independent of the service's rendering.

use serde_json::{Value, json};
use updspace_events::client::Identity;
use uuid::Uuid;

use crate::helpers::{HttpReply, TestApp, admin, identity};

const EVENTS: &str = "/api/v1/events";

/// Parses a calendar with Python's `icalendar`; `{name, events: [...]}`.
pub fn parse_with_python(text: &str) -> Value {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/parse_ics.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install -r tests/fixtures/ics-requirements.txt)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python finishes");
    assert!(
        out.status.success(),
        "icalendar could not read the document: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

pub async fn call(app: &TestApp, op: &str, who: &Identity, body: Value) -> Value {
    let reply = app.client().call(op, who, &body).await.expect("reply");
    assert!(
        reply.status < 300,
        "{op}: {} {:?}",
        reply.status,
        reply.body
    );
    reply.body
}

pub async fn create_event(app: &TestApp, who: &Identity, body: Value) -> String {
    let body = call(app, "event.create", who, body).await;
    body["id"].as_str().expect("id").to_string()
}

pub fn event(
    scope: (&str, &str),
    title: &str,
    visibility: &str,
    starts: &str,
    ends: &str,
) -> Value {
    json!({
        "scopeType": scope.0, "scopeId": scope.1, "title": title, "visibility": visibility,
        "startsAt": starts, "endsAt": ends, "locationText": "Hall, 2nd floor; room 3",
    })
}

/// An unsigned GET, as a calendar app sends it.
async fn get(app: &TestApp, url: &str, etag: Option<&str>) -> HttpReply {
    let mut request = app.http.get(app.url(url));
    if let Some(tag) = etag {
        request = request.header("If-None-Match", tag);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    HttpReply {
        status,
        headers,
        text,
    }
}

fn titles(parsed: &Value) -> Vec<String> {
    let mut t: Vec<String> = parsed["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["summary"].as_str().unwrap_or_default().to_string())
        .collect();
    t.sort();
    t
}

fn future(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

/// The owner's feed holds public events, their own private ones and the
/// community events of communities they belong to, from 30 days back, and
/// never another's private event; losing the membership takes the
/// community's events out at the next request; a cancelled event is
/// `STATUS:CANCELLED`. Everything is read back with an independent parser.
#[tokio::test]
async fn a_feed_shows_what_its_owner_may_see_now() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let ts = tenant.to_string();
    let boss = admin(tenant);
    let owner_id = Uuid::new_v4();
    let owner = identity(tenant, owner_id);
    app.grant(tenant, owner_id, "events.organizer", "TENANT", &ts)
        .await;
    app.grant(tenant, owner_id, "events.organizer", "COMMUNITY", "c1")
        .await;
    app.join(tenant, owner_id, "COMMUNITY", "c1").await;
    let t = ("TENANT", ts.as_str());
    create_event(
        &app,
        &boss,
        event(t, "Public night", "public", &future(3), &future(4)),
    )
    .await;
    create_event(
        &app,
        &boss,
        event(t, "Boss private", "private", &future(3), &future(4)),
    )
    .await;
    create_event(
        &app,
        &owner,
        event(t, "Mine private", "private", &future(5), &future(6)),
    )
    .await;
    create_event(
        &app,
        &boss,
        event(
            ("COMMUNITY", "c1"),
            "Guild raid",
            "community",
            &future(2),
            &future(3),
        ),
    )
    .await;
    create_event(
        &app,
        &boss,
        event(t, "Long ago", "public", &future(-40), &future(-39)),
    )
    .await;
    let doomed = create_event(
        &app,
        &boss,
        event(t, "Called off", "public", &future(7), &future(8)),
    )
    .await;
    call(&app, "event.cancel", &boss, json!({"eventId": doomed})).await;

    let feed = call(&app, "feed.create", &owner, json!({})).await;
    let url = feed["url"].as_str().expect("url").to_string();
    assert!(
        url.starts_with("/api/v1/events/feeds/") && url.ends_with(".ics"),
        "{url}"
    );
    let token = feed["token"].as_str().expect("token");
    assert!(token.len() >= 22, "at least 128 bits: {token}");

    let first = get(&app, &url, None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(
        first.headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/calendar"),
        "{:?}",
        first.headers
    );
    let parsed = parse_with_python(&first.text);
    assert_eq!(
        titles(&parsed),
        vec!["Called off", "Guild raid", "Mine private", "Public night"]
    );
    let cancelled = parsed["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["summary"] == "Called off")
        .expect("cancelled event");
    assert_eq!(cancelled["status"], "CANCELLED");
    let raid = parsed["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["summary"] == "Guild raid")
        .expect("raid");
    assert_eq!(raid["location"], "Hall, 2nd floor; room 3");

    // The membership ends: the community's event goes at once.
    sqlx::query("DELETE FROM scope_memberships WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant)
        .bind(owner_id)
        .execute(&app.db)
        .await
        .expect("leave");
    let etag = first.headers["etag"].to_str().expect("etag").to_string();
    let after = get(&app, &url, Some(&etag)).await;
    assert_eq!(
        after.status, 200,
        "a visibility change must change the feed"
    );
    assert_eq!(
        titles(&parse_with_python(&after.text)),
        vec!["Called off", "Mine private", "Public night"]
    );
    assert_ne!(after.headers["etag"].to_str().unwrap_or(""), etag);

    // A scoped feed holds that scope only; a feed with myRsvp only those.
    let scoped = call(
        &app,
        "feed.create",
        &owner,
        json!({"scopeType": "TENANT", "scopeId": ts, "myRsvp": "going"}),
    )
    .await;
    let scoped_url = scoped["url"].as_str().expect("url").to_string();
    assert_eq!(
        titles(&parse_with_python(&get(&app, &scoped_url, None).await.text)),
        Vec::<String>::new()
    );
}

/// An unchanged feed answers 304 to its ETag; a change to an event in it
/// makes it 200 with a new ETag.
#[tokio::test]
async fn an_unchanged_feed_is_304_and_a_change_is_not() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let ts = tenant.to_string();
    let boss = admin(tenant);
    let owner = identity(tenant, Uuid::new_v4());
    let id = create_event(
        &app,
        &boss,
        event(("TENANT", &ts), "Quiz", "public", &future(1), &future(2)),
    )
    .await;
    let url = call(&app, "feed.create", &owner, json!({})).await["url"]
        .as_str()
        .expect("url")
        .to_string();
    let first = get(&app, &url, None).await;
    assert_eq!(first.status, 200);
    let etag = first.headers["etag"].to_str().expect("etag").to_string();
    let again = get(&app, &url, Some(&etag)).await;
    assert_eq!(again.status, 304, "{}", again.text);
    assert!(again.text.is_empty());
    call(
        &app,
        "event.update",
        &boss,
        json!({"eventId": id, "title": "Quiz II"}),
    )
    .await;
    let changed = get(&app, &url, Some(&etag)).await;
    assert_eq!(changed.status, 200);
    assert_eq!(titles(&parse_with_python(&changed.text)), vec!["Quiz II"]);
}

/// Revoked, unknown and malformed tokens are 404; the list never shows a
/// token; only the owner or a tenant admin revokes (another user gets 404).
#[tokio::test]
async fn revoked_and_unknown_feeds_are_404_and_only_owner_or_admin_revoke() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let owner = identity(tenant, Uuid::new_v4());
    let stranger = identity(tenant, Uuid::new_v4());
    let boss = admin(tenant);
    let a = call(&app, "feed.create", &owner, json!({})).await;
    let b = call(&app, "feed.create", &owner, json!({})).await;
    let (url_a, url_b) = (
        a["url"].as_str().expect("url"),
        b["url"].as_str().expect("url"),
    );
    assert_eq!(get(&app, url_a, None).await.status, 200);

    let listed = call(&app, "feed.list", &owner, json!({})).await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let text = listed.to_string();
    for token in [a["token"].as_str(), b["token"].as_str()]
        .into_iter()
        .flatten()
    {
        assert!(!text.contains(token), "feed.list shows a token: {text}");
    }
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM feed_tokens")
        .fetch_all(&app.db)
        .await
        .expect("hashes");
    assert!(stored.iter().all(|h| h.len() == 32));

    let refused = app
        .client()
        .call("feed.revoke", &stranger, &json!({"id": a["id"]}))
        .await
        .expect("reply");
    assert_eq!(refused.status, 404, "{:?}", refused.body);
    assert_eq!(get(&app, url_a, None).await.status, 200);

    let revoked = app
        .bff(
            "DELETE",
            &format!("{EVENTS}/feeds/{}", a["id"].as_str().expect("id")),
            &owner,
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.json()["revoked"], 1);
    assert_eq!(get(&app, url_a, None).await.status, 404);
    // A tenant admin revokes anyone's feed of the tenant.
    call(&app, "feed.revoke", &boss, json!({"id": b["id"]})).await;
    assert_eq!(get(&app, url_b, None).await.status, 404);

    let unknown = format!("{EVENTS}/feeds/{}.ics", "A".repeat(43));
    assert_eq!(get(&app, &unknown, None).await.status, 404);
    assert_eq!(
        get(&app, &format!("{EVENTS}/feeds/nope.ics"), None)
            .await
            .status,
        404
    );
    // Over HTTP the routes are there too.
    let made = app
        .bff("POST", &format!("{EVENTS}/feeds"), &owner, None)
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let listed = app
        .bff("GET", &format!("{EVENTS}/feeds"), &owner, None)
        .await;
    assert_eq!(listed.json()["items"].as_array().map(Vec::len), Some(1));
}

/// A feed whose owner a signed request showed suspended answers 404; once
/// the owner, no longer suspended, uses a feed operation, it works again.
#[tokio::test]
async fn a_suspended_owners_feed_is_404() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let user = Uuid::new_v4();
    let owner = identity(tenant, user);
    let url = call(&app, "feed.create", &owner, json!({})).await["url"]
        .as_str()
        .expect("url")
        .to_string();
    assert_eq!(get(&app, &url, None).await.status, 200);
    let suspended = Identity {
        master_flags: Some(r#"{"suspended":true}"#.into()),
        ..identity(tenant, user)
    };
    let listed = app
        .client()
        .call("event.list", &suspended, &json!({}))
        .await
        .expect("reply");
    assert!(listed.status < 500, "{:?}", listed.body);
    assert_eq!(get(&app, &url, None).await.status, 404);
    call(&app, "feed.list", &owner, json!({})).await;
    assert_eq!(get(&app, &url, None).await.status, 200);
}

/// More requests for one token than the configured rate are 429 with
/// Retry-After; other tokens are not affected.
#[tokio::test]
async fn a_token_polled_too_often_is_429() {
    let app = TestApp::spawn_with(|s| s.feed_rate_per_minute = Some("3".into())).await;
    let tenant = Uuid::new_v4();
    let owner = identity(tenant, Uuid::new_v4());
    let url = call(&app, "feed.create", &owner, json!({})).await["url"]
        .as_str()
        .expect("url")
        .to_string();
    let other = call(&app, "feed.create", &owner, json!({})).await["url"]
        .as_str()
        .expect("url")
        .to_string();
    for _ in 0..3 {
        assert_eq!(get(&app, &url, None).await.status, 200);
    }
    let limited = get(&app, &url, None).await;
    assert_eq!(limited.status, 429, "{}", limited.text);
    let wait: u32 = limited.headers["retry-after"]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(limited.json()["error"]["code"], "RATE_LIMITED");
    assert_eq!(get(&app, &other, None).await.status, 200);
}

/// DSAR: the export lists the subject's feeds without their token hashes;
/// the erase deletes them, and their URLs answer 404.
#[tokio::test]
async fn dsar_exports_and_erases_feeds() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let user = Uuid::new_v4();
    let owner = identity(tenant, user);
    let feed = call(&app, "feed.create", &owner, json!({"myRsvp": "going"})).await;
    let url = feed["url"].as_str().expect("url").to_string();
    let export = call(
        &app,
        "dsar.export",
        &owner,
        json!({"userId": user.to_string()}),
    )
    .await;
    let feeds = export["feed_tokens"].as_array().expect("feed_tokens");
    assert_eq!(feeds.len(), 1, "{export}");
    assert_eq!(feeds[0]["id"], feed["id"]);
    assert_eq!(feeds[0]["my_rsvp"], "going");
    let text = export.to_string();
    assert!(!text.contains("token_hash") && !text.contains(feed["token"].as_str().expect("t")));
    let erased = call(
        &app,
        "dsar.erase",
        &owner,
        json!({"userId": user.to_string()}),
    )
    .await;
    assert_eq!(erased["counts"]["feed_tokens_deleted"], 1, "{erased}");
    assert_eq!(get(&app, &url, None).await.status, 404);
}

/// One user holds at most 50 feeds in a tenant: the 51st is 409 until one
/// is revoked.
#[tokio::test]
async fn a_user_holds_at_most_50_feeds() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let owner = identity(tenant, Uuid::new_v4());
    let mut first = None;
    for _ in 0..50 {
        let feed = call(&app, "feed.create", &owner, json!({})).await;
        first.get_or_insert(feed["id"].clone());
    }
    let refused = app
        .client()
        .call("feed.create", &owner, &json!({}))
        .await
        .expect("reply");
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    // Another user is not affected.
    call(
        &app,
        "feed.create",
        &identity(tenant, Uuid::new_v4()),
        json!({}),
    )
    .await;
    call(&app, "feed.revoke", &owner, json!({"id": first})).await;
    call(&app, "feed.create", &owner, json!({})).await;
}
