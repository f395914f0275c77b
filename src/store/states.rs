//! The states a message and a job go through, as types: stored as the same text as ever
//! (`ToSql`/`FromSql`), shown with `Display`, and matched exhaustively, so a new state is
//! handled everywhere or nowhere compiles. Text that names no state is a database error, not a
//! state taken on trust.
//!
//! A message: `validated → queued → picked_up → acked | error`. States move forward only; of
//! the two final ones neither changes into the other, except a final state turnbridge only
//! guessed ([`Basis::Guess`]), which a verdict naming the invoice overrules.
//!
//! A job (one claimed file): `claimed → done | rejected | duplicate`.

/// A closed set of states stored as text. Hand-written rather than derived (e.g. with
/// `strum`): a few lines, and the text of each state is the database's, spelled once here.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The text stored for it.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "{} is not a {} ({})",
                        crate::einvoice::printable(other, 40),
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: String| rusqlite::types::FromSqlError::Other(e.into()))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use text_enum;

text_enum! {
    /// Where an e-invoice message is on its way to the platform.
    pub enum MessageState {
        /// Read, checked and recorded with its rendered XML; not yet handed to Turnkey.
        Validated = "validated",
        /// Its XML is in Turnkey's pickup folder.
        Queued = "queued",
        /// Turnkey took its XML (it left the pickup folder, or is in Turnkey's BAK).
        PickedUp = "picked_up",
        /// Accepted by the platform (final).
        Acked = "acked",
        /// Refused by Turnkey or the platform (final).
        Error = "error",
    }
}

impl MessageState {
    /// The states of messages still waiting for a verdict.
    pub const WAITING: [MessageState; 3] = [
        MessageState::Validated,
        MessageState::Queued,
        MessageState::PickedUp,
    ];

    /// The final states.
    pub const FINAL: [MessageState; 2] = [MessageState::Acked, MessageState::Error];

    /// How far along the way a state is; the two final states rank the same.
    pub const fn rank(self) -> u8 {
        match self {
            MessageState::Validated => 0,
            MessageState::Queued => 1,
            MessageState::PickedUp => 2,
            MessageState::Acked | MessageState::Error => 3,
        }
    }

    pub const fn is_final(self) -> bool {
        match self {
            MessageState::Acked | MessageState::Error => true,
            MessageState::Validated | MessageState::Queued | MessageState::PickedUp => false,
        }
    }

    /// The state as events name it (`QUEUED`, `PICKED_UP`, …).
    pub const fn status(self) -> &'static str {
        match self {
            MessageState::Validated => "VALIDATED",
            MessageState::Queued => "QUEUED",
            MessageState::PickedUp => "PICKED_UP",
            MessageState::Acked => "ACKED",
            MessageState::Error => "ERROR",
        }
    }

    /// Whether a message in this state, its final state `guessed` or not, may move to `to` on
    /// a claim evidenced by `basis`: forward only; a final state changes into the other only
    /// when it was guessed and the claim names the message.
    pub fn allows(self, to: MessageState, guessed: bool, basis: Basis) -> bool {
        to.rank() > self.rank()
            || (self.is_final() && to.is_final() && to != self && guessed && basis == Basis::Named)
    }
}

text_enum! {
    /// Where a job (one claimed e-invoice file) is.
    pub enum JobState {
        /// Taken from the spool into `work/`; being processed (or to be resumed).
        Claimed = "claimed",
        /// Processed: its messages recorded and queued, rejected rows reported.
        Done = "done",
        /// Refused as a whole (unreadable, not a batch, set aside).
        Rejected = "rejected",
        /// The same bytes as a file processed before.
        Duplicate = "duplicate",
    }
}

impl JobState {
    /// Finished: only the move out of `work/` may be left.
    pub const fn is_finished(self) -> bool {
        match self {
            JobState::Claimed => false,
            JobState::Done | JobState::Rejected | JobState::Duplicate => true,
        }
    }
}

text_enum! {
    /// Where a recorded transition starts: a message state, or `received` for a message's
    /// first transition (it was read from its file).
    pub enum TransitionFrom {
        Received = "received",
        Validated = "validated",
        Queued = "queued",
        PickedUp = "picked_up",
        Acked = "acked",
        Error = "error",
    }
}

impl From<MessageState> for TransitionFrom {
    fn from(s: MessageState) -> TransitionFrom {
        match s {
            MessageState::Validated => TransitionFrom::Validated,
            MessageState::Queued => TransitionFrom::Queued,
            MessageState::PickedUp => TransitionFrom::PickedUp,
            MessageState::Acked => TransitionFrom::Acked,
            MessageState::Error => TransitionFrom::Error,
        }
    }
}

/// How a claim about a message is evidenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// A file, a folder move or a result naming the message (or every message of its upload,
    /// as a ProcessResult's Code `00000` does).
    Named,
    /// turnbridge's inference: a ProcessResult error naming no document is taken for every
    /// document of its upload. A final state reached so is overruled by a verdict naming the
    /// invoice, and never overrules one.
    Guess,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_what_they_store_and_refuse_other_text() {
        for s in MessageState::ALL {
            assert_eq!(s.as_str().parse::<MessageState>(), Ok(*s));
            assert_eq!(
                TransitionFrom::from(*s).as_str(),
                s.as_str(),
                "a transition from a state stores the state's text"
            );
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
        }
        let e = "acked\n".parse::<MessageState>().unwrap_err();
        assert!(
            e.contains("acked\\n") && e.contains("validated, queued"),
            "{e}"
        );
        assert!("received".parse::<MessageState>().is_err());
    }

    #[test]
    fn a_state_in_the_database_that_is_none_is_an_error() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let ok: MessageState = conn
            .query_row("SELECT ?1", [MessageState::PickedUp], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, MessageState::PickedUp);
        let bad = conn.query_row("SELECT 'lost'", [], |r| r.get::<_, MessageState>(0));
        assert!(bad.is_err(), "{bad:?}");
    }

    #[test]
    fn messages_move_forward_and_only_a_guess_is_overruled() {
        use MessageState::*;
        let named = Basis::Named;
        assert!(Validated.allows(Queued, false, named));
        assert!(
            Validated.allows(Acked, false, named),
            "published before a stop"
        );
        assert!(Queued.allows(PickedUp, false, named));
        assert!(PickedUp.allows(Error, false, Basis::Guess));
        assert!(!Queued.allows(Validated, false, named), "never back");
        assert!(
            !PickedUp.allows(PickedUp, false, named),
            "no step to itself"
        );
        assert!(!Acked.allows(Error, false, named), "a verdict stands");
        assert!(!Acked.allows(Acked, true, named));
        assert!(
            Error.allows(Acked, true, named),
            "a named verdict overrules a guess"
        );
        assert!(
            !Error.allows(Acked, true, Basis::Guess),
            "a guess never does"
        );
        assert!(!Acked.allows(PickedUp, true, named));
        assert_eq!(Acked.status(), "ACKED");
        assert_eq!(
            MessageState::WAITING.len() + MessageState::FINAL.len(),
            MessageState::ALL.len()
        );
    }
}
