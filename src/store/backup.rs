//! Copies of the database: a consistent one taken while the daemon runs, and putting one back.
//!
//! A backup uses SQLite's online backup API from a read transaction, so it is one consistent
//! state even while the daemon writes (in WAL mode the writer never waits for it). A restore
//! checks the copy first (integrity, schema version) and never lowers a table's id sequence:
//! ids name the XML files Turnkey has already taken (`F0401_20261126_00000042.xml`), and a
//! restored database must not hand out a name twice.

use std::path::Path;

use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};

use super::{Result, StoreError, MIGRATIONS};

/// Writes a consistent copy of the database at `db` to `to` (which must not exist yet).
pub fn copy_online(db: &Path, to: &Path) -> Result<()> {
    let src =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            StoreError::Open {
                path: db.display().to_string(),
                source,
            }
        })?;
    src.busy_timeout(std::time::Duration::from_secs(10))?;
    let mut dst = Connection::open(to).map_err(|source| StoreError::Open {
        path: to.display().to_string(),
        source,
    })?;
    {
        let backup = Backup::new(&src, &mut dst)?;
        // All pages in one step: one read transaction, so one consistent state. A step that
        // could not read (busy or locked) copied nothing and says so only in its result.
        match backup.step(-1)? {
            rusqlite::backup::StepResult::Done => {}
            other => {
                return Err(StoreError::Task(format!(
                    "the copy of {} did not complete ({other:?}); try again",
                    db.display()
                )))
            }
        }
    }
    // A self-contained file: no -wal beside it to lose.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
}

/// What a database file holds, as far as a restore needs to know.
#[derive(Debug)]
pub struct Checked {
    /// Its schema version (`user_version`).
    pub schema: i64,
    /// Messages it knows.
    pub messages: i64,
    /// The id sequences of its tables (`sqlite_sequence`).
    pub sequences: Vec<(String, i64)>,
}

/// Opens `file` read-only and checks it is a whole turnbridge database this version can use.
pub fn check(file: &Path) -> Result<Checked> {
    let conn =
        Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            StoreError::Open {
                path: file.display().to_string(),
                source,
            }
        })?;
    let verdict: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(StoreError::Task(format!(
            "{} fails SQLite's integrity check: {verdict}",
            file.display()
        )));
    }
    let schema: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if schema > known {
        return Err(StoreError::TooNew {
            found: schema,
            known,
        });
    }
    if schema == 0 {
        return Err(StoreError::Task(format!(
            "{} is not a turnbridge database (no schema)",
            file.display()
        )));
    }
    let messages = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
    Ok(Checked {
        schema,
        messages,
        sequences: sequences(&conn)?,
    })
}

/// The id sequences of the database at `file`, read without checking the rest of it: a
/// damaged database usually still answers this, and the ids it handed out must not be handed
/// out again.
pub fn sequences_of(file: &Path) -> Result<Vec<(String, i64)>> {
    let conn =
        Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            StoreError::Open {
                path: file.display().to_string(),
                source,
            }
        })?;
    sequences(&conn)
}

fn sequences(conn: &Connection) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare("SELECT name, seq FROM sqlite_sequence ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Raises the id sequences of the database at `file` to at least `floors` (never lowers one),
/// so ids handed out after a restore are above every id used before it.
pub fn raise_sequences(file: &Path, floors: &[(String, i64)]) -> Result<()> {
    let mut conn = Connection::open(file).map_err(|source| StoreError::Open {
        path: file.display().to_string(),
        source,
    })?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (table, floor) in floors {
        let changed = tx.execute(
            "UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1 AND seq < ?2",
            rusqlite::params![table, floor],
        )?;
        let present: bool = tx.query_row(
            "SELECT count(*) > 0 FROM sqlite_sequence WHERE name = ?1",
            [table],
            |r| r.get(0),
        )?;
        if changed == 0 && !present {
            tx.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                rusqlite::params![table, floor],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}
