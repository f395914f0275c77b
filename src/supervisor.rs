//! The one place the daemon's long-running tasks are started, each under a name, given the
//! live configuration, and watched.
//!
//! - **Live configuration.** Every task reads the configuration from a `watch` channel
//!   ([`Ctx::config`]); passive parts (the log level, the NextEngine client, the webhook
//!   deliverer's settings) are registered with [`Supervisor::follow`]. A reload
//!   ([`Supervisor::reload`]) reaches all of them at once. What is bound at start keeps its
//!   running value until a restart ([`keep_start_only`]), and the reload says which.
//! - **Failures.** A task that panics, returns an error, or ends while nobody stopped it is
//!   logged and recorded in [`crate::health`] (`turnbridge status`, `/healthz`), then handled
//!   as its [`OnPanic`] says: started again after a pause that doubles with each failure in a
//!   row, or the daemon stops with a non-zero exit so the service manager starts it afresh.
//!   A task that has run [`Backoff::stable`] since its restart is well again.
//! - **Stopping.** [`Supervisor::shutdown`] tells every task to stop and waits for each (an
//!   async task with a grace period is aborted after it).
//! - **Heartbeats.** A thread that must never stall beats a [`Heartbeat`]; the watchdog is fed
//!   only while every running one is fresh ([`Supervisor::stale`]).

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{error, info};

use crate::config::Config;
use crate::health;

/// What a task returns: `Ok` when it stopped because it was told to.
pub type TaskResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What happens when a task panics, fails or ends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPanic {
    /// Started again after a pause (see [`Backoff`]); for tasks whose state is all in the
    /// store and the folders, so a fresh start picks up where the last one was.
    Restart,
    /// The daemon stops with a non-zero exit and the service manager starts it again; for
    /// tasks that hold what cannot be rebuilt in place (a bound socket, the claimed file).
    Exit,
}

/// The pauses before restarts: `first`, doubling with each failure in a row, at most `max`;
/// a task that has run `stable` since it was started again is well again (its health problem
/// is cleared and the next failure starts from `first`).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub stable: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            stable: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The pause after the `n`th failure in a row (from 1).
    pub fn pause(&self, n: u32) -> Duration {
        let doubled = self
            .first
            .checked_mul(1u32 << n.saturating_sub(1).min(20))
            .unwrap_or(self.max);
        doubled.min(self.max)
    }
}

/// Proof of life from a thread: the watchdog is fed only while it is fresh.
#[derive(Clone)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds since `origin` of the last beat.
    last: Arc<AtomicU64>,
}

impl Heartbeat {
    fn new(origin: Instant) -> Heartbeat {
        let h = Heartbeat {
            origin,
            last: Arc::default(),
        };
        h.beat();
        h
    }

    pub fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// How one run of a task ended.
#[derive(Debug)]
enum Outcome {
    Finished,
    Failed(String),
    Panicked(String),
    /// Aborted at the stop, after its grace period.
    Aborted,
}

/// One run of a task: how it ends, and how to abort it (async tasks only).
struct Run {
    end: Pin<Box<dyn Future<Output = Outcome> + Send>>,
    abort: Option<AbortHandle>,
}

/// What the supervisor shows of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    pub name: String,
    pub running: bool,
    /// Panics and failures since the daemon started.
    pub failures: u32,
    /// The last one, as logged.
    pub last_failure: Option<String>,
}

struct Task {
    name: String,
    on_panic: OnPanic,
    /// How long an async task may take to stop before it is aborted; `None`: waited for.
    grace: Option<Duration>,
    status: Mutex<TaskStatus>,
    heartbeat: Mutex<Option<Heartbeat>>,
    /// Wakes a thread from whatever it waits on (set by the thread, see [`Ctx::on_nudge`]).
    nudge: Mutex<Option<Box<dyn Fn() + Send>>>,
}

impl Task {
    fn status(&self) -> std::sync::MutexGuard<'_, TaskStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn nudge(&self) {
        if let Some(n) = &*self.nudge.lock().unwrap_or_else(|e| e.into_inner()) {
            n();
        }
    }

    /// The [`health`] component a failure of this task is recorded under.
    fn component(&self) -> String {
        format!("task {}", self.name)
    }
}

/// What a task is given each time it starts.
pub struct Ctx {
    /// The live configuration: `changed()` wakes at a reload.
    pub config: watch::Receiver<Arc<Config>>,
    stop: watch::Receiver<bool>,
    task: Arc<Task>,
    origin: Instant,
}

/// Why [`Ctx::sleep`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    Elapsed,
    Reloaded,
    Stop,
}

impl Ctx {
    /// Whether the daemon is stopping.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The stop signal, for code that waits on it itself (turns `true` at the stop).
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// The configuration now, marked as seen.
    pub fn current(&mut self) -> Arc<Config> {
        self.config.borrow_and_update().clone()
    }

    /// The new configuration if a reload came since it was last seen (for threads, which
    /// look between two pieces of work).
    pub fn reloaded(&mut self) -> Option<Arc<Config>> {
        match self.config.has_changed() {
            Ok(true) => Some(self.current()),
            _ => None,
        }
    }

    /// Waits `d`, or less when the configuration is reloaded or the daemon stops.
    pub async fn sleep(&mut self, d: Duration) -> Woke {
        if self.stopping() {
            return Woke::Stop;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => Woke::Elapsed,
            changed = self.config.changed() => match changed {
                Ok(()) => Woke::Reloaded,
                Err(_) => Woke::Stop,
            },
            _ = self.stop.changed() => Woke::Stop,
        }
    }

    /// Waits for a reload or the stop.
    pub async fn wait(&mut self) -> Woke {
        self.sleep(Duration::MAX).await
    }

    /// For a thread: `nudge` is called at every reload and at the stop, to wake the thread
    /// from whatever it waits on (it then looks at [`Ctx::reloaded`] and [`Ctx::stopping`]).
    pub fn on_nudge(&self, nudge: impl Fn() + Send + 'static) {
        *self.task.nudge.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(nudge));
    }

    /// This task's heartbeat: from the first call on, the watchdog is fed only while the task
    /// beats it (while it runs; a task waiting to be started again does not count).
    pub fn heartbeat(&self) -> Heartbeat {
        let mut slot = self
            .task
            .heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(|| Heartbeat::new(self.origin))
            .clone()
    }
}

/// A part told each reloaded configuration.
type Follower = Box<dyn Fn(&Config) + Send + Sync>;

/// The daemon's tasks, the live configuration and the stop signal.
pub struct Supervisor {
    config: watch::Sender<Arc<Config>>,
    stop: watch::Sender<bool>,
    fatal: watch::Sender<Option<String>>,
    followers: Vec<Follower>,
    tasks: Vec<(Arc<Task>, JoinHandle<()>)>,
    backoff: Backoff,
    origin: Instant,
}

impl Supervisor {
    pub fn new(config: Config) -> Supervisor {
        Supervisor::with_backoff(config, Backoff::default())
    }

    pub fn with_backoff(config: Config, backoff: Backoff) -> Supervisor {
        Supervisor {
            config: watch::channel(Arc::new(config)).0,
            stop: watch::channel(false).0,
            fatal: watch::channel(None).0,
            followers: Vec::new(),
            tasks: Vec::new(),
            backoff,
            origin: Instant::now(),
        }
    }

    /// The live configuration, for parts that read it themselves.
    pub fn config(&self) -> watch::Receiver<Arc<Config>> {
        self.config.subscribe()
    }

    /// Turns to `Some(why)` when a task that cannot be started again failed: the daemon
    /// must then stop with a non-zero exit.
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    /// Registers a part that is told each reloaded configuration (before the tasks see it).
    pub fn follow(&mut self, apply: impl Fn(&Config) + Send + Sync + 'static) {
        self.followers.push(Box::new(apply));
    }

    /// Applies a reloaded configuration everywhere; returns the keys that keep their running
    /// value until a restart (see [`keep_start_only`]).
    pub fn reload(&self, mut config: Config) -> Vec<&'static str> {
        let kept = keep_start_only(&mut config, &self.config.borrow());
        for apply in &self.followers {
            apply(&config);
        }
        self.config.send_replace(Arc::new(config));
        for (task, _) in &self.tasks {
            task.nudge();
        }
        kept
    }

    /// Starts an async task: `start` is called for each run (again after a failure, when
    /// `on_panic` is [`OnPanic::Restart`]). At the stop it is waited for, at most `grace`
    /// when given, then aborted.
    pub fn spawn<F, Fut>(
        &mut self,
        name: impl Into<String>,
        on_panic: OnPanic,
        grace: Option<Duration>,
        mut start: F,
    ) where
        F: FnMut(Ctx) -> Fut + Send + 'static,
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        self.watch(name.into(), on_panic, grace, move |ctx| {
            let handle = tokio::spawn(start(ctx));
            let abort = Some(handle.abort_handle());
            let end = Box::pin(async move {
                match handle.await {
                    Ok(Ok(())) => Outcome::Finished,
                    Ok(Err(e)) => Outcome::Failed(e.to_string()),
                    Err(e) if e.is_panic() => Outcome::Panicked(panic_text(&*e.into_panic())),
                    Err(_) => Outcome::Aborted,
                }
            });
            Run { end, abort }
        });
    }

    /// Starts an async task that runs once: a failure stops the daemon ([`OnPanic::Exit`]).
    pub fn spawn_once<F, Fut>(&mut self, name: impl Into<String>, grace: Option<Duration>, start: F)
    where
        F: FnOnce(Ctx) -> Fut + Send + 'static,
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        let mut start = Some(start);
        self.spawn(name, OnPanic::Exit, grace, move |ctx| {
            let run: Pin<Box<dyn Future<Output = TaskResult> + Send>> = match start.take() {
                Some(start) => Box::pin(start(ctx)),
                None => {
                    Box::pin(async { Err("a task that exits on failure is started once".into()) })
                }
            };
            run
        });
    }

    /// Starts a task on a thread of its own, named `name`: `body` is run for each run (again
    /// after a failure, when `on_panic` is [`OnPanic::Restart`]). At the stop it is waited
    /// for (a thread cannot be aborted): it should look at [`Ctx::stopping`] between two
    /// pieces of work and wait on something [`Ctx::on_nudge`] can wake.
    pub fn spawn_thread<F>(&mut self, name: impl Into<String>, on_panic: OnPanic, body: F)
    where
        F: FnMut(Ctx) -> TaskResult + Send + 'static,
    {
        let name = name.into();
        let body = Arc::new(Mutex::new(body));
        let thread_name = name.clone();
        self.watch(name, on_panic, None, move |ctx| {
            let (tell, told) = oneshot::channel();
            let body = body.clone();
            let spawned = std::thread::Builder::new()
                .name(thread_name.clone())
                .spawn(move || {
                    let mut body = body.lock().unwrap_or_else(|e| e.into_inner());
                    let outcome = match catch_unwind(AssertUnwindSafe(|| (*body)(ctx))) {
                        Ok(Ok(())) => Outcome::Finished,
                        Ok(Err(e)) => Outcome::Failed(e.to_string()),
                        Err(panic) => Outcome::Panicked(panic_text(&*panic)),
                    };
                    let _ = tell.send(outcome);
                });
            let end: Pin<Box<dyn Future<Output = Outcome> + Send>> = match spawned {
                Ok(_) => Box::pin(async move {
                    told.await
                        .unwrap_or_else(|_| Outcome::Panicked("the thread ended unheard".into()))
                }),
                Err(e) => {
                    let why = format!("cannot start a thread: {e}");
                    Box::pin(async move { Outcome::Failed(why) })
                }
            };
            Run { end, abort: None }
        });
    }

    fn watch(
        &mut self,
        name: String,
        on_panic: OnPanic,
        grace: Option<Duration>,
        start: impl FnMut(Ctx) -> Run + Send + 'static,
    ) {
        let task = Arc::new(Task {
            status: Mutex::new(TaskStatus {
                name: name.clone(),
                running: false,
                failures: 0,
                last_failure: None,
            }),
            name,
            on_panic,
            grace,
            heartbeat: Mutex::new(None),
            nudge: Mutex::new(None),
        });
        let monitor = Monitor {
            task: task.clone(),
            config: self.config.subscribe(),
            stop: self.stop.subscribe(),
            fatal: self.fatal.clone(),
            backoff: self.backoff,
            origin: self.origin,
        };
        let handle = tokio::spawn(monitor.run(start));
        self.tasks.push((task, handle));
    }

    /// What each task is doing, in the order they were started.
    pub fn tasks(&self) -> Vec<TaskStatus> {
        self.tasks.iter().map(|(t, _)| t.status().clone()).collect()
    }

    /// The running tasks whose heartbeat is older than `max`.
    pub fn stale(&self, max: Duration) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(t, _)| t.status().running)
            .filter(|(t, _)| {
                let beat = t.heartbeat.lock().unwrap_or_else(|e| e.into_inner());
                beat.as_ref().is_some_and(|h| h.age() > max)
            })
            .map(|(t, _)| t.name.clone())
            .collect()
    }

    /// Tells every task to stop and waits for them (see [`Supervisor::spawn`] for how long).
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for (task, _) in &self.tasks {
            task.nudge();
        }
        for (_, handle) in self.tasks {
            let _ = handle.await;
        }
    }
}

/// Watches one task through its runs.
struct Monitor {
    task: Arc<Task>,
    config: watch::Receiver<Arc<Config>>,
    stop: watch::Receiver<bool>,
    fatal: watch::Sender<Option<String>>,
    backoff: Backoff,
    origin: Instant,
}

impl Monitor {
    async fn run(mut self, mut start: impl FnMut(Ctx) -> Run) {
        let mut in_a_row = 0u32;
        loop {
            if let Some(h) = &*self
                .task
                .heartbeat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
            {
                h.beat(); // a fresh start, not a stalled one
            }
            self.task.status().running = true;
            let run = start(Ctx {
                config: self.config.clone(),
                stop: self.stop.clone(),
                task: self.task.clone(),
                origin: self.origin,
            });
            let (outcome, stable) = self.wait(run).await;
            self.task.status().running = false;
            let stopping = *self.stop.borrow();
            let why = match outcome {
                // Told to stop: ending, or being aborted after the grace period, is expected.
                Outcome::Finished | Outcome::Aborted if stopping => return,
                Outcome::Finished => "ended on its own".to_string(),
                Outcome::Failed(e) => format!("failed: {e}"),
                Outcome::Panicked(p) => format!("panicked: {p}"),
                Outcome::Aborted => "was aborted".to_string(),
            };
            {
                let mut s = self.task.status();
                s.failures += 1;
                s.last_failure = Some(why.clone());
            }
            let name = &self.task.name;
            if stopping {
                // The stop did not go cleanly: the exit says so.
                error!(task = %name, "the {name} task {why} while stopping");
                self.fatal
                    .send_replace(Some(format!("the {name} task {why} while stopping")));
                return;
            }
            if self.task.on_panic == OnPanic::Exit {
                error!(task = %name, "the {name} task {why}; stopping so the service manager starts turnbridge again");
                health::set(
                    &self.task.component(),
                    format!("{why}; turnbridge stopped so the service manager starts it again"),
                );
                self.fatal
                    .send_replace(Some(format!("the {name} task {why}")));
                return;
            }
            in_a_row = if stable { 1 } else { in_a_row + 1 };
            let pause = self.backoff.pause(in_a_row);
            let failures = self.task.status().failures;
            error!(task = %name, failures, "the {name} task {why}; starting it again in {pause:?}");
            health::set(
                &self.task.component(),
                format!(
                    "{why} (failure {failures} since turnbridge started; started again after {pause:?})"
                ),
            );
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    /// Waits for a run to end; returns how, and whether it had run long enough to count as
    /// well again (its health problem is cleared then, while it runs).
    async fn wait(&mut self, mut run: Run) -> (Outcome, bool) {
        let stable = tokio::time::sleep(self.backoff.stable);
        tokio::pin!(stable);
        let mut well = false;
        loop {
            tokio::select! {
                outcome = &mut run.end => return (outcome, well),
                _ = &mut stable, if !well => {
                    well = true;
                    if health::is_set(&self.task.component()) {
                        info!(task = %self.task.name, "the {} task has run well since it was started again", self.task.name);
                        health::clear(&self.task.component());
                    }
                }
                _ = self.stop.changed() => break,
            }
        }
        // Stopping: wait for it, at most its grace period when it has one.
        let outcome = match (self.task.grace, &run.abort) {
            (Some(grace), Some(abort)) => match tokio::time::timeout(grace, &mut run.end).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    abort.abort();
                    Outcome::Aborted
                }
            },
            _ => run.end.await,
        };
        (outcome, well)
    }
}

/// The text of a panic's payload.
pub fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Logs every panic through the log (escaped like any outside text, so a message cannot
/// forge a line), naming the thread and the place. Rust's own report, with its backtrace,
/// follows when `RUST_BACKTRACE` is set.
pub fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        error!(
            thread = thread.name().unwrap_or("unnamed"),
            at = %at,
            "panicked: {}",
            panic_text(info.payload())
        );
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        }
    }));
}

/// Settings read only at start: a reload keeps their running values in `new` and returns
/// the keys it kept. The listening addresses are bound, the state folder holds the open
/// database, the lock and `health.json`, the log format picks the log's sink, and the
/// webhook deliverer's slots are counted once.
pub fn keep_start_only(new: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    let mut keep = |key: &'static str, changed: bool| {
        if changed {
            kept.push(key);
        }
        changed
    };
    if keep("http.listen", new.http.listen != running.http.listen) {
        new.http.listen = running.http.listen.clone();
    }
    if keep(
        "http.monitor_listen",
        new.http.monitor_listen != running.http.monitor_listen,
    ) {
        new.http.monitor_listen = running.http.monitor_listen.clone();
    }
    if keep("paths.state", new.paths.state != running.paths.state) {
        new.paths.state = running.paths.state.clone();
    }
    if keep("log.format", new.log.format != running.log.format) {
        new.log.format = running.log.format;
    }
    if keep(
        "webhooks.max_in_flight",
        new.webhooks.max_in_flight != running.webhooks.max_in_flight,
    ) {
        new.webhooks.max_in_flight = running.webhooks.max_in_flight;
    }
    kept
}

#[cfg(test)]
mod tests;
