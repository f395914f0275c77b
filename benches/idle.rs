//! Benchmark: what the daemon costs while nothing happens: resident memory, CPU time and
//! wake-ups (context switches) per second, read from `/proc` over a quiet window.
//!
//! The daemon runs as `turnbridge sandbox` (every worker on: spool watcher, feedback
//! tracker, Turnkey simulator, listener, webhook deliverer, NextEngine tasks), then on the
//! same configuration with the simulator off, as it runs next to a real Turnkey. The baseline,
//! in the same run: this bench re-run as a minimal tokio program with one idle TCP listener
//! and a one-second timer.
//!
//! `cargo bench --bench idle` (env: `IDLE_SECS`, default 30; `WARM_SECS`, default 5).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BASELINE_ENV: &str = "TURNBRIDGE_IDLE_BASELINE";

fn secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU ticks (user + system) of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A `kB` field of `/proc/<pid>/status`, or a plain count.
fn status_field(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Context switches of every thread of a process.
fn switches(pid: u32) -> u64 {
    let mut n = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let tid: u32 = t.file_name().to_string_lossy().parse().unwrap();
        let s =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        for key in ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"] {
            n += s
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    n
}

struct Idle {
    rss_mib: f64,
    cpu_percent: f64,
    wakeups_per_s: f64,
    threads: u64,
}

fn measure(child: &mut Child, warm: u64, window: u64) -> Idle {
    std::thread::sleep(Duration::from_secs(warm));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process exited early"
    );
    let pid = child.id();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (c0, s0) = (cpu_ticks(pid), switches(pid));
    std::thread::sleep(Duration::from_secs(window));
    let (c1, s1) = (cpu_ticks(pid), switches(pid));
    let idle = Idle {
        rss_mib: status_field(pid, "VmRSS:") as f64 / 1024.0,
        cpu_percent: (c1 - c0) as f64 / tick / window as f64 * 100.0,
        wakeups_per_s: (s1 - s0) as f64 / window as f64,
        threads: status_field(pid, "Threads:"),
    };
    let _ = child.kill();
    let _ = child.wait();
    idle
}

fn print(name: &str, i: &Idle) {
    println!(
        "{name:<40} RSS {:>6.1} MiB  CPU {:>6.3} %  {:>6.1} wake-ups/s  {} threads",
        i.rss_mib, i.cpu_percent, i.wakeups_per_s, i.threads
    );
}

/// The baseline program: an idle listener and a timer, nothing else.
fn baseline() -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tokio::spawn(async move { while listener.accept().await.is_ok() {} });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
        }
    })
}

/// Starts `turnbridge sandbox` in `dir`; with `simulator` false, the same sandbox is
/// prepared and then run with its Turnkey simulator turned off, as next to a real Turnkey.
fn spawn_daemon(dir: &Path, simulator: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnbridge"));
    if simulator {
        cmd.arg("sandbox").arg(dir);
    } else {
        let config = turnbridge::daemon::prepare_sandbox(dir).unwrap();
        let text = std::fs::read_to_string(&config).unwrap();
        let section = text.find("[simulator]").expect("a [simulator] section");
        let at = section
            + text[section..]
                .find("enabled = true")
                .expect("simulator on");
        let text = format!(
            "{}enabled = false{}",
            &text[..at],
            &text[at + "enabled = true".len()..]
        );
        std::fs::write(&config, text).unwrap();
        cmd.arg("run").arg("--config").arg(&config);
    }
    cmd.env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn main() {
    if std::env::var_os(BASELINE_ENV).is_some() {
        baseline();
    }
    let (warm, window) = (secs("WARM_SECS", 5), secs("IDLE_SECS", 30));
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = spawn_daemon(&dir.path().join("with-simulator"), true);
    let d = measure(&mut daemon, warm, window);
    let mut daemon = spawn_daemon(&dir.path().join("without-simulator"), false);
    let p = measure(&mut daemon, warm, window);
    let mut base = Command::new(std::env::current_exe().unwrap())
        .env(BASELINE_ENV, "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let b = measure(&mut base, warm, window);
    println!("idle over {window} s after {warm} s of warm-up:");
    print("turnbridge sandbox (simulator on)", &d);
    print("turnbridge sandbox, simulator off", &p);
    print("baseline: tokio, idle listener + 1 s timer", &b);
}
