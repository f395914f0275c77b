//! Outbound webhooks against a throwaway receiver on 127.0.0.1: signatures checked by an
//! independent verifier, the retry schedule and the dead-letter queue, resend, and restarts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::common::*;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use turnbridge::store::deliveries::{self, DeliveryState, Filter, Trigger};
use turnbridge::store::outbox;

const ADMIN: &str = "webhook-test-admin-token";

fn sandbox(schedule: &str) -> Sandbox {
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
         [webhooks]\nallow_private_networks = true\nretry_schedule_ms = {schedule}\ntimeout_ms = 2000\npoll_ms = 20\n"
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    sb
}

fn register(sb: &Sandbox, url: &str, events: &[&str], secret: Option<&str>) -> (String, String) {
    register_webhook(sb.http_addr(), ADMIN, url, events, secret)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn delivery_state(sb: &Sandbox, id: &str) -> Option<DeliveryState> {
    deliveries::get(&sb.store(), id).unwrap().map(|d| d.state)
}

/// The deliveries on record (every state, oldest first).
fn all_deliveries(sb: &Sandbox) -> Vec<deliveries::Delivery> {
    deliveries::list(&sb.store(), &Filter::default(), 100_000).unwrap()
}

/// How many deliveries are in `state`.
fn in_state(sb: &Sandbox, state: DeliveryState) -> usize {
    all_deliveries(sb)
        .iter()
        .filter(|d| d.state == state)
        .count()
}

#[test]
fn deliveries_verify_with_both_signature_schemes() {
    let rx = Receiver::start(200);
    let sb = sandbox("[0, 300, 600, 900]");
    let (_, secret) = register(&sb, &format!("http://{}/hook", rx.addr), &["*"], None);
    assert!(secret.starts_with("whsec_"));
    sb.drop_file("b.csv", batch_csv("WH", 1, 2).as_bytes());
    wait_for(20, "three deliveries", || rx.received().len() >= 3);
    let got = rx.received();
    let mut events = BTreeMap::new();
    for r in &got {
        let id = r.header("x-turnbridge-delivery-id").unwrap();
        let ts = r.header("x-turnbridge-timestamp").unwrap();
        // The seed's scheme: HMAC over the raw body, keyed with the secret string as shown.
        let hex: String = hmac_sha256(secret.as_bytes(), &r.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            r.header("x-turnbridge-signature").unwrap(),
            format!("sha256={hex}")
        );
        // Standard Webhooks: the decoded key over "id.timestamp.body".
        let key = base64::engine::general_purpose::STANDARD
            .decode(&secret["whsec_".len()..])
            .unwrap();
        let mut signed = format!("{id}.{ts}.").into_bytes();
        signed.extend_from_slice(&r.body);
        let want = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, &signed))
        );
        assert_eq!(r.header("webhook-signature").unwrap(), want);
        assert_eq!(r.header("webhook-id").unwrap(), id);
        assert_eq!(r.header("webhook-timestamp").unwrap(), ts);
        let age = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - ts.parse::<i64>().unwrap();
        assert!((0..60).contains(&age), "the timestamp is the attempt's");
        let body = r.json();
        assert_eq!(body["delivery_id"], id);
        assert_eq!(body["event"], r.header("x-turnbridge-event").unwrap());
        assert!(body["timestamp"].is_string() && body.get("tenant_id").is_some());
        assert_eq!(r.header("content-type").unwrap(), "application/json");
        *events
            .entry(body["event"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(events.get("invoice.status.updated"), Some(&2));
    assert_eq!(events.get("upload.completed"), Some(&1));
    let upload = got
        .iter()
        .map(|r| r.json())
        .find(|b| b["event"] == "upload.completed")
        .unwrap();
    assert_eq!(upload["success_count"], 2);
    assert_eq!(upload["error_count"], 0);
    assert!(upload["import_id"].is_string());
    assert!(
        !sb.log().contains(&secret),
        "the secret never reaches the log"
    );
}

#[test]
fn a_failing_receiver_gets_exactly_four_attempts_on_schedule_then_the_dlq_and_a_resend() {
    let rx = Receiver::start(500);
    let mut sb = sandbox("[0, 300, 600, 900]");
    let (endpoint, _) = register(
        &sb,
        &format!("http://{}/hook", rx.addr),
        &["upload.completed"],
        Some("a-shared-secret-of-24-chars!"),
    );
    sb.drop_file("b.csv", batch_csv("DL", 1, 1).as_bytes());
    wait_for(20, "the first attempt", || !rx.received().is_empty());
    let id = rx.received()[0]
        .header("x-turnbridge-delivery-id")
        .unwrap()
        .to_string();
    wait_for(20, "the DLQ", || {
        delivery_state(&sb, &id) == Some(DeliveryState::Dead)
    });
    std::thread::sleep(Duration::from_millis(1200));
    let got = rx.received();
    assert_eq!(got.len(), 4, "exactly four attempts");
    assert!(got
        .iter()
        .all(|r| r.header("x-turnbridge-delivery-id") == Some(id.as_str())));
    for (i, want) in [300u64, 600, 900].iter().enumerate() {
        let gap = got[i + 1].at.duration_since(got[i].at).unwrap();
        assert!(
            gap >= Duration::from_millis(*want),
            "attempt {} came {gap:?} after the one before, before its {want} ms",
            i + 2
        );
    }
    let db = sb.store();
    let d = deliveries::get(&db, &id).unwrap().unwrap();
    assert_eq!((d.attempts, d.last_status), (4, Some(500)));
    let logged = deliveries::attempts(&db, &id).unwrap();
    assert_eq!(logged.len(), 4, "every attempt is logged");
    assert!(logged.iter().all(|a| a.status == Some(500)), "{logged:?}");
    assert!(
        sb.log().contains("dead-letter queue"),
        "an operator alert in the log"
    );

    // The DLQ, from the CLI and the admin API.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(["dlq", "list", "--json", "--config"])
        .arg(sb.config_path())
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["delivery_id"], id);
    assert_eq!(listed[0]["endpoint_id"], endpoint);
    assert_eq!(listed[0]["last_status"], 500);
    assert_eq!(listed[0]["payload"]["event"], "upload.completed");
    let detail = http_get(
        sb.http_addr(),
        &format!("/api/v1/deliveries/{id}"),
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    )
    .json();
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 4);

    // The dead letter is a problem `status` shows, also after a restart.
    let dlq_problem = |sb: &Sandbox| {
        health_problems(sb)
            .iter()
            .any(|(c, p)| *c == format!("webhooks {endpoint}") && p.contains("dead-letter"))
    };
    assert!(dlq_problem(&sb), "{:?}", health_problems(&sb));
    sb.kill();
    sb.start();
    wait_for(20, "the dead letter reported again", || dlq_problem(&sb));

    // Fixed receiver, resend: the same delivery id arrives and succeeds.
    rx.set_status(200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(["dlq", "resend", &id, "--config"])
        .arg(sb.config_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(20, "the resend", || {
        delivery_state(&sb, &id) == Some(DeliveryState::Succeeded)
    });
    let last = rx.received().pop().unwrap();
    assert_eq!(last.header("x-turnbridge-delivery-id"), Some(id.as_str()));
    assert_eq!(last.answered, 200);
    let manual = deliveries::attempts(&sb.store(), &id)
        .unwrap()
        .iter()
        .filter(|a| a.trigger == Trigger::Manual)
        .count();
    assert_eq!(manual, 1);
    wait_for(20, "the problem cleared", || {
        health_problems(&sb).is_empty()
    });
}

#[test]
fn receiver_down_across_a_kill_every_delivery_arrives_once_and_none_early() {
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sb = sandbox("[0, 1500, 3000, 6000]");
    register(&sb, &format!("http://127.0.0.1:{port}/hook"), &["*"], None);
    sb.drop_file("b.csv", batch_csv("KD", 1, 3).as_bytes());
    wait_for(20, "four failed first attempts", || {
        all_deliveries(&sb)
            .iter()
            .filter(|d| d.attempts == 1 && d.state == DeliveryState::Pending)
            .count()
            == 4
    });
    let due: BTreeMap<String, chrono::DateTime<chrono::Utc>> = all_deliveries(&sb)
        .into_iter()
        .map(|d| (d.delivery_id, d.next_attempt_at.unwrap().utc()))
        .collect();
    sb.kill();
    let rx = Receiver::start_on(&format!("127.0.0.1:{port}"), 200);
    sb.start();
    wait_for(30, "every delivery to succeed", || {
        in_state(&sb, DeliveryState::Succeeded) == 4
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut per_id: BTreeMap<String, Vec<SystemTime>> = BTreeMap::new();
    for r in rx.received() {
        per_id
            .entry(r.header("x-turnbridge-delivery-id").unwrap().to_string())
            .or_default()
            .push(r.at);
    }
    assert_eq!(per_id.len(), 4, "every delivery arrived");
    for (id, times) in &per_id {
        assert_eq!(times.len(), 1, "{id} arrived once");
        let due = due[id];
        let at: chrono::DateTime<chrono::Utc> = times[0].into();
        assert!(
            at >= due,
            "{id} arrived at {at}, before its attempt was due at {due}"
        );
    }
}

#[test]
fn gone_disables_the_endpoint_and_the_registry_round_trips() {
    let rx = Receiver::start(410);
    let sb = sandbox("[0, 300, 600, 900]");
    let auth = format!("Bearer {ADMIN}");
    let (id, _) = register(
        &sb,
        &format!("http://{}/gone", rx.addr),
        &["upload.completed"],
        None,
    );
    sb.drop_file("b.csv", batch_csv("GO", 1, 1).as_bytes());
    wait_for(20, "the endpoint to be disabled", || {
        let list = http_get(
            sb.http_addr(),
            "/api/v1/webhooks",
            &[("Authorization", &auth)],
        )
        .json();
        list["webhooks"][0]["enabled"] == false
    });
    assert_eq!(rx.received().len(), 1, "410 is not retried");
    let list = http_get(
        sb.http_addr(),
        "/api/v1/webhooks",
        &[("Authorization", &auth)],
    )
    .json();
    assert!(
        list["webhooks"][0].get("secret").is_none(),
        "listings never show secrets"
    );
    assert!(list["webhooks"][0]["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("410"));
    // Re-enable, change events, rotate the secret, then delete.
    let r = http_send(
        sb.http_addr(),
        "PATCH",
        &format!("/api/v1/webhooks/{id}"),
        &[("Authorization", &auth)],
        br#"{"enabled":true,"events":["invoice.*"],"rotate_secret":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["events"], json!(["invoice.*"]));
    assert!(v["secret"].as_str().unwrap().starts_with("whsec_"));
    let r = http_send(
        sb.http_addr(),
        "DELETE",
        &format!("/api/v1/webhooks/{id}"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    let bad = http_post(
        sb.http_addr(),
        "/api/v1/webhooks",
        &[("Authorization", &auth)],
        br#"{"url":"ftp://x","events":["*"]}"#,
    );
    assert_eq!(
        (bad.status, bad.json()["field"].as_str().unwrap()),
        (422, "url")
    );
    // Even where private addresses are allowed, never the daemon's own listener.
    let own = http_post(
        sb.http_addr(),
        "/api/v1/webhooks",
        &[("Authorization", &auth)],
        format!(
            r#"{{"url":"http://{}/api/sync/company/webhook","events":["*"]}}"#,
            sb.http_addr()
        )
        .as_bytes(),
    );
    assert_eq!(own.status, 422, "{}", own.text());
    assert!(own.text().contains("own listener"), "{}", own.text());
    let short = http_post(
        sb.http_addr(),
        "/api/v1/webhooks",
        &[("Authorization", &auth)],
        br#"{"url":"http://x.test/","events":["*"],"secret":"short"}"#,
    );
    assert_eq!(
        (short.status, short.json()["field"].as_str().unwrap()),
        (422, "secret")
    );
    assert_eq!(
        http_get(sb.http_addr(), "/api/v1/webhooks", &[]).status,
        401
    );
}

#[test]
fn a_slow_receiver_holds_back_only_its_own_deliveries() {
    let slow = Receiver::start(200);
    slow.delay_ms
        .store(1500, std::sync::atomic::Ordering::SeqCst);
    let fast = Receiver::start(200);
    let sb = sandbox("[0, 300, 600, 900]");
    register(&sb, &format!("http://{}/slow", slow.addr), &["*"], None);
    register(&sb, &format!("http://{}/fast", fast.addr), &["*"], None);
    // 13 events: 12 invoices and the upload.
    sb.drop_file("b.csv", batch_csv("SL", 1, 12).as_bytes());
    let started = std::time::Instant::now();
    wait_for(20, "every delivery to the fast receiver", || {
        fast.received().len() == 13
    });
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "the fast receiver waited for the slow one: {:?}",
        started.elapsed()
    );
    // The slow one gets at most max_in_flight_per_endpoint (4) at a time.
    assert!(slow.received().len() <= 4, "{}", slow.received().len());
    wait_for(30, "the slow receiver to catch up", || {
        slow.received().len() == 13
    });
}

#[test]
fn retry_after_is_honoured_within_bounds() {
    let rx = Receiver::start(429);
    *rx.extra.lock().unwrap() = "Retry-After: 1\r\n".into();
    let sb = sandbox("[0, 300, 600, 900]");
    register(
        &sb,
        &format!("http://{}/hook", rx.addr),
        &["upload.completed"],
        None,
    );
    sb.drop_file("b.csv", batch_csv("RA", 1, 1).as_bytes());
    wait_for(20, "two attempts", || rx.received().len() >= 2);
    rx.set_status(200);
    let got = rx.received();
    let gap = got[1].at.duration_since(got[0].at).unwrap();
    // Retry-After 1 s is clamped into [300 ms, 600 ms]: later than the schedule, not 1 s.
    assert!(
        gap >= Duration::from_millis(600) && gap < Duration::from_millis(1000),
        "{gap:?}"
    );
}

fn cli(sb: &Sandbox, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(args)
        .arg("--config")
        .arg(sb.config_path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_cli_manages_endpoints_rotates_secrets_and_resends_by_endpoint() {
    let rx = Receiver::start(500);
    let sb = sandbox("[0]");
    let url = format!("http://{}/cli", rx.addr);
    let (ok, out) = cli(
        &sb,
        &[
            "webhooks",
            "add",
            &url,
            "--events",
            "upload.completed",
            "--description",
            "erp",
        ],
    );
    assert!(ok, "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id"))
        .unwrap()
        .trim()
        .to_string();
    let old_secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret"))
        .unwrap()
        .trim()
        .to_string();
    let (ok, list) = cli(&sb, &["webhooks", "list"]);
    assert!(
        ok && list.contains(&id) && list.contains(&url) && !list.contains(&old_secret),
        "{list}"
    );
    let (ok, out) = cli(&sb, &["webhooks", "update", &id, "--rotate-secret"]);
    assert!(ok, "{out}");
    let new_secret = out
        .lines()
        .find_map(|l| l.strip_prefix("new secret"))
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(new_secret, old_secret);

    // One attempt only ([0]): the delivery is dead at once. It was signed with both secrets.
    sb.drop_file("b.csv", batch_csv("CL", 1, 1).as_bytes());
    wait_for(20, "a dead delivery", || {
        in_state(&sb, DeliveryState::Dead) == 1
    });
    let r = rx.received().pop().unwrap();
    let sigs: Vec<&str> = r.header("webhook-signature").unwrap().split(' ').collect();
    assert_eq!(
        sigs.len(),
        2,
        "new and old secret both sign during the overlap"
    );
    let (id_h, ts) = (
        r.header("webhook-id").unwrap(),
        r.header("webhook-timestamp").unwrap(),
    );
    for secret in [&new_secret, &old_secret] {
        let key = base64::engine::general_purpose::STANDARD
            .decode(&secret["whsec_".len()..])
            .unwrap();
        let mut signed = format!("{id_h}.{ts}.").into_bytes();
        signed.extend_from_slice(&r.body);
        let want = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, &signed))
        );
        assert!(sigs.contains(&want.as_str()));
    }

    rx.set_status(200);
    let (ok, out) = cli(&sb, &["dlq", "resend", "--endpoint", &id]);
    assert!(ok && out.contains("1 deliveries queued again"), "{out}");
    wait_for(20, "the resent delivery", || {
        rx.received().iter().any(|r| r.answered == 200)
    });
    let (ok, _) = cli(&sb, &["webhooks", "remove", &id]);
    assert!(ok);
    let (ok, list) = cli(&sb, &["webhooks", "list"]);
    assert!(ok && !list.contains(&id));
    let (ok, out) = cli(&sb, &["dlq", "resend"]);
    assert!(
        !ok && out.contains("--all"),
        "a bare resend asks what to resend: {out}"
    );
}

/// Without `webhooks.allow_private_networks`, a URL that points inside the network (in any
/// spelling) or carries credentials is refused at registration, by the CLI and the admin API.
#[test]
fn webhook_urls_to_private_addresses_are_refused_unless_allowed() {
    let tail = "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"policy-admin-token-0123\"\n";
    let mut sb = Sandbox::with_sections("", tail);
    sb.start();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://2130706433/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/hook",
        "https://user:pw@hooks.example.com/hook",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
            .args(["webhooks", "add", url, "--events", "*", "--config"])
            .arg(sb.config_path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} registered");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("not a public address") || said.contains("user name or password"),
            "{url}: {said}"
        );
        let r = http_send(
            sb.http_addr(),
            "POST",
            "/api/v1/webhooks",
            &[("Authorization", "Bearer policy-admin-token-0123")],
            serde_json::json!({"url": url, "events": ["*"]})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(r.status, 422, "{url}: {}", r.text());
        assert_eq!(r.json()["field"], "url");
    }
    assert!(
        crate::common::cli(&sb.config_path(), &["webhooks", "list"])
            .trim()
            .lines()
            .count()
            <= 1
    );
}

/// Registrations, rotations and resends from the admin API and the CLI while files keep
/// raising events and the deliverer fans them out and records attempts: every writer takes
/// the write lock first, so none of them fails with "database is locked", and every delivery
/// is recorded once it arrived.
#[test]
fn concurrent_writers_never_see_a_locked_database_and_every_delivery_is_recorded() {
    let rx = Receiver::start(200);
    let sb = sandbox("[0, 300, 600, 900]");
    let auth = format!("Bearer {ADMIN}");
    let url = |n: usize| format!("http://{}/hook/{n}", rx.addr);
    let (first, _) = register(&sb, &url(0), &["*"], None);
    let addr = sb.http_addr();
    let files = 12u32;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..files {
                sb.drop_file(
                    &format!("c{i}.csv"),
                    batch_csv("CW", i * 5 + 1, 5).as_bytes(),
                );
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        for t in 0..3usize {
            let (auth, url) = (&auth, &url);
            s.spawn(move || {
                for n in 0..6usize {
                    let r = http_post(
                        addr,
                        "/api/v1/webhooks",
                        &[("Authorization", auth)],
                        json!({"url": url(1 + t * 6 + n), "events": ["*"]})
                            .to_string()
                            .as_bytes(),
                    );
                    assert_eq!(r.status, 201, "{}", r.text());
                    let id = r.json()["id"].as_str().unwrap().to_string();
                    let r = http_send(
                        addr,
                        "PATCH",
                        &format!("/api/v1/webhooks/{id}"),
                        &[("Authorization", auth)],
                        br#"{"rotate_secret":true,"description":"busy"}"#,
                    );
                    assert_eq!(r.status, 200, "{}", r.text());
                    let r = http_post(
                        addr,
                        "/api/v1/dlq/resend",
                        &[("Authorization", auth)],
                        br#"{"all":true}"#,
                    );
                    assert_eq!(r.status, 202, "{}", r.text());
                }
            });
        }
        s.spawn(|| {
            for n in 0..4usize {
                let (ok, out) = cli(&sb, &["webhooks", "add", &url(100 + n), "--events", "*"]);
                assert!(ok, "{out}");
            }
        });
    });
    wait_for(120, "every file taken", || {
        files_in(&sb.spool()).is_empty() && sb.archived().len() == files as usize
    });
    wait_for(120, "every event fanned out and delivered", || {
        outbox::count_waiting(&sb.store()).unwrap() == 0
            && all_deliveries(&sb)
                .iter()
                .all(|d| d.state == DeliveryState::Succeeded)
    });
    let log = sb.log();
    assert_eq!(
        log.matches("database is locked").count(),
        0,
        "a writer failed on the lock:\n{}",
        log.lines()
            .filter(|l| l.contains("database is locked"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The endpoint registered before any file gets every event: five invoices and the
    // upload of each file.
    let db = sb.store();
    let events = turnbridge::store::events::count(&db).unwrap();
    assert_eq!(events, files as i64 * 6);
    let to_first = Filter {
        endpoint: Some(first),
        ..Filter::default()
    };
    assert_eq!(
        deliveries::list(&db, &to_first, 100_000).unwrap().len() as i64,
        events
    );
    // Every delivery on record arrived, and every one that arrived is on record with its
    // attempt.
    let arrived: std::collections::BTreeSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("x-turnbridge-delivery-id").unwrap().to_string())
        .collect();
    let recorded = all_deliveries(&sb);
    let ids: std::collections::BTreeSet<String> =
        recorded.iter().map(|d| d.delivery_id.clone()).collect();
    assert_eq!(arrived, ids);
    for d in &recorded {
        let attempts = deliveries::attempts(&db, &d.delivery_id).unwrap();
        assert!(
            attempts.iter().any(|a| a.status == Some(200)),
            "{} has no successful attempt on record: {attempts:?}",
            d.delivery_id
        );
    }
}

/// The dead-letter listing, from the admin API and the CLI, reads a time with any offset as
/// the instant it names, and refuses a time or state that is not one instead of listing
/// everything.
#[test]
fn dead_letters_are_listed_by_time_with_any_offset_and_a_bad_filter_is_refused() {
    let rx = Receiver::start(500);
    let sb = sandbox("[0]");
    register(
        &sb,
        &format!("http://{}/hook", rx.addr),
        &["upload.completed"],
        None,
    );
    sb.drop_file("b.csv", batch_csv("TZ", 1, 1).as_bytes());
    wait_for(20, "a dead delivery", || {
        in_state(&sb, DeliveryState::Dead) == 1
    });
    let dead = all_deliveries(&sb).remove(0);
    // The creation time, and a second after it, written in Taiwan time.
    let taipei = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
    };
    let at = taipei(dead.created_at.utc());
    let after = taipei(dead.created_at.utc() + chrono::Duration::seconds(1));
    let auth = format!("Bearer {ADMIN}");
    let listed = |query: &str| -> Vec<String> {
        let r = http_get(
            sb.http_addr(),
            &format!("/api/v1/deliveries?{query}"),
            &[("Authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json()["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["delivery_id"].as_str().unwrap().to_string())
            .collect()
    };
    let enc = |t: &str| t.replace('+', "%2B");
    assert_eq!(
        listed(&format!("since={}", enc(&at))),
        [dead.delivery_id.as_str()]
    );
    assert!(listed(&format!("since={}", enc(&after))).is_empty());
    assert_eq!(
        listed(&format!("until={}", enc(&at))),
        [dead.delivery_id.as_str()]
    );
    for bad in ["since=yesterday", "until=2026-12-01", "state=lost"] {
        let r = http_get(
            sb.http_addr(),
            &format!("/api/v1/deliveries?{bad}"),
            &[("Authorization", &auth)],
        );
        assert_eq!(r.status, 422, "{bad}: {}", r.text());
        assert!(r.text().contains("invalid_filter"), "{bad}: {}", r.text());
    }
    let (ok, out) = cli(&sb, &["dlq", "list", "--json", "--since", &at]);
    assert!(ok, "{out}");
    assert!(out.contains(&dead.delivery_id), "{out}");
    let (ok, out) = cli(&sb, &["dlq", "list", "--json", "--since", &after]);
    assert!(ok && !out.contains(&dead.delivery_id), "{out}");
    let (ok, out) = cli(&sb, &["dlq", "list", "--since", "yesterday"]);
    assert!(!ok && out.contains("RFC 3339"), "{out}");
}

/// `since`/`until` in any UTC offset mean the instant they name, for `GET /api/v1/deliveries`
/// and `turnbridge dlq list` alike (they were compared as text, so only `Z` worked: an hour
/// before the delivery written in +08:00 left it out, an hour after in -05:00 took it in).
#[test]
fn delivery_time_bounds_in_any_offset_mean_the_instant_they_name() {
    use chrono::{DateTime, Duration as Span, FixedOffset};
    let rx = Receiver::start(500);
    let sb = sandbox("[0]");
    register(
        &sb,
        &format!("http://{}/hook", rx.addr),
        &["upload.completed"],
        None,
    );
    sb.drop_file("b.csv", batch_csv("TZ", 1, 1).as_bytes());
    let auth = format!("Bearer {ADMIN}");
    let api = |query: &str| -> Vec<String> {
        let r = http_get(
            sb.http_addr(),
            &format!("/api/v1/deliveries?{query}"),
            &[("Authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json()["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["delivery_id"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for(20, "a dead delivery", || api("").len() == 1);
    let listed = http_get(
        sb.http_addr(),
        "/api/v1/deliveries",
        &[("Authorization", &auth)],
    )
    .json();
    let id = listed["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_string();
    let created =
        DateTime::parse_from_rfc3339(listed["deliveries"][0]["created_at"].as_str().unwrap())
            .unwrap();
    let taipei = FixedOffset::east_opt(8 * 3600).unwrap();
    let new_york = FixedOffset::west_opt(5 * 3600).unwrap();
    let hour_before = (created - Span::hours(1))
        .with_timezone(&taipei)
        .to_rfc3339();
    let hour_after = (created + Span::hours(1))
        .with_timezone(&new_york)
        .to_rfc3339();
    assert!(hour_before.ends_with("+08:00") && hour_after.ends_with("-05:00"));
    let q = |key: &str, t: &str| format!("{key}={}", t.replace('+', "%2B"));
    let (only, none) = (vec![id.clone()], Vec::<String>::new());

    assert_eq!(api(&q("since", &hour_before)), only);
    assert_eq!(api(&q("since", &hour_after)), none);
    assert_eq!(api(&q("until", &hour_after)), only);
    assert_eq!(api(&q("until", &hour_before)), none);
    // A `+` left unencoded arrives as a space and is still read as the offset it was.
    assert_eq!(api(&format!("since={hour_before}")), only);
    let r = http_get(
        sb.http_addr(),
        "/api/v1/deliveries?since=yesterday",
        &[("Authorization", &auth)],
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (422, Some("invalid_filter"))
    );
    assert_eq!(r.json()["field"], "since");

    let dlq = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["dlq", "list", "--json"];
        all.extend_from_slice(args);
        let (ok, out) = cli(&sb, &all);
        assert!(ok, "{args:?}: {out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["delivery_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(dlq(&["--since", &hour_before]), only);
    assert_eq!(dlq(&["--since", &hour_after]), none);
    assert_eq!(dlq(&["--until", &hour_after]), only);
    assert_eq!(dlq(&["--until", &hour_before]), none);
    let (ok, out) = cli(&sb, &["dlq", "list", "--since", "yesterday"]);
    assert!(!ok && out.contains("RFC 3339"), "{out}");
    // A resend by a time range in an offset takes the same delivery.
    let (ok, out) = cli(&sb, &["dlq", "resend", "--since", &hour_before]);
    assert!(ok && out.contains(&format!("{id} queued again")), "{out}");
}

#[test]
fn subscriptions_name_events_of_the_catalogue_or_their_families() {
    let sb = sandbox("[0]");
    let auth = format!("Bearer {ADMIN}");
    let post = |events: &str| {
        http_post(
            sb.http_addr(),
            "/api/v1/webhooks",
            &[("Authorization", &auth)],
            format!(r#"{{"url":"http://x.test/hook","events":{events}}}"#).as_bytes(),
        )
    };
    for bad in [
        r#"["no.such.event"]"#,
        r#"["upload.completed","nosuch.*"]"#,
        r#"["invoice"]"#,
        r#"[]"#,
    ] {
        let r = post(bad);
        assert_eq!(r.status, 422, "{bad}: {}", r.text());
        let v = r.json();
        assert_eq!(v["field"], "events", "{v}");
        let message = v["message"].as_str().unwrap();
        for valid in [
            "upload.completed",
            "invoice.status.updated",
            "invoice.*",
            "\"*\"",
        ] {
            assert!(message.contains(valid), "{bad}: {valid} not in {message}");
        }
    }
    assert!(post(r#"["no.such.event"]"#).json()["message"]
        .as_str()
        .unwrap()
        .starts_with("no.such.event is not an event"));
    // Names, families at any depth, and everything are taken.
    for good in [
        r#"["upload.completed","invoice.status.updated"]"#,
        r#"["invoice.*"]"#,
        r#"["turnkey.feedback.*","nextengine.*"]"#,
        r#"["*"]"#,
    ] {
        let r = post(good);
        assert_eq!(r.status, 201, "{good}: {}", r.text());
    }
    // The CLI is refused the same way, and so is a change of events.
    let (ok, out) = cli(
        &sb,
        &[
            "webhooks",
            "add",
            "http://x.test/cli",
            "--events",
            "no.such.event",
        ],
    );
    assert!(
        !ok && out.contains("no.such.event is not an event"),
        "{out}"
    );
    let (id, _) = register(&sb, "http://x.test/patch", &["upload.completed"], None);
    let r = http_send(
        sb.http_addr(),
        "PATCH",
        &format!("/api/v1/webhooks/{id}"),
        &[("Authorization", &auth)],
        br#"{"events":["invoices.*"]}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
}
