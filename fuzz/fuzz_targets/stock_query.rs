//! NextEngine's UpdateStock query: parsing, the form splitter, verification (with a signature
//! made to match, so the checks after it are reached) and the EUC-JP reply.
#![no_main]

use chrono::{DateTime, Duration, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use turnbridge::config::Config;
use turnbridge::nextengine::stock_callback::{
    form_pairs, parse_ts, reply, signature, verify, Refusal, ShopKeys, StockQuery,
};

/// Every shop is known, so verification goes past the shop lookup.
struct AnyShop;

impl ShopKeys for AnyShop {
    fn auth_key(&self, _store_account: &str) -> Option<&str> {
        Some("fuzz-auth-key")
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let _ = form_pairs(query);
    let q = StockQuery::parse(query);
    let _ = q.is_connection_check();
    let _ = reply(&q, -2);

    let ne = Config::default().nextengine;
    let offset = ne.offset();
    let max_age = Duration::seconds(ne.ts_max_age_secs as i64);
    let max_ahead = Duration::seconds(ne.ts_max_ahead_secs as i64);
    let fixed: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 26, 1, 0, 0).unwrap();
    let _ = verify(&q, &AnyShop, fixed, offset, max_age, max_ahead);

    // Sign what was parsed and verify again, at the time `ts` names when it is one.
    let (Some(a), Some(c), Some(s), Some(t)) = (&q.store_account, &q.code, &q.stock, &q.ts) else {
        return;
    };
    let sig = signature(a, c, s, t, "fuzz-auth-key");
    let signed = StockQuery::parse(&format!("{query}&.sig={sig}"));
    let now = parse_ts(t, offset).unwrap_or(fixed);
    let verdict = verify(&signed, &AnyShop, now, offset, max_age, max_ahead);
    // Plain ASCII without escapes is signed byte for byte as it reads.
    let plain = query.bytes().all(|b| b.is_ascii() && b != b'%');
    if plain {
        assert_ne!(verdict, Err(Refusal::BadSignature), "{query:?}");
    }
    if let Ok(u) = verdict {
        assert_eq!(u.sig, sig);
        let _ = reply(&signed, 0);
    }
});
