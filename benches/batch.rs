//! Benchmark: a 999-invoice CSV batch from the spool to durable files in the Turnkey inbox.
//!
//! Runs the real pipeline (read, check, record in SQLite with `synchronous=FULL`, render,
//! stage + fsync, rename + fsync, archive) on temporary folders, and beside it a baseline that
//! only writes, fsyncs and renames the same number of files of the same size. Prints
//! invoices per second for both.
//!
//! `cargo bench --bench batch` (set `ROUNDS` to change the number of batches, default 5).

use std::path::Path;
use std::time::{Duration, Instant};

use turnbridge::config::Config;
use turnbridge::pipeline::Pipeline;

const N: u32 = 999;

fn batch(round: u32) -> String {
    let mut s = String::from(
        "MessageType,InvoiceNumber,InvoiceDate,InvoiceTime,Seller.Identifier,Seller.Name,Seller.Address,Buyer.Identifier,Buyer.Name,InvoiceType,DonateMark,PrintMark,RandomNumber,Item.Description,Item.Quantity,Item.UnitPrice,Item.TaxType,Item.Amount,Item.SequenceNumber,SalesAmount,FreeTaxSalesAmount,ZeroTaxSalesAmount,TaxType,TaxRate,TaxAmount,TotalAmount\n",
    );
    for i in 0..N {
        s.push_str(&format!(
            "F0401,BM{:08},20261126,10:00:00,28080623,台灣好茶股份有限公司,台北市信義區松高路1號,0000000000,消費者,07,0,Y,{:04},鮮奶茶,2,50,1,100,1,100,0,0,1,0.05,0,100\n",
            round * 10_000 + i,
            i
        ));
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn baseline(dir: &Path, size: usize, round: u32) -> Duration {
    let staging = dir.join("base-staging");
    let inbox = dir.join("base-inbox");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    let body = vec![b'x'; size];
    let t = Instant::now();
    for i in 0..N {
        let name = format!("{round}_{i}.xml");
        turnbridge::durable::write_synced(&staging.join(&name), &body).unwrap();
    }
    turnbridge::durable::fsync_dir(&staging).unwrap();
    for i in 0..N {
        let name = format!("{round}_{i}.xml");
        std::fs::rename(staging.join(&name), inbox.join(&name)).unwrap();
    }
    turnbridge::durable::fsync_dir(&inbox).unwrap();
    t.elapsed()
}

fn main() {
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let text =
        "[paths]\nspool = \"spool\"\nstate = \"state\"\n[turnkey]\ninbox = \"turnkey/INBOX\"\n";
    let config = Config::parse(text, dir.path()).unwrap();
    let spool = config.einvoice_spool();
    std::fs::create_dir_all(&spool).unwrap();
    let inbox = dir.path().join("turnkey/INBOX");
    let mut pipeline = Pipeline::open(config).unwrap();

    let mut times = Vec::new();
    let mut base = Vec::new();
    for round in 0..rounds {
        let path = spool.join(format!("bench-{round}.csv"));
        std::fs::write(&path, batch(round)).unwrap();
        let before = std::fs::read_dir(&inbox).unwrap().count();
        let t = Instant::now();
        let outcome = pipeline.take(&path).unwrap();
        let elapsed = t.elapsed();
        assert_eq!(outcome.queued, N as usize, "{outcome:?}");
        assert_eq!(
            std::fs::read_dir(&inbox).unwrap().count(),
            before + N as usize
        );
        let size = std::fs::read_dir(&inbox)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .metadata()
            .unwrap()
            .len() as usize;
        base.push(baseline(dir.path(), size, round));
        times.push(elapsed);
        println!(
            "round {round}: pipeline {:>7.1} ms ({:>6.0} invoices/s), baseline write+fsync+rename {:>7.1} ms",
            elapsed.as_secs_f64() * 1e3,
            N as f64 / elapsed.as_secs_f64(),
            base.last().unwrap().as_secs_f64() * 1e3
        );
    }
    let m = median(times);
    let b = median(base);
    println!(
        "999-invoice batch to durable inbox files: median {:.1} ms = {:.0} invoices/s; baseline {:.1} ms = {:.0} files/s ({:.2}x)",
        m.as_secs_f64() * 1e3,
        N as f64 / m.as_secs_f64(),
        b.as_secs_f64() * 1e3,
        N as f64 / b.as_secs_f64(),
        m.as_secs_f64() / b.as_secs_f64()
    );
}
