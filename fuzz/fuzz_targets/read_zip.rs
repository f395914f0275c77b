//! ZIP batches with the shipped limits: the archive reader, then each member through the
//! whole check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnbridge::config::Config;
use turnbridge::einvoice::archive::read_zip;
use turnbridge::einvoice::check_batch;

fuzz_target!(|data: &[u8]| {
    let opts = Config::default().read_options();
    let Ok((members, _refused)) = read_zip(data, opts.zip) else {
        return;
    };
    let total: u64 = members.iter().map(|m| m.bytes.len() as u64).sum();
    assert!(total <= opts.zip.max_total_bytes);
    assert!(members.len() <= opts.zip.max_members);
    let _ = check_batch("fuzz.zip", data, &opts);
});
