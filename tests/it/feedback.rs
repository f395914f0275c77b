//! Turnkey feedback: each result fixture applied to a real store, idempotence across
//! restarts, Turnkey's folder moves in both layouts, and the sandbox end to end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use turnbridge::config::Config;
use turnbridge::pipeline::Pipeline;
use turnbridge::store::feedback as records;
use turnbridge::store::messages;
use turnbridge::turnkey::feedback::Tracker;

fn today() -> String {
    chrono::Local::now().format("%Y%m%d").to_string()
}

/// A store holding F0401 EF00000001..3, queued as F0401_<today>_0000000{1,2,3}.xml.
struct World {
    dir: tempfile::TempDir,
    config: Config,
    tracker: Tracker,
}

impl World {
    fn new(layout: &str) -> World {
        let inbox = if layout == "flat" {
            "turnkey/INBOX"
        } else {
            "turnkey/UpCast/B2SSTORAGE/{message_type}/SRC"
        };
        World::with_inbox(layout, inbox)
    }

    fn with_inbox(layout: &str, inbox: &str) -> World {
        World::build(layout, inbox, 0)
    }

    /// A world whose results that do not parse wait `unchanged_ms` before they are set aside.
    fn with_unchanged_ms(unchanged_ms: u64) -> World {
        World::build("flat", "turnkey/INBOX", unchanged_ms)
    }

    fn build(layout: &str, inbox: &str, unchanged_ms: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[paths]\nspool = \"spool\"\nstate = \"state\"\n[einvoice]\nsettle_ms = 0\n\
             [turnkey]\nlayout = \"{layout}\"\ninbox = \"{inbox}\"\noutbox = \"turnkey/OUTBOX\"\nerror = \"turnkey/ERROR\"\n\
             result_unchanged_ms = {unchanged_ms}\n[http]\nlisten = \"\"\n"
        );
        let config = Config::parse(&text, dir.path()).unwrap();
        std::fs::create_dir_all(config.einvoice_spool()).unwrap();
        let mut pipeline = Pipeline::open(config.clone()).unwrap();
        let batch = config.einvoice_spool().join("b.csv");
        std::fs::write(&batch, batch_csv("EF", 1, 3)).unwrap();
        assert_eq!(pipeline.take(&batch).unwrap().queued, 3);
        let tracker = Tracker::open(config.clone()).unwrap();
        World {
            dir,
            config,
            tracker,
        }
    }

    fn outbox(&self) -> PathBuf {
        self.dir.path().join("turnkey/OUTBOX")
    }

    /// Copies a fixture into the outbox with `{TODAY}` filled in.
    fn deliver(&self, rel: &str, as_name: &str) -> PathBuf {
        let bytes = std::fs::read(fixture(&format!("feedback/{rel}"))).unwrap();
        let bytes = match String::from_utf8(bytes.clone()) {
            Ok(s) => s.replace("{TODAY}", &today()).into_bytes(),
            Err(_) => bytes,
        };
        std::fs::create_dir_all(self.outbox()).unwrap();
        let p = self.outbox().join(as_name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn state_of(&self, number: &str) -> (String, Option<String>) {
        let m = messages::by_number(self.tracker.store.conn(), number)
            .unwrap()
            .pop()
            .unwrap_or_else(|| panic!("no message {number}"));
        (m.state.to_string(), m.mof_code)
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        events_named(self.tracker.store.conn(), kind)
    }

    /// Takes message `n`'s XML out of the pickup folder as Turnkey does: in the flat layout
    /// away, in the turnkey layout to `BAK/<today>/10/`.
    fn take(&self, n: u32) {
        let from = self.xml_path(n);
        let to = if from.starts_with(self.dir.path().join("turnkey/INBOX")) {
            self.dir.path().join("turnkey/SENT")
        } else {
            self.dir.path().join(format!(
                "turnkey/UpCast/B2SSTORAGE/F0401/BAK/{}/10",
                today()
            ))
        };
        std::fs::create_dir_all(&to).unwrap();
        std::fs::rename(&from, to.join(from.file_name().unwrap())).unwrap();
    }

    fn take_all(&mut self) {
        for n in 1..=3 {
            self.take(n);
        }
        self.tracker.scan().unwrap();
    }

    fn rejected_dir(&self) -> PathBuf {
        self.dir.path().join("state/rejected/feedback")
    }

    /// The text reports in the rejected folder.
    fn reports(&self) -> Vec<String> {
        files_in(&self.rejected_dir())
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".error.txt"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    fn xml_path(&self, n: u32) -> PathBuf {
        let name = format!("F0401_{}_{n:08}.xml", today());
        let flat = self.dir.path().join("turnkey/INBOX").join(&name);
        if flat.exists() {
            flat
        } else {
            self.dir
                .path()
                .join("turnkey/UpCast/B2SSTORAGE/F0401/SRC")
                .join(&name)
        }
    }
}

/// Puts a message back to `validated`, staged at `staged_path` (or not staged), as a stop
/// between publishing it and recording that leaves it. No store function moves a message back,
/// so the row is written directly.
fn as_left_by_a_stop(w: &World, number: &str, staged_path: Option<&str>) {
    w.tracker
        .store
        .conn()
        .execute(
            "UPDATE messages SET state = ?1, staged = ?2, staged_path = ?3 WHERE number = ?4",
            rusqlite::params![
                MessageState::Validated,
                staged_path.is_some(),
                staged_path,
                number
            ],
        )
        .unwrap();
}

fn run_fixture(rel: &str) {
    let outcomes: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("feedback/outcomes.json")).unwrap())
            .unwrap();
    let want = &outcomes[rel];
    assert!(
        want.is_object(),
        "{rel} has no entry in fixtures/feedback/outcomes.json"
    );
    let mut w = World::new("flat");
    // Turnkey has taken every file: the results can be about them.
    w.take_all();
    let before = w.events("invoice.status.updated").len() as u64;
    let name = Path::new(rel)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let path = w.deliver(rel, &name);
    w.tracker.scan().unwrap();
    assert!(!path.exists(), "{rel}: the file left the outbox");

    if let Some(word) = want.get("rejected") {
        let dir = w.dir.path().join("state/rejected/feedback");
        let files = files_in(&dir);
        let report = files
            .iter()
            .find(|p| p.to_string_lossy().ends_with(".error.txt"))
            .unwrap_or_else(|| panic!("{rel}: no report in {files:?}"));
        let text = std::fs::read_to_string(report).unwrap();
        assert!(text.contains(word.as_str().unwrap()), "{rel}: {text}");
        assert!(
            files.iter().any(|p| p.to_string_lossy().ends_with(&name)),
            "{rel}: file kept"
        );
        for n in ["EF00000001", "EF00000002", "EF00000003"] {
            assert_eq!(w.state_of(n).0, "picked_up", "{rel}: nothing applied");
        }
        return;
    }
    for (number, state) in want["states"].as_object().unwrap() {
        assert_eq!(
            w.state_of(number).0,
            state.as_str().unwrap(),
            "{rel}: {number}"
        );
    }
    if let Some(codes) = want.get("mof_code") {
        for (number, code) in codes.as_object().unwrap() {
            assert_eq!(
                w.state_of(number).1.as_deref(),
                code.as_str(),
                "{rel}: {number} code"
            );
        }
    }
    let updates = w.events("invoice.status.updated");
    // QUEUED and PICKED_UP events came before the result.
    assert_eq!(
        updates.len() as u64 - before,
        want["events"].as_u64().unwrap(),
        "{rel}: events {updates:#?}"
    );
    let summaries = w.events("turnkey.feedback.daily-summary");
    match want.get("summary") {
        None => assert!(summaries.is_empty(), "{rel}"),
        Some(s) => {
            assert_eq!(summaries.len(), 1, "{rel}");
            let e = &summaries[0];
            for k in ["expected", "total", "ack_count", "error_count"] {
                assert_eq!(e[k], s[k], "{rel}: {k} in {e}");
            }
            assert_eq!(
                !e["mismatch"].is_null(),
                s["mismatch"].as_bool().unwrap(),
                "{rel}: {e}"
            );
        }
    }
    let kept = files_below(&w.dir.path().join("state/archive/feedback"));
    assert_eq!(kept.len(), 1, "{rel}: kept in the feedback archive");
}

macro_rules! fixture_tests {
    ($($name:ident => $rel:expr),* $(,)?) => {
        $(#[test] fn $name() { run_fixture($rel); })*
    };
}

fixture_tests! {
    ack => "ack.xml",
    error => "error.xml",
    daily_summary => "daily_summary.xml",
    summary_all_good => "summary_all_good.xml",
    summary_some_failed => "summary_some_failed.xml",
    summary_count_mismatch => "summary_count_mismatch.xml",
    process_result_ok => "process_result_ok.xml",
    process_result_error => "process_result_error.xml",
    process_result_pack_id => "process_result_pack_id.xml",
    malformed_daily_bad_date => "malformed/daily_bad_date.xml",
    malformed_truncated => "malformed/truncated.xml",
    malformed_xxe => "malformed/xxe.xml",
    malformed_billion_laughs => "malformed/billion_laughs.xml",
    malformed_unknown_root => "malformed/unknown_root.xml",
    malformed_bad_count => "malformed/bad_count.xml",
    malformed_not_utf8 => "malformed/not_utf8.xml",
}

#[test]
fn every_feedback_fixture_has_a_test() {
    let outcomes: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("feedback/outcomes.json")).unwrap())
            .unwrap();
    let mut listed: Vec<String> = outcomes
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "_comment")
        .cloned()
        .collect();
    listed.sort();
    let mut on_disk: Vec<String> = files_below(&fixture("feedback"))
        .iter()
        .map(|p| {
            p.strip_prefix(fixture("feedback"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| p != "outcomes.json")
        .collect();
    on_disk.sort();
    assert_eq!(listed, on_disk);
}

#[test]
fn a_result_file_too_large_to_be_one_is_set_aside_unread_in_both_layouts() {
    use turnbridge::turnkey::results::MAX_RESULT_BYTES;
    for layout in ["flat", "turnkey"] {
        let mut w = World::new(layout);
        // Flat: turnbridge's outbox. Turnkey: Unpack's backup of results, in Turnkey's tree.
        let results = if layout == "flat" {
            w.outbox()
        } else {
            w.dir
                .path()
                .join(format!("turnkey/Unpack/BAK/SummaryResult/{}/10", today()))
        };
        std::fs::create_dir_all(&results).unwrap();
        let path = results.join("SummaryResult_big.xml");
        // Sparse: as large as the limit says, without the disk space or the time to write it.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(MAX_RESULT_BYTES + 1)
            .unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        w.tracker.scan().unwrap();
        let dir = w.dir.path().join("state/rejected/feedback");
        let reports: Vec<_> = files_in(&dir)
            .into_iter()
            .filter(|p| {
                p.to_string_lossy()
                    .ends_with("_SummaryResult_big.xml.error.txt")
            })
            .collect();
        assert_eq!(reports.len(), 1, "{layout}: {:?}", files_in(&dir));
        let report = std::fs::read_to_string(&reports[0]).unwrap();
        assert!(
            report.contains("result files are at most"),
            "{layout}: {report}"
        );
        let kept = reports[0].to_string_lossy().replace(".error.txt", "");
        if layout == "flat" {
            // The flat outbox is turnbridge's: the file moves, whole.
            assert_eq!(
                std::fs::metadata(&kept).unwrap().len(),
                MAX_RESULT_BYTES + 1
            );
            assert!(!path.exists());
        } else {
            // Turnkey's own folder is left as it is, and a file too large to be a result is
            // not copied (a sparse file would become a dense one): the report says why.
            assert!(
                !std::path::Path::new(&kept).exists(),
                "{layout}: not copied"
            );
            assert!(path.exists());
        }
        w.tracker.scan().unwrap();
        let expected = if layout == "flat" { 3 } else { 2 };
        assert_eq!(files_in(&dir).len(), expected, "{layout}: set aside once");
    }
}

#[test]
fn a_result_applied_twice_changes_nothing_twice() {
    let mut w = World::new("flat");
    w.take_all();
    w.deliver("summary_some_failed.xml", "S1.xml");
    w.tracker.scan().unwrap();
    let transitions = |w: &World| -> usize {
        messages::first(w.tracker.store.conn(), 10)
            .unwrap()
            .iter()
            .map(|m| {
                messages::transitions_of(w.tracker.store.conn(), m.id)
                    .unwrap()
                    .len()
            })
            .sum()
    };
    let (t1, e1) = (transitions(&w), w.events("invoice.status.updated").len());
    // The same bytes again under another name, and again under the same name.
    w.deliver("summary_some_failed.xml", "S2.xml");
    w.deliver("summary_some_failed.xml", "S1.xml");
    w.tracker.scan().unwrap();
    assert_eq!(transitions(&w), t1);
    assert_eq!(w.events("invoice.status.updated").len(), e1);
    assert_eq!(w.events("turnkey.feedback.daily-summary").len(), 1);
    assert!(files_in(&w.outbox()).is_empty(), "repeats are kept too");
    // A later verdict cannot move a final state back.
    w.deliver("ack.xml", "A.xml");
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "acked");
    w.deliver("error.xml", "E.xml");
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000002").0, "acked", "acked is final");
    // And a verdict contradicting it is not believed: set aside, with its reason.
    let reports = w.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].contains("claims F0401 EF00000002 error, but it is already acked"),
        "{}",
        reports[0]
    );
}

#[test]
fn a_crash_between_applying_and_keeping_a_result_repeats_nothing() {
    let mut w = World::new("flat");
    w.take_all();
    let path = w.deliver("summary_all_good.xml", "S.xml");
    let bytes = std::fs::read(&path).unwrap();
    w.tracker.scan().unwrap();
    let events = w.events("invoice.status.updated").len();
    // As if the process died after the commit and before the move: the file is back.
    std::fs::write(&path, &bytes).unwrap();
    let mut again = Tracker::open(w.config.clone()).unwrap();
    again.scan().unwrap();
    assert!(!path.exists());
    assert_eq!(
        events_named(again.store.conn(), "invoice.status.updated").len(),
        events
    );
    assert_eq!(
        events_named(again.store.conn(), "turnkey.feedback.daily-summary").len(),
        1
    );
}

#[test]
fn turnkey_layout_bak_and_err_moves_drive_the_state() {
    let mut w = World::new("turnkey");
    let base = w.dir.path().join("turnkey/UpCast/B2SSTORAGE/F0401");
    // Real Turnkey 3.2.0: `<MSG>/BAK/<yyyyMMdd>/<HH>/<name>` (`.001` for a name already in that
    // hour folder) and `<MSG>/ERR/<yyyyMMdd>/<HH>/<name>`, the reason in log/Turnkey.log.
    let bak = base.join(format!("BAK/{}/10", today()));
    let err = base.join(format!("ERR/{}/10", today()));
    std::fs::create_dir_all(&bak).unwrap();
    std::fs::create_dir_all(&err).unwrap();
    let (one, two, three) = (w.xml_path(1), w.xml_path(2), w.xml_path(3));
    let three_bak = bak.join(format!(
        "{}.001",
        three.file_name().unwrap().to_string_lossy()
    ));
    std::fs::rename(&three, &three_bak).unwrap();
    std::fs::rename(&one, bak.join(one.file_name().unwrap())).unwrap();
    std::fs::rename(&two, err.join(two.file_name().unwrap())).unwrap();
    let log = w.dir.path().join("turnkey/log/Turnkey.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(
        &log,
        format!(
            "2026/12/02 10:36:33 UpCast [ERROR] validateSourceFileByProg [Validate message by program v41F0401-x fail: [7001] \"Seller.Address\" is invalid!] sourceFile={src}\n\
             2026/12/02 10:36:33 UpCast [INFO] moveSourceToError sourceFile={src} errorFile={dest}\n",
            src = two.display(),
            dest = err.join(two.file_name().unwrap()).display()
        ),
    )
    .unwrap();
    // A file that is not turnbridge's is left alone.
    std::fs::write(bak.join("OTHER_SYSTEM.xml"), "<x/>").unwrap();
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "picked_up");
    assert_eq!(
        w.state_of("EF00000002"),
        ("error".into(), Some("7001".into()))
    );
    // `<name>.001` is still turnbridge's `<name>`.
    assert_eq!(w.state_of("EF00000003").0, "picked_up");
    assert!(bak.join("OTHER_SYSTEM.xml").exists() && bak.join(one.file_name().unwrap()).exists());
    let before = w.events("invoice.status.updated").len();
    w.tracker.scan().unwrap();
    assert_eq!(
        w.events("invoice.status.updated").len(),
        before,
        "a rescan applies nothing twice"
    );
    let err_event = w
        .events("invoice.status.updated")
        .into_iter()
        .find(|e| e["invoice_no"] == "EF00000002" && e["status"] == "ERROR")
        .unwrap();
    assert!(err_event["evidence"].as_str().unwrap().contains("/ERR/"));
    assert!(
        err_event["message"]
            .as_str()
            .unwrap()
            .contains("[7001] \"Seller.Address\" is invalid!"),
        "{err_event}"
    );
    assert_eq!(err_event["tenant_id"], "default");
}

#[test]
fn flat_layout_files_leaving_the_inbox_are_picked_up_and_error_folder_files_are_errors() {
    let mut w = World::new("flat");
    let error_dir = w.dir.path().join("turnkey/ERROR");
    std::fs::create_dir_all(&error_dir).unwrap();
    let (one, two) = (w.xml_path(1), w.xml_path(2));
    std::fs::remove_file(&one).unwrap();
    std::fs::rename(&two, error_dir.join(two.file_name().unwrap())).unwrap();
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "picked_up");
    assert_eq!(w.state_of("EF00000002").0, "error");
    assert_eq!(w.state_of("EF00000003").0, "queued");
}

#[test]
fn a_message_waiting_too_long_raises_overdue_once() {
    let mut w = World::new("flat");
    assert_eq!(w.tracker.raise_overdue().unwrap(), 0);
    // Long ago (no store function writes a time of the past).
    w.tracker
        .store
        .conn()
        .execute(
            "UPDATE messages SET updated_at = '2000-01-01T00:00:00.000Z' WHERE number = ?1",
            ["EF00000003"],
        )
        .unwrap();
    assert_eq!(w.tracker.raise_overdue().unwrap(), 1);
    assert_eq!(w.tracker.raise_overdue().unwrap(), 0, "once");
    let e = w.events("invoice.feedback.overdue");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["invoice_no"], "EF00000003");
}

#[test]
fn kept_result_files_are_pruned_after_the_retention() {
    let w = World::new("flat");
    let archive = w.dir.path().join("state/archive/feedback");
    let old = archive.join("2000-01-01");
    let recent = archive.join(chrono::Local::now().format("%Y-%m-%d").to_string());
    for d in [&old, &recent] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("ACK_x.xml"), "<ACK/>").unwrap();
    }
    assert_eq!(w.tracker.prune().unwrap(), 1);
    assert!(!old.exists() && recent.exists());
}

fn sandbox_config(dir: &Path, layout: &str) -> PathBuf {
    let inbox = if layout == "flat" {
        "turnkey/INBOX"
    } else {
        "turnkey/UpCast/B2SSTORAGE/{message_type}/SRC"
    };
    // The turnkey layout reads results from Turnkey's own Unpack folder; outbox is flat only.
    let outbox = "turnkey/OUTBOX";
    let text = format!(
        "[paths]\nspool = \"spool\"\nstate = \"state\"\n[einvoice]\nsettle_ms = 100\n\
         [turnkey]\nlayout = \"{layout}\"\ninbox = \"{inbox}\"\noutbox = \"{outbox}\"\nerror = \"turnkey/ERROR\"\nrescan_secs = 1\n\
         [simulator]\nenabled = true\ndelay_ms = 100\nerr = [\"EF00000002\"]\nreject = [\"EF00000003\"]\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"text\"\n"
    );
    let path = dir.join("turnbridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn end_to_end(layout: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox_config(dir.path(), layout);
    std::fs::create_dir_all(dir.path().join("spool/einvoice")).unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(child);
    let batch = dir.path().join("spool/einvoice/b.csv.tmp");
    std::fs::write(&batch, batch_csv("EF", 1, 4)).unwrap();
    std::fs::rename(&batch, dir.path().join("spool/einvoice/b.csv")).unwrap();
    let db = dir.path().join("state/turnbridge.db");
    let states = || -> Vec<(String, String)> {
        let Ok(conn) = turnbridge::report::open_read_only(&db) else {
            return vec![];
        };
        let Ok(rows) = messages::first(&conn, 100) else {
            return vec![];
        };
        let mut out: Vec<(String, String)> = rows
            .into_iter()
            .map(|m| (m.number, m.state.to_string()))
            .collect();
        out.sort();
        out
    };
    let want: Vec<(String, String)> = [
        ("EF00000001", "acked"),
        ("EF00000002", "error"),
        ("EF00000003", "error"),
        ("EF00000004", "acked"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    wait_for(30, &format!("final states in the {layout} layout"), || {
        states() == want
    });
    std::thread::sleep(Duration::from_millis(300));

    let conn = turnbridge::report::open_read_only(&db).unwrap();
    let events = events_named(&conn, "invoice.status.updated");
    let statuses = |n: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["invoice_no"] == n)
            .map(|e| e["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(statuses("EF00000001"), ["QUEUED", "PICKED_UP", "ACKED"]);
    let two = statuses("EF00000002");
    assert_eq!(two.last().unwrap(), "ERROR", "{two:?}");
    assert_eq!(statuses("EF00000003"), ["QUEUED", "PICKED_UP", "ERROR"]);
    assert!(!events_named(&conn, "turnkey.feedback.daily-summary").is_empty());

    let history = cli(&config, &["history", "EF00000003"]);
    assert!(
        history.contains("F0401 EF00000003") && history.contains("picked_up → error"),
        "{history}"
    );
    assert!(history.contains("b.csv row 4"), "{history}");
    let status = cli(&config, &["status"]);
    assert!(status.contains("F0401"), "{status}");
    assert!(
        status.contains("last summary:") && !status.contains("last summary: none"),
        "{status}"
    );
    let json: Value = serde_json::from_str(&cli(&config, &["status", "--json"])).unwrap();
    let acked = json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["state"] == "acked")
        .unwrap();
    assert_eq!(acked["count"], 2);
    drop(guard);
}

#[test]
fn end_to_end_flat_layout_with_the_simulator() {
    end_to_end("flat");
}

#[test]
fn end_to_end_turnkey_layout_with_the_simulator() {
    end_to_end("turnkey");
}

/// The upload id Turnkey gives a pack: `v41-F0401-<today>-<HHmmssSSS>-<uuid>`.
fn upload_id(uuid: &str) -> String {
    format!("v41-F0401-{}-103633689-{uuid}", today())
}

const UPLOAD: &str = "a72cf668-ca86-446c-8c67-5ff8d73159fd";

/// Writes a pack as UpCast leaves it in `Pack/B2SSTORAGE/SRC`: F0401 documents of `numbers`,
/// merged for seller `from_ban`.
fn write_pack(w: &World, from_ban: &str, numbers: &[&str], uuid: &str) -> PathBuf {
    let dir = w.dir.path().join("turnkey/Pack/B2SSTORAGE/SRC");
    std::fs::create_dir_all(&dir).unwrap();
    let body: String = numbers
        .iter()
        .map(|n| format!("<Invoice xmlns=\"urn:GEINV:eInvoiceMessage:F0401:4.1\"><Main><InvoiceNumber>{n}</InvoiceNumber><InvoiceDate>20261126</InvoiceDate></Main></Invoice>"))
        .collect();
    let p = dir.join(format!(
        "F0401_{}_{}.xml_{from_ban}_00000000_{}_{}",
        today(),
        &numbers[0][2..],
        upload_id(uuid),
        numbers.len()
    ));
    std::fs::write(&p, body).unwrap();
    p
}

/// Writes an unsigned ProcessResult as Unpack leaves it in BAK, `MessageInfo/Id` the bare uuid.
fn write_result(w: &World, uuid: &str, infos: &str) -> PathBuf {
    let dir = w
        .dir
        .path()
        .join(format!("turnkey/Unpack/BAK/ProcessResult/{}/10", today()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{}_ProcessResult", upload_id(uuid)));
    std::fs::write(
        &p,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ProcessResult xmlns=\"urn:GEINV:ProcessResult:4.1\">\
             <RoutingInfo><From><PartyId>28080623</PartyId></From><To><PartyId>00000000</PartyId></To></RoutingInfo>\
             <MessageInfo><Id>{uuid}</Id><Size>1</Size><MessageType>F0401</MessageType><Service>S</Service><Action>B2S</Action></MessageInfo>\
             <Result>{infos}</Result></ProcessResult>\n"
        ),
    )
    .unwrap();
    p
}

fn recorded(w: &World, path: &Path) -> bool {
    records::kind_of(w.tracker.store.conn(), path)
        .unwrap()
        .is_some()
}

const ALL_GOOD: &str = "<Info><Code>00000</Code><Description>Success</Description></Info>";

fn pack_members(w: &World) -> Vec<(String, Option<i64>)> {
    records::all_pack_members(w.tracker.store.conn())
        .unwrap()
        .into_iter()
        .map(|m| (m.number, m.message_id))
        .collect()
}

#[test]
fn a_pack_of_another_seller_does_not_take_our_message() {
    let mut w = World::new("turnkey");
    // Our EF00000001 is sold by 28080623; this pack is seller 99999999's.
    write_pack(&w, "99999999", &["EF00000001"], UPLOAD);
    write_result(&w, UPLOAD, ALL_GOOD);
    w.tracker.scan().unwrap();
    assert_eq!(pack_members(&w), [("EF00000001".to_string(), None)]);
    assert_eq!(w.state_of("EF00000001").0, "queued");
    // The same document in our seller's pack is ours (UpCast moved it to BAK).
    w.take(1);
    let ours = "b72cf668-ca86-446c-8c67-5ff8d73159fd";
    write_pack(&w, "28080623", &["EF00000001"], ours);
    write_result(&w, ours, ALL_GOOD);
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "acked");
}

#[test]
fn a_pack_takes_a_message_published_before_a_stop_but_not_one_never_published() {
    let mut w = World::new("turnkey");
    // EF00000001 was moved into SRC (its staged file is gone) but the stop came before it was
    // recorded queued; EF00000002 is still staged.
    let staged = w.dir.path().join("still-staged.xml");
    std::fs::write(&staged, "<x/>").unwrap();
    as_left_by_a_stop(&w, "EF00000001", Some("/nonexistent/staged.xml"));
    as_left_by_a_stop(&w, "EF00000002", Some(&staged.to_string_lossy()));
    write_pack(&w, "28080623", &["EF00000001", "EF00000002"], UPLOAD);
    w.tracker.scan().unwrap();
    let m = pack_members(&w);
    assert!(m[0].1.is_some() && m[1].1.is_none(), "{m:?}");
}

#[test]
fn a_pack_does_not_take_a_message_already_final_nor_another_tenants() {
    // A final message is not one a new pack can hold.
    let mut w = World::new("turnkey");
    {
        let id = messages::by_number(w.tracker.store.conn(), "EF00000002").unwrap()[0].id;
        let tx = w.tracker.store.transaction().unwrap();
        let change = messages::Change::to(MessageState::Error, "refused");
        messages::transition(&tx, id, MessageState::Queued, &change).unwrap();
        tx.commit().unwrap();
    }
    write_pack(&w, "28080623", &["EF00000001", "EF00000002"], UPLOAD);
    w.tracker.scan().unwrap();
    let m = pack_members(&w);
    assert!(m[0].1.is_some() && m[1].1.is_none(), "{m:?}");

    // One Turnkey per tenant: a pack in tenant `default`'s Turnkey holds only its messages.
    let w = World::with_inbox(
        "turnkey",
        "turnkey/{tenant}/UpCast/B2SSTORAGE/{message_type}/SRC",
    );
    // Recorded for another tenant (no store function changes a message's tenant).
    w.tracker
        .store
        .conn()
        .execute(
            "UPDATE messages SET tenant = 'other' WHERE number = ?1",
            ["EF00000001"],
        )
        .unwrap();
    let mut w = World {
        dir: w.dir,
        tracker: Tracker::open(w.config.clone()).unwrap(),
        config: w.config,
    };
    let dir = w.dir.path().join("turnkey/default/Pack/B2SSTORAGE/SRC");
    std::fs::create_dir_all(&dir).unwrap();
    let pack = write_pack(&w, "28080623", &["EF00000001", "EF00000002"], UPLOAD);
    std::fs::rename(&pack, dir.join(pack.file_name().unwrap())).unwrap();
    w.tracker.scan().unwrap();
    let m = pack_members(&w);
    assert!(
        m.len() == 2 && m[0].1.is_none() && m[1].1.is_some(),
        "{m:?}"
    );
}

#[test]
fn a_result_seen_before_its_pack_waits_for_it() {
    let mut w = World::new("turnkey");
    let result = write_result(&w, UPLOAD, ALL_GOOD);
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "queued");
    assert!(w.tracker.pending, "a waiting result asks for a scan soon");
    assert!(!recorded(&w, &result), "not recorded yet");
    // The pack shows up on the next scan (its files moved to BAK): the result reaches its
    // messages.
    write_pack(&w, "28080623", &["EF00000001", "EF00000002"], UPLOAD);
    w.take(1);
    w.take(2);
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "acked");
    assert_eq!(w.state_of("EF00000002").0, "acked");
    assert_eq!(w.state_of("EF00000003").0, "queued");
    assert_eq!(w.tracker.deferred_len(), 0);
    assert_eq!(w.tracker.problem(), None);
}

#[test]
fn a_result_whose_pack_never_shows_up_falls_back_to_numbers_and_says_so() {
    let mut w = World::new("turnkey");
    w.tracker.pack_wait = Duration::ZERO;
    // A 00000 result names no invoice: nothing to match, and the operator is told.
    let result = write_result(&w, UPLOAD, ALL_GOOD);
    w.tracker.scan().unwrap();
    assert!(recorded(&w, &result), "recorded");
    let problem = w.tracker.problem().expect("a health problem");
    assert!(problem.contains("applied to nothing"), "{problem}");
    // A refusal naming an invoice reaches it by its number.
    w.take(2);
    let other = "c72cf668-ca86-446c-8c67-5ff8d73159fd";
    write_result(
        &w,
        other,
        "<Info><Code>5001</Code><Description>No. 1 bad</Description><Parameter0>EF00000002</Parameter0><Parameter1>20261126</Parameter1></Info>",
    );
    w.tracker.scan().unwrap();
    assert_eq!(
        w.state_of("EF00000002"),
        ("error".into(), Some("5001".into()))
    );
}

#[test]
fn an_err_file_that_vanished_is_no_longer_waited_for() {
    let mut w = World::new("turnkey");
    let err = w.dir.path().join(format!(
        "turnkey/UpCast/B2SSTORAGE/F0401/ERR/{}/10",
        today()
    ));
    std::fs::create_dir_all(&err).unwrap();
    let two = w.xml_path(2);
    let moved = err.join(two.file_name().unwrap());
    std::fs::rename(&two, &moved).unwrap();
    // No Turnkey.log yet: the file waits for its reason.
    w.tracker.scan().unwrap();
    assert_eq!(w.tracker.deferred_len(), 1);
    std::fs::remove_file(&moved).unwrap();
    w.tracker.scan().unwrap();
    assert_eq!(w.tracker.deferred_len(), 0);
}

#[test]
fn parameter0_wins_over_a_no_n_that_names_another_member() {
    let mut w = World::new("turnkey");
    w.take_all();
    write_pack(
        &w,
        "28080623",
        &["EF00000001", "EF00000002", "EF00000003"],
        UPLOAD,
    );
    // `No. 1` says the first, Parameter0 and Parameter1 the second.
    write_result(
        &w,
        UPLOAD,
        "<Info><Code>5001</Code><Description>No. 1 bad</Description><Parameter0>EF00000002</Parameter0><Parameter1>20261126</Parameter1></Info>",
    );
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "acked");
    assert_eq!(
        w.state_of("EF00000002"),
        ("error".into(), Some("5001".into()))
    );
    assert_eq!(w.state_of("EF00000003").0, "acked");
}

#[test]
fn old_records_of_results_read_in_place_are_pruned_but_not_of_a_pack_still_there() {
    let mut w = World::new("turnkey");
    let pack = write_pack(&w, "28080623", &["EF00000001"], UPLOAD);
    let gone = w.dir.path().join("gone_pack");
    let result = w.dir.path().join("some_ProcessResult");
    // Records seen long ago (no store function writes a time of the past).
    let conn = w.tracker.store.conn();
    let old = |path: &str, kind: records::FeedbackKind| {
        conn.execute(
            "INSERT INTO feedback_files (path, md5, kind, outcome, seen_at) VALUES (?1, 'm', ?2, '', '2000-01-01T00:00:00.000Z')",
            rusqlite::params![path, kind],
        )
        .unwrap();
    };
    use records::FeedbackKind::{Bak, Pack, Process};
    for (path, kind) in [(&pack, Pack), (&gone, Pack), (&result, Process)] {
        old(&path.to_string_lossy(), kind);
    }
    // Many more, so the pruning runs in several batches (1,000 rows each) and still drains.
    for i in 0..2_500 {
        old(&format!("/gone/{i}"), if i % 2 == 0 { Pack } else { Bak });
    }
    assert_eq!(w.tracker.prune_logs().unwrap(), 2 + 2_500);
    assert!(
        recorded(&w, &pack),
        "a pack still in Pack/…/SRC keeps its record"
    );
    assert!(!recorded(&w, &gone) && !recorded(&w, &result));
}

/// The files in the rejected folder that are not reports.
fn set_aside(w: &World) -> Vec<PathBuf> {
    files_in(&w.rejected_dir())
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(".error."))
        .collect()
}

#[test]
fn a_forged_ack_for_a_message_still_in_the_pickup_folder_is_set_aside_until_removed() {
    let mut w = World::new("flat");
    let xml = w.xml_path(1);
    let forged = w.deliver("ack.xml", "ACK_1.xml");
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "queued", "not acked");
    assert!(!forged.exists(), "it left the outbox");
    assert_eq!(
        w.events("invoice.status.updated").len(),
        3,
        "no event beyond the three QUEUED"
    );
    let kept = set_aside(&w);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].to_string_lossy().ends_with("_ACK_1.xml"));
    let report = &w.reports()[0];
    for words in [
        "ACK result file",
        "ACK_1.xml",
        "was not believed",
        "claims F0401 EF00000001 acked",
        &format!("its XML {} is still in the pickup folder", xml.display()),
    ] {
        assert!(report.contains(words), "{words:?} not in\n{report}");
    }
    let problem = w.tracker.problem().expect("a health problem");
    assert!(
        problem.contains("not believed") && problem.contains("_ACK_1.xml"),
        "{problem}"
    );
    // Still a problem at the next scans, and after a restart.
    w.tracker.scan().unwrap();
    assert!(w.tracker.problem().is_some());
    w.tracker = Tracker::open(w.config.clone()).unwrap();
    w.tracker.scan().unwrap();
    assert!(
        w.tracker.problem().is_some(),
        "recorded, not only in memory"
    );

    // Turnkey takes the file; the same ACK, moved back by the operator, is now believed.
    w.take(1);
    std::fs::rename(&kept[0], &forged).unwrap();
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "acked");
    assert_eq!(w.tracker.problem(), None, "the operator acted on it");
}

#[test]
fn results_for_messages_never_sent_are_set_aside() {
    let mut w = World::new("flat");
    w.take_all();
    // An ACK for an invoice turnbridge never sent.
    let outbox = w.outbox();
    std::fs::create_dir_all(&outbox).unwrap();
    let name = format!("F0401_{}_00000009", today());
    std::fs::write(
        outbox.join("ACK_9.xml"),
        format!("<ACK><MessageID>{name}</MessageID></ACK>"),
    )
    .unwrap();
    // A ProcessResult naming nothing turnbridge sent (the flat outbox is turnbridge's).
    std::fs::write(
        outbox.join("PR_9.xml"),
        format!("<ProcessResult><MessageInfo><Id>{name}</Id></MessageInfo><Result><Info><Code>0</Code></Info></Result></ProcessResult>"),
    )
    .unwrap();
    w.tracker.scan().unwrap();
    assert_eq!(set_aside(&w).len(), 2);
    let reports = w.reports().join("\n");
    assert_eq!(
        reports
            .matches(&format!(
                "claims {name} acked, but turnbridge never sent a message of that name"
            ))
            .count(),
        1,
        "{reports}"
    );
    assert!(
        reports.contains(&format!(
            "claims {name} processed, but turnbridge never sent"
        )),
        "{reports}"
    );
    for n in ["EF00000001", "EF00000002", "EF00000003"] {
        assert_eq!(w.state_of(n).0, "picked_up");
    }
    let problem = w.tracker.problem().unwrap();
    assert!(
        problem.starts_with("2 file(s) from Turnkey not believed"),
        "{problem}"
    );
}

#[test]
fn a_result_with_one_claim_not_believed_is_applied_not_at_all() {
    let mut w = World::new("flat");
    // EF00000003 is still in the pickup folder; the summary says all three were accepted.
    w.take(1);
    w.take(2);
    w.tracker.scan().unwrap();
    w.deliver("summary_all_good.xml", "S.xml");
    w.tracker.scan().unwrap();
    for (n, state) in [
        ("EF00000001", "picked_up"),
        ("EF00000002", "picked_up"),
        ("EF00000003", "queued"),
    ] {
        assert_eq!(w.state_of(n).0, state, "{n}");
    }
    assert!(w.events("turnkey.feedback.daily-summary").is_empty());
    let report = &w.reports()[0];
    assert!(
        report.contains("claims F0401 EF00000003 acked, but its XML"),
        "{report}"
    );
}

#[test]
fn folder_moves_of_a_file_still_in_the_pickup_folder_are_not_believed() {
    // Flat: a file of our name in the error folder while ours is still in the inbox.
    let mut w = World::new("flat");
    let error_dir = w.dir.path().join("turnkey/ERROR");
    std::fs::create_dir_all(&error_dir).unwrap();
    let two = w.xml_path(2);
    std::fs::copy(&two, error_dir.join(two.file_name().unwrap())).unwrap();
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000002").0, "queued");
    assert!(
        error_dir.join(two.file_name().unwrap()).exists(),
        "left where it is"
    );
    assert!(set_aside(&w).is_empty(), "only reported");
    let report = &w.reports()[0];
    assert!(
        report.contains("file in Turnkey's error folder")
            && report.contains("claims F0401 EF00000002 error"),
        "{report}"
    );
    assert!(w.tracker.problem().is_some());
    // Reported once: the file is recorded.
    w.tracker.scan().unwrap();
    assert_eq!(w.reports().len(), 1);
}

#[test]
fn turnkey_results_about_files_still_in_src_are_copied_aside_and_read_again_once_removed() {
    let mut w = World::new("turnkey");
    write_pack(&w, "28080623", &["EF00000001"], UPLOAD);
    let result = write_result(&w, UPLOAD, ALL_GOOD);
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "queued", "still in SRC");
    assert!(result.exists(), "Turnkey's folder is left as it is");
    let kept = set_aside(&w);
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(&kept[0]).unwrap(),
        std::fs::read(&result).unwrap()
    );
    assert!(w.reports()[0].contains("ProcessResult result file"));
    assert!(w.tracker.problem().is_some());
    // Read once: a later scan neither applies nor copies it again.
    w.take(1);
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "picked_up");
    assert_eq!(set_aside(&w).len(), 1);
    // The operator removes the copy (and its reports): no problem any more, and the result,
    // still in Turnkey's folder, is read again; its message has left SRC since, so now it is
    // believed and applied.
    for f in files_in(&w.rejected_dir()) {
        std::fs::remove_file(f).unwrap();
    }
    w.tracker.scan().unwrap();
    assert_eq!(w.tracker.problem(), None);
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "acked");
    assert!(set_aside(&w).is_empty(), "believed now: nothing set aside");
}

#[test]
fn a_result_written_with_a_pause_is_applied_once_complete() {
    let mut w = World::with_unchanged_ms(60_000);
    w.take_all();
    for (fixture_name, number, state) in [
        ("ack.xml", "EF00000001", "acked"),
        ("error.xml", "EF00000002", "error"),
    ] {
        let whole = std::fs::read_to_string(fixture(&format!("feedback/{fixture_name}")))
            .unwrap()
            .replace("{TODAY}", &today());
        let path = w.outbox().join(fixture_name);
        std::fs::create_dir_all(w.outbox()).unwrap();
        let (first, rest) = whole.split_at(whole.len() / 2);
        std::fs::write(&path, first).unwrap();
        w.tracker.scan().unwrap();
        assert!(path.exists(), "{fixture_name}: left to finish");
        assert_eq!(w.state_of(number).0, "picked_up");
        assert!(w.reports().is_empty(), "{fixture_name}: not rejected");
        assert_eq!(w.tracker.unparsed_len(), 1);
        // The writer pauses longer than settle_ms (0 here), then finishes.
        std::thread::sleep(Duration::from_millis(20));
        w.tracker.scan().unwrap();
        assert!(path.exists(), "{fixture_name}: still waiting");
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(rest.as_bytes())
            .unwrap();
        w.tracker.scan().unwrap();
        assert_eq!(w.state_of(number).0, state, "{fixture_name}");
        assert!(!path.exists());
        assert_eq!(w.tracker.unparsed_len(), 0);
    }
    assert_eq!(w.state_of("EF00000002").1.as_deref(), Some("E0403"));
}

#[test]
fn a_result_that_stays_garbled_is_set_aside_once_it_stayed_the_same() {
    let mut w = World::with_unchanged_ms(1000);
    std::fs::create_dir_all(w.outbox()).unwrap();
    let path = w.outbox().join("garbled.xml");
    std::fs::write(&path, "<ACK><MessageID>F0401_").unwrap();
    w.tracker.scan().unwrap();
    let due = w.tracker.next_due().expect("a scan is due for it");
    assert!(due > std::time::Instant::now());
    // Changed before the period ends: the wait starts again.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&path, "<ACK><MessageID>F0401_x").unwrap();
    w.tracker.scan().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    w.tracker.scan().unwrap();
    assert!(
        path.exists(),
        "1.1 s after it was written, but only 0.6 s after it changed"
    );
    std::thread::sleep(Duration::from_millis(500));
    w.tracker.scan().unwrap();
    assert!(!path.exists(), "set aside");
    assert_eq!(w.tracker.next_due(), None);
    let report = &w.reports()[0];
    assert!(
        report.contains("malformed XML") && report.contains("unchanged for 1000 ms"),
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(&set_aside(&w)[0]).unwrap(),
        "<ACK><MessageID>F0401_x"
    );
    // The same bytes dropped again wait like any file that does not parse (an empty or
    // half-written file may match earlier bytes by chance), then are set aside again, not
    // left in the outbox.
    std::fs::write(&path, "<ACK><MessageID>F0401_x").unwrap();
    w.tracker.scan().unwrap();
    assert!(path.exists(), "waits first");
    std::thread::sleep(Duration::from_millis(1100));
    w.tracker.scan().unwrap();
    assert!(!path.exists());
    assert_eq!(set_aside(&w).len(), 2);
    assert!(
        w.reports()
            .iter()
            .filter(|r| r.contains("unchanged for 1000 ms"))
            .count()
            == 2,
        "{:?}",
        w.reports()
    );
}

#[test]
fn a_forged_ack_is_a_health_problem_and_a_result_written_with_a_pause_still_applies() {
    const ADMIN: &str = "feedback-admin-token-0123";
    let mut sb = Sandbox::with_sections(
        "",
        &format!("[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n"),
    );
    let text = std::fs::read_to_string(sb.config_path())
        .unwrap()
        .replace("[turnkey]\n", "[turnkey]\nrescan_secs = 1\n");
    std::fs::write(sb.config_path(), text).unwrap();
    sb.start();
    sb.drop_file("b.csv", batch_csv("FA", 1, 2).as_bytes());
    wait_for(20, "two XML files in the inbox", || {
        sb.inbox_files().len() == 2
    });
    let xml = sb.inbox_files()[0].clone();
    let number = invoice_number(&std::fs::read_to_string(&xml).unwrap());
    let message_id = xml.file_stem().unwrap().to_string_lossy().into_owned();
    let state = || -> String {
        messages::by_number(&sb.store(), &number).unwrap()[0]
            .state
            .to_string()
    };
    let outbox = sb.path().join("turnkey/OUTBOX");
    std::fs::create_dir_all(&outbox).unwrap();
    let ack = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ACK>\n  <MessageID>{message_id}</MessageID>\n  <ReceiptNo>R-1</ReceiptNo>\n</ACK>\n"
    );
    // Forged: the XML is still in the pickup folder.
    std::fs::write(outbox.join(".forged.xml.tmp"), &ack).unwrap();
    std::fs::rename(outbox.join(".forged.xml.tmp"), outbox.join("forged.xml")).unwrap();
    let rejected = sb.state().join("rejected/feedback");
    wait_for(20, "the forged ACK set aside", || {
        files_in(&rejected)
            .iter()
            .any(|p| p.to_string_lossy().ends_with("_forged.xml"))
    });
    assert_eq!(state(), "queued");
    let mut problem = String::new();
    wait_for(20, "a feedback problem in status", || {
        problem = health_problems(&sb)
            .into_iter()
            .find(|(c, _)| c == "feedback")
            .map(|(_, p)| p)
            .unwrap_or_default();
        problem.contains("not believed")
    });
    assert!(problem.contains("_forged.xml"), "{problem}");
    assert!(problem.contains("still in the pickup folder"), "{problem}");
    let status = cli(&sb.config_path(), &["status"]);
    assert!(status.contains("not believed"), "{status}");
    let health = http_get(
        sb.http_addr(),
        "/healthz",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    )
    .json();
    assert_eq!(health["status"], "degraded");
    assert!(
        health["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["component"] == "feedback"
                && p["problem"].as_str().unwrap().contains("not believed")),
        "{health}"
    );

    // Turnkey takes the file; its ACK is written in two parts, with a pause longer than
    // settle_ms (100 ms) between them.
    let sent = sb.path().join("turnkey/SENT");
    std::fs::create_dir_all(&sent).unwrap();
    std::fs::rename(&xml, sent.join(xml.file_name().unwrap())).unwrap();
    wait_for(20, "picked up", || state() == "picked_up");
    let genuine = outbox.join("ACK_genuine.xml");
    let (first, rest) = ack.split_at(ack.len() / 2);
    std::fs::write(&genuine, first).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(), "picked_up");
    assert!(genuine.exists(), "the half-written file is waited for");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&genuine)
            .unwrap();
        f.write_all(rest.as_bytes()).unwrap();
    }
    wait_for(20, "the complete ACK applied", || state() == "acked");
    assert!(files_in(&rejected)
        .iter()
        .all(|p| !p.to_string_lossy().contains("ACK_genuine")));

    // The forged one stays a problem until an operator removes it.
    assert!(health_problems(&sb).iter().any(|(c, _)| c == "feedback"));
    for f in files_in(&rejected) {
        std::fs::remove_file(f).unwrap();
    }
    wait_for(20, "the problem cleared", || {
        health_problems(&sb).iter().all(|(c, _)| c != "feedback")
    });
    assert_eq!(sb.terminate().code(), Some(0));
}

#[test]
fn a_result_for_a_message_not_handed_to_turnkey_is_believed_only_once_it_was_published() {
    let mut w = World::new("flat");
    w.take(1);
    w.take(2);
    // As if the process stopped after publishing EF00000001 (its staged file gone) but before
    // recording it, and EF00000002 had not even been staged.
    as_left_by_a_stop(&w, "EF00000001", Some("/nonexistent/staged.xml"));
    as_left_by_a_stop(&w, "EF00000002", None);
    w.deliver("ack.xml", "A.xml");
    w.deliver("error.xml", "E.xml");
    w.tracker.scan().unwrap();
    assert_eq!(w.state_of("EF00000001").0, "acked");
    assert_eq!(w.state_of("EF00000002").0, "validated");
    let report = &w.reports()[0];
    assert!(
        report.contains("claims F0401 EF00000002 error, but it was never handed to Turnkey"),
        "{report}"
    );
}

/// Writes a SummaryResult as Unpack leaves it in BAK, about upload `uuid`: `good` and `failed`
/// listed one by one.
fn write_summary(w: &World, uuid: &str, good: &[&str], failed: &[&str]) -> PathBuf {
    let dir = w.dir.path().join(format!(
        "turnkey/Unpack/BAK/SummaryResult/{0}/{0}10",
        today()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let list = |numbers: &[&str]| -> String {
        let invoices: String = numbers
            .iter()
            .map(|n| format!("<Invoice><ReferenceNumber>{n}</ReferenceNumber><InvoiceDate>20261126</InvoiceDate></Invoice>"))
            .collect();
        format!(
            "<Count>{}</Count><Invoices>{invoices}</Invoices>",
            numbers.len()
        )
    };
    let p = dir.join(format!("{}_SummaryResult", upload_id(uuid)));
    std::fs::write(
        &p,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SummaryResult xmlns=\"urn:GEINV:SummaryResult:4.1\">\
             <RoutingInfo><From><PartyId>28080623</PartyId></From><To><PartyId>00000000</PartyId></To></RoutingInfo>\
             <DetailList><Message><Info><Id>{}</Id><Size>1</Size><MessageType>F0401</MessageType><Service>S</Service><Action>B2S</Action></Info>\
             <Result><Total><Count>{}</Count></Total><Good>{}</Good><Failed>{}</Failed></Result></Message></DetailList></SummaryResult>\n",
            upload_id(uuid),
            good.len() + failed.len(),
            list(good),
            list(failed)
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_summary_result_overrules_the_guess_of_a_process_result_naming_no_document() {
    let mut w = World::new("turnkey");
    w.take_all();
    write_pack(
        &w,
        "28080623",
        &["EF00000001", "EF00000002", "EF00000003"],
        UPLOAD,
    );
    // An error that names no document: turnbridge can only guess the whole upload failed.
    write_result(
        &w,
        UPLOAD,
        "<Info><Code>9001</Code><Description>the upload could not be processed</Description></Info>",
    );
    w.tracker.scan().unwrap();
    for n in ["EF00000001", "EF00000002", "EF00000003"] {
        assert_eq!(w.state_of(n), ("error".into(), Some("9001".into())), "{n}");
    }
    let before = w.events("invoice.status.updated").len();
    // The platform's summary names two invoices one by one: better evidence than the guess.
    write_summary(&w, UPLOAD, &["EF00000001"], &["EF00000002"]);
    w.tracker.scan().unwrap();
    assert!(set_aside(&w).is_empty(), "the summary is believed");
    assert!(w.reports().is_empty(), "{:?}", w.reports());
    assert_eq!(w.tracker.problem(), None);
    assert_eq!(w.state_of("EF00000001").0, "acked");
    assert_eq!(w.state_of("EF00000002").0, "error");
    assert_eq!(
        w.state_of("EF00000003").0,
        "error",
        "not named: keeps its own"
    );
    let updates = w.events("invoice.status.updated");
    assert_eq!(updates.len(), before + 1, "{updates:#?}");
    let last = updates.last().unwrap();
    assert_eq!(
        (last["invoice_no"].as_str(), last["status"].as_str()),
        (Some("EF00000001"), Some("ACKED"))
    );
    assert_eq!(w.events("turnkey.feedback.daily-summary").len(), 1);

    // Another guess about the same upload does not undo what the summary said, and is no
    // reason to doubt the file either.
    let again = write_result(
        &w,
        UPLOAD,
        "<Info><Code>9002</Code><Description>the upload could not be processed again</Description></Info>",
    );
    std::fs::rename(&again, again.with_file_name("second_ProcessResult")).unwrap();
    w.tracker.scan().unwrap();
    assert!(set_aside(&w).is_empty(), "{:?}", w.reports());
    assert_eq!(w.state_of("EF00000001").0, "acked");
    assert_eq!(w.events("invoice.status.updated").len(), before + 1);
}

#[test]
fn a_summary_read_again_after_its_record_was_pruned_raises_nothing_again() {
    use turnbridge::retention::{Limits, Retention};
    let mut w = World::new("flat");
    w.take_all();
    w.deliver("summary_some_failed.xml", "S.xml");
    w.tracker.scan().unwrap();
    assert_eq!(w.events("turnkey.feedback.daily-summary").len(), 1);
    let updates = w.events("invoice.status.updated").len();
    assert_eq!(w.state_of("EF00000003").0, "error");

    // Past retention.feedback_days its records go (the file left the outbox long ago).
    let store = turnbridge::store::Store::open(&w.config.database()).unwrap();
    let mut retention = Retention::new(store, Limits::of(&w.config));
    let days = w.config.retention.feedback_days as i64 + 1;
    let pruned = retention
        .prune(
            chrono::Utc::now() + chrono::Duration::days(days),
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(pruned.rows.get("summaries"), Some(&1), "{pruned:?}");
    assert!(pruned.rows.contains_key("feedback_files"), "{pruned:?}");

    // The same summary again: nothing new about any of its invoices, so no event at all.
    let again = w.deliver("summary_some_failed.xml", "S.xml");
    w.tracker.scan().unwrap();
    assert!(!again.exists(), "taken from the outbox");
    assert!(set_aside(&w).is_empty(), "{:?}", w.reports());
    assert_eq!(w.events("turnkey.feedback.daily-summary").len(), 1);
    assert_eq!(w.events("invoice.status.updated").len(), updates);
}

#[test]
fn every_status_update_has_the_same_fields_null_when_absent() {
    let mut w = World::new("flat");
    w.take_all();
    w.deliver("error.xml", "E.xml");
    w.tracker.scan().unwrap();
    let updates = w.events("invoice.status.updated");
    let statuses: Vec<&str> = updates
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "QUEUED",
            "QUEUED",
            "QUEUED",
            "PICKED_UP",
            "PICKED_UP",
            "PICKED_UP",
            "ERROR"
        ]
    );
    let keys = |e: &Value| -> Vec<String> { e.as_object().unwrap().keys().cloned().collect() };
    for e in &updates {
        assert_eq!(keys(e), keys(&updates[0]), "{e}");
        for k in [
            "tenant_id",
            "invoice_no",
            "message_type",
            "status",
            "mof_code",
            "message",
        ] {
            assert!(e.get(k).is_some(), "{k} missing from {e}");
        }
        assert_eq!(e["tenant_id"], "default");
        assert!(
            e["import_id"].is_string() && e["xml_path"].is_string(),
            "{e}"
        );
    }
    let queued = &updates[0];
    assert!(
        queued["mof_code"].is_null() && queued["message"].is_null(),
        "{queued}"
    );
    assert_eq!(queued["evidence"], queued["xml_path"]);
    let error = updates.last().unwrap();
    assert_eq!(error["mof_code"], "E0403");
    assert!(error["message"].is_string(), "{error}");
}
