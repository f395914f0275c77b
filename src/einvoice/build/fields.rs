//! Reading one record's fields: converting each raw value to its type and recording what is
//! wrong with it, with the field's name and value.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;

use crate::einvoice::model::*;
use crate::einvoice::raw::{Cell, RawMessage};
use crate::einvoice::types::*;

/// Why one field's value is refused, and whether that is a platform rule.
pub(super) struct Refusal {
    pub(super) reason: String,
    pub(super) rule: Option<PlatformRule>,
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal { reason, rule: None }
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal {
            reason: reason.to_string(),
            rule: None,
        }
    }
}

/// Who checks an id field, beyond its length (at most 10 characters, and at least 8 for a
/// role's `Identifier`, in the XSD): Turnkey wants an F0401 buyer's id to be digits; the
/// rest (eight digits, not all zeros, check digits) only the platform checks.
#[derive(Clone, Copy)]
pub(super) struct IdCheck {
    min_len: usize,
    turnkey_digits: bool,
}

pub(super) const ROLE_ID: IdCheck = IdCheck {
    min_len: 8,
    turnkey_digits: false,
};
pub(super) const F0401_BUYER: IdCheck = IdCheck {
    min_len: 8,
    turnkey_digits: true,
};
pub(super) const FLAT_ID: IdCheck = IdCheck {
    min_len: 0,
    turnkey_digits: false,
};

pub(super) fn id_refusal(s: &str, reason: String, check: IdCheck) -> Refusal {
    let n = s.encode_utf16().count();
    let xsd = n > 10 || n < check.min_len;
    let turnkey = check.turnkey_digits && !s.bytes().all(|b| b.is_ascii_digit());
    Refusal {
        rule: (!xsd && !turnkey).then_some(PlatformRule::Ban),
        reason,
    }
}

/// A business id.
pub(super) fn ban(check: IdCheck) -> impl Fn(&str) -> Result<Ban, Refusal> {
    move |s| Ban::parse(s).map_err(|r| id_refusal(s, r, check))
}

/// A buyer id: a business id or the consumer's ten zeros.
pub(super) fn buyer_id(check: IdCheck) -> impl Fn(&str) -> Result<BuyerId, Refusal> {
    move |s| BuyerId::parse(s).map_err(|r| id_refusal(s, r, check))
}

/// A date: its shape is the XSD's, whether it exists only the platform checks.
pub(super) fn mig_date(s: &str) -> Result<MigDate, Refusal> {
    MigDate::parse(s).map_err(|reason| Refusal {
        rule: MigDate::is_calendar_error(&reason).then_some(PlatformRule::Dates),
        reason,
    })
}

/// A time: the XSD's `xs:time` takes 24:00:00, which the platform does not.
pub(super) fn mig_time(s: &str) -> Result<MigTime, Refusal> {
    MigTime::parse(s).map_err(|reason| Refusal {
        rule: (s == "24:00:00").then_some(PlatformRule::Dates),
        reason,
    })
}

/// An amount the XSD lets be negative but the platform does not (the invoice's exempt and
/// zero-rated sales).
pub(super) fn platform_nonnegative(
    rule: PlatformRule,
) -> impl Fn(&str) -> Result<Decimal, Refusal> {
    move |s| {
        let d = parse_signed_amount(s, 7)?;
        if d.is_sign_negative() && !d.is_zero() {
            Err(Refusal {
                reason: "must not be negative".into(),
                rule: Some(rule),
            })
        } else {
            Ok(d)
        }
    }
}

/// Reads the fields of one record, converting each and recording what is wrong.
pub(super) struct Fields<'a> {
    cells: &'a BTreeMap<String, Cell>,
    row: usize,
    prefix: &'a str,
    /// Set for a message's header fields: where a missing one would be.
    header: Option<&'a RawMessage>,
    used: BTreeSet<&'static str>,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(
        cells: &'a BTreeMap<String, Cell>,
        row: usize,
        prefix: &'a str,
        problems: &'a mut Vec<Problem>,
    ) -> Self {
        Fields {
            cells,
            row,
            prefix,
            header: None,
            used: BTreeSet::new(),
            problems,
        }
    }

    /// The header fields of a message.
    pub(super) fn header(raw: &'a RawMessage, problems: &'a mut Vec<Problem>) -> Self {
        Fields {
            header: Some(raw),
            ..Fields::new(&raw.fields, raw.row, &raw.display_prefix, problems)
        }
    }

    pub(super) fn cell(&mut self, key: &'static str) -> Option<&'a Cell> {
        self.used.insert(key);
        self.cells.get(key).filter(|c| !c.value.trim().is_empty())
    }

    pub(super) fn problem(&mut self, key: &str, cell: Option<&Cell>, refusal: impl Into<Refusal>) {
        let refusal = refusal.into();
        let (row, field, value) = match cell {
            Some(c) => (c.row, c.display.clone(), c.value.clone()),
            None => match self.header {
                Some(raw) => (self.row, raw.display_of(key), String::new()),
                None => (self.row, format!("{}{}", self.prefix, key), String::new()),
            },
        };
        self.problems.push(Problem {
            rule: refusal.rule,
            row,
            field,
            value,
            reason: refusal.reason,
        });
    }

    /// A field that must be present, converted by `parse`.
    pub(super) fn req<T, E: Into<Refusal>>(
        &mut self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Option<T> {
        match self.cell(key) {
            None => {
                self.problem(key, None, "is required");
                None
            }
            Some(c) => match parse(c.value.trim()) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.problem(key, Some(c), e);
                    None
                }
            },
        }
    }

    /// A field that may be absent; `Ok(None)` when absent, `Err(())` when present but bad.
    pub(super) fn opt<T, E: Into<Refusal>>(
        &mut self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ()> {
        match self.cell(key) {
            None => Ok(None),
            Some(c) => match parse(c.value.trim()) {
                Ok(v) => Ok(Some(v)),
                Err(e) => {
                    self.problem(key, Some(c), e);
                    Err(())
                }
            },
        }
    }

    /// Whether a field is filled (without reading it).
    pub(super) fn filled(&self, key: &str) -> bool {
        self.cells
            .get(key)
            .is_some_and(|c| !c.value.trim().is_empty())
    }

    pub(super) fn text(&mut self, key: &'static str, max: usize) -> Option<String> {
        self.req(key, |s| text(s, max))
    }

    pub(super) fn opt_text(&mut self, key: &'static str, max: usize) -> Result<Option<String>, ()> {
        self.opt(key, |s| text(s, max))
    }

    pub(super) fn one_of(
        &mut self,
        key: &'static str,
        allowed: &'static [&'static str],
    ) -> Option<String> {
        self.req(key, |s| one_of(s, allowed))
    }

    pub(super) fn opt_one_of(
        &mut self,
        key: &'static str,
        allowed: &'static [&'static str],
    ) -> Result<Option<String>, ()> {
        self.opt(key, |s| one_of(s, allowed))
    }

    pub(super) fn amount(&mut self, key: &'static str) -> Option<Decimal> {
        self.req(key, |s| parse_amount(s, 7))
    }

    /// Reports every filled field this message type has no place for.
    pub(super) fn finish(self, message_type: MessageType) {
        let cells = self.cells;
        let mut extra = Vec::new();
        for (key, cell) in cells {
            if !cell.value.trim().is_empty()
                && !self.used.contains(key.as_str())
                && !crate::einvoice::raw::META_FIELDS.contains(&key.as_str())
            {
                extra.push(cell);
            }
        }
        for cell in extra {
            self.problems.push(Problem {
                rule: None,
                row: cell.row,
                field: cell.display.clone(),
                value: cell.value.clone(),
                reason: format!("is not part of a {message_type} message"),
            });
        }
    }
}

/// Text of at most `max` characters as the XSD counts them: in UTF-16 units, as Java's
/// validator (Turnkey's) does, so a character outside the BMP (many rare CJK characters, emoji)
/// counts twice.
pub(super) fn text(s: &str, max: usize) -> Result<String, String> {
    let n = s.encode_utf16().count();
    if n > max {
        let chars = s.chars().count();
        Err(if chars == n {
            format!("is {n} characters long, at most {max} are allowed")
        } else {
            format!("is {n} characters long as Turnkey counts them ({chars} characters, those outside the BMP counting twice); at most {max} are allowed")
        })
    } else if s.chars().any(|c| c.is_control() && c != '\t') {
        Err("contains a control character".into())
    } else if s.chars().any(|c| c == '\u{FFFE}' || c == '\u{FFFF}') {
        Err("contains a character XML does not allow (U+FFFE or U+FFFF)".into())
    } else {
        Ok(s.to_string())
    }
}

pub(super) fn one_of(s: &str, allowed: &'static [&'static str]) -> Result<String, String> {
    if allowed.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("must be one of {}", allowed.join(", ")))
    }
}

pub(super) fn digits(s: &str, min: usize, max: usize) -> Result<String, String> {
    if (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("must be {min} to {max} digits"))
    }
}

pub(super) fn role_ban(f: &mut Fields, who: &'static [&'static str; 9]) -> Option<Role<Ban>> {
    let id = f.req(who[0], ban(ROLE_ID));
    role_rest(f, who, id)
}

pub(super) fn role_buyer(
    f: &mut Fields,
    who: &'static [&'static str; 9],
    check: IdCheck,
) -> Option<Role<BuyerId>> {
    let id = f.req(who[0], buyer_id(check));
    role_rest(f, who, id)
}

pub(super) fn role_rest<Id>(
    f: &mut Fields,
    k: &'static [&'static str; 9],
    id: Option<Id>,
) -> Option<Role<Id>> {
    let name = f.text(k[1], 60);
    let address = f.opt_text(k[2], 100);
    let person = f.opt_text(k[3], 30);
    let tel = f.opt_text(k[4], 26);
    let fax = f.opt_text(k[5], 26);
    let email = f.opt_text(k[6], 400);
    let customer = f.opt_text(k[7], 20);
    let remark = f.opt_text(k[8], 40);
    Some(Role {
        identifier: id?,
        name: name?,
        address: address.ok()?,
        person_in_charge: person.ok()?,
        telephone_number: tel.ok()?,
        facsimile_number: fax.ok()?,
        email_address: email.ok()?,
        customer_number: customer.ok()?,
        role_remark: remark.ok()?,
    })
}

pub(super) const SELLER: [&str; 9] = [
    "Seller.Identifier",
    "Seller.Name",
    "Seller.Address",
    "Seller.PersonInCharge",
    "Seller.TelephoneNumber",
    "Seller.FacsimileNumber",
    "Seller.EmailAddress",
    "Seller.CustomerNumber",
    "Seller.RoleRemark",
];
pub(super) const BUYER: [&str; 9] = [
    "Buyer.Identifier",
    "Buyer.Name",
    "Buyer.Address",
    "Buyer.PersonInCharge",
    "Buyer.TelephoneNumber",
    "Buyer.FacsimileNumber",
    "Buyer.EmailAddress",
    "Buyer.CustomerNumber",
    "Buyer.RoleRemark",
];
