//! Webhooks. Inbound for now: the company system's pushes ([`inbound`]). Outbound delivery of
//! the events outbox comes later.

pub mod inbound;
