//! Rules that relate several fields of one message: the checks Turnkey or the platform would
//! otherwise fail later, often silently (a consumer invoice with no print, carrier or donation
//! lands in Turnkey's ERR folder with no message to the sender).
//!
//! Each rule is one of two kinds. Those Turnkey applies itself (the official XSD or its
//! program check; the file would go to ERR) are reported with `rule: None`; those only the
//! platform applies after Turnkey has taken the file are tagged with their [`PlatformRule`],
//! which names its source. The README lists both with their sources.
//!
//! Tolerances: a line amount may differ from quantity × unit price by at most 0.5 (MIG amounts
//! are rounded to whole dollars by most point-of-sale systems); bucket sums and tax amounts may
//! differ from the computed value by less than 1; `TotalAmount` of an invoice must equal the
//! buckets plus tax exactly.

use std::collections::BTreeSet;

use rust_decimal::Decimal;

use super::model::*;
use super::raw::RawMessage;
use super::types::{format_amount, TaxType};

/// Every cross-field problem of a built message. `raw` supplies rows and spellings.
pub fn check(message: &Message, raw: &RawMessage) -> Vec<Problem> {
    let mut out = Out {
        raw,
        problems: Vec::new(),
    };
    use PlatformRule::Dates;
    match message {
        Message::Invoice(m) => invoice(m, &mut out),
        Message::Cancel(m) => {
            if m.cancel_date < m.invoice_date {
                out.platform(Dates, "CancelDate", "is before the invoice date");
            }
        }
        Message::Void(m) => {
            if m.void_date < m.invoice_date {
                out.platform(Dates, "VoidDate", "is before the invoice date");
            }
        }
        Message::Allowance(m) => allowance(m, &mut out),
        Message::CancelAllowance(m) => {
            if m.cancel_date < m.allowance_date {
                out.platform(Dates, "CancelDate", "is before the allowance date");
            }
        }
    }
    out.problems
}

struct Out<'a> {
    raw: &'a RawMessage,
    problems: Vec<Problem>,
}

impl Out<'_> {
    /// A rule Turnkey applies (XSD or program check).
    fn field(&mut self, key: &str, reason: impl Into<String>) {
        self.push(None, key, reason);
    }

    /// A rule only the platform applies.
    fn platform(&mut self, rule: PlatformRule, key: &str, reason: impl Into<String>) {
        self.push(Some(rule), key, reason);
    }

    fn push(&mut self, rule: Option<PlatformRule>, key: &str, reason: impl Into<String>) {
        let (row, field, value) = match self.raw.get(key) {
            Some(c) => (c.row, c.display.clone(), c.value.clone()),
            None => (self.raw.row, self.raw.display_of(key), String::new()),
        };
        self.problems.push(Problem {
            rule,
            row,
            field,
            value,
            reason: reason.into(),
        });
    }

    fn item(&mut self, rule: PlatformRule, index: usize, key: &str, reason: impl Into<String>) {
        let item = &self.raw.items[index];
        let (row, field, value) = match item.fields.get(key) {
            Some(c) => (c.row, c.display.clone(), c.value.clone()),
            None => (
                item.row,
                format!("{}{}", item.display_prefix, key),
                String::new(),
            ),
        };
        self.problems.push(Problem {
            rule: Some(rule),
            row,
            field,
            value,
            reason: reason.into(),
        });
    }
}

/// Quantity × unit price, or `None` when it does not fit a decimal (a hostile or broken row).
fn product(q: Decimal, p: Decimal) -> Option<Decimal> {
    q.checked_mul(p)
}

fn near(a: Decimal, b: Decimal, tolerance: Decimal) -> bool {
    a.checked_sub(b).is_some_and(|d| d.abs() <= tolerance)
}

fn half() -> Decimal {
    Decimal::new(5, 1)
}

fn under_one(a: Decimal, b: Decimal) -> bool {
    a.checked_sub(b).is_some_and(|d| d.abs() < Decimal::ONE)
}

fn is_mobile_barcode(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8
        && b[0] == b'/'
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase() || b"+-.".contains(c))
}

/// The mobile barcode (手機條碼), the only carrier a business buyer may use.
const MOBILE_BARCODE: &str = "3J0002";

/// Consumer buyer names Turnkey's program check refuses (placeholders, not names).
const PLACEHOLDER_NAMES: [&str; 4] = ["0", "00", "000", "0000"];

fn invoice(m: &Invoice, out: &mut Out) {
    use PlatformRule::*;
    let consumer = m.buyer.identifier.is_consumer();

    if consumer && PLACEHOLDER_NAMES.contains(&m.buyer.name.as_str()) {
        out.field(
            "Buyer.Name",
            "Turnkey refuses 0, 00, 000 or 0000 as a consumer buyer's name; write the name, or a word such as 消費者 when it is not known",
        );
    }

    // Print, carrier, donation: PrintMark Y means no carrier, except the mobile barcode
    // for a business buyer; PrintMark N needs a donation or a carrier (B2B too).
    match (&m.carrier, m.print) {
        (Some(c), true) if c.carrier_type != MOBILE_BARCODE || consumer => out.field(
            "PrintMark",
            "a printed invoice (PrintMark Y) has no carrier, except the mobile barcode 3J0002 for a business buyer; Turnkey refuses it",
        ),
        (None, false) if !m.donate => out.field(
            "PrintMark",
            "an invoice not printed (PrintMark N) needs a donation (DonateMark 1) or a carrier; Turnkey refuses it",
        ),
        _ => {}
    }
    if m.donate && m.npoban.is_none() {
        out.field("NPOBAN", "is required when DonateMark is 1");
    }
    if !m.donate && m.npoban.is_some() {
        out.field("NPOBAN", "is only allowed when DonateMark is 1");
    }
    if m.donate && !consumer {
        out.platform(
            Carrier,
            "DonateMark",
            "an invoice to a business (統一編號) cannot be donated",
        );
    }
    if m.donate && m.print {
        out.field(
            "PrintMark",
            "a donated invoice is not printed; PrintMark must be N",
        );
    }
    if let Some(c) = &m.carrier {
        if !consumer && c.carrier_type != MOBILE_BARCODE {
            out.platform(
                Carrier,
                "CarrierType",
                "an invoice to a business may only use the mobile barcode carrier 3J0002",
            );
        }
        if c.carrier_type == MOBILE_BARCODE {
            for (key, v) in [("CarrierId1", &c.id1), ("CarrierId2", &c.id2)] {
                if !is_mobile_barcode(v) {
                    out.platform(Carrier, key, "a mobile barcode (3J0002) is / followed by 7 characters of 0-9, A-Z, + - .");
                }
            }
        }
    }

    let a = &m.amount;
    let zero = Decimal::ZERO;

    // A consumer invoice's amounts are whole dollars (Turnkey's program check).
    if consumer {
        for (key, v) in [
            ("SalesAmount", a.sales),
            ("FreeTaxSalesAmount", a.free_tax_sales),
            ("ZeroTaxSalesAmount", a.zero_tax_sales),
            ("TaxAmount", a.tax_amount),
            ("TotalAmount", a.total),
        ] {
            if v.normalize().scale() > 0 {
                out.field(
                    key,
                    "a consumer invoice's amounts are whole numbers; Turnkey refuses decimals here",
                );
            }
        }
    }

    // Invoice type × tax type × rate.
    let rate = format_amount(&a.tax_rate);
    let special_invoice = m.invoice_type == "08";
    let type_ok = match a.tax_type {
        TaxType::Taxable => !special_invoice,
        TaxType::Special => special_invoice,
        TaxType::ZeroRated | TaxType::Exempt | TaxType::Mixed => true,
    };
    if !type_ok {
        out.platform(
            InvoiceTypeTaxType,
            "TaxType",
            format!(
                "InvoiceType {} (07 general, 08 special tax) cannot have TaxType {}: 07 takes 1, 2, 3 or 9, 08 takes 2, 3, 4 or 9",
                m.invoice_type,
                a.tax_type.code()
            ),
        );
    }
    match a.tax_type {
        TaxType::Taxable if rate != "0.05" => {
            out.platform(InvoiceTypeTaxType, "TaxRate", "must be 0.05 for TaxType 1")
        }
        TaxType::Mixed if !special_invoice && rate != "0.05" => out.platform(
            InvoiceTypeTaxType,
            "TaxRate",
            "must be 0.05 for TaxType 9 on a general-tax invoice (InvoiceType 07)",
        ),
        TaxType::ZeroRated | TaxType::Exempt if !a.tax_rate.is_zero() => out.platform(
            InvoiceTypeTaxType,
            "TaxRate",
            "must be 0 for TaxType 2 and 3",
        ),
        TaxType::Special | TaxType::Mixed if a.tax_rate.is_zero() => out.platform(
            InvoiceTypeTaxType,
            "TaxRate",
            "a special-tax rate (TaxType 4, or 9 on InvoiceType 08) is not 0",
        ),
        _ => {}
    }

    // Zero-rated sales name their customs route and reason (Turnkey's program check).
    if a.tax_type == TaxType::ZeroRated {
        if m.customs_clearance_mark.is_none() {
            out.field(
                "CustomsClearanceMark",
                "is required for a zero-rated invoice (TaxType 2); Turnkey refuses it otherwise",
            );
        }
        if m.zero_tax_rate_reason.is_none() {
            out.field(
                "ZeroTaxRateReason",
                "is required for a zero-rated invoice (TaxType 2); Turnkey refuses it otherwise",
            );
        }
    }
    if a.tax_type == TaxType::Mixed && a.zero_tax_sales > zero && m.customs_clearance_mark.is_none()
    {
        out.platform(
            Totals,
            "CustomsClearanceMark",
            "is required when part of the sales is zero-rated",
        );
    }

    // Buckets.
    let buckets = [
        ("SalesAmount", a.sales),
        ("FreeTaxSalesAmount", a.free_tax_sales),
        ("ZeroTaxSalesAmount", a.zero_tax_sales),
    ];
    let must_be_zero: &[&str] = match a.tax_type {
        TaxType::Taxable | TaxType::Special => &["FreeTaxSalesAmount", "ZeroTaxSalesAmount"],
        TaxType::ZeroRated => &["SalesAmount", "FreeTaxSalesAmount"],
        TaxType::Exempt => &["SalesAmount", "ZeroTaxSalesAmount"],
        TaxType::Mixed => &[],
    };
    for (key, v) in buckets {
        if must_be_zero.contains(&key) && v != zero {
            out.platform(
                Totals,
                key,
                format!("must be 0 for TaxType {}", a.tax_type.code()),
            );
        }
    }
    if a.tax_type == TaxType::Mixed && buckets.iter().filter(|(_, v)| *v > zero).count() < 2 {
        out.platform(
            Totals,
            "TaxType",
            "9 (mixed) needs at least two of the sales buckets above 0",
        );
    }

    // Tax. A consumer invoice states tax-inclusive amounts with TaxAmount 0 (every official
    // B2C sample does); a tax-exclusive one is refused rather than converted.
    if consumer {
        if !a.tax_amount.is_zero() {
            let inclusive = a.sales.checked_add(a.tax_amount).unwrap_or(Decimal::MAX);
            out.platform(
                ConsumerTaxInclusive,
                "TaxAmount",
                format!(
                    "a consumer invoice states tax-inclusive amounts with TaxAmount 0; write SalesAmount {} (sales plus tax) and TaxAmount 0, and the lines at their tax-inclusive prices",
                    format_amount(&inclusive)
                ),
            );
        }
    } else {
        match a.tax_type {
            TaxType::ZeroRated | TaxType::Exempt => {
                if !a.tax_amount.is_zero() {
                    out.platform(Totals, "TaxAmount", "must be 0 when nothing is taxed");
                }
            }
            _ => {
                let expected = a.sales.checked_mul(a.tax_rate).unwrap_or(Decimal::MAX);
                if !under_one(a.tax_amount, expected) {
                    out.platform(
                        Totals,
                        "TaxAmount",
                        format!(
                            "should be SalesAmount × TaxRate = {} (rounded to a whole number)",
                            format_amount(&expected)
                        ),
                    );
                }
            }
        }
    }
    let expected_total = a
        .sales
        .checked_add(a.free_tax_sales)
        .and_then(|v| v.checked_add(a.zero_tax_sales))
        .and_then(|v| v.checked_add(a.tax_amount));
    let Some(expected_total) = expected_total else {
        out.platform(Totals, "TotalAmount", "the amounts are too large to add up");
        return;
    };
    if a.total != expected_total {
        out.platform(
            Totals,
            "TotalAmount",
            format!(
                "must equal SalesAmount + FreeTaxSalesAmount + ZeroTaxSalesAmount + TaxAmount = {}",
                format_amount(&expected_total)
            ),
        );
    }

    // Lines.
    let mut seen = BTreeSet::new();
    let (mut taxed, mut free, mut zero_sum) = (zero, zero, zero);
    for (i, it) in m.items.iter().enumerate() {
        match product(it.quantity, it.unit_price) {
            None => out.item(
                Totals,
                i,
                "Quantity",
                "Quantity × UnitPrice is too large to compute",
            ),
            Some(expected) if !near(it.amount, expected, half()) => out.item(
                Totals,
                i,
                "Amount",
                format!(
                    "should be Quantity × UnitPrice = {}",
                    format_amount(&expected)
                ),
            ),
            Some(_) => {}
        }
        if !seen.insert(it.sequence_number.as_str()) {
            out.item(
                UniqueSequence,
                i,
                "SequenceNumber",
                "is used twice in this invoice",
            );
        }
        if a.tax_type != TaxType::Mixed && it.tax_type != a.tax_type {
            out.item(
                InvoiceTypeTaxType,
                i,
                "TaxType",
                format!("must match the invoice's TaxType {}", a.tax_type.code()),
            );
        }
        let bucket = match it.tax_type {
            TaxType::Taxable | TaxType::Special | TaxType::Mixed => &mut taxed,
            TaxType::Exempt => &mut free,
            TaxType::ZeroRated => &mut zero_sum,
        };
        match bucket.checked_add(it.amount) {
            Some(sum) => *bucket = sum,
            None => {
                out.item(
                    Totals,
                    i,
                    "Amount",
                    "the lines add up to more than can be computed",
                );
                return;
            }
        }
    }
    if !under_one(taxed, a.sales) {
        out.platform(
            Totals,
            "SalesAmount",
            format!("the taxed lines add up to {}", format_amount(&taxed)),
        );
    }
    if !under_one(free, a.free_tax_sales) {
        out.platform(
            Totals,
            "FreeTaxSalesAmount",
            format!("the exempt lines add up to {}", format_amount(&free)),
        );
    }
    if !under_one(zero_sum, a.zero_tax_sales) {
        out.platform(
            Totals,
            "ZeroTaxSalesAmount",
            format!(
                "the zero-rated lines add up to {}",
                format_amount(&zero_sum)
            ),
        );
    }
}

/// Allowance lines. A line's Amount need not be Quantity × UnitPrice: Turnkey and the
/// platform take it as stated (the official B2C sample is 1 × 20 with Amount 19).
fn allowance(m: &Allowance, out: &mut Out) {
    use PlatformRule::*;
    let zero = Decimal::ZERO;
    let mut seen = BTreeSet::new();
    let (mut amount, mut tax) = (zero, zero);
    for (i, it) in m.items.iter().enumerate() {
        if !seen.insert(it.allowance_sequence_number.as_str()) {
            out.item(
                UniqueSequence,
                i,
                "AllowanceSequenceNumber",
                "is used twice in this allowance",
            );
        }
        if it.amount <= zero {
            out.item(
                PositiveAllowance,
                i,
                "Amount",
                "an allowance line takes back an amount above 0",
            );
        }
        if it.tax < zero {
            out.item(
                PositiveAllowance,
                i,
                "Tax",
                "an allowance line's tax is not negative",
            );
        }
        if matches!(it.tax_type, TaxType::ZeroRated | TaxType::Exempt) && !it.tax.is_zero() {
            out.item(
                Totals,
                i,
                "Tax",
                "must be 0 for a zero-rated or exempt line",
            );
        }
        if it.original_invoice_date > m.date {
            out.item(
                Dates,
                i,
                "OriginalInvoiceDate",
                "is after the allowance date",
            );
        }
        match (amount.checked_add(it.amount), tax.checked_add(it.tax)) {
            (Some(a), Some(t)) => (amount, tax) = (a, t),
            _ => {
                out.item(
                    Totals,
                    i,
                    "Amount",
                    "the lines add up to more than can be computed",
                );
                return;
            }
        }
    }
    if !under_one(m.total_amount, amount) {
        out.platform(
            Totals,
            "TotalAmount",
            format!("the lines' Amount add up to {}", format_amount(&amount)),
        );
    }
    if !under_one(m.tax_amount, tax) {
        out.platform(
            Totals,
            "TaxAmount",
            format!("the lines' Tax add up to {}", format_amount(&tax)),
        );
    }
}

#[cfg(test)]
mod tests;
