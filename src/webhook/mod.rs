//! Webhooks. Inbound: the company system's pushes ([`inbound`]). Outbound: the endpoint
//! registry, signing and the dead-letter queue ([`outbound`]), and the worker that delivers
//! the events outbox ([`deliver`]), where deliveries may go ([`policy`]), and which
//! deliveries a listing or a resend is about ([`filter`]).

pub mod deliver;
pub mod filter;
pub mod inbound;
pub mod outbound;
pub mod policy;
