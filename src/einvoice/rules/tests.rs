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
        time: Default::default(),
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
        time: Default::default(),
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
        v.iter().all(|(_, r)| r.is_some()) && v.iter().any(|(f, r)| f == field && *r == Some(rule)),
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
