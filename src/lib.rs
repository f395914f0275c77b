//! turnbridge: moves e-invoice batches from a spool into Turnkey.
pub mod einvoice;
