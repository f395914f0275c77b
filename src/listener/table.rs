//! The connections of one listening address: who gets a slot, and whose slot a newcomer
//! takes when all are taken.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::conn::Track;
use super::{Close, Limits, PeerKey};

struct Entry {
    peer: PeerKey,
    track: Arc<Track>,
    /// Dropping it (by removing the entry) tells the connection it was evicted.
    _evict: oneshot::Sender<()>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Entry>,
    /// The connections of each peer (at most `max_connections_per_peer` each).
    peers: HashMap<PeerKey, Vec<u64>>,
    next_id: u64,
}

impl Inner {
    fn held(&self, peer: PeerKey) -> usize {
        self.peers.get(&peer).map_or(0, Vec::len)
    }

    /// The connection to evict for a newcomer whose peer holds `held`: from the peers
    /// holding more, the one holding the most that has a connection waiting on its client
    /// (not being answered), its connection waiting longest.
    fn victim(&self, held: usize) -> Option<u64> {
        let mut heavier: Vec<&Vec<u64>> =
            self.peers.values().filter(|ids| ids.len() > held).collect();
        heavier.sort_unstable_by_key(|ids| std::cmp::Reverse(ids.len()));
        heavier.into_iter().find_map(|ids| {
            ids.iter()
                .filter_map(|id| Some((self.conns.get(id)?.track.waiting_since()?, *id)))
                .min()
                .map(|(_, id)| id)
        })
    }

    /// The newcomer's own peer's connection waiting longest, if any is waiting.
    fn own_oldest(&self, peer: PeerKey) -> Option<u64> {
        self.peers
            .get(&peer)?
            .iter()
            .filter_map(|id| Some((self.conns.get(id)?.track.waiting_since()?, *id)))
            .min()
            .map(|(_, id)| id)
    }

    fn remove(&mut self, id: u64) {
        let Some(e) = self.conns.remove(&id) else {
            return;
        };
        if let Some(ids) = self.peers.get_mut(&e.peer) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.peers.remove(&e.peer);
            }
        }
    }
}

/// The connections of one listening address.
#[derive(Default)]
pub struct Table {
    inner: Mutex<Inner>,
    /// Signalled when a connection leaves.
    room: Notify,
    /// Connections being answered.
    answering: Arc<AtomicUsize>,
}

/// A connection's place in its [`Table`]; dropping it frees the slot.
pub struct Ticket {
    id: u64,
    table: Arc<Table>,
    pub track: Arc<Track>,
    /// Resolves when the connection is evicted (its entry, holding the sender, is removed).
    pub(super) evicted: oneshot::Receiver<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.table.inner().remove(self.id);
        self.table.room.notify_one();
    }
}

impl Table {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.inner().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until a connection leaves (or a moment passes: a handler finishing makes a
    /// connection evictable without anyone leaving).
    pub async fn changed(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(20), self.room.notified()).await;
    }

    /// Enters a new connection from `peer`, evicting one if the table is full. Returns the
    /// ticket and whether another connection was evicted for it, or why it is refused:
    /// `Err(None)` when every slot is being answered (the caller waits for [`changed`] and
    /// tries again), `Err(Some(Close::Full))` when the connections waiting on their clients
    /// belong to other peers holding no more than the newcomer's (they are not churned for
    /// it).
    ///
    /// [`changed`]: Table::changed
    pub fn admit(
        self: &Arc<Table>,
        peer: IpAddr,
        l: &Limits,
        now: Instant,
    ) -> Result<(Ticket, bool), Option<Close>> {
        let peer = PeerKey::from(peer);
        let mut inner = self.inner();
        let held = inner.held(peer);
        if held >= l.max_per_peer {
            return Err(Some(Close::PeerCap));
        }
        let mut evicted = false;
        // `while`: a reload may have lowered the limit below the connections held.
        while inner.conns.len() >= l.max_connections {
            // A heavier peer's slot, else one of the newcomer's own peer (a fresh connection
            // replaces a stale one; nobody else loses anything).
            match inner.victim(held).or_else(|| inner.own_oldest(peer)) {
                Some(id) => {
                    inner.remove(id);
                    evicted = true;
                }
                None if self.answering.load(Ordering::Relaxed) >= inner.conns.len() => {
                    return Err(None)
                }
                None => return Err(Some(Close::Full)),
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let track = Arc::new(Track::new(now, self.answering.clone()));
        let (tx, rx) = oneshot::channel();
        inner.conns.insert(
            id,
            Entry {
                peer,
                track: track.clone(),
                _evict: tx,
            },
        );
        inner.peers.entry(peer).or_default().push(id);
        drop(inner);
        Ok((
            Ticket {
                id,
                table: self.clone(),
                track,
                evicted: rx,
            },
            evicted,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits() -> Limits {
        Limits::small_for_tests()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn told(t: &mut Ticket) -> bool {
        matches!(
            t.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        )
    }

    #[test]
    fn a_peer_at_its_cap_is_refused_without_touching_anyone() {
        let l = limits();
        let table = Arc::new(Table::default());
        let now = Instant::now();
        let (mut a, _) = table.admit(ip(2), &l, now).unwrap();
        let (mut b, _) = table.admit(ip(2), &l, now).unwrap();
        assert_eq!(
            table.admit(ip(2), &l, now).err(),
            Some(Some(Close::PeerCap))
        );
        assert!(!told(&mut a) && !told(&mut b));
        assert!(table.admit(ip(3), &l, now).is_ok(), "others still get in");
        drop(a);
        assert!(
            table.admit(ip(2), &l, now).is_ok(),
            "a slot of its own freed"
        );
    }

    #[test]
    fn a_full_table_evicts_the_longest_waiting_connection_of_the_peer_holding_most() {
        let l = Limits {
            max_per_peer: 4,
            ..limits()
        };
        let table = Arc::new(Table::default());
        let t = |ms| Instant::now() + Duration::from_millis(ms);
        let (mut lone, _) = table.admit(ip(9), &l, t(0)).unwrap();
        let (mut first, _) = table.admit(ip(2), &l, t(1)).unwrap();
        let (mut second, _) = table.admit(ip(2), &l, t(2)).unwrap();
        let (mut busy, _) = table.admit(ip(3), &l, t(3)).unwrap();
        let _working = busy.track.busy();
        let (mut newest, evicted) = table.admit(ip(4), &l, t(4)).unwrap();
        assert!(evicted);
        assert_eq!(table.len(), 4);
        // 127.0.0.2 holds two: its longer-waiting one goes, though 127.0.0.9's waited longer.
        assert!(told(&mut first));
        for kept in [&mut lone, &mut second, &mut busy, &mut newest] {
            assert!(!told(kept));
        }
        // Now every peer holds one: a newcomer from one of them takes its own peer's slot...
        let (mut again, evicted) = table.admit(ip(2), &l, t(5)).unwrap();
        assert!(evicted && told(&mut second));
        for kept in [&mut lone, &mut busy, &mut newest] {
            assert!(!told(kept));
        }
        // ...or, when that one is being answered, is refused rather than take another's.
        assert_eq!(table.admit(ip(3), &l, t(5)).err(), Some(Some(Close::Full)));
        assert!(!told(&mut lone) && !told(&mut again) && !told(&mut newest));
        let second = again;
        // Once every slot is being answered, there is nothing to evict: the caller waits,
        // whoever it is.
        let w = [&lone, &second, &newest].map(|t| t.track.busy());
        assert_eq!(table.admit(ip(7), &l, t(6)).err(), Some(None));
        assert_eq!(table.admit(ip(2), &l, t(6)).err(), Some(None));
        drop(w);
        drop(second);
        assert!(
            table.admit(ip(7), &l, t(7)).is_ok(),
            "a slot freed when one left"
        );
    }
}
