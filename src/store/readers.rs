//! Readers on their own read-only connections.
//!
//! Monitoring (`/metrics`, `/healthz`, the admin API's lists) and the CLI read while the
//! writer writes: in WAL mode a reader sees the last committed state and never waits for the
//! writer, nor the writer for it. Each read runs on the blocking pool, so a slow query never
//! holds an async thread, and on one of at most `size` connections, so a burst of scrapes
//! queues instead of opening connections without bound.
//!
//! The connections are opened `SQLITE_OPEN_READ_ONLY` with `query_only`: a reader cannot
//! write even by mistake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::{Result, StoreError};

/// A bounded pool of read-only connections to one database; cheap to clone.
#[derive(Clone)]
pub struct Readers {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Readers of the database at `path` (which must exist: the writer creates it), at most
    /// `size` at once.
    pub fn new(path: &Path, size: usize) -> Readers {
        Readers {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::with_capacity(size)),
                permits: Arc::new(Semaphore::new(size.max(1))),
            }),
        }
    }

    /// Runs `f` on a read-only connection, on the blocking pool.
    ///
    /// The read holds its place in the pool until it ends, even when its caller stops waiting
    /// (a request that timed out): a read cannot be stopped half-way, and letting another
    /// start meanwhile would open connections beyond the bound.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Task("the readers are closed".into()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let out = inner.with_connection(f);
            drop(permit);
            out
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())))
    }
}

impl Inner {
    fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match taken {
            Some(c) => c,
            None => self.open()?,
        };
        let out = f(&conn);
        // A connection is returned only after a read that did not fail on the connection
        // itself and left no transaction open (its snapshot would hide every later commit
        // from the next read, and hold back checkpoints); the pool never holds more than the
        // permits allow.
        if !matches!(out, Err(StoreError::Sql(_))) && conn.is_autocommit() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
        out
    }

    fn open(&self) -> Result<Connection> {
        open_read_only(&self.path)
    }
}

/// One read-only connection to an existing database (`SQLITE_OPEN_READ_ONLY`, `query_only`):
/// what the readers use, and what a command or a check that only looks opens beside a
/// running daemon.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::Writer;
    use crate::store::Store;

    #[tokio::test]
    async fn a_reader_sees_committed_writes_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        store
            .conn
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .unwrap();
        let writer = Writer::start(store).unwrap();
        let readers = Readers::new(&path, 2);
        writer
            .write(|tx| Ok(tx.execute("INSERT INTO t (k) VALUES (1)", [])?))
            .await
            .unwrap();
        let n: i64 = readers
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 1);
        let refused = readers
            .read(|c| Ok(c.execute("INSERT INTO t (k) VALUES (2)", [])?))
            .await;
        assert!(refused.is_err(), "a reader wrote");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_connections_than_the_pool_allows_are_open_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Store::open(&path).unwrap());
        let readers = Readers::new(&path, 3);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (r, open, most) = (readers.clone(), open.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                r.read(move |c| {
                    let now = open.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    let _: i64 = c.query_row("SELECT 1", [], |r| r.get(0))?;
                    open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (1..=3).contains(&most),
            "{most} reads at once with a pool of 3"
        );
        assert!(readers.inner.idle.lock().unwrap().len() <= 3);
    }

    #[tokio::test]
    async fn a_read_that_left_a_transaction_open_does_not_hide_later_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        store
            .conn
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .unwrap();
        let writer = Writer::start(store).unwrap();
        let readers = Readers::new(&path, 1);
        let count = |c: &Connection| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?);
        // A read that began a transaction and returned before ending it.
        let n: i64 = readers
            .read(move |c| {
                c.execute_batch("BEGIN")?;
                count(c)
            })
            .await
            .unwrap();
        assert_eq!(n, 0);
        writer
            .write(|tx| Ok(tx.execute("INSERT INTO t (k) VALUES (1)", [])?))
            .await
            .unwrap();
        let n: i64 = readers.read(count).await.unwrap();
        assert_eq!(n, 1, "a read missed a committed write");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_its_caller_gave_up_on_still_counts_until_it_ends() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Store::open(&path).unwrap());
        let readers = Readers::new(&path, 1);
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let read = |open: Arc<AtomicUsize>,
                    most: Arc<AtomicUsize>,
                    until: Option<std::sync::mpsc::Receiver<()>>| {
            move |c: &Connection| {
                let now = open.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                if let Some(until) = until {
                    until.recv().unwrap();
                }
                let _: i64 = c.query_row("SELECT 1", [], |r| r.get(0))?;
                open.fetch_sub(1, SeqCst);
                Ok(())
            }
        };
        // A slow read whose caller stops waiting (a request that timed out or went away).
        let (release, slow) = std::sync::mpsc::channel();
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            readers.read(read(open.clone(), most.clone(), Some(slow))),
        )
        .await;
        assert!(gave_up.is_err(), "the slow read ended on its own");
        // The next read waits for the connection the slow one still uses.
        let next = tokio::spawn({
            let r = readers.clone();
            let f = read(open.clone(), most.clone(), None);
            async move { r.read(f).await }
        });
        let finished_early = tokio::time::timeout(std::time::Duration::from_millis(300), async {
            while !next.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .is_ok();
        release.send(()).unwrap();
        next.await.unwrap().unwrap();
        assert!(
            !finished_early,
            "a second read ran beside the first with a pool of 1"
        );
        assert_eq!(most.load(SeqCst), 1);
        assert!(readers.inner.idle.lock().unwrap().len() <= 1);
    }
}
