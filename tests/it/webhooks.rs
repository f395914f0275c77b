//! Outbound webhooks against a throwaway receiver on 127.0.0.1: signatures checked by an
//! independent verifier, the retry schedule and the dead-letter queue, resend, and restarts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::common::*;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};

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

fn delivery_state(sb: &Sandbox, id: &str) -> Option<String> {
    sb.db()
        .query_row("SELECT state FROM deliveries WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .ok()
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
        delivery_state(&sb, &id).as_deref() == Some("dead")
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
    let db = sb.db();
    let (attempts, last_status): (i64, i64) = db
        .query_row(
            "SELECT attempts, last_status FROM deliveries WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((attempts, last_status), (4, 500));
    let logged: i64 = db
        .query_row(
            "SELECT count(*) FROM delivery_attempts WHERE delivery_id = ?1 AND status = 500",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(logged, 4, "every attempt is logged");
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
        delivery_state(&sb, &id).as_deref() == Some("succeeded")
    });
    let last = rx.received().pop().unwrap();
    assert_eq!(last.header("x-turnbridge-delivery-id"), Some(id.as_str()));
    assert_eq!(last.answered, 200);
    let manual: i64 = sb
        .db()
        .query_row(
            "SELECT count(*) FROM delivery_attempts WHERE delivery_id = ?1 AND trigger = 'manual'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
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
        sb.db()
            .query_row(
                "SELECT count(*) FROM deliveries WHERE attempts = 1 AND state = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            == 4
    });
    let due: BTreeMap<String, String> = {
        let db = sb.db();
        let mut stmt = db
            .prepare("SELECT id, next_attempt_at FROM deliveries")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    sb.kill();
    let rx = Receiver::start_on(&format!("127.0.0.1:{port}"), 200);
    sb.start();
    wait_for(30, "every delivery to succeed", || {
        sb.db()
            .query_row(
                "SELECT count(*) FROM deliveries WHERE state = 'succeeded'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 4
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
        let due: chrono::DateTime<chrono::Utc> = due[id].parse().unwrap();
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
        sb.db()
            .query_row(
                "SELECT count(*) FROM deliveries WHERE state = 'dead'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
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
