//! A point in time as the store keeps it: UTC, RFC 3339 with milliseconds
//! (`2026-12-01T00:00:00.000Z`). In that one spelling text order is time order, so SQL
//! compares and indexes the columns as text; a time given with any other offset is turned
//! into it before it is compared.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A UTC time to the millisecond, the precision the store keeps (so a value read back equals
/// the value written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// A text that is not an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time (e.g. 2026-12-01T08:00:00+08:00)")]
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

    /// An RFC 3339 time with any offset (`Z`, `+08:00`, ...).
    pub fn parse(s: &str) -> Result<Timestamp, NotATime> {
        DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Timestamp::from_utc(t.with_timezone(&Utc)))
            .map_err(|_| NotATime(s.to_string()))
    }

    pub fn utc(self) -> DateTime<Utc> {
        self.0
    }

    /// This time moved by `d` (earlier when negative).
    pub fn plus(self, d: chrono::Duration) -> Timestamp {
        Timestamp::from_utc(self.0 + d)
    }
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
