//! A bounded XML reader for allocation files: the whole document as a small tree of
//! namespaced elements, refused before it can cost much.
//!
//! Hand-written on quick-xml rather than a DOM crate so every bound is ours: the caller's size
//! limit is checked before parsing, elements are counted and nesting is capped while reading,
//! and a DOCTYPE is refused outright (so no DTD, no entity declarations, no external entities;
//! quick-xml itself expands only the five predefined entities and character references).

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::allocation::AllocationError;
use crate::einvoice::printable;

/// Nesting deeper than this is no allocation file (E0501 in its envelope is 4 deep).
const MAX_DEPTH: usize = 16;

/// An element: its namespace, local name, text and children (attributes are not needed).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Element {
    pub ns: String,
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of a child, if present and not blank.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }
}

/// Parses a document of at most `max_bytes` bytes and `max_elements` elements.
pub(crate) fn parse(
    bytes: &[u8],
    max_bytes: usize,
    max_elements: usize,
) -> Result<Element, AllocationError> {
    if bytes.len() > max_bytes {
        return Err(AllocationError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let text = std::str::from_utf8(
        bytes
            .strip_prefix(b"\xEF\xBB\xBF".as_slice())
            .unwrap_or(bytes),
    )
    .map_err(|_| AllocationError::NotUtf8)?;
    let mut reader = NsReader::from_str(text);
    let malformed =
        |e: &dyn std::fmt::Display| AllocationError::Xml(printable(&e.to_string(), 200));
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| malformed(&e))?;
        match event {
            Event::DocType(_) => return Err(AllocationError::Doctype),
            Event::Start(_) | Event::Empty(_) => {
                elements += 1;
                if elements > max_elements {
                    return Err(AllocationError::TooManyElements(max_elements));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(AllocationError::TooDeep(MAX_DEPTH));
                }
                let (Event::Start(e) | Event::Empty(e)) = &event else {
                    unreachable!()
                };
                let ns = match ns {
                    ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                    ResolveResult::Unbound => String::new(),
                    ResolveResult::Unknown(p) => {
                        return Err(AllocationError::Xml(format!(
                            "the prefix `{}` is not declared",
                            printable(&String::from_utf8_lossy(&p), 40)
                        )))
                    }
                };
                let node = Element {
                    ns,
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Element::default()
                };
                if matches!(event, Event::Start(_)) {
                    stack.push(node);
                } else {
                    attach(&mut stack, &mut root, node)?;
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.unescape().map_err(|e| malformed(&e))?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    let s = std::str::from_utf8(&t).map_err(|_| AllocationError::NotUtf8)?;
                    top.text.push_str(s);
                }
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| AllocationError::Xml("unbalanced end tag".into()))?;
                attach(&mut stack, &mut root, node)?;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(AllocationError::Xml(
            "the document ends inside an element".into(),
        ));
    }
    root.ok_or_else(|| AllocationError::Xml("no root element".into()))
}

fn attach(
    stack: &mut [Element],
    root: &mut Option<Element>,
    node: Element,
) -> Result<(), AllocationError> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None if root.is_none() => *root = Some(node),
        None => return Err(AllocationError::Xml("more than one root element".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_namespaces_and_text() {
        let doc = br#"<?xml version="1.0"?>
<a:Env xmlns:a="urn:A" xmlns="urn:B"><Pack><Item>x &amp; y</Item><Empty/></Pack></a:Env>"#;
        let root = parse(doc, 1 << 20, 100).unwrap();
        assert_eq!((root.ns.as_str(), root.name.as_str()), ("urn:A", "Env"));
        let pack = root.child("Pack").unwrap();
        assert_eq!(pack.ns, "urn:B");
        assert_eq!(pack.text_of("Item"), Some("x & y"));
        assert_eq!(pack.text_of("Empty"), None);
    }

    #[test]
    fn refuses_what_could_cost_much() {
        assert_eq!(
            parse(b"<a/>", 3, 10),
            Err(AllocationError::TooLarge { size: 4, max: 3 })
        );
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><a>&x;</a>"#;
        assert_eq!(parse(bomb, 1 << 20, 10), Err(AllocationError::Doctype));
        assert_eq!(
            parse(b"<a><b/><b/><b/></a>", 1 << 20, 3),
            Err(AllocationError::TooManyElements(3))
        );
        let deep = "<a>".repeat(20) + &"</a>".repeat(20);
        assert_eq!(
            parse(deep.as_bytes(), 1 << 20, 100),
            Err(AllocationError::TooDeep(MAX_DEPTH))
        );
        assert!(matches!(
            parse(b"<a>&unknown;</a>", 1 << 20, 10),
            Err(AllocationError::Xml(_))
        ));
        assert!(matches!(
            parse(b"<p:a/>", 1 << 20, 10),
            Err(AllocationError::Xml(_))
        ));
        assert!(matches!(
            parse(b"<a><b></a>", 1 << 20, 10),
            Err(AllocationError::Xml(_))
        ));
        assert_eq!(
            parse(b"\xff<a/>", 1 << 20, 10),
            Err(AllocationError::NotUtf8)
        );
    }
}
