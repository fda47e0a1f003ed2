//! The service on a real three-node NATS cluster (`nats/cluster/`) with an R3
//! stream, under faults: nodes killed and restarted, the whole cluster
//! restarted, two instances on different nodes with the outbox publisher
//! killed mid-backlog, and the Postgres connection cut. Writers keep calling
//! throughout and retry as real callers do; afterwards the stream and the
//! database must hold every acknowledged change exactly once, in order.
//!
//! The tests take turns (one cluster at a time) and print what they measured:
//! `cargo test --test cluster -- --nocapture`.

#[path = "../api/helpers.rs"]
mod helpers;

mod harness;
mod instances;
mod load;
mod nodes;
mod postgres;
mod restart;
