//! Container IP address management: hands out addresses of the cluster's container range.
//!
//! The Control node owns allocation, so a container keeps its address wherever it runs.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Allocates addresses from a range, lowest free address after the last one handed out.
#[derive(Debug, Clone)]
pub struct Ipam {
    range: Ipv4Net,
    used: HashSet<Ipv4Addr>,
    /// Offset of the next address to try; wraps, so allocation is O(1) amortised.
    cursor: u32,
}

impl Ipam {
    /// Addresses of `range` except its network and broadcast addresses.
    pub fn new(range: Ipv4Net) -> Self {
        Ipam { range, used: HashSet::new(), cursor: 1 }
    }

    pub fn range(&self) -> Ipv4Net {
        self.range
    }

    fn size(&self) -> u32 {
        1u32.checked_shl(32 - self.range.prefix_len() as u32).unwrap_or(u32::MAX)
    }

    fn usable(&self, offset: u32) -> bool {
        let size = self.size();
        size <= 2 || (offset != 0 && offset != size - 1)
    }

    /// Marks an address as in use (for addresses read back from the cluster state).
    /// Returns false when it is outside the range.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        if !self.range.contains(&ip) {
            return false;
        }
        self.used.insert(ip);
        true
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }

    /// The next free address, or `None` when the range is exhausted.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let size = self.size();
        let base = u32::from(self.range.network());
        for step in 0..size {
            let offset = (self.cursor.wrapping_add(step)) % size;
            if !self.usable(offset) {
                continue;
            }
            let ip = Ipv4Addr::from(base.wrapping_add(offset));
            if self.used.insert(ip) {
                self.cursor = (offset + 1) % size;
                return Some(ip);
            }
        }
        None
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_order_skipping_reserved_and_edges() {
        let mut ipam = Ipam::new("10.88.0.0/29".parse().unwrap());
        ipam.reserve("10.88.0.2".parse().unwrap());
        let got: Vec<_> = std::iter::from_fn(|| ipam.allocate()).collect();
        let want: Vec<Ipv4Addr> = ["10.88.0.1", "10.88.0.3", "10.88.0.4", "10.88.0.5", "10.88.0.6"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        assert_eq!(ipam.allocate(), None, "range exhausted");
        ipam.release("10.88.0.4".parse().unwrap());
        assert_eq!(ipam.allocate(), Some("10.88.0.4".parse().unwrap()));
    }

    #[test]
    fn addresses_outside_the_range_are_refused() {
        let mut ipam = Ipam::new("10.88.0.0/16".parse().unwrap());
        assert!(!ipam.reserve("10.89.0.1".parse().unwrap()));
        assert!(ipam.reserve("10.88.3.1".parse().unwrap()));
        assert_eq!(ipam.in_use(), 1);
    }

    #[test]
    fn many_allocations_are_unique() {
        let mut ipam = Ipam::new("10.88.0.0/16".parse().unwrap());
        let mut seen = HashSet::new();
        for _ in 0..65534 {
            assert!(seen.insert(ipam.allocate().unwrap()));
        }
        assert_eq!(ipam.allocate(), None);
    }
}
