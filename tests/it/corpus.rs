//! A seeded, reproducible corpus of generated messages checked against Turnkey's own code.
//!
//! The generator builds valid messages of all five types (B2B and B2C, every TaxType, carriers,
//! donations, discount lines, foreign currencies, allowances over several invoices, legacy
//! codes) and single-rule mutations of them, each with the outcome the rule predicts. For every
//! message the daemon's verdict (`check_batch`, exactly what the daemon and `validate` run) is
//! compared with the official check (`../shared/turnkey/bin/check`: the official XSD and
//! Turnkey's program validator, one JVM for hundreds of files):
//! - every message the daemon accepts renders to XML the official check accepts;
//! - every message the daemon refuses is either refused by the official check too, or refused
//!   only by named platform rules ([`PlatformRule`]);
//! - each mutation is refused for the field it breaks, or accepted when the rule says so.
//!
//! The repository's own schemas give the same verdict as the official XSD on every file.
//! Seed: `TURNBRIDGE_CORPUS_SEED` (printed), else today's date; size: `TURNBRIDGE_CORPUS_SIZE`
//! (default 2,400 messages).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use turnbridge::config::{Config, DEFAULT_TOML};
use turnbridge::einvoice::check_batch;

/// What a message should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Valid everywhere.
    Accept,
    /// Turnkey refuses it (XSD or program check); the daemon refuses this field.
    Turnkey(&'static str),
    /// Turnkey takes it, the platform refuses it; the daemon refuses this field with a
    /// platform rule.
    Platform(&'static str),
}

struct Case {
    /// `valid` or the mutation's name.
    kind: &'static str,
    ty: &'static str,
    msg: Value,
    expect: Expect,
}

const SELLERS: [&str; 4] = ["28080623", "10458575", "04595257", "24634102"];
const BUYERS: [&str; 3] = ["04595257", "24634102", "28080623"];
const CONSUMER: &str = "0000000000";
const SPECIAL_RATES: [&str; 5] = ["0.01", "0.02", "0.05", "0.15", "0.25"];
const CURRENCIES: [&str; 5] = ["USD", "JPY", "EUR", "HKD", "CNY"];

fn money(cents: i64) -> String {
    // Whole dollars print without a point; others with two decimals.
    if cents % 100 == 0 {
        (cents / 100).to_string()
    } else {
        let sign = if cents < 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
    }
}

struct Gen {
    rng: StdRng,
    serial: u32,
}

impl Gen {
    fn number(&mut self) -> String {
        self.serial += 1;
        format!("GN{:08}", self.serial)
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs.choose(&mut self.rng).copied().unwrap()
    }

    fn date(&mut self) -> String {
        format!("202611{:02}", self.rng.gen_range(1..=20))
    }

    fn time(&mut self) -> String {
        format!(
            "{:02}:{:02}:{:02}",
            self.rng.gen_range(0..24),
            self.rng.gen_range(0..60),
            self.rng.gen_range(0..60)
        )
    }

    fn role(&mut self, id: &str, with_address: bool) -> Value {
        let mut r = Map::new();
        r.insert("Identifier".into(), json!(id));
        r.insert(
            "Name".into(),
            json!(format!("公司{}", self.rng.gen_range(1..999))),
        );
        if with_address {
            r.insert("Address".into(), json!("台北市信義區松高路1號"));
        }
        if self.rng.gen_bool(0.3) {
            r.insert("TelephoneNumber".into(), json!("02-2345-6789"));
        }
        if self.rng.gen_bool(0.2) {
            r.insert("EmailAddress".into(), json!("billing@example.com.tw"));
        }
        Value::Object(r)
    }

    /// A valid F0401: every combination of buyer, invoice type, tax type and the print /
    /// carrier / donation matrix the rules allow.
    fn invoice(&mut self) -> Value {
        let consumer = self.rng.gen_bool(0.6);
        let buyer_id = if consumer {
            CONSUMER
        } else {
            self.pick(&BUYERS)
        };
        let special = self.rng.gen_bool(0.2);
        let invoice_type = if special { "08" } else { "07" };
        let tax_type = if special {
            self.pick(&["4", "4", "9", "2", "3"])
        } else {
            self.pick(&["1", "1", "1", "2", "3", "9"])
        };
        let rate = match tax_type {
            "1" => "0.05",
            "2" | "3" => "0",
            _ if special => self.pick(&SPECIAL_RATES),
            _ => "0.05",
        };
        // Lines: (tax type, quantity, unit price in cents, amount in cents).
        let taxed = if special { "4" } else { "1" };
        let n = self.rng.gen_range(1..=4);
        let mut lines: Vec<(&'static str, i64, i64, i64)> = Vec::new();
        for i in 0..n {
            // A mixed invoice has a taxed line first, an exempt one last, either between.
            let line_tax: &'static str = match tax_type {
                "9" if i == 0 => taxed,
                "9" if i == n - 1 => "3",
                "9" => [taxed, "3"].choose(&mut self.rng).unwrap(),
                "1" => "1",
                "2" => "2",
                "3" => "3",
                _ => "4",
            };
            let qty = self.rng.gen_range(1..=20);
            let price = if consumer {
                self.rng.gen_range(1..=500) * 100
            } else {
                self.rng.gen_range(100..=90000)
            };
            lines.push((line_tax, qty, price, qty * price));
        }
        if tax_type == "9" && lines.len() == 1 {
            lines.push(("3", 1, 2500, 2500));
        }
        // A discount line now and then: negative, on a taxed line, smaller than that line.
        if let Some(&(t, _, _, a)) = lines.iter().find(|l| l.0 == taxed) {
            if self.rng.gen_bool(0.15) {
                let discount = if consumer { 100 } else { 1 + a / 10 };
                lines.push((t, 1, -discount, -discount));
            }
        }
        let sum = |ts: &[&str]| -> i64 {
            lines
                .iter()
                .filter(|l| ts.contains(&l.0))
                .map(|l| l.3)
                .sum()
        };
        let (sales, free, zero) = (sum(&["1", "4"]), sum(&["3"]), sum(&["2"]));
        let tax_cents = if consumer || rate == "0" {
            0
        } else {
            let r: f64 = rate.parse().unwrap();
            ((sales as f64 / 100.0 * r).round() as i64) * 100
        };
        let total = sales + free + zero + tax_cents;

        let mut main = Map::new();
        main.insert("InvoiceNumber".into(), json!(self.number()));
        main.insert("InvoiceDate".into(), json!(self.date()));
        main.insert("InvoiceTime".into(), json!(self.time()));
        let seller = self.pick(&SELLERS);
        main.insert("Seller".into(), self.role(seller, true));
        let with_address = !consumer && self.rng.gen_bool(0.5);
        let mut buyer = self.role(buyer_id, with_address);
        if consumer {
            buyer["Name"] = json!(self.pick(&["消費者", "王小明", "00000", "Customer"]));
        }
        main.insert("Buyer".into(), buyer);
        if tax_type == "2" {
            main.insert("CustomsClearanceMark".into(), json!(self.pick(&["1", "2"])));
            main.insert(
                "ZeroTaxRateReason".into(),
                json!(self.pick(&["71", "72", "79"])),
            );
        }
        main.insert("InvoiceType".into(), json!(invoice_type));
        // Print, carrier, donation.
        let way = if consumer {
            self.pick(&["print", "carrier", "donate", "barcode"])
        } else {
            self.pick(&["print", "print", "barcode", "barcode_print"])
        };
        let donate = way == "donate";
        main.insert("DonateMark".into(), json!(if donate { "1" } else { "0" }));
        match way {
            "carrier" => {
                main.insert("CarrierType".into(), json!("1K0001"));
                main.insert(
                    "CarrierId1".into(),
                    json!(format!("CARD{}", self.rng.gen_range(1000..9999))),
                );
                main.insert(
                    "CarrierId2".into(),
                    json!(format!("HIDDEN{}", self.rng.gen_range(1000..9999))),
                );
            }
            "barcode" | "barcode_print" => {
                main.insert("CarrierType".into(), json!("3J0002"));
                main.insert("CarrierId1".into(), json!("/ABC+123"));
                main.insert("CarrierId2".into(), json!("/ABC+123"));
            }
            _ => {}
        }
        let print = way == "print" || way == "barcode_print";
        main.insert("PrintMark".into(), json!(if print { "Y" } else { "N" }));
        if donate {
            main.insert(
                "NPOBAN".into(),
                json!(self.pick(&["8585", "168", "5201314"])),
            );
        }
        if consumer || self.rng.gen_bool(0.5) {
            main.insert(
                "RandomNumber".into(),
                json!(format!("{:04}", self.rng.gen_range(0..10000))),
            );
        }
        if self.rng.gen_bool(0.2) {
            main.insert("MainRemark".into(), json!("月結 30 天 & <備註>"));
        }
        let items: Vec<Value> = lines
            .iter()
            .enumerate()
            .map(|(i, (t, q, p, a))| {
                let mut it = Map::new();
                it.insert("Description".into(), json!(format!("品項 {i}")));
                it.insert("Quantity".into(), json!(q.to_string()));
                if self.rng.gen_bool(0.7) {
                    it.insert("Unit".into(), json!("個"));
                }
                it.insert("UnitPrice".into(), json!(money(*p)));
                it.insert("TaxType".into(), json!(t));
                it.insert("Amount".into(), json!(money(*a)));
                it.insert("SequenceNumber".into(), json!((i + 1).to_string()));
                Value::Object(it)
            })
            .collect();
        let mut amount = Map::new();
        amount.insert("SalesAmount".into(), json!(money(sales)));
        amount.insert("FreeTaxSalesAmount".into(), json!(money(free)));
        amount.insert("ZeroTaxSalesAmount".into(), json!(money(zero)));
        amount.insert("TaxType".into(), json!(tax_type));
        amount.insert("TaxRate".into(), json!(rate));
        amount.insert("TaxAmount".into(), json!(money(tax_cents)));
        amount.insert("TotalAmount".into(), json!(money(total)));
        if self.rng.gen_bool(0.1) {
            amount.insert("OriginalCurrencyAmount".into(), json!("123.45"));
            amount.insert("ExchangeRate".into(), json!("31.25"));
            amount.insert("Currency".into(), json!(self.pick(&CURRENCIES)));
        }
        json!({
            "MessageType": "F0401",
            "Main": Value::Object(main),
            "Details": { "ProductItem": items },
            "Amount": Value::Object(amount),
        })
    }

    fn cancel(&mut self) -> Value {
        let buyer = if self.rng.gen_bool(0.5) {
            CONSUMER
        } else {
            self.pick(&BUYERS)
        };
        let mut m = Map::new();
        m.insert("MessageType".into(), json!("F0501"));
        m.insert("CancelInvoiceNumber".into(), json!(self.number()));
        m.insert("InvoiceDate".into(), json!("20261101"));
        m.insert("BuyerId".into(), json!(buyer));
        m.insert("SellerId".into(), json!(self.pick(&SELLERS)));
        m.insert("CancelDate".into(), json!(self.date()));
        m.insert("CancelTime".into(), json!(self.time()));
        m.insert(
            "CancelReason".into(),
            json!(self.pick(&["客戶退貨", "開立錯誤", "訂單取消"])),
        );
        if self.rng.gen_bool(0.3) {
            m.insert("ReturnTaxDocumentNumber".into(), json!("RT-2026-001"));
        }
        if self.rng.gen_bool(0.3) {
            m.insert("Remark".into(), json!("整單取消"));
        }
        Value::Object(m)
    }

    fn void(&mut self) -> Value {
        let buyer = if self.rng.gen_bool(0.5) {
            CONSUMER
        } else {
            self.pick(&BUYERS)
        };
        let mut m = Map::new();
        m.insert("MessageType".into(), json!("F0701"));
        m.insert("VoidInvoiceNumber".into(), json!(self.number()));
        m.insert("InvoiceDate".into(), json!("20261101"));
        m.insert("BuyerId".into(), json!(buyer));
        m.insert("SellerId".into(), json!(self.pick(&SELLERS)));
        m.insert("VoidDate".into(), json!(self.date()));
        m.insert("VoidTime".into(), json!(self.time()));
        m.insert(
            "VoidReason".into(),
            json!(self.pick(&["買受人資料錯誤", "重新開立"])),
        );
        if self.rng.gen_bool(0.3) {
            m.insert("Remark".into(), json!("載具錯誤"));
        }
        Value::Object(m)
    }

    /// A G0401 over one to three invoices; line amounts as stated (not always Q × P).
    fn allowance(&mut self) -> Value {
        let consumer = self.rng.gen_bool(0.5);
        let buyer = if consumer {
            CONSUMER
        } else {
            self.pick(&BUYERS)
        };
        let n = self.rng.gen_range(1..=4);
        let (mut total, mut tax_total) = (0i64, 0i64);
        let mut items = Vec::new();
        for i in 0..n {
            let tax_type = self.pick(&["1", "1", "1", "3", "2"]);
            let qty = self.rng.gen_range(1..=10);
            let price = self.rng.gen_range(1..=300);
            let mut amount = qty * price;
            if self.rng.gen_bool(0.2) {
                amount -= 1; // as stated, like the official B2C sample (1 × 20 = 19)
            }
            let amount = amount.max(1);
            let tax = if tax_type == "1" {
                (amount as f64 * 0.05).round() as i64
            } else {
                0
            };
            total += amount;
            tax_total += tax;
            let mut it = Map::new();
            it.insert("OriginalInvoiceDate".into(), json!("20261101"));
            it.insert(
                "OriginalInvoiceNumber".into(),
                json!(format!("OR{:08}", self.rng.gen_range(1..4))),
            );
            if self.rng.gen_bool(0.5) {
                it.insert("OriginalSequenceNumber".into(), json!("1"));
            }
            it.insert("OriginalDescription".into(), json!(format!("品項 {i}")));
            it.insert("Quantity".into(), json!(qty.to_string()));
            if self.rng.gen_bool(0.5) {
                it.insert("Unit".into(), json!("包"));
            }
            it.insert("UnitPrice".into(), json!(price.to_string()));
            it.insert("Amount".into(), json!(amount.to_string()));
            it.insert("Tax".into(), json!(tax.to_string()));
            it.insert("AllowanceSequenceNumber".into(), json!((i + 1).to_string()));
            it.insert("TaxType".into(), json!(tax_type));
            items.push(Value::Object(it));
        }
        let mut main = Map::new();
        main.insert(
            "AllowanceNumber".into(),
            json!(format!("AL{}", self.number())),
        );
        main.insert("AllowanceDate".into(), json!(self.date()));
        let seller = self.pick(&SELLERS);
        let with_address = self.rng.gen_bool(0.5);
        main.insert("Seller".into(), self.role(seller, with_address));
        main.insert("Buyer".into(), self.role(buyer, false));
        main.insert("AllowanceType".into(), json!("2"));
        json!({
            "MessageType": "G0401",
            "Main": Value::Object(main),
            "Details": { "ProductItem": items },
            "Amount": { "TaxAmount": tax_total.to_string(), "TotalAmount": total.to_string() },
        })
    }

    fn cancel_allowance(&mut self) -> Value {
        let buyer = if self.rng.gen_bool(0.5) {
            CONSUMER
        } else {
            self.pick(&BUYERS)
        };
        let mut m = Map::new();
        m.insert("MessageType".into(), json!("G0501"));
        m.insert(
            "CancelAllowanceNumber".into(),
            json!(format!("AL{}", self.number())),
        );
        m.insert("AllowanceType".into(), json!("2"));
        m.insert("AllowanceDate".into(), json!("20261101"));
        m.insert("BuyerId".into(), json!(buyer));
        m.insert("SellerId".into(), json!(self.pick(&SELLERS)));
        m.insert("CancelDate".into(), json!(self.date()));
        m.insert("CancelTime".into(), json!(self.time()));
        m.insert("CancelReason".into(), json!("折讓金額錯誤"));
        Value::Object(m)
    }
}

fn set(msg: &mut Value, path: &[&str], value: Value) {
    let mut v = msg;
    for k in &path[..path.len() - 1] {
        v = &mut v[*k];
    }
    v[*path.last().unwrap()] = value;
}

fn remove(msg: &mut Value, path: &[&str]) {
    let mut v = msg;
    for k in &path[..path.len() - 1] {
        v = &mut v[*k];
    }
    v.as_object_mut().unwrap().remove(*path.last().unwrap());
}

fn first_item(msg: &mut Value) -> &mut Value {
    &mut msg["Details"]["ProductItem"][0]
}

fn is_consumer(msg: &Value) -> bool {
    msg["Main"]["Buyer"]["Identifier"] == CONSUMER
}

/// Single-rule mutations of a valid message: (name, mutated message, expected outcome).
/// A mutation that does not apply to this message returns `None`.
fn mutate(
    g: &mut Gen,
    ty: &str,
    base: &Value,
    which: usize,
) -> Option<(&'static str, Value, Expect)> {
    use Expect::*;
    let mut m = base.clone();
    let out = match (ty, which) {
        ("F0401", 0) => {
            remove(&mut m, &["Main", "Seller", "Address"]);
            ("no Seller.Address", Turnkey("Main.Seller.Address"))
        }
        ("F0401", 1) if is_consumer(base) => {
            // Whole-dollar consumer amounts made decimal throughout, so only that rule breaks.
            let mut items = m["Details"]["ProductItem"].as_array().unwrap().clone();
            let first = items[0].as_object_mut().unwrap();
            first.insert("Quantity".into(), json!("1"));
            let a: f64 = first["Amount"].as_str().unwrap().parse().unwrap();
            let new = a + 0.5;
            first.insert("UnitPrice".into(), json!(format!("{new}")));
            first.insert("Amount".into(), json!(format!("{new}")));
            let (key, path) = match first["TaxType"].as_str().unwrap() {
                "3" => ("FreeTaxSalesAmount", "Amount.FreeTaxSalesAmount"),
                "2" => ("ZeroTaxSalesAmount", "Amount.ZeroTaxSalesAmount"),
                _ => ("SalesAmount", "Amount.SalesAmount"),
            };
            m["Details"]["ProductItem"] = Value::Array(items);
            let b: f64 = m["Amount"][key].as_str().unwrap().parse().unwrap();
            m["Amount"][key] = json!(format!("{}", b + 0.5));
            let t: f64 = m["Amount"]["TotalAmount"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            m["Amount"]["TotalAmount"] = json!(format!("{}", t + 0.5));
            ("B2C amounts with decimals", Turnkey(path))
        }
        ("F0401", 2) if is_consumer(base) => {
            let name = g.pick(&["0", "00", "000", "0000"]);
            set(&mut m, &["Main", "Buyer", "Name"], json!(name));
            ("B2C Buyer.Name a placeholder", Turnkey("Main.Buyer.Name"))
        }
        ("F0401", 3)
            if base["Main"]["PrintMark"] == "Y" && base["Main"].get("CarrierType").is_none() =>
        {
            let main = m["Main"].as_object_mut().unwrap();
            main.insert("CarrierType".into(), json!("1K0001"));
            main.insert("CarrierId1".into(), json!("CARD1234"));
            main.insert("CarrierId2".into(), json!("HIDDEN1234"));
            ("PrintMark Y with a carrier", Turnkey("Main.PrintMark"))
        }
        ("F0401", 4) if base["Main"]["PrintMark"] == "N" && base["Main"]["DonateMark"] == "0" => {
            let main = m["Main"].as_object_mut().unwrap();
            for k in ["CarrierType", "CarrierId1", "CarrierId2"] {
                main.remove(k);
            }
            (
                "PrintMark N without carrier or donation",
                Turnkey("Main.PrintMark"),
            )
        }
        ("F0401", 5) if base["Amount"]["TaxType"] == "2" => {
            let k = g.pick(&["CustomsClearanceMark", "ZeroTaxRateReason"]);
            remove(&mut m, &["Main", k]);
            (
                "zero-rated without its marks",
                Turnkey(if k == "CustomsClearanceMark" {
                    "Main.CustomsClearanceMark"
                } else {
                    "Main.ZeroTaxRateReason"
                }),
            )
        }
        ("F0401", 6) => {
            set(
                &mut m,
                &["Amount", "Currency"],
                json!(g.pick(&["BYN", "ZMW", "XXX", "usd"])),
            );
            (
                "Currency outside the official list",
                Turnkey("Amount.Currency"),
            )
        }
        ("F0401", 7) => {
            set(&mut m, &["Main", "RandomNumber"], json!("10000"));
            ("RandomNumber of five digits", Turnkey("Main.RandomNumber"))
        }
        ("F0401", 8) => {
            first_item(&mut m)["TaxType"] = json!("9");
            (
                "product line with TaxType 9",
                Turnkey("Details.ProductItem[0].TaxType"),
            )
        }
        ("F0401", 9) if !is_consumer(base) => {
            set(&mut m, &["Main", "Buyer", "Identifier"], json!("28080624"));
            (
                "buyer BAN failing its check digits",
                Platform("Main.Buyer.Identifier"),
            )
        }
        ("F0401", 10) => {
            let t: f64 = m["Amount"]["TotalAmount"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            m["Amount"]["TotalAmount"] = json!(format!("{}", t + 1.0));
            ("TotalAmount off by one", Platform("Amount.TotalAmount"))
        }
        ("F0401", 11)
            if base["Main"]["InvoiceType"] == "08" && base["Amount"]["TaxType"] == "4" =>
        {
            set(&mut m, &["Main", "InvoiceType"], json!("07"));
            (
                "special tax on a general invoice",
                Platform("Amount.TaxType"),
            )
        }
        ("F0401", 12) if is_consumer(base) && base["Amount"]["TaxType"] == "1" => {
            let s: i64 = m["Amount"]["SalesAmount"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let tax = (s as f64 * 0.05).round() as i64;
            let t: i64 = m["Amount"]["TotalAmount"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            m["Amount"]["TaxAmount"] = json!(tax.to_string());
            m["Amount"]["TotalAmount"] = json!((t + tax).to_string());
            if tax == 0 {
                return None;
            }
            (
                "B2C with tax-exclusive amounts",
                Platform("Amount.TaxAmount"),
            )
        }
        ("F0401", 13) => {
            // The line's Amount, its bucket and the total move together: only Q × P breaks.
            let it = first_item(&mut m);
            let a: f64 = it["Amount"].as_str().unwrap().parse().unwrap();
            it["Amount"] = json!(format!("{}", a + 3.0));
            let key = match it["TaxType"].as_str().unwrap() {
                "3" => "FreeTaxSalesAmount",
                "2" => "ZeroTaxSalesAmount",
                _ => "SalesAmount",
            };
            for k in [key, "TotalAmount"] {
                let v: f64 = m["Amount"][k].as_str().unwrap().parse().unwrap();
                m["Amount"][k] = json!(format!("{}", v + 3.0));
            }
            (
                "line Amount is not Quantity × UnitPrice",
                Platform("Details.ProductItem[0].Amount"),
            )
        }
        ("F0401", 14) if base["Main"]["DonateMark"] == "1" => {
            remove(&mut m, &["Main", "NPOBAN"]);
            ("donation without NPOBAN", Turnkey("Main.NPOBAN"))
        }
        ("F0401", 15) if base["Main"]["DonateMark"] == "0" => {
            set(&mut m, &["Main", "NPOBAN"], json!("8585"));
            ("NPOBAN without donation", Turnkey("Main.NPOBAN"))
        }
        ("F0401", 16) if !is_consumer(base) && base["Main"].get("CarrierType").is_none() => {
            let main = m["Main"].as_object_mut().unwrap();
            main.insert("CarrierType".into(), json!("3J0002"));
            main.insert("CarrierId1".into(), json!("/XYZ-789"));
            main.insert("CarrierId2".into(), json!("/XYZ-789"));
            main.insert("PrintMark".into(), json!("Y"));
            ("B2B printed with a mobile barcode", Accept)
        }
        ("F0401", 17) => {
            let t: f64 = m["Amount"]["TaxAmount"].as_str().unwrap().parse().unwrap();
            m["Amount"]["TaxAmount"] = json!(format!("{}.5", t as i64));
            ("TaxAmount with decimals", Turnkey("Amount.TaxAmount"))
        }
        ("F0401", 18) => {
            set(&mut m, &["Main", "Seller", "Address"], json!("\u{3000}"));
            ("Seller.Address blank", Turnkey("Main.Seller.Address"))
        }
        ("F0401", 19) => {
            let name = "𠀀".repeat(31);
            set(&mut m, &["Main", "Buyer", "Name"], json!(name));
            (
                "Buyer.Name of 31 characters outside the BMP (62 as Turnkey counts)",
                Turnkey("Main.Buyer.Name"),
            )
        }
        ("F0401", 20) if !is_consumer(base) && base["Main"].get("CarrierType").is_none() => {
            let main = m["Main"].as_object_mut().unwrap();
            main.insert("PrintMark".into(), json!("N"));
            main.insert("DonateMark".into(), json!("1"));
            main.insert("NPOBAN".into(), json!("8585"));
            (
                "a business buyer's invoice donated",
                Platform("Main.DonateMark"),
            )
        }
        ("F0401", 21)
            if base["Main"]["PrintMark"] == "Y" && base["Main"].get("CarrierType").is_none() =>
        {
            set(&mut m, &["Main", "CarrierType"], json!("1K0001"));
            (
                "a carrier type without its ids",
                Platform("Main.CarrierType"),
            )
        }
        ("F0401", 22) => {
            set(&mut m, &["Main", "InvoiceTime"], json!("24:00:00"));
            ("InvoiceTime 24:00:00", Platform("Main.InvoiceTime"))
        }
        ("F0401", 23) => {
            set(&mut m, &["Main", "InvoiceDate"], json!("20261131"));
            (
                "InvoiceDate that does not exist",
                Platform("Main.InvoiceDate"),
            )
        }
        ("F0401", 24)
            if !is_consumer(base)
                && base["Main"]["PrintMark"] == "Y"
                && base["Main"].get("CarrierType").is_none()
                && base["Amount"]
                    .as_object()
                    .unwrap()
                    .values()
                    .all(|v| !v.as_str().unwrap_or("").contains('.')) =>
        {
            // Turnkey takes 00000000 for a consumer; the amounts are whole, so it accepts.
            set(&mut m, &["Main", "Buyer", "Identifier"], json!("00000000"));
            ("buyer 00000000", Platform("Main.Buyer.Identifier"))
        }
        ("G0401", 6) => {
            let it = first_item(&mut m);
            it["Amount"] = json!("-10");
            it["Tax"] = json!("0");
            (
                "negative allowance line",
                Platform("Details.ProductItem[0].Amount"),
            )
        }
        ("G0401", 0) => {
            set(&mut m, &["Main", "AllowanceType"], json!("1"));
            ("G0401 AllowanceType 1", Turnkey("Main.AllowanceType"))
        }
        ("G0401", 1) => {
            let it = first_item(&mut m);
            it["Tax"] = json!("10.5");
            (
                "allowance line Tax with decimals",
                Turnkey("Details.ProductItem[0].Tax"),
            )
        }
        ("G0401", 2) => {
            for it in m["Details"]["ProductItem"].as_array_mut().unwrap() {
                it.as_object_mut().unwrap().remove("Unit");
            }
            ("allowance lines without Unit", Accept)
        }
        ("G0401", 3) => {
            let it = first_item(&mut m);
            it["Quantity"] = json!("7");
            ("allowance Amount as stated, not Q × P", Accept)
        }
        ("G0401", 4) => {
            let t: i64 = m["Amount"]["TotalAmount"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            m["Amount"]["TotalAmount"] = json!((t + 5).to_string());
            ("allowance TotalAmount off", Platform("Amount.TotalAmount"))
        }
        ("G0401", 5) => {
            set(&mut m, &["Main", "Seller", "Identifier"], json!("28080624"));
            (
                "seller BAN failing its check digits",
                Platform("Main.Seller.Identifier"),
            )
        }
        ("G0501", 0) => {
            remove(&mut m, &["AllowanceType"]);
            ("G0501 without AllowanceType (the daemon writes 2)", Accept)
        }
        ("G0501", 1) => {
            set(&mut m, &["AllowanceType"], json!("3"));
            ("G0501 AllowanceType 3", Turnkey("AllowanceType"))
        }
        ("G0501", 2) => {
            set(
                &mut m,
                &["CancelReason"],
                json!("一二三四五六七八九十一二三四五六七八九十一"),
            );
            ("CancelReason of 21 characters", Turnkey("CancelReason"))
        }
        ("F0501", 0) => {
            remove(&mut m, &["CancelReason"]);
            ("F0501 without CancelReason", Turnkey("CancelReason"))
        }
        ("F0501", 1) => {
            set(&mut m, &["CancelDate"], json!("20261001"));
            ("cancelled before the invoice date", Platform("CancelDate"))
        }
        ("F0701", 0) => {
            set(
                &mut m,
                &["VoidReason"],
                json!("一二三四五六七八九十一二三四五六七八九十一"),
            );
            ("VoidReason of 21 characters", Turnkey("VoidReason"))
        }
        ("F0701", 1) => {
            set(&mut m, &["SellerId"], json!("28080624"));
            (
                "void seller BAN failing its check digits",
                Platform("SellerId"),
            )
        }
        _ => return None,
    };
    if &m == base {
        return None;
    }
    Some((out.0, m, out.1))
}

/// Legacy codes, normalized by the daemon: a C0401 without line tax types, a D0401, C0501,
/// C0701 and D0501.
fn legacy(g: &mut Gen, ty: &str, msg: &Value) -> Option<Value> {
    let mut m = msg.clone();
    let code = match ty {
        "F0401" if msg["Amount"]["TaxType"] != "9" => {
            for it in m["Details"]["ProductItem"].as_array_mut().unwrap() {
                it.as_object_mut().unwrap().remove("TaxType");
            }
            g.pick(&["C0401", "A0401"])
        }
        "F0501" => "C0501",
        "F0701" => "C0701",
        "G0401" => g.pick(&["D0401", "B0401"]),
        "G0501" => "D0501",
        _ => return None,
    };
    m["MessageType"] = json!(code);
    Some(m)
}

fn build_corpus(seed: u64, size: usize) -> Vec<Case> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        serial: 0,
    };
    let mut cases = Vec::new();
    let types = [
        "F0401", "F0401", "F0401", "F0501", "F0701", "G0401", "G0401", "G0501",
    ];
    while cases.len() < size {
        let ty = *types.choose(&mut g.rng).unwrap();
        let msg = match ty {
            "F0401" => g.invoice(),
            "F0501" => g.cancel(),
            "F0701" => g.void(),
            "G0401" => g.allowance(),
            _ => g.cancel_allowance(),
        };
        cases.push(Case {
            kind: "valid",
            ty,
            msg: msg.clone(),
            expect: Expect::Accept,
        });
        if g.rng.gen_bool(0.1) {
            if let Some(l) = legacy(&mut g, ty, &msg) {
                let mut l = l;
                renumber(&mut g, ty, &mut l);
                cases.push(Case {
                    kind: "legacy",
                    ty,
                    msg: l,
                    expect: Expect::Accept,
                });
            }
        }
        // Two mutations of each valid message, each a fresh document number.
        for _ in 0..2 {
            let which = g.rng.gen_range(0..25);
            if let Some((kind, mut m, expect)) = mutate(&mut g, ty, &msg, which) {
                renumber(&mut g, ty, &mut m);
                cases.push(Case {
                    kind,
                    ty,
                    msg: m,
                    expect,
                });
            }
        }
    }
    cases
}

/// Gives a mutation its own number, so one batch holds it beside its original.
fn renumber(g: &mut Gen, ty: &str, m: &mut Value) {
    let n = g.number();
    match ty {
        "F0401" => m["Main"]["InvoiceNumber"] = json!(n),
        "F0501" => m["CancelInvoiceNumber"] = json!(n),
        "F0701" => m["VoidInvoiceNumber"] = json!(n),
        "G0401" => m["Main"]["AllowanceNumber"] = json!(format!("AL{n}")),
        _ => m["CancelAllowanceNumber"] = json!(format!("AL{n}")),
    }
}

fn root_of(ty: &str) -> &'static str {
    match ty {
        "F0401" => "Invoice",
        "F0501" => "CancelInvoice",
        "F0701" => "VoidInvoice",
        "G0401" => "Allowance",
        _ => "CancelAllowance",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn emit(out: &mut String, key: &str, v: &Value) {
    match v {
        Value::Object(o) => {
            out.push_str(&format!("<{key}>"));
            for (k, v) in o {
                emit(out, k, v);
            }
            out.push_str(&format!("</{key}>"));
        }
        Value::Array(a) => a.iter().for_each(|v| emit(out, key, v)),
        Value::String(s) => out.push_str(&format!("<{key}>{}</{key}>", escape(s))),
        other => out.push_str(&format!("<{key}>{other}</{key}>")),
    }
}

/// The message as it stands, written as MIG XML without the daemon's help: what Turnkey
/// would get if the message were sent as is.
fn as_written(ty: &str, msg: &Value) -> String {
    let root = root_of(ty);
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"urn:GEINV:eInvoiceMessage:{ty}:4.1\">"
    );
    for (k, v) in msg.as_object().unwrap() {
        if k != "MessageType" && k != "TenantId" {
            emit(&mut out, k, v);
        }
    }
    out.push_str(&format!("</{root}>\n"));
    out
}

/// xmllint's verdict on many files of one type at once: file → valid.
fn xmllint_many(dir: &Path, ty: &str, files: &[PathBuf]) -> BTreeMap<PathBuf, bool> {
    let mut out = BTreeMap::new();
    for chunk in files.chunks(400) {
        let run = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(dir.join(format!("{ty}.xsd")))
            .args(chunk)
            .output()
            .expect("xmllint is installed (run scripts/install-test-deps)");
        let text = String::from_utf8_lossy(&run.stderr);
        for f in chunk {
            let name = f.to_string_lossy();
            let ok = text.lines().any(|l| l == format!("{name} validates"));
            let bad = text
                .lines()
                .any(|l| l == format!("{name} fails to validate"));
            assert!(
                ok != bad,
                "xmllint said nothing clear about {name}:\n{text}"
            );
            out.insert(f.clone(), ok);
        }
    }
    out
}

#[test]
fn generated_messages_get_turnkeys_verdict() {
    let seed: u64 = std::env::var("TURNBRIDGE_CORPUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            chrono::Local::now()
                .format("%Y%m%d")
                .to_string()
                .parse()
                .unwrap()
        });
    let size: usize = std::env::var("TURNBRIDGE_CORPUS_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2400);
    println!("corpus seed {seed} (set TURNBRIDGE_CORPUS_SEED={seed} to repeat this run)");
    let cases = build_corpus(seed, size);
    let opts = Config::parse(DEFAULT_TOML, Path::new("/"))
        .unwrap()
        .read_options();

    // The daemon's verdict, in batches of at most 999 as the daemon takes them.
    let dir = tempfile::tempdir().unwrap();
    let mut verdicts: Vec<Option<Result<Vec<u8>, Vec<turnbridge::einvoice::Problem>>>> =
        (0..cases.len()).map(|_| None).collect();
    for (b, chunk) in cases.chunks(900).enumerate() {
        let batch = Value::Array(chunk.iter().map(|c| c.msg.clone()).collect());
        let bytes = serde_json::to_vec(&batch).unwrap();
        let v = check_batch(&format!("corpus{b}.json"), &bytes, &opts)
            .unwrap_or_else(|e| panic!("seed {seed}: batch {b} refused whole: {e}"));
        // Rows are the message's position in the batch (1-based).
        for a in v.accepted {
            let slot = &mut verdicts[b * 900 + a.row - 1];
            assert!(slot.is_none(), "one verdict per message");
            *slot = Some(Ok(a.xml));
        }
        for r in v.rejected {
            let slot = &mut verdicts[b * 900 + r.row - 1];
            assert!(slot.is_none(), "one verdict per message");
            *slot = Some(Err(r.problems));
        }
    }

    // Files for the official check: the daemon's XML for accepted messages, the message as
    // written for refused ones.
    let mut files = Vec::new();
    let mut by_type: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    for (i, (c, v)) in cases.iter().zip(&verdicts).enumerate() {
        let v = v
            .as_ref()
            .unwrap_or_else(|| panic!("seed {seed}: message {i} has no verdict"));
        let xml = match v {
            Ok(xml) => xml.clone(),
            Err(_) => as_written(c.ty, &c.msg).into_bytes(),
        };
        let path = dir.path().join(format!("m{i:05}_{}.xml", c.ty));
        std::fs::write(&path, xml).unwrap();
        by_type.entry(c.ty).or_default().push(path.clone());
        files.push(path);
    }
    let official = official_check(&files);

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, ((c, v), o)) in cases.iter().zip(&verdicts).zip(&official).enumerate() {
        let v = v.as_ref().unwrap();
        let what = format!("message {i} ({} {}, {})", c.ty, c.kind, o.file.display());
        let legacy = if c.kind == "legacy" { " legacy" } else { "" };
        *counts
            .entry(format!(
                "{}{legacy} {}",
                c.ty,
                match v {
                    Ok(_) => "accepted",
                    Err(_) => "refused",
                }
            ))
            .or_default() += 1;
        match (v, c.expect) {
            (Ok(_), _) if !o.ok() => failures.push(format!(
                "{what}: accepted, but Turnkey refuses the XML: {}",
                o.line
            )),
            (Ok(_), Expect::Accept) => {}
            (Ok(_), e) => failures.push(format!("{what}: accepted, expected {e:?}")),
            (Err(p), Expect::Accept) => {
                failures.push(format!("{what}: refused, expected accepted: {p:?}"))
            }
            (Err(p), Expect::Turnkey(field)) | (Err(p), Expect::Platform(field)) => {
                let platform = matches!(c.expect, Expect::Platform(_));
                // The field's whole path, and the kind of rule the mutation breaks.
                let path = format!(".{field}");
                if !p
                    .iter()
                    .any(|p| p.field.ends_with(&path) && p.rule.is_some() == platform)
                {
                    failures.push(format!(
                        "{what}: refused, but not for {field} as a {} rule: {p:?}",
                        if platform { "platform" } else { "Turnkey" }
                    ));
                }
                if platform != o.ok() {
                    failures.push(format!(
                        "{what}: expected {:?}, the official check says: {}",
                        c.expect, o.line
                    ));
                }
                if o.ok() && p.iter().any(|p| p.rule.is_none()) {
                    failures.push(format!(
                        "{what}: Turnkey accepts it, so every refusal must name a platform rule: {p:?}"
                    ));
                }
                if !o.ok() {
                    *counts.entry("refused by Turnkey too".into()).or_default() += 1;
                } else {
                    *counts
                        .entry("refused by a platform rule only".into())
                        .or_default() += 1;
                }
            }
        }
    }

    // The repository's schemas agree with the official XSD on every file.
    let mut disagree = Vec::new();
    for (ty, files) in &by_type {
        let official = xmllint_many(&xsd_dir(), ty, files);
        let ours = xmllint_many(&repo_xsd_dir(), ty, files);
        for f in files.iter() {
            if official[f] != ours[f] {
                disagree.push(format!(
                    "{}: official XSD {}, schemas/mig41 {}",
                    f.display(),
                    official[f],
                    ours[f]
                ));
            }
        }
    }

    println!("corpus seed {seed}: {} messages", cases.len());
    for (k, n) in &counts {
        println!("  {k}: {n}");
    }
    let kinds: std::collections::BTreeSet<_> = cases.iter().map(|c| c.kind).collect();
    println!(
        "  {} kinds of message ({} mutations)",
        kinds.len(),
        kinds.len() - 2
    );
    if !failures.is_empty() || !disagree.is_empty() {
        // Keep the files for a look.
        let kept = dir.keep();
        panic!(
            "seed {seed}: {} verdict problems, {} schema disagreements (files kept in {}):\n{}\n{}",
            failures.len(),
            disagree.len(),
            kept.display(),
            failures
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            disagree
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(cases.len() >= 2000, "at least 2,000 messages");
    for ty in ["F0401", "F0501", "F0701", "G0401", "G0501"] {
        assert!(
            counts.get(&format!("{ty} accepted")).copied().unwrap_or(0) >= 50,
            "{ty}: too few accepted messages ({counts:?})"
        );
    }
    assert!(counts.get("refused by Turnkey too").copied().unwrap_or(0) >= 100);
    assert!(
        counts
            .get("refused by a platform rule only")
            .copied()
            .unwrap_or(0)
            >= 50
    );
}
