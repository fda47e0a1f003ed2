//! The `events-svc` command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, DatabaseConfig, Settings, TelemetryConfig};
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

    #[command(flatten)]
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
            telemetry::init(&telemetry_config);
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
            telemetry::init(&telemetry_config);
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
    }
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
