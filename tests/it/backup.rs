//! `turnbridge backup` while the daemon runs, `turnbridge restore` with it stopped: the copy
//! is consistent and owner-only, a restore (or a second daemon) is refused while a daemon
//! holds the state, and after a restore no XML name is handed out twice, whether the replaced
//! database was still there or lost.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use turnbridge::store::JobState;

fn turnbridge(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// The sequence numbers of the XML names in the inbox (`F0401_20261126_00000042.xml`).
fn inbox_seqs(sb: &Sandbox) -> Vec<i64> {
    let mut seqs: Vec<i64> = sb
        .inbox_files()
        .iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            name.rsplit('_').next().unwrap().parse().unwrap()
        })
        .collect();
    seqs.sort();
    seqs
}

fn known(sb: &Sandbox, number: &str) -> bool {
    turnbridge(&sb.config_path(), &["history", number])
        .status
        .success()
}

/// Runs the scenario; `lose_database` removes the database before the restore.
fn backup_then_restore(lose_database: bool) {
    let mut sb = Sandbox::new();
    sb.start();
    sb.drop_file("a.csv", batch_csv("AB", 1, 3).as_bytes());
    wait_for(30, "three files in the inbox", || {
        sb.inbox_files().len() == 3
    });

    let backups = sb.path().join("backups");
    let out = cli(&sb.config_path(), &["backup", backups.to_str().unwrap()]);
    let copy = PathBuf::from(out.trim());
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy holds secrets: owner-only");

    // While the daemon runs, a restore is refused and so is a second daemon.
    let refused = turnbridge(&sb.config_path(), &["restore", copy.to_str().unwrap()]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("daemon is running"), "{why}");
    let second = turnbridge(&sb.config_path(), &["run"]);
    assert!(!second.status.success(), "a second daemon started");
    let why = String::from_utf8_lossy(&second.stderr);
    assert!(why.contains("daemon is running"), "{why}");

    // After the backup, two more invoices.
    sb.drop_file("b.csv", batch_csv("AB", 4, 2).as_bytes());
    wait_for(30, "five files in the inbox", || {
        sb.inbox_files().len() == 5
    });
    let before = inbox_seqs(&sb);
    assert_eq!(sb.terminate().code(), Some(0));

    let db = sb.state().join("turnbridge.db");
    if lose_database {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
    let out = cli(&sb.config_path(), &["restore", copy.to_str().unwrap()]);
    assert!(out.contains("restored"), "{out}");
    let kept: Vec<PathBuf> = files_in(&sb.state())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".before-restore-"))
        .collect();
    assert_eq!(
        !kept.is_empty(),
        !lose_database,
        "the replaced database is kept beside it: {kept:?}"
    );

    // The restored state is the backup's: the first batch, not the second.
    assert!(known(&sb, "AB00000001"));
    assert!(
        !known(&sb, "AB00000004"),
        "AB00000004 came after the backup"
    );

    // The daemon starts on it, and new messages get names never used before.
    sb.start();
    sb.drop_file("c.csv", batch_csv("AC", 1, 2).as_bytes());
    wait_for(30, "seven files in the inbox", || {
        sb.inbox_files().len() == 7
    });
    let after = inbox_seqs(&sb);
    let new: Vec<i64> = after
        .iter()
        .filter(|s| !before.contains(s))
        .copied()
        .collect();
    assert_eq!(
        new.len(),
        2,
        "{before:?} → {after:?}: an XML name was reused"
    );
    let highest = *before.iter().max().unwrap();
    assert!(
        new.iter().all(|s| *s > highest),
        "{new:?} not above {highest}"
    );
}

#[test]
fn a_backup_restores_over_the_database_it_replaces_and_ids_never_go_back() {
    backup_then_restore(false);
}

#[test]
fn a_backup_restores_after_the_database_is_lost_and_ids_never_go_back() {
    backup_then_restore(true);
}

#[test]
fn a_file_that_is_not_a_turnbridge_database_is_not_restored() {
    let sb = Sandbox::new();
    let bogus = sb.path().join("bogus.db");
    std::fs::write(&bogus, b"not a database at all, just text").unwrap();
    let out = turnbridge(&sb.config_path(), &["restore", bogus.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        !sb.state().join("turnbridge.db").exists(),
        "nothing was put in place"
    );
}

/// Whether the database at `db` passes SQLite's integrity check.
fn integrity(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_restore_after_only_the_database_file_was_lost_does_not_replay_its_left_over_wal() {
    let mut sb = Sandbox::new();
    sb.start();
    sb.drop_file("a.csv", batch_csv("AB", 1, 3).as_bytes());
    wait_for(30, "three files in the inbox", || {
        sb.inbox_files().len() == 3
    });
    let backups = sb.path().join("backups");
    let out = cli(&sb.config_path(), &["backup", backups.to_str().unwrap()]);
    let copy = PathBuf::from(out.trim());
    sb.drop_file("b.csv", batch_csv("AB", 4, 40).as_bytes());
    wait_for(30, "43 files in the inbox", || sb.inbox_files().len() == 43);
    wait_for(30, "the second batch recorded done", || {
        job_named(&sb.db(), "b.csv").is_some_and(|j| j.state == JobState::Done)
    });
    // Killed: its -wal (the writes since the last checkpoint) stays beside the database.
    sb.kill();
    let db = sb.state().join("turnbridge.db");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "a killed daemon leaves its -wal"
    );
    // Only the database file is lost; its -wal and -shm belong to that lost file.
    std::fs::remove_file(&db).unwrap();

    let out = turnbridge(&sb.config_path(), &["restore", copy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(integrity(&db), "ok", "the restored database is damaged");
    assert!(known(&sb, "AB00000001"));
    assert!(
        !known(&sb, "AB00000004"),
        "the restored state has a message of the lost database's -wal"
    );
}

#[test]
fn a_restore_run_as_root_leaves_the_state_to_the_service_user() {
    let root = unsafe { libc::geteuid() } == 0;
    let mut sb = Sandbox::new();
    // As a packaged service: the daemon runs as its own user (here `nobody`), the operator
    // runs the restore as root.
    if root {
        sb.start_as(65534, 65534);
    } else {
        sb.start();
    }
    sb.drop_file("a.csv", batch_csv("AB", 1, 2).as_bytes());
    wait_for(30, "two files in the inbox", || sb.inbox_files().len() == 2);
    let backups = sb.path().join("backups");
    let out = cli(&sb.config_path(), &["backup", backups.to_str().unwrap()]);
    let copy = PathBuf::from(out.trim());
    assert_eq!(sb.terminate().code(), Some(0));

    cli(&sb.config_path(), &["restore", copy.to_str().unwrap()]);
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(sb.state()).unwrap().uid();
    for file in files_in(&sb.state()) {
        let meta = std::fs::symlink_metadata(&file).unwrap();
        if meta.is_file() {
            assert_eq!(
                meta.uid(),
                owner,
                "{} is not the state folder owner's",
                file.display()
            );
        }
    }

    // The service user's daemon starts on the restored state and goes on.
    if root {
        sb.restart_as(65534, 65534);
    } else {
        sb.start();
    }
    sb.drop_file("b.csv", batch_csv("AC", 1, 1).as_bytes());
    wait_for(30, "a third file in the inbox", || {
        sb.inbox_files().len() == 3
    });
    assert_eq!(sb.terminate().code(), Some(0), "{}", sb.log());
}

#[test]
fn a_backup_that_fails_leaves_no_partial_copy_behind() {
    // No database yet: the backup fails, and the folder holds nothing of it.
    let sb = Sandbox::new();
    let backups = sb.path().join("backups");
    let out = turnbridge(&sb.config_path(), &["backup", backups.to_str().unwrap()]);
    assert!(!out.status.success());
    let left = files_in(&backups);
    assert!(left.is_empty(), "a failed backup left {left:?}");
}

#[test]
fn a_restore_over_a_damaged_database_still_continues_above_its_ids() {
    let mut sb = Sandbox::new();
    sb.start();
    sb.drop_file("a.csv", batch_csv("AB", 1, 3).as_bytes());
    wait_for(30, "three files in the inbox", || {
        sb.inbox_files().len() == 3
    });
    let backups = sb.path().join("backups");
    let out = cli(&sb.config_path(), &["backup", backups.to_str().unwrap()]);
    let copy = PathBuf::from(out.trim());
    sb.drop_file("b.csv", batch_csv("AB", 4, 40).as_bytes());
    wait_for(30, "43 files in the inbox", || sb.inbox_files().len() == 43);
    wait_for(30, "the second batch recorded done", || {
        job_named(&sb.db(), "b.csv").is_some_and(|j| j.state == JobState::Done)
    });
    let highest = *inbox_seqs(&sb).iter().max().unwrap();
    assert_eq!(sb.terminate().code(), Some(0));

    // The database is damaged at its end (the pages written last), and Turnkey has taken
    // the XML files out of the folders turnbridge can see.
    let db = sb.state().join("turnbridge.db");
    let len = std::fs::metadata(&db).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    use std::io::{Seek, Write};
    f.seek(std::io::SeekFrom::Start(len - 8192)).unwrap();
    f.write_all(&[0xA5; 8192]).unwrap();
    drop(f);
    assert_ne!(integrity(&db), "ok", "the database is damaged");
    for xml in sb.inbox_files() {
        std::fs::remove_file(xml).unwrap();
    }

    let out = turnbridge(&sb.config_path(), &["restore", copy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sb.start();
    sb.drop_file("c.csv", batch_csv("AC", 1, 2).as_bytes());
    wait_for(30, "two new files in the inbox", || {
        sb.inbox_files().len() == 2
    });
    let new = inbox_seqs(&sb);
    assert!(
        new.iter().all(|s| *s > highest),
        "{new:?} not above {highest}: XML names used before the damage are handed out again"
    );
}

#[test]
fn a_backup_goes_into_a_new_folder_named_relative_to_where_it_is_run() {
    let mut sb = Sandbox::new();
    sb.start();
    let out = Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .current_dir(sb.path())
        .args(["backup", "backups", "--config"])
        .arg(sb.config_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = sb.path().join(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        copy.starts_with(sb.path().join("backups")),
        "{}",
        copy.display()
    );
    assert!(copy.is_file(), "{}", copy.display());
}

#[test]
fn a_backup_of_a_damaged_database_fails_and_leaves_no_copy_under_a_backup_name() {
    let mut sb = Sandbox::new();
    sb.start();
    sb.drop_file("a.csv", batch_csv("AB", 1, 40).as_bytes());
    wait_for(30, "40 files in the inbox", || sb.inbox_files().len() == 40);
    assert_eq!(sb.terminate().code(), Some(0));
    let db = sb.state().join("turnbridge.db");
    let len = std::fs::metadata(&db).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    use std::io::{Seek, Write};
    f.seek(std::io::SeekFrom::Start(len - 8192)).unwrap();
    f.write_all(&[0xA5; 8192]).unwrap();
    drop(f);
    assert_ne!(integrity(&db), "ok", "the database is damaged");

    let backups = sb.path().join("backups");
    let out = turnbridge(&sb.config_path(), &["backup", backups.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "a damaged database was backed up as sound"
    );
    let left = files_in(&backups);
    assert!(left.is_empty(), "{left:?}");
}
