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
mod tests {
    use crate::einvoice::{check_batch, ReadOptions, TextEncoding};

    #[test]
    fn huge_amounts_are_a_row_problem_not_a_panic() {
        let csv = "MessageType,InvoiceNumber,InvoiceDate,InvoiceTime,Seller.Identifier,Seller.Name,Seller.Address,Buyer.Identifier,Buyer.Name,InvoiceType,DonateMark,PrintMark,Item.Description,Item.Quantity,Item.UnitPrice,Item.TaxType,Item.Amount,Item.SequenceNumber,SalesAmount,FreeTaxSalesAmount,ZeroTaxSalesAmount,TaxType,TaxRate,TaxAmount,TotalAmount\n\
                   F0401,AB00000001,20261126,10:00:00,28080623,S,A,0000000000,B,07,0,Y,x,99999999999999,999999999999999,1,99999999999999999999,1,99999999999999999999,99999999999999999999,0,9,0.05,1,1\n";
        let opts = ReadOptions {
            encoding: TextEncoding::Auto,
            zip: crate::einvoice::archive::ZipLimits {
                max_members: 1,
                max_member_bytes: 1,
                max_total_bytes: 1,
            },
            max_invoices: 999,
            max_lines: 100_000,
            default_tenant: "t".into(),
        };
        let v = check_batch("a.csv", csv.as_bytes(), &opts).unwrap();
        assert_eq!(v.accepted.len(), 0);
        assert!(v.rejected[0]
            .problems
            .iter()
            .any(|p| p.field == "TotalAmount" || p.field == "Item.Quantity"));
    }

    use super::PlatformRule;
    use serde_json::{json, Value};

    fn opts() -> ReadOptions {
        ReadOptions {
            encoding: TextEncoding::Auto,
            zip: crate::einvoice::archive::ZipLimits {
                max_members: 1,
                max_member_bytes: 1,
                max_total_bytes: 1,
            },
            max_invoices: 999,
            max_lines: 100_000,
            default_tenant: "t".into(),
        }
    }

    /// A valid consumer invoice in the official form: tax-inclusive, TaxAmount 0, printed.
    fn b2c() -> Value {
        json!({
            "MessageType": "F0401",
            "Main": {
                "InvoiceNumber": "AB00000001", "InvoiceDate": "20261126", "InvoiceTime": "10:00:00",
                "Seller": {"Identifier": "28080623", "Name": "台灣好茶", "Address": "台北市"},
                "Buyer": {"Identifier": "0000000000", "Name": "消費者"},
                "InvoiceType": "07", "DonateMark": "0", "PrintMark": "Y", "RandomNumber": "1234"
            },
            "Details": {"ProductItem": [
                {"Description": "茶", "Quantity": "2", "UnitPrice": "50", "TaxType": "1",
                 "Amount": "100", "SequenceNumber": "1"}
            ]},
            "Amount": {"SalesAmount": "100", "FreeTaxSalesAmount": "0", "ZeroTaxSalesAmount": "0",
                       "TaxType": "1", "TaxRate": "0.05", "TaxAmount": "0", "TotalAmount": "100"}
        })
    }

    /// The same sold to a business: tax-exclusive.
    fn b2b() -> Value {
        let mut m = b2c();
        m["Main"]["Buyer"] = json!({"Identifier": "04595257", "Name": "大同貿易"});
        m["Amount"]["TaxAmount"] = json!("5");
        m["Amount"]["TotalAmount"] = json!("105");
        m
    }

    fn allowance() -> Value {
        json!({
            "MessageType": "G0401",
            "Main": {
                "AllowanceNumber": "AL1", "AllowanceDate": "20261128",
                "Seller": {"Identifier": "28080623", "Name": "台灣好茶"},
                "Buyer": {"Identifier": "0000000000", "Name": "王小明"},
                "AllowanceType": "2"
            },
            "Details": {"ProductItem": [
                {"OriginalInvoiceDate": "20261126", "OriginalInvoiceNumber": "AB00000001",
                 "OriginalDescription": "茶", "Quantity": "1", "Unit": "杯", "UnitPrice": "20",
                 "Amount": "19", "Tax": "1", "AllowanceSequenceNumber": "1", "TaxType": "1"}
            ]},
            "Amount": {"TaxAmount": "1", "TotalAmount": "19"}
        })
    }

    /// The problems of one message (empty: accepted), as (field suffix, is a platform rule).
    fn verdict(m: &Value) -> Vec<(String, Option<PlatformRule>)> {
        let bytes = serde_json::to_vec(m).unwrap();
        let v = check_batch("m.json", &bytes, &opts()).unwrap();
        v.rejected
            .iter()
            .flat_map(|r| r.problems.iter())
            .map(|p| (p.field.rsplit('.').next().unwrap().to_string(), p.rule))
            .collect()
    }

    fn refused_by_turnkey(m: &Value, field: &str) {
        let v = verdict(m);
        assert!(
            v.iter().any(|(f, r)| f == field && r.is_none()),
            "{field} should be refused as Turnkey would: {v:?}"
        );
    }

    fn refused_by_platform(m: &Value, field: &str, rule: PlatformRule) {
        let v = verdict(m);
        assert!(!v.is_empty(), "should be refused");
        assert!(
            v.iter().all(|(_, r)| r.is_some())
                && v.iter().any(|(f, r)| f == field && *r == Some(rule)),
            "{field} should be refused by {rule:?} alone: {v:?}"
        );
    }

    fn accepted(m: &Value) {
        assert_eq!(verdict(m), vec![], "should be accepted");
    }

    #[test]
    fn the_bases_are_valid() {
        accepted(&b2c());
        accepted(&b2b());
        accepted(&allowance());
    }

    #[test]
    fn f0401_needs_a_seller_address() {
        let mut m = b2c();
        m["Main"]["Seller"]
            .as_object_mut()
            .unwrap()
            .remove("Address");
        refused_by_turnkey(&m, "Address");
        m["Main"]["Seller"]["Address"] = json!("\u{3000}");
        refused_by_turnkey(&m, "Address");
    }

    #[test]
    fn printmark_y_means_no_carrier_except_a_business_mobile_barcode() {
        for buyer in [b2c(), b2b()] {
            let mut m = buyer.clone();
            m["Main"]["CarrierType"] = json!("1K0001");
            m["Main"]["CarrierId1"] = json!("A1");
            m["Main"]["CarrierId2"] = json!("A1");
            refused_by_turnkey(&m, "PrintMark");
        }
        let mut m = b2c();
        m["Main"]["CarrierType"] = json!("3J0002");
        m["Main"]["CarrierId1"] = json!("/ABC+123");
        m["Main"]["CarrierId2"] = json!("/ABC+123");
        refused_by_turnkey(&m, "PrintMark");
        let mut m = b2b();
        m["Main"]["CarrierType"] = json!("3J0002");
        m["Main"]["CarrierId1"] = json!("/ABC+123");
        m["Main"]["CarrierId2"] = json!("/ABC+123");
        accepted(&m);
    }

    #[test]
    fn printmark_n_needs_a_donation_or_a_carrier_for_b2b_too() {
        for buyer in [b2c(), b2b()] {
            let mut m = buyer.clone();
            m["Main"]["PrintMark"] = json!("N");
            refused_by_turnkey(&m, "PrintMark");
            m["Main"]["CarrierType"] = json!("3J0002");
            m["Main"]["CarrierId1"] = json!("/ABC+123");
            m["Main"]["CarrierId2"] = json!("/ABC+123");
            accepted(&m);
        }
        let mut m = b2c();
        m["Main"]["PrintMark"] = json!("N");
        m["Main"]["DonateMark"] = json!("1");
        m["Main"]["NPOBAN"] = json!("8585");
        accepted(&m);
    }

    #[test]
    fn consumer_amounts_are_whole_numbers() {
        let mut m = b2c();
        m["Details"]["ProductItem"][0]["Quantity"] = json!("1");
        m["Details"]["ProductItem"][0]["UnitPrice"] = json!("100.5");
        m["Details"]["ProductItem"][0]["Amount"] = json!("100.5");
        m["Amount"]["SalesAmount"] = json!("100.5");
        m["Amount"]["TotalAmount"] = json!("100.5");
        refused_by_turnkey(&m, "SalesAmount");
        refused_by_turnkey(&m, "TotalAmount");
        // A business invoice may have cents.
        let mut m = b2b();
        m["Details"]["ProductItem"][0]["Quantity"] = json!("1");
        m["Details"]["ProductItem"][0]["UnitPrice"] = json!("100.5");
        m["Details"]["ProductItem"][0]["Amount"] = json!("100.5");
        m["Amount"]["SalesAmount"] = json!("100.5");
        m["Amount"]["TotalAmount"] = json!("105.5");
        accepted(&m);
    }

    #[test]
    fn consumer_buyer_names_are_not_placeholders() {
        for name in ["0", "00", "000", "0000"] {
            let mut m = b2c();
            m["Main"]["Buyer"]["Name"] = json!(name);
            refused_by_turnkey(&m, "Name");
        }
        let mut m = b2c();
        m["Main"]["Buyer"]["Name"] = json!("00000");
        accepted(&m);
    }

    #[test]
    fn zero_rated_needs_customs_mark_and_reason() {
        let mut m = b2b();
        m["Amount"] = json!({"SalesAmount": "0", "FreeTaxSalesAmount": "0", "ZeroTaxSalesAmount": "100",
                             "TaxType": "2", "TaxRate": "0", "TaxAmount": "0", "TotalAmount": "100"});
        m["Details"]["ProductItem"][0]["TaxType"] = json!("2");
        refused_by_turnkey(&m, "CustomsClearanceMark");
        refused_by_turnkey(&m, "ZeroTaxRateReason");
        m["Main"]["CustomsClearanceMark"] = json!("1");
        m["Main"]["ZeroTaxRateReason"] = json!("71");
        accepted(&m);
    }

    #[test]
    fn currency_comes_from_the_official_list() {
        let mut m = b2b();
        m["Amount"]["Currency"] = json!("USD");
        accepted(&m);
        for bad in ["BYN", "usd", "XXX"] {
            m["Amount"]["Currency"] = json!(bad);
            refused_by_turnkey(&m, "Currency");
        }
    }

    #[test]
    fn negative_product_lines_are_discounts() {
        let mut m = b2b();
        m["Details"]["ProductItem"].as_array_mut().unwrap().push(
            json!({"Description": "折扣", "Quantity": "1", "UnitPrice": "-20", "TaxType": "1",
                         "Amount": "-20", "SequenceNumber": "2"}),
        );
        m["Amount"]["SalesAmount"] = json!("80");
        m["Amount"]["TaxAmount"] = json!("4");
        m["Amount"]["TotalAmount"] = json!("84");
        accepted(&m);
        m["Amount"]["SalesAmount"] = json!("-20");
        assert!(
            !verdict(&m).is_empty(),
            "the Amount block stays non-negative"
        );
    }

    #[test]
    fn g0401_allowance_type_is_2_and_line_tax_whole() {
        let mut m = allowance();
        m["Main"].as_object_mut().unwrap().remove("AllowanceType");
        accepted(&m);
        m["Main"]["AllowanceType"] = json!("1");
        refused_by_turnkey(&m, "AllowanceType");
        let mut m = allowance();
        m["Details"]["ProductItem"][0]["Tax"] = json!("1.5");
        m["Amount"]["TaxAmount"] = json!("2");
        refused_by_turnkey(&m, "Tax");
    }

    #[test]
    fn g0401_takes_the_original_invoices_seller_and_buyer_ids() {
        let mut m = allowance();
        m["Main"]["OriginalInvoiceSellerId"] = json!("28080623");
        m["Main"]["OriginalInvoiceBuyerId"] = json!("04595257");
        let bytes = serde_json::to_vec(&m).unwrap();
        let v = check_batch("m.json", &bytes, &opts()).unwrap();
        let xml = String::from_utf8(v.accepted[0].xml.clone()).unwrap();
        assert!(xml.contains("<OriginalInvoiceSellerId>28080623</OriginalInvoiceSellerId>"));
        assert!(xml.contains("<OriginalInvoiceBuyerId>04595257</OriginalInvoiceBuyerId>"));
        let csv = "MessageType,AllowanceNumber,AllowanceDate,Seller.Identifier,Seller.Name,Buyer.Identifier,Buyer.Name,OriginalInvoiceSellerId,Item.OriginalInvoiceDate,Item.OriginalInvoiceNumber,Item.OriginalDescription,Item.Quantity,Item.UnitPrice,Item.Amount,Item.Tax,Item.AllowanceSequenceNumber,Item.TaxType,TaxAmount,TotalAmount\n\
                   G0401,AL1,20261128,28080623,S,04595257,B,28080623,20261126,AB00000001,x,1,20,20,1,1,1,1,20\n";
        let v = check_batch("a.csv", csv.as_bytes(), &opts()).unwrap();
        assert_eq!(v.accepted.len(), 1, "{:?}", v.rejected);
    }

    #[test]
    fn g0401_lines_need_no_unit_and_keep_their_stated_amount() {
        let mut m = allowance();
        m["Details"]["ProductItem"][0]
            .as_object_mut()
            .unwrap()
            .remove("Unit");
        accepted(&m);
        m["Details"]["ProductItem"][0]["Quantity"] = json!("3");
        accepted(&m);
    }

    #[test]
    fn g0501_takes_allowance_type_or_writes_2() {
        let base = json!({"MessageType": "G0501", "CancelAllowanceNumber": "AL1", "AllowanceDate": "20261128",
            "BuyerId": "0000000000", "SellerId": "28080623", "CancelDate": "20261129",
            "CancelTime": "08:30:00", "CancelReason": "重複開立"});
        let xml = |m: &Value| {
            let v = check_batch("m.json", &serde_json::to_vec(m).unwrap(), &opts()).unwrap();
            String::from_utf8(v.accepted[0].xml.clone()).unwrap()
        };
        assert!(xml(&base).contains("<AllowanceType>2</AllowanceType>"));
        let mut m = base.clone();
        m["AllowanceType"] = json!("1");
        assert!(xml(&m).contains("<AllowanceType>1</AllowanceType>"));
        m["AllowanceType"] = json!("3");
        refused_by_turnkey(&m, "AllowanceType");
    }

    #[test]
    fn special_tax_belongs_to_invoice_type_08() {
        let mut m = b2b();
        m["Amount"]["TaxType"] = json!("4");
        m["Amount"]["TaxRate"] = json!("0.25");
        m["Amount"]["TaxAmount"] = json!("25");
        m["Amount"]["TotalAmount"] = json!("125");
        m["Details"]["ProductItem"][0]["TaxType"] = json!("4");
        refused_by_platform(&m, "TaxType", PlatformRule::InvoiceTypeTaxType);
        m["Main"]["InvoiceType"] = json!("08");
        accepted(&m);
        // TaxType 9 on a special-tax invoice, at a special rate.
        m["Amount"]["TaxType"] = json!("9");
        m["Amount"]["FreeTaxSalesAmount"] = json!("50");
        m["Amount"]["TotalAmount"] = json!("175");
        m["Details"]["ProductItem"].as_array_mut().unwrap().push(
            json!({"Description": "免稅", "Quantity": "1", "UnitPrice": "50", "TaxType": "3",
                         "Amount": "50", "SequenceNumber": "2"}),
        );
        accepted(&m);
        // 07 takes no TaxType 4.
        m["Main"]["InvoiceType"] = json!("07");
        refused_by_platform(&m, "TaxRate", PlatformRule::InvoiceTypeTaxType);
    }

    #[test]
    fn consumer_invoices_are_tax_inclusive() {
        let mut m = b2c();
        m["Amount"]["TaxAmount"] = json!("5");
        m["Amount"]["TotalAmount"] = json!("105");
        refused_by_platform(&m, "TaxAmount", PlatformRule::ConsumerTaxInclusive);
    }

    #[test]
    fn platform_rules_are_named() {
        let mut m = b2b();
        m["Main"]["Buyer"]["Identifier"] = json!("04595258");
        refused_by_platform(&m, "Identifier", PlatformRule::Ban);
        let mut m = b2b();
        m["Amount"]["TotalAmount"] = json!("106");
        refused_by_platform(&m, "TotalAmount", PlatformRule::Totals);
        let mut m = allowance();
        m["Amount"]["TotalAmount"] = json!("25");
        refused_by_platform(&m, "TotalAmount", PlatformRule::Totals);
    }

    #[test]
    fn lengths_count_as_turnkey_counts_them() {
        // Java's validator counts UTF-16 units: a character outside the BMP counts twice.
        let mut m = b2b();
        m["Main"]["Buyer"]["Name"] = json!("𠀀".repeat(30));
        accepted(&m);
        m["Main"]["Buyer"]["Name"] = json!("𠀀".repeat(31));
        refused_by_turnkey(&m, "Name");
    }

    #[test]
    fn at_most_9999_lines() {
        let mut m = b2b();
        let line = m["Details"]["ProductItem"][0].clone();
        let lines: Vec<Value> = (0..10000)
            .map(|i| {
                let mut l = line.clone();
                l["SequenceNumber"] = json!(format!("{i:04}"));
                l["Amount"] = json!("0");
                l["UnitPrice"] = json!("0");
                l
            })
            .collect();
        m["Details"]["ProductItem"] = Value::Array(lines);
        refused_by_turnkey(&m, "Details");
    }

    #[test]
    fn stricter_than_turnkey_is_a_named_platform_rule() {
        let mut m = b2b();
        m["Main"]["PrintMark"] = json!("N");
        m["Main"]["DonateMark"] = json!("1");
        m["Main"]["NPOBAN"] = json!("8585");
        refused_by_platform(&m, "DonateMark", PlatformRule::Carrier);
        let mut m = b2b();
        m["Main"]["CarrierType"] = json!("1K0001");
        refused_by_platform(&m, "CarrierType", PlatformRule::Carrier);
        let mut m = b2b();
        m["Main"]["InvoiceTime"] = json!("24:00:00");
        refused_by_platform(&m, "InvoiceTime", PlatformRule::Dates);
        m["Main"]["InvoiceTime"] = json!("10:00:00");
        m["Main"]["InvoiceDate"] = json!("20261131");
        refused_by_platform(&m, "InvoiceDate", PlatformRule::Dates);
        let mut m = b2b();
        m["Main"]["Seller"]["Identifier"] = json!("123456789");
        refused_by_platform(&m, "Identifier", PlatformRule::Ban);
        let mut m = b2b();
        m["Main"]["Buyer"]["Identifier"] = json!("1234567A");
        refused_by_turnkey(&m, "Identifier");
        let mut m = allowance();
        m["Details"]["ProductItem"][0]["Amount"] = json!("-19");
        m["Details"]["ProductItem"][0]["Tax"] = json!("0");
        m["Amount"]["TaxAmount"] = json!("0");
        m["Amount"]["TotalAmount"] = json!("0");
        refused_by_platform(&m, "Amount", PlatformRule::PositiveAllowance);
    }

    #[test]
    fn a_missing_json_field_is_named_where_it_belongs() {
        let mut m = b2c();
        m["Main"]["Seller"]
            .as_object_mut()
            .unwrap()
            .remove("Address");
        m["Amount"].as_object_mut().unwrap().remove("TaxRate");
        let bytes = serde_json::to_vec(&m).unwrap();
        let v = check_batch("m.json", &bytes, &opts()).unwrap();
        let fields: Vec<&str> = v.rejected[0]
            .problems
            .iter()
            .map(|p| p.field.as_str())
            .collect();
        assert!(
            fields.contains(&"Messages[0].Main.Seller.Address"),
            "{fields:?}"
        );
        assert!(fields.contains(&"Messages[0].Amount.TaxRate"), "{fields:?}");
    }

    #[test]
    fn messages_over_20_mib_are_refused() {
        let mut m = b2b();
        let line = json!({"Description": "x".repeat(500), "Quantity": "1", "UnitPrice": "0",
                          "TaxType": "1", "Amount": "0", "SequenceNumber": "1"});
        let lines: Vec<Value> = (0..9999)
            .map(|i| {
                let mut l = line.clone();
                l["SequenceNumber"] = json!(format!("{}", i + 1));
                l["Description"] = json!(format!("{i}{}", "品".repeat(495)));
                l["Remark"] = json!("備".repeat(120));
                l["RelateNumber"] = json!("R".repeat(50));
                l
            })
            .collect();
        m["Details"]["ProductItem"] = Value::Array(lines);
        m["Amount"]["SalesAmount"] = json!("0");
        m["Amount"]["TaxAmount"] = json!("0");
        m["Amount"]["TotalAmount"] = json!("0");
        let v = verdict(&m);
        assert!(
            v.iter().any(|(f, r)| f == "InvoiceNumber" && r.is_none()),
            "{v:?}"
        );
    }
}
