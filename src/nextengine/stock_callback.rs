//! NextEngine's 在庫連携 stock callback: `GET …/UpdateStock.php?StoreAccount=…&Code=…&Stock=…&ts=…&.sig=…`.
//!
//! The signature is what NextEngine's manual publishes (research notes §3): the lowercase hex
//! MD5 of `StoreAccount=<a>&Code=<c>&Stock=<s>&ts=<ts>` in that fixed order (not
//! alphabetical) with the shop's auth key appended directly. `Stock` is signed as the raw
//! string, empty included (made-to-order goods). `ts` is `YYYYMMDDhhmmss` (the first manual
//! revision used `YYYYMMDDhhmm`), Japan time, and NextEngine sets it about one day *after*
//! the send time, so the accepted window reaches well into the future. The reply is EUC-JP
//! XML; NextEngine counts only `<Processed>0</Processed>` as success.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use encoding_rs::EUC_JP;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::einvoice::archive::hex;

/// The query of one callback, with the keys NextEngine sends (`.sig` keeps its dot).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StockQuery {
    pub store_account: Option<String>,
    pub code: Option<String>,
    pub stock: Option<String>,
    pub ts: Option<String>,
    pub sig: Option<String>,
    /// The signed values as the bytes NextEngine sent (percent-decoded), so a code sent in
    /// EUC-JP is signed as EUC-JP, not as its UTF-8 reading.
    raw: [Vec<u8>; 4],
}

impl StockQuery {
    /// Parses a raw query string (percent-decoding each value). `_sig` is read as `.sig`,
    /// as PHP-style proxies rename it.
    pub fn parse(query: &str) -> StockQuery {
        let mut q = StockQuery::default();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (key, bytes) = (text(decode_bytes(k)), decode_bytes(v));
            let slot = match key.as_str() {
                "StoreAccount" => Some((0, &mut q.store_account)),
                "Code" => Some((1, &mut q.code)),
                "Stock" => Some((2, &mut q.stock)),
                "ts" => Some((3, &mut q.ts)),
                ".sig" | "_sig" => {
                    q.sig = Some(text(bytes.clone()));
                    None
                }
                _ => None,
            };
            if let Some((i, field)) = slot {
                *field = Some(text(bytes.clone()));
                q.raw[i] = bytes;
            }
        }
        q
    }

    /// NextEngine's 接続を確認 button sends no parameters at all.
    pub fn is_connection_check(&self) -> bool {
        *self == StockQuery::default()
    }
}

/// Splits `a=1&b=2` into decoded pairs (`+` is a space, `%XX` a byte).
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (text(decode_bytes(k)), text(decode_bytes(v)))
        })
        .collect()
}

/// Reads decoded bytes as text: UTF-8, or EUC-JP (NextEngine is a Japanese system).
fn text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => EUC_JP.decode(e.as_bytes()).0.into_owned(),
    }
}

fn decode_bytes(s: &str) -> Vec<u8> {
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hexval(b[i + 1]), hexval(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The signature NextEngine computes for a callback.
pub fn signature(store_account: &str, code: &str, stock: &str, ts: &str, auth_key: &str) -> String {
    signature_bytes(
        store_account.as_bytes(),
        code.as_bytes(),
        stock.as_bytes(),
        ts.as_bytes(),
        auth_key,
    )
}

/// [`signature`] over the bytes as received.
pub fn signature_bytes(
    account: &[u8],
    code: &[u8],
    stock: &[u8],
    ts: &[u8],
    auth_key: &str,
) -> String {
    let mut m = Md5::new();
    for part in [
        b"StoreAccount=".as_slice(),
        account,
        b"&Code=",
        code,
        b"&Stock=",
        stock,
        b"&ts=",
        ts,
        auth_key.as_bytes(),
    ] {
        m.update(part);
    }
    hex(&m.finalize())
}

/// Compares a received signature with the expected one in constant time.
pub fn signature_matches(expected: &str, received: &str) -> bool {
    let received = received.to_ascii_lowercase();
    let padded = |s: &str| {
        let mut b = [0u8; 32];
        let n = s.len().min(32);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        b
    };
    // Both sides are fixed-size, so the comparison takes the same time whatever was sent.
    received.len() == 32 && bool::from(padded(expected).ct_eq(&padded(&received)))
}

/// Parses `ts` (`YYYYMMDDhhmmss` or `YYYYMMDDhhmm`) in the given offset.
pub fn parse_ts(ts: &str, offset: FixedOffset) -> Option<DateTime<Utc>> {
    if !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let naive = match ts.len() {
        14 => NaiveDateTime::parse_from_str(ts, "%Y%m%d%H%M%S").ok()?,
        12 => NaiveDateTime::parse_from_str(&format!("{ts}00"), "%Y%m%d%H%M%S").ok()?,
        _ => return None,
    };
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Why a callback is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing(&'static str),
    UnknownShop,
    BadSignature,
    BadTs,
    TsOutsideWindow,
    Replayed,
    BadStock,
}

impl Refusal {
    pub fn reason(&self) -> String {
        match self {
            Refusal::Missing(p) => format!("parameter {p} is missing"),
            Refusal::UnknownShop => "StoreAccount is not a configured shop".into(),
            Refusal::BadSignature => "the signature does not match".into(),
            Refusal::BadTs => "ts is not YYYYMMDDhhmmss".into(),
            Refusal::TsOutsideWindow => "ts is outside the accepted window".into(),
            Refusal::Replayed => "this ts and signature were already used".into(),
            Refusal::BadStock => "Stock is not a whole number".into(),
        }
    }

    /// Whether the refusal is about authenticity (counted as a signature failure).
    pub fn is_signature(&self) -> bool {
        matches!(
            self,
            Refusal::Missing(".sig") | Refusal::BadSignature | Refusal::UnknownShop
        )
    }
}

/// A verified stock level.
#[derive(Debug, Clone, PartialEq)]
pub struct StockUpdate {
    pub store_account: String,
    pub code: String,
    /// `None` for an empty `Stock` (made-to-order or unlimited reserved goods).
    pub stock: Option<i64>,
    pub ts: String,
    pub sig: String,
}

/// A shop as configured: its account and the auth key the signature uses.
pub trait ShopKeys {
    fn auth_key(&self, store_account: &str) -> Option<&str>;
}

/// Verifies a callback: parameters present, shop known, signature, `ts` window.
/// The replay check needs the store and is the caller's.
pub fn verify(
    q: &StockQuery,
    shops: &dyn ShopKeys,
    now: DateTime<Utc>,
    offset: FixedOffset,
    max_age: chrono::Duration,
    max_ahead: chrono::Duration,
) -> Result<StockUpdate, Refusal> {
    let account = q
        .store_account
        .as_deref()
        .ok_or(Refusal::Missing("StoreAccount"))?;
    let code = q.code.as_deref().ok_or(Refusal::Missing("Code"))?;
    let stock = q.stock.as_deref().ok_or(Refusal::Missing("Stock"))?;
    let ts = q.ts.as_deref().ok_or(Refusal::Missing("ts"))?;
    let sig = q.sig.as_deref().ok_or(Refusal::Missing(".sig"))?;
    let key = shops.auth_key(account).ok_or(Refusal::UnknownShop)?;
    let [a, c, st, t] = &q.raw;
    if !signature_matches(&signature_bytes(a, c, st, t, key), sig) {
        return Err(Refusal::BadSignature);
    }
    let at = parse_ts(ts, offset).ok_or(Refusal::BadTs)?;
    if at < now - max_age || at > now + max_ahead {
        return Err(Refusal::TsOutsideWindow);
    }
    let stock = match stock.trim() {
        "" => None,
        s => Some(s.parse::<i64>().map_err(|_| Refusal::BadStock)?),
    };
    Ok(StockUpdate {
        store_account: account.to_string(),
        code: code.to_string(),
        stock,
        ts: ts.to_string(),
        sig: sig.to_ascii_lowercase(),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The reply NextEngine expects, encoded in EUC-JP. `processed` is 0 for an accepted update,
/// -2 for a bad request, -3 for an internal error.
pub fn reply(q: &StockQuery, processed: i32) -> Vec<u8> {
    let arg = |name: &str, v: &Option<String>| {
        format!(
            "<Argument Name=\"{name}\" Value=\"{}\" />\n",
            esc(v.as_deref().unwrap_or(""))
        )
    };
    let text = format!(
        "<?xml version=\"1.0\" encoding=\"EUC-JP\"?>\n<ShoppingUpdateStock version=\"1.0\">\n<ResultSet TotalResult=\"1\">\n<Request>\n{}{}{}{}{}</Request>\n<Result No=\"1\">\n<Processed>{processed}</Processed>\n</Result>\n</ResultSet>\n</ShoppingUpdateStock>\n",
        arg("StoreAccount", &q.store_account),
        arg("Code", &q.code),
        arg("Stock", &q.stock),
        arg("ts", &q.ts),
        arg(".sig", &q.sig),
    );
    EUC_JP.encode(&text).0.into_owned()
}

/// Keeps refused callbacks cheap: anyone can send them, as fast as they like. In each window
/// of [`RefusalGate::WINDOW`] the first [`RefusalGate::DETAILED`] refusals are logged and
/// stored in full (escaped and cut short); the rest are only counted (metrics always count
/// them all), and the count is logged once as a summary when the window ends. So a flood of
/// forged requests costs at most a fixed number of rows and log lines a minute.
#[derive(Debug, Default)]
pub struct RefusalGate {
    state: std::sync::Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    window_start: Option<std::time::Instant>,
    in_window: u64,
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// Log it and store its row.
    pub detailed: bool,
    /// Refusals of the window that just ended that were only counted: log this summary.
    pub suppressed_before: u64,
}

impl Admit {
    /// Logs the summary of the refusals only counted in the window that just ended, if any;
    /// `what` names them and where they are counted.
    pub fn log_suppressed(&self, what: &str) {
        if self.suppressed_before > 0 {
            tracing::warn!(
                "{} more {what} in the last {} s",
                self.suppressed_before,
                RefusalGate::WINDOW.as_secs()
            );
        }
    }
}

impl RefusalGate {
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
    pub const DETAILED: u64 = 20;

    /// Accounts for one refusal at `now`.
    pub fn admit(&self, now: std::time::Instant) -> Admit {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut suppressed_before = 0;
        let expired = st
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Self::WINDOW);
        if expired {
            suppressed_before = st.in_window.saturating_sub(Self::DETAILED);
            st.window_start = Some(now);
            st.in_window = 0;
        }
        st.in_window += 1;
        Admit {
            detailed: st.in_window <= Self::DETAILED,
            suppressed_before,
        }
    }
}

#[cfg(test)]
mod gate_tests {
    use super::RefusalGate;
    use std::time::{Duration, Instant};

    #[test]
    fn a_flood_of_refusals_is_stored_and_logged_a_bounded_number_of_times() {
        let gate = RefusalGate::default();
        let t0 = Instant::now();
        let detailed = (0..10_000)
            .filter(|i| gate.admit(t0 + Duration::from_micros(*i)).detailed)
            .count() as u64;
        assert_eq!(detailed, RefusalGate::DETAILED);
        // The next window starts afresh and reports what the last one only counted.
        let next = gate.admit(t0 + RefusalGate::WINDOW + Duration::from_secs(1));
        assert!(next.detailed);
        assert_eq!(next.suppressed_before, 10_000 - RefusalGate::DETAILED);
        let after = gate.admit(t0 + RefusalGate::WINDOW + Duration::from_secs(2));
        assert_eq!(after.suppressed_before, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One;
    impl ShopKeys for One {
        fn auth_key(&self, a: &str) -> Option<&str> {
            (a == "samplestore").then_some("aaa")
        }
    }

    #[test]
    fn published_vectors() {
        let tsv = include_str!("../../tests/data/updatestock_signature_vectors.tsv");
        for line in tsv.lines().skip(1) {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(signature(f[0], f[1], f[2], f[3], f[4]), f[5], "{line}");
        }
        // Alphabetical order (a bug seen in the wild) must not match the manual's sample.
        let alpha = hex(&Md5::digest(
            b"Code=test-aaa&Stock=10&StoreAccount=samplestore&ts=201801150830aaa",
        ));
        assert_ne!(alpha, "6a4812f93d36aece5559a9c271fab5a2");
    }

    #[test]
    fn query_keeps_the_dot_of_sig_and_decodes() {
        let q = StockQuery::parse("StoreAccount=samplestore&Code=a%2Bb+c&Stock=&ts=1&.sig=X");
        assert_eq!(q.code.as_deref(), Some("a+b c"));
        assert_eq!(q.stock.as_deref(), Some(""));
        assert_eq!(q.sig.as_deref(), Some("X"));
        assert!(StockQuery::parse("").is_connection_check());
    }

    #[test]
    fn window_allows_a_day_ahead() {
        let jst = FixedOffset::east_opt(9 * 3600).unwrap();
        let now = Utc::now();
        let ts = (now + chrono::Duration::hours(24))
            .with_timezone(&jst)
            .format("%Y%m%d%H%M%S")
            .to_string();
        let sig = signature("samplestore", "test-aaa", "", &ts, "aaa");
        let q = StockQuery::parse(&format!(
            "StoreAccount=samplestore&Code=test-aaa&Stock=&ts={ts}&.sig={sig}"
        ));
        let hour = chrono::Duration::hours(1);
        let u = verify(&q, &One, now, jst, hour, chrono::Duration::hours(26)).unwrap();
        assert_eq!(u.stock, None);
        let late = now + chrono::Duration::hours(30);
        assert_eq!(
            verify(&q, &One, late, jst, hour, hour),
            Err(Refusal::TsOutsideWindow)
        );
        let bad = StockQuery::parse(&format!(
            "StoreAccount=samplestore&Code=test-bbb&Stock=&ts={ts}&.sig={sig}"
        ));
        assert_eq!(
            verify(&bad, &One, now, jst, hour, hour * 26),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_code_sent_in_euc_jp_is_signed_as_sent() {
        let (euc, _, _) = EUC_JP.encode("商品");
        let pct: String = euc.iter().map(|b| format!("%{b:02X}")).collect();
        let sig = signature_bytes(b"samplestore", &euc, b"1", b"20180115083010", "aaa");
        let q = StockQuery::parse(&format!(
            "StoreAccount=samplestore&Code={pct}&Stock=1&ts=20180115083010&.sig={sig}"
        ));
        assert_eq!(q.code.as_deref(), Some("商品"));
        let jst = FixedOffset::east_opt(9 * 3600).unwrap();
        let at = parse_ts("20180115083010", jst).unwrap();
        let hour = chrono::Duration::hours(1);
        assert!(verify(&q, &One, at, jst, hour, hour).is_ok());
    }

    #[test]
    fn reply_is_euc_jp_and_escaped() {
        let q = StockQuery {
            code: Some("商品<1>".into()),
            ..StockQuery::default()
        };
        let bytes = reply(&q, 0);
        let (text, _, bad) = EUC_JP.decode(&bytes);
        assert!(!bad);
        assert!(text.contains("Value=\"商品&lt;1&gt;\""));
        assert!(text.starts_with(
            "<?xml version=\"1.0\" encoding=\"EUC-JP\"?>\n<ShoppingUpdateStock version=\"1.0\">"
        ));
        assert_ne!(bytes, text.as_bytes(), "non-ASCII is EUC-JP, not UTF-8");
    }
}
