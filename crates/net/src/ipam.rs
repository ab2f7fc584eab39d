//! IP address management.
//!
//! Model: every bridge network owns one IPv4 subnet. A subnet is either given by the user
//! (`--subnet`) or carved from the configured [`AddressPool`]s: each pool is a large block
//! (e.g. `172.17.0.0/16` split into one `/16`, or `172.18.0.0/15` split into `/16`s) and
//! the first block that overlaps neither another network nor a host route wins. Inside a
//! subnet the gateway takes the first host address unless given; containers get addresses
//! sequentially after the last one handed out (wrapping), so a just-released address is
//! not reused at once (stale ARP entries). The [`SubnetAllocator`] is plain data and is
//! persisted with the network (see `state`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// A block of address space that subnets of `prefix_len` are carved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPool {
    /// The block, e.g. `172.18.0.0/16`.
    pub base: Ipv4Net,
    /// The prefix length of each subnet carved from it (≥ the base's prefix length).
    pub prefix_len: u8,
}

impl AddressPool {
    /// A pool of `base` cut into subnets of `prefix_len`.
    pub fn new(base: Ipv4Net, prefix_len: u8) -> Self {
        AddressPool { base, prefix_len }
    }

    /// Docker's default local pools: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s.
    pub fn defaults() -> Vec<AddressPool> {
        let mut v = Vec::new();
        if let Ok(n) = "172.17.0.0/16".parse() {
            v.push(AddressPool::new(n, 16));
        }
        for second in 18..=31u8 {
            v.push(AddressPool::new(
                Ipv4Net::new(Ipv4Addr::new(172, second, 0, 0), 16).unwrap_or_default(),
                16,
            ));
        }
        if let Ok(n) = "192.168.0.0/16".parse() {
            v.push(AddressPool::new(n, 20));
        }
        v
    }
}

/// Whether two subnets share any address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Picks the first subnet from `pools` that overlaps nothing in `taken`.
pub fn choose_subnet(pools: &[AddressPool], taken: &[Ipv4Net]) -> Result<Ipv4Net> {
    for pool in pools {
        let Ok(subnets) = pool.base.subnets(pool.prefix_len) else {
            continue;
        };
        for candidate in subnets {
            if !taken.iter().any(|t| overlaps(t, &candidate)) {
                return Ok(candidate);
            }
        }
    }
    Err(NetError::PoolExhausted)
}

/// Reads the IPv4 routing table of the current network namespace (`/proc/net/route`)
/// and returns the destinations of all non-default routes.
pub fn host_routes() -> Vec<Ipv4Net> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    parse_proc_route(&text)
}

fn parse_proc_route(text: &str) -> Vec<Ipv4Net> {
    text.lines().skip(1).flat_map(host_routes_of_line).collect()
}

/// The destination of one `/proc/net/route` line (none for the default route).
pub(crate) fn host_routes_of_line(line: &str) -> Option<Ipv4Net> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let dst = u32::from_str_radix(f[1], 16).ok()?;
    let mask = u32::from_str_radix(f[7], 16).ok()?;
    // The file prints the in-memory (network byte order) words as native integers.
    let dst = Ipv4Addr::from(dst.to_ne_bytes());
    let prefix = u32::from_be_bytes(mask.to_ne_bytes()).count_ones() as u8;
    if prefix == 0 {
        return None;
    }
    Ipv4Net::new(dst, prefix).ok().map(|n| n.trunc())
}

/// The addresses of one subnet: gateway, and those handed out to endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetAllocator {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// The gateway (the bridge's address); never handed out.
    pub gateway: Ipv4Addr,
    /// Addresses handed out to endpoints.
    pub allocated: BTreeSet<Ipv4Addr>,
    /// The last address handed out, where the next search starts.
    pub last: Option<Ipv4Addr>,
}

impl SubnetAllocator {
    /// An allocator for `subnet` with `gateway` (default: the first host address).
    /// Fails when the subnet is too small or the gateway is outside it.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Self> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(NetError::InvalidArgument(format!(
                "subnet {subnet} is too small (need at least a /30)"
            )));
        }
        let first = Ipv4Addr::from(u32::from(subnet.network()) + 1);
        let gateway = gateway.unwrap_or(first);
        if !Self::is_host_addr(&subnet, gateway) {
            return Err(NetError::InvalidArgument(format!(
                "gateway {gateway} is not a host address of subnet {subnet}"
            )));
        }
        Ok(SubnetAllocator {
            subnet,
            gateway,
            allocated: BTreeSet::new(),
            last: None,
        })
    }

    fn is_host_addr(subnet: &Ipv4Net, ip: Ipv4Addr) -> bool {
        subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
    }

    /// Hands out `requested` if given and free, else the next free address.
    /// `network` names the network in errors.
    pub fn allocate(&mut self, requested: Option<Ipv4Addr>, network: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = requested {
            if !Self::is_host_addr(&self.subnet, ip) {
                return Err(NetError::InvalidArgument(format!(
                    "address {ip} is not a host address of subnet {} of network {network}",
                    self.subnet
                )));
            }
            if ip == self.gateway || self.allocated.contains(&ip) {
                return Err(NetError::AddressInUse {
                    ip: ip.to_string(),
                    network: network.to_string(),
                });
            }
            self.allocated.insert(ip);
            return Ok(ip);
        }
        let lo = u32::from(self.subnet.network()) + 1;
        let hi = u32::from(self.subnet.broadcast()) - 1;
        let count = hi - lo + 1;
        let start = match self.last {
            Some(l) if self.subnet.contains(&l) => u32::from(l).saturating_add(1),
            _ => lo,
        };
        for i in 0..count {
            let mut cand = start.wrapping_add(i);
            if cand > hi || cand < lo {
                cand = lo + (cand.wrapping_sub(lo)) % count;
            }
            let ip = Ipv4Addr::from(cand);
            if ip != self.gateway && !self.allocated.contains(&ip) {
                self.allocated.insert(ip);
                self.last = Some(ip);
                return Ok(ip);
            }
        }
        Err(NetError::NetworkFull(network.to_string()))
    }

    /// Gives `ip` back; releasing an address that is not allocated does nothing.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.allocated.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn choose_skips_taken_and_routes() {
        let pools = vec![AddressPool::new(net("10.9.0.0/16"), 24)];
        let taken = vec![net("10.9.0.0/24"), net("10.9.1.128/25")];
        assert_eq!(choose_subnet(&pools, &taken).unwrap(), net("10.9.2.0/24"));
        let all = vec![net("10.9.0.0/16")];
        assert!(matches!(
            choose_subnet(&pools, &all),
            Err(NetError::PoolExhausted)
        ));
        // A bigger host route covering the whole pool also blocks it; next pool is used.
        let pools2 = vec![pools[0], AddressPool::new(net("10.10.0.0/16"), 16)];
        assert_eq!(choose_subnet(&pools2, &all).unwrap(), net("10.10.0.0/16"));
    }

    #[test]
    fn defaults_start_with_172_17() {
        let d = AddressPool::defaults();
        assert_eq!(choose_subnet(&d, &[]).unwrap(), net("172.17.0.0/16"));
        assert_eq!(
            choose_subnet(&d, &[net("172.17.0.0/16")]).unwrap(),
            net("172.18.0.0/16")
        );
    }

    #[test]
    fn overlap_detection() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.2.0/24")));
        assert!(overlaps(&net("10.1.2.0/24"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.1.2.0/24"), &net("10.1.3.0/24")));
    }

    #[test]
    fn parses_proc_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_proc_route(text), vec![net("192.0.2.0/24")]);
    }

    #[test]
    fn allocate_release_sequential() {
        let mut a = SubnetAllocator::new(net("10.5.0.0/29"), None).unwrap();
        assert_eq!(a.gateway, Ipv4Addr::new(10, 5, 0, 1));
        let got: Vec<_> = (0..5).map(|_| a.allocate(None, "n").unwrap()).collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 5, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 5, 0, 6));
        assert!(matches!(
            a.allocate(None, "n"),
            Err(NetError::NetworkFull(_))
        ));
        a.release(Ipv4Addr::new(10, 5, 0, 3));
        assert_eq!(a.allocate(None, "n").unwrap(), Ipv4Addr::new(10, 5, 0, 3));
        // Released address is not immediately reused while others are free.
        let mut b = SubnetAllocator::new(net("10.5.0.0/24"), None).unwrap();
        let x = b.allocate(None, "n").unwrap();
        b.release(x);
        assert_ne!(b.allocate(None, "n").unwrap(), x);
    }

    #[test]
    fn requested_addresses() {
        let mut a =
            SubnetAllocator::new(net("10.5.0.0/24"), Some(Ipv4Addr::new(10, 5, 0, 254))).unwrap();
        assert_eq!(
            a.allocate(Some(Ipv4Addr::new(10, 5, 0, 1)), "n").unwrap(),
            Ipv4Addr::new(10, 5, 0, 1)
        );
        assert!(matches!(
            a.allocate(Some(Ipv4Addr::new(10, 5, 0, 1)), "n"),
            Err(NetError::AddressInUse { .. })
        ));
        assert!(matches!(
            a.allocate(Some(Ipv4Addr::new(10, 5, 0, 254)), "n"),
            Err(NetError::AddressInUse { .. })
        ));
        assert!(matches!(
            a.allocate(Some(Ipv4Addr::new(10, 6, 0, 1)), "n"),
            Err(NetError::InvalidArgument(_))
        ));
        assert!(
            SubnetAllocator::new(net("10.5.0.0/24"), Some(Ipv4Addr::new(10, 7, 0, 1))).is_err()
        );
        // Persisted and reloaded allocator is identical.
        let json = serde_json::to_string(&a).unwrap();
        let back: SubnetAllocator = serde_json::from_str(&json).unwrap();
        assert_eq!(a, back);
    }
}
