//! Building the five MIG 4.1 messages from raw fields.
//!
//! Building checks every single field (presence, length, format, enumerations) and collects
//! every problem rather than stopping at the first, so one report tells the operator all that
//! is wrong with a row. How one field is read and converted is in [`fields`].

mod fields;

use super::model::*;
use super::raw::{RawItem, RawMessage};
use super::types::*;
use fields::*;

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
