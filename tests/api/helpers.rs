#![allow(dead_code)] // A shared harness: not every test binary uses every helper.

//! The test harness: every test gets its own database, subject prefix and
//! stream, and the real service started in-process on a random port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use updspace_events::config::{Config, Settings};
use updspace_events::startup::Application;

pub const TEST_SECRET: &str = "test-secret";
pub const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

/// Settings that isolate one test: a fresh database name, prefix and stream.
pub struct Isolation {
    pub db_name: String,
    pub prefix: String,
    pub stream: String,
}

impl Isolation {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let short = &id[..12];
        Self {
            db_name: format!("events_test_{short}"),
            prefix: format!("t{short}"),
            stream: format!("EVENTS_T{}", short.to_uppercase()),
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            database_url: Some(format!("{PG_SERVER}/{}", self.db_name)),
            db_max_connections: Some("8".into()),
            nats_url: Some(NATS_URL.into()),
            http_addr: Some("127.0.0.1:0".into()),
            hmac_secret: Some(TEST_SECRET.into()),
            subject_prefix: Some(self.prefix.clone()),
            stream: Some(self.stream.clone()),
            log_filter: Some("warn".into()),
            ..Settings::default()
        }
    }

    pub fn database_url(&self) -> String {
        format!("{PG_SERVER}/{}", self.db_name)
    }
}

/// A running service and clients to talk to it. Dropping it stops the
/// service, drops its database and deletes its stream.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub nats: async_nats::Client,
    pub db: PgPool,
    pub isolation: Isolation,
    /// The application's shared state (app layer, publisher, registry).
    pub state: updspace_events::startup::AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// Only the first instance of an isolation drops its database and stream.
    owner: bool,
    /// The NATS servers the service was given (its `NATS_URL`).
    nats_url: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the service with settings adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::start(Isolation::new(), true, adjust).await
    }

    /// Starts the service as a single instance that serves its cache
    /// unchecked from the start (no start-up grace), as it does once no
    /// other instance has been heard of, with a cache TTL longer than any
    /// test: only a change note can make it drop a cached event.
    pub async fn spawn_trusting_its_cache() -> Self {
        Self::start_config(
            Isolation::new(),
            true,
            |_| {},
            |c| {
                c.actors.peer_grace = std::time::Duration::ZERO;
                c.actors.cache_ttl = std::time::Duration::from_secs(600);
            },
        )
        .await
    }

    /// Starts another instance sharing this one's database, prefix and stream.
    pub async fn spawn_sibling(&self, adjust: impl FnOnce(&mut Settings)) -> Self {
        let isolation = Isolation {
            db_name: self.isolation.db_name.clone(),
            prefix: self.isolation.prefix.clone(),
            stream: self.isolation.stream.clone(),
        };
        Self::start(isolation, false, adjust).await
    }

    async fn start(isolation: Isolation, owner: bool, adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::start_config(isolation, owner, adjust, |_| {}).await
    }

    async fn start_config(
        isolation: Isolation,
        owner: bool,
        adjust: impl FnOnce(&mut Settings),
        adjust_config: impl FnOnce(&mut Config),
    ) -> Self {
        init_test_logging();
        let mut settings = isolation.settings();
        adjust(&mut settings);
        if settings.nats_url.as_deref() == Some(NATS_URL) {
            anchor_stream().await;
        }
        let mut config = Config::load(&settings).expect("test settings are valid");
        adjust_config(&mut config);
        let app = Application::build(config)
            .await
            .expect("the service starts");
        let addr = app.http_addr();
        let db = app.state().db.clone();
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until(async {
                    let _ = rx.await;
                })
                .await;
        });
        // The test's client talks to the servers the service was given.
        let nats_url = settings.nats_url.clone().unwrap_or_else(|| NATS_URL.into());
        let servers: Vec<&str> = nats_url.split(',').map(str::trim).collect();
        let nats = async_nats::connect(servers.as_slice())
            .await
            .expect("test NATS client connects");
        Self {
            addr,
            http: reqwest::Client::new(),
            nats,
            db,
            isolation,
            state,
            shutdown: Some(tx),
            task: Some(task),
            owner,
            nats_url,
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the service and waits until it has finished.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.owner {
            cleanup_at(
                &self.isolation.db_name,
                &self.isolation.stream,
                &self.nats_url,
            );
        }
    }
}

/// Drops a test database and stream. Runs on its own thread and runtime
/// because Drop cannot await, and the test's runtime may be shutting down.
pub fn cleanup(db_name: &str, stream: &str) {
    cleanup_at(db_name, stream, NATS_URL);
}

/// [`cleanup`], with the stream on the NATS servers of `nats_url`.
pub fn cleanup_at(db_name: &str, stream: &str, nats_url: &str) {
    let db_name = db_name.to_string();
    let stream = stream.to_string();
    let servers: Vec<String> = nats_url.split(',').map(|s| s.trim().to_string()).collect();
    let joined = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok(pool) = sqlx::PgPool::connect(&format!("{PG_SERVER}/postgres")).await {
                let sql = format!("DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                pool.close().await;
            }
            let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
            let connecting = async_nats::connect(servers.as_slice());
            // A test may end with its NATS servers gone: do not wait for them.
            if let Ok(Ok(client)) =
                tokio::time::timeout(std::time::Duration::from_secs(5), connecting).await
            {
                let js = async_nats::jetstream::new(client);
                let _ = js.delete_stream(&stream).await;
                let _ = js
                    .delete_stream(format!(
                        "KV_{}",
                        updspace_events::subjects::replays::bucket_name(&stream)
                    ))
                    .await;
            }
        });
    });
    let _ = joined.join();
}

/// Keeps one file-stored stream on the shared NATS server for as long as
/// tests run. nats-server 2.9 removes the account's store directory when
/// its last stream is deleted, and a stream created by a parallel test at
/// that moment fails ("could not create storage directory"); with this
/// stream in place the directory is never empty.
async fn anchor_stream() {
    static ANCHORED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ANCHORED
        .get_or_init(|| async {
            let Ok(client) = async_nats::connect(NATS_URL).await else {
                return;
            };
            let js = async_nats::jetstream::new(client);
            let _ = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "EVENTS_TEST_ANCHOR".into(),
                    subjects: vec!["events-test-anchor".into()],
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await;
        })
        .await;
}

fn init_test_logging() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// One call received by a [`FakeAuthority`].
#[derive(Debug, Clone)]
pub struct RecordedCall {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub signature_valid: bool,
}

type Responder = dyn Fn(&RecordedCall) -> (StatusCode, serde_json::Value) + Send + Sync;

/// A real HTTP server standing in for an external authority (Access,
/// Portal). It verifies the v1 signature over the full path it received,
/// percent-decoded (Django's `request.path`), exactly as those services do,
/// records every call, and answers with `respond` (401 for a bad
/// signature, before `respond` is asked).
#[derive(Clone)]
pub struct FakeAuthority {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<RecordedCall>>>,
}

impl FakeAuthority {
    pub async fn start(
        secret: &str,
        respond: impl Fn(&RecordedCall) -> (StatusCode, serde_json::Value) + Send + Sync + 'static,
    ) -> Self {
        let calls: Arc<Mutex<Vec<RecordedCall>>> = Arc::default();
        let respond: Arc<Responder> = Arc::new(respond);
        let secret = secret.to_string();
        let recorded = calls.clone();
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let calls = recorded.clone();
            let respond = respond.clone();
            let secret = secret.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                };
                let ts = header("x-updspace-timestamp")
                    .trim()
                    .parse::<i64>()
                    .unwrap_or(0);
                let fresh = (chrono::Utc::now().timestamp() - ts).abs() <= 300;
                // Django verifies over `request.path`: the percent-decoded path.
                let decoded_path = percent_encoding::percent_decode_str(uri.path())
                    .decode_utf8_lossy()
                    .into_owned();
                let signature_valid = fresh
                    && updspace_events::auth::hmac::verify_v1(
                        &[secret.as_str()],
                        method.as_str(),
                        &decoded_path,
                        &body,
                        header("x-request-id"),
                        ts,
                        header("x-updspace-signature"),
                    );
                let call = RecordedCall {
                    method: method.to_string(),
                    path: uri.path().to_string(),
                    query: uri.query().map(str::to_string),
                    headers: headers
                        .iter()
                        .filter_map(|(k, v)| {
                            Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                        })
                        .collect(),
                    body: body.to_vec(),
                    signature_valid,
                };
                let (status, json) = if signature_valid {
                    respond(&call)
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        serde_json::json!({"error": {"code": "UNAUTHORIZED", "message": "Invalid internal signature", "details": {}, "request_id": null}}),
                    )
                };
                calls.lock().expect("calls lock").push(call);
                (status, axum::Json(json))
            }
        };
        let router = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake authority");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, calls }
    }

    pub fn base_url(&self, path_prefix: &str) -> String {
        format!("http://{}{path_prefix}", self.addr)
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().expect("calls lock").clone()
    }
}

/// Finds a TCP port that is free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The nats-server binary: `NATS_SERVER_BIN`, or the Debian package's path.
pub fn nats_server_bin() -> String {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        return bin;
    }
    for candidate in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!(
        "nats-server not found: install the `nats-server` package (apt-get install nats-server) or set NATS_SERVER_BIN"
    );
}

/// A private nats-server with JetStream in a temp dir, killed on drop.
pub struct PrivateNats {
    pub port: u16,
    child: std::process::Child,
    _dir: TempDir,
}

impl PrivateNats {
    pub fn start_on(port: u16) -> Self {
        let dir = TempDir::new();
        let child = std::process::Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts");
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and
    /// store: what a crashed and restarted NATS looks like to its clients.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = std::process::Command::new(nats_server_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self._dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts again");
        self.wait_ready().await;
    }

    /// Waits until the server accepts connections (bounded).
    pub async fn wait_ready(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("private nats-server did not start on port {}", self.port);
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("events-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A caller in a tenant.
pub fn identity(tenant: uuid::Uuid, user: uuid::Uuid) -> updspace_events::client::Identity {
    updspace_events::client::Identity {
        tenant_id: tenant.to_string(),
        tenant_slug: "acme".into(),
        user_id: user.to_string(),
        master_flags: None,
    }
}

/// A system admin of a tenant.
pub fn admin(tenant: uuid::Uuid) -> updspace_events::client::Identity {
    updspace_events::client::Identity {
        master_flags: Some(r#"{"system_admin":true}"#.into()),
        ..identity(tenant, uuid::Uuid::new_v4())
    }
}

impl TestApp {
    /// A NATS client of the service signing with the test secret.
    pub fn client(&self) -> updspace_events::client::EventsClient {
        updspace_events::client::EventsClient::new(
            self.nats.clone(),
            &self.isolation.prefix,
            TEST_SECRET,
        )
    }

    /// Grants a role in the local authorization tables.
    pub async fn grant(
        &self,
        tenant: uuid::Uuid,
        user: uuid::Uuid,
        role: &str,
        scope_type: &str,
        scope_id: &str,
    ) {
        sqlx::query(
            "INSERT INTO role_bindings (id, tenant_id, user_id, role, scope_type, scope_id, created_by)
             VALUES ($1, $2, $3, $4, $5::scope_type, $6, $3)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(tenant)
        .bind(user)
        .bind(role)
        .bind(scope_type)
        .bind(scope_id)
        .execute(&self.db)
        .await
        .expect("grant role");
    }

    /// Makes a user a member of a community or team.
    pub async fn join(
        &self,
        tenant: uuid::Uuid,
        user: uuid::Uuid,
        scope_type: &str,
        scope_id: &str,
    ) {
        sqlx::query("INSERT INTO scope_memberships (tenant_id, scope_type, scope_id, user_id) VALUES ($1, $2::scope_type, $3, $4)")
            .bind(tenant)
            .bind(scope_type)
            .bind(scope_id)
            .bind(user)
            .execute(&self.db)
            .await
            .expect("join scope");
    }
}

/// A reply of the HTTP gateway.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null)
    }
}

impl TestApp {
    /// A request signed exactly as the BFF signs it (v1 over the path sent,
    /// query excluded), with the BFF's header set.
    pub async fn bff(
        &self,
        method: &str,
        path_and_query: &str,
        who: &updspace_events::client::Identity,
        body: Option<serde_json::Value>,
    ) -> HttpReply {
        self.signed(
            method,
            path_and_query,
            who,
            body.map(|b| b.to_string().into_bytes()),
            1,
        )
        .await
    }

    /// A signed HTTP request with a raw body and a chosen signature version.
    pub async fn signed(
        &self,
        method: &str,
        path_and_query: &str,
        who: &updspace_events::client::Identity,
        body: Option<Vec<u8>>,
        version: u8,
    ) -> HttpReply {
        self.send(&capture(method, path_and_query, who, body, version))
            .await
    }

    /// Sends a captured request exactly as it was signed (headers and body).
    pub async fn send(&self, captured: &Captured) -> HttpReply {
        let mut request = self
            .http
            .request(
                captured.method.parse().expect("method"),
                self.url(&captured.path_and_query),
            )
            .header("Content-Type", "application/json")
            .header("X-Forwarded-Proto", "https")
            .header("Authorization", "Bearer ignored-iam-token");
        for (k, v) in &captured.headers {
            request = request.header(k, v);
        }
        let response = request
            .body(captured.body.clone())
            .send()
            .await
            .expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        HttpReply {
            status,
            headers,
            text,
        }
    }
}

/// A signed HTTP request as it goes on the wire, kept so that a test can
/// send it again (a replay), to any instance, with headers changed.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Captured {
    /// The same request with one header replaced (or added).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Signs a request as the BFF (v1) or a v2 caller would, without sending it.
pub fn capture(
    method: &str,
    path_and_query: &str,
    who: &updspace_events::client::Identity,
    body: Option<Vec<u8>>,
    version: u8,
) -> Captured {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let body = body.unwrap_or_default();
    let request_id = uuid::Uuid::new_v4().to_string();
    let identity = updspace_events::auth::ContextHeaders {
        request_id: &request_id,
        tenant_id: &who.tenant_id,
        tenant_slug: &who.tenant_slug,
        user_id: Some(&who.user_id),
        master_flags: who.master_flags.as_deref(),
    };
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned();
    let parts = updspace_events::auth::RequestParts::http(method, &decoded, query, &body);
    let ts = chrono::Utc::now().timestamp();
    let headers = if version == 2 {
        updspace_events::auth::sign_headers_v2(TEST_SECRET, &parts, &identity, ts)
    } else {
        updspace_events::auth::sign_headers_v1(TEST_SECRET, &parts, &identity, ts)
    };
    Captured {
        method: method.to_string(),
        path_and_query: path_and_query.to_string(),
        headers,
        body,
    }
}

/// The `events-svc` binary with none of this machine's settings in its
/// environment, so a test sets exactly what it means to.
pub fn events_svc() -> std::process::Command {
    clean_command(env!("CARGO_BIN_EXE_events-svc"))
}

/// The `events-bench` load generator, likewise.
pub fn events_bench() -> std::process::Command {
    clean_command(env!("CARGO_BIN_EXE_events-bench"))
}

fn clean_command(bin: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("EVENTS_")
            || key.starts_with("NATS_")
            || key.starts_with("BFF_")
            || key == "DATABASE_URL"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with `args` to the end, writing `stdin` (or nothing) to it.
pub fn run_blocking(
    mut cmd: std::process::Command,
    args: Vec<String>,
    stdin: Option<String>,
) -> Run {
    cmd.args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("events-svc starts");
    // Dropping the pipe closes stdin, also when there is nothing to write.
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        std::io::Write::write_all(&mut pipe, text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("events-svc finishes");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A TCP proxy in front of a NATS server that can lose JetStream publish
/// acknowledgements: the publish reaches the server and is stored, but its
/// ack never reaches the publisher, as when a connection breaks between the
/// two.
pub struct AckLosingProxy {
    pub port: u16,
    losing: Arc<std::sync::atomic::AtomicBool>,
    lost: Arc<std::sync::atomic::AtomicU64>,
    task: JoinHandle<()>,
}

impl AckLosingProxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let losing: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let lost: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let (gate, count) = (losing.clone(), lost.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let (gate, count) = (gate.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut from_client, to_client) = inbound.into_split();
                    let (from_server, mut to_server) = outbound.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                    });
                    forward_frames(from_server, to_client, &gate, &count).await;
                    up.abort();
                });
            }
        });
        Self {
            port,
            losing,
            lost,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// From now on, drops (or stops dropping) every publish ack.
    pub fn lose_acks(&self, on: bool) {
        self.losing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many acks were dropped so far.
    pub fn acks_lost(&self) -> u64 {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for AckLosingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies the server's side of a NATS connection frame by frame, leaving
/// out JetStream publish acks while `losing` is set.
async fn forward_frames(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    losing: &std::sync::atomic::AtomicBool,
    lost: &std::sync::atomic::AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(len) = frame_len(&pending) {
            let frame: Vec<u8> = pending.drain(..len).collect();
            if losing.load(std::sync::atomic::Ordering::SeqCst) && is_publish_ack(&frame) {
                lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                continue;
            }
            if to.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}

/// The length of the first complete protocol frame in `buf`, if there is one.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let eol = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..eol]).ok()?;
    let op = line.split(' ').next().unwrap_or_default();
    if !op.eq_ignore_ascii_case("MSG") && !op.eq_ignore_ascii_case("HMSG") {
        return Some(eol + 2);
    }
    // The last field of MSG and HMSG is the size of what follows the line.
    let size: usize = line.split_whitespace().last()?.parse().ok()?;
    let total = eol + 2 + size + 2;
    (buf.len() >= total).then_some(total)
}

/// A plain `MSG` whose payload is a JetStream publish ack: `{"stream":…,"seq":…}`.
fn is_publish_ack(frame: &[u8]) -> bool {
    if !frame.starts_with(b"MSG ") {
        return false;
    }
    let Some(eol) = frame.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let payload = &frame[eol + 2..frame.len() - 2];
    serde_json::from_slice::<serde_json::Value>(payload).is_ok_and(|ack| {
        ack.get("stream").is_some()
            && ack.get("seq").is_some()
            && ack.get("type").is_none()
            && ack.get("error").is_none()
    })
}
