//! Which documents one Turnkey upload (a merged pack) holds, read from the pack file UpCast
//! leaves in `Pack/B2SSTORAGE/{SRC,BAK}`: Turnkey's re-marshalled documents, concatenated
//! without XML declarations, in the order UpCast took the files, which is also the SEQNO order
//! a ProcessResult's `No. N` counts in.

use quick_xml::events::Event;
use quick_xml::Reader;
use thiserror::Error;

use crate::einvoice::printable;

/// The largest pack read. UpCast closes a pack at 15 MB; a larger file is not one of its packs.
pub const MAX_PACK_BYTES: u64 = 20 << 20;

#[derive(Debug, Error, PartialEq)]
pub enum PackError {
    #[error("the pack is not UTF-8")]
    NotUtf8,
    #[error("a DOCTYPE (DTD) is not accepted in a pack")]
    Doctype,
    #[error("malformed XML in the pack: {0}")]
    Xml(String),
    #[error("document {0} of the pack has no number")]
    NoNumber(usize),
}

/// One document of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedDocument {
    /// The root element: `Invoice`, `CancelInvoice`, `VoidInvoice`, `Allowance`, `CancelAllowance`.
    pub root: String,
    pub number: String,
    pub date: Option<String>,
}

const NUMBERS: [&str; 5] = [
    "InvoiceNumber",
    "CancelInvoiceNumber",
    "VoidInvoiceNumber",
    "AllowanceNumber",
    "CancelAllowanceNumber",
];
const DATES: [&str; 2] = ["InvoiceDate", "AllowanceDate"];

/// The documents of a pack, in pack order.
pub fn documents(bytes: &[u8]) -> Result<Vec<PackedDocument>, PackError> {
    let text = std::str::from_utf8(
        bytes
            .strip_prefix(b"\xEF\xBB\xBF".as_slice())
            .unwrap_or(bytes),
    )
    .map_err(|_| PackError::NotUtf8)?;
    let mut reader = Reader::from_str(text);
    let xml = |e: &dyn std::fmt::Display| PackError::Xml(printable(&e.to_string(), 200));
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<(String, Option<String>, Option<String>)> = None;
    // The element whose text is wanted next: number or date.
    let mut want: Option<bool> = None;
    loop {
        match reader.read_event().map_err(|e| xml(&e))? {
            Event::DocType(_) => return Err(PackError::Doctype),
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if depth == 0 {
                    current = Some((name, None, None));
                } else if let Some((_, number, date)) = &current {
                    want = if number.is_none() && NUMBERS.contains(&name.as_str()) {
                        Some(true)
                    } else if date.is_none() && DATES.contains(&name.as_str()) {
                        Some(false)
                    } else {
                        None
                    };
                }
                depth += 1;
            }
            Event::Text(t) => {
                if let (Some(is_number), Some((_, number, date))) = (want, current.as_mut()) {
                    let v = t.unescape().map_err(|e| xml(&e))?.trim().to_string();
                    if is_number {
                        *number = Some(v);
                    } else {
                        *date = Some(v);
                    }
                }
                want = None;
            }
            Event::End(_) => {
                want = None;
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| PackError::Xml("unbalanced end tag".into()))?;
                if depth == 0 {
                    let (root, number, date) = current.take().expect("a document is open");
                    let number = number.ok_or(PackError::NoNumber(out.len() + 1))?;
                    out.push(PackedDocument { root, number, date });
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(PackError::Xml("the pack ends inside an element".into()));
    }
    Ok(out)
}

/// The invoice a ProcessResult `Description` of `No. N …` names (1-based, in pack order).
pub fn ordinal(description: &str) -> Option<usize> {
    let rest = description.trim_start().strip_prefix("No.")?.trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_in_pack_order() {
        let pack = br#"<Invoice xmlns="urn:GEINV:eInvoiceMessage:F0401:4.1"><Main><InvoiceNumber>KZ10000002</InvoiceNumber><InvoiceDate>20241201</InvoiceDate></Main></Invoice><Invoice xmlns="urn:GEINV:eInvoiceMessage:F0401:4.1"><Main><InvoiceNumber>KZ10000010</InvoiceNumber><InvoiceDate>20241201</InvoiceDate></Main></Invoice>
<CancelInvoice><CancelInvoiceNumber>KZ1</CancelInvoiceNumber></CancelInvoice>"#;
        let d = documents(pack).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].number, "KZ10000010");
        assert_eq!(d[1].date.as_deref(), Some("20241201"));
        assert_eq!(d[2].root, "CancelInvoice");
        assert_eq!(
            documents(b"<Invoice><Main/></Invoice>"),
            Err(PackError::NoNumber(1))
        );
        assert!(documents(b"<Invoice><Main>").is_err());
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("No. 2 test rejection"), Some(2));
        assert_eq!(ordinal("No.12 x"), Some(12));
        assert_eq!(ordinal("Success"), None);
        assert_eq!(ordinal("No. 0"), None);
    }
}
