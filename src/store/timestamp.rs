//! A point in time as the store keeps it: UTC, RFC 3339 with milliseconds
//! (`2026-12-01T00:00:00.000Z`). In that one spelling text order is time order, so SQL
//! compares and indexes the columns as text; a time given with any other offset (a query, a
//! request body, a command-line flag) is turned into it before it is compared, so a bound
//! given as `2026-12-01T08:00:00+08:00` means the instant it names (00:00Z), never the text
//! it was written in.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A UTC time to the millisecond, the precision the store keeps (so a value read back equals
/// the value written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// A text that is not an RFC 3339 time with an offset (kept cut short and printable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time with an offset (e.g. 2026-12-01T08:00:00+08:00 or 2026-12-01T00:00:00Z)")]
pub struct NotATime(pub String);

impl Timestamp {
    /// Now, to the millisecond.
    pub fn now() -> Timestamp {
        Timestamp::from_utc(Utc::now())
    }

    /// `t` cut to the millisecond.
    pub fn from_utc(t: DateTime<Utc>) -> Timestamp {
        Timestamp(DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t))
    }

    /// An RFC 3339 time with any offset (`Z`, `+08:00`, ...). A `+` offset whose `+`
    /// arrived as a space (a query string written by hand, where an unencoded `+` means a
    /// space) is read as the `+` it was.
    pub fn parse(s: &str) -> Result<Timestamp, NotATime> {
        let s = s.trim();
        DateTime::parse_from_rfc3339(s)
            .or_else(|e| match plus_lost_as_space(s) {
                Some(fixed) => DateTime::parse_from_rfc3339(&fixed),
                None => Err(e),
            })
            .map(|t| Timestamp::from_utc(t.with_timezone(&Utc)))
            .map_err(|_| NotATime(crate::einvoice::printable(s, 64)))
    }

    pub fn utc(self) -> DateTime<Utc> {
        self.0
    }

    /// This time moved by `d` (earlier when negative).
    pub fn plus(self, d: chrono::Duration) -> Timestamp {
        Timestamp::from_utc(self.0 + d)
    }
}

/// `…T08:00:00 08:00` → `…T08:00:00+08:00`: only a space right before a final `HH:MM`.
fn plus_lost_as_space(s: &str) -> Option<String> {
    let (head, tail) = s.rsplit_once(' ')?;
    let offset = tail.as_bytes();
    let looks_like_offset = offset.len() == 5
        && offset[2] == b':'
        && [0, 1, 3, 4].iter().all(|&i| offset[i].is_ascii_digit());
    (looks_like_offset && head.contains(':')).then(|| format!("{head}+{tail}"))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl FromStr for Timestamp {
    type Err = NotATime;
    fn from_str(s: &str) -> Result<Timestamp, NotATime> {
        Timestamp::parse(s)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

impl FromSql for Timestamp {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Timestamp::parse(v.as_str()?).map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_offset_becomes_the_stores_utc_spelling() {
        let t = Timestamp::parse("2026-12-01T08:00:00+08:00").unwrap();
        assert_eq!(t.to_string(), "2026-12-01T00:00:00.000Z");
        assert_eq!(
            Timestamp::parse(" 2026-12-01T00:00:00.123456Z")
                .unwrap()
                .to_string(),
            "2026-12-01T00:00:00.123Z"
        );
        assert!(Timestamp::parse("2026-12-01 00:00:00").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
    }

    fn ts(s: &str) -> String {
        s.parse::<Timestamp>().unwrap().to_string()
    }

    #[test]
    fn any_offset_means_the_instant_it_names() {
        assert_eq!(ts("2026-12-01T08:00:00+08:00"), "2026-12-01T00:00:00.000Z");
        assert_eq!(ts("2026-11-30T19:00:00-05:00"), "2026-12-01T00:00:00.000Z");
        assert_eq!(ts("2026-12-01T00:00:00Z"), "2026-12-01T00:00:00.000Z");
        assert_eq!(ts("2026-12-01t00:00:00.250z"), "2026-12-01T00:00:00.250Z");
        assert_eq!(ts("2026-12-01 09:00:00+09:00"), "2026-12-01T00:00:00.000Z");
    }

    #[test]
    fn a_plus_decoded_as_a_space_is_read_back() {
        assert_eq!(ts("2026-12-01T08:00:00 08:00"), "2026-12-01T00:00:00.000Z");
        assert!("2026-12-01 08:00".parse::<Timestamp>().is_err());
    }

    #[test]
    fn text_without_an_offset_is_refused_with_what_was_given() {
        for bad in ["2026-12-01T08:00:00", "2026-12-01", "yesterday", ""] {
            let e = bad.parse::<Timestamp>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn order_is_the_instants_not_the_texts() {
        let a: Timestamp = "2026-12-01T08:00:00+08:00".parse().unwrap();
        let b: Timestamp = "2026-12-01T00:30:00Z".parse().unwrap();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        let from_json: Timestamp = serde_json::from_str("\"2026-12-01T08:00:00+08:00\"").unwrap();
        assert_eq!(from_json, a);
    }

    #[test]
    fn a_time_read_back_from_sqlite_equals_the_one_written_and_orders_as_text() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let now = Timestamp::now();
        let later = now.plus(chrono::Duration::milliseconds(1));
        let back: Timestamp = c.query_row("SELECT ?1", [now], |r| r.get(0)).unwrap();
        assert_eq!(back, now);
        let before: bool = c
            .query_row("SELECT ?1 < ?2", [now, later], |r| r.get(0))
            .unwrap();
        assert!(before);
        assert_eq!(
            serde_json::to_string(&now).unwrap(),
            format!("\"{now}\""),
            "shown as stored"
        );
    }
}
