//! Live updates over `GET /stream` (server-sent events): each caller gets the
//! domain events they may see, judged by the API's own visibility rules,
//! with their own view of the event; a stream resumes after its last id
//! with no gap and no duplicate; a client that stops reading is dropped
//! without holding anyone else back; the stream outlives a NATS restart.

use std::time::Duration;

use serde_json::{Value, json};
use updspace_events::client::Identity;
use uuid::Uuid;

use crate::helpers::{PrivateNats, TestApp, admin, capture, free_port, identity};

const STREAM: &str = "/api/v1/events/stream";
const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Message { id: u64, event: String, data: Value },
    Comment(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Message {
    id: u64,
    event: String,
    data: Value,
}

impl Message {
    fn event_id(&self) -> &str {
        self.data["eventId"].as_str().unwrap_or("")
    }
}

/// One open stream, read frame by frame.
struct Sse {
    response: reqwest::Response,
    buf: Vec<u8>,
}

fn stream_path(query: &str) -> String {
    if query.is_empty() {
        STREAM.to_string()
    } else {
        format!("{STREAM}?{query}")
    }
}

/// Opens a stream signed as `who` (v2), or answers the refusal's status and
/// body. A new instance's feed may still be finding the end of the stream
/// (503 `SERVICE_UNAVAILABLE`): that is waited out.
async fn open(
    app: &TestApp,
    who: &Identity,
    query: &str,
    last_event_id: Option<&str>,
) -> Result<Sse, (u16, Value)> {
    for _ in 0..100 {
        match open_once(app, who, query, last_event_id).await {
            Err((503, body)) if body["error"]["code"] == json!("SERVICE_UNAVAILABLE") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    open_once(app, who, query, last_event_id).await
}

async fn open_once(
    app: &TestApp,
    who: &Identity,
    query: &str,
    last_event_id: Option<&str>,
) -> Result<Sse, (u16, Value)> {
    let path = stream_path(query);
    let captured = capture("GET", &path, who, None, 2);
    let mut request = app.http.get(app.url(&path));
    for (k, v) in &captured.headers {
        request = request.header(k, v);
    }
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.expect("the stream request is sent");
    let status = response.status().as_u16();
    if status != 200 {
        let retry_after = response.headers().get("retry-after").is_some();
        let mut body: Value = response.json().await.unwrap_or(Value::Null);
        body["retryAfterSent"] = json!(retry_after);
        return Err((status, body));
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "content type {content_type}"
    );
    Ok(Sse {
        response,
        buf: Vec::new(),
    })
}

async fn opened(app: &TestApp, who: &Identity, query: &str) -> Sse {
    match open(app, who, query, None).await {
        Ok(sse) => sse,
        Err(refused) => panic!("the stream was refused: {refused:?}"),
    }
}

fn parse_block(block: &str) -> Option<Item> {
    let (mut id, mut event, mut data, mut comment) = (None, None, Vec::new(), None);
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix(':') {
            comment = Some(rest.trim().to_string());
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = value.parse::<u64>().ok(),
                "event" => event = Some(value.to_string()),
                "data" => data.push(value.to_string()),
                _ => {}
            }
        }
    }
    match (id, event) {
        (Some(id), Some(event)) => {
            let data = serde_json::from_str(&data.join("\n")).expect("data is one JSON value");
            Some(Item::Message { id, event, data })
        }
        _ => comment.map(Item::Comment),
    }
}

impl Sse {
    /// The next frame; `None` once the server ended the stream.
    async fn next(&mut self, within: Duration) -> Option<Item> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                if let Some(item) = parse_block(&String::from_utf8_lossy(&block)) {
                    return Some(item);
                }
                continue;
            }
            match tokio::time::timeout(within, self.response.chunk()).await {
                Err(_) => panic!("no frame within {within:?}"),
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                Ok(_) => return None,
            }
        }
    }

    /// The next message, keep-alive comments skipped.
    async fn message(&mut self) -> Message {
        loop {
            match self.next(WAIT).await {
                Some(Item::Message { id, event, data }) => return Message { id, event, data },
                Some(Item::Comment(_)) => {}
                None => panic!("the stream ended"),
            }
        }
    }

    /// Messages up to and including the first `event_type` about `event_id`.
    async fn until(&mut self, event_type: &str, event_id: &str) -> Vec<Message> {
        let mut seen = Vec::new();
        loop {
            let m = self.message().await;
            let last = m.event == event_type && m.event_id() == event_id;
            seen.push(m);
            if last {
                return seen;
            }
        }
    }
}

fn event_body(tenant: Uuid, scope_type: &str, scope_id: &str, vis: &str, title: &str) -> Value {
    let scope_id = if scope_type == "TENANT" {
        tenant.to_string()
    } else {
        scope_id.to_string()
    };
    json!({
        "scopeType": scope_type, "scopeId": scope_id, "title": title, "visibility": vis,
        "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
    })
}

async fn call(app: &TestApp, op: &str, who: &Identity, body: Value) -> Value {
    let reply = app
        .client()
        .call(op, who, &body)
        .await
        .unwrap_or_else(|e| panic!("{op}: no reply: {e}"));
    assert_eq!(reply.status, 200, "{op}: {:?}", reply.body);
    reply.body
}

async fn create(app: &TestApp, who: &Identity, body: Value) -> String {
    call(app, "event.create", who, body).await["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn rsvp(app: &TestApp, who: &Identity, event: &str, status: &str) {
    call(
        app,
        "rsvp.set",
        who,
        json!({"eventId": event, "status": status}),
    )
    .await;
}

async fn rename(app: &TestApp, who: &Identity, event: &str, title: &str) {
    call(
        app,
        "event.update",
        who,
        json!({"id": event, "title": title}),
    )
    .await;
}

fn summary(messages: &[Message]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| (m.event.clone(), m.event_id().to_string()))
        .collect()
}

#[tokio::test]
async fn a_stream_shows_each_caller_what_they_may_see_and_nothing_else() {
    let app = TestApp::spawn().await;
    let (tenant, other_tenant) = (Uuid::new_v4(), Uuid::new_v4());
    let boss = admin(tenant);
    let (member_id, stranger_id) = (Uuid::new_v4(), Uuid::new_v4());
    let member = identity(tenant, member_id);
    let stranger = identity(tenant, stranger_id);
    app.join(tenant, member_id, "COMMUNITY", "c-in").await;

    let mut as_boss = opened(&app, &boss, "").await;
    let mut as_member = opened(&app, &member, "").await;
    let mut as_stranger = opened(&app, &stranger, "").await;

    let public = create(
        &app,
        &boss,
        event_body(tenant, "TENANT", "", "public", "Open"),
    )
    .await;
    let ours = create(
        &app,
        &boss,
        event_body(tenant, "COMMUNITY", "c-in", "community", "Ours"),
    )
    .await;
    let theirs = create(
        &app,
        &boss,
        event_body(tenant, "COMMUNITY", "c-out", "community", "Theirs"),
    )
    .await;
    let secret = create(
        &app,
        &boss,
        event_body(tenant, "TENANT", "", "private", "Secret"),
    )
    .await;
    let elsewhere = create(
        &app,
        &admin(other_tenant),
        event_body(other_tenant, "TENANT", "", "public", "Elsewhere"),
    )
    .await;
    rsvp(&app, &member, &public, "going").await;
    rsvp(&app, &stranger, &public, "interested").await;
    // Messages come in stream order: once this one arrives, everything
    // before it has been judged.
    rename(&app, &boss, &public, "Open (renamed)").await;

    let created = |id: &str| ("event.created".to_string(), id.to_string());
    let rsvp_on = |id: &str| ("event.rsvp.changed".to_string(), id.to_string());
    let updated = |id: &str| ("event.updated".to_string(), id.to_string());

    let member_saw = as_member.until("event.updated", &public).await;
    assert_eq!(
        summary(&member_saw),
        [
            created(&public),
            created(&ours),
            rsvp_on(&public),
            rsvp_on(&public),
            updated(&public)
        ],
        "a member sees public events and their community's, not another community's, a private or another tenant's"
    );
    let stranger_saw = as_stranger.until("event.updated", &public).await;
    assert_eq!(
        summary(&stranger_saw),
        [
            created(&public),
            rsvp_on(&public),
            rsvp_on(&public),
            updated(&public)
        ]
    );
    let boss_saw = as_boss.until("event.updated", &public).await;
    assert_eq!(
        summary(&boss_saw),
        [
            created(&public),
            created(&ours),
            created(&theirs),
            created(&secret),
            rsvp_on(&public),
            rsvp_on(&public),
            updated(&public)
        ],
        "a system admin sees every event of the tenant, and none of another tenant's ({elsewhere})"
    );

    // RSVP user ids: to that user and to who may manage the event only.
    let rsvps = |saw: &[Message]| -> Vec<(Option<String>, Option<String>)> {
        saw.iter()
            .filter(|m| m.event == "event.rsvp.changed")
            .map(|m| {
                (
                    m.data["userId"].as_str().map(str::to_string),
                    m.data["status"].as_str().map(str::to_string),
                )
            })
            .collect()
    };
    let (m, s) = (member_id.to_string(), stranger_id.to_string());
    assert_eq!(
        rsvps(&member_saw),
        [(Some(m.clone()), Some("going".into())), (None, None)]
    );
    assert_eq!(
        rsvps(&stranger_saw),
        [(None, None), (Some(s.clone()), Some("interested".into()))]
    );
    assert_eq!(
        rsvps(&boss_saw),
        [
            (Some(m), Some("going".into())),
            (Some(s), Some("interested".into()))
        ]
    );
    for saw in [&member_saw, &stranger_saw, &boss_saw] {
        for pair in saw.windows(2) {
            assert!(pair[0].id < pair[1].id, "ids grow: {pair:?}");
        }
        for m in saw.iter() {
            assert!(
                !m.data.to_string().contains(member_id.to_string().as_str())
                    || m.event == "event.rsvp.changed",
                "a user id outside an RSVP message: {m:?}"
            );
        }
    }
    // Each caller's own view of the event.
    let member_update = member_saw.last().expect("the update");
    assert_eq!(member_update.data["event"]["myRsvp"], json!("going"));
    assert_eq!(
        member_update.data["event"]["title"],
        json!("Open (renamed)")
    );
    assert_eq!(member_update.data["type"], json!("event.updated"));
    let stranger_update = stranger_saw.last().expect("the update");
    assert_eq!(stranger_update.data["event"]["myRsvp"], json!("interested"));
    assert_eq!(stranger_update.id, member_update.id, "one id per message");
    assert!(
        member_update.data["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{member_update:?}"
    );
}

#[tokio::test]
async fn filters_narrow_a_stream_and_bad_ones_are_refused() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let public = create(
        &app,
        &boss,
        event_body(tenant, "TENANT", "", "public", "Open"),
    )
    .await;
    let mut by_scope = opened(&app, &boss, "scopeType=COMMUNITY&scopeId=c-1").await;
    let mut by_event = opened(&app, &boss, &format!("eventId={public}")).await;
    let mut by_type = opened(&app, &boss, "scope_type=TENANT").await;

    let elsewhere = create(
        &app,
        &boss,
        event_body(tenant, "COMMUNITY", "c-2", "public", "Elsewhere"),
    )
    .await;
    let here = create(
        &app,
        &boss,
        event_body(tenant, "COMMUNITY", "c-1", "public", "Here"),
    )
    .await;
    rename(&app, &boss, &public, "Open (renamed)").await;

    // A stream starts where the instance's feed is: the creation of the
    // event made just before may still be on its way, and come first.
    let without_creation = |saw: Vec<Message>| {
        summary(&saw)
            .into_iter()
            .filter(|m| *m != ("event.created".to_string(), public.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        summary(&[by_scope.message().await]),
        [("event.created".to_string(), here.clone())]
    );
    assert_eq!(
        without_creation(by_event.until("event.updated", &public).await),
        [("event.updated".to_string(), public.clone())]
    );
    assert_eq!(
        without_creation(by_type.until("event.updated", &public).await),
        [("event.updated".to_string(), public.clone())],
        "{elsewhere} and {here} are community events"
    );

    // Hostile or impossible requests: an error envelope, no stream.
    let member = identity(tenant, Uuid::new_v4());
    let secret = create(
        &app,
        &boss,
        event_body(tenant, "TENANT", "", "private", "Secret"),
    )
    .await;
    let blocked = Identity {
        master_flags: Some(r#"{"suspended":true}"#.into()),
        ..identity(tenant, Uuid::new_v4())
    };
    for (who, query, status, code) in [
        (&member, "scopeId=c-1".to_string(), 422, "VALIDATION_ERROR"),
        (
            &member,
            "scopeType=GALAXY".to_string(),
            422,
            "VALIDATION_ERROR",
        ),
        (
            &member,
            "eventId=not-a-uuid".to_string(),
            422,
            "VALIDATION_ERROR",
        ),
        (
            &member,
            "lastEventId=-1".to_string(),
            422,
            "VALIDATION_ERROR",
        ),
        (
            &member,
            "lastEventId=soon".to_string(),
            422,
            "VALIDATION_ERROR",
        ),
        (&member, format!("eventId={secret}"), 404, "NOT_FOUND"),
        (
            &member,
            format!("eventId={}", Uuid::new_v4()),
            404,
            "NOT_FOUND",
        ),
        (&blocked, String::new(), 403, "FORBIDDEN"),
    ] {
        match open(&app, who, &query, None).await {
            Ok(_) => panic!("{query}: a stream was opened"),
            Err((got, body)) => assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{query}: {body}"
            ),
        }
    }
    // Unsigned: refused like any request.
    let unsigned = app.http.get(app.url(STREAM)).send().await.expect("sent");
    assert_eq!(unsigned.status().as_u16(), 400);
    let refused: Value = unsigned.json().await.expect("an error envelope");
    assert_eq!(
        refused["error"]["code"],
        json!("MISSING_REQUEST_ID"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_stream_resumes_after_its_last_id_with_no_gap_and_no_duplicate() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let mut whole = opened(&app, &boss, "").await;
    let mut first = opened(&app, &boss, "").await;
    let event = create(
        &app,
        &boss,
        event_body(tenant, "TENANT", "", "public", "Game"),
    )
    .await;
    for _ in 0..4 {
        rsvp(&app, &identity(tenant, Uuid::new_v4()), &event, "going").await;
    }
    // The first client reads two messages and goes away.
    let read: Vec<Message> = vec![first.message().await, first.message().await];
    drop(first);
    for _ in 0..3 {
        rsvp(&app, &identity(tenant, Uuid::new_v4()), &event, "going").await;
    }
    rename(&app, &boss, &event, "Game night").await;
    let all = whole.until("event.updated", &event).await;
    assert_eq!(all.len(), 9, "{:?}", summary(&all));
    assert_eq!(read[..], all[..2], "the first client's messages");

    let last = read[1].id.to_string();
    let mut resumed = match open(&app, &boss, "", Some(&last)).await {
        Ok(sse) => sse,
        Err(e) => panic!("resume refused: {e:?}"),
    };
    let missed = resumed.until("event.updated", &event).await;
    let ids = |ms: &[Message]| ms.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&missed),
        ids(&all[2..]),
        "the header resumes right after the last id read"
    );
    assert_eq!(summary(&missed), summary(&all[2..]));

    // The query field does the same, and the stream goes on live after it.
    let mut by_query = opened(&app, &boss, &format!("lastEventId={}", all[6].id)).await;
    let tail = by_query.until("event.updated", &event).await;
    assert_eq!(ids(&tail), ids(&all[7..]));
    rename(&app, &boss, &event, "Game night (moved)").await;
    let live = by_query.message().await;
    assert_eq!(
        (live.event.as_str(), live.id),
        ("event.updated", all[8].id + 1)
    );
    assert_eq!(resumed.message().await, live, "both streams go on live");

    // An id from the future (or another stream) and one the stream no
    // longer holds: `reset`, then the stream from now.
    let mut future = match open(&app, &boss, "", Some("999999999")).await {
        Ok(sse) => sse,
        Err(e) => panic!("refused: {e:?}"),
    };
    let reset = future.message().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.id, live.id, "a reset carries the position of now");

    let js = async_nats::jetstream::new(app.nats.clone());
    let stream = js
        .get_stream(&app.isolation.stream)
        .await
        .expect("the stream");
    stream.purge().await.expect("purge the stream");
    let mut too_old = match open(&app, &boss, "", Some(&all[0].id.to_string())).await {
        Ok(sse) => sse,
        Err(e) => panic!("refused: {e:?}"),
    };
    assert_eq!(too_old.message().await.event, "reset");
    rename(&app, &boss, &event, "After the purge").await;
    let after = too_old.message().await;
    assert_eq!(
        (after.event.as_str(), after.data["event"]["title"].clone()),
        ("event.updated", json!("After the purge"))
    );
    assert_eq!(future.message().await.id, after.id);
    assert!(
        app.state.metrics.sse_resets.get() >= 2,
        "resets are counted"
    );
}

#[tokio::test]
async fn an_idle_stream_sends_keep_alive_comments() {
    let app = TestApp::spawn_with(|s| s.sse_keepalive = Some("100ms".into())).await;
    let tenant = Uuid::new_v4();
    let mut sse = opened(&app, &admin(tenant), "").await;
    for _ in 0..2 {
        assert_eq!(
            sse.next(Duration::from_secs(5)).await,
            Some(Item::Comment("keep-alive".into()))
        );
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_while_another_keeps_receiving() {
    let app = TestApp::spawn_with(|s| s.sse_buffer = Some("256".into())).await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let mut body = event_body(tenant, "TENANT", "", "public", "Big");
    // Every message carries the event: large ones fill socket buffers soon.
    body["description"] = json!("x".repeat(20_000));
    let event = create(&app, &boss, body).await;

    // A client that sends its request and never reads, with a small window.
    let path = STREAM.to_string();
    let captured = capture("GET", &path, &boss, None, 2);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small window");
    let slow = socket.connect(app.addr).await.expect("connect");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", app.addr);
    for (k, v) in &captured.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut rest = head.as_bytes();
    while !rest.is_empty() {
        slow.writable().await.expect("writable");
        match slow.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("request: {e}"),
        }
    }
    let mut fast = opened(&app, &boss, "").await;
    let gauge = || app.state.metrics.sse_connections.get();
    for _ in 0..200 {
        if gauge() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(gauge(), 2, "both streams are open");

    // The reading client reads as the messages come.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let read = progress.clone();
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < 600 {
            match fast.next(WAIT).await {
                Some(Item::Message { event, .. }) if event == "event.rsvp.changed" => {
                    got += 1;
                    read.store(got, std::sync::atomic::Ordering::SeqCst);
                }
                // The event's creation may still have been on its way.
                Some(Item::Message { event, .. }) if event == "event.created" => {}
                Some(Item::Message { event, .. }) => return Err(format!("a stray {event}")),
                Some(Item::Comment(_)) => {}
                None => return Err(format!("the stream ended after {got} messages")),
            }
        }
        Ok(fast)
    });
    // 600 messages of 20 KB: far more than the slow client's socket buffers
    // and its 256 queued frames hold.
    let users: Vec<Identity> = (0..600).map(|_| identity(tenant, Uuid::new_v4())).collect();
    // Each burst waits for the reading client, so only the other falls
    // behind, however slowly this build judges and parses messages.
    for (i, chunk) in users.chunks(20).enumerate() {
        futures::future::join_all(chunk.iter().map(|who| rsvp(&app, who, &event, "going"))).await;
        let sent = (i + 1) * 20;
        for _ in 0..3000 {
            if progress.load(std::sync::atomic::Ordering::SeqCst) >= sent || reader.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut fast = match reader.await.expect("the reader") {
        Ok(fast) => fast,
        Err(e) => panic!(
            "the reading client: {e} (dropped {}, open {})",
            app.state.metrics.sse_dropped.get(),
            gauge()
        ),
    };
    assert!(
        app.state.metrics.sse_dropped.get() >= 1,
        "the slow client was dropped"
    );
    assert_eq!(gauge(), 1, "only the reading client is still counted");
    rename(&app, &boss, &event, "Still live").await;
    assert_eq!(fast.message().await.event, "event.updated");
    drop(slow);
}

#[tokio::test]
async fn streams_over_the_cap_are_refused_with_503_until_one_closes() {
    let app = TestApp::spawn_with(|s| {
        s.sse_max_connections = Some("2".into());
        s.sse_keepalive = Some("100ms".into());
    })
    .await;
    let boss = admin(Uuid::new_v4());
    let one = opened(&app, &boss, "").await;
    let _two = opened(&app, &boss, "").await;
    match open(&app, &boss, "", None).await {
        Ok(_) => panic!("a third stream was opened"),
        Err((status, body)) => {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (503, Some("TOO_MANY_STREAMS")),
                "{body}"
            );
            assert_eq!(body["retryAfterSent"], json!(true));
        }
    }
    drop(one);
    // The server notices the closed connection at its next keep-alive.
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(sse) = open(&app, &boss, "", None).await {
            reopened = Some(sse);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "a slot came free");
    assert_eq!(app.state.metrics.sse_connections.get(), 2);
}

#[tokio::test]
async fn a_stream_goes_on_through_a_nats_restart() {
    let mut nats = PrivateNats::start_on(free_port());
    nats.wait_ready().await;
    let url = nats.url();
    let app = TestApp::spawn_with(|s| s.nats_url = Some(url)).await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let mut sse = opened(&app, &boss, "").await;
    let before = create(
        &app,
        &boss,
        event_body(tenant, "TENANT", "", "public", "Before"),
    )
    .await;
    assert_eq!(sse.message().await.event_id(), before);

    nats.restart().await;
    // Writes go on into the outbox while NATS is away; the first one after
    // the restart may need the client's reconnect.
    let body = event_body(tenant, "TENANT", "", "public", "After");
    let mut after = None;
    for _ in 0..100 {
        if let Ok(reply) = app.client().call("event.create", &boss, &body).await
            && reply.status == 200
        {
            after = reply.body["id"].as_str().map(str::to_string);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = after.expect("a create succeeds after the restart");
    let next = loop {
        let m = sse.message().await;
        if m.event_id() == after {
            break m;
        }
    };
    assert_eq!(next.event, "event.created");
    assert!(next.id > 1);
}
