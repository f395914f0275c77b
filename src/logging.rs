//! Logging: readable text on stderr, or the journal with structured fields under systemd.
//!
//! Span and event fields become journal fields in upper case (`job_id` → `JOB_ID`,
//! `invoice_no` → `INVOICE_NO`), so `journalctl -u turnbridge INVOICE_NO=AB12345678` finds one
//! invoice's story. The level can be changed by a reload.

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{Log, LogFormat};

/// Changes the log level after start-up (on reload).
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    pub fn set_level(&self, level: &str) {
        let _ = self.0.modify(|f| *f = filter(level));
    }
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level))
}

/// Whether stderr is connected to the journal (systemd sets `JOURNAL_STREAM=dev:inode`).
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Installs the global subscriber. Falls back to stderr when the journal is not reachable.
pub fn init(cfg: &Log) -> LogHandle {
    let (filter, handle) = reload::Layer::new(filter(&cfg.level));
    let journald = match cfg.format {
        LogFormat::Journald => true,
        LogFormat::Text => false,
        LogFormat::Auto => stderr_is_journal(),
    };
    let journal = if journald {
        tracing_journald::layer().ok().map(|l| {
            l.with_field_prefix(None)
                .with_syslog_identifier("turnbridge".into())
        })
    } else {
        None
    };
    let text = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .boxed()
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(text)
        .try_init();
    LogHandle(handle)
}
