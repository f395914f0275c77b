//! The flat layout's ACK / ERROR / DailySummary files: the input is the body of one of those
//! roots, so the fuzzer spends its time on their fields rather than on finding a root name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnbridge::turnkey::results::{parse, ResultFile};

const ROOTS: [&str; 6] = [
    "ACK",
    "ERROR",
    "DailySummary",
    "a:ACK",
    "Error",
    "dailysummary",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let root = ROOTS[sel as usize % ROOTS.len()];
    let mut doc = Vec::with_capacity(body.len() + 64);
    if sel & 0x80 != 0 {
        doc.extend_from_slice(b"\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    }
    doc.extend_from_slice(format!("<{root} xmlns:a=\"urn:x\">").as_bytes());
    doc.extend_from_slice(body);
    doc.extend_from_slice(format!("</{root}>").as_bytes());
    match parse(&doc) {
        Ok(ResultFile::Ack(a)) => assert!(!a.message_id.is_empty()),
        Ok(ResultFile::Error(e)) => {
            assert!(!e.original_message_id.is_empty() && !e.error_code.is_empty())
        }
        Ok(ResultFile::Daily(d)) => {
            assert!(d.date.len() == 8 && d.date.bytes().all(|b| b.is_ascii_digit()))
        }
        Ok(other) => panic!("a flat root parsed as {other:?}"),
        Err(_) => {}
    }
});
