//! Bounded tables and secrets at rest, on the real daemon: what it writes is never open to
//! other users whatever umask it starts with, it prunes old rows at start (keeping what is
//! still needed), and webhook secrets leave the store when rotated out or removed.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;
use serde_json::json;
use turnbridge::store::deliveries::{self, DeliveryState, Filter};
use turnbridge::store::{audit, inbound, outbox, Store, Timestamp};

/// Starts the daemon with `umask` (set in the child only, so the tests beside it are not
/// affected).
fn start_with_umask(sb: &mut Sandbox, umask: u32) {
    std::fs::create_dir_all(sb.spool()).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(sb.log_path())
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnbridge"));
    cmd.arg("run")
        .arg("--config")
        .arg(sb.config_path())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: umask is async-signal-safe and touches only the child's mask.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    sb.child = Some(cmd.spawn().expect("start turnbridge"));
    wait_for(20, "the daemon to start", || sb.log().contains(" starting"));
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Drops a good batch and a refused one and waits for the XML and the report.
fn one_sent_one_refused(sb: &Sandbox) -> (PathBuf, PathBuf) {
    sb.drop_file("good.csv", batch_csv("UM", 1, 1).as_bytes());
    sb.drop_file("bad.json", b"{ not json");
    wait_for(20, "the XML in the inbox", || sb.inbox_files().len() == 1);
    let mut report = None;
    wait_for(20, "the refused file's report", || {
        report = files_in(&sb.rejected())
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".error.txt"));
        report.is_some()
    });
    (sb.inbox_files().remove(0), report.unwrap())
}

fn database_files(sb: &Sandbox) -> Vec<PathBuf> {
    ["turnbridge.db", "turnbridge.db-wal", "turnbridge.db-shm"]
        .iter()
        .map(|f| sb.state().join(f))
        .collect()
}

#[test]
fn under_a_permissive_umask_others_get_nothing_and_the_state_is_private() {
    let mut sb = Sandbox::new();
    start_with_umask(&mut sb, 0o000);
    let (xml, report) = one_sent_one_refused(&sb);
    assert!(
        sb.log().contains("umask=0007") && sb.log().contains("inherited_umask=0000"),
        "the start line says which umask is used"
    );
    for f in database_files(&sb) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    assert_eq!(mode(&xml), 0o660, "staged XML {}", xml.display());
    let json = report.with_file_name(
        report
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".error.txt", ".error.json"),
    );
    for f in [&report, &json] {
        assert_eq!(mode(f) & 0o007, 0, "report {}", f.display());
    }
    assert_eq!(mode(&sb.state().join("health.json")) & 0o007, 0);
    // Dropped files keep the mode their writer gave them (turnbridge may not own them); the
    // state and the folders they are kept in are the owner's alone, the group's too, and
    // what lies below them (the archive's day folders) is closed to others as well.
    for dir in [
        sb.state(),
        sb.rejected(),
        sb.state().join("archive"),
        sb.work(),
    ] {
        assert_eq!(mode(&dir), 0o700, "folder {}", dir.display());
    }
    for day in sb.archived().iter().filter_map(|f| f.parent()) {
        assert_eq!(mode(day) & 0o007, 0, "folder {}", day.display());
    }
    sb.terminate();
}

#[test]
fn under_the_packaged_units_umask_the_group_shares_the_files_but_not_the_database() {
    let mut sb = Sandbox::new();
    // systemd/turnbridge.service: UMask=0007, so Turnkey's user (in the group) reads the XML.
    start_with_umask(&mut sb, 0o007);
    let (xml, report) = one_sent_one_refused(&sb);
    assert_eq!(mode(&xml), 0o660, "staged XML {}", xml.display());
    // Reports, archived batches and work/ are not Turnkey's business.
    for dir in [
        sb.state(),
        sb.rejected(),
        sb.state().join("archive"),
        sb.work(),
    ] {
        assert_eq!(mode(&dir), 0o700, "folder {}", dir.display());
    }
    assert!(report.starts_with(sb.rejected()));
    for f in database_files(&sb) {
        assert_eq!(mode(&f), 0o600, "it holds secrets: {}", f.display());
    }
    sb.terminate();
}

/// `days` ago.
fn ago(days: i64) -> Timestamp {
    Timestamp::now().plus(-chrono::Duration::days(days))
}

#[test]
fn the_daemon_prunes_old_rows_at_start_and_keeps_what_is_still_needed() {
    let tail = "[retention]\naudit_days = 5\ncompany_events_days = 5\nevents_days = 5\ndeliveries_days = 5\n\
                [webhooks]\nallow_private_networks = true\n";
    let mut sb = Sandbox::with_sections("", tail);
    std::fs::create_dir_all(sb.state()).unwrap();
    {
        // Rows the daemon's own paths would have written weeks ago.
        let mut store = Store::open(&sb.state().join("turnbridge.db")).unwrap();
        store
            .write(|tx| {
                for (days, what) in [(9, "old"), (1, "new")] {
                    audit::add(
                        tx,
                        &audit::Entry {
                            action: audit::Action::WebhookReceived,
                            subject: Some(what),
                            detail: None,
                            request_id: None,
                            at: ago(days),
                        },
                    )?;
                    inbound::store_company_event(
                        tx,
                        &inbound::NewCompanyEvent {
                            event_type: "inventory.updated",
                            business_key: what,
                            content_md5: "m",
                            payload: "{}",
                            request_id: "r",
                            received_at: ago(days),
                        },
                    )?;
                }
                Ok(())
            })
            .unwrap();
        turnbridge::webhook::outbound::add_endpoint(
            &mut store,
            "http://127.0.0.1:9/never",
            &["*".to_string()],
            None,
            None,
            true,
        )
        .unwrap()
        .unwrap();
        store
            .write(|tx| {
                for i in 0..3 {
                    outbox::append(tx, "upload.completed", None, &json!({ "n": i }), ago(9))?;
                }
                Ok(())
            })
            .unwrap();
        turnbridge::webhook::outbound::fan_out(&mut store, 100).unwrap();
        // One delivered weeks ago; two still pending (their receiver is down, the next
        // attempt a month away).
        let made = deliveries::list(&store, &Filter::default(), 10).unwrap();
        assert_eq!(made.len(), 3);
        store
            .write(|tx| {
                for (i, d) in made.iter().enumerate() {
                    let delivered = i == 0;
                    deliveries::record_attempt(
                        tx,
                        &deliveries::Outcome {
                            delivery_id: &d.delivery_id,
                            attempt: 1,
                            trigger: deliveries::Trigger::Scheduled,
                            started_at: ago(9),
                            duration_ms: 5,
                            status: Some(if delivered { 200 } else { 503 }),
                            error: None,
                            response: None,
                            state: if delivered {
                                DeliveryState::Succeeded
                            } else {
                                DeliveryState::Pending
                            },
                            next_attempt_at: (!delivered).then(|| ago(-30)),
                        },
                    )?;
                }
                Ok(())
            })
            .unwrap();
    }
    sb.start();
    wait_for(20, "the first retention run", || {
        sb.log().contains("pruned rows past their retention")
    });
    let db = sb.store();
    assert_eq!(
        audit::subjects(&db, audit::Action::WebhookReceived, 10).unwrap(),
        [Some("new".to_string())]
    );
    assert_eq!(inbound::company_event_keys(&db, 10).unwrap(), ["new"]);
    let states: Vec<DeliveryState> = deliveries::list(&db, &Filter::default(), 10)
        .unwrap()
        .into_iter()
        .map(|d| d.state)
        .collect();
    assert_eq!(
        states,
        [DeliveryState::Pending, DeliveryState::Pending],
        "pending deliveries are never pruned"
    );
    assert_eq!(
        turnbridge::store::events::count(&db).unwrap(),
        2,
        "the delivered event went; those still being delivered stay"
    );
    sb.terminate();
}

/// Whether any text or blob in any row of the database holds `needle`.
fn stored_anywhere(db: &rusqlite::Connection, needle: &str) -> Vec<String> {
    let tables: Vec<String> = {
        let mut stmt = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let mut found = Vec::new();
    for t in tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..n {
                let hit = match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        b.windows(needle.len()).any(|w| w == needle.as_bytes())
                    }
                    _ => false,
                };
                if hit {
                    found.push(t.clone());
                }
            }
        }
    }
    found
}

fn cli(sb: &Sandbox, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(args)
        .arg("--config")
        .arg(sb.config_path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
        .to_string()
}

#[test]
fn rotated_out_and_removed_webhook_secrets_leave_the_store() {
    // No overlap: a rotated-out secret is due for removal at once.
    let tail = "[webhooks]\nallow_private_networks = true\nsecret_overlap_hours = 0\n";
    let mut sb = Sandbox::with_sections("", tail);
    std::fs::create_dir_all(sb.state()).unwrap();
    let out = cli(
        &sb,
        &[
            "webhooks",
            "add",
            "http://127.0.0.1:9/hook",
            "--events",
            "*",
        ],
    );
    let (id, first) = (field(&out, "id"), field(&out, "secret"));
    let out = cli(&sb, &["webhooks", "update", &id, "--rotate-secret"]);
    let second = field(&out, "new secret");
    assert_eq!(
        stored_anywhere(&sb.db(), &first),
        ["webhook_endpoints"],
        "kept for its overlap until the daemon sees it ended"
    );
    sb.start();
    wait_for(20, "the rotated-out secret to leave the store", || {
        stored_anywhere(&sb.db(), &first).is_empty()
    });
    // The log line follows the commit (and the WAL checkpoint after it).
    wait_for(10, "the run to say so in the log", || {
        sb.log().contains("secrets=1")
    });
    assert_eq!(stored_anywhere(&sb.db(), &second), ["webhook_endpoints"]);
    // A removed endpoint's secret goes at once, with the row: not flagged, deleted.
    cli(&sb, &["webhooks", "remove", &id]);
    assert!(stored_anywhere(&sb.db(), &second).is_empty());
    sb.db()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let bytes = std::fs::read(sb.state().join("turnbridge.db")).unwrap();
    for s in [&first, &second] {
        assert!(
            !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
            "a secret is still in the database file's free space"
        );
    }
    sb.terminate();
}
