//! Logging: readable text on stderr, or the journal with structured fields under systemd.
//!
//! Span and event fields become journal fields in upper case (`job_id` → `JOB_ID`,
//! `invoice_no` → `INVOICE_NO`), so `journalctl -u turnbridge INVOICE_NO=AB12345678` finds one
//! invoice's story. The level can be changed by a reload.
//!
//! Both logs show outside text (spool file names, Turnkey's error text, company payloads) the
//! same way, so it can neither start a line of its own nor send a terminal an escape code, and
//! a long value is cut. Each value is escaped exactly once:
//! - a field value is outside text as it came: [`escaped`] (a backslash doubled, so a typed
//!   `\n` never reads as an escaped newline); the text log quotes text values ([`quoted`]).
//!   `?` fields are for values whose `Debug` holds no text (numbers, enum variants): `Debug`
//!   escapes a string itself, which would then be escaped twice.
//! - the message is prose that may hold outside text already shown once by
//!   [`printable`] (the errors do): it is shown [`printable`], a backslash left as it is.

use std::fmt;
use std::os::unix::fs::MetadataExt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{Log, LogFormat};
use crate::einvoice::{escaped, printable, quoted};

mod journal;

/// The longest message either log shows, in characters; the rest is cut and counted.
const MAX_MESSAGE: usize = 4000;
/// The longest field value either log shows, in characters.
const MAX_VALUE: usize = 1000;

/// Formats the fields of text log lines (events and spans) with control characters escaped
/// and long values cut. Hand-written because tracing's own field formatter writes values as
/// they are (it escapes only a few terminal codes, and only in the message).
#[derive(Debug, Clone, Copy, Default)]
pub struct Printable;

/// The visitor [`Printable`] makes for one line.
pub struct PrintableVisitor<'a> {
    writer: Writer<'a>,
    result: fmt::Result,
    first: bool,
}

impl<'a> MakeVisitor<Writer<'a>> for Printable {
    type Visitor = PrintableVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Self::Visitor {
        PrintableVisitor {
            writer,
            result: Ok(()),
            first: true,
        }
    }
}

impl PrintableVisitor<'_> {
    /// Writes one field, `shown` as the log shows it.
    fn write(&mut self, field: &Field, shown: &str) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return; // metadata of records from the `log` crate, shown by the formatter
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{sep}{shown}")
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{sep}{name}={shown}")
        };
    }
}

impl Visit for PrintableVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let shown = if field.name() == "message" {
            printable(value, MAX_MESSAGE)
        } else {
            quoted(value, MAX_VALUE)
        };
        self.write(field, &shown);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let shown = if field.name() == "message" {
            printable(&text, MAX_MESSAGE)
        } else {
            escaped(&text, MAX_VALUE)
        };
        self.write(field, &shown);
    }
}

impl VisitOutput<fmt::Result> for PrintableVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PrintableVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

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
        journal::Journal::connect(std::path::Path::new(journal::SOCKET), "turnbridge").ok()
    } else {
        None
    };
    let text = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .fmt_fields(Printable)
            .boxed()
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(text)
        .try_init();
    LogHandle(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Runs `f` with a text log like the daemon's written to a buffer; returns the log.
    fn logged(f: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || Sink(sink.clone()))
            .with_ansi(false)
            .with_target(false)
            .fmt_fields(Printable);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn outside_text_cannot_forge_a_line_or_send_escape_codes() {
        let name = "a.csv\n2026-01-01T00:00:00Z  INFO FORGED\x1b[2J";
        let log = logged(|| {
            let span = tracing::info_span!("job", file = %name);
            let _e = span.enter();
            tracing::warn!(file = %name, code = name, "result file rejected: {name}");
        });
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(!log.contains('\x1b'), "{log:?}");
        // Each value shows the name escaped: the span's field, two event fields, the message.
        assert_eq!(log.matches(r"a.csv\n2026").count(), 4, "{log}");
        assert!(
            log.contains(r#"code="a.csv\n"#),
            "text values stay quoted: {log}"
        );
    }

    #[test]
    fn a_typed_backslash_in_a_field_is_not_taken_for_an_escape() {
        // The two characters backslash and n, then a real newline.
        let name = "typed\\n real\n";
        let log = logged(|| tracing::warn!(file = %name, code = name, n = 3, "rejected"));
        assert!(
            log.contains(r"file=typed\\n real\n "),
            "a Display value, escaped once: {log}"
        );
        assert!(
            log.contains(r#"code="typed\\n real\n""#),
            "a text value, escaped once: {log}"
        );
        assert!(log.contains("n=3"), "{log}");
        // The message is prose: what printable showed once is not escaped again.
        let shown = printable(name, 80);
        let log = logged(|| tracing::warn!("refused: {shown}"));
        assert!(log.contains(&format!("refused: {shown}")), "{log}");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(100_000);
        let log = logged(|| tracing::info!(value = %long, "{long}"));
        assert!(log.len() < 6000, "{} bytes", log.len());
        assert_eq!(log.matches("… (100000 characters)").count(), 2, "{log}");
    }
}
