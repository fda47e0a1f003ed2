//! The `events-svc` command line.

mod access;
mod bridge;
mod import;
mod ops;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::Op;
use crate::client::{ClientError, EventsClient, Identity};
use crate::config::{
    Config, ConfigError, DatabaseConfig, HmacConfig, NatsConfig, Settings, TelemetryConfig,
};
use crate::encoding::Encoding;
use crate::startup::{Application, shutdown_signal};
use crate::{store, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "events-svc",
    version,
    about = "UpdSpace Events: events, RSVP with capacity and waitlist, attendance and calendar export, \
             served over NATS request/reply and HTTP, with domain events published to JetStream.",
    long_about = None,
    after_help = "Every setting can be given as a flag or as the environment variable shown next to it. \
                  Without a subcommand, `serve` runs."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten, next_help_heading = "Settings (flag or environment variable)")]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: NATS API, outbox publisher and HTTP gateway (the default).
    Serve,
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
    /// Exit 0 if the local service answers GET /health (for container health checks).
    Healthcheck {
        /// URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:8005/health")]
        url: String,
    },
    /// Send one signed request to the NATS API and print the reply.
    #[command(
        long_about = "Send one request to a running events-svc over NATS, signed with HMAC v2 \
                      with the configured secret (BFF_INTERNAL_HMAC_SECRET, or the development \
                      secret when EVENTS_DEV=1), and print the reply on stdout: pretty JSON, or \
                      the raw calendar for event.ics.\n\n\
                      Exit status: 0 success; 1 error reply (the error envelope is still printed \
                      on stdout, a one-line summary on stderr); 2 usage problem; 69 no service \
                      answers (or NATS cannot be reached); 78 unusable setting.",
        after_help = CALL_EXAMPLES
    )]
    Call(CallArgs),
    /// Inspect and repair the transactional outbox.
    #[command(subcommand)]
    Outbox(ops::OutboxCommand),
    /// Delete published outbox rows older than the retention period.
    PurgeRetention {
        /// Days to keep; defaults to EVENTS_RETENTION_PUBLISHED_OUTBOX_DAYS.
        #[arg(long, value_name = "DAYS")]
        published_outbox_days: Option<u32>,
    },
    /// Export or erase one user's data in one tenant (prints the original service's JSON).
    Dsar(ops::DsarArgs),
    /// Roles and role bindings: bootstrap the roles in Access, grant,
    /// revoke, list (local tables or Access, per EVENTS_AUTHZ; audited).
    #[command(subcommand)]
    Access(access::AccessCommand),
    /// The Activity bridge: where its consumer stands in the stream.
    #[command(subcommand)]
    Bridge(bridge::BridgeCommand),
    /// Bring data over from another system (the Django service) for the cut-over.
    #[command(subcommand)]
    Import(import::ImportCommand),
}

const CALL_EXAMPLES: &str = "\
Examples (T and U stand for a tenant and a user UUID):
  events-svc call event.create --tenant-id $T --user-id $U --flags '{\"system_admin\":true}' \\
    '{\"scopeType\":\"TENANT\",\"scopeId\":\"'$T'\",\"title\":\"Board games\",
      \"startsAt\":\"2030-01-10T18:00:00Z\",\"endsAt\":\"2030-01-10T21:00:00Z\",\"capacity\":10}'
  events-svc call rsvp.set --tenant-id $T --user-id $U '{\"eventId\":\"<id>\",\"status\":\"going\"}'
  events-svc call event.list --tenant-id $T --user-id $U '{\"limit\":10}'
  echo '{\"id\":\"<id>\"}' | events-svc call event.ics --tenant-id $T --user-id $U -

See docs/nats-api.md for every operation, its fields and its replies.";

/// `events-svc call`.
#[derive(Debug, Args)]
struct CallArgs {
    /// The operation: the last tokens of the subject {EVENTS_SUBJECT_PREFIX}.v1.<OP>.
    #[arg(value_name = "OP", value_parser = clap::builder::PossibleValuesParser::new(Op::ALL.map(Op::name)))]
    op: String,

    /// Tenant of the caller (X-Tenant-Id), a UUID.
    #[arg(long, value_name = "UUID", value_parser = parse_uuid_arg)]
    tenant_id: String,

    /// The calling user (X-User-Id), a UUID.
    #[arg(long, value_name = "UUID", value_parser = parse_uuid_arg)]
    user_id: String,

    /// Tenant slug (X-Tenant-Slug); it appears in calendar UIDs.
    #[arg(long, value_name = "SLUG", default_value = "acme")]
    tenant_slug: String,

    /// Master flags (X-Master-Flags), a JSON object, e.g. '{"system_admin":true}'.
    #[arg(long, value_name = "JSON", value_parser = parse_flags_arg)]
    flags: Option<String>,

    /// X-Request-Id; a fresh UUID when absent. Repeat one to retry a create
    /// safely: the service answers with the first result.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,

    /// Send the body as JSON (application/json) instead of msgpack; the
    /// reply comes back in the same encoding. The output is JSON either way.
    #[arg(long)]
    json: bool,

    /// How long to wait for the reply, e.g. 10s, 1500ms, 1m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout_arg)]
    timeout: Duration,

    /// The request body, a JSON object; `-` reads it from stdin. Absent: {}.
    #[arg(value_name = "BODY")]
    body: Option<String>,
}

/// sysexits' EX_USAGE, as clap exits for bad arguments.
const EXIT_USAGE: u8 = 2;
/// sysexits' EX_UNAVAILABLE: nothing answers.
const EXIT_UNAVAILABLE: u8 = 69;
/// How long `call` keeps trying to reach NATS.
const CALL_CONNECT_GIVE_UP: Duration = Duration::from_secs(5);

fn parse_uuid_arg(text: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(text.trim())
        .map(|_| text.trim().to_string())
        .map_err(|_| format!("'{text}' is not a UUID"))
}

fn parse_flags_arg(text: &str) -> Result<String, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        // Sent compact: a header must not contain line breaks.
        Ok(value @ serde_json::Value::Object(_)) => Ok(value.to_string()),
        _ => Err(format!(
            "'{text}' is not a JSON object; write e.g. '{{\"system_admin\":true}}'"
        )),
    }
}

fn parse_timeout_arg(text: &str) -> Result<Duration, String> {
    match crate::config::parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "'{text}' is not a duration; write e.g. 10s, 1500ms or 1m"
        )),
    }
}

/// Exit code for an unusable setting (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("events-svc: configuration error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("events-svc: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let telemetry_config = match TelemetryConfig::load(&cli.settings) {
        Ok(t) => t,
        Err(e) => return config_error(&e),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = match Config::load(&cli.settings) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let _telemetry = telemetry::init(&telemetry_config);
            let app = match Application::build(config).await {
                Ok(app) => app,
                Err(e) => return failure(&e),
            };
            match app.run_until(shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failure(&e),
            }
        }
        Command::Migrate => {
            let config = match DatabaseConfig::load(&cli.settings) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let _telemetry = telemetry::init(&telemetry_config);
            let pool = match store::connect_with_retry(&config, Some(Duration::from_secs(30))).await
            {
                Ok(p) => p,
                Err(e) => return failure(&e),
            };
            match store::migrate(&pool).await {
                Ok(()) => {
                    let applied = store::MIGRATOR.iter().count();
                    println!(
                        "database '{}' is up to date ({applied} migrations)",
                        config.database_name()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => failure(&e),
            }
        }
        Command::Healthcheck { url } => healthcheck(&url).await,
        Command::Call(args) => call(&cli.settings, args).await,
        Command::Outbox(command) => ops::outbox(&cli.settings, command).await,
        Command::PurgeRetention {
            published_outbox_days,
        } => ops::purge_retention(&cli.settings, published_outbox_days).await,
        Command::Dsar(args) => ops::dsar(&cli.settings, args).await,
        Command::Access(command) => access::run(&cli.settings, command).await,
        Command::Import(command) => import::run(&cli.settings, command).await,
        Command::Bridge(command) => bridge::run(&cli.settings, command).await,
    }
}

/// `EVENTS_DEV`, read with the same words `serve` accepts.
/// Tells running instances which events a command changed outside them
/// (an import, a DSAR erase), with the change notes instances send each
/// other, so no cache hides the change. Without NATS their caches catch
/// up within the cache TTL; said so, not fatal.
async fn announce_changes(
    settings: &Settings,
    changed: &std::collections::HashMap<crate::actors::ScopeKey, Vec<crate::domain::EventId>>,
) {
    if changed.is_empty() {
        return;
    }
    let Ok(config) = NatsConfig::load(settings) else {
        return;
    };
    let subjects = crate::names::Subjects::new(config.subject_prefix.clone());
    let nats = match crate::subjects::connect_with_retry(&config, Some(Duration::from_secs(5)))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            eprintln!(
                "events-svc: {e}: running instances could not be told what changed; their caches catch up within their TTL"
            );
            return;
        }
    };
    let origin = format!("cli-{}", uuid::Uuid::new_v4());
    for (key, ids) in changed {
        for chunk in ids.chunks(500) {
            let note = crate::actors::registry::change_note(&origin, key, chunk);
            let _ = nats.publish(subjects.internal_changes(), note.into()).await;
        }
    }
    let _ = nats.flush().await;
}

fn usage(message: &str) -> ExitCode {
    eprintln!("events-svc call: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// The request body: the argument, stdin for `-`, `{}` when absent.
fn read_body(arg: Option<&str>) -> Result<serde_json::Value, String> {
    let text = match arg {
        None => return Ok(serde_json::json!({})),
        Some("-") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read BODY from stdin: {e}"))?;
            text
        }
        Some(text) => text.to_string(),
    };
    if text.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err("BODY must be a JSON object, e.g. '{\"id\":\"…\"}'".to_string()),
        Err(e) => Err(format!("BODY is not valid JSON: {e}")),
    }
}

async fn call(settings: &Settings, args: CallArgs) -> ExitCode {
    let Some(op) = Op::from_name(&args.op) else {
        let names: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
        return usage(&format!(
            "unknown operation '{}'; use one of: {}",
            args.op,
            names.join(", ")
        ));
    };
    let body = match read_body(args.body.as_deref()) {
        Ok(body) => body,
        Err(message) => return usage(&message),
    };
    let dev = match crate::config::dev_mode(settings) {
        Ok(dev) => dev,
        Err(e) => return config_error(&e),
    };
    let hmac = match HmacConfig::load(settings, dev) {
        Ok(h) => h,
        Err(e) => return config_error(&e),
    };
    let nats_config = match NatsConfig::load(settings) {
        Ok(n) => n,
        Err(e) => return config_error(&e),
    };
    let Some(secret) = hmac.secrets.first() else {
        return config_error(&ConfigError {
            var: "BFF_INTERNAL_HMAC_SECRET",
            message: "is not set".into(),
        });
    };
    let nats = match crate::subjects::connect_with_retry(&nats_config, Some(CALL_CONNECT_GIVE_UP))
        .await
    {
        Ok(nats) => nats,
        Err(e) => {
            eprintln!("events-svc call: {e}; start nats-server (nats-server -js) or set NATS_URL");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let encoding = if args.json {
        Encoding::Json
    } else {
        Encoding::Msgpack
    };
    let mut client =
        EventsClient::new(nats, &nats_config.subject_prefix, secret).with_encoding(encoding);
    client.timeout = args.timeout;
    let who = Identity {
        tenant_id: args.tenant_id,
        tenant_slug: args.tenant_slug,
        user_id: args.user_id,
        master_flags: args.flags,
    };
    let request_id = args
        .request_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let reply = match client.call_as(op.name(), &who, &body, &request_id).await {
        Ok(reply) => reply,
        Err(ClientError::NoResponders(subject)) => {
            eprintln!(
                "events-svc call: no events service answers on {subject} (NATS at {}). Start \
                 one with the same NATS_URL (events-svc serve, or EVENTS_DEV=1 cargo run), or \
                 set EVENTS_SUBJECT_PREFIX to the prefix it serves (now '{}').",
                crate::config::redact(&nats_config.url),
                nats_config.subject_prefix,
            );
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
        Err(ClientError::Timeout(after)) => {
            eprintln!(
                "events-svc call: no reply on {} within {after:?} (request id {request_id}). \
                 Check that events-svc is running and healthy, or raise --timeout. A server \
                 that lets each user read only its own replies drops them unless \
                 NATS_INBOX_PREFIX is that user's (now '{}'; `_INBOX_bff` for the bff user of \
                 nats/nats-server.conf). A write may or may not have been applied; retrying \
                 with --request-id {request_id} is safe for event.create.",
                client.subject(op.name()),
                nats_config.inbox_prefix,
            );
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
        Err(e) => {
            eprintln!("events-svc call: {e}");
            return ExitCode::FAILURE;
        }
    };
    let is_error = reply.status >= 400 || reply.code.is_some();
    let output = match &reply.body {
        // A calendar, printed as received.
        serde_json::Value::String(text) if !is_error => text.clone(),
        body => {
            let mut pretty =
                serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
            pretty.push('\n');
            pretty
        }
    };
    // A closed stdout (`| head`) is not worth a panic.
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, output.as_bytes());
    let _ = std::io::Write::flush(&mut stdout);
    if !is_error {
        return ExitCode::SUCCESS;
    }
    let error = &reply.body["error"];
    let code = reply
        .code
        .clone()
        .or_else(|| error["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| "ERROR".into());
    let message = error["message"].as_str().unwrap_or("");
    eprintln!("error: {} {code} {message}", reply.status);
    ExitCode::FAILURE
}

fn failure(e: &dyn std::error::Error) -> ExitCode {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    tracing::error!(error = %message, "events-svc failed");
    eprintln!("events-svc: {message}");
    ExitCode::FAILURE
}

/// A minimal HTTP/1.1 GET so the container image needs no curl.
async fn healthcheck(url: &str) -> ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(parsed) = url::Url::parse(url) else {
        eprintln!("healthcheck: '{url}' is not a URL");
        return ExitCode::FAILURE;
    };
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            parsed.path()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(response)) if response.starts_with(b"HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(Ok(response)) => {
            let line = String::from_utf8_lossy(&response);
            eprintln!(
                "healthcheck: {}",
                line.lines().next().unwrap_or("empty response")
            );
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("healthcheck: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("healthcheck: timed out");
            ExitCode::FAILURE
        }
    }
}
