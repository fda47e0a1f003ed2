//! Two `events-svc` processes connected to different nodes while nodes come
//! and go, then the one publishing the outbox killed (SIGKILL) while it
//! drains a backlog.

use std::process::{Child, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use crate::harness::{Cluster, client_of, exclusive};
use crate::helpers::{Isolation, TEST_SECRET, TempDir, cleanup_at, events_svc, free_port};
use crate::load::{self, Load, Probe, Transport};

/// One service process, killed on drop.
struct Instance {
    name: &'static str,
    base: String,
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Instance {
    fn start(name: &'static str, isolation: &Isolation, nats_url: &str, dir: &TempDir) -> Self {
        let port = free_port();
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("instance log");
        let child = events_svc()
            .env("DATABASE_URL", isolation.database_url())
            .env("EVENTS_DB_MAX_CONNECTIONS", "8")
            .env("NATS_URL", nats_url)
            .env("EVENTS_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("BFF_INTERNAL_HMAC_SECRET", TEST_SECRET)
            .env("EVENTS_SUBJECT_PREFIX", &isolation.prefix)
            .env("EVENTS_STREAM", &isolation.stream)
            .env("EVENTS_STREAM_REPLICAS", "3")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("events-svc starts");
        Self {
            name,
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            let health = http
                .get(format!("{}/health", self.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not up:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether this instance holds the outbox publisher lock (its metrics).
    async fn publishes(&self) -> bool {
        let reply = reqwest::Client::new()
            .get(format!("{}/metrics?format=json", self.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        let Ok(reply) = reply else { return false };
        let metrics: Value = reply.json().await.unwrap_or(Value::Null);
        metrics["events_outbox_publisher_leader"].as_f64() == Some(1.0)
    }

    /// SIGKILL: no shutdown, the publisher lock goes with the process's
    /// Postgres connection.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- {} -----\n{}", self.name, self.log());
        }
    }
}

/// Names of the servers the `events-svc` connections of a node come from.
async fn service_connections(cluster: &Cluster, i: usize) -> usize {
    let url = format!("http://127.0.0.1:{}/connz", cluster.nodes[i].http_port);
    let Ok(reply) = reqwest::get(url).await else {
        return 0;
    };
    let connz: Value = reply.json().await.unwrap_or(Value::Null);
    connz["connections"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter(|c| {
                    c["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("events-svc"))
                })
                .count()
        })
        .unwrap_or(0)
}

async fn stream_messages(client: &async_nats::Client, stream: &str) -> u64 {
    let js = jetstream::new(client.clone());
    let counted = async {
        let mut s = js.get_stream(stream).await.ok()?;
        Some(s.info().await.ok()?.state.messages)
    };
    tokio::time::timeout(Duration::from_secs(3), counted)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// Pending rows for `events × per_event` changes, numbered per event.
async fn insert_backlog(db: &sqlx::PgPool, prefix: &str, events: usize, per_event: usize) {
    let tenant = Uuid::new_v4();
    let n = events * per_event;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let event_ids: Vec<Uuid> = (0..events).map(|_| Uuid::new_v4()).collect();
    let owners: Vec<Uuid> = (0..n).map(|i| event_ids[i % events]).collect();
    let subject = format!("{prefix}.out.{tenant}.event.updated");
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload)
         SELECT id, $2, e, 'event.updated', $3, jsonb_build_object('n', n)
         FROM UNNEST($1::uuid[], $4::uuid[]) WITH ORDINALITY AS x(id, e, n) ORDER BY n",
    )
    .bind(&ids)
    .bind(tenant)
    .bind(&subject)
    .bind(&owners)
    .execute(db)
    .await
    .expect("backlog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_different_nodes_survive_node_losses_and_a_publisher_kill() {
    let _turn = exclusive().await;
    let mut cluster = Cluster::start().await;
    let isolation = Isolation::new();
    let dir = TempDir::new();
    // Each instance is given one node; it learns the others from it.
    let mut a = Instance::start("instance-a", &isolation, &cluster.nodes[0].url(), &dir);
    a.wait_up().await;
    let mut b = Instance::start("instance-b", &isolation, &cluster.nodes[1].url(), &dir);
    b.wait_up().await;
    let _cleanup = Cleanup(
        isolation.db_name.clone(),
        isolation.stream.clone(),
        cluster.url_list(),
    );
    let stream = isolation.stream.clone();
    cluster
        .wait_stream_healthy(&stream, Duration::from_secs(30))
        .await;
    assert_eq!(
        (
            service_connections(&cluster, 0).await,
            service_connections(&cluster, 1).await
        ),
        (1, 1),
        "one instance on nats-1, the other on nats-2"
    );
    let db = sqlx::PgPool::connect(&isolation.database_url())
        .await
        .expect("database");

    let urls = cluster.urls();
    let gateways = vec![a.base.clone(), b.base.clone()];
    let mut transports = Vec::new();
    for _ in 0..2 {
        transports.push(Transport::nats(client_of(&urls).await, &isolation.prefix));
        transports.push(Transport::Http(gateways.clone()));
    }
    let load = Load::start(transports);
    let probe = Probe::start(client_of(&urls).await, &isolation.prefix, load.tenant);
    load.wait_for_changes(30, Duration::from_secs(30)).await;

    // Each instance's node goes away and comes back.
    let mut losses = Vec::new();
    for (victim, instance) in [(0, "instance-a"), (1, "instance-b")] {
        cluster
            .wait_stream_healthy(&stream, Duration::from_secs(60))
            .await;
        let lost_at = Instant::now();
        cluster.kill(victim);
        let back = probe.recovery_after(lost_at, Duration::from_secs(60)).await;
        load.wait_for_changes(20, Duration::from_secs(60)).await;
        cluster.start_node(victim).await;
        losses.push((cluster.nodes[victim].name.clone(), instance, back));
    }
    cluster
        .wait_stream_healthy(&stream, Duration::from_secs(60))
        .await;

    // A backlog, and the publishing instance killed while it drains it.
    let client = cluster.client().await;
    let before = stream_messages(&client, &stream).await;
    insert_backlog(&db, &isolation.prefix, 50, 400).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_messages(&client, &stream).await < before + 2000 {
        assert!(Instant::now() < deadline, "the backlog does not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (publisher, survivor) = if a.publishes().await {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let killed_name = publisher.name;
    let killed_at = Instant::now();
    let published_at_kill = stream_messages(&client, &stream).await - before;
    publisher.kill();
    let deadline = killed_at + Duration::from_secs(30);
    while !survivor.publishes().await {
        assert!(
            Instant::now() < deadline,
            "{} never took over the outbox",
            survivor.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took_over = killed_at.elapsed();
    // The backlog's rows are the ones with a number.
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox_view WHERE status <> 'published' AND payload ? 'n'",
        )
        .fetch_one(&db)
        .await
        .expect("backlog left");
        if left == 0 {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(90),
            "{left} backlog rows still pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = killed_at.elapsed();
    load.wait_for_changes(20, Duration::from_secs(60)).await;

    let ledger = load.stop().await;
    let verdict = load::verify(&client, &stream, &db, &ledger).await;
    let rows = load::outbox_rows(&db).await;
    println!(
        "two instances, nodes lost, publisher killed: {} acknowledged changes + 20000 backlog rows, {} messages (outbox {}), none lost or duplicated, slowest call {:?}; answers {:?}",
        verdict.acknowledged,
        verdict.messages,
        rows.len(),
        ledger.slowest_call(),
        ledger.answers()
    );
    for (node, instance, back) in &losses {
        println!(
            "  SIGKILL {node} (the node of {instance}): NATS API answering again after {:.2} s",
            back.as_secs_f64()
        );
    }
    println!(
        "  SIGKILL {killed_name} (outbox publisher) {published_at_kill} rows into the backlog: {} took over after {:.2} s, backlog drained {:.2} s after the kill",
        survivor.name,
        took_over.as_secs_f64(),
        drained.as_secs_f64()
    );
    assert_eq!(verdict.messages, rows.len(), "every outbox row once");
    assert_eq!(rows.len(), verdict.acknowledged + 20_000);
    ledger.assert_only_retryable_failures();
    for (node, _, back) in &losses {
        assert!(
            *back < Duration::from_secs(10),
            "after losing {node} the service answered again only after {back:?}"
        );
    }
}

/// Drops the test's database and stream when the test ends.
struct Cleanup(String, String, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup_at(&self.0, &self.1, &self.2);
    }
}
