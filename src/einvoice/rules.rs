//! Rules that relate several fields of one message: the checks Turnkey or the platform would
//! otherwise fail later, often silently (a consumer invoice with no print, carrier or donation
//! lands in Turnkey's ERR folder with no message to the sender).
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
    match message {
        Message::Invoice(m) => invoice(m, &mut out),
        Message::Cancel(m) => {
            if m.cancel_date < m.invoice_date {
                out.field("CancelDate", "is before the invoice date");
            }
        }
        Message::Void(m) => {
            if m.void_date < m.invoice_date {
                out.field("VoidDate", "is before the invoice date");
            }
        }
        Message::Allowance(m) => allowance(m, &mut out),
        Message::CancelAllowance(m) => {
            if m.cancel_date < m.allowance_date {
                out.field("CancelDate", "is before the allowance date");
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
    fn field(&mut self, key: &str, reason: impl Into<String>) {
        let (row, field, value) = match self.raw.get(key) {
            Some(c) => (c.row, c.display.clone(), c.value.clone()),
            None => (
                self.raw.row,
                format!("{}{}", self.raw.display_prefix, key),
                String::new(),
            ),
        };
        self.problems.push(Problem {
            row,
            field,
            value,
            reason: reason.into(),
        });
    }

    fn item(&mut self, index: usize, key: &str, reason: impl Into<String>) {
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

fn invoice(m: &Invoice, out: &mut Out) {
    let consumer = m.buyer.identifier.is_consumer();

    // Print, carrier, donation (三選一) and their companions.
    if consumer && !m.print && m.carrier.is_none() && !m.donate {
        out.field(
            "PrintMark",
            "a consumer invoice needs PrintMark=Y, a carrier or a donation; Turnkey moves it to ERR otherwise",
        );
    }
    if m.donate && m.npoban.is_none() {
        out.field("NPOBAN", "is required when DonateMark is 1");
    }
    if !m.donate && m.npoban.is_some() {
        out.field("NPOBAN", "is only allowed when DonateMark is 1");
    }
    if m.donate && !consumer {
        out.field(
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
        if !consumer && c.carrier_type != "3J0002" {
            out.field(
                "CarrierType",
                "an invoice to a business may only use the mobile barcode carrier 3J0002",
            );
        }
        if c.carrier_type == "3J0002" {
            for (key, v) in [("CarrierId1", &c.id1), ("CarrierId2", &c.id2)] {
                if !is_mobile_barcode(v) {
                    out.field(key, "a mobile barcode (3J0002) is / followed by 7 characters of 0-9, A-Z, + - .");
                }
            }
        }
    }

    // Tax type, rate, buckets.
    let a = &m.amount;
    let rate = format_amount(&a.tax_rate);
    let zero = Decimal::ZERO;
    match a.tax_type {
        TaxType::Taxable | TaxType::Mixed if rate != "0.05" => {
            out.field("TaxRate", "must be 0.05 for TaxType 1 and 9")
        }
        TaxType::ZeroRated | TaxType::Exempt if !a.tax_rate.is_zero() => {
            out.field("TaxRate", "must be 0 for TaxType 2 and 3")
        }
        TaxType::Special if a.tax_rate.is_zero() => {
            out.field("TaxRate", "a special rate (TaxType 4) is not 0")
        }
        _ => {}
    }
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
            out.field(key, format!("must be 0 for TaxType {}", a.tax_type.code()));
        }
    }
    if a.tax_type == TaxType::Mixed && buckets.iter().filter(|(_, v)| *v > zero).count() < 2 {
        out.field(
            "TaxType",
            "9 (mixed) needs at least two of the sales buckets above 0",
        );
    }
    match a.tax_type {
        TaxType::ZeroRated | TaxType::Exempt => {
            if !a.tax_amount.is_zero() {
                out.field("TaxAmount", "must be 0 when nothing is taxed");
            }
        }
        _ => {
            let expected = a.sales.checked_mul(a.tax_rate).unwrap_or(Decimal::MAX);
            let inclusive_b2c = consumer && a.tax_amount.is_zero();
            if !under_one(a.tax_amount, expected) && !inclusive_b2c {
                out.field(
                    "TaxAmount",
                    format!(
                        "should be SalesAmount × TaxRate = {} (rounded to a whole number)",
                        format_amount(&expected)
                    ),
                );
            }
        }
    }
    let zero_rated = a.tax_type == TaxType::ZeroRated
        || (a.tax_type == TaxType::Mixed && a.zero_tax_sales > zero);
    if zero_rated && m.customs_clearance_mark.is_none() {
        out.field("CustomsClearanceMark", "is required for zero-rated sales");
    }
    let expected_total = a
        .sales
        .checked_add(a.free_tax_sales)
        .and_then(|v| v.checked_add(a.zero_tax_sales))
        .and_then(|v| v.checked_add(a.tax_amount));
    let Some(expected_total) = expected_total else {
        out.field("TotalAmount", "the amounts are too large to add up");
        return;
    };
    if a.total != expected_total {
        out.field(
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
                i,
                "Quantity",
                "Quantity × UnitPrice is too large to compute",
            ),
            Some(expected) if !near(it.amount, expected, half()) => out.item(
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
            out.item(i, "SequenceNumber", "is used twice in this invoice");
        }
        if a.tax_type != TaxType::Mixed && it.tax_type != a.tax_type {
            out.item(
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
                out.item(i, "Amount", "the lines add up to more than can be computed");
                return;
            }
        }
    }
    // A consumer invoice may list tax-inclusive prices: then the taxed lines add up to
    // SalesAmount + TaxAmount instead of SalesAmount.
    let inclusive = a.sales.checked_add(a.tax_amount).unwrap_or(Decimal::MAX);
    let taxed_ok = under_one(taxed, a.sales) || (consumer && under_one(taxed, inclusive));
    if !taxed_ok {
        out.field(
            "SalesAmount",
            format!("the taxed lines add up to {}", format_amount(&taxed)),
        );
    }
    if !under_one(free, a.free_tax_sales) {
        out.field(
            "FreeTaxSalesAmount",
            format!("the exempt lines add up to {}", format_amount(&free)),
        );
    }
    if !under_one(zero_sum, a.zero_tax_sales) {
        out.field(
            "ZeroTaxSalesAmount",
            format!(
                "the zero-rated lines add up to {}",
                format_amount(&zero_sum)
            ),
        );
    }
}

fn allowance(m: &Allowance, out: &mut Out) {
    let zero = Decimal::ZERO;
    let mut seen = BTreeSet::new();
    let (mut amount, mut tax) = (zero, zero);
    for (i, it) in m.items.iter().enumerate() {
        match product(it.quantity, it.unit_price) {
            None => out.item(
                i,
                "Quantity",
                "Quantity × UnitPrice is too large to compute",
            ),
            Some(expected) if !near(it.amount, expected, half()) => out.item(
                i,
                "Amount",
                format!(
                    "should be Quantity × UnitPrice = {}",
                    format_amount(&expected)
                ),
            ),
            Some(_) => {}
        }
        if !seen.insert(it.allowance_sequence_number.as_str()) {
            out.item(
                i,
                "AllowanceSequenceNumber",
                "is used twice in this allowance",
            );
        }
        if matches!(it.tax_type, TaxType::ZeroRated | TaxType::Exempt) && !it.tax.is_zero() {
            out.item(i, "Tax", "must be 0 for a zero-rated or exempt line");
        }
        if it.original_invoice_date > m.date {
            out.item(i, "OriginalInvoiceDate", "is after the allowance date");
        }
        match (amount.checked_add(it.amount), tax.checked_add(it.tax)) {
            (Some(a), Some(t)) => (amount, tax) = (a, t),
            _ => {
                out.item(i, "Amount", "the lines add up to more than can be computed");
                return;
            }
        }
    }
    if !under_one(m.total_amount, amount) {
        out.field(
            "TotalAmount",
            format!("the lines' Amount add up to {}", format_amount(&amount)),
        );
    }
    if !under_one(m.tax_amount, tax) {
        out.field(
            "TaxAmount",
            format!("the lines' Tax add up to {}", format_amount(&tax)),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::einvoice::{check_batch, ReadOptions, TextEncoding};

    #[test]
    fn huge_amounts_are_a_row_problem_not_a_panic() {
        let csv = "MessageType,InvoiceNumber,InvoiceDate,InvoiceTime,Seller.Identifier,Seller.Name,Buyer.Identifier,Buyer.Name,InvoiceType,DonateMark,PrintMark,Item.Description,Item.Quantity,Item.UnitPrice,Item.TaxType,Item.Amount,Item.SequenceNumber,SalesAmount,FreeTaxSalesAmount,ZeroTaxSalesAmount,TaxType,TaxRate,TaxAmount,TotalAmount\n\
                   F0401,AB00000001,20261126,10:00:00,28080623,S,0000000000,B,07,0,Y,x,99999999999999,999999999999999,1,99999999999999999999,1,99999999999999999999,99999999999999999999,0,9,0.05,1,1\n";
        let opts = ReadOptions {
            encoding: TextEncoding::Auto,
            zip: crate::einvoice::archive::ZipLimits {
                max_members: 1,
                max_member_bytes: 1,
                max_total_bytes: 1,
            },
            max_invoices: 999,
            default_tenant: "t".into(),
        };
        let v = check_batch("a.csv", csv.as_bytes(), &opts).unwrap();
        assert_eq!(v.accepted.len(), 0);
        assert!(!v.rejected[0].problems.is_empty());
    }
}
