//! Black-box tests of the service against the machine's real Postgres and
//! NATS JetStream. One binary, many modules: it links once.

mod authority;
mod cli;
mod cli_call;
mod health;
mod http_gateway;
mod helpers;
mod ops;
mod outbox;
mod schema;
mod startup;
mod nats_behaviour;
mod nats_hostile;
mod visibility;
mod capacity;
mod http_contract;
mod http_errors;
mod access_mode;
