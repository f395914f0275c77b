use super::*;

const FIXTURE: &[u8] = include_bytes!("../../../fixtures/rolls/E0501-envelope.xml");
const BRANCH: &[u8] = include_bytes!("../../../fixtures/rolls/E0401-branch.xml");

/// A bare E0501 entry with the given fields (namespace 4.0, as the official XSD has it).
fn bare(fields: &[(&str, &str)]) -> String {
    let mut x = String::from(r#"<InvoiceAssignNo xmlns="urn:GEINV:E0501:4.0">"#);
    for (k, v) in fields {
        x.push_str(&format!("<{k}>{v}</{k}>"));
    }
    x + "</InvoiceAssignNo>"
}

const GOOD: [(&str, &str); 7] = [
    ("Ban", "28080623"),
    ("InvoiceType", "07"),
    ("YearMonth", "11508"),
    ("InvoiceTrack", "AB"),
    ("InvoiceBeginNo", "00000050"),
    ("InvoiceEndNo", "00000149"),
    ("InvoiceBooklet", "2"),
];

fn with(changes: &[(&str, &str)]) -> String {
    let fields: Vec<(&str, &str)> = GOOD
        .iter()
        .map(|(k, v)| {
            changes
                .iter()
                .find(|(ck, _)| ck == k)
                .map_or((*k, *v), |(_, cv)| (*k, *cv))
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    bare(&fields)
}

#[test]
fn the_envelope_fixture_gives_every_roll_in_order() {
    let f = parse_allocations(FIXTURE).unwrap();
    assert_eq!(f.kind, AllocationKind::E0501);
    assert_eq!(f.problems, vec![]);
    let shown: Vec<String> = f.rolls.iter().map(Roll::to_string).collect();
    assert_eq!(
        shown,
        [
            "28080623 07 11508 AB00000000–AB00000499",
            "28080623 07 11508 AC00001000–AC00001049",
            "28080623 08 11508 AD00000050–AD00000149",
            "24634102 07 11510 AE00000100–AE00000199",
        ]
    );
    assert_eq!(f.rolls[0].booklets(), 10);
    assert_eq!(f.rolls[0].head, f.rolls[0].seller);
}

#[test]
fn a_bare_entry_in_the_xsds_namespace_is_read() {
    let f = parse_allocations(with(&[]).as_bytes()).unwrap();
    assert_eq!(f.problems, vec![]);
    assert_eq!(
        f.rolls[0].to_string(),
        "28080623 07 11508 AB00000050–AB00000149"
    );
}

#[test]
fn a_broken_entry_lists_every_reason_and_keeps_the_others() {
    let bad = with(&[
        ("Ban", "28080624"),
        ("YearMonth", "11507"),
        ("InvoiceTrack", "ab"),
        ("InvoiceEndNo", ""),
    ]);
    let f = parse_allocations(bad.as_bytes()).unwrap();
    assert!(f.rolls.is_empty());
    let fields: Vec<&str> = f.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["Ban", "YearMonth", "InvoiceTrack", "InvoiceEndNo"]);
    assert_eq!(f.problems[3].reason, "is required");
    assert!(f.problems[1].reason.contains("even"), "{}", f.problems[1]);
    assert_eq!(
        f.problems[0].to_string(),
        "entry 1: Ban `28080624` fails the 統一編號 checksum"
    );

    // In an envelope, the good entries still become rolls.
    let doc = format!(
        r#"<InvoiceEnvelope xmlns="urn:GEINV:InvoiceEnvelope:4.1"><InvoicePack>{}{}{}</InvoicePack></InvoiceEnvelope>"#,
        with(&[]),
        with(&[("InvoiceBeginNo", "00000051")]),
        with(&[("InvoiceTrack", "AC")]),
    );
    let f = parse_allocations(doc.as_bytes()).unwrap();
    assert_eq!(f.rolls.len(), 2);
    assert_eq!(f.problems.len(), 1);
    assert_eq!(
        (f.problems[0].entry, f.problems[0].field.as_str()),
        (2, "InvoiceBeginNo")
    );
    assert!(f.problems[0].reason.contains("00 or 50"));
}

#[test]
fn booklet_rules_are_checked() {
    let cases = [
        (
            with(&[("InvoiceEndNo", "00000148")]),
            "InvoiceEndNo",
            "49 or 99",
        ),
        (
            with(&[("InvoiceBooklet", "3")]),
            "InvoiceBooklet",
            "holds 2",
        ),
        (
            with(&[("InvoiceBeginNo", "00000200")]),
            "InvoiceEndNo",
            "after the end",
        ),
        (
            with(&[("InvoiceBooklet", "two")]),
            "InvoiceBooklet",
            "whole number",
        ),
        (
            with(&[("InvoiceBeginNo", "0000005")]),
            "InvoiceBeginNo",
            "eight digits",
        ),
    ];
    for (doc, field, says) in cases {
        let f = parse_allocations(doc.as_bytes()).unwrap();
        assert!(f.rolls.is_empty(), "{doc}");
        assert_eq!(f.problems.len(), 1, "{doc}: {:?}", f.problems);
        assert_eq!(f.problems[0].field, field, "{doc}");
        assert!(f.problems[0].reason.contains(says), "{}", f.problems[0]);
    }
}

#[test]
fn overlapping_entries_keep_the_first() {
    let doc = format!(
        r#"<InvoiceEnvelope xmlns="urn:GEINV:InvoiceEnvelope:4.1"><InvoicePack>{}{}</InvoicePack></InvoiceEnvelope>"#,
        with(&[]),
        with(&[("InvoiceBeginNo", "00000100"), ("InvoiceEndNo", "00000199")]),
    );
    let f = parse_allocations(doc.as_bytes()).unwrap();
    assert_eq!(f.rolls.len(), 1);
    assert_eq!(f.problems[0].entry, 2);
    assert!(f.problems[0].reason.contains("shares numbers"));
}

#[test]
fn branch_allocations_become_branch_rolls_of_the_head_office() {
    let f = parse_allocations(BRANCH).unwrap();
    assert_eq!(f.kind, AllocationKind::E0401);
    assert_eq!(f.problems, vec![]);
    let shown: Vec<String> = f.rolls.iter().map(Roll::to_string).collect();
    assert_eq!(
        shown,
        [
            "24634102 07 11508 AB00000200–AB00000299",
            "24634102 07 11508 AB00000400–AB00000449",
        ]
    );
    assert!(f.rolls.iter().all(|r| r.head.as_str() == "28080623"));

    // An item outside Main's range is listed, not taken.
    let text = std::str::from_utf8(BRANCH)
        .unwrap()
        .replace("00000449", "00000549")
        .replace("<InvoiceBooklet>1<", "<InvoiceBooklet>3<");
    let f = parse_allocations(text.as_bytes()).unwrap();
    assert_eq!(f.rolls.len(), 1);
    assert_eq!(f.problems[0].entry, 2);
    assert!(
        f.problems[0].reason.contains("outside Main"),
        "{}",
        f.problems[0]
    );

    // A broken Main leaves no roll at all, and says why.
    let text = std::str::from_utf8(BRANCH)
        .unwrap()
        .replace("<HeadBan>28080623<", "<HeadBan>2808062<");
    let f = parse_allocations(text.as_bytes()).unwrap();
    assert!(f.rolls.is_empty());
    assert_eq!(
        f.problems[0].to_string(),
        "Main: HeadBan `2808062` must be eight digits"
    );
}

#[test]
fn other_files_are_refused_whole() {
    let refuse = |doc: &str| parse_allocations(doc.as_bytes()).unwrap_err();
    assert!(matches!(
        refuse(r#"<Invoice xmlns="urn:GEINV:eInvoiceMessage:F0401:4.1"/>"#),
        AllocationError::Unknown { .. }
    ));
    assert!(matches!(
        refuse(r#"<InvoiceAssignNo xmlns="urn:other"/>"#),
        AllocationError::Unknown { .. }
    ));
    assert_eq!(
        refuse(
            r#"<InvoiceEnvelope xmlns="urn:GEINV:InvoiceEnvelope:4.1"><InvoicePack/></InvoiceEnvelope>"#
        ),
        AllocationError::NoEntries("no InvoiceAssignNo in InvoicePack")
    );
    assert_eq!(
        refuse(r#"<InvoiceEnvelope xmlns="urn:GEINV:InvoiceEnvelope:4.1"/>"#),
        AllocationError::NoEntries("no InvoicePack")
    );
    let big = " ".repeat(MAX_ALLOCATION_BYTES + 1);
    assert!(matches!(refuse(&big), AllocationError::TooLarge { .. }));
    let many = format!(
        r#"<InvoiceEnvelope xmlns="urn:GEINV:InvoiceEnvelope:4.1"><InvoicePack>{}</InvoicePack></InvoiceEnvelope>"#,
        "<x/>".repeat(MAX_ALLOCATION_ELEMENTS)
    );
    assert_eq!(
        refuse(&many),
        AllocationError::TooManyElements(MAX_ALLOCATION_ELEMENTS)
    );
}
