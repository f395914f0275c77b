//! One connection: what it is doing ([`Track`]), its deadlines, its socket ([`GuardedIo`])
//! and the watchdog that closes it ([`supervise`]).

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::table::Ticket;
use super::{Close, Limits};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a request head, counted from `from`.
    Head { from: Instant },
    /// A handler is preparing an answer.
    Busy,
    /// Between requests (the last answer may still be being written).
    Idle,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// When the connection last moved on: opened, or handed over an answer. Eviction takes
    /// the one waiting longest.
    since: Instant,
    last_write: Option<Instant>,
    /// Since when a write has made no progress.
    stalled: Option<Instant>,
}

/// What one connection is doing; shared by its IO, its request handling, its watchdog and
/// the table.
#[derive(Debug)]
pub struct Track {
    opened: Instant,
    state: Mutex<State>,
    /// Its table's count of connections being answered.
    answering: Arc<AtomicUsize>,
    /// Set before a forced close, so the socket is reset.
    reset: AtomicBool,
}

impl Track {
    pub(super) fn new(now: Instant, answering: Arc<AtomicUsize>) -> Track {
        Track {
            opened: now,
            answering,
            state: Mutex::new(State {
                phase: Phase::Head { from: now },
                since: now,
                last_write: None,
                stalled: None,
            }),
            reset: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: between requests, a new request head starts.
    fn received(&self, now: Instant) {
        let mut s = self.state();
        if s.phase == Phase::Idle {
            s.phase = Phase::Head { from: now };
        }
    }

    /// A write went through (`progressed`) or had to wait.
    fn wrote(&self, now: Instant, progressed: bool) {
        let mut s = self.state();
        if progressed {
            s.last_write = Some(now);
            s.stalled = None;
        } else if s.stalled.is_none() {
            s.stalled = Some(now);
        }
    }

    /// Marks a request as being handled until the returned guard is dropped.
    pub fn busy(self: &Arc<Track>) -> Busy {
        self.state().phase = Phase::Busy;
        self.answering.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection started waiting on its client, or `None` while it is being
    /// answered (then it is never evicted).
    pub(super) fn waiting_since(&self) -> Option<Instant> {
        let s = self.state();
        (s.phase != Phase::Busy).then_some(s.since)
    }

    /// The next deadline and what closes the connection then; `None` while a handler works
    /// and nothing is stuck.
    pub fn deadline(&self, l: &Limits) -> Option<(Instant, Close)> {
        let s = self.state();
        let mut due: Option<(Instant, Close)> = None;
        let mut consider = |at: Instant, why: Close| {
            if due.is_none_or(|(d, _)| at < d) {
                due = Some((at, why));
            }
        };
        match s.phase {
            Phase::Head { from } => consider(from + l.header_timeout, Close::HeaderTimeout),
            Phase::Idle => {
                let quiet = s.last_write.map_or(s.since, |w| w.max(s.since));
                consider(quiet + l.idle_timeout, Close::IdleTimeout);
            }
            Phase::Busy => {}
        }
        if s.phase != Phase::Busy {
            consider(self.opened + l.max_age, Close::MaxAge);
        }
        if let Some(at) = s.stalled {
            consider(at + l.write_timeout, Close::WriteTimeout);
        }
        due
    }

    /// Whether the connection is past its age limit (its answer should close it).
    pub fn too_old(&self, l: &Limits, now: Instant) -> bool {
        now >= self.opened + l.max_age
    }

    fn mark_reset(&self) {
        self.reset.store(true, Ordering::Relaxed);
    }
}

/// A request being handled; dropping it hands the connection back to waiting.
pub struct Busy(Arc<Track>);

impl Busy {
    pub fn track(&self) -> &Track {
        &self.0
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut s = self.0.state();
        s.phase = Phase::Idle;
        s.since = now;
    }
}

/// Runs a connection until it ends by itself (`Ok` with its result) or the listener closes
/// it (`Err` with the reason): a deadline of its [`Track`] passes, or its slot is taken.
pub async fn supervise<F, T>(conn: F, ticket: &mut Ticket, l: &Limits) -> Result<T, Close>
where
    F: Future<Output = T>,
{
    let track = ticket.track.clone();
    let mut conn = pin!(conn);
    let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
    let mut armed: Option<Instant> = None;
    std::future::poll_fn(|cx| {
        // The connection first: what it does (reads, writes, handler start and end) is what
        // moves the deadline, and it only happens while it is polled.
        if let Poll::Ready(out) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if Pin::new(&mut ticket.evicted).poll(cx).is_ready() {
            track.mark_reset();
            return Poll::Ready(Err(Close::Evicted));
        }
        if let Some((at, why)) = track.deadline(l) {
            if armed != Some(at) {
                timer.as_mut().reset(at);
                armed = Some(at);
            }
            if timer.as_mut().poll(cx).is_ready() {
                track.mark_reset();
                return Poll::Ready(Err(why));
            }
        }
        Poll::Pending
    })
    .await
}

/// A socket that can be reset instead of closed gracefully.
pub trait Reset {
    fn reset(&self);
}

impl Reset for tokio::net::TcpStream {
    fn reset(&self) {
        let _ = self.set_zero_linger();
    }
}

impl Reset for tokio::io::DuplexStream {
    fn reset(&self) {}
}

/// A connection's socket, reporting reads and write progress to its [`Track`] (the
/// deadlines are kept by [`supervise`]), and reset on drop after a forced close.
pub struct GuardedIo<S: Reset> {
    inner: S,
    track: Arc<Track>,
}

impl<S: Reset> GuardedIo<S> {
    pub fn new(inner: S, track: Arc<Track>) -> GuardedIo<S> {
        GuardedIo { inner, track }
    }
}

impl<S: Reset> Drop for GuardedIo<S> {
    fn drop(&mut self) {
        if self.track.reset.load(Ordering::Relaxed) {
            self.inner.reset();
        }
    }
}

impl<S: AsyncRead + Reset + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.track.received(Instant::now());
        }
        polled
    }
}

impl<S: AsyncWrite + Reset + Unpin> GuardedIo<S> {
    fn note<T>(&self, polled: &Poll<io::Result<T>>) {
        match polled {
            Poll::Ready(Ok(_)) => self.track.wrote(Instant::now(), true),
            Poll::Pending => self.track.wrote(Instant::now(), false),
            Poll::Ready(Err(_)) => {}
        }
    }
}

impl<S: AsyncWrite + Reset + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if polled.is_pending() {
            self.track.wrote(Instant::now(), false);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits::small_for_tests()
    }

    #[test]
    fn deadlines_follow_what_the_connection_is_doing() {
        let l = limits();
        let t0 = Instant::now();
        let track = Arc::new(Track::new(t0, Default::default()));
        // The first request head is counted from the connection's start.
        assert_eq!(
            track.deadline(&l),
            Some((t0 + l.header_timeout, Close::HeaderTimeout))
        );
        track.received(t0 + Duration::from_secs(1));
        assert_eq!(
            track.deadline(&l),
            Some((t0 + l.header_timeout, Close::HeaderTimeout))
        );
        // A handler at work has no deadline here (request_timeout_ms bounds it).
        let busy = track.busy();
        assert_eq!(track.deadline(&l), None);
        assert_eq!(track.waiting_since(), None, "never evicted while answered");
        drop(busy);
        let answered = track.waiting_since().expect("waiting again");
        assert_eq!(
            track.deadline(&l),
            Some((answered + l.idle_timeout, Close::IdleTimeout))
        );
        // A stalled write is due before the idle deadline.
        let w = answered + Duration::from_secs(1);
        track.wrote(w, false);
        track.wrote(w + Duration::from_secs(3), false);
        assert_eq!(
            track.deadline(&l),
            Some((w + l.write_timeout, Close::WriteTimeout)),
            "counted from the first write that made no progress"
        );
        // Progress clears it, and the idle clock counts from the last write.
        let p = w + Duration::from_secs(4);
        track.wrote(p, true);
        assert_eq!(
            track.deadline(&l),
            Some((p + l.idle_timeout, Close::IdleTimeout))
        );
        // The next request's head is counted from its first byte.
        let r = p + Duration::from_secs(2);
        track.received(r);
        assert_eq!(
            track.deadline(&l),
            Some((r + l.header_timeout, Close::HeaderTimeout))
        );
    }

    #[test]
    fn an_old_connection_is_due_once_idle_but_its_answer_is_finished() {
        let l = Limits {
            max_age: Duration::from_secs(3),
            ..limits()
        };
        let t0 = Instant::now();
        let track = Arc::new(Track::new(t0, Default::default()));
        assert_eq!(track.deadline(&l), Some((t0 + l.max_age, Close::MaxAge)));
        let busy = track.busy();
        assert_eq!(track.deadline(&l), None);
        assert!(busy.track().too_old(&l, t0 + l.max_age));
        assert!(!busy.track().too_old(&l, t0 + Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn the_socket_reports_stalled_and_resumed_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = limits();
        let (ours, mut theirs) = tokio::io::duplex(64);
        let track = Arc::new(Track::new(Instant::now(), Default::default()));
        drop(track.busy());
        let mut io = GuardedIo::new(ours, track.clone());
        // Write until the other side's buffer is full and a write has to wait.
        let chunk = [b'x'; 32];
        let mut stalled = false;
        for _ in 0..8 {
            let w = tokio::time::timeout(Duration::from_millis(50), io.write(&chunk)).await;
            if w.is_err() {
                stalled = true;
                break;
            }
        }
        assert!(stalled, "the duplex filled up");
        assert_eq!(track.deadline(&l).map(|d| d.1), Some(Close::WriteTimeout));
        let mut buf = [0u8; 64];
        theirs.read_exact(&mut buf).await.unwrap();
        io.write_all(&chunk).await.unwrap();
        assert_eq!(track.deadline(&l).map(|d| d.1), Some(Close::IdleTimeout));
        // A byte read between requests starts a request head.
        theirs.write_all(b"G").await.unwrap();
        let mut one = [0u8; 1];
        io.read_exact(&mut one).await.unwrap();
        assert_eq!(track.deadline(&l).map(|d| d.1), Some(Close::HeaderTimeout));
    }
}
