//! The five MIG 4.1 messages as typed values, and how they are built from raw fields.
//!
//! Building checks every single field (presence, length, format, enumerations) and collects
//! every problem rather than stopping at the first, so one report tells the operator all that
//! is wrong with a row. Rules that relate several fields live in [`super::rules`].

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::Serialize;

use super::raw::{Cell, RawItem, RawMessage};
use super::types::*;

/// One thing wrong with one field of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// CSV line number, or the message's position in a JSON batch (1-based); 0 for the file.
    pub row: usize,
    pub field: String,
    pub value: String,
    pub reason: String,
    /// Set when the problem is one the platform finds after Turnkey has taken the file (the
    /// official XSD and Turnkey's program check accept it); `None` for the rules Turnkey
    /// itself applies and for the daemon's own limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<PlatformRule>,
}

/// The rules the e-invoice platform applies that neither the official XSD nor Turnkey's
/// program check does: a file breaking one of them is taken by Turnkey and refused later,
/// by the platform's ProcessResult. Each names its source in [`PlatformRule::source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlatformRule {
    /// 統一編號: eight digits, not all zeros, with valid check digits (Ministry of Finance,
    /// the 2023-04-01 rule). Turnkey checks only that an F0401 buyer's id is digits.
    Ban,
    /// Amounts add up: lines to buckets, buckets and tax to the total, tax to sales × rate;
    /// no sales bucket is negative.
    Totals,
    /// InvoiceType 07 (general tax) takes TaxType 1, 2, 3 or 9; 08 (special tax) takes
    /// 2, 3, 4 or 9; each TaxType its rates; a line (also an allowance line) is never 9.
    InvoiceTypeTaxType,
    /// A consumer (B2C) invoice states tax-inclusive amounts with TaxAmount 0.
    ConsumerTaxInclusive,
    /// Carriers and donations: type and both ids together, the mobile barcode's shape
    /// (3J0002), a business buyer uses no other carrier and is never donated to, NPOBAN is
    /// 3 to 7 digits.
    Carrier,
    /// Line sequence numbers are unique within a message.
    UniqueSequence,
    /// Dates that exist (the XSD takes 20240231) and times within the day (it takes
    /// 24:00:00), in order (a cancel or void not before the invoice; an allowance line's
    /// invoice not after the allowance).
    Dates,
    /// An allowance's lines take back amounts and tax above 0.
    PositiveAllowance,
    /// All allowances on an invoice together stay within its untaxed total.
    AllowanceWithinInvoice,
}

impl PlatformRule {
    /// The rule's name, as reports spell it (`ban`, `totals`, …).
    pub fn name(self) -> &'static str {
        match self {
            PlatformRule::Ban => "ban",
            PlatformRule::Totals => "totals",
            PlatformRule::InvoiceTypeTaxType => "invoice-type-tax-type",
            PlatformRule::ConsumerTaxInclusive => "consumer-tax-inclusive",
            PlatformRule::Carrier => "carrier",
            PlatformRule::UniqueSequence => "unique-sequence",
            PlatformRule::Dates => "dates",
            PlatformRule::PositiveAllowance => "positive-allowance",
            PlatformRule::AllowanceWithinInvoice => "allowance-within-invoice",
        }
    }

    /// Where the rule comes from, for reports and the README.
    pub fn source(self) -> &'static str {
        match self {
            PlatformRule::Ban => "MOF 統一編號 format and check-digit rule (2023-04-01)",
            PlatformRule::Totals => "MIG 4.1 Amount field notes (sums and SalesAmount × TaxRate)",
            PlatformRule::InvoiceTypeTaxType => "MIG 4.1 InvoiceType and TaxType code notes",
            PlatformRule::ConsumerTaxInclusive => {
                "MIG 4.1 TaxAmount note; every official B2C sample (TaxAmount 0)"
            }
            PlatformRule::Carrier => {
                "MIG 4.1 CarrierType / DonateMark / NPOBAN notes; MOF carrier specification (手機條碼 /XXXXXXX)"
            }
            PlatformRule::UniqueSequence => "MIG 4.1 SequenceNumber note",
            PlatformRule::Dates => {
                "the calendar; MIG 4.1 CancelDate / VoidDate / OriginalInvoiceDate notes"
            }
            PlatformRule::PositiveAllowance => "MIG 4.1 G0401 Amount notes",
            PlatformRule::AllowanceWithinInvoice => "MIG 4.1 G0401 notes (折讓 of a sold amount)",
        }
    }
}

/// Seller or buyer (MIG RoleDescription).
#[derive(Debug, Clone, PartialEq)]
pub struct Role<Id> {
    pub identifier: Id,
    pub name: String,
    pub address: Option<String>,
    pub person_in_charge: Option<String>,
    pub telephone_number: Option<String>,
    pub facsimile_number: Option<String>,
    pub email_address: Option<String>,
    pub customer_number: Option<String>,
    pub role_remark: Option<String>,
}

/// Carrier (載具): type and both ids always travel together.
#[derive(Debug, Clone, PartialEq)]
pub struct Carrier {
    pub carrier_type: String,
    pub id1: String,
    pub id2: String,
}

/// F0401 `<Invoice>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    pub number: InvoiceNumber,
    pub date: MigDate,
    pub time: MigTime,
    pub seller: Role<Ban>,
    pub buyer: Role<BuyerId>,
    pub buyer_remark: Option<String>,
    pub main_remark: Option<String>,
    pub customs_clearance_mark: Option<String>,
    pub category: Option<String>,
    pub relate_number: Option<String>,
    pub invoice_type: String,
    pub group_mark: Option<String>,
    pub donate: bool,
    pub carrier: Option<Carrier>,
    pub print: bool,
    pub npoban: Option<String>,
    pub random_number: Option<RandomNumber>,
    pub bonded_area_confirm: Option<String>,
    pub zero_tax_rate_reason: Option<String>,
    pub reserved1: Option<String>,
    pub reserved2: Option<String>,
    pub items: Vec<InvoiceItem>,
    pub amount: InvoiceAmount,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceItem {
    pub row: usize,
    pub description: String,
    pub quantity: Decimal,
    pub unit: Option<String>,
    pub unit_price: Decimal,
    pub tax_type: TaxType,
    pub amount: Decimal,
    pub sequence_number: String,
    pub remark: Option<String>,
    pub relate_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceAmount {
    pub sales: Decimal,
    pub free_tax_sales: Decimal,
    pub zero_tax_sales: Decimal,
    pub tax_type: TaxType,
    pub tax_rate: Decimal,
    pub tax_amount: Decimal,
    pub total: Decimal,
    pub discount: Option<Decimal>,
    pub original_currency_amount: Option<Decimal>,
    pub exchange_rate: Option<Decimal>,
    pub currency: Option<String>,
}

/// F0501 `<CancelInvoice>` (flat).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelInvoice {
    pub number: InvoiceNumber,
    pub invoice_date: MigDate,
    pub buyer_id: BuyerId,
    pub seller_id: Ban,
    pub cancel_date: MigDate,
    pub cancel_time: MigTime,
    pub reason: String,
    pub return_tax_document_number: Option<String>,
    pub remark: Option<String>,
    pub reserved1: Option<String>,
    pub reserved2: Option<String>,
}

/// F0701 `<VoidInvoice>` (flat).
#[derive(Debug, Clone, PartialEq)]
pub struct VoidInvoice {
    pub number: InvoiceNumber,
    pub invoice_date: MigDate,
    pub buyer_id: BuyerId,
    pub seller_id: Ban,
    pub void_date: MigDate,
    pub void_time: MigTime,
    pub reason: String,
    pub remark: Option<String>,
    pub reserved1: Option<String>,
    pub reserved2: Option<String>,
}

/// G0401 `<Allowance>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowance {
    pub number: String,
    pub date: MigDate,
    pub seller: Role<Ban>,
    pub buyer: Role<BuyerId>,
    /// Always `2` (issued by the seller): MIG 4.1 fixes it for G0401.
    pub allowance_type: String,
    pub original_seller_id: Option<Ban>,
    pub original_buyer_id: Option<Ban>,
    pub items: Vec<AllowanceItem>,
    pub tax_amount: Decimal,
    pub total_amount: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AllowanceItem {
    pub row: usize,
    pub original_invoice_date: MigDate,
    pub original_invoice_number: InvoiceNumber,
    pub original_sequence_number: Option<String>,
    pub original_description: String,
    pub quantity: Decimal,
    pub unit: Option<String>,
    pub unit_price: Decimal,
    pub amount: Decimal,
    pub tax: Decimal,
    pub allowance_sequence_number: String,
    pub tax_type: TaxType,
}

/// G0501 `<CancelAllowance>` (flat).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelAllowance {
    pub number: String,
    /// The cancelled allowance's type: `1` (buyer-issued) or `2` (seller-issued); `2` when the
    /// input leaves it out, since MIG 4.1 lets a G0401 be nothing else.
    pub allowance_type: String,
    pub allowance_date: MigDate,
    pub buyer_id: BuyerId,
    pub seller_id: Ban,
    pub cancel_date: MigDate,
    pub cancel_time: MigTime,
    pub reason: String,
    pub remark: Option<String>,
}

/// Any of the five messages. Variants differ in size; a batch holds at most 999, so boxing
/// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Invoice(Invoice),
    Cancel(CancelInvoice),
    Void(VoidInvoice),
    Allowance(Allowance),
    CancelAllowance(CancelAllowance),
}

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Invoice(_) => MessageType::F0401,
            Message::Cancel(_) => MessageType::F0501,
            Message::Void(_) => MessageType::F0701,
            Message::Allowance(_) => MessageType::G0401,
            Message::CancelAllowance(_) => MessageType::G0501,
        }
    }

    /// The document number the message is about (invoice or allowance number).
    pub fn number(&self) -> &str {
        match self {
            Message::Invoice(m) => m.number.as_str(),
            Message::Cancel(m) => m.number.as_str(),
            Message::Void(m) => m.number.as_str(),
            Message::Allowance(m) => &m.number,
            Message::CancelAllowance(m) => &m.number,
        }
    }

    pub fn seller(&self) -> &Ban {
        match self {
            Message::Invoice(m) => &m.seller.identifier,
            Message::Cancel(m) => &m.seller_id,
            Message::Void(m) => &m.seller_id,
            Message::Allowance(m) => &m.seller.identifier,
            Message::CancelAllowance(m) => &m.seller_id,
        }
    }

    /// The date of the document the message is about (invoice or allowance date).
    pub fn document_date(&self) -> MigDate {
        match self {
            Message::Invoice(m) => m.date,
            Message::Cancel(m) => m.invoice_date,
            Message::Void(m) => m.invoice_date,
            Message::Allowance(m) => m.date,
            Message::CancelAllowance(m) => m.allowance_date,
        }
    }

    /// The untaxed amount the store keeps: an invoice's sales, an allowance's total.
    pub fn untaxed_amount(&self) -> Option<Decimal> {
        match self {
            Message::Invoice(m) => m
                .amount
                .sales
                .checked_add(m.amount.free_tax_sales)?
                .checked_add(m.amount.zero_tax_sales),
            Message::Allowance(m) => Some(m.total_amount),
            _ => None,
        }
    }
}

/// Why one field's value is refused, and whether that is a platform rule.
struct Refusal {
    reason: String,
    rule: Option<PlatformRule>,
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
struct IdCheck {
    min_len: usize,
    turnkey_digits: bool,
}

const ROLE_ID: IdCheck = IdCheck {
    min_len: 8,
    turnkey_digits: false,
};
const F0401_BUYER: IdCheck = IdCheck {
    min_len: 8,
    turnkey_digits: true,
};
const FLAT_ID: IdCheck = IdCheck {
    min_len: 0,
    turnkey_digits: false,
};

fn id_refusal(s: &str, reason: String, check: IdCheck) -> Refusal {
    let n = s.encode_utf16().count();
    let xsd = n > 10 || n < check.min_len;
    let turnkey = check.turnkey_digits && !s.bytes().all(|b| b.is_ascii_digit());
    Refusal {
        rule: (!xsd && !turnkey).then_some(PlatformRule::Ban),
        reason,
    }
}

/// A business id.
fn ban(check: IdCheck) -> impl Fn(&str) -> Result<Ban, Refusal> {
    move |s| Ban::parse(s).map_err(|r| id_refusal(s, r, check))
}

/// A buyer id: a business id or the consumer's ten zeros.
fn buyer_id(check: IdCheck) -> impl Fn(&str) -> Result<BuyerId, Refusal> {
    move |s| BuyerId::parse(s).map_err(|r| id_refusal(s, r, check))
}

/// A date: its shape is the XSD's, whether it exists only the platform checks.
fn mig_date(s: &str) -> Result<MigDate, Refusal> {
    MigDate::parse(s).map_err(|reason| Refusal {
        rule: MigDate::is_calendar_error(&reason).then_some(PlatformRule::Dates),
        reason,
    })
}

/// A time: the XSD's `xs:time` takes 24:00:00, which the platform does not.
fn mig_time(s: &str) -> Result<MigTime, Refusal> {
    MigTime::parse(s).map_err(|reason| Refusal {
        rule: (s == "24:00:00").then_some(PlatformRule::Dates),
        reason,
    })
}

/// An amount the XSD lets be negative but the platform does not (the invoice's exempt and
/// zero-rated sales).
fn platform_nonnegative(rule: PlatformRule) -> impl Fn(&str) -> Result<Decimal, Refusal> {
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
struct Fields<'a> {
    cells: &'a BTreeMap<String, Cell>,
    row: usize,
    prefix: &'a str,
    /// Set for a message's header fields: where a missing one would be.
    header: Option<&'a RawMessage>,
    used: BTreeSet<&'static str>,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Fields<'a> {
    fn new(
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
    fn header(raw: &'a RawMessage, problems: &'a mut Vec<Problem>) -> Self {
        Fields {
            header: Some(raw),
            ..Fields::new(&raw.fields, raw.row, &raw.display_prefix, problems)
        }
    }

    fn cell(&mut self, key: &'static str) -> Option<&'a Cell> {
        self.used.insert(key);
        self.cells.get(key).filter(|c| !c.value.trim().is_empty())
    }

    fn problem(&mut self, key: &str, cell: Option<&Cell>, refusal: impl Into<Refusal>) {
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
    fn req<T, E: Into<Refusal>>(
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
    fn opt<T, E: Into<Refusal>>(
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
    fn filled(&self, key: &str) -> bool {
        self.cells
            .get(key)
            .is_some_and(|c| !c.value.trim().is_empty())
    }

    fn text(&mut self, key: &'static str, max: usize) -> Option<String> {
        self.req(key, |s| text(s, max))
    }

    fn opt_text(&mut self, key: &'static str, max: usize) -> Result<Option<String>, ()> {
        self.opt(key, |s| text(s, max))
    }

    fn one_of(&mut self, key: &'static str, allowed: &'static [&'static str]) -> Option<String> {
        self.req(key, |s| one_of(s, allowed))
    }

    fn opt_one_of(
        &mut self,
        key: &'static str,
        allowed: &'static [&'static str],
    ) -> Result<Option<String>, ()> {
        self.opt(key, |s| one_of(s, allowed))
    }

    fn amount(&mut self, key: &'static str) -> Option<Decimal> {
        self.req(key, |s| parse_amount(s, 7))
    }

    /// Reports every filled field this message type has no place for.
    fn finish(self, message_type: MessageType) {
        let cells = self.cells;
        let mut extra = Vec::new();
        for (key, cell) in cells {
            if !cell.value.trim().is_empty()
                && !self.used.contains(key.as_str())
                && !super::raw::META_FIELDS.contains(&key.as_str())
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
fn text(s: &str, max: usize) -> Result<String, String> {
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

fn one_of(s: &str, allowed: &'static [&'static str]) -> Result<String, String> {
    if allowed.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("must be one of {}", allowed.join(", ")))
    }
}

fn digits(s: &str, min: usize, max: usize) -> Result<String, String> {
    if (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("must be {min} to {max} digits"))
    }
}

fn role_ban(f: &mut Fields, who: &'static [&'static str; 9]) -> Option<Role<Ban>> {
    let id = f.req(who[0], ban(ROLE_ID));
    role_rest(f, who, id)
}

fn role_buyer(
    f: &mut Fields,
    who: &'static [&'static str; 9],
    check: IdCheck,
) -> Option<Role<BuyerId>> {
    let id = f.req(who[0], buyer_id(check));
    role_rest(f, who, id)
}

fn role_rest<Id>(
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

const SELLER: [&str; 9] = [
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
const BUYER: [&str; 9] = [
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

/// Builds a typed message from raw fields, or returns every field problem found.
///
/// `legacy` marks rows written for MIG 3.x / 4.0: their product lines may lack the item
/// `TaxType`, which 4.1 requires; it is taken from the invoice's own tax type when that is
/// not mixed.
pub fn build(ty: MessageType, legacy: bool, raw: &RawMessage) -> Result<Message, Vec<Problem>> {
    let mut problems = Vec::new();
    let message = match ty {
        MessageType::F0401 => build_invoice(raw, legacy, &mut problems).map(Message::Invoice),
        MessageType::F0501 => build_cancel(raw, &mut problems).map(Message::Cancel),
        MessageType::F0701 => build_void(raw, &mut problems).map(Message::Void),
        MessageType::G0401 => build_allowance(raw, &mut problems).map(Message::Allowance),
        MessageType::G0501 => {
            build_cancel_allowance(raw, &mut problems).map(Message::CancelAllowance)
        }
    };
    match message {
        Some(m) if problems.is_empty() => Ok(m),
        _ => {
            if problems.is_empty() {
                problems.push(Problem {
                    rule: None,
                    row: raw.row,
                    field: String::new(),
                    value: String::new(),
                    reason: "could not be read".into(),
                });
            }
            Err(problems)
        }
    }
}

/// G0401's AllowanceType: MIG 4.1 fixes it to `2` (the XSD's `fixed="2"`); left out, it is 2.
fn allowance_type_41(f: &mut Fields) -> Option<String> {
    f.opt("AllowanceType", |s| {
        if s == "2" {
            Ok(s.to_string())
        } else {
            Err("must be 2 (issued by the seller): MIG 4.1 allows no other AllowanceType in a G0401")
        }
    })
    .map(|v| v.unwrap_or_else(|| "2".to_string()))
    .ok()
}

/// The most lines (`ProductItem`) one F0401 or G0401 may have (the XSD's `maxOccurs`); the
/// readers already stop keeping lines beyond it.
const MAX_LINES: usize = super::read::MAX_ITEMS;

/// Refuses more lines than the XSD allows.
fn too_many_lines(raw: &RawMessage, problems: &mut Vec<Problem>) {
    if raw.items.len() > MAX_LINES {
        problems.push(Problem {
            rule: None,
            row: raw.row,
            field: format!("{}Details", raw.display_prefix),
            value: raw.items.len().to_string(),
            reason: format!(
                "has {} lines; the XSD allows at most {MAX_LINES}",
                raw.items.len()
            ),
        });
    }
}

fn no_items(raw: &RawMessage, ty: MessageType, problems: &mut Vec<Problem>) {
    for item in &raw.items {
        for cell in item.fields.values().filter(|c| !c.value.trim().is_empty()) {
            problems.push(Problem {
                rule: None,
                row: cell.row,
                field: cell.display.clone(),
                value: cell.value.clone(),
                reason: format!("a {ty} message has no product lines"),
            });
        }
    }
}

fn build_invoice(raw: &RawMessage, legacy: bool, problems: &mut Vec<Problem>) -> Option<Invoice> {
    let mut f = Fields::header(raw, problems);
    let number = f.req("InvoiceNumber", InvoiceNumber::parse);
    let date = f.req("InvoiceDate", mig_date);
    let time = f.req("InvoiceTime", mig_time);
    if !f.filled("Seller.Address") {
        f.problem(
            "Seller.Address",
            None,
            "is required: Turnkey's program check refuses an F0401 without it (\"Seller.Address\" is invalid), although the XSD makes it optional",
        );
    }
    let seller = role_ban(&mut f, &SELLER);
    let buyer = role_buyer(&mut f, &BUYER, F0401_BUYER);
    let buyer_remark = f.opt_one_of("BuyerRemark", &["1", "2", "3", "4"]);
    let main_remark = f.opt_text("MainRemark", 200);
    let customs = f.opt_one_of("CustomsClearanceMark", &["1", "2"]);
    let category = f.opt_text("Category", 2);
    let relate = f.opt_text("RelateNumber", 20);
    let invoice_type = f.one_of("InvoiceType", &["07", "08"]);
    let group_mark = f.opt_one_of("GroupMark", &["*"]);
    let donate = f.req("DonateMark", |s| match s {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err("must be 0 or 1".to_string()),
    });
    let carrier_type = f.opt_text("CarrierType", 6);
    let carrier_id1 = f.opt_text("CarrierId1", 400);
    let carrier_id2 = f.opt_text("CarrierId2", 400);
    let print = f.req("PrintMark", |s| match s {
        "Y" => Ok(true),
        "N" => Ok(false),
        _ => Err("must be Y or N".to_string()),
    });
    let npoban = f.opt("NPOBAN", |s| {
        digits(s, 3, 7).map_err(|reason| Refusal {
            // The XSD allows up to 10 characters of anything.
            rule: (s.encode_utf16().count() <= 10).then_some(PlatformRule::Carrier),
            reason,
        })
    });
    let random = f.opt("RandomNumber", RandomNumber::parse);
    let bonded = f.opt_one_of("BondedAreaConfirm", &["1", "2", "3", "4"]);
    let zero_reason = f.opt_one_of(
        "ZeroTaxRateReason",
        &["71", "72", "73", "74", "75", "76", "77", "78", "79"],
    );
    let reserved1 = f.opt_text("Reserved1", 20);
    let reserved2 = f.opt_text("Reserved2", 100);
    // Amount
    let sales = f.amount("SalesAmount");
    let free = f.req(
        "FreeTaxSalesAmount",
        platform_nonnegative(PlatformRule::Totals),
    );
    let zero = f.req(
        "ZeroTaxSalesAmount",
        platform_nonnegative(PlatformRule::Totals),
    );
    let tax_type = f.req("TaxType", TaxType::parse);
    let tax_rate = f.req("TaxRate", |s| {
        let d = parse_amount(s, 7)?;
        let allowed = ["0", "0.01", "0.02", "0.05", "0.15", "0.25"];
        if allowed.contains(&format_amount(&d).as_str()) {
            Ok(d)
        } else {
            Err("must be one of 0, 0.01, 0.02, 0.05, 0.15, 0.25".to_string())
        }
    });
    let tax_amount = f.req("TaxAmount", |s| parse_amount(s, 0));
    let total = f.amount("TotalAmount");
    let discount = f.opt("DiscountAmount", |s| parse_amount(s, 7));
    let orig_currency = f.opt("OriginalCurrencyAmount", |s| parse_amount(s, 7));
    let exchange = f.opt("ExchangeRate", |s| {
        let d = parse_amount(s, 5)?;
        let int_digits = d.trunc().to_string().trim_start_matches('0').len();
        if int_digits + d.scale() as usize > 13 {
            Err("has more than 13 digits (at most 8 before the point and 5 after)".to_string())
        } else {
            Ok(d)
        }
    });
    let currency = f.opt("Currency", |s| {
        if CURRENCY_CODES.contains(&s) {
            Ok(s.to_string())
        } else {
            Err("must be a currency code of the official MIG 4.1 list (CurrencyCodeEnum), like USD or JPY".to_string())
        }
    });
    f.finish(MessageType::F0401);

    let default_item_tax = match (legacy, tax_type) {
        (true, Some(t)) if t != TaxType::Mixed => Some(t),
        _ => None,
    };
    let mut items = Vec::new();
    if raw.items.is_empty() {
        problems.push(Problem {
            rule: None,
            row: raw.row,
            field: format!("{}Details", raw.display_prefix),
            value: String::new(),
            reason: "an F0401 invoice needs at least one product line".into(),
        });
    }
    too_many_lines(raw, problems);
    for item in &raw.items {
        if let Some(it) = build_invoice_item(item, default_item_tax, problems) {
            items.push(it);
        }
    }
    if items.len() != raw.items.len() {
        return None;
    }

    let carrier = match (carrier_type.ok()?, carrier_id1.ok()?, carrier_id2.ok()?) {
        (None, None, None) => None,
        (Some(t), Some(a), Some(b)) => Some(Carrier {
            carrier_type: t,
            id1: a,
            id2: b,
        }),
        _ => {
            let given = ["CarrierType", "CarrierId1", "CarrierId2"]
                .iter()
                .find_map(|k| raw.get(k).filter(|c| !c.value.trim().is_empty()));
            let (row, field, value) = match given {
                Some(c) => (c.row, c.display.clone(), c.value.clone()),
                None => (raw.row, raw.display_of("CarrierType"), String::new()),
            };
            problems.push(Problem {
                rule: Some(PlatformRule::Carrier),
                row,
                field,
                value,
                reason: "CarrierType, CarrierId1 and CarrierId2 must be given together".into(),
            });
            return None;
        }
    };

    Some(Invoice {
        number: number?,
        date: date?,
        time: time?,
        seller: seller?,
        buyer: buyer?,
        buyer_remark: buyer_remark.ok()?,
        main_remark: main_remark.ok()?,
        customs_clearance_mark: customs.ok()?,
        category: category.ok()?,
        relate_number: relate.ok()?,
        invoice_type: invoice_type?,
        group_mark: group_mark.ok()?,
        donate: donate?,
        carrier,
        print: print?,
        npoban: npoban.ok()?,
        random_number: random.ok()?,
        bonded_area_confirm: bonded.ok()?,
        zero_tax_rate_reason: zero_reason.ok()?,
        reserved1: reserved1.ok()?,
        reserved2: reserved2.ok()?,
        items,
        amount: InvoiceAmount {
            sales: sales?,
            free_tax_sales: free?,
            zero_tax_sales: zero?,
            tax_type: tax_type?,
            tax_rate: tax_rate?,
            tax_amount: tax_amount?,
            total: total?,
            discount: discount.ok()?,
            original_currency_amount: orig_currency.ok()?,
            exchange_rate: exchange.ok()?,
            currency: currency.ok()?,
        },
    })
}

fn build_invoice_item(
    item: &RawItem,
    default_tax: Option<TaxType>,
    problems: &mut Vec<Problem>,
) -> Option<InvoiceItem> {
    let mut f = Fields::new(&item.fields, item.row, &item.display_prefix, problems);
    // A product line may be negative (a discount line); the invoice's Amount block may not.
    let description = f.text("Description", 500);
    let quantity = f.req("Quantity", |s| parse_signed_amount(s, 7));
    let unit = f.opt_text("Unit", 6);
    let unit_price = f.req("UnitPrice", |s| parse_signed_amount(s, 7));
    let tax_type = match default_tax {
        Some(t) => f
            .opt("TaxType", TaxType::parse)
            .map(|o| o.unwrap_or(t))
            .ok(),
        None => f.req("TaxType", TaxType::parse),
    };
    let tax_type = match tax_type {
        Some(TaxType::Mixed) => {
            let cell = item.fields.get("TaxType");
            f.problem(
                "TaxType",
                cell,
                "a product line is 1, 2, 3 or 4; 9 (mixed) is for the invoice",
            );
            None
        }
        t => t,
    };
    let amount = f.req("Amount", |s| parse_signed_amount(s, 7));
    let seq = f.text("SequenceNumber", 4);
    let remark = f.opt_text("Remark", 120);
    let relate = f.opt_text("RelateNumber", 50);
    f.finish(MessageType::F0401);
    Some(InvoiceItem {
        row: item.row,
        description: description?,
        quantity: quantity?,
        unit: unit.ok()?,
        unit_price: unit_price?,
        tax_type: tax_type?,
        amount: amount?,
        sequence_number: seq?,
        remark: remark.ok()?,
        relate_number: relate.ok()?,
    })
}

fn build_cancel(raw: &RawMessage, problems: &mut Vec<Problem>) -> Option<CancelInvoice> {
    let mut f = Fields::header(raw, problems);
    let number = f.req("CancelInvoiceNumber", InvoiceNumber::parse);
    let invoice_date = f.req("InvoiceDate", mig_date);
    let buyer_id = f.req("BuyerId", buyer_id(FLAT_ID));
    let seller_id = f.req("SellerId", ban(FLAT_ID));
    let cancel_date = f.req("CancelDate", mig_date);
    let cancel_time = f.req("CancelTime", mig_time);
    let reason = f.text("CancelReason", 20);
    let rtdn = f.opt_text("ReturnTaxDocumentNumber", 60);
    let remark = f.opt_text("Remark", 200);
    let reserved1 = f.opt_text("Reserved1", 20);
    let reserved2 = f.opt_text("Reserved2", 100);
    f.finish(MessageType::F0501);
    no_items(raw, MessageType::F0501, problems);
    Some(CancelInvoice {
        number: number?,
        invoice_date: invoice_date?,
        buyer_id: buyer_id?,
        seller_id: seller_id?,
        cancel_date: cancel_date?,
        cancel_time: cancel_time?,
        reason: reason?,
        return_tax_document_number: rtdn.ok()?,
        remark: remark.ok()?,
        reserved1: reserved1.ok()?,
        reserved2: reserved2.ok()?,
    })
}

fn build_void(raw: &RawMessage, problems: &mut Vec<Problem>) -> Option<VoidInvoice> {
    let mut f = Fields::header(raw, problems);
    let number = f.req("VoidInvoiceNumber", InvoiceNumber::parse);
    let invoice_date = f.req("InvoiceDate", mig_date);
    let buyer_id = f.req("BuyerId", buyer_id(FLAT_ID));
    let seller_id = f.req("SellerId", ban(FLAT_ID));
    let void_date = f.req("VoidDate", mig_date);
    let void_time = f.req("VoidTime", mig_time);
    let reason = f.text("VoidReason", 20);
    let remark = f.opt_text("Remark", 200);
    let reserved1 = f.opt_text("Reserved1", 20);
    let reserved2 = f.opt_text("Reserved2", 100);
    f.finish(MessageType::F0701);
    no_items(raw, MessageType::F0701, problems);
    Some(VoidInvoice {
        number: number?,
        invoice_date: invoice_date?,
        buyer_id: buyer_id?,
        seller_id: seller_id?,
        void_date: void_date?,
        void_time: void_time?,
        reason: reason?,
        remark: remark.ok()?,
        reserved1: reserved1.ok()?,
        reserved2: reserved2.ok()?,
    })
}

fn build_allowance(raw: &RawMessage, problems: &mut Vec<Problem>) -> Option<Allowance> {
    let mut f = Fields::header(raw, problems);
    let number = f.text("AllowanceNumber", 16);
    let date = f.req("AllowanceDate", mig_date);
    let seller = role_ban(&mut f, &SELLER);
    let buyer = role_buyer(&mut f, &BUYER, ROLE_ID);
    let allowance_type = allowance_type_41(&mut f);
    let original_seller = f.opt("OriginalInvoiceSellerId", ban(FLAT_ID));
    let original_buyer = f.opt("OriginalInvoiceBuyerId", ban(FLAT_ID));
    let tax_amount = f.req("TaxAmount", |s| parse_amount(s, 0));
    let total_amount = f.amount("TotalAmount");
    f.finish(MessageType::G0401);
    if raw.items.is_empty() {
        problems.push(Problem {
            rule: None,
            row: raw.row,
            field: format!("{}Details", raw.display_prefix),
            value: String::new(),
            reason: "a G0401 allowance needs at least one line".into(),
        });
    }
    too_many_lines(raw, problems);
    let mut items = Vec::new();
    for item in &raw.items {
        let mut f = Fields::new(&item.fields, item.row, &item.display_prefix, problems);
        let oid = f.req("OriginalInvoiceDate", mig_date);
        let oin = f.req("OriginalInvoiceNumber", InvoiceNumber::parse);
        let osn = f.opt_text("OriginalSequenceNumber", 4);
        let odesc = f.text("OriginalDescription", 500);
        // The XSD lets allowance lines be negative; the platform does not (see the rules).
        let qty = f.req("Quantity", |s| parse_signed_amount(s, 7));
        let unit = f.opt_text("Unit", 6);
        let price = f.req("UnitPrice", |s| parse_signed_amount(s, 7));
        let amount = f.req("Amount", |s| parse_signed_amount(s, 7));
        let tax = f.req("Tax", |s| parse_signed_amount(s, 0));
        let seq = f.text("AllowanceSequenceNumber", 4);
        let tax_type = f.req("TaxType", |s| match TaxType::parse(s)? {
            TaxType::Mixed => Err(Refusal {
                reason:
                    "an allowance line is 1 (taxable), 2 (zero-rated), 3 (exempt) or 4 (special)"
                        .to_string(),
                rule: Some(PlatformRule::InvoiceTypeTaxType),
            }),
            t => Ok(t),
        });
        f.finish(MessageType::G0401);
        let built = (|| {
            Some(AllowanceItem {
                row: item.row,
                original_invoice_date: oid?,
                original_invoice_number: oin?,
                original_sequence_number: osn.ok()?,
                original_description: odesc?,
                quantity: qty?,
                unit: unit.ok()?,
                unit_price: price?,
                amount: amount?,
                tax: tax?,
                allowance_sequence_number: seq?,
                tax_type: tax_type?,
            })
        })();
        if let Some(it) = built {
            items.push(it);
        }
    }
    if items.len() != raw.items.len() {
        return None;
    }
    Some(Allowance {
        number: number?,
        date: date?,
        seller: seller?,
        buyer: buyer?,
        allowance_type: allowance_type?,
        original_seller_id: original_seller.ok()?,
        original_buyer_id: original_buyer.ok()?,
        items,
        tax_amount: tax_amount?,
        total_amount: total_amount?,
    })
}

fn build_cancel_allowance(
    raw: &RawMessage,
    problems: &mut Vec<Problem>,
) -> Option<CancelAllowance> {
    let mut f = Fields::header(raw, problems);
    let number = f.text("CancelAllowanceNumber", 16);
    let allowance_type = f.opt_one_of("AllowanceType", &["1", "2"]);
    let allowance_date = f.req("AllowanceDate", mig_date);
    let buyer_id = f.req("BuyerId", buyer_id(FLAT_ID));
    let seller_id = f.req("SellerId", ban(FLAT_ID));
    let cancel_date = f.req("CancelDate", mig_date);
    let cancel_time = f.req("CancelTime", mig_time);
    let reason = f.text("CancelReason", 20);
    let remark = f.opt_text("Remark", 200);
    f.finish(MessageType::G0501);
    no_items(raw, MessageType::G0501, problems);
    Some(CancelAllowance {
        number: number?,
        allowance_type: allowance_type.ok()?.unwrap_or_else(|| "2".into()),
        allowance_date: allowance_date?,
        buyer_id: buyer_id?,
        seller_id: seller_id?,
        cancel_date: cancel_date?,
        cancel_time: cancel_time?,
        reason: reason?,
        remark: remark.ok()?,
    })
}
