//! States and kinds the store keeps as text: one enum per column, one spelling per variant.
//!
//! Hand-written rather than taken from a crate (strum): one short macro gives the spelling,
//! `Display`, `FromStr`, serde and rusqlite's `ToSql`/`FromSql` in one place, and a value the
//! code does not know is a read error naming what it is not, never a guess.

use thiserror::Error;

/// A text that is none of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{value:?} is not a {what} (one of: {})", known.join(", "))]
pub struct Unknown {
    pub what: &'static str,
    pub value: String,
    pub known: &'static [&'static str],
}

/// Defines an enum stored as text: `text_enum! { "what it is" pub enum Name { A = "a", ... } }`.
macro_rules! text_enum {
    (
        $what:literal
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling kept in the store and shown to people.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::store::text::Unknown;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::store::text::Unknown {
                        what: $what,
                        value: s.to_string(),
                        known: &[$($text),+],
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::Borrowed(
                    rusqlite::types::ValueRef::Text(self.as_str().as_bytes()),
                ))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                v.as_str()?
                    .parse()
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    text_enum! {
        "colour"
        /// A test enum.
        pub enum Colour { Red = "red", DarkBlue = "dark blue" }
    }

    #[test]
    fn every_spelling_round_trips_through_text_and_sqlite() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (v TEXT)").unwrap();
        for v in Colour::ALL {
            assert_eq!(v.to_string().parse::<Colour>().unwrap(), *v);
            c.execute("INSERT INTO t (v) VALUES (?1)", [v]).unwrap();
        }
        let stored: Vec<String> = c
            .prepare("SELECT v FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, ["red", "dark blue"]);
        assert_eq!(
            serde_json::to_string(&Colour::DarkBlue).unwrap(),
            "\"dark blue\""
        );
    }

    #[test]
    fn an_unknown_spelling_is_an_error_naming_the_known_ones() {
        let e = "green".parse::<Colour>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"green\" is not a colour (one of: red, dark blue)"
        );
        let c = Connection::open_in_memory().unwrap();
        let read = c.query_row("SELECT 'green'", [], |r| r.get::<_, Colour>(0));
        assert!(read.is_err(), "{read:?}");
    }
}
