//! `events-svc bridge status`: where the Activity bridge stands in the
//! stream, read from its durable consumer.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use crate::actors::bridge::CONSUMER;
use crate::config::{ActivityConfig, NatsConfig, Settings, StreamConfig};

#[derive(Debug, Subcommand)]
pub enum BridgeCommand {
    /// The bridge's position in the stream, the events it has yet to
    /// deliver and how old the oldest of them is.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(settings: &Settings, command: BridgeCommand) -> ExitCode {
    let BridgeCommand::Status { json } = command;
    let loaded = (|| {
        Ok::<_, crate::config::ConfigError>((
            NatsConfig::load(settings)?,
            StreamConfig::load(settings)?,
            ActivityConfig::load(settings)?,
        ))
    })();
    let (nats_config, stream_config, activity) = match loaded {
        Ok(c) => c,
        Err(e) => return super::config_error(&e),
    };
    let nats = match crate::subjects::connect_with_retry(&nats_config, Some(Duration::from_secs(5)))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            eprintln!("events-svc: {e}");
            return ExitCode::from(super::EXIT_UNAVAILABLE);
        }
    };
    let js = async_nats::jetstream::new(nats);
    let stream = match js.get_stream(&stream_config.name).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "events-svc: stream {} cannot be read: {e}",
                stream_config.name
            );
            return ExitCode::from(super::EXIT_UNAVAILABLE);
        }
    };
    let mut consumer = match stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(CONSUMER)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "events-svc: stream {} has no consumer {CONSUMER} ({e}): the bridge has not run \
                 yet. It runs on instances started with ACTIVITY_SERVICE_URL set.",
                stream_config.name
            );
            return ExitCode::FAILURE;
        }
    };
    let info = match consumer.info().await {
        Ok(i) => i.clone(),
        Err(e) => {
            eprintln!("events-svc: the consumer cannot be read: {e}");
            return ExitCode::from(super::EXIT_UNAVAILABLE);
        }
    };
    let acked = info.ack_floor.stream_sequence;
    let undelivered = info.num_pending + info.num_ack_pending as u64;
    // The oldest event not yet delivered is the first after the ack floor.
    let oldest_age = if undelivered == 0 {
        None
    } else {
        match stream.get_raw_message(acked + 1).await {
            Ok(m) => {
                let stored_ms = m.time.unix_timestamp_nanos() / 1_000_000;
                let now_ms = i128::from(chrono::Utc::now().timestamp_millis());
                Some(((now_ms - stored_ms).max(0) as f64) / 1000.0)
            }
            Err(_) => None,
        }
    };
    if json {
        super::ops::print_json(&json!({
            "consumer": CONSUMER,
            "stream": stream_config.name,
            "delivered_up_to": acked,
            "last_stream_sequence": info.delivered.stream_sequence,
            "pending": undelivered,
            "oldest_pending_age_seconds": oldest_age,
            "activity_service_url_here": activity.url.map(|u| u.to_string()),
        }));
        return ExitCode::SUCCESS;
    }
    println!("consumer   {CONSUMER} on stream {}", stream_config.name);
    println!("delivered  up to stream sequence {acked}");
    println!("pending    {undelivered} event(s)");
    match oldest_age {
        Some(age) => println!("lag        the oldest undelivered event is {age:.1} s old"),
        None if undelivered == 0 => println!("lag        none: caught up"),
        None => println!("lag        unknown (the next event is no longer in the stream)"),
    }
    match activity.url {
        Some(url) => println!("activity   {url} (ACTIVITY_SERVICE_URL here)"),
        None => println!(
            "activity   ACTIVITY_SERVICE_URL is not set here (the instances that deliver need it)"
        ),
    }
    ExitCode::SUCCESS
}
