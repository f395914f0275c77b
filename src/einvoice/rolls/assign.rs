//! Giving out numbers from rolls, and checking the numbers rows bring themselves.
//!
//! The right rolls for an invoice are its seller's, of its InvoiceType, for the period its
//! date falls in ("InvoiceDate must fall in the track's period"; research notes mig41.md §4). Numbers
//! are given in order: rolls by track then begin number, and within a roll the lowest number
//! not yet used, so none is skipped ("Numbers must come from the allocated track range,
//! without duplicates or gaps"; research notes mig41.md §4). Which numbers count as used (issued,
//! handed out and not yet sent, or skipped by a recorded decision) is the caller's to say
//! through [`UsedNumbers`]; everything here is pure.

use std::collections::BTreeSet;
use std::fmt;

use chrono::NaiveDate;
use thiserror::Error;

use super::{own_part, serial, InvoiceType, Roll};
use crate::einvoice::model::Problem;
use crate::einvoice::period::{Period, PeriodError};
use crate::einvoice::types::{Ban, InvoiceNumber};

/// Numbers already spoken for: none of them is given out again.
///
/// A number is unique only within its period (the platform hands out the same two letters
/// again in later periods), so the set holds one period's numbers: the callers of
/// [`Assigner`], [`stock`] and [`super::super::blank::blank_reports`] pass those of the
/// period they ask about, never another period's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsedNumbers(BTreeSet<InvoiceNumber>);

impl UsedNumbers {
    pub fn new() -> UsedNumbers {
        UsedNumbers::default()
    }

    /// Marks a number used; false when it already was.
    pub fn insert(&mut self, n: InvoiceNumber) -> bool {
        self.0.insert(n)
    }

    pub fn contains(&self, n: &InvoiceNumber) -> bool {
        self.0.contains(n)
    }

    /// The used serials of a roll, ascending.
    pub fn serials_in<'a>(&'a self, roll: &Roll) -> impl Iterator<Item = u32> + 'a {
        self.0
            .range(roll.first_number()..=roll.last_number())
            .map(serial)
    }

    /// How many numbers of a roll are used.
    pub fn count_in(&self, roll: &Roll) -> u32 {
        self.serials_in(roll).count() as u32
    }
}

impl FromIterator<InvoiceNumber> for UsedNumbers {
    fn from_iter<I: IntoIterator<Item = InvoiceNumber>>(iter: I) -> UsedNumbers {
        UsedNumbers(iter.into_iter().collect())
    }
}

impl Extend<InvoiceNumber> for UsedNumbers {
    fn extend<I: IntoIterator<Item = InvoiceNumber>>(&mut self, iter: I) {
        self.0.extend(iter)
    }
}

/// Which rolls a number is wanted from: a seller, an InvoiceType, a period.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RollKey {
    pub seller: Ban,
    pub invoice_type: InvoiceType,
    pub period: Period,
}

impl RollKey {
    /// The key of an invoice by its seller, InvoiceType and date.
    pub fn of(
        seller: &Ban,
        invoice_type: InvoiceType,
        date: NaiveDate,
    ) -> Result<RollKey, PeriodError> {
        Ok(RollKey {
            seller: seller.clone(),
            invoice_type,
            period: Period::of(date)?,
        })
    }

    pub fn matches(&self, roll: &Roll) -> bool {
        roll.seller == self.seller
            && roll.invoice_type == self.invoice_type
            && roll.period == self.period
    }
}

impl fmt::Display for RollKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seller {}, InvoiceType {}, period {}",
            self.seller, self.invoice_type, self.period
        )
    }
}

/// The rolls of a key, in the order their numbers are given out (track, then begin number);
/// a head office's rolls without the ranges it gave its branches ([`own_part`]).
pub fn rolls_for(rolls: &[Roll], key: &RollKey) -> Vec<Roll> {
    let mut out: Vec<Roll> = rolls
        .iter()
        .filter(|r| key.matches(r))
        .flat_map(|r| own_part(r, rolls))
        .collect();
    out.sort_by_key(|r| (r.track, r.begin()));
    out
}

/// Why no number can be given out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AssignError {
    #[error("no roll of {0} is known: add the period's E0501 allocation or enter the roll (turnbridge rolls add)")]
    NoRoll(RollKey),
    #[error("every number of {key} is used ({rolls} roll(s), {numbers} numbers): a new allocation is needed")]
    Exhausted {
        key: RollKey,
        rolls: usize,
        numbers: u64,
    },
}

impl AssignError {
    /// As the problem of a row that came without a number.
    pub fn into_problem(self, row: usize) -> Problem {
        Problem {
            rule: None,
            row,
            field: "InvoiceNumber".into(),
            value: String::new(),
            reason: format!("cannot be assigned: {self}"),
        }
    }
}

/// Gives out numbers of one key in order, marking each used as it goes, so a batch takes
/// consecutive numbers without rescanning.
#[derive(Debug)]
pub struct Assigner<'a> {
    key: RollKey,
    rolls: Vec<Roll>,
    used: &'a mut UsedNumbers,
    /// Index of the roll the cursor is in, and the next serial to try there.
    at: usize,
    next: u32,
}

impl<'a> Assigner<'a> {
    /// Starts at the lowest free number of the key's first roll; refuses when the key has no
    /// roll at all.
    pub fn new(
        rolls: &[Roll],
        used: &'a mut UsedNumbers,
        key: RollKey,
    ) -> Result<Assigner<'a>, AssignError> {
        let rolls = rolls_for(rolls, &key);
        let Some(first) = rolls.first() else {
            return Err(AssignError::NoRoll(key));
        };
        let next = first.begin();
        Ok(Assigner {
            key,
            rolls,
            used,
            at: 0,
            next,
        })
    }

    /// The next free number, now marked used; [`AssignError::Exhausted`] once every roll of
    /// the key is used up.
    pub fn next_number(&mut self) -> Result<InvoiceNumber, AssignError> {
        while let Some(roll) = self.rolls.get(self.at) {
            while self.next <= roll.end() {
                let n = roll.number(self.next);
                self.next += 1;
                if self.used.insert(n.clone()) {
                    return Ok(n);
                }
            }
            self.at += 1;
            if let Some(r) = self.rolls.get(self.at) {
                self.next = r.begin();
            }
        }
        Err(AssignError::Exhausted {
            key: self.key.clone(),
            rolls: self.rolls.len(),
            numbers: self.rolls.iter().map(|r| u64::from(r.len())).sum(),
        })
    }
}

/// The next free number of a key (see [`RollKey::of`] for an invoice's key), marked used.
pub fn next_number(
    rolls: &[Roll],
    used: &mut UsedNumbers,
    key: RollKey,
) -> Result<InvoiceNumber, AssignError> {
    Assigner::new(rolls, used, key)?.next_number()
}

/// Why a number a row brings is not one of its seller's for its period.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{number} is in no roll of {key}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct NumberRefused {
    pub number: InvoiceNumber,
    pub key: RollKey,
    /// Where the number does belong, when a known roll holds it.
    pub hint: Option<String>,
}

impl NumberRefused {
    /// As the problem of the row that brought the number.
    pub fn into_problem(self, row: usize) -> Problem {
        let hint = self.hint.map(|h| format!(" ({h})")).unwrap_or_default();
        Problem {
            rule: None,
            row,
            field: "InvoiceNumber".into(),
            value: self.number.to_string(),
            reason: format!("is in no roll of {}{hint}", self.key),
        }
    }
}

/// Checks that a number a row brings itself lies in a roll of its key (a head office's
/// roll without what it gave its branches); returns the roll it lies in. Whether the number
/// was used before is the store's question (a re-issue after a void legitimately uses a
/// number again).
pub fn check_number(
    rolls: &[Roll],
    key: &RollKey,
    number: &InvoiceNumber,
) -> Result<Roll, NumberRefused> {
    let holding =
        |r: &&Roll| r.contains(number) && own_part(r, rolls).iter().any(|p| p.contains(number));
    if let Some(r) = rolls.iter().filter(|r| key.matches(r)).find(holding) {
        return Ok(r.clone());
    }
    let hint = rolls.iter().find(holding).map(|r| {
        if r.seller != key.seller {
            format!("it is allocated to seller {}", r.seller)
        } else if r.period != key.period {
            format!("it belongs to period {}", r.period)
        } else {
            format!("it is an InvoiceType {} number", r.invoice_type)
        }
    });
    Err(NumberRefused {
        number: number.clone(),
        key: key.clone(),
        hint,
    })
}

/// How many numbers a key's rolls hold and how many are used: the low-roll threshold's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock {
    pub rolls: usize,
    pub total: u64,
    pub used: u64,
}

impl Stock {
    /// Numbers still free.
    pub fn left(&self) -> u64 {
        self.total - self.used
    }

    pub fn is_exhausted(&self) -> bool {
        self.left() == 0
    }

    /// Free numbers at or below `threshold` (an exhausted key is low too).
    pub fn is_low(&self, threshold: u64) -> bool {
        self.left() <= threshold
    }
}

/// The stock of a key's rolls.
pub fn stock(rolls: &[Roll], used: &UsedNumbers, key: &RollKey) -> Stock {
    let mine = rolls_for(rolls, key);
    Stock {
        rolls: mine.len(),
        total: mine.iter().map(|r| u64::from(r.len())).sum(),
        used: mine.iter().map(|r| u64::from(used.count_in(r))).sum(),
    }
}

#[cfg(test)]
#[path = "assign_tests.rs"]
mod tests;
