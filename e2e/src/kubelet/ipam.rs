//! Pod IPs: one loopback address per Pod, unique while the Pod exists. Processes share the host
//! network, so two Pods can use the same port only on their own addresses. Addresses are handed
//! out round-robin, so an address just released (a deleted Pod that a client may still dial) is
//! the last to be reused.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IpamError {
    #[error("--pod-cidr {0}: expected an IPv4 CIDR inside 127.0.0.0/8 such as 127.0.7.0/24")]
    BadCidr(String),
}

#[derive(Clone, Debug)]
pub struct IpPool {
    first: u32,
    last: u32,
    next: u32,
    used: BTreeSet<u32>,
}

impl IpPool {
    /// A pool over `cidr` (inside 127.0.0.0/8, prefix 8..=30). The network and broadcast
    /// addresses, addresses ending in .0 or .255, and 127.0.0.1 (the host's) are never handed out.
    pub fn new(cidr: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::BadCidr(cidr.to_string());
        let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u32 = prefix.parse().map_err(|_| bad())?;
        if addr.octets()[0] != 127 || !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        let network = u32::from(addr) & mask;
        let first = network + 1;
        let last = (network | !mask) - 1;
        Ok(IpPool {
            first,
            last,
            next: first,
            used: BTreeSet::new(),
        })
    }

    fn usable(ip: u32) -> bool {
        let low = ip & 0xff;
        low != 0 && low != 255 && ip != u32::from(Ipv4Addr::new(127, 0, 0, 1))
    }

    /// The next free address after the last one handed out, or None when all are in use.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let size = self.last - self.first + 1;
        for i in 0..size {
            let ip = self.first + (self.next - self.first + i) % size;
            if Self::usable(ip) && !self.used.contains(&ip) {
                self.used.insert(ip);
                self.next = if ip == self.last { self.first } else { ip + 1 };
                return Some(Ipv4Addr::from(ip));
            }
        }
        None
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn skips_the_host_address_and_network_edges() {
        let mut p = IpPool::new("127.0.0.0/29").unwrap();
        let got: Vec<_> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(
            got,
            [
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.4",
                "127.0.0.5",
                "127.0.0.6"
            ]
            .map(ip)
        );
    }

    #[test]
    fn addresses_are_unique_until_released_and_reused_last() {
        let mut p = IpPool::new("127.5.0.0/29").unwrap();
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_ne!(a, b);
        p.release(a);
        let c = p.allocate().unwrap();
        assert!(
            c != a && c != b,
            "a released address is not reused while others are free"
        );
        while p.allocate().is_some() {}
        p.release(b);
        assert_eq!(
            p.allocate(),
            Some(b),
            "reused once everything else is taken"
        );
        assert_eq!(p.allocate(), None);
    }

    #[test]
    fn skips_dot_zero_and_dot_255_in_larger_ranges() {
        let mut p = IpPool::new("127.9.0.0/16").unwrap();
        let got: Vec<_> = (0..300).map(|_| p.allocate().unwrap()).collect();
        assert!(got
            .iter()
            .all(|a| a.octets()[3] != 0 && a.octets()[3] != 255));
        assert_eq!(got[253], ip("127.9.0.254"));
        assert_eq!(got[254], ip("127.9.1.1"));
    }

    #[test]
    fn only_loopback_cidrs_are_accepted() {
        assert!(IpPool::new("10.0.0.0/24").is_err());
        assert!(IpPool::new("127.0.0.0").is_err());
        assert!(IpPool::new("127.0.0.0/31").is_err());
        assert!(IpPool::new("127.0.0.0/8").is_ok());
        assert_eq!(
            IpPool::new("nope/24").unwrap_err().to_string(),
            "--pod-cidr nope/24: expected an IPv4 CIDR inside 127.0.0.0/8 such as 127.0.7.0/24"
        );
    }
}
