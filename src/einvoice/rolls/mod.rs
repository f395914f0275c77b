//! Number rolls (字軌): the invoice numbers the platform allocates to a seller for one
//! InvoiceType and one period, and how they are given out.
//!
//! A [`Roll`] is one allocated range: a two-letter track and eight-digit begin and end
//! numbers, in whole booklets of 50 numbers (begin ends in `00` or `50`, end in `49` or `99`,
//! as E0501's `InvoiceBooklet` counts them). Rolls come from the platform's E0501 files or a
//! head office's E0401 branch allocations ([`allocation`]), or are entered by hand
//! ([`Roll::from_numbers`]). A range a head office gave a branch is the branch's alone
//! ([`own_part`]). [`assign`] gives out the next free number and checks numbers rows bring
//! themselves; [`super::blank`] reports what a period left unused (E0402).

pub mod allocation;
pub mod assign;
mod xml;

use std::fmt;

use thiserror::Error;

use super::period::Period;
use super::types::{Ban, InvoiceNumber};

pub use allocation::{parse_allocations, AllocationError, AllocationFile, EntryProblem};
pub use assign::{
    check_number, next_number, stock, AssignError, Assigner, NumberRefused, RollKey, Stock,
    UsedNumbers,
};

/// Numbers per booklet (本): rolls are allocated in whole booklets.
pub const BOOKLET: u32 = 50;

/// The largest eight-digit number.
pub const MAX_SERIAL: u32 = 99_999_999;

/// InvoiceType (發票類別): which tax computation the numbers are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvoiceType {
    /// `07`: general tax (一般稅額計算).
    General,
    /// `08`: special tax (特種稅額計算).
    Special,
}

impl InvoiceType {
    pub fn parse(s: &str) -> Result<InvoiceType, String> {
        match s {
            "07" => Ok(InvoiceType::General),
            "08" => Ok(InvoiceType::Special),
            _ => Err("must be 07 (general tax) or 08 (special tax)".into()),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            InvoiceType::General => "07",
            InvoiceType::Special => "08",
        }
    }
}

impl fmt::Display for InvoiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A track (字軌): the two capital letters in front of the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Track([u8; 2]);

impl Track {
    pub fn parse(s: &str) -> Result<Track, String> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Track([*a, *b])),
            _ => Err("must be two capital letters, like AB".into()),
        }
    }

    /// The track of an invoice number (its first two letters).
    pub fn of(number: &InvoiceNumber) -> Track {
        let b = number.as_str().as_bytes();
        Track([b[0], b[1]])
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("two ASCII letters")
    }
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a range is not a roll.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RollError {
    #[error("the begin number {begin:08} is after the end number {end:08}")]
    Reversed { begin: u32, end: u32 },
    #[error("the begin number {0:08} does not start a booklet: it must end in 00 or 50")]
    BeginOffBooklet(u32),
    #[error("the end number {0:08} does not end a booklet: it must end in 49 or 99")]
    EndOffBooklet(u32),
    #[error("{0} is more than eight digits")]
    TooLong(u64),
    #[error("the begin number is on track {begin} and the end number on track {end}: a roll has one track")]
    TwoTracks { begin: Track, end: Track },
    #[error("InvoiceBooklet says {stated} booklets, but {begin:08}–{end:08} holds {actual}")]
    BookletCount {
        stated: u64,
        actual: u32,
        begin: u32,
        end: u32,
    },
}

/// One allocated range of numbers (配號): whose, what for, when, and which numbers.
///
/// Built only through [`Roll::new`] or [`Roll::from_numbers`], so every roll is a whole number
/// of booklets with `begin <= end`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Roll {
    /// The head office (`HeadBan` of an E0401 branch allocation); the seller itself otherwise.
    pub head: Ban,
    /// The seller that issues the numbers (E0501 `Ban`, E0401 `BranchBan`).
    pub seller: Ban,
    pub invoice_type: InvoiceType,
    pub period: Period,
    pub track: Track,
    begin: u32,
    end: u32,
}

impl Roll {
    /// A roll of a seller that is its own head office; see [`Roll::with_head`] for a branch's.
    pub fn new(
        seller: Ban,
        invoice_type: InvoiceType,
        period: Period,
        track: Track,
        begin: u32,
        end: u32,
    ) -> Result<Roll, RollError> {
        for n in [begin, end] {
            if n > MAX_SERIAL {
                return Err(RollError::TooLong(u64::from(n)));
            }
        }
        if begin > end {
            return Err(RollError::Reversed { begin, end });
        }
        if begin % BOOKLET != 0 {
            return Err(RollError::BeginOffBooklet(begin));
        }
        if end % BOOKLET != BOOKLET - 1 {
            return Err(RollError::EndOffBooklet(end));
        }
        Ok(Roll {
            head: seller.clone(),
            seller,
            invoice_type,
            period,
            track,
            begin,
            end,
        })
    }

    /// A roll entered as its first and last invoice number (`AB00000000`, `AB00000499`),
    /// as `turnbridge rolls add` takes it.
    pub fn from_numbers(
        seller: Ban,
        invoice_type: InvoiceType,
        period: Period,
        first: &InvoiceNumber,
        last: &InvoiceNumber,
    ) -> Result<Roll, RollError> {
        let (t1, t2) = (Track::of(first), Track::of(last));
        if t1 != t2 {
            return Err(RollError::TwoTracks { begin: t1, end: t2 });
        }
        Roll::new(
            seller,
            invoice_type,
            period,
            t1,
            serial(first),
            serial(last),
        )
    }

    /// The same roll, allocated by head office `head` (an E0401 branch allocation).
    pub fn with_head(mut self, head: Ban) -> Roll {
        self.head = head;
        self
    }

    /// The first serial (eight digits, without the track).
    pub fn begin(&self) -> u32 {
        self.begin
    }

    /// The last serial.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// How many numbers the roll holds.
    pub fn len(&self) -> u32 {
        self.end - self.begin + 1
    }

    /// Never true: a roll holds at least one booklet.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How many booklets of 50 the roll holds (E0501's `InvoiceBooklet`).
    pub fn booklets(&self) -> u32 {
        self.len() / BOOKLET
    }

    /// The invoice number of a serial of this roll's track.
    pub fn number(&self, serial: u32) -> InvoiceNumber {
        number(self.track, serial)
    }

    pub fn first_number(&self) -> InvoiceNumber {
        self.number(self.begin)
    }

    pub fn last_number(&self) -> InvoiceNumber {
        self.number(self.end)
    }

    /// Whether the number is one of this roll's (track and range; not seller or period).
    pub fn contains(&self, n: &InvoiceNumber) -> bool {
        Track::of(n) == self.track && (self.begin..=self.end).contains(&serial(n))
    }

    /// Whether two rolls share a number (same track and overlapping ranges), whoever holds
    /// them: the platform never allocates one number twice in a period. A branch allocation
    /// (E0401) does share numbers with its head office's roll; [`own_part`] separates them.
    pub fn overlaps(&self, other: &Roll) -> bool {
        self.period == other.period
            && self.track == other.track
            && self.begin <= other.end
            && other.begin <= self.end
    }

    /// Whether this roll is a range a head office gave a branch (E0401).
    pub fn is_branch(&self) -> bool {
        self.head != self.seller
    }
}

/// The numbers of `roll` its seller issues itself: a head office's roll without the ranges
/// that office gave its branches (the branch rolls among `all`, E0401), in ascending pieces;
/// any other roll whole. A number given to a branch is the branch's to issue and to report
/// blank, never the head office's. The pieces are whole booklets, as both rolls are.
pub fn own_part(roll: &Roll, all: &[Roll]) -> Vec<Roll> {
    if roll.is_branch() {
        return vec![roll.clone()];
    }
    let mut given: Vec<(u32, u32)> = all
        .iter()
        .filter(|b| b.is_branch() && b.head == roll.seller && b.overlaps(roll))
        .map(|b| (b.begin, b.end))
        .collect();
    if given.is_empty() {
        return vec![roll.clone()];
    }
    given.sort_unstable();
    let piece = |begin, end| Roll {
        begin,
        end,
        ..roll.clone()
    };
    let mut out = Vec::new();
    let mut from = roll.begin;
    for (b, e) in given {
        if b > from {
            out.push(piece(from, b - 1));
        }
        from = from.max(e + 1);
    }
    if from <= roll.end {
        out.push(piece(from, roll.end));
    }
    out
}

impl fmt::Display for Roll {
    /// `28080623 07 11508 AB00000000–AB00000499`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}–{}",
            self.seller,
            self.invoice_type,
            self.period,
            self.first_number(),
            self.last_number()
        )
    }
}

/// The eight-digit serial of an invoice number.
pub fn serial(n: &InvoiceNumber) -> u32 {
    n.as_str()[2..]
        .parse()
        .expect("an invoice number ends in eight digits")
}

/// The invoice number of a track and serial.
pub fn number(track: Track, serial: u32) -> InvoiceNumber {
    InvoiceNumber::parse(&format!("{track}{serial:08}"))
        .expect("a track and eight digits make an invoice number")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn ban() -> Ban {
        Ban::parse("28080623").unwrap()
    }

    pub fn roll(track: &str, begin: u32, end: u32) -> Roll {
        Roll::new(
            ban(),
            InvoiceType::General,
            Period::parse("11508").unwrap(),
            Track::parse(track).unwrap(),
            begin,
            end,
        )
        .unwrap()
    }

    fn n(s: &str) -> InvoiceNumber {
        InvoiceNumber::parse(s).unwrap()
    }

    #[test]
    fn a_roll_is_whole_booklets() {
        let r = roll("AB", 100, 249);
        assert_eq!((r.len(), r.booklets()), (150, 3));
        assert_eq!(r.first_number().as_str(), "AB00000100");
        assert_eq!(r.last_number().as_str(), "AB00000249");
        assert_eq!(r.to_string(), "28080623 07 11508 AB00000100–AB00000249");
        let r = roll("ZZ", 99_999_950, 99_999_999);
        assert_eq!(r.last_number().as_str(), "ZZ99999999");

        let p = Period::parse("11508").unwrap();
        let t = Track::parse("AB").unwrap();
        let new = |b, e| Roll::new(ban(), InvoiceType::General, p, t, b, e);
        assert_eq!(new(50, 49), Err(RollError::Reversed { begin: 50, end: 49 }));
        assert_eq!(new(1, 49), Err(RollError::BeginOffBooklet(1)));
        assert_eq!(new(0, 48), Err(RollError::EndOffBooklet(48)));
        assert_eq!(new(0, 50), Err(RollError::EndOffBooklet(50)));
        assert_eq!(new(0, 100_000_049), Err(RollError::TooLong(100_000_049)));
        assert_eq!(
            new(1, 49).unwrap_err().to_string(),
            "the begin number 00000001 does not start a booklet: it must end in 00 or 50"
        );
    }

    #[test]
    fn a_roll_entered_by_numbers_keeps_one_track() {
        let p = Period::parse("11508").unwrap();
        let r = Roll::from_numbers(
            ban(),
            InvoiceType::Special,
            p,
            &n("AB00000050"),
            &n("AB00000099"),
        )
        .unwrap();
        assert_eq!((r.begin(), r.end(), r.track.as_str()), (50, 99, "AB"));
        assert_eq!(
            Roll::from_numbers(
                ban(),
                InvoiceType::General,
                p,
                &n("AB00000000"),
                &n("AC00000049")
            ),
            Err(RollError::TwoTracks {
                begin: Track::parse("AB").unwrap(),
                end: Track::parse("AC").unwrap()
            })
        );
    }

    #[test]
    fn contains_and_overlaps() {
        let r = roll("AB", 100, 199);
        assert!(r.contains(&n("AB00000100")));
        assert!(r.contains(&n("AB00000199")));
        assert!(!r.contains(&n("AB00000099")));
        assert!(!r.contains(&n("AB00000200")));
        assert!(!r.contains(&n("AC00000150")));
        assert!(r.overlaps(&roll("AB", 150, 249)));
        assert!(r.overlaps(&roll("AB", 0, 149)));
        assert!(!r.overlaps(&roll("AB", 200, 249)));
        assert!(!r.overlaps(&roll("AC", 100, 199)));
    }

    #[test]
    fn a_head_offices_own_part_leaves_out_what_its_branches_hold() {
        let head = roll("AB", 0, 499);
        let branch = |b, e| roll("AB", b, e).with_head(ban());
        let to_branch = |b, e| {
            let mut r = branch(b, e);
            r.seller = Ban::parse("24634102").unwrap();
            r
        };
        let spans = |all: &[Roll]| -> Vec<(u32, u32)> {
            own_part(&all[0], all)
                .iter()
                .map(|r| (r.begin(), r.end()))
                .collect()
        };
        assert_eq!(spans(std::slice::from_ref(&head)), [(0, 499)]);
        // At both ends, side by side, and in the middle.
        let all = [
            head.clone(),
            to_branch(450, 499),
            to_branch(0, 49),
            to_branch(200, 249),
            to_branch(250, 299),
        ];
        assert_eq!(spans(&all), [(50, 199), (300, 449)]);
        assert!(own_part(&all[0], &all).iter().all(|r| r.booklets() >= 1));
        // Everything given away leaves nothing.
        assert!(spans(&[head.clone(), to_branch(0, 499)]).is_empty());
        // Another head office's branch, another track or another period takes nothing.
        let mut foreign = to_branch(0, 49);
        foreign.head = Ban::parse("04595257").unwrap();
        let mut other_period = to_branch(50, 99);
        other_period.period = Period::parse("11510").unwrap();
        let mut other_track = to_branch(100, 149);
        other_track.track = Track::parse("AC").unwrap();
        assert_eq!(
            spans(&[head.clone(), foreign, other_period, other_track]),
            [(0, 499)]
        );
        // A branch roll is its own, whole.
        let b = to_branch(200, 249);
        assert_eq!(own_part(&b, &[head, b.clone()]), [b]);
    }

    #[test]
    fn types_and_tracks_parse_strictly() {
        assert_eq!(InvoiceType::parse("07"), Ok(InvoiceType::General));
        assert_eq!(InvoiceType::parse("08").unwrap().code(), "08");
        assert!(InvoiceType::parse("7").is_err());
        assert!(InvoiceType::parse("09").is_err());
        assert_eq!(Track::parse("AB").unwrap().to_string(), "AB");
        for bad in ["ab", "A", "ABC", "A1", "ＡＢ"] {
            assert!(Track::parse(bad).is_err(), "{bad}");
        }
    }
}
