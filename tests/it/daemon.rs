//! The real daemon, run as a subprocess on temporary folders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// Validates many files with one xmllint run.
fn xmllint_all(files: &[std::path::PathBuf], ty: &str) {
    for chunk in files.chunks(500) {
        let out = std::process::Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(xsd_dir().join(format!("{ty}.xsd")))
            .args(chunk)
            .output()
            .expect("xmllint is installed (run scripts/install-test-deps)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_999_invoice_batch_becomes_999_valid_files_and_a_second_drop_is_a_duplicate() {
    let mut sb = Sandbox::new();
    sb.start();
    let batch = batch_csv("AA", 1, 999);
    sb.drop_file("big.csv", batch.as_bytes());
    wait_for(120, "999 files in the inbox", || {
        sb.inbox_files().len() == 999
    });
    wait_for(20, "the source to be archived", || sb.archived().len() == 1);
    assert!(files_in(&sb.spool()).is_empty());
    assert!(files_in(&sb.work()).is_empty());
    xmllint_all(&sb.inbox_files(), "F0401");

    let db = sb.store();
    assert_eq!(messages_in(&db, MessageState::Queued), 999);
    let completed = events_named(&db, "upload.completed");
    assert_eq!(completed.len(), 1);
    let event = &completed[0];
    assert_eq!(event["success_count"], 999);
    assert_eq!(event["error_count"], 0);

    // The same bytes again, under another name: reported as a duplicate, nothing written.
    sb.drop_file("big-again.csv", batch.as_bytes());
    wait_for(20, "the duplicate report", || {
        files_in(&sb.rejected())
            .iter()
            .any(|p| p.to_string_lossy().ends_with("big-again.csv.error.txt"))
    });
    let report = files_in(&sb.rejected())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("big-again.csv.error.txt"))
        .unwrap();
    let text = std::fs::read_to_string(report).unwrap();
    assert!(text.contains("already processed as job"), "{text}");
    assert!(text.contains("big.csv"), "{text}");
    assert_eq!(sb.inbox_files().len(), 999);
    // The report is written before the job's state is committed.
    wait_for(20, "the job to be marked a duplicate", || {
        job_named(&sb.store(), "big-again.csv").is_some_and(|j| j.state == JobState::Duplicate)
    });
}

#[test]
fn bad_rows_are_reported_and_good_rows_go_through() {
    let mut sb = Sandbox::new();
    sb.start();
    let bytes = std::fs::read(fixture("invalid/mixed_batch.csv")).unwrap();
    sb.drop_file("mixed.csv", &bytes);
    wait_for(20, "the report", || {
        files_in(&sb.rejected())
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".error.json"))
    });
    wait_for(20, "three files in the inbox", || {
        sb.inbox_files().len() == 3
    });
    let numbers: BTreeSet<String> = sb
        .inbox_files()
        .iter()
        .map(|p| invoice_number(&std::fs::read_to_string(p).unwrap()))
        .collect();
    assert_eq!(
        numbers,
        ["EF00000001", "EF00000003", "EF00000005"]
            .map(String::from)
            .into()
    );

    let rejected = files_in(&sb.rejected());
    let rows = rejected
        .iter()
        .find(|p| p.to_string_lossy().ends_with("_mixed.csv"))
        .unwrap();
    let rows = std::fs::read_to_string(rows).unwrap();
    assert_eq!(
        rows.lines().count(),
        3,
        "header and the two bad rows:\n{rows}"
    );
    assert!(rows.contains("EF00000002") && rows.contains("EF00000004"));

    let json = rejected
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".error.json"))
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(report["accepted"], 3);
    assert_eq!(report["rejected"], 2);
    let problems = report["problems"].as_array().unwrap();
    assert!(problems
        .iter()
        .any(|p| p["row"] == 3 && p["field"] == "PrintMark"));
    assert!(problems
        .iter()
        .any(|p| p["row"] == 6 && p["field"] == "TotalAmount" && p["value"] == "999"));
    let txt = rejected
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".error.txt"))
        .unwrap();
    let txt = std::fs::read_to_string(txt).unwrap();
    assert!(
        txt.contains("mixed.csv row 6 (F0401 EF00000004), field TotalAmount = \"999\""),
        "{txt}"
    );
    // The whole source is archived, nothing is lost.
    wait_for(20, "the archive", || sb.archived().len() == 1);
    assert_eq!(std::fs::read(&sb.archived()[0]).unwrap(), bytes);
}

#[test]
fn killed_mid_batch_and_restarted_every_invoice_has_exactly_one_file() {
    let mut sb = Sandbox::new();
    std::fs::create_dir_all(sb.inbox()).unwrap();
    let observer = Observer::start(&sb.inbox());
    sb.start();
    sb.drop_file("crash.csv", batch_csv("CC", 1, 999).as_bytes());
    // Kill at several points of the batch: just after the claim, while XML is being staged,
    // and while it is being renamed into the inbox. Each point is a condition polled every
    // 200 µs, so the run is reproducible; a point already passed is skipped.
    let staging = sb.state().join("staging");
    let (work, inbox) = (sb.work(), sb.inbox());
    let count = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    type Point<'a> = (&'a str, Box<dyn Fn() -> bool + 'a>);
    let points: [Point; 5] = [
        ("claimed", Box::new(|| !files_in(&work).is_empty())),
        ("staging begun", Box::new(|| count(&staging) >= 1)),
        ("staging half done", Box::new(|| count(&staging) >= 500)),
        ("publishing begun", Box::new(|| count(&inbox) >= 1)),
        ("publishing half done", Box::new(|| count(&inbox) >= 500)),
    ];
    let mut hits = 0;
    for (name, reached) in &points {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !reached() && count(&inbox) < 999 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        let before = count(&inbox);
        sb.kill();
        if before < 999 {
            hits += 1;
        }
        eprintln!("killed at '{name}' with {before} files in the inbox");
        sb.start();
    }
    assert!(hits >= 3, "at least three kills landed mid-batch");
    wait_for(120, "999 files in the inbox", || {
        sb.inbox_files().len() == 999
    });
    wait_for(20, "work/ to be empty", || files_in(&sb.work()).is_empty());
    let seen = observer.finish();

    let mut numbers = BTreeMap::new();
    for p in sb.inbox_files() {
        let xml = std::fs::read_to_string(&p).unwrap();
        assert!(
            xml.ends_with("</Invoice>\n"),
            "{} is incomplete",
            p.display()
        );
        *numbers.entry(invoice_number(&xml)).or_insert(0) += 1;
    }
    assert_eq!(numbers.len(), 999, "every invoice is there");
    assert!(numbers.values().all(|&n| n == 1), "no invoice twice");
    // The start-up link probe (hidden, empty, not *.xml) may flash by; it is no message.
    let seen: BTreeSet<String> = seen
        .into_iter()
        .filter(|n| !n.starts_with(".turnbridge-probe-"))
        .collect();
    for name in &seen {
        let ok = name.starts_with("F0401_")
            && name.ends_with(".xml")
            && name.len() == "F0401_20261126_00000001.xml".len();
        assert!(
            ok,
            "a name that is not a finished message file appeared in the inbox: {name}"
        );
    }
    assert_eq!(seen.len(), 999, "no name appeared and vanished");
    assert!(
        files_in(&sb.state().join("staging")).is_empty(),
        "staging is empty"
    );
    let db = sb.store();
    assert_eq!(messages_in(&db, MessageState::Queued), 999);
    let events = events_named(&db, "invoice.status.updated");
    assert_eq!(events.len(), 999, "one queued event per invoice");
    assert_eq!(events_named(&db, "upload.completed").len(), 1);
}

#[test]
fn files_dropped_while_stopped_are_taken_at_start_and_partial_ones_are_left_alone() {
    let mut sb = Sandbox::new();
    std::fs::create_dir_all(sb.spool()).unwrap();
    std::fs::copy(
        fixture("valid/F0401_b2b.json"),
        sb.spool().join("early.json"),
    )
    .unwrap();
    std::fs::write(sb.spool().join("later.csv.tmp"), "half a file").unwrap();
    std::fs::write(sb.spool().join(".hidden.csv"), "not mine").unwrap();
    sb.start();
    wait_for(20, "the early file", || sb.inbox_files().len() == 1);
    std::thread::sleep(Duration::from_millis(500));
    let left: Vec<_> = files_in(&sb.spool())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![".hidden.csv", "later.csv.tmp"]);
    // The writer finishes by renaming: now it is taken.
    std::fs::write(
        sb.spool().join("later.csv.tmp"),
        std::fs::read(fixture("valid/F0401_special.csv")).unwrap(),
    )
    .unwrap();
    std::fs::rename(
        sb.spool().join("later.csv.tmp"),
        sb.spool().join("later.csv"),
    )
    .unwrap();
    wait_for(20, "the renamed file", || sb.inbox_files().len() == 2);
    assert_eq!(sb.terminate().code(), Some(0), "SIGTERM exits 0");
    assert!(sb.log().contains("stopped"));
}

#[test]
fn a_hostile_zip_is_rejected_whole_with_a_report() {
    let mut sb = Sandbox::new();
    sb.start();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("../x.csv", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(
        &mut w,
        &std::fs::read(fixture("valid/F0401_b2c_print.csv")).unwrap(),
    )
    .unwrap();
    let bytes = w.finish().unwrap().into_inner();
    sb.drop_file("evil.zip", &bytes);
    // The report is written first, then the file is moved beside it.
    wait_for(20, "the report and the file", || {
        let files = files_in(&sb.rejected());
        files
            .iter()
            .any(|p| p.to_string_lossy().ends_with("evil.zip.error.txt"))
            && files
                .iter()
                .any(|p| p.to_string_lossy().ends_with("_evil.zip"))
    });
    let rejected = files_in(&sb.rejected());
    let kept = rejected
        .iter()
        .find(|p| p.to_string_lossy().ends_with("_evil.zip"))
        .unwrap();
    assert_eq!(
        std::fs::read(kept).unwrap(),
        bytes,
        "the file is kept as it came"
    );
    let txt = rejected
        .iter()
        .find(|p| p.to_string_lossy().ends_with("evil.zip.error.txt"))
        .unwrap();
    assert!(std::fs::read_to_string(txt).unwrap().contains("`..`"));
    assert!(sb.inbox_files().is_empty());
    assert!(!sb.log().contains("panicked"));
}

#[test]
fn a_message_sent_before_is_not_written_again() {
    let mut sb = Sandbox::new();
    sb.start();
    sb.drop_file(
        "one.csv",
        std::fs::read(fixture("valid/F0401_b2c_print.csv"))
            .unwrap()
            .as_slice(),
    );
    wait_for(20, "one file", || sb.inbox_files().len() == 1);
    // Same invoice, different bytes (another time of day): rejected as already sent.
    let again = std::fs::read_to_string(fixture("valid/F0401_b2c_print.csv"))
        .unwrap()
        .replace("09:30:00", "09:31:00");
    sb.drop_file("two.csv", again.as_bytes());
    wait_for(20, "the report", || {
        files_in(&sb.rejected())
            .iter()
            .any(|p| p.to_string_lossy().ends_with("two.csv.error.txt"))
    });
    let txt = files_in(&sb.rejected())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("two.csv.error.txt"))
        .unwrap();
    assert!(std::fs::read_to_string(txt)
        .unwrap()
        .contains("already sent by job"));
    assert_eq!(sb.inbox_files().len(), 1);
}

#[test]
fn allowances_cannot_take_back_more_than_the_invoice() {
    let mut sb = Sandbox::new();
    sb.start();
    sb.drop_file(
        "inv.csv",
        &std::fs::read(fixture("valid/F0401_special.csv")).unwrap(),
    );
    wait_for(20, "the invoice", || sb.inbox_files().len() == 1);
    // The invoice's untaxed total is 10000; allow 1500, then try 9000 more.
    sb.drop_file(
        "al1.csv",
        &std::fs::read(fixture("valid/G0401_allowance.csv")).unwrap(),
    );
    wait_for(20, "the allowance", || sb.inbox_files().len() == 2);
    let big = std::fs::read_to_string(fixture("valid/G0401_allowance.csv"))
        .unwrap()
        .replace("AL2026112600001", "AL2026112600009")
        .replace(",10,包,100,1000,50,", ",90,包,100,9000,450,")
        .replace(",75,1500", ",475,9500");
    sb.drop_file("al2.csv", big.as_bytes());
    wait_for(20, "the report", || {
        files_in(&sb.rejected())
            .iter()
            .any(|p| p.to_string_lossy().ends_with("al2.csv.error.txt"))
    });
    let txt = files_in(&sb.rejected())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("al2.csv.error.txt"))
        .unwrap();
    let txt = std::fs::read_to_string(txt).unwrap();
    assert!(txt.contains("above its untaxed total 10000"), "{txt}");
    assert_eq!(sb.inbox_files().len(), 2);
}

#[test]
fn the_sandbox_command_builds_a_working_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let sb_dir = dir.path().join("sb");
    // The sandbox keeps a config it finds; use a free port instead of the default one.
    std::fs::create_dir_all(&sb_dir).unwrap();
    let text = turnbridge::daemon::sandbox_config()
        .replace("listen = \"127.0.0.1:8780\"", "listen = \"127.0.0.1:0\"");
    std::fs::write(sb_dir.join("turnbridge.toml"), text).unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .arg("sandbox")
        .arg(&sb_dir)
        .stdout(std::process::Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(20, "the sandbox tree", || {
        sb_dir.join("state/turnbridge.db").exists()
    });
    assert!(sb_dir.join("turnbridge.toml").exists());
    for ex in files_in(&sb_dir.join("examples")) {
        std::fs::copy(
            &ex,
            sb_dir.join("spool/einvoice").join(ex.file_name().unwrap()),
        )
        .unwrap();
    }
    wait_for(20, "XML in the sandbox inbox", || {
        files_in(&sb_dir.join("turnkey/INBOX")).len() == 2
    });
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let mut sb = Sandbox::new();
    let sock_path = sb.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::fs::create_dir_all(sb.spool()).unwrap();
    let log = std::fs::File::create(sb.log_path()).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the shell's pid.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_turnbridge"))
        .arg(sb.config_path())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let mut recv_until = |want: &str, got: &mut String| {
        while !got.contains(want) {
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|_| panic!("no {want} in {got:?}"));
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
            got.push('\n');
        }
    };
    sb.child = Some(child);
    recv_until("READY=1", &mut got);
    recv_until("STATUS=", &mut got);
    recv_until("WATCHDOG=1", &mut got);
    let pid = sb.child.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    recv_until("STOPPING=1", &mut got);
    assert!(sb.child.take().unwrap().wait().unwrap().success());
}

#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_when_the_new_is_broken() {
    let mut sb = Sandbox::new();
    sb.start();
    let pid = sb.child.as_ref().unwrap().id() as i32;
    let good = std::fs::read_to_string(sb.config_path()).unwrap();
    std::fs::write(
        sb.config_path(),
        good.replace("settle_ms = 100", "settle_ms = 150"),
    )
    .unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for(20, "the reload", || {
        sb.log().contains("configuration reloaded")
    });
    std::fs::write(
        sb.config_path(),
        good.replace("settle_ms = 100", "settle_ms = \"soon\""),
    )
    .unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for(20, "the refusal", || {
        sb.log().contains("configuration not reloaded")
    });
    assert!(
        sb.log().contains("einvoice.settle_ms"),
        "the refusal names the key"
    );
    // Still working.
    sb.drop_file(
        "after.json",
        &std::fs::read(fixture("valid/F0401_b2b.json")).unwrap(),
    );
    wait_for(20, "a file after the reloads", || {
        sb.inbox_files().len() == 1
    });
}

/// `turnbridge reload --pid` (the unit's ExecReload): a broken config is refused before the
/// daemon is disturbed, with the key named and a failing exit; a good one is passed on.
#[test]
fn the_reload_command_checks_the_config_before_signalling() {
    let mut sb = Sandbox::new();
    sb.start();
    let pid = sb.child.as_ref().unwrap().id().to_string();
    let reload = |sb: &Sandbox| {
        std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
            .args(["reload", "--pid", &pid, "--config"])
            .arg(sb.config_path())
            .output()
            .unwrap()
    };
    let good = std::fs::read_to_string(sb.config_path()).unwrap();
    std::fs::write(
        sb.config_path(),
        good.replace("settle_ms = 100", "settle_ms = -1"),
    )
    .unwrap();
    let out = reload(&sb);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not reloaded") && err.contains("einvoice.settle_ms"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !sb.log().contains("reload"),
        "the daemon was not signalled:\n{}",
        sb.log()
    );

    std::fs::write(
        sb.config_path(),
        good.replace("settle_ms = 100", "settle_ms = 150"),
    )
    .unwrap();
    let out = reload(&sb);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(20, "the reload", || {
        sb.log().contains("configuration reloaded")
    });
}

#[test]
fn refuses_to_start_when_staging_is_on_another_filesystem() {
    let shm = Path::new("/dev/shm");
    let tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::MetadataExt;
    let other_fs = shm.is_dir()
        && std::fs::metadata(shm).unwrap().dev() != std::fs::metadata(tmp.path()).unwrap().dev();
    if !other_fs {
        eprintln!("skipped: /dev/shm is not a separate filesystem here");
        return;
    }
    let staging = tempfile::tempdir_in(shm).unwrap();
    let mut sb = Sandbox::new();
    let text = std::fs::read_to_string(sb.config_path()).unwrap().replace(
        "[turnkey]\n",
        &format!("[turnkey]\nstaging = \"{}\"\n", staging.path().display()),
    );
    std::fs::write(sb.config_path(), text).unwrap();
    sb.start();
    let mut child = sb.child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(sb.log().contains("another filesystem"), "{}", sb.log());
}

#[test]
fn sigterm_mid_batch_finishes_the_file_in_hand_and_exits_zero() {
    let mut sb = Sandbox::new();
    sb.start();
    sb.drop_file("term.csv", batch_csv("TT", 1, 999).as_bytes());
    let work = sb.work();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while files_in(&work).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(sb.terminate().code(), Some(0));
    assert_eq!(
        sb.inbox_files().len(),
        999,
        "the batch in hand was finished"
    );
    assert!(files_in(&work).is_empty());
    assert_eq!(sb.archived().len(), 1);
}

#[test]
fn a_zip_with_a_bad_member_sends_the_good_one_and_reports_the_bad_one() {
    use md5::Digest;
    let mut sb = Sandbox::new();
    sb.start();
    let good = std::fs::read(fixture("valid/F0401_b2c_print.csv")).unwrap();
    let bad = std::fs::read(fixture("valid/F0401_b2b.json")).unwrap();
    let hex = |b: &[u8]| turnbridge::einvoice::archive::hex(&md5::Md5::digest(b));
    let manifest = format!(
        r#"{{"members":[{{"name":"good.csv","md5":"{}"}},{{"name":"bad.json","md5":"{}"}}]}}"#,
        hex(&good),
        hex(b"something else")
    );
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in [
        ("good.csv", &good[..]),
        ("bad.json", &bad[..]),
        ("manifest.json", manifest.as_bytes()),
    ] {
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, data).unwrap();
    }
    sb.drop_file("batch.zip", &w.finish().unwrap().into_inner());
    wait_for(20, "the report", || {
        files_in(&sb.rejected())
            .iter()
            .any(|p| p.to_string_lossy().ends_with("batch.zip.error.txt"))
    });
    wait_for(20, "the good member's XML", || sb.inbox_files().len() == 1);
    let rejected = files_in(&sb.rejected());
    let member = rejected
        .iter()
        .find(|p| p.to_string_lossy().ends_with("_batch.bad.json"))
        .unwrap();
    assert_eq!(
        std::fs::read(member).unwrap(),
        bad,
        "the refused member is kept byte for byte"
    );
    let txt = rejected
        .iter()
        .find(|p| p.to_string_lossy().ends_with("batch.zip.error.txt"))
        .unwrap();
    let txt = std::fs::read_to_string(txt).unwrap();
    assert!(
        txt.contains("batch.zip:bad.json") && txt.contains("MD5"),
        "{txt}"
    );
}

#[test]
fn the_real_turnkey_layout_gets_one_src_folder_per_message_type() {
    let mut sb = Sandbox::new();
    let text = std::fs::read_to_string(sb.config_path()).unwrap().replace(
        "inbox = \"turnkey/INBOX\"",
        "layout = \"turnkey\"\ninbox = \"turnkey/{tenant}/UpCast/B2SSTORAGE/{message_type}/SRC\"",
    );
    std::fs::write(sb.config_path(), text).unwrap();
    sb.start();
    sb.drop_file(
        "inv.csv",
        &std::fs::read(fixture("valid/F0401_special.csv")).unwrap(),
    );
    sb.drop_file(
        "al.csv",
        &std::fs::read(fixture("valid/G0401_allowance.csv")).unwrap(),
    );
    sb.drop_file(
        "cancel.json",
        &std::fs::read(fixture("valid/G0501_cancel_allowance.json")).unwrap(),
    );
    let src = |tenant: &str, ty: &str| {
        sb.path()
            .join(format!("turnkey/{tenant}/UpCast/B2SSTORAGE/{ty}/SRC"))
    };
    wait_for(20, "three messages", || {
        files_in(&src("TEN-001", "F0401")).len() == 1
            && files_in(&src("TEN-001", "G0401")).len() == 1
            && files_in(&src("default", "G0501")).len() == 1
    });
    let name = files_in(&src("TEN-001", "G0401"))[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("G0401_") && name.ends_with(".xml"),
        "{name}"
    );
}

#[test]
fn under_systemd_the_journal_gets_structured_fields() {
    use std::os::unix::net::UnixDatagram;
    let dir = Path::new("/run/systemd/journal");
    let sock_path = dir.join("socket");
    if sock_path.exists() {
        // A socket nobody reads (left by an interrupted run) refuses datagrams: replace it.
        let probe = UnixDatagram::unbound().unwrap();
        if probe.send_to(b"", &sock_path).is_ok() {
            eprintln!("skipped: a real journal socket exists here; not touching it");
            return;
        }
        let _ = std::fs::remove_file(&sock_path);
    }
    if std::fs::create_dir_all(dir).is_err() {
        eprintln!("skipped: cannot create {} (not root?)", dir.display());
        return;
    }
    let sock = match UnixDatagram::bind(&sock_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipped: cannot bind a fake journal socket: {e}");
            return;
        }
    };
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Cleanup(sock_path.clone());
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sb = Sandbox::with_sections("", "");
    let text = std::fs::read_to_string(sb.config_path())
        .unwrap()
        .replace("format = \"text\"", "format = \"journald\"");
    std::fs::write(sb.config_path(), text).unwrap();
    std::fs::create_dir_all(sb.spool()).unwrap();
    let log = std::fs::File::create(sb.log_path()).unwrap();
    sb.child = Some(
        std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
            .args(["run", "--config"])
            .arg(sb.config_path())
            .env_remove("NOTIFY_SOCKET")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    sb.drop_file(
        "j.csv",
        &std::fs::read(fixture("valid/F0401_b2c_print.csv")).unwrap(),
    );
    let mut buf = vec![0u8; 65536];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut found = None;
    while std::time::Instant::now() < deadline && found.is_none() {
        let Ok(n) = sock.recv(&mut buf) else { break };
        let entry = journal_fields(&buf[..n]);
        if entry.get("INVOICE_NO").map(String::as_str) == Some("AB12345678") {
            found = Some(entry);
        }
    }
    let entry =
        found.unwrap_or_else(|| panic!("no journal entry about AB12345678; stderr:\n{}", sb.log()));
    for (k, v) in [
        ("MESSAGE_TYPE", "F0401"),
        ("TENANT_ID", "TEN-001"),
        ("PRIORITY", "5"),
        ("SYSLOG_IDENTIFIER", "turnbridge"),
    ] {
        assert_eq!(
            entry.get(k).map(String::as_str),
            Some(v),
            "{k} in {entry:?}"
        );
    }
    assert!(
        entry.get("JOB_ID").is_some_and(|j| j.len() == 23),
        "{entry:?}"
    );
    assert!(
        entry.contains_key("XML_PATH") && entry.contains_key("MD5"),
        "{entry:?}"
    );

    // Outside text reaches the journal escaped, as in the text log: a file name with a
    // newline, a terminal escape and a typed backslash-n.
    sb.drop_file(
        "evil\n\x1b[2J\\n.csv",
        &std::fs::read(fixture("valid/F0401_b2c_print.csv")).unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut found = None;
    while std::time::Instant::now() < deadline && found.is_none() {
        let Ok(n) = sock.recv(&mut buf) else { break };
        assert!(
            !buf[..n].contains(&0x1b),
            "a raw escape reached the journal: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        let entry = journal_fields(&buf[..n]);
        if entry.get("FILE").is_some_and(|f| f.starts_with("evil")) {
            found = Some(entry);
        }
    }
    let entry =
        found.unwrap_or_else(|| panic!("no journal entry about evil…; stderr:\n{}", sb.log()));
    assert_eq!(entry["FILE"], r"evil\n\u{1b}[2J\\n.csv", "{entry:?}");
    assert!(!entry["MESSAGE"].contains('\n'), "{entry:?}");
}

/// Decodes one native journal datagram: `KEY=value` lines, or `KEY`, a little-endian u64
/// length and the raw value for values that need it.
fn journal_fields(mut b: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &b[(nl + 1).min(b.len())..];
            if rest.len() < 8 {
                break;
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let end = (8 + len).min(rest.len());
            out.insert(key, String::from_utf8_lossy(&rest[8..end]).into_owned());
            b = &rest[(end + 1).min(rest.len())..];
        }
    }
    out
}

/// The state of every message, by number.
fn message_states(sb: &Sandbox) -> Vec<(String, String)> {
    let Ok(db) = rusqlite::Connection::open(sb.state().join("turnbridge.db")) else {
        return vec![];
    };
    let Ok(mut stmt) = db.prepare("SELECT number, state FROM messages ORDER BY number") else {
        return vec![];
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Sends the daemon SIGHUP and waits for its `n`th "configuration reloaded".
fn hup(sb: &Sandbox, n: usize) {
    let pid = sb.child.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for(20, "the reload", || {
        sb.log().matches("configuration reloaded").count() == n
    });
}

/// A reload switches the simulator on and changes what it answers, at once; the listener's
/// address, bound at start, stays, and the reload's log line says so.
#[test]
fn a_reload_switches_the_simulator_on_and_changes_its_answers_at_once() {
    let mut sb = Sandbox::with_sections(
        "",
        "[http]\nlisten = \"127.0.0.1:0\"\n[simulator]\nenabled = false\ndelay_ms = 100\n",
    );
    sb.start();
    let addr = sb.http_addr();
    sb.drop_file("a.csv", batch_csv("EF", 1, 2).as_bytes());
    wait_for(20, "both messages in the pickup folder", || {
        sb.inbox_files().len() == 2
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(sb.inbox_files().len(), 2, "no simulator: the files wait");

    let on = std::fs::read_to_string(sb.config_path()).unwrap().replace(
        "enabled = false",
        "enabled = true\nreject = [\"EF00000002\"]",
    );
    std::fs::write(sb.config_path(), &on).unwrap();
    hup(&sb, 1);
    wait_for(30, "the simulator's answers", || {
        message_states(&sb) == pairs(&[("EF00000001", "acked"), ("EF00000002", "error")])
    });

    // Another number to reject, and an address that waits for a restart.
    let next = on
        .replace("EF00000002", "EF00000003")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(sb.config_path(), next).unwrap();
    hup(&sb, 2);
    assert!(
        sb.log()
            .contains("keep their running values until turnbridge restarts: http.listen"),
        "{}",
        sb.log()
    );
    sb.drop_file("b.csv", batch_csv("EF", 3, 2).as_bytes());
    wait_for(30, "the answers after the second reload", || {
        message_states(&sb)
            == pairs(&[
                ("EF00000001", "acked"),
                ("EF00000002", "error"),
                ("EF00000003", "error"),
                ("EF00000004", "acked"),
            ])
    });
    assert_eq!(
        http_get(addr, "/healthz", &[]).status,
        200,
        "still listening where it was"
    );
    assert_eq!(
        sb.log().matches(" starting config=").count(),
        1,
        "never restarted"
    );
}
