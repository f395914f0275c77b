//! Faults the daemon must ride out: an unwritable Turnkey inbox, a full disk, a locked
//! database, a webhook receiver that is down or slow, NextEngine answering 5xx, maintenance
//! pages and system errors. In each the daemon keeps running, the log and `turnbridge
//! status` say what is wrong, and when the fault clears it catches up on its own with
//! nothing lost or sent twice.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::*;
use crate::fake::FakeNextEngine;
use serde_json::json;
use turnbridge::store::deliveries::{self, DeliveryState};
use turnbridge::store::ne_jobs::{self, NeJobState};

const ADMIN: &str = "faults-admin-token";

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// The problems `turnbridge status --json` reports, checking the daemon is seen running.
fn problems(sb: &Sandbox) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&cli(&sb.config_path(), &["status", "--json"])).unwrap();
    assert_eq!(v["daemon_running"], true, "status sees the daemon running");
    health_problems(sb)
}

fn wait_for_problem(sb: &Sandbox, component: &str, words: &str) -> String {
    let mut found = String::new();
    wait_for(
        40,
        &format!("status to report {component}: {words}"),
        || {
            found = problems(sb)
                .into_iter()
                .find(|(c, p)| c.starts_with(component) && p.contains(words))
                .map(|(_, p)| p)
                .unwrap_or_default();
            !found.is_empty()
        },
    );
    eprintln!("{component}: {found}");
    let text = cli(&sb.config_path(), &["status"]);
    assert!(
        text.contains("problems:\n") && text.contains(words),
        "the human status says it too:\n{text}"
    );
    assert_eq!(
        http_get(sb.http_addr(), "/healthz", &[]).json()["status"],
        "degraded"
    );
    found
}

fn wait_for_no_problems(sb: &Sandbox) {
    wait_for(60, "status to report no problems", || {
        problems(sb).is_empty()
    });
    assert!(cli(&sb.config_path(), &["status"]).contains("problems: none\n"));
    assert_eq!(
        http_get(sb.http_addr(), "/healthz", &[]).json()["status"],
        "ok"
    );
}

fn assert_alive(sb: &mut Sandbox) {
    let c = sb.child.as_mut().expect("started");
    assert!(
        c.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
}

/// Exactly the invoices `prefix` 1..=n, once each, complete.
fn assert_inbox_holds(sb: &Sandbox, prefix: &str, n: u32) {
    let mut numbers = Vec::new();
    for p in sb.inbox_files() {
        let xml = std::fs::read_to_string(&p).unwrap();
        assert!(xml.ends_with("</Invoice>\n"), "{} is complete", p.display());
        numbers.push(invoice_number(&xml));
    }
    let unique: BTreeSet<&String> = numbers.iter().collect();
    assert_eq!(unique.len(), numbers.len(), "no invoice twice");
    let want: BTreeSet<String> = (1..=n).map(|i| format!("{prefix}{i:08}")).collect();
    assert_eq!(unique, want.iter().collect());
}

#[test]
fn an_unwritable_inbox_is_reported_and_the_backlog_goes_out_when_it_is_writable() {
    let mut sb = Sandbox::new();
    sb.start();
    // Root ignores permission bits, so as root the folder is made immutable instead.
    let (lock, unlock): (Vec<&str>, Vec<&str>) = if is_root() {
        (vec!["chattr", "+i"], vec!["chattr", "-i"])
    } else {
        (vec!["chmod", "0555"], vec!["chmod", "0755"])
    };
    let inbox = sb.inbox();
    let run = |cmd: &[&str]| {
        let ok = std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .arg(&inbox)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd:?}");
    };
    run(&lock);
    sb.drop_file("blocked.csv", batch_csv("UW", 1, 20).as_bytes());
    let problem = wait_for_problem(&sb, "einvoice", "blocked.csv");
    assert!(
        problem.contains(&sb.inbox().display().to_string()),
        "{problem}"
    );
    assert!(
        sb.log().contains("file left for a retry"),
        "the log says it"
    );
    assert!(sb.inbox_files().is_empty());
    assert_alive(&mut sb);

    run(&unlock);
    wait_for(30, "20 files in the inbox", || sb.inbox_files().len() == 20);
    wait_for_no_problems(&sb);
    assert_inbox_holds(&sb, "UW", 20);
    assert!(sb.log().contains("recovered"), "the log says it is over");
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_is_reported_and_nothing_is_lost_when_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let mut sb = Sandbox::new();
    let config = std::fs::read_to_string(sb.config_path()).unwrap();
    let config = config.replace("[turnkey]\n", "[turnkey]\nstaging = \"turnkey/.staging\"\n");
    std::fs::write(sb.config_path(), config).unwrap();
    // The Turnkey tree and the staging folder share a 1 MiB filesystem.
    let _fs = Tmpfs::mount(&sb.path().join("turnkey"), "1m");
    sb.start();
    let filler = sb.path().join("turnkey/filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    sb.drop_file("full.csv", batch_csv("DF", 1, 30).as_bytes());
    let problem = wait_for_problem(&sb, "einvoice", "full.csv");
    assert!(problem.contains("No space left on device"), "{problem}");
    assert!(
        sb.log().contains("No space left on device"),
        "the log says it"
    );
    assert_alive(&mut sb);

    std::fs::remove_file(&filler).unwrap();
    wait_for(30, "30 files in the inbox", || sb.inbox_files().len() == 30);
    wait_for_no_problems(&sb);
    assert_inbox_holds(&sb, "DF", 30);
    sb.kill();
}

#[test]
fn a_locked_database_is_waited_out_and_reported() {
    let mut sb = Sandbox::new();
    sb.start();
    // Another process holds the write lock longer than the daemon's 10 s busy timeout.
    let db = sb.db();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    sb.drop_file("locked.csv", batch_csv("DB", 1, 10).as_bytes());
    let problem = wait_for_problem(&sb, "einvoice", "locked.csv");
    assert!(problem.contains("database is locked"), "{problem}");
    assert!(sb.log().contains("database is locked"), "the log says it");
    assert!(sb.inbox_files().is_empty());
    assert_alive(&mut sb);

    db.execute_batch("COMMIT").unwrap();
    wait_for(30, "10 files in the inbox", || sb.inbox_files().len() == 10);
    wait_for_no_problems(&sb);
    assert_inbox_holds(&sb, "DB", 10);
}

#[test]
fn a_receiver_that_is_down_or_slow_is_retried_and_reported_until_it_answers() {
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
         [webhooks]\nallow_private_networks = true\nretry_schedule_ms = [0, 300, 600, 1200, 2400, 4800, 9600, 19200]\n\
         timeout_ms = 500\npoll_ms = 20\n"
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    // A port that was just free: connections to it are refused until the receiver starts.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (endpoint, _) = register_webhook(
        sb.http_addr(),
        ADMIN,
        &format!("http://{addr}/hook?token=receiver-s3cret"),
        &["*"],
        None,
    );
    sb.drop_file("down.csv", batch_csv("WD", 1, 2).as_bytes());
    let problem = wait_for_problem(&sb, &format!("webhooks {endpoint}"), "retrying");
    assert!(
        problem.contains("127.0.0.1"),
        "names the receiver: {problem}"
    );
    assert!(
        !problem.contains("s3cret"),
        "but not its URL's token: {problem}"
    );
    assert!(
        sb.log().contains("delivery attempt failed; will retry"),
        "the log says it"
    );
    assert!(
        !sb.log().contains("s3cret"),
        "the log never shows the URL's token"
    );
    assert_alive(&mut sb);

    let rx = Receiver::start_on(&addr.to_string(), 200);
    let db = sb.store();
    let in_state = |wanted: &dyn Fn(DeliveryState) -> bool| -> usize {
        deliveries::list(&db, &deliveries::Filter::default(), 100_000)
            .unwrap()
            .iter()
            .filter(|d| wanted(d.state))
            .count()
    };
    let undelivered = || in_state(&|s| s != DeliveryState::Succeeded);
    wait_for(40, "every delivery made", || {
        undelivered() == 0 && !rx.received().is_empty()
    });
    wait_for_no_problems(&sb);

    // Slow: answers after the daemon's timeout count as failures until it speeds up.
    rx.delay_ms.store(1500, std::sync::atomic::Ordering::SeqCst);
    let before = rx.received().len();
    sb.drop_file("slow.csv", batch_csv("WS", 1, 1).as_bytes());
    wait_for_problem(&sb, &format!("webhooks {endpoint}"), "retrying");
    rx.delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    wait_for(40, "the slow deliveries made", || {
        undelivered() == 0 && rx.received().len() > before
    });
    wait_for_no_problems(&sb);
    let dead = in_state(&|s| s == DeliveryState::Dead);
    assert_eq!(dead, 0, "nothing given up on");
    let events = turnbridge::store::events::count(&sb.store()).unwrap();
    let ids: BTreeSet<String> = rx
        .received()
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.header("x-turnbridge-delivery-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len() as i64, events, "every event reached the receiver");
    assert_alive(&mut sb);
}

#[test]
fn nextengine_errors_and_maintenance_are_retried_and_reported_and_upload_once() {
    let fake = FakeNextEngine::start();
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[nextengine]\nclient_id = \"client-1\"\n\
         client_secret = \"client-secret-1\"\napi_base = \"{}\"\npoll_ms = 100\nbusy_backoff_ms = 10\n",
        fake.base()
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    let r = nextengine_sign_in(&sb, "u1", "s1");
    assert_eq!(r.status, 200, "{}", r.text());

    fake.state.lock().unwrap().down = Some((
        503,
        "<html><body>ただいまメンテナンス中です</body></html>".to_string(),
    ));
    let goods =
        std::fs::read_to_string(root().join("tests/data/goods_upload_min_create.csv")).unwrap();
    let dir = sb.path().join("spool/nextengine/goods");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("goods.csv.tmp"), &goods).unwrap();
    std::fs::rename(dir.join("goods.csv.tmp"), dir.join("goods.csv")).unwrap();
    let problem = wait_for_problem(&sb, "nextengine", "HTTP 503");
    assert!(
        problem.contains("メンテナンス"),
        "the page says why: {problem}"
    );
    assert!(sb.log().contains("HTTP 503"), "the log says it");
    assert!(fake.state.lock().unwrap().uploads.is_empty());
    assert_alive(&mut sb);

    // Back, but the first upload meets a system error: left for the next pass, not refused.
    {
        let mut st = fake.state.lock().unwrap();
        st.down = None;
        st.scripted_upload
            .push_back(json!({"result": "error", "code": "999999", "message": "system error"}));
    }
    let db = sb.store();
    wait_for(40, "the job done", || {
        ne_jobs::list(&db).unwrap().first().map(|j| j.state) == Some(NeJobState::Done)
    });
    wait_for_no_problems(&sb);
    assert!(
        sb.log().contains("999999"),
        "the system error is in the log"
    );
    let uploads = fake.state.lock().unwrap().uploads.clone();
    assert_eq!(uploads.len(), 1, "uploaded exactly once");
    assert_eq!(uploads[0].1, goods);
    assert_alive(&mut sb);
}

/// A database deleted (or replaced) under the running daemon stops it with a clear error:
/// SQLite would otherwise start an empty one at the same name, and the daemon would send
/// invoices again under names Turnkey has already seen.
#[test]
fn a_database_deleted_while_running_stops_the_daemon() {
    let mut sb = Sandbox::new();
    sb.start();
    sb.drop_file("a.csv", batch_csv("DB", 1, 2).as_bytes());
    wait_for(20, "two invoices in the inbox", || {
        sb.inbox_files().len() == 2
    });
    assert_alive(&mut sb);
    let db = sb.state().join("turnbridge.db");
    assert!(db.is_file(), "{} exists", db.display());
    std::fs::remove_file(&db).unwrap();
    let mut status = None;
    wait_for(10, "the daemon to stop", || {
        status = sb.child.as_mut().unwrap().try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success(), "it stops with an error");
    assert!(
        sb.log()
            .contains("was deleted or replaced while turnbridge ran"),
        "the log says why:\n{}",
        sb.log()
    );
}

/// A file made unreadable to the daemon: written beside `dest` under a hidden name, its
/// permissions taken away, then renamed into place (so the daemon never sees it readable).
fn place_unreadable(dest: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dest.with_file_name(format!(
        ".{}.tmp",
        dest.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

#[test]
fn an_unreadable_spool_file_is_set_aside_after_three_attempts_and_others_flow() {
    let mut sb = Sandbox::new();
    let outbox = sb.path().join("turnkey/OUTBOX");
    std::fs::create_dir_all(&outbox).unwrap();
    // The daemon must really be refused: root reads anything, so as root the daemon runs as
    // `nobody` (as a service user would), reading files root owns with no permissions.
    if is_root() {
        sb.start_as(65534, 65534);
    } else {
        sb.start();
    }
    place_unreadable(
        &sb.spool().join("locked.csv"),
        batch_csv("LK", 1, 1).as_bytes(),
    );
    place_unreadable(&outbox.join("locked_result.xml"), b"<ACK/>");

    // Tried at three scans (rescan_secs = 1), then set aside with a report naming the error.
    let job = || job_named(&sb.try_store()?, "locked.csv");
    wait_for(30, "the unreadable file set aside", || {
        job().is_some_and(|j| j.state == JobState::Rejected && j.final_path.is_some())
    });
    let turnbridge::store::Job {
        id,
        final_path,
        read_failures,
        ..
    } = job().unwrap();
    assert_eq!(read_failures, 3, "counted as failed reads");
    let final_path = std::path::PathBuf::from(final_path.unwrap());
    assert_eq!(final_path, sb.rejected().join(format!("{id}_locked.csv")));
    assert!(final_path.exists(), "moved out of work/");
    assert!(files_in(&sb.work()).is_empty());
    let report =
        std::fs::read_to_string(sb.rejected().join(format!("{id}_locked.csv.error.txt"))).unwrap();
    for words in [
        "locked.csv",
        "could not read this file in 3 attempts",
        "Permission denied",
    ] {
        assert!(report.contains(words), "{words:?} not in\n{report}");
    }
    let retries = |log: &str| {
        log.lines()
            .filter(|l| l.contains("file left for a retry") && l.contains("locked.csv"))
            .count()
    };
    assert_eq!(retries(&sb.log()), 2, "{}", sb.log());
    // Not tried again: several rescans later the log says nothing more about it.
    std::thread::sleep(std::time::Duration::from_millis(3000));
    assert_eq!(retries(&sb.log()), 2);

    // The unreadable result file is a feedback problem naming it and the error.
    let problem = wait_for_problem(&sb, "feedback", "locked_result.xml");
    assert!(
        problem.contains("cannot be read") && problem.contains("Permission denied"),
        "{problem}"
    );
    // Other files flow as ever, and the e-invoice side has no problem left.
    sb.drop_file("good.csv", batch_csv("OK", 1, 2).as_bytes());
    wait_for(20, "the good file's XML", || sb.inbox_files().len() == 2);
    wait_for(20, "no e-invoice problem", || {
        problems(&sb)
            .iter()
            .all(|(c, _)| !c.starts_with("einvoice"))
    });
    assert_alive(&mut sb);
    assert_eq!(sb.terminate().code(), Some(0));
}

#[test]
fn an_unreadable_nextengine_spool_file_is_set_aside_after_three_attempts() {
    let fake = FakeNextEngine::start();
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[nextengine]\nclient_id = \"client-1\"\n\
         client_secret = \"client-secret-1\"\napi_base = \"{}\"\npoll_ms = 100\n",
        fake.base()
    );
    let mut sb = Sandbox::with_sections("", &tail);
    let dir = sb.path().join("spool/nextengine/stock");
    std::fs::create_dir_all(&dir).unwrap();
    if is_root() {
        sb.start_as(65534, 65534);
    } else {
        sb.start();
    }
    let r = nextengine_sign_in(&sb, "u1", "s1");
    assert_eq!(r.status, 200, "{}", r.text());
    place_unreadable(&dir.join("levels.csv"), b"syohin_code,stock\nTEST_0001,5\n");
    let state = || -> Option<NeJobState> {
        let db = turnbridge::store::open_read_only(&sb.state().join("turnbridge.db")).ok()?;
        let jobs = ne_jobs::list(&db).ok()?;
        jobs.into_iter()
            .find(|j| j.source_name == "levels.csv")
            .map(|j| j.state)
    };
    wait_for(30, "the unreadable file set aside", || {
        state() == Some(NeJobState::Rejected)
    });
    let report = files_in(&sb.rejected())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("_levels.csv.error.txt"))
        .expect("a report");
    let report = std::fs::read_to_string(report).unwrap();
    assert!(
        report.contains("could not read this file in 3 attempts")
            && report.contains("Permission denied"),
        "{report}"
    );
    let retries = |log: &str| {
        log.lines()
            .filter(|l| l.contains("NextEngine job left for a retry") && l.contains("levels.csv"))
            .count()
    };
    assert_eq!(retries(&sb.log()), 2, "{}", sb.log());
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(retries(&sb.log()), 2, "not tried again");
    assert!(fake.state.lock().unwrap().uploads.is_empty());
    assert_alive(&mut sb);
    assert_eq!(sb.terminate().code(), Some(0));
}

#[test]
fn a_spool_file_that_cannot_be_taken_is_reported_once_and_tried_again_when_it_changes() {
    if !is_root() {
        eprintln!("skipped: making a file that cannot be moved (chattr +i) needs root");
        return;
    }
    let mut sb = Sandbox::new();
    std::fs::create_dir_all(sb.spool()).unwrap();
    let stuck = sb.spool().join("stuck.csv");
    std::fs::write(&stuck, batch_csv("ST", 1, 1)).unwrap();
    // An immutable file cannot be renamed, not even by root: the claim fails every time.
    let chattr = |flag: &str| {
        let ok = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&stuck)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chattr {flag}");
    };
    struct Unlock(std::path::PathBuf);
    impl Drop for Unlock {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
    }
    chattr("+i");
    let _unlock = Unlock(stuck.clone());
    sb.start();
    let problem = wait_for_problem(&sb, "einvoice spool files", "stuck.csv");
    assert!(
        problem.contains("not tried again until it changes"),
        "{problem}"
    );
    let reports = || -> Vec<std::path::PathBuf> {
        files_in(&sb.rejected())
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with("_stuck.csv.error.txt"))
            .collect()
    };
    assert_eq!(reports().len(), 1);
    let report = std::fs::read_to_string(&reports()[0]).unwrap();
    assert!(
        report.contains("could not take this file from the spool in 3 attempts")
            && report.contains("Operation not permitted"),
        "{report}"
    );
    let retries = |log: &str| {
        log.lines()
            .filter(|l| l.contains("file left for a retry") && l.contains("stuck.csv"))
            .count()
    };
    assert_eq!(retries(&sb.log()), 2, "{}", sb.log());
    // Not tried again while it stays as it is (the spool is scanned every second).
    std::thread::sleep(std::time::Duration::from_millis(3000));
    assert_eq!(retries(&sb.log()), 2);
    assert_eq!(reports().len(), 1, "reported once");
    assert!(stuck.exists(), "left where it is");

    // The operator's fix changes the file: it is taken as any other.
    chattr("-i");
    wait_for(20, "its XML", || sb.inbox_files().len() == 1);
    wait_for_no_problems(&sb);
    assert_eq!(sb.terminate().code(), Some(0));
}

#[test]
fn an_unreadable_resumed_file_whose_invoices_were_recorded_is_set_aside_and_they_are_sent() {
    use std::os::unix::fs::PermissionsExt;
    let mut sb = Sandbox::new();
    std::fs::create_dir_all(sb.inbox()).unwrap();
    // Permissions must really refuse the daemon: as root it runs as `nobody`, so that mode
    // bits apply to it (the owner of a file with no permissions cannot read it either).
    let start = |sb: &mut Sandbox| {
        if is_root() {
            sb.start_as(65534, 65534);
        } else {
            sb.start();
        }
    };
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    start(&mut sb);
    // The inbox refuses the XML: the file's invoices are recorded, not sent, and it stays
    // claimed in work/.
    mode(&sb.inbox(), 0o555);
    sb.drop_file("resumed.csv", batch_csv("RS", 1, 3).as_bytes());
    wait_for_problem(&sb, "einvoice", "resumed.csv");
    let store = sb.store();
    let job = job_named(&store, "resumed.csv").unwrap();
    assert_eq!(job.state, JobState::Claimed);
    let recorded = turnbridge::store::messages::of_job(&store, &job.id).unwrap();
    assert_eq!(recorded.len(), 3);
    assert!(recorded.iter().all(|m| m.state == MessageState::Validated));
    drop(store);
    assert_eq!(sb.terminate().code(), Some(0));

    // Before the restart the claimed file becomes unreadable, and the inbox writable again.
    let work = files_in(&sb.work());
    assert_eq!(work.len(), 1, "{work:?}");
    mode(&work[0], 0o000);
    mode(&sb.inbox(), 0o755);
    start(&mut sb);
    // The XML is linked into the inbox before the job is finished and its file archived:
    // wait for the end of the job, not for its files.
    wait_for(
        30,
        "the recorded invoices sent and the job finished",
        || {
            sb.try_store()
                .and_then(|s| job_named(&s, "resumed.csv"))
                .is_some_and(|j| j.state == JobState::Done)
                && files_in(&sb.work()).is_empty()
        },
    );
    assert_inbox_holds(&sb, "RS", 3);
    let job = job_named(&sb.store(), "resumed.csv").unwrap();
    assert_eq!((job.state, job.read_failures), (JobState::Done, 3));
    let id = job.id;
    let report =
        std::fs::read_to_string(sb.rejected().join(format!("{id}_resumed.csv.error.txt"))).unwrap();
    for words in [
        "could not read this file in 3 attempts",
        "Permission denied",
        "The 3 invoice(s) recorded before the error are sent to Turnkey",
    ] {
        assert!(report.contains(words), "{words:?} not in\n{report}");
    }
    // The source is kept in the archive (for the operator to correct and drop again).
    assert!(
        sb.archived()
            .iter()
            .any(|p| p.to_string_lossy().ends_with(&format!("{id}_resumed.csv"))),
        "{:?}",
        sb.archived()
    );
    assert!(files_in(&sb.work()).is_empty());
    assert_alive(&mut sb);
    assert_eq!(sb.terminate().code(), Some(0));
}
