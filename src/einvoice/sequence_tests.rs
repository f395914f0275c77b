use super::*;
use crate::einvoice::model::{CancelAllowance, CancelInvoice, VoidInvoice};
use crate::einvoice::types::{Ban, BuyerId, InvoiceNumber, MigDate, MigTime};
use crate::einvoice::{check_batch, ReadOptions};
use MessageState::*;

const SELLER: &str = "28080623";
const N: &str = "AB12345681";

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y%m%d").unwrap()
}

/// A stored message; ids follow the order of the calls within one test.
fn known(id: i64, ty: MessageType, generation: u32, state: MessageState) -> Known {
    Known {
        id,
        message_type: ty,
        number: N.into(),
        generation,
        state,
        document_date: d("20261126"),
        amount: (ty == MessageType::F0401).then(|| Decimal::from(10_000)),
        job_id: format!("job{id}"),
        xml_name: format!("{ty}_20261126_{id:08}.xml"),
    }
}

/// The one message a CSV row makes.
fn parse(csv: &str) -> Message {
    let mut v = check_batch("a.csv", csv.as_bytes(), &ReadOptions::for_tests()).unwrap();
    assert!(v.rejected.is_empty(), "{:?}", v.rejected);
    v.accepted.remove(0).message
}

fn invoice() -> Message {
    parse(include_str!("../../fixtures/valid/F0401_special.csv"))
}

/// An allowance of `amount` (tax 5%) on invoice `N`, numbered `number`.
fn allowance(number: &str, amount: u32) -> Message {
    parse(&format!(
        "MessageType,AllowanceNumber,AllowanceDate,Seller.Identifier,Seller.Name,Buyer.Identifier,Buyer.Name,Item.OriginalInvoiceDate,Item.OriginalInvoiceNumber,Item.OriginalDescription,Item.Quantity,Item.Unit,Item.UnitPrice,Item.Amount,Item.Tax,Item.AllowanceSequenceNumber,Item.TaxType,TaxAmount,TotalAmount\n\
         G0401,{number},20261127,{SELLER},S,04595257,B,20261126,{N},x,1,u,{amount},{amount},{tax},1,1,{tax},{amount}\n",
        tax = amount / 20
    ))
}

fn cancel(invoice_date: &str) -> Message {
    Message::Cancel(CancelInvoice {
        number: InvoiceNumber::parse(N).unwrap(),
        invoice_date: MigDate(d(invoice_date)),
        buyer_id: BuyerId::parse("04595257").unwrap(),
        seller_id: Ban::parse(SELLER).unwrap(),
        cancel_date: MigDate(d("20261127")),
        cancel_time: MigTime::parse("10:00:00").unwrap(),
        reason: "r".into(),
        return_tax_document_number: None,
        remark: None,
        reserved1: None,
        reserved2: None,
    })
}

fn void() -> Message {
    Message::Void(VoidInvoice {
        number: InvoiceNumber::parse(N).unwrap(),
        invoice_date: MigDate(d("20261126")),
        buyer_id: BuyerId::parse("04595257").unwrap(),
        seller_id: Ban::parse(SELLER).unwrap(),
        void_date: MigDate(d("20261127")),
        void_time: MigTime::parse("10:00:00").unwrap(),
        reason: "r".into(),
        remark: None,
        reserved1: None,
        reserved2: None,
    })
}

fn cancel_allowance(number: &str) -> Message {
    Message::CancelAllowance(CancelAllowance {
        number: number.into(),
        allowance_type: "2".into(),
        allowance_date: MigDate(d("20261127")),
        buyer_id: BuyerId::parse("04595257").unwrap(),
        seller_id: Ban::parse(SELLER).unwrap(),
        cancel_date: MigDate(d("20261128")),
        cancel_time: MigTime::parse("10:00:00").unwrap(),
        reason: "r".into(),
        remark: None,
    })
}

/// Facts about invoice `N` from its documents; `same` are those of the message's own type.
fn facts(ty: MessageType, invoice: &[Known]) -> Facts {
    Facts {
        same: invoice
            .iter()
            .filter(|k| k.message_type == ty)
            .cloned()
            .collect(),
        invoice: invoice.to_vec(),
        ..Facts::default()
    }
}

fn refused(r: Result<Admission, Refusal>) -> Refusal {
    r.expect_err("refused")
}

#[test]
fn the_standing_follows_the_documents_that_were_not_refused() {
    use MessageType::*;
    assert_eq!(standing(&[]), Standing::Unknown);
    let issue = known(1, F0401, 1, Acked);
    assert_eq!(
        standing(std::slice::from_ref(&issue)),
        Standing::Issued(&issue)
    );
    let err = known(1, F0401, 1, Error);
    assert_eq!(
        standing(std::slice::from_ref(&err)),
        Standing::Refused(&err)
    );
    let docs = [
        known(1, F0401, 1, Acked),
        known(2, F0701, 1, Acked),
        known(3, F0401, 2, Error),
    ];
    assert_eq!(
        standing(&docs),
        Standing::Voided(&docs[1]),
        "a refused re-issue stands for nothing"
    );
    let docs = [known(1, F0401, 1, Acked), known(2, F0501, 1, Error)];
    assert_eq!(
        standing(&docs),
        Standing::Issued(&docs[0]),
        "a refused cancel neither"
    );
    let docs = [known(1, F0401, 1, Queued), known(2, F0501, 1, Validated)];
    assert_eq!(
        standing(&docs),
        Standing::Cancelled(&docs[1]),
        "on its way counts"
    );
}

#[test]
fn a_message_in_error_goes_again_as_the_next_generation() {
    use MessageType::*;
    let docs = [known(1, F0401, 1, Error), known(2, F0401, 2, Error)];
    assert_eq!(
        decide(&invoice(), &facts(F0401, &docs)),
        Ok(Admission::Again {
            generation: 3,
            why: Again::AfterError
        })
    );
    assert_eq!(decide(&invoice(), &facts(F0401, &[])), Ok(Admission::First));
}

#[test]
fn an_accepted_or_waiting_message_is_never_replaced_and_the_refusal_says_what_to_do() {
    use MessageType::*;
    for state in [Validated, Queued, PickedUp] {
        let r = refused(decide(
            &invoice(),
            &facts(F0401, &[known(1, F0401, 1, state)]),
        ));
        assert_eq!(
            (r.field, r.value.as_str(), r.rule),
            ("InvoiceNumber", N, None)
        );
        assert!(r.reason.contains("still on its way"), "{}", r.reason);
        assert!(r.reason.contains(state.as_str()), "{}", r.reason);
        assert!(
            r.reason.contains("turnbridge invoice resend"),
            "{}",
            r.reason
        );
    }
    let r = refused(decide(
        &invoice(),
        &facts(F0401, &[known(1, F0401, 1, Acked)]),
    ));
    assert!(
        r.reason.contains("accepted by the platform"),
        "{}",
        r.reason
    );
    assert!(
        r.reason
            .contains("already sent by job job1 as F0401_20261126_00000001.xml"),
        "{}",
        r.reason
    );
    assert!(
        r.reason.contains("turnbridge invoice void AB12345681"),
        "{}",
        r.reason
    );
    // A cancel accepted: cancelled for good.
    let docs = [known(1, F0401, 1, Acked), known(2, F0501, 1, Acked)];
    let r = refused(decide(&cancel("20261126"), &facts(F0501, &docs)));
    assert!(
        r.reason.contains("cannot be cancelled again"),
        "{}",
        r.reason
    );
    // An accepted allowance, likewise.
    let mut al = known(1, G0401, 1, Acked);
    al.number = "AL1".into();
    let f = Facts {
        same: vec![al],
        ..Facts::default()
    };
    let r = refused(decide(&allowance("AL1", 10), &f));
    assert!(r.reason.contains("cancel it (G0501)"), "{}", r.reason);
}

#[test]
fn void_then_reissue_then_void_again_is_in_order() {
    use MessageType::*;
    let mut docs = vec![known(1, F0401, 1, Acked), known(2, F0701, 1, Acked)];
    assert_eq!(
        decide(&invoice(), &facts(F0401, &docs)),
        Ok(Admission::Again {
            generation: 2,
            why: Again::AfterVoid
        })
    );
    // Voided twice is out of order.
    let r = refused(decide(&void(), &facts(F0701, &docs)));
    assert!(r.reason.contains("issue it again"), "{}", r.reason);
    // Issued again: a second void is the void's second generation.
    docs.push(known(3, F0401, 2, Acked));
    assert_eq!(
        decide(&void(), &facts(F0701, &docs)),
        Ok(Admission::Again {
            generation: 2,
            why: Again::AfterReissue
        })
    );
    // A cancel after the re-issue is the first cancel.
    assert_eq!(
        decide(&cancel("20261126"), &facts(F0501, &docs)),
        Ok(Admission::First)
    );
}

#[test]
fn documents_out_of_order_are_refused_with_their_reason() {
    use MessageType::*;
    let cases: Vec<(Message, Vec<Known>, &str, &str)> = vec![
        // A cancelled number is never issued again.
        (
            invoice(),
            vec![known(1, F0401, 1, Error), known(2, F0501, 1, Acked)],
            "InvoiceNumber",
            "a cancelled number is never issued again",
        ),
        // Nothing to cancel or void when the invoice was refused.
        (
            cancel("20261126"),
            vec![known(1, F0401, 1, Error)],
            "CancelInvoiceNumber",
            "never issued: there is nothing to cancel",
        ),
        (
            void(),
            vec![known(1, F0401, 1, Error)],
            "VoidInvoiceNumber",
            "nothing to void",
        ),
        // Void after cancel, cancel after void.
        (
            void(),
            vec![known(1, F0401, 1, Acked), known(2, F0501, 1, Queued)],
            "VoidInvoiceNumber",
            "a cancelled invoice cannot be voided",
        ),
        (
            cancel("20261126"),
            vec![known(1, F0401, 1, Acked), known(2, F0701, 1, Acked)],
            "CancelInvoiceNumber",
            "was voided",
        ),
        // The cancel names another date than the invoice's.
        (
            cancel("20261125"),
            vec![known(1, F0401, 1, Acked)],
            "InvoiceDate",
            "is not the date of invoice AB12345681 (20261126",
        ),
    ];
    for (message, docs, field, reason) in cases {
        let ty = message.message_type();
        let r = refused(decide(&message, &facts(ty, &docs)));
        assert_eq!(r.field, field, "{ty} after {docs:?}: {}", r.reason);
        assert!(r.reason.contains(reason), "{ty}: {}", r.reason);
        assert_eq!(r.rule, Some(PlatformRule::Sequence));
    }
}

#[test]
fn unknown_invoices_are_taken_on_trust() {
    for m in [invoice(), cancel("20261126"), void(), allowance("AL1", 100)] {
        assert_eq!(decide(&m, &Facts::default()), Ok(Admission::First), "{m:?}");
    }
}

#[test]
fn a_cancel_or_void_waits_for_the_allowances_to_be_cancelled() {
    use MessageType::*;
    let mut f = facts(F0501, &[known(1, F0401, 1, Acked)]);
    f.allowances = vec![
        ("AL1".into(), Decimal::from(100)),
        ("AL1".into(), Decimal::from(50)),
    ];
    let r = refused(decide(&cancel("20261126"), &f));
    assert!(
        r.reason.contains("allowances that still stand (AL1)"),
        "{}",
        r.reason
    );
    f.same = vec![];
    assert!(decide(&void(), &f).is_err());
    f.allowances.clear();
    assert_eq!(decide(&cancel("20261126"), &f), Ok(Admission::First));
}

/// An allowance's original invoice: the documents, and the allowances that stand.
fn original(docs: Vec<Known>, allowed: &[u32]) -> Facts {
    let mut f = Facts::default();
    f.originals.insert(
        N.into(),
        Original {
            docs,
            allowed: allowed
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("AL{i}"), Decimal::from(*a)))
                .collect(),
        },
    );
    f
}

#[test]
fn allowance_totals_count_only_what_stands() {
    use MessageType::*;
    let issued = || vec![known(1, F0401, 1, Acked)];
    // 10000 untaxed: 6000 standing, 4000 more fits, 4001 does not.
    assert!(decide(&allowance("ALX", 4000), &original(issued(), &[6000])).is_ok());
    let r = refused(decide(
        &allowance("ALX", 4001),
        &original(issued(), &[6000]),
    ));
    assert_eq!(
        (r.field, r.rule),
        ("TotalAmount", Some(PlatformRule::AllowanceWithinInvoice))
    );
    assert!(
        r.reason
            .contains("would reach 10001, above its untaxed total 10000"),
        "{}",
        r.reason
    );
    // What the store leaves out (cancelled by a G0501, refused) is not there to count:
    // with nothing standing, the whole total fits.
    assert!(decide(&allowance("ALX", 10_000), &original(issued(), &[])).is_ok());
    // A re-issued invoice counts with its own total.
    let mut reissued = vec![
        known(1, F0401, 1, Acked),
        known(2, F0701, 1, Acked),
        known(3, F0401, 2, Acked),
    ];
    reissued[2].amount = Some(Decimal::from(500));
    assert!(decide(&allowance("ALX", 501), &original(reissued.clone(), &[])).is_err());
    assert!(decide(&allowance("ALX", 500), &original(reissued, &[])).is_ok());
    // Cancelled or voided invoices take no allowance at all.
    for (ty, word) in [(F0501, "was cancelled"), (F0701, "was voided")] {
        let r = refused(decide(
            &allowance("ALX", 1),
            &original(vec![known(1, F0401, 1, Acked), known(2, ty, 1, Acked)], &[]),
        ));
        assert_eq!((r.field, r.row), ("OriginalInvoiceNumber", Some(2)));
        assert!(r.reason.contains(word), "{}", r.reason);
    }
}

#[test]
fn an_allowance_cancel_follows_an_allowance_that_stands() {
    use MessageType::*;
    let g = |state| Known {
        number: "AL1".into(),
        document_date: d("20261127"),
        ..known(1, G0401, 1, state)
    };
    let with = |allowance: Vec<Known>| Facts {
        allowance,
        ..Facts::default()
    };
    assert!(decide(&cancel_allowance("AL1"), &with(vec![g(Acked)])).is_ok());
    assert!(
        decide(&cancel_allowance("AL1"), &with(vec![])).is_ok(),
        "unknown"
    );
    let r = refused(decide(&cancel_allowance("AL1"), &with(vec![g(Error)])));
    assert!(r.reason.contains("nothing to cancel"), "{}", r.reason);
    let mut other_day = g(Acked);
    other_day.document_date = d("20261126");
    let r = refused(decide(&cancel_allowance("AL1"), &with(vec![other_day])));
    assert_eq!(r.field, "AllowanceDate");
}
