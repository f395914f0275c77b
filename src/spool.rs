//! The spool: noticing dropped files, deciding when a file is complete, claiming it, and
//! parking it at the end (archive, or rejected beside a report).
//!
//! Change notifications only wake the scanner; the folder listing is the truth. A full scan
//! runs at start-up, after the watcher reports an overflow, and on a slow timer, so a lost
//! notification delays a file but never loses it.
//!
//! A file is complete when it arrived by rename (the `name.tmp` → `name` convention) or when
//! its size and modification time have not changed for `settle_ms`. Hidden files and `.tmp`
//! / `.part` files are never taken. A file is claimed by renaming it into `state/work/`
//! under its job id; whatever is in `work/` after a crash is resumed at start-up.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use notify::{Event, EventKind, RecursiveMode, Watcher};
use rand::Rng;
use serde::Serialize;

use crate::durable;
use crate::einvoice::printable;

/// Whether a name in the spool is a file to take (not hidden, not being written).
pub fn is_candidate(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let partial = [
        ".tmp",
        ".part",
        ".partial",
        ".filepart",
        ".crdownload",
        ".swp",
        "~",
    ];
    !(name.starts_with('.') || partial.iter().any(|s| lower.ends_with(s)))
}

/// What the watcher tells the scanner.
#[derive(Debug, Clone, PartialEq)]
pub enum Wake {
    /// Something changed; `renamed_in` is set for a file that arrived by rename.
    Changed { renamed_in: Option<PathBuf> },
    /// The watcher lost events; scan everything.
    Rescan,
}

/// Starts watching folders (the spool, or recursively Turnkey's feedback trees); events are
/// sent to `tx` until the watcher is dropped. Folders that do not exist are skipped.
pub fn watch(
    dirs: &[PathBuf],
    recursive: bool,
    tx: Sender<Wake>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
        let wake = match res {
            Ok(ev) if ev.need_rescan() => Wake::Rescan,
            Ok(ev) => match ev.kind {
                EventKind::Modify(notify::event::ModifyKind::Name(
                    notify::event::RenameMode::To | notify::event::RenameMode::Both,
                )) => Wake::Changed {
                    renamed_in: ev.paths.last().cloned(),
                },
                EventKind::Access(_) => return,
                _ => Wake::Changed { renamed_in: None },
            },
            Err(_) => Wake::Rescan,
        };
        let _ = tx.send(wake);
    })?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        watcher.watch(dir, mode)?;
    }
    Ok(watcher)
}

/// Decides when files in a spool folder are complete.
#[derive(Debug, Default)]
pub struct Settler {
    seen: HashMap<PathBuf, (u64, SystemTime, Instant)>,
    renamed_in: HashSet<PathBuf>,
}

impl Settler {
    pub fn note_renamed_in(&mut self, path: PathBuf) {
        self.renamed_in.insert(path);
    }

    /// Lists the folder and returns the complete files in name order, and whether some file
    /// is still settling (the caller should look again after `settle`).
    pub fn ready(&mut self, dir: &Path, settle: Duration) -> io::Result<(Vec<PathBuf>, bool)> {
        let mut ready = Vec::new();
        let mut pending = false;
        let mut present = HashSet::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_candidate(&name) {
                continue;
            }
            let meta = match fs::symlink_metadata(entry.path()) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if !meta.is_file() {
                continue;
            }
            let path = entry.path();
            present.insert(path.clone());
            let size = meta.len();
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let now = Instant::now();
            let old_enough = SystemTime::now()
                .duration_since(mtime)
                .is_ok_and(|age| age >= settle);
            // Taken on arrival by rename; otherwise only after a second look finds it
            // unchanged, `settle` after the first (sooner if it was already old then).
            let done = if self.renamed_in.contains(&path) {
                true
            } else {
                match self.seen.get(&path) {
                    Some(&(s, m, since)) if s == size && m == mtime => {
                        old_enough || now - since >= settle
                    }
                    _ => {
                        self.seen.insert(path.clone(), (size, mtime, now));
                        false
                    }
                }
            };
            if done {
                ready.push(path);
            } else {
                pending = true;
            }
        }
        self.seen.retain(|p, _| present.contains(p));
        self.renamed_in.retain(|p| present.contains(p));
        ready.sort();
        Ok((ready, pending))
    }

    pub fn forget(&mut self, path: &Path) {
        self.seen.remove(path);
        self.renamed_in.remove(path);
    }
}

/// How many times a spool file that cannot be claimed (renamed into `work/`) is tried before
/// it is left alone.
pub const CLAIM_TRIES: u32 = 3;

/// What identifies a file's current version: inode, size, and modification and status-change
/// times (a `chmod` or `chattr` changes the latter).
type Stamp = (u64, u64, i64, i64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).ok()?;
    Some((
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// Spool files that could not be claimed, and how often: one that failed [`CLAIM_TRIES`]
/// times is not tried again until it changes (see [`Stamp`]) or the daemon restarts, so a
/// file that cannot be moved is not retried at every scan forever. It cannot be moved aside
/// either, so this record is what keeps it from being retried.
#[derive(Debug, Default)]
pub struct Unclaimable {
    files: HashMap<PathBuf, (Option<Stamp>, u32)>,
}

impl Unclaimable {
    /// Whether `path` failed often enough and has not changed since.
    pub fn given_up(&self, path: &Path) -> bool {
        self.files
            .get(path)
            .is_some_and(|(s, n)| *n >= CLAIM_TRIES && *s == stamp(path))
    }

    /// Counts one more failure for `path` as it is now; returns the count for this version.
    pub fn failed(&mut self, path: &Path) -> u32 {
        let now = stamp(path);
        let entry = self.files.entry(path.to_path_buf()).or_insert((now, 0));
        if entry.0 != now {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1
    }

    /// Forgets `path` once it was claimed.
    pub fn taken(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// Forgets files that are gone; returns those still given up on.
    pub fn prune(&mut self) -> Vec<PathBuf> {
        self.files.retain(|p, _| p.exists());
        let mut out: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| self.given_up(p))
            .cloned()
            .collect();
        out.sort();
        out
    }
}

/// A new job id: the claim time and a random suffix, so ids sort by arrival and read well in
/// logs, e.g. `20261126T040212Z-3f9a2b`.
pub fn new_job_id() -> String {
    let suffix: u32 = rand::thread_rng().gen_range(0..0x100_0000);
    format!(
        "{}-{suffix:06x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    )
}

/// The name of a claimed file in `work/`: `<job id>_<original name>`. Names are cut to fit
/// the 255-byte limit of most filesystems (keeping the extension), with room for the
/// `.error.json` suffix of a report.
pub fn work_name(job_id: &str, name: &str) -> String {
    const MAX_NAME: usize = 200;
    if name.len() <= MAX_NAME {
        return format!("{job_id}_{name}");
    }
    let ext = name
        .rfind('.')
        .filter(|&i| name.len() - i <= 10)
        .map_or("", |i| &name[i..]);
    let mut cut = MAX_NAME - ext.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{job_id}_{}{ext}", &name[..cut])
}

/// Splits a `work/` name back into job id and original name.
pub fn parse_work_name(name: &str) -> Option<(&str, &str)> {
    let (id, rest) = name.split_once('_')?;
    let ok = id.len() == 23 && id.as_bytes()[8] == b'T' && id.as_bytes()[15] == b'Z';
    ok.then_some((id, rest))
}

/// Claims a spool file by renaming it into `work/`; returns the new path.
pub fn claim(path: &Path, work_dir: &Path, job_id: &str) -> io::Result<PathBuf> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    durable::move_into(path, work_dir, &work_name(job_id, &name))
}

/// The files in `work/` to resume, oldest job first.
pub fn in_flight(work_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(work_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && parse_work_name(&name).is_some() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// `… (N characters)` when `value` is longer than `max` characters.
fn cut_note(value: &str, max: usize) -> String {
    let n = value.chars().count();
    if n > max {
        format!("… ({n} characters)")
    } else {
        String::new()
    }
}

/// One line of a rejection report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportEntry {
    pub file: String,
    pub row: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    pub field: String,
    pub value: String,
    pub reason: String,
    /// The platform rule refused, for problems Turnkey itself would not see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<crate::einvoice::model::PlatformRule>,
}

impl ReportEntry {
    /// A line about a whole file (or archive member): no row, field or value.
    pub fn whole_file(file: impl Into<String>, reason: impl Into<String>) -> ReportEntry {
        ReportEntry {
            rule: None,
            file: file.into(),
            row: 0,
            message_type: None,
            number: None,
            field: String::new(),
            value: String::new(),
            reason: reason.into(),
        }
    }
}

/// Why a file, or some of its rows, were not sent: written as `<name>.error.txt` for a person
/// and `<name>.error.json` for a program.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub job_id: String,
    pub file: String,
    /// `rejected` (the whole file), `partial` (some rows), `duplicate`, or `implausible` (a
    /// file from Turnkey that was not believed).
    pub outcome: String,
    pub summary: String,
    pub accepted: usize,
    pub rejected: usize,
    /// Files beside the report that hold what was rejected.
    pub rejected_files: Vec<String>,
    pub problems: Vec<ReportEntry>,
}

/// The longest summary or reason a text report shows, in characters.
const MAX_REPORT_TEXT: usize = 2000;

impl Report {
    /// The report for a person. Everything in it that can come from outside (file and member
    /// names, values, Turnkey's words in a reason) is shown printable ([`printable`]): it
    /// cannot start a line of its own or hold a terminal escape code, and is cut when long.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "turnbridge: {} (job {})\n{}\n",
            printable(&self.file, 200),
            printable(&self.job_id, 100),
            printable(&self.summary, MAX_REPORT_TEXT)
        );
        if !self.rejected_files.is_empty() {
            let files: Vec<String> = self
                .rejected_files
                .iter()
                .map(|f| printable(f, 300))
                .collect();
            s.push_str(&format!("What was rejected is in: {}\n", files.join(", ")));
        }
        if !self.problems.is_empty() {
            s.push('\n');
        }
        for p in &self.problems {
            let what = match (&p.message_type, &p.number) {
                (Some(t), Some(n)) => format!(" ({} {})", printable(t, 50), printable(n, 50)),
                (Some(t), None) => format!(" ({})", printable(t, 50)),
                _ => String::new(),
            };
            // Names can come from the input (archive members, JSON keys): shown printable.
            // A value is shown cut; the rejected rows beside the report keep it whole.
            let file = printable(&p.file, 200);
            let at = if p.row == 0 {
                file
            } else {
                format!("{file} row {}", p.row)
            };
            let field = if p.field.is_empty() {
                String::new()
            } else if p.value.is_empty() {
                format!(", field {}", printable(&p.field, 200))
            } else {
                format!(
                    ", field {} = {:?}{}",
                    printable(&p.field, 200),
                    p.value.chars().take(200).collect::<String>(),
                    cut_note(&p.value, 200)
                )
            };
            let rule = match p.rule {
                Some(r) => format!(" [platform rule {}: {}]", r.name(), r.source()),
                None => String::new(),
            };
            let reason = printable(&p.reason, MAX_REPORT_TEXT);
            s.push_str(&format!("{at}{what}{field}: {reason}{rule}\n"));
        }
        s
    }

    /// Writes both report files next to `base` (a path in the rejected folder).
    pub fn write(&self, base: &Path) -> io::Result<()> {
        let name = base.file_name().unwrap_or_default().to_string_lossy();
        let dir = base.parent().unwrap_or(Path::new("."));
        durable::create_dir_all(dir)?;
        durable::write_atomic(
            &dir.join(format!("{name}.error.txt")),
            self.to_text().as_bytes(),
        )?;
        let json = serde_json::to_vec_pretty(self).expect("report serializes");
        durable::write_atomic(&dir.join(format!("{name}.error.json")), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_skip_hidden_and_partial_files() {
        assert!(is_candidate("batch.csv"));
        for name in [".batch.csv", "batch.csv.tmp", "batch.part", "batch.csv~"] {
            assert!(!is_candidate(name), "{name}");
        }
    }

    #[test]
    fn work_names_round_trip() {
        let id = new_job_id();
        let name = work_name(&id, "a_b.csv");
        assert_eq!(parse_work_name(&name), Some((id.as_str(), "a_b.csv")));
        assert_eq!(parse_work_name("random_file.csv"), None);
    }

    #[test]
    fn a_growing_file_is_not_ready_until_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        fs::write(&path, "x").unwrap();
        let settle = Duration::from_millis(300);
        let mut s = Settler::default();
        let (ready, pending) = s.ready(dir.path(), settle).unwrap();
        assert!(ready.is_empty() && pending);
        std::thread::sleep(Duration::from_millis(350));
        let (ready, _) = s.ready(dir.path(), settle).unwrap();
        assert_eq!(ready, vec![path.clone()]);
        // A file that arrived by rename is taken at once.
        let moved = dir.path().join("b.csv");
        fs::write(&moved, "y").unwrap();
        s.note_renamed_in(moved.clone());
        let (ready, _) = s.ready(dir.path(), settle).unwrap();
        assert!(ready.contains(&moved));
    }

    #[test]
    fn report_text_keeps_input_from_rewriting_lines_or_growing_them() {
        let hostile = "x\nFORGED line\x1b[2J";
        let report = Report {
            job_id: "j".into(),
            file: format!("a{hostile}.zip"),
            outcome: "partial".into(),
            summary: format!("The file a{hostile}.zip was refused: {hostile}"),
            accepted: 0,
            rejected: 1,
            rejected_files: vec![format!("j_a{hostile}.zip")],
            problems: vec![ReportEntry {
                rule: None,
                file: "a.zip:x\nFORGED.json".into(),
                row: 1,
                message_type: Some(format!("F0401{hostile}")),
                number: Some(hostile.into()),
                field: "Messages[0].\x1b[2J".into(),
                value: "v".repeat(10_000),
                reason: format!("Turnkey says: {hostile}"),
            }],
        };
        let text = report.to_text();
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(!text.lines().any(|l| l.starts_with("FORGED")), "{text}");
        assert_eq!(text.matches("\\nFORGED").count(), 8, "{text}");
        assert!(text.contains("… (10000 characters)"), "{text}");
        assert!(text.len() < 1500, "{} bytes", text.len());
    }

    #[test]
    fn a_file_that_cannot_be_claimed_is_given_up_on_until_it_changes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        fs::write(&path, "x").unwrap();
        let mut u = Unclaimable::default();
        for n in 1..CLAIM_TRIES {
            assert_eq!(u.failed(&path), n);
            assert!(!u.given_up(&path));
        }
        assert_eq!(u.failed(&path), CLAIM_TRIES);
        assert!(u.given_up(&path));
        assert_eq!(u.prune(), vec![path.clone()]);
        // An operator's fix (here a chmod) changes its status-change time: tried again.
        std::thread::sleep(Duration::from_millis(20));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(!u.given_up(&path));
        assert_eq!(u.failed(&path), 1, "counted afresh");
        fs::remove_file(&path).unwrap();
        assert!(u.prune().is_empty());
        assert!(u.files.is_empty(), "forgotten once gone");
    }

    #[test]
    fn long_names_are_cut_to_fit() {
        let long = format!("{}.csv", "甲".repeat(100));
        let name = work_name(&new_job_id(), &long);
        assert!(name.len() <= 230 && name.ends_with(".csv"), "{name}");
        let (_, rest) = parse_work_name(&name).unwrap();
        assert!(rest.starts_with("甲"));
    }
}
