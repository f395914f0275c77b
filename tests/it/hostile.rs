//! The hostile-input corpus (`fixtures/hostile/`): one running daemon is fed every file of it
//! — spool batches, Turnkey result files, raw HTTP requests — and each must meet the outcome
//! `fixtures/hostile/outcomes.json` gives it. Afterwards nothing reached the Turnkey inbox,
//! nothing of `/etc/passwd` leaked into any file or answer, and the daemon still takes good
//! input and stops cleanly.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const ADMIN: &str = "hostile-admin-token-0123456789";
const SECRET: &str = "hostile-webhook-secret-0123";
const AUTH_KEY: &str = "aaa";

/// `einvoice.max_file_bytes` for the corpus. It and the ZIP limits below are smaller than the
/// defaults so the bombs stay small files; the checks are the same whatever the numbers.
const MAX_FILE_BYTES: u64 = 16 << 20;

fn einvoice_limits() -> String {
    format!(
        "max_file_bytes = {MAX_FILE_BYTES}\n\
         [einvoice.zip]\nmax_members = 100\nmax_member_bytes = 1048576\nmax_total_bytes = 4194304\n"
    )
}

fn manifest() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(fixture("hostile/outcomes.json")).unwrap();
    let mut map: BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
    map.remove("_comment");
    map
}

fn is_generated(v: &Value) -> bool {
    v.get("generated").is_some()
}

fn name_of(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap()
}

fn is_regular(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
}

/// A hidden name beside `dest`, which no watcher takes.
fn hidden(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap().to_string_lossy();
    dest.with_file_name(format!(".{name}.tmp"))
}

/// Writes under a hidden name, then renames, as a careful writer does.
fn place(dest: &Path, bytes: &[u8]) {
    std::fs::write(hidden(dest), bytes).unwrap();
    std::fs::rename(hidden(dest), dest).unwrap();
}

/// A file of `len` bytes that takes no disk space (and no time to write).
fn place_sparse(dest: &Path, len: u64) {
    std::fs::File::create(hidden(dest))
        .unwrap()
        .set_len(len)
        .unwrap();
    std::fs::rename(hidden(dest), dest).unwrap();
}

/// Builds a fixture the manifest marks `generated` (too big, or not a plain file) at `dest`.
fn generate(rel: &str, dest: &Path) {
    let valid = std::fs::read_to_string(fixture("valid/F0401_b2c_print.csv")).unwrap();
    let header = valid.lines().next().unwrap();
    let row = valid.lines().nth(1).unwrap();
    match rel {
        "spool/huge_field.csv" => {
            let field = "x".repeat(10 << 20);
            place(
                dest,
                format!("{header}\n{}\n", row.replace("鮮奶茶", &field)).as_bytes(),
            );
        }
        "spool/many_columns.csv" => {
            place(
                dest,
                format!("{header}\n{}\n", ["x"; 100_000].join(",")).as_bytes(),
            );
        }
        "spool/oversize.csv" => place_sparse(dest, MAX_FILE_BYTES + 1),
        "feedback/oversize.xml" => {
            place_sparse(dest, turnbridge::turnkey::results::MAX_RESULT_BYTES + 1)
        }
        "feedback/huge_attribute.xml" => {
            let attr = "x".repeat(4 << 20);
            place(
                dest,
                format!("<ACK note=\"{attr}\"><ReceiptNo>R-1</ReceiptNo></ACK>\n").as_bytes(),
            );
        }
        "spool/symlink_to_passwd.csv" | "feedback/symlink_to_passwd.xml" => {
            std::os::unix::fs::symlink("/etc/passwd", dest).unwrap()
        }
        "spool/fifo.csv" | "feedback/fifo.xml" => {
            let c = std::ffi::CString::new(dest.to_string_lossy().as_bytes()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
        }
        "spool/directory.csv" => std::fs::create_dir(dest).unwrap(),
        other => panic!("{other} is marked generated but has no recipe here"),
    }
}

/// Fills a template's placeholders: `{CANARY}` (an address that must never be contacted),
/// `{TS}` (a fresh NextEngine timestamp), `{SIG}` / `{SIG:k=v&…}` (the signature of the
/// request's own StoreAccount, Code, Stock and ts, or of those with some values replaced).
fn fill(template: &[u8], canary: SocketAddr) -> Vec<u8> {
    let mut out = replace(template, b"{CANARY}", canary.to_string().as_bytes());
    out = replace(&out, b"{TS}", ts_ahead(24).as_bytes());
    while let Some(start) = find(&out, b"{SIG") {
        let end = start + find(&out[start..], b"}").expect("a closed {SIG…}");
        let overrides = pairs(out[start + 4..end].strip_prefix(b":").unwrap_or(b""));
        let target_end = find(&out, b" HTTP/1.1").expect("a request line");
        let query_start = find(&out, b"?").expect("a query") + 1;
        let mut values = pairs(&out[query_start..target_end]);
        values.extend(overrides);
        let get = |k: &str| values.get(k.as_bytes()).cloned().unwrap_or_default();
        let sig = sign(
            get("StoreAccount"),
            get("Code"),
            get("Stock"),
            get("ts"),
            AUTH_KEY,
        );
        out.splice(start..=end, sig.into_bytes());
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// `a=1&b=%FF` into decoded byte pairs (the last value of a key wins).
fn pairs(q: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let decode = |s: &[u8]| {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
            match (s[i], hex) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b'+', _) => {
                    out.push(b' ');
                    i += 1;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    };
    q.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let eq = p.iter().position(|&b| b == b'=').unwrap_or(p.len());
            (decode(&p[..eq]), decode(p.get(eq + 1..).unwrap_or(b"")))
        })
        .collect()
}

/// Sends raw bytes on a new connection and reads all that comes back. The server may answer
/// (and close) before reading everything, so write errors are not failures.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf
}

/// Status codes of the responses in `raw`, read one after another by their Content-Length;
/// a second one would mean a smuggled request was answered.
fn statuses(raw: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let r = parse_response(rest);
        out.push(r.status);
        let head = rest.len() - r.body.len();
        let len = r
            .header("content-length")
            .map_or(r.body.len(), |v| v.parse().unwrap());
        rest = &rest[(head + len).min(rest.len())..];
    }
    out
}

/// The expectations of an `http` entry, one per send: `status` (null: closed unanswered),
/// `processed` for UpdateStock replies, `code` for JSON errors.
fn per_send<'a>(want: &'a Value, key: &str) -> Vec<Option<&'a Value>> {
    let sends = want["status"].as_array().map_or(1, Vec::len);
    match want.get(key) {
        None => vec![None; sends],
        Some(Value::Array(a)) => a.iter().map(Some).collect(),
        Some(v) => vec![Some(v); sends],
    }
}

/// Text that only the real `/etc/passwd` holds: found anywhere, it leaked.
fn passwd_needles() -> Vec<String> {
    let mut v = vec!["root:x:0:0".to_string()];
    if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
        v.extend(
            text.lines()
                .filter(|l| l.len() >= 12)
                .take(3)
                .map(str::to_string),
        );
    }
    v
}

/// The job a spool file became: id, state, final path.
fn job_of(sb: &Sandbox, name: &str) -> Option<(String, String, Option<String>)> {
    let j = job_named(&sb.try_store()?, name)?;
    Some((j.id, j.state.to_string(), j.final_path))
}

#[test]
fn every_hostile_input_meets_its_outcome_and_the_daemon_keeps_working() {
    let started = std::time::Instant::now();
    let manifest = manifest();

    // The corpus and the manifest name the same files (generated ones are not on disk).
    let root = fixture("hostile");
    let mut on_disk: Vec<String> = files_below(&root)
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| p != "outcomes.json")
        .collect();
    on_disk.sort();
    let committed: Vec<String> = manifest
        .iter()
        .filter(|(_, v)| !is_generated(v))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        on_disk, committed,
        "fixtures/hostile and its outcomes.json must list the same files"
    );
    // Every entry says something this test checks (a typo would otherwise check nothing).
    for (rel, v) in &manifest {
        let outcomes: &[&str] = match rel.split('/').next().unwrap() {
            "spool" => &["rejected", "rows_rejected", "ignored"],
            "feedback" => &["quarantined", "ignored"],
            "http" => {
                assert!(v.get("status").is_some(), "{rel}: no status");
                continue;
            }
            other => panic!("{rel}: unknown kind {other}"),
        };
        let outcome = v["outcome"].as_str().unwrap_or_default();
        assert!(outcomes.contains(&outcome), "{rel}: outcome {outcome:?}");
        assert!(
            outcome == "ignored" || v["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{rel}: no reason"
        );
    }

    // A canary the corpus points external entities at: nothing may ever connect to it.
    let canary = TcpListener::bind("127.0.0.1:0").unwrap();
    let canary_addr = canary.local_addr().unwrap();

    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\nmax_body_bytes = 4096\nheader_timeout_ms = 1000\nrequest_timeout_ms = 5000\n\
         [nextengine]\nts_max_age_secs = 3600\n[[nextengine.shops]]\nstore_account = \"samplestore\"\nauth_key = \"{AUTH_KEY}\"\n\
         [company_webhook]\nsecret = \"{SECRET}\"\n"
    );
    let mut sb = Sandbox::with_sections(&einvoice_limits(), &tail);
    // Feedback folders rescanned every second too, so a wait of seconds covers several scans;
    // a result that does not parse is set aside once it has stayed the same for a second.
    let text = std::fs::read_to_string(sb.config_path()).unwrap().replace(
        "[turnkey]\n",
        "[turnkey]\nrescan_secs = 1\nresult_unchanged_ms = 1000\n",
    );
    assert!(
        text.contains("rescan_secs = 1\nresult_unchanged_ms = 1000\ninbox"),
        "{text}"
    );
    std::fs::write(sb.config_path(), text).unwrap();
    let outbox = sb.path().join("turnkey/OUTBOX");
    std::fs::create_dir_all(&outbox).unwrap();
    sb.start();
    let addr = sb.http_addr();
    let pid = sb.child.as_ref().unwrap().id();

    // Feed every spool and feedback file at once.
    for (rel, v) in &manifest {
        let dest = match rel.split('/').next().unwrap() {
            "spool" => sb.spool().join(name_of(rel)),
            "feedback" => outbox.join(name_of(rel)),
            _ => continue,
        };
        if is_generated(v) {
            generate(rel, &dest);
        } else {
            let bytes = std::fs::read(fixture(&format!("hostile/{rel}"))).unwrap();
            let bytes = if v["template"] == true {
                fill(&bytes, canary_addr)
            } else {
                bytes
            };
            place(&dest, &bytes);
        }
    }

    // While the daemon works through them, every raw request, each on its own connection.
    let mut answers = Vec::new();
    let mut accepted_stock = 0;
    for (rel, want) in manifest.iter().filter(|(k, _)| k.starts_with("http/")) {
        let bytes = std::fs::read(fixture(&format!("hostile/{rel}"))).unwrap();
        let bytes = if want["template"] == true {
            fill(&bytes, canary_addr)
        } else {
            bytes
        };
        let expected: Vec<Option<u16>> = match &want["status"] {
            Value::Array(a) => a.iter().map(|s| s.as_u64().map(|n| n as u16)).collect(),
            s => vec![s.as_u64().map(|n| n as u16)],
        };
        let processed_want = per_send(want, "processed");
        let code_want = per_send(want, "code");
        for (i, status) in expected.iter().enumerate() {
            let raw = exchange(addr, &bytes);
            let got = statuses(&raw);
            match status {
                None => assert!(
                    got.is_empty(),
                    "{rel}: expected the connection to close unanswered, got {:?}",
                    String::from_utf8_lossy(&raw)
                ),
                Some(s) => {
                    assert_eq!(
                        got,
                        vec![*s],
                        "{rel} (send {}): {}",
                        i + 1,
                        String::from_utf8_lossy(&raw)
                    );
                    let r = parse_response(&raw);
                    if let Some(p) = processed_want[i] {
                        assert_eq!(processed(&r.body), p.as_str().unwrap(), "{rel}");
                    }
                    if let Some(c) = code_want[i] {
                        assert_eq!(r.json()["code"], *c, "{rel}: {}", r.text());
                    }
                    if *s == 200 && rel.contains("updatestock") {
                        accepted_stock += 1;
                    }
                }
            }
            answers.push(raw);
        }
    }
    assert_eq!(
        http_get(addr, "/healthz", &[]).status,
        200,
        "alive after the requests"
    );

    // Every spool file that is taken ends finished, its source parked.
    let taken: Vec<(&String, &Value)> = manifest
        .iter()
        .filter(|(k, v)| k.starts_with("spool/") && v["outcome"] != "ignored")
        .collect();
    wait_for(60, "every hostile spool file to be finished", || {
        taken.iter().all(|(rel, _)| {
            job_of(&sb, name_of(rel)).is_some_and(|(_, state, path)| {
                state != "claimed" && path.is_some_and(|p| Path::new(&p).exists())
            })
        })
    });
    for (rel, want) in &taken {
        let name = name_of(rel);
        let (id, state, final_path) = job_of(&sb, name).unwrap();
        let final_path = PathBuf::from(final_path.unwrap());
        let reason = want["reason"].as_str().unwrap();
        let report = sb.rejected().join(format!("{id}_{name}.error.txt"));
        let text = std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("{rel}: no report {}: {e}", report.display()));
        assert!(text.contains(reason), "{rel}: {reason:?} not in\n{text}");
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(sb.rejected().join(format!("{id}_{name}.error.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["accepted"], 0, "{rel}: {json}");
        match want["outcome"].as_str().unwrap() {
            "rejected" => {
                assert_eq!(state, "rejected", "{rel}");
                assert_eq!(
                    final_path,
                    sb.rejected().join(format!("{id}_{name}")),
                    "{rel}"
                );
            }
            "rows_rejected" => {
                assert_eq!(state, "done", "{rel}");
                assert!(
                    final_path.starts_with(sb.state().join("archive")),
                    "{rel}: {}",
                    final_path.display()
                );
            }
            other => panic!("{rel}: unknown spool outcome {other}"),
        }
        // Nothing is lost: the source is kept as it came.
        let original = if is_generated(want) {
            None
        } else {
            Some(std::fs::read(fixture(&format!("hostile/{rel}"))).unwrap())
        };
        if let Some(original) = original {
            assert!(
                std::fs::read(&final_path).unwrap() == original,
                "{rel}: kept bytes differ"
            );
        } else {
            assert!(is_regular(&final_path), "{rel}: kept");
        }
    }

    // Every result file that is read ends in the rejected folder with a report and a log line.
    let feedback_rejected = sb.state().join("rejected/feedback");
    let kept = |name: &str| -> Option<PathBuf> {
        files_in(&feedback_rejected).into_iter().find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.len() > 9 && n.as_bytes()[8] == b'_' && n[9..] == *name
        })
    };
    let quarantined: Vec<(&String, &Value)> = manifest
        .iter()
        .filter(|(k, v)| k.starts_with("feedback/") && v["outcome"] == "quarantined")
        .collect();
    wait_for(30, "every hostile result file to be set aside", || {
        quarantined.iter().all(|(rel, _)| {
            kept(name_of(rel)).is_some_and(|p| {
                p.with_file_name(format!(
                    "{}.error.txt",
                    p.file_name().unwrap().to_string_lossy()
                ))
                .exists()
            })
        })
    });
    let log = sb.log();
    for (rel, want) in &quarantined {
        let name = name_of(rel);
        let reason = want["reason"].as_str().unwrap();
        let path = kept(name).unwrap();
        let report = std::fs::read_to_string(path.with_file_name(format!(
            "{}.error.txt",
            path.file_name().unwrap().to_string_lossy()
        )))
        .unwrap();
        assert!(
            report.contains(reason),
            "{rel}: {reason:?} not in\n{report}"
        );
        assert!(!outbox.join(name).exists(), "{rel}: left the outbox");
        if !is_generated(want) && want["template"] != true {
            assert!(
                std::fs::read(&path).unwrap()
                    == std::fs::read(fixture(&format!("hostile/{rel}"))).unwrap(),
                "{rel}: kept bytes differ"
            );
        }
        let logged = log.lines().any(|l| {
            l.contains("result file rejected")
                && l.contains(&format!("OUTBOX/{name}"))
                && l.contains(reason)
        });
        assert!(logged, "{rel}: no log line naming it and {reason:?}");
    }

    // What is not a regular file is never opened: it stays where it is, unrecorded. Both
    // folders are rescanned every second; two scans are waited for first.
    std::thread::sleep(Duration::from_millis(2500));
    for (rel, _) in manifest.iter().filter(|(_, v)| v["outcome"] == "ignored") {
        let name = name_of(rel);
        let here = if rel.starts_with("spool/") {
            sb.spool().join(name)
        } else {
            outbox.join(name)
        };
        assert!(
            std::fs::symlink_metadata(&here).is_ok(),
            "{rel}: should be left in place"
        );
        assert!(job_of(&sb, name).is_none(), "{rel}: became a job");
        let record = turnbridge::store::feedback::kind_of(&sb.store(), &here).unwrap();
        assert_eq!(record, None, "{rel}: was read as feedback");
    }

    // Nothing from hostile input reached Turnkey or the stores.
    assert!(
        sb.inbox_files().is_empty(),
        "files in the inbox: {:?}",
        sb.inbox_files()
    );
    assert!(files_below(&sb.state().join("staging")).is_empty());
    assert!(files_in(&sb.work()).is_empty(), "work/ is empty");
    assert!(turnbridge::store::messages::first(&sb.store(), 1)
        .unwrap()
        .is_empty());
    assert_eq!(stored_pushes(&sb).0, 0);
    assert_eq!(
        turnbridge::store::endpoints::list(&sb.store())
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        stored_levels(&sb),
        accepted_stock,
        "only the signed, fresh, first-time callback is stored"
    );
    canary.set_nonblocking(true).unwrap();
    assert!(
        canary.accept().is_err(),
        "something fetched the external entity"
    );

    // Nothing of /etc/passwd anywhere: files (reports, logs, database and its WAL), answers.
    let needles = passwd_needles();
    for p in files_below(sb.path()).into_iter().filter(|p| is_regular(p)) {
        let bytes = std::fs::read(&p).unwrap();
        for n in &needles {
            assert!(
                find(&bytes, n.as_bytes()).is_none(),
                "{} holds /etc/passwd text {n:?}",
                p.display()
            );
        }
    }
    for raw in &answers {
        for n in &needles {
            assert!(find(raw, n.as_bytes()).is_none(), "an answer leaked {n:?}");
        }
    }

    // Input cannot write escape codes or lines of its own into a report or the log, nor make
    // a report as big as itself (a 10 MB field is shown cut; the rows file keeps it whole).
    let reports = files_below(&sb.rejected())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".error.txt"));
    for p in reports.map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())) {
        assert!(p.1.len() < 64 << 10, "{}: {} bytes", p.0, p.1.len());
        assert!(!p.1.contains(&0x1b), "{}: an escape code", p.0);
        let text = String::from_utf8_lossy(&p.1);
        assert!(
            !text.lines().any(|l| l.starts_with("FORGED")),
            "{}: {text}",
            p.0
        );
    }
    let log = sb.log();
    assert!(!log.contains('\x1b'), "an escape code in the log");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged log line"
    );

    // Still running, without a panic or a file stuck in a retry loop.
    assert!(
        sb.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the daemon exited:\n{}",
        sb.log()
    );
    let log = sb.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("left for a retry"), "{log}");

    // And still does its work: a good batch, a good callback, a good webhook.
    let good = std::fs::read(fixture("valid/F0401_b2c_print.csv")).unwrap();
    sb.drop_file("after-the-storm.csv", &good);
    wait_for(20, "the good file's XML", || sb.inbox_files().len() == 1);
    let ts = ts_ahead(24);
    let sig = sign("samplestore", "sku-good", "3", &ts, AUTH_KEY);
    let r = http_get(
        addr,
        &format!(
            "/UpdateStock.php?StoreAccount=samplestore&Code=sku-good&Stock=3&ts={ts}&.sig={sig}"
        ),
        &[],
    );
    assert_eq!((r.status, processed(&r.body)), (200, "0".to_string()));
    let r = http_post(
        addr,
        "/api/sync/company/webhook",
        &[("X-Webhook-Secret", SECRET)],
        br#"{"type":"inventory.updated","inventory":{"productId":"sku-good","quantity":3}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A corpus this size must not cost the daemon much memory: the largest inputs are 10 MB.
    let peak = peak_rss_kib(pid);
    eprintln!(
        "peak resident memory {} MiB, corpus run in {:?}",
        peak / 1024,
        started.elapsed()
    );
    assert!(peak < 256 * 1024, "peak resident memory {peak} KiB");
    assert_eq!(sb.terminate().code(), Some(0), "a clean stop after it all");
}

#[test]
fn responses_are_counted_one_after_another() {
    let one = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
    assert_eq!(statuses(one), vec![400]);
    let smuggled = [&one[..], b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"].concat();
    assert_eq!(statuses(&smuggled), vec![400, 200]);
    assert!(statuses(b"").is_empty());
}

/// Text that would forge a log or report line and clear the operator's terminal.
const FORGE: &str = "\nFORGED line\x1b[2J";

/// No escape code, and no line of `text` begins with the forged words.
fn assert_nothing_forged(what: &str, text: &str) {
    assert!(
        !text.contains('\x1b'),
        "{what}: an escape code in\n{text:?}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "{what}: a forged line in\n{text}"
    );
}

#[test]
fn outside_text_is_shown_escaped_in_reports_history_and_the_log() {
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n[company_webhook]\nsecret = \"{SECRET}\"\n"
    );
    let mut sb = Sandbox::with_sections("", &tail);
    let text = std::fs::read_to_string(sb.config_path())
        .unwrap()
        .replace("[turnkey]\n", "[turnkey]\nrescan_secs = 1\n");
    std::fs::write(sb.config_path(), text).unwrap();
    sb.start();
    let addr = sb.http_addr();

    // A spool file named with a newline and an escape code: one good row, one bad.
    let name = format!("hostile{FORGE}.csv");
    let good = batch_csv("HX", 1, 1);
    sb.drop_file(&name, format!("{good}F0401,HX-BAD\n").as_bytes());
    wait_for(20, "the good row's XML", || sb.inbox_files().len() == 1);
    let xml = sb.inbox_files()[0].clone();
    let message_id = xml.file_stem().unwrap().to_string_lossy().into_owned();
    let state = || -> String {
        turnbridge::store::messages::by_number(&sb.store(), "HX00000001").unwrap()[0]
            .state
            .to_string()
    };
    // Turnkey takes it and answers with an ERROR whose name, code and text carry the same.
    let sent = sb.path().join("turnkey/SENT");
    std::fs::create_dir_all(&sent).unwrap();
    std::fs::rename(&xml, sent.join(xml.file_name().unwrap())).unwrap();
    wait_for(20, "picked up", || state() == "picked_up");
    let outbox = sb.path().join("turnkey/OUTBOX");
    std::fs::create_dir_all(&outbox).unwrap();
    place(
        &outbox.join(format!("ERR{FORGE}.xml")),
        format!(
            "<ERROR><OriginalMessageID>{message_id}</OriginalMessageID><ErrorCode>E1{FORGE}</ErrorCode><ErrorMessage>refused{FORGE}</ErrorMessage></ERROR>"
        )
        .as_bytes(),
    );
    wait_for(20, "the ERROR applied", || state() == "error");
    // A company payload with them, refused and accepted.
    for body in [
        serde_json::json!({"type": format!("inventory{FORGE}"), "inventory": {"productId": "a", "quantity": 1}}),
        serde_json::json!({"type": "inventory.updated", "inventory": {"productId": format!("sku{FORGE}"), "quantity": 3}}),
    ] {
        let r = http_post(
            addr,
            "/api/sync/company/webhook",
            &[("X-Webhook-Secret", SECRET)],
            body.to_string().as_bytes(),
        );
        assert!(r.status < 500, "{}", r.text());
    }

    // `history` shows each outside value escaped: the source name, Turnkey's code and text,
    // the result file's path.
    let history = cli(&sb.config_path(), &["history", "HX00000001"]);
    assert_nothing_forged("history", &history);
    assert!(
        history.matches("\\nFORGED line\\u{1b}[2J").count() >= 4,
        "{history}"
    );
    let status = cli(&sb.config_path(), &["status"]);
    assert_nothing_forged("status", &status);
    // The report on the bad row names the file escaped.
    let reports: Vec<PathBuf> = files_below(&sb.rejected())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".error.txt"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report = std::fs::read_to_string(&reports[0]).unwrap();
    assert_nothing_forged("report", &report);
    assert!(
        report.starts_with("turnbridge: hostile\\nFORGED line\\u{1b}[2J.csv"),
        "{report}"
    );
    // And the log, which names the spool file, the result file and the payloads.
    std::thread::sleep(Duration::from_millis(500));
    let log = sb.log();
    assert_nothing_forged("log", &log);
    assert!(log.contains("hostile\\nFORGED line\\u{1b}[2J.csv"), "{log}");
    assert!(log.contains("ERR\\nFORGED line\\u{1b}[2J.xml"), "{log}");
    assert!(log.contains("inventory\\nFORGED line"), "{log}");
    assert_eq!(sb.terminate().code(), Some(0));
}
