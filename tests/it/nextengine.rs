//! The NextEngine client against a fake NextEngine on 127.0.0.1: login, token keeping on
//! every answer, one call at a time per account, rotation, re-login required, busy retries.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crate::fake::FakeNextEngine;
use serde_json::json;
use turnbridge::config::{NextEngine, Secret};
use turnbridge::nextengine::client::{Client, NeError};
use turnbridge::store::ne_jobs::{self, NeJob, NeJobState};
use turnbridge::store::{ne_accounts, open_read_only, Store};

struct Setup {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    client: Arc<Client>,
    fake: FakeNextEngine,
    rt: tokio::runtime::Runtime,
}

fn settings(fake: &FakeNextEngine) -> NextEngine {
    NextEngine {
        client_id: "client-1".into(),
        client_secret: Secret::new("client-secret-1"),
        redirect_uri: "https://example.test/auth/callback".into(),
        api_base: fake.base(),
        busy_backoff_ms: 20,
        ..NextEngine::default()
    }
}

fn setup() -> Setup {
    let fake = FakeNextEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let client = Arc::new(Client::new(settings(&fake), Store::open(&db).unwrap()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Setup {
        _dir: dir,
        db,
        client,
        fake,
        rt,
    }
}

impl Setup {
    fn tokens(&self) -> (String, String, bool) {
        let c = ne_accounts::credentials(&open_read_only(&self.db).unwrap(), "NE123456")
            .unwrap()
            .unwrap();
        (
            c.access.expose().to_string(),
            c.refresh.expose().to_string(),
            c.needs_login,
        )
    }
    fn connect(&self) {
        let a = self
            .rt
            .block_on(self.client.connect("uid-1", "state-1"))
            .unwrap();
        assert_eq!(a.id, "NE123456");
    }
    fn events(&self, kind: &str) -> i64 {
        let conn = turnbridge::report::open_read_only(&self.db).unwrap();
        events_named(&conn, kind).len() as i64
    }
}

#[test]
fn login_stores_the_tokens_and_every_call_sends_both() {
    let s = setup();
    s.connect();
    assert_eq!(s.tokens(), ("access-1".into(), "refresh-1".into(), false));
    let auth = s.fake.calls().pop().unwrap();
    assert!(auth
        .1
        .contains(&("client_secret".into(), "client-secret-1".into())));
    s.rt.block_on(
        s.client
            .call("NE123456", "/api_v1_login_user/info", &[], false),
    )
    .unwrap();
    let (path, form) = s.fake.calls().pop().unwrap();
    assert_eq!(path, "/api_v1_login_user/info");
    assert!(form.contains(&("access_token".into(), "access-1".into())));
    assert!(form.contains(&("refresh_token".into(), "refresh-1".into())));
    assert!(form.contains(&("wait_flag".into(), "0".into())));
    let status = s.rt.block_on(s.client.status("NE123456")).unwrap().unwrap();
    assert_eq!(
        status.refresh_expires_at.to_string(),
        "2099-01-04T00:00:00.000Z",
        "end dates are Japan time"
    );
    assert_eq!(status.last_call.as_deref(), Some("/api_v1_login_user/info"));
}

#[test]
fn tokens_from_an_error_answer_are_kept() {
    let s = setup();
    s.connect();
    s.fake.state.lock().unwrap().scripted.push_back(json!({
        "result": "error", "code": "012005", "message": "FTPユーザ名またはパスワードが違います",
        "access_token": "access-9", "refresh_token": "refresh-9",
        "access_token_end_date": "2099-01-02 09:00:00", "refresh_token_end_date": "2099-01-04 09:00:00"
    }));
    let err =
        s.rt.block_on(
            s.client
                .call("NE123456", "/api_v1_master_shop/checkconnect", &[], false),
        )
        .unwrap_err();
    assert!(
        matches!(err, NeError::Api { ref code, .. } if code == "012005"),
        "{err}"
    );
    assert_eq!(s.tokens(), ("access-9".into(), "refresh-9".into(), false));
    // An error without tokens leaves the stored pair alone.
    s.fake
        .state
        .lock()
        .unwrap()
        .scripted
        .push_back(json!({"result": "error", "code": "999999", "message": "system"}));
    let _ = s.rt.block_on(
        s.client
            .call("NE123456", "/api_v1_login_user/info", &[], false),
    );
    assert_eq!(s.tokens().0, "access-9");
}

#[test]
fn calls_for_one_account_never_overlap() {
    let s = setup();
    s.connect();
    s.fake.state.lock().unwrap().delay_ms = 40;
    s.rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let c = s.client.clone();
            tasks.push(tokio::spawn(async move {
                c.call("NE123456", "/api_v1_login_user/info", &[], false)
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let st = s.fake.state.lock().unwrap();
    assert_eq!(st.calls.len(), 9);
    assert_eq!(st.max_in_flight, 1, "calls overlapped");
}

#[test]
fn an_expired_access_token_with_a_live_refresh_token_completes_the_job() {
    let s = setup();
    s.connect();
    {
        let mut st = s.fake.state.lock().unwrap();
        st.live_access.remove("access-1");
        st.expired_access.insert("access-1".into());
    }
    s.rt.block_on(s.client.call(
        "NE123456",
        "/api_v1_master_goods/search",
        &[("goods_id-eq", "A1")],
        true,
    ))
    .unwrap();
    assert_eq!(
        s.tokens(),
        ("access-2".into(), "refresh-2".into(), false),
        "the rotated pair is kept"
    );
    // The next call uses the new pair and works (the old one is dead on NextEngine's side).
    s.rt.block_on(
        s.client
            .call("NE123456", "/api_v1_login_user/info", &[], false),
    )
    .unwrap();
    let (_, form) = s.fake.calls().pop().unwrap();
    assert!(form.contains(&("access_token".into(), "access-2".into())));
}

#[test]
fn an_expired_refresh_token_marks_the_account_and_raises_the_event_once() {
    let s = setup();
    s.connect();
    {
        let mut st = s.fake.state.lock().unwrap();
        st.live_access.clear();
        st.live_refresh.clear();
        st.expired_access.insert("access-1".into());
    }
    let err =
        s.rt.block_on(
            s.client
                .call("NE123456", "/api_v1_login_user/info", &[], false),
        )
        .unwrap_err();
    assert!(matches!(err, NeError::AuthRequired(_)), "{err}");
    assert!(s.tokens().2, "marked as needing a login");
    let before = s.fake.calls().len();
    let err =
        s.rt.block_on(
            s.client
                .call("NE123456", "/api_v1_login_user/info", &[], false),
        )
        .unwrap_err();
    assert!(matches!(err, NeError::AuthRequired(_)));
    assert_eq!(s.fake.calls().len(), before, "a marked account is not used");
    assert_eq!(s.events("nextengine.auth.required"), 1);
    // A new login brings it back.
    s.connect();
    assert!(!s.tokens().2);
    s.rt.block_on(
        s.client
            .call("NE123456", "/api_v1_login_user/info", &[], false),
    )
    .unwrap();
}

#[test]
fn redirect_also_means_a_new_login() {
    let s = setup();
    s.connect();
    s.fake
        .state
        .lock()
        .unwrap()
        .scripted
        .push_back(json!({"result": "redirect"}));
    let err =
        s.rt.block_on(
            s.client
                .call("NE123456", "/api_v1_login_user/info", &[], false),
        )
        .unwrap_err();
    assert!(matches!(err, NeError::AuthRequired(_)));
    assert_eq!(s.events("nextengine.auth.required"), 1);
}

#[test]
fn busy_answers_are_retried_with_backoff() {
    let s = setup();
    s.connect();
    {
        let mut st = s.fake.state.lock().unwrap();
        st.scripted
            .push_back(json!({"result": "error", "code": "003002", "message": "busy"}));
        st.scripted
            .push_back(json!({"result": "error", "code": "003001", "message": "busy"}));
    }
    let t = std::time::Instant::now();
    s.rt.block_on(
        s.client
            .call("NE123456", "/api_v1_login_user/info", &[], true),
    )
    .unwrap();
    assert_eq!(s.fake.calls().len(), 4, "login, two busy answers, success");
    assert!(
        t.elapsed() >= Duration::from_millis(60),
        "20 ms then 40 ms of back-off"
    );
    // Busy beyond the retries is an error, not an endless loop.
    {
        let mut st = s.fake.state.lock().unwrap();
        for _ in 0..4 {
            st.scripted
                .push_back(json!({"result": "error", "code": "003002", "message": "busy"}));
        }
    }
    let err =
        s.rt.block_on(
            s.client
                .call("NE123456", "/api_v1_login_user/info", &[], false),
        )
        .unwrap_err();
    assert!(matches!(err, NeError::Busy(_)), "{err}");
}

const NE_ADMIN: &str = "ne-admin-token-0123456789";

/// A daemon whose listener runs the NextEngine sign-in against `fake`.
fn sign_in_sandbox(fake: &FakeNextEngine) -> Sandbox {
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{NE_ADMIN}\"\n[nextengine]\nclient_id = \"client-1\"\nclient_secret = \"client-secret-1\"\nredirect_uri = \"https://example.test/auth/callback\"\napi_base = \"{}\"\n",
        fake.base()
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    sb
}

/// How many times the daemon asked NextEngine to exchange a sign-in for tokens.
fn token_exchanges(fake: &FakeNextEngine) -> usize {
    fake.calls()
        .iter()
        .filter(|(p, _)| p.starts_with("/api_neauth"))
        .count()
}

fn connected_accounts(sb: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&cli(&sb.config_path(), &["nextengine", "status", "--json"])).unwrap()
}

#[test]
fn the_listener_runs_the_sign_in_and_status_shows_no_tokens() {
    let fake = FakeNextEngine::start();
    let sb = sign_in_sandbox(&fake);
    let addr = sb.http_addr();
    // Nobody started a sign-in: a callback connects nothing.
    let r = http_get(addr, "/auth/callback?uid=u1&state=s1", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], "no_login_started");
    // Starting one needs the admin token.
    assert_eq!(http_get(addr, "/auth/ne", &[]).status, 401);
    let r = http_get(
        addr,
        "/auth/ne",
        &[("Authorization", &format!("Bearer {NE_ADMIN}"))],
    );
    assert_eq!(r.status, 302);
    assert!(r.header("location").unwrap().starts_with(
        "https://base.next-engine.org/users/sign_in/?client_id=client-1&redirect_uri="
    ));
    // The sign-in is bound to this browser by a short-lived cookie only it is sent on.
    let set = r.header("set-cookie").unwrap();
    for part in [
        "Max-Age=600",
        "Path=/auth",
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
    ] {
        assert!(set.contains(part), "{part} in {set}");
    }
    let cookie = set_cookie(&r);
    let r = http_get(
        addr,
        "/auth/callback?uid=u1&state=s1",
        &[("Cookie", &cookie)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["account"], "NE123456");
    assert!(
        r.header("set-cookie").unwrap().contains("Max-Age=0"),
        "the cookie is cleared"
    );
    let v = connected_accounts(&sb);
    assert_eq!(v[0]["id"], "NE123456");
    let text = v.to_string();
    assert!(
        !text.contains("access-1") && !text.contains("refresh-1"),
        "tokens never shown: {text}"
    );
    assert!(
        !sb.log().contains("access-1") && !sb.log().contains("client-secret-1"),
        "nor logged"
    );
    assert!(
        !sb.log().contains(cookie.split('=').nth(1).unwrap()),
        "nor the nonce"
    );
}

#[test]
fn a_callback_without_the_browsers_cookie_or_with_a_stale_or_used_one_connects_nothing() {
    let fake = FakeNextEngine::start();
    fake.state
        .lock()
        .unwrap()
        .companies
        .insert("intruder".into(), "NE999999".into());
    let sb = sign_in_sandbox(&fake);
    let addr = sb.http_addr();
    let start = || {
        let r = http_get(
            addr,
            "/auth/ne",
            &[("Authorization", &format!("Bearer {NE_ADMIN}"))],
        );
        assert_eq!(r.status, 302, "{}", r.text());
        r
    };
    let intrude = |cookie: Option<&str>| {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        http_get(addr, "/auth/callback?uid=intruder&state=s9", &headers)
    };
    // The operator starts a sign-in; another account of the same app races its callback in
    // from another browser: without the cookie, with a guessed one, with a malformed one.
    let operators = start();
    for cookie in [
        None,
        Some("tb_ne_login=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some("tb_ne_login=' OR 1=1 --"),
        Some("other=1"),
    ] {
        let r = intrude(cookie);
        assert_eq!(r.status, 403, "{cookie:?}: {}", r.text());
        assert_eq!(r.json()["code"], "no_login_started", "{cookie:?}");
    }
    // A stale sign-in (started longer ago than the window) is refused too.
    let stale = set_cookie(&start());
    sb.db()
        .execute(
            "UPDATE ne_logins SET started_at = '2000-01-01T00:00:00.000Z' WHERE id = (SELECT max(id) FROM ne_logins)",
            [],
        )
        .unwrap();
    let r = intrude(Some(stale.as_str()));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(token_exchanges(&fake), 0, "NextEngine was never asked");
    assert_eq!(connected_accounts(&sb), serde_json::json!([]));
    // The operator's own callback, in the operator's browser, connects the operator's account,
    // once: the same cookie again is refused and connects nothing.
    let operators = set_cookie(&operators);
    let r = http_get(
        addr,
        "/auth/callback?uid=u1&state=s1",
        &[("Cookie", &operators)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http_get(
        addr,
        "/auth/callback?uid=intruder&state=s9",
        &[("Cookie", &operators)],
    );
    assert_eq!(r.status, 403, "reused: {}", r.text());
    assert_eq!(token_exchanges(&fake), 1);
    let v = connected_accounts(&sb);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["id"], "NE123456");
}

#[test]
fn the_command_line_sign_in_prints_a_one_time_url_that_binds_the_browser_opening_it() {
    let fake = FakeNextEngine::start();
    let sb = sign_in_sandbox(&fake);
    let addr = sb.http_addr();
    let printed = cli(&sb.config_path(), &["nextengine", "login"]);
    assert!(
        printed
            .trim()
            .starts_with("https://example.test/auth/ne?ticket="),
        "beside the callback, through the same proxy: {printed}"
    );
    // The sign-in is not open to a callback until the URL is opened in a browser.
    let r = http_get(addr, "/auth/callback?uid=u1&state=s1", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    let opened = open_login_url(&sb, &printed);
    assert_eq!(opened.status, 302, "{}", opened.text());
    assert!(opened
        .header("location")
        .unwrap()
        .starts_with("https://base.next-engine.org/users/sign_in/?client_id=client-1"));
    let cookie = set_cookie(&opened);
    // The URL works once: opened again (by anyone), it binds nothing.
    let again = open_login_url(&sb, &printed);
    assert_eq!(again.status, 403, "{}", again.text());
    assert_eq!(again.json()["code"], "invalid_login_ticket");
    assert!(again.header("set-cookie").is_none());
    let r = http_get(
        addr,
        "/auth/callback?uid=u1&state=s1",
        &[("Cookie", &cookie)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(token_exchanges(&fake), 1);
    assert_eq!(connected_accounts(&sb)[0]["id"], "NE123456");
}

#[test]
fn uploads_send_the_exact_csv_and_the_queue_verdict_comes_back() {
    use turnbridge::nextengine::client::UploadKind;
    use turnbridge::nextengine::upload::{self, QueueState};
    let s = setup();
    s.connect();
    let goods =
        std::fs::read_to_string(root().join("tests/data/goods_upload_min_create.csv")).unwrap();
    let (csv, _) = upload::goods_csv(&goods).unwrap();
    let que =
        s.rt.block_on(
            s.client
                .upload("NE123456", UploadKind::Goods, &csv.unwrap()),
        )
        .unwrap();
    assert_eq!(que, "1");
    // Absolute levels become differences against what NextEngine holds now.
    {
        let mut st = s.fake.state.lock().unwrap();
        st.stock.insert("TEST_0001".into(), 10);
        st.stock.insert("TEST_0002".into(), 40);
        st.queue_status.insert("2".into(), "-1".into());
    }
    let (levels, _) = upload::stock_levels(
        "syohin_code,stock\nTEST_0001,60\nTEST_0002,10\n",
        "基本拠点",
    )
    .unwrap();
    let codes: Vec<String> = levels.iter().map(|l| l.code.clone()).collect();
    let current =
        s.rt.block_on(s.client.warehouse_levels("NE123456", "基本拠点", &codes))
            .unwrap();
    let csv = upload::stock_csv(&levels, &current).unwrap();
    let que2 =
        s.rt.block_on(
            s.client
                .upload("NE123456", UploadKind::WarehouseStock, &csv),
        )
        .unwrap();
    let uploads = s.fake.state.lock().unwrap().uploads.clone();
    assert_eq!(
        uploads[0],
        ("/api_v1_master_goods/upload".to_string(), goods)
    );
    assert_eq!(uploads[1].0, "/api_v1_warehouse_stock/upload");
    assert_eq!(
        uploads[1].1,
        std::fs::read_to_string(root().join("tests/data/warehouse_stock_upload.csv")).unwrap()
    );
    assert_eq!(
        s.rt.block_on(s.client.queue("NE123456", &que)).unwrap(),
        QueueState::Done
    );
    assert_eq!(
        s.rt.block_on(s.client.queue("NE123456", &que2)).unwrap(),
        QueueState::Failed("行エラーがあります".into())
    );
    let (_, form) = s
        .fake
        .calls()
        .into_iter()
        .find(|(p, _)| p.ends_with("/upload"))
        .unwrap();
    assert!(
        form.contains(&("data_type".into(), "csv".into()))
            && form.contains(&("wait_flag".into(), "1".into()))
    );
}

fn daemon_with_fake(fake: &FakeNextEngine) -> Sandbox {
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[nextengine]\nclient_id = \"client-1\"\nclient_secret = \"client-secret-1\"\napi_base = \"{}\"\npoll_ms = 100\n",
        fake.base()
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    let r = nextengine_sign_in(&sb, "u1", "s1");
    assert_eq!(r.status, 200, "{}", r.text());
    sb
}

#[test]
fn uploads_go_to_the_account_the_config_names_never_the_first_by_id() {
    let fake = FakeNextEngine::start();
    fake.state
        .lock()
        .unwrap()
        .companies
        .insert("u2".into(), "NE000002".into());
    let mut sb = daemon_with_fake(&fake);
    // A second company signs in: its id sorts before the first's.
    let r = nextengine_sign_in(&sb, "u2", "s2");
    assert_eq!(r.status, 200, "{}", r.text());
    let goods =
        std::fs::read_to_string(root().join("tests/data/goods_upload_min_create.csv")).unwrap();
    drop_into(&sb, "goods", "goods.csv", &goods);
    wait_for(20, "the reason nothing is uploaded", || {
        health_problems(&sb).iter().any(|(c, p)| {
            c == "nextengine"
                && p.contains("NE000002, NE123456")
                && p.contains("nextengine.account")
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(fake.state.lock().unwrap().uploads.is_empty(), "no guess");

    // Named in the config, it is the one used, with its own token.
    sb.terminate();
    let config = std::fs::read_to_string(sb.config_path())
        .unwrap()
        .replace("[nextengine]\n", "[nextengine]\naccount = \"NE123456\"\n");
    std::fs::write(sb.config_path(), config.clone()).unwrap();
    // NextEngine keeps the upload in its queue for now.
    fake.state
        .lock()
        .unwrap()
        .queue_status
        .insert("1".into(), "1".into());
    sb.start();
    wait_for(30, "the goods job queued", || {
        job_states(&sb) == vec![("goods.csv".to_string(), NeJobState::Queued)]
    });
    let token_of = |sb: &Sandbox, id: &str| -> String {
        let c = ne_accounts::credentials(&sb.store(), id).unwrap().unwrap();
        c.access.expose().to_string()
    };
    let token = token_of(&sb, "NE123456");
    let calls = fake.calls();
    let upload = calls
        .iter()
        .find(|(p, _)| p.ends_with("/upload"))
        .expect("an upload");
    assert!(
        upload
            .1
            .contains(&("access_token".to_string(), token.clone())),
        "uploaded with NE123456's token: {:?}",
        upload.1
    );

    // The operator names the other account: the queued upload is still followed in the
    // queue of the account it went to, not looked for in the other company's.
    sb.terminate();
    std::fs::write(
        sb.config_path(),
        config.replace("account = \"NE123456\"", "account = \"NE000002\""),
    )
    .unwrap();
    let before = fake.calls().len();
    sb.start();
    fake.state
        .lock()
        .unwrap()
        .queue_status
        .insert("1".into(), "2".into());
    wait_for(30, "the goods job done", || {
        job_states(&sb) == vec![("goods.csv".to_string(), NeJobState::Done)]
    });
    let followed: Vec<_> = fake.calls()[before..]
        .iter()
        .filter(|(p, _)| p.contains("system_que"))
        .cloned()
        .collect();
    assert!(!followed.is_empty());
    for (_, form) in followed {
        assert!(
            form.contains(&("access_token".to_string(), token_of(&sb, "NE123456"))),
            "followed with NE123456's token: {form:?}"
        );
    }
}

fn drop_into(sb: &Sandbox, kind: &str, name: &str, text: &str) {
    let dir = sb.path().join("spool/nextengine").join(kind);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.tmp")), text).unwrap();
    std::fs::rename(dir.join(format!("{name}.tmp")), dir.join(name)).unwrap();
}

fn jobs(sb: &Sandbox) -> Vec<NeJob> {
    ne_jobs::list(&sb.store()).unwrap()
}

/// Each job's file and state, by file name.
fn job_states(sb: &Sandbox) -> Vec<(String, NeJobState)> {
    jobs(sb)
        .into_iter()
        .map(|j| (j.source_name, j.state))
        .collect()
}

#[test]
fn spooled_goods_and_stock_files_become_uploads_followed_to_the_queue_verdict() {
    let fake = FakeNextEngine::start();
    {
        let mut st = fake.state.lock().unwrap();
        st.stock.insert("TEST_0001".into(), 10);
        st.stock.insert("TEST_0002".into(), 40);
    }
    let sb = daemon_with_fake(&fake);
    let goods =
        std::fs::read_to_string(root().join("tests/data/goods_upload_min_create.csv")).unwrap();
    drop_into(&sb, "goods", "goods.csv", &goods);
    drop_into(
        &sb,
        "stock",
        "levels.csv",
        "syohin_code,stock\nTEST_0001,60\nTEST_0002,10\nTEST_0003,0\n,5\n",
    );
    wait_for(30, "both jobs done", || {
        job_states(&sb)
            == vec![
                ("goods.csv".to_string(), NeJobState::Done),
                ("levels.csv".to_string(), NeJobState::Done),
            ]
    });
    let uploads = fake.state.lock().unwrap().uploads.clone();
    assert_eq!(uploads.len(), 2);
    let goods_upload = uploads.iter().find(|(p, _)| p.contains("goods")).unwrap();
    assert_eq!(goods_upload.1, goods, "exact goods CSV");
    let stock_upload = uploads
        .iter()
        .find(|(p, _)| p.contains("warehouse"))
        .unwrap();
    assert_eq!(
        stock_upload.1,
        std::fs::read_to_string(root().join("tests/data/warehouse_stock_upload.csv")).unwrap(),
        "exact stock CSV: +50, -30, and nothing for a level already at 0"
    );
    let rejected = files_in(&sb.rejected());
    let report = rejected
        .iter()
        .find(|p| p.to_string_lossy().ends_with("levels.csv.error.txt"))
        .unwrap();
    assert!(
        std::fs::read_to_string(report).unwrap().contains("row 5"),
        "the row without a code is reported"
    );
    let events = events_named(&sb.store(), "nextengine.upload.completed");
    assert_eq!(events.len(), 2);
    wait_for(20, "both sources archived", || sb.archived().len() == 2);
}

#[test]
fn killed_mid_upload_the_file_is_neither_lost_nor_uploaded_twice() {
    let fake = FakeNextEngine::start();
    let mut sb = daemon_with_fake(&fake);
    fake.state.lock().unwrap().delay_ms = 3000;
    drop_into(
        &sb,
        "goods",
        "slow.csv",
        "syohin_code,baika_tnk\nTEST_0001,1800\n",
    );
    wait_for(30, "the upload to reach NextEngine", || {
        fake.state.lock().unwrap().uploads.len() == 1
    });
    sb.kill(); // before NextEngine's answer (and its queue id) came back
    assert_eq!(
        job_states(&sb),
        vec![("slow.csv".to_string(), NeJobState::Uploading)]
    );
    fake.state.lock().unwrap().delay_ms = 0;
    sb.start();
    wait_for(30, "the job to finish", || {
        job_states(&sb) == vec![("slow.csv".to_string(), NeJobState::Done)]
    });
    assert_eq!(
        fake.state.lock().unwrap().uploads.len(),
        1,
        "not uploaded twice"
    );
    let que = jobs(&sb).remove(0).que_id;
    assert_eq!(
        que.as_deref(),
        Some("1"),
        "the queue id found in NextEngine's queue was adopted"
    );
    wait_for(20, "the file archived, not lost", || {
        sb.archived().len() == 1
    });
}

#[test]
fn a_refused_upload_is_recorded_with_nextengines_code_and_json_input_works() {
    let fake = FakeNextEngine::start();
    let sb = daemon_with_fake(&fake);
    fake.state.lock().unwrap().scripted_upload.push_back(json!({
        "result": "error", "code": "020010", "message": "CSVの形式が正しくありません",
        "access_token": "access-1", "refresh_token": "refresh-1"
    }));
    drop_into(
        &sb,
        "goods",
        "bad.json",
        r#"[{"syohin_code":"TEST_0001","baika_tnk":1800}]"#,
    );
    wait_for(30, "the job to fail", || {
        job_states(&sb) == vec![("bad.json".to_string(), NeJobState::Failed)]
    });
    let result = jobs(&sb).remove(0).result.unwrap_or_default();
    assert!(result.contains("020010"), "{result}");
    let report = files_in(&sb.rejected())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("bad.json.error.txt"))
        .expect("a report for the refused upload");
    assert!(std::fs::read_to_string(report).unwrap().contains("020010"));
    drop_into(
        &sb,
        "goods",
        "good.json",
        r#"[{"syohin_code":"TEST_0001","baika_tnk":1800}]"#,
    );
    wait_for(30, "the JSON job", || {
        job_states(&sb)
            .iter()
            .any(|(n, s)| n == "good.json" && *s == NeJobState::Done)
    });
    let uploads = fake.state.lock().unwrap().uploads.clone();
    assert_eq!(uploads.len(), 1, "the refused upload was not retried");
    assert_eq!(uploads[0].1, "syohin_code,baika_tnk\nTEST_0001,1800\n");
}

#[test]
fn the_orders_command_summarizes_stock_allocation() {
    let fake = FakeNextEngine::start();
    fake.state.lock().unwrap().rows.insert(
        "/api_v1_receiveorder_row/search".into(),
        json!([
            {"receive_order_row_receive_order_id": "101", "receive_order_row_quantity": "2", "receive_order_row_stock_allocation_quantity": "2"},
            {"receive_order_row_receive_order_id": "102", "receive_order_row_quantity": "3", "receive_order_row_stock_allocation_quantity": "1"}
        ]),
    );
    let sb = daemon_with_fake(&fake);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(["nextengine", "orders", "--json", "--config"])
        .arg(sb.config_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["orders"][0]["status"], "引当済");
    assert_eq!(v["orders"][1]["status"], "一部引当");
    let (path, form) = fake.calls().pop().unwrap();
    assert_eq!(path, "/api_v1_receiveorder_row/search");
    assert!(form
        .iter()
        .any(|(k, v)| k == "fields" && v.contains("receive_order_row_stock_allocation_quantity")));
}

#[test]
fn company_inventory_levels_reach_nextengine_without_echoing_its_own() {
    let fake = FakeNextEngine::start();
    fake.state.lock().unwrap().stock.insert("G1".into(), 5);
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[nextengine]\nclient_id = \"client-1\"\nclient_secret = \"client-secret-1\"\napi_base = \"{}\"\npoll_ms = 100\nts_max_age_secs = 999999999\n\
         [[nextengine.shops]]\nstore_account = \"samplestore\"\nauth_key = \"aaa\"\n\
         [company_webhook]\nsecret = \"company-secret-0123\"\npush_inventory_to_nextengine = true\n",
        fake.base()
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    let addr = sb.http_addr();
    assert_eq!(nextengine_sign_in(&sb, "u1", "s1").status, 200);
    // NextEngine says G1 is at 5 ...
    let sig = {
        use md5::{Digest, Md5};
        let d = Md5::digest(b"StoreAccount=samplestore&Code=G1&Stock=5&ts=20261126120000aaa");
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let r = http_get(addr, &format!("/UpdateStock.php?StoreAccount=samplestore&Code=G1&Stock=5&ts=20261126120000&.sig={sig}"), &[]);
    assert_eq!(r.status, 200);
    // ... so the company system repeating 5 is not pushed back, while 8 is.
    let push = |q: i64| {
        let body = format!(
            r#"{{"type":"inventory.updated","inventory":{{"productId":"G1","quantity":{q}}}}}"#
        );
        let r = http_post(
            addr,
            "/api/sync/company/webhook",
            &[("X-Webhook-Secret", "company-secret-0123")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    push(5);
    push(8);
    wait_for(30, "the stock upload", || {
        !fake.state.lock().unwrap().uploads.is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let uploads = fake.state.lock().unwrap().uploads.clone();
    assert_eq!(uploads.len(), 1, "the echo was suppressed: {uploads:?}");
    assert_eq!(
        uploads[0].1,
        "kyoten_mei,syohin_code,kasan_su,gensan_su,kyoten_syohin_sakujyo,nyusyukko_riyu\n基本拠点,G1,3,,,在庫数調整のため\n"
    );
    assert!(sb.log().contains("not echoed back"));
}

#[test]
fn keep_alive_calls_each_account_and_warns_before_the_refresh_token_lapses() {
    let s = setup();
    s.connect();
    assert_eq!(s.rt.block_on(s.client.keep_alive()).unwrap(), 1);
    let (path, _) = s.fake.calls().pop().unwrap();
    assert_eq!(path, "/api_v1_login_user/info");
    assert_eq!(s.events("nextengine.auth.expiring"), 0);
    // The fake's end dates are far away; its next answer says this account's refresh token
    // lapses in two hours (Japan time, as NextEngine writes it).
    let (access, refresh, _) = s.tokens();
    let jst = |hours: i64| {
        (chrono::Utc::now() + chrono::Duration::hours(9 + hours))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    s.fake.state.lock().unwrap().scripted.push_back(json!({
        "result": "success", "data": [],
        "access_token": access, "refresh_token": refresh,
        "access_token_end_date": jst(1), "refresh_token_end_date": jst(2),
    }));
    s.rt.block_on(s.client.keep_alive()).unwrap();
    assert_eq!(s.events("nextengine.auth.expiring"), 1);
    let status = ne_accounts::status(&open_read_only(&s.db).unwrap(), "NE123456")
        .unwrap()
        .unwrap();
    let left = status.refresh_expires_at.utc() - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(110) && left <= chrono::Duration::hours(2),
        "the end date NextEngine sent, read as Japan time: {left:?}"
    );
}

/// A system error (999999) leaves an upload for the next pass, which looks for it in the
/// queue first; another job's upload queued meanwhile must not be taken for it.
#[test]
fn after_a_system_error_an_upload_never_adopts_another_jobs_queue_entry() {
    let fake = FakeNextEngine::start();
    let sb = daemon_with_fake(&fake);
    fake.state
        .lock()
        .unwrap()
        .scripted_upload
        .push_back(json!({"result": "error", "code": "999999", "message": "system error"}));
    let goods =
        std::fs::read_to_string(root().join("tests/data/goods_upload_min_create.csv")).unwrap();
    let other = goods.replace("TEST_0001", "TEST_9001");
    assert_ne!(goods, other);
    drop_into(&sb, "goods", "a.csv", &goods);
    drop_into(&sb, "goods", "b.csv", &other);
    wait_for(30, "both jobs done", || {
        job_states(&sb)
            == vec![
                ("a.csv".to_string(), NeJobState::Done),
                ("b.csv".to_string(), NeJobState::Done),
            ]
    });
    let uploads: Vec<String> = fake
        .state
        .lock()
        .unwrap()
        .uploads
        .iter()
        .map(|(_, csv)| csv.clone())
        .collect();
    assert_eq!(uploads.len(), 2, "each file uploaded once: {uploads:?}");
    assert!(uploads.contains(&goods) && uploads.contains(&other));
    let ids: std::collections::BTreeSet<String> =
        jobs(&sb).into_iter().filter_map(|j| j.que_id).collect();
    assert_eq!(ids.len(), 2, "two queue entries, one per job");
}

/// Sends the daemon SIGHUP and waits for its `n`th "configuration reloaded".
fn reload(sb: &Sandbox, n: usize) {
    let pid = sb.child.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for(20, "the reload", || {
        sb.log().matches("configuration reloaded").count() == n
    });
}

#[test]
fn credentials_added_by_a_reload_start_the_uploads_without_a_restart() {
    let fake = FakeNextEngine::start();
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[nextengine]\napi_base = \"{}\"\npoll_ms = 100\n",
        fake.base()
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    let goods =
        std::fs::read_to_string(root().join("tests/data/goods_upload_min_create.csv")).unwrap();
    drop_into(&sb, "goods", "goods.csv", &goods);
    // No client: NextEngine is off, the file waits in the spool.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(job_states(&sb).is_empty());
    assert!(sb.path().join("spool/nextengine/goods/goods.csv").exists());

    let config = std::fs::read_to_string(sb.config_path()).unwrap().replace(
        "[nextengine]\n",
        "[nextengine]\nclient_id = \"client-1\"\nclient_secret = \"client-secret-1\"\n",
    );
    std::fs::write(sb.config_path(), config).unwrap();
    reload(&sb, 1);
    // The sign-in uses the reloaded client too.
    let r = nextengine_sign_in(&sb, "u1", "s1");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(30, "the goods job done", || {
        job_states(&sb) == vec![("goods.csv".to_string(), NeJobState::Done)]
    });
    let uploads = fake.state.lock().unwrap().uploads.clone();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].1, goods);
    assert_eq!(
        sb.log().matches(" starting config=").count(),
        1,
        "never restarted"
    );
}

#[test]
fn naming_the_account_in_a_reload_starts_the_uploads_without_a_restart() {
    let fake = FakeNextEngine::start();
    fake.state
        .lock()
        .unwrap()
        .companies
        .insert("u2".into(), "NE000002".into());
    let sb = daemon_with_fake(&fake);
    let r = nextengine_sign_in(&sb, "u2", "s2");
    assert_eq!(r.status, 200, "{}", r.text());
    let goods =
        std::fs::read_to_string(root().join("tests/data/goods_upload_min_create.csv")).unwrap();
    drop_into(&sb, "goods", "goods.csv", &goods);
    wait_for(20, "the reason nothing is uploaded", || {
        health_problems(&sb)
            .iter()
            .any(|(c, p)| c == "nextengine" && p.contains("nextengine.account"))
    });
    assert!(fake.state.lock().unwrap().uploads.is_empty());

    let config = std::fs::read_to_string(sb.config_path())
        .unwrap()
        .replace("[nextengine]\n", "[nextengine]\naccount = \"NE000002\"\n");
    std::fs::write(sb.config_path(), config).unwrap();
    reload(&sb, 1);
    wait_for(30, "the goods job done", || {
        job_states(&sb) == vec![("goods.csv".to_string(), NeJobState::Done)]
    });
    let token: String = sb
        .db()
        .query_row(
            "SELECT access_token FROM nextengine_accounts WHERE id = 'NE000002'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let calls = fake.calls();
    let upload = calls
        .iter()
        .find(|(p, _)| p.ends_with("/upload"))
        .expect("an upload");
    assert!(
        upload.1.contains(&("access_token".to_string(), token)),
        "uploaded with NE000002's token: {:?}",
        upload.1
    );
    assert_eq!(
        sb.log().matches(" starting config=").count(),
        1,
        "never restarted"
    );
}
