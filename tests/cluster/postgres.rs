//! The service's Postgres connections cut and restored under load, through
//! a TCP proxy (restarting the machine's Postgres would disturb the other
//! tests that use it). Two kinds of cut: every connection reset and new ones
//! closed at once (a network fault), and new connections refused (Postgres
//! restarting).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::harness::client_of;
use crate::helpers::{PrivateNats, TestApp, free_port};
use crate::load::{self, Load, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    /// Connections are accepted and closed at once.
    Reset,
    /// Nothing listens: connections are refused.
    Refuse,
}

/// A TCP proxy in front of the machine's Postgres.
struct PgProxy {
    port: u16,
    gate: watch::Sender<Gate>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    fn start() -> Self {
        let port = free_port();
        let (gate, mut watching) = watch::channel(Gate::Open);
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let tracked = links.clone();
        let task = tokio::spawn(async move {
            loop {
                while *watching.borrow() == Gate::Refuse {
                    if watching.changed().await.is_err() {
                        return;
                    }
                }
                let Some(listener) = bind(port).await else {
                    return;
                };
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((mut inbound, _)) = accepted else { continue };
                            if *watching.borrow() != Gate::Open {
                                drop(inbound);
                                continue;
                            }
                            let link = tokio::spawn(async move {
                                if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await {
                                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                                }
                            });
                            tracked.lock().expect("links").push(link);
                        }
                        changed = watching.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            if *watching.borrow() == Gate::Refuse {
                                break;
                            }
                        }
                    }
                }
            }
        });
        Self {
            port,
            gate,
            links,
            task,
        }
    }

    /// Cuts every connection, and lets new ones fail as `gate` says.
    fn cut(&self, gate: Gate) {
        let _ = self.gate.send(gate);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        let _ = self.gate.send(Gate::Open);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }
}

/// Binds the proxy's port again (the kernel may hold it for a moment).
async fn bind(port: u16) -> Option<tokio::net::TcpListener> {
    for _ in 0..100 {
        let socket = TcpSocket::new_v4().ok()?;
        let _ = socket.set_reuseaddr(true);
        if socket.bind(([127, 0, 0, 1], port).into()).is_ok()
            && let Ok(listener) = socket.listen(128)
        {
            return Some(listener);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_postgres_under_load_answers_503_and_loses_nothing() {
    let nats = PrivateNats::start_on(free_port());
    nats.wait_ready().await;
    let proxy = PgProxy::start();
    let through_proxy = format!("127.0.0.1:{}", proxy.port);
    let nats_url = nats.url();
    let app = TestApp::spawn_with(|s| {
        s.nats_url = Some(nats_url.clone());
        s.database_url = s
            .database_url
            .as_ref()
            .map(|u| u.replace("127.0.0.1:5432", &through_proxy));
    })
    .await;
    // The checks read the database directly, not through the proxy.
    let db = sqlx::PgPool::connect(&app.isolation.database_url())
        .await
        .expect("direct pool");
    let client = client_of(&[nats.url()]).await;
    let mut transports = Vec::new();
    for _ in 0..2 {
        transports.push(Transport::nats(
            client_of(&[nats.url()]).await,
            &app.isolation.prefix,
        ));
        transports.push(Transport::Http(vec![app.url("")]));
    }
    let load = Load::start(transports);
    load.wait_for_changes(30, Duration::from_secs(30)).await;

    let mut report = Vec::new();
    for gate in [Gate::Reset, Gate::Refuse] {
        let before = load.ledger.answered(503);
        let cut_at = Instant::now();
        proxy.cut(gate);
        // Cut until callers have felt it and the outbox publisher has lost
        // its lock with its connection.
        let deadline = cut_at + Duration::from_secs(30);
        while load.ledger.answered(503) < before + 10
            || app
                .state
                .publisher
                .stats
                .leader
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            assert!(
                Instant::now() < deadline,
                "no 503 while Postgres was cut ({gate:?}); answers {:?}",
                load.ledger.answers()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first_503 = cut_at.elapsed();
        proxy.restore();
        let restored_at = Instant::now();
        load.wait_for_changes(1, Duration::from_secs(30)).await;
        let writing = restored_at.elapsed();
        load.wait_for_changes(30, Duration::from_secs(30)).await;
        report.push((
            gate,
            first_503,
            cut_at.elapsed() - restored_at.elapsed(),
            writing,
        ));
    }

    let ledger = load.stop().await;
    let verdict = load::verify(&client, &app.isolation.stream, &db, &ledger).await;
    println!(
        "Postgres cut twice under load: {} acknowledged changes, {} messages, none lost or duplicated, slowest call {:?}; answers {:?}",
        verdict.acknowledged,
        verdict.messages,
        ledger.slowest_call(),
        ledger.answers()
    );
    for (gate, first_503, cut_for, writing) in &report {
        println!(
            "  cut ({gate:?}) for {:.2} s: callers got 503 within {:.2} s; writes acknowledged again {:.2} s after the restore",
            cut_for.as_secs_f64(),
            first_503.as_secs_f64(),
            writing.as_secs_f64()
        );
    }
    ledger.assert_only_retryable_failures();
    for (gate, _, _, writing) in &report {
        assert!(
            *writing < Duration::from_secs(10),
            "writes came back only {writing:?} after Postgres ({gate:?})"
        );
    }
}
