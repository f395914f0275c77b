//! Corrections on the real daemon: a refused invoice sent again as its next generation (a
//! corrected drop, `turnbridge invoice resend`), an accepted or waiting one never replaced,
//! void then re-issue, cancels, allowances and their cancels in order and refused out of order,
//! the operator's cancel and void with their events and XML the official checks accept, and
//! the time rules (late cancels, future dates).
//!
//! Documents are dated today (Taiwan time), so the period rules hold whenever the tests run.
//! Turnkey is played by hand in the flat layout: a file moved from the inbox to `ERROR/` is
//! refused, one moved to `SENT/` with an `ACK` in the outbox is accepted.

use std::path::PathBuf;
use std::process::Output;

use crate::common::*;
use serde_json::Value;
use turnbridge::store::messages::{self, MessageRow};
use turnbridge::store::MessageState;

const SELLER: &str = "28080623";

/// Today in Taiwan (UTC+8), `YYYYMMDD`.
fn today() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y%m%d")
        .to_string()
}

/// A consumer invoice of 100, dated `date`, bought by `buyer`.
fn invoice(number: &str, date: &str, buyer: &str) -> String {
    format!(
        "MessageType,InvoiceNumber,InvoiceDate,InvoiceTime,Seller.Identifier,Seller.Name,Seller.Address,Buyer.Identifier,Buyer.Name,InvoiceType,DonateMark,PrintMark,RandomNumber,Item.Description,Item.Quantity,Item.UnitPrice,Item.TaxType,Item.Amount,Item.SequenceNumber,SalesAmount,FreeTaxSalesAmount,ZeroTaxSalesAmount,TaxType,TaxRate,TaxAmount,TotalAmount\n\
         F0401,{number},{date},00:00:00,{SELLER},台灣好茶股份有限公司,台北市信義區松高路1號,0000000000,{buyer},07,0,Y,1234,鮮奶茶,2,50,1,100,1,100,0,0,1,0.05,0,100\n"
    )
}

/// A business invoice of 10000 untaxed (special tax, as `fixtures/valid/F0401_special.csv`).
fn special_invoice(number: &str) -> String {
    std::fs::read_to_string(fixture("valid/F0401_special.csv"))
        .unwrap()
        .replace("AB12345681", number)
        .replace("20261126", &today())
        .replace("09:30:00", "00:00:00")
}

/// An allowance taking back `amount` (tax 5%) of invoice `invoice`, dated today.
fn allowance(number: &str, invoice: &str, amount: u32) -> String {
    let (d, tax) = (today(), amount / 20);
    format!(
        "MessageType,AllowanceNumber,AllowanceDate,Seller.Identifier,Seller.Name,Buyer.Identifier,Buyer.Name,Item.OriginalInvoiceDate,Item.OriginalInvoiceNumber,Item.OriginalDescription,Item.Quantity,Item.Unit,Item.UnitPrice,Item.Amount,Item.Tax,Item.AllowanceSequenceNumber,Item.TaxType,TaxAmount,TotalAmount\n\
         G0401,{number},{d},{SELLER},S,04595257,B,{d},{invoice},x,1,u,{amount},{amount},{tax},1,1,{tax},{amount}\n"
    )
}

fn cancel_allowance(number: &str) -> String {
    let d = today();
    format!(
        "MessageType,CancelAllowanceNumber,AllowanceDate,BuyerId,SellerId,CancelDate,CancelTime,CancelReason\n\
         G0501,{number},{d},04595257,{SELLER},{d},00:00:00,折讓金額錯誤\n"
    )
}

/// A daemon on the flat layout with no simulator, Turnkey's folders there, feedback read
/// every second.
fn sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    let text = std::fs::read_to_string(sb.config_path()).unwrap().replace(
        "error = \"turnkey/ERROR\"\n",
        "error = \"turnkey/ERROR\"\nrescan_secs = 1\n",
    );
    std::fs::write(sb.config_path(), text).unwrap();
    for d in ["OUTBOX", "ERROR", "SENT"] {
        std::fs::create_dir_all(sb.path().join("turnkey").join(d)).unwrap();
    }
    sb.start();
    sb
}

/// Every message about a number (every generation), oldest first.
fn rows(sb: &Sandbox, number: &str) -> Vec<MessageRow> {
    sb.try_store()
        .and_then(|c| messages::by_number(&c, number).ok())
        .unwrap_or_default()
}

/// Waits for generation `generation` of `ty number` to be in `state`; returns it.
fn wait_state(
    sb: &Sandbox,
    ty: &str,
    number: &str,
    generation: u32,
    state: MessageState,
) -> MessageRow {
    let find = || {
        rows(sb, number)
            .into_iter()
            .find(|m| m.message_type == ty && m.generation == generation && m.state == state)
    };
    wait_for(
        30,
        &format!("{ty} {number} generation {generation} {state}"),
        || find().is_some(),
    );
    find().unwrap()
}

/// Turnkey refuses a queued message: its file goes to `ERROR/`.
fn refuse(sb: &Sandbox, m: &MessageRow) -> PathBuf {
    let from = PathBuf::from(m.xml_path.as_ref().unwrap());
    let to = sb
        .path()
        .join("turnkey/ERROR")
        .join(from.file_name().unwrap());
    std::fs::rename(&from, &to).unwrap();
    wait_state(
        sb,
        &m.message_type,
        &m.number,
        m.generation,
        MessageState::Error,
    );
    to
}

/// Turnkey takes a queued message and the platform accepts it.
fn accept(sb: &Sandbox, m: &MessageRow) {
    let from = PathBuf::from(m.xml_path.as_ref().unwrap());
    let name = from.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::rename(&from, sb.path().join("turnkey/SENT").join(&name)).unwrap();
    let stem = name.trim_end_matches(".xml");
    std::fs::write(
        sb.path().join(format!("turnkey/OUTBOX/ACK_{stem}.xml")),
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ACK>\n  <MessageID>{stem}</MessageID>\n  <ReceiptNo>R{stem}</ReceiptNo>\n  <TimeStamp>2026-12-04T10:00:00+08:00</TimeStamp>\n</ACK>\n"),
    )
    .unwrap();
    wait_state(
        sb,
        &m.message_type,
        &m.number,
        m.generation,
        MessageState::Acked,
    );
}

/// Drops `text` as `name` and waits for the job to finish.
fn drop_and_wait(sb: &Sandbox, name: &str, text: &str) {
    sb.drop_file(name, text.as_bytes());
    wait_for(30, &format!("{name} processed"), || {
        sb.try_store()
            .and_then(|c| job_named(&c, name))
            .is_some_and(|j| j.state.is_finished())
    });
}

/// The report on rows refused from spool file `name`.
fn report(sb: &Sandbox, name: &str) -> Value {
    let path = files_in(&sb.rejected())
        .into_iter()
        .find(|p| {
            p.to_string_lossy()
                .ends_with(&format!("_{name}.error.json"))
        })
        .unwrap_or_else(|| panic!("no report on {name}"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The one problem reported on `name`: (field, value, reason, rule).
fn problem(sb: &Sandbox, name: &str) -> (String, String, String, Value) {
    let r = report(sb, name);
    let p = &r["problems"][0];
    assert_eq!(r["problems"].as_array().unwrap().len(), 1, "{r}");
    let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
    (s("field"), s("value"), s("reason"), p["rule"].clone())
}

/// Runs `turnbridge ARGS --config …` and returns what it did, whatever its exit.
fn turnbridge(sb: &Sandbox, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(args)
        .arg("--config")
        .arg(sb.config_path())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn history_json(sb: &Sandbox, number: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&cli(&sb.config_path(), &["history", number, "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

#[test]
fn a_refused_invoice_goes_again_as_its_next_generation_and_history_shows_both() {
    let sb = sandbox();
    let n = "CR00000001";
    drop_and_wait(&sb, "first.csv", &invoice(n, &today(), "打錯的名字"));
    let first = wait_state(&sb, "F0401", n, 1, MessageState::Queued);
    let err_file = refuse(&sb, &first);

    // The corrected document, dropped again: the next generation, a file of its own.
    drop_and_wait(&sb, "corrected.csv", &invoice(n, &today(), "王小明"));
    let second = wait_state(&sb, "F0401", n, 2, MessageState::Queued);
    assert_ne!(
        second.xml_name, first.xml_name,
        "an XML name is never reused"
    );
    let xml = std::fs::read_to_string(second.xml_path.as_ref().unwrap()).unwrap();
    assert!(
        xml.contains("王小明") && !xml.contains("打錯的名字"),
        "{xml}"
    );
    let all = rows(&sb, n);
    assert_eq!(
        all.iter()
            .map(|m| (m.generation, m.state))
            .collect::<Vec<_>>(),
        [(1, MessageState::Error), (2, MessageState::Queued)],
        "the earlier generation stays on record"
    );

    let stories = history_json(&sb, n);
    assert_eq!(stories.len(), 2, "{stories:?}");
    assert_eq!(
        (
            stories[0]["generation"].as_u64(),
            stories[0]["state"].as_str()
        ),
        (Some(1), Some("error"))
    );
    assert_eq!(
        (
            stories[1]["generation"].as_u64(),
            stories[1]["state"].as_str()
        ),
        (Some(2), Some("queued"))
    );
    let evidence: Vec<&str> = stories[0]["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["evidence"].as_str())
        .collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.contains(&*err_file.to_string_lossy())),
        "generation 1's evidence is Turnkey's ERROR file: {evidence:?}"
    );
    assert_eq!(stories[1]["source_file"], "corrected.csv");
    let text = cli(&sb.config_path(), &["history", n]);
    assert!(
        text.contains(&format!("F0401 {n}  generation 1"))
            && text.contains(&format!("F0401 {n}  generation 2"))
            && text.contains("queued → error")
            && text.contains("corrected.csv row 2"),
        "{text}"
    );
}

#[test]
fn resend_sends_the_same_xml_again_and_announces_it() {
    let sb = sandbox();
    let n = "RS00000001";
    drop_and_wait(&sb, "a.csv", &invoice(n, &today(), "王小明"));
    let first = wait_state(&sb, "F0401", n, 1, MessageState::Queued);
    let refused = std::fs::read(refuse(&sb, &first)).unwrap();

    let out = turnbridge(&sb, &["invoice", "resend", n]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the same, byte for byte")
            && text(&out).contains("generation 2 is queued"),
        "{}",
        text(&out)
    );
    let second = wait_state(&sb, "F0401", n, 2, MessageState::Queued);
    assert_eq!(
        std::fs::read(second.xml_path.as_ref().unwrap()).unwrap(),
        refused,
        "the same XML again, under a name of its own"
    );
    let issued = events_named(&sb.store(), "invoice.manual.issued");
    assert_eq!(issued.len(), 1, "{issued:?}");
    let e = &issued[0];
    assert_eq!(
        (
            e["action"].as_str(),
            e["invoice_no"].as_str(),
            e["generation"].as_u64(),
            e["message_type"].as_str()
        ),
        (Some("resend"), Some(n), Some(2), Some("F0401"))
    );
    assert_eq!(e["xml_name"].as_str(), Some(second.xml_name.as_str()));
    assert!(events_named(&sb.store(), "invoice.manual.cancelled").is_empty());
    let stories = history_json(&sb, n);
    assert_eq!(stories[1]["manual"]["action"], "resend", "{stories:?}");

    // Sent again, it is on its way: not a second time.
    let out = turnbridge(&sb, &["invoice", "resend", n]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("still on its way"), "{}", text(&out));

    // Refused again, it goes a third time: the same bytes as the last request, on purpose,
    // are not a duplicate file.
    refuse(&sb, &second);
    let out = turnbridge(&sb, &["invoice", "resend", n]);
    assert!(out.status.success(), "{}", text(&out));
    let third = wait_state(&sb, "F0401", n, 3, MessageState::Queued);
    assert_eq!(
        std::fs::read(third.xml_path.as_ref().unwrap()).unwrap(),
        refused
    );
    assert_eq!(events_named(&sb.store(), "invoice.manual.issued").len(), 2);
}

#[test]
fn an_accepted_or_waiting_invoice_is_never_replaced() {
    let sb = sandbox();
    let n = "AK00000001";
    drop_and_wait(&sb, "a.csv", &invoice(n, &today(), "王小明"));
    let first = wait_state(&sb, "F0401", n, 1, MessageState::Queued);

    drop_and_wait(&sb, "again-waiting.csv", &invoice(n, &today(), "王大明"));
    let (field, value, reason, rule) = problem(&sb, "again-waiting.csv");
    assert_eq!(
        (field.as_str(), value.as_str(), rule),
        ("InvoiceNumber", n, Value::Null)
    );
    assert!(
        reason.contains("still on its way") && reason.contains("queued"),
        "{reason}"
    );

    accept(&sb, &first);
    drop_and_wait(&sb, "again-acked.csv", &invoice(n, &today(), "王中明"));
    let (_, _, reason, _) = problem(&sb, "again-acked.csv");
    assert!(
        reason.contains("accepted by the platform")
            && reason.contains(&first.xml_name)
            && reason.contains(&format!("turnbridge invoice void {n}")),
        "{reason}"
    );
    let out = turnbridge(&sb, &["invoice", "resend", n]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("accepted by the platform"),
        "{}",
        text(&out)
    );
    assert_eq!(rows(&sb, n).len(), 1, "nothing was recorded");
    assert!(events_named(&sb.store(), "invoice.manual.issued").is_empty());
}

#[test]
fn void_then_reissue_in_order_and_what_follows_a_void_out_of_order_is_refused() {
    let sb = sandbox();
    let n = "VR00000001";
    drop_and_wait(&sb, "a.csv", &invoice(n, &today(), "王小明"));
    let issue = wait_state(&sb, "F0401", n, 1, MessageState::Queued);
    let issued_xml = std::fs::read(issue.xml_path.as_ref().unwrap()).unwrap();
    accept(&sb, &issue);

    // Re-issue before a void is out of order.
    let out = turnbridge(&sb, &["invoice", "reissue", n]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("accepted by the platform"),
        "{}",
        text(&out)
    );

    let out = turnbridge(&sb, &["invoice", "void", n, "--reason", "買受人資料錯誤"]);
    assert!(out.status.success(), "{}", text(&out));
    let void = wait_state(&sb, "F0701", n, 1, MessageState::Queued);
    let cancelled = events_named(&sb.store(), "invoice.manual.cancelled");
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    assert_eq!(
        (
            cancelled[0]["action"].as_str(),
            cancelled[0]["reason"].as_str(),
            cancelled[0]["message_type"].as_str()
        ),
        (Some("void"), Some("買受人資料錯誤"), Some("F0701"))
    );
    let void_xml = PathBuf::from(void.xml_path.as_ref().unwrap());
    let v = std::fs::read_to_string(&void_xml).unwrap();
    assert!(
        v.contains(&format!("<VoidInvoiceNumber>{n}</VoidInvoiceNumber>"))
            && v.contains(&format!("<InvoiceDate>{}</InvoiceDate>", today()))
            && v.contains("<BuyerId>0000000000</BuyerId>")
            && v.contains(&format!("<SellerId>{SELLER}</SellerId>")),
        "written from what the store knows: {v}"
    );
    let kept = sb.path().join("F0701.xml");
    std::fs::copy(&void_xml, &kept).unwrap();
    accept(&sb, &void);

    // After the void: no cancel, no allowance, no second void.
    let out = turnbridge(&sb, &["invoice", "cancel", n, "--reason", "訂單取消"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("was voided"), "{}", text(&out));
    drop_and_wait(&sb, "al.csv", &allowance("ALV0000001", n, 10));
    let (field, _, reason, rule) = problem(&sb, "al.csv");
    assert_eq!(
        (field.as_str(), rule.as_str()),
        ("OriginalInvoiceNumber", Some("sequence")),
        "{reason}"
    );
    assert!(reason.contains("was voided"), "{reason}");
    let out = turnbridge(&sb, &["invoice", "void", n, "--reason", "again"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // The re-issue: the last issue again, as generation 2.
    let out = turnbridge(&sb, &["invoice", "reissue", n]);
    assert!(out.status.success(), "{}", text(&out));
    let reissue = wait_state(&sb, "F0401", n, 2, MessageState::Queued);
    let reissued_xml = std::fs::read(reissue.xml_path.as_ref().unwrap()).unwrap();
    assert_eq!(reissued_xml, issued_xml);
    let issued = events_named(&sb.store(), "invoice.manual.issued");
    assert_eq!(issued.len(), 1);
    assert_eq!(
        (
            issued[0]["action"].as_str(),
            issued[0]["generation"].as_u64()
        ),
        (Some("reissue"), Some(2))
    );

    // Both messages the commands wrote pass Turnkey's official checks.
    let again = sb.path().join("F0401.xml");
    std::fs::write(&again, &reissued_xml).unwrap();
    for v in official_check(&[kept, again]) {
        assert!(v.ok(), "{}", v.line);
    }
}

#[test]
fn cancels_wait_for_allowances_and_allowance_totals_count_what_stands() {
    let sb = sandbox();
    let n = "AT00000001";
    drop_and_wait(&sb, "inv.csv", &special_invoice(n));
    wait_state(&sb, "F0401", n, 1, MessageState::Queued);
    drop_and_wait(&sb, "al1.csv", &allowance("ALT0000001", n, 1500));
    wait_state(&sb, "G0401", "ALT0000001", 1, MessageState::Queued);
    // 1500 + 9000 is above the untaxed 10000.
    drop_and_wait(&sb, "al2.csv", &allowance("ALT0000002", n, 9000));
    let (_, _, reason, rule) = problem(&sb, "al2.csv");
    assert_eq!(rule, "allowance-within-invoice");
    assert!(
        reason.contains("would reach 10500, above its untaxed total 10000"),
        "{reason}"
    );

    // A cancel of the invoice waits for its allowances.
    let out = turnbridge(&sb, &["invoice", "cancel", n, "--reason", "訂單取消"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("allowances that still stand (ALT0000001)"),
        "{}",
        text(&out)
    );

    // The allowance cancelled (G0501), it no longer counts: 9000 fits.
    drop_and_wait(&sb, "cancel-al1.csv", &cancel_allowance("ALT0000001"));
    wait_state(&sb, "G0501", "ALT0000001", 1, MessageState::Queued);
    drop_and_wait(&sb, "al3.csv", &allowance("ALT0000003", n, 9000));
    wait_state(&sb, "G0401", "ALT0000003", 1, MessageState::Queued);
    // Cancelling the same allowance twice is refused.
    drop_and_wait(
        &sb,
        "cancel-al1-again.csv",
        &cancel_allowance("ALT0000001").replace("折讓金額錯誤", "重複"),
    );
    let (_, _, reason, _) = problem(&sb, "cancel-al1-again.csv");
    assert!(reason.contains("still on its way"), "{reason}");

    let out = turnbridge(&sb, &["invoice", "cancel", n, "--reason", "訂單取消"]);
    assert!(text(&out).contains("(ALT0000003)"), "{}", text(&out));
    drop_and_wait(&sb, "cancel-al3.csv", &cancel_allowance("ALT0000003"));
    wait_state(&sb, "G0501", "ALT0000003", 1, MessageState::Queued);

    // Now the cancel goes: written from the store, announced, and the official checks take it.
    let out = turnbridge(&sb, &["invoice", "cancel", n, "--reason", "訂單取消"]);
    assert!(out.status.success(), "{}", text(&out));
    let cancel = wait_state(&sb, "F0501", n, 1, MessageState::Queued);
    let events = events_named(&sb.store(), "invoice.manual.cancelled");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (
            events[0]["action"].as_str(),
            events[0]["invoice_no"].as_str(),
            events[0]["reason"].as_str()
        ),
        (Some("cancel"), Some(n), Some("訂單取消"))
    );
    assert_eq!(
        events[0]["xml_name"].as_str(),
        Some(cancel.xml_name.as_str())
    );
    let xml = PathBuf::from(cancel.xml_path.as_ref().unwrap());
    let body = std::fs::read_to_string(&xml).unwrap();
    assert!(
        body.contains("<BuyerId>04595257</BuyerId>"),
        "the invoice's buyer: {body}"
    );
    let v = official_check(std::slice::from_ref(&xml));
    assert!(v[0].ok(), "{}", v[0].line);
    // The request's file was archived like any other.
    assert!(
        sb.archived()
            .iter()
            .any(|p| p.to_string_lossy().contains("-cancel-AT00000001.json")),
        "{:?}",
        sb.archived()
    );

    // A cancelled invoice takes no allowance, and its number is never issued again.
    drop_and_wait(&sb, "al4.csv", &allowance("ALT0000004", n, 10));
    assert!(problem(&sb, "al4.csv").2.contains("was cancelled"));
    drop_and_wait(
        &sb,
        "inv-again.csv",
        &special_invoice(n).replace("夜店包廂", "包廂"),
    );
    let (field, _, reason, _) = problem(&sb, "inv-again.csv");
    assert_eq!(field, "InvoiceNumber");
    assert!(reason.contains("never issued again"), "{reason}");
}

#[test]
fn late_cancels_and_documents_dated_in_the_future_are_refused() {
    let sb = sandbox();
    // July–August 2026 closed for cancels on 15 September 2026.
    drop_and_wait(
        &sb,
        "late.csv",
        &format!(
            "MessageType,CancelInvoiceNumber,InvoiceDate,BuyerId,SellerId,CancelDate,CancelTime,CancelReason\n\
             F0501,LT00000001,20260701,0000000000,{SELLER},20260916,09:00:00,太晚了\n"
        ),
    );
    let (field, value, reason, rule) = problem(&sb, "late.csv");
    assert_eq!(
        (field.as_str(), value.as_str(), rule.as_str()),
        ("CancelDate", "20260916", Some("cancel-period"))
    );
    assert!(
        reason.contains("allowance (G0401)") && reason.contains("2026-09-15"),
        "{reason}"
    );

    let tomorrow = (chrono::Utc::now() + chrono::Duration::hours(8 + 24))
        .format("%Y%m%d")
        .to_string();
    drop_and_wait(
        &sb,
        "future.csv",
        &invoice("FT00000001", &tomorrow, "王小明"),
    );
    let (field, value, reason, _) = problem(&sb, "future.csv");
    assert_eq!(field, "InvoiceDate");
    assert!(value.starts_with(&tomorrow), "{value}");
    assert!(reason.contains("in the future"), "{reason}");
    assert!(sb.inbox_files().is_empty());
}

/// Placing a request for a number turnbridge never sent writes nothing.
#[test]
fn a_command_about_an_unknown_invoice_is_refused_and_writes_nothing() {
    let sb = sandbox();
    let out = turnbridge(&sb, &["invoice", "cancel", "UK00000001", "--reason", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("turnbridge has sent no F0401 UK00000001"),
        "{}",
        text(&out)
    );
    assert!(files_in(&sb.spool()).is_empty());
}
