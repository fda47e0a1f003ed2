//! One instance (in-process) while single nodes are killed: the stream
//! leader, the node the service is connected to, a follower.

use std::time::Duration;

use tokio::time::Instant;

use crate::harness::{Cluster, client_of, exclusive};
use crate::helpers::TestApp;
use crate::load::{self, Load, Probe, Transport};

/// Settings of an instance on the cluster.
pub fn on_cluster(cluster: &Cluster) -> impl FnOnce(&mut updspace_events::config::Settings) {
    let urls = cluster.url_list();
    move |s| {
        s.nats_url = Some(urls);
        s.stream_replicas = Some("3".into());
    }
}

/// What one fault did.
struct Fault {
    what: &'static str,
    node: String,
    leader: String,
    connected: String,
    new_leader: String,
    /// When the service's own connection was on the node: how soon it was
    /// connected to another.
    reconnected: Option<Duration>,
    /// How soon a caller's request was answered again.
    back: Duration,
    /// How soon the stream had a leader and current followers again.
    healthy: Duration,
    from_ns: i128,
    to_ns: i128,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_any_one_node_loses_and_duplicates_nothing() {
    let _turn = exclusive().await;
    let mut cluster = Cluster::start().await;
    let app = TestApp::spawn_with(on_cluster(&cluster)).await;
    let stream = app.isolation.stream.clone();
    let prefix = app.isolation.prefix.clone();
    cluster
        .wait_stream_healthy(&stream, Duration::from_secs(30))
        .await;

    let urls = cluster.urls();
    let mut transports = Vec::new();
    for _ in 0..3 {
        transports.push(Transport::nats(client_of(&urls).await, &prefix));
    }
    for _ in 0..2 {
        transports.push(Transport::Http(vec![app.url("")]));
    }
    let load = Load::start(transports);
    let probe = Probe::start(client_of(&urls).await, &prefix, load.tenant);
    load.wait_for_changes(30, Duration::from_secs(30)).await;

    let mut report = Vec::new();
    for fault in ["stream leader", "the service's node", "a follower"] {
        let connected = app.state.nats.server_info().server_name;
        let leader = if fault == "stream leader" {
            cluster
                .wait_stream_healthy(&stream, Duration::from_secs(60))
                .await
        } else {
            // Each fault on its own: here the leader stays up.
            cluster.move_stream_leader(&stream, &connected).await
        };
        let victim = match fault {
            "stream leader" => cluster.index_of(&leader),
            "the service's node" => cluster.index_of(&connected),
            _ => (0..3)
                .find(|i| {
                    let name = &cluster.nodes[*i].name;
                    *name != leader && *name != connected
                })
                .expect("a node that neither leads nor serves the service"),
        };
        let name = cluster.nodes[victim].name.clone();
        let from_ns = load::now_ns();
        let fault_at = Instant::now();
        cluster.kill(victim);
        // The service's own connection, when it was on the killed node.
        let reconnected = if name == connected {
            let deadline = fault_at + Duration::from_secs(30);
            loop {
                let nats = &app.state.nats;
                if nats.connection_state() == async_nats::connection::State::Connected
                    && nats.server_info().server_name != name
                {
                    break Some(fault_at.elapsed());
                }
                assert!(Instant::now() < deadline, "the service did not reconnect");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } else {
            None
        };
        let back = probe
            .recovery_after(fault_at, Duration::from_secs(60))
            .await;
        let new_leader = cluster
            .wait_stream_healthy(&stream, Duration::from_secs(60))
            .await;
        let elected = fault_at.elapsed();
        load.wait_for_changes(20, Duration::from_secs(60)).await;
        let to_ns = load::now_ns();
        cluster.start_node(victim).await;
        report.push(Fault {
            what: fault,
            node: name,
            leader,
            connected,
            new_leader,
            reconnected,
            back,
            healthy: elected,
            from_ns,
            to_ns,
        });
    }
    cluster
        .wait_stream_healthy(&stream, Duration::from_secs(60))
        .await;

    let ledger = load.stop().await;
    let client = cluster.client().await;
    let verdict = load::verify(&client, &stream, &app.db, &ledger).await;
    let rows = load::outbox_rows(&app.db).await;
    let messages = load::read_stream(&client, &stream).await;
    println!(
        "one instance, single-node kills: {} acknowledged changes, {} messages, none lost or duplicated, slowest call {:?}, slowest commit-to-stream {:?}; answers {:?}",
        verdict.acknowledged,
        verdict.messages,
        ledger.slowest_call(),
        verdict.slowest_publish,
        ledger.answers()
    );
    for f in &report {
        let times = load::publish_times(&messages, &rows, f.from_ns, f.to_ns);
        let reconnected = f.reconnected.map_or(String::new(), |r| {
            format!(
                "service reconnected to another node after {:.3} s, ",
                r.as_secs_f64()
            )
        });
        println!(
            "  SIGKILL {} ({}; leader was {}, service on {}): {reconnected}NATS API answering again after {:.2} s, stream healthy (leader {}) after {:.2} s, changes committed meanwhile reached the stream in at most {:.2} s ({} changes)",
            f.what,
            f.node,
            f.leader,
            f.connected,
            f.back.as_secs_f64(),
            f.new_leader,
            f.healthy.as_secs_f64(),
            times.first().copied().unwrap_or_default().as_secs_f64(),
            times.len()
        );
    }
    ledger.assert_only_retryable_failures();
    for f in &report {
        assert!(
            f.back < Duration::from_secs(10),
            "after killing {} the service answered again only after {:?}",
            f.what,
            f.back
        );
    }
}
