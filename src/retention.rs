//! Retention: every table that grows with traffic loses its rows once nothing depends on them
//! and they are older than `[retention]` says.
//!
//! | table | pruned | never pruned |
//! |---|---|---|
//! | `deliveries` + `delivery_attempts` | succeeded or cancelled for `deliveries_days`; dead for `dead_letters_days` | pending |
//! | `events` | fanned out, older than `events_days`, no delivery left | not yet fanned out |
//! | `transitions` | older than `transitions_days`, of a message final (acked, error) that long | those of messages in flight |
//! | `jobs` | finished (done, rejected, duplicate) for `jobs_days` and holding no message | claimed; any job with messages |
//! | `summaries` | older than `feedback_days` | |
//! | `feedback_files` | kept or set-aside result files (`kept_at`) seen before `feedback_days`, once the file is gone from where it was read and no summary names it | records of files still there |
//! | `stock_updates` | recorded, older than `stock_updates_days` (and the callbacks' replay window) | pending forward; the newest per code |
//! | `inventory_logs`, `company_events`, `audit` | older than their `*_days` | |
//! | `ne_jobs` | finished for `ne_jobs_days`, while no upload is in doubt | claimed, uploading, queued |
//! | `ne_logins` | started over a day ago | |
//! | `webhook_endpoints` | rotated-out secrets once their overlap ends ([`Retention::forget_rotated_secrets`]) | |
//!
//! Kept for good: `messages` and `allowance_lines` (a number sent before is refused, and
//! allowances are capped by their invoice, only while the store knows them), with the jobs
//! that recorded them, and `manual_requests` (one per operator command, naming the message it
//! made); the registries (`webhook_endpoints`, `nextengine_accounts`). Turnkey's
//! own records (`turnkey_packs`, in-place `feedback_files`) and request logs are also pruned
//! by the feedback tracker after `turnkey.retention_days`.
//!
//! Rows go in batches ([`BATCH_ROWS`] per transaction, write lock first), oldest first along
//! an index, so a prune never holds the writer long and never scans a table whole. A run
//! stops after its time budget; the daemon runs it again soon while rows remain.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::params;
use rusqlite::types::Value;

use crate::config;
use crate::store::feedback::FeedbackKind;
use crate::store::{JobState, MessageState, Store, StoreError};

/// Rows deleted per transaction.
pub const BATCH_ROWS: usize = 1000;

/// What the rules are set by: `[retention]`, and how long a stock callback's (ts, signature)
/// is all that refuses its replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub retention: config::Retention,
    /// `nextengine.ts_max_age_secs + ts_max_ahead_secs`.
    pub replay_window_secs: u64,
}

impl Limits {
    pub fn of(config: &config::Config) -> Limits {
        let ne = &config.nextengine;
        Limits {
            retention: config.retention.clone(),
            replay_window_secs: ne.ts_max_age_secs.saturating_add(ne.ts_max_ahead_secs),
        }
    }
}

/// How long a rule keeps its rows.
type Keep = fn(&Limits) -> chrono::Duration;

fn days(n: u64) -> chrono::Duration {
    chrono::Duration::days(n.min(config::MAX_RETENTION_DAYS) as i64)
}

/// One rule: which rows of a table may go, oldest first.
struct Rule {
    /// The table, for the log.
    table: &'static str,
    keep: Keep,
    /// Candidates as `(time, rowid, id, path)`: time before `?1`, after the keyset position
    /// `(?2, ?3)`, ordered by `(time, rowid)` along an index, at most `?4`.
    candidates: String,
    /// Run for each candidate with its id, children first.
    deletes: Vec<String>,
    /// Keep a candidate while a file is at its path (the record is what stops it being read
    /// again).
    while_file_exists: bool,
}

/// Rows of `table` whose `time_col` is before the cutoff and that match `and`, deleted by id.
fn rule(table: &'static str, keep: Keep, time_col: &str, and: &str) -> Rule {
    Rule {
        table,
        keep,
        candidates: candidates(table, time_col, "NULL", and),
        deletes: vec![format!("DELETE FROM {table} WHERE id = ?1")],
        while_file_exists: false,
    }
}

fn candidates(table: &str, time_col: &str, path_col: &str, and: &str) -> String {
    format!(
        "SELECT {time_col}, rowid, id, {path_col} FROM {table} AS t
         WHERE {time_col} < ?1 AND ({time_col}, rowid) > (?2, ?3) {and}
         ORDER BY {time_col}, rowid LIMIT ?4"
    )
}

/// Every rule, in the order they run: children before the rows they point at.
fn rules() -> Vec<Rule> {
    let mut r = Vec::new();
    let deliveries: [(&str, Keep); 3] = [
        ("succeeded", |l| days(l.retention.deliveries_days)),
        ("cancelled", |l| days(l.retention.deliveries_days)),
        ("dead", |l| days(l.retention.dead_letters_days)),
    ];
    for (state, keep) in deliveries {
        r.push(Rule {
            deletes: vec![
                "DELETE FROM delivery_attempts WHERE delivery_id = ?1".into(),
                "DELETE FROM deliveries WHERE id = ?1".into(),
            ],
            ..rule(
                "deliveries",
                keep,
                "updated_at",
                &format!("AND state = '{state}'"),
            )
        });
    }
    r.push(rule(
        "events",
        |l| days(l.retention.events_days),
        "created_at",
        "AND fanned_out = 1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = t.id)",
    ));
    r.push(rule(
        "transitions",
        |l| days(l.retention.transitions_days),
        "at",
        &format!(
            "AND EXISTS (SELECT 1 FROM messages m WHERE m.id = t.message_id
             AND m.state IN ('{}', '{}') AND m.updated_at < ?1)",
            MessageState::FINAL[0],
            MessageState::FINAL[1]
        ),
    ));
    // Jobs that recorded messages stay with them: the MD5 rule refuses their bytes again.
    // Those sent nothing (`success_count = 0`, the partial index `jobs_prunable`), so the scan
    // never walks the jobs that must stay; the messages check guards what the count misses.
    for state in JobState::ALL.iter().filter(|s| s.is_finished()) {
        r.push(rule(
            "jobs",
            |l| days(l.retention.jobs_days),
            "finished_at",
            &format!(
                "AND state = '{state}' AND success_count = 0
                 AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.job_id = t.id)"
            ),
        ));
    }
    r.push(rule(
        "summaries",
        |l| days(l.retention.feedback_days),
        "at",
        "",
    ));
    let kept = "AND kept_at IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM summaries s WHERE s.feedback_id = t.id)";
    r.push(Rule {
        // A result not believed is reported while its set-aside copy is there (the operator
        // removes it to clear the problem): that copy is the file that keeps the record.
        candidates: candidates(
            "feedback_files",
            "seen_at",
            &format!(
                "CASE WHEN t.kind = '{}' THEN t.kept_at ELSE t.path END",
                FeedbackKind::Implausible
            ),
            kept,
        ),
        while_file_exists: true,
        ..rule(
            "feedback_files",
            |l| days(l.retention.feedback_days),
            "seen_at",
            kept,
        )
    });
    r.push(rule(
        "stock_updates",
        // Never shorter than the replay window: until a callback's ts is too old, only its
        // stored (ts, signature) refuses it.
        |l| {
            days(l.retention.stock_updates_days)
                .max(chrono::Duration::seconds(l.replay_window_secs as i64))
        },
        "received_at",
        "AND sink_state = 'recorded'
         AND EXISTS (SELECT 1 FROM stock_updates n WHERE n.code = t.code AND n.id > t.id)",
    ));
    let logs: [(&str, Keep, &str); 3] = [
        (
            "inventory_logs",
            |l| days(l.retention.inventory_logs_days),
            "received_at",
        ),
        (
            "company_events",
            |l| days(l.retention.company_events_days),
            "received_at",
        ),
        ("audit", |l| days(l.retention.audit_days), "at"),
    ];
    for (table, keep, time_col) in logs {
        r.push(rule(table, keep, time_col, ""));
    }
    // An upload in doubt after a crash adopts a NextEngine queue entry no other job follows:
    // finished jobs' queue ids stay while one is in doubt.
    for state in ["done", "failed", "unknown", "rejected"] {
        r.push(rule(
            "ne_jobs",
            |l| days(l.retention.ne_jobs_days),
            "updated_at",
            &format!(
                "AND state = '{state}' AND NOT EXISTS (SELECT 1 FROM ne_jobs u WHERE u.state = 'uploading')"
            ),
        ));
    }
    // A sign-in is good for minutes; the store keeps a day of them.
    r.push(rule("ne_logins", |_| days(1), "started_at", ""));
    r
}

/// What one run removed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pruned {
    /// Rows deleted per table.
    pub rows: BTreeMap<&'static str, usize>,
    /// Rotated-out webhook secrets removed.
    pub secrets: usize,
    /// False when the budget ran out with rows left to prune.
    pub done: bool,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.rows.values().sum()
    }
}

/// The pruner, with its own connection to the store.
pub struct Retention {
    store: Store,
    limits: Limits,
    rules: Vec<Rule>,
    batch: usize,
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Retention {
    pub fn new(store: Store, limits: Limits) -> Retention {
        Retention {
            store,
            limits,
            rules: rules(),
            batch: BATCH_ROWS,
        }
    }

    /// Deletes at most `rows` per transaction instead of [`BATCH_ROWS`].
    pub fn with_batch(mut self, rows: usize) -> Retention {
        self.batch = rows.max(1);
        self
    }

    /// Applies a reloaded configuration.
    pub fn reload(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Removes the rotated-out webhook secrets whose overlap ended by `now`.
    pub fn forget_rotated_secrets(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        crate::webhook::outbound::forget_rotated_secrets(
            &mut self.store,
            crate::store::Timestamp::from_utc(now),
        )
    }

    /// Prunes every table as of `now`, in batches, until nothing is left to prune or `budget`
    /// is spent (checked after each full batch, so every run makes progress).
    pub fn prune(&mut self, now: DateTime<Utc>, budget: Duration) -> Result<Pruned, StoreError> {
        let started = Instant::now();
        let mut out = Pruned {
            secrets: self.forget_rotated_secrets(now)?,
            ..Pruned::default()
        };
        for i in 0..self.rules.len() {
            let cutoff = at(now - (self.rules[i].keep)(&self.limits));
            let mut after = (String::new(), i64::MIN);
            loop {
                let (deleted, next) = self.batch(i, &cutoff, &after)?;
                if deleted > 0 {
                    *out.rows.entry(self.rules[i].table).or_default() += deleted;
                }
                match next {
                    None => break,
                    // A full batch: there may be more; go on while the budget lasts.
                    Some(_) if started.elapsed() >= budget => return Ok(out),
                    Some(n) => after = n,
                }
            }
        }
        out.done = true;
        Ok(out)
    }

    /// One transaction of rule `i`: returns the rows deleted and the keyset position to go
    /// on from, or `None` when the rule has nothing left.
    fn batch(
        &mut self,
        i: usize,
        cutoff: &str,
        after: &(String, i64),
    ) -> Result<(usize, Option<(String, i64)>), StoreError> {
        let limit = self.batch as i64;
        let rule = &self.rules[i];
        let tx = self.store.transaction()?;
        let rows: Vec<(String, i64, Value, Option<String>)> = {
            let mut stmt = tx.prepare_cached(&rule.candidates)?;
            let rows = stmt.query_map(params![cutoff, after.0, after.1, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut deleted = 0;
        for (_, _, key, path) in &rows {
            if rule.while_file_exists && path.as_deref().is_some_and(file_is_there) {
                continue;
            }
            for sql in &rule.deletes {
                tx.prepare_cached(sql)?.execute([key])?;
            }
            deleted += 1;
        }
        tx.commit()?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|(t, id, _, _)| (t.clone(), *id)))
            .flatten();
        Ok((deleted, next))
    }
}

/// Whether something is at `path` (a link counts).
fn file_is_there(path: &str) -> bool {
    std::fs::symlink_metadata(Path::new(path)).is_ok()
}

/// Every rule's candidate query, for the test of their plans.
#[cfg(test)]
pub(crate) fn candidate_queries() -> Vec<(&'static str, String)> {
    rules()
        .into_iter()
        .map(|r| (r.table, r.candidates))
        .collect()
}

#[cfg(test)]
mod tests;
