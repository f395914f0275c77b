//! The time rules each message is checked against as it is read: a document dated in the
//! future is refused, and so is a cancel (F0501) made after its invoice's period closed for
//! cancels. The rules themselves, with their sources, are in [`super::deadline`]; this applies
//! them to a checked message and reports a problem on the field that carries the date.
//!
//! Both are part of [`super::check_batch`], so `turnbridge validate` and the daemon agree. The
//! cancel rule reads only the message's own dates; the future rule reads "now", which the
//! caller passes ([`TimeRules::now`]), so the check stays pure.

use chrono::{Duration, NaiveDateTime};

use super::deadline::{self, CancelRefused};
use super::model::{Message, PlatformRule, Problem};
use super::raw::RawMessage;

/// How the time rules apply (from `[einvoice]`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeRules {
    /// Taiwan time now; `None` checks no date against the clock.
    pub now: Option<NaiveDateTime>,
    /// How far after `now` a document may be dated (clocks a little apart).
    pub future_tolerance: Duration,
    /// Whether a cancel after its period's filing deadline is refused
    /// (`einvoice.refuse_late_cancels`).
    pub refuse_late_cancels: bool,
}

impl Default for TimeRules {
    /// No clock; late cancels refused.
    fn default() -> TimeRules {
        TimeRules {
            now: None,
            future_tolerance: Duration::minutes(5),
            refuse_late_cancels: true,
        }
    }
}

/// Every time problem of a checked message; `raw` supplies the rows and field spellings.
pub fn check(message: &Message, raw: &RawMessage, rules: &TimeRules) -> Vec<Problem> {
    let mut out = Vec::new();
    let at = |key: &str| match raw.get(key) {
        Some(c) => (c.row, c.display.clone(), c.value.clone()),
        None => (raw.row, raw.display_of(key), String::new()),
    };
    if let Some(now) = rules.now {
        if let Err(future) = deadline::check_not_future(message, now, rules.future_tolerance) {
            let (row, field, _) = at(future.field);
            let mut p = future.into_problem(row);
            p.field = field;
            out.push(p);
        }
    }
    if let (Message::Cancel(m), true) = (message, rules.refuse_late_cancels) {
        // A cancel dated before its invoice is the `dates` rule's (super::rules).
        match deadline::check_cancel(m.invoice_date.0, m.cancel_date.0) {
            Err(e @ CancelRefused::PeriodClosed { .. }) => {
                let (row, field, value) = at("CancelDate");
                out.push(Problem {
                    rule: Some(PlatformRule::CancelPeriod),
                    row,
                    field,
                    value,
                    reason: format!(
                        "is too late to cancel: {e} (the period's VAT filing deadline, 加值型及非加值型營業稅法 §35; after it, a cancel needs the tax office's approval)"
                    ),
                });
            }
            Ok(())
            | Err(CancelRefused::BeforeInvoice { .. })
            | Err(CancelRefused::NoPeriod(..)) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::einvoice::{check_batch, ReadOptions};

    const CANCEL: &str = "MessageType,CancelInvoiceNumber,InvoiceDate,BuyerId,SellerId,CancelDate,CancelTime,CancelReason\n";

    fn problems(csv: &str, time: TimeRules) -> Vec<Problem> {
        let opts = ReadOptions {
            time,
            ..ReadOptions::for_tests()
        };
        let v = check_batch("a.csv", csv.as_bytes(), &opts).unwrap();
        v.rejected.into_iter().flat_map(|r| r.problems).collect()
    }

    #[test]
    fn a_cancel_after_the_filing_deadline_is_refused_naming_the_rule() {
        // July–August 2026 closes for cancels on 15 September.
        let on_time =
            format!("{CANCEL}F0501,AB00000001,20260701,0000000000,28080623,20260915,23:59:59,r\n");
        assert!(problems(&on_time, TimeRules::default()).is_empty());
        let late =
            format!("{CANCEL}F0501,AB00000001,20260701,0000000000,28080623,20260916,00:00:00,r\n");
        let p = problems(&late, TimeRules::default());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (p[0].row, p[0].field.as_str(), p[0].value.as_str()),
            (2, "CancelDate", "20260916")
        );
        assert_eq!(p[0].rule, Some(PlatformRule::CancelPeriod));
        assert!(p[0].reason.contains("period 11508"), "{}", p[0].reason);
        assert!(p[0].reason.contains("allowance (G0401)"), "{}", p[0].reason);
        // Turned off (a cancel the tax office approved), it goes through.
        let off = TimeRules {
            refuse_late_cancels: false,
            ..TimeRules::default()
        };
        assert!(problems(&late, off).is_empty());
    }

    #[test]
    fn a_document_dated_in_the_future_is_refused_on_its_date_field() {
        let now = NaiveDateTime::parse_from_str("20261204 10:00:00", "%Y%m%d %H:%M:%S").unwrap();
        let rules = TimeRules {
            now: Some(now),
            ..TimeRules::default()
        };
        let soon =
            format!("{CANCEL}F0501,AB00000001,20261204,0000000000,28080623,20261204,10:04:59,r\n");
        assert!(
            problems(&soon, rules.clone()).is_empty(),
            "within the tolerance"
        );
        let later =
            format!("{CANCEL}F0501,AB00000001,20261204,0000000000,28080623,20261204,10:05:01,r\n");
        let p = problems(&later, rules.clone());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (p[0].field.as_str(), p[0].value.as_str()),
            ("CancelDate", "20261204 10:05:01")
        );
        assert!(p[0].reason.contains("in the future"), "{}", p[0].reason);
        // Without a clock nothing is in the future.
        assert!(problems(&later, TimeRules::default()).is_empty());
    }
}
