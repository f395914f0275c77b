//! The memory budget: whatever a batch file holds, up to `einvoice.max_file_bytes` (and every
//! ZIP member up to its own limit), the daemon's peak resident memory stays under
//! [`BUDGET_MIB`], the figure the README documents and the unit's `MemoryMax=` leaves room
//! for. Each input runs in a daemon of its own, so each peak is that input's.
//!
//! The hostile inputs are shaped to cost the most memory per byte (nested arrays, empty
//! items, unknown keys, near-empty rows, an archive that expands 500-fold); the legitimate
//! ones are the largest batches the limits accept (every line the budget allows, every byte
//! the file limit allows, in UTF-8 and in Big5, which grows by half when decoded).

use std::io::Write;
use std::time::Instant;

use crate::common::*;
use turnbridge::config::Config;

/// The documented budget, in MiB.
const BUDGET_MIB: u64 = 256;

/// The job a spool file became, once it is final: its state.
fn final_state(sb: &Sandbox, name: &str) -> String {
    let mut state = String::new();
    wait_for(240, &format!("{name} to be processed"), || {
        state = sb
            .try_store()
            .and_then(|c| job_named(&c, name))
            .map(|j| j.state.to_string())
            .unwrap_or_default();
        !state.is_empty() && state != "claimed"
    });
    state
}

/// Runs one file through a fresh daemon; returns the job's final state, the report's text
/// (if any) and the daemon's peak resident memory in MiB.
fn run(name: &str, bytes: &[u8]) -> (String, String, u64) {
    let mut sb = Sandbox::new();
    sb.start();
    let pid = sb.child.as_ref().unwrap().id();
    let started = Instant::now();
    sb.drop_file(name, bytes);
    let state = final_state(&sb, name);
    let report = files_in(&sb.rejected())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".error.txt"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    let peak = peak_rss_kib(pid) / 1024;
    assert!(peak > 0, "the peak of {pid} could not be read");
    eprintln!(
        "{name}: {} bytes → {state} in {:?}, peak RSS {peak} MiB",
        bytes.len(),
        started.elapsed()
    );
    assert!(
        sb.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the daemon exited on {name}:\n{}",
        sb.log()
    );
    assert_eq!(sb.terminate().code(), Some(0));
    (state, report, peak)
}

fn limits() -> (usize, usize, usize, usize) {
    let c = Config::default().einvoice;
    (
        c.max_file_bytes as usize,
        c.zip.max_member_bytes as usize,
        c.max_lines_per_batch,
        c.max_invoices_per_batch,
    )
}

/// `unit` repeated to fill `len` bytes between `open` and `close`.
fn fill(open: &str, unit: &str, close: &str, len: usize) -> Vec<u8> {
    let n = (len - open.len() - close.len()) / unit.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(open.as_bytes());
    for _ in 0..n {
        out.extend_from_slice(unit.as_bytes());
    }
    out.extend_from_slice(close.as_bytes());
    out
}

fn zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

const HEADER: &str = "MessageType,TenantId,InvoiceNumber,InvoiceDate,InvoiceTime,Seller.Identifier,Seller.Name,Seller.Address,Buyer.Identifier,Buyer.Name,InvoiceType,DonateMark,PrintMark,RandomNumber,Item.Description,Item.Quantity,Item.Unit,Item.UnitPrice,Item.TaxType,Item.Amount,Item.SequenceNumber,SalesAmount,FreeTaxSalesAmount,ZeroTaxSalesAmount,TaxType,TaxRate,TaxAmount,TotalAmount\n";

/// Valid consumer invoices, `lines` product lines each, every description `desc` long.
fn invoices_csv(invoices: usize, lines: usize, desc: &str) -> String {
    let mut out = String::from(HEADER);
    for i in 0..invoices {
        let no = format!("AB{:08}", 10_000_000 + i);
        for j in 0..lines {
            out.push_str(&format!(
                "F0401,TEN-001,{no},20261126,09:30:00,28080623,好茶,台北市,0000000000,消費者,07,0,Y,1234,{desc}{j},1,杯,1,1,1,{},{lines},0,0,1,0.05,0,{lines}\n",
                j + 1
            ));
        }
    }
    out
}

#[test]
fn hostile_shapes_are_refused_while_reading_within_the_budget() {
    let (max_file, max_member, max_lines, max_invoices) = limits();
    let mb30 = 30 << 20;
    let nested = fill("[", "[[],[[]]],", "[]]", mb30.min(max_file));
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        // Tiny nested arrays: every two bytes a value.
        (
            "nested.json",
            nested.clone(),
            format!("more than {max_invoices} messages"),
        ),
        // The same in an archive: 16 MiB from about 30 KB.
        (
            "nested.zip",
            zip(&[("a.json", &nested[..nested.len().min(max_member)])]),
            format!("more than {max_invoices} messages"),
        ),
        // One message of empty product lines.
        (
            "items.json",
            fill(
                r#"[{"MessageType":"F0401","Details":{"ProductItem":["#,
                "{},",
                "{}]}}]",
                max_file - 1,
            ),
            "has more than 9999 lines".to_string(),
        ),
        // Messages of unknown keys.
        (
            "keys.json",
            fill("[", r#"{"x":1,"y":[2]},"#, "{}]", max_file - 1),
            format!("more than {max_invoices} messages"),
        ),
        // Rows that are nearly empty, each one a line.
        (
            "rows.csv",
            fill(
                HEADER,
                "F0401,,,,,,,,,,,,,,,,,,,,,,,,,,,\n",
                "",
                max_file - 1,
            ),
            format!("more than {max_lines} product lines"),
        ),
        // Members of rows: each within its limit, together beyond the batch's.
        (
            "members.zip",
            {
                let rows = fill(
                    HEADER,
                    "F0401,T,AB00000001,,,,,,,,,,,,,,,,,,,,,,,,,\n",
                    "",
                    max_member / 2,
                );
                zip(&[("a.csv", &rows), ("b.csv", &rows)])
            },
            format!("more than {max_lines} product lines"),
        ),
        // Problems that would each copy a long first value (escaped 5-fold), for every line.
        (
            "differs.csv",
            {
                let mut t =
                    String::from("MessageType,InvoiceNumber,Seller.Identifier,BuyerRemark\n");
                let first = "\u{1}".repeat(4096);
                for m in 0..max_invoices {
                    t.push_str(&format!("F0401,N{m},1,{first}\n"));
                    for _ in 1..max_lines / max_invoices {
                        t.push_str(&format!("F0401,N{m},1,\n"));
                    }
                }
                t.into_bytes()
            },
            "differs from row".to_string(),
        ),
        // Every message at its longest values and its most problems.
        (
            "problems.json",
            {
                let unknown: Vec<String> = (0..100)
                    .map(|k| format!("\"u{k}\":\"{}\"", "v".repeat(40)))
                    .collect();
                let m = format!(
                    r#"{{"MessageType":"F0401","InvoiceNumber":"{}",{}}}"#,
                    "N".repeat(4096),
                    unknown.join(",")
                );
                format!("[{}]", vec![m; max_invoices].join(",")).into_bytes()
            },
            "is not a known field".to_string(),
        ),
        // A header of millions of columns.
        (
            "wide.csv",
            fill("", ",", "\nF0401\n", max_file - 1),
            "fields or more; no batch has that many columns".to_string(),
        ),
        // A manifest listing far more members than an archive holds.
        (
            "manifest.zip",
            {
                let names: Vec<String> = (0..1_000_000)
                    .map(|i| format!(r#"{{"name":"{i}"}}"#))
                    .collect();
                let manifest = format!(r#"{{"members":[{}]}}"#, names.join(","));
                zip(&[(
                    "manifest.json",
                    &manifest.as_bytes()[..manifest.len().min(max_member)],
                )])
            },
            "manifest.json".to_string(),
        ),
    ];
    let mut worst = 0;
    for (name, bytes, reason) in cases {
        assert!(bytes.len() <= max_file, "{name} is within the file limit");
        let (state, report, peak) = run(name, &bytes);
        assert!(state == "rejected" || state == "done", "{name}: {state}");
        assert!(report.contains(&reason), "{name}: {report}");
        assert!(
            peak < BUDGET_MIB,
            "{name}: peak RSS {peak} MiB, budget {BUDGET_MIB}"
        );
        worst = worst.max(peak);
    }
    eprintln!("hostile inputs: worst peak RSS {worst} MiB");
}

#[test]
fn the_largest_batches_the_limits_accept_stay_within_the_budget() {
    let (max_file, _, max_lines, max_invoices) = limits();
    // Every line the batch may hold, short values.
    let per = max_lines / max_invoices;
    let lines = invoices_csv(max_invoices, per, "茶");
    // Every byte the file may hold, long values (500 characters is the longest a
    // description may be; 480 leaves room for the line number).
    let long_desc = "茶".repeat(480);
    let one = invoices_csv(1, 1, &long_desc).len() - HEADER.len();
    let long_lines = (max_file - HEADER.len()) / one;
    let per_long = 400.min(long_lines);
    let long = invoices_csv(long_lines / per_long, per_long, &long_desc);
    // Big5 is two bytes a character where UTF-8 is three: fill the limit again.
    let one_big5 = encoding_rs::BIG5
        .encode(&invoices_csv(1, 1, &long_desc))
        .0
        .len()
        - HEADER.len();
    let big5_lines = (max_file - HEADER.len()) / (one_big5 + 4);
    let big5_text = invoices_csv(big5_lines / per_long, per_long, &long_desc);
    let (big5_full, _, _) = encoding_rs::BIG5.encode(&big5_text);
    let json = {
        let items: Vec<String> = (1..=per)
            .map(|j| format!(r#"{{"Description":"茶","Quantity":1,"Unit":"杯","UnitPrice":1,"TaxType":"1","Amount":1,"SequenceNumber":"{j}"}}"#))
            .collect();
        let items = items.join(",");
        let messages: Vec<String> = (0..max_invoices)
            .map(|i| {
                format!(
                    r#"{{"MessageType":"F0401","TenantId":"TEN-001","Main":{{"InvoiceNumber":"AB{:08}","InvoiceDate":"20261126","InvoiceTime":"09:30:00","Seller":{{"Identifier":"28080623","Name":"台灣好茶股份有限公司","Address":"台北市信義區松高路1號"}},"Buyer":{{"Identifier":"0000000000","Name":"消費者"}},"InvoiceType":"07","DonateMark":"0","PrintMark":"Y","RandomNumber":"1234"}},"Details":{{"ProductItem":[{items}]}},"Amount":{{"SalesAmount":{per},"FreeTaxSalesAmount":0,"ZeroTaxSalesAmount":0,"TaxType":"1","TaxRate":0.05,"TaxAmount":0,"TotalAmount":{per}}}}}"#,
                    10_000_000 + i
                )
            })
            .collect();
        format!("[{}]", messages.join(","))
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("lines.csv", lines.into_bytes()),
        ("long.csv", long.into_bytes()),
        ("long-big5.csv", big5_full.into_owned()),
        ("lines.json", json.into_bytes()),
    ];
    let mut worst = 0;
    for (name, bytes) in cases {
        assert!(bytes.len() <= max_file, "{name}: {} bytes", bytes.len());
        let (state, report, peak) = run(name, &bytes);
        assert_eq!(state, "done", "{name}: {report}");
        assert!(report.is_empty(), "{name}: {report}");
        assert!(
            peak < BUDGET_MIB,
            "{name}: peak RSS {peak} MiB, budget {BUDGET_MIB}"
        );
        worst = worst.max(peak);
    }
    eprintln!("largest accepted batches: worst peak RSS {worst} MiB");
}
