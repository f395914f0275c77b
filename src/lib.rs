//! turnbridge: moves e-invoice batches from a spool into Turnkey.
pub mod einvoice;
pub mod config;
pub mod durable;
pub mod pipeline;
pub mod spool;
pub mod store;
pub mod turnkey;
