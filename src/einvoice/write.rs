//! A message written back out as turnbridge's own JSON input (README "Input formats"): what an
//! operator's command (`turnbridge invoice cancel|void|reissue|resend`) drops into the spool,
//! so that its message takes the same way as any other (read, checked, recorded, staged,
//! published).
//!
//! Reading what this writes gives the same message again, and so the same XML ([`to_json`]'s
//! test reads back every valid fixture). Amounts are written as text, as
//! [`super::types::format_amount`] writes them into the XML. The output is ASCII (every other
//! character escaped as `\uXXXX`), so it reads the same under every `einvoice.encoding`.

use serde_json::{Map, Value};

use super::model::*;
use super::types::format_amount;

/// `{"Messages": [message]}` as ASCII JSON, for tenant `tenant`.
pub fn to_json(message: &Message, tenant: &str) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("MessageType".into(), message.message_type().as_str().into());
    m.insert("TenantId".into(), tenant.into());
    match message {
        Message::Invoice(i) => invoice(&mut m, i),
        Message::Cancel(c) => {
            put(&mut m, "CancelInvoiceNumber", c.number.as_str());
            put(&mut m, "InvoiceDate", &c.invoice_date.to_string());
            put(&mut m, "BuyerId", c.buyer_id.as_str());
            put(&mut m, "SellerId", c.seller_id.as_str());
            put(&mut m, "CancelDate", &c.cancel_date.to_string());
            put(&mut m, "CancelTime", &c.cancel_time.to_string());
            put(&mut m, "CancelReason", &c.reason);
            opt(
                &mut m,
                "ReturnTaxDocumentNumber",
                &c.return_tax_document_number,
            );
            opt(&mut m, "Remark", &c.remark);
            opt(&mut m, "Reserved1", &c.reserved1);
            opt(&mut m, "Reserved2", &c.reserved2);
        }
        Message::Void(v) => {
            put(&mut m, "VoidInvoiceNumber", v.number.as_str());
            put(&mut m, "InvoiceDate", &v.invoice_date.to_string());
            put(&mut m, "BuyerId", v.buyer_id.as_str());
            put(&mut m, "SellerId", v.seller_id.as_str());
            put(&mut m, "VoidDate", &v.void_date.to_string());
            put(&mut m, "VoidTime", &v.void_time.to_string());
            put(&mut m, "VoidReason", &v.reason);
            opt(&mut m, "Remark", &v.remark);
            opt(&mut m, "Reserved1", &v.reserved1);
            opt(&mut m, "Reserved2", &v.reserved2);
        }
        Message::Allowance(a) => allowance(&mut m, a),
        Message::CancelAllowance(c) => {
            put(&mut m, "CancelAllowanceNumber", &c.number);
            put(&mut m, "AllowanceType", &c.allowance_type);
            put(&mut m, "AllowanceDate", &c.allowance_date.to_string());
            put(&mut m, "BuyerId", c.buyer_id.as_str());
            put(&mut m, "SellerId", c.seller_id.as_str());
            put(&mut m, "CancelDate", &c.cancel_date.to_string());
            put(&mut m, "CancelTime", &c.cancel_time.to_string());
            put(&mut m, "CancelReason", &c.reason);
            opt(&mut m, "Remark", &c.remark);
        }
    }
    let mut batch = Map::new();
    batch.insert("Messages".into(), Value::Array(vec![Value::Object(m)]));
    let text = serde_json::to_string_pretty(&Value::Object(batch)).expect("JSON of strings");
    ascii(&text).into_bytes()
}

fn put(m: &mut Map<String, Value>, key: &str, value: &str) {
    m.insert(key.into(), value.into());
}

fn opt(m: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        put(m, key, v);
    }
}

fn num(m: &mut Map<String, Value>, key: &str, value: &rust_decimal::Decimal) {
    put(m, key, &format_amount(value));
}

fn role<Id>(r: &Role<Id>, id: &str) -> Value {
    let mut m = Map::new();
    put(&mut m, "Identifier", id);
    put(&mut m, "Name", &r.name);
    opt(&mut m, "Address", &r.address);
    opt(&mut m, "PersonInCharge", &r.person_in_charge);
    opt(&mut m, "TelephoneNumber", &r.telephone_number);
    opt(&mut m, "FacsimileNumber", &r.facsimile_number);
    opt(&mut m, "EmailAddress", &r.email_address);
    opt(&mut m, "CustomerNumber", &r.customer_number);
    opt(&mut m, "RoleRemark", &r.role_remark);
    Value::Object(m)
}

fn invoice(out: &mut Map<String, Value>, i: &Invoice) {
    let mut m = Map::new();
    put(&mut m, "InvoiceNumber", i.number.as_str());
    put(&mut m, "InvoiceDate", &i.date.to_string());
    put(&mut m, "InvoiceTime", &i.time.to_string());
    m.insert(
        "Seller".into(),
        role(&i.seller, i.seller.identifier.as_str()),
    );
    m.insert("Buyer".into(), role(&i.buyer, i.buyer.identifier.as_str()));
    opt(&mut m, "BuyerRemark", &i.buyer_remark);
    opt(&mut m, "MainRemark", &i.main_remark);
    opt(&mut m, "CustomsClearanceMark", &i.customs_clearance_mark);
    opt(&mut m, "Category", &i.category);
    opt(&mut m, "RelateNumber", &i.relate_number);
    put(&mut m, "InvoiceType", &i.invoice_type);
    opt(&mut m, "GroupMark", &i.group_mark);
    put(&mut m, "DonateMark", if i.donate { "1" } else { "0" });
    if let Some(c) = &i.carrier {
        put(&mut m, "CarrierType", &c.carrier_type);
        put(&mut m, "CarrierId1", &c.id1);
        put(&mut m, "CarrierId2", &c.id2);
    }
    put(&mut m, "PrintMark", if i.print { "Y" } else { "N" });
    opt(&mut m, "NPOBAN", &i.npoban);
    if let Some(r) = &i.random_number {
        put(&mut m, "RandomNumber", r.as_str());
    }
    opt(&mut m, "BondedAreaConfirm", &i.bonded_area_confirm);
    opt(&mut m, "ZeroTaxRateReason", &i.zero_tax_rate_reason);
    opt(&mut m, "Reserved1", &i.reserved1);
    opt(&mut m, "Reserved2", &i.reserved2);
    out.insert("Main".into(), Value::Object(m));

    let items = i
        .items
        .iter()
        .map(|it| {
            let mut m = Map::new();
            put(&mut m, "Description", &it.description);
            num(&mut m, "Quantity", &it.quantity);
            opt(&mut m, "Unit", &it.unit);
            num(&mut m, "UnitPrice", &it.unit_price);
            put(&mut m, "TaxType", it.tax_type.code());
            num(&mut m, "Amount", &it.amount);
            put(&mut m, "SequenceNumber", &it.sequence_number);
            opt(&mut m, "Remark", &it.remark);
            opt(&mut m, "RelateNumber", &it.relate_number);
            Value::Object(m)
        })
        .collect();
    out.insert("Details".into(), details(items));

    let a = &i.amount;
    let mut m = Map::new();
    num(&mut m, "SalesAmount", &a.sales);
    num(&mut m, "FreeTaxSalesAmount", &a.free_tax_sales);
    num(&mut m, "ZeroTaxSalesAmount", &a.zero_tax_sales);
    put(&mut m, "TaxType", a.tax_type.code());
    num(&mut m, "TaxRate", &a.tax_rate);
    num(&mut m, "TaxAmount", &a.tax_amount);
    num(&mut m, "TotalAmount", &a.total);
    if let Some(d) = &a.discount {
        num(&mut m, "DiscountAmount", d);
    }
    if let Some(d) = &a.original_currency_amount {
        num(&mut m, "OriginalCurrencyAmount", d);
    }
    if let Some(d) = &a.exchange_rate {
        num(&mut m, "ExchangeRate", d);
    }
    opt(&mut m, "Currency", &a.currency);
    out.insert("Amount".into(), Value::Object(m));
}

fn allowance(out: &mut Map<String, Value>, a: &Allowance) {
    let mut m = Map::new();
    put(&mut m, "AllowanceNumber", &a.number);
    put(&mut m, "AllowanceDate", &a.date.to_string());
    m.insert(
        "Seller".into(),
        role(&a.seller, a.seller.identifier.as_str()),
    );
    m.insert("Buyer".into(), role(&a.buyer, a.buyer.identifier.as_str()));
    put(&mut m, "AllowanceType", &a.allowance_type);
    if let Some(b) = &a.original_seller_id {
        put(&mut m, "OriginalInvoiceSellerId", b.as_str());
    }
    if let Some(b) = &a.original_buyer_id {
        put(&mut m, "OriginalInvoiceBuyerId", b.as_str());
    }
    out.insert("Main".into(), Value::Object(m));

    let items = a
        .items
        .iter()
        .map(|it| {
            let mut m = Map::new();
            put(
                &mut m,
                "OriginalInvoiceDate",
                &it.original_invoice_date.to_string(),
            );
            put(
                &mut m,
                "OriginalInvoiceNumber",
                it.original_invoice_number.as_str(),
            );
            opt(
                &mut m,
                "OriginalSequenceNumber",
                &it.original_sequence_number,
            );
            put(&mut m, "OriginalDescription", &it.original_description);
            num(&mut m, "Quantity", &it.quantity);
            opt(&mut m, "Unit", &it.unit);
            num(&mut m, "UnitPrice", &it.unit_price);
            num(&mut m, "Amount", &it.amount);
            num(&mut m, "Tax", &it.tax);
            put(
                &mut m,
                "AllowanceSequenceNumber",
                &it.allowance_sequence_number,
            );
            put(&mut m, "TaxType", it.tax_type.code());
            Value::Object(m)
        })
        .collect();
    out.insert("Details".into(), details(items));

    let mut m = Map::new();
    num(&mut m, "TaxAmount", &a.tax_amount);
    num(&mut m, "TotalAmount", &a.total_amount);
    out.insert("Amount".into(), Value::Object(m));
}

fn details(items: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("ProductItem".into(), Value::Array(items));
    Value::Object(m)
}

/// JSON text with every character outside ASCII escaped (`\uXXXX`, UTF-16 pairs beyond the
/// BMP). Outside strings JSON is ASCII already, so only string contents change. Hand-written:
/// serde_json has no ASCII-only writer, and this is a few lines.
fn ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::einvoice::{check_batch, render::render, ReadOptions};

    #[test]
    fn every_valid_fixture_reads_back_as_the_same_message_and_xml() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/valid");
        let opts = ReadOptions::for_tests();
        let mut seen = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            let v = check_batch(&name, &bytes, &opts).unwrap();
            for a in &v.accepted {
                let json = to_json(&a.message, &a.tenant);
                assert!(json.is_ascii(), "{name}");
                let mut back = check_batch("again.json", &json, &opts).unwrap();
                assert!(back.rejected.is_empty(), "{name}: {:?}", back.rejected);
                let b = back.accepted.remove(0);
                assert_eq!(rowless(&b.message), rowless(&a.message), "{name}");
                assert_eq!(b.tenant, a.tenant, "{name}");
                assert_eq!(
                    render(&b.message),
                    a.xml,
                    "{name}: the same XML, byte for byte"
                );
                seen.insert(a.message.message_type());
            }
        }
        assert_eq!(seen.len(), 5, "every type: {seen:?}");
    }

    /// The message without the rows its lines were read from (a CSV line, a JSON position).
    fn rowless(m: &Message) -> Message {
        let mut m = m.clone();
        match &mut m {
            Message::Invoice(i) => i.items.iter_mut().for_each(|it| it.row = 0),
            Message::Allowance(a) => a.items.iter_mut().for_each(|it| it.row = 0),
            _ => {}
        }
        m
    }

    #[test]
    fn text_outside_ascii_is_escaped_beyond_the_bmp_too() {
        assert_eq!(ascii(r#"{"a":"茶𠀀x"}"#), r#"{"a":"\u8336\ud840\udc00x"}"#);
        let v: Value = serde_json::from_str(&ascii(r#"{"a":"茶𠀀x"}"#)).unwrap();
        assert_eq!(v["a"], "茶𠀀x");
    }
}
