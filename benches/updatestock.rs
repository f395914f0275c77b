//! Benchmark: NextEngine stock callbacks against the real listener, many clients at once.
//!
//! Starts the listener in-process on 127.0.0.1 with a temporary store (every accepted update
//! is committed with `synchronous=FULL` before the reply), drives it with `CLIENTS` keep-alive
//! connections sending signed requests (each unique, so none is a replay), and prints
//! requests/s and latency percentiles. A bare hyper server answering a fixed body is measured
//! the same way as a baseline.
//!
//! `cargo bench --bench updatestock` (env: `CLIENTS`, default 32; `REQUESTS`, default 10000).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnbridge::config::Config;

async fn one(stream: &mut tokio::net::TcpStream, req: &[u8], buf: &mut Vec<u8>) -> u16 {
    stream.write_all(req).await.unwrap();
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            return head[9..12].parse().unwrap();
        }
    }
}

async fn drive(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    path: impl Fn(usize, usize) -> String + Send + Sync + Copy + 'static,
) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = Vec::new();
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let req = format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", path(c, i));
                let t = Instant::now();
                let status = one(&mut s, req.as_bytes(), &mut buf).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&buf));
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (start.elapsed(), all)
}

fn report(name: &str, elapsed: Duration, mut lat: Vec<Duration>) -> f64 {
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    let rps = lat.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<28} {:>6} requests in {:>6.2} s = {rps:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        p(0.50),
        p(0.99)
    );
    rps
}

fn main() {
    let clients: usize = std::env::var("CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let total: usize = std::env::var("REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let per_client = total / clients;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let text = "[paths]\nspool = \"spool\"\nstate = \"state\"\n[turnkey]\ninbox = \"turnkey/INBOX\"\n\
                    [http]\nlisten = \"127.0.0.1:0\"\n[[nextengine.shops]]\nstore_account = \"bench\"\nauth_key = \"k3y\"\n";
        let config = Config::parse(text, dir.path()).unwrap();
        std::fs::create_dir_all(config.paths.state.clone()).unwrap();
        let ne = std::sync::Arc::new(turnbridge::nextengine::client::Client::new(
            config.nextengine.clone(),
            turnbridge::store::Store::open(&config.database()).unwrap(),
        ));
        let (_live, config) = tokio::sync::watch::channel(std::sync::Arc::new(config));
        let server = turnbridge::http::start(config, ne).await.unwrap().unwrap();
        let addr = server.addrs[0];
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let serving: Vec<_> = server
            .loops
            .into_iter()
            .map(|l| tokio::spawn(l.run(stopped.clone())))
            .collect();
        let jst = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
        let ts = (chrono::Utc::now() + chrono::Duration::hours(24)).with_timezone(&jst).format("%Y%m%d%H%M%S").to_string();
        let ts: &'static str = Box::leak(ts.into_boxed_str());
        let path = move |c: usize, i: usize| {
            let code = format!("SKU-{c}-{i}");
            let text = format!("StoreAccount=bench&Code={code}&Stock={i}&ts={ts}k3y");
            let sig: String = Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
            format!("/UpdateStock.php?StoreAccount=bench&Code={code}&Stock={i}&ts={ts}&.sig={sig}")
        };
        // Warm up, then measure.
        drive(addr, 4, 50, path).await;
        let (elapsed, lat) = drive(addr, clients, per_client, move |c, i| path(c + 1000, i)).await;
        let ours = report("turnbridge UpdateStock", elapsed, lat);
        let _ = stop.send(true);
        for s in serving {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }

        // Baseline: hyper answering a fixed body, same client, same machine.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"<Processed>0</Processed>"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        drive(base_addr, 4, 50, |_, _| "/".to_string()).await;
        let (elapsed, lat) = drive(base_addr, clients, per_client, |_, _| "/".to_string()).await;
        let base = report("baseline hyper hello-world", elapsed, lat);
        println!("UpdateStock with {clients} clients: {:.1}% of the bare hyper baseline's throughput", 100.0 * ours / base);
    });
}
