//! Read-only views of the store for operators: one invoice's story (`turnbridge history`)
//! and the state of the whole system (`turnbridge status`).
//!
//! The text views show every stored value printable ([`shown`]): much of it came from outside
//! (spool file names, Turnkey's error text and folder paths, result files), and a newline or a
//! terminal escape code in it must not forge a line or reach the operator's terminal. The JSON
//! views are JSON, escaped by construction.

use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use crate::einvoice::printable;
use crate::store::{self, jobs, messages, JobState, MessageState, Result, StoreError};

/// The longest value a text view shows, in characters; the rest is cut and counted.
const MAX_SHOWN: usize = 500;

/// A stored value (or any outside text) as a text view shows it: control characters escaped,
/// cut when long.
pub fn shown(value: &str) -> String {
    printable(value, MAX_SHOWN)
}

/// One step of a message's story.
pub type Transition = messages::TransitionRow;

/// What an operator asked for, when a message was written by a command
/// (`turnbridge invoice …`).
pub type ManualRequest = store::manual::Request;

#[derive(Debug, Serialize)]
pub struct MessageStory {
    pub message_type: String,
    pub legacy_type: Option<String>,
    pub seller_ban: String,
    pub number: String,
    /// 1 for the first message of its type, seller and number; each one sent again (after an
    /// error, or an invoice issued again after its void) is the next. Every generation is
    /// listed, each with its own evidence.
    pub generation: u32,
    /// The operator's request it was written for, if any.
    pub manual: Option<ManualRequest>,
    pub tenant: String,
    pub state: MessageState,
    pub mof_code: Option<String>,
    pub status_message: Option<String>,
    pub job_id: String,
    pub source_file: String,
    pub source_row: i64,
    pub archived_source: Option<String>,
    pub xml_path: Option<String>,
    pub transitions: Vec<Transition>,
}

/// Every message about a document number (every generation of each), oldest first, each
/// with its transitions.
pub fn history(conn: &Connection, number: &str) -> Result<Vec<MessageStory>> {
    let mut out = Vec::new();
    for m in messages::by_number(conn, number)? {
        let archived_source = jobs::job(conn, &m.job_id)?.and_then(|j| j.final_path);
        out.push(MessageStory {
            transitions: messages::transitions_of(conn, m.id)?,
            generation: m.generation,
            manual: store::manual::of_message(conn, m.id)?,
            message_type: m.message_type,
            legacy_type: m.legacy_type,
            seller_ban: m.seller_ban,
            number: m.number,
            tenant: m.tenant,
            state: m.state,
            mof_code: m.mof_code,
            status_message: m.status_message,
            job_id: m.job_id,
            source_file: m.source_file,
            source_row: m.source_row,
            archived_source,
            xml_path: m.xml_path,
        });
    }
    Ok(out)
}

pub fn history_text(stories: &[MessageStory]) -> String {
    let mut s = String::new();
    for m in stories {
        let legacy = m
            .legacy_type
            .as_ref()
            .map(|l| format!(" (from {})", shown(l)))
            .unwrap_or_default();
        s.push_str(&format!(
            "{} {}{legacy}  generation {}  seller {}  tenant {}  state {}\n",
            shown(&m.message_type),
            shown(&m.number),
            m.generation,
            shown(&m.seller_ban),
            shown(&m.tenant),
            m.state
        ));
        if let Some(r) = &m.manual {
            s.push_str(&format!(
                "  manual   {} (request {}) by {} at {}{}\n",
                r.action,
                r.id,
                shown(&r.requested_by),
                shown(&r.requested_at),
                r.reason
                    .as_deref()
                    .map(|why| format!(": {}", shown(why)))
                    .unwrap_or_default()
            ));
        }
        if m.mof_code.is_some() || m.status_message.is_some() {
            s.push_str(&format!(
                "  result   {}{}\n",
                m.mof_code
                    .as_deref()
                    .map(|c| format!("[{}] ", shown(c)))
                    .unwrap_or_default(),
                shown(m.status_message.as_deref().unwrap_or(""))
            ));
        }
        s.push_str(&format!(
            "  source   {} row {} (job {})\n",
            shown(&m.source_file),
            m.source_row,
            shown(&m.job_id)
        ));
        if let Some(a) = &m.archived_source {
            s.push_str(&format!("  archived {}\n", shown(a)));
        }
        if let Some(x) = &m.xml_path {
            s.push_str(&format!("  xml      {}\n", shown(x)));
        }
        for t in &m.transitions {
            s.push_str(&format!(
                "  {}  {} → {}  {}\n",
                shown(&t.at),
                t.from.map_or("-", |f| f.as_str()),
                t.to,
                shown(t.evidence.as_deref().unwrap_or(""))
            ));
        }
        s.push('\n');
    }
    s
}

#[derive(Debug, Serialize)]
pub struct Count {
    pub message_type: String,
    pub state: MessageState,
    pub count: i64,
}

#[derive(Debug, Serialize)]
pub struct Waiting {
    pub message_type: String,
    pub number: String,
    pub state: MessageState,
    pub since: String,
}

/// The summary recorded last.
pub type LastSummary = store::feedback::Summary;

#[derive(Debug, Serialize)]
pub struct Status {
    pub messages: Vec<Count>,
    pub oldest_waiting: Option<Waiting>,
    pub jobs: Vec<(JobState, i64)>,
    pub rejected_files: usize,
    pub rejected_feedback_files: usize,
    pub last_summary: Option<LastSummary>,
    /// Events still to be delivered (not yet fanned out, or with a delivery pending).
    pub pending_events: i64,
    /// What the daemon last said is wrong (`health.json`), and whether it still runs.
    pub health: Option<crate::health::Snapshot>,
    pub daemon_running: bool,
}

/// Counts of what sits in `dir` for a person: files that are not reports.
fn waiting_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_file())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    !n.ends_with(".error.txt") && !n.ends_with(".error.json") && !n.starts_with('.')
                })
                .count()
        })
        .unwrap_or(0)
}

pub fn status(conn: &Connection, state_dir: &Path) -> Result<Status> {
    let messages = messages::count_by_type_and_state(conn)?
        .into_iter()
        .map(|(message_type, state, count)| Count {
            message_type,
            state,
            count,
        })
        .collect();
    let oldest_waiting = messages::oldest_waiting(conn)?.map(|m| Waiting {
        message_type: m.message_type,
        number: m.number,
        state: m.state,
        since: m.updated_at,
    });
    let jobs = jobs::count_by_state(conn)?;
    let last_summary = store::feedback::last_summary(conn)?;
    let pending_events = store::gauges::outbox_waiting(conn)? as i64;
    let health = crate::health::read(state_dir);
    Ok(Status {
        messages,
        oldest_waiting,
        jobs,
        rejected_files: waiting_files(&state_dir.join("rejected")),
        rejected_feedback_files: waiting_files(&state_dir.join("rejected/feedback")),
        last_summary,
        pending_events,
        daemon_running: health.as_ref().is_some_and(crate::health::writer_alive),
        health,
    })
}

pub fn status_text(s: &Status) -> String {
    let mut out = String::new();
    match &s.health {
        None => out.push_str("daemon: has not run with this state folder\n"),
        Some(h) => {
            let running = if s.daemon_running {
                format!("running (pid {})", h.pid)
            } else {
                format!("not running (pid {} last wrote at {})", h.pid, h.updated_at)
            };
            out.push_str(&format!("daemon: {running}\n"));
            if h.problems.is_empty() {
                out.push_str("problems: none\n");
            } else {
                out.push_str("problems:\n");
                for p in &h.problems {
                    out.push_str(&format!(
                        "  {}: {} (since {})\n",
                        shown(&p.component),
                        shown(&p.problem),
                        shown(&p.since)
                    ));
                }
            }
        }
    }
    out.push_str("messages\n");
    let states = MessageState::ALL;
    let mut types: Vec<&str> = s.messages.iter().map(|c| c.message_type.as_str()).collect();
    types.dedup();
    let types: Vec<String> = types.into_iter().map(shown).collect();
    out.push_str(&format!("  {:<6}", "type"));
    for st in states {
        out.push_str(&format!(" {st:>10}"));
    }
    out.push('\n');
    for ty in types {
        out.push_str(&format!("  {ty:<6}"));
        for st in states {
            let n = s
                .messages
                .iter()
                .find(|c| shown(&c.message_type) == ty && c.state == *st)
                .map_or(0, |c| c.count);
            out.push_str(&format!(" {n:>10}"));
        }
        out.push('\n');
    }
    match &s.oldest_waiting {
        Some(w) => out.push_str(&format!(
            "oldest waiting: {} {} {} since {}\n",
            shown(&w.message_type),
            shown(&w.number),
            w.state,
            shown(&w.since)
        )),
        None => out.push_str("oldest waiting: none\n"),
    }
    let jobs: Vec<String> = s.jobs.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out.push_str(&format!(
        "jobs: {}\n",
        if jobs.is_empty() {
            "none".into()
        } else {
            jobs.join(", ")
        }
    ));
    out.push_str(&format!(
        "rejected, waiting for a person: {} file(s) in state/rejected, {} result file(s) in state/rejected/feedback\n",
        s.rejected_files, s.rejected_feedback_files
    ));
    match &s.last_summary {
        Some(l) => out.push_str(&format!(
            "last summary: {} {} expected {} total {} good {} failed {}{}\n",
            shown(l.date.as_deref().unwrap_or("?")),
            shown(l.message_type.as_deref().unwrap_or("all types")),
            l.expected,
            l.total,
            l.good,
            l.failed,
            l.mismatch
                .as_deref()
                .map(|m| format!("  MISMATCH: {}", shown(m)))
                .unwrap_or_default()
        )),
        None => out.push_str("last summary: none yet\n"),
    }
    out.push_str(&format!("events in the outbox: {}\n", s.pending_events));
    out
}

/// Opens the database read-only for reports.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(
        |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "x\nFORGED line\x1b[2J";

    fn story(status_message: String) -> MessageStory {
        MessageStory {
            message_type: "F0401".into(),
            legacy_type: None,
            seller_ban: "28080623".into(),
            number: "EE00000001".into(),
            generation: 2,
            manual: Some(ManualRequest {
                id: 1,
                action: store::manual::ManualAction::Resend,
                message_type: "F0401".into(),
                seller_ban: "28080623".into(),
                number: "EE00000001".into(),
                reason: Some(format!("why{HOSTILE}")),
                requested_by: format!("ops{HOSTILE}"),
                requested_at: "2026-01-01T00:00:00.000Z".into(),
                file_name: "manual-1-resend-EE00000001.json".into(),
                md5: String::new(),
                job_id: None,
                message_id: None,
                refusal: None,
            }),
            tenant: "default".into(),
            state: MessageState::Error,
            mof_code: Some(format!("E1{HOSTILE}")),
            status_message: Some(status_message),
            job_id: "j".into(),
            source_file: format!("batch{HOSTILE}.csv"),
            source_row: 2,
            archived_source: Some(format!("/a/j_batch{HOSTILE}.csv")),
            xml_path: None,
            transitions: vec![Transition {
                at: "2026-01-01T00:00:00.000Z".into(),
                from: Some(store::states::TransitionFrom::PickedUp),
                to: MessageState::Error,
                evidence: Some(format!("/OUTBOX/E{HOSTILE}.xml")),
            }],
        }
    }

    #[test]
    fn history_text_shows_outside_text_printable_and_cut() {
        let text = history_text(&[story(format!("rejected: {HOSTILE}"))]);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(!text.lines().any(|l| l.starts_with("FORGED")), "{text}");
        // Code, message, request (who, why), source, archive and evidence, each escaped.
        assert_eq!(text.matches("x\\nFORGED").count(), 7, "{text}");
        assert!(
            text.contains("generation 2") && text.contains("manual   resend (request 1) by ops"),
            "{text}"
        );
        let text = history_text(&[story("y".repeat(100_000))]);
        assert!(text.contains("… (100000 characters)"), "{text}");
        assert!(text.len() < 2000, "{} bytes", text.len());
    }

    /// "events in the outbox" are the events still to be delivered, as the
    /// `turnbridge_events_outbox` gauge counts them: not those already fanned out and delivered
    /// (or with no endpoint to go to), which stay in the table until their retention.
    #[test]
    fn status_counts_the_events_waiting_in_the_outbox_not_every_event_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::store::Store::open(&dir.path().join("t.db")).unwrap();
        let tx = store.transaction().unwrap();
        for id in ["a", "b"] {
            let e = crate::events::NextengineAuthExpiring {
                account_id: id.into(),
            };
            store::events::add(&tx, &e).unwrap();
        }
        tx.commit().unwrap();
        assert_eq!(status(store.conn(), dir.path()).unwrap().pending_events, 2);
        // No endpoint is subscribed: fanned out, they wait for nothing.
        crate::webhook::outbound::fan_out(&mut store, 100).unwrap();
        assert_eq!(store::events::count(store.conn()).unwrap(), 2, "kept");
        assert_eq!(status(store.conn(), dir.path()).unwrap().pending_events, 0);
    }

    #[test]
    fn status_text_shows_problems_printable() {
        let s = Status {
            messages: vec![],
            oldest_waiting: None,
            jobs: vec![],
            rejected_files: 0,
            rejected_feedback_files: 1,
            last_summary: Some(LastSummary {
                date: Some("20260101".into()),
                message_type: Some(format!("F0401{HOSTILE}")),
                summary_id: None,
                expected: 1,
                total: 1,
                good: 1,
                failed: 0,
                mismatch: Some(format!("unknown message type {HOSTILE}")),
                at: "2026-01-01T00:00:00.000Z".into(),
            }),
            pending_events: 0,
            health: Some(crate::health::Snapshot {
                pid: 1,
                updated_at: "2026-01-01T00:00:00.000Z".into(),
                problems: vec![crate::health::Problem {
                    component: "feedback".into(),
                    problem: format!("cannot read /OUTBOX/{HOSTILE}"),
                    since: "2026-01-01T00:00:00.000Z".into(),
                }],
            }),
            daemon_running: false,
        };
        let text = status_text(&s);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(!text.lines().any(|l| l.starts_with("FORGED")), "{text}");
        assert_eq!(text.matches("x\\nFORGED").count(), 3, "{text}");
    }
}
