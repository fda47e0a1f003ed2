//! The whole cluster stopped and started while the service runs, and an
//! instance started while the cluster has no quorum.

use std::time::Duration;

use tokio::time::Instant;
use updspace_events::config::Config;
use updspace_events::startup::Application;

use crate::harness::{Cluster, client_of, exclusive};
use crate::helpers::TestApp;
use crate::load::{self, Load, Probe, Transport};
use crate::nodes::on_cluster;

async fn pending(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox_view WHERE status = 'pending'")
        .fetch_one(db)
        .await
        .expect("pending rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_restarts_under_load_and_start_up_waits_for_a_quorum() {
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
    for _ in 0..2 {
        transports.push(Transport::nats(client_of(&urls).await, &prefix));
        transports.push(Transport::Http(vec![app.url("")]));
    }
    let load = Load::start(transports);
    let probe = Probe::start(client_of(&urls).await, &prefix, load.tenant);
    load.wait_for_changes(30, Duration::from_secs(30)).await;

    // Every node stops cleanly; writes over HTTP go on (they need Postgres only).
    let down_at = Instant::now();
    for i in 0..3 {
        cluster.stop(i);
    }
    load.wait_for_changes(40, Duration::from_secs(30)).await;

    // One node back: JetStream has no quorum, so the stream has no leader.
    cluster.start_node(0).await;
    let mut settings = app.isolation.settings();
    on_cluster(&cluster)(&mut settings);
    let config = Config::load(&settings).expect("settings");
    let stream_config = config.stream.clone();
    let building = tokio::spawn(Application::build(config));
    // Waiting is bounded: without a quorum the wait ends with the reason.
    let lone = client_of(&[cluster.nodes[0].url()]).await;
    let asked = Instant::now();
    let refused = updspace_events::subjects::ensure_stream_with_retry(
        &lone,
        &stream_config,
        &prefix,
        Duration::from_secs(2),
    )
    .await
    .expect_err("no stream leader without a quorum");
    let gave_up_after = asked.elapsed();
    let reason = refused.to_string();
    assert!(
        reason.contains(&stream) && reason.contains("no usable answer from JetStream"),
        "{reason}"
    );
    assert!(
        gave_up_after < Duration::from_secs(20),
        "gave up only after {gave_up_after:?}"
    );
    assert!(
        !building.is_finished(),
        "an instance starting without a stream leader must wait, not exit"
    );

    // Quorum back.
    cluster.start_node(1).await;
    cluster.start_node(2).await;
    let up_at = Instant::now();
    let outage = up_at - down_at;
    let backlog = pending(&app.db).await;
    let gauge_at_up = app.state.metrics.outbox_pending.get();
    let second = tokio::time::timeout(Duration::from_secs(90), building)
        .await
        .expect("the waiting instance comes up once the cluster has a quorum")
        .expect("start-up task")
        .expect("start-up succeeds");
    let second_up = up_at.elapsed();
    let (stop_second, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(second.run_until(async {
        let _ = stopped.await;
    }));

    // The rows written while the cluster was down go out, and the gauge
    // follows the publisher, not a timer.
    let (mut drained, mut gauge) = (None, None);
    let deadline = up_at + Duration::from_secs(90);
    while drained.is_none() || gauge.is_none() {
        assert!(
            Instant::now() < deadline,
            "backlog of {backlog} rows not drained: {} pending, gauge {}",
            pending(&app.db).await,
            app.state.metrics.outbox_pending.get()
        );
        if drained.is_none() && pending(&app.db).await < 20 {
            drained = Some(up_at.elapsed());
        }
        if gauge.is_none() && app.state.metrics.outbox_pending.get() < 20 {
            gauge = Some(up_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (drained, gauge) = (drained.unwrap_or_default(), gauge.unwrap_or_default());
    let nats_back = probe.recovery_after(up_at, Duration::from_secs(60)).await;
    load.wait_for_changes(30, Duration::from_secs(60)).await;

    let ledger = load.stop().await;
    let _ = stop_second.send(());
    let _ = second.await;
    let client = cluster.client().await;
    let verdict = load::verify(&client, &stream, &app.db, &ledger).await;
    println!(
        "whole cluster stopped for {:.1} s under load: {} acknowledged changes, {} messages, none lost or duplicated; answers {:?}",
        outage.as_secs_f64(),
        verdict.acknowledged,
        verdict.messages,
        ledger.answers()
    );
    println!(
        "  after the restart: NATS API answering after {:.2} s, backlog of {backlog} rows published after {:.2} s, outbox_pending showed it after {:.2} s; an instance started without a quorum came up {:.2} s after the quorum returned; a 2 s wait without a quorum gave up after {:.2} s",
        nats_back.as_secs_f64(),
        drained.as_secs_f64(),
        gauge.as_secs_f64(),
        second_up.as_secs_f64(),
        gave_up_after.as_secs_f64()
    );
    ledger.assert_only_retryable_failures();
    assert!(backlog > 20, "rows waited while the cluster was down");
    assert!(
        gauge_at_up > 20,
        "outbox_pending showed {gauge_at_up} while {backlog} rows waited"
    );
    assert!(
        gauge < drained + Duration::from_millis(1500),
        "outbox_pending followed the publisher only {:?} later",
        gauge.saturating_sub(drained)
    );
}
