//! A fake NextEngine API server for the tests: it speaks NextEngine's JSON (`result`
//! success / error / redirect, codes, both tokens and their end dates on every answer that
//! has them) and follows its token rules: a call with an expired access token and a live
//! refresh token succeeds and rotates both; the old pair is dead at once.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

#[derive(Default)]
pub struct State {
    pub live_access: HashSet<String>,
    pub expired_access: HashSet<String>,
    pub live_refresh: HashSet<String>,
    pub issued: u32,
    /// Answers to give instead of the normal behaviour, first in first out.
    pub scripted: VecDeque<Value>,
    /// The same, for upload calls only.
    pub scripted_upload: VecDeque<Value>,
    pub calls: Vec<(String, Vec<(String, String)>)>,
    pub in_flight: u32,
    pub max_in_flight: u32,
    pub delay_ms: u64,
    /// Uploads received: (path, CSV text), in order; the queue id is the position + 1.
    pub uploads: Vec<(String, String)>,
    /// When each upload's queue entry was created (Japan time, NextEngine's format).
    pub upload_at: Vec<String>,
    /// que_status_id to report per queue id (default "2").
    pub queue_status: std::collections::HashMap<String, String>,
    /// Free stock per goods code in 基本拠点 (warehouse id 1).
    pub stock: std::collections::HashMap<String, i64>,
    /// Rows returned by other search paths.
    pub rows: std::collections::HashMap<String, Value>,
    /// While set, every call is answered with this HTTP status and (non-JSON) body, as a
    /// maintenance page or a failing proxy would; nothing is recorded but the call.
    pub down: Option<(u16, String)>,
    /// The company each sign-in uid belongs to (`company_ne_id`); NE123456 when not listed.
    pub companies: std::collections::HashMap<String, String>,
}

pub struct FakeNextEngine {
    pub addr: std::net::SocketAddr,
    pub state: Arc<Mutex<State>>,
}

fn form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                let s = s.replace('+', " ");
                let b = s.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'%' && i + 2 < b.len() {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            (dec(k), dec(v))
        })
        .collect()
}

impl FakeNextEngine {
    pub fn start() -> FakeNextEngine {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve(stream, st));
            }
        });
        FakeNextEngine { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.state.lock().unwrap().calls.clone()
    }
}

fn tokens(st: &mut State) -> (String, String) {
    st.issued += 1;
    let (a, r) = (
        format!("access-{}", st.issued),
        format!("refresh-{}", st.issued),
    );
    st.live_access.insert(a.clone());
    st.live_refresh.insert(r.clone());
    (a, r)
}

fn with_tokens(mut v: Value, a: &str, r: &str) -> Value {
    v["access_token"] = json!(a);
    v["refresh_token"] = json!(r);
    v["access_token_end_date"] = json!("2099-01-02 09:00:00");
    v["refresh_token_end_date"] = json!("2099-01-04 09:00:00");
    v
}

fn answer(path: &str, f: &[(String, String)], st: &mut State) -> Value {
    let get = |k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if path.starts_with("/api_neauth") {
        if get("uid").is_empty() || get("state").is_empty() || get("client_secret").is_empty() {
            return json!({"result": "error", "code": "001001", "message": "uid missing"});
        }
        let (a, r) = tokens(st);
        let company = st
            .companies
            .get(&get("uid"))
            .cloned()
            .unwrap_or_else(|| "NE123456".to_string());
        return with_tokens(
            json!({"result": "success", "company_ne_id": company, "company_name": "テスト株式会社", "uid": get("uid")}),
            &a,
            &r,
        );
    }
    if path.ends_with("/upload") {
        if let Some(v) = st.scripted_upload.pop_front() {
            return v;
        }
    }
    if let Some(v) = st.scripted.pop_front() {
        return v;
    }
    let (access, refresh) = (get("access_token"), get("refresh_token"));
    if st.live_access.contains(&access) {
        let data = match path {
            p if p.ends_with("/upload") => {
                st.uploads.push((p.to_string(), get("data")));
                let jst = chrono::Utc::now() + chrono::Duration::hours(9);
                st.upload_at
                    .push(jst.format("%Y-%m-%d %H:%M:%S").to_string());
                let id = st.uploads.len().to_string();
                return with_tokens(
                    json!({"result": "success", "que_id": id}),
                    &access,
                    &refresh,
                );
            }
            "/api_v1_system_que/search" if !get("que_creation_date-gte").is_empty() => {
                // Every queue entry created at or after the time (the format sorts as text).
                let since = get("que_creation_date-gte");
                let rows: Vec<Value> = st
                    .upload_at
                    .iter()
                    .enumerate()
                    .filter(|(_, at)| **at >= since)
                    .map(|(i, at)| json!({"que_id": (i + 1).to_string(), "que_creation_date": at}))
                    .collect();
                Value::Array(rows)
            }
            "/api_v1_system_que/search" => {
                let id = get("que_id-eq");
                let status = st
                    .queue_status
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| "2".into());
                let message = if status == "-1" {
                    "行エラーがあります"
                } else {
                    ""
                };
                json!([{"que_id": id, "que_status_id": status, "que_message": message}])
            }
            "/api_v1_warehouse_base/search" => {
                json!([{"warehouse_id": "1", "warehouse_name": "基本拠点"}])
            }
            "/api_v1_warehouse_stock/search" => {
                let code = get("warehouse_stock_goods_id-eq");
                match st.stock.get(&code) {
                    Some(n) => {
                        json!([{"warehouse_stock_goods_id": code, "warehouse_stock_free_quantity": n.to_string()}])
                    }
                    None => json!([]),
                }
            }
            p => st
                .rows
                .get(p)
                .cloned()
                .unwrap_or_else(|| json!([{"pic_ne_id": "1"}])),
        };
        let count = data.as_array().map_or(0, |a| a.len()).to_string();
        return with_tokens(
            json!({"result": "success", "count": count, "data": data}),
            &access,
            &refresh,
        );
    }
    if st.expired_access.contains(&access) && st.live_refresh.contains(&refresh) {
        // Rotation: the old pair dies, the call completes with new tokens.
        st.expired_access.remove(&access);
        st.live_refresh.remove(&refresh);
        let (a, r) = tokens(st);
        return with_tokens(
            json!({"result": "success", "count": "1", "data": []}),
            &a,
            &r,
        );
    }
    if st.expired_access.contains(&access) {
        return json!({"result": "error", "code": "002004", "message": "refresh_token is invalid"});
    }
    json!({"result": "error", "code": "002002", "message": "access_token is invalid"})
}

fn serve(stream: std::net::TcpStream, st: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let f = form(&String::from_utf8_lossy(&body));
        // The answer is decided (and an upload recorded) when the request arrives; the reply
        // goes out after the delay, so a client killed meanwhile never sees it.
        let (delay, v) = {
            let mut s = st.lock().unwrap();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            s.calls.push((path.clone(), f.clone()));
            match s.down.clone() {
                Some(down) => (s.delay_ms, Err(down)),
                None => (s.delay_ms, Ok(answer(&path, &f, &mut s))),
            }
        };
        std::thread::sleep(Duration::from_millis(delay));
        st.lock().unwrap().in_flight -= 1;
        let (status, kind, body) = match v {
            Ok(v) => (200, "application/json", v.to_string()),
            Err((status, page)) => (status, "text/html; charset=utf-8", page),
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
