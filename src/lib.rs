//! turnbridge: the small, trusted box between a merchant's file drops and the MOF e-invoice
//! Turnkey gateway.
//!
//! # A tour
//!
//! A file arrives in `spool/einvoice/` and is noticed by [`spool`] (change notifications plus
//! rescans), which waits until it is complete and claims it by renaming it into `work/`.
//! [`pipeline`] then takes it top to bottom: [`einvoice`] reads it (CSV, JSON, ZIP; UTF-8 or
//! Big5), builds typed MIG 4.1 messages (legacy A/B/C/D codes normalized to F/G) and checks
//! every field and rule; [`store`] records each accepted message once; [`turnkey`] writes its
//! XML into a staging folder and renames it into Turnkey's pickup folder; the store marks it
//! queued and writes the events it raises in the same transaction; the source file is
//! archived, and rejected rows land in `rejected/` beside a report.
//!
//! After that, [`turnkey::feedback`] follows each message through Turnkey's folders and
//! results (`queued → picked_up → acked | error`), and [`report`] shows it to operators.
//!
//! Beside the spool, [`http`] is the embedded listener: NextEngine's stock callback
//! ([`nextengine::stock_callback`]), the company system's webhook ([`webhook::inbound`]),
//! monitoring routes and [`metrics`]; [`listener`] decides which connections it holds and
//! closes the ones that stall.
//!
//! Trouble the daemon retries on its own (a full disk, a receiver that is down) is logged and
//! kept in [`health`] until it clears, for `turnbridge status` and `/healthz`.
//!
//! [`daemon`] runs this on one worker thread and handles signals and systemd; [`supervisor`]
//! starts every long-running task, gives it the live configuration and watches it; [`config`] is
//! the TOML schema; [`cli`] the command line; [`durable`] the crash-safe file operations the
//! rest is built on, and [`limited`] the bounded reads of files others control. [`retention`]
//! keeps every table bounded, and [`filemode`] keeps what turnbridge writes from other users.

pub mod backup;
pub mod cli;
pub mod config;
pub mod corrections;
pub mod daemon;
pub mod durable;
pub mod einvoice;
pub mod events;
pub mod filemode;
pub mod health;
pub mod http;
pub mod limited;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod nextengine;
pub mod pipeline;
pub mod report;
pub mod retention;
pub mod spool;
pub mod store;
pub mod supervisor;
pub mod turnkey;
pub mod webhook;
