//! One writer with group commit.
//!
//! Every write a request needs (a stock callback's row, a delivery attempt, the events a state
//! change raises) is handed to one writer thread that owns the write connection. While one
//! transaction is being committed, the writes that arrive meanwhile wait in a bounded queue;
//! the writer then takes all of them (up to [`MAX_BATCH`]) into the next transaction and
//! commits them with one fsync. A caller is answered only after the transaction holding its
//! write is durable, so "answered" still means "on disk" — group commit changes how many
//! fsyncs that takes, never what an answer promises.
//!
//! Each write runs inside its own savepoint: one that fails (or panics) is rolled back alone
//! and its caller gets the error; the others in the batch commit. If the commit itself fails,
//! every caller of that batch gets the error and nothing of the batch is kept. A write whose
//! error makes SQLite roll back the whole transaction (not just its statement) takes the
//! writes before it in that transaction along, and they are answered so; the writes after it
//! go on in a new transaction.
//!
//! Hand-written rather than taken from a crate: the batching is a loop of a dozen lines around
//! rusqlite's savepoints, and the pooled SQLite crates (r2d2, deadpool, tokio-rusqlite) run one
//! transaction per call, which is the cost this removes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{Result, Store, StoreError};

/// Writes taken into one transaction at most (bounds the time the first of them waits).
pub const MAX_BATCH: usize = 256;

/// Writes waiting for the writer at most; a caller beyond it waits for room (back-pressure,
/// never an unbounded queue).
pub const QUEUE: usize = 4096;

/// A write: runs inside the batch's transaction (or learns that none could begin) and returns
/// what to tell its caller once the batch's commit has succeeded or failed.
type Work = Box<dyn FnOnce(Result<&Transaction, CommitFailed>) -> Completion + Send>;
type Completion = Box<dyn FnOnce(Result<(), CommitFailed>) + Send>;

/// The commit of a batch failed; every write of the batch shares this reason.
#[derive(Clone, Debug)]
pub struct CommitFailed(String);

/// Counts since the writer started, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed (each one fsync).
    pub batches: AtomicU64,
    /// Writes committed.
    pub writes: AtomicU64,
}

/// A handle on the writer thread; cheap to clone. The thread ends when every handle is gone,
/// after committing what it already took.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Work>,
    stats: Arc<WriterStats>,
}

impl Writer {
    /// Starts the writer thread on `store`'s connection (opened, migrated, `synchronous=FULL`).
    pub fn start(store: Store) -> std::io::Result<Writer> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let counts = stats.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store.conn, rx, &counts))?;
        Ok(Writer { queue, stats })
    }

    /// Runs `f` in the next batch and returns its result once that batch is committed.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tell, told) = oneshot::channel();
        self.queue
            .send(work(f, tell))
            .await
            .map_err(|_| StoreError::Task("the store writer has stopped".into()))?;
        told.await
            .map_err(|_| StoreError::Task("the store writer stopped before answering".into()))?
    }

    /// The same as [`Writer::write`], for code on a blocking thread.
    pub fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tell, told) = oneshot::channel();
        self.queue
            .blocking_send(work(f, tell))
            .map_err(|_| StoreError::Task("the store writer has stopped".into()))?;
        told.blocking_recv()
            .map_err(|_| StoreError::Task("the store writer stopped before answering".into()))?
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

/// Wraps `f` so it runs in its own savepoint and answers `tell` after the commit.
fn work<T: Send + 'static>(
    f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    tell: oneshot::Sender<Result<T>>,
) -> Work {
    Box::new(move |tx: Result<&Transaction, CommitFailed>| {
        let outcome = match tx {
            Ok(tx) => in_savepoint(tx, f),
            Err(CommitFailed(why)) => Err(StoreError::Task(why)),
        };
        Box::new(move |commit: Result<(), CommitFailed>| {
            let answer = match (outcome, commit) {
                (Err(e), _) => Err(e),
                (Ok(_), Err(CommitFailed(why))) => Err(StoreError::Task(format!(
                    "the transaction holding this write failed to commit: {why}"
                ))),
                (Ok(v), Ok(())) => Ok(v),
            };
            // The caller may have gone (a closed connection); its write stands either way.
            let _ = tell.send(answer);
        })
    })
}

/// Runs `f` between `SAVEPOINT` and `RELEASE`, rolling back to the savepoint when it fails or
/// panics, so the batch's other writes are untouched. When the savepoint cannot be rolled back
/// (or released), the whole transaction is rolled back instead: a write answered with an error
/// is never committed in part.
fn in_savepoint<T>(tx: &Transaction, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
    tx.execute_batch("SAVEPOINT one_write")?;
    let outcome = catch_unwind(AssertUnwindSafe(|| f(tx))).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(StoreError::Task(format!("the write panicked: {why}")))
    });
    let outcome = outcome.and_then(|v| {
        tx.execute_batch("RELEASE one_write")?;
        Ok(v)
    });
    // SQLite may have ended the whole transaction already (see `commit_batch`): then there is
    // no savepoint left to roll back to.
    if outcome.is_err()
        && !tx.is_autocommit()
        && tx
            .execute_batch("ROLLBACK TO one_write; RELEASE one_write")
            .is_err()
    {
        let _ = tx.execute_batch("ROLLBACK");
    }
    outcome
}

/// The writer thread: take what is waiting, run it in one transaction, commit, answer.
fn run(mut conn: Connection, mut rx: mpsc::Receiver<Work>, stats: &WriterStats) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch, stats);
    }
}

/// Runs the writes of `batch`, in order, in `BEGIN IMMEDIATE` transactions, commits and
/// answers them.
///
/// One transaction, unless a write ends it: a statement whose error rolls back the whole
/// transaction rather than the statement (`OR ROLLBACK`, `RAISE(ROLLBACK)`, and what SQLite
/// may answer so: a full disk, an I/O error, no memory). The writes of that transaction are
/// then answered with an error (nothing of them is kept), and the rest of the batch goes on
/// in a new transaction: a write outside one would commit on its own and be answered wrongly.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<Work>, stats: &WriterStats) {
    let mut rest = batch.drain(..);
    while rest.len() > 0 {
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let why = CommitFailed(format!("cannot begin a transaction: {e}"));
                tracing::error!("{} writes failed: {}", rest.len(), why.0);
                for w in rest.by_ref() {
                    w(Err(why.clone()))(Err(why.clone()));
                }
                return;
            }
        };
        let mut done: Vec<Completion> = Vec::new();
        let mut ended = false;
        for w in rest.by_ref() {
            done.push(w(Ok(&tx)));
            if tx.is_autocommit() {
                ended = true;
                break;
            }
        }
        let n = done.len() as u64;
        let outcome = if ended {
            drop(tx);
            Err(CommitFailed(
                "a write in the same transaction made SQLite roll back all of it".into(),
            ))
        } else {
            tx.commit().map_err(|e| CommitFailed(e.to_string()))
        };
        match &outcome {
            Ok(()) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.writes.fetch_add(n, Ordering::Relaxed);
            }
            Err(CommitFailed(why)) => {
                tracing::error!("a transaction of {n} writes failed to commit: {why}")
            }
        }
        for c in done {
            c(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    fn writer() -> (tempfile::TempDir, Writer, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        store
            .conn
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        (dir, Writer::start(store).unwrap(), path)
    }

    fn count(path: &std::path::Path) -> i64 {
        let c = Connection::open(path).unwrap();
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_share_transactions_and_each_is_durable_when_answered() {
        let (_dir, w, path) = writer();
        let mut tasks = Vec::new();
        for k in 0..2000i64 {
            let w = w.clone();
            let path = path.clone();
            tasks.push(tokio::spawn(async move {
                w.write(move |tx| {
                    tx.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", params![k])?;
                    Ok(k)
                })
                .await
                .unwrap();
                // Answered means committed: another connection sees the row.
                let c = Connection::open(&path).unwrap();
                let seen: i64 = c
                    .query_row("SELECT count(*) FROM t WHERE k = ?1", params![k], |r| {
                        r.get(0)
                    })
                    .unwrap();
                assert_eq!(seen, 1, "row {k} answered before it was committed");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(count(&path), 2000);
        let batches = w.stats().batches.load(Ordering::Relaxed);
        assert_eq!(w.stats().writes.load(Ordering::Relaxed), 2000);
        assert!(
            batches < 2000,
            "2,000 concurrent writes took {batches} transactions: none was shared"
        );
    }

    #[test]
    fn a_failing_write_is_rolled_back_alone() {
        let (_dir, w, path) = writer();
        let (release, holder) = hold(&w);
        let good = queue(&w, "INSERT INTO t (k, v) VALUES (1, 'a')");
        let (tell, bad) = oneshot::channel();
        let f = |tx: &Transaction| -> Result<()> {
            tx.execute("INSERT INTO t (k, v) VALUES (2, 'b')", [])?;
            // The second statement fails: the whole write, its first row included, goes.
            tx.execute("INSERT INTO t (k, v) VALUES (2, 'again')", [])?;
            Ok(())
        };
        assert!(w.queue.try_send(work(f, tell)).is_ok());
        let later = queue(&w, "INSERT INTO t (k, v) VALUES (3, 'c')");
        release.send(()).unwrap();
        holder.join().unwrap();
        assert!(bad.blocking_recv().unwrap().is_err());
        good.blocking_recv().unwrap().unwrap();
        later.blocking_recv().unwrap().unwrap();
        assert_eq!(keys(&path), vec![1, 3]);
        // The three shared one transaction (the holding write had its own).
        assert_eq!(w.stats().batches.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_panicking_write_answers_an_error_and_the_writer_goes_on() {
        let (_dir, w, path) = writer();
        let err = w
            .write(|tx| -> Result<()> {
                tx.execute("INSERT INTO t (k, v) VALUES (1, 'a')", [])?;
                panic!("bad input")
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bad input"), "{err}");
        w.write(|tx| Ok(tx.execute("INSERT INTO t (k, v) VALUES (2, 'b')", [])?))
            .await
            .unwrap();
        assert_eq!(count(&path), 1);
    }

    /// Holds the writer thread inside a write until the returned sender is used, so writes
    /// queued meanwhile are taken into one batch.
    fn hold(w: &Writer) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, inside) = std::sync::mpsc::channel::<()>();
        let w = w.clone();
        let holder = std::thread::spawn(move || {
            w.write_blocking(move |_| {
                started.send(()).unwrap();
                held.recv().unwrap();
                Ok(())
            })
            .unwrap()
        });
        inside.recv().unwrap();
        (release, holder)
    }

    /// Queues `sql` as one write (into the batch after the held one).
    fn queue(w: &Writer, sql: &'static str) -> oneshot::Receiver<Result<usize>> {
        let (tell, told) = oneshot::channel();
        let f = move |tx: &Transaction| Ok(tx.execute(sql, [])?);
        assert!(w.queue.try_send(work(f, tell)).is_ok());
        told
    }

    fn keys(path: &std::path::Path) -> Vec<i64> {
        let c = Connection::open(path).unwrap();
        let mut stmt = c.prepare("SELECT k FROM t ORDER BY k").unwrap();
        let keys = stmt.query_map([], |r| r.get(0)).unwrap();
        keys.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn a_write_that_rolls_back_the_whole_transaction_leaves_every_answer_true() {
        let (_dir, w, path) = writer();
        let (release, holder) = hold(&w);
        let before = queue(&w, "INSERT INTO t (k, v) VALUES (1, 'a')");
        // A conflict resolved by ROLLBACK ends the whole transaction, not just the statement
        // (as SQLITE_FULL, an I/O error or RAISE(ROLLBACK) may).
        let ender = queue(&w, "INSERT OR ROLLBACK INTO t (k, v) VALUES (1, 'again')");
        let after = queue(&w, "INSERT INTO t (k, v) VALUES (3, 'c')");
        release.send(()).unwrap();
        holder.join().unwrap();

        let before = before.blocking_recv().unwrap();
        let ender = ender.blocking_recv().unwrap();
        let after = after.blocking_recv().unwrap();
        assert!(ender.is_err());
        let stored = keys(&path);
        // Every answer says what the database holds.
        assert_eq!(
            before.is_ok(),
            stored.contains(&1),
            "{before:?}, stored {stored:?}"
        );
        assert_eq!(
            after.is_ok(),
            stored.contains(&3),
            "{after:?}, stored {stored:?}"
        );
        // The write before the one that ended the transaction went with it; the one after
        // still commits, in a transaction of its own.
        assert!(before.is_err());
        assert_eq!(after.unwrap(), 1);
        // And the writer goes on in transactions that hold the write lock.
        w.write_blocking(|tx| Ok(tx.execute("INSERT INTO t (k, v) VALUES (4, 'd')", [])?))
            .unwrap();
        assert_eq!(keys(&path), vec![3, 4]);
    }

    #[test]
    fn a_write_whose_savepoint_cannot_be_rolled_back_is_never_committed() {
        let (_dir, w, path) = writer();
        let (release, holder) = hold(&w);
        let good = queue(&w, "INSERT INTO t (k, v) VALUES (1, 'a')");
        // A write that ends its own savepoint, then fails: rolling back to the savepoint is no
        // longer possible, and its first row must not be committed under an error answer.
        let (tell, bad) = oneshot::channel();
        let f = |tx: &Transaction| -> Result<()> {
            tx.execute("INSERT INTO t (k, v) VALUES (2, 'b')", [])?;
            tx.execute_batch("RELEASE one_write")?;
            tx.execute("INSERT INTO t (k, v) VALUES (2, 'again')", [])?;
            Ok(())
        };
        assert!(w.queue.try_send(work(f, tell)).is_ok());
        release.send(()).unwrap();
        holder.join().unwrap();
        let good = good.blocking_recv().unwrap();
        let bad = bad.blocking_recv().unwrap();
        assert!(bad.is_err());
        let stored = keys(&path);
        assert!(
            !stored.contains(&2),
            "a write answered {bad:?} was committed"
        );
        assert_eq!(
            good.is_ok(),
            stored.contains(&1),
            "{good:?}, stored {stored:?}"
        );
    }

    #[test]
    fn a_blocking_caller_is_answered_after_the_commit() {
        let (_dir, w, path) = writer();
        let n = w
            .write_blocking(|tx| Ok(tx.execute("INSERT INTO t (k, v) VALUES (7, 'z')", [])?))
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(count(&path), 1);
    }
}
