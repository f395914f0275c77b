//! Webhooks. Inbound: the company system's pushes ([`inbound`]). Outbound: the endpoint
//! registry, signing and the dead-letter queue ([`outbound`]), and the worker that delivers
//! the events outbox ([`deliver`]), and where deliveries may go ([`policy`]).

pub mod deliver;
pub mod inbound;
pub mod outbound;
pub mod policy;
