//! The TOML configuration: schema, defaults and checks that name the key at fault.
//!
//! [`Config::load`] reports every problem it can find at once (each unknown key, the first
//! wrong type in each section, every out-of-range value), each with its key path, so an
//! operator fixes a file in one pass. `config/turnbridge.toml` is the annotated default; it is
//! embedded in the binary as [`DEFAULT_TOML`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::einvoice::archive::ZipLimits;
use crate::einvoice::{valid_tenant, ReadOptions, TextEncoding};

/// The annotated default configuration, as packaged.
pub const DEFAULT_TOML: &str = include_str!("../config/turnbridge.toml");

/// Where the packaged service reads its configuration.
pub const DEFAULT_PATH: &str = "/etc/turnbridge/turnbridge.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Config {
    pub paths: Paths,
    pub einvoice: Einvoice,
    pub turnkey: Turnkey,
    pub simulator: Simulator,
    pub http: Http,
    pub nextengine: NextEngine,
    pub company_webhook: CompanyWebhook,
    pub webhooks: Webhooks,
    pub retention: Retention,
    pub log: Log,
}

/// A secret from the config: compared in constant time by its users, never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// The embedded HTTP listener. The connection limits and timeouts apply to each listening
/// address on its own (see `listener` for how they work together).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Http {
    /// Address to listen on; empty turns the listener off. Bound at start: a reload keeps
    /// the running one.
    pub listen: String,
    /// Separate address for `/healthz` and `/metrics`; empty serves them on `listen`. Bound
    /// at start, as `listen`.
    pub monitor_listen: String,
    /// `Authorization: Bearer` token for the monitoring routes; empty turns them off.
    pub admin_token: Secret,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    /// A handler must answer within this.
    pub request_timeout_ms: u64,
    /// A request head must be complete this long after its first byte (after the connection
    /// opened, for its first request).
    pub header_timeout_ms: u64,
    /// A connection between requests that receives and sends nothing for this long is closed.
    pub idle_timeout_ms: u64,
    /// A connection whose answer makes no progress for this long (its client does not read)
    /// is closed.
    pub write_timeout_ms: u64,
    /// A connection older than this is closed once idle; an answer in progress goes out
    /// first, with `Connection: close`.
    pub max_connection_age_ms: u64,
    /// Connections held at once. When all are taken, a new connection takes the slot of one
    /// that is only waiting on its client: from the peer holding the most (its longest
    /// waiting) if that peer holds more than the newcomer's, else from its own peer, else it
    /// is reset; when all are being answered, new ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one peer (an IPv4 address, an IPv6 /64) holds at once; a new one beyond is
    /// reset at once. At `max_connections` or above, there is no cap per peer.
    pub max_connections_per_peer: usize,
    /// Kernel send buffer of each connection (`SO_SNDBUF`, which Linux doubles): bounds what
    /// an answer a client never reads can hold in memory. 0 keeps the kernel's default.
    pub send_buffer_bytes: usize,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:8780".into(),
            monitor_listen: String::new(),
            admin_token: Secret::default(),
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            request_timeout_ms: 10_000,
            header_timeout_ms: 5_000,
            idle_timeout_ms: 15_000,
            write_timeout_ms: 10_000,
            max_connection_age_ms: 120_000,
            max_connections: 512,
            max_connections_per_peer: 64,
            send_buffer_bytes: 64 << 10,
        }
    }
}

/// A NextEngine shop whose stock callbacks are accepted.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(default)]
pub struct Shop {
    pub store_account: String,
    pub auth_key: Secret,
}

/// Where an accepted stock level goes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StockSink {
    /// Recorded in the store only.
    #[default]
    Record,
    /// Recorded and marked pending, for forwarding to other platforms.
    Forward,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NextEngine {
    pub updatestock_path: String,
    pub ts_utc_offset: String,
    pub ts_max_age_secs: u64,
    pub ts_max_ahead_secs: u64,
    pub stock_sink: StockSink,
    pub shops: Vec<Shop>,
    /// The app's credentials from NextEngine's developer network; empty turns the API off.
    pub client_id: String,
    pub client_secret: Secret,
    /// Where NextEngine sends the user back after sign-in (the app's registered Redirect URI,
    /// ending in /auth/callback on this listener behind the reverse proxy).
    pub redirect_uri: String,
    pub api_base: String,
    pub login_base: String,
    /// The account (its `company_ne_id`, as `turnbridge nextengine status` lists it) that
    /// spool uploads and searches use. Empty: the only connected account; with several
    /// connected, nothing is uploaded (and `status` says why) until one is named here. A
    /// reload applies it to the next upload.
    pub account: String,
    /// An authenticated call this often keeps the 3-day refresh token alive on a quiet system.
    pub keepalive_minutes: u64,
    /// Busy answers (003001 / 003002) are retried this many times, doubling from 1 s.
    pub busy_retries: u32,
    pub busy_backoff_ms: u64,
    pub timeout_ms: u64,
    /// Warehouse (拠点) of stock rows that name none.
    pub default_warehouse: String,
    /// How often spool files are taken and queued uploads polled.
    pub poll_ms: u64,
}

impl Default for NextEngine {
    fn default() -> Self {
        NextEngine {
            updatestock_path: "/UpdateStock.php".into(),
            ts_utc_offset: "+09:00".into(),
            ts_max_age_secs: 3600,
            ts_max_ahead_secs: 26 * 3600,
            stock_sink: StockSink::Record,
            shops: Vec::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            redirect_uri: String::new(),
            api_base: "https://api.next-engine.org".into(),
            login_base: "https://base.next-engine.org".into(),
            account: String::new(),
            keepalive_minutes: 360,
            busy_retries: 3,
            busy_backoff_ms: 1000,
            timeout_ms: 60_000,
            default_warehouse: "基本拠点".into(),
            poll_ms: 5000,
        }
    }
}

impl NextEngine {
    pub fn offset(&self) -> chrono::FixedOffset {
        parse_offset(&self.ts_utc_offset)
            .unwrap_or_else(|| chrono::FixedOffset::east_opt(9 * 3600).expect("valid"))
    }
}

impl crate::nextengine::stock_callback::ShopKeys for NextEngine {
    fn auth_key(&self, store_account: &str) -> Option<&str> {
        self.shops
            .iter()
            .find(|s| s.store_account == store_account)
            .map(|s| s.auth_key.expose())
    }
}

fn parse_offset(s: &str) -> Option<chrono::FixedOffset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 {
        return None;
    }
    chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// Outbound webhook delivery.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Webhooks {
    /// Delay before each attempt, from the event (the first) or the previous failure, in ms.
    /// After the last one fails the delivery is dead (DLQ).
    pub retry_schedule_ms: Vec<u64>,
    pub timeout_ms: u64,
    /// Deliveries in flight at once, in all (counted at start: a reload keeps the running
    /// one) and per endpoint.
    pub max_in_flight: usize,
    pub max_in_flight_per_endpoint: usize,
    /// How long a rotated-out secret still signs, beside the new one; then it is removed
    /// from the store.
    pub secret_overlap_hours: u64,
    /// How often the outbox is polled for new events and due attempts.
    pub poll_ms: u64,
    /// Let webhooks go to loopback, private, link-local and metadata addresses (and
    /// `localhost`). Off: only public addresses, checked at registration and at every
    /// attempt's name resolution (see `webhook::policy`).
    pub allow_private_networks: bool,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            retry_schedule_ms: vec![0, 60_000, 300_000, 900_000],
            timeout_ms: 15_000,
            max_in_flight: 64,
            max_in_flight_per_endpoint: 4,
            secret_overlap_hours: 24,
            poll_ms: 200,
            allow_private_networks: false,
        }
    }
}

/// The company system's webhook receiver.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(default)]
pub struct CompanyWebhook {
    /// The `X-Webhook-Secret` value; empty turns the route off.
    pub secret: Secret,
    /// Push the level of each accepted `inventory.updated` to NextEngine (through the stock
    /// spool), unless it is the level NextEngine itself last reported for that code.
    pub push_inventory_to_nextengine: bool,
}

/// The built-in Turnkey stand-in, for the sandbox (see `turnkey::simulator`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Simulator {
    pub enabled: bool,
    /// How long a file waits in the pickup folder before the simulator takes it.
    pub delay_ms: u64,
    /// Document numbers whose files fail Turnkey's local check: moved to ERROR (flat) or
    /// `<MSG>/ERR/...` (turnkey layout), as a file failing the schemas is.
    pub err: Vec<String>,
    /// Document numbers the platform rejects after sending: an ERROR result (flat) or a Failed
    /// entry in the SummaryResult (turnkey layout).
    pub reject: Vec<String>,
}

impl Default for Simulator {
    fn default() -> Self {
        Simulator {
            enabled: false,
            delay_ms: 500,
            err: Vec::new(),
            reject: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Paths {
    /// Spool root; e-invoice batches go in `<spool>/einvoice/`.
    pub spool: PathBuf,
    /// State root: database, work, archive, rejected, staging. Opened at start: a reload
    /// keeps the running one.
    pub state: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            spool: "/var/spool/turnbridge".into(),
            state: "/var/lib/turnbridge".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Einvoice {
    pub settle_ms: u64,
    pub rescan_secs: u64,
    pub max_invoices_per_batch: usize,
    /// Product lines (CSV rows, JSON `ProductItem`s) one batch may hold in all, across every
    /// member of an archive. With `max_file_bytes` it bounds what reading a batch costs in
    /// memory (see the README's limits); a batch beyond it is refused while it is read.
    pub max_lines_per_batch: usize,
    /// Largest batch file accepted, checked on the open descriptor and enforced while
    /// reading. Reading a batch costs up to about 7 times this in memory (its text, decoded,
    /// as written back, as messages and as XML): the README's budget assumes the default.
    pub max_file_bytes: u64,
    pub encoding: TextEncoding,
    pub default_tenant: String,
    /// How far after now (Taiwan time) a document may be dated before it is refused as dated
    /// in the future: a margin for clocks a little apart. At most a day.
    pub future_tolerance_secs: u64,
    /// Whether a cancel (F0501) dated after its invoice's period's VAT filing deadline (the
    /// 15th of the next period) is refused, pointing to an allowance (G0401) instead. Turn it
    /// off only to send a cancel the tax office approved after the deadline (專案作廢).
    pub refuse_late_cancels: bool,
    pub zip: Zip,
}

impl Default for Einvoice {
    fn default() -> Self {
        Einvoice {
            settle_ms: 250,
            rescan_secs: 30,
            max_invoices_per_batch: 999,
            max_lines_per_batch: 100_000,
            max_file_bytes: 16 << 20,
            encoding: TextEncoding::Auto,
            default_tenant: "default".into(),
            future_tolerance_secs: 300,
            refuse_late_cancels: true,
            zip: Zip::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Zip {
    /// Entries one archive may list.
    pub max_members: usize,
    /// Bytes one member may expand to (its declared size is not trusted).
    pub max_member_bytes: u64,
    /// Bytes all members may expand to together: what an archive holds counts like one
    /// batch file against the memory budget.
    pub max_total_bytes: u64,
}

impl Default for Zip {
    fn default() -> Self {
        Zip {
            max_members: 1000,
            max_member_bytes: 16 << 20,
            max_total_bytes: 16 << 20,
        }
    }
}

/// The most connections `http.max_connections` allows per listening address.
pub const MAX_CONNECTIONS: usize = 65_536;

/// The shortest admin token or company-system secret accepted (the seed's sample secret,
/// `jyt-gas-webhook-2024`, has 20).
pub const MIN_SECRET_CHARS: usize = 16;

/// Which folder layout Turnkey uses (see DESIGN.md, "Folders at run time").
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Flat,
    Turnkey,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Turnkey {
    pub layout: Layout,
    /// Pickup folder template; may hold `{message_type}` and `{tenant}`.
    pub inbox: String,
    pub outbox: PathBuf,
    pub error: PathBuf,
    /// Empty means `<state>/staging`.
    pub staging: PathBuf,
    /// How often the feedback folders are rescanned besides change notifications.
    pub rescan_secs: u64,
    /// A message in a non-final state for longer than this raises `invoice.feedback.overdue`.
    pub overdue_minutes: u64,
    /// Result files turnbridge keeps are pruned after this many days.
    pub retention_days: u64,
    /// A result file that does not parse is read again at later scans (it may still be being
    /// written) and set aside only once it has stayed unchanged (size, modification time and
    /// content) this long, in milliseconds; 0 sets it aside at once.
    pub result_unchanged_ms: u64,
}

impl Default for Turnkey {
    fn default() -> Self {
        Turnkey {
            layout: Layout::Flat,
            inbox: "/var/lib/turnkey/INBOX".into(),
            outbox: "/var/lib/turnkey/OUTBOX".into(),
            error: "/var/lib/turnkey/ERROR".into(),
            staging: PathBuf::new(),
            rescan_secs: 10,
            overdue_minutes: 1440,
            retention_days: 30,
            result_unchanged_ms: 60_000,
        }
    }
}

/// How long rows are kept once nothing depends on them any more (see `retention`). Rows that
/// are not final (messages and jobs in flight, pending deliveries, events not fanned out,
/// stock levels waiting to be forwarded) are never pruned, and neither are the messages
/// themselves: they refuse a document number sent before and cap allowances.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Retention {
    /// Outbox events, once fanned out and without a delivery left.
    pub events_days: u64,
    /// Delivered (succeeded) or cancelled webhook deliveries, with their attempts.
    pub deliveries_days: u64,
    /// Dead deliveries (the dead-letter queue), with their attempts.
    pub dead_letters_days: u64,
    /// State changes of messages final (acked or error) for this long.
    pub transitions_days: u64,
    /// Finished e-invoice jobs that recorded no message (refused or duplicate files).
    pub jobs_days: u64,
    /// Daily summaries, and the records of result files turnbridge kept or set aside (once
    /// the file is gone from where it was read).
    pub feedback_days: u64,
    /// Accepted stock levels already recorded; the newest per product code stays, and none
    /// goes before `nextengine.ts_max_age_secs + ts_max_ahead_secs` (its replay window).
    pub stock_updates_days: u64,
    /// Every stock-callback request.
    pub inventory_logs_days: u64,
    /// Company-system pushes (the same push after this is stored again).
    pub company_events_days: u64,
    /// The audit trail of webhooks received, refused and resent.
    pub audit_days: u64,
    /// Finished NextEngine uploads (done, failed, unknown, rejected) with their CSV.
    pub ne_jobs_days: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            events_days: 30,
            deliveries_days: 30,
            dead_letters_days: 90,
            transitions_days: 400,
            jobs_days: 400,
            feedback_days: 90,
            stock_updates_days: 30,
            inventory_logs_days: 30,
            company_events_days: 90,
            audit_days: 400,
            ne_jobs_days: 90,
        }
    }
}

impl Retention {
    /// Every key with its value, for range checks and logs.
    pub fn days(&self) -> [(&'static str, u64); 11] {
        [
            ("events_days", self.events_days),
            ("deliveries_days", self.deliveries_days),
            ("dead_letters_days", self.dead_letters_days),
            ("transitions_days", self.transitions_days),
            ("jobs_days", self.jobs_days),
            ("feedback_days", self.feedback_days),
            ("stock_updates_days", self.stock_updates_days),
            ("inventory_logs_days", self.inventory_logs_days),
            ("company_events_days", self.company_events_days),
            ("audit_days", self.audit_days),
            ("ne_jobs_days", self.ne_jobs_days),
        ]
    }
}

/// The longest retention accepted: a hundred years is "keep".
pub const MAX_RETENTION_DAYS: u64 = 36_500;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Auto,
    Text,
    Journald,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Log {
    /// The level (a reload changes it).
    pub level: String,
    /// Where the log goes, chosen at start (a reload keeps the running one).
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

/// One problem in a configuration file, with the key it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `einvoice.zip.max_members`; empty for the file as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
#[error("{} has {} problem(s):\n{}", path.display(), issues.len(), issues.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub path: PathBuf,
    pub issues: Vec<ConfigIssue>,
}

impl Config {
    /// Reads and checks a configuration file; relative paths in it are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            issues: vec![ConfigIssue {
                key: String::new(),
                message: format!("cannot be read: {e}"),
            }],
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
        Config::parse(&text, &base).map_err(|issues| ConfigError {
            path: path.to_path_buf(),
            issues,
        })
    }

    /// Parses configuration text; `base` is the folder relative paths are resolved against.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<ConfigIssue>> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            vec![ConfigIssue {
                key: String::new(),
                message: format!("not valid TOML: {}", e.message().trim()),
            }]
        })?;
        let mut issues = Vec::new();
        let known = toml::Value::try_from(Config::default()).expect("defaults serialize");
        unknown_keys(&table, known.as_table().expect("a table"), "", &mut issues);
        let mut config = Config::default();
        for (key, value) in table {
            match key.as_str() {
                "paths" => section(&key, value, &mut issues, &mut config.paths),
                "einvoice" => section(&key, value, &mut issues, &mut config.einvoice),
                "turnkey" => section(&key, value, &mut issues, &mut config.turnkey),
                "simulator" => section(&key, value, &mut issues, &mut config.simulator),
                "http" => section(&key, value, &mut issues, &mut config.http),
                "nextengine" => section(&key, value, &mut issues, &mut config.nextengine),
                "company_webhook" => section(&key, value, &mut issues, &mut config.company_webhook),
                "webhooks" => section(&key, value, &mut issues, &mut config.webhooks),
                "retention" => section(&key, value, &mut issues, &mut config.retention),
                "log" => section(&key, value, &mut issues, &mut config.log),
                _ => {}
            }
        }
        config.check(&mut issues);
        if !issues.is_empty() {
            return Err(issues);
        }
        config.resolve(base);
        Ok(config)
    }

    fn check(&self, issues: &mut Vec<ConfigIssue>) {
        let mut bad = |key: &str, message: String| {
            issues.push(ConfigIssue {
                key: key.into(),
                message,
            })
        };
        let e = &self.einvoice;
        if e.settle_ms > 600_000 {
            bad(
                "einvoice.settle_ms",
                "must be at most 600000 (10 minutes)".into(),
            );
        }
        if e.rescan_secs == 0 {
            bad("einvoice.rescan_secs", "must be at least 1".into());
        }
        if self.turnkey.rescan_secs == 0 {
            bad("turnkey.rescan_secs", "must be at least 1".into());
        }
        if self.turnkey.overdue_minutes == 0 {
            bad("turnkey.overdue_minutes", "must be at least 1".into());
        }
        if self.turnkey.result_unchanged_ms > 86_400_000 {
            bad(
                "turnkey.result_unchanged_ms",
                "must be at most 86400000 (a day)".into(),
            );
        }
        if self.turnkey.retention_days < 30 {
            bad(
                "turnkey.retention_days",
                "must be at least 30 (result files are kept 30 days or more)".into(),
            );
        }
        if !(1..=999).contains(&e.max_invoices_per_batch) {
            bad("einvoice.max_invoices_per_batch", "must be 1 to 999".into());
        }
        if !(1..=1_000_000).contains(&e.max_lines_per_batch) {
            bad(
                "einvoice.max_lines_per_batch",
                "must be 1 to 1000000".into(),
            );
        }
        if e.max_file_bytes == 0 {
            bad("einvoice.max_file_bytes", "must be above 0".into());
        }
        if e.future_tolerance_secs > 86_400 {
            bad(
                "einvoice.future_tolerance_secs",
                "must be at most 86400 (a day)".into(),
            );
        }
        if !valid_tenant(&e.default_tenant) {
            bad(
                "einvoice.default_tenant",
                "must be 1 to 64 letters, digits, - or _".into(),
            );
        }
        for (key, v) in [
            ("einvoice.zip.max_members", e.zip.max_members as u64),
            ("einvoice.zip.max_member_bytes", e.zip.max_member_bytes),
            ("einvoice.zip.max_total_bytes", e.zip.max_total_bytes),
        ] {
            if v == 0 {
                bad(key, "must be above 0".into());
            }
        }
        if let Err(m) = crate::turnkey::InboxTemplate::parse(&self.turnkey.inbox) {
            bad("turnkey.inbox", m);
        } else if self.turnkey.layout == Layout::Turnkey {
            // Turnkey's EINVTurnkey folder, where BAK/ERR, packs, results and the log are read,
            // is the part before `/UpCast/B2SSTORAGE/{message_type}/SRC`.
            if let Err(m) = crate::turnkey::layout::DefTemplate::from_pickup(&self.turnkey.inbox) {
                bad("turnkey.inbox", m);
            }
        }
        for (key, p) in [
            ("paths.spool", &self.paths.spool),
            ("paths.state", &self.paths.state),
            ("turnkey.outbox", &self.turnkey.outbox),
            ("turnkey.error", &self.turnkey.error),
        ] {
            if p.as_os_str().is_empty() {
                bad(key, "must not be empty".into());
            }
        }
        let h = &self.http;
        for (key, addr) in [
            ("http.listen", &h.listen),
            ("http.monitor_listen", &h.monitor_listen),
        ] {
            if !addr.is_empty() && addr.parse::<std::net::SocketAddr>().is_err() {
                bad(
                    key,
                    format!("`{addr}` is not an address like 127.0.0.1:8780"),
                );
            }
        }
        // Guessable secrets guard nothing; an empty one turns its route off.
        for (key, secret) in [
            ("http.admin_token", &h.admin_token),
            ("company_webhook.secret", &self.company_webhook.secret),
        ] {
            let n = secret.expose().chars().count();
            if n > 0 && n < MIN_SECRET_CHARS {
                bad(
                    key,
                    format!("must be at least {MIN_SECRET_CHARS} characters (it is {n}), or empty to turn the routes it guards off"),
                );
            }
        }
        if h.max_header_bytes < 8192 {
            bad("http.max_header_bytes", "must be at least 8192".into());
        }
        if !(1..=MAX_CONNECTIONS).contains(&h.max_connections) {
            bad(
                "http.max_connections",
                format!("must be 1 to {MAX_CONNECTIONS}"),
            );
        }
        if h.max_connections_per_peer == 0 {
            bad("http.max_connections_per_peer", "must be at least 1".into());
        }
        if h.max_body_bytes == 0 {
            bad("http.max_body_bytes", "must be above 0".into());
        }
        for (key, ms) in [
            ("http.request_timeout_ms", h.request_timeout_ms),
            ("http.header_timeout_ms", h.header_timeout_ms),
            ("http.idle_timeout_ms", h.idle_timeout_ms),
            ("http.write_timeout_ms", h.write_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                bad(key, "must be 1 to 3600000 (an hour)".into());
            }
        }
        if !(1000..=86_400_000).contains(&h.max_connection_age_ms) {
            bad(
                "http.max_connection_age_ms",
                "must be 1000 to 86400000 (a day)".into(),
            );
        }
        if h.send_buffer_bytes != 0 && !(4096..=16 << 20).contains(&h.send_buffer_bytes) {
            bad(
                "http.send_buffer_bytes",
                "must be 0 (the kernel's default) or 4096 to 16777216".into(),
            );
        }
        let ne = &self.nextengine;
        if !ne.updatestock_path.starts_with('/') {
            bad("nextengine.updatestock_path", "must start with /".into());
        } else if crate::http::router::is_fixed_path(&ne.updatestock_path) {
            bad(
                "nextengine.updatestock_path",
                "is a path the listener already serves (pick another)".into(),
            );
        }
        if parse_offset(&ne.ts_utc_offset).is_none() {
            bad("nextengine.ts_utc_offset", "must look like +09:00".into());
        }
        for (i, shop) in ne.shops.iter().enumerate() {
            if shop.store_account.is_empty() {
                bad(
                    &format!("nextengine.shops[{i}].store_account"),
                    "must not be empty".into(),
                );
            }
            if shop.auth_key.is_empty() {
                bad(
                    &format!("nextengine.shops[{i}].auth_key"),
                    "must not be empty".into(),
                );
            }
            if ne.shops[..i]
                .iter()
                .any(|s| s.store_account == shop.store_account)
            {
                bad(
                    &format!("nextengine.shops[{i}].store_account"),
                    "is listed twice".into(),
                );
            }
        }
        let w = &self.webhooks;
        if w.retry_schedule_ms.is_empty() {
            bad(
                "webhooks.retry_schedule_ms",
                "needs at least one attempt".into(),
            );
        }
        if w.timeout_ms == 0 || w.poll_ms == 0 {
            bad("webhooks.timeout_ms", "timeouts must be above 0".into());
        }
        if w.max_in_flight == 0 || w.max_in_flight_per_endpoint == 0 {
            bad("webhooks.max_in_flight", "must be above 0".into());
        }
        self.check_retention(&mut bad);
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            bad(
                "log.level",
                format!(
                    "`{}` is not one of error, warn, info, debug, trace",
                    self.log.level
                ),
            );
        }
    }

    fn check_retention(&self, bad: &mut impl FnMut(&str, String)) {
        let r = &self.retention;
        for (key, days) in r.days() {
            if !(1..=MAX_RETENTION_DAYS).contains(&days) {
                bad(
                    &format!("retention.{key}"),
                    format!("must be 1 to {MAX_RETENTION_DAYS} days"),
                );
            }
        }
        // The daily summary compares what was queued on a day with what Turnkey counted.
        if r.transitions_days < 30 {
            bad(
                "retention.transitions_days",
                "must be at least 30 (daily summaries count the messages queued on their day)"
                    .into(),
            );
        }
    }

    fn resolve(&mut self, base: &Path) {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.paths.spool = abs(&self.paths.spool);
        self.paths.state = abs(&self.paths.state);
        self.turnkey.outbox = abs(&self.turnkey.outbox);
        self.turnkey.error = abs(&self.turnkey.error);
        if !Path::new(&self.turnkey.inbox).is_absolute() {
            self.turnkey.inbox = base.join(&self.turnkey.inbox).to_string_lossy().into();
        }
        self.turnkey.staging = if self.turnkey.staging.as_os_str().is_empty() {
            self.paths.state.join("staging")
        } else {
            abs(&self.turnkey.staging)
        };
    }

    pub fn einvoice_spool(&self) -> PathBuf {
        self.paths.spool.join("einvoice")
    }

    pub fn database(&self) -> PathBuf {
        self.paths.state.join("turnbridge.db")
    }

    /// Why reading the largest batch these limits accept may cost more than the documented
    /// memory budget (limits raised above their defaults), or `None`.
    pub fn beyond_memory_budget(&self) -> Option<String> {
        let (e, d) = (&self.einvoice, Einvoice::default());
        let raised: Vec<&str> = [
            (
                "einvoice.max_file_bytes",
                e.max_file_bytes > d.max_file_bytes,
            ),
            (
                "einvoice.max_lines_per_batch",
                e.max_lines_per_batch > d.max_lines_per_batch,
            ),
            (
                "einvoice.zip.max_member_bytes",
                e.zip.max_member_bytes > d.zip.max_member_bytes,
            ),
            (
                "einvoice.zip.max_total_bytes",
                e.zip.max_total_bytes > d.zip.max_total_bytes,
            ),
        ]
        .into_iter()
        .filter_map(|(k, raised)| raised.then_some(k))
        .collect();
        (!raised.is_empty()).then(|| {
            format!(
                "{} above the default: reading the largest batch may take more than the 256 MiB the README budgets (about 7 times max_file_bytes), and the packaged unit stops the daemon at MemoryMax=512M",
                raised.join(", ")
            )
        })
    }

    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            encoding: self.einvoice.encoding,
            zip: ZipLimits {
                max_members: self.einvoice.zip.max_members,
                max_member_bytes: self.einvoice.zip.max_member_bytes,
                max_total_bytes: self.einvoice.zip.max_total_bytes,
            },
            max_invoices: self.einvoice.max_invoices_per_batch,
            max_lines: self.einvoice.max_lines_per_batch,
            default_tenant: self.einvoice.default_tenant.clone(),
            time: crate::einvoice::timing::TimeRules {
                now: Some(crate::einvoice::deadline::taiwan_time(chrono::Utc::now())),
                future_tolerance: chrono::Duration::seconds(
                    self.einvoice.future_tolerance_secs as i64,
                ),
                refuse_late_cancels: self.einvoice.refuse_late_cancels,
            },
        }
    }
}

/// Reports every key of `table` that the schema (`known`, the defaults) does not have.
fn unknown_keys(
    table: &toml::Table,
    known: &toml::Table,
    prefix: &str,
    issues: &mut Vec<ConfigIssue>,
) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match (known.get(key), value) {
            (None, _) => issues.push(ConfigIssue {
                key: path,
                message: if prefix.is_empty() {
                    format!(
                        "unknown section (known: {})",
                        known.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                } else {
                    "unknown key".into()
                },
            }),
            (Some(toml::Value::Table(k)), toml::Value::Table(t)) => {
                unknown_keys(t, k, &format!("{path}."), issues)
            }
            _ => {}
        }
    }
}

/// Deserializes one section, reporting the first value of a wrong type with its key path.
/// Unknown keys were reported already and are ignored here.
fn section<T: DeserializeOwned>(
    name: &str,
    value: toml::Value,
    issues: &mut Vec<ConfigIssue>,
    out: &mut T,
) {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    match T::deserialize(de) {
        Ok(v) => *out = v,
        Err(e) => {
            let path = track.path().to_string();
            let key = if path == "." || path.is_empty() {
                name.to_string()
            } else {
                format!("{name}.{path}")
            };
            let message = e.to_string().lines().next().unwrap_or_default().to_string();
            issues.push(ConfigIssue { key, message });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_default_parses_to_the_built_in_defaults() {
        let c = Config::parse(DEFAULT_TOML, Path::new("/etc/turnbridge")).unwrap();
        let mut d = Config::default();
        // The one packaged value that differs: staging sits beside the Turnkey folders, so
        // it shares their mount under systemd.
        d.turnkey.staging = "/var/lib/turnkey/.turnbridge-staging".into();
        d.resolve(Path::new("/etc/turnbridge"));
        assert_eq!(c, d);
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let text = r#"
            colour = "blue"
            [einvoice]
            settle_ms = "fast"
            bogus = 1
            [einvoice.zip]
            max_membrs = 3
            [turnkey]
            inbox = "/tk/{msg}/SRC"
            [log]
            level = "loud"
        "#;
        let issues = Config::parse(text, Path::new("/")).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        for expected in [
            "colour",
            "einvoice.settle_ms",
            "einvoice.bogus",
            "einvoice.zip.max_membrs",
            "turnkey.inbox",
            "log.level",
        ] {
            assert!(
                keys.contains(&expected),
                "{expected} missing from {issues:#?}"
            );
        }
    }

    #[test]
    fn retention_days_are_checked_naming_the_key() {
        let text = "[retention]\nevents_days = 0\naudit_days = 40000\ntransitions_days = 10\n";
        let issues = Config::parse(text, Path::new("/")).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "retention.events_days",
                "retention.audit_days",
                "retention.transitions_days",
            ],
            "{issues:#?}"
        );
    }

    #[test]
    fn the_future_tolerance_is_checked_naming_the_key_and_reaches_the_checks() {
        let issues = Config::parse(
            "[einvoice]\nfuture_tolerance_secs = 86401\n",
            Path::new("/"),
        )
        .unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["einvoice.future_tolerance_secs"], "{issues:#?}");
        let c = Config::parse(
            "[einvoice]\nfuture_tolerance_secs = 60\nrefuse_late_cancels = false\n",
            Path::new("/"),
        )
        .unwrap();
        let time = c.read_options().time;
        assert_eq!(time.future_tolerance, chrono::Duration::seconds(60));
        assert!(!time.refuse_late_cancels);
        assert!(time.now.is_some(), "the daemon checks against the clock");
    }

    #[test]
    fn relative_paths_are_resolved_against_the_config_folder() {
        let text = "[paths]\nspool = \"spool\"\n[turnkey]\ninbox = \"tk/{message_type}\"\n";
        let c = Config::parse(text, Path::new("/srv/tb")).unwrap();
        assert_eq!(c.paths.spool, Path::new("/srv/tb/spool"));
        assert_eq!(c.turnkey.inbox, "/srv/tb/tk/{message_type}");
    }

    #[test]
    fn listener_limits_are_checked_each_under_its_own_key() {
        let text = "[http]\nrequest_timeout_ms = 0\nheader_timeout_ms = 0\nidle_timeout_ms = 0\n\
                    write_timeout_ms = 3600001\nmax_connection_age_ms = 999\nmax_connections = 0\n\
                    max_connections_per_peer = 0\nsend_buffer_bytes = 100\n";
        let issues = Config::parse(text, Path::new("/")).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "http.max_connections",
                "http.max_connections_per_peer",
                "http.request_timeout_ms",
                "http.header_timeout_ms",
                "http.idle_timeout_ms",
                "http.write_timeout_ms",
                "http.max_connection_age_ms",
                "http.send_buffer_bytes",
            ]
        );
        // The kernel's send buffer, and a per-peer cap above the total (no cap), are allowed.
        let ok =
            "[http]\nsend_buffer_bytes = 0\nmax_connections = 8\nmax_connections_per_peer = 64\n";
        let c = Config::parse(ok, Path::new("/")).unwrap();
        assert_eq!(
            (c.http.send_buffer_bytes, c.http.max_connections_per_peer),
            (0, 64)
        );
    }
}
