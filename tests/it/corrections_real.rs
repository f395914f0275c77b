//! Corrections through the real Turnkey 3.2.0 (UpCast and Unpack run by
//! `../shared/turnkey/bin/tkrun`, as in `turnkey_real.rs`): a cancel Turnkey refused goes again
//! corrected as its next generation and UpCast takes it to BAK; an invoice voided and issued
//! again is taken too, and the platform's result about the re-issue reaches its second
//! generation, not the first.

use std::path::Path;

use crate::common::*;
use crate::turnkey_real::{tkrun, CROSS_BORDER_SELLER};
use turnbridge::store::messages::{self, MessageRow};
use turnbridge::store::MessageState;

/// Today in Taiwan (UTC+8), `YYYYMMDD`.
fn today() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y%m%d")
        .to_string()
}

fn generation(sb: &Sandbox, ty: &str, number: &str, g: u32) -> Option<MessageRow> {
    let conn = sb.try_store()?;
    messages::by_number(&conn, number)
        .ok()?
        .into_iter()
        .find(|m| m.message_type == ty && m.generation == g)
}

fn wait_state(sb: &Sandbox, ty: &str, number: &str, g: u32, state: MessageState) -> MessageRow {
    wait_for(60, &format!("{ty} {number} generation {g} {state}"), || {
        generation(sb, ty, number, g).is_some_and(|m| m.state == state)
    });
    generation(sb, ty, number, g).unwrap()
}

/// The evidence of a message's last transition.
fn evidence(sb: &Sandbox, m: &MessageRow) -> String {
    messages::transitions_of(&sb.store(), m.id)
        .unwrap()
        .pop()
        .and_then(|t| t.evidence)
        .unwrap_or_default()
}

fn upcast(home: &Path) {
    tkrun(home, &["upcast", "--cross-list", CROSS_BORDER_SELLER]);
}

/// The platform accepts the newest upload of `ty` (a signed ProcessResult, read by Unpack).
fn accept_newest(home: &Path, ty: &str) {
    tkrun(home, &["make-result", "--msg-type", ty]);
    tkrun(home, &["unpack"]);
}

#[test]
fn a_corrected_cancel_and_a_reissued_invoice_on_the_real_turnkey() {
    let mut sb = Sandbox::new();
    let home = sb.path().join("tk");
    tkrun(&home, &["init"]);
    std::fs::write(
        sb.config_path(),
        "[paths]\nspool = \"spool\"\nstate = \"state\"\n\
         [einvoice]\nsettle_ms = 100\nrescan_secs = 1\n\
         [turnkey]\nlayout = \"turnkey\"\ninbox = \"tk/EINVTurnkey/UpCast/B2SSTORAGE/{message_type}/SRC\"\nrescan_secs = 1\n\
         [log]\nlevel = \"debug\"\nformat = \"text\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    sb.start();
    let d = today();
    let (cancel, invoice) = ("ZX00000002", "VR00000009");
    let cancel_csv = |buyer: &str| {
        format!(
            "MessageType,CancelInvoiceNumber,InvoiceDate,BuyerId,SellerId,CancelDate,CancelTime,CancelReason\n\
             F0501,{cancel},{d},{buyer},{CROSS_BORDER_SELLER},{d},00:00:00,開立錯誤\n"
        )
    };

    // 1. A cancel Turnkey refuses (a cross-border seller may not cancel a B2B invoice), and an
    //    invoice it takes, which the platform accepts.
    sb.drop_file("cancel.csv", cancel_csv("28080623").as_bytes());
    sb.drop_file(
        "invoice.csv",
        std::fs::read_to_string(fixture("valid/F0401_b2c_print.csv"))
            .unwrap()
            .replace("AB12345678", invoice)
            .replace("20261126", &d)
            .replace("09:30:00", "00:00:00")
            .as_bytes(),
    );
    wait_state(&sb, "F0501", cancel, 1, MessageState::Queued);
    let issued = wait_state(&sb, "F0401", invoice, 1, MessageState::Queued);
    let issued_xml = std::fs::read(issued.xml_path.as_ref().unwrap()).unwrap();
    upcast(&home);
    let refused = wait_state(&sb, "F0501", cancel, 1, MessageState::Error);
    assert!(evidence(&sb, &refused).contains("/UpCast/B2SSTORAGE/F0501/ERR/"));
    wait_state(&sb, "F0401", invoice, 1, MessageState::PickedUp);
    accept_newest(&home, "F0401");
    wait_state(&sb, "F0401", invoice, 1, MessageState::Acked);

    // 2. The corrected cancel (the buyer a consumer) is its second generation; the invoice is
    //    voided by the operator's command.
    sb.drop_file("cancel-corrected.csv", cancel_csv("0000000000").as_bytes());
    wait_state(&sb, "F0501", cancel, 2, MessageState::Queued);
    cli(
        &sb.config_path(),
        &["invoice", "void", invoice, "--reason", "買受人資料錯誤"],
    );
    wait_state(&sb, "F0701", invoice, 1, MessageState::Queued);
    upcast(&home);
    let corrected = wait_state(&sb, "F0501", cancel, 2, MessageState::PickedUp);
    assert!(
        evidence(&sb, &corrected).contains("/UpCast/B2SSTORAGE/F0501/BAK/"),
        "{}",
        evidence(&sb, &corrected)
    );
    assert_eq!(
        generation(&sb, "F0501", cancel, 1).unwrap().state,
        MessageState::Error,
        "the first generation stays as it was"
    );
    let void = wait_state(&sb, "F0701", invoice, 1, MessageState::PickedUp);
    assert!(evidence(&sb, &void).contains("/UpCast/B2SSTORAGE/F0701/BAK/"));
    accept_newest(&home, "F0701");
    wait_state(&sb, "F0701", invoice, 1, MessageState::Acked);

    // 3. Issued again: the same XML as generation 2, taken by UpCast, and the platform's
    //    result about it reaches generation 2.
    cli(&sb.config_path(), &["invoice", "reissue", invoice]);
    let again = wait_state(&sb, "F0401", invoice, 2, MessageState::Queued);
    assert_eq!(
        std::fs::read(again.xml_path.as_ref().unwrap()).unwrap(),
        issued_xml
    );
    upcast(&home);
    let again = wait_state(&sb, "F0401", invoice, 2, MessageState::PickedUp);
    assert!(evidence(&sb, &again).contains("/UpCast/B2SSTORAGE/F0401/BAK/"));
    accept_newest(&home, "F0401");
    wait_state(&sb, "F0401", invoice, 2, MessageState::Acked);
    let first = generation(&sb, "F0401", invoice, 1).unwrap();
    assert_eq!(first.state, MessageState::Acked);
    assert_eq!(
        messages::transitions_of(&sb.store(), first.id)
            .unwrap()
            .len(),
        4,
        "generation 1 was not moved again: received→validated→queued→picked_up→acked"
    );
    sb.kill();
}
