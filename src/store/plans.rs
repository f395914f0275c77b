//! The lookups the daemon makes per file, per request or per poll, and the retention rules'
//! scans, as SQLite plans them: each must find its rows through an index, never by reading a
//! table whole (at a million `feedback_files` rows one such scan took half a second per
//! result file).

use super::Store;

/// The plan's lines for `sql`, its parameters NULL (a value does not change the plan).
fn plan(store: &Store, sql: &str) -> Vec<String> {
    let mut stmt = store
        .conn()
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
    let rows = stmt
        .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

/// Per-file, per-request and per-poll lookups, as the code writes them.
const LOOKUPS: &[&str] = &[
    // Feedback: a result file's content seen before, a path read before, its record.
    "SELECT kind, outcome FROM feedback_files WHERE md5 = ?1 AND kind NOT IN ('bak', 'err', 'implausible') LIMIT 1",
    "SELECT md5, kept_at FROM feedback_files WHERE path = ?1 AND kind != 'unreadable' ORDER BY id DESC LIMIT 1",
    "SELECT id FROM feedback_files WHERE path = ?1 AND md5 = ?2",
    "SELECT path, outcome FROM feedback_files WHERE kind = 'unreadable'",
    "UPDATE feedback_files SET kept_at = ?1 WHERE path = ?2 AND kept_at IS NULL",
    "DELETE FROM feedback_files WHERE path = ?1 AND kind = 'unreadable'",
    "SELECT id, path FROM feedback_files WHERE seen_at < ?1 AND kind = 'pack'",
    "DELETE FROM feedback_files WHERE seen_at < ?1 AND kept_at IS NULL
     AND kind IN ('bak', 'err', 'foreign', 'unreadable', 'process', 'summary', 'ack', 'error', 'daily')",
    "DELETE FROM turnkey_packs WHERE seen_at < ?1",
    "SELECT seq, number, message_id FROM turnkey_packs WHERE uuid = ?1 ORDER BY seq",
    // Messages by file name, key, number, job and state.
    "SELECT id FROM messages WHERE xml_name = ?1",
    "SELECT id FROM messages WHERE message_type = ?1 AND seller_ban = ?2 AND number = ?3",
    "SELECT id, tenant FROM messages WHERE message_type = ?1 AND number = ?2
     AND seller_ban = ?3 AND state IN ('queued', 'picked_up') ORDER BY id DESC",
    "SELECT id FROM messages m WHERE m.number = ?1 ORDER BY m.id",
    "SELECT id FROM messages WHERE job_id = ?1 ORDER BY id",
    "SELECT id, xml_path FROM messages WHERE state = 'queued' AND xml_path IS NOT NULL",
    "SELECT id FROM messages WHERE state IN ('validated', 'queued', 'picked_up') AND overdue_raised = 0 AND updated_at < ?1",
    "SELECT amount FROM allowance_lines WHERE seller_ban = ?1 AND original_invoice = ?2",
    "SELECT at FROM transitions WHERE message_id = ?1 ORDER BY id",
    "SELECT count(*) FROM transitions t JOIN messages m ON m.id = t.message_id
     WHERE t.to_state = 'queued' AND t.at >= ?1 AND t.at < ?2 AND (?3 IS NULL OR m.message_type = ?3)",
    // Jobs: the MD5 duplicate rule.
    "SELECT id FROM jobs WHERE kind = ?1 AND md5 = ?2 AND id != ?3 AND state IN ('claimed', 'done')
     ORDER BY received_at LIMIT 1",
    // The outbox and webhook deliveries (the store's own statements).
    super::outbox::WAITING,
    super::outbox::ANY_WAITING,
    super::deliveries::DUE,
    super::deliveries::DEAD_OF,
    super::deliveries::DEAD_BY_ENDPOINT,
    super::deliveries::CANCEL,
    super::deliveries::ATTEMPTS_SINCE,
    super::deliveries::ATTEMPTS,
    // Callbacks and pushes.
    super::inbound::LAST_STOCK,
    super::inbound::PENDING_FORWARD,
    super::inbound::REFUSED,
    super::inbound::COMPANY_EVENT_ID,
    super::audit::COUNT,
    super::audit::LAST,
    // NextEngine jobs and sign-ins.
    super::ne_jobs::FOLLOWED,
    super::ne_jobs::IN_QUEUE,
    "SELECT count(*) FROM ne_logins WHERE used_at IS NULL AND started_at >= ?1",
    "DELETE FROM ne_logins WHERE started_at < ?1",
];

/// Aggregates over a whole table that run often (`/metrics`, feedback scans): a walk of a
/// small covering index, not of the table.
const AGGREGATES: &[&str] = &[
    "SELECT message_type, state, count(*) FROM messages GROUP BY 1, 2",
    "SELECT DISTINCT tenant FROM messages",
    super::deliveries::BY_STATE,
    "SELECT state, count(*) FROM jobs GROUP BY state ORDER BY 1",
];

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("turnbridge.db")).unwrap();
    (dir, store)
}

#[test]
fn every_lookup_goes_through_an_index() {
    let (_dir, store) = store();
    for sql in LOOKUPS {
        let plan = plan(&store, sql);
        assert!(
            plan.iter().all(|l| !l.starts_with("SCAN")),
            "{sql}\n  is planned as {plan:#?}"
        );
    }
}

#[test]
fn frequent_aggregates_read_a_covering_index_and_sort_nothing() {
    let (_dir, store) = store();
    for sql in AGGREGATES {
        let plan = plan(&store, sql);
        assert!(
            plan.iter()
                .all(|l| !l.starts_with("SCAN") || l.contains("COVERING INDEX")),
            "{sql}\n  is planned as {plan:#?}"
        );
        assert!(
            plan.iter().all(|l| !l.contains("TEMP B-TREE")),
            "{sql}\n  is planned as {plan:#?}"
        );
    }
}

#[test]
fn retention_scans_walk_an_index_oldest_first_without_sorting() {
    let (_dir, store) = store();
    for (table, sql) in crate::retention::candidate_queries() {
        let plan = plan(&store, &sql);
        assert!(
            plan.iter().all(|l| !l.starts_with("SCAN")),
            "{table}: {plan:#?}"
        );
        assert!(
            plan.iter().all(|l| !l.contains("TEMP B-TREE")),
            "{table} sorts instead of walking its index: {plan:#?}"
        );
        if table == "jobs" {
            // Not the jobs that sent invoices, which stay forever.
            assert!(
                plan.iter().any(|l| l.contains("jobs_prunable")),
                "{table}: {plan:#?}"
            );
        }
    }
}
