//! The MIG 4.1 domain: reading a batch, building and checking each message, rendering XML.
//!
//! [`check_batch`] is the whole pure part of the pipeline: bytes in, a verdict out (messages
//! ready to render, rejected rows with every problem, or a refusal of the whole file). It
//! touches no folder and no store, so `turnbridge validate` and the daemon give the same
//! verdict for the same file.

pub mod archive;
pub mod blank;
mod build;
pub mod deadline;
pub mod model;
pub mod period;
pub mod raw;
pub mod read;
pub mod render;
pub mod rolls;
pub mod rules;
pub mod sequence;
pub mod timing;
pub mod types;
pub mod write;

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

pub use model::{Message, Problem};
pub use read::{Source, TextEncoding};
pub use types::{Ban, InvoiceNumber, MessageType};

use archive::{RefusedMember, ZipLimits};
use read::{Budget, Defaults, Entry, ReadError};

/// What the readers need to know from the config.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub encoding: TextEncoding,
    pub zip: ZipLimits,
    pub max_invoices: usize,
    /// Product lines (CSV rows, JSON `ProductItem`s) one batch may hold in all.
    pub max_lines: usize,
    pub default_tenant: String,
    /// Future dates and late cancels ([`timing`]).
    pub time: timing::TimeRules,
}

impl ReadOptions {
    /// Small limits, no clock: for tests of the pure checks.
    #[cfg(test)]
    pub fn for_tests() -> ReadOptions {
        ReadOptions {
            encoding: TextEncoding::Auto,
            zip: ZipLimits {
                max_members: 1,
                max_member_bytes: 1,
                max_total_bytes: 1,
            },
            max_invoices: 999,
            max_lines: 100_000,
            default_tenant: "t".into(),
            time: timing::TimeRules::default(),
        }
    }
}

/// Input formats, told by the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Zip,
}

impl Format {
    pub fn of(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if lower.ends_with(".json") {
            Some(Format::Json)
        } else if lower.ends_with(".zip") {
            Some(Format::Zip)
        } else {
            None
        }
    }
}

/// Why a whole file is refused; nothing in it is processed.
#[derive(Debug, Error)]
pub enum BatchError {
    #[error("`{0}` is not a .csv, .json or .zip file")]
    UnsupportedType(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the batch holds no messages")]
    NoMessages,
}

/// A message that passed every check, ready to render.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub file: String,
    pub row: usize,
    pub message: Message,
    /// The message rendered as MIG 4.1 XML (what is written to Turnkey), at most
    /// [`render::MAX_XML_BYTES`].
    pub xml: Vec<u8>,
    /// The legacy code the row was written in (`C0401`…), when it was normalized.
    pub legacy: Option<&'static str>,
    pub tenant: String,
}

/// Rows that did not become a message, with every reason.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub file: String,
    pub row: usize,
    pub message_type: Option<String>,
    pub number: Option<String>,
    pub problems: Vec<Problem>,
    pub source: Source,
}

impl Rejected {
    /// Turns an accepted message into a rejected one for a reason found later (the store).
    pub fn from_accepted(a: &Accepted, source: Source, problem: Problem) -> Rejected {
        Rejected {
            file: a.file.clone(),
            row: a.row,
            message_type: Some(a.message.message_type().to_string()),
            number: Some(a.message.number().to_string()),
            problems: vec![problem],
            source,
        }
    }
}

/// The verdict on one batch file.
#[derive(Debug, Default)]
pub struct Verdict {
    pub accepted: Vec<Accepted>,
    /// Same order as `accepted`: where each accepted message came from.
    pub accepted_sources: Vec<Source>,
    pub rejected: Vec<Rejected>,
    pub refused_members: Vec<RefusedMember>,
    /// Column header of each CSV file read, to write its rejected rows back out.
    pub csv_headers: BTreeMap<String, Vec<String>>,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty() && self.refused_members.is_empty()
    }
}

/// Reads, builds and checks every message of a batch file. Each message is checked as soon
/// as it is read, and an archive's members are read one at a time, so what the check holds
/// at once is bounded by what a batch may hold ([`read::Budget`]), not by the file's shape.
pub fn check_batch(name: &str, bytes: &[u8], opts: &ReadOptions) -> Result<Verdict, BatchError> {
    let format =
        Format::of(name).ok_or_else(|| BatchError::UnsupportedType(printable(name, 200)))?;
    let mut budget = Budget::new(opts.max_invoices, opts.max_lines);
    let mut checker = Checker {
        opts,
        verdict: Verdict::default(),
        first_seen: HashMap::new(),
        listed: 0,
    };
    match format {
        Format::Zip => {
            let mut refused = Vec::new();
            let mut each = |m: archive::Member| {
                let file = format!("{name}:{}", m.name);
                let encoding = m.encoding.unwrap_or(opts.encoding);
                let read = read_text(
                    &file,
                    &m.name,
                    &m.bytes,
                    encoding,
                    &m.defaults,
                    &mut budget,
                    &mut |e| checker.check(e),
                );
                match read {
                    Ok(header) => {
                        if let Some(h) = header {
                            checker.verdict.csv_headers.insert(file, h);
                        }
                    }
                    Err(e) if e.refuses_batch() => return Err(e),
                    Err(e) => refused.push(RefusedMember {
                        name: m.name,
                        bytes: m.bytes,
                        reason: e.to_string(),
                    }),
                }
                Ok(())
            };
            let mut alone = archive::read_zip(bytes, opts.zip, &mut each)?;
            refused.append(&mut alone);
            checker.verdict.refused_members = refused;
        }
        _ => {
            let header = read_text(
                name,
                name,
                bytes,
                opts.encoding,
                &Defaults::default(),
                &mut budget,
                &mut |e| checker.check(e),
            )?;
            if let Some(h) = header {
                checker.verdict.csv_headers.insert(name.to_string(), h);
            }
        }
    }
    if budget.messages() == 0 && checker.verdict.refused_members.is_empty() {
        return Err(BatchError::NoMessages);
    }
    Ok(checker.verdict)
}

/// Checks each entry as the readers hand it over, into the verdict.
struct Checker<'o> {
    opts: &'o ReadOptions,
    verdict: Verdict,
    /// The first place each (type, seller, number) was seen in this batch.
    first_seen: HashMap<(MessageType, String, String), (String, usize)>,
    /// Problems listed so far in the batch.
    listed: usize,
}

impl Checker<'_> {
    fn check(&mut self, entry: Entry) {
        let verdict = &mut self.verdict;
        match check_entry(&entry, self.opts) {
            Ok(accepted) => {
                let key = (
                    accepted.message.message_type(),
                    accepted.message.seller().to_string(),
                    accepted.message.number().to_string(),
                );
                if let Some((file, row)) = self.first_seen.get(&key) {
                    let ty = key.0;
                    let problem = Problem {
                        rule: None,
                        row: accepted.row,
                        field: ty.number_field().to_string(),
                        value: key.2.clone(),
                        reason: format!(
                            "{ty} {} appears twice in this batch (first in {file} row {row})",
                            key.2
                        ),
                    };
                    verdict.rejected.push(Rejected::from_accepted(
                        &accepted,
                        entry.source,
                        problem,
                    ));
                    return;
                }
                self.first_seen
                    .insert(key, (accepted.file.clone(), accepted.row));
                verdict.accepted.push(accepted);
                verdict.accepted_sources.push(entry.source);
            }
            Err(problems) => {
                // Shown beside every problem of the message: an identifier, cut short.
                let v = |k: &str| entry.raw.get(k).map(|c| printable(&c.value, 64));
                let ty = v("MessageType");
                let number = ty
                    .as_deref()
                    .and_then(|t| MessageType::parse_with_legacy(t).ok())
                    .and_then(|(t, _)| v(t.number_field()));
                verdict.rejected.push(Rejected {
                    file: entry.file.clone(),
                    row: entry.raw.row,
                    message_type: ty,
                    number,
                    problems: {
                        let max = if self.listed < read::MAX_BATCH_PROBLEMS {
                            read::MAX_PROBLEMS
                        } else {
                            1
                        };
                        let listed =
                            read::cap_problems(problems, entry.unlisted, entry.raw.row, max);
                        self.listed += listed.len();
                        listed
                    },
                    source: entry.source,
                });
            }
        }
    }
}

fn read_text(
    file: &str,
    name: &str,
    bytes: &[u8],
    encoding: TextEncoding,
    defaults: &Defaults,
    budget: &mut Budget,
    sink: &mut dyn FnMut(Entry),
) -> Result<Option<Vec<String>>, ReadError> {
    let text = read::decode(bytes, encoding)?;
    match Format::of(name) {
        Some(Format::Json) => {
            read::read_json(file, &text, defaults, budget, sink)?;
            Ok(None)
        }
        _ => read::read_csv(file, &text, defaults, budget, sink).map(Some),
    }
}

fn check_entry(entry: &Entry, opts: &ReadOptions) -> Result<Accepted, Vec<Problem>> {
    let raw = &entry.raw;
    let mut problems = Vec::new();
    let ty = match raw.get("MessageType") {
        None => {
            problems.push(Problem {
                rule: None,
                row: raw.row,
                field: format!("{}MessageType", raw.display_prefix),
                value: String::new(),
                reason: "is required".into(),
            });
            None
        }
        Some(c) => match MessageType::parse_with_legacy(&c.value) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(Problem {
                    rule: None,
                    row: c.row,
                    field: c.display.clone(),
                    value: c.value.clone(),
                    reason: e,
                });
                None
            }
        },
    };
    let tenant = match raw.get("TenantId") {
        None => Some(opts.default_tenant.clone()),
        Some(c) if valid_tenant(&c.value) => Some(c.value.clone()),
        Some(c) => {
            problems.push(Problem {
                rule: None,
                row: c.row,
                field: c.display.clone(),
                value: c.value.clone(),
                reason: "must be 1 to 64 letters, digits, - or _".into(),
            });
            None
        }
    };
    // What the reader found comes after the type and tenant, which a cut list keeps.
    problems.extend(entry.problems.iter().cloned());
    let (Some((ty, legacy)), Some(tenant), true) = (ty, tenant, problems.is_empty()) else {
        return Err(problems);
    };
    let message = build::build(ty, legacy.is_some(), raw)?;
    let mut problems = rules::check(&message, raw);
    problems.extend(timing::check(&message, raw, &opts.time));
    if !problems.is_empty() {
        return Err(problems);
    }
    let xml = render::render(&message);
    if xml.len() > render::MAX_XML_BYTES {
        let (row, field) = match raw.get(ty.number_field()) {
            Some(c) => (c.row, c.display.clone()),
            None => (raw.row, ty.number_field().to_string()),
        };
        return Err(vec![Problem {
            rule: None,
            row,
            field,
            value: message.number().to_string(),
            reason: format!(
                "the message's XML would be {} bytes; Turnkey refuses files over {} bytes (20 MiB): split it",
                xml.len(),
                render::MAX_XML_BYTES
            ),
        }]);
    }
    Ok(Accepted {
        file: entry.file.clone(),
        row: raw.row,
        message,
        xml,
        legacy,
        tenant,
    })
}

/// Untrusted text (a column, entry or file name) as a message shows it: control characters
/// escaped, so it cannot rewrite a report or log line, and cut after `max` characters, so a
/// 10 MB name does not make a 10 MB message.
///
/// A backslash is left as it is: text shown once can be shown again inside other text (an
/// error in a report, a reason in a log message) and reads the same, never doubled. A value
/// shown on its own, where a typed `\n` must not pass for an escaped newline, goes through
/// [`escaped`] instead, once.
pub fn printable(text: &str, max: usize) -> String {
    show(text, max, &[])
}

/// Untrusted text shown as a value on its own (a log field): as [`printable`], with a
/// backslash doubled, so the two characters `\n` typed in it read differently from an escaped
/// newline. It escapes exactly once: text already shown by [`printable`] or by Rust's `Debug`
/// is not given to it again.
pub fn escaped(text: &str, max: usize) -> String {
    show(text, max, &['\\'])
}

/// As [`escaped`], between double quotes, a quote inside escaped too: how the text log shows
/// a text value.
pub fn quoted(text: &str, max: usize) -> String {
    format!("\"{}\"", show(text, max, &['\\', '"']))
}

/// Untrusted text cut after `max` characters (the rest counted), not escaped: for a value the
/// log escapes itself but should keep short.
pub fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((end, _)) => format!("{}… ({} characters)", &text[..end], text.chars().count()).into(),
    }
}

/// `text` with control and reordering characters escaped, each of `also` preceded by a
/// backslash, and cut after `max` characters.
fn show(text: &str, max: usize, also: &[char]) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push_str(&format!("… ({} characters)", text.chars().count()));
            break;
        }
        if c.is_control() || reorders_text(c) {
            out.extend(c.escape_default());
        } else {
            if also.contains(&c) {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// Characters that are not control characters but still rewrite what a reader sees: the
/// bidirectional overrides and isolates (which can reverse a file name on screen) and the
/// Unicode line and paragraph separators (which some viewers break lines at).
fn reorders_text(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            | '\u{2028}' | '\u{2029}'
    )
}

/// A tenant id may become part of a folder name, so it is kept to a safe alphabet.
pub fn valid_tenant(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_escapes_control_characters_and_cuts_long_text() {
        assert_eq!(printable("Item.Description", 80), "Item.Description");
        assert_eq!(printable("品名", 80), "品名");
        assert_eq!(
            printable("\x1b[2JName\nFORGED", 80),
            "\\u{1b}[2JName\\nFORGED"
        );
        let long = "x".repeat(1000);
        assert_eq!(printable(&long, 3), "xxx… (1000 characters)");
        assert_eq!(
            printable("invoice\u{202E}vsc.exe\u{2028}x", 80),
            "invoice\\u{202e}vsc.exe\\u{2028}x"
        );
    }

    #[test]
    fn a_value_shown_on_its_own_tells_a_typed_backslash_from_an_escape() {
        use super::{escaped, quoted};
        // A newline, and the two characters backslash and n someone typed.
        let (newline, typed) = ("a\nb", "a\\nb");
        assert_eq!(
            printable(newline, 80),
            printable(typed, 80),
            "printable leaves a backslash, so prose shown twice reads the same"
        );
        assert_eq!(escaped(newline, 80), "a\\nb");
        assert_eq!(escaped(typed, 80), "a\\\\nb");
        assert_eq!(quoted(typed, 80), "\"a\\\\nb\"");
        assert_eq!(
            quoted("say \"hi\"\x1b[2J", 80),
            "\"say \\\"hi\\\"\\u{1b}[2J\""
        );
        // Exactly once: what printable already showed is shown again unchanged.
        let once = printable("x\ny\u{202e}", 80);
        assert_eq!(printable(&once, 80), once);
        assert_eq!(escaped("\\", 1), "\\\\", "a cut never splits an escape");
        assert_eq!(escaped("ab\\c", 2), "ab… (4 characters)");
        assert_eq!(super::cut("a\\\nb", 4), "a\\\nb", "cut, never escaped");
        assert_eq!(super::cut("品名品名", 2), "品名… (4 characters)");
    }
}
