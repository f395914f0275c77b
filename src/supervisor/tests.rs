//! The supervisor with tasks that panic, fail, end and beat on purpose.

use std::sync::atomic::AtomicU32;

use super::*;

/// Pauses short enough for a test: 20 ms, 40 ms, then 60 ms at most.
fn quick() -> Backoff {
    Backoff {
        first: Duration::from_millis(20),
        max: Duration::from_millis(60),
        stable: Duration::from_secs(600),
    }
}

/// Polls `f` every 5 ms; panics after 10 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn shut(sup: Supervisor) {
    tokio::time::timeout(Duration::from_secs(10), sup.shutdown())
        .await
        .expect("every task stopped");
}

#[test]
fn the_pause_doubles_with_each_failure_in_a_row_up_to_its_most() {
    let b = Backoff::default();
    let pauses: Vec<u64> = (1..=9).map(|n| b.pause(n).as_secs()).collect();
    assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(b.pause(u32::MAX), b.max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_panics_is_started_again_after_a_growing_pause() {
    let mut sup = Supervisor::with_backoff(Config::default(), quick());
    let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let seen = starts.clone();
    sup.spawn("flaky", OnPanic::Restart, None, move |mut ctx| {
        let starts = seen.clone();
        async move {
            let n = {
                let mut s = starts.lock().unwrap();
                s.push(Instant::now());
                s.len()
            };
            if n <= 3 {
                panic!("bad input {n}");
            }
            ctx.wait().await;
            Ok(())
        }
    });
    until("the fourth start", || starts.lock().unwrap().len() == 4).await;
    let status = &sup.tasks()[0];
    assert_eq!(status.failures, 3);
    assert_eq!(
        status.last_failure.as_deref(),
        Some("panicked: bad input 3")
    );
    until("running again", || sup.tasks()[0].running).await;
    let at = starts.lock().unwrap().clone();
    for (i, pause) in [20, 40, 60].into_iter().enumerate() {
        let gap = at[i + 1] - at[i];
        assert!(
            gap >= Duration::from_millis(pause),
            "start {} came {gap:?} after the panic before it",
            i + 2
        );
    }
    assert_eq!(
        *sup.fatal().borrow(),
        None,
        "a restartable task never stops the daemon"
    );
    shut(sup).await;
    assert_eq!(
        starts.lock().unwrap().len(),
        4,
        "not started again after the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_or_an_end_nobody_asked_for_counts_as_one() {
    let mut sup = Supervisor::with_backoff(Config::default(), quick());
    let runs = Arc::new(AtomicU32::new(0));
    let count = runs.clone();
    sup.spawn("jobs", OnPanic::Restart, None, move |mut ctx| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            match n {
                1 => Err("the store is gone".into()),
                2 => Ok(()),
                _ => {
                    ctx.wait().await;
                    Ok(())
                }
            }
        }
    });
    until("the third run", || runs.load(Ordering::SeqCst) == 3).await;
    let status = &sup.tasks()[0];
    assert_eq!(status.failures, 2);
    assert_eq!(status.last_failure.as_deref(), Some("ended on its own"));
    shut(sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_be_started_again_stops_the_daemon() {
    let mut sup = Supervisor::with_backoff(Config::default(), quick());
    let runs = Arc::new(AtomicU32::new(0));
    let count = runs.clone();
    let mut fatal = sup.fatal();
    sup.spawn_once("http 127.0.0.1:8080", None, move |_ctx| async move {
        count.fetch_add(1, Ordering::SeqCst);
        panic!("the listener broke");
    });
    tokio::time::timeout(Duration::from_secs(10), fatal.changed())
        .await
        .expect("the failure is reported")
        .unwrap();
    assert_eq!(
        fatal.borrow().as_deref(),
        Some("the http 127.0.0.1:8080 task panicked: the listener broke")
    );
    // Three times the longest pause: it would have been started again by now.
    tokio::time::sleep(Duration::from_millis(180)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let status = &sup.tasks()[0];
    assert!(!status.running && status.failures == 1, "{status:?}");
    shut(sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reaches_followers_and_tasks_and_keeps_what_is_bound_at_start() {
    let mut running = Config::default();
    running.http.listen = "127.0.0.1:8080".into();
    running.nextengine.account = "NE000001".into();
    let mut sup = Supervisor::with_backoff(running.clone(), quick());
    let followed = Arc::new(Mutex::new(Vec::new()));
    let f = followed.clone();
    sup.follow(move |c| f.lock().unwrap().push(c.nextengine.account.clone()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    sup.spawn("reader", OnPanic::Restart, None, move |mut ctx| {
        let seen = s.clone();
        async move {
            loop {
                match ctx.sleep(Duration::from_secs(3600)).await {
                    Woke::Stop => return Ok(()),
                    Woke::Reloaded => {
                        let c = ctx.current();
                        seen.lock()
                            .unwrap()
                            .push((c.nextengine.account.clone(), c.http.listen.clone()));
                    }
                    Woke::Elapsed => {}
                }
            }
        }
    });
    until("the reader running", || sup.tasks()[0].running).await;
    let mut new = running.clone();
    new.http.listen = "0.0.0.0:9999".into();
    new.paths.state = "/elsewhere".into();
    new.nextengine.account = "NE000002".into();
    let kept = sup.reload(new);
    assert_eq!(kept, ["http.listen", "paths.state"]);
    assert_eq!(*followed.lock().unwrap(), ["NE000002"]);
    until("the reader told", || !seen.lock().unwrap().is_empty()).await;
    assert_eq!(
        seen.lock().unwrap()[0],
        ("NE000002".to_string(), "127.0.0.1:8080".to_string())
    );
    assert_eq!(sup.config().borrow().paths.state, running.paths.state);
    // A reload that changes nothing bound at start keeps nothing.
    let same = (**sup.config().borrow()).clone();
    let kept = sup.reload(same);
    assert!(kept.is_empty(), "{kept:?}");
    shut(sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_is_started_again_and_woken_at_a_reload_and_at_the_stop() {
    let mut sup = Supervisor::with_backoff(Config::default(), quick());
    let runs = Arc::new(AtomicU32::new(0));
    let accounts = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (runs.clone(), accounts.clone());
    sup.spawn_thread("worker", OnPanic::Restart, move |mut ctx| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a bug on the first run");
        }
        let (tx, rx) = std::sync::mpsc::channel();
        ctx.on_nudge(move || {
            let _ = tx.send(());
        });
        // Waits with no timeout: only a nudge wakes it.
        while rx.recv().is_ok() {
            if ctx.stopping() {
                return Ok(());
            }
            if let Some(c) = ctx.reloaded() {
                seen.lock().unwrap().push(c.nextengine.account.clone());
            }
        }
        Ok(())
    });
    until("the second run", || runs.load(Ordering::SeqCst) == 2).await;
    assert_eq!(
        sup.tasks()[0].last_failure.as_deref(),
        Some("panicked: a bug on the first run")
    );
    // The nudge is set by the thread once it runs: reload until it has heard one.
    let mut c = Config::default();
    c.nextengine.account = "NE000002".into();
    until("the thread told of the reload", || {
        sup.reload(c.clone());
        !accounts.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(accounts.lock().unwrap()[0], "NE000002");
    shut(sup).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_running_threads_with_an_old_heartbeat_are_stale() {
    let slow = Backoff {
        first: Duration::from_secs(3600),
        ..quick()
    };
    let mut sup = Supervisor::with_backoff(Config::default(), slow);
    let beating = Arc::new(AtomicU32::new(0));
    for (name, panics) in [("quiet", false), ("broken", true)] {
        let beating = beating.clone();
        sup.spawn_thread(name, OnPanic::Restart, move |ctx| {
            ctx.heartbeat().beat();
            beating.fetch_add(1, Ordering::SeqCst);
            if panics {
                panic!("stalls no one: it is waiting to be started again");
            }
            let (tx, rx) = std::sync::mpsc::channel();
            ctx.on_nudge(move || {
                let _ = tx.send(());
            });
            while !ctx.stopping() {
                let _ = rx.recv();
            }
            Ok(())
        });
    }
    sup.spawn(
        "no heartbeat",
        OnPanic::Restart,
        None,
        |mut ctx| async move {
            ctx.wait().await;
            Ok(())
        },
    );
    until("both threads beat", || beating.load(Ordering::SeqCst) == 2).await;
    until("the broken one down", || sup.tasks()[1].failures == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sup.stale(Duration::from_millis(20)), ["quiet"]);
    assert!(sup.stale(Duration::from_secs(3600)).is_empty());
    shut(sup).await;
}
