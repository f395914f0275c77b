//! Allocation files: the platform's E0501 (營業人電子發票配號檔) and a head office's E0401
//! branch allocations (分支機構配號檔), read into [`Roll`]s.
//!
//! - **E0501** arrives through Turnkey's Unpack (`Unpack/BAK/E0501/<yyyyMMdd>/<HH>/<name>`) as
//!   an `InvoiceEnvelope` (`urn:GEINV:InvoiceEnvelope:4.1`) whose `InvoicePack` holds
//!   `InvoiceAssignNo` elements (`urn:GEINV:E0501:4.1` in Turnkey 3.2.0's model; the official
//!   XSD declares `urn:GEINV:E0501:4.0`). A bare `InvoiceAssignNo` document (the platform's
//!   download) is read too. Each entry: `Ban`, `InvoiceType`, `YearMonth`, `InvoiceTrack`,
//!   `InvoiceBeginNo`, `InvoiceEndNo`, `InvoiceBooklet`.
//! - **E0401** (`BranchTrack`, `urn:GEINV:eInvoiceMessage:E0401:4.1`) gives ranges of a head
//!   office's roll (`Main`) to a branch (`Main/BranchBan`), one `Details/BranchTrackItem` per
//!   range with its own `InvoiceBeginNo`, `InvoiceEndNo` and `InvoiceBooklet`.
//!
//! Namespaces are matched by kind, any MIG version (`…:E0501:3.2`, `…:4.0`, `…:4.1`), since the
//! schemas of those versions declare the same elements. A broken entry is listed with its
//! reason and the others still count; a file that is not an allocation file at all, or that
//! exceeds the bounds below, is refused whole.

use std::fmt;

use thiserror::Error;

use super::xml::{self, Element};
use super::{InvoiceType, Roll, RollError, Track};
use crate::einvoice::period::Period;
use crate::einvoice::printable;
use crate::einvoice::types::Ban;

/// The largest allocation file read. An E0501 envelope holds at most 1000 entries of a few
/// hundred bytes and an E0401 at most 25 000 items; 8 MiB is well above both.
pub const MAX_ALLOCATION_BYTES: usize = 8 << 20;

/// The most elements one allocation file may hold (25 000 E0401 items of 4 elements, and room).
pub const MAX_ALLOCATION_ELEMENTS: usize = 120_000;

const ENVELOPE_NS: &str = "urn:GEINV:InvoiceEnvelope:";
const E0501_NS: &str = "urn:GEINV:E0501:";
const E0401_NS: &str = "urn:GEINV:eInvoiceMessage:E0401:";

/// Why a whole file is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocationError {
    #[error("the file is {size} bytes; an allocation file is at most {max}")]
    TooLarge { size: usize, max: usize },
    #[error("the file is not UTF-8")]
    NotUtf8,
    #[error("a DOCTYPE (DTD) is not accepted in an allocation file")]
    Doctype,
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("nesting deeper than {0} elements")]
    TooDeep(usize),
    #[error("more than {0} elements")]
    TooManyElements(usize),
    #[error("`{name}` in namespace `{ns}` is not an allocation file (E0501 InvoiceEnvelope or InvoiceAssignNo, E0401 BranchTrack)")]
    Unknown { ns: String, name: String },
    #[error("the file holds no allocation ({0})")]
    NoEntries(&'static str),
}

/// Which message a file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationKind {
    /// The platform's allocation to a seller.
    E0501,
    /// A head office's allocation to a branch.
    E0401,
}

/// One entry that did not become a roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryProblem {
    /// 1-based position of the `InvoiceAssignNo` (E0501) or `BranchTrackItem` (E0401); 0 for
    /// E0401's `Main`, which every item depends on.
    pub entry: usize,
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.entry == 0 {
            "Main".to_string()
        } else {
            format!("entry {}", self.entry)
        };
        write!(
            f,
            "{at}: {} `{}` {}",
            self.field,
            printable(&self.value, 40),
            self.reason
        )
    }
}

/// What an allocation file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationFile {
    pub kind: AllocationKind,
    /// Every entry that is a valid roll, in file order.
    pub rolls: Vec<Roll>,
    /// Every entry that is not, with its reasons.
    pub problems: Vec<EntryProblem>,
}

/// Reads an E0501 (enveloped or bare) or E0401 file, telling them apart by the root element.
pub fn parse_allocations(bytes: &[u8]) -> Result<AllocationFile, AllocationError> {
    let root = xml::parse(bytes, MAX_ALLOCATION_BYTES, MAX_ALLOCATION_ELEMENTS)?;
    let mut out = AllocationFile {
        kind: AllocationKind::E0501,
        rolls: Vec::new(),
        problems: Vec::new(),
    };
    match (root.name.as_str(), root.ns.as_str()) {
        ("InvoiceEnvelope", ns) if ns.starts_with(ENVELOPE_NS) => {
            let pack = root
                .child("InvoicePack")
                .ok_or(AllocationError::NoEntries("no InvoicePack"))?;
            let mut seen = 0;
            for (i, e) in pack.children.iter().enumerate() {
                if e.name == "InvoiceAssignNo" && e.ns.starts_with(E0501_NS) {
                    seen += 1;
                    e0501_entry(i + 1, e, &mut out);
                } else {
                    out.problems.push(EntryProblem {
                        entry: i + 1,
                        field: e.name.clone(),
                        value: e.ns.clone(),
                        reason: "is not an E0501 InvoiceAssignNo; skipped".into(),
                    });
                }
            }
            if seen == 0 {
                return Err(AllocationError::NoEntries(
                    "no InvoiceAssignNo in InvoicePack",
                ));
            }
        }
        ("InvoiceAssignNo", ns) if ns.starts_with(E0501_NS) => e0501_entry(1, &root, &mut out),
        ("BranchTrack", ns) if ns.starts_with(E0401_NS) => {
            out.kind = AllocationKind::E0401;
            e0401(&root, &mut out)?;
        }
        (name, ns) => {
            return Err(AllocationError::Unknown {
                ns: printable(ns, 80),
                name: printable(name, 80),
            })
        }
    }
    Ok(out)
}

/// Collects one entry's field problems.
struct Entry<'e> {
    at: usize,
    el: &'e Element,
    problems: Vec<EntryProblem>,
}

impl<'e> Entry<'e> {
    fn new(at: usize, el: &'e Element) -> Entry<'e> {
        Entry {
            at,
            el,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, field: &str, value: &str, reason: impl Into<String>) {
        self.problems.push(EntryProblem {
            entry: self.at,
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        });
    }

    /// A required field, parsed; records the problem and returns `None` when it fails.
    fn field<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let Some(text) = self.el.text_of(name) else {
            self.problem(name, "", "is required");
            return None;
        };
        match parse(text) {
            Ok(v) => Some(v),
            Err(reason) => {
                let text = text.to_string();
                self.problem(name, &text, reason);
                None
            }
        }
    }

    fn number(&mut self, name: &str) -> Option<u32> {
        self.field(name, |s| {
            if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
                Ok(s.parse().expect("eight digits"))
            } else {
                Err("must be eight digits".into())
            }
        })
    }

    fn booklets(&mut self) -> Option<u64> {
        self.field("InvoiceBooklet", |s| {
            if !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()) {
                Ok(s.parse().expect("at most ten digits"))
            } else {
                Err("must be a whole number of at most ten digits".into())
            }
        })
    }

    /// The range as a roll, checked against the stated booklet count.
    fn roll(
        &mut self,
        (head, seller): (Ban, Ban),
        invoice_type: InvoiceType,
        period: Period,
        track: Track,
        (begin, end): (u32, u32),
        stated: u64,
    ) -> Option<Roll> {
        match Roll::new(seller, invoice_type, period, track, begin, end) {
            Ok(roll) if u64::from(roll.booklets()) != stated => {
                let err = RollError::BookletCount {
                    stated,
                    actual: roll.booklets(),
                    begin,
                    end,
                };
                self.problem("InvoiceBooklet", &stated.to_string(), err.to_string());
                None
            }
            Ok(roll) => Some(roll.with_head(head)),
            Err(e) => {
                let (field, value) = match e {
                    RollError::BeginOffBooklet(_) => ("InvoiceBeginNo", begin),
                    _ => ("InvoiceEndNo", end),
                };
                self.problem(field, &format!("{value:08}"), e.to_string());
                None
            }
        }
    }
}

fn ban(s: &str) -> Result<Ban, String> {
    Ban::parse(s)
}

fn period(s: &str) -> Result<Period, String> {
    Period::parse(s).map_err(|e| e.to_string())
}

fn e0501_entry(at: usize, el: &Element, out: &mut AllocationFile) {
    let mut e = Entry::new(at, el);
    let seller = e.field("Ban", ban);
    let invoice_type = e.field("InvoiceType", InvoiceType::parse);
    let period = e.field("YearMonth", period);
    let track = e.field("InvoiceTrack", Track::parse);
    let begin = e.number("InvoiceBeginNo");
    let end = e.number("InvoiceEndNo");
    let stated = e.booklets();
    if let (Some(s), Some(t), Some(p), Some(k), Some(b), Some(n), Some(st)) =
        (seller, invoice_type, period, track, begin, end, stated)
    {
        if let Some(roll) = e.roll((s.clone(), s), t, p, k, (b, n), st) {
            push(out, &mut e, roll);
        }
    }
    out.problems.append(&mut e.problems);
}

fn e0401(root: &Element, out: &mut AllocationFile) -> Result<(), AllocationError> {
    let main = root
        .child("Main")
        .ok_or(AllocationError::NoEntries("BranchTrack has no Main"))?;
    let items: Vec<&Element> = root
        .child("Details")
        .map(|d| d.all("BranchTrackItem").collect())
        .unwrap_or_default();
    if items.is_empty() {
        return Err(AllocationError::NoEntries(
            "BranchTrack has no BranchTrackItem",
        ));
    }
    let mut m = Entry::new(0, main);
    let head = m.field("HeadBan", ban);
    let branch = m.field("BranchBan", ban);
    let invoice_type = m.field("InvoiceType", InvoiceType::parse);
    let period = m.field("YearMonth", period);
    let track = m.field("InvoiceTrack", Track::parse);
    let begin = m.number("InvoiceBeginNo");
    let end = m.number("InvoiceEndNo");
    let (Some(head), Some(branch), Some(t), Some(p), Some(k), Some(mb), Some(me)) =
        (head, branch, invoice_type, period, track, begin, end)
    else {
        // Every item hangs on Main: without it none is a roll.
        out.problems.append(&mut m.problems);
        return Ok(());
    };
    for (i, item) in items.into_iter().enumerate() {
        let mut e = Entry::new(i + 1, item);
        let begin = e.number("InvoiceBeginNo");
        let end = e.number("InvoiceEndNo");
        let stated = e.booklets();
        if let (Some(b), Some(n), Some(st)) = (begin, end, stated) {
            if b < mb || n > me {
                e.problem(
                    "InvoiceBeginNo",
                    &format!("{b:08}"),
                    format!("the range {b:08}–{n:08} is outside Main's {mb:08}–{me:08}"),
                );
            } else if let Some(roll) = e.roll((head.clone(), branch.clone()), t, p, k, (b, n), st) {
                push(out, &mut e, roll);
            }
        }
        out.problems.append(&mut e.problems);
    }
    Ok(())
}

/// Adds a roll unless it shares numbers with an earlier entry of the file.
fn push(out: &mut AllocationFile, e: &mut Entry, roll: Roll) {
    if let Some(other) = out.rolls.iter().find(|r| r.overlaps(&roll)) {
        let reason = format!("shares numbers with {other} earlier in the file");
        e.problem("InvoiceBeginNo", &format!("{:08}", roll.begin()), reason);
    } else {
        out.rolls.push(roll);
    }
}

#[cfg(test)]
#[path = "allocation_tests.rs"]
mod tests;
