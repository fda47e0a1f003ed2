//! UpdSpace Events: a message-driven events service. Scope actors own the
//! state of each (tenant, scope); Postgres is the source of truth; a
//! transactional outbox feeds JetStream; an axum gateway serves the BFF.
//!
//! The layers and the request path are described in `docs/architecture.md`.
//! Public modules are what the binaries (`events-svc`, `events-bench`) and
//! the black-box tests use; the others are the crate's own, so the compiler
//! reports what nothing uses.

pub mod actors;
pub mod app;
pub mod auth;
pub mod authz;
pub(crate) mod backoff;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod encoding;
pub(crate) mod error;
pub mod http;
pub mod import;
pub(crate) mod names;
pub mod startup;
pub mod store;
pub mod subjects;
pub mod telemetry;
