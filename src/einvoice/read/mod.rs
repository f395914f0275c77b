//! Readers: CSV and JSON batches into [`Entry`]s, with the text decoding both share.
//!
//! A reader never drops a row: every record ends either in a message or in a row problem, and
//! keeps its source text (the CSV record, the JSON message) so a rejected row can be written
//! back out, as the operator wrote it, to fix and drop again.
//!
//! Readers are bounded by construction: they hand each message to a sink as soon as it is
//! complete (nothing waits for the whole file), and a [`Budget`] refuses the file while
//! reading once it holds more messages or product lines than a batch can, so what a file
//! costs in memory depends on what a batch may hold, not on its shape. A value that cannot
//! belong in a message (an array where a field is, a 1 MB field) is named in a problem
//! without being built.

mod csv;
mod json;

use std::borrow::Cow;

use encoding_rs::{BIG5, UTF_8};
use thiserror::Error;

use super::model::Problem;
use super::raw::{Cell, RawMessage};

pub use self::csv::read_csv;
pub use self::json::read_json;

/// Product lines one message may hold (the XSD's `maxOccurs` for `ProductItem`).
pub const MAX_ITEMS: usize = 9_999;

/// Bytes one field value may hold when read. The longest MIG field holds 500 characters
/// (1,500 bytes of UTF-8); a longer value is refused while reading, without being kept.
pub const MAX_VALUE_BYTES: usize = 4_096;

/// Problems listed for one message; the rest are counted in a last line. A message of 9,999
/// empty lines would otherwise be reported (and held) as 40,000 problems.
pub const MAX_PROBLEMS: usize = 100;

/// Why a whole file could not be read at all.
#[derive(Debug, Error, PartialEq)]
pub enum ReadError {
    /// `line` is where the UTF-8 reading fails: a file cut in the middle of a character
    /// fails on its last line.
    #[error("the text is neither UTF-8 (line {line} is the first that is not) nor Big5 (CP950)")]
    Encoding { line: usize },
    #[error("the text is not valid {0}")]
    DeclaredEncoding(&'static str),
    #[error("the file is empty")]
    Empty,
    #[error("CSV header: {0}")]
    CsvHeader(String),
    /// A CSV record with more fields than any batch has columns (counted before it is kept).
    #[error("CSV record {record} has {fields} fields or more; no batch has that many columns (at most {max})")]
    TooWide {
        record: usize,
        fields: usize,
        max: usize,
    },
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Archive(String),
    /// The batch holds more than a batch may (counted over every member of an archive).
    #[error("{0}")]
    TooLarge(BudgetExceeded),
}

impl ReadError {
    /// Whether the error refuses the whole batch, even when it was found in one archive
    /// member (a budget is the batch's, not the member's).
    pub fn refuses_batch(&self) -> bool {
        matches!(self, ReadError::TooLarge(_))
    }
}

/// What a batch holds beyond its limits, found while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BudgetExceeded {
    #[error(
        "the batch holds more than {0} messages; at most {0} are allowed in one batch \
         (einvoice.max_invoices_per_batch): split it"
    )]
    Messages(usize),
    #[error(
        "the batch holds more than {0} product lines in all; at most {0} are allowed in one \
         batch (einvoice.max_lines_per_batch): split it"
    )]
    Lines(usize),
}

/// How much a batch may hold, counted down while it is read (across every member of an
/// archive). Reading stops at the first message or line beyond it.
#[derive(Debug, Clone)]
pub struct Budget {
    max_messages: usize,
    max_lines: usize,
    messages: usize,
    lines: usize,
}

impl Budget {
    pub fn new(max_messages: usize, max_lines: usize) -> Budget {
        Budget {
            max_messages,
            max_lines,
            messages: 0,
            lines: 0,
        }
    }

    /// Counts one more message.
    pub fn message(&mut self) -> Result<(), ReadError> {
        self.messages += 1;
        if self.messages > self.max_messages {
            return Err(ReadError::TooLarge(BudgetExceeded::Messages(
                self.max_messages,
            )));
        }
        Ok(())
    }

    /// Counts one more product line (a CSV row, a JSON `ProductItem`).
    pub fn line(&mut self) -> Result<(), ReadError> {
        self.lines += 1;
        if self.lines > self.max_lines {
            return Err(ReadError::TooLarge(BudgetExceeded::Lines(self.max_lines)));
        }
        Ok(())
    }

    pub fn messages(&self) -> usize {
        self.messages
    }
}

impl Default for Budget {
    /// The largest batch: 999 messages (the platform's limit) and 100,000 lines.
    fn default() -> Self {
        Budget::new(999, 100_000)
    }
}

/// How a file's text is encoded: told by config or a ZIP manifest, or found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextEncoding {
    /// UTF-8 (with or without BOM) when the bytes are valid UTF-8, Big5 otherwise.
    #[default]
    Auto,
    #[serde(alias = "utf8")]
    Utf8,
    #[serde(alias = "cp950")]
    Big5,
}

/// Decodes bytes to text, removing a UTF-8 byte order mark. UTF-8 is borrowed, not copied.
pub fn decode(bytes: &[u8], encoding: TextEncoding) -> Result<Cow<'_, str>, ReadError> {
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(bytes);
    let utf8 = || UTF_8.decode_without_bom_handling_and_without_replacement(bytes);
    let big5 = || BIG5.decode_without_bom_handling_and_without_replacement(bytes);
    match encoding {
        TextEncoding::Utf8 => utf8().ok_or(ReadError::DeclaredEncoding("UTF-8")),
        TextEncoding::Big5 => big5().ok_or(ReadError::DeclaredEncoding("Big5")),
        TextEncoding::Auto => utf8().or_else(big5).ok_or_else(|| {
            let valid = std::str::from_utf8(bytes).map_or_else(|e| e.valid_up_to(), str::len);
            ReadError::Encoding {
                line: 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count(),
            }
        }),
    }
}

/// Where a message came from, kept so a rejected one can be written back out: the CSV
/// records' text and the JSON message's text, exactly as they were read.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Csv(Vec<String>),
    Json(String),
}

/// One message as read, or the rows that could not become one, with what went wrong.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The file (or `archive.zip:member.csv`) the rows came from.
    pub file: String,
    pub raw: RawMessage,
    pub source: Source,
    /// Problems found while reading; an entry with any is rejected without building.
    pub problems: Vec<Problem>,
    /// Problems found while reading beyond the [`MAX_PROBLEMS`] kept, only counted.
    pub unlisted: usize,
}

/// Defaults a ZIP manifest (or the config) gives for rows that do not say.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub message_type: Option<String>,
    pub tenant: Option<String>,
}

/// What a CSV file's column header was, kept for writing rejected rows back.
pub type CsvHeader = Vec<String>;

/// At most `max` problems, each with its value and reason cut short, then a count of the
/// rest (and of the `unlisted` ones the reader only counted) in one last problem.
pub fn cap_problems(
    mut problems: Vec<Problem>,
    unlisted: usize,
    row: usize,
    max: usize,
) -> Vec<Problem> {
    let more = problems.len().saturating_sub(max) + unlisted;
    problems.truncate(max);
    for p in &mut problems {
        if p.value.len() > 256 {
            p.value = super::printable(&p.value, 80);
        }
        if p.reason.len() > 512 {
            p.reason = super::printable(&p.reason, 300);
        }
    }
    if more > 0 {
        problems.push(Problem {
            rule: None,
            row,
            field: String::new(),
            value: String::new(),
            reason: format!(
                "and {more} more problems in this message (only the first {max} are listed)"
            ),
        });
    }
    problems
}

/// Problems listed for a whole batch before each further message lists only its first
/// (with the count of the rest): what a report holds stays bounded with 999 messages.
pub const MAX_BATCH_PROBLEMS: usize = 10_000;

/// A problem list that stops growing at [`MAX_PROBLEMS`] while a message is read and counts
/// the rest.
#[derive(Debug, Default)]
struct Problems {
    list: Vec<Problem>,
    more: usize,
}

impl Problems {
    fn push(&mut self, p: Problem) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }
}

/// A value too long for any field: named (cut short) in a problem, never kept whole.
fn overlong(row: usize, field: String, value: &str) -> Problem {
    Problem {
        rule: None,
        row,
        field,
        value: super::printable(value, 80),
        reason: format!(
            "is {} bytes long; no field holds more than {MAX_VALUE_BYTES}",
            value.len()
        ),
    }
}

fn apply_defaults(
    head: &mut std::collections::BTreeMap<String, Cell>,
    defaults: &Defaults,
    row: usize,
) {
    for (key, value) in [
        ("MessageType", &defaults.message_type),
        ("TenantId", &defaults.tenant),
    ] {
        if let Some(v) = value {
            let empty = head.get(key).is_none_or(|c| c.value.is_empty());
            if empty {
                head.insert(
                    key.to_string(),
                    Cell {
                        value: v.clone(),
                        row,
                        display: key.to_string(),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_handles_bom_big5_and_garbage() {
        let text = "品名";
        let (big5, _, _) = BIG5.encode(text);
        assert_eq!(decode(&big5, TextEncoding::Auto).unwrap(), text);
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(text.as_bytes());
        let decoded = decode(&bom, TextEncoding::Auto).unwrap();
        assert_eq!(decoded, text);
        assert!(matches!(decoded, Cow::Borrowed(_)), "UTF-8 is not copied");
        assert_eq!(
            decode(&big5, TextEncoding::Utf8),
            Err(ReadError::DeclaredEncoding("UTF-8"))
        );
        assert_eq!(
            decode(&[0xFF, 0xFF, 0x80], TextEncoding::Auto),
            Err(ReadError::Encoding { line: 1 })
        );
        assert_eq!(
            decode(b"MessageType\nF0401,\xE9", TextEncoding::Auto),
            Err(ReadError::Encoding { line: 2 })
        );
    }

    #[test]
    fn the_budget_stops_at_the_first_message_or_line_beyond_it() {
        let mut b = Budget::new(2, 3);
        assert!(b.message().is_ok() && b.message().is_ok());
        assert_eq!(
            b.message(),
            Err(ReadError::TooLarge(BudgetExceeded::Messages(2)))
        );
        for _ in 0..3 {
            b.line().unwrap();
        }
        let e = b.line().unwrap_err();
        assert!(e.refuses_batch());
        assert!(
            e.to_string().contains("einvoice.max_lines_per_batch"),
            "{e}"
        );
    }

    #[test]
    fn problems_beyond_the_cap_are_counted_in_one_line() {
        let p = |i: usize| Problem {
            rule: None,
            row: i,
            field: "f".into(),
            value: "v".repeat(if i == 0 { 5000 } else { 1 }),
            reason: "r".into(),
        };
        let mut list = Problems::default();
        for i in 0..MAX_PROBLEMS + 7 {
            list.push(p(i));
        }
        assert_eq!((list.list.len(), list.more), (MAX_PROBLEMS, 7));
        // Two more found after reading, and the 7 the reader only counted.
        let mut all = list.list;
        all.insert(0, p(1));
        all.insert(0, p(0));
        let v = cap_problems(all, 7, 1, MAX_PROBLEMS);
        assert_eq!(v.len(), MAX_PROBLEMS + 1);
        assert!(v[MAX_PROBLEMS].reason.starts_with("and 9 more"), "{v:?}");
        assert!(v[0].value.len() < 250, "values are cut");
        assert_eq!(cap_problems(vec![p(1)], 0, 1, MAX_PROBLEMS).len(), 1);
        let v = cap_problems(vec![p(1), p(2), p(3)], 0, 1, 1);
        assert_eq!(v.len(), 2);
        assert!(v[1].reason.starts_with("and 2 more"), "{v:?}");
    }
}
