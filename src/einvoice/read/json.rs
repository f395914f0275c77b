//! JSON batches, read by shape: each value is looked at as the text it is
//! ([`serde_json::value::RawValue`], a slice of the input) and only what a message can hold
//! is built. An array where a field belongs is named in a problem, not turned into a tree,
//! so a file of nested arrays costs what its text costs.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    apply_defaults, overlong, Budget, Defaults, Entry, Problems, ReadError, Source, MAX_ITEMS,
    MAX_VALUE_BYTES,
};
use crate::einvoice::model::Problem;
use crate::einvoice::printable;
use crate::einvoice::raw::{known_header_field, known_item_field, Cell, RawItem, RawMessage};

/// Keys one JSON object may hold; the MIG's largest group has about 40.
const MAX_KEYS: usize = 256;

/// Bytes a batch-wide `MessageType` or `TenantId` may hold (a tenant id is at most 64).
const MAX_DEFAULT_BYTES: usize = 64;

/// The first key that appears twice.
fn first_duplicate<'k>(keys: &'k [(String, &RawValue)]) -> Option<&'k str> {
    let mut seen = std::collections::HashSet::new();
    keys.iter()
        .map(|(k, _)| k.as_str())
        .find(|k| !seen.insert(*k))
}

/// Reads a JSON batch: an array of messages, an object `{"Messages": [...]}` (optionally with
/// batch-wide `MessageType` and `TenantId`), or a single message object. Field names are MIG
/// element names, nested as in the message (`Main`, `Details.ProductItem`, `Amount`). Each
/// message goes to `sink` as soon as it is read.
pub fn read_json(
    file: &str,
    text: &str,
    defaults: &Defaults,
    budget: &mut Budget,
    sink: &mut dyn FnMut(Entry),
) -> Result<(), ReadError> {
    if text.trim().is_empty() {
        return Err(ReadError::Empty);
    }
    // The whole text is checked once here; every later look at a part of it cannot fail on
    // syntax.
    let top: &RawValue = serde_json::from_str(text).map_err(|e| ReadError::Json(e.to_string()))?;
    let mut defaults = defaults.clone();
    let messages = match kind(top) {
        Kind::Array => array(top, budget_cap(budget))?.0,
        Kind::Object => {
            let (keys, cut) = object(top, MAX_KEYS)?;
            if cut {
                return Err(ReadError::Json(format!(
                    "the top object has more than {MAX_KEYS} keys; neither a batch nor a message has that many"
                )));
            }
            if keys.iter().any(|(k, _)| k == "Messages") {
                if let Some(key) = first_duplicate(&keys) {
                    return Err(ReadError::Json(format!(
                        "batch key `{}` appears twice",
                        printable(key, 80)
                    )));
                }
                let mut messages = None;
                let mut extra = Vec::new();
                for (key, value) in keys {
                    match key.as_str() {
                        "MessageType" | "TenantId" => {
                            let slot = if key == "MessageType" {
                                &mut defaults.message_type
                            } else {
                                &mut defaults.tenant
                            };
                            match (kind(value), scalar(value)) {
                                (Kind::String, Ok(Some(v))) if v.len() > MAX_DEFAULT_BYTES => {
                                    return Err(ReadError::Json(format!(
                                        "`{key}` is {} bytes long; a batch default holds at most {MAX_DEFAULT_BYTES}",
                                        v.len()
                                    )))
                                }
                                (Kind::String, Ok(v)) => *slot = v,
                                (Kind::Null, _) => {}
                                _ => {
                                    return Err(ReadError::Json(format!(
                                        "`{key}` must be a string"
                                    )))
                                }
                            }
                        }
                        "Messages" => messages = Some(value),
                        _ => extra.push(key),
                    }
                }
                if !extra.is_empty() {
                    return Err(ReadError::Json(format!(
                        "unknown batch keys {}; a batch has Messages, MessageType and TenantId",
                        printable(&format!("{extra:?}"), 200)
                    )));
                }
                match messages.filter(|m| kind(m) == Kind::Array) {
                    Some(m) => array(m, budget_cap(budget))?.0,
                    None => return Err(ReadError::Json("`Messages` must be an array".into())),
                }
            } else {
                vec![top]
            }
        }
        _ => {
            return Err(ReadError::Json(
                "expected a message object, an array of them, or {\"Messages\": [...]}".into(),
            ))
        }
    };
    for (i, value) in messages.into_iter().enumerate() {
        budget.message()?;
        sink(message(file, i + 1, value, &defaults, budget)?);
    }
    Ok(())
}

/// Messages kept from one array: the budget's room plus one, so the one beyond is counted
/// (and refuses the batch) without keeping the rest.
fn budget_cap(budget: &Budget) -> usize {
    budget.max_messages.saturating_sub(budget.messages()) + 1
}

fn message(
    file: &str,
    row: usize,
    value: &RawValue,
    defaults: &Defaults,
    budget: &mut Budget,
) -> Result<Entry, ReadError> {
    let mut raw = RawMessage {
        row,
        display_prefix: format!("Messages[{}].", row - 1),
        ..RawMessage::default()
    };
    let mut problems = Problems::default();
    if kind(value) == Kind::Object {
        let mut reader = MessageReader {
            row,
            raw: &mut raw,
            problems: &mut problems,
            budget,
        };
        match reader.group(value, &format!("Messages[{}]", row - 1)) {
            Ok(keys) => {
                reader.raw.grouped = keys
                    .iter()
                    .any(|(k, _)| matches!(k.as_str(), "Main" | "Amount" | "Details"));
                match reader.fields(&keys) {
                    Err(ReadError::Json(e)) => reader.unreadable(e),
                    other => other?,
                }
            }
            Err(ReadError::Json(e)) => reader.unreadable(e),
            Err(e) => return Err(e),
        }
    } else {
        problems.push(Problem {
            rule: None,
            row,
            field: format!("Messages[{}]", row - 1),
            value: String::new(),
            reason: "a message must be a JSON object".into(),
        });
    }
    apply_defaults(&mut raw.fields, defaults, row);
    Ok(Entry {
        file: file.to_string(),
        raw,
        source: Source::Json(value.get().to_string()),
        problems: problems.list,
        unlisted: problems.more,
    })
}

/// Flattens one message's groups into CSV-spelled fields.
struct MessageReader<'r> {
    row: usize,
    raw: &'r mut RawMessage,
    problems: &'r mut Problems,
    budget: &'r mut Budget,
}

impl MessageReader<'_> {
    fn fields(&mut self, keys: &[(String, &RawValue)]) -> Result<(), ReadError> {
        let base = self.raw.display_prefix.clone();
        for (key, v) in keys {
            let path = format!("{base}{}", printable(key, 80));
            match (key.as_str(), kind(v)) {
                ("Main", Kind::Object) => {
                    for (k, v) in self.group(v, &path)? {
                        let p = format!("{path}.{}", printable(&k, 80));
                        match (k.as_str(), kind(v)) {
                            ("Seller" | "Buyer", Kind::Object) => {
                                for (rk, rv) in self.group(v, &p)? {
                                    let name = format!("{k}.{rk}");
                                    let display = format!("{p}.{}", printable(&rk, 80));
                                    self.put_header(&name, rv, display);
                                }
                            }
                            _ => self.put_header(&k, v, p),
                        }
                    }
                }
                ("Amount", Kind::Object) => {
                    for (k, v) in self.group(v, &path)? {
                        let display = format!("{path}.{}", printable(&k, 80));
                        self.put_header(&k, v, display);
                    }
                }
                ("Details", Kind::Object) => {
                    for (k, v) in self.group(v, &path)? {
                        let items = match (k.as_str(), kind(v)) {
                            ("ProductItem", Kind::Array) => {
                                let (items, cut) = array(v, MAX_ITEMS)?;
                                if cut {
                                    self.problem(
                                        path.clone(),
                                        String::new(),
                                        format!(
                                            "has more than {MAX_ITEMS} lines; the XSD allows at most {MAX_ITEMS}"
                                        ),
                                    );
                                }
                                items
                            }
                            ("ProductItem", Kind::Object) => vec![v],
                            _ => {
                                self.problem(
                                    format!("{path}.{}", printable(&k, 80)),
                                    String::new(),
                                    "Details holds ProductItem, an array of objects".into(),
                                );
                                continue;
                            }
                        };
                        for (i, item) in items.into_iter().enumerate() {
                            self.item(&format!("{path}.ProductItem[{i}]."), item)?;
                        }
                    }
                }
                ("Main" | "Amount" | "Details", _) => {
                    self.problem(path, String::new(), "must be an object".into())
                }
                _ => self.put_header(key, v, path),
            }
        }
        Ok(())
    }

    /// The keys of a group object, with a problem when it holds more than a group can or a
    /// key twice (only the first is read: which one the writer meant is not known).
    fn group<'a>(
        &mut self,
        v: &'a RawValue,
        path: &str,
    ) -> Result<Vec<(String, &'a RawValue)>, ReadError> {
        let (mut keys, cut) = object(v, MAX_KEYS)?;
        if cut {
            self.problems
                .push(too_many_keys(self.row, path.to_string()));
        }
        let mut seen = std::collections::HashSet::new();
        let mut twice = Vec::new();
        keys.retain(|(k, _)| {
            let first = seen.insert(k.clone());
            if !first {
                twice.push(k.clone());
            }
            first
        });
        for k in twice {
            self.problem(
                format!("{path}.{}", printable(&k, 80)),
                String::new(),
                "appears twice in the same object".into(),
            );
        }
        Ok(keys)
    }

    /// A part of the message the JSON reader cannot decode (a key with a lone surrogate
    /// escape): the message is refused, the rest of the batch goes on.
    fn unreadable(&mut self, e: String) {
        let field = format!("Messages[{}]", self.row - 1);
        self.problem(field, String::new(), format!("cannot be read: {e}"));
    }

    fn item(&mut self, prefix: &str, item: &RawValue) -> Result<(), ReadError> {
        self.budget.line()?;
        let mut fields = BTreeMap::new();
        if kind(item) == Kind::Object {
            for (k, v) in self.group(item, prefix.trim_end_matches('.'))? {
                let display = format!("{prefix}{}", printable(&k, 80));
                if let Some(cell) = self.cell(&k, v, display, true) {
                    fields.insert(k, cell);
                }
            }
        } else {
            self.problem(
                prefix.trim_end_matches('.').to_string(),
                String::new(),
                "a ProductItem must be an object".into(),
            );
        }
        self.raw.items.push(RawItem {
            row: self.row,
            display_prefix: prefix.to_string(),
            fields,
        });
        Ok(())
    }

    fn put_header(&mut self, key: &str, v: &RawValue, display: String) {
        if let Some(cell) = self.cell(key, v, display, false) {
            self.raw.fields.insert(key.to_string(), cell);
        }
    }

    /// A known field with a string or number value, as a cell; anything else is a problem.
    fn cell(&mut self, key: &str, v: &RawValue, display: String, item: bool) -> Option<Cell> {
        let known = if item {
            known_item_field(key)
        } else {
            known_header_field(key)
        };
        if !known {
            self.problem(display, String::new(), "is not a known field".into());
            return None;
        }
        match scalar(v) {
            Ok(None) => None,
            Ok(Some(value)) if value.len() > MAX_VALUE_BYTES => {
                self.problems.push(overlong(self.row, display, &value));
                None
            }
            Ok(Some(value)) => Some(Cell {
                value,
                row: self.row,
                display,
            }),
            Err(reason) => {
                let value = printable(v.get(), 200);
                self.problem(display, value, reason.into());
                None
            }
        }
    }

    fn problem(&mut self, field: String, value: String, reason: String) {
        self.problems.push(Problem {
            rule: None,
            row: self.row,
            field,
            value,
            reason,
        });
    }
}

fn too_many_keys(row: usize, field: String) -> Problem {
    Problem {
        rule: None,
        row,
        field,
        value: String::new(),
        reason: format!("has more than {MAX_KEYS} keys; the rest were not read"),
    }
}

/// What a JSON value is, told by its first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Number,
    Null,
    Bool,
}

fn kind(v: &RawValue) -> Kind {
    match v.get().trim_start().as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        _ => Kind::Number,
    }
}

/// A string's text, a number as written (`0.05`, `1e3`), `None` for null; for anything else,
/// why it cannot be a field's value.
fn scalar(v: &RawValue) -> Result<Option<String>, &'static str> {
    match kind(v) {
        Kind::String => serde_json::from_str::<String>(v.get())
            .map(Some)
            .map_err(|_| "is not valid JSON text (a lone surrogate escape such as \\ud800)"),
        Kind::Number => Ok(Some(v.get().trim().to_string())),
        Kind::Null => Ok(None),
        _ => Err("must be a string or a number"),
    }
}

/// The entries read from an object (or an array, with empty keys), and whether there were
/// more than were kept.
type Parts<'a> = (Vec<(String, &'a RawValue)>, bool);

/// The first `cap` elements of an array, and whether there were more (the rest are skipped
/// without being kept).
fn array(v: &RawValue, cap: usize) -> Result<(Vec<&RawValue>, bool), ReadError> {
    walk(v, Capped { cap, keys: false }).map(|(items, cut)| {
        let items = items.into_iter().map(|(_, v)| v).collect();
        (items, cut)
    })
}

/// The first `cap` keys of an object with their values, in order, and whether there were
/// more.
fn object(v: &RawValue, cap: usize) -> Result<Parts<'_>, ReadError> {
    walk(v, Capped { cap, keys: true })
}

fn walk(v: &RawValue, seed: Capped) -> Result<Parts<'_>, ReadError> {
    let mut de = serde_json::Deserializer::from_str(v.get());
    seed.deserialize(&mut de)
        .map_err(|e| ReadError::Json(e.to_string()))
}

/// Reads an array's elements or an object's entries as slices of the text, keeping at most
/// `cap` of them.
struct Capped {
    cap: usize,
    keys: bool,
}

impl<'de> DeserializeSeed<'de> for Capped {
    type Value = (Vec<(String, &'de RawValue)>, bool);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.keys {
            d.deserialize_map(self)
        } else {
            d.deserialize_seq(self)
        }
    }
}

impl<'de> Visitor<'de> for Capped {
    type Value = (Vec<(String, &'de RawValue)>, bool);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.keys { "an object" } else { "an array" })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while out.len() < self.cap {
            match seq.next_element::<&'de RawValue>()? {
                Some(v) => out.push((String::new(), v)),
                None => return Ok((out, false)),
            }
        }
        let mut cut = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            cut = true;
        }
        Ok((out, cut))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while out.len() < self.cap {
            match map.next_key::<String>()? {
                Some(k) => {
                    let v = map.next_value::<&'de RawValue>()?;
                    out.push((k, v));
                }
                None => return Ok((out, false)),
            }
        }
        let mut cut = false;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            cut = true;
        }
        Ok((out, cut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::einvoice::read::BudgetExceeded;

    fn read(text: &str, budget: &mut Budget) -> Result<Vec<Entry>, ReadError> {
        let mut entries = Vec::new();
        read_json("a.json", text, &Defaults::default(), budget, &mut |e| {
            entries.push(e)
        })?;
        Ok(entries)
    }

    #[test]
    fn json_flattens_nesting_into_csv_names() {
        let text = r#"{"MessageType":"F0401","Main":{"InvoiceNumber":"AB00000001","Seller":{"Identifier":"28080623"}},
                       "Details":{"ProductItem":[{"Quantity":2}]},"Amount":{"TaxRate":0.05}}"#;
        let entries = read(text, &mut Budget::default()).unwrap();
        let raw = &entries[0].raw;
        assert_eq!(raw.fields["Seller.Identifier"].value, "28080623");
        assert_eq!(
            raw.fields["Seller.Identifier"].display,
            "Messages[0].Main.Seller.Identifier"
        );
        assert_eq!(raw.fields["TaxRate"].value, "0.05");
        assert_eq!(raw.items[0].fields["Quantity"].value, "2");
        assert_eq!(entries[0].source, Source::Json(text.to_string()));
    }

    #[test]
    fn batch_keys_give_defaults_and_strangers_are_refused() {
        let text = r#"{"MessageType":"F0501","TenantId":"T1","Messages":[{"CancelInvoiceNumber":"AB00000001"}]}"#;
        let entries = read(text, &mut Budget::default()).unwrap();
        assert_eq!(entries[0].raw.fields["MessageType"].value, "F0501");
        assert_eq!(entries[0].raw.fields["TenantId"].value, "T1");
        let err = read(r#"{"Messages":[],"Mesages":1}"#, &mut Budget::default());
        assert!(matches!(err, Err(ReadError::Json(m)) if m.contains("Mesages")));
        let err = read(r#"{"Messages":{}}"#, &mut Budget::default());
        assert!(matches!(err, Err(ReadError::Json(m)) if m.contains("must be an array")));
    }

    #[test]
    fn a_structure_where_a_value_belongs_is_named_not_built() {
        let nested = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let text = format!(
            r#"[{{"MessageType":"F0401","InvoiceNumber":{nested},"Details":{{"ProductItem":[{{"Quantity":[1,2]}},7]}}}}]"#
        );
        let entries = read(&text, &mut Budget::default()).unwrap();
        let p = &entries[0].problems;
        assert_eq!(p[0].field, "Messages[0].InvoiceNumber");
        assert_eq!(p[0].reason, "must be a string or a number");
        assert!(p[0].value.chars().count() < 230, "{}", p[0].value);
        assert_eq!(p[1].field, "Messages[0].Details.ProductItem[0].Quantity");
        assert_eq!(p[1].value, "[1,2]");
        assert_eq!(p[2].field, "Messages[0].Details.ProductItem[1]");
        assert_eq!(p[2].reason, "a ProductItem must be an object");
    }

    #[test]
    fn messages_and_lines_beyond_the_budget_refuse_the_batch() {
        let text = format!("[{}{{}}]", "{},".repeat(10));
        let err = read(&text, &mut Budget::new(5, 100)).unwrap_err();
        assert_eq!(err, ReadError::TooLarge(BudgetExceeded::Messages(5)));
        let items = format!("{}{{}}", "{},".repeat(20));
        let text = format!(r#"[{{"Details":{{"ProductItem":[{items}]}}}}]"#);
        let err = read(&text, &mut Budget::new(5, 10)).unwrap_err();
        assert_eq!(err, ReadError::TooLarge(BudgetExceeded::Lines(10)));
        assert_eq!(read(&text, &mut Budget::new(5, 21)).unwrap().len(), 1);
    }

    #[test]
    fn an_object_with_too_many_keys_is_cut_and_named() {
        let keys: Vec<String> = (0..MAX_KEYS + 10).map(|i| format!("\"k{i}\":1")).collect();
        let text = format!("[{{{}}}]", keys.join(","));
        let entries = read(&text, &mut Budget::default()).unwrap();
        let p = &entries[0].problems;
        assert!(p.iter().any(|p| p.reason.contains("more than 256 keys")));
        assert_eq!(p.len(), crate::einvoice::read::MAX_PROBLEMS, "capped");
        assert!(entries[0].unlisted > 0);
        let top = format!("{{{}}}", keys.join(","));
        let err = read(&top, &mut Budget::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("top object has more than 256 keys"),
            "{err}"
        );
    }

    #[test]
    fn a_key_twice_is_named_and_only_the_first_is_read() {
        let text = r#"[{"MessageType":"F0501","CancelInvoiceNumber":"AB00000001","CancelInvoiceNumber":null,
                        "Main":{"x":1},"Main":{"y":2}}]"#;
        let entries = read(text, &mut Budget::default()).unwrap();
        let p = &entries[0].problems;
        let twice: Vec<&str> = p
            .iter()
            .filter(|p| p.reason == "appears twice in the same object")
            .map(|p| p.field.as_str())
            .collect();
        assert_eq!(
            twice,
            vec!["Messages[0].CancelInvoiceNumber", "Messages[0].Main"]
        );
        assert_eq!(
            entries[0].raw.fields["CancelInvoiceNumber"].value,
            "AB00000001"
        );
        let err = read(
            r#"{"MessageType":"F0401","MessageType":null,"Messages":[]}"#,
            &mut Budget::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`MessageType` appears twice"),
            "{err}"
        );
    }

    #[test]
    fn a_key_that_cannot_be_decoded_refuses_its_message_not_the_batch() {
        let text = r#"[{"MessageType":"F0501","CancelInvoiceNumber":"AB00000001"},{"\ud800":1}]"#;
        let entries = read(text, &mut Budget::default()).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].problems.is_empty(), "{:?}", entries[0].problems);
        assert_eq!(entries[1].problems[0].field, "Messages[1]");
        assert!(entries[1].problems[0].reason.starts_with("cannot be read"));
    }

    #[test]
    fn batch_defaults_are_as_short_as_a_tenant_id() {
        let text = format!(r#"{{"TenantId":"{}","Messages":[{{}}]}}"#, "t".repeat(65));
        let err = read(&text, &mut Budget::default()).unwrap_err();
        assert!(
            err.to_string().contains("`TenantId` is 65 bytes long"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_the_place_in_the_whole_text() {
        let err = read("[{\"a\":1},\n{\"b\":}]", &mut Budget::default()).unwrap_err();
        assert!(
            matches!(&err, ReadError::Json(m) if m.contains("line 2")),
            "{err}"
        );
    }
}
