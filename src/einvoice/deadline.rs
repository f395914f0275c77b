//! The time rules of an invoice's life: upload deadlines, how long a cancel (F0501) stays
//! possible, and invoices dated in the future.
//!
//! Every rule is measured from the document's own date and time (Taiwan time, as written in
//! the message), never from when turnbridge saw it. Each rule names its source. The research
//! notes (mig41.md §4) cover the periods and the blank-number report; they say nothing of
//! upload limits or of how long a cancel stays possible, so those rules cite the statutes and
//! the tax offices' own notices.
//!
//! All functions are pure: the caller passes "now" ([`taiwan_time`] turns a UTC instant into
//! the wall-clock time the invoice dates are written in).

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use thiserror::Error;

use super::model::{Message, Problem};
use super::period::{Period, PeriodError};
use super::types::BuyerId;

/// Taiwan's offset from UTC: +08:00 all year (no daylight saving since 1979).
const TAIWAN_OFFSET_SECS: i32 = 8 * 3600;

/// The wall-clock time in Taiwan at a UTC instant: what invoice dates and times are written in.
pub fn taiwan_time(at: DateTime<Utc>) -> NaiveDateTime {
    let offset = FixedOffset::east_opt(TAIWAN_OFFSET_SECS).expect("+08:00 is a valid offset");
    at.with_timezone(&offset).naive_local()
}

/// Whom the invoice is for, which decides its upload limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuyerKind {
    /// A business buyer with a 統一編號 (B2B).
    Business,
    /// A consumer, `0000000000` (B2C).
    Consumer,
}

impl From<&BuyerId> for BuyerKind {
    fn from(b: &BuyerId) -> BuyerKind {
        if b.is_consumer() {
            BuyerKind::Consumer
        } else {
            BuyerKind::Business
        }
    }
}

/// How long after its own date and time a document may reach the platform.
///
/// Source: 統一發票使用辦法 §7 ¶4 (as the tax offices restate it, e.g. 財政部臺北國稅局 and
/// 中區國稅局 notices): the seller uploads an e-invoice to the platform within **48 hours**
/// of issuing it; when the buyer is a business, within **7 days**. "如有發票作廢、銷貨退回
/// 或折讓… 變更發票資訊時，亦同": cancels, voids, allowances and their cancels have the same
/// limits, counted from their own date and time. 南區國稅局 (2025-10-15) reads the B2B limit as
/// seven days counted from the day after issue; 168 hours from the issue time is never later
/// than that, so the default warns no later than the law requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// B2C: 48 hours.
    pub consumer: Duration,
    /// B2B: 7 days.
    pub business: Duration,
}

impl Default for UploadLimits {
    fn default() -> UploadLimits {
        UploadLimits {
            consumer: Duration::hours(48),
            business: Duration::days(7),
        }
    }
}

impl UploadLimits {
    pub fn for_buyer(&self, buyer: BuyerKind) -> Duration {
        match buyer {
            BuyerKind::Consumer => self.consumer,
            BuyerKind::Business => self.business,
        }
    }

    /// The latest time a document dated `at` may reach the platform.
    pub fn deadline(&self, at: NaiveDateTime, buyer: BuyerKind) -> NaiveDateTime {
        at.checked_add_signed(self.for_buyer(buyer))
            .unwrap_or(NaiveDateTime::MAX)
    }
}

/// The instant a message's upload limit counts from, and whom it is for.
///
/// F0401 counts from `InvoiceDate`/`InvoiceTime`, F0501 from `CancelDate`/`CancelTime`, F0701
/// from `VoidDate`/`VoidTime`, G0501 from `CancelDate`/`CancelTime`. G0401 carries a date only
/// (`AllowanceDate`): it counts from the start of that day, the earliest reading.
pub fn deadline_basis(message: &Message) -> (NaiveDateTime, BuyerKind) {
    let at = |d: NaiveDate, t: NaiveTime| d.and_time(t);
    match message {
        Message::Invoice(m) => (at(m.date.0, m.time.0), BuyerKind::from(&m.buyer.identifier)),
        Message::Cancel(m) => (
            at(m.cancel_date.0, m.cancel_time.0),
            BuyerKind::from(&m.buyer_id),
        ),
        Message::Void(m) => (
            at(m.void_date.0, m.void_time.0),
            BuyerKind::from(&m.buyer_id),
        ),
        Message::Allowance(m) => (
            at(m.date.0, NaiveTime::MIN),
            BuyerKind::from(&m.buyer.identifier),
        ),
        Message::CancelAllowance(m) => (
            at(m.cancel_date.0, m.cancel_time.0),
            BuyerKind::from(&m.buyer_id),
        ),
    }
}

/// Where a document stands against its upload deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// More than the warning margin is left.
    OnTime,
    /// The deadline is within the warning margin; `left` is what remains.
    DueSoon { left: Duration },
    /// The deadline has passed by `late`.
    Missed { late: Duration },
}

/// Compares a deadline with "now" (both Taiwan time); `warn_within` is the margin before the
/// deadline that counts as "nearly missed".
pub fn urgency(deadline: NaiveDateTime, now: NaiveDateTime, warn_within: Duration) -> Urgency {
    let left = deadline - now;
    if left < Duration::zero() {
        Urgency::Missed { late: -left }
    } else if left <= warn_within {
        Urgency::DueSoon { left }
    } else {
        Urgency::OnTime
    }
}

/// Why a cancel (F0501) is no longer the way to take an invoice back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CancelRefused {
    #[error(
        "invoice {invoice_date} belongs to period {period}, whose cancels closed with its filing deadline {last_day}; take it back with an allowance (G0401) instead"
    )]
    PeriodClosed {
        invoice_date: NaiveDate,
        period: Period,
        last_day: NaiveDate,
    },
    #[error("the cancel date {cancel_date} is before the invoice date {invoice_date}")]
    BeforeInvoice {
        invoice_date: NaiveDate,
        cancel_date: NaiveDate,
    },
    #[error("invoice date {0}: {1}")]
    NoPeriod(NaiveDate, PeriodError),
}

/// The last day an invoice dated `invoice_date` may still be cancelled (F0501): the VAT filing
/// deadline of its period, the 15th day of the next period ([`Period::filing_deadline`]).
///
/// Source: an invoice "未超過申報期限者… 可由賣方營業人執行作廢電子發票功能"; past the
/// filing deadline a cancel takes a tax-office approval (專案作廢), and a return or discount
/// is an allowance (折讓, G0401) instead (經濟部中小及新創企業署 會計師諮詢 answer on
/// correcting uploaded e-invoices; 統一發票使用辦法 §20 for returns and allowances; the
/// deadline itself is 加值型及非加值型營業稅法 §35). A seller who files before the 15th has
/// closed the window earlier; turnbridge cannot see a filing, so such a cancel passes here and
/// is for the platform to refuse.
pub fn cancel_last_day(invoice_date: NaiveDate) -> Result<NaiveDate, PeriodError> {
    Period::of(invoice_date).map(Period::filing_deadline)
}

/// Whether an invoice dated `invoice_date` may be cancelled (F0501) on `cancel_date`.
pub fn check_cancel(invoice_date: NaiveDate, cancel_date: NaiveDate) -> Result<(), CancelRefused> {
    let period = Period::of(invoice_date).map_err(|e| CancelRefused::NoPeriod(invoice_date, e))?;
    if cancel_date < invoice_date {
        return Err(CancelRefused::BeforeInvoice {
            invoice_date,
            cancel_date,
        });
    }
    let last_day = period.filing_deadline();
    if cancel_date > last_day {
        return Err(CancelRefused::PeriodClosed {
            invoice_date,
            period,
            last_day,
        });
    }
    Ok(())
}

/// A document dated later than now.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} {value} is in the future (now is {now} Taiwan time)")]
pub struct FutureDated {
    /// The element that carries the date (`InvoiceDate`, `CancelDate`, …).
    pub field: &'static str,
    /// The date and time as written in the message.
    pub value: String,
    pub now: String,
}

impl FutureDated {
    /// As a row problem for reports.
    pub fn into_problem(self, row: usize) -> Problem {
        Problem {
            rule: None,
            row,
            field: self.field.to_string(),
            value: self.value.clone(),
            reason: format!(
                "is in the future (now is {} Taiwan time); a document cannot be dated later than it is sent",
                self.now
            ),
        }
    }
}

/// Refuses a message dated after `now` (Taiwan time) by more than `tolerance` (a margin for
/// clocks a little apart). The date checked is the one its upload limit counts from
/// ([`deadline_basis`]); a G0401 counts as dated at the start of its day, so it is refused
/// only from the next day on.
///
/// Source: issue #15 ("invoices dated in the future are refused"); a document cannot be
/// issued before it exists, and its upload deadline would otherwise count from a time not yet
/// come.
pub fn check_not_future(
    message: &Message,
    now: NaiveDateTime,
    tolerance: Duration,
) -> Result<(), FutureDated> {
    let (at, _) = deadline_basis(message);
    if at <= now + tolerance {
        return Ok(());
    }
    let (field, value) = match message {
        Message::Invoice(m) => ("InvoiceDate", format!("{} {}", m.date, m.time)),
        Message::Cancel(m) => ("CancelDate", format!("{} {}", m.cancel_date, m.cancel_time)),
        Message::Void(m) => ("VoidDate", format!("{} {}", m.void_date, m.void_time)),
        Message::Allowance(m) => ("AllowanceDate", m.date.to_string()),
        Message::CancelAllowance(m) => {
            ("CancelDate", format!("{} {}", m.cancel_date, m.cancel_time))
        }
    };
    Err(FutureDated {
        field,
        value,
        now: now.format("%Y%m%d %H:%M:%S").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn dt(y: i32, m: u32, day: u32, h: u32, min: u32, s: u32) -> NaiveDateTime {
        d(y, m, day).and_hms_opt(h, min, s).unwrap()
    }

    #[test]
    fn taiwan_time_is_eight_hours_ahead_of_utc() {
        let utc = DateTime::parse_from_rfc3339("2026-12-31T16:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // Already New Year's Day (and a new ROC year) in Taipei.
        assert_eq!(taiwan_time(utc), dt(2027, 1, 1, 0, 30, 0));
    }

    #[test]
    fn upload_deadlines_count_from_the_documents_own_time() {
        let limits = UploadLimits::default();
        let issued = dt(2026, 2, 27, 22, 15, 0);
        assert_eq!(
            limits.deadline(issued, BuyerKind::Consumer),
            dt(2026, 3, 1, 22, 15, 0),
            "48 hours across the end of February"
        );
        assert_eq!(
            limits.deadline(issued, BuyerKind::Business),
            dt(2026, 3, 6, 22, 15, 0),
            "7 days"
        );
        // A leap year's 29 February counts as a day.
        assert_eq!(
            limits.deadline(dt(2028, 2, 28, 9, 0, 0), BuyerKind::Consumer),
            dt(2028, 3, 1, 9, 0, 0)
        );
        // Across the year (and ROC year) change.
        assert_eq!(
            limits.deadline(dt(2026, 12, 31, 23, 59, 59), BuyerKind::Consumer),
            dt(2027, 1, 2, 23, 59, 59)
        );
        let custom = UploadLimits {
            consumer: Duration::hours(24),
            business: Duration::days(3),
        };
        assert_eq!(
            custom.deadline(issued, BuyerKind::Consumer),
            dt(2026, 2, 28, 22, 15, 0)
        );
    }

    #[test]
    fn urgency_at_the_edges() {
        let deadline = dt(2026, 3, 1, 22, 15, 0);
        let warn = Duration::hours(6);
        assert_eq!(
            urgency(deadline, dt(2026, 3, 1, 16, 14, 59), warn),
            Urgency::OnTime
        );
        assert_eq!(
            urgency(deadline, dt(2026, 3, 1, 16, 15, 0), warn),
            Urgency::DueSoon {
                left: Duration::hours(6)
            }
        );
        assert_eq!(
            urgency(deadline, deadline, warn),
            Urgency::DueSoon {
                left: Duration::zero()
            },
            "the deadline itself is still in time"
        );
        assert_eq!(
            urgency(deadline, dt(2026, 3, 1, 22, 15, 1), warn),
            Urgency::Missed {
                late: Duration::seconds(1)
            }
        );
    }

    #[test]
    fn a_cancel_is_possible_until_the_periods_filing_deadline() {
        // July–August 2026 (11508): cancels until 15 September.
        assert_eq!(cancel_last_day(d(2026, 7, 1)), Ok(d(2026, 9, 15)));
        assert_eq!(check_cancel(d(2026, 7, 1), d(2026, 7, 1)), Ok(()));
        assert_eq!(check_cancel(d(2026, 8, 31), d(2026, 9, 15)), Ok(()));
        let closed = check_cancel(d(2026, 8, 31), d(2026, 9, 16)).unwrap_err();
        assert_eq!(
            closed,
            CancelRefused::PeriodClosed {
                invoice_date: d(2026, 8, 31),
                period: Period::parse("11508").unwrap(),
                last_day: d(2026, 9, 15),
            }
        );
        assert!(closed.to_string().contains("allowance (G0401)"), "{closed}");
        // 1 September is the next period: its window runs to 15 November.
        assert_eq!(check_cancel(d(2026, 9, 1), d(2026, 11, 15)), Ok(()));
        assert!(check_cancel(d(2026, 9, 1), d(2026, 11, 16)).is_err());
        // November–December closes on 15 January of the next (ROC) year.
        assert_eq!(check_cancel(d(2026, 12, 31), d(2027, 1, 15)), Ok(()));
        assert!(check_cancel(d(2026, 12, 31), d(2027, 1, 16)).is_err());
        // A leap day's period closes like any January–February one.
        assert_eq!(cancel_last_day(d(2028, 2, 29)), Ok(d(2028, 3, 15)));
        assert_eq!(
            check_cancel(d(2026, 7, 2), d(2026, 7, 1)),
            Err(CancelRefused::BeforeInvoice {
                invoice_date: d(2026, 7, 2),
                cancel_date: d(2026, 7, 1)
            })
        );
    }

    /// An F0401 built the way the daemon builds one (read and checked from CSV).
    fn invoice(date: &str, time: &str, buyer: &str) -> Message {
        use crate::einvoice::{archive::ZipLimits, check_batch, ReadOptions, TextEncoding};
        let (tax, total) = if buyer == "0000000000" {
            ("0", "100")
        } else {
            ("5", "105")
        };
        let csv = format!(
            "MessageType,InvoiceNumber,InvoiceDate,InvoiceTime,Seller.Identifier,Seller.Name,Seller.Address,Buyer.Identifier,Buyer.Name,InvoiceType,DonateMark,PrintMark,Item.Description,Item.Quantity,Item.UnitPrice,Item.TaxType,Item.Amount,Item.SequenceNumber,SalesAmount,FreeTaxSalesAmount,ZeroTaxSalesAmount,TaxType,TaxRate,TaxAmount,TotalAmount\n\
             F0401,AB00000001,{date},{time},28080623,S,A,{buyer},B,07,0,Y,x,1,100,1,100,1,100,0,0,1,0.05,{tax},{total}\n"
        );
        let opts = ReadOptions {
            encoding: TextEncoding::Auto,
            zip: ZipLimits {
                max_members: 1,
                max_member_bytes: 1,
                max_total_bytes: 1,
            },
            max_invoices: 10,
            max_lines: 10,
            default_tenant: "t".into(),
            time: Default::default(),
        };
        let mut v = check_batch("a.csv", csv.as_bytes(), &opts).unwrap();
        assert!(v.rejected.is_empty(), "{:?}", v.rejected);
        v.accepted.remove(0).message
    }

    #[test]
    fn the_basis_is_the_invoices_date_time_and_buyer() {
        let b2c = invoice("20260227", "22:15:00", "0000000000");
        assert_eq!(
            deadline_basis(&b2c),
            (dt(2026, 2, 27, 22, 15, 0), BuyerKind::Consumer)
        );
        let b2b = invoice("20260227", "22:15:00", "24634102");
        assert_eq!(deadline_basis(&b2b).1, BuyerKind::Business);
    }

    #[test]
    fn an_invoice_dated_in_the_future_is_refused() {
        let now = dt(2026, 12, 31, 23, 59, 0);
        let tolerance = Duration::minutes(5);
        assert_eq!(
            check_not_future(
                &invoice("20261231", "23:59:00", "0000000000"),
                now,
                tolerance
            ),
            Ok(())
        );
        assert_eq!(
            check_not_future(
                &invoice("20270101", "00:04:00", "0000000000"),
                now,
                tolerance
            ),
            Ok(()),
            "within the clock tolerance"
        );
        let err = check_not_future(
            &invoice("20270101", "00:04:01", "0000000000"),
            now,
            tolerance,
        )
        .unwrap_err();
        assert_eq!(err.field, "InvoiceDate");
        assert_eq!(err.value, "20270101 00:04:01");
        let problem = err.into_problem(7);
        assert_eq!((problem.row, problem.field.as_str()), (7, "InvoiceDate"));
        assert!(
            problem.reason.contains("20261231 23:59:00"),
            "{}",
            problem.reason
        );
        assert!(
            check_not_future(&invoice("20270105", "00:00:00", "24634102"), now, tolerance).is_err()
        );
    }
}
