//! JSON batches: decoding, the reader, then the whole check; every accepted message must
//! render to well-formed XML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnbridge::config::Config;
use turnbridge::einvoice::read::{decode, read_json, Budget, Defaults};
use turnbridge::einvoice::{check_batch, render::render, TextEncoding};
use turnbridge::turnkey::results::parse_xml;

const TYPES: [&str; 8] = [
    "", "F0401", "G0401", "F0501", "F0701", "C0401", "D0401", "X9",
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the encoding and the defaults a ZIP manifest could give.
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let encoding = [TextEncoding::Auto, TextEncoding::Utf8, TextEncoding::Big5][sel as usize % 3];
    let ty = TYPES[(sel as usize >> 2) & 7];
    let defaults = Defaults {
        message_type: (!ty.is_empty()).then(|| ty.to_string()),
        tenant: (sel & 0x20 != 0).then(|| "TEN-001".to_string()),
    };
    if let Ok(text) = decode(bytes, encoding) {
        let _ = read_json("fuzz.json", &text, &defaults, &mut Budget::default(), &mut |_| {});
    }
    let mut opts = Config::default().read_options();
    opts.encoding = encoding;
    if let Ok(verdict) = check_batch("fuzz.json", bytes, &opts) {
        for a in &verdict.accepted {
            let xml = render(&a.message);
            if let Err(e) = parse_xml(&xml) {
                panic!(
                    "rendered XML is not well-formed ({e}):\n{}",
                    String::from_utf8_lossy(&xml)
                );
            }
        }
    }
});
