//! The crash suite: the real daemon is SIGKILLed at seeded random moments while batches
//! arrive and webhooks go out, restarted each time, and at the end the promises made to
//! operators are checked:
//!
//! - every accepted invoice has exactly one complete XML file in the Turnkey inbox;
//! - no other name ever appeared in the inbox (a watcher records every name it sees);
//! - every event reached the webhook receiver, each delivery has exactly one recorded
//!   success, and a delivery was only ever received twice when a kill fell in between;
//! - every file with bad rows, and every unusable file, has exactly one report; every
//!   dropped file ends in the archive or the rejected folder.
//!
//! CI runs the short setting. The long one (see README):
//! `TURNBRIDGE_CRASH_ROUNDS=150 cargo test --release --test crash -- --nocapture`.
//! `TURNBRIDGE_CRASH_SEED=<n>` replays a run: the seed decides what is dropped and when
//! each kill falls (where in the daemon's work it lands still depends on timing).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::common::*;
use rand::{Rng, SeedableRng};
use turnbridge::store::deliveries::{self, DeliveryState};
use turnbridge::store::outbox;

const ADMIN: &str = "crash-suite-admin-token";

/// What the suite dropped, so the outcome can be checked against it.
#[derive(Default)]
struct Dropped {
    /// Invoice numbers that must reach the inbox.
    accepted: BTreeSet<String>,
    /// Files with one bad row: name → number of good rows.
    partial: BTreeMap<String, usize>,
    /// Files that cannot be read at all.
    unusable: BTreeSet<String>,
    /// Every file name dropped.
    all: BTreeSet<String>,
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

#[test]
fn seeded_kills_lose_nothing_and_duplicate_nothing() {
    let rounds = setting("TURNBRIDGE_CRASH_ROUNDS", 30);
    let seed = setting(
        "TURNBRIDGE_CRASH_SEED",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    eprintln!("crash suite: {rounds} rounds, TURNBRIDGE_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let rx = Receiver::start(200);
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
         [webhooks]\nallow_private_networks = true\nretry_schedule_ms = [0, 200, 500, 1000]\ntimeout_ms = 5000\npoll_ms = 20\n"
    );
    let mut sb = Sandbox::with_sections("", &tail);
    std::fs::create_dir_all(sb.inbox()).unwrap();
    let observer = Observer::start(&sb.inbox());
    sb.start();
    register_webhook(
        sb.http_addr(),
        ADMIN,
        &format!("http://{}/hook", rx.addr),
        &["*"],
        None,
    );

    let mut dropped = Dropped::default();
    let mut next_number = 1u32;
    let mut kills: Vec<SystemTime> = Vec::new();
    for round in 0..rounds {
        match rng.gen_range(0..10) {
            0..=5 => {
                let n = rng.gen_range(1..=150);
                let mut csv = batch_csv("KR", next_number, n);
                for i in next_number..next_number + n {
                    dropped.accepted.insert(format!("KR{i:08}"));
                }
                next_number += n;
                let name = format!("r{round:03}.csv");
                if rng.gen_bool(0.3) {
                    // One more row whose total does not add up: reported, not sent.
                    let bad = batch_csv("KR", next_number, 1);
                    let row = bad.lines().nth(1).unwrap();
                    csv.push_str(&row.replace(",0,100", ",0,999"));
                    csv.push('\n');
                    next_number += 1;
                    dropped.partial.insert(name.clone(), n as usize);
                }
                sb.drop_file(&name, csv.as_bytes());
                dropped.all.insert(name);
            }
            6 => {
                let name = format!("r{round:03}.json");
                sb.drop_file(&name, br#"{"Messages": [{"MessageType": "F0401", "Main": "#);
                dropped.unusable.insert(name.clone());
                dropped.all.insert(name);
            }
            _ => {}
        }
        // Mostly mid-work, sometimes during start-up itself.
        let wait = if rng.gen_bool(0.2) {
            rng.gen_range(0..40)
        } else {
            rng.gen_range(0..700)
        };
        std::thread::sleep(Duration::from_millis(wait));
        sb.kill();
        kills.push(SystemTime::now());
        sb.start();
    }

    let expected = dropped.accepted.len();
    eprintln!(
        "dropped {} files ({} invoices, {} with a bad row, {} unusable), killed {} times",
        dropped.all.len(),
        expected,
        dropped.partial.len(),
        dropped.unusable.len(),
        kills.len()
    );
    let store = sb.store();
    let all_deliveries =
        || deliveries::list(&store, &deliveries::Filter::default(), i64::MAX).unwrap();
    wait_for(240, "every file taken and every event delivered", || {
        files_in(&sb.spool()).is_empty()
            && files_in(&sb.work()).is_empty()
            && sb.inbox_files().len() >= expected
            && outbox::count_waiting(&store).unwrap() == 0
            && all_deliveries()
                .iter()
                .all(|d| d.state == DeliveryState::Succeeded)
    });
    assert!(sb.terminate().success(), "a clean stop at the end");
    let seen = observer.finish();

    // Exactly one complete file per accepted invoice, and nothing else.
    let mut numbers: BTreeMap<String, usize> = BTreeMap::new();
    for p in sb.inbox_files() {
        let xml = std::fs::read_to_string(&p).unwrap();
        assert!(
            xml.ends_with("</Invoice>\n"),
            "{} is incomplete",
            p.display()
        );
        *numbers.entry(invoice_number(&xml)).or_default() += 1;
    }
    let twice: Vec<_> = numbers.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "invoices written twice: {twice:?}");
    let got: BTreeSet<String> = numbers.into_keys().collect();
    assert_eq!(
        got, dropped.accepted,
        "the inbox holds exactly the accepted invoices"
    );
    let store = sb.store();
    assert_eq!(messages_in(&store, MessageState::Queued), expected);
    assert!(
        files_in(&sb.state().join("staging")).is_empty(),
        "staging is empty"
    );

    // No temporary or half-written name was ever visible to Turnkey.
    let seen: BTreeSet<String> = seen
        .into_iter()
        .filter(|n| !n.starts_with(".turnbridge-probe-"))
        .collect();
    for name in &seen {
        assert!(
            name.starts_with("F0401_") && name.ends_with(".xml"),
            "a name that is not a finished message file appeared in the inbox: {name}"
        );
    }
    assert_eq!(seen.len(), expected, "no name appeared and vanished");

    // Reports: one per file with a bad row and per unusable file, none for clean files.
    let mut reports: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for p in files_in(&sb.rejected()) {
        if p.to_string_lossy().ends_with(".error.json") {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            reports
                .entry(v["file"].as_str().unwrap().to_string())
                .or_default()
                .push(v);
        }
    }
    for (name, good) in &dropped.partial {
        let r = reports
            .get(name)
            .unwrap_or_else(|| panic!("no report for {name}"));
        assert_eq!(r.len(), 1, "one report for {name}: {r:?}");
        assert_eq!(r[0]["accepted"], *good, "{name}");
        assert_eq!(r[0]["rejected"], 1, "{name}");
        assert_eq!(r[0]["problems"][0]["field"], "TotalAmount", "{name}");
    }
    for name in &dropped.unusable {
        let r = reports
            .get(name)
            .unwrap_or_else(|| panic!("no report for {name}"));
        assert_eq!(r.len(), 1, "one report for {name}: {r:?}");
        assert_eq!(r[0]["outcome"], "rejected", "{name}");
    }
    let reported: BTreeSet<&String> = reports.keys().collect();
    let expected_reports: BTreeSet<&String> =
        dropped.partial.keys().chain(&dropped.unusable).collect();
    assert_eq!(
        reported, expected_reports,
        "reports only where something was wrong"
    );

    // Every dropped file is kept: archived, or (unusable) in the rejected folder.
    let kept: Vec<String> = sb
        .archived()
        .iter()
        .chain(files_in(&sb.rejected()).iter())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| !n.contains(".error."))
        .collect();
    for name in &dropped.all {
        let copies = kept
            .iter()
            .filter(|k| k.ends_with(&format!("_{name}")))
            .count();
        let want = if dropped.partial.contains_key(name) {
            2
        } else {
            1
        };
        assert_eq!(
            copies, want,
            "{name} kept (source, plus its rejected rows if any)"
        );
    }

    // Webhooks: every delivery succeeded once on record and reached the receiver; a second
    // receipt of the same delivery only ever follows a kill.
    let delivered: BTreeSet<String> = all_deliveries()
        .into_iter()
        .map(|d| d.delivery_id)
        .collect();
    assert_eq!(
        turnbridge::store::events::count(&store).unwrap() as usize,
        delivered.len(),
        "one delivery per event for the one endpoint"
    );
    assert!(
        events_named(&store, "invoice.status.updated").len() >= expected,
        "a queued event per accepted invoice"
    );
    for id in &delivered {
        let successes = deliveries::attempts(&store, id)
            .unwrap()
            .iter()
            .filter(|a| a.status.is_some_and(|s| (200..300).contains(&s)))
            .count();
        assert_eq!(successes, 1, "{id}: exactly one recorded success each");
    }
    let mut receipts: BTreeMap<String, Vec<SystemTime>> = BTreeMap::new();
    for r in rx.received() {
        let id = r.header("x-turnbridge-delivery-id").unwrap().to_string();
        receipts.entry(id).or_default().push(r.at);
    }
    let received: BTreeSet<String> = receipts.keys().cloned().collect();
    assert_eq!(received, delivered, "every delivery reached the receiver");
    let mut repeats = 0;
    for (id, times) in &receipts {
        for pair in times.windows(2) {
            repeats += 1;
            assert!(
                kills.iter().any(|k| pair[0] < *k && *k < pair[1]),
                "delivery {id} was received twice with no crash in between"
            );
        }
    }
    eprintln!(
        "{} deliveries, {repeats} received again after a kill (at least once, by design)",
        delivered.len()
    );
}
