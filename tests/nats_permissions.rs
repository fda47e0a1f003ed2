//! `nats/nats-server.conf` gives each NATS user exactly the subjects it needs.
//!
//! The test starts a private nats-server with the repository's configuration file,
//! unchanged (ports, bind address and the JetStream store directory are set on the
//! command line and through the environment), and proves with real connections:
//!
//! - `events` creates and updates the `EVENTS` stream from `nats/stream-EVENTS.json`,
//!   runs the `events` micro service (queue group `events`), answers
//!   `events.v1.event.get`, and publishes into the stream with JetStream acks;
//! - `bff` calls `events.v1.event.get` and `$SRV.*`, but cannot write to `events.out.>`,
//!   listen on `events.v1.>`, or use the JetStream API;
//! - `activity` reads the stream through a durable pull consumer and acks, but cannot
//!   call `events.v1.*`, write to `events.out.>`, or delete/purge the stream;
//! - each user receives replies only under its own inbox prefix, `_INBOX_<user>`: `bff`
//!   may not subscribe to `_INBOX.>` or to the others' prefixes, and a client left on
//!   the default prefix gets no replies;
//! - the service itself, as `events` with `NATS_INBOX_PREFIX=_INBOX_events`, starts,
//!   answers `bff` and publishes its outbox with acks; with the default prefix it stops
//!   at start-up, naming `NATS_INBOX_PREFIX`.
//!
//! A denied publish or subscribe is not an error of the call in async-nats: the server
//! answers `-ERR 'Permissions Violation for …'` on the connection, which async-nats
//! reports through `ConnectOptions::event_callback` as
//! `Event::ServerError(ServerError::Other("Permissions Violation for Publish to \"…\""))`.
//! A denied request never gets a reply (not even "no responders"): it times out.
//!
//! Needs the `nats-server` binary (`NATS_SERVER_BIN`, `/usr/sbin/nats-server`, or on
//! `PATH`); without it the test fails and says so.

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{
    ConnectOptions, Event, HeaderMap, ServerError,
    jetstream::{
        self,
        consumer::{AckPolicy, pull},
        stream,
    },
    service::ServiceExt,
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::timeout};

/// Bound for one operation that is expected to succeed.
const STEP: Duration = Duration::from_secs(5);
/// How long a request that must stay unanswered is given.
const DENIED: Duration = Duration::from_millis(1500);
/// Bound for a whole scenario.
const WHOLE_TEST: Duration = Duration::from_secs(90);

const STREAM: &str = "EVENTS";
const QUEUE_GROUP: &str = "events";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn nats_server_bin() -> PathBuf {
    const INSTALL: &str = "install the `nats-server` package (Debian/Ubuntu: \
                           `apt-get install nats-server`) or set NATS_SERVER_BIN to a \
                           nats-server binary";
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "NATS_SERVER_BIN={} is not a file: {INSTALL}",
            bin.display()
        );
        return bin;
    }
    let debian = Path::new("/usr/sbin/nats-server");
    if debian.is_file() {
        return debian.to_path_buf();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "nats-server not found (looked at $NATS_SERVER_BIN, /usr/sbin/nats-server and \
         $PATH): {INSTALL}"
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

struct Passwords {
    events: String,
    bff: String,
    activity: String,
}

impl Passwords {
    fn random() -> Self {
        // Start with a letter so the nats-server config parser reads them as strings.
        let pw = || format!("pw-{}", uuid::Uuid::new_v4().simple());
        Passwords {
            events: pw(),
            bff: pw(),
            activity: pw(),
        }
    }
}

/// A private nats-server; killed, and its directory removed, on drop.
struct NatsServer {
    child: Child,
    dir: PathBuf,
    log_path: PathBuf,
    url: String,
    http_port: u16,
}

impl NatsServer {
    async fn start(passwords: &Passwords) -> NatsServer {
        let bin = nats_server_bin();
        let config = repo_path("nats/nats-server.conf");
        assert!(config.is_file(), "{} is missing", config.display());
        let mut last_failure = String::new();
        for _attempt in 0..3 {
            let dir = std::env::temp_dir().join(format!(
                "events-nats-permissions-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(dir.join("store")).expect("create temp dir");
            let log_path = dir.join("nats-server.log");
            let log = std::fs::File::create(&log_path).expect("create log file");
            let (port, http_port) = (free_port(), free_port());
            let child = Command::new(&bin)
                .arg("-c")
                .arg(&config)
                .args(["-a", "127.0.0.1"])
                .args(["-p", &port.to_string()])
                .args(["-m", &http_port.to_string()])
                .env("NATS_STORE_DIR", dir.join("store"))
                .env("EVENTS_NATS_PASSWORD", &passwords.events)
                .env("BFF_NATS_PASSWORD", &passwords.bff)
                .env("ACTIVITY_NATS_PASSWORD", &passwords.activity)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|err| panic!("cannot run {}: {err}", bin.display()));
            let mut server = NatsServer {
                child,
                dir,
                log_path,
                url: format!("nats://127.0.0.1:{port}"),
                http_port,
            };
            match server.wait_ready(port).await {
                Ok(()) => return server,
                Err(failure) => {
                    let retry = failure.contains("address already in use");
                    last_failure = failure;
                    drop(server);
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("nats-server did not start with nats/nats-server.conf: {last_failure}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited ({status}); output:\n{}", self.log()));
            }
            // "Server is ready" is logged once the client listener (after JetStream) is up;
            // checking our own log rules out someone else's server on a reused port.
            if self.log().contains("Server is ready") {
                let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
                if let Ok(Ok(_)) = timeout(Duration::from_millis(500), connect).await {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 15 s; output:\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Status code of `GET path` on the monitoring port.
async fn http_status(port: u16, path: &str) -> u16 {
    let path = path.to_owned();
    let status_line = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            STEP,
        )?;
        stream.set_read_timeout(Some(STEP))?;
        stream.set_write_timeout(Some(STEP))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.lines().next().unwrap_or_default().to_owned())
    })
    .await
    .expect("monitoring probe task")
    .unwrap_or_else(|err| panic!("GET {port}: {err}"));
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("unexpected HTTP status line {status_line:?}"))
}

/// A connection as one user, with the connection events the server caused.
struct Conn {
    user: &'static str,
    client: async_nats::Client,
    events: mpsc::UnboundedReceiver<Event>,
    /// Every `-ERR` text received so far.
    server_errors: Vec<String>,
}

/// The inbox prefix `nats/nats-server.conf` lets `user` read.
fn own_inbox(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// Connects as `user`, with replies under the user's own inbox prefix.
async fn connect(url: &str, user: &'static str, password: &str) -> Result<Conn, String> {
    connect_with_inbox(url, user, password, &own_inbox(user)).await
}

async fn connect_with_inbox(
    url: &str,
    user: &'static str,
    password: &str,
    inbox: &str,
) -> Result<Conn, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let connecting = ConnectOptions::with_user_and_password(user.into(), password.into())
        .name(format!("nats-permissions-test-{user}"))
        .custom_inbox_prefix(inbox)
        .connection_timeout(STEP)
        .request_timeout(Some(STEP))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .connect(url);
    let client = timeout(STEP + STEP, connecting)
        .await
        .map_err(|_| format!("connecting as {user} timed out"))?
        .map_err(|err| format!("connecting as {user}: {err}"))?;
    Ok(Conn {
        user,
        client,
        events: rx,
        server_errors: Vec::new(),
    })
}

impl Conn {
    fn take_events(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.record(event);
        }
    }

    fn record(&mut self, event: Event) {
        match event {
            Event::ServerError(ServerError::Other(text)) => self.server_errors.push(text),
            Event::ServerError(other) => self.server_errors.push(other.to_string()),
            _ => {}
        }
    }

    /// Waits until the server has reported `Permissions Violation for <what>`.
    async fn expect_violation(&mut self, what: &str) {
        let expected = format!("Permissions Violation for {what}");
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            self.take_events();
            if self.server_errors.iter().any(|e| e.starts_with(&expected)) {
                return;
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.record(event),
                Ok(None) => panic!("{}: connection event channel closed", self.user),
                Err(_) => panic!(
                    "{}: no `{expected}` within {STEP:?}; server errors seen: {:?}",
                    self.user, self.server_errors
                ),
            }
        }
    }

    /// Asserts the server reported no error so far (a denied subscription would not
    /// make `subscribe` fail, it would just never deliver).
    async fn assert_no_server_errors(&mut self) {
        timeout(STEP, self.client.flush())
            .await
            .expect("flush in time")
            .expect("flush");
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.take_events();
        assert!(
            self.server_errors.is_empty(),
            "{}: unexpected server errors: {:?}",
            self.user,
            self.server_errors
        );
    }

    async fn flush(&self) {
        timeout(STEP, self.client.flush())
            .await
            .expect("flush in time")
            .expect("flush");
    }
}

fn js_context(conn: &Conn, op_timeout: Duration) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(op_timeout)
        .build(conn.client.clone())
}

async fn message_count(js: &jetstream::Context) -> u64 {
    let mut stream = timeout(STEP, js.get_stream(STREAM))
        .await
        .expect("stream info in time")
        .expect("EVENTS exists");
    timeout(STEP, stream.info())
        .await
        .expect("stream info in time")
        .expect("stream info")
        .state
        .messages
}

/// `$JS.API.INFO` answered with account info (raw: async-nats 0.51's
/// `Context::query_account` expects fields that nats-server 2.9 does not send).
async fn js_account_info(conn: &Conn) {
    let reply = timeout(STEP, conn.client.request("$JS.API.INFO", Bytes::new()))
        .await
        .expect("account info in time")
        .unwrap_or_else(|err| panic!("{} requests $JS.API.INFO: {err}", conn.user));
    let reply: Value = serde_json::from_slice(&reply.payload).expect("JSON account info");
    assert_eq!(
        reply["type"],
        json!("io.nats.jetstream.api.v1.account_info_response"),
        "{}: {reply}",
        conn.user
    );
    assert!(reply.get("error").is_none(), "{}: {reply}", conn.user);
}

fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("serialize"))
}

/// A denied call either fails or never completes: it must not succeed.
fn assert_denied<T, E>(what: &str, outcome: Result<Result<T, E>, tokio::time::error::Elapsed>) {
    if let Ok(Ok(_)) = outcome {
        panic!("{what} succeeded but must be denied");
    }
}

fn stream_config_file() -> stream::Config {
    let path = repo_path("nats/stream-EVENTS.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_str(&text).expect("nats/stream-EVENTS.json is a JetStream stream config")
}

#[test]
fn stream_definition_matches_the_contract() {
    let config = stream_config_file();
    assert_eq!(config.name, STREAM);
    assert_eq!(config.subjects, vec!["events.out.>".to_string()]);
    assert_eq!(config.storage, stream::StorageType::File);
    assert_eq!(config.retention, stream::RetentionPolicy::Limits);
    assert_eq!(config.discard, stream::DiscardPolicy::Old);
    assert_eq!(config.num_replicas, 1);
    assert_eq!(config.max_age, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(config.duplicate_window, Duration::from_secs(20 * 60));
}

/// Runs `nats-server -t` (check the configuration and exit) with the given variables.
fn check_config(vars: &[(&str, &str)]) -> (bool, String) {
    let bin = nats_server_bin();
    let dir = std::env::temp_dir().join(format!(
        "events-nats-config-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut command = Command::new(bin);
    command
        .arg("-c")
        .arg(repo_path("nats/nats-server.conf"))
        .arg("-t")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "NATS_STORE_DIR",
        "EVENTS_NATS_PASSWORD",
        "BFF_NATS_PASSWORD",
        "ACTIVITY_NATS_PASSWORD",
    ] {
        command.env_remove(var);
    }
    for (key, value) in vars {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("run nats-server -t");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait nats-server -t") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nats-server -t did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut output);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut output);
    }
    let _ = std::fs::remove_dir_all(&dir);
    (status.success(), output)
}

#[test]
fn config_requires_every_password_and_the_store_dir() {
    let all = [
        ("NATS_STORE_DIR", "/tmp/events-nats-unused"),
        ("EVENTS_NATS_PASSWORD", "pw-events"),
        ("BFF_NATS_PASSWORD", "pw-bff"),
        ("ACTIVITY_NATS_PASSWORD", "pw-activity"),
    ];
    let (ok, output) = check_config(&all);
    assert!(
        ok,
        "nats/nats-server.conf is invalid with every variable set:\n{output}"
    );
    for missing in 0..all.len() {
        let vars: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != missing)
            .map(|(_, v)| *v)
            .collect();
        let (ok, output) = check_config(&vars);
        assert!(
            !ok,
            "nats-server accepted the config without {}:\n{output}",
            all[missing].0
        );
        assert!(
            output.contains(all[missing].0),
            "the error does not name {}:\n{output}",
            all[missing].0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_gets_exactly_its_subjects() {
    timeout(WHOLE_TEST, scenario())
        .await
        .expect("the NATS permissions scenario did not finish within 90 s");
}

async fn scenario() {
    let passwords = Passwords::random();
    let server = NatsServer::start(&passwords).await;
    assert_eq!(
        http_status(server.http_port, "/healthz").await,
        200,
        "monitoring /healthz"
    );

    // Authentication: a wrong password is refused.
    let refused = connect(&server.url, "bff", "not-the-password").await;
    assert!(refused.is_err(), "bff connected with a wrong password");

    let mut events = connect(&server.url, "events", &passwords.events)
        .await
        .expect("events connects");
    let mut bff = connect(&server.url, "bff", &passwords.bff)
        .await
        .expect("bff connects");
    let mut activity = connect(&server.url, "activity", &passwords.activity)
        .await
        .expect("activity connects");

    // ---- events: owns the stream ------------------------------------------------------
    let events_js = js_context(&events, STEP);
    let config = stream_config_file();
    let mut stream = timeout(STEP, events_js.get_or_create_stream(config.clone()))
        .await
        .expect("stream create in time")
        .expect("events creates EVENTS");
    let info = timeout(STEP, stream.info())
        .await
        .expect("stream info in time")
        .expect("events reads EVENTS info");
    assert_eq!(info.config.subjects, vec!["events.out.>".to_string()]);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(20 * 60));
    assert_eq!(info.config.max_age, Duration::from_secs(7 * 24 * 3600));
    let mut changed = config.clone();
    changed.description = Some("updated by the permissions test".into());
    timeout(STEP, events_js.update_stream(changed))
        .await
        .expect("stream update in time")
        .expect("events updates EVENTS");
    timeout(STEP, events_js.update_stream(config.clone()))
        .await
        .expect("stream update in time")
        .expect("events updates EVENTS back");
    js_account_info(&events).await;

    // ---- events: the micro service, queue group `events` ------------------------------
    let service = timeout(
        STEP,
        events
            .client
            .service_builder()
            .description("UpdSpace Events")
            .queue_group(QUEUE_GROUP)
            .start("events", "0.1.0"),
    )
    .await
    .expect("service start in time")
    .expect("events starts the micro service");
    let mut endpoint = timeout(STEP, service.endpoint("events.v1.event.get"))
        .await
        .expect("endpoint in time")
        .expect("events adds events.v1.event.get");
    let served = Arc::new(AtomicUsize::new(0));
    let reply_subjects: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let responder = tokio::spawn({
        let served = served.clone();
        let reply_subjects = reply_subjects.clone();
        async move {
            while let Some(request) = endpoint.next().await {
                served.fetch_add(1, Ordering::SeqCst);
                if let (Some(reply), Ok(mut seen)) =
                    (request.message.reply.as_ref(), reply_subjects.lock())
                {
                    seen.push(reply.to_string());
                }
                let body: Value =
                    serde_json::from_slice(&request.message.payload).unwrap_or(Value::Null);
                let reply = json!({ "id": body["id"], "title": "permissions test" });
                let _ = request.respond(Ok(json_bytes(&reply))).await;
            }
        }
    });
    events.assert_no_server_errors().await;

    // ---- bff: requests and pings ------------------------------------------------------
    let event_id = uuid::Uuid::new_v4().to_string();
    let request_body = json_bytes(&json!({ "id": event_id }));
    let reply = timeout(
        STEP,
        bff.client
            .request("events.v1.event.get", request_body.clone()),
    )
    .await
    .expect("reply in time")
    .expect("bff gets a reply to events.v1.event.get");
    let reply: Value = serde_json::from_slice(&reply.payload).expect("JSON reply");
    assert_eq!(reply["id"], json!(event_id));
    assert_eq!(served.load(Ordering::SeqCst), 1);
    let first_reply = reply_subjects
        .lock()
        .map(|seen| seen.first().cloned())
        .ok()
        .flatten();
    assert!(
        first_reply
            .as_deref()
            .is_some_and(|r| r.starts_with("_INBOX_bff.")),
        "bff's reply subject: {first_reply:?}"
    );
    for subject in [
        "$SRV.PING.events",
        "$SRV.INFO.events",
        "$SRV.STATS.events",
        "$SRV.PING",
    ] {
        let reply = timeout(STEP, bff.client.request(subject, Bytes::new()))
            .await
            .unwrap_or_else(|_| panic!("{subject} reply in time"))
            .unwrap_or_else(|err| panic!("bff gets a reply to {subject}: {err}"));
        let reply: Value = serde_json::from_slice(&reply.payload).expect("JSON reply");
        assert_eq!(reply["name"], json!("events"), "{subject}: {reply}");
    }
    bff.assert_no_server_errors().await;
    events.assert_no_server_errors().await;

    // ---- events: publishes domain events with acks ------------------------------------
    let tenant = uuid::Uuid::new_v4();
    let subject = format!("events.out.{tenant}.event.created");
    let outbox_id = uuid::Uuid::new_v4().to_string();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", outbox_id.as_str());
    headers.insert("Content-Type", "application/cloudevents+json");
    let envelope = json_bytes(&json!({
        "specversion": "1.0", "id": outbox_id, "source": "updspace/events",
        "type": "event.created", "subject": event_id, "tenantid": tenant.to_string(),
        "sequence": 1, "datacontenttype": "application/json", "data": {},
    }));
    let mut acks = Vec::new();
    for _ in 0..2 {
        let sent = timeout(
            STEP,
            events_js.publish_with_headers(subject.clone(), headers.clone(), envelope.clone()),
        )
        .await
        .expect("publish in time")
        .expect("events publishes to events.out.>");
        acks.push(
            timeout(STEP, sent)
                .await
                .expect("ack in time")
                .expect("events gets a JetStream ack"),
        );
    }
    assert_eq!(acks[0].stream, STREAM);
    assert!(!acks[0].duplicate);
    assert!(acks[1].duplicate, "same Nats-Msg-Id must be deduplicated");
    assert_eq!(acks[1].sequence, acks[0].sequence);
    let sequence = acks[0].sequence;
    let stored = timeout(STEP, stream.get_raw_message(sequence))
        .await
        .expect("message get in time")
        .expect("events reads a stored message ($JS.API.STREAM.MSG.GET)");
    assert_eq!(stored.subject.as_str(), subject);
    assert_eq!(message_count(&events_js).await, 1);
    // Instances tell each other which events changed (cache invalidation).
    let mut notes = events
        .client
        .subscribe("events.internal.changes")
        .await
        .expect("subscribe to change notes");
    events.flush().await;
    events
        .client
        .publish("events.internal.changes", Bytes::from_static(b"{}"))
        .await
        .expect("publish a change note");
    events.flush().await;
    let note = timeout(STEP, notes.next())
        .await
        .expect("change note arrives in time")
        .expect("change note");
    assert_eq!(note.payload.as_ref(), b"{}");
    events.assert_no_server_errors().await;

    // ---- events: nothing beyond that ---------------------------------------------------
    // Request subjects only as a member of queue group `events`.
    let _plain = events
        .client
        .subscribe("events.v1.>")
        .await
        .expect("queued");
    events.flush().await;
    events
        .expect_violation(r#"Subscription to "events.v1.>""#)
        .await;
    let _other_queue = events
        .client
        .queue_subscribe("events.v1.>", "q".into())
        .await
        .expect("queued");
    events.flush().await;
    events
        .expect_violation(r#"Subscription to "events.v1.>" using queue "q""#)
        .await;
    let events_js_denied = js_context(&events, DENIED);
    assert_denied(
        "events deleting the stream",
        timeout(STEP, events_js_denied.delete_stream(STREAM)).await,
    );
    events
        .expect_violation(r#"Publish to "$JS.API.STREAM.DELETE.EVENTS""#)
        .await;

    // ---- bff: nothing beyond requests ---------------------------------------------------
    bff.client
        .publish("events.out.x.y", Bytes::from_static(b"forged"))
        .await
        .expect("queued");
    bff.flush().await;
    bff.expect_violation(r#"Publish to "events.out.x.y""#).await;
    bff.client
        .publish("events.internal.changes", Bytes::from_static(b"forged"))
        .await
        .expect("queued");
    bff.flush().await;
    bff.expect_violation(r#"Publish to "events.internal.changes""#)
        .await;
    let bff_js = js_context(&bff, DENIED);
    let (forged, stream_info) = tokio::join!(
        timeout(STEP, async {
            bff_js
                .publish(subject.clone(), Bytes::from_static(b"forged"))
                .await?
                .await
        }),
        timeout(STEP, bff_js.get_stream(STREAM)),
    );
    assert_denied("a JetStream publish by bff", forged);
    assert_denied("bff reading stream info", stream_info);
    bff.expect_violation(&format!(r#"Publish to "{subject}""#))
        .await;
    bff.expect_violation(r#"Publish to "$JS.API.STREAM.INFO.EVENTS""#)
        .await;
    assert_eq!(message_count(&events_js).await, 1, "bff wrote into EVENTS");

    let mut eavesdrop = bff.client.subscribe("events.v1.>").await.expect("queued");
    bff.flush().await;
    bff.expect_violation(r#"Subscription to "events.v1.>""#)
        .await;
    let mut steal = bff
        .client
        .queue_subscribe("events.v1.>", QUEUE_GROUP.into())
        .await
        .expect("queued");
    bff.flush().await;
    bff.expect_violation(r#"Subscription to "events.v1.>" using queue "events""#)
        .await;
    for _ in 0..3 {
        timeout(
            STEP,
            bff.client
                .request("events.v1.event.get", request_body.clone()),
        )
        .await
        .expect("reply in time")
        .expect("the service still answers");
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        4,
        "every request reached the service"
    );
    // Replies: only under its own inbox prefix.
    for others in ["_INBOX.>", "_INBOX_events.>", "_INBOX_activity.>", ">"] {
        let _spy = bff.client.subscribe(others).await.expect("queued");
        bff.flush().await;
        bff.expect_violation(&format!(r#"Subscription to "{others}""#))
            .await;
    }
    let mut plain = connect_with_inbox(&server.url, "bff", &passwords.bff, "_INBOX")
        .await
        .expect("bff connects with the default inbox prefix");
    let unanswered = timeout(
        DENIED,
        plain
            .client
            .request("events.v1.event.get", request_body.clone()),
    )
    .await;
    assert_denied("a reply to bff under _INBOX", unanswered);
    plain.expect_violation(r#"Subscription to "_INBOX."#).await;
    assert_eq!(
        served.load(Ordering::SeqCst),
        5,
        "the request reached the service; only its reply was kept from bff"
    );
    let leaked = timeout(Duration::from_millis(300), eavesdrop.next()).await;
    assert!(
        !matches!(leaked, Ok(Some(_))),
        "bff received a request: {leaked:?}"
    );
    let stolen = timeout(Duration::from_millis(300), steal.next()).await;
    assert!(
        !matches!(stolen, Ok(Some(_))),
        "bff took a request: {stolen:?}"
    );

    // ---- activity: a durable pull consumer ---------------------------------------------
    let activity_js = js_context(&activity, STEP);
    let activity_stream = timeout(STEP, activity_js.get_stream(STREAM))
        .await
        .expect("stream info in time")
        .expect("activity reads EVENTS info");
    let mut consumer = timeout(
        STEP,
        activity_stream.get_or_create_consumer(
            "activity-feed",
            pull::Config {
                durable_name: Some("activity-feed".into()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        ),
    )
    .await
    .expect("consumer create in time")
    .expect("activity creates a durable pull consumer");
    let mut batch = timeout(
        STEP,
        consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(2))
            .messages(),
    )
    .await
    .expect("fetch in time")
    .expect("activity fetches");
    let message = timeout(STEP, batch.next())
        .await
        .expect("message in time")
        .expect("one message")
        .expect("a valid message");
    assert_eq!(message.subject.as_str(), subject);
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_owned());
    assert_eq!(msg_id.as_deref(), Some(outbox_id.as_str()));
    timeout(STEP, message.double_ack())
        .await
        .expect("ack in time")
        .expect("activity acks and the server confirms");
    let consumer_info = timeout(STEP, consumer.info())
        .await
        .expect("consumer info in time")
        .expect("activity reads its consumer");
    assert_eq!(consumer_info.num_ack_pending, 0);
    assert_eq!(consumer_info.num_pending, 0);
    assert_eq!(consumer_info.ack_floor.stream_sequence, sequence);
    js_account_info(&activity).await;
    activity.assert_no_server_errors().await;

    // ---- activity: nothing beyond reading -----------------------------------------------
    let activity_js_denied = js_context(&activity, DENIED);
    let activity_stream = timeout(STEP, activity_js_denied.get_stream(STREAM))
        .await
        .expect("stream info in time")
        .expect("activity reads EVENTS info");
    let (request, delete, purge, delete_message, update) = tokio::join!(
        timeout(
            DENIED,
            activity
                .client
                .request("events.v1.event.get", request_body.clone())
        ),
        timeout(STEP, activity_js_denied.delete_stream(STREAM)),
        timeout(STEP, activity_stream.purge()),
        timeout(STEP, activity_stream.delete_message(sequence)),
        timeout(STEP, activity_js_denied.update_stream(config.clone())),
    );
    assert_denied("activity requesting events.v1.event.get", request);
    assert_denied("activity deleting the stream", delete);
    assert_denied("activity purging the stream", purge);
    assert_denied("activity deleting a message", delete_message);
    assert_denied("activity updating the stream", update);
    for what in [
        r#"Publish to "events.v1.event.get""#,
        r#"Publish to "$JS.API.STREAM.DELETE.EVENTS""#,
        r#"Publish to "$JS.API.STREAM.PURGE.EVENTS""#,
        r#"Publish to "$JS.API.STREAM.MSG.DELETE.EVENTS""#,
        r#"Publish to "$JS.API.STREAM.UPDATE.EVENTS""#,
    ] {
        activity.expect_violation(what).await;
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        5,
        "activity reached the service"
    );
    activity
        .client
        .publish(subject.clone(), Bytes::from_static(b"forged"))
        .await
        .expect("queued");
    activity.flush().await;
    activity
        .expect_violation(&format!(r#"Publish to "{subject}""#))
        .await;
    let mut stream = timeout(STEP, events_js.get_stream(STREAM))
        .await
        .expect("stream info in time")
        .expect("EVENTS still exists");
    let state = timeout(STEP, stream.info())
        .await
        .expect("stream info in time")
        .expect("stream info")
        .state
        .clone();
    assert_eq!(state.messages, 1, "the stream lost or gained messages");
    assert_eq!(state.last_sequence, sequence);
    let _spy = activity
        .client
        .subscribe("_INBOX_bff.>")
        .await
        .expect("queued");
    activity.flush().await;
    activity
        .expect_violation(r#"Subscription to "_INBOX_bff.>""#)
        .await;

    // ---- shutdown ----------------------------------------------------------------------
    responder.abort();
    let _ = timeout(STEP, service.stop()).await;
    for conn in [&events, &bff, &activity] {
        let _ = timeout(STEP, conn.client.drain()).await;
    }
    drop(server);
}

const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const SECRET: &str = "permissions-test-secret";

/// The service's settings against `server` as user `events`, on database `db`.
fn service_settings(
    server: &NatsServer,
    passwords: &Passwords,
    db: &str,
    inbox: Option<&str>,
) -> updspace_events::config::Settings {
    updspace_events::config::Settings {
        database_url: Some(format!("{PG_SERVER}/{db}")),
        db_max_connections: Some("4".into()),
        nats_url: Some(server.url.clone()),
        nats_user: Some("events".into()),
        nats_password: Some(passwords.events.clone()),
        nats_inbox_prefix: inbox.map(str::to_string),
        http_addr: Some("127.0.0.1:0".into()),
        hmac_secret: Some(SECRET.into()),
        outbox_poll_interval: Some("100ms".into()),
        // Without its inbox prefix the service hears nothing back; it
        // retries for this long, then says what to set.
        stream_startup_wait: Some("3s".into()),
        log_filter: Some("warn".into()),
        ..Default::default()
    }
}

/// Opens `GET /stream` on the service as `who` (v2-signed), waiting out the
/// moment its feed is still finding the end of the stream.
async fn open_live_stream(
    addr: std::net::SocketAddr,
    who: &updspace_events::client::Identity,
) -> reqwest::Response {
    let path = "/api/v1/events/stream";
    let http = reqwest::Client::new();
    for _ in 0..100 {
        let request_id = uuid::Uuid::new_v4().to_string();
        let identity = updspace_events::auth::ContextHeaders {
            request_id: &request_id,
            tenant_id: &who.tenant_id,
            tenant_slug: &who.tenant_slug,
            user_id: Some(&who.user_id),
            master_flags: who.master_flags.as_deref(),
        };
        let parts = updspace_events::auth::RequestParts::http("GET", path, "", b"");
        let headers = updspace_events::auth::sign_headers_v2(
            SECRET,
            &parts,
            &identity,
            updspace_events::auth::now_unix(),
        );
        let mut request = http.get(format!("http://{addr}{path}"));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request.send().await.expect("the stream request is sent");
        if response.status().as_u16() == 200 {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the live stream could not be opened");
}

/// Runs `events-svc call event.get` as `bff` (nothing of this machine's
/// environment but the settings given); returns its exit code, stdout and
/// stderr.
async fn call_as_bff(
    url: &str,
    password: &str,
    inbox: Option<&str>,
    who: &updspace_events::client::Identity,
    id: &str,
) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_events-svc"));
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
        .envs([
            ("NATS_URL", url),
            ("NATS_USER", "bff"),
            ("NATS_PASSWORD", password),
            ("BFF_INTERNAL_HMAC_SECRET", SECRET),
        ])
        .envs(inbox.map(|prefix| ("NATS_INBOX_PREFIX", prefix)))
        .args(["call", "event.get", "--timeout", "2s", "--tenant-id"])
        .args([&who.tenant_id, "--user-id", &who.user_id])
        .args(["--flags", r#"{"system_admin":true}"#])
        .arg(json!({ "id": id }).to_string())
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("events-svc call task")
        .expect("events-svc call runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn drop_database(db: &str) {
    if let Ok(pool) = sqlx::PgPool::connect(&format!("{PG_SERVER}/postgres")).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_works_with_its_own_inbox_prefix_and_only_with_it() {
    let db = format!(
        "events_permissions_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    timeout(WHOLE_TEST, service_scenario(&db))
        .await
        .expect("the service scenario did not finish within 90 s");
    drop_database(&db).await;
}

async fn service_scenario(db: &str) {
    use updspace_events::config::Config;
    use updspace_events::startup::Application;

    let passwords = Passwords::random();
    let server = NatsServer::start(&passwords).await;

    // Left on the default prefix, the service never hears back from
    // JetStream, and says what to set.
    let config =
        Config::load(&service_settings(&server, &passwords, db, None)).expect("settings load");
    // Its first JetStream request, after the migrations, times out.
    let refused = timeout(Duration::from_secs(30), Application::build(config))
        .await
        .expect("start-up gives up in time");
    let message = match refused {
        Ok(_) => panic!("the service started without its inbox prefix"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("NATS_INBOX_PREFIX"), "{message}");

    // A stand-in for Activity: the bridge reads the stream as `events` too.
    let ingested: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let recorded = ingested.clone();
    let ingest = axum::Router::new().route(
        "/api/v1/events/ingest",
        axum::routing::post(move |body: Bytes| {
            let recorded = recorded.clone();
            async move {
                if let Ok(body) = serde_json::from_slice::<Value>(&body) {
                    recorded.lock().expect("lock").push(body);
                }
                axum::http::StatusCode::CREATED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the ingest stand-in");
    let ingest_url = format!("http://{}/api/v1", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, ingest).await;
    });
    let mut settings = service_settings(&server, &passwords, db, Some("_INBOX_events"));
    settings.activity_service_url = Some(ingest_url);
    let config = Config::load(&settings).expect("settings load");
    let app = timeout(WHOLE_TEST, Application::build(config))
        .await
        .expect("start-up in time")
        .expect("the service creates its stream and starts");
    let service_db = app.state().db.clone();
    let http_addr = app.http_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    let bff = connect(&server.url, "bff", &passwords.bff)
        .await
        .expect("bff connects");
    let client = updspace_events::client::EventsClient::new(bff.client.clone(), "events", SECRET);
    let tenant = uuid::Uuid::new_v4();
    let admin = updspace_events::client::Identity {
        tenant_id: tenant.to_string(),
        tenant_slug: "acme".into(),
        user_id: uuid::Uuid::new_v4().to_string(),
        master_flags: Some(r#"{"system_admin":true}"#.into()),
    };
    // A live stream, whose feed reads the stream as `events`.
    let mut live = open_live_stream(http_addr, &admin).await;
    let created = timeout(
        STEP,
        client.call(
            "event.create",
            &admin,
            &json!({"scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "Inboxes",
                    "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"}),
        ),
    )
    .await
    .expect("reply in time")
    .expect("bff gets the service's reply");
    assert_eq!(created.status, 200, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("event id").to_string();
    let mut seen = String::new();
    let deadline = Instant::now() + STEP + STEP;
    while !seen.contains(&id) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, live.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the live stream brought no message ({other:?}): {seen}"),
        }
    }
    assert!(seen.contains("event: event.created"), "{seen}");
    // `events-svc call` as bff: answered with the bff prefix, unanswered
    // without it.
    let get =
        |inbox: Option<&'static str>| call_as_bff(&server.url, &passwords.bff, inbox, &admin, &id);
    let (code, stdout, _) = get(Some("_INBOX_bff")).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains(&id), "{stdout}");
    let (code, _, stderr) = get(None).await;
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("NATS_INBOX_PREFIX"), "{stderr}");
    let ping = timeout(STEP, bff.client.request("$SRV.PING.events", Bytes::new()))
        .await
        .expect("ping in time")
        .expect("the service answers $SRV.PING");
    let ping: Value = serde_json::from_slice(&ping.payload).expect("JSON ping");
    assert_eq!(ping["name"], json!("events"));

    // The outbox gets its publish acks under _INBOX_events.
    let deadline = Instant::now() + STEP + STEP;
    let (outbox_id, state): (uuid::Uuid, String) = loop {
        let row: (uuid::Uuid, String) =
            sqlx::query_as("SELECT id, status FROM outbox_view ORDER BY seq LIMIT 1")
                .fetch_one(&service_db)
                .await
                .expect("the change wrote an outbox row");
        if row.1 == "published" || Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(state, "published", "the publish was never acknowledged");
    let events = connect(&server.url, "events", &passwords.events)
        .await
        .expect("events connects");
    let events_js = js_context(&events, STEP);
    assert_eq!(message_count(&events_js).await, 1);
    let stream = timeout(STEP, events_js.get_stream(STREAM))
        .await
        .expect("stream in time")
        .expect("EVENTS exists");
    let stored = timeout(STEP, stream.get_raw_message(1))
        .await
        .expect("message in time")
        .expect("the message");
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(outbox_id.to_string().as_str())
    );

    // The Activity bridge reads its consumer and acks under these permissions.
    let deadline = Instant::now() + STEP + STEP;
    while ingested.lock().expect("lock").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = ingested.lock().expect("lock").clone();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["event_id"], json!(outbox_id.to_string()));
    let deadline = Instant::now() + STEP;
    let acked = loop {
        let mut consumer = timeout(
            STEP,
            stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("activity-bridge"),
        )
        .await
        .expect("consumer in time")
        .expect("the bridge created its consumer");
        let floor = timeout(STEP, consumer.info())
            .await
            .expect("info in time")
            .expect("events may read the bridge's consumer")
            .ack_floor
            .stream_sequence;
        if floor == 1 || Instant::now() > deadline {
            break floor;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(acked, 1, "the delivery was acked");

    // The replay bucket the service created: `events` claims a key once,
    // and a second claim (the read of the existing key) says "replayed".
    use updspace_events::subjects::replays::{Claimed, ReplayBucket};
    let bucket = timeout(
        STEP,
        ReplayBucket::ensure(
            &events.client,
            &updspace_events::config::StreamConfig {
                name: STREAM.to_string(),
                max_age: Duration::from_secs(7 * 24 * 3600),
                replicas: 1,
                duplicate_window: Duration::from_secs(20 * 60),
                startup_wait: STEP,
            },
            300,
            STEP,
        ),
    )
    .await
    .expect("bucket in time")
    .expect("events may open the replay bucket");
    let key = updspace_events::auth::replay::ReplayKey::of_triple("req-kv", 1_700_000_000, "ab");
    for expected in [Claimed::First, Claimed::Replayed] {
        let claimed = timeout(STEP, bucket.claim(&key))
            .await
            .expect("claim in time")
            .expect("events may claim keys");
        assert_eq!(claimed, expected);
    }

    let _ = stop.send(());
    let _ = timeout(STEP + STEP, running).await;
    for conn in [&events, &bff] {
        let _ = timeout(STEP, conn.client.drain()).await;
    }
    drop(server);
}
