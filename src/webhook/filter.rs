//! Which deliveries a resend may take.
//!
//! One filter for every front: `GET /api/v1/deliveries`, `POST /api/v1/dlq/resend`,
//! `turnbridge dlq list` and `turnbridge dlq resend` build the same store [`Filter`], whose
//! time bounds are store [`Timestamp`](crate::store::Timestamp)s (any UTC offset means the
//! instant it names) and whose state is a typed
//! [`DeliveryState`](crate::store::deliveries::DeliveryState).

pub use crate::store::deliveries::Filter;

/// A resend asked for with nothing to say which deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("name delivery ids, an endpoint or a time range, or ask for all dead deliveries")]
pub struct NothingNamed;

/// Whether `f` narrows the deliveries at all (by id, endpoint or time); a state alone does
/// not (a resend takes dead ones anyway).
pub fn names_something(f: &Filter) -> bool {
    !f.ids.is_empty() || f.endpoint.is_some() || f.since.is_some() || f.until.is_some()
}

/// The filter of a resend: it must name something unless `all` is asked for, so a bare
/// resend never queues the whole dead-letter queue by accident.
pub fn for_resend(f: Filter, all: bool) -> Result<Filter, NothingNamed> {
    if all || names_something(&f) {
        Ok(f)
    } else {
        Err(NothingNamed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::deliveries::DeliveryState;

    #[test]
    fn a_resend_names_something_or_asks_for_all() {
        assert_eq!(for_resend(Filter::default(), false), Err(NothingNamed));
        assert!(for_resend(Filter::default(), true).is_ok());
        let by_time = Filter {
            since: Some("2026-12-01T08:00:00+08:00".parse().unwrap()),
            ..Default::default()
        };
        assert!(for_resend(by_time, false).is_ok());
        let by_state = Filter {
            state: Some(DeliveryState::Dead),
            ..Default::default()
        };
        assert_eq!(for_resend(by_state, false), Err(NothingNamed));
    }
}
