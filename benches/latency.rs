//! Benchmark: how long a single-invoice file takes from the spool to a durable file in the
//! Turnkey inbox, with the real daemon (release binary) running on temporary folders.
//!
//! Two ways of dropping are measured: renamed into the spool (taken at once) and written in
//! place (taken once it has stayed unchanged for `einvoice.settle_ms`, 250 ms by default).
//! The baseline, in the same run: a minimal watcher (the same `notify` crate) that copies
//! each renamed-in file to an inbox with write + fsync + rename + fsync of the folder: the
//! floor for "see a file, make it durable elsewhere".
//!
//! `cargo bench --bench latency` (env: `FILES`, default 200 per way).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use notify::Watcher;

const HEADER: &str = "MessageType,InvoiceNumber,InvoiceDate,InvoiceTime,Seller.Identifier,Seller.Name,Seller.Address,Buyer.Identifier,Buyer.Name,InvoiceType,DonateMark,PrintMark,RandomNumber,Item.Description,Item.Quantity,Item.UnitPrice,Item.TaxType,Item.Amount,Item.SequenceNumber,SalesAmount,FreeTaxSalesAmount,ZeroTaxSalesAmount,TaxType,TaxRate,TaxAmount,TotalAmount\n";

fn one_invoice(i: u32) -> String {
    format!(
        "{HEADER}F0401,LT{i:08},20261126,10:00:00,28080623,台灣好茶股份有限公司,台北市信義區松高路1號,0000000000,消費者,07,0,Y,{:04},鮮奶茶,2,50,1,100,1,100,0,0,1,0.05,0,100\n",
        i % 10000
    )
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |r| r.count())
}

/// Drops a file (by rename or in place) and returns the time until `inbox` has one more.
fn drop_and_wait(spool: &Path, inbox: &Path, name: &str, body: &str, rename: bool) -> Duration {
    let before = count(inbox);
    let t = if rename {
        let tmp = spool.join(format!(".{name}.part"));
        std::fs::write(&tmp, body).unwrap();
        let t = Instant::now();
        std::fs::rename(&tmp, spool.join(name)).unwrap();
        t
    } else {
        let t = Instant::now();
        std::fs::write(spool.join(name), body).unwrap();
        t
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(inbox) <= before {
        assert!(Instant::now() < deadline, "{name} never reached the inbox");
        std::thread::sleep(Duration::from_micros(100));
    }
    t.elapsed()
}

fn percentiles(name: &str, mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).min(v.len()) - 1];
    let (p50, p99) = (at(0.50), at(0.99));
    println!(
        "{name:<44} n={:<4} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        v.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3
    );
    (p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3)
}

/// The baseline's watcher: copies every renamed-in file durably into `inbox`.
fn baseline_watcher(spool: PathBuf, inbox: PathBuf) -> notify::RecommendedWatcher {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = notify::recommended_watcher(tx).unwrap();
    w.watch(&spool, notify::RecursiveMode::NonRecursive)
        .unwrap();
    std::thread::spawn(move || {
        for ev in rx.into_iter().flatten() {
            for p in ev.paths {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with('.') || !p.exists() {
                    continue;
                }
                let bytes = std::fs::read(&p).unwrap();
                let tmp = inbox.join(format!(".{name}.tmp"));
                turnbridge::durable::write_synced(&tmp, &bytes).unwrap();
                std::fs::rename(&tmp, inbox.join(format!("{name}.xml"))).unwrap();
                turnbridge::durable::fsync_dir(&inbox).unwrap();
                std::fs::remove_file(&p).unwrap();
            }
        }
    });
    w
}

fn main() {
    let files: u32 = std::env::var("FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("turnbridge.toml");
    std::fs::write(
        &config,
        "[paths]\nspool = \"spool\"\nstate = \"state\"\n[turnkey]\ninbox = \"turnkey/INBOX\"\n\
         [log]\nlevel = \"warn\"\nformat = \"text\"\n",
    )
    .unwrap();
    let spool = dir.path().join("spool/einvoice");
    let inbox = dir.path().join("turnkey/INBOX");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Warm up: the first file also waits for the daemon to be ready.
    drop_and_wait(&spool, &inbox, "warm.csv", &one_invoice(0), true);

    let mut renamed = Vec::new();
    for i in 1..=files {
        let name = format!("r{i}.csv");
        renamed.push(drop_and_wait(&spool, &inbox, &name, &one_invoice(i), true));
    }
    let mut in_place = Vec::new();
    for i in 1..=files.min(50) {
        let name = format!("w{i}.csv");
        let n = 100_000 + i;
        in_place.push(drop_and_wait(&spool, &inbox, &name, &one_invoice(n), false));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();

    let base_spool = dir.path().join("base/spool");
    let base_inbox = dir.path().join("base/inbox");
    std::fs::create_dir_all(&base_spool).unwrap();
    std::fs::create_dir_all(&base_inbox).unwrap();
    let _w = baseline_watcher(base_spool.clone(), base_inbox.clone());
    let mut base = Vec::new();
    for i in 1..=files {
        let name = format!("b{i}.csv");
        base.push(drop_and_wait(
            &base_spool,
            &base_inbox,
            &name,
            &one_invoice(i),
            true,
        ));
    }

    let (p50, p99) = percentiles("turnbridge, renamed into the spool", renamed);
    percentiles("turnbridge, written in place (settle 250 ms)", in_place);
    let (b50, b99) = percentiles("baseline: watcher + write/fsync/rename", base);
    println!(
        "drop-to-inbox latency: p50 {p50:.2} ms, p99 {p99:.2} ms; baseline p50 {b50:.2} ms, p99 {b99:.2} ms ({:.1}x at p50)",
        p50 / b50
    );
}
