//! The daemon against the real Turnkey 3.2.0 (the MOF's own UpCast and Unpack, run headless by
//! `../shared/turnkey/bin/tkrun`): every valid fixture is taken to BAK, a refusal only Turnkey
//! can make (a cross-border seller) comes back with Turnkey's reason, and real ProcessResults
//! from Unpack acknowledge exactly the messages of their uploads.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::*;

/// A seller on Turnkey's cross-border supplier list in this test (no fixture sells as it).
pub(crate) const CROSS_BORDER_SELLER: &str = "04595257";

pub(crate) fn tools() -> PathBuf {
    let bin = root().join("../shared/turnkey/bin");
    assert!(
        bin.join("tkrun").is_file(),
        "the official Turnkey runner is missing at {}: run scripts/install-test-deps",
        bin.display()
    );
    bin
}

/// Runs one tkrun command to its end; panics with its output on failure.
pub(crate) fn tkrun(home: &Path, args: &[&str]) -> String {
    let out = Command::new(tools().join("tkrun"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env("TKRUN_BUILD", root().join("target/turnkey-runner"))
        .output()
        .expect("run tkrun (scripts/install-test-deps builds it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tkrun {args:?} failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `tkrun watch`, stopped (and killed if it does not stop) when dropped.
struct Watch {
    child: Option<Child>,
    home: PathBuf,
    log: PathBuf,
}

impl Watch {
    fn start(home: &Path, reports: &Path, log: &Path) -> Watch {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(tools().join("tkrun"))
            .arg("--home")
            .arg(home)
            .args([
                "watch",
                "--interval",
                "1",
                "--cross-list",
                CROSS_BORDER_SELLER,
            ])
            .arg("--report-dir")
            .arg(reports)
            .env("TKRUN_BUILD", root().join("target/turnkey-runner"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start tkrun watch");
        let w = Watch {
            child: Some(child),
            home: home.to_path_buf(),
            log: log.to_path_buf(),
        };
        wait_for(90, "TKRUN-WATCH-READY", || {
            w.output().contains("TKRUN-WATCH-READY")
        });
        w
    }

    fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Asks watch to stop and waits for it.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        std::fs::write(self.home.join("tkrun.stop"), "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if c.try_wait().unwrap().is_some() {
                assert!(
                    self.output().contains("TKRUN-WATCH-STOPPED"),
                    "{}",
                    self.output()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe {
            libc::kill(-(c.id() as i32), libc::SIGKILL);
        }
        let _ = c.wait();
        panic!("tkrun watch did not stop");
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    message_type: String,
    number: String,
    state: String,
    mof_code: Option<String>,
    status: Option<String>,
    evidence: Option<String>,
}

fn rows(sb: &Sandbox) -> Vec<Row> {
    use turnbridge::store::messages;
    let Some(conn) = sb.try_store() else {
        return vec![];
    };
    messages::first(&conn, 1000)
        .map(|ms| {
            ms.into_iter()
                .filter_map(|m| {
                    let evidence = messages::transitions_of(&conn, m.id).ok()?.pop()?.evidence;
                    Some(Row {
                        message_type: m.message_type,
                        number: m.number,
                        state: m.state.to_string(),
                        mof_code: m.mof_code,
                        status: m.status_message,
                        evidence,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn row<'a>(all: &'a [Row], ty: &str, number: &str) -> &'a Row {
    all.iter()
        .find(|r| r.message_type == ty && r.number == number)
        .unwrap_or_else(|| panic!("no {ty} {number} in {all:#?}"))
}

/// The messages every valid fixture yields, as "TYPE NUMBER".
fn expected_messages() -> Vec<(String, String)> {
    let outcomes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("outcomes.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for (k, v) in outcomes.as_object().unwrap() {
        if k.starts_with("valid/") {
            for m in v["accepted"].as_array().unwrap() {
                let (t, n) = m.as_str().unwrap().split_once(' ').unwrap();
                out.push((t.to_string(), n.to_string()));
            }
        }
    }
    out
}

/// The document numbers of a pack file (invoices, cancels, voids, allowances and allowance
/// cancels), in pack order (read by the test itself).
fn pack_numbers(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut found: Vec<(usize, String)> = Vec::new();
    for tag in [
        "InvoiceNumber",
        "CancelInvoiceNumber",
        "VoidInvoiceNumber",
        "AllowanceNumber",
        "CancelAllowanceNumber",
    ] {
        let open = format!("<{tag}>");
        for (at, _) in text.match_indices(&open) {
            let rest = &text[at + open.len()..];
            found.push((at, rest.split('<').next().unwrap().to_string()));
        }
    }
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

#[test]
fn pack_numbers_reads_every_kind_of_document_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pack");
    std::fs::write(
        &p,
        "<Allowance><Main><AllowanceNumber>A1</AllowanceNumber></Main><Details><ProductItem><OriginalInvoiceNumber>KZ1</OriginalInvoiceNumber></ProductItem></Details></Allowance>\
         <CancelAllowance><CancelAllowanceNumber>A2</CancelAllowanceNumber></CancelAllowance>\
         <Invoice><Main><InvoiceNumber>KZ2</InvoiceNumber></Main></Invoice>",
    )
    .unwrap();
    assert_eq!(pack_numbers(&p), ["A1", "A2", "KZ2"]);
}

/// `(path, message type, uuid)` of every pack Turnkey left.
fn packs(def: &Path) -> Vec<(PathBuf, String, String)> {
    let mut out = Vec::new();
    for dir in ["Pack/B2SSTORAGE/SRC", "Pack/B2SSTORAGE/BAK"] {
        for p in files_below(&def.join(dir)) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let parts: Vec<&str> = name.rsplitn(5, '_').collect();
            let id = parts[1];
            let ty = id.split('-').nth(1).unwrap().to_string();
            let uuid = id.splitn(5, '-').nth(4).unwrap().to_string();
            out.push((p, ty, uuid));
        }
    }
    out
}

#[test]
fn the_daemon_against_the_real_turnkey() {
    let started = Instant::now();
    let mut sb = Sandbox::new();
    let home = sb.path().join("tk");
    tkrun(&home, &["init"]);
    let def = home.join("EINVTurnkey");
    let reports = sb.path().join("tk-reports");
    let mut watch = Watch::start(&home, &reports, &sb.path().join("tk-watch.log"));

    std::fs::write(
        sb.config_path(),
        "[paths]\nspool = \"spool\"\nstate = \"state\"\n\
         [einvoice]\nsettle_ms = 100\nrescan_secs = 1\n\
         [turnkey]\nlayout = \"turnkey\"\ninbox = \"tk/EINVTurnkey/UpCast/B2SSTORAGE/{message_type}/SRC\"\nrescan_secs = 1\n\
         [log]\nlevel = \"debug\"\nformat = \"text\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    sb.start();

    // 1. Every valid fixture: UpCast takes each file to BAK, each message is picked_up.
    let expected = expected_messages();
    for f in files_in(&root().join("fixtures/valid")) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        sb.drop_file(&name, &std::fs::read(&f).unwrap());
    }
    wait_for(90, "every fixture's message to leave `queued`", || {
        let all = rows(&sb);
        all.len() == expected.len()
            && all
                .iter()
                .all(|r| r.state != "queued" && r.state != "validated")
    });
    let all = rows(&sb);
    // Checked at the end, so the later steps run (and are checked) either way.
    let not_taken: Vec<&Row> = all
        .iter()
        .filter(|r| {
            r.state != "picked_up"
                || !r.evidence.as_deref().is_some_and(|e| {
                    e.contains(&format!("/UpCast/B2SSTORAGE/{}/BAK/", r.message_type))
                        && Path::new(e).is_file()
                })
        })
        .collect();

    // 2. A refusal the daemon cannot foresee: a cross-border seller with a B2B buyer.
    sb.drop_file(
        "cross_border.csv",
        format!(
            "MessageType,CancelInvoiceNumber,InvoiceDate,BuyerId,SellerId,CancelDate,CancelTime,CancelReason\n\
             F0501,ZX00000001,20261126,28080623,{CROSS_BORDER_SELLER},20261127,10:00:00,開立錯誤\n"
        )
        .as_bytes(),
    );
    wait_for(30, "the cross-border cancel to be refused", || {
        rows(&sb)
            .iter()
            .any(|r| r.number == "ZX00000001" && r.state == "error")
    });
    let all = rows(&sb);
    let cross = row(&all, "F0501", "ZX00000001");
    assert!(
        cross
            .status
            .as_deref()
            .unwrap_or("")
            .contains("Cross-border E-Commerce Suppliers Can Not Upload B2B"),
        "Turnkey's reason from its log: {cross:?}"
    );
    assert_eq!(cross.mof_code.as_deref(), Some("7001"), "{cross:?}");
    assert!(
        cross
            .evidence
            .as_deref()
            .unwrap_or("")
            .contains("/UpCast/B2SSTORAGE/F0501/ERR/"),
        "{cross:?}"
    );

    // 3. Real results from Unpack: one F0401 upload with one invoice refused, another upload
    // accepted whole (Code 00000).
    watch.stop();
    let all_packs = packs(&def);
    let (f0401_pack, _, f0401_uuid) = all_packs
        .iter()
        .filter(|(_, ty, _)| ty == "F0401")
        .max_by_key(|(p, _, _)| pack_numbers(p).len())
        .cloned()
        .expect("an F0401 pack");
    let f0401_numbers = pack_numbers(&f0401_pack);
    assert!(
        f0401_numbers.len() >= 2,
        "the largest F0401 upload holds {f0401_numbers:?}"
    );
    let failed = f0401_numbers[1].clone();
    let (other_pack, other_type, other_uuid) = all_packs
        .iter()
        .find(|(_, ty, _)| ty != "F0401")
        .cloned()
        .expect("a pack of another type");
    let other_numbers = pack_numbers(&other_pack);
    tkrun(
        &home,
        &[
            "make-result",
            "--msg-type",
            "F0401",
            "--uuid",
            &f0401_uuid,
            "--fail-invoice",
            &failed,
            "--code",
            "5001",
            "--desc",
            "test rejection",
        ],
    );
    tkrun(
        &home,
        &[
            "make-result",
            "--msg-type",
            &other_type,
            "--uuid",
            &other_uuid,
        ],
    );
    tkrun(&home, &["unpack"]);
    let in_results = |r: &Row| {
        (r.message_type == "F0401" && f0401_numbers.contains(&r.number))
            || (r.message_type == other_type && other_numbers.contains(&r.number))
    };
    wait_for(30, "the results of both uploads to be applied", || {
        rows(&sb)
            .iter()
            .filter(|r| in_results(r))
            .all(|r| r.state == "acked" || r.state == "error")
    });
    let all = rows(&sb);
    for n in &f0401_numbers {
        let r = row(&all, "F0401", n);
        if *n == failed {
            assert_eq!(r.state, "error", "{r:?}");
            assert_eq!(r.mof_code.as_deref(), Some("5001"), "{r:?}");
            assert!(
                r.status.as_deref().unwrap_or("").contains("test rejection"),
                "{r:?}"
            );
            assert!(
                r.evidence
                    .as_deref()
                    .unwrap_or("")
                    .contains("/Unpack/BAK/ProcessResult/"),
                "{r:?}"
            );
        } else {
            assert_eq!(r.state, "acked", "{r:?}");
        }
    }
    for n in &other_numbers {
        assert_eq!(row(&all, &other_type, n).state, "acked");
    }
    // Exactly those: every other message Turnkey took is still only picked up.
    for r in all.iter().filter(|r| !in_results(r) && r.state != "error") {
        assert_eq!(r.state, "picked_up", "not in either upload: {r:?}");
    }
    // Unpack's own verdict, in SEQNO order: the same invoice refused, the rest accepted.
    let sql = tkrun(
        &home,
        &[
            "sql",
            &format!("SELECT SEQNO,STATUS,INVOICE_IDENTIFIER FROM TURNKEY_MESSAGE_LOG WHERE UUID = '{f0401_uuid}' ORDER BY SEQNO"),
        ],
    );
    let statuses: Vec<(String, String)> = sql
        .lines()
        .filter(|l| l.contains("| F0401"))
        .map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            (c[1].to_string(), c[2].to_string())
        })
        .collect();
    assert_eq!(statuses.len(), f0401_numbers.len(), "{sql}");
    for ((status, ident), n) in statuses.iter().zip(&f0401_numbers) {
        assert!(ident.starts_with(&format!("F0401{n}")), "{sql}");
        assert_eq!(status, if *n == failed { "E" } else { "C" }, "{sql}");
    }

    sb.kill();
    assert!(
        not_taken.is_empty(),
        "Turnkey's UpCast did not take every valid fixture to BAK: {not_taken:#?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

/// Relative paths of the files below `def` that a program reads, with the time-dependent
/// parts (date and hour folders, times, uuids) normalized.
fn tree(def: &Path) -> Vec<String> {
    let mut out: Vec<String> = files_below(def)
        .iter()
        .map(|p| p.strip_prefix(def).unwrap().to_string_lossy().into_owned())
        .filter(|p| {
            (p.starts_with("UpCast/") && (p.contains("/BAK/") || p.contains("/ERR/")))
                || p.starts_with("Pack/")
                || p.starts_with("Unpack/BAK/ProcessResult/")
        })
        .map(|p| normalize(&p))
        .collect();
    out.sort();
    out
}

fn normalize(p: &str) -> String {
    p.split('/')
        .map(|seg| {
            if seg.len() == 8 && seg.bytes().all(|b| b.is_ascii_digit()) {
                return "<yyyyMMdd>".to_string();
            }
            if seg.len() == 2 && seg.bytes().all(|b| b.is_ascii_digit()) {
                return "<HH>".to_string();
            }
            // …v41-<MSG>-<yyyyMMdd>-<HHmmssSSS>-<uuid>…
            match seg.find("v41-") {
                Some(i) if seg.len() >= i + 65 => {
                    let (head, rest) = seg.split_at(i + 10);
                    format!("{head}<yyyyMMdd>-<HHmmssSSS>-<uuid>{}", &rest[55..])
                }
                _ => seg.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The `<yyyyMMdd>/<HH>` folders the UpCast BAK and ERR files below `def` are in.
fn hours(def: &Path) -> std::collections::BTreeSet<String> {
    files_below(&def.join("UpCast"))
        .iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(def).unwrap().to_string_lossy().into_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            // UpCast/B2SSTORAGE/<MSG>/{BAK,ERR}/<yyyyMMdd>/<HH>/<name>
            (parts.len() == 7 && (parts[3] == "BAK" || parts[3] == "ERR"))
                .then(|| format!("{}/{}", parts[4], parts[5]))
        })
        .collect()
}

/// Every leaf of a result document as `path=text`, the upload's uuid left out.
fn leaves(xml: &str) -> Vec<String> {
    fn walk(n: &turnbridge::turnkey::results::Node, path: &str, out: &mut Vec<String>) {
        let here = format!("{path}/{}", n.name);
        if n.children.is_empty() {
            let text = if here.ends_with("MessageInfo/Id") {
                "<uuid>"
            } else {
                n.text.trim()
            };
            out.push(format!("{here}={text}"));
        }
        for c in &n.children {
            walk(c, &here, out);
        }
    }
    let mut out = Vec::new();
    walk(
        &turnbridge::turnkey::results::parse_xml(xml.as_bytes()).unwrap(),
        "",
        &mut out,
    );
    out
}

#[test]
fn the_simulator_moves_and_answers_like_the_real_turnkey() {
    use turnbridge::turnkey::simulator::Simulator;
    let samples = root().join("../shared/mig41/official/samples");
    let testdata = root().join("../shared/turnkey/testdata");
    let _ = tools();
    let dir = tempfile::tempdir().unwrap();
    // Two rounds: the second repeats a name (`.001` in BAK) and a refused name (ERR replaces).
    let rounds: [Vec<(&str, PathBuf)>; 2] = [
        vec![
            ("F0401", samples.join("F0401-KZ10000002.xml")),
            ("F0401", samples.join("F0401-KZ10000010.xml")),
            ("F0401", testdata.join("F0401-BAD-empty.xml")),
            ("F0501", samples.join("F0501-KZ10000002.xml")),
            ("F0501", testdata.join("F0501-BAD-truncated.xml")),
        ],
        vec![
            ("F0401", samples.join("F0401-KZ10000002.xml")),
            ("F0501", testdata.join("F0501-BAD-truncated.xml")),
        ],
    ];
    let drop_round = |def: &Path, round: &[(&str, PathBuf)]| {
        let stage = dir.path().join("stage");
        std::fs::create_dir_all(&stage).unwrap();
        let t0 = std::time::SystemTime::now() - Duration::from_secs(60);
        for (i, (ty, f)) in round.iter().enumerate() {
            let name = f.file_name().unwrap();
            let staged = stage.join(name);
            std::fs::copy(f, &staged).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&staged)
                .unwrap()
                .set_modified(t0 + Duration::from_secs(i as u64))
                .unwrap();
            let src = def.join("UpCast/B2SSTORAGE").join(ty).join("SRC");
            std::fs::create_dir_all(&src).unwrap();
            std::fs::rename(&staged, src.join(name)).unwrap();
        }
    };

    // The real runner. Both rounds must fall in one hour (or the second finds no name to
    // suffix): a run that crossed an hour is done again on a fresh home.
    let mut attempt = 0;
    let (home, real) = loop {
        attempt += 1;
        let home = dir.path().join(format!("real{attempt}"));
        tkrun(&home, &["init"]);
        let real = home.join("EINVTurnkey");
        for round in &rounds {
            drop_round(&real, round);
            tkrun(&home, &["upcast"]);
        }
        let h = hours(&real);
        if h.len() == 1 || attempt == 3 {
            assert_eq!(h.len(), 1, "three runs each crossed an hour: {h:?}");
            break (home, real);
        }
    };
    let f0401: Vec<_> = packs(&real)
        .into_iter()
        .filter(|(_, ty, _)| ty == "F0401")
        .collect();
    let f0401_uuid = f0401
        .iter()
        .find(|(p, _, _)| pack_numbers(p).len() == 2)
        .expect("one F0401 upload of both invoices")
        .2
        .clone();
    // The simulated platform answers every upload: so does this one.
    for (_, _, uuid) in f0401.iter().filter(|(_, _, u)| *u != f0401_uuid) {
        tkrun(
            &home,
            &["make-result", "--msg-type", "F0401", "--uuid", uuid],
        );
    }
    tkrun(
        &home,
        &[
            "make-result",
            "--msg-type",
            "F0401",
            "--uuid",
            &f0401_uuid,
            "--fail-invoice",
            "KZ10000010",
            "--code",
            "5001",
            "--desc",
            "rejected by the simulated platform",
        ],
    );
    tkrun(&home, &["make-result", "--msg-type", "F0501"]);
    tkrun(&home, &["unpack"]);

    // The simulator, on the same inputs, in one hour too.
    let mut attempt = 0;
    let sim = loop {
        attempt += 1;
        let sim_root = dir.path().join(format!("sim{attempt}"));
        std::fs::create_dir_all(&sim_root).unwrap();
        let config = turnbridge::config::Config::parse(
            "[paths]\nspool = \"spool\"\nstate = \"state\"\n\
             [turnkey]\nlayout = \"turnkey\"\ninbox = \"EINVTurnkey/UpCast/B2SSTORAGE/{message_type}/SRC\"\n\
             [simulator]\nenabled = true\ndelay_ms = 0\nreject = [\"KZ10000010\"]\n",
            &sim_root,
        )
        .unwrap();
        let sim = sim_root.join("EINVTurnkey");
        let mut simulator = Simulator::new(config);
        for round in &rounds {
            drop_round(&sim, round);
            simulator.step();
        }
        if hours(&sim).len() == 1 || attempt == 3 {
            break sim;
        }
    };

    assert_eq!(tree(&sim), tree(&real), "the same files in the same places");
    // Turnkey.log gives the same reason (and check code) for each refused file.
    let reasons = |def: &Path| -> Vec<(String, Option<String>, Option<String>)> {
        let log = turnbridge::turnkey::tklog::tail(
            &def.join("log/Turnkey.log"),
            turnbridge::turnkey::tklog::MAX_LOG_TAIL,
        );
        let mut v: Vec<_> = files_below(&def.join("UpCast"))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("/ERR/"))
            .map(|p| {
                let r = turnbridge::turnkey::tklog::reason(&log, &p)
                    .map(|r| r.replace(&def.to_string_lossy().into_owned(), "<def>"));
                let code = r.as_deref().and_then(turnbridge::turnkey::tklog::code);
                (
                    normalize(&p.strip_prefix(def).unwrap().to_string_lossy()),
                    r,
                    code,
                )
            })
            .collect();
        v.sort();
        v
    };
    let (sim_reasons, real_reasons) = (reasons(&sim), reasons(&real));
    assert!(
        real_reasons.len() == 2 && real_reasons.iter().all(|(_, r, _)| r.is_some()),
        "a reason for each refused file: {real_reasons:#?}"
    );
    assert_eq!(sim_reasons, real_reasons);
    // The packs hold the same documents in the same order.
    let docs = |def: &Path| -> Vec<(String, Vec<String>)> {
        let mut v: Vec<_> = packs(def)
            .into_iter()
            .map(|(p, ty, _)| (ty, pack_numbers(&p)))
            .collect();
        v.sort();
        v
    };
    assert_eq!(docs(&sim), docs(&real));
    // The ProcessResults say the same, in the same shape.
    let results = |def: &Path| -> Vec<Vec<String>> {
        let mut v: Vec<_> = files_below(&def.join("Unpack/BAK/ProcessResult"))
            .iter()
            .map(|p| leaves(&std::fs::read_to_string(p).unwrap()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(results(&sim), results(&real));
    // The simulator's SummaryResult (the real runner makes none) parses as one.
    let summaries = files_below(&sim.join("Unpack/BAK/SummaryResult"));
    assert!(!summaries.is_empty());
    for s in summaries {
        let parsed = turnbridge::turnkey::results::parse(&std::fs::read(&s).unwrap()).unwrap();
        assert!(matches!(
            parsed,
            turnbridge::turnkey::results::ResultFile::Summary(_)
        ));
    }
}
