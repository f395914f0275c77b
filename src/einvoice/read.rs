//! Readers: CSV and JSON batches into [`RawMessage`]s, with the text decoding both share.
//!
//! A reader never drops a row: every record ends either in a message or in a row problem, and
//! keeps its source (the CSV record, the JSON object) so a rejected row can be written back out
//! for the operator to fix and drop again.

use std::collections::BTreeMap;

use encoding_rs::{BIG5, UTF_8};
use serde_json::Value;
use thiserror::Error;

use super::model::Problem;
use super::raw::{known_header_field, known_item_field, Cell, RawItem, RawMessage};
use super::types::MessageType;

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
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Archive(String),
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

/// Decodes bytes to text, removing a UTF-8 byte order mark.
pub fn decode(bytes: &[u8], encoding: TextEncoding) -> Result<String, ReadError> {
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(bytes);
    let utf8 = || {
        UTF_8
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(|s| s.into_owned())
    };
    let big5 = || {
        BIG5.decode_without_bom_handling_and_without_replacement(bytes)
            .map(|s| s.into_owned())
    };
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

/// Where a message came from, kept so a rejected one can be written back out.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Csv(Vec<Vec<String>>),
    Json(Value),
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
}

/// Defaults a ZIP manifest (or the config) gives for rows that do not say.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub message_type: Option<String>,
    pub tenant: Option<String>,
}

/// What a CSV file's column header was, kept for writing rejected rows back.
pub type CsvHeader = Vec<String>;

/// Reads a CSV batch: one row per product line, header fields repeated on every line of an
/// invoice; consecutive rows with the same message type, seller and number are one message.
pub fn read_csv(
    file: &str,
    text: &str,
    defaults: &Defaults,
) -> Result<(CsvHeader, Vec<Entry>), ReadError> {
    if text.trim().is_empty() {
        return Err(ReadError::Empty);
    }
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(text.as_bytes());
    let mut records = rdr.records();
    let header: Vec<String> = match records.next() {
        Some(Ok(h)) => h.iter().map(|s| s.trim().to_string()).collect(),
        Some(Err(e)) => return Err(ReadError::CsvHeader(e.to_string())),
        None => return Err(ReadError::Empty),
    };
    let mut seen = BTreeMap::new();
    for (i, col) in header.iter().enumerate() {
        let known = match col.strip_prefix("Item.") {
            Some(rest) => known_item_field(rest),
            None => known_header_field(col),
        };
        if !known {
            return Err(ReadError::CsvHeader(format!(
                "column {} `{}` is not a known field (see the README for the column names)",
                i + 1,
                super::printable(col, 80)
            )));
        }
        if let Some(first) = seen.insert(col.as_str(), i) {
            return Err(ReadError::CsvHeader(format!(
                "column `{}` appears twice (columns {} and {})",
                super::printable(col, 80),
                first + 1,
                i + 1
            )));
        }
    }

    let mut entries: Vec<Entry> = Vec::new();
    let mut open: Option<(String, Entry)> = None;
    // The csv crate's line numbers skip blank lines; count newlines to name the line a person
    // sees in an editor.
    let mut lines = LineCounter::new(text);
    for rec in records {
        let (line, values) = match rec {
            Ok(r) => (
                r.position().map_or(0, |p| lines.line_at(p.byte() as usize)),
                r.iter().map(str::to_string).collect::<Vec<_>>(),
            ),
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_at(p.byte() as usize));
                entries.extend(open.take().map(|(_, e)| e));
                entries.push(broken_row(file, line, Vec::new(), e.to_string()));
                continue;
            }
        };
        if values.iter().all(|v| v.trim().is_empty()) {
            continue;
        }
        if values.len() != header.len() {
            entries.extend(open.take().map(|(_, e)| e));
            let reason = format!(
                "has {} fields, the header has {}",
                values.len(),
                header.len()
            );
            entries.push(broken_row(file, line, values, reason));
            continue;
        }
        let mut head = BTreeMap::new();
        let mut item = BTreeMap::new();
        for (col, v) in header.iter().zip(&values) {
            let cell = Cell {
                value: v.trim().to_string(),
                row: line,
                display: col.clone(),
            };
            match col.strip_prefix("Item.") {
                Some(rest) => item.insert(rest.to_string(), cell),
                None => head.insert(col.clone(), cell),
            };
        }
        apply_defaults(&mut head, defaults, line);
        let key = group_key(&head);
        let has_item = item.values().any(|c| !c.value.is_empty());
        let item = RawItem {
            row: line,
            display_prefix: "Item.".into(),
            fields: item,
        };
        match (&mut open, key) {
            (Some((k, entry)), Some(key)) if *k == key => {
                for (name, cell) in &head {
                    let first = entry.raw.fields.get(name).map(|c| c.value.as_str());
                    if first.unwrap_or("") != cell.value {
                        entry.problems.push(Problem {
                            rule: None,
                            row: line,
                            field: cell.display.clone(),
                            value: cell.value.clone(),
                            reason: format!(
                                "differs from row {} of the same message ({:?})",
                                entry.raw.row,
                                first.unwrap_or("")
                            ),
                        });
                    }
                }
                if has_item {
                    entry.raw.items.push(item);
                }
                if let Source::Csv(rows) = &mut entry.source {
                    rows.push(values);
                }
            }
            (_, key) => {
                entries.extend(open.take().map(|(_, e)| e));
                let entry = Entry {
                    file: file.to_string(),
                    raw: RawMessage {
                        row: line,
                        fields: head,
                        items: if has_item { vec![item] } else { vec![] },
                        display_prefix: String::new(),
                        grouped: false,
                    },
                    source: Source::Csv(vec![values]),
                    problems: Vec::new(),
                };
                match key {
                    Some(k) => open = Some((k, entry)),
                    None => entries.push(entry),
                }
            }
        }
    }
    entries.extend(open.take().map(|(_, e)| e));
    Ok((header, entries))
}

/// Turns byte offsets (in increasing order) into 1-based line numbers.
struct LineCounter<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        LineCounter {
            text: text.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    fn line_at(&mut self, byte: usize) -> usize {
        let mut byte = byte.min(self.text.len());
        // A record's position includes the blank lines skipped before it.
        while byte < self.text.len() && matches!(self.text[byte], b'\n' | b'\r') {
            byte += 1;
        }
        if byte < self.pos {
            self.pos = 0;
            self.line = 1;
        }
        self.line += self.text[self.pos..byte]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = byte;
        self.line
    }
}

fn broken_row(file: &str, line: usize, values: Vec<String>, reason: String) -> Entry {
    Entry {
        file: file.to_string(),
        raw: RawMessage {
            row: line,
            ..RawMessage::default()
        },
        source: Source::Csv(vec![values]),
        problems: vec![Problem {
            rule: None,
            row: line,
            field: String::new(),
            value: String::new(),
            reason: format!("the row cannot be read: {reason}"),
        }],
    }
}

fn apply_defaults(head: &mut BTreeMap<String, Cell>, defaults: &Defaults, row: usize) {
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

/// The key that groups CSV rows into one message; `None` for one-row (flat) messages.
fn group_key(head: &BTreeMap<String, Cell>) -> Option<String> {
    let v = |k: &str| head.get(k).map(|c| c.value.as_str()).unwrap_or("");
    let (ty, _) = MessageType::parse_with_legacy(v("MessageType")).ok()?;
    match ty {
        MessageType::F0401 | MessageType::G0401 => Some(format!(
            "{ty}|{}|{}",
            v("Seller.Identifier"),
            v(ty.number_field())
        )),
        _ => None,
    }
}

/// Reads a JSON batch: an array of messages, an object `{"Messages": [...]}` (optionally with
/// batch-wide `MessageType` and `TenantId`), or a single message object. Field names are MIG
/// element names, nested as in the message (`Main`, `Details.ProductItem`, `Amount`).
pub fn read_json(file: &str, text: &str, defaults: &Defaults) -> Result<Vec<Entry>, ReadError> {
    if text.trim().is_empty() {
        return Err(ReadError::Empty);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| ReadError::Json(e.to_string()))?;
    let mut defaults = defaults.clone();
    let messages = match value {
        Value::Array(a) => a,
        Value::Object(mut o) if o.contains_key("Messages") => {
            for (key, slot) in [
                ("MessageType", &mut defaults.message_type),
                ("TenantId", &mut defaults.tenant),
            ] {
                match o.remove(key) {
                    Some(Value::String(s)) => *slot = Some(s),
                    None | Some(Value::Null) => {}
                    Some(_) => return Err(ReadError::Json(format!("`{key}` must be a string"))),
                }
            }
            let extra: Vec<_> = o.keys().filter(|k| *k != "Messages").cloned().collect();
            if !extra.is_empty() {
                return Err(ReadError::Json(format!(
                    "unknown batch keys {}; a batch has Messages, MessageType and TenantId",
                    super::printable(&format!("{extra:?}"), 200)
                )));
            }
            match o.remove("Messages") {
                Some(Value::Array(a)) => a,
                _ => return Err(ReadError::Json("`Messages` must be an array".into())),
            }
        }
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(ReadError::Json(
                "expected a message object, an array of them, or {\"Messages\": [...]}".into(),
            ))
        }
    };
    Ok(messages
        .into_iter()
        .enumerate()
        .map(|(i, v)| json_entry(file, i + 1, v, &defaults))
        .collect())
}

fn json_entry(file: &str, row: usize, value: Value, defaults: &Defaults) -> Entry {
    let mut raw = RawMessage {
        row,
        display_prefix: format!("Messages[{}].", row - 1),
        ..RawMessage::default()
    };
    let mut problems = Vec::new();
    match &value {
        Value::Object(o) => {
            raw.grouped = ["Main", "Amount", "Details"]
                .iter()
                .any(|k| o.contains_key(*k));
            flatten_message(o, row, &mut raw, &mut problems)
        }
        _ => problems.push(Problem {
            rule: None,
            row,
            field: format!("Messages[{}]", row - 1),
            value: String::new(),
            reason: "a message must be a JSON object".into(),
        }),
    }
    apply_defaults(&mut raw.fields, defaults, row);
    Entry {
        file: file.to_string(),
        raw,
        source: Source::Json(value),
        problems,
    }
}

fn flatten_message(
    o: &serde_json::Map<String, Value>,
    row: usize,
    raw: &mut RawMessage,
    problems: &mut Vec<Problem>,
) {
    let base = raw.display_prefix.clone();
    for (key, v) in o {
        let path = format!("{base}{key}");
        match (key.as_str(), v) {
            ("Main", Value::Object(main)) => {
                for (k, v) in main {
                    let p = format!("{path}.{k}");
                    match (k.as_str(), v) {
                        ("Seller" | "Buyer", Value::Object(role)) => {
                            for (rk, rv) in role {
                                let name = format!("{k}.{rk}");
                                put(
                                    &mut raw.fields,
                                    &name,
                                    rv,
                                    row,
                                    format!("{p}.{rk}"),
                                    problems,
                                    false,
                                );
                            }
                        }
                        _ => put(&mut raw.fields, k, v, row, p, problems, false),
                    }
                }
            }
            ("Amount", Value::Object(amount)) => {
                for (k, v) in amount {
                    put(
                        &mut raw.fields,
                        k,
                        v,
                        row,
                        format!("{path}.{k}"),
                        problems,
                        false,
                    );
                }
            }
            ("Details", Value::Object(details)) => {
                for (k, v) in details {
                    let items: Vec<&Value> = match (k.as_str(), v) {
                        ("ProductItem", Value::Array(a)) => a.iter().collect(),
                        ("ProductItem", obj @ Value::Object(_)) => vec![obj],
                        _ => {
                            problems.push(Problem {
                                rule: None,
                                row,
                                field: format!("{path}.{k}"),
                                value: String::new(),
                                reason: "Details holds ProductItem, an array of objects".into(),
                            });
                            continue;
                        }
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        let ip = format!("{path}.ProductItem[{i}].");
                        let mut fields = BTreeMap::new();
                        match item {
                            Value::Object(io) => {
                                for (ik, iv) in io {
                                    put(
                                        &mut fields,
                                        ik,
                                        iv,
                                        row,
                                        format!("{ip}{ik}"),
                                        problems,
                                        true,
                                    );
                                }
                            }
                            _ => problems.push(Problem {
                                rule: None,
                                row,
                                field: ip.trim_end_matches('.').to_string(),
                                value: String::new(),
                                reason: "a ProductItem must be an object".into(),
                            }),
                        }
                        raw.items.push(RawItem {
                            row,
                            display_prefix: ip,
                            fields,
                        });
                    }
                }
            }
            ("Main" | "Amount" | "Details", _) => problems.push(Problem {
                rule: None,
                row,
                field: path,
                value: String::new(),
                reason: "must be an object".into(),
            }),
            _ => put(&mut raw.fields, key, v, row, path, problems, false),
        }
    }
}

fn put(
    fields: &mut BTreeMap<String, Cell>,
    key: &str,
    v: &Value,
    row: usize,
    display: String,
    problems: &mut Vec<Problem>,
    item: bool,
) {
    let known = if item {
        known_item_field(key)
    } else {
        known_header_field(key)
    };
    if !known {
        problems.push(Problem {
            rule: None,
            row,
            field: display,
            value: String::new(),
            reason: "is not a known field".into(),
        });
        return;
    }
    let value = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => return,
        _ => {
            problems.push(Problem {
                rule: None,
                row,
                field: display,
                value: v.to_string(),
                reason: "must be a string or a number".into(),
            });
            return;
        }
    };
    fields.insert(
        key.to_string(),
        Cell {
            value,
            row,
            display,
        },
    );
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
        assert_eq!(decode(&bom, TextEncoding::Auto).unwrap(), text);
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
    fn csv_groups_rows_of_one_invoice_and_flags_differences() {
        let text = "MessageType,InvoiceNumber,Seller.Identifier,Item.Description\n\
                    F0401,AB00000001,28080623,tea\n\
                    F0401,AB00000001,28080623,milk\n\
                    F0401,AB00000002,28080623,tea\n\
                    F0501,,,\n";
        let (_, entries) = read_csv("a.csv", text, &Defaults::default()).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].raw.items.len(), 2);
        assert_eq!(entries[0].raw.row, 2);
        assert_eq!(entries[1].raw.row, 4);
        assert!(entries.iter().all(|e| e.problems.is_empty()));
    }

    #[test]
    fn csv_rows_are_numbered_as_an_editor_shows_them() {
        let text = "MessageType,InvoiceNumber\n\nF0501,AB00000001\n\"F0501\",\"AB0000\n0002\"\nF0501,AB00000003\n";
        let (_, entries) = read_csv("a.csv", text, &Defaults::default()).unwrap();
        let rows: Vec<usize> = entries.iter().map(|e| e.raw.row).collect();
        assert_eq!(rows, vec![3, 4, 6]);
    }

    #[test]
    fn csv_rejects_unknown_columns_and_short_rows() {
        let err = read_csv("a.csv", "MessageType,InvoiceNumbr\n", &Defaults::default());
        assert!(matches!(err, Err(ReadError::CsvHeader(m)) if m.contains("InvoiceNumbr")));
        let (_, entries) = read_csv(
            "a.csv",
            "MessageType,InvoiceNumber\nF0401\n",
            &Defaults::default(),
        )
        .unwrap();
        assert_eq!(entries[0].problems[0].row, 2);
    }

    #[test]
    fn json_flattens_nesting_into_csv_names() {
        let text = r#"{"MessageType":"F0401","Main":{"InvoiceNumber":"AB00000001","Seller":{"Identifier":"28080623"}},
                       "Details":{"ProductItem":[{"Quantity":2}]},"Amount":{"TaxRate":0.05}}"#;
        let entries = read_json("a.json", text, &Defaults::default()).unwrap();
        let raw = &entries[0].raw;
        assert_eq!(raw.fields["Seller.Identifier"].value, "28080623");
        assert_eq!(
            raw.fields["Seller.Identifier"].display,
            "Messages[0].Main.Seller.Identifier"
        );
        assert_eq!(raw.fields["TaxRate"].value, "0.05");
        assert_eq!(raw.items[0].fields["Quantity"].value, "2");
    }
}
