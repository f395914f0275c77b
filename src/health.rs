//! What is wrong right now, for the operator.
//!
//! Each part of the daemon sets a problem under its own name when it hits trouble it will
//! retry on its own (inbox not writable, disk full, database busy, a webhook receiver down,
//! NextEngine in maintenance) and clears it when the next attempt works. The set is kept in
//! `<state>/health.json`, rewritten atomically on every change, so `turnbridge status` shows
//! it even while the database is locked, and `/healthz` reports it. The log says the same
//! things as they happen; this is the "what is still wrong" view.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// The file the daemon keeps its current problems in, under the state folder.
pub const FILE: &str = "health.json";

/// One thing that is wrong.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// Which part: `einvoice`, `feedback`, `webhooks <endpoint>`, `nextengine`, ….
    pub component: String,
    /// What is wrong, in the words of the error.
    pub problem: String,
    /// When it started (RFC 3339).
    pub since: String,
}

/// The content of `health.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// The daemon that wrote it.
    pub pid: u32,
    pub updated_at: String,
    pub problems: Vec<Problem>,
}

struct Health {
    path: PathBuf,
    problems: Mutex<BTreeMap<String, Problem>>,
}

static HEALTH: OnceLock<Health> = OnceLock::new();

/// Starts a run with no problems, kept under `state_dir`. Until this is called (commands,
/// unit tests) setting and clearing do nothing.
pub fn init(state_dir: &Path) {
    let h = HEALTH.get_or_init(|| Health {
        path: state_dir.join(FILE),
        problems: Mutex::new(BTreeMap::new()),
    });
    let mut p = h.problems.lock().unwrap_or_else(|e| e.into_inner());
    p.clear();
    save(h, &p);
}

/// Records that `component` is in trouble. Repeating the same problem changes nothing.
pub fn set(component: &str, problem: impl Into<String>) {
    let Some(h) = HEALTH.get() else { return };
    let problem = problem.into();
    let mut p = h.problems.lock().unwrap_or_else(|e| e.into_inner());
    let since = match p.get(component) {
        Some(old) if old.problem == problem => return,
        Some(old) => old.since.clone(),
        None => crate::store::now(),
    };
    p.insert(
        component.to_string(),
        Problem {
            component: component.to_string(),
            problem,
            since,
        },
    );
    save(h, &p);
}

/// Records that `component` works again.
pub fn clear(component: &str) {
    let Some(h) = HEALTH.get() else { return };
    let mut p = h.problems.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = p.remove(component) {
        info!(component, since = %old.since, "recovered: {}", old.problem);
        save(h, &p);
    }
}

/// Whether `component` has a problem now.
pub fn is_set(component: &str) -> bool {
    HEALTH.get().is_some_and(|h| {
        let p = h.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.contains_key(component)
    })
}

/// The current problems of this process.
pub fn problems() -> Vec<Problem> {
    HEALTH.get().map_or_else(Vec::new, |h| {
        let p = h.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.values().cloned().collect()
    })
}

fn save(h: &Health, problems: &BTreeMap<String, Problem>) {
    let snapshot = Snapshot {
        pid: std::process::id(),
        updated_at: crate::store::now(),
        problems: problems.values().cloned().collect(),
    };
    let json = serde_json::to_vec_pretty(&snapshot).expect("health serializes");
    // Best effort: on a full or read-only state disk the log still says what is wrong.
    if let Err(e) = crate::durable::write_atomic(&h.path, &json) {
        warn!(path = %h.path.display(), "cannot record the daemon's health: {e}");
    }
}

/// Reads what the daemon last recorded; `None` when it never ran here.
pub fn read(state_dir: &Path) -> Option<Snapshot> {
    let bytes = std::fs::read(state_dir.join(FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether the process that wrote a snapshot is still running.
pub fn writer_alive(s: &Snapshot) -> bool {
    Path::new(&format!("/proc/{}", s.pid)).exists()
}
