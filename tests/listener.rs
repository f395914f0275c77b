//! The embedded listener over real sockets: NextEngine's stock callback, the company
//! webhook, monitoring, metrics, and the limits that keep hostile clients out.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

const ADMIN: &str = "test-admin-token-0123456789";
const SECRET: &str = "jyt-gas-webhook-2024";

fn listener_sandbox(ts_max_age_secs: u64) -> Sandbox {
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\nmax_body_bytes = 4096\nheader_timeout_ms = 500\nrequest_timeout_ms = 2000\n\
         [nextengine]\nts_max_age_secs = {ts_max_age_secs}\n[[nextengine.shops]]\nstore_account = \"samplestore\"\nauth_key = \"aaa\"\n\
         [company_webhook]\nsecret = \"{SECRET}\"\n"
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    sb
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn stock_path(code: &str, stock: &str, ts: &str, sig: Option<&str>) -> String {
    let mut p = format!(
        "/UpdateStock.php?StoreAccount=samplestore&Code={}&Stock={stock}&ts={ts}",
        pct(code)
    );
    if let Some(sig) = sig {
        p.push_str(&format!("&.sig={sig}"));
    }
    p
}

fn count(sb: &Sandbox, sql: &str) -> i64 {
    sb.db().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn the_manuals_sample_request_gets_the_exact_euc_jp_reply() {
    // The official sample is from 2018: widen the window for it.
    let sb = listener_sandbox(20 * 365 * 86400);
    let addr = sb.http_addr();
    let sig = sign("samplestore", "test-aaa", "10", "201801150830", "aaa");
    assert_eq!(
        sig, "6a4812f93d36aece5559a9c271fab5a2",
        "the manual's vector"
    );
    let r = http_get(
        addr,
        &stock_path("test-aaa", "10", "201801150830", Some(&sig)),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.body,
        std::fs::read(root().join("tests/data/updatestock_response_success.xml")).unwrap()
    );
    assert!(r.header("content-type").unwrap().contains("EUC-JP"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(
        count(
            &sb,
            "SELECT count(*) FROM stock_updates WHERE code = 'test-aaa' AND stock = 10"
        ),
        1
    );
}

#[test]
fn a_valid_callback_is_recorded_and_answered_in_euc_jp() {
    let sb = listener_sandbox(3600);
    let addr = sb.http_addr();
    let ts = ts_ahead(24);
    let code = "在庫-001";
    let sig = sign("samplestore", code, "7", &ts, "aaa");
    let r = http_get(addr, &stock_path(code, "7", &ts, Some(&sig)), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(processed(&r.body), "0");
    let expected = format!(
        "<?xml version=\"1.0\" encoding=\"EUC-JP\"?>\n<ShoppingUpdateStock version=\"1.0\">\n<ResultSet TotalResult=\"1\">\n<Request>\n<Argument Name=\"StoreAccount\" Value=\"samplestore\" />\n<Argument Name=\"Code\" Value=\"{code}\" />\n<Argument Name=\"Stock\" Value=\"7\" />\n<Argument Name=\"ts\" Value=\"{ts}\" />\n<Argument Name=\".sig\" Value=\"{sig}\" />\n</Request>\n<Result No=\"1\">\n<Processed>0</Processed>\n</Result>\n</ResultSet>\n</ShoppingUpdateStock>\n"
    );
    let (euc, _, _) = encoding_rs::EUC_JP.encode(&expected);
    assert_eq!(r.body, euc.as_ref(), "exact EUC-JP bytes");
    // Made-to-order goods come with an empty Stock.
    let sig = sign("samplestore", "made-to-order", "", &ts, "aaa");
    let r = http_get(addr, &stock_path("made-to-order", "", &ts, Some(&sig)), &[]);
    assert_eq!((r.status, processed(&r.body)), (200, "0".to_string()));
    assert_eq!(
        count(
            &sb,
            "SELECT count(*) FROM stock_updates WHERE code = 'made-to-order' AND stock IS NULL"
        ),
        1
    );
    assert_eq!(count(&sb, "SELECT count(*) FROM stock_updates"), 2);
    assert_eq!(
        count(
            &sb,
            "SELECT count(*) FROM inventory_logs WHERE outcome = 'accepted'"
        ),
        2
    );
}

#[test]
fn tampered_expired_replayed_and_unsigned_callbacks_are_refused_and_counted() {
    let sb = listener_sandbox(3600);
    let addr = sb.http_addr();
    let ts = ts_ahead(24);
    let sig = sign("samplestore", "sku-1", "5", &ts, "aaa");
    // Tampered: the stock changed after signing.
    let r = http_get(addr, &stock_path("sku-1", "500", &ts, Some(&sig)), &[]);
    assert_eq!((r.status, processed(&r.body)), (401, "-2".to_string()));
    // Unsigned.
    let r = http_get(addr, &stock_path("sku-1", "5", &ts, None), &[]);
    assert_eq!((r.status, processed(&r.body)), (401, "-2".to_string()));
    // Expired: two hours ago, outside the one-hour window.
    let old = ts_ahead(-2);
    let r = http_get(
        addr,
        &stock_path(
            "sku-1",
            "5",
            &old,
            Some(&sign("samplestore", "sku-1", "5", &old, "aaa")),
        ),
        &[],
    );
    assert_eq!((r.status, processed(&r.body)), (400, "-2".to_string()));
    // Signed with another shop's key.
    let r = http_get(
        addr,
        &stock_path(
            "sku-1",
            "5",
            &ts,
            Some(&sign("samplestore", "sku-1", "5", &ts, "bbb")),
        ),
        &[],
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        count(&sb, "SELECT count(*) FROM stock_updates"),
        0,
        "nothing stored for refused requests"
    );
    // Replayed: the first is accepted, the same ts + sig again is refused.
    let good = stock_path("sku-1", "5", &ts, Some(&sig));
    assert_eq!(http_get(addr, &good, &[]).status, 200);
    let r = http_get(addr, &good, &[]);
    assert_eq!((r.status, processed(&r.body)), (409, "-2".to_string()));
    assert_eq!(count(&sb, "SELECT count(*) FROM stock_updates"), 1);
    assert_eq!(
        count(
            &sb,
            "SELECT count(*) FROM inventory_logs WHERE outcome IN ('refused', 'replayed')"
        ),
        5
    );

    // What a refused request sent is logged cut short, whatever its size.
    let long = "X".repeat(3000);
    let r = http_get(addr, &stock_path(&long, "5", &ts, Some(&sig)), &[]);
    assert_eq!(r.status, 401);
    let logged: String = sb
        .db()
        .query_row(
            "SELECT code FROM inventory_logs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        logged.starts_with("XXX") && logged.len() < 200 && logged.contains("3000 characters"),
        "{logged}"
    );

    let metrics = http_get(addr, "/metrics", &[]).text();
    assert!(
        metrics.contains("turnbridge_signature_failures_total{route=\"updatestock\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("turnbridge_stock_updates_total{outcome=\"refused\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("turnbridge_stock_updates_total{outcome=\"replayed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("turnbridge_stock_updates_total{outcome=\"accepted\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_connection_check_button_gets_a_well_formed_reply() {
    let sb = listener_sandbox(3600);
    let r = http_get(sb.http_addr(), "/UpdateStock.php", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(processed(&r.body), "0");
    let (text, _, bad) = encoding_rs::EUC_JP.decode(&r.body);
    assert!(
        !bad && text.starts_with(
            "<?xml version=\"1.0\" encoding=\"EUC-JP\"?>\n<ShoppingUpdateStock version=\"1.0\">"
        )
    );
    assert!(
        turnbridge::turnkey::results::parse_xml(text.as_bytes()).is_ok(),
        "well-formed"
    );
}

fn post_webhook(sb: &Sandbox, secret: &str, body: &str) -> HttpResponse {
    http_post(
        sb.http_addr(),
        "/api/sync/company/webhook",
        &[("X-Webhook-Secret", secret)],
        body.as_bytes(),
    )
}

#[test]
fn company_webhooks_are_stored_once_and_refused_with_their_reason() {
    let sb = listener_sandbox(3600);
    let bodies = [
        r#"{"type":"order.created","order":{"orderNo":"TEST-001","customerId":"c-1","customerName":"測試客戶","customerPhone":"0912345678","items":[{"productName":"瓦斯桶20公斤","quantity":1,"unitPrice":800}],"totalAmount":800,"status":"pending"}}"#,
        r#"{"type":"order.updated","order":{"orderNo":"TEST-001","status":"delivered","totalAmount":800}}"#,
        r#"{"type":"customer.created","customer":{"id":"c-1","name":"測試客戶","phone":"0912345678","paymentType":"cash"}}"#,
        r#"{"type":"customer.updated","customer":{"id":"c-1","name":"測試客戶","address":"台北市"}}"#,
        r#"{"type":"inventory.updated","inventory":{"productId":"gas-20kg","quantity":42,"minStock":10}}"#,
        r#"{"type":"phone_order.received","order":{"orderNo":"PH-9","customerPhone":"0223456789","items":[{"productName":"瓦斯桶20公斤","quantity":2}]}}"#,
    ];
    for body in bodies {
        let r = post_webhook(&sb, SECRET, body);
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        assert_eq!(r.json()["status"], "stored");
        let again = post_webhook(&sb, SECRET, body);
        assert_eq!(again.json()["status"], "duplicate", "{body}");
    }
    assert_eq!(count(&sb, "SELECT count(*) FROM company_events"), 6);
    assert_eq!(
        count(&sb, "SELECT count(DISTINCT event_type) FROM company_events"),
        6
    );
    assert_eq!(
        count(
            &sb,
            "SELECT count(*) FROM audit WHERE action = 'WEBHOOK_RECEIVED'"
        ),
        6
    );

    let r = post_webhook(&sb, "wrong-secret", bodies[0]);
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap()),
        (401, "unauthorized")
    );
    let r = http_post(
        sb.http_addr(),
        "/api/sync/company/webhook",
        &[],
        bodies[0].as_bytes(),
    );
    assert_eq!(r.status, 401, "no secret header");
    let r = post_webhook(&sb, SECRET, "{\"type\": \"order.created\", ");
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap()),
        (400, "malformed_json")
    );
    let big = format!(
        "{{\"type\":\"order.created\",\"order\":{{\"orderNo\":\"X\",\"note\":\"{}\"}}}}",
        "x".repeat(5000)
    );
    let r = post_webhook(&sb, SECRET, &big);
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap()),
        (413, "body_too_large")
    );
    let r = post_webhook(&sb, SECRET, r#"{"type":"refund.created","refund":{}}"#);
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap()),
        (422, "unknown_event_type")
    );
    let r = post_webhook(
        &sb,
        SECRET,
        r#"{"type":"order.created","order":{"orderNo":"X","items":[{"productName":"a","quantity":"many"}]}}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["field"], "order.items[0].quantity");
    assert_eq!(
        count(
            &sb,
            "SELECT count(*) FROM audit WHERE action = 'WEBHOOK_REJECTED'"
        ),
        2,
        "422s are audited"
    );
    assert_eq!(
        count(&sb, "SELECT count(*) FROM company_events"),
        6,
        "nothing else stored"
    );
    assert!(
        !sb.log().contains(SECRET),
        "the secret never reaches the log"
    );
}

#[test]
fn a_slow_client_is_cut_off_without_hurting_others() {
    let sb = listener_sandbox(3600);
    let addr = sb.http_addr();
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Others are served while the slow one dawdles.
    let t = Instant::now();
    for _ in 0..5 {
        assert_eq!(http_get(addr, "/healthz", &[]).status, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the slow connection was closed by the server"
    );
    let head = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || head.starts_with("HTTP/1.1 408"), "{head}");
}

#[test]
fn oversized_headers_get_431_and_monitoring_needs_the_token() {
    let sb = listener_sandbox(3600);
    let addr = sb.http_addr();
    let huge = "x".repeat(20_000);
    let r = http_get(addr, "/healthz", &[("X-Filler", &huge)]);
    assert_eq!(r.status, 431);
    let open = http_get(addr, "/healthz", &[]).json();
    assert_eq!(open["status"], "ok");
    assert!(
        open.get("problems").is_none(),
        "details need the token: {open}"
    );
    let r = http_get(
        addr,
        "/healthz",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    );
    assert!(r.json()["problems"].is_array(), "{}", r.text());
    for path in [
        "/api/inventory/status",
        "/api/inventory/updates",
        "/api/inventory/logs",
        "/api/webhook/status",
    ] {
        assert_eq!(http_get(addr, path, &[]).status, 401, "{path}");
        assert_eq!(
            http_get(addr, path, &[("Authorization", "Bearer nope")]).status,
            401,
            "{path}"
        );
        let r = http_get(addr, path, &[("Authorization", &format!("Bearer {ADMIN}"))]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json();
    }
    let ts = ts_ahead(24);
    let sig = sign("samplestore", "sku-9", "3", &ts, "aaa");
    assert_eq!(
        http_get(addr, &stock_path("sku-9", "3", &ts, Some(&sig)), &[]).status,
        200
    );
    let status = http_get(
        addr,
        "/api/inventory/status",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    )
    .json();
    assert_eq!(status["accepted"], 1);
    assert_eq!(status["last_update"]["code"], "sku-9");
    let updates = http_get(
        addr,
        "/api/inventory/updates?limit=5",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    )
    .json();
    assert_eq!(updates["updates"][0]["stock"], 3);
    assert_eq!(http_get(addr, "/nope", &[]).json()["code"], "not_found");
}

#[test]
fn metrics_pass_promtool_when_it_is_installed() {
    let sb = listener_sandbox(3600);
    let addr = sb.http_addr();
    sb.drop_file(
        "b.json",
        &std::fs::read(fixture("valid/F0401_b2b.json")).unwrap(),
    );
    wait_for(20, "the invoice", || sb.inbox_files().len() == 1);
    // The spool counter is bumped once the source is archived, just after the XML appears.
    wait_for(20, "the spool counter", || {
        http_get(addr, "/metrics", &[])
            .text()
            .contains("turnbridge_spool_files_total{kind=\"einvoice\",outcome=\"done\"} 1")
    });
    http_get(addr, "/healthz", &[]);
    let text = http_get(addr, "/metrics", &[]).text();
    assert!(
        text.contains("turnbridge_messages{message_type=\"F0401\",state=\"queued\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("turnbridge_spool_files_total{kind=\"einvoice\",outcome=\"done\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("turnbridge_http_requests_total{route=\"healthz\",status=\"200\"} 1"),
        "{text}"
    );
    promtool_check(&text);
}

#[test]
fn connections_beyond_the_cap_wait_their_turn() {
    let tail = "[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\nheader_timeout_ms = 600\n";
    let mut sb = Sandbox::with_sections("", tail);
    sb.start();
    let addr = sb.http_addr();
    // Two clients hold both slots without sending anything.
    let _a = std::net::TcpStream::connect(addr).unwrap();
    let _b = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let r = http_get(addr, "/healthz", &[]);
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "the third client was served before a slot freed up ({:?})",
        t.elapsed()
    );
}

/// A flood of forged callbacks costs a bounded number of rows and log lines; every one is
/// still refused and counted, and a signed callback still goes through.
#[test]
fn a_flood_of_forged_callbacks_is_counted_but_stored_and_logged_a_bounded_number_of_times() {
    let sb = listener_sandbox(3600);
    let addr = sb.http_addr();
    let ts = ts_ahead(24);
    let code = "X".repeat(3000);
    for _ in 0..200 {
        let r = http_get(addr, &stock_path(&code, "5", &ts, Some("forged")), &[]);
        assert_eq!(r.status, 401);
    }
    let stored = count(
        &sb,
        "SELECT count(*) FROM inventory_logs WHERE outcome = 'refused'",
    );
    assert_eq!(stored, 20, "refusal rows are capped per minute");
    let logged = sb.log().matches("stock callback refused").count();
    assert!(logged <= 21, "{logged} refusal log lines");
    assert!(
        !sb.log().contains(&"X".repeat(200)),
        "a refused value is logged cut short"
    );
    let metrics = http_get(
        addr,
        "/metrics",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    )
    .text();
    assert!(
        metrics.contains("turnbridge_stock_updates_total{outcome=\"refused\"} 200"),
        "every refusal is counted:\n{metrics}"
    );
    let sig = sign("samplestore", "sku-7", "4", &ts, "aaa");
    let r = http_get(addr, &stock_path("sku-7", "4", &ts, Some(&sig)), &[]);
    assert_eq!(r.status, 200);
}
