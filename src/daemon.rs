//! The running daemon: start-up, the worker that runs jobs, signals and systemd.
//!
//! One worker thread owns the store and runs one file at a time, so jobs never race each
//! other for the same message. Every long-running task is started here under the
//! [`Supervisor`], which hands each the live configuration and watches it. The async main
//! loop only handles signals and systemd: SIGTERM/SIGINT finish the file in hand and exit 0;
//! SIGHUP re-reads the config and applies it everywhere at once (a broken one is refused with
//! its problems in the log, and the old one keeps running). The watchdog is fed only while the
//! workers' heartbeats are fresh, so a stuck worker gets the service restarted.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use thiserror::Error;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::health;
use crate::logging;
use crate::metrics::labels::{SpoolKind, SpoolOutcome};
use crate::pipeline::{Pipeline, PipelineError};
use crate::retention::Retention;
use crate::spool::{self, Settler, Wake};
use crate::store::JobState;
use crate::supervisor::{Ctx, Heartbeat, OnPanic, Supervisor};
use crate::turnkey::feedback::{FeedbackError, Tracker};

mod tasks;
use tasks::{spawn_einvoice, spawn_feedback, spawn_nextengine, spawn_simulator, Opened};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Feedback(#[from] FeedbackError),
    #[error("{0}")]
    Start(String),
}

/// What wakes a worker thread.
enum Command {
    /// A watched folder changed.
    Wake(Wake),
    /// A reload or the stop: the worker looks at its [`Ctx`].
    Nudge,
}

fn notify(states: &[NotifyState]) {
    let _ = sd_notify::notify(false, states);
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(config_path)?;
    let log = logging::init(&config.log);
    crate::supervisor::log_panics();
    let (inherited_umask, umask) = crate::filemode::restrict_umask();
    let opened = {
        let config = config.clone();
        blocking(move || Opened::open(&config)).await?
    };
    // One daemon per state folder, and no restore under a running one.
    let _running = opened.running;
    let database = config.database();
    let database_id = opened.database_id;
    info!(
        config = %config_path.display(),
        spool = %config.einvoice_spool().display(),
        inbox = %config.turnkey.inbox,
        state = %config.paths.state.display(),
        umask = %format!("{umask:04o}"),
        inherited_umask = %format!("{inherited_umask:04o}"),
        "turnbridge {} starting",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(why) = config.beyond_memory_budget() {
        warn!("{why}");
    }

    // Signals are caught from here on, so a SIGTERM during start-up still lets the file in
    // hand finish.
    use tokio::signal::unix::{signal, SignalKind};
    let sig = |k| signal(k).map_err(|e| DaemonError::Start(format!("signal handler: {e}")));
    let (mut term, mut int, mut hup) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );

    let mut sup = Supervisor::new(config.clone());
    sup.follow(move |c| log.set_level(&c.log.level));
    let nextengine = Arc::new(crate::nextengine::client::Client::new(
        config.nextengine.clone(),
        opened.nextengine,
    ));
    let ne = nextengine.clone();
    sup.follow(move |c| ne.reload(c.nextengine.clone()));
    let deliverer = Arc::new(crate::webhook::deliver::Deliverer::new(
        opened.deliveries,
        config.webhooks.clone(),
    ));
    let d = deliverer.clone();
    sup.follow(move |c| d.reload(c.webhooks.clone()));

    // Bound before any task starts: an address that cannot be had refuses the start.
    let server = crate::http::start(sup.config(), nextengine.clone())
        .await
        .map_err(|e| DaemonError::Start(e.to_string()))?;
    spawn_einvoice(&mut sup, opened.pipeline);
    spawn_feedback(&mut sup, opened.tracker, opened.retention);
    spawn_simulator(&mut sup);
    if let Some(server) = server {
        crate::webhook::policy::set_own_listeners(&server.addrs);
        // A listener's socket is bound once: one that fails stops the daemon.
        for listening in server.loops {
            let name = format!("http {}", listening.addr);
            sup.spawn_once(name, Some(Duration::from_secs(10)), move |ctx| async move {
                listening.run(ctx.stop_signal()).await;
                Ok(())
            });
        }
    }
    spawn_nextengine(&mut sup, nextengine, opened.jobs);
    // Deliveries are scheduled in the store: a fresh start sends what is due, nothing twice.
    sup.spawn("webhook deliveries", OnPanic::Restart, None, move |ctx| {
        let deliverer = deliverer.clone();
        async move {
            deliverer.run(ctx.stop_signal()).await;
            Ok(())
        }
    });
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("watching the spool"),
    ]);

    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let period = if watchdog {
        Duration::from_micros(watchdog_usec / 2)
    } else {
        Duration::from_secs(3600)
    };
    let mut tick = tokio::time::interval(period);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut failed = sup.fatal();
    let mut fatal: Option<String> = None;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&sup, config_path).await,
            _ = check.tick() => {
                // SQLite would quietly start a new, empty database at the old name: the
                // daemon would then send invoices again under names Turnkey has seen.
                let db = database.clone();
                let now = tokio::task::spawn_blocking(move || file_identity(&db).ok())
                    .await
                    .ok()
                    .flatten();
                if now != Some(database_id) {
                    let why = format!(
                        "the database {} was deleted or replaced while turnbridge ran; stopping instead of starting afresh (restore it, or start turnbridge again on purpose)",
                        database.display()
                    );
                    error!("{why}");
                    fatal = Some(why);
                    break;
                }
            }
            _ = tick.tick(), if watchdog => {
                let stale = sup.stale(Duration::from_micros(watchdog_usec));
                if stale.is_empty() {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    warn!("no heartbeat from {}; not feeding the watchdog", stale.join(", "));
                }
            }
            Ok(()) = failed.changed() => {
                // The task's failure is logged; the service manager restarts turnbridge.
                fatal = failed.borrow().clone();
                break;
            }
        }
    }
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("finishing the file in hand"),
    ]);
    info!("stopping: finishing the file in hand");
    sup.shutdown().await;
    match fatal.or_else(|| failed.borrow().clone()) {
        None => {
            info!("stopped");
            Ok(())
        }
        Some(why) => Err(DaemonError::Start(why)),
    }
}

/// Re-reads the configuration on SIGHUP and hands it to every task; a broken one is refused
/// with its problems and the running one stays. What is bound at start is named in the log
/// line: it changes at the next restart.
async fn reload(sup: &Supervisor, config_path: &Path) {
    let mono = NotifyState::monotonic_usec_now().ok();
    let mut states = vec![NotifyState::Reloading];
    states.extend(mono);
    notify(&states);
    let path = config_path.to_path_buf();
    let loaded = blocking(move || Ok(Config::load(&path)?)).await;
    match loaded {
        Ok(new) => {
            let kept = sup.reload(new);
            if kept.is_empty() {
                info!(config = %config_path.display(), "configuration reloaded");
            } else {
                info!(
                    config = %config_path.display(),
                    "configuration reloaded; these keep their running values until turnbridge restarts: {}",
                    kept.join(", ")
                );
            }
        }
        Err(e) => error!("configuration not reloaded, the running one stays: {e}"),
    }
    notify(&[NotifyState::Ready]);
}

/// Runs blocking start-up or file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Start(format!("start-up: {e}")))?
}

/// The device and inode of a file: what tells the same file from a new one at its name.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// The thread that watches the spool and runs jobs one at a time.
struct Worker {
    pipeline: Pipeline,
    ctx: Ctx,
    wake_tx: Sender<Command>,
    heartbeat: Heartbeat,
    settler: Settler,
    /// Spool files that could not be claimed.
    unclaimable: spool::Unclaimable,
    watcher: Option<notify::RecommendedWatcher>,
    processed: u64,
}

impl Worker {
    fn new(pipeline: Pipeline, ctx: Ctx, wake_tx: Sender<Command>) -> Worker {
        let heartbeat = ctx.heartbeat();
        let pipeline = with_progress(pipeline, &heartbeat);
        Worker {
            pipeline,
            ctx,
            wake_tx,
            heartbeat,
            settler: Settler::default(),
            unclaimable: spool::Unclaimable::default(),
            watcher: None,
            processed: 0,
        }
    }

    fn beat(&self) {
        self.heartbeat.beat();
    }

    fn arm_watcher(&mut self) {
        let dir = self.pipeline.config.einvoice_spool();
        let tx = bridge(self.wake_tx.clone());
        match spool::watch(std::slice::from_ref(&dir), false, tx) {
            Ok(w) => self.watcher = Some(w),
            Err(e) => {
                warn!(spool = %dir.display(), "cannot watch the spool ({e}); relying on rescans");
                self.watcher = None;
            }
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        self.arm_watcher();
        self.beat();
        self.resume();
        let mut next_rescan = Instant::now();
        loop {
            self.beat();
            if self.ctx.stopping() {
                return;
            }
            if let Some(config) = self.ctx.reloaded() {
                self.reload(&config);
            }
            let pending = self.scan();
            let settle = Duration::from_millis(self.pipeline.config.einvoice.settle_ms);
            let rescan = Duration::from_secs(self.pipeline.config.einvoice.rescan_secs);
            if Instant::now() >= next_rescan {
                next_rescan = Instant::now() + rescan;
            }
            let wait = if pending {
                (settle / 2).max(Duration::from_millis(20))
            } else {
                next_rescan
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
            };
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    self.handle(cmd);
                    // Take every queued notification before scanning once.
                    while let Ok(cmd) = rx.try_recv() {
                        self.handle(cmd);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() >= next_rescan {
                        self.resume();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// A nudge needs nothing here: the loop looks at the stop and the configuration.
    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Nudge => {}
            Command::Wake(Wake::Changed { renamed_in }) => {
                if let Some(p) = renamed_in {
                    self.settler.note_renamed_in(p);
                }
            }
            Command::Wake(Wake::Rescan) => {
                info!("watcher overflow; rescanning the spool");
            }
        }
    }

    fn reload(&mut self, config: &Config) {
        let old_spool = self.pipeline.config.einvoice_spool();
        let paths_changed = self.pipeline.config.paths != config.paths
            || self.pipeline.config.turnkey != config.turnkey;
        if paths_changed {
            match Pipeline::open(config.clone()) {
                Ok(p) => self.pipeline = with_progress(p, &self.heartbeat),
                Err(e) => {
                    error!("new folders cannot be used, keeping the old ones: {e}");
                    return;
                }
            }
        } else {
            self.pipeline.config = config.clone();
        }
        if paths_changed || self.pipeline.config.einvoice_spool() != old_spool {
            let _ = crate::durable::create_dir_all(&self.pipeline.config.einvoice_spool());
            self.arm_watcher();
            self.resume();
        }
    }

    /// Processes a claimed file; a bug that panics on one file sets that file aside in
    /// `rejected/` instead of stopping every file after it.
    fn process_guarded(&mut self, work: &Path) -> Result<crate::pipeline::Outcome, PipelineError> {
        let pipeline = &mut self.pipeline;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.process(work))) {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(file = %work.display(), "internal error while processing: {what}");
                self.pipeline.quarantine(
                    work,
                    format!("turnbridge hit an internal error on this file ({what}); it was set aside so other files keep flowing. Please report it."),
                )
            }
        }
    }

    /// Finishes every file left in `work/` (after a crash, or after an error).
    fn resume(&mut self) {
        let files = match spool::in_flight(&self.pipeline.dirs.work) {
            Ok(f) => f,
            Err(e) => {
                error!("cannot list {}: {e}", self.pipeline.dirs.work.display());
                return;
            }
        };
        for path in files {
            if self.ctx.stopping() {
                return;
            }
            info!(file = %path.display(), "resuming a file left in work/");
            let result = self.process_guarded(&path);
            self.report(&path, result);
        }
        self.clear_when_caught_up();
    }

    /// The e-invoice problem is over once no file waits in `work/` for a retry.
    fn clear_when_caught_up(&self) {
        if spool::in_flight(&self.pipeline.dirs.work).is_ok_and(|f| f.is_empty()) {
            health::clear("einvoice");
        }
    }

    /// Takes every complete file from the spool; returns whether some are still settling.
    fn scan(&mut self) -> bool {
        let dir = self.pipeline.config.einvoice_spool();
        let settle = Duration::from_millis(self.pipeline.config.einvoice.settle_ms);
        let (ready, pending) = match self.settler.ready(&dir, settle) {
            Ok(r) => r,
            Err(e) => {
                error!(spool = %dir.display(), "cannot list the spool: {e}");
                health::set(
                    "einvoice spool",
                    format!("cannot list {}: {e}", dir.display()),
                );
                return false;
            }
        };
        health::clear("einvoice spool");
        for path in ready {
            if self.ctx.stopping() {
                return false;
            }
            if self.unclaimable.given_up(&path) {
                continue;
            }
            self.beat();
            self.settler.forget(&path);
            notify(&[NotifyState::Status(&format!(
                "processing {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ))]);
            let job_id = spool::new_job_id();
            let result = match spool::claim(&path, &self.pipeline.dirs.work, &job_id) {
                Ok(work) => {
                    self.unclaimable.taken(&path);
                    self.process_guarded(&work)
                }
                Err(e) => {
                    let tries = self.unclaimable.failed(&path);
                    if tries >= spool::CLAIM_TRIES {
                        self.give_up_claim(&path, &job_id, tries, &e);
                        continue;
                    }
                    Err(PipelineError::Io {
                        action: "claim",
                        path: path.clone(),
                        source: e,
                    })
                }
            };
            self.report(&path, result);
        }
        match self.unclaimable.prune().first() {
            Some(p) => health::set(
                "einvoice spool files",
                format!(
                    "{} cannot be taken from the spool and is not tried again until it changes (report in {})",
                    p.display(),
                    self.pipeline.dirs.rejected.display()
                ),
            ),
            None => health::clear("einvoice spool files"),
        }
        pending
    }

    /// Reports a spool file that could not be claimed `tries` times: it cannot be moved, so
    /// it stays where it is, with a report in `rejected/`, and is not tried again until it
    /// changes.
    fn give_up_claim(&mut self, path: &Path, job_id: &str, tries: u32, e: &std::io::Error) {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let reason = format!(
            "turnbridge could not take this file from the spool in {tries} attempts ({e}); it is left where it is and not tried again until it changes (its permissions, attributes or content) or turnbridge restarts"
        );
        error!(file = %path.display(), "{reason}");
        let report = spool::Report {
            job_id: job_id.to_string(),
            file: name.clone(),
            outcome: "rejected".into(),
            summary: format!("The file {} was not processed: {reason}", path.display()),
            accepted: 0,
            rejected: 0,
            rejected_files: vec![],
            problems: vec![spool::ReportEntry::whole_file(name.clone(), reason)],
        };
        let base = self
            .pipeline
            .dirs
            .rejected
            .join(spool::work_name(job_id, &name));
        if let Err(e) = report.write(&base) {
            error!(file = %path.display(), "cannot write the report: {e}");
        }
        crate::metrics::get()
            .spool_file(SpoolKind::Einvoice, SpoolOutcome::Job(JobState::Rejected));
    }

    fn report(&mut self, path: &Path, result: Result<crate::pipeline::Outcome, PipelineError>) {
        self.beat();
        match result {
            Ok(o) => {
                self.processed += 1;
                crate::metrics::get().spool_file(SpoolKind::Einvoice, SpoolOutcome::Job(o.state));
                info!(
                    job_id = %o.job_id,
                    outcome = %o.state,
                    queued = o.queued,
                    rejected = o.rejected,
                    "{} → {}",
                    path.file_name().unwrap_or_default().to_string_lossy(),
                    o.final_path.display()
                );
                self.clear_when_caught_up();
            }
            Err(e) => {
                crate::metrics::get().spool_file(SpoolKind::Einvoice, SpoolOutcome::Retry);
                error!(file = %path.display(), "file left for a retry: {e}");
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                health::set("einvoice", format!("{name} is left for a retry: {e}"));
            }
        }
        notify(&[NotifyState::Status(&format!(
            "watching the spool; {} file(s) processed since start",
            self.processed
        ))]);
    }
}

/// A sender for a watcher whose notifications arrive as commands on a worker's channel.
fn bridge(commands: Sender<Command>) -> Sender<Wake> {
    let (tx, rx) = mpsc::channel::<Wake>();
    std::thread::spawn(move || {
        while let Ok(w) = rx.recv() {
            if commands.send(Command::Wake(w)).is_err() {
                break;
            }
        }
    });
    tx
}

fn with_progress(mut pipeline: Pipeline, heartbeat: &Heartbeat) -> Pipeline {
    let beat = heartbeat.clone();
    pipeline.progress = Some(Box::new(move || beat.beat()));
    pipeline
}

/// How often the tables are pruned, how long one run may take, and how soon the next run
/// comes while rows are left.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
const RETENTION_BUDGET: Duration = Duration::from_millis(500);
const RETENTION_AGAIN: Duration = Duration::from_secs(2);
/// How often rotated-out webhook secrets past their overlap are looked for.
const SECRETS_EVERY: Duration = Duration::from_secs(60);

/// The thread that follows queued messages through Turnkey's folders and results, and keeps
/// the store's tables bounded.
struct FeedbackWorker {
    tracker: Tracker,
    retention: Retention,
    ctx: Ctx,
    heartbeat: Heartbeat,
    wake_tx: Sender<Command>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl FeedbackWorker {
    fn arm_watcher(&mut self) {
        let dirs = self.tracker.watched_dirs();
        for d in &dirs {
            let _ = crate::durable::create_dir_all(d);
        }
        let tx = bridge(self.wake_tx.clone());
        self.watcher = match spool::watch(&dirs, true, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!("cannot watch the Turnkey folders ({e}); relying on rescans");
                None
            }
        };
    }

    fn reload(&mut self, config: Config, next_scan: &mut Instant) {
        self.retention.reload(crate::retention::Limits::of(&config));
        match Tracker::open(config) {
            Ok(t) => {
                self.tracker = t;
                self.arm_watcher();
                *next_scan = Instant::now();
            }
            Err(e) => error!("feedback keeps its old configuration: {e}"),
        }
    }

    /// One retention run; returns when to run again: soon while rows are left.
    fn prune_tables(&mut self) -> Duration {
        match self.retention.prune(chrono::Utc::now(), RETENTION_BUDGET) {
            Ok(p) => {
                if p.total() > 0 || p.secrets > 0 {
                    let tables: Vec<String> =
                        p.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
                    info!(
                        rows = p.total(),
                        secrets = p.secrets,
                        done = p.done,
                        "pruned rows past their retention: {}",
                        tables.join(", ")
                    );
                }
                health::clear("retention");
                if p.done {
                    RETENTION_EVERY
                } else {
                    RETENTION_AGAIN
                }
            }
            Err(e) => {
                error!("pruning old rows failed, retrying later: {e}");
                health::set("retention", format!("pruning old rows: {e}"));
                RETENTION_AGAIN * 30
            }
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        self.arm_watcher();
        let mut next_prune = Instant::now();
        let mut next_retention = Instant::now();
        let mut next_secrets = Instant::now();
        let mut next_scan = Instant::now();
        loop {
            self.heartbeat.beat();
            if self.ctx.stopping() {
                return;
            }
            if let Some(config) = self.ctx.reloaded() {
                self.reload((*config).clone(), &mut next_scan);
            }
            if Instant::now() >= next_scan {
                match self.tracker.scan() {
                    Ok(_) => match self.tracker.problem() {
                        Some(p) => health::set("feedback", p),
                        None => health::clear("feedback"),
                    },
                    Err(e) => {
                        error!("feedback scan failed, retrying later: {e}");
                        health::set("feedback", format!("reading Turnkey's folders: {e}"));
                    }
                }
                let rescan = Duration::from_secs(self.tracker.config.turnkey.rescan_secs);
                let settle = Duration::from_millis(self.tracker.config.einvoice.settle_ms);
                next_scan = Instant::now() + if self.tracker.pending { settle } else { rescan };
                // A result that does not parse is looked at again when it may be set aside.
                if let Some(due) = self.tracker.next_due() {
                    next_scan = next_scan.min(due.max(Instant::now() + settle));
                }
            }
            if Instant::now() >= next_prune {
                if let Err(e) = self.tracker.prune() {
                    error!("pruning result files failed: {e}");
                }
                if let Err(e) = self.tracker.prune_logs() {
                    error!("pruning old log rows failed: {e}");
                }
                next_prune = Instant::now() + Duration::from_secs(3600);
            }
            if Instant::now() >= next_retention {
                next_retention = Instant::now() + self.prune_tables();
            } else if Instant::now() >= next_secrets {
                if let Err(e) = self.retention.forget_rotated_secrets(chrono::Utc::now()) {
                    error!("removing rotated-out webhook secrets failed: {e}");
                }
                next_secrets = Instant::now() + SECRETS_EVERY;
            }
            let wait = next_scan
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            match rx.recv_timeout(wait) {
                Err(RecvTimeoutError::Disconnected) => return,
                Ok(Command::Wake(_)) => {
                    // Let the writer finish, then scan once for everything that arrived.
                    let settle = Duration::from_millis(self.tracker.config.einvoice.settle_ms);
                    next_scan = next_scan.min(Instant::now() + settle);
                    while rx.try_recv().is_ok() {}
                }
                // A reload or the stop: seen at the top of the loop.
                Ok(Command::Nudge) | Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

/// Writes a sandbox under `dir` (config, spool, state, a flat Turnkey tree and example
/// batches) unless it exists, and returns the config path.
pub fn prepare_sandbox(dir: &Path) -> Result<PathBuf, DaemonError> {
    let io = |what: &str, e: std::io::Error| DaemonError::Start(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| io("create sandbox", e))?;
    let config_path = dir.join("turnbridge.toml");
    if !config_path.exists() {
        std::fs::write(&config_path, sandbox_config()).map_err(|e| io("write config", e))?;
    }
    for sub in [
        "spool/einvoice",
        "turnkey/INBOX",
        "turnkey/OUTBOX",
        "turnkey/ERROR",
        "examples",
    ] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| io("create sandbox folder", e))?;
    }
    for (name, body) in EXAMPLES {
        let p = dir.join("examples").join(name);
        if !p.exists() {
            std::fs::write(&p, body).map_err(|e| io("write example", e))?;
        }
    }
    Ok(config_path)
}

const EXAMPLES: [(&str, &str); 2] = [
    (
        "F0401_b2c.csv",
        include_str!("../fixtures/valid/F0401_b2c_print.csv"),
    ),
    (
        "F0401_b2b.json",
        include_str!("../fixtures/valid/F0401_b2b.json"),
    ),
];

/// The packaged default config with its paths pointed into the sandbox folder.
pub fn sandbox_config() -> String {
    let replacements = [
        ("spool = \"/var/spool/turnbridge\"", "spool = \"spool\""),
        ("state = \"/var/lib/turnbridge\"", "state = \"state\""),
        (
            "inbox = \"/var/lib/turnkey/INBOX\"",
            "inbox = \"turnkey/INBOX\"",
        ),
        (
            "outbox = \"/var/lib/turnkey/OUTBOX\"",
            "outbox = \"turnkey/OUTBOX\"",
        ),
        (
            "error = \"/var/lib/turnkey/ERROR\"",
            "error = \"turnkey/ERROR\"",
        ),
        (
            "staging = \"/var/lib/turnkey/.turnbridge-staging\"",
            "staging = \"turnkey/.turnbridge-staging\"",
        ),
        ("enabled = false", "enabled = true"),
        (
            "allow_private_networks = false",
            "allow_private_networks = true",
        ),
        (
            "admin_token = \"\"",
            "admin_token = \"sandbox-admin-token\"",
        ),
        (
            "\n[company_webhook]\n# The X-Webhook-Secret the company system sends; empty turns /api/sync/company/webhook off.\nsecret = \"\"",
            "\n[company_webhook]\n# The X-Webhook-Secret the company system sends; empty turns /api/sync/company/webhook off.\nsecret = \"sandbox-webhook-secret\"",
        ),
        (
            "# [[nextengine.shops]]\n# store_account = \"samplestore\"\n# auth_key = \"...\"",
            "[[nextengine.shops]]\nstore_account = \"samplestore\"\nauth_key = \"aaa\"",
        ),
    ];
    let mut text = format!(
        "# turnbridge sandbox: every path below is relative to this folder.\n{}",
        crate::config::DEFAULT_TOML
    );
    for (from, to) in replacements {
        assert!(text.contains(from), "default config lost the line {from}");
        text = text.replace(from, to);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn sandbox_config_points_every_folder_inside_the_sandbox() {
        let text = super::sandbox_config();
        let c = crate::config::Config::parse(&text, std::path::Path::new("/sb")).unwrap();
        for p in [
            &c.paths.spool,
            &c.paths.state,
            &c.turnkey.outbox,
            &c.turnkey.error,
            &c.turnkey.staging,
        ] {
            assert!(p.starts_with("/sb"), "{}", p.display());
        }
        assert!(c.turnkey.inbox.starts_with("/sb/"));
        assert!(c.simulator.enabled, "the sandbox answers like Turnkey");
        assert_eq!(c.nextengine.shops.len(), 1);
        assert!(!c.company_webhook.secret.is_empty() && !c.http.admin_token.is_empty());
        assert!(
            c.nextengine.client_secret.is_empty(),
            "only the webhook secret is set"
        );
    }
}
