//! Tails the `EVENTS` stream with a durable pull consumer and prints each
//! domain event, the way a consumer such as the Activity feed should read it:
//! explicit acks, and deduplication by the CloudEvents `id`.
//!
//! ```sh
//! cargo run --example tail_events -- [--durable NAME] [--prefix events] [--stream EVENTS]
//! ```
//! `NATS_URL` (default nats://127.0.0.1:4222) picks the server; `NATS_USER`
//! and `NATS_PASSWORD` log in, and `NATS_INBOX_PREFIX` (default `_INBOX`)
//! is where fetched messages and API replies arrive. As the `activity` user
//! of nats/nats-server.conf, which may read only its own inbox prefix:
//!
//! ```sh
//! NATS_USER=activity NATS_PASSWORD=... NATS_INBOX_PREFIX=_INBOX_activity \
//!   cargo run --example tail_events -- --durable my-tail
//! ```

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let durable = arg("--durable", "events-tail");
    let prefix = arg("--prefix", "events");
    let stream_name = arg("--stream", "EVENTS");
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());

    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut options = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(env("NATS_INBOX_PREFIX").unwrap_or_else(|| "_INBOX".into()));
    if let (Some(user), Some(password)) = (env("NATS_USER"), env("NATS_PASSWORD")) {
        options = options.user_and_password(user, password);
    }
    let client = options.connect(&url).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(&stream_name).await?;
    // A durable consumer remembers its position across restarts; explicit
    // acks mean a message is redelivered until this program confirms it.
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: format!("{prefix}.out.>"),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    eprintln!(
        "tailing {stream_name} ({prefix}.out.>) as durable consumer {durable}; Ctrl-C to stop"
    );

    // Redeliveries can repeat a message: remember recent ids and skip repeats.
    let mut seen: HashSet<String> = HashSet::new();
    let mut order: VecDeque<String> = VecDeque::new();
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let content_type = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Content-Type"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let envelope: Value = if content_type.ends_with("+json") {
            serde_json::from_slice(&message.payload)?
        } else {
            rmp_serde::from_slice(&message.payload)?
        };
        let id = envelope["id"].as_str().unwrap_or_default().to_string();
        if seen.insert(id.clone()) {
            order.push_back(id);
            if order.len() > 100_000
                && let Some(old) = order.pop_front()
            {
                seen.remove(&old);
            }
            println!(
                "{} {:<24} event={} seq={} {}",
                envelope["time"].as_str().unwrap_or(""),
                envelope["type"].as_str().unwrap_or(""),
                envelope["subject"].as_str().unwrap_or(""),
                envelope["sequence"],
                envelope["data"]
            );
        }
        message.ack_with(AckKind::Ack).await?;
    }
    Ok(())
}
