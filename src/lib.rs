//! UpdSpace Events: a message-driven events service. Scope actors own the
//! state of each (tenant, scope); Postgres is the source of truth; a
//! transactional outbox feeds JetStream; an axum gateway serves the BFF.

pub mod actors;
pub mod app;
pub mod auth;
pub mod authz;
pub mod backoff;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod encoding;
pub mod error;
pub mod http;
pub mod names;
pub mod startup;
pub mod store;
pub mod subjects;
pub mod telemetry;
