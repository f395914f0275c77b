//! The daemon's tasks as the supervisor starts them, and what start-up opens for them.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{file_identity, Command, DaemonError, FeedbackWorker, Worker};
use crate::config::Config;
use crate::health;
use crate::pipeline::Pipeline;
use crate::retention::Retention;
use crate::store::Store;
use crate::supervisor::{OnPanic, Supervisor, Woke};
use crate::turnkey::feedback::Tracker;
use crate::turnkey::simulator::Simulator;

/// What start-up opens before any task runs; a failure here refuses to start.
pub(super) struct Opened {
    pub(super) running: crate::backup::RunningLock,
    pub(super) database_id: (u64, u64),
    pub(super) pipeline: Pipeline,
    pub(super) tracker: Tracker,
    pub(super) retention: Retention,
    pub(super) nextengine: Store,
    pub(super) jobs: Store,
    pub(super) deliveries: Store,
}

impl Opened {
    pub(super) fn open(config: &Config) -> Result<Opened, DaemonError> {
        let running = crate::backup::RunningLock::take(config)
            .map_err(|e| DaemonError::Start(e.to_string()))?;
        let spool_dir = config.einvoice_spool();
        crate::durable::create_dir_all(&spool_dir)
            .map_err(|e| DaemonError::Start(format!("create {}: {e}", spool_dir.display())))?;
        let pipeline = Pipeline::open(config.clone())?;
        health::init(&config.paths.state);
        let database = config.database();
        let database_id = file_identity(&database)
            .map_err(|e| DaemonError::Start(format!("stat {}: {e}", database.display())))?;
        let store = || Store::open(&database).map_err(|e| DaemonError::Start(e.to_string()));
        Ok(Opened {
            running,
            database_id,
            pipeline,
            tracker: Tracker::open(config.clone())?,
            retention: Retention::new(store()?, crate::retention::Limits::of(config)),
            nextengine: store()?,
            jobs: store()?,
            deliveries: store()?,
        })
    }
}

/// The e-invoice worker, on its own thread. A failure stops the daemon rather than starting
/// it again in place: a panic on one file already sets that file aside (see
/// [`Worker::process_guarded`]), so one here is in the worker's own loop, and a fresh
/// process resumes the claimed files exactly as after a crash, the recovery the crash tests
/// cover.
pub(super) fn spawn_einvoice(sup: &mut Supervisor, pipeline: Pipeline) {
    let mut pipeline = Some(pipeline);
    sup.spawn_thread("einvoice", OnPanic::Exit, move |ctx| {
        let pipeline = pipeline
            .take()
            .ok_or("the e-invoice worker is started once")?;
        let (tx, rx) = mpsc::channel();
        let nudge = tx.clone();
        ctx.on_nudge(move || {
            let _ = nudge.send(Command::Nudge);
        });
        Worker::new(pipeline, ctx, tx).run(rx);
        Ok(())
    });
}

/// The feedback tracker and the retention pruner, on their own thread. Started again after
/// a failure: what they follow is in the store and Turnkey's folders, and a fresh tracker
/// reads it again as a reload already does.
pub(super) fn spawn_feedback(sup: &mut Supervisor, tracker: Tracker, retention: Retention) {
    let mut first = Some((tracker, retention));
    sup.spawn_thread("feedback", OnPanic::Restart, move |mut ctx| {
        let (tracker, retention) = match first.take() {
            Some(opened) => opened,
            None => {
                let config = (*ctx.current()).clone();
                let store = Store::open(&config.database())?;
                let limits = crate::retention::Limits::of(&config);
                (Tracker::open(config)?, Retention::new(store, limits))
            }
        };
        let (tx, rx) = mpsc::channel();
        let nudge = tx.clone();
        ctx.on_nudge(move || {
            let _ = nudge.send(Command::Nudge);
        });
        let heartbeat = ctx.heartbeat();
        FeedbackWorker {
            tracker,
            retention,
            ctx,
            heartbeat,
            wake_tx: tx,
            watcher: None,
        }
        .run(rx);
        Ok(())
    });
}

/// The sandbox's stand-in Turnkey, on its own thread while `[simulator] enabled`: a reload
/// switches it on or off or changes what it answers. Started again after a failure: it
/// keeps nothing but the day's counts for its summaries.
pub(super) fn spawn_simulator(sup: &mut Supervisor) {
    sup.spawn_thread("simulator", OnPanic::Restart, |mut ctx| {
        let me = std::thread::current();
        ctx.on_nudge(move || me.unpark());
        let mut simulator: Option<Simulator> = None;
        let mut config = Some(ctx.current());
        while !ctx.stopping() {
            if let Some(c) = config.take().or_else(|| ctx.reloaded()) {
                simulator = match (simulator.take(), c.simulator.enabled) {
                    (None, true) => {
                        warn!("the Turnkey simulator is enabled: files in the pickup folder are taken and answered by turnbridge itself");
                        Some(Simulator::new((*c).clone()))
                    }
                    (Some(mut s), true) => {
                        s.reload((*c).clone());
                        Some(s)
                    }
                    (Some(_), false) => {
                        info!("the Turnkey simulator is off");
                        None
                    }
                    (None, false) => None,
                };
            }
            match &mut simulator {
                Some(s) => {
                    s.step();
                    std::thread::park_timeout(Duration::from_millis(200));
                }
                None => std::thread::park(),
            }
        }
        Ok(())
    });
}

/// NextEngine's upload jobs (idle while `nextengine.client_id` is empty) and the keep-alive
/// of its tokens, both reading the live configuration. Started again after a failure: every
/// job's step is recorded in the store (see [`crate::nextengine::jobs`]).
pub(super) fn spawn_nextengine(
    sup: &mut Supervisor,
    client: Arc<crate::nextengine::client::Client>,
    store: Store,
) {
    let mut first = Some(store);
    let ne = client.clone();
    let grace = Some(Duration::from_secs(10));
    sup.spawn(
        "nextengine jobs",
        OnPanic::Restart,
        grace,
        move |mut ctx| {
            let (client, store) = (ne.clone(), first.take());
            async move {
                let config = ctx.current();
                let store = match store {
                    Some(s) => s,
                    None => {
                        let db = config.database();
                        tokio::task::spawn_blocking(move || Store::open(&db)).await??
                    }
                };
                let mut jobs = crate::nextengine::jobs::Jobs::new((*config).clone(), client, store);
                loop {
                    let config = ctx.current();
                    if config.nextengine.client_id.is_empty() {
                        // Off until a reload names the client.
                        if ctx.wait().await == Woke::Stop {
                            return Ok(());
                        }
                        continue;
                    }
                    jobs.reload((*config).clone());
                    jobs.step().await;
                    let every = Duration::from_millis(config.nextengine.poll_ms.max(50));
                    if ctx.sleep(every).await == Woke::Stop {
                        return Ok(());
                    }
                }
            }
        },
    );
    sup.spawn(
        "nextengine keep-alive",
        OnPanic::Restart,
        Some(Duration::ZERO),
        move |mut ctx| {
            let ne = client.clone();
            async move {
                let mut last: Option<Instant> = None;
                loop {
                    let minutes = ctx.current().nextengine.keepalive_minutes.max(1);
                    let every = Duration::from_secs(minutes * 60);
                    let wait = last.map_or(Duration::ZERO, |l| {
                        (l + every).saturating_duration_since(Instant::now())
                    });
                    match ctx.sleep(wait).await {
                        Woke::Stop => return Ok(()),
                        Woke::Reloaded => continue, // the period may have changed
                        Woke::Elapsed => {}
                    }
                    last = Some(Instant::now());
                    // Accounts that fail are reported by keep_alive itself; this is the store.
                    if let Err(e) = ne.keep_alive().await {
                        warn!("NextEngine keep-alive: {e}");
                        health::set("nextengine keep-alive", e.to_string());
                    }
                }
            }
        },
    );
}
