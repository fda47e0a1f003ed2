//! Wiring: builds the running service from a validated [`Config`].

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::actors::outbox::{OutboxMsg, Publisher};
use crate::actors::{Registry, Shared};
use crate::app::{App, AppParts};
use crate::auth::{SignatureVersion, Verifier};
use crate::authz::{
    AccessAuthorizer, AccessRoleAdmin, AccessSettings, Authorizer, LocalAuthorizer, LocalRoleAdmin,
    RoleAdmin,
};
use crate::config::{AuthzMode, Config};
use crate::http;
use crate::store::{self, StoreError};
use crate::subjects::{self, NatsError, Subjects};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot start the actors: {0}")]
    Actors(String),
    #[error(transparent)]
    Authz(#[from] crate::authz::access::AccessSetupError),
}

pub use crate::backoff::Backoff;

pub use crate::http::AppState;

/// The service, built and bound, not yet serving.
pub struct Application {
    state: AppState,
    listener: TcpListener,
    /// The NATS subscription tasks; aborting them unsubscribes.
    nats_tasks: Vec<tokio::task::JoinHandle<()>>,
    registry: Registry,
    outbox: ractor::ActorRef<OutboxMsg>,
    /// The Activity bridge, when `ACTIVITY_SERVICE_URL` is set.
    bridge: Option<std::sync::Arc<crate::actors::bridge::Bridge>>,
    /// Makes the occurrences of recurring events as time passes.
    extender: std::sync::Arc<crate::actors::extender::Extender>,
    /// The reminder scheduler (it schedules while it holds its lock).
    reminders: std::sync::Arc<crate::actors::reminders::Scheduler>,
}

impl Application {
    /// Connects to Postgres and NATS (waiting for them if needed), migrates,
    /// ensures the stream, registers the NATS micro service and binds HTTP.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        if config.hmac.using_dev_secret {
            tracing::warn!(
                "EVENTS_DEV=1 and BFF_INTERNAL_HMAC_SECRET is unset: using the development secret \
                 'dev-internal-hmac'. Anyone can sign requests. Never run production like this."
            );
        }
        let db = store::connect_with_retry(&config.database, None).await?;
        if config.database.auto_migrate {
            store::migrate(&db).await?;
            tracing::info!("database schema is up to date");
        }
        let nats = subjects::connect_with_retry(&config.nats, None).await?;
        subjects::ensure_stream_with_retry(
            &nats,
            &config.stream,
            &config.nats.subject_prefix,
            config.stream.startup_wait,
        )
        .await?;
        let replay_bucket = subjects::replays::ReplayBucket::ensure(
            &nats,
            &config.stream,
            Verifier::DEFAULT_WINDOW_SECS,
            config.stream.startup_wait,
        )
        .await?;
        let outbox_wakeup = std::sync::Arc::new(tokio::sync::Notify::new());
        let metrics = crate::telemetry::metrics::Metrics::new();
        crate::telemetry::metrics::spawn_refresher(metrics.clone(), db.clone());
        let subject_names = Subjects::new(config.nats.subject_prefix.clone());
        let listing = std::sync::Arc::new(crate::actors::listing::Listing::default());
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let registry = Registry::start(Shared {
            metrics: metrics.clone(),
            db: db.clone(),
            subjects: subject_names.clone(),
            nats: nats.clone(),
            config: config.actors.clone(),
            outbox_wakeup: outbox_wakeup.clone(),
            instance: instance.clone(),
            batches: Default::default(),
            batched_commands: Default::default(),
            largest_batch: Default::default(),
            peer_seen_ms: Default::default(),
            created: std::time::Instant::now(),
            listing: listing.clone(),
            rsvp_budget: crate::actors::RsvpBudget::new(config.actors.max_cached_rsvps),
            peers: crate::actors::owners::Peers::new(instance, config.actors.peer_grace),
            secrets: config.hmac.secrets.clone(),
            left: Default::default(),
            forwarder: Default::default(),
        })
        .await
        .map_err(|e| StartupError::Actors(e.to_string()))?;
        let min_version = if config.hmac.min_version >= 2 {
            SignatureVersion::V2
        } else {
            SignatureVersion::V1
        };
        let (authorizer, access_authorizer, role_admin) = match config.authz.mode {
            AuthzMode::Local => {
                let local = std::sync::Arc::new(LocalAuthorizer::new(db.clone()));
                let admin: std::sync::Arc<dyn RoleAdmin> =
                    std::sync::Arc::new(LocalRoleAdmin::new(db.clone(), local.clone()));
                (local as std::sync::Arc<dyn Authorizer>, None, admin)
            }
            AuthzMode::Access => {
                let settings = AccessSettings::from_config(&config)
                    .ok_or(crate::authz::access::AccessSetupError::Missing)?;
                let access = std::sync::Arc::new(AccessAuthorizer::new(settings)?);
                access.report_to(metrics.clone());
                tracing::info!(
                    access = %config.authz.access_base_url.as_ref().map(|u| u.as_str()).unwrap_or(""),
                    portal = %config.authz.portal_service_url,
                    "authorization: access mode (Access + Portal)"
                );
                let admin: std::sync::Arc<dyn RoleAdmin> =
                    std::sync::Arc::new(AccessRoleAdmin::new(access.clone(), db.clone()));
                (
                    access.clone() as std::sync::Arc<dyn Authorizer>,
                    Some(access),
                    admin,
                )
            }
        };
        let live = crate::subjects::live::LiveFeed::start(
            async_nats::jetstream::new(nats.clone()),
            &config.stream.name,
            subject_names.stream_filter(),
            config.live.buffer,
        );
        let app = App::new(AppParts {
            metrics: metrics.clone(),
            db: db.clone(),
            registry: registry.clone(),
            authorizer,
            verifier: Verifier::new(config.hmac.secrets.clone()).with_min_version(min_version),
            replay_bucket,
            authz_max_calls: config.authz.max_calls,
            replay_memory: config.replay_memory,
            feed_rate_per_minute: config.feed_rate_per_minute,
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
            replay_window_secs: Verifier::DEFAULT_WINDOW_SECS,
            role_admin,
            live: Some(crate::app::live::Live::new(live, config.live.clone())),
            series: config.series,
            rsvp: config.rsvp.clone(),
        });
        let (nats_tasks, _micro) =
            subjects::endpoints::serve(app.clone(), nats.clone(), &subject_names).await?;
        store::spawn_housekeeping(db.clone());
        let publisher = std::sync::Arc::new(
            Publisher::new(
                store::connect_options(&config.database)?,
                nats.clone(),
                config.outbox.clone(),
            )
            .with_metrics(metrics.clone()),
        );
        let outbox = crate::actors::outbox::start_actor(publisher.clone(), outbox_wakeup.clone())
            .await
            .map_err(StartupError::Actors)?;
        let bridge = crate::actors::bridge::Bridge::new(crate::actors::bridge::BridgeParts {
            nats: nats.clone(),
            stream: config.stream.name.clone(),
            filter: subject_names.stream_filter(),
            db: db.clone(),
            lock_options: store::connect_options(&config.database)?,
            secret: config.hmac.secrets.first().cloned().unwrap_or_default(),
            config: config.activity.clone(),
            metrics: metrics.clone(),
        });
        if let Some(bridge) = &bridge {
            bridge.spawn();
        }
        let extender = crate::actors::extender::Extender::new(
            db.clone(),
            store::connect_options(&config.database)?,
            subject_names.clone(),
            config.series,
            outbox_wakeup.clone(),
            listing,
        );
        extender.spawn();
        let reminders =
            crate::actors::reminders::Scheduler::new(crate::actors::reminders::SchedulerParts {
                db: db.clone(),
                lock_options: store::connect_options(&config.database)?,
                subjects: subject_names.clone(),
                clock: config.rsvp.clock,
                poll: config.rsvp.reminder_poll,
                outbox_wakeup: outbox_wakeup.clone(),
            });
        reminders.spawn();
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: config.http_addr,
                source,
            })?;
        let state = AppState {
            config: std::sync::Arc::new(config),
            db,
            nats,
            app,
            outbox_wakeup,
            publisher,
            metrics,
            access_authorizer,
        };
        Ok(Self {
            state,
            listener,
            nats_tasks,
            registry,
            outbox,
            bridge,
            extender,
            reminders,
        })
    }

    /// The bound HTTP address (useful when the configured port is 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.http_addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains and stops.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let addr = self.http_addr();
        tracing::info!(%addr, subject_prefix = %self.state.config.nats.subject_prefix, "events service is up");
        http::probes::spawn_ready_refresher(self.state.clone());
        // Open live streams never finish on their own; the server waits for
        // every response, so they end when shutdown begins.
        let live = self.state.app.live_feed().cloned();
        let shutdown = async move {
            shutdown.await;
            if let Some(live) = live {
                live.close();
            }
        };
        let served = http::serve(self.listener, self.state.clone(), shutdown).await;
        self.outbox.stop(Some("shutdown".into()));
        if let Some(bridge) = &self.bridge {
            bridge.stop();
        }
        self.extender.stop();
        self.reminders.stop();
        self.state.publisher.step_down().await;
        // The others stop handing this instance writes; those on their way
        // find no subscriber, and are applied where they arrived.
        self.registry.leave().await;
        // Stop taking requests; the ones already taken finish.
        for task in &self.nats_tasks {
            task.abort();
        }
        if let Err(e) = self.state.nats.flush().await {
            tracing::debug!(error = %e, "final NATS flush failed");
        }
        self.state.db.close().await;
        tracing::info!("events service stopped");
        served.map_err(StartupError::Serve)
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
