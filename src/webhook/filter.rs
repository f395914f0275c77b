//! Which deliveries a listing or a resend is about.
//!
//! One type for every front: `GET /api/v1/deliveries`, `POST /api/v1/dlq/resend`,
//! `turnbridge dlq list` and `turnbridge dlq resend` build the same [`DeliveryFilter`], and
//! its time bounds are [`Timestamp`]s, so a bound in any UTC offset means the instant it
//! names.

use crate::timestamp::Timestamp;

/// Deliveries named by id, or by endpoint, creation time and state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryFilter {
    /// Named deliveries (looked up one by one, never cut by a listing's limit).
    pub ids: Vec<String>,
    pub endpoint: Option<String>,
    /// Created at or after this instant.
    pub since: Option<Timestamp>,
    /// Created at or before this instant.
    pub until: Option<Timestamp>,
    /// A delivery state (`pending`, `succeeded`, `dead`, `cancelled`); listings default to
    /// dead ones, resends only ever take dead ones.
    pub state: Option<String>,
}

/// A resend asked for with nothing to say which deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("name delivery ids, an endpoint or a time range, or ask for all dead deliveries")]
pub struct NothingNamed;

impl DeliveryFilter {
    /// Whether it narrows the deliveries at all (by id, endpoint or time).
    pub fn names_something(&self) -> bool {
        !self.ids.is_empty()
            || self.endpoint.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    /// The filter of a resend: it must name something unless `all` is asked for, so a bare
    /// resend never queues the whole dead-letter queue by accident.
    pub fn for_resend(self, all: bool) -> Result<DeliveryFilter, NothingNamed> {
        if all || self.names_something() {
            Ok(self)
        } else {
            Err(NothingNamed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resend_names_something_or_asks_for_all() {
        assert_eq!(
            DeliveryFilter::default().for_resend(false),
            Err(NothingNamed)
        );
        assert!(DeliveryFilter::default().for_resend(true).is_ok());
        let by_time = DeliveryFilter {
            since: Some("2026-12-01T08:00:00+08:00".parse().unwrap()),
            ..Default::default()
        };
        assert!(by_time.for_resend(false).is_ok());
        // A state alone narrows nothing a resend could use (it takes dead ones anyway).
        let by_state = DeliveryFilter {
            state: Some("dead".into()),
            ..Default::default()
        };
        assert_eq!(by_state.for_resend(false), Err(NothingNamed));
    }
}
