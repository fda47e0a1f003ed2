use std::time::Duration;

use async_nats::jetstream;
use updspace_events::config::{Config, Settings};
use updspace_events::startup::Application;

use crate::helpers::{Isolation, PrivateNats, TestApp, cleanup, free_port};

#[tokio::test]
async fn start_up_creates_the_database_and_applies_the_schema() {
    let app = TestApp::spawn().await;
    // The harness never creates the database: the service did.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&app.db)
    .await
    .expect("list tables");
    for wanted in [
        "audit_log",
        "event_attendance",
        "event_counters",
        "event_rsvps",
        "events",
        "idempotency_keys",
        "outbox",
        "role_bindings",
        "scope_memberships",
    ] {
        assert!(
            tables.iter().any(|t| t == wanted),
            "missing table {wanted} in {tables:?}"
        );
    }
}

#[tokio::test]
async fn start_up_creates_the_stream_with_the_configured_definition() {
    let app = TestApp::spawn_with(|s| {
        s.stream_max_age = Some("2d".into());
        s.stream_duplicate_window = Some("15m".into());
    })
    .await;
    let js = jetstream::new(app.nats.clone());
    let mut stream = js
        .get_stream(&app.isolation.stream)
        .await
        .expect("stream exists");
    let info = stream.info().await.expect("info");
    assert_eq!(
        info.config.subjects,
        vec![format!("{}.out.>", app.isolation.prefix)]
    );
    assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    assert_eq!(info.config.max_age, Duration::from_secs(2 * 86_400));
    assert_eq!(info.config.duplicate_window, Duration::from_secs(15 * 60));
}

#[tokio::test]
async fn an_existing_stream_is_brought_to_the_configured_definition() {
    let isolation = Isolation::new();
    let client = async_nats::connect(crate::helpers::NATS_URL)
        .await
        .expect("connect");
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: isolation.stream.clone(),
        subjects: vec![format!("{}.out.>", isolation.prefix)],
        max_age: Duration::from_secs(3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("pre-create stream");
    let config = Config::load(&isolation.settings()).expect("config");
    let app = Application::build(config)
        .await
        .expect("starts and updates the stream");
    drop(app);
    let mut stream = js.get_stream(&isolation.stream).await.expect("stream");
    let info = stream.info().await.expect("info");
    assert_eq!(info.config.duplicate_window, Duration::from_secs(20 * 60));
    assert_eq!(info.config.max_age, Duration::from_secs(7 * 86_400));
    cleanup(&isolation.db_name, &isolation.stream);
}

#[tokio::test]
async fn a_stream_that_cannot_be_changed_is_reported_clearly() {
    let isolation = Isolation::new();
    let client = async_nats::connect(crate::helpers::NATS_URL)
        .await
        .expect("connect");
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: isolation.stream.clone(),
        subjects: vec![format!("{}.out.>", isolation.prefix)],
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("pre-create stream");
    let config = Config::load(&isolation.settings()).expect("config");
    let err = Application::build(config)
        .await
        .err()
        .expect("start-up must refuse");
    let text = err.to_string();
    assert!(text.contains(&isolation.stream), "{text}");
    assert!(
        text.contains("Memory") && text.contains("EVENTS_STREAM"),
        "{text}"
    );
    cleanup(&isolation.db_name, &isolation.stream);
}

#[tokio::test]
async fn the_micro_service_answers_srv_ping_and_info() {
    let app = TestApp::spawn().await;
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        app.nats.request("$SRV.INFO.events", "".into()),
    )
    .await
    .expect("answers in time")
    .expect("info reply");
    let info: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json");
    assert_eq!(info["name"], "events");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn start_up_waits_for_nats_and_comes_up_when_it_appears() {
    let port = free_port();
    let isolation = Isolation::new();
    let settings = Settings {
        nats_url: Some(format!("nats://127.0.0.1:{port}")),
        ..isolation.settings()
    };
    let config = Config::load(&settings).expect("config");
    let building = tokio::spawn(Application::build(config));
    // Nothing listens yet: start-up must keep retrying, not fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !building.is_finished(),
        "start-up gave up while NATS was down"
    );
    let nats = PrivateNats::start_on(port);
    nats.wait_ready().await;
    let app = tokio::time::timeout(Duration::from_secs(30), building)
        .await
        .expect("comes up after NATS appears")
        .expect("task")
        .expect("start-up succeeds");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    assert!(
        js.get_stream(&isolation.stream).await.is_ok(),
        "stream created on the late server"
    );
    drop(app);
    cleanup(&isolation.db_name, &isolation.stream);
}

#[tokio::test]
async fn start_up_waits_for_postgres_and_comes_up_when_it_appears() {
    // A TCP proxy that refuses connections until opened stands in for a
    // Postgres that is still starting.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = proxy.local_addr().expect("addr").port();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = proxy.accept().await else {
                return;
            };
            if !gate.load(std::sync::atomic::Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let isolation = Isolation::new();
    let settings = Settings {
        database_url: Some(format!(
            "postgres://postgres@127.0.0.1:{port}/{}",
            isolation.db_name
        )),
        ..isolation.settings()
    };
    let config = Config::load(&settings).expect("config");
    let building = tokio::spawn(Application::build(config));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !building.is_finished(),
        "start-up gave up while Postgres was down"
    );
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let app = tokio::time::timeout(Duration::from_secs(30), building)
        .await
        .expect("comes up after Postgres appears")
        .expect("task")
        .expect("start-up succeeds");
    drop(app);
    cleanup(&isolation.db_name, &isolation.stream);
}
