//! Black-box tests of the service against the machine's real Postgres and
//! NATS JetStream. One binary, many modules: it links once.

mod access_mode;
mod activity_bridge;
mod activity_consumer;
mod admin_roles;
mod authority;
mod bench;
mod calendar;
mod capacity;
mod cli;
mod cli_call;
mod django_import;
mod feeds;
mod hardening;
mod health;
mod helpers;
mod http_contract;
mod http_errors;
mod http_gateway;
mod ics_import;
mod lists;
mod live;
mod nats_behaviour;
mod nats_hostile;
mod openapi;
mod ops;
mod outbox;
mod probes;
mod routing;
mod rsvp_rules;
mod scaling;
mod schema;
mod schemathesis;
mod startup;
mod tenant_admin;
mod visibility;
