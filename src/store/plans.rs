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

/// The e-invoice lookups (jobs, messages, transitions, Turnkey's files), as the store's
/// modules run them.
fn einvoice_lookups() -> Vec<String> {
    use super::{feedback as f, jobs, messages as m, transitions as t};
    let mut out: Vec<String> = [
        f::SEEN_CONTENT,
        f::KNOWN,
        f::ID_OF,
        f::UNREADABLE,
        f::SET_KEPT,
        f::FORGET_UNREADABLE,
        f::DOUBTED,
        f::OLD_PACKS,
        f::PRUNE_IN_PLACE,
        f::PRUNE_PACKS,
        f::PACK_MEMBERS,
        f::PACK_SEEN,
        m::STANDING_ALLOWANCES,
        t::OF_MESSAGE,
        t::QUEUED_BETWEEN,
        jobs::BY_MD5,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Messages by id, key, file name, type and number, number, job and state.
    for filter in [
        m::BY_ID,
        m::BY_KEY,
        m::GENERATIONS,
        m::ABOUT_INVOICE,
        m::BY_XML_NAME,
        m::BY_TYPE_AND_NUMBER,
        m::BY_NUMBER,
        m::OF_JOB,
        m::PACK_CANDIDATES,
        m::QUEUED_IN_PICKUP,
        m::OVERDUE,
        m::OLDEST_WAITING,
    ] {
        out.push(format!("SELECT id FROM messages WHERE {filter}"));
    }
    out.push(format!("SELECT id FROM jobs WHERE {}", jobs::OF_CONTENT));
    for filter in [super::manual::FOR_FILE, "id = ?1", "message_id = ?1"] {
        out.push(format!("SELECT id FROM manual_requests WHERE {filter}"));
    }
    out
}

/// Per-file, per-request and per-poll lookups, as the code writes them.
const LOOKUPS: &[&str] = &[
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
    "UPDATE ne_logins SET ticket_hash = NULL, nonce_hash = ?1, started_at = ?2
     WHERE ticket_hash = ?3 AND used_at IS NULL AND started_at >= ?4",
    "UPDATE ne_logins SET used_at = ?1
     WHERE nonce_hash = ?2 AND used_at IS NULL AND started_at >= ?3",
    "DELETE FROM ne_logins WHERE started_at < ?1",
];

/// Aggregates over a whole table that run often (`/metrics`, feedback scans): a walk of a
/// small covering index, not of the table.
const AGGREGATES: &[&str] = &[
    super::messages::COUNT_BY_TYPE_AND_STATE,
    super::messages::TENANTS,
    super::gauges::DELIVERIES_BY_STATE,
    super::jobs::COUNT_BY_STATE,
];

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("turnbridge.db")).unwrap();
    (dir, store)
}

#[test]
fn every_lookup_goes_through_an_index() {
    let (_dir, store) = store();
    let einvoice = einvoice_lookups();
    for sql in LOOKUPS
        .iter()
        .copied()
        .chain(einvoice.iter().map(String::as_str))
    {
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
fn the_outbox_gauge_is_counted_from_indexes_alone() {
    let (_dir, store) = store();
    let plan = plan(&store, super::gauges::OUTBOX_WAITING);
    // The one constant row is the SELECT that adds the two counts up.
    let reads: Vec<_> = plan
        .iter()
        .filter(|l| l.starts_with("SCAN") || l.starts_with("SEARCH"))
        .collect();
    assert!(
        reads.len() == 3
            && reads
                .iter()
                .all(|l| l.contains("COVERING INDEX") || *l == "SCAN CONSTANT ROW"),
        "{plan:#?}"
    );
    assert!(plan.iter().all(|l| !l.contains("TEMP B-TREE")), "{plan:#?}");
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
