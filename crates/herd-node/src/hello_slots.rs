//! The room a migration listener gives connections that have not said their hello yet: a
//! few per peer address and a bounded number in all, so that idle or slow clients can never
//! keep the listener from taking a real migration's connection.
//!
//! The listener accepts every connection at once (it never leaves them in the kernel's
//! backlog) and asks [`HelloSlots::admit`] what to do with it: a peer that already holds its
//! share is refused (the new connection is closed at once); when every slot is taken, the
//! oldest waiting connection of the peer that holds the most is evicted to make room. A real
//! migration's source sends its hello as soon as it has connected and holds one or two slots,
//! so neither rule ever falls on it while others flood the listener. Each admitted connection
//! still has [`crate::transfer::HELLO_TIMEOUT`] to finish its hello.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

/// Connections waiting for their hello, from one peer address.
pub const PER_PEER: usize = 16;
/// Connections waiting for their hello, in all.
pub const TOTAL: usize = 64;

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<K> {
    /// Its peer holds its share already: close it.
    Refused,
    /// Read its hello; first close `evict` (a waiting connection of another peer), if any.
    Admitted { evict: Option<K> },
}

/// The connections waiting for their hello, by peer, each known by a key `K` (the task that
/// reads its hello).
#[derive(Debug)]
pub struct HelloSlots<K> {
    per_peer: usize,
    total: usize,
    /// Each peer's waiting connections with their arrival number, oldest first.
    by_peer: HashMap<IpAddr, VecDeque<(u64, K)>>,
    peer_of: HashMap<K, IpAddr>,
    arrivals: u64,
}

impl<K: Copy + Eq + Hash> Default for HelloSlots<K> {
    fn default() -> Self {
        HelloSlots::new(PER_PEER, TOTAL)
    }
}

impl<K: Copy + Eq + Hash> HelloSlots<K> {
    /// At most `per_peer` waiting connections per peer address and `total` in all (both at least 1).
    pub fn new(per_peer: usize, total: usize) -> Self {
        HelloSlots {
            per_peer: per_peer.max(1),
            total: total.max(1),
            by_peer: HashMap::new(),
            peer_of: HashMap::new(),
            arrivals: 0,
        }
    }

    /// How many connections are waiting for their hello.
    pub fn len(&self) -> usize {
        self.peer_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peer_of.is_empty()
    }

    /// Whether a new connection from `peer` is admitted; if so it is recorded as `key`, and the
    /// connection to evict (already forgotten here) comes with the answer.
    pub fn admit(&mut self, peer: IpAddr, key: K) -> Admission<K> {
        if self.by_peer.get(&peer).is_some_and(|q| q.len() >= self.per_peer) {
            return Admission::Refused;
        }
        let evict = if self.len() >= self.total { self.evict_one() } else { None };
        self.arrivals += 1;
        self.by_peer.entry(peer).or_default().push_back((self.arrivals, key));
        self.peer_of.insert(key, peer);
        Admission::Admitted { evict }
    }

    /// Forgets connection `key` (its hello ended, one way or another). Unknown keys are ignored.
    pub fn finished(&mut self, key: K) {
        let Some(peer) = self.peer_of.remove(&key) else { return };
        if let Some(q) = self.by_peer.get_mut(&peer) {
            q.retain(|(_, k)| *k != key);
            if q.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
    }

    /// Forgets and returns the oldest waiting connection of the peer that holds the most (of
    /// those that hold as many, the one whose oldest connection came first).
    fn evict_one(&mut self) -> Option<K> {
        let peer = *self
            .by_peer
            .iter()
            .filter_map(|(peer, q)| Some((peer, q.len(), q.front()?.0)))
            .max_by_key(|(_, len, first)| (*len, std::cmp::Reverse(*first)))?
            .0;
        let q = self.by_peer.get_mut(&peer)?;
        let (_, key) = q.pop_front()?;
        if q.is_empty() {
            self.by_peer.remove(&peer);
        }
        self.peer_of.remove(&key);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_peer_gets_its_share_and_no_more() {
        let mut s = HelloSlots::new(3, 100);
        for k in 0..3 {
            assert_eq!(s.admit(ip(1), k), Admission::Admitted { evict: None });
        }
        assert_eq!(s.admit(ip(1), 3), Admission::Refused);
        // Another peer is not held up by the first one.
        assert_eq!(s.admit(ip(2), 10), Admission::Admitted { evict: None });
        // A slot that ends is free again.
        s.finished(1);
        assert_eq!(s.admit(ip(1), 4), Admission::Admitted { evict: None });
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn a_full_listener_evicts_the_oldest_of_the_busiest_peer() {
        let mut s = HelloSlots::new(3, 5);
        for k in 0..3 {
            assert_eq!(s.admit(ip(1), k), Admission::Admitted { evict: None });
        }
        assert_eq!(s.admit(ip(2), 100), Admission::Admitted { evict: None });
        assert_eq!(s.admit(ip(3), 200), Admission::Admitted { evict: None });
        // Full: a newcomer pushes out the busiest peer's oldest.
        assert_eq!(s.admit(ip(4), 300), Admission::Admitted { evict: Some(0) });
        assert_eq!(s.len(), 5);
        // An evicted key that finishes later changes nothing.
        s.finished(0);
        assert_eq!(s.len(), 5);
        // The busiest peer loses its oldest: peer 1 (two left), then peer 4 (two), then peer 4.
        assert_eq!(s.admit(ip(4), 301), Admission::Admitted { evict: Some(1) });
        assert_eq!(s.admit(ip(4), 302), Admission::Admitted { evict: Some(300) });
        assert_eq!(s.admit(ip(5), 400), Admission::Admitted { evict: Some(301) });
        // Between peers holding as many, the connection that has waited longest goes.
        assert_eq!(s.admit(ip(4), 303), Admission::Admitted { evict: Some(2) });
        // From then on a flooding peer only evicts its own connections; the others' stay.
        for k in 304..320 {
            assert_eq!(s.admit(ip(4), k), Admission::Admitted { evict: Some(k - 2) });
        }
        for k in [100, 200, 400] {
            assert!(s.peer_of.contains_key(&k), "{k} was evicted");
        }
    }

    #[test]
    fn finishing_everything_leaves_nothing() {
        let mut s = HelloSlots::new(2, 2);
        assert_eq!(s.admit(ip(1), 1), Admission::Admitted { evict: None });
        assert_eq!(s.admit(ip(2), 2), Admission::Admitted { evict: None });
        s.finished(1);
        s.finished(2);
        s.finished(3);
        assert!(s.is_empty() && s.by_peer.is_empty());
    }
}
