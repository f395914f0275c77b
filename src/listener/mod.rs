//! The listener's connections: who gets a slot, and when a connection is closed.
//!
//! Every accepted connection is entered in its listening address's [`Table`] with a
//! [`Track`] of what it is doing ([`conn`]: deadlines, the socket, the watchdog; [`table`]:
//! slots and eviction). The guarantees (limits from `[http]`, see [`Limits`]):
//!
//! - **Deadlines.** A connection is closed when its request head is not complete
//!   `header_timeout_ms` after its first byte (after the connection opened, for the first
//!   request), when it sits idle between requests for `idle_timeout_ms`, when writing an
//!   answer makes no progress for `write_timeout_ms`, and once it is older than
//!   `max_connection_age_ms` (an answer being prepared then goes out with `Connection: close`
//!   first). A handler's own time is bounded by `request_timeout_ms`.
//! - **Per peer.** One peer (an IPv4 address, or an IPv6 /64) holds at most
//!   `max_connections_per_peer` connections; a new one beyond is reset at once, so one peer
//!   never takes the slots of others.
//! - **Fair acceptance.** When all `max_connections` slots are taken, a new connection takes
//!   the slot of one that is only waiting on its client (never of one being answered): from
//!   the peer holding the most connections, if it holds more than the newcomer's, the one of
//!   them waiting longest; else from the newcomer's own peer; else the newcomer is reset at
//!   once. So a client that holds few connections never waits behind stuck ones, and peers
//!   holding as many as one another cannot churn one another's slots. Only when every slot is
//!   being answered does a new connection wait for one (in the kernel's accept queue, as with
//!   any busy server).
//! - **Resets.** A connection closed by force is reset (`SO_LINGER` 0), so the kernel keeps no
//!   unsent answer for it.
//!
//! Handlers authenticate before they read a request body, so an unauthenticated client can
//! keep a slot "being answered" only for as long as a handler takes, never by sending slowly.

mod conn;
mod table;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tracing::{debug, warn};

use crate::config::{Config, Http};

pub use conn::{supervise, Busy, GuardedIo, Reset, Track};
pub use table::{Table, Ticket};

/// The connection limits of `[http]`, read at each accept (a reload applies to new
/// connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_peer: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_age: Duration,
    /// `SO_SNDBUF` of each connection; 0 leaves the kernel's.
    pub send_buffer: usize,
}

impl From<&Http> for Limits {
    fn from(h: &Http) -> Limits {
        Limits {
            max_connections: h.max_connections,
            max_per_peer: h.max_connections_per_peer,
            header_timeout: Duration::from_millis(h.header_timeout_ms),
            idle_timeout: Duration::from_millis(h.idle_timeout_ms),
            write_timeout: Duration::from_millis(h.write_timeout_ms),
            max_age: Duration::from_millis(h.max_connection_age_ms),
            send_buffer: h.send_buffer_bytes,
        }
    }
}

#[cfg(test)]
impl Limits {
    /// Four slots, two per peer, the default timeouts: small enough to fill in a unit test.
    pub(crate) fn small_for_tests() -> Limits {
        Limits {
            max_connections: 4,
            max_per_peer: 2,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(120),
            send_buffer: 0,
        }
    }
}

/// Why the listener closed a connection (the `reason` label of
/// `turnbridge_http_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Close {
    HeaderTimeout,
    IdleTimeout,
    WriteTimeout,
    MaxAge,
    /// Its slot went to a new connection.
    Evicted,
    /// Refused at accept: its peer was at its cap.
    PeerCap,
    /// Refused at accept: the listener was full; no peer holding more than the newcomer's,
    /// nor its own, had a connection to give up.
    Full,
}

impl Close {
    pub fn as_str(self) -> &'static str {
        match self {
            Close::HeaderTimeout => "header_timeout",
            Close::IdleTimeout => "idle_timeout",
            Close::WriteTimeout => "write_timeout",
            Close::MaxAge => "max_age",
            Close::Evicted => "evicted",
            Close::PeerCap => "peer_cap",
            Close::Full => "full",
        }
    }
}

/// Whom the per-peer cap counts together: an IPv4 address, or an IPv6 /64 (one host's
/// usual share; an IPv4 address mapped into IPv6 counts as that IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for PeerKey {
    fn from(ip: IpAddr) -> PeerKey {
        match ip.to_canonical() {
            IpAddr::V4(a) => PeerKey::V4(a.to_bits()),
            IpAddr::V6(a) => PeerKey::V6((a.to_bits() >> 64) as u64),
        }
    }
}

/// Connections the kernel completes and queues for `accept` (Linux caps it at
/// `net.core.somaxconn`, 4096 by default). Larger than tokio's 1024: when a siege of
/// reconnecting clients overflows the queue, a client's connection attempt is dropped and
/// retried only a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket on `addr` (an address like `127.0.0.1:8780`).
pub fn bind(addr: &str) -> io::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the open-file limit for the connections, and warns when it is still too low for
/// `http.max_connections`.
pub fn check_open_file_limit(config: &Config) {
    let listeners = if config.http.monitor_listen.is_empty() {
        1
    } else {
        2
    };
    // Besides connections: the store, spool and Turnkey folders, outbound webhooks.
    let needed = (config.http.max_connections * listeners + 256) as u64;
    match raise_open_file_limit() {
        Ok(limit) if limit < needed => warn!(
            "the open-file limit is {limit}, below the {needed} that http.max_connections needs: raise LimitNOFILE= (or ulimit -n)"
        ),
        Ok(limit) => debug!("open-file limit {limit}"),
        Err(e) => warn!("could not read or raise the open-file limit: {e}"),
    }
}

/// Raises the open-file soft limit to the hard limit (each connection is a descriptor, and
/// the usual soft limit is 1024). Returns the soft limit in force afterwards.
///
/// Written with `libc` directly: two calls, no crate needed. Under the packaged unit,
/// `LimitNOFILE=` sets both limits and this finds nothing to do.
pub fn raise_open_file_limit() -> io::Result<u64> {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            lim.rlim_cur = lim.rlim_max;
        }
        Ok(lim.rlim_cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_counted_by_ipv4_address_and_ipv6_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(PeerKey::from(a), PeerKey::from(b));
        assert_ne!(PeerKey::from(a), PeerKey::from(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(PeerKey::from(mapped), PeerKey::from(ip(2)));
        assert_ne!(PeerKey::from(ip(2)), PeerKey::from(ip(3)));
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last))
    }
}
