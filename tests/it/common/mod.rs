//! Helpers shared by the integration tests: fixture paths, schema validation with xmllint and
//! Turnkey's official check,
//! and a harness that runs the real daemon binary on temporary folders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use turnbridge::store::{JobState, MessageState};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// `../shared` beside the repository: the official MIG 4.1 files and Turnkey's own tools,
/// which the tests use in place (the repository keeps no copy of them).
pub fn shared() -> PathBuf {
    root().join("../shared")
}

/// The folder of XSDs the tests validate against: `TURNBRIDGE_XSD_DIR`, or the official
/// MIG 4.1 tree's `v41` folder in `../shared`.
pub fn xsd_dir() -> PathBuf {
    std::env::var_os("TURNBRIDGE_XSD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared().join("mig41/official/xsd/v41"))
}

/// The repository's own schemas (embedded in the simulator), which must agree with the
/// official ones.
pub fn repo_xsd_dir() -> PathBuf {
    root().join("schemas/mig41")
}

/// Validates an XML file against `<xsd_dir>/<MSG>.xsd` with xmllint; returns xmllint's output
/// on failure.
pub fn xmllint(xml: &Path, message_type: &str) -> Result<(), String> {
    xmllint_in(&xsd_dir(), xml, message_type)
}

/// Validates an XML file against `<dir>/<MSG>.xsd` with xmllint.
pub fn xmllint_in(dir: &Path, xml: &Path, message_type: &str) -> Result<(), String> {
    let xsd = dir.join(format!("{message_type}.xsd"));
    assert!(
        xsd.is_file(),
        "{} is missing (is ../shared beside the repository?)",
        xsd.display()
    );
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(xml)
        .output()
        .expect("xmllint is installed (run scripts/install-test-deps)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One file's line from Turnkey's official check (`../shared/turnkey/bin/check`): the
/// official XSD and Turnkey's own program validator, the two checks UpCast runs.
#[derive(Debug, Clone)]
pub struct OfficialVerdict {
    pub file: PathBuf,
    pub xsd_ok: bool,
    pub prog_ok: bool,
    /// The checker's whole line (for messages).
    pub line: String,
}

impl OfficialVerdict {
    pub fn ok(&self) -> bool {
        self.xsd_ok && self.prog_ok
    }
}

/// Runs the official check on many files in one JVM; one verdict per file, in order.
/// Panics with a clear message when the tools are not there (never skips).
pub fn official_check(files: &[PathBuf]) -> Vec<OfficialVerdict> {
    let check = shared().join("turnkey/bin/check");
    assert!(
        check.is_file(),
        "{} is missing: the tests need ../shared/turnkey beside the repository",
        check.display()
    );
    let mut out = Vec::with_capacity(files.len());
    // Bounded argument lists: a few hundred files per JVM start.
    for chunk in files.chunks(500) {
        let run = Command::new(&check)
            .args(chunk)
            .env("TKRUN_BUILD", root().join("target/turnkey-runner"))
            .output()
            .expect("run ../shared/turnkey/bin/check (scripts/install-test-deps builds it)");
        let stdout = String::from_utf8_lossy(&run.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            chunk.len(),
            "the official check printed {} lines for {} files (stderr: {})",
            lines.len(),
            chunk.len(),
            String::from_utf8_lossy(&run.stderr)
        );
        for (file, line) in chunk.iter().zip(lines) {
            let cols: Vec<&str> = line.split('\t').collect();
            let name = file.file_name().unwrap().to_string_lossy();
            assert_eq!(cols[0], name, "the official check answers in order");
            out.push(OfficialVerdict {
                file: file.clone(),
                xsd_ok: cols.get(1) == Some(&"XSD OK"),
                prog_ok: cols.get(2) == Some(&"PROG OK"),
                line: line.to_string(),
            });
        }
    }
    out
}

/// Waits until `f` returns true, polling every 20 ms, or panics after `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {secs}s waiting for {what}");
}

/// Files (not folders) directly in `dir`, sorted; an absent folder is empty.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_below(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A daemon on temporary folders: `spool/einvoice`, `state`, and a flat Turnkey tree.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub extra_config: String,
    /// Whole sections appended to the config.
    pub tail: String,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::with_config("")
    }

    /// `extra` is appended to the `[einvoice]` section.
    pub fn with_config(extra: &str) -> Sandbox {
        Sandbox::with_sections(extra, "")
    }

    /// `extra` goes into `[einvoice]`; `tail` (whole sections) at the end of the config.
    pub fn with_sections(extra: &str, tail: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let sb = Sandbox {
            dir,
            child: None,
            extra_config: extra.to_string(),
            tail: tail.to_string(),
        };
        std::fs::write(sb.config_path(), sb.config_text()).unwrap();
        sb
    }

    fn config_text(&self) -> String {
        format!(
            "[paths]\nspool = \"spool\"\nstate = \"state\"\n\
             [einvoice]\nsettle_ms = 100\nrescan_secs = 1\n{}\n\
             [turnkey]\ninbox = \"turnkey/INBOX\"\noutbox = \"turnkey/OUTBOX\"\nerror = \"turnkey/ERROR\"\n\
             [log]\nlevel = \"debug\"\nformat = \"text\"\n{}{}",
            self.extra_config,
            if self.tail.contains("[http]") { "" } else { "[http]\nlisten = \"127.0.0.1:0\"\n" },
            self.tail
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_path(&self) -> PathBuf {
        self.path().join("turnbridge.toml")
    }
    pub fn spool(&self) -> PathBuf {
        self.path().join("spool/einvoice")
    }
    pub fn inbox(&self) -> PathBuf {
        self.path().join("turnkey/INBOX")
    }
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }
    pub fn rejected(&self) -> PathBuf {
        self.state().join("rejected")
    }
    pub fn work(&self) -> PathBuf {
        self.state().join("work")
    }
    pub fn archived(&self) -> Vec<PathBuf> {
        files_below(&self.state().join("archive"))
    }
    pub fn inbox_files(&self) -> Vec<PathBuf> {
        files_in(&self.inbox())
    }
    pub fn log_path(&self) -> PathBuf {
        self.path().join("daemon.log")
    }

    pub fn start(&mut self) {
        self.spawn(None);
    }

    /// Starts the daemon as another user, the sandbox folder given to that user (only root
    /// can): file permissions then apply to the daemon as they do to a service user.
    pub fn start_as(&mut self, uid: u32, gid: u32) {
        std::fs::create_dir_all(self.spool()).unwrap();
        let ok = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(self.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown the sandbox to {uid}:{gid}");
        self.spawn(Some((uid, gid)));
    }

    /// Starts the daemon as another user again, leaving file owners as they are (only root
    /// can).
    pub fn restart_as(&mut self, uid: u32, gid: u32) {
        self.spawn(Some((uid, gid)));
    }

    fn spawn(&mut self, user: Option<(u32, u32)>) {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(self.spool()).unwrap();
        let starts = self.log().matches(" starting").count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnbridge"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some((uid, gid)) = user {
            // std drops root's supplementary groups when it changes the user.
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("start turnbridge");
        self.child = Some(child);
        wait_for(20, "the daemon to start", || {
            self.log().matches(" starting").count() > starts || self.exited()
        });
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drops a file into the spool the way a careful writer does: write a `.tmp`, rename.
    pub fn drop_file(&self, name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(self.spool()).unwrap();
        let tmp = self.spool().join(format!("{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.spool().join(name)).unwrap();
    }

    /// The address the daemon's listener bound (it is configured with port 0).
    pub fn http_addr(&self) -> std::net::SocketAddr {
        let mut addr = None;
        wait_for(20, "the listener address in the log", || {
            addr = self.log().lines().find_map(|l| {
                let i = l.find("http listening on http://")?;
                let rest = &l[i + "http listening on http://".len()..];
                rest.split_whitespace().next()?.parse().ok()
            });
            addr.is_some()
        });
        addr.unwrap()
    }

    /// The database, read-only, for the store's own read functions
    /// (`turnbridge::store::{jobs, messages, events, feedback, deliveries, ...}`); `None`
    /// before it exists.
    pub fn try_store(&self) -> Option<rusqlite::Connection> {
        turnbridge::report::open_read_only(&self.state().join("turnbridge.db")).ok()
    }

    /// [`Sandbox::try_store`], once the database exists.
    pub fn store(&self) -> rusqlite::Connection {
        self.try_store().expect("the database exists")
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.state().join("turnbridge.db")).unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stock levels the daemon stored from NextEngine's callbacks.
pub fn stored_levels(sb: &Sandbox) -> i64 {
    turnbridge::store::inbound::stock_counts(&sb.store())
        .unwrap()
        .accepted
}

/// Company pushes the daemon stored: how many, and of how many types.
pub fn stored_pushes(sb: &Sandbox) -> (i64, usize) {
    let by_type = turnbridge::store::inbound::company_events_by_type(&sb.store(), 1000).unwrap();
    (by_type.iter().map(|t| t.stored).sum(), by_type.len())
}

/// How many messages are in `state`, of every type.
pub fn messages_in(conn: &rusqlite::Connection, state: turnbridge::store::MessageState) -> usize {
    turnbridge::store::messages::count_by_type_and_state(conn)
        .unwrap()
        .into_iter()
        .filter(|(_, s, _)| *s == state)
        .map(|(_, _, n)| n as usize)
        .sum()
}

/// The payloads of the events of one name, oldest first.
pub fn events_named(conn: &rusqlite::Connection, name: &str) -> Vec<serde_json::Value> {
    let name: turnbridge::events::EventName = name.parse().unwrap();
    turnbridge::store::events::payloads(conn, name).unwrap()
}

/// The newest job of the spool files of this name.
pub fn job_named(conn: &rusqlite::Connection, name: &str) -> Option<turnbridge::store::Job> {
    turnbridge::store::jobs::by_source_name(conn, name)
        .ok()?
        .pop()
}

/// A CSV batch of `n` valid consumer invoices numbered from `first` (one product line each).
pub fn batch_csv(prefix: &str, first: u32, n: u32) -> String {
    let mut s = String::from(
        "MessageType,InvoiceNumber,InvoiceDate,InvoiceTime,Seller.Identifier,Seller.Name,Seller.Address,Buyer.Identifier,Buyer.Name,InvoiceType,DonateMark,PrintMark,RandomNumber,Item.Description,Item.Quantity,Item.UnitPrice,Item.TaxType,Item.Amount,Item.SequenceNumber,SalesAmount,FreeTaxSalesAmount,ZeroTaxSalesAmount,TaxType,TaxRate,TaxAmount,TotalAmount\n",
    );
    for i in first..first + n {
        s.push_str(&format!(
            "F0401,{prefix}{i:08},20261126,10:00:00,28080623,台灣好茶股份有限公司,台北市信義區松高路1號,0000000000,消費者,07,0,Y,{:04},鮮奶茶,2,50,1,100,1,100,0,0,1,0.05,0,100\n",
            i % 10000
        ));
    }
    s
}

/// NextEngine's published UpdateStock signature, written again here so the tests do not trust
/// the product's: MD5 of `StoreAccount=…&Code=…&Stock=…&ts=…` with the auth key appended. The
/// values are the bytes as sent (percent-decoded), so a non-UTF-8 code can be signed too.
pub fn sign(
    account: impl AsRef<[u8]>,
    code: impl AsRef<[u8]>,
    stock: impl AsRef<[u8]>,
    ts: impl AsRef<[u8]>,
    key: &str,
) -> String {
    use md5::Digest;
    let mut m = md5::Md5::new();
    for part in [
        b"StoreAccount=".as_slice(),
        account.as_ref(),
        b"&Code=",
        code.as_ref(),
        b"&Stock=",
        stock.as_ref(),
        b"&ts=",
        ts.as_ref(),
        key.as_bytes(),
    ] {
        m.update(part);
    }
    m.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `ts` as NextEngine sends it: Japan time, `hours` from now (NextEngine sends about a day
/// ahead).
pub fn ts_ahead(hours: i64) -> String {
    let jst = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
    (chrono::Utc::now() + chrono::Duration::hours(hours))
        .with_timezone(&jst)
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// The `<Processed>` value of an UpdateStock reply (EUC-JP XML).
pub fn processed(body: &[u8]) -> String {
    let (text, _, _) = encoding_rs::EUC_JP.decode(body);
    let start = text.find("<Processed>").expect("a Processed element") + "<Processed>".len();
    text[start..text.find("</Processed>").unwrap()].to_string()
}

/// A response read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw request bytes on a new connection (the request should say `Connection: close`)
/// and reads the whole response.
pub fn http_raw(addr: std::net::SocketAddr, request: &[u8]) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> HttpResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

/// `GET path` with optional extra header lines.
pub fn http_get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    http_raw(addr, req.as_bytes())
}

/// `POST path` with a body and optional extra header lines.
pub fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    http_send(addr, "POST", path, headers, body)
}

/// Any method, with a JSON body and optional extra header lines.
pub fn http_send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    http_raw(addr, &bytes)
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::SystemTime,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A throwaway webhook receiver on 127.0.0.1 that records every request and answers with a
/// status the test can change.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    pub status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    /// Milliseconds to wait before answering.
    pub delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Extra header lines sent with every answer (e.g. `Retry-After: 1`).
    pub extra: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Receiver {
    pub fn start(status: u16) -> Receiver {
        Receiver::start_on("127.0.0.1:0", status)
    }

    pub fn start_on(addr: &str, status: u16) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(status));
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let extra = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (st, g, dl, ex) = (status.clone(), got.clone(), delay_ms.clone(), extra.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (st, g, dl, ex) = (st.clone(), g.clone(), dl.clone(), ex.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            reader.read_line(&mut h).unwrap();
                            let h = h.trim_end().to_string();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.push((k.trim().to_string(), v.trim().to_string()));
                            }
                        }
                        let len: usize = headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .map(|(_, v)| v.parse().unwrap())
                            .unwrap_or(0);
                        let mut body = vec![0; len];
                        reader.read_exact(&mut body).unwrap();
                        let code = st.load(Ordering::SeqCst);
                        g.lock().unwrap().push(Received {
                            at: std::time::SystemTime::now(),
                            headers,
                            body,
                            answered: code,
                        });
                        std::thread::sleep(Duration::from_millis(dl.load(Ordering::SeqCst)));
                        let extra = ex.lock().unwrap().clone();
                        let reply =
                            format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\n{extra}\r\nok");
                        if stream.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            status,
            got,
            delay_ms,
            extra,
        }
    }

    pub fn set_status(&self, code: u16) {
        self.status.store(code, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Runs `promtool check metrics` on a scrape; `false` (with a printed reason) when promtool is
/// not installed, panics when it finds a problem.
pub fn promtool_check(text: &str) -> bool {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!(
            "skipped the promtool check: promtool is not installed (apt-get install prometheus)"
        );
        return false;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
    true
}

/// Records every name that ever appears in a folder until stopped.
pub struct Observer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    pub fn start(dir: &Path) -> Observer {
        let dir = dir.to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let (s, n) = (stop.clone(), seen.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    let mut names = n.lock().unwrap();
                    for e in rd.flatten() {
                        names.insert(e.file_name().to_string_lossy().into_owned());
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        Observer {
            stop,
            seen,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> std::collections::BTreeSet<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.seen.lock().unwrap().clone()
    }
}

/// Registers a webhook endpoint through the admin API; returns its id and signing secret.
pub fn register_webhook(
    addr: std::net::SocketAddr,
    admin_token: &str,
    url: &str,
    events: &[&str],
    secret: Option<&str>,
) -> (String, String) {
    let mut body =
        serde_json::json!({"url": url, "events": events, "description": "test receiver"});
    if let Some(s) = secret {
        body["secret"] = serde_json::json!(s);
    }
    let r = http_post(
        addr,
        "/api/v1/webhooks",
        &[("Authorization", &format!("Bearer {admin_token}"))],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

/// The InvoiceNumber of a rendered message.
pub fn invoice_number(xml: &str) -> String {
    let start = xml.find("<InvoiceNumber>").expect("an InvoiceNumber") + "<InvoiceNumber>".len();
    xml[start..start + 10].to_string()
}

/// Runs a `turnbridge` command on a config; panics unless it succeeds; returns stdout.
pub fn cli(config: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `name=value` of a `Set-Cookie` answer, to send back as a `Cookie` header.
pub fn set_cookie(r: &HttpResponse) -> String {
    let set = r
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {:?}", r.headers));
    set.split(';').next().unwrap().trim().to_string()
}

/// Opens the sign-in URL `turnbridge nextengine login` printed, on the sandbox's listener (its
/// path and query, whatever host it names), as the operator's browser would: the redirect to
/// NextEngine, and the cookie that binds the sign-in to this browser.
pub fn open_login_url(sb: &Sandbox, printed: &str) -> HttpResponse {
    let url = printed.trim();
    let at = url
        .find("/auth/ne?ticket=")
        .unwrap_or_else(|| panic!("not a sign-in URL: {url}"));
    http_get(sb.http_addr(), &url[at..], &[])
}

/// A NextEngine sign-in as an operator does it: `turnbridge nextengine login`, the printed URL
/// opened in the browser, and NextEngine's callback for `uid` and `state` in that browser.
pub fn nextengine_sign_in(sb: &Sandbox, uid: &str, state: &str) -> HttpResponse {
    let printed = cli(&sb.config_path(), &["nextengine", "login"]);
    let opened = open_login_url(sb, &printed);
    assert_eq!(opened.status, 302, "{}", opened.text());
    let cookie = set_cookie(&opened);
    http_get(
        sb.http_addr(),
        &format!("/auth/callback?uid={uid}&state={state}"),
        &[("Cookie", &cookie)],
    )
}

/// The problems `turnbridge status --json` reports, as (component, problem) pairs.
pub fn health_problems(sb: &Sandbox) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&cli(&sb.config_path(), &["status", "--json"])).unwrap();
    v["health"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["component"].as_str().unwrap().to_string(),
                p["problem"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A process's peak resident memory (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
