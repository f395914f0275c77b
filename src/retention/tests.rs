//! One test per retention rule: rows seeded through the store's own functions where it has
//! them (raw SQL where the daemon writes inline), pruned as of a later day, and what must stay
//! checked beside what must go.

use super::*;
use crate::events::{UploadCompleted, UploadStatus};
use crate::store::feedback::{self as records, FeedbackKind};
use crate::store::messages::{self, Change};
use crate::store::{jobs, NewMessage};
use crate::webhook::outbound;

struct T {
    _dir: tempfile::TempDir,
    r: Retention,
}

fn setup() -> T {
    setup_batch(BATCH_ROWS)
}

fn setup_batch(rows: usize) -> T {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("turnbridge.db")).unwrap();
    T {
        r: Retention::new(store, Limits::of(&config::Config::default())).with_batch(rows),
        _dir: dir,
    }
}

impl T {
    fn conn(&mut self) -> &rusqlite::Connection {
        self.r.store.conn()
    }
    fn count(&mut self, sql: &str) -> i64 {
        self.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }
    /// Prunes as of `days` from now, with all the time it needs.
    fn prune_at(&mut self, days: i64) -> Pruned {
        let p = self.r.prune(later(days), Duration::from_secs(600)).unwrap();
        assert!(p.done);
        p
    }
}

fn later(days: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::days(days)
}

/// A job with one message per number, moved to `state` through the store's transitions.
fn job_with_messages(t: &mut T, job: &str, numbers: &[&str], state: MessageState) -> Vec<i64> {
    let store = &mut t.r.store;
    store.insert_job(job, "einvoice", "b.csv", job, 10).unwrap();
    let tx = store.transaction().unwrap();
    let mut ids = Vec::new();
    for (i, n) in numbers.iter().enumerate() {
        let m = NewMessage {
            job_id: job,
            message_type: "F0401",
            legacy_type: None,
            seller_ban: "28080623",
            number: n,
            generation: 1,
            buyer_id: "0000000000",
            document_date: chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
            tenant: "default",
            source_file: "b.csv",
            source_row: i + 2,
            amount: Some("100".into()),
            xml: b"<x/>",
            xml_md5: "m",
        };
        let id = messages::insert(&tx, &m, |id| format!("F0401_{id}.xml")).unwrap();
        let path: &[MessageState] = match state {
            MessageState::Queued => &[MessageState::Queued],
            last => &[MessageState::Queued, MessageState::PickedUp, last],
        };
        let mut from = MessageState::Validated;
        for to in path {
            messages::transition(&tx, id, from, &Change::to(*to, "test")).unwrap();
            from = *to;
        }
        ids.push(id);
    }
    jobs::done(&tx, job, numbers.len(), 0).unwrap();
    tx.commit().unwrap();
    ids
}

fn endpoint(t: &mut T) -> String {
    let (ep, _) = outbound::add_endpoint(
        &mut t.r.store,
        "http://127.0.0.1:9/hook",
        &["*".to_string()],
        None,
        None,
        true,
    )
    .unwrap()
    .unwrap();
    ep.id
}

/// An `upload.completed` event about job `n`.
fn upload(n: usize) -> UploadCompleted {
    UploadCompleted {
        import_id: n.to_string(),
        file: "b.csv".into(),
        status: UploadStatus::Completed,
        tenant_id: "default".into(),
        success_count: 1,
        error_count: 0,
        reason: None,
        duplicate_of: None,
    }
}

/// `n` events, fanned out to the registered endpoints.
fn events(t: &mut T, n: usize) {
    let tx = t.r.store.transaction().unwrap();
    for i in 0..n {
        crate::store::events::add(&tx, &upload(i)).unwrap();
    }
    tx.commit().unwrap();
    outbound::fan_out(&mut t.r.store, 10_000).unwrap();
}

#[test]
fn final_deliveries_go_with_their_attempts_and_pending_ones_stay() {
    let mut t = setup();
    endpoint(&mut t);
    events(&mut t, 4);
    let ids: Vec<String> = {
        let mut stmt = t
            .conn()
            .prepare("SELECT id FROM deliveries ORDER BY rowid")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    for (id, state) in ids
        .iter()
        .zip(["succeeded", "cancelled", "dead", "pending"])
    {
        t.conn()
            .execute(
                "UPDATE deliveries SET state = ?1 WHERE id = ?2",
                params![state, id],
            )
            .unwrap();
        t.conn()
            .execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, trigger, started_at, duration_ms)
                 VALUES (?1, 1, 'scheduled', ?2, 5)",
                params![id, crate::store::now()],
            )
            .unwrap();
    }
    let c = config::Retention::default();
    // Not yet old: nothing goes.
    let p = t.prune_at(c.deliveries_days as i64 - 1);
    assert_eq!(p.total(), 0, "{p:?}");
    let p = t.prune_at(c.deliveries_days as i64 + 1);
    assert_eq!(p.rows.get("deliveries"), Some(&2), "{p:?}");
    let left = |t: &mut T, state: &str| {
        t.count(&format!(
            "SELECT count(*) FROM deliveries WHERE state = '{state}'"
        ))
    };
    assert_eq!(left(&mut t, "succeeded") + left(&mut t, "cancelled"), 0);
    assert_eq!(left(&mut t, "dead"), 1, "the DLQ is kept longer");
    assert_eq!(
        left(&mut t, "pending"),
        1,
        "a pending delivery is never pruned"
    );
    assert_eq!(t.count("SELECT count(*) FROM delivery_attempts"), 2);
    // Years later the dead one goes too; the pending one and its attempt stay.
    t.prune_at(c.dead_letters_days as i64 + 1);
    assert_eq!(left(&mut t, "dead"), 0);
    assert_eq!(left(&mut t, "pending"), 1);
    assert_eq!(
        t.count("SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.state = 'pending'"),
        1
    );
    assert_eq!(t.count("SELECT count(*) FROM delivery_attempts"), 1);
}

#[test]
fn events_go_once_fanned_out_and_delivered_and_not_before() {
    let mut t = setup();
    endpoint(&mut t);
    events(&mut t, 2);
    t.conn()
        .execute(
            "UPDATE deliveries SET state = 'succeeded' WHERE event_id = (SELECT min(id) FROM events)",
            [],
        )
        .unwrap();
    // A third event not fanned out yet.
    let tx = t.r.store.transaction().unwrap();
    crate::store::events::add(&tx, &upload(99)).unwrap();
    tx.commit().unwrap();
    let c = config::Retention::default();
    let p = t.prune_at(c.events_days as i64 + 1);
    assert_eq!(p.rows.get("events"), Some(&1), "{p:?}");
    // The event whose delivery is pending stays, and so does the one not fanned out.
    assert_eq!(t.count("SELECT count(*) FROM events"), 2);
    assert_eq!(
        t.count("SELECT count(*) FROM events WHERE fanned_out = 0"),
        1
    );
    assert_eq!(
        t.count("SELECT count(*) FROM events e JOIN deliveries d ON d.event_id = e.id WHERE d.state = 'pending'"),
        1
    );
}

#[test]
fn transitions_of_final_messages_go_and_the_messages_stay_and_still_refuse_their_numbers() {
    let mut t = setup();
    let acked = job_with_messages(&mut t, "j1", &["AB00000001"], MessageState::Acked);
    let waiting = job_with_messages(&mut t, "j2", &["AB00000002"], MessageState::Queued);
    let history = |t: &mut T, id: i64| {
        t.count(&format!(
            "SELECT count(*) FROM transitions WHERE message_id = {id}"
        ))
    };
    assert_eq!(history(&mut t, acked[0]), 4);
    assert_eq!(history(&mut t, waiting[0]), 2);
    let c = config::Retention::default();
    t.prune_at(c.transitions_days as i64 - 1);
    assert_eq!(history(&mut t, acked[0]), 4, "not old enough yet");
    let p = t.prune_at(c.transitions_days as i64 + 1);
    assert_eq!(p.rows.get("transitions"), Some(&4), "{p:?}");
    assert_eq!(history(&mut t, acked[0]), 0);
    assert_eq!(
        history(&mut t, waiting[0]),
        2,
        "a message in flight keeps its story"
    );
    // The messages themselves are never pruned: the number is still refused.
    assert_eq!(t.count("SELECT count(*) FROM messages"), 2);
    let found = messages::by_key(t.conn(), "F0401", "28080623", "AB00000001").unwrap();
    assert_eq!(found.map(|m| m.state), Some(MessageState::Acked));
}

#[test]
fn finished_jobs_without_messages_go_and_jobs_with_messages_or_in_flight_stay() {
    let mut t = setup();
    job_with_messages(&mut t, "sent", &["AB00000001"], MessageState::Acked);
    for (id, state) in [
        ("refused", JobState::Rejected),
        ("again", JobState::Duplicate),
        ("empty", JobState::Done),
    ] {
        t.r.store
            .insert_job(id, "einvoice", "x.csv", id, 1)
            .unwrap();
        let tx = t.r.store.transaction().unwrap();
        match state {
            JobState::Done => jobs::done(&tx, id, 0, 0).unwrap(),
            refused => jobs::refuse(&tx, id, refused, "refused", None, "/r/x.csv").unwrap(),
        }
        tx.commit().unwrap();
    }
    t.r.store
        .insert_job("claimed", "einvoice", "y.csv", "c", 1)
        .unwrap();
    let c = config::Retention::default();
    let p = t.prune_at(c.jobs_days as i64 + 1);
    assert_eq!(p.rows.get("jobs"), Some(&3), "{p:?}");
    assert!(
        t.r.store.job("sent").unwrap().is_some(),
        "it holds a message"
    );
    assert!(
        t.r.store.job("claimed").unwrap().is_some(),
        "still in flight"
    );
    for gone in ["refused", "again", "empty"] {
        assert!(t.r.store.job(gone).unwrap().is_none(), "{gone}");
    }
    // The MD5 rule still finds the job that sent messages.
    assert!(t
        .r
        .store
        .job_with_md5("einvoice", "sent", "other")
        .unwrap()
        .is_some());
}

#[test]
fn summaries_and_records_of_kept_result_files_go_once_the_file_is_gone() {
    let mut t = setup();
    let dir = tempfile::tempdir().unwrap();
    let still_there = dir.path().join("ProcessResult_still.xml");
    std::fs::write(&still_there, b"<x/>").unwrap();
    let gone = dir.path().join("ACK_gone.xml");
    let set_aside = dir.path().join("set-aside_ACK_forged.xml");
    std::fs::write(&set_aside, b"<x/>").unwrap();
    let now = crate::store::now();
    // Two results not believed, moved from the outbox (their path is gone): one whose copy is
    // still set aside (still a problem), one whose copy the operator removed.
    for (md5, kept) in [
        ("i", set_aside.to_string_lossy().into_owned()),
        (
            "j",
            dir.path()
                .join("removed.xml")
                .to_string_lossy()
                .into_owned(),
        ),
    ] {
        let tx = t.r.store.transaction().unwrap();
        let path = std::path::PathBuf::from(format!("/outbox/{md5}.xml"));
        records::record_set_aside(
            &tx,
            &path,
            md5,
            FeedbackKind::Implausible,
            "forged",
            Path::new(&kept),
        )
        .unwrap();
        tx.commit().unwrap();
    }
    for (path, kept, md5) in [
        (gone.to_string_lossy().into_owned(), Some("/archive/a"), "a"),
        (
            still_there.to_string_lossy().into_owned(),
            Some("/r/b"),
            "b",
        ),
        ("/outbox/summary.xml".to_string(), Some("/archive/s"), "s"),
        ("/turnkey/BAK/in-place.xml".to_string(), None, "p"),
    ] {
        let tx = t.r.store.transaction().unwrap();
        let id = records::record(
            &tx,
            Path::new(&path),
            md5,
            FeedbackKind::Ack,
            "",
            kept.map(Path::new),
        )
        .unwrap();
        if md5 == "s" {
            let summary = records::Summary {
                date: None,
                message_type: None,
                summary_id: None,
                expected: 1,
                total: 1,
                good: 1,
                failed: 0,
                mismatch: None,
                at: now.clone(),
            };
            records::add_summary(&tx, id, &summary).unwrap();
        }
        tx.commit().unwrap();
    }
    let c = config::Retention::default();
    let p = t.prune_at(c.feedback_days as i64 + 1);
    assert_eq!(p.rows.get("summaries"), Some(&1), "{p:?}");
    // The summary went first, so the file it named could go in the same run.
    assert_eq!(p.rows.get("feedback_files"), Some(&3), "{p:?}");
    let left: Vec<String> = {
        let mut stmt = t
            .conn()
            .prepare("SELECT md5 FROM feedback_files ORDER BY md5")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    // A file still where it was read keeps its record (or it would be read again); records
    // of files read in place are the feedback tracker's (turnkey.retention_days); a result
    // not believed keeps its record while its set-aside copy is there.
    assert_eq!(left, ["b", "i", "p"]);
}

#[test]
fn recorded_stock_levels_go_but_the_newest_per_code_and_pending_ones_stay() {
    let mut t = setup();
    let now = crate::store::now();
    for (code, ts, sink) in [
        ("A", "1", "recorded"),
        ("A", "2", "recorded"),
        ("A", "3", "recorded"),
        ("B", "4", "pending"),
        ("B", "5", "recorded"),
        ("C", "6", "recorded"),
    ] {
        t.conn()
            .execute(
                "INSERT INTO stock_updates (store_account, code, stock, ts, sig, request_id, received_at, sink_state)
                 VALUES ('shop', ?1, 1, ?2, 'sig', 'r', ?3, ?4)",
                params![code, ts, now, sink],
            )
            .unwrap();
    }
    let c = config::Retention::default();
    let p = t.prune_at(c.stock_updates_days as i64 + 1);
    assert_eq!(p.rows.get("stock_updates"), Some(&2), "{p:?}");
    let left: Vec<String> = {
        let mut stmt = t
            .conn()
            .prepare("SELECT ts FROM stock_updates ORDER BY id")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(left, ["3", "4", "5", "6"]);
}

#[test]
fn stock_levels_stay_while_a_replay_of_their_callback_could_still_be_accepted() {
    let mut t = setup();
    for ts in ["1", "2"] {
        t.conn()
            .execute(
                "INSERT INTO stock_updates (store_account, code, stock, ts, sig, request_id, received_at, sink_state)
                 VALUES ('shop', 'A', 1, ?1, 'sig', 'r', ?2, 'recorded')",
                params![ts, crate::store::now()],
            )
            .unwrap();
    }
    // ts accepted from 40 days back: the stored (ts, signature) is what refuses a replay.
    t.r.reload(Limits {
        retention: config::Retention {
            stock_updates_days: 10,
            ..Default::default()
        },
        replay_window_secs: 40 * 86_400,
    });
    t.prune_at(11);
    assert_eq!(t.count("SELECT count(*) FROM stock_updates"), 2);
    let p = t.prune_at(41);
    assert_eq!(p.rows.get("stock_updates"), Some(&1), "{p:?}");
}

#[test]
fn request_logs_company_events_and_audit_go_after_their_own_days() {
    let mut t = setup();
    let now = crate::store::now();
    t.conn()
        .execute(
            "INSERT INTO inventory_logs (request_id, received_at, outcome, processed) VALUES ('r', ?1, 'accepted', 1)",
            [&now],
        )
        .unwrap();
    t.conn()
        .execute(
            "INSERT INTO company_events (event_type, business_key, content_md5, payload, request_id, received_at)
             VALUES ('inventory.updated', 'k', 'm', '{}', 'r', ?1)",
            [&now],
        )
        .unwrap();
    t.conn()
        .execute(
            "INSERT INTO audit (action, subject, at) VALUES ('WEBHOOK_RECEIVED', 's', ?1)",
            [&now],
        )
        .unwrap();
    t.r.reload(Limits {
        retention: config::Retention {
            inventory_logs_days: 10,
            company_events_days: 20,
            audit_days: 30,
            ..Default::default()
        },
        replay_window_secs: 0,
    });
    let n = |t: &mut T| {
        [
            t.count("SELECT count(*) FROM inventory_logs"),
            t.count("SELECT count(*) FROM company_events"),
            t.count("SELECT count(*) FROM audit"),
        ]
    };
    t.prune_at(9);
    assert_eq!(n(&mut t), [1, 1, 1]);
    t.prune_at(11);
    assert_eq!(n(&mut t), [0, 1, 1]);
    t.prune_at(21);
    assert_eq!(n(&mut t), [0, 0, 1]);
    t.prune_at(31);
    assert_eq!(n(&mut t), [0, 0, 0]);
}

#[test]
fn finished_nextengine_uploads_go_unless_one_is_in_doubt() {
    let mut t = setup();
    let now = crate::store::now();
    let add = |t: &mut T, id: &str, state: &str| {
        t.conn()
            .execute(
                "INSERT INTO ne_jobs (id, kind, source_name, state, que_id, created_at, updated_at)
                 VALUES (?1, 'stock', 's.csv', ?2, ?1, ?3, ?3)",
                params![id, state, now],
            )
            .unwrap();
    };
    for (id, state) in [
        ("d", "done"),
        ("f", "failed"),
        ("u", "unknown"),
        ("r", "rejected"),
        ("q", "queued"),
        ("up", "uploading"),
    ] {
        add(&mut t, id, state);
    }
    let days = config::Retention::default().ne_jobs_days as i64 + 1;
    t.prune_at(days);
    assert_eq!(
        t.count("SELECT count(*) FROM ne_jobs"),
        6,
        "an upload in doubt may adopt any queue entry no job follows: finished jobs stay"
    );
    t.conn()
        .execute("UPDATE ne_jobs SET state = 'queued' WHERE id = 'up'", [])
        .unwrap();
    let p = t.prune_at(days);
    assert_eq!(p.rows.get("ne_jobs"), Some(&4), "{p:?}");
    assert_eq!(
        t.count("SELECT count(*) FROM ne_jobs WHERE state = 'queued'"),
        2
    );
}

#[test]
fn nextengine_sign_ins_are_kept_a_day() {
    let mut t = setup();
    t.r.store.start_ne_login_nonce().unwrap();
    t.prune_at(0);
    assert_eq!(t.count("SELECT count(*) FROM ne_logins"), 1);
    t.prune_at(2);
    assert_eq!(t.count("SELECT count(*) FROM ne_logins"), 0);
}

#[test]
fn a_run_deletes_in_batches_and_stops_when_its_budget_is_spent() {
    let mut t = setup_batch(10);
    let now = crate::store::now();
    for _ in 0..25 {
        t.conn()
            .execute(
                "INSERT INTO audit (action, at) VALUES ('WEBHOOK_RECEIVED', ?1)",
                [&now],
            )
            .unwrap();
    }
    let r = &mut t.r;
    // No time at all: one batch, then the run stops with rows left.
    let p = r.prune(later(1000), Duration::ZERO).unwrap();
    assert_eq!((p.total(), p.done), (10, false), "{p:?}");
    let p = r.prune(later(1000), Duration::ZERO).unwrap();
    assert_eq!(p.total(), 10);
    let p = r.prune(later(1000), Duration::from_secs(600)).unwrap();
    assert_eq!((p.total(), p.done), (5, true));
}

#[test]
fn rotated_out_secrets_are_removed_when_their_overlap_ends() {
    let mut t = setup();
    let id = endpoint(&mut t);
    let secret = |t: &mut T| -> (String, Option<String>) {
        t.conn()
            .query_row(
                "SELECT secret, old_secret FROM webhook_endpoints WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let (first, _) = secret(&mut t);
    let update = outbound::Update {
        rotate_secret: true,
        ..Default::default()
    };
    outbound::update_endpoint(&mut t.r.store, &id, &update, 24, true)
        .unwrap()
        .unwrap();
    let (second, old) = secret(&mut t);
    assert_eq!(old.as_deref(), Some(first.as_str()), "it still signs");
    assert_eq!(t.r.forget_rotated_secrets(later(0)).unwrap(), 0);
    assert_eq!(
        secret(&mut t).1.as_deref(),
        Some(first.as_str()),
        "within its overlap"
    );
    // A day and an hour later the overlap is over: the old secret is gone from every row.
    let p = t.prune_at(1);
    assert_eq!(p.secrets, 1);
    assert_eq!(secret(&mut t), (second, None));
    let holding = t.count(&format!(
        "SELECT count(*) FROM webhook_endpoints WHERE instr(secret, '{first}') OR instr(coalesce(old_secret, ''), '{first}')"
    ));
    assert_eq!(holding, 0);
}

#[test]
fn a_removed_endpoint_leaves_no_trace_of_its_secrets_in_the_database_file() {
    let mut t = setup();
    let id = endpoint(&mut t);
    let update = outbound::Update {
        rotate_secret: true,
        ..Default::default()
    };
    outbound::update_endpoint(&mut t.r.store, &id, &update, 24, true)
        .unwrap()
        .unwrap();
    let (secret, old): (String, String) = t
        .conn()
        .query_row(
            "SELECT secret, old_secret FROM webhook_endpoints WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let db = t._dir.path().join("turnbridge.db");
    let on_disk = |needle: &str| {
        file_bytes(&db)
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    t.conn()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    assert!(on_disk(&secret) && on_disk(&old), "the file held them");
    assert!(outbound::remove_endpoint(&mut t.r.store, &id).unwrap());
    assert_eq!(t.count("SELECT count(*) FROM webhook_endpoints"), 0);
    // Once the WAL is written back, neither secret is anywhere in the file: deleted content is
    // zeroed (secure_delete), not left in free space.
    t.conn()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    assert!(!on_disk(&secret), "the secret is still in the file");
    assert!(
        !on_disk(&old),
        "the rotated-out secret is still in the file"
    );
}

fn file_bytes(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}
