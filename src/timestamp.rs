//! A point in time read from outside (a query, a request body, a command-line flag).
//!
//! [`Timestamp`] reads RFC 3339 with any UTC offset and always writes the store's own form
//! (UTC, milliseconds, `Z`), so a bound given as `2026-12-01T08:00:00+08:00` compares with
//! stored times as the instant it names (00:00Z), never as the text it was written in.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{ToSql, ToSqlOutput};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// An instant, held in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// Text that is not an RFC 3339 time with an offset.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{given:?} is not an RFC 3339 time with an offset (e.g. 2026-12-01T08:00:00+08:00 or 2026-12-01T00:00:00Z)")]
pub struct BadTimestamp {
    given: String,
}

impl Timestamp {
    pub fn from_utc(t: DateTime<Utc>) -> Timestamp {
        Timestamp(t)
    }

    pub fn utc(&self) -> DateTime<Utc> {
        self.0
    }
}

impl FromStr for Timestamp {
    type Err = BadTimestamp;

    /// RFC 3339 with any offset. A `+` offset whose `+` arrived as a space (a query string
    /// written by hand, where an unencoded `+` means a space) is read as the `+` it was.
    fn from_str(s: &str) -> Result<Timestamp, BadTimestamp> {
        let s = s.trim();
        let parsed = DateTime::parse_from_rfc3339(s).or_else(|e| match plus_lost_as_space(s) {
            Some(fixed) => DateTime::parse_from_rfc3339(&fixed),
            None => Err(e),
        });
        parsed
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(|_| BadTimestamp {
                given: crate::einvoice::printable(s, 64),
            })
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
    /// The store's form: `2026-12-01T00:00:00.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
