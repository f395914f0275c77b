//! Corrections: an invoice's later life after its first message.
//!
//! - **Generations.** A message the platform refused (`error`) may be sent again: a corrected
//!   drop of the same document, or `turnbridge invoice resend` (the same document again). Each
//!   is a new row, the next *generation* of the message (unique by type, seller, number and
//!   generation), with an XML name of its own (from its row id, never reused); the earlier
//!   ones stay on record and in `turnbridge history`. A message accepted (`acked`) or still on
//!   its way is never replaced.
//! - **Sequences.** Cancels, voids, allowances and their cancels are admitted only in the
//!   order the MIG allows ([`crate::einvoice::sequence`]); a voided invoice may be issued again
//!   with the same number.
//! - **Manual commands** ([`manual`]): an operator cancels, voids, re-issues or resends from
//!   what the store knows; the command writes the message as a JSON batch into the spool, so
//!   it takes the same way as any dropped file, and the job that takes it raises
//!   `invoice.manual.cancelled` or `invoice.manual.issued`.
//!
//! [`admit`] is what the pipeline asks for each checked message before recording it.

mod admit;
pub mod command;
pub mod manual;

pub use admit::{admit, announce, facts, Admit};
