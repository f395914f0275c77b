//! Backing up the daemon's state while it runs, and restoring it with the daemon stopped.
//!
//! `turnbridge backup DIR` writes `DIR/turnbridge-<UTC time>.db`: one consistent copy of the
//! database (SQLite's online backup), owner-only, written to a temporary name, checked,
//! fsynced and renamed. The database is the state: every message, its evidence and its
//! events; the spool's archive and rejected folders are plain files an ordinary file backup
//! takes.
//!
//! `turnbridge restore FILE` refuses while a daemon holds the state (see [`RunningLock`]),
//! checks the copy, keeps the database it replaces beside it (`turnbridge.db.before-restore-…`,
//! with its `-wal` and `-shm`, also when only those are left), and puts the copy in place.
//! Ids never go back: each table's id sequence is raised to the highest of the copy's, the
//! replaced database's (read even when it is damaged), and the XML names found in Turnkey's
//! folders, so no XML name Turnkey has already taken is handed out again. Run as root, the
//! restored database is given the state folder's owner (the service user). Messages recorded after the backup are not in the restored state: a document sent
//! after it and dropped again would be sent again; the runbook says how to check.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::Utc;
use thiserror::Error;

use crate::config::Config;
use crate::store::backup::{self as copy, Checked};
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a turnbridge daemon is running on {state} (it holds {lock}); stop it first (systemctl stop turnbridge)")]
    Running { state: String, lock: String },
    #[error("{0} already exists; give a new name")]
    Exists(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An exclusive lock on `<database>.lock`, held by the running daemon for its lifetime: a
/// second daemon on the same state, or a restore, is refused while it is held. Released by
/// the kernel when the process ends, however it ends.
pub struct RunningLock {
    _file: File,
}

impl RunningLock {
    /// Takes the lock, or says who holds it.
    pub fn take(config: &Config) -> Result<RunningLock, BackupError> {
        let lock = lock_path(&config.database());
        if let Some(dir) = lock.parent() {
            crate::durable::create_dir_all(dir).map_err(io(dir))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock)
            .map_err(io(&lock))?;
        if let Some(dir) = lock.parent() {
            give_to_owner_of(&lock, dir)?;
        }
        // SAFETY: flock on a descriptor we own; released when it is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(BackupError::Running {
                    state: config.paths.state.display().to_string(),
                    lock: lock.display().to_string(),
                });
            }
            return Err(io(&lock)(e));
        }
        Ok(RunningLock { _file: file })
    }
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Writes a consistent copy of the database into `dir` and returns its path and contents.
pub fn backup(config: &Config, dir: &Path) -> Result<(PathBuf, Checked), BackupError> {
    crate::durable::create_dir_all(dir).map_err(io(dir))?;
    let name = format!("turnbridge-{}.db", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
    let dest = dir.join(&name);
    if dest.exists() {
        return Err(BackupError::Exists(dest.display().to_string()));
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    // Owner-only before SQLite writes a page into it: the copy holds the same secrets.
    create_owner_only(&tmp)?;
    // Checked before it gets its name: a copy under a backup's name is one a restore takes.
    let copied = copy::copy_online(&config.database(), &tmp)
        .and_then(|()| copy::check(&tmp))
        .map_err(BackupError::from)
        .and_then(|checked| {
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io(&tmp))?;
            std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
            Ok(checked)
        });
    let checked = match copied {
        Ok(checked) => checked,
        Err(e) => {
            // A failed copy leaves nothing behind: no partial file holding secrets, no copy
            // of a damaged database under a backup's name, and no leftovers piling up when
            // a timer retries a failing backup.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    crate::durable::fsync_dir(dir).map_err(io(dir))?;
    Ok((dest, checked))
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub from: Checked,
    /// Where the replaced database's files now are (this name, with `-wal` and `-shm` for
    /// those), if any of them was there.
    pub kept: Option<PathBuf>,
    /// The highest XML sequence number found in Turnkey's folders.
    pub highest_xml_seq: i64,
    /// What the operator should know: ids raised from less than everything.
    pub warnings: Vec<String>,
}

/// Puts the backup `file` in place of the database. The daemon must be stopped.
pub fn restore(config: &Config, file: &Path) -> Result<Restored, BackupError> {
    let _lock = RunningLock::take(config)?;
    let from = copy::check(file)?;
    let db = config.database();
    let mut floors = from.sequences.clone();
    let mut warnings = Vec::new();
    // The replaced database's sequences, when they can still be read (a damaged database
    // usually still answers this).
    if db.exists() {
        match copy::sequences_of(&db) {
            Ok(current) => floors.extend(current),
            Err(e) => warnings.push(format!(
                "the ids of the database being replaced cannot be read ({e}); ids are raised above the copy's and the XML names in Turnkey's folders only"
            )),
        }
    }
    let (highest_xml_seq, walked_all) = highest_xml_seq(config);
    if !walked_all {
        warnings.push(format!(
            "stopped looking for XML names in Turnkey's folders after {MAX_WALK} entries"
        ));
    }
    floors.push(("messages".into(), highest_xml_seq));

    let tmp = sibling(&db, ".restore.tmp");
    let _ = std::fs::remove_file(&tmp);
    create_owner_only(&tmp)?;
    // Run as root, the restored database is still the service user's (the state folder's
    // owner), as every file the daemon made there; SQLite gives its -wal and -shm the
    // database's owner.
    if let Some(dir) = db.parent() {
        give_to_owner_of(&tmp, dir)?;
    }
    copy::copy_online(file, &tmp)?;
    copy::raise_sequences(&tmp, &floors)?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;

    // Every file of the replaced database is moved aside, the database first: a -wal or -shm
    // left behind (the database file alone lost, or a restore stopped half-way) would be
    // replayed onto the restored copy by the next open.
    let present: Vec<(PathBuf, &str)> = crate::store::database_files(&db)
        .into_iter()
        .zip(["", "-wal", "-shm"])
        .filter(|(from, _)| from.symlink_metadata().is_ok())
        .collect();
    let kept = if present.is_empty() {
        None
    } else {
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let keep = sibling(&db, &format!(".before-restore-{stamp}"));
        for (_, suffix) in &present {
            let to = sibling(&keep, suffix);
            if to.symlink_metadata().is_ok() {
                return Err(BackupError::Exists(to.display().to_string()));
            }
        }
        for (from, suffix) in &present {
            let to = sibling(&keep, suffix);
            std::fs::rename(from, &to).map_err(io(&to))?;
        }
        Some(keep)
    };
    std::fs::rename(&tmp, &db).map_err(io(&db))?;
    if let Some(dir) = db.parent() {
        crate::durable::fsync_dir(dir).map_err(io(dir))?;
    }
    // Opening it brings a copy from an older version up to date, and records the marker.
    crate::store::Store::open(&db)?;
    Ok(Restored {
        from,
        kept,
        highest_xml_seq,
        warnings,
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// When run as root, gives `path` the owner and group of the folder `dir`; otherwise the
/// file is already its creator's, the same user as the daemon's.
fn give_to_owner_of(path: &Path, dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let owner = std::fs::metadata(dir).map_err(io(dir))?;
    std::os::unix::fs::lchown(path, Some(owner.uid()), Some(owner.gid())).map_err(io(path))
}

fn create_owner_only(path: &Path) -> Result<(), BackupError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::filemode::DATABASE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(path))?;
    f.set_permissions(std::fs::Permissions::from_mode(
        crate::filemode::DATABASE_MODE,
    ))
    .map_err(io(path))
}

/// Folder entries looked at, at most, for XML names (Turnkey keeps its BAK folders by date;
/// years of them are well under this).
const MAX_WALK: usize = 5_000_000;

/// The highest sequence number in an XML name turnbridge wrote
/// (`<type>_<yyyymmdd>_<seq>.xml`, also inside Turnkey's pack names) anywhere under the
/// pickup folder's fixed root, the error and outbox folders and the staging folder; false
/// when it stopped at [`MAX_WALK`] entries.
fn highest_xml_seq(config: &Config) -> (i64, bool) {
    let mut roots = vec![config.turnkey.staging.clone()];
    if let Ok(t) = crate::turnkey::InboxTemplate::parse(&config.turnkey.inbox) {
        roots.push(t.fixed_root());
    }
    roots.push(config.turnkey.error.clone());
    roots.push(config.turnkey.outbox.clone());
    let mut highest = 0;
    let mut seen = 0usize;
    let mut stack: Vec<(PathBuf, u32)> = roots.into_iter().map(|r| (r, 0)).collect();
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                return (highest, false);
            }
            let name = entry.file_name();
            if let Some(seq) = xml_seq(&name.to_string_lossy()) {
                highest = highest.max(seq);
            }
            // Not following links: the folders are Turnkey's own tree.
            if depth < 8 && entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    (highest, true)
}

/// The sequence number of the last `<type>_<yyyymmdd>_<8 digits>.xml` in `name`.
fn xml_seq(name: &str) -> Option<i64> {
    let b = name.as_bytes();
    let mut best = None;
    // `F0401_20261126_00000042.xml` is 27 bytes: letter, 4 digits, `_`, 8 digits, `_`,
    // 8 or more digits, `.xml`.
    for (i, _) in name.match_indices(".xml") {
        let digits = b[..i]
            .iter()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits < 8 {
            continue;
        }
        let seq_start = i - digits;
        let head = &b[..seq_start];
        let ok = head.len() >= 15
            && head[head.len() - 1] == b'_'
            && head[head.len() - 9..head.len() - 1]
                .iter()
                .all(u8::is_ascii_digit)
            && head[head.len() - 10] == b'_'
            && head[head.len() - 14..head.len() - 10]
                .iter()
                .all(u8::is_ascii_digit)
            && head[head.len() - 15].is_ascii_uppercase();
        if ok {
            best = name[seq_start..i].parse().ok().or(best);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::xml_seq;

    #[test]
    fn xml_names_give_their_sequence_also_inside_pack_names() {
        assert_eq!(xml_seq("F0401_20261126_00000042.xml"), Some(42));
        assert_eq!(xml_seq("G0501_20261126_123456789.xml"), Some(123456789));
        assert_eq!(
            xml_seq(
                "F0401_20261126_00000042.xml_12345678_00000000_v41-F0401-20261126-101010101-uuid_3"
            ),
            Some(42)
        );
        assert_eq!(xml_seq("F0401_20261126_00000042.xml.001"), Some(42));
        for not in [
            "F0401_2026112_00000042.xml",
            "f0401_20261126_00000042.xml",
            "F0401_20261126_0000042.xml",
            "notes.xml",
            "",
        ] {
            assert_eq!(xml_seq(not), None, "{not}");
        }
    }
}
