use super::*;
use crate::einvoice::rolls::tests::{ban, roll};

fn n(s: &str) -> InvoiceNumber {
    InvoiceNumber::parse(s).unwrap()
}

fn key(period: &str) -> RollKey {
    RollKey {
        seller: ban(),
        invoice_type: InvoiceType::General,
        period: Period::parse(period).unwrap(),
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[test]
fn numbers_are_given_in_order_across_rolls() {
    // Given out of order on purpose: AC before AB, and AB's later booklet first.
    let rolls = [roll("AC", 0, 49), roll("AB", 100, 149), roll("AB", 0, 49)];
    let mut used = UsedNumbers::new();
    let mut a = Assigner::new(&rolls, &mut used, key("11508")).unwrap();
    let mut got = Vec::new();
    for _ in 0..150 {
        got.push(a.next_number().unwrap().to_string());
    }
    assert_eq!(got[0], "AB00000000");
    assert_eq!(got[49], "AB00000049");
    assert_eq!(got[50], "AB00000100", "the next booklet of the same track");
    assert_eq!(got[100], "AC00000000");
    assert_eq!(got[149], "AC00000049");
    assert_eq!(
        a.next_number(),
        Err(AssignError::Exhausted {
            key: key("11508"),
            rolls: 3,
            numbers: 150
        })
    );
    // Every number went out once, and every one is now used.
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 150);
    assert_eq!(used.count_in(&rolls[0]), 50);
}

#[test]
fn used_numbers_are_never_given_again_and_gaps_are_filled_first() {
    let rolls = [roll("AB", 0, 49)];
    let mut used: UsedNumbers = [n("AB00000000"), n("AB00000001"), n("AB00000003")]
        .into_iter()
        .collect();
    assert_eq!(
        next_number(&rolls, &mut used, key("11508"))
            .unwrap()
            .as_str(),
        "AB00000002"
    );
    assert_eq!(
        next_number(&rolls, &mut used, key("11508"))
            .unwrap()
            .as_str(),
        "AB00000004"
    );
    assert!(used.contains(&n("AB00000004")));
    // A number used elsewhere (another track) does not block this roll.
    used.insert(n("AC00000005"));
    assert_eq!(
        next_number(&rolls, &mut used, key("11508"))
            .unwrap()
            .as_str(),
        "AB00000005"
    );
}

#[test]
fn the_right_roll_is_the_sellers_type_and_the_dates_period() {
    let mut other_seller = roll("AD", 0, 49);
    other_seller.seller = Ban::parse("24634102").unwrap();
    let mut special = roll("AE", 0, 49);
    special.invoice_type = InvoiceType::Special;
    let mut september = roll("AF", 0, 49);
    september.period = Period::parse("11510").unwrap();
    let rolls = [other_seller, special, september, roll("AB", 0, 49)];
    let mut used = UsedNumbers::new();
    let want = |d| RollKey::of(&ban(), InvoiceType::General, d).unwrap();
    // 31 August is period 11508, 1 September 11510.
    let aug = next_number(&rolls, &mut used, want(date(2026, 8, 31))).unwrap();
    let sep = next_number(&rolls, &mut used, want(date(2026, 9, 1))).unwrap();
    assert_eq!((aug.as_str(), sep.as_str()), ("AB00000000", "AF00000000"));
    let special_key = RollKey::of(&ban(), InvoiceType::Special, date(2026, 7, 1)).unwrap();
    assert_eq!(
        next_number(&rolls, &mut used, special_key)
            .unwrap()
            .as_str(),
        "AE00000000"
    );
    // No roll for November: refused with what is missing.
    let err = next_number(&rolls, &mut used, want(date(2026, 11, 2))).unwrap_err();
    assert_eq!(err, AssignError::NoRoll(key("11512")));
    let problem = err.clone().into_problem(2);
    assert_eq!((problem.row, problem.field.as_str()), (2, "InvoiceNumber"));
    assert!(problem.reason.starts_with("cannot be assigned: no roll of"));
    assert!(
        err.to_string()
            .starts_with("no roll of seller 28080623, InvoiceType 07, period 11512 is known"),
        "{err}"
    );
}

#[test]
fn the_first_and_last_number_of_a_roll() {
    let rolls = [roll("AB", 50, 99)];
    let mut used = UsedNumbers::new();
    let mut a = Assigner::new(&rolls, &mut used, key("11508")).unwrap();
    assert_eq!(a.next_number().unwrap().as_str(), "AB00000050");
    for _ in 0..48 {
        a.next_number().unwrap();
    }
    assert_eq!(a.next_number().unwrap().as_str(), "AB00000099");
    assert!(matches!(
        a.next_number(),
        Err(AssignError::Exhausted { .. })
    ));
}

#[test]
fn a_number_a_row_brings_must_be_in_a_roll_of_its_key() {
    let mut other_seller = roll("AD", 0, 49);
    other_seller.seller = Ban::parse("24634102").unwrap();
    let mut july = roll("AF", 0, 49);
    july.period = Period::parse("11510").unwrap();
    let mut special = roll("AE", 0, 49);
    special.invoice_type = InvoiceType::Special;
    let rolls = [roll("AB", 0, 49), other_seller, july, special];
    let k = key("11508");
    assert_eq!(
        check_number(&rolls, &k, &n("AB00000049")),
        Ok(rolls[0].clone())
    );
    let refused = |s: &str| check_number(&rolls, &k, &n(s)).unwrap_err().to_string();
    assert_eq!(
        refused("AB00000050"),
        "AB00000050 is in no roll of seller 28080623, InvoiceType 07, period 11508"
    );
    assert!(refused("AD00000001").ends_with("(it is allocated to seller 24634102)"));
    assert!(refused("AF00000001").ends_with("(it belongs to period 11510)"));
    assert!(refused("AE00000001").ends_with("(it is an InvoiceType 08 number)"));
    let problem = check_number(&rolls, &k, &n("AD00000001"))
        .unwrap_err()
        .into_problem(3);
    assert_eq!(
        (problem.row, problem.field.as_str(), problem.value.as_str()),
        (3, "InvoiceNumber", "AD00000001")
    );
    assert_eq!(
        problem.reason,
        "is in no roll of seller 28080623, InvoiceType 07, period 11508 (it is allocated to seller 24634102)"
    );
}

#[test]
fn stock_counts_what_is_left() {
    let rolls = [roll("AB", 0, 49), roll("AC", 0, 99)];
    let mut used: UsedNumbers = (0..40).map(|i| rolls[0].number(i)).collect();
    used.insert(n("ZZ00000001"));
    let s = stock(&rolls, &used, &key("11508"));
    assert_eq!(
        s,
        Stock {
            rolls: 2,
            total: 150,
            used: 40
        }
    );
    assert_eq!(s.left(), 110);
    assert!(s.is_low(110));
    assert!(!s.is_low(109));
    assert!(!s.is_exhausted());
    used.extend((40..50).map(|i| rolls[0].number(i)));
    used.extend((0..100).map(|i| rolls[1].number(i)));
    let s = stock(&rolls, &used, &key("11508"));
    assert!(s.is_exhausted() && s.is_low(0));
    let none = stock(&rolls, &used, &key("11510"));
    assert_eq!((none.rolls, none.total), (0, 0));
    assert!(none.is_exhausted());
}

/// The head office's own roll (E0501) and the ranges it gave a branch (E0401) of it, as the
/// fixtures have them: AB 0–499 for 28080623, of which 200–299 and 400–449 went to 24634102.
fn head_and_branch() -> Vec<Roll> {
    use crate::einvoice::rolls::parse_allocations;
    let own = parse_allocations(include_bytes!("../../../fixtures/rolls/E0501-envelope.xml"))
        .unwrap()
        .rolls;
    let branch = parse_allocations(include_bytes!("../../../fixtures/rolls/E0401-branch.xml"))
        .unwrap()
        .rolls;
    own.into_iter().take(1).chain(branch).collect()
}

#[test]
fn a_head_office_never_gives_out_numbers_it_gave_a_branch() {
    let rolls = head_and_branch();
    let mut used: UsedNumbers = (0..199).map(|i| rolls[0].number(i)).collect();
    let mut a = Assigner::new(&rolls, &mut used, key("11508")).unwrap();
    assert_eq!(a.next_number().unwrap().as_str(), "AB00000199");
    assert_eq!(
        a.next_number().unwrap().as_str(),
        "AB00000300",
        "200–299 belong to the branch"
    );
    // The branch gives out its own ranges only.
    let branch = RollKey {
        seller: Ban::parse("24634102").unwrap(),
        ..key("11508")
    };
    let mut used = UsedNumbers::new();
    let mut b = Assigner::new(&rolls, &mut used, branch.clone()).unwrap();
    let got: Vec<String> = (0..150)
        .map(|_| b.next_number().unwrap().to_string())
        .collect();
    assert_eq!(
        (got[0].as_str(), got[99].as_str()),
        ("AB00000200", "AB00000299")
    );
    assert_eq!(
        (got[100].as_str(), got[149].as_str()),
        ("AB00000400", "AB00000449")
    );
    assert!(matches!(
        b.next_number(),
        Err(AssignError::Exhausted { .. })
    ));

    // A number the head office brings from a branch's range is refused, naming the branch.
    let refused = check_number(&rolls, &key("11508"), &n("AB00000250")).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "AB00000250 is in no roll of seller 28080623, InvoiceType 07, period 11508 (it is allocated to seller 24634102)"
    );
    assert!(check_number(&rolls, &key("11508"), &n("AB00000300")).is_ok());
    assert!(check_number(&rolls, &branch, &n("AB00000250")).is_ok());

    // The stock of each counts only its own numbers.
    let none = UsedNumbers::new();
    assert_eq!(stock(&rolls, &none, &key("11508")).total, 350);
    assert_eq!(stock(&rolls, &none, &branch).total, 150);
}
