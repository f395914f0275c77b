//! The integration tests: the real daemon, run as a subprocess on temporary folders and real
//! sockets on 127.0.0.1, in one test binary (a change to a shared helper rebuilds it once).
//!
//! Run one group with `cargo test --test it GROUP::` (for example `cargo test --test it crash::`).

mod common;
#[path = "fake/nextengine.rs"]
mod fake;

mod backup;
mod corpus;
mod corrections;
mod corrections_real;
mod crash;
mod daemon;
mod faults;
mod feedback;
mod fixtures;
mod hostile;
mod listener;
mod memory;
mod metrics;
mod nextengine;
mod retention;
mod rolls;
mod siege;
mod turnkey_real;
mod webhooks;
