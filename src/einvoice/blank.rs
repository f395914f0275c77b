//! The blank-number report (空白未使用字軌, E0402): the numbers of a period's rolls that were
//! never issued, as consecutive ranges, one report per seller / InvoiceType / track.
//!
//! Every issuer owes it for each period by the 10th day of the next one
//! ([`Period::blank_report_due`]; research notes mig41.md §4). The XML follows the official E0402 XSD
//! and sample: root `BranchTrackBlank` in `urn:GEINV:eInvoiceMessage:E0402:4.1`, `Main`
//! (`HeadBan`, `BranchBan`, `InvoiceType`, `YearMonth`, `InvoiceTrack`) and `Details` with one
//! `BranchTrackBlankItem` (`InvoiceBeginNo`, `InvoiceEndNo`) per range. A range may be a single
//! number and need not follow booklet bounds (the official sample reports `00001000`–`00001000`
//! and `00001100`–`00001110`). Turnkey takes it in `UpCast/B2PMESSAGE/E0402/SRC`.
//!
//! "Used" here means issued: a number that carried an F0401 (later cancelled or voided too).
//! A number skipped by decision was never issued, so it is blank and is reported.

use std::collections::BTreeMap;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use super::period::Period;
use super::rolls::{own_part, InvoiceType, Roll, Track, UsedNumbers};
use super::types::Ban;

/// The E0402 namespace.
pub const E0402_NAMESPACE: &str = "urn:GEINV:eInvoiceMessage:E0402:4.1";

/// The most ranges one E0402 holds (the XSD's `BranchTrackBlankItem maxOccurs="10000"`); a
/// track with more is split over several reports.
pub const MAX_RANGES: usize = 10_000;

/// A run of consecutive unused numbers, inclusive (serials, without the track).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlankRange {
    pub begin: u32,
    pub end: u32,
}

impl BlankRange {
    /// How many numbers the range holds.
    pub fn len(&self) -> u32 {
        self.end - self.begin + 1
    }

    /// Never true: a range holds at least one number.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The unused numbers of one roll as ascending, maximal runs.
pub fn blank_ranges(roll: &Roll, used: &UsedNumbers) -> Vec<BlankRange> {
    let mut out = Vec::new();
    let mut from = roll.begin();
    for s in used.serials_in(roll) {
        if s > from {
            out.push(BlankRange {
                begin: from,
                end: s - 1,
            });
        }
        from = s + 1;
    }
    if from <= roll.end() {
        out.push(BlankRange {
            begin: from,
            end: roll.end(),
        });
    }
    out
}

/// One E0402 document: the blank ranges of one seller's track of one InvoiceType and period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlankReport {
    /// `HeadBan`: the head office (the seller itself unless the roll was a branch allocation).
    pub head: Ban,
    /// `BranchBan`: the seller that held the numbers.
    pub branch: Ban,
    pub invoice_type: InvoiceType,
    pub period: Period,
    pub track: Track,
    /// Ascending, never adjacent, at most [`MAX_RANGES`], at least one.
    pub ranges: Vec<BlankRange>,
    /// 1 for the first report of a track; 2, 3, … when the track needs more than one.
    pub part: u32,
}

impl BlankReport {
    /// How many numbers the report declares blank.
    pub fn blank_count(&self) -> u64 {
        self.ranges.iter().map(|r| u64::from(r.len())).sum()
    }

    /// A stable file name for the report: `E0402_<BranchBan>_<YearMonth>_<InvoiceType>_<track>.xml`
    /// (`_<part>` before `.xml` from the second part on), so writing a period's reports twice
    /// names the same files.
    pub fn file_name(&self) -> String {
        let part = if self.part > 1 {
            format!("_{}", self.part)
        } else {
            String::new()
        };
        format!(
            "E0402_{}_{}_{}_{}{part}.xml",
            self.branch, self.period, self.invoice_type, self.track
        )
    }

    /// The report as E0402 XML: UTF-8 with a declaration, two-space indent, a final newline.
    pub fn render(&self) -> Vec<u8> {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        let mut ev = |e: Event| w.write_event(e).expect("write to memory");
        let el = |ev: &mut dyn FnMut(Event), name: &str, text: &str| {
            ev(Event::Start(BytesStart::new(name)));
            ev(Event::Text(BytesText::new(text)));
            ev(Event::End(BytesEnd::new(name)));
        };
        ev(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        let mut root = BytesStart::new("BranchTrackBlank");
        root.push_attribute(("xmlns", E0402_NAMESPACE));
        ev(Event::Start(root));
        ev(Event::Start(BytesStart::new("Main")));
        el(&mut ev, "HeadBan", self.head.as_str());
        el(&mut ev, "BranchBan", self.branch.as_str());
        el(&mut ev, "InvoiceType", self.invoice_type.code());
        el(&mut ev, "YearMonth", &self.period.to_string());
        el(&mut ev, "InvoiceTrack", self.track.as_str());
        ev(Event::End(BytesEnd::new("Main")));
        ev(Event::Start(BytesStart::new("Details")));
        for r in &self.ranges {
            ev(Event::Start(BytesStart::new("BranchTrackBlankItem")));
            el(&mut ev, "InvoiceBeginNo", &format!("{:08}", r.begin));
            el(&mut ev, "InvoiceEndNo", &format!("{:08}", r.end));
            ev(Event::End(BytesEnd::new("BranchTrackBlankItem")));
        }
        ev(Event::End(BytesEnd::new("Details")));
        ev(Event::End(BytesEnd::new("BranchTrackBlank")));
        let mut out = w.into_inner();
        out.push(b'\n');
        out
    }
}

/// Every E0402 owed for `period`: one per (head office, seller, InvoiceType, track) that has a
/// blank number, its ranges taken over all of that track's rolls and merged where one roll's
/// blank end meets the next one's blank start. Numbers a head office gave a branch (E0401)
/// are the branch's report, not the head office's ([`own_part`]). A track whose numbers were all issued owes no
/// report (an E0402 holds at least one range). Ordered by seller, InvoiceType, track.
pub fn blank_reports(rolls: &[Roll], used: &UsedNumbers, period: Period) -> Vec<BlankReport> {
    type Key = (Ban, InvoiceType, Track, Ban);
    let of_period: Vec<Roll> = rolls
        .iter()
        .filter(|r| r.period == period)
        .cloned()
        .collect();
    let mut groups: BTreeMap<Key, Vec<Roll>> = BTreeMap::new();
    for r in of_period.iter().flat_map(|r| own_part(r, &of_period)) {
        let key = (r.seller.clone(), r.invoice_type, r.track, r.head.clone());
        groups.entry(key).or_default().push(r);
    }
    let mut out = Vec::new();
    for ((branch, invoice_type, track, head), mut group) in groups {
        group.sort_by_key(|r| r.begin());
        let mut ranges: Vec<BlankRange> = Vec::new();
        for r in &group {
            for b in blank_ranges(r, used) {
                // Adjacent runs merge; a roll known twice overlaps itself and is taken once.
                match ranges.last_mut() {
                    Some(last) if b.begin <= last.end + 1 => last.end = last.end.max(b.end),
                    _ => ranges.push(b),
                }
            }
        }
        for (i, chunk) in ranges.chunks(MAX_RANGES).enumerate() {
            out.push(BlankReport {
                head: head.clone(),
                branch: branch.clone(),
                invoice_type,
                period,
                track,
                ranges: chunk.to_vec(),
                part: i as u32 + 1,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::einvoice::rolls::tests::{ban, roll};
    use crate::einvoice::types::InvoiceNumber;

    fn used(numbers: &[&str]) -> UsedNumbers {
        numbers
            .iter()
            .map(|s| InvoiceNumber::parse(s).unwrap())
            .collect()
    }

    fn spans(ranges: &[BlankRange]) -> Vec<(u32, u32)> {
        ranges.iter().map(|r| (r.begin, r.end)).collect()
    }

    #[test]
    fn none_used_is_one_range_of_the_whole_roll() {
        let r = roll("AB", 100, 249);
        assert_eq!(spans(&blank_ranges(&r, &UsedNumbers::new())), [(100, 249)]);
        // Numbers of other tracks and outside the roll do not count.
        let u = used(&["AC00000150", "AB00000099", "AB00000250"]);
        assert_eq!(spans(&blank_ranges(&r, &u)), [(100, 249)]);
    }

    #[test]
    fn all_used_leaves_nothing() {
        let r = roll("AB", 0, 49);
        let u: UsedNumbers = (0..50).map(|i| r.number(i)).collect();
        assert!(blank_ranges(&r, &u).is_empty());
        assert!(blank_reports(&[r], &u, r_period()).is_empty());
    }

    fn r_period() -> Period {
        Period::parse("11508").unwrap()
    }

    #[test]
    fn gaps_become_ranges_including_the_first_and_last_number() {
        let r = roll("AB", 0, 49);
        // First and last used: the blank range is the inside.
        let u = used(&["AB00000000", "AB00000049"]);
        assert_eq!(spans(&blank_ranges(&r, &u)), [(1, 48)]);
        // Single-number gaps, a run, and an unused first and last number.
        let u = used(&[
            "AB00000001",
            "AB00000002",
            "AB00000004",
            "AB00000010",
            "AB00000048",
        ]);
        assert_eq!(
            spans(&blank_ranges(&r, &u)),
            [(0, 0), (3, 3), (5, 9), (11, 47), (49, 49)]
        );
    }

    #[test]
    fn reports_group_by_seller_type_and_track_and_merge_adjacent_rolls() {
        let mut special = roll("AB", 200, 249);
        special.invoice_type = InvoiceType::Special;
        let mut other_period = roll("AB", 300, 349);
        other_period.period = Period::parse("11510").unwrap();
        let rolls = [
            roll("AC", 0, 49),
            roll("AB", 50, 99),
            roll("AB", 0, 49),
            roll("AB", 150, 199),
            special,
            other_period,
        ];
        // AB: 0..=9 used; 10..=99 blank across two rolls (one range); 150..=199 blank.
        let u: UsedNumbers = (0..10).map(|i| rolls[2].number(i)).collect();
        let reports = blank_reports(&rolls, &u, r_period());
        let shown: Vec<String> = reports
            .iter()
            .map(|r| format!("{} {} {:?}", r.track, r.invoice_type, spans(&r.ranges)))
            .collect();
        assert_eq!(
            shown,
            [
                "AB 07 [(10, 99), (150, 199)]",
                "AC 07 [(0, 49)]",
                "AB 08 [(200, 249)]",
            ]
        );
        assert_eq!(reports[0].blank_count(), 140);
        assert_eq!(reports[0].file_name(), "E0402_28080623_11508_07_AB.xml");
        assert!(reports.iter().all(|r| r.head == ban() && r.part == 1));
    }

    #[test]
    fn a_track_with_more_ranges_than_one_report_holds_is_split() {
        // 10 001 single-number gaps: every other number of 20 002 used.
        let r = roll("AB", 0, 20_049);
        let u: UsedNumbers = (0..=10_001u32).map(|i| r.number(2 * i)).collect();
        let reports = blank_reports(&[r], &u, r_period());
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].ranges.len(), MAX_RANGES);
        assert_eq!(reports[1].part, 2);
        assert_eq!(reports[1].file_name(), "E0402_28080623_11508_07_AB_2.xml");
        // The last part holds the leftover single gap and the tail after the last used number.
        assert_eq!(
            spans(&reports[1].ranges),
            [(20_001, 20_001), (20_003, 20_049)]
        );
    }

    #[test]
    fn rendered_like_the_official_sample() {
        let report = BlankReport {
            head: ban(),
            branch: Ban::parse("24634102").unwrap(),
            invoice_type: InvoiceType::General,
            period: r_period(),
            track: Track::parse("AB").unwrap(),
            ranges: vec![
                BlankRange {
                    begin: 1000,
                    end: 1000,
                },
                BlankRange {
                    begin: 1200,
                    end: 1249,
                },
            ],
            part: 1,
        };
        let xml = String::from_utf8(report.render()).unwrap();
        assert_eq!(
            xml,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<BranchTrackBlank xmlns="urn:GEINV:eInvoiceMessage:E0402:4.1">
  <Main>
    <HeadBan>28080623</HeadBan>
    <BranchBan>24634102</BranchBan>
    <InvoiceType>07</InvoiceType>
    <YearMonth>11508</YearMonth>
    <InvoiceTrack>AB</InvoiceTrack>
  </Main>
  <Details>
    <BranchTrackBlankItem>
      <InvoiceBeginNo>00001000</InvoiceBeginNo>
      <InvoiceEndNo>00001000</InvoiceEndNo>
    </BranchTrackBlankItem>
    <BranchTrackBlankItem>
      <InvoiceBeginNo>00001200</InvoiceBeginNo>
      <InvoiceEndNo>00001249</InvoiceEndNo>
    </BranchTrackBlankItem>
  </Details>
</BranchTrackBlank>
"#
        );
    }
}

#[cfg(test)]
mod branch_tests {
    use super::*;
    use crate::einvoice::rolls::parse_allocations;

    #[test]
    fn numbers_given_to_a_branch_are_reported_by_the_branch_only() {
        let own = parse_allocations(include_bytes!("../../fixtures/rolls/E0501-envelope.xml"))
            .unwrap()
            .rolls;
        let branch = parse_allocations(include_bytes!("../../fixtures/rolls/E0401-branch.xml"))
            .unwrap()
            .rolls;
        let rolls: Vec<Roll> = own.into_iter().take(1).chain(branch).collect();
        let reports = blank_reports(&rolls, &UsedNumbers::new(), Period::parse("11508").unwrap());
        let shown: Vec<String> = reports
            .iter()
            .map(|r| {
                let spans: Vec<(u32, u32)> = r.ranges.iter().map(|g| (g.begin, g.end)).collect();
                format!("{}/{} {} {:?}", r.head, r.branch, r.track, spans)
            })
            .collect();
        assert_eq!(
            shown,
            [
                "28080623/24634102 AB [(200, 299), (400, 449)]",
                "28080623/28080623 AB [(0, 199), (300, 399), (450, 499)]",
            ]
        );
    }

    #[test]
    fn a_roll_known_twice_is_reported_once() {
        let r = crate::einvoice::rolls::tests::roll("AB", 0, 99);
        let u: UsedNumbers = (10..20).map(|i| r.number(i)).collect();
        let reports = blank_reports(&[r.clone(), r], &u, Period::parse("11508").unwrap());
        let spans: Vec<(u32, u32)> = reports[0].ranges.iter().map(|g| (g.begin, g.end)).collect();
        assert_eq!(spans, [(0, 9), (20, 99)]);
    }
}
