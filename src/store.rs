//! The SQLite store: jobs, messages, their state transitions, and the events outbox.
//!
//! One file, WAL mode, `synchronous=FULL`: a commit is on disk before the next file operation
//! that depends on it. Every state change and the events it raises are written in one
//! transaction, so an event exists exactly when its change does.
//!
//! Messages are unique by (type, seller, number, generation): a re-run after a crash finds the
//! row and never writes a second XML for it, and a message sent again (after an error, or a
//! void) is a new generation beside the earlier ones ([`messages::insert`]).
//!
//! The tables of e-invoice work each have their module: [`jobs`], [`messages`] (a message's
//! state changes only through [`messages::transition`], with its event), [`feedback`]
//! (Turnkey's files, summaries and packs) and [`events`] (the outbox, written with typed
//! payloads). Their states are types ([`states`]).
//!
//! The database holds secrets (NextEngine tokens, webhook secrets): it and its `-wal` and
//! `-shm` files are owner-only (0600) whatever the umask, and deleted or overwritten content
//! is zeroed in the file (`secure_delete`). Every table is bounded by a rule in
//! [`crate::retention`].

use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction};
use thiserror::Error;

pub mod events;
pub mod feedback;
pub mod jobs;
pub mod manual;
pub mod messages;
pub mod states;
mod transitions;

pub use jobs::Job;
pub use messages::{MessageRow, NewMessage};
pub use states::{Basis, JobState, MessageState};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this turnbridge knows ({known}); upgrade turnbridge")]
    TooNew { found: i64, known: i64 },
    #[error("database task failed: {0}")]
    Task(String),
    #[error(
        "a write outside a transaction that holds the write lock (begin it with Store::write)"
    )]
    NotLocked,
    #[error("message {0} is not in the database")]
    NoMessage(i64),
    #[error("message {id} is {found}, not {expected} as its change assumed")]
    Stale {
        id: i64,
        expected: MessageState,
        found: MessageState,
    },
    #[error("message {id} cannot go from {from} to {to}")]
    NotAllowed {
        id: i64,
        from: MessageState,
        to: MessageState,
    },
    #[error("database migration {version} failed: {reason}")]
    Migration { version: i64, reason: String },
    #[error("database {path} is missing, but {marker} says this state folder had one: restore the database (or, to start afresh on purpose, remove {marker}); a new database would number XML files from 1 again, under names Turnkey has already taken")]
    Missing { path: String, marker: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Schema migrations, applied in order; the index + 1 is the `user_version` after each.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    source_name   TEXT NOT NULL,
    md5           TEXT NOT NULL,
    size          INTEGER NOT NULL,
    state         TEXT NOT NULL,          -- claimed | done | rejected | duplicate
    duplicate_of  TEXT,
    reason        TEXT,
    success_count INTEGER NOT NULL DEFAULT 0,
    error_count   INTEGER NOT NULL DEFAULT 0,
    final_path    TEXT,                   -- archive or rejected path of the source file
    received_at   TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX jobs_md5 ON jobs(md5);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL REFERENCES jobs(id),
    message_type  TEXT NOT NULL,
    legacy_type   TEXT,
    seller_ban    TEXT NOT NULL,
    number        TEXT NOT NULL,
    document_date TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    source_file   TEXT NOT NULL,
    source_row    INTEGER NOT NULL,
    amount        TEXT,                   -- untaxed total of an invoice or allowance
    state         TEXT NOT NULL,          -- validated | queued | picked_up | acked | error
    staged        INTEGER NOT NULL DEFAULT 0,
    xml_name      TEXT NOT NULL DEFAULT '',
    xml_path      TEXT,
    xml_md5       TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (message_type, seller_ban, number)
);
CREATE INDEX messages_job ON messages(job_id);
CREATE INDEX messages_state ON messages(state);

CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    at          TEXT NOT NULL,
    evidence    TEXT
);
CREATE INDEX transitions_message ON transitions(message_id);

CREATE TABLE allowance_lines (
    message_id        INTEGER NOT NULL REFERENCES messages(id),
    seller_ban        TEXT NOT NULL,
    original_invoice  TEXT NOT NULL,
    amount            TEXT NOT NULL
);
CREATE INDEX allowance_lines_invoice ON allowance_lines(seller_ban, original_invoice);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event       TEXT NOT NULL,
    tenant      TEXT,
    payload     TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE messages ADD COLUMN mof_code TEXT;
ALTER TABLE messages ADD COLUMN status_message TEXT;
ALTER TABLE messages ADD COLUMN overdue_raised INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_xml_name ON messages(xml_name);
CREATE INDEX messages_number ON messages(number);

-- Every file read from Turnkey's folders, once: a file seen again (same path and content)
-- is not applied again.
CREATE TABLE feedback_files (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    path        TEXT NOT NULL,
    md5         TEXT NOT NULL,
    kind        TEXT NOT NULL,   -- bak | err | summary | process | ack | error | daily | foreign | rejected
    outcome     TEXT NOT NULL,
    kept_at     TEXT,            -- where turnbridge keeps it (result files), NULL if left in place
    seen_at     TEXT NOT NULL,
    UNIQUE (path, md5)
);

CREATE TABLE summaries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    feedback_id   INTEGER NOT NULL REFERENCES feedback_files(id),
    summary_id    TEXT,
    message_type  TEXT,
    date          TEXT,
    expected      INTEGER NOT NULL,
    total         INTEGER NOT NULL,
    good          INTEGER NOT NULL,
    failed        INTEGER NOT NULL,
    mismatch      TEXT,
    at            TEXT NOT NULL
);
"#,
    r#"
-- The rendered XML is kept until the message is queued, so a resumed job stages exactly what
-- was recorded; staged_path is where it was staged.
ALTER TABLE messages ADD COLUMN xml BLOB;
ALTER TABLE messages ADD COLUMN staged_path TEXT;
"#,
    r#"
-- NextEngine stock callbacks: every accepted level once (a replayed ts + signature is refused).
CREATE TABLE stock_updates (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    store_account TEXT NOT NULL,
    code          TEXT NOT NULL,
    stock         INTEGER,          -- NULL: sent empty (made-to-order, unlimited)
    ts            TEXT NOT NULL,
    sig           TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    sink_state    TEXT NOT NULL,    -- recorded | pending (to forward)
    UNIQUE (store_account, ts, sig)
);
-- Every callback request, accepted or not.
CREATE TABLE inventory_logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    remote        TEXT,
    store_account TEXT,
    code          TEXT,
    stock         TEXT,
    ts            TEXT,
    outcome       TEXT NOT NULL,
    processed     INTEGER NOT NULL,
    reason        TEXT
);
-- Company-system pushes, each stored once.
CREATE TABLE company_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type    TEXT NOT NULL,
    business_key  TEXT NOT NULL,
    content_md5   TEXT NOT NULL,
    payload       TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    UNIQUE (event_type, business_key, content_md5)
);
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    action      TEXT NOT NULL,
    subject     TEXT,
    detail      TEXT,
    request_id  TEXT,
    at          TEXT NOT NULL
);
"#,
    r#"
-- Outbound webhooks: endpoints, one delivery per (event, endpoint), every attempt.
ALTER TABLE events ADD COLUMN fanned_out INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_fan ON events(fanned_out);
CREATE TABLE webhook_endpoints (
    id                TEXT PRIMARY KEY,
    url               TEXT NOT NULL,
    events            TEXT NOT NULL,     -- JSON array of event names; ["*"] for all
    secret            TEXT NOT NULL,
    old_secret        TEXT,              -- still signs until old_secret_until (rotation)
    old_secret_until  TEXT,
    description       TEXT,
    enabled           INTEGER NOT NULL DEFAULT 1,
    disabled_reason   TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,   -- delivery_id, the same on every attempt
    event_id         INTEGER NOT NULL REFERENCES events(id),
    endpoint_id      TEXT NOT NULL,
    event            TEXT NOT NULL,
    tenant           TEXT,
    payload          TEXT NOT NULL,      -- the exact body sent
    state            TEXT NOT NULL,      -- pending | succeeded | dead | cancelled
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries(state, next_attempt_at);
CREATE TABLE delivery_attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  TEXT NOT NULL REFERENCES deliveries(id),
    attempt      INTEGER NOT NULL,
    trigger      TEXT NOT NULL,          -- scheduled | manual
    started_at   TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    status       INTEGER,
    error        TEXT,
    response     TEXT                    -- first 2 KiB of the response body
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id);
"#,
    r#"
-- NextEngine accounts and their tokens. Tokens are stored as NextEngine returns them, after
-- every response that carries them (errors included), before anything else happens.
CREATE TABLE nextengine_accounts (
    id                      TEXT PRIMARY KEY,   -- company_ne_id (or uid when absent)
    uid                     TEXT,
    company_name            TEXT,
    access_token            TEXT NOT NULL,
    refresh_token           TEXT NOT NULL,
    access_token_end_date   TEXT,               -- as returned ("YYYY-MM-DD HH:MM:SS", JST)
    refresh_token_end_date  TEXT,
    access_expires_at       TEXT NOT NULL,      -- RFC 3339 UTC, from the dates or issue time + 1 day
    refresh_expires_at      TEXT NOT NULL,      -- ... or issue time + 3 days
    needs_login             INTEGER NOT NULL DEFAULT 0,
    last_call_at            TEXT,
    last_call               TEXT,
    last_error              TEXT,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
"#,
    r#"
-- NextEngine spool jobs: a goods or stock file, its upload CSV, and NextEngine's queue id.
CREATE TABLE ne_jobs (
    id                 TEXT PRIMARY KEY,
    kind               TEXT NOT NULL,        -- goods | stock
    source_name        TEXT NOT NULL,
    state              TEXT NOT NULL,        -- claimed | uploading | queued | done | failed | unknown | rejected
    csv                BLOB,
    csv_md5            TEXT,
    upload_started_at  TEXT,
    que_id             TEXT,
    rejected_rows      INTEGER NOT NULL DEFAULT 0,
    result             TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
"#,
    r#"
-- The deliverer takes each endpoint's next due deliveries from here without sorting the
-- whole backlog.
CREATE INDEX deliveries_endpoint_due ON deliveries(state, endpoint_id, next_attempt_at, created_at);
"#,
    r#"
-- The documents of each Turnkey upload (a merged pack), in pack order (Turnkey's SEQNO
-- order), so a ProcessResult about the upload reaches exactly its messages. message_id is
-- NULL for a document that is not turnbridge's. Pruned after turnkey.retention_days.
CREATE TABLE turnkey_packs (
    uuid          TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    message_type  TEXT NOT NULL,
    number        TEXT NOT NULL,
    message_id    INTEGER REFERENCES messages(id),
    pack_file     TEXT NOT NULL,
    seen_at       TEXT NOT NULL,
    PRIMARY KEY (uuid, seq)
);
CREATE INDEX turnkey_packs_seen ON turnkey_packs(seen_at);
"#,
    r#"
-- How many times a file was started on without its messages being recorded: a file that
-- keeps killing the daemon (out of memory, a crash) is set aside instead of resumed forever.
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- NextEngine sign-ins an operator started (CLI `nextengine login`, or /auth/ne with the admin
-- token): /auth/callback connects an account only for one of these, once, within minutes.
CREATE TABLE ne_logins (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  TEXT NOT NULL,
    used_at     TEXT
);
"#,
    r#"
-- An index for every lookup by hash, name or time, and for the retention rules' scans (oldest
-- first). Only indexes on the tables above, so it applies after any other migration.
CREATE INDEX IF NOT EXISTS feedback_files_md5 ON feedback_files(md5);
CREATE INDEX IF NOT EXISTS feedback_files_kind ON feedback_files(kind, seen_at);
CREATE INDEX IF NOT EXISTS feedback_files_seen ON feedback_files(seen_at);
CREATE INDEX IF NOT EXISTS summaries_feedback ON summaries(feedback_id);
CREATE INDEX IF NOT EXISTS summaries_at ON summaries(at);
CREATE INDEX IF NOT EXISTS messages_tenant ON messages(tenant);
CREATE INDEX IF NOT EXISTS messages_type_state ON messages(message_type, state);
CREATE INDEX IF NOT EXISTS transitions_state_at ON transitions(to_state, at);
CREATE INDEX IF NOT EXISTS transitions_at ON transitions(at);
CREATE INDEX IF NOT EXISTS events_fanned_created ON events(fanned_out, created_at);
CREATE INDEX IF NOT EXISTS deliveries_final ON deliveries(state, updated_at);
CREATE INDEX IF NOT EXISTS delivery_attempts_started ON delivery_attempts(started_at);
CREATE INDEX IF NOT EXISTS stock_updates_code ON stock_updates(code);
CREATE INDEX IF NOT EXISTS stock_updates_received ON stock_updates(sink_state, received_at);
CREATE INDEX IF NOT EXISTS inventory_logs_received ON inventory_logs(received_at);
CREATE INDEX IF NOT EXISTS inventory_logs_outcome ON inventory_logs(outcome);
CREATE INDEX IF NOT EXISTS company_events_received ON company_events(received_at);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action, at);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at);
-- Only jobs that sent nothing can ever go: this index leaves out the (growing) rest, so the
-- retention scan never walks them.
CREATE INDEX IF NOT EXISTS jobs_prunable ON jobs(state, finished_at) WHERE success_count = 0;
CREATE INDEX IF NOT EXISTS ne_jobs_state ON ne_jobs(state, updated_at);
CREATE INDEX IF NOT EXISTS ne_jobs_que ON ne_jobs(que_id);
CREATE INDEX IF NOT EXISTS ne_logins_started ON ne_logins(started_at);
"#,
    r#"
-- The NextEngine account a job is uploaded to: an upload in doubt is looked for, and a queued
-- one followed, in that account's queue even after nextengine.account names another (NULL:
-- a job from before, which follows the account chosen now).
ALTER TABLE ne_jobs ADD COLUMN account TEXT;
"#,
    r#"
-- Failed reads of a claimed file (no permission, an I/O error), counted apart from
-- `attempts` (starts that died while reading it): each sets the file aside on its own count.
ALTER TABLE jobs ADD COLUMN read_failures INTEGER NOT NULL DEFAULT 0;
-- A final state turnbridge inferred (a ProcessResult error naming no document marks its whole
-- upload): a verdict naming the invoice overrules it.
ALTER TABLE messages ADD COLUMN guessed INTEGER NOT NULL DEFAULT 0;
-- The SummaryResult (its Message/Info/Id) that last judged the message: the same summary read
-- again changes nothing and raises nothing.
ALTER TABLE messages ADD COLUMN summary_id TEXT;
"#,
    r#"
-- The events a pending delivery waits to deliver, counted at each /metrics scrape (the
-- outbox gauge) from this index alone, however long the backlog.
CREATE INDEX IF NOT EXISTS deliveries_state_event ON deliveries(state, event_id);
"#,
    r#"
-- Generations: a message may be sent again (a corrected drop or `turnbridge invoice resend`
-- after an error; the same number issued again after a void), each time as a new row, the
-- earlier ones kept with their transitions. Messages become unique by type, seller, number
-- and generation. SQLite cannot change a UNIQUE constraint in place, so the table is rebuilt:
-- ids (and with them the XML file names) carry over, and so does AUTOINCREMENT's counter, so
-- no id is ever given out twice. The buyer is kept too, so a cancel or void can be written
-- from what the store knows.
CREATE TABLE messages_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         TEXT NOT NULL REFERENCES jobs(id),
    message_type   TEXT NOT NULL,
    legacy_type    TEXT,
    seller_ban     TEXT NOT NULL,
    number         TEXT NOT NULL,
    generation     INTEGER NOT NULL DEFAULT 1,
    buyer_id       TEXT,
    document_date  TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    source_file    TEXT NOT NULL,
    source_row     INTEGER NOT NULL,
    amount         TEXT,
    state          TEXT NOT NULL,
    staged         INTEGER NOT NULL DEFAULT 0,
    xml_name       TEXT NOT NULL DEFAULT '',
    xml_path       TEXT,
    xml_md5        TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    mof_code       TEXT,
    status_message TEXT,
    overdue_raised INTEGER NOT NULL DEFAULT 0,
    xml            BLOB,
    staged_path    TEXT,
    guessed        INTEGER NOT NULL DEFAULT 0,
    summary_id     TEXT,
    UNIQUE (message_type, seller_ban, number, generation)
);
INSERT INTO messages_new (id, job_id, message_type, legacy_type, seller_ban, number,
        document_date, tenant, source_file, source_row, amount, state, staged, xml_name,
        xml_path, xml_md5, created_at, updated_at, mof_code, status_message, overdue_raised,
        xml, staged_path, guessed, summary_id)
    SELECT id, job_id, message_type, legacy_type, seller_ban, number, document_date, tenant,
        source_file, source_row, amount, state, staged, xml_name, xml_path, xml_md5,
        created_at, updated_at, mof_code, status_message, overdue_raised, xml, staged_path,
        guessed, summary_id
    FROM messages ORDER BY id;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'messages_new', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages_new');
UPDATE sqlite_sequence
    SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0))
    WHERE name = 'messages_new';
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_job ON messages(job_id);
CREATE INDEX messages_state ON messages(state);
CREATE INDEX messages_xml_name ON messages(xml_name);
CREATE INDEX messages_number ON messages(number);
CREATE INDEX messages_tenant ON messages(tenant);
CREATE INDEX messages_type_state ON messages(message_type, state);

-- Operators' requests (`turnbridge invoice cancel|void|reissue|resend`): each writes one file
-- into the spool; the job that takes a file of that name and content is the request's, and
-- raises invoice.manual.cancelled or invoice.manual.issued with the message it records.
-- Kept for good with the messages they made (a few per operator action).
CREATE TABLE manual_requests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    action        TEXT NOT NULL,          -- cancel | void | reissue | resend
    message_type  TEXT NOT NULL,
    seller_ban    TEXT NOT NULL,
    number        TEXT NOT NULL,
    reason        TEXT,
    requested_by  TEXT NOT NULL,
    requested_at  TEXT NOT NULL,
    file_name     TEXT NOT NULL,          -- the spool file it wrote
    md5           TEXT NOT NULL,          -- of that file's bytes
    job_id        TEXT,                   -- the job that took the file
    message_id    INTEGER REFERENCES messages(id),
    refusal       TEXT                    -- why the job refused its message
);
CREATE UNIQUE INDEX manual_requests_file ON manual_requests(file_name);
CREATE INDEX manual_requests_job ON manual_requests(job_id);
CREATE INDEX manual_requests_message ON manual_requests(message_id);
"#,
    r#"
-- A NextEngine sign-in is bound to the browser that started it: the SHA-256 of a one-time
-- ticket (`nextengine login`) or of the nonce a browser keeps as a cookie (/auth/ne); the
-- callback takes only the sign-in of the cookie it brings. Rows from before have neither and
-- can no longer be taken.
ALTER TABLE ne_logins ADD COLUMN ticket_hash TEXT;
ALTER TABLE ne_logins ADD COLUMN nonce_hash TEXT;
CREATE UNIQUE INDEX ne_logins_ticket ON ne_logins(ticket_hash);
CREATE UNIQUE INDEX ne_logins_nonce ON ne_logins(nonce_hash);
"#,
];

/// The current time as the store writes it (RFC 3339, UTC, milliseconds).
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub struct Store {
    conn: Connection,
}

/// A store used from async tasks: each operation runs on the blocking pool, one at a time,
/// so SQLite never blocks the async threads.
#[derive(Clone)]
pub struct Shared(std::sync::Arc<std::sync::Mutex<Store>>);

impl Shared {
    pub fn new(store: Store) -> Shared {
        Shared(std::sync::Arc::new(std::sync::Mutex::new(store)))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&mut me.lock()))
            .await
            .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())))
    }
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    /// Opens (or, in a state folder that never had one, creates) the database. A database
    /// that disappeared is never silently recreated: a marker beside it records that it was
    /// created, and its absence then refuses to open.
    pub fn open(path: &Path) -> Result<Store> {
        let marker = Self::marker(path);
        if !path.exists() && marker.exists() {
            return Err(StoreError::Missing {
                path: path.display().to_string(),
                marker: marker.display().to_string(),
            });
        }
        let store = Self::open_existing_or_new(path)?;
        if !marker.exists() {
            let _ = crate::durable::write_atomic(
                &marker,
                b"turnbridge created its database here; see Store::open\n",
            );
        }
        Ok(store)
    }

    /// The marker that says a database was created beside it.
    fn marker(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".created");
        path.with_file_name(name)
    }

    fn open_existing_or_new(path: &Path) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        // Created owner-only before SQLite opens it: SQLite creates the -wal and -shm files
        // with the database's own mode.
        create_owner_only(path).map_err(|e| open_err(io_error(e)))?;
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Deleted and overwritten content (pruned rows, removed webhook secrets, replaced
        // tokens) is zeroed in the file, not left in free space.
        conn.pragma_update(None, "secure_delete", "ON")?;
        let mut store = Store { conn };
        store.migrate()?;
        // A database made by an earlier version (or under a looser umask) is narrowed too.
        for file in database_files(path) {
            if let Err(e) = crate::filemode::owner_only(&file) {
                tracing::warn!(file = %file.display(), "cannot make the database owner-only: {e}");
            }
        }
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        if version == known {
            return Ok(());
        }
        // A migration may rebuild a table others refer to (SQLite's way to change a
        // constraint): foreign keys are off while migrations run (the pragma is a no-op inside
        // a transaction), and each migration commits only if every reference still holds.
        self.conn.pragma_update(None, "foreign_keys", "OFF")?;
        let migrated = (|| -> Result<()> {
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                let tx = self.conn.transaction()?;
                tx.execute_batch(sql)?;
                let broken: Option<String> = tx
                    .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                    .optional()?;
                if let Some(table) = broken {
                    return Err(StoreError::Migration {
                        version: i as i64 + 1,
                        reason: format!("a row of {table} refers to one that is gone"),
                    });
                }
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
                tx.commit()?;
            }
            Ok(())
        })();
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        migrated
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Runs `f` in one write transaction that takes the write lock first, and commits it;
    /// nothing `f` wrote is kept when it fails.
    pub fn write<T>(&mut self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let tx = self.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// A write transaction. It takes the write lock at once (`BEGIN IMMEDIATE`), so a
    /// transaction that reads before it writes waits for another writer instead of failing
    /// with "database is locked".
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }
}

/// The database and the -wal and -shm files SQLite keeps beside it.
pub fn database_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Creates an empty database file, mode 0600, unless one is there.
fn create_owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::filemode::DATABASE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn io_error(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
        Some(e.to_string()),
    )
}

pub mod audit;
pub mod backup;
pub mod deliveries;
pub mod endpoints;
pub mod gauges;
pub mod inbound;
pub mod ne_accounts;
pub mod ne_jobs;
pub mod ne_logins;
pub mod outbox;
#[cfg(test)]
mod plans;
pub mod readers;
pub mod timestamp;
pub mod writer;

pub use readers::open_read_only;
pub use timestamp::Timestamp;

/// What the store's read functions read through: the store's own connection, a read-only
/// one ([`open_read_only`], the [`readers`]), or a transaction (which sees its own writes).
pub trait Readable {
    fn connection(&self) -> &Connection;
}

impl Readable for Connection {
    fn connection(&self) -> &Connection {
        self
    }
}

impl Readable for Transaction<'_> {
    fn connection(&self) -> &Connection {
        self
    }
}

impl Readable for Store {
    fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Refuses a write in a transaction that does not hold the write lock: every store function
/// that writes checks this first, so a transaction that reads before it writes (and would
/// fail with "database is locked" when another writer got in between) cannot be built from
/// them. [`Store::write`], [`Store::transaction`] and the [`writer`] begin theirs holding it.
pub(crate) fn write_locked(tx: &Transaction) -> Result<()> {
    match tx.transaction_state(None)? {
        rusqlite::TransactionState::Write => Ok(()),
        _ => Err(StoreError::NotLocked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database made before generations: its messages keep their ids (and XML names), the
    /// counter that hands out ids never goes back, every reference to them still holds, and a
    /// message may now be recorded again as its next generation (never twice as one).
    #[test]
    fn the_generations_migration_keeps_ids_references_and_the_id_counter() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("turnbridge.db");
        let before = MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE messages_new"))
            .unwrap();
        {
            let conn = Connection::open(&db).unwrap();
            for m in &MIGRATIONS[..before] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", before as i64)
                .unwrap();
            conn.execute_batch(
                "INSERT INTO jobs (id, kind, source_name, md5, size, state, received_at)
                     VALUES ('j', 'einvoice', 'b.csv', 'm', 1, 'done', 't');
                 INSERT INTO messages (id, job_id, message_type, seller_ban, number, document_date,
                     tenant, source_file, source_row, amount, state, xml_name, created_at, updated_at)
                     VALUES (7, 'j', 'F0401', '28080623', 'AB00000001', '2026-11-26', 'default',
                             'b.csv', 2, '100', 'error', 'F0401_20261126_00000007.xml', 't', 't'),
                            (9, 'j', 'G0401', '28080623', 'AL1', '2026-11-27', 'default',
                             'b.csv', 3, '10', 'acked', 'G0401_20261127_00000009.xml', 't', 't');
                 INSERT INTO transitions (message_id, from_state, to_state, at) VALUES (7, 'received', 'validated', 't');
                 INSERT INTO allowance_lines (message_id, seller_ban, original_invoice, amount)
                     VALUES (9, '28080623', 'AB00000001', '10');
                 INSERT INTO turnkey_packs (uuid, seq, message_type, number, message_id, pack_file, seen_at)
                     VALUES ('u', 1, 'F0401', 'AB00000001', 7, 'p', 't');
                 -- A message recorded once with id 40 and gone since: ids stay above it.
                 UPDATE sqlite_sequence SET seq = 40 WHERE name = 'messages';",
            )
            .unwrap();
        }
        let mut store = Store::open(&db).unwrap();
        let conn = store.conn();
        let m = messages::by_id(conn, 7).unwrap().unwrap();
        assert_eq!(
            (
                m.generation,
                m.xml_name.as_str(),
                m.state,
                m.buyer_id.as_deref()
            ),
            (1, "F0401_20261126_00000007.xml", MessageState::Error, None)
        );
        assert_eq!(messages::transitions_of(conn, 7).unwrap().len(), 1);
        let fk: Vec<String> = conn
            .prepare("PRAGMA foreign_key_check")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(fk.is_empty(), "{fk:?}");
        let on: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(on, 1, "foreign keys are enforced again");
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' AND name LIKE 'messages_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 6, "every index of messages is back");

        let again = |generation| NewMessage {
            job_id: "j",
            message_type: "F0401",
            legacy_type: None,
            seller_ban: "28080623",
            number: "AB00000001",
            generation,
            buyer_id: "0000000000",
            document_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
            tenant: "default",
            source_file: "c.csv",
            source_row: 2,
            amount: None,
            xml: b"<x/>",
            xml_md5: "m",
        };
        let tx = store.transaction().unwrap();
        let id = messages::insert(&tx, &again(2), |id| format!("F0401_{id}.xml")).unwrap();
        assert_eq!(id, 41, "never an id handed out before");
        assert!(
            messages::insert(&tx, &again(2), |id| format!("F0401_{id}.xml")).is_err(),
            "one row per generation"
        );
        tx.commit().unwrap();
        let latest = messages::by_key(store.conn(), "F0401", "28080623", "AB00000001").unwrap();
        assert_eq!(latest.map(|m| (m.id, m.generation)), Some((41, 2)));
        assert_eq!(
            messages::standing_allowances(store.conn(), "28080623", "AB00000001").unwrap(),
            [("AL1".to_string(), "10".to_string())]
        );
    }

    #[test]
    fn a_database_that_disappeared_is_not_silently_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("turnbridge.db");
        drop(Store::open(&db).unwrap());
        assert!(Store::open(&db).is_ok(), "reopens as usual");
        for f in ["turnbridge.db", "turnbridge.db-wal", "turnbridge.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let e = Store::open(&db).err().expect("refused");
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
        assert!(!db.exists(), "no empty database was made");
        // Removing the marker is the way to start afresh on purpose.
        std::fs::remove_file(dir.path().join("turnbridge.db.created")).unwrap();
        assert!(Store::open(&db).is_ok());
    }

    #[test]
    fn the_database_and_its_wal_and_shm_are_owner_only_even_when_they_were_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("turnbridge.db");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let store = Store::open(&db).unwrap();
        let files = database_files(&db);
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        // As an earlier version (or a looser umask) left them.
        for f in &files {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let again = Store::open(&db).unwrap();
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        drop((store, again));
    }
}
