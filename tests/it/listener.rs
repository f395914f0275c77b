//! The embedded listener over real sockets: NextEngine's stock callback, the company
//! webhook, monitoring, metrics, and the limits that keep hostile clients out.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use turnbridge::store::audit;
use turnbridge::store::inbound::{self, CallbackOutcome, StockUpdate};

/// The stock levels stored, newest first.
fn levels(sb: &Sandbox) -> Vec<StockUpdate> {
    inbound::recent_stock_updates(&sb.store(), i64::MAX).unwrap()
}

/// How many callback requests were logged with one of `outcomes`.
fn callbacks(sb: &Sandbox, outcomes: &[CallbackOutcome]) -> usize {
    inbound::recent_callbacks(&sb.store(), i64::MAX)
        .unwrap()
        .iter()
        .filter(|c| outcomes.contains(&c.outcome))
        .count()
}

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
        levels(&sb)
            .iter()
            .filter(|u| u.code == "test-aaa" && u.stock == Some(10))
            .count(),
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
        levels(&sb)
            .iter()
            .filter(|u| u.code == "made-to-order" && u.stock.is_none())
            .count(),
        1
    );
    assert_eq!(stored_levels(&sb), 2);
    assert_eq!(callbacks(&sb, &[CallbackOutcome::Accepted]), 2);
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
    assert_eq!(stored_levels(&sb), 0, "nothing stored for refused requests");
    // Replayed: the first is accepted, the same ts + sig again is refused.
    let good = stock_path("sku-1", "5", &ts, Some(&sig));
    assert_eq!(http_get(addr, &good, &[]).status, 200);
    let r = http_get(addr, &good, &[]);
    assert_eq!((r.status, processed(&r.body)), (409, "-2".to_string()));
    assert_eq!(stored_levels(&sb), 1);
    assert_eq!(
        callbacks(&sb, &[CallbackOutcome::Refused, CallbackOutcome::Replayed]),
        5
    );

    // What a refused request sent is logged cut short, whatever its size.
    let long = "X".repeat(3000);
    let r = http_get(addr, &stock_path(&long, "5", &ts, Some(&sig)), &[]);
    assert_eq!(r.status, 401);
    let logged = turnbridge::store::inbound::recent_callbacks(&sb.store(), 1).unwrap()[0]
        .code
        .clone()
        .unwrap_or_default();
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
    assert_eq!(stored_pushes(&sb).0, 6);
    assert_eq!(stored_pushes(&sb).1, 6);
    assert_eq!(
        audit::count(&sb.store(), audit::Action::WebhookReceived).unwrap(),
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
        audit::count(&sb.store(), audit::Action::WebhookRejected).unwrap(),
        2,
        "422s are audited"
    );
    assert_eq!(stored_pushes(&sb).0, 6, "nothing else stored");
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
    let scrape = http_get(addr, "/metrics", &[]);
    assert_eq!(
        scrape.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = scrape.text();
    assert!(
        text.contains("turnbridge_messages{message_type=\"F0401\",state=\"queued\"} 1"),
        "{text}"
    );
    // The delivery latency histogram is exported, empty, under the name it is recorded with,
    // with buckets in seconds past the 2 s alert.
    assert!(
        text.contains("# TYPE webhook_delivery_latency_seconds histogram\n")
            && text.contains("webhook_delivery_latency_seconds_bucket{le=\"30\"} 0\n"),
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

/// A client socket bound to `ip` (any 127/8 address: the listener sees another peer), with a
/// small receive buffer when asked, as a blocking std stream.
fn connect_from(ip: [u8; 4], to: SocketAddr, rcvbuf: Option<u32>) -> std::net::TcpStream {
    try_connect_from(ip, to, rcvbuf).unwrap()
}

/// As [`connect_from`]; the error is the connection's, e.g. a reset that came at once.
fn try_connect_from(
    ip: [u8; 4],
    to: SocketAddr,
    rcvbuf: Option<u32>,
) -> std::io::Result<std::net::TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(n) = rcvbuf {
            s.set_recv_buffer_size(n).unwrap();
        }
        s.bind(SocketAddr::from((ip, 0))).unwrap();
        s.connect(to).await?.into_std()
    })?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Whether the kernel still has the connection established (the server has neither closed
/// nor reset it), without reading from it.
fn established(s: &std::net::TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        );
        rc == 0 && info.tcpi_state == 1
    }
}

/// Waits (up to `secs`) for the server to close or reset `s`; returns when it was seen.
fn closed_within(s: &std::net::TcpStream, secs: u64) -> Option<Instant> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if !established(s) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn closed_count(addr: SocketAddr, reason: &str) -> u64 {
    let text = http_get(addr, "/metrics", &[]).text();
    let key = format!("turnbridge_http_connections_closed_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_full_listener_gives_a_new_client_the_slot_of_a_stuck_one() {
    // Long timeouts: only eviction can make room in time.
    let tail = "[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\nheader_timeout_ms = 20000\n";
    let mut sb = Sandbox::with_sections("", tail);
    sb.start();
    let addr = sb.http_addr();
    // One peer holds both slots: a silent connection and a slowloris.
    let silent = connect_from([127, 0, 0, 2], addr, None);
    let mut slow = connect_from([127, 0, 0, 2], addr, None);
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let r = http_get(addr, "/healthz", &[]);
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "served at once, not after a timeout ({:?})",
        t.elapsed()
    );
    // The longest-waiting one gave up its slot, and was reset.
    assert!(
        closed_within(&silent, 5).is_some(),
        "the older one was evicted"
    );
    assert!(established(&slow), "the newer one kept its slot");
    assert!(closed_count(addr, "evicted") >= 1);
}

#[test]
fn when_every_slot_is_being_answered_a_new_client_waits_its_turn() {
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\nrequest_timeout_ms = 600\n\
         [company_webhook]\nsecret = \"{SECRET}\"\n"
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    let addr = sb.http_addr();
    // Two authenticated pushes whose bodies never come: their handlers hold both slots until
    // request_timeout_ms; they are being answered, so nobody evicts them.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            format!(
                "POST /api/sync/company/webhook HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {SECRET}\r\nContent-Length: 100\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    let r = http_get(addr, "/healthz", &[]);
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "the third client was served before a handler finished ({:?})",
        t.elapsed()
    );
    for mut s in held {
        let mut buf = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read_to_end(&mut buf);
        assert!(
            String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
            "the held requests timed out: {}",
            String::from_utf8_lossy(&buf)
        );
    }
}

#[test]
fn a_peer_over_its_cap_is_reset_at_once_and_others_are_served() {
    let tail = "[http]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_peer = 2\nheader_timeout_ms = 20000\n";
    let mut sb = Sandbox::with_sections("", tail);
    sb.start();
    let addr = sb.http_addr();
    let a = connect_from([127, 0, 0, 2], addr, None);
    let b = connect_from([127, 0, 0, 2], addr, None);
    std::thread::sleep(Duration::from_millis(200));
    // Reset at once: even before the client sees its connection complete, or just after.
    match try_connect_from([127, 0, 0, 2], addr, None) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(third) => assert!(
            closed_within(&third, 5).is_some(),
            "the third connection from one address is reset, not kept until a timeout"
        ),
    }
    assert!(established(&a) && established(&b), "its first two are kept");
    // Another peer, and 127.0.0.1, are served as usual.
    let mut other = connect_from([127, 0, 0, 3], addr, None);
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    other.read_to_end(&mut buf).unwrap();
    assert_eq!(parse_response(&buf).status, 200);
    assert_eq!(closed_count(addr, "peer_cap"), 1);
}

#[test]
fn a_client_that_never_reads_its_answers_is_cut_off_after_the_write_timeout() {
    let tail = "[http]\nlisten = \"127.0.0.1:0\"\nwrite_timeout_ms = 800\nidle_timeout_ms = 20000\nheader_timeout_ms = 20000\nsend_buffer_bytes = 8192\n";
    let mut sb = Sandbox::with_sections("", tail);
    sb.start();
    let addr = sb.http_addr();
    // Pipelined requests whose 404 answers (each naming its 6 KB path) overflow the buffers
    // between the server and a socket with a small receive buffer that is never read.
    let mut reader = connect_from([127, 0, 0, 2], addr, Some(2048));
    let one = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "r".repeat(6000));
    reader.write_all(one.repeat(12).as_bytes()).unwrap();
    let sent = Instant::now();
    // Others are served meanwhile.
    assert_eq!(http_get(addr, "/healthz", &[]).status, 200);
    let closed = closed_within(&reader, 10).expect("the server gave up on the slow reader");
    assert!(
        closed - sent >= Duration::from_millis(700),
        "closed {:?} after the requests: not before the write timeout",
        closed - sent
    );
    assert_eq!(closed_count(addr, "write_timeout"), 1);
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let tail =
        "[http]\nlisten = \"127.0.0.1:0\"\nidle_timeout_ms = 700\nheader_timeout_ms = 20000\n";
    let mut sb = Sandbox::with_sections("", tail);
    sb.start();
    let addr = sb.http_addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    let closed = closed_within(&s, 10).expect("the idle connection was closed");
    assert!(
        closed - answered >= Duration::from_millis(600),
        "kept for the idle timeout: closed {:?} after its answer",
        closed - answered
    );
    assert_eq!(closed_count(addr, "idle_timeout"), 1);
}

#[test]
fn an_old_connection_is_closed_once_idle_and_an_answer_in_progress_says_so() {
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nmax_connection_age_ms = 1000\n\
         [company_webhook]\nsecret = \"{SECRET}\"\n"
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    let addr = sb.http_addr();
    // Kept alive while young, closed once it is idle past its age (long before the 15 s
    // idle timeout).
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    let opened = Instant::now();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).unwrap();
    let young = parse_response(&buf[..n]);
    assert_eq!(young.status, 200);
    assert_eq!(young.header("connection"), None, "kept alive while young");
    // A push whose body comes only after the connection has grown old.
    let mut busy = std::net::TcpStream::connect(addr).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = r#"{"type":"order.created","order":{"orderNo":"AGE-1","items":[]}}"#;
    busy.write_all(
        format!(
            "POST /api/sync/company/webhook HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {SECRET}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let closed = closed_within(&idle, 10).expect("the old idle connection was closed");
    assert!(
        closed - opened >= Duration::from_millis(900),
        "closed {:?} after opening: at its age, not before",
        closed - opened
    );
    std::thread::sleep(Duration::from_millis(300));
    busy.write_all(body.as_bytes()).unwrap();
    let mut answer = Vec::new();
    busy.read_to_end(&mut answer).unwrap();
    let old = parse_response(&answer);
    assert_eq!(old.status, 200, "the answer in progress still goes out");
    assert_eq!(old.json()["status"], "stored");
    assert_eq!(old.header("connection"), Some("close"));
    assert!(closed_count(addr, "max_age") >= 1);
}

/// What anyone who can reach the listener gets without a token, secret or signature: the
/// health status, the metrics, NextEngine's connection check, and refusals.
#[test]
fn without_credentials_the_listener_gives_out_status_metrics_and_refusals_only() {
    let sb = listener_sandbox(3600);
    let addr = sb.http_addr();
    let health = http_get(addr, "/healthz", &[]);
    assert_eq!(health.status, 200);
    let v = health.json();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["status"],
        "no problem details: {v}"
    );
    let metrics = http_get(addr, "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    for secret in [ADMIN, SECRET, "aaa", "samplestore"] {
        assert!(!metrics.text().contains(secret), "{secret} in /metrics");
    }
    // NextEngine's connection check: a well-formed reply, nothing stored.
    let check = http_get(addr, "/UpdateStock.php", &[]);
    assert_eq!(
        (check.status, processed(&check.body)),
        (200, "0".to_string())
    );
    assert_eq!(stored_levels(&sb), 0);
    // Everything else is refused without its credential.
    for (method, path, status) in [
        ("GET", "/api/inventory/status", 401),
        ("GET", "/api/inventory/updates", 401),
        ("GET", "/api/inventory/logs", 401),
        ("GET", "/api/webhook/status", 401),
        ("GET", "/api/v1/webhooks", 401),
        ("POST", "/api/v1/webhooks", 401),
        ("GET", "/api/v1/deliveries", 401),
        ("POST", "/api/v1/dlq/resend", 401),
        ("GET", "/auth/ne", 401),
        ("GET", "/auth/callback?uid=u&state=s", 403),
        ("POST", "/api/sync/company/webhook", 401),
        (
            "GET",
            "/UpdateStock.php?StoreAccount=samplestore&Code=a&Stock=1&ts=1",
            401,
        ),
        ("GET", "/", 404),
        ("GET", "/admin", 404),
    ] {
        let r = http_send(addr, method, path, &[], b"{}");
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    }
    assert_eq!(stored_pushes(&sb).0, 0);
}

/// A path asked with a method it does not take is 405 with `Allow` naming the ones it does,
/// on every route: admin routes too, with the token or without it (never a 404 that hides
/// the route, nor a 401 that says the method would do).
#[test]
fn a_wrong_method_gets_405_with_allow_on_every_route_admin_ones_included() {
    let sb = listener_sandbox(3600);
    let addr = sb.http_addr();
    let admin = format!("Bearer {ADMIN}");
    for (method, path, allow) in [
        ("DELETE", "/api/v1/webhooks", "GET, POST"),
        ("GET", "/api/v1/webhooks/wh_1", "PATCH, DELETE"),
        ("POST", "/api/v1/deliveries", "GET"),
        ("PATCH", "/api/v1/deliveries/d_1", "GET"),
        ("GET", "/api/v1/deliveries/d_1/resend", "POST"),
        ("GET", "/api/v1/dlq/resend", "POST"),
        ("POST", "/api/inventory/status", "GET"),
        ("DELETE", "/api/webhook/status", "GET"),
        ("GET", "/api/sync/company/webhook", "POST"),
        ("POST", "/UpdateStock.php", "GET"),
        ("POST", "/auth/ne", "GET"),
        ("PUT", "/auth/callback", "GET"),
        ("POST", "/healthz", "GET"),
        ("POST", "/metrics", "GET"),
    ] {
        for headers in [vec![], vec![("Authorization", admin.as_str())]] {
            let r = http_send(addr, method, path, &headers, b"{}");
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
            assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
            assert_eq!(r.json()["code"], "method_not_allowed", "{method} {path}");
        }
    }
    // Nothing was changed by any of them.
    let hooks = http_get(addr, "/api/v1/webhooks", &[("Authorization", &admin)]);
    assert_eq!(hooks.json()["webhooks"], serde_json::json!([]));
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
    let stored = callbacks(&sb, &[CallbackOutcome::Refused]);
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

    // Company webhooks without the secret: the same bound on log lines.
    for _ in 0..100 {
        let r = post_webhook(&sb, "not-the-secret-at-all", r#"{"type":"order.created"}"#);
        assert_eq!(r.status, 401);
    }
    let logged = sb.log().matches("company webhook refused").count();
    assert!(
        (1..=21).contains(&logged),
        "{logged} company webhook refusal lines"
    );
}
