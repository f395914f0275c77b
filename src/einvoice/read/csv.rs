//! CSV batches: one row per product line, header fields repeated on every line of an invoice.

use std::collections::BTreeMap;

use super::{
    apply_defaults, overlong, Budget, CsvHeader, Defaults, Entry, Problems, ReadError, Source,
    MAX_ITEMS, MAX_VALUE_BYTES,
};
use crate::einvoice::model::Problem;
use crate::einvoice::printable;
use crate::einvoice::raw::{known_header_field, known_item_field, Cell, RawItem, RawMessage};
use crate::einvoice::types::MessageType;

/// More columns than there are known fields (header and item fields together).
const MAX_COLUMNS: usize = 128;

/// A message whose rows are still being read.
struct Open {
    key: String,
    entry: Entry,
    problems: Problems,
    /// Whether a line beyond [`MAX_ITEMS`] was already reported.
    full: bool,
}

impl Open {
    fn close(self) -> Entry {
        let mut entry = self.entry;
        entry.problems = self.problems.list;
        entry.unlisted = self.problems.more;
        entry
    }
}

/// Reads a CSV batch, handing each message to `sink` as soon as its last row is read.
/// Consecutive rows with the same message type, seller and number are one message. Returns
/// the column header, for writing rejected rows back.
pub fn read_csv(
    file: &str,
    text: &str,
    defaults: &Defaults,
    budget: &mut Budget,
    sink: &mut dyn FnMut(Entry),
) -> Result<CsvHeader, ReadError> {
    if text.trim().is_empty() {
        return Err(ReadError::Empty);
    }
    if let Some((record, fields)) = too_wide(text) {
        return Err(ReadError::TooWide {
            record,
            fields,
            max: MAX_COLUMNS,
        });
    }
    let mut rdr = ::csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(text.as_bytes());
    let mut rec = ::csv::StringRecord::new();
    // (No record is wider than MAX_COLUMNS here: `too_wide` refused the file.)
    let header: Vec<String> = match rdr.read_record(&mut rec) {
        Ok(true) => rec.iter().map(|s| s.trim().to_string()).collect(),
        Ok(false) => return Err(ReadError::Empty),
        Err(e) => return Err(ReadError::CsvHeader(e.to_string())),
    };
    check_header(&header)?;

    let mut open: Option<Open> = None;
    // The csv crate's line numbers skip blank lines; count newlines to name the line a person
    // sees in an editor.
    let mut lines = LineCounter::new(text);
    loop {
        let start = rdr.position().byte() as usize;
        let read = rdr.read_record(&mut rec);
        let end = rdr.position().byte() as usize;
        let source = record_text(text, start, end);
        match read {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_at(p.byte() as usize));
                if let Some(o) = open.take() {
                    sink(o.close());
                }
                budget.message()?;
                sink(broken_row(file, line, source, e.to_string()));
                continue;
            }
        }
        if rec.iter().all(|v| v.trim().is_empty()) {
            continue;
        }
        budget.line()?;
        let line = rec
            .position()
            .map_or(0, |p| lines.line_at(p.byte() as usize));
        if rec.len() != header.len() {
            if let Some(o) = open.take() {
                sink(o.close());
            }
            budget.message()?;
            let reason = format!("has {} fields, the header has {}", rec.len(), header.len());
            sink(broken_row(file, line, source, reason));
            continue;
        }
        let mut problems = Problems::default();
        let mut head = BTreeMap::new();
        let mut item = BTreeMap::new();
        for (col, v) in header.iter().zip(rec.iter()) {
            let v = v.trim();
            if v.len() > MAX_VALUE_BYTES {
                problems.push(overlong(line, col.clone(), v));
                continue;
            }
            let cell = Cell {
                value: v.to_string(),
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
            (Some(o), Some(key)) if o.key == key => {
                for p in problems.list {
                    o.problems.push(p);
                }
                for (name, cell) in &head {
                    let first = o.entry.raw.fields.get(name).map(|c| c.value.as_str());
                    if first.unwrap_or("") != cell.value {
                        o.problems.push(Problem {
                            rule: None,
                            row: line,
                            field: cell.display.clone(),
                            value: cell.value.clone(),
                            reason: format!(
                                "differs from row {} of the same message (\"{}\")",
                                o.entry.raw.row,
                                printable(first.unwrap_or(""), 40)
                            ),
                        });
                    }
                }
                if has_item {
                    if o.entry.raw.items.len() < MAX_ITEMS {
                        o.entry.raw.items.push(item);
                    } else if !o.full {
                        o.full = true;
                        o.problems.push(Problem {
                            rule: None,
                            row: line,
                            field: "Details".into(),
                            value: String::new(),
                            reason: format!(
                                "has more than {MAX_ITEMS} lines; the XSD allows at most {MAX_ITEMS}"
                            ),
                        });
                    }
                }
                if let Source::Csv(rows) = &mut o.entry.source {
                    rows.push(source);
                }
            }
            (_, key) => {
                if let Some(o) = open.take() {
                    sink(o.close());
                }
                budget.message()?;
                let entry = Entry {
                    file: file.to_string(),
                    raw: RawMessage {
                        row: line,
                        fields: head,
                        items: if has_item { vec![item] } else { vec![] },
                        display_prefix: String::new(),
                        grouped: false,
                    },
                    source: Source::Csv(vec![source]),
                    problems: Vec::new(),
                    unlisted: 0,
                };
                let o = Open {
                    key: key.clone().unwrap_or_default(),
                    entry,
                    problems,
                    full: false,
                };
                match key {
                    Some(_) => open = Some(o),
                    None => sink(o.close()),
                }
            }
        }
    }
    if let Some(o) = open.take() {
        sink(o.close());
    }
    Ok(header)
}

/// The first record (1-based) with more than [`MAX_COLUMNS`] fields, and how many it had
/// when counting stopped. Counted with `csv_core` and a fixed buffer before the `csv` reader
/// keeps a record's field bounds, which for 16 million empty fields would be 128 MB.
fn too_wide(text: &str) -> Option<(usize, usize)> {
    let mut rdr = csv_core::Reader::new();
    let mut input = text.as_bytes();
    let mut out = [0u8; 1024];
    let (mut record, mut fields) = (1, 0);
    loop {
        let (result, read, _) = rdr.read_field(input, &mut out);
        input = &input[read..];
        match result {
            csv_core::ReadFieldResult::InputEmpty if input.is_empty() => {
                // Tell the reader the input ended.
                let (result, _, _) = rdr.read_field(&[], &mut out);
                if matches!(result, csv_core::ReadFieldResult::Field { .. }) {
                    fields += 1;
                }
                return (fields > MAX_COLUMNS).then_some((record, fields));
            }
            csv_core::ReadFieldResult::InputEmpty | csv_core::ReadFieldResult::OutputFull => {}
            csv_core::ReadFieldResult::Field { record_end } => {
                fields += 1;
                if fields > MAX_COLUMNS {
                    return Some((record, fields));
                }
                if record_end {
                    record += 1;
                    fields = 0;
                }
            }
            csv_core::ReadFieldResult::End => return None,
        }
    }
}

/// Every column must be a known field, once.
fn check_header(header: &[String]) -> Result<(), ReadError> {
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
                printable(col, 80)
            )));
        }
        if let Some(first) = seen.insert(col.as_str(), i) {
            return Err(ReadError::CsvHeader(format!(
                "column `{}` appears twice (columns {} and {})",
                printable(col, 80),
                first + 1,
                i + 1
            )));
        }
    }
    Ok(())
}

/// A record's text as it stands in the file, without the blank lines before it and its line
/// end.
fn record_text(text: &str, start: usize, end: usize) -> String {
    let end = end.min(text.len());
    let start = start.min(end);
    text.get(start..end)
        .unwrap_or("")
        .trim_start_matches(['\r', '\n'])
        .trim_end_matches(['\r', '\n'])
        .to_string()
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

fn broken_row(file: &str, line: usize, source: String, reason: String) -> Entry {
    Entry {
        file: file.to_string(),
        raw: RawMessage {
            row: line,
            ..RawMessage::default()
        },
        source: Source::Csv(vec![source]),
        problems: vec![Problem {
            rule: None,
            row: line,
            field: String::new(),
            value: String::new(),
            reason: format!("the row cannot be read: {reason}"),
        }],
        unlisted: 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::einvoice::read::{BudgetExceeded, MAX_PROBLEMS};

    fn read(text: &str) -> Result<(CsvHeader, Vec<Entry>), ReadError> {
        read_with(text, &mut Budget::default())
    }

    fn read_with(text: &str, budget: &mut Budget) -> Result<(CsvHeader, Vec<Entry>), ReadError> {
        let mut entries = Vec::new();
        let header = read_csv("a.csv", text, &Defaults::default(), budget, &mut |e| {
            entries.push(e)
        })?;
        Ok((header, entries))
    }

    #[test]
    fn csv_groups_rows_of_one_invoice_and_flags_differences() {
        let text = "MessageType,InvoiceNumber,Seller.Identifier,Item.Description\n\
                    F0401,AB00000001,28080623,tea\n\
                    F0401,AB00000001,28080623,milk\n\
                    F0401,AB00000002,28080623,tea\n\
                    F0501,,,\n";
        let (_, entries) = read(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].raw.items.len(), 2);
        assert_eq!(entries[0].raw.row, 2);
        assert_eq!(entries[1].raw.row, 4);
        assert!(entries.iter().all(|e| e.problems.is_empty()));
        assert_eq!(
            entries[0].source,
            Source::Csv(vec![
                "F0401,AB00000001,28080623,tea".into(),
                "F0401,AB00000001,28080623,milk".into()
            ])
        );
    }

    #[test]
    fn csv_rows_are_numbered_as_an_editor_shows_them_and_kept_as_written() {
        let text = "MessageType,InvoiceNumber\r\n\r\nF0501,AB00000001\r\n\"F0501\",\"AB0000\n0002\"\nF0501,AB00000003";
        let (_, entries) = read(text).unwrap();
        let rows: Vec<usize> = entries.iter().map(|e| e.raw.row).collect();
        assert_eq!(rows, vec![3, 4, 6]);
        let sources: Vec<Source> = entries.into_iter().map(|e| e.source).collect();
        assert_eq!(
            sources,
            vec![
                Source::Csv(vec!["F0501,AB00000001".into()]),
                Source::Csv(vec!["\"F0501\",\"AB0000\n0002\"".into()]),
                Source::Csv(vec!["F0501,AB00000003".into()]),
            ]
        );
    }

    #[test]
    fn csv_rejects_unknown_columns_and_short_rows() {
        let err = read("MessageType,InvoiceNumbr\n");
        assert!(matches!(err, Err(ReadError::CsvHeader(m)) if m.contains("InvoiceNumbr")));
        let (_, entries) = read("MessageType,InvoiceNumber\nF0401\n").unwrap();
        assert_eq!(entries[0].problems[0].row, 2);
        assert_eq!(entries[0].source, Source::Csv(vec!["F0401".into()]));
    }

    #[test]
    fn a_batch_beyond_its_budget_stops_the_reading() {
        let mut text = String::from("MessageType,CancelInvoiceNumber\n");
        for i in 0..5 {
            text.push_str(&format!("F0501,AB0000000{i}\n"));
        }
        let err = read_with(&text, &mut Budget::new(4, 100)).unwrap_err();
        assert_eq!(err, ReadError::TooLarge(BudgetExceeded::Messages(4)));
        let err = read_with(&text, &mut Budget::new(100, 3)).unwrap_err();
        assert_eq!(err, ReadError::TooLarge(BudgetExceeded::Lines(3)));
        assert!(read_with(&text, &mut Budget::new(5, 5)).is_ok());
    }

    #[test]
    fn a_header_wider_than_every_field_is_refused_before_it_is_kept() {
        let text = format!("{}\nF0401\n", ",".repeat(100_000));
        let err = read(&text).unwrap_err();
        assert!(
            matches!(
                &err,
                ReadError::TooWide {
                    record: 1,
                    fields: 129,
                    ..
                }
            ),
            "{err}"
        );
        let text = format!("MessageType\nF0501\n\"a,b\",{}\n", ",".repeat(200));
        let err = read(&text).unwrap_err();
        assert!(
            matches!(&err, ReadError::TooWide { record: 3, .. }),
            "{err}"
        );
        let quoted = format!("MessageType\n\"{}\"\n", ",".repeat(1000));
        assert!(
            too_wide(&quoted).is_none(),
            "commas inside quotes are one field"
        );
    }

    #[test]
    fn a_difference_names_the_first_value_cut_short_and_escaped() {
        let first = "\u{1}".repeat(MAX_VALUE_BYTES);
        let text = format!(
            "MessageType,InvoiceNumber,Seller.Identifier,BuyerRemark\nF0401,AB00000001,28080623,{first}\nF0401,AB00000001,28080623,\n"
        );
        let (_, entries) = read(&text).unwrap();
        let p = &entries[0].problems[0];
        assert!(p.reason.starts_with("differs from row 2"), "{p:?}");
        assert!(
            p.reason.len() < 600,
            "{} bytes, not the 20 KB of the whole value",
            p.reason.len()
        );
    }

    #[test]
    fn long_values_and_many_differences_are_named_not_kept() {
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let mut text = format!(
            "MessageType,InvoiceNumber,Seller.Identifier,BuyerRemark,Item.Description\nF0401,AB00000001,28080623,{long},tea\n"
        );
        for i in 0..MAX_PROBLEMS + 5 {
            text.push_str(&format!("F0401,AB00000001,28080623,{i},tea\n"));
        }
        let (_, entries) = read(&text).unwrap();
        assert_eq!(entries.len(), 1);
        let problems = &entries[0].problems;
        assert!(
            problems[0].reason.contains("bytes long"),
            "{:?}",
            problems[0]
        );
        assert!(problems[0].value.len() < 200);
        assert!(!entries[0].raw.fields.contains_key("BuyerRemark"));
        assert_eq!(problems.len(), MAX_PROBLEMS);
        assert_eq!(entries[0].unlisted, 6);
    }
}
