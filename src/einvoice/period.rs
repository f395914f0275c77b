//! The bimonthly invoice period (期別) and the dates that hang on it.
//!
//! Uniform invoices run in two-month periods: January–February, March–April, …,
//! November–December. MIG writes a period as its `YearMonth`: the ROC year (Gregorian − 1911,
//! three digits) and the period's *even, closing* month, so July–August 2026 is `11508`. The
//! official XSDs of E0401, E0402 and E0501 pin that form (`\d{3}0[2|4|6|8]|\d{3}1[0|2]`), which
//! settles the odd-or-even question the research notes leave open (research notes mig41.md §4,
//! "Period").
//!
//! Everything here is calendar arithmetic on dates as written on the invoice (Taiwan time);
//! nothing reads a clock.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use thiserror::Error;

/// The offset between the Gregorian and the ROC (民國) year.
pub const ROC_OFFSET: i32 = 1911;

/// Why a `YearMonth` or a date has no period.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeriodError {
    #[error("must be the ROC year and the period's even closing month, five digits like 11508")]
    Shape,
    #[error(
        "month {0:02} closes no period: a period ends in an even month (02, 04, 06, 08, 10 or 12)"
    )]
    OddMonth(u32),
    #[error("the ROC year must be 1 to 999 (Gregorian 1912 to 2910)")]
    Year,
}

/// A bimonthly period, written as MIG's `YearMonth` (`11508` = July–August of ROC 115, 2026).
///
/// Ordered by time: `11506 < 11508 < 11602`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    /// ROC year, 1..=999.
    roc_year: u16,
    /// The closing month: 2, 4, …, 12.
    end_month: u8,
}

impl Period {
    /// The period of ROC year `roc_year` that closes with month `end_month` (2, 4, …, 12).
    pub fn new(roc_year: u32, end_month: u32) -> Result<Period, PeriodError> {
        if !(1..=999).contains(&roc_year) {
            return Err(PeriodError::Year);
        }
        if !(1..=12).contains(&end_month) {
            return Err(PeriodError::Shape);
        }
        if end_month % 2 == 1 {
            return Err(PeriodError::OddMonth(end_month));
        }
        Ok(Period {
            roc_year: roc_year as u16,
            end_month: end_month as u8,
        })
    }

    /// Parses MIG's `YearMonth`: five digits, the ROC year then the even closing month.
    pub fn parse(s: &str) -> Result<Period, PeriodError> {
        let b = s.as_bytes();
        if b.len() != 5 || !b.iter().all(u8::is_ascii_digit) {
            return Err(PeriodError::Shape);
        }
        let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().map_err(|_| PeriodError::Shape);
        Period::new(n(0..3)?, n(3..5)?)
    }

    /// The period a date falls in.
    pub fn of(date: NaiveDate) -> Result<Period, PeriodError> {
        let roc = date.year() - ROC_OFFSET;
        if !(1..=999).contains(&roc) {
            return Err(PeriodError::Year);
        }
        let m = date.month();
        Period::new(roc as u32, m + m % 2)
    }

    pub fn roc_year(self) -> u32 {
        u32::from(self.roc_year)
    }

    pub fn gregorian_year(self) -> i32 {
        i32::from(self.roc_year) + ROC_OFFSET
    }

    /// The closing (even) month, 2..=12.
    pub fn end_month(self) -> u32 {
        u32::from(self.end_month)
    }

    /// The first day of the period (the 1st of its odd month).
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.gregorian_year(), self.end_month() - 1, 1)
            .expect("the first of a month exists")
    }

    /// The last day of the period (the last day of its even month, leap years included).
    pub fn last_day(self) -> NaiveDate {
        self.next_month_day(1)
            .pred_opt()
            .expect("a day before the 1st exists")
    }

    /// Whether a date falls in the period.
    pub fn contains(self, date: NaiveDate) -> bool {
        (self.first_day()..=self.last_day()).contains(&date)
    }

    /// The period after this one (`11512` → `11602`). Saturates at ROC 999, which no real
    /// invoice reaches.
    pub fn next(self) -> Period {
        match (self.end_month, self.roc_year) {
            (12, 999) => self,
            (12, y) => Period {
                roc_year: y + 1,
                end_month: 2,
            },
            (m, y) => Period {
                roc_year: y,
                end_month: m + 2,
            },
        }
    }

    /// The period before this one (`11602` → `11512`). Saturates at ROC 1.
    pub fn previous(self) -> Period {
        match (self.end_month, self.roc_year) {
            (2, 1) => self,
            (2, y) => Period {
                roc_year: y - 1,
                end_month: 12,
            },
            (m, y) => Period {
                roc_year: y,
                end_month: m - 2,
            },
        }
    }

    /// Day `day` of the month after the period (the first month of the next period).
    fn next_month_day(self, day: u32) -> NaiveDate {
        let (y, m) = if self.end_month == 12 {
            (self.gregorian_year() + 1, 1)
        } else {
            (self.gregorian_year(), self.end_month() + 1)
        };
        NaiveDate::from_ymd_opt(y, m, day).expect("days 1 to 28 exist in every month")
    }

    /// The last day to upload the period's blank-number report (E0402): the 10th day of the
    /// next period (research notes mig41.md §4: "Report unused ranges with E0402 by day 10 of
    /// the following period"; 電子發票實施作業要點 as the tax offices restate it: "應於使用
    /// 電子發票次期開始10日內… 空白未使用字軌號碼傳輸至整合服務平台").
    pub fn blank_report_due(self) -> NaiveDate {
        self.next_month_day(10)
    }

    /// The period's VAT filing deadline: the 15th day of the next period
    /// (加值型及非加值型營業稅法 §35: "以每二月為一期，於次期開始十五日內… 申報"). A holiday
    /// that moves the deadline is not modelled: the date returned is never later than the
    /// real one.
    pub fn filing_deadline(self) -> NaiveDate {
        self.next_month_day(15)
    }
}

impl fmt::Display for Period {
    /// MIG's `YearMonth`: `11508`, `09902` (three-digit ROC year, two-digit month).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}{:02}", self.roc_year, self.end_month)
    }
}

impl std::str::FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Period, PeriodError> {
        Period::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn p(s: &str) -> Period {
        Period::parse(s).unwrap()
    }

    #[test]
    fn a_date_falls_in_the_period_of_its_even_closing_month() {
        assert_eq!(Period::of(d(2026, 7, 1)).unwrap().to_string(), "11508");
        assert_eq!(Period::of(d(2026, 8, 31)).unwrap().to_string(), "11508");
        assert_eq!(Period::of(d(2026, 9, 1)).unwrap().to_string(), "11510");
        assert_eq!(Period::of(d(2026, 1, 1)).unwrap().to_string(), "11502");
        assert_eq!(Period::of(d(2026, 12, 31)).unwrap().to_string(), "11512");
        // The ROC year changes with the Gregorian one: 31 Dec and 1 Jan are two years.
        assert_eq!(Period::of(d(2027, 1, 1)).unwrap().to_string(), "11602");
        // Three digits, zero-padded, as the XSD's \d{3} wants.
        assert_eq!(Period::of(d(2010, 2, 28)).unwrap().to_string(), "09902");
    }

    #[test]
    fn first_and_last_days_follow_month_ends_and_leap_years() {
        assert_eq!(p("11502").first_day(), d(2026, 1, 1));
        assert_eq!(p("11502").last_day(), d(2026, 2, 28));
        // 2028 (ROC 117) is a leap year: the period ends on 29 February.
        assert_eq!(p("11702").last_day(), d(2028, 2, 29));
        assert!(p("11702").contains(d(2028, 2, 29)));
        assert!(!p("11702").contains(d(2028, 3, 1)));
        // 2100 is not a leap year (divisible by 100, not by 400).
        assert_eq!(p("18902").last_day(), d(2100, 2, 28));
        assert_eq!(p("11508").last_day(), d(2026, 8, 31));
        assert_eq!(p("11506").last_day(), d(2026, 6, 30));
        assert_eq!(p("11512").last_day(), d(2026, 12, 31));
        assert!(p("11508").contains(d(2026, 7, 1)));
        assert!(!p("11508").contains(d(2026, 6, 30)));
        assert!(!p("11508").contains(d(2026, 9, 1)));
    }

    #[test]
    fn next_and_previous_cross_the_year() {
        assert_eq!(p("11512").next(), p("11602"));
        assert_eq!(p("11602").previous(), p("11512"));
        assert_eq!(p("11508").next(), p("11510"));
        assert_eq!(p("11508").previous(), p("11506"));
        assert!(p("11512") < p("11602"));
        assert!(p("11506") < p("11508"));
    }

    #[test]
    fn report_and_filing_dates_fall_in_the_next_period() {
        assert_eq!(p("11508").blank_report_due(), d(2026, 9, 10));
        assert_eq!(p("11508").filing_deadline(), d(2026, 9, 15));
        // The November–December period reports in January of the next year.
        assert_eq!(p("11512").blank_report_due(), d(2027, 1, 10));
        assert_eq!(p("11512").filing_deadline(), d(2027, 1, 15));
    }

    #[test]
    fn year_month_is_checked_like_the_xsd() {
        for ok in ["11508", "11502", "11512", "00102", "99912"] {
            assert_eq!(p(ok).to_string(), ok);
        }
        assert_eq!(Period::parse("11507"), Err(PeriodError::OddMonth(7)));
        assert_eq!(Period::parse("11501"), Err(PeriodError::OddMonth(1)));
        assert_eq!(Period::parse("11500"), Err(PeriodError::Shape));
        assert_eq!(Period::parse("11514"), Err(PeriodError::Shape));
        assert_eq!(Period::parse("00002"), Err(PeriodError::Year));
        for bad in ["1158", "115080", "115-8", "", "１１５０８", "11508 "] {
            assert_eq!(Period::parse(bad), Err(PeriodError::Shape), "{bad:?}");
        }
        assert_eq!(Period::of(d(1911, 12, 31)), Err(PeriodError::Year));
        assert_eq!(Period::of(d(2911, 1, 1)), Err(PeriodError::Year));
    }
}
