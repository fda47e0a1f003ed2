//! `events-bench`: load against a running service, through its public API,
//! with HDR latency histograms. A binary of its own, so the service carries
//! no load generator; it reads the same settings as `events-svc` (NATS, the
//! signing secret, the database for the memory scenario).

// The load generator shares the machine with the service it measures: every
// µs it spends per request (it allocates a body, headers and a reply per
// call) is taken from the service. glibc's malloc was ~7% of the machine
// during `get`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use uuid::Uuid;

use updspace_events::auth::{
    ContextHeaders, RequestParts, SignatureVersion, sign_headers_v1, sign_headers_v2,
};
use updspace_events::client::{EventsClient, Identity};
use updspace_events::config::{ConfigError, HmacConfig, NatsConfig, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Raw NATS request/reply to a trivial responder: the transport ceiling.
    Echo,
    Create,
    /// Creates weekly series of `--occurrences` occurrences (52: a year of
    /// game nights), each made in the create's one transaction.
    CreateSeries,
    Get,
    /// `event.list` with limit 100 over the seeded events.
    List,
    /// Random users set random statuses on random events.
    Rsvp,
    /// Every RSVP on one event with a capacity, so the waitlist works too.
    RsvpHot,
    /// 80% reads (get, list), 20% RSVPs.
    Mixed,
    /// Time to publish a backlog of `--events` outbox rows.
    OutboxDrain,
    /// Commit-to-stream latency under a steady write rate (`--rate`).
    OutboxLatency,
    /// Creates `--events` events over `--scopes` scopes, reads each once,
    /// and reports the service's RSS then, and again after `--settle` seconds
    /// (idle scope actors are passivated meanwhile).
    Memory,
    /// Mixed load (80% reads, 20% RSVPs) for `--duration` seconds, the
    /// service's RSS sampled every `--sample` seconds, `--fault-cmd` run every
    /// `--fault-every` seconds when given (e.g. restart a NATS node); at the
    /// end the stream is checked against the outbox: lost and duplicated
    /// messages.
    Soak,
    /// `rsvp` over NATS while `--streams` live streams (`GET /stream`, one
    /// user each) are open on the HTTP gateway: the RSVP rate and latency,
    /// and how long a change takes to reach the streams (from the message's
    /// `time` to its arrival).
    Sse,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Echo => "echo",
            Scenario::Create => "create",
            Scenario::CreateSeries => "create-series",
            Scenario::Get => "get",
            Scenario::List => "list",
            Scenario::Rsvp => "rsvp",
            Scenario::RsvpHot => "rsvp-hot",
            Scenario::Mixed => "mixed",
            Scenario::OutboxDrain => "outbox-drain",
            Scenario::OutboxLatency => "outbox-latency",
            Scenario::Memory => "memory",
            Scenario::Soak => "soak",
            Scenario::Sse => "sse",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Nats,
    Http,
}

#[derive(Debug, Parser)]
#[command(
    name = "events-bench",
    version,
    about = "Load a running events-svc through its public API and report throughput, latency percentiles and the service's memory"
)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(&cli.settings, cli.args)),
        Err(e) => {
            eprintln!("events-bench: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    scenario: Scenario,
    #[arg(long, value_enum, default_value = "nats")]
    transport: Transport,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of measured load (after seeding and a short warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Events to seed (outbox-drain: rows in the backlog).
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Occurrences per series for create-series.
    #[arg(long, default_value_t = 52)]
    occurrences: u32,
    /// Changes per second for outbox-latency.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Scopes the memory scenario spreads its events over.
    #[arg(long, default_value_t = 10_000)]
    scopes: usize,
    /// Seconds the memory scenario waits before measuring again.
    #[arg(long, default_value_t = 30)]
    settle: u64,
    /// Capacity of the event in rsvp-hot.
    #[arg(long, default_value_t = 100)]
    capacity: u32,
    /// rsvp-hot: the event's `maxGuests`; each user brings the same number
    /// of guests every time (0 to this, by user), so a party's seats never
    /// change under the load.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=50))]
    guests: u32,
    /// rsvp-hot: the event takes RSVPs with approval; one request in eight
    /// is then a manager approving a random user.
    #[arg(long)]
    approval: bool,
    /// Soak: the members who RSVP (reads come from 10,000). A fixed set of
    /// (member, event) pairs lets the cached RSVP maps fill during the
    /// warm-up, so that what grows after it is the service, not its data.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    rsvp_users: u64,
    /// Soak: seconds between two RSS samples.
    #[arg(long, default_value_t = 10)]
    sample: u64,
    /// Soak: a shell command that injects a fault (run with `sh -c`).
    #[arg(long)]
    fault_cmd: Option<String>,
    /// Soak: seconds between two faults.
    #[arg(long, default_value_t = 60)]
    fault_every: u64,
    /// Base URL of the HTTP gateway.
    #[arg(long, default_value = "http://127.0.0.1:8005")]
    http_url: String,
    /// HTTP only: the signature version requests carry (1, as the BFF
    /// signs, or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    signature: u8,
    /// The service's process id, to report its RSS (default: found by name).
    #[arg(long)]
    pid: Option<u32>,
    /// Sse: live streams to hold open during the load.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// One signed caller, over NATS or HTTP.
#[derive(Clone)]
enum Driver {
    Nats(EventsClient),
    Http {
        client: reqwest::Client,
        base: String,
        secret: String,
        version: SignatureVersion,
    },
}

impl Driver {
    /// Calls an operation for load: true on success; the body is not decoded.
    async fn hit(&self, op: &str, who: &Identity, body: Value) -> bool {
        match self {
            Driver::Nats(c) => matches!(c.status_of(op, who, &body).await, Ok(200)),
            Driver::Http { .. } => self.call(op, who, body).await.is_ok(),
        }
    }

    /// A random RSVP of `user` on event `id`; true on success.
    async fn random_rsvp(&self, user: &Identity, id: &str) -> bool {
        let status = ["going", "interested", "not_going"][rand::random_range(0..3)];
        self.hit("rsvp.set", user, json!({"eventId": id, "status": status}))
            .await
    }

    /// Calls an operation; true on success.
    async fn call(&self, op: &str, who: &Identity, body: Value) -> Result<Value, String> {
        match self {
            Driver::Nats(c) => {
                let reply = c.call(op, who, &body).await.map_err(|e| e.to_string())?;
                if reply.status == 200 {
                    Ok(reply.body)
                } else {
                    Err(format!(
                        "{} {}",
                        reply.status,
                        reply.code.unwrap_or_default()
                    ))
                }
            }
            Driver::Http {
                client,
                base,
                secret,
                version,
            } => {
                let id = body["id"]
                    .as_str()
                    .or(body["eventId"].as_str())
                    .unwrap_or("")
                    .to_string();
                let (method, path, query, payload) = match op {
                    "event.create" => (
                        "POST",
                        "/api/v1/events/".to_string(),
                        String::new(),
                        body.to_string(),
                    ),
                    "event.get" => (
                        "GET",
                        format!("/api/v1/events/{id}"),
                        String::new(),
                        String::new(),
                    ),
                    "event.list" => (
                        "GET",
                        "/api/v1/events/".to_string(),
                        "limit=100".to_string(),
                        String::new(),
                    ),
                    "rsvp.set" => (
                        "POST",
                        format!("/api/v1/events/{id}/rsvp"),
                        String::new(),
                        json!({"status": body["status"]}).to_string(),
                    ),
                    other => return Err(format!("{other} is not benchmarked over HTTP")),
                };
                let parts = RequestParts::http(method, &path, &query, payload.as_bytes());
                let headers = signed_headers(secret, *version, &parts, who);
                let url = if query.is_empty() {
                    format!("{base}{path}")
                } else {
                    format!("{base}{path}?{query}")
                };
                let mut request = client
                    .request(method.parse().map_err(|_| "method")?, url)
                    .header("Content-Type", "application/json");
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                let response = request
                    .body(payload)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let text = response.text().await.map_err(|e| e.to_string())?;
                if status < 300 {
                    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
                } else {
                    Err(format!("{status} {text}"))
                }
            }
        }
    }
}

/// One of the seeded event ids, at random.
fn any_of(ids: &[String]) -> String {
    ids.get(rand::random_range(0..ids.len().max(1)))
        .cloned()
        .unwrap_or_default()
}

/// The headers of one HTTP request signed as `who`, with a new request id.
fn signed_headers(
    secret: &str,
    version: SignatureVersion,
    parts: &RequestParts<'_>,
    who: &Identity,
) -> Vec<(String, String)> {
    let request_id = Uuid::new_v4().to_string();
    let identity = ContextHeaders {
        request_id: &request_id,
        tenant_id: &who.tenant_id,
        tenant_slug: &who.tenant_slug,
        user_id: Some(&who.user_id),
        master_flags: who.master_flags.as_deref(),
    };
    let now = updspace_events::auth::now_unix();
    match version {
        SignatureVersion::V1 => sign_headers_v1(secret, parts, &identity, now),
        SignatureVersion::V2 => sign_headers_v2(secret, parts, &identity, now),
    }
}

/// What a scenario measured.
struct Outcome {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    extra: serde_json::Map<String, Value>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits; the bounds are constants.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn rss_mb(pid: Option<u32>) -> Option<f64> {
    let pid = pid.or_else(|| {
        let out = std::process::Command::new("pgrep")
            .args(["-n", "-x", "events-svc"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn event_body(tenant: &str, i: usize, capacity: Option<u32>) -> Value {
    json!({
        "scopeType": "TENANT", "scopeId": tenant, "title": format!("Bench event {i}"),
        "description": "Seeded by events-bench",
        "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
        "capacity": capacity,
    })
}

async fn seed(
    driver: &Driver,
    admin: &Identity,
    n: usize,
    capacity: Option<u32>,
) -> Result<Vec<String>, String> {
    let ids = futures::stream::iter(0..n)
        .map(|i| {
            let driver = driver.clone();
            let admin = admin.clone();
            async move {
                let reply = driver
                    .call(
                        "event.create",
                        &admin,
                        event_body(&admin.tenant_id, i, capacity),
                    )
                    .await?;
                reply["id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "create returned no id".to_string())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    ids.into_iter().collect()
}

/// Runs `op` from `concurrency` workers for `duration`, printing progress.
async fn load<F, Fut>(concurrency: usize, warmup: Duration, duration: Duration, op: F) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(warmup.is_zero()));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (op, stop, measuring, done) =
            (op.clone(), stop.clone(), measuring.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut bad) = (0u64, 0u64);
            let mut i = w as u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let success = op(i).await;
                i += concurrency as u64;
                if measuring.load(Ordering::Relaxed) {
                    let _ = h.record(started.elapsed().as_micros().max(1) as u64);
                    if success {
                        ok += 1;
                    } else {
                        bad += 1;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            (h, ok, bad)
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1).min(duration)).await;
        let now = done.load(Ordering::Relaxed);
        eprint!(
            "\r  {:>4.0}s  {:>9} requests  {:>8} req/s   ",
            started.elapsed().as_secs_f64(),
            now,
            now - last
        );
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    eprintln!();
    let mut latency = histogram();
    let (mut requests, mut errors) = (0, 0);
    for w in workers {
        if let Ok((h, ok, bad)) = w.await {
            let _ = latency.add(&h);
            requests += ok + bad;
            errors += bad;
        }
    }
    Outcome {
        requests,
        errors,
        elapsed,
        latency,
        extra: serde_json::Map::new(),
    }
}

async fn run(settings: &Settings, args: BenchArgs) -> ExitCode {
    let dev = updspace_events::config::dev_mode(settings).unwrap_or(false);
    let loaded = (|| {
        Ok::<_, ConfigError>((
            HmacConfig::load(settings, dev)?,
            NatsConfig::load(settings)?,
        ))
    })();
    let (hmac, nats_config) = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("events-bench: configuration error: {e}");
            return ExitCode::from(78);
        }
    };
    let secret = hmac.secrets.first().cloned().unwrap_or_default();
    let nats = match updspace_events::subjects::connect_with_retry(
        &nats_config,
        Some(Duration::from_secs(5)),
    )
    .await
    {
        Ok(n) => n,
        Err(e) => {
            eprintln!("events-bench: {e}");
            return ExitCode::from(69);
        }
    };
    let events_client = EventsClient::new(nats.clone(), &nats_config.subject_prefix, &secret);
    let driver = match args.transport {
        Transport::Nats => Driver::Nats(events_client.clone()),
        Transport::Http => Driver::Http {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(args.concurrency)
                .build()
                .unwrap_or_default(),
            base: args.http_url.trim_end_matches('/').to_string(),
            secret: secret.clone(),
            version: if args.signature == 2 {
                SignatureVersion::V2
            } else {
                SignatureVersion::V1
            },
        },
    };
    let tenant = Uuid::new_v4().to_string();
    let admin = Identity {
        tenant_id: tenant.clone(),
        tenant_slug: "bench".into(),
        user_id: Uuid::new_v4().to_string(),
        master_flags: Some(r#"{"system_admin":true}"#.into()),
    };
    let member_tenant = tenant.clone();
    let member = move |n: u64| Identity {
        tenant_id: member_tenant.clone(),
        tenant_slug: "bench".into(),
        user_id: Uuid::from_u64_pair(0x6265_6e63_6800_0000, n).to_string(),
        master_flags: None,
    };
    let duration = Duration::from_secs(args.duration.max(1));
    let warmup = Duration::from_secs(1);
    eprintln!(
        "bench {} over {:?}, {} in flight, {} s",
        args.scenario.name(),
        args.transport,
        args.concurrency,
        args.duration
    );
    let outcome = match args.scenario {
        Scenario::Echo => {
            let subject = format!(
                "{}.bench.echo.{}",
                nats_config.subject_prefix,
                Uuid::new_v4().simple()
            );
            let Ok(mut sub) = nats.subscribe(subject.clone()).await else {
                eprintln!("events-bench: cannot subscribe the echo responder");
                return ExitCode::FAILURE;
            };
            let responder = nats.clone();
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if let Some(reply) = m.reply {
                        let _ = responder.publish(reply, m.payload).await;
                    }
                }
            });
            let client = nats.clone();
            load(args.concurrency, warmup, duration, move |_| {
                let client = client.clone();
                let subject = subject.clone();
                async move { client.request(subject, "ping".into()).await.is_ok() }
            })
            .await
        }
        Scenario::Create => {
            let (driver, admin) = (driver.clone(), admin.clone());
            load(args.concurrency, warmup, duration, move |i| {
                let (driver, admin) = (driver.clone(), admin.clone());
                async move {
                    let body = event_body(&admin.tenant_id, i as usize, None);
                    driver.hit("event.create", &admin, body).await
                }
            })
            .await
        }
        Scenario::CreateSeries => {
            let (driver, admin) = (driver.clone(), admin.clone());
            let rule = format!("FREQ=WEEKLY;COUNT={}", args.occurrences);
            let mut outcome = load(args.concurrency, warmup, duration, move |i| {
                let (driver, admin, rule) = (driver.clone(), admin.clone(), rule.clone());
                async move {
                    // Starting next week, so every occurrence is within the horizon.
                    let start = chrono::Utc::now() + chrono::Duration::days(7);
                    let mut body = event_body(&admin.tenant_id, i as usize, Some(20));
                    body["startsAt"] = json!(start.format("%Y-%m-%dT18:00:00Z").to_string());
                    body["endsAt"] = json!(start.format("%Y-%m-%dT21:00:00Z").to_string());
                    body["timeZone"] = json!("Europe/Berlin");
                    body["recurrence"] = json!({"rrule": rule});
                    driver.hit("event.create", &admin, body).await
                }
            })
            .await;
            let per_second = outcome.requests as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
            outcome
                .extra
                .insert("occurrences_per_series".into(), json!(args.occurrences));
            outcome.extra.insert(
                "occurrences_per_s".into(),
                json!((per_second * args.occurrences as f64).round()),
            );
            outcome
        }
        Scenario::Get | Scenario::List | Scenario::Rsvp | Scenario::Mixed => {
            eprintln!("  seeding {} events", args.events);
            let ids = match seed(&driver, &admin, args.events, None).await {
                Ok(ids) => Arc::new(ids),
                Err(e) => {
                    eprintln!("events-bench: seeding failed: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let scenario = args.scenario;
            let driver = driver.clone();
            let member = Arc::new(member);
            load(args.concurrency, warmup, duration, move |i| {
                let (driver, ids, member) = (driver.clone(), ids.clone(), member.clone());
                async move {
                    let id = any_of(&ids);
                    let user = member(rand::random_range(0..10_000));
                    let kind = match scenario {
                        Scenario::Mixed => match i % 10 {
                            0 | 1 => "rsvp",
                            2 => "list",
                            _ => "get",
                        },
                        Scenario::Get => "get",
                        Scenario::List => "list",
                        _ => "rsvp",
                    };
                    match kind {
                        "get" => driver.hit("event.get", &user, json!({"id": id})).await,
                        "list" => driver.hit("event.list", &user, json!({"limit": 100})).await,
                        _ => driver.random_rsvp(&user, &id).await,
                    }
                }
            })
            .await
        }
        Scenario::RsvpHot => {
            let ids = match seed(&driver, &admin, 1, Some(args.capacity)).await {
                Ok(ids) => ids,
                Err(e) => {
                    eprintln!("events-bench: seeding failed: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let id = ids.first().cloned().unwrap_or_default();
            if args.guests > 0 || args.approval {
                let rules =
                    json!({"id": id, "maxGuests": args.guests, "rsvpApproval": args.approval});
                if let Err(e) = driver.call("event.update", &admin, rules).await {
                    eprintln!("events-bench: setting the RSVP rules failed: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let (driver2, id2, admin2) = (driver.clone(), id.clone(), admin.clone());
            let (max_guests, approval) = (args.guests, args.approval);
            let member = Arc::new(member);
            let mut outcome = load(args.concurrency, warmup, duration, move |i| {
                let (driver, id, member, admin) =
                    (driver2.clone(), id2.clone(), member.clone(), admin2.clone());
                async move {
                    let k = rand::random_range(0..20_000u32);
                    let user = member(u64::from(k));
                    if approval && i % 8 == 7 {
                        let body = json!({"eventId": id, "userId": user.user_id});
                        return driver.hit("rsvp.approve", &admin, body).await;
                    }
                    let body = if rand::random_range(0..4) == 0 {
                        json!({"eventId": id, "status": "not_going"})
                    } else {
                        json!({"eventId": id, "status": "going", "guests": k % (max_guests + 1)})
                    };
                    driver.hit("rsvp.set", &user, body).await
                }
            })
            .await;
            if let Ok(view) = driver.call("event.get", &admin, json!({"id": id})).await {
                let going = view["seats"]["taken"].as_u64().unwrap_or(0);
                outcome
                    .extra
                    .insert("parties_going".into(), view["rsvpCounts"]["going"].clone());
                outcome
                    .extra
                    .insert("pending".into(), view["rsvpCounts"]["pending"].clone());
                outcome.extra.insert("going".into(), json!(going));
                outcome.extra.insert(
                    "waitlisted".into(),
                    view["rsvpCounts"]["waitlisted"].clone(),
                );
                outcome
                    .extra
                    .insert("capacity".into(), json!(args.capacity));
                outcome.extra.insert(
                    "capacity_respected".into(),
                    json!(going <= u64::from(args.capacity)),
                );
            }
            outcome
        }
        Scenario::Memory => {
            match memory(
                &driver,
                &admin,
                args.events,
                args.scopes,
                args.concurrency,
                args.pid,
                args.settle,
            )
            .await
            {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("events-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Scenario::Soak => {
            match soak(settings, &nats, &driver, &admin, member, &args, duration).await {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("events-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Scenario::Sse => {
            match sse(&driver, &admin, member, &args, &secret, warmup, duration).await {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("events-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Scenario::OutboxDrain => {
            match outbox_drain(settings, &nats, &nats_config, args.events).await {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("events-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Scenario::OutboxLatency => {
            match outbox_latency(
                &driver,
                &nats,
                &nats_config,
                &admin,
                &member,
                args.rate,
                duration,
            )
            .await
            {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("events-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    report(&args, &outcome);
    ExitCode::SUCCESS
}

/// Mixed load for a long time, with the service's memory over time and,
/// when asked, periodic faults; then every outbox row of the run's tenant is
/// looked for in the stream.
/// Opens one live stream as `who` and records, for each message, the time
/// from its `time` to its arrival.
/// What the stream readers of the sse scenario count together.
#[derive(Default)]
struct StreamTally {
    opened: AtomicU64,
    received: AtomicU64,
    latency: std::sync::Mutex<Option<Histogram<u64>>>,
    measuring: AtomicBool,
}

async fn read_stream(
    client: reqwest::Client,
    base: String,
    secret: String,
    who: Identity,
    tally: Arc<StreamTally>,
) -> Result<(), String> {
    let StreamTally {
        opened,
        received,
        latency,
        measuring,
    } = &*tally;
    let path = "/api/v1/events/stream";
    let parts = RequestParts::http("GET", path, "", b"");
    let headers = signed_headers(&secret, SignatureVersion::V2, &parts, &who);
    let mut request = client.get(format!("{base}{path}"));
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    if response.status().as_u16() != 200 {
        let status = response.status().as_u16();
        return Err(format!(
            "{status} {}",
            response.text().await.unwrap_or_default()
        ));
    }
    opened.fetch_add(1, Ordering::Relaxed);
    let mut buf: Vec<u8> = Vec::new();
    let mut local = histogram();
    let mut flushed = Instant::now();
    while let Ok(Some(chunk)) = response.chunk().await {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            // Only the time is needed: found, not parsed with the rest, so
            // the reader's own cost stays small beside the service's.
            let sent = data
                .split_once("\"time\":\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .and_then(|(t, _)| chrono::DateTime::parse_from_rfc3339(t).ok());
            if let Some(sent) = sent
                && measuring.load(Ordering::Relaxed)
            {
                let took = chrono::Utc::now().signed_duration_since(sent);
                let _ = local.record(took.num_microseconds().unwrap_or(0).max(1) as u64);
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
        if flushed.elapsed() > Duration::from_millis(500) {
            merge(latency, &local);
            local.reset();
            flushed = Instant::now();
        }
    }
    merge(latency, &local);
    Ok(())
}

fn merge(into: &std::sync::Mutex<Option<Histogram<u64>>>, from: &Histogram<u64>) {
    if let Ok(mut h) = into.lock() {
        let _ = h.get_or_insert_with(histogram).add(from);
    }
}

async fn sse(
    driver: &Driver,
    admin: &Identity,
    member: impl Fn(u64) -> Identity + Send + Sync + 'static,
    args: &BenchArgs,
    secret: &str,
    warmup: Duration,
    duration: Duration,
) -> Result<Outcome, String> {
    eprintln!("  seeding {} events", args.events);
    let ids = Arc::new(seed(driver, admin, args.events, None).await?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())?;
    let base = args.http_url.trim_end_matches('/').to_string();
    let tally = Arc::new(StreamTally::default());
    let opened = &tally.opened;
    let member = Arc::new(member);
    eprintln!("  opening {} live streams", args.streams);
    let mut readers = Vec::new();
    for n in 0..args.streams {
        readers.push(tokio::spawn(read_stream(
            client.clone(),
            base.clone(),
            secret.to_string(),
            member(1_000_000 + n as u64),
            tally.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (opened.load(Ordering::Relaxed) as usize) < args.streams && Instant::now() < deadline {
        if readers.iter().all(|r| r.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = opened.load(Ordering::Relaxed);
    if (open as usize) < args.streams {
        return Err(format!(
            "only {open} of {} live streams opened",
            args.streams
        ));
    }
    let (driver, flag) = (driver.clone(), tally.clone());
    let mut outcome = load(args.concurrency, warmup, duration, move |_| {
        let (driver, ids, member) = (driver.clone(), ids.clone(), member.clone());
        flag.measuring.store(true, Ordering::Relaxed);
        async move {
            let user = member(rand::random_range(0..10_000));
            driver.random_rsvp(&user, &any_of(&ids)).await
        }
    })
    .await;
    // What was committed during the load reaches the streams shortly after.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A reader whose stream ended was dropped by the service (it fell too
    // far behind); the others are still open.
    let dropped = readers.iter().filter(|r| r.is_finished()).count();
    for r in &readers {
        r.abort();
    }
    let h = tally
        .latency
        .lock()
        .ok()
        .and_then(|h| h.clone())
        .unwrap_or_else(histogram);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    outcome.extra.insert("streams".into(), json!(open));
    outcome
        .extra
        .insert("streams_dropped".into(), json!(dropped));
    outcome.extra.insert(
        "messages_received".into(),
        json!(tally.received.load(Ordering::Relaxed)),
    );
    outcome
        .extra
        .insert("delivery_p50_ms".into(), json!(ms(0.5)));
    outcome
        .extra
        .insert("delivery_p99_ms".into(), json!(ms(0.99)));
    outcome
        .extra
        .insert("delivery_max_ms".into(), json!(h.max() as f64 / 1000.0));
    Ok(outcome)
}

async fn soak(
    settings: &Settings,
    nats: &async_nats::Client,
    driver: &Driver,
    admin: &Identity,
    member: impl Fn(u64) -> Identity + Send + Sync + 'static,
    args: &BenchArgs,
    duration: Duration,
) -> Result<Outcome, String> {
    let db_config =
        updspace_events::config::DatabaseConfig::load(settings).map_err(|e| e.to_string())?;
    let db = updspace_events::store::connect_with_retry(&db_config, Some(Duration::from_secs(5)))
        .await
        .map_err(|e| e.to_string())?;
    let stream_config =
        updspace_events::config::StreamConfig::load(settings).map_err(|e| e.to_string())?;
    let prefix = settings
        .subject_prefix
        .clone()
        .unwrap_or_else(|| "events".into());
    eprintln!("  seeding {} events", args.events);
    let ids = Arc::new(seed(driver, admin, args.events, Some(50)).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (pid, every) = (args.pid, Duration::from_secs(args.sample.max(1)));
    let sampler = {
        let stop = stop.clone();
        let metrics_url = format!("{}/metrics", args.http_url.trim_end_matches('/'));
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            // What the service caches beside its RSS: growth of the one
            // that the other explains is data, not a leak.
            let sample = || async {
                let text = match http.get(&metrics_url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let gauge = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                };
                json!([
                    started.elapsed().as_secs(),
                    rss_mb(pid),
                    gauge("events_cached_rsvps"),
                    gauge("events_live_scope_actors"),
                ])
            };
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(sample().await);
                tokio::time::sleep(every).await;
            }
            samples.push(sample().await);
            samples
        })
    };
    let faults_done = Arc::new(AtomicU64::new(0));
    let faults = args.fault_cmd.clone().map(|cmd| {
        let (stop, done) = (stop.clone(), faults_done.clone());
        let every = Duration::from_secs(args.fault_every.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                eprintln!("\n  fault: {cmd}");
                let run = cmd.clone();
                let status = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("sh").arg("-c").arg(run).status()
                })
                .await;
                match status {
                    Ok(Ok(status)) if status.success() => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(status)) => eprintln!("  the fault command exited with {status}"),
                    Ok(Err(e)) => eprintln!("  the fault command did not run: {e}"),
                    Err(e) => eprintln!("  the fault command did not run: {e}"),
                }
            }
        })
    });
    let member = Arc::new(member);
    let worker_driver = driver.clone();
    let rsvp_users = args.rsvp_users;
    let mut outcome = load(
        args.concurrency,
        Duration::from_secs(1),
        duration,
        move |i| {
            let (driver, ids, member) = (worker_driver.clone(), ids.clone(), member.clone());
            async move {
                let id = any_of(&ids);
                let writes = i % 10 < 2;
                let user = member(rand::random_range(
                    0..if writes { rsvp_users } else { 10_000 },
                ));
                match i % 10 {
                    0 | 1 => driver.random_rsvp(&user, &id).await,
                    2 => driver.hit("event.list", &user, json!({"limit": 100})).await,
                    _ => driver.hit("event.get", &user, json!({"id": id})).await,
                }
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    if let Some(task) = faults {
        task.abort();
    }
    let faults_done = faults_done.load(Ordering::Relaxed);
    // Everything committed reaches the stream: wait for the outbox of the
    // run's tenant to drain, then compare it with the stream.
    let tenant = uuid::Uuid::parse_str(&admin.tenant_id).map_err(|e| e.to_string())?;
    eprintln!("  waiting for the outbox to drain");
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox_view WHERE tenant_id = $1 AND status = 'pending'",
        )
        .bind(tenant)
        .fetch_one(&db)
        .await
        .map_err(|e| e.to_string())?;
        if pending == 0 || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rows: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM outbox WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_all(&db)
        .await
        .map_err(|e| e.to_string())?;
    let seen = stream_ids(
        nats,
        &stream_config.name,
        &format!("{prefix}.out.{tenant}.>"),
    )
    .await?;
    let mut counts: HashMap<String, u64> = HashMap::new();
    for id in &seen {
        *counts.entry(id.clone()).or_default() += 1;
    }
    let lost = rows
        .iter()
        .filter(|id| !counts.contains_key(&id.to_string()))
        .count();
    let duplicated: u64 = counts.values().map(|n| n.saturating_sub(1)).sum();
    let rss: Vec<f64> = samples.iter().filter_map(|s| s[1].as_f64()).collect();
    let extra = &mut outcome.extra;
    extra.insert("rss_samples".into(), json!(samples));
    extra.insert("rss_first_mb".into(), json!(rss.first()));
    extra.insert("rss_last_mb".into(), json!(rss.last()));
    extra.insert(
        "rss_max_mb".into(),
        json!(
            rss.iter()
                .copied()
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        ),
    );
    extra.insert("faults".into(), json!(faults_done));
    extra.insert("outbox_rows".into(), json!(rows.len()));
    extra.insert("rsvp_users".into(), json!(rsvp_users));
    extra.insert("stream_messages".into(), json!(seen.len()));
    extra.insert("lost".into(), json!(lost));
    extra.insert("duplicated".into(), json!(duplicated));
    Ok(outcome)
}

/// The `Nats-Msg-Id` of every message of `stream` on `subject`, in stream
/// order, read through an ordered consumer.
async fn stream_ids(
    nats: &async_nats::Client,
    stream: &str,
    subject: &str,
) -> Result<Vec<String>, String> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let js = async_nats::jetstream::new(nats.clone());
    let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut ids = Vec::new();
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
        let Ok(Some(Ok(message))) = next else {
            break;
        };
        if let Some(id) = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
            ids.push(id.as_str().to_string());
        }
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        if pending == 0 {
            break;
        }
    }
    Ok(ids)
}

/// Touches many events in many scopes, then measures memory twice.
async fn memory(
    driver: &Driver,
    admin: &Identity,
    events: usize,
    scopes: usize,
    concurrency: usize,
    pid: Option<u32>,
    settle: u64,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let scopes = scopes.max(1);
    eprintln!("  creating {events} events in {scopes} scopes");
    let done = Arc::new(AtomicU64::new(0));
    let ids: Vec<Result<String, String>> = futures::stream::iter(0..events)
        .map(|i| {
            let (driver, admin, done) = (driver.clone(), admin.clone(), done.clone());
            async move {
                let mut body = event_body(&admin.tenant_id, i, None);
                body["scopeType"] = json!("COMMUNITY");
                body["scopeId"] = json!(format!("bench-community-{}", i % scopes));
                let reply = driver.call("event.create", &admin, body).await?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 5000 == 0 {
                    eprint!("\r  {n} created   ");
                }
                reply["id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "no id".to_string())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    eprintln!();
    let ids: Vec<String> = ids.into_iter().filter_map(Result::ok).collect();
    eprintln!("  reading each of {} events once", ids.len());
    let mut latency = histogram();
    let reads: Vec<(bool, u64)> = futures::stream::iter(ids.clone())
        .map(|id| {
            let (driver, admin) = (driver.clone(), admin.clone());
            async move {
                let t = Instant::now();
                let ok = driver
                    .call("event.get", &admin, json!({"id": id}))
                    .await
                    .is_ok();
                (ok, t.elapsed().as_micros().max(1) as u64)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut errors = (events - ids.len()) as u64;
    for (ok, us) in &reads {
        let _ = latency.record(*us);
        if !ok {
            errors += 1;
        }
    }
    let touched = rss_mb(pid);
    eprintln!("  RSS after touching: {touched:?} MB; waiting {settle} s for passivation");
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let settled = rss_mb(pid);
    let mut extra = serde_json::Map::new();
    extra.insert("scopes".into(), json!(scopes));
    extra.insert("rss_touched_mb".into(), json!(touched));
    extra.insert("rss_settled_mb".into(), json!(settled));
    Ok(Outcome {
        requests: (events + reads.len()) as u64,
        errors,
        elapsed: started.elapsed(),
        latency,
        extra,
    })
}

/// Inserts a backlog straight into the outbox and times until the
/// publisher has sent every row (the stream holds them all).
async fn outbox_drain(
    settings: &Settings,
    nats: &async_nats::Client,
    nats_config: &NatsConfig,
    rows: usize,
) -> Result<Outcome, String> {
    let db_config =
        updspace_events::config::DatabaseConfig::load(settings).map_err(|e| e.to_string())?;
    let db = updspace_events::store::connect_with_retry(&db_config, Some(Duration::from_secs(5)))
        .await
        .map_err(|e| e.to_string())?;
    let stream_name = settings.stream.clone().unwrap_or_else(|| "EVENTS".into());
    let js = async_nats::jetstream::new(nats.clone());
    let mut stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| e.to_string())?;
    let before = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .messages;
    let tenant = Uuid::new_v4();
    eprintln!("  inserting {rows} outbox rows");
    let subject = format!("{}.out.{tenant}.event.updated", nats_config.subject_prefix);
    for chunk in (0..rows).collect::<Vec<_>>().chunks(10_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::new_v4()).collect();
        let events: Vec<Uuid> = chunk
            .iter()
            .map(|i| Uuid::from_u64_pair(7, (*i % 1000) as u64))
            .collect();
        sqlx::query(
            "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload)
             SELECT id, $2, e, 'event.updated', $3, jsonb_build_object('bench', true)
             FROM UNNEST($1::uuid[], $4::uuid[]) WITH ORDINALITY AS x(id, e, n) ORDER BY n",
        )
        .bind(&ids)
        .bind(tenant)
        .bind(&subject)
        .bind(&events)
        .execute(&db)
        .await
        .map_err(|e| e.to_string())?;
    }
    // A live outbox never grows by 100,000 rows in seconds; autovacuum
    // would have analysed it long before such a backlog formed.
    sqlx::query("ANALYZE outbox")
        .execute(&db)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let target = before + rows as u64;
    // The publisher may already have sent part of the backlog while it was
    // written: only what is left now is timed.
    let at_start = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .messages;
    loop {
        let now = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .messages;
        eprint!(
            "\r  {:>6.1}s  {:>9} published   ",
            started.elapsed().as_secs_f64(),
            now.saturating_sub(before)
        );
        if now >= target {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("the backlog did not drain within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!();
    let elapsed = started.elapsed();
    Ok(Outcome {
        requests: target.saturating_sub(at_start),
        errors: 0,
        elapsed,
        latency: histogram(),
        extra: serde_json::Map::new(),
    })
}

/// Changes at a steady rate; latency from the reply (the commit) to the
/// message's arrival from the stream.
async fn outbox_latency(
    driver: &Driver,
    nats: &async_nats::Client,
    nats_config: &NatsConfig,
    admin: &Identity,
    member: &(dyn Fn(u64) -> Identity + Send + Sync),
    rate: u64,
    duration: Duration,
) -> Result<Outcome, String> {
    let ids = seed(driver, admin, 100, None).await?;
    let filter = format!(
        "{}.out.{}.event.rsvp.changed",
        nats_config.subject_prefix, admin.tenant_id
    );
    let mut sub = nats.subscribe(filter).await.map_err(|e| e.to_string())?;
    let committed: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let arrived: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let arrivals = arrived.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let now = Instant::now();
            let envelope: Value = rmp_serde::from_slice(&m.payload)
                .or_else(|_| serde_json::from_slice(&m.payload))
                .unwrap_or(Value::Null);
            if let Some(user) = envelope["data"]["user_id"].as_str()
                && let Ok(mut a) = arrivals.lock()
            {
                a.insert(user.to_string(), now);
            }
        }
    });
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let started = Instant::now();
    let mut next = Instant::now();
    let mut n: u64 = 0;
    let mut tasks = futures::stream::FuturesUnordered::new();
    let mut errors = 0u64;
    while started.elapsed() < duration {
        let user = member(1_000_000 + n);
        let id = ids[(n as usize) % ids.len()].clone();
        let driver = driver.clone();
        let committed = committed.clone();
        tasks.push(tokio::spawn(async move {
            let key = user.user_id.clone();
            let ok = driver
                .call(
                    "rsvp.set",
                    &user,
                    json!({"eventId": id, "status": "interested"}),
                )
                .await
                .is_ok();
            if ok && let Ok(mut c) = committed.lock() {
                c.insert(key, Instant::now());
            }
            ok
        }));
        n += 1;
        next += interval;
        while let Some(Some(done)) = futures::FutureExt::now_or_never(tasks.next()) {
            if !matches!(done, Ok(true)) {
                errors += 1;
            }
        }
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    while let Some(done) = tasks.next().await {
        if !matches!(done, Ok(true)) {
            errors += 1;
        }
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut latency = histogram();
    let committed = committed.lock().map(|c| c.clone()).unwrap_or_default();
    let arrived = arrived.lock().map(|a| a.clone()).unwrap_or_default();
    let mut missing = 0u64;
    for (user, at) in &committed {
        match arrived.get(user) {
            // A message can beat the reply to the client; count that as ~0.
            Some(got) => {
                let _ =
                    latency.record(got.saturating_duration_since(*at).as_micros().max(1) as u64);
            }
            None => missing += 1,
        }
    }
    let mut extra = serde_json::Map::new();
    extra.insert("rate".into(), json!(rate));
    extra.insert("not_seen_within_2s".into(), json!(missing));
    Ok(Outcome {
        requests: n,
        errors,
        elapsed,
        latency,
        extra,
    })
}

fn report(args: &BenchArgs, o: &Outcome) {
    let throughput = o.requests as f64 / o.elapsed.as_secs_f64().max(1e-9);
    let rss = rss_mb(args.pid);
    let mut object = json!({
        "scenario": args.scenario.name(),
        "transport": match (args.transport, args.signature) {
            (Transport::Nats, _) => "nats",
            (Transport::Http, 2) => "http v2",
            (Transport::Http, _) => "http",
        },
        "concurrency": args.concurrency,
        "requests": o.requests,
        "errors": o.errors,
        "throughput_rps": (throughput * 10.0).round() / 10.0,
        "p50_us": o.latency.value_at_quantile(0.50),
        "p90_us": o.latency.value_at_quantile(0.90),
        "p99_us": o.latency.value_at_quantile(0.99),
        "max_us": o.latency.max(),
        "rss_mb": rss.map(|r| (r * 10.0).round() / 10.0),
        "seconds": (o.elapsed.as_secs_f64() * 100.0).round() / 100.0,
    });
    if let Value::Object(map) = &mut object {
        map.extend(o.extra.clone());
    }
    if args.json {
        println!("{object}");
        return;
    }
    println!(
        "{:<15} {:<5} c={:<4} requests={:<9} errors={:<6} {:>10.1} req/s  p50={}µs p90={}µs p99={}µs max={}µs rss={}",
        args.scenario.name(),
        object["transport"].as_str().unwrap_or(""),
        args.concurrency,
        o.requests,
        o.errors,
        throughput,
        o.latency.value_at_quantile(0.50),
        o.latency.value_at_quantile(0.90),
        o.latency.value_at_quantile(0.99),
        o.latency.max(),
        rss.map(|r| format!("{r:.1} MB"))
            .unwrap_or_else(|| "?".into()),
    );
    if !o.extra.is_empty() {
        println!("  {}", Value::Object(o.extra.clone()));
    }
}
