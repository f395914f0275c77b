//! Any result file Turnkey or the platform writes back (SummaryResult, ProcessResult, ACK,
//! ERROR, DailySummary), through the same parser the feedback tracker uses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnbridge::turnkey::results::{parse, parse_xml, ResultFile};

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    if parsed.is_ok() {
        assert!(parse_xml(data).is_ok());
    }
    if let Ok(ResultFile::Summary(s)) = parsed {
        for m in &s.messages {
            let _ = m.counts_agree();
            if let Some(d) = m.date() {
                assert!(d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
});
