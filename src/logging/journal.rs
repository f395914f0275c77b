//! Events sent to the journal over systemd's native protocol, every field value escaped as
//! the text log escapes it (see the parent module).
//!
//! Hand-written rather than taken from tracing-journald: that layer sends values as they came
//! and has no hook to escape them, and the protocol is small: one datagram per event, of
//! `NAME=value` lines (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>). Escaped values never
//! hold a newline, so every line is a whole field.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::{MAX_MESSAGE, MAX_VALUE};
use crate::einvoice::{escaped, printable};

/// Where journald listens for native messages.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// The longest message sent when an event is too large for one datagram: it is then sent
/// again as its message alone, cut to this, rather than lost.
const FALLBACK_MESSAGE: usize = 1000;

/// The journal, as a tracing layer.
pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
    identifier: String,
}

impl Journal {
    /// A layer sending to the journal socket at `path`, its entries under `identifier`
    /// (`SYSLOG_IDENTIFIER`). Fails when nothing listens there.
    pub fn connect(path: &Path, identifier: &str) -> io::Result<Journal> {
        let socket = UnixDatagram::unbound()?;
        // journald discards an empty datagram: this only checks that it listens.
        socket.send_to(&[], path)?;
        Ok(Journal {
            socket,
            path: path.to_path_buf(),
            identifier: identifier.to_string(),
        })
    }

    /// Sends one entry. A log line that cannot be written is not reported anywhere (there is
    /// nowhere left to report it).
    fn send(&self, entry: &[u8]) -> io::Result<()> {
        self.socket.send_to(entry, &self.path).map(|_| ())
    }

    /// The fields every entry starts with.
    fn head(&self, level: &Level) -> Vec<u8> {
        let mut buf = Vec::with_capacity(512);
        put(&mut buf, "PRIORITY", priority(level));
        put(&mut buf, "SYSLOG_IDENTIFIER", &self.identifier);
        buf
    }
}

/// journald's priority for a level (`INFO` is "notice", as tracing-journald had it).
fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "5",
        Level::DEBUG => "6",
        Level::TRACE => "7",
    }
}

/// Appends one field. A value holding a newline takes the protocol's length-prefixed form
/// (escaped values never do; this keeps any other value whole too).
fn put(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

/// A tracing field name as a journal field name: upper case, `.` as `_`, only ASCII letters,
/// digits and `_`, not starting with `_` (those are journald's own) nor a digit, at most 64
/// characters. `None` when nothing is left.
fn journal_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("r#").unwrap_or(name);
    let mut out: String = name
        .chars()
        .map(|c| if c == '.' { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .map(|c| c.to_ascii_uppercase())
        .skip_while(|c| *c == '_')
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "F_");
    }
    out.truncate(64);
    (!out.is_empty()).then_some(out)
}

/// The fields of an event or a span, as the journal gets them: journal names, values shown.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn set(&mut self, field: &Field, text: &str) {
        let Some(name) = journal_name(field.name()) else {
            return;
        };
        let shown = if field.name() == "message" {
            printable(text, MAX_MESSAGE)
        } else {
            escaped(text, MAX_VALUE)
        };
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = shown,
            None => self.0.push((name, shown)),
        }
    }

    fn put_all(&self, buf: &mut Vec<u8>) {
        for (name, value) in &self.0 {
            put(buf, name, value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field, &format!("{value:?}"));
    }
}

impl<S> Layer<S> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<Fields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut buf = self.head(meta.level());
        put(&mut buf, "TARGET", meta.target());
        if let Some(file) = meta.file() {
            put(&mut buf, "CODE_FILE", file);
        }
        if let Some(line) = meta.line() {
            put(&mut buf, "CODE_LINE", &line.to_string());
        }
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                put(&mut buf, "SPAN_NAME", span.name());
                if let Some(fields) = span.extensions().get::<Fields>() {
                    fields.put_all(&mut buf);
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields.put_all(&mut buf);
        match self.send(&buf) {
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                let message = fields
                    .0
                    .iter()
                    .find(|(n, _)| n == "MESSAGE")
                    .map(|(_, m)| m.chars().take(FALLBACK_MESSAGE).collect::<String>())
                    .unwrap_or_default();
                let mut small = self.head(meta.level());
                put(
                    &mut small,
                    "MESSAGE",
                    &format!(
                        "{message} … (its fields were left out: too large for one journal entry)"
                    ),
                );
                let _ = self.send(&small);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tracing_subscriber::layer::SubscriberExt;

    /// A journal socket of the test's own, in a temporary folder.
    struct FakeJournal {
        _dir: tempfile::TempDir,
        path: PathBuf,
        socket: UnixDatagram,
    }

    impl FakeJournal {
        fn new() -> FakeJournal {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("socket");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            FakeJournal {
                _dir: dir,
                path,
                socket,
            }
        }

        /// Runs `f` with the layer as the only subscriber; returns the entries sent, each as
        /// its lines (the probe at connection is skipped).
        fn entries(&self, journal: Journal, f: impl FnOnce()) -> Vec<Vec<String>> {
            let subscriber = tracing_subscriber::registry().with(journal);
            tracing::subscriber::with_default(subscriber, f);
            let mut out = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            self.socket.set_nonblocking(true).unwrap();
            while let Ok(n) = self.socket.recv(&mut buf) {
                if n == 0 {
                    continue;
                }
                let text = std::str::from_utf8(&buf[..n]).expect("UTF-8");
                assert!(text.ends_with('\n'), "{text:?}");
                out.push(text.lines().map(str::to_string).collect());
            }
            out
        }

        fn connect(&self) -> Journal {
            Journal::connect(&self.path, "turnbridge").unwrap()
        }
    }

    /// The lines of an entry as fields; every line must be `NAME=value` (no value took the
    /// length-prefixed form, so none held a newline).
    fn fields(lines: &[String]) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in lines {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not NAME=value: {l:?}"));
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
        out
    }

    #[test]
    fn every_field_value_is_escaped_as_in_the_text_log() {
        let fake = FakeJournal::new();
        let name = "a.csv\nMESSAGE=FORGED\x1b[2J\u{202e}typed\\n";
        let entries = fake.entries(fake.connect(), || {
            let span = tracing::info_span!("job", file = %name, job_id = "J1");
            let _e = span.enter();
            tracing::warn!(file = %name, code = name, rows = 3, "refused: {name}");
        });
        assert_eq!(entries.len(), 1, "{entries:?}");
        let all = entries[0].join("\n");
        assert!(
            !all.contains('\x1b') && !all.contains('\u{202e}'),
            "{all:?}"
        );
        let f = fields(&entries[0]);
        let shown = r"a.csv\nMESSAGE=FORGED\u{1b}[2J\u{202e}typed\\n";
        assert_eq!(f["FILE"], vec![shown, shown], "the span's and the event's");
        assert_eq!(f["CODE"], vec![shown]);
        assert_eq!(f["ROWS"], vec!["3"]);
        assert_eq!(f["JOB_ID"], vec!["J1"]);
        assert_eq!(f["SPAN_NAME"], vec!["job"]);
        // The message is prose: control characters escaped, a backslash as it is.
        assert_eq!(
            f["MESSAGE"],
            vec![r"refused: a.csv\nMESSAGE=FORGED\u{1b}[2J\u{202e}typed\n"]
        );
        assert_eq!(f["PRIORITY"], vec!["4"]);
        assert_eq!(f["SYSLOG_IDENTIFIER"], vec!["turnbridge"]);
    }

    #[test]
    fn long_values_are_cut_and_an_entry_too_large_still_arrives() {
        let fake = FakeJournal::new();
        let long = "x".repeat(100_000);
        let entries = fake.entries(fake.connect(), || {
            tracing::info!(value = %long, "{long}");
        });
        let f = fields(&entries[0]);
        assert_eq!(f["VALUE"][0].len(), 1000 + "… (100000 characters)".len());
        assert_eq!(f["MESSAGE"][0].len(), 4000 + "… (100000 characters)".len());

        // A socket that takes only small datagrams: the entry comes as its message alone.
        let journal = fake.connect();
        socket2::SockRef::from(&journal.socket)
            .set_send_buffer_size(4096)
            .unwrap();
        let wide = "\u{1}".repeat(5000);
        let entries = fake.entries(journal, || {
            tracing::error!(a = %wide, b = %wide, "{wide}");
        });
        assert_eq!(entries.len(), 1, "{entries:?}");
        let f = fields(&entries[0]);
        assert!(!f.contains_key("A"), "{f:?}");
        assert_eq!(f["PRIORITY"], vec!["3"]);
        assert!(
            f["MESSAGE"][0].starts_with(r"\u{1}\u{1}")
                && f["MESSAGE"][0].ends_with("too large for one journal entry)"),
            "{f:?}"
        );
    }

    #[test]
    fn field_names_become_journal_names() {
        assert_eq!(journal_name("invoice_no").as_deref(), Some("INVOICE_NO"));
        assert_eq!(journal_name("log.target").as_deref(), Some("LOG_TARGET"));
        assert_eq!(journal_name("r#type").as_deref(), Some("TYPE"));
        assert_eq!(journal_name("_trusted").as_deref(), Some("TRUSTED"));
        assert_eq!(journal_name("9lives").as_deref(), Some("F_9LIVES"));
        assert_eq!(journal_name("品名"), None);
        assert_eq!(journal_name(&"a".repeat(100)).map(|n| n.len()), Some(64));
    }
}
