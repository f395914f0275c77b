//! Parsers for what comes back from Turnkey and the platform.
//!
//! - `SummaryResult` (the platform's verdict per sent message, with Total/Good/Failed counts and
//!   the invoices in each) and `ProcessResult` (codes for one message), as the real Turnkey
//!   writes them under its Unpack folder.
//! - The flat layout's `ACK` (`MessageID`, `ReceiptNo`, `TimeStamp`), `ERROR` (`ErrorCode`,
//!   `ErrorMessage`, `OriginalMessageID`) and `DailySummary` (`Date`, `Total`, `Success`,
//!   `Failed`) files. `MessageID` / `OriginalMessageID` is the name of the file turnbridge
//!   wrote, with or without `.xml`.
//!
//! Parsing ignores namespaces (sources disagree on them) and refuses DTDs and entity
//! declarations outright, so an entity-expansion or external-entity file is only a rejected
//! file.

use quick_xml::events::Event;
use quick_xml::Reader;
use thiserror::Error;

use crate::einvoice::printable;

#[derive(Debug, Error, PartialEq)]
pub enum ResultError {
    #[error("the file is not UTF-8")]
    NotUtf8,
    #[error("a DOCTYPE (DTD) is not accepted in a result file")]
    Doctype,
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("nesting deeper than {0} elements")]
    TooDeep(usize),
    #[error("`{0}` is not a result file turnbridge knows (SummaryResult, ProcessResult, ACK, ERROR, DailySummary)")]
    Unknown(String),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("Date is not YYYYMMDD: {0:?}")]
    BadDate(String),
    #[error("{field} is not a count: {value:?}")]
    BadCount { field: &'static str, value: String },
}

/// An element with its local name, text and children; attributes are not needed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |n, p| n.child(p))
    }

    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path)
            .map(|n| n.text.trim())
            .filter(|t| !t.is_empty())
    }
}

const MAX_DEPTH: usize = 32;

/// The largest result file read, in bytes. Turnkey's results are kilobytes; a file far larger
/// is not one, and reading it whole could exhaust memory.
pub const MAX_RESULT_BYTES: u64 = 16 << 20;

/// Parses a small XML document into a tree of local names.
pub fn parse_xml(bytes: &[u8]) -> Result<Node, ResultError> {
    let text = std::str::from_utf8(
        bytes
            .strip_prefix(b"\xEF\xBB\xBF".as_slice())
            .unwrap_or(bytes),
    )
    .map_err(|_| ResultError::NotUtf8)?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let xml = |e: &dyn std::fmt::Display| ResultError::Xml(printable(&e.to_string(), 200));
    loop {
        match reader.read_event().map_err(|e| xml(&e))? {
            Event::DocType(_) => return Err(ResultError::Doctype),
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(ResultError::TooDeep(MAX_DEPTH));
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                stack.push(Node {
                    name,
                    ..Node::default()
                });
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let node = Node {
                    name,
                    ..Node::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None if root.is_none() => root = Some(node),
                    None => return Err(ResultError::Xml("more than one root element".into())),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.unescape().map_err(|e| xml(&e))?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| ResultError::Xml("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None if root.is_none() => root = Some(node),
                    None => return Err(ResultError::Xml("more than one root element".into())),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(ResultError::Xml(
            "the document ends inside an element".into(),
        ));
    }
    root.ok_or_else(|| ResultError::Xml("no root element".into()))
}

/// An invoice named in a SummaryResult.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceRef {
    pub number: String,
    pub date: Option<String>,
}

/// One message's verdict in a SummaryResult.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryMessage {
    /// `4.1-F0401-YYYYMMDD-HHmmssSSS-<uuid>`.
    pub id: String,
    pub message_type: String,
    pub total: u64,
    pub good: u64,
    pub failed: u64,
    pub good_invoices: Vec<InvoiceRef>,
    pub failed_invoices: Vec<InvoiceRef>,
}

impl SummaryMessage {
    /// Total = Good + Failed, as the platform promises.
    pub fn counts_agree(&self) -> bool {
        self.good.checked_add(self.failed) == Some(self.total)
    }

    /// The date in the message id (`YYYYMMDD`), if the id has the usual shape.
    pub fn date(&self) -> Option<&str> {
        let parts: Vec<&str> = self.id.split('-').collect();
        parts
            .get(2)
            .copied()
            .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SummaryResult {
    pub from: Option<String>,
    pub to: Option<String>,
    pub messages: Vec<SummaryMessage>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub code: String,
    pub description: Option<String>,
    pub parameters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessResult {
    pub message_id: String,
    pub message_type: Option<String>,
    pub results: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    pub message_id: String,
    pub receipt_no: Option<String>,
    pub timestamp: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorResult {
    pub original_message_id: String,
    pub error_code: String,
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DailySummary {
    pub date: String,
    pub total: u64,
    pub success: u64,
    pub failed: u64,
}

/// Any result file.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultFile {
    Summary(SummaryResult),
    Process(ProcessResult),
    Ack(Ack),
    Error(ErrorResult),
    Daily(DailySummary),
}

fn count(n: Option<&Node>, field: &'static str) -> Result<u64, ResultError> {
    let text = n.map(|n| n.text.trim()).unwrap_or("");
    text.parse().map_err(|_| ResultError::BadCount {
        field,
        value: text.to_string(),
    })
}

fn required(n: &Node, path: &[&str], what: &'static str) -> Result<String, ResultError> {
    n.text_at(path)
        .map(str::to_string)
        .ok_or(ResultError::Missing(what))
}

/// Parses any result file, telling the kind by its root element.
pub fn parse(bytes: &[u8]) -> Result<ResultFile, ResultError> {
    let root = parse_xml(bytes)?;
    match root.name.to_ascii_lowercase().as_str() {
        "summaryresult" => summary(&root).map(ResultFile::Summary),
        "processresult" => process(&root).map(ResultFile::Process),
        "ack" => Ok(ResultFile::Ack(Ack {
            message_id: required(&root, &["MessageID"], "MessageID")?,
            receipt_no: root.text_at(&["ReceiptNo"]).map(str::to_string),
            timestamp: root.text_at(&["TimeStamp"]).map(str::to_string),
        })),
        "error" => Ok(ResultFile::Error(ErrorResult {
            original_message_id: required(&root, &["OriginalMessageID"], "OriginalMessageID")?,
            error_code: required(&root, &["ErrorCode"], "ErrorCode")?,
            error_message: root.text_at(&["ErrorMessage"]).map(str::to_string),
        })),
        "dailysummary" => Ok(ResultFile::Daily(DailySummary {
            date: {
                let d = required(&root, &["Date"], "Date")?;
                if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ResultError::BadDate(d));
                }
                d
            },
            total: count(root.child("Total"), "Total")?,
            success: count(root.child("Success"), "Success")?,
            failed: count(root.child("Failed"), "Failed")?,
        })),
        _ => Err(ResultError::Unknown(printable(&root.name, 80))),
    }
}

fn summary(root: &Node) -> Result<SummaryResult, ResultError> {
    let routing = root.child("RoutingInfo");
    let party = |p: &str| {
        routing
            .and_then(|r| r.text_at(&[p, "PartyId"]))
            .map(str::to_string)
    };
    let list = root
        .child("DetailList")
        .ok_or(ResultError::Missing("DetailList"))?;
    let mut messages = Vec::new();
    for m in list.all("Message") {
        let info = m
            .child("Info")
            .ok_or(ResultError::Missing("Message/Info"))?;
        // The XSD's shape is `Result/{Total,Good,Failed}/{Count, Invoices*/Invocie}`; other
        // descriptions wrap it as `ResultType/…/ResultDetailType`. Both are read, and the
        // invoice element is `Invocie` (the XSD) or `Invoice` (Turnkey's model).
        let rt = m
            .child("Result")
            .or_else(|| m.child("ResultType"))
            .ok_or(ResultError::Missing("Message/Result"))?;
        let part = |name: &'static str| -> Result<(u64, Vec<InvoiceRef>), ResultError> {
            let Some(node) = rt.child(name) else {
                return Ok((0, Vec::new()));
            };
            let detail = node.child("ResultDetailType").unwrap_or(node);
            let n = count(detail.child("Count"), name)?;
            let invoices = detail
                .all("Invoices")
                .flat_map(|inv| {
                    inv.children
                        .iter()
                        .filter(|i| i.name == "Invocie" || i.name == "Invoice")
                })
                .filter_map(|i| {
                    Some(InvoiceRef {
                        number: i.text_at(&["ReferenceNumber"])?.to_string(),
                        date: i.text_at(&["InvoiceDate"]).map(str::to_string),
                    })
                })
                .collect();
            Ok((n, invoices))
        };
        let (total, _) = part("Total")?;
        let (good, good_invoices) = part("Good")?;
        let (failed, failed_invoices) = part("Failed")?;
        messages.push(SummaryMessage {
            id: info.text_at(&["Id"]).unwrap_or_default().to_string(),
            message_type: required(info, &["MessageType"], "Info/MessageType")?,
            total,
            good,
            failed,
            good_invoices,
            failed_invoices,
        });
    }
    Ok(SummaryResult {
        from: party("From"),
        to: party("To"),
        messages,
    })
}

fn process(root: &Node) -> Result<ProcessResult, ResultError> {
    let info = root
        .child("MessageInfo")
        .ok_or(ResultError::Missing("MessageInfo"))?;
    let results = root
        .child("Result")
        .map(|r| {
            r.all("Info")
                .filter_map(|i| {
                    Some(ProcessInfo {
                        code: i.text_at(&["Code"])?.to_string(),
                        description: i.text_at(&["Description"]).map(str::to_string),
                        parameters: (0..5)
                            .filter_map(|k| {
                                i.text_at(&[&format!("Parameter{k}")]).map(str::to_string)
                            })
                            .collect(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ProcessResult {
        message_id: required(info, &["Id"], "MessageInfo/Id")?,
        message_type: info.text_at(&["MessageType"]).map(str::to_string),
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctype_and_entities_are_refused() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><ACK><MessageID>&x;</MessageID></ACK>"#;
        assert_eq!(parse(xxe), Err(ResultError::Doctype));
        let undeclared = b"<ACK><MessageID>&x;</MessageID></ACK>";
        assert!(matches!(parse(undeclared), Err(ResultError::Xml(_))));
    }

    #[test]
    fn a_root_name_is_shown_cut() {
        let long = format!("<{}/>", "R".repeat(10_000));
        match parse(long.as_bytes()) {
            Err(ResultError::Unknown(name)) => {
                assert!(name.ends_with("(10000 characters)"), "{name}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn namespaces_are_ignored() {
        let x =
            br#"<a:ACK xmlns:a="urn:x"><a:MessageID>F0401_20261126_00000001</a:MessageID></a:ACK>"#;
        match parse(x).unwrap() {
            ResultFile::Ack(a) => assert_eq!(a.message_id, "F0401_20261126_00000001"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn summary_in_the_xsd_shape_with_either_spelling() {
        let x = br#"<SummaryResult xmlns="urn:GEINV:SummaryResult:4.1"><RoutingInfo><From><PartyId>90000011</PartyId></From></RoutingInfo><DetailList><Message><Info><Id>v41-F0401-20261202-123633689-a72cf668-ca86-446c-8c67-5ff8d73159fd</Id><Size>2</Size><MessageType>F0401</MessageType><Service>S</Service><Action>B2S</Action></Info><Result><Total><Count>2</Count></Total><Good><Count>1</Count><Invoices><Invocie><ReferenceNumber>KZ10000002</ReferenceNumber><InvoiceDate>2024-12-01</InvoiceDate></Invocie></Invoices></Good><Failed><Count>1</Count><Invoices><Invoice><ReferenceNumber>KZ10000010</ReferenceNumber><InvoiceDate>2024-12-01</InvoiceDate></Invoice></Invoices></Failed></Result></Message></DetailList></SummaryResult>"#;
        match parse(x).unwrap() {
            ResultFile::Summary(s) => {
                let m = &s.messages[0];
                assert_eq!((m.total, m.good, m.failed), (2, 1, 1));
                assert_eq!(m.good_invoices[0].number, "KZ10000002");
                assert_eq!(m.failed_invoices[0].number, "KZ10000010");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn summary_id_date() {
        let m = SummaryMessage {
            id: "4.1-F0401-20260824-141623456-0b4f0a1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            message_type: "F0401".into(),
            total: 3,
            good: 2,
            failed: 1,
            good_invoices: vec![],
            failed_invoices: vec![],
        };
        assert_eq!(m.date(), Some("20260824"));
        assert!(m.counts_agree());
    }
}
