//! The [`NetworkManager`]: networks, endpoints, published ports, DNS, restore.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use rand::Rng;

use crate::dns::{DnsServer, Records};
use crate::error::{NetError, Result};
use crate::files::{render_hosts, ResolvConf};
use crate::firewall::{self, FwNetwork, FwPort};
use crate::ipam::{self, AddressPool, SubnetAllocator};
use crate::link;
use crate::ports::{self, Reservation};
use crate::state::{
    ContainerNet, Driver, Endpoint, NetRecord, Network, NetworkSpec, PortMapping, Published, State,
};

const STATE_FILE: &str = "networks.json";
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// Settings of a [`NetworkManager`].
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Device of the default `bridge` network (docker: `docker0`).
    pub default_bridge: String,
    /// Subnet of the default network; chosen from `address_pools` when None.
    pub default_subnet: Option<Ipv4Net>,
    /// Prefix of our iptables chains (≤ 16 characters of `[A-Za-z0-9_-]`).
    pub chain_prefix: String,
    /// Pools that subnets are chosen from.
    pub address_pools: Vec<AddressPool>,
    /// Upstream resolvers of the embedded DNS; None reads `host_resolv_conf`.
    pub dns_upstreams: Option<Vec<SocketAddr>>,
    /// Whether user-defined networks get an embedded DNS server.
    pub enable_dns: bool,
    /// Range (inclusive) that automatic host ports are picked from.
    pub port_range: (u16, u16),
    /// The host's resolv.conf (the base of the containers' resolv.conf).
    pub host_resolv_conf: PathBuf,
    /// MTU of the veth pairs.
    pub mtu: u32,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            default_bridge: "berth0".into(),
            default_subnet: None,
            chain_prefix: "BERTH".into(),
            address_pools: AddressPool::defaults(),
            dns_upstreams: None,
            enable_dns: true,
            port_range: (49153, 65535),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            mtu: 1500,
        }
    }
}

/// What [`NetworkManager::reconcile`] cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// (container id, network name) of the endpoints released.
    pub endpoints_released: Vec<(String, String)>,
    /// Containers whose published ports were released.
    pub ports_released: Vec<String>,
    /// Links found in our bridges that belong to no endpoint (left by a crash between
    /// creating a veth pair and recording it), deleted.
    pub stray_links_removed: Vec<String>,
}

struct Inner {
    state: State,
    reservations: HashMap<String, Vec<Reservation>>,
    dns: HashMap<String, DnsServer>,
}

/// Owner of all networks of one daemon. See the crate docs for the model.
pub struct NetworkManager {
    state_path: PathBuf,
    run_dir: PathBuf,
    opts: ManagerOptions,
    inner: Mutex<Inner>,
}

fn new_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn v4_host_ip(ip: Option<IpAddr>) -> Result<Option<Ipv4Addr>> {
    match ip {
        None => Ok(None),
        Some(IpAddr::V4(v4)) if v4.is_unspecified() => Ok(None),
        Some(IpAddr::V4(v4)) => Ok(Some(v4)),
        Some(IpAddr::V6(v6)) if v6.is_unspecified() => Ok(None),
        Some(IpAddr::V6(v6)) => Err(NetError::InvalidArgument(format!(
            "host address {v6} for a published port: only IPv4 is supported"
        ))),
    }
}

impl Inner {
    fn find(&self, name_or_id: &str) -> Result<usize> {
        // Docker's NetworkMode "default" is the bridge network.
        let name_or_id = if name_or_id == "default" {
            "bridge"
        } else {
            name_or_id
        };
        let nets = &self.state.networks;
        if let Some(i) = nets
            .iter()
            .position(|r| r.network.name == name_or_id || r.network.id == name_or_id)
        {
            return Ok(i);
        }
        if name_or_id.is_empty() {
            return Err(NetError::NetworkNotFound(String::new()));
        }
        let matches: Vec<usize> = nets
            .iter()
            .enumerate()
            .filter(|(_, r)| r.network.id.starts_with(name_or_id))
            .map(|(i, _)| i)
            .collect();
        match matches.as_slice() {
            [i] => Ok(*i),
            [] => Err(NetError::NetworkNotFound(name_or_id.to_string())),
            _ => Err(NetError::AmbiguousNetwork(name_or_id.to_string())),
        }
    }

    fn bridges(&self) -> Vec<String> {
        self.state
            .networks
            .iter()
            .filter_map(|r| r.network.bridge.clone())
            .collect()
    }

    fn fw_model(&self) -> (Vec<FwNetwork>, Vec<FwPort>) {
        let mut nets = Vec::new();
        for r in &self.state.networks {
            if let (Some(b), Some(s)) = (&r.network.bridge, r.network.subnet) {
                nets.push(FwNetwork {
                    bridge: b.clone(),
                    subnet: s,
                    internal: r.network.internal,
                });
            }
        }
        let all: Vec<&Published> = self.state.ports.values().flatten().collect();
        let ports = self.fw_ports(&all);
        (nets, ports)
    }

    fn fw_ports(&self, list: &[&Published]) -> Vec<FwPort> {
        let mut ports = Vec::new();
        for p in list {
            let Some(bridge) = self
                .state
                .networks
                .iter()
                .find(|r| r.network.id == p.network_id)
                .and_then(|r| r.network.bridge.clone())
            else {
                continue;
            };
            ports.push(FwPort {
                bridge,
                container_ip: p.container_ip,
                container_port: p.mapping.container_port,
                host_ip: v4_host_ip(p.mapping.host_ip).ok().flatten(),
                host_port: p.mapping.host_port.unwrap_or(0),
                proto: p.mapping.proto,
            });
        }
        ports
    }

    fn dns_records(&self, idx: usize) -> Records {
        let mut recs = Records::new();
        for ep in self.state.networks[idx].network.endpoints.values() {
            let mut names = vec![ep.container_name.clone()];
            names.push(ep.container_id.chars().take(12).collect());
            names.extend(ep.aliases.iter().cloned());
            for n in names {
                let n = n
                    .trim_start_matches('/')
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                if n.is_empty() {
                    continue;
                }
                let v = recs.entry(n).or_default();
                if !v.contains(&ep.ip) {
                    v.push(ep.ip);
                }
            }
        }
        recs
    }

    fn refresh_dns(&self, idx: usize) {
        if let Some(s) = self.dns.get(&self.state.networks[idx].network.id) {
            s.set_records(self.dns_records(idx));
        }
    }
}

/// The published ports of `container_id` from index `from` on.
fn entry_tail<'a>(inner: &'a Inner, container_id: &str, from: usize) -> Vec<&'a Published> {
    inner
        .state
        .ports
        .get(container_id)
        .map(|l| l.iter().skip(from).collect())
        .unwrap_or_default()
}

/// Drops the published ports of `container_id` from index `before` on.
fn rollback_ports(inner: &mut Inner, container_id: &str, before: usize) {
    if let Some(list) = inner.state.ports.get_mut(container_id) {
        list.truncate(before);
        if list.is_empty() {
            inner.state.ports.remove(container_id);
        }
    }
}

impl NetworkManager {
    /// Opens (creating if needed) the state under `state_dir`, makes sure the default,
    /// host and none networks exist, and restores kernel state: bridges, `ip_forward`,
    /// our firewall chains and jumps, host port reservations and DNS servers.
    /// `run_dir` is kept for runtime files (created if missing).
    pub fn open(state_dir: &Path, run_dir: &Path, opts: ManagerOptions) -> Result<NetworkManager> {
        if !firewall::valid_prefix(&opts.chain_prefix) {
            return Err(NetError::InvalidArgument(format!(
                "chain prefix {:?} (1-16 characters of [A-Za-z0-9_-])",
                opts.chain_prefix
            )));
        }
        for d in [state_dir, run_dir] {
            std::fs::create_dir_all(d).map_err(|e| NetError::io(d, e))?;
        }
        let state_path = state_dir.join(STATE_FILE);
        let state = State::load(&state_path)?;
        let mgr = NetworkManager {
            state_path,
            run_dir: run_dir.to_path_buf(),
            opts,
            inner: Mutex::new(Inner {
                state,
                reservations: HashMap::new(),
                dns: HashMap::new(),
            }),
        };
        mgr.restore()?;
        Ok(mgr)
    }

    /// The run directory given to [`NetworkManager::open`].
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Saves the state durably (temporary file, fsync, rename, fsync of the directory):
    /// for networks, which only their owner creates and removes.
    fn save(&self, inner: &Inner) -> Result<()> {
        inner.state.save(&self.state_path, true)
    }

    /// Saves the state atomically but without fsync: for endpoints and published ports,
    /// which change with every container start and stop. A daemon killed at any moment
    /// leaves a whole file (rename is atomic, the page cache survives the process); after
    /// a host crash no container runs, and [`Self::reconcile`] drops whatever endpoints
    /// and ports the file still lists.
    fn save_endpoints(&self, inner: &Inner) -> Result<()> {
        inner.state.save(&self.state_path, false)
    }

    /// Subnets that a new network must not overlap: other networks and host routes that
    /// are not on our own bridges.
    fn taken_subnets(inner: &Inner) -> Vec<(Ipv4Net, String)> {
        let mut taken: Vec<(Ipv4Net, String)> = inner
            .state
            .networks
            .iter()
            .filter_map(|r| {
                r.network
                    .subnet
                    .map(|s| (s, format!("network {}", r.network.name)))
            })
            .collect();
        let ours = inner.bridges();
        let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        for line in text.lines().skip(1) {
            let iface = line.split_whitespace().next().unwrap_or("");
            if ours.iter().any(|b| b == iface) {
                continue;
            }
            if let Some(n) = ipam::host_routes_of_line(line) {
                taken.push((n, format!("host route {n} on {iface}")));
            }
        }
        taken
    }

    fn restore(&self) -> Result<()> {
        let mut inner = self.lock();
        // Pre-defined networks.
        if !inner
            .state
            .networks
            .iter()
            .any(|r| r.network.name == "bridge")
        {
            let taken: Vec<Ipv4Net> = Self::taken_subnets(&inner)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            let subnet = match self.opts.default_subnet {
                Some(s) => s.trunc(),
                None => ipam::choose_subnet(&self.opts.address_pools, &taken)?,
            };
            let alloc = SubnetAllocator::new(subnet, None)?;
            inner.state.networks.insert(
                0,
                NetRecord {
                    network: Network {
                        id: new_id(),
                        name: "bridge".into(),
                        driver: Driver::Bridge,
                        subnet: Some(subnet),
                        gateway: Some(alloc.gateway),
                        bridge: Some(self.opts.default_bridge.clone()),
                        internal: false,
                        labels: BTreeMap::new(),
                        options: BTreeMap::new(),
                        created: now(),
                        endpoints: BTreeMap::new(),
                    },
                    ipam: Some(alloc),
                },
            );
        }
        for (name, driver) in [("host", Driver::Host), ("none", Driver::Null)] {
            if !inner.state.networks.iter().any(|r| r.network.name == name) {
                inner.state.networks.push(NetRecord {
                    network: Network {
                        id: new_id(),
                        name: name.into(),
                        driver,
                        subnet: None,
                        gateway: None,
                        bridge: None,
                        internal: false,
                        labels: BTreeMap::new(),
                        options: BTreeMap::new(),
                        created: now(),
                        endpoints: BTreeMap::new(),
                    },
                    ipam: None,
                });
            }
        }
        link::set_sysctl("net/ipv4/ip_forward", "1")?;
        for r in &inner.state.networks {
            if let (Some(b), Some(a)) = (&r.network.bridge, &r.ipam) {
                link::ensure_bridge(b, a.gateway, a.subnet.prefix_len())?;
                for ep in r.network.endpoints.values() {
                    if let Err(e) = link::reattach(&ep.veth_host, b) {
                        tracing::warn!(veth = %ep.veth_host, error = %e, "could not reattach endpoint");
                    }
                }
            }
        }
        let (nets, fw_ports) = inner.fw_model();
        firewall::apply(&self.opts.chain_prefix, &nets, &fw_ports, true)?;
        // Re-reserve published host ports.
        let mut reservations: HashMap<String, Vec<Reservation>> = HashMap::new();
        for (cid, list) in &inner.state.ports {
            for p in list {
                let ip = v4_host_ip(p.mapping.host_ip)
                    .ok()
                    .flatten()
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                match ports::reserve(ip, p.mapping.host_port.unwrap_or(0), p.mapping.proto) {
                    Ok(r) => reservations.entry(cid.clone()).or_default().push(r),
                    Err(e) => {
                        tracing::warn!(container = %cid, error = %e, "could not re-reserve published port")
                    }
                }
            }
        }
        inner.reservations = reservations;
        for idx in 0..inner.state.networks.len() {
            self.start_dns(&mut inner, idx);
        }
        self.save(&inner)
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        match &self.opts.dns_upstreams {
            Some(u) => u.clone(),
            None => ResolvConf::parse(
                &std::fs::read_to_string(&self.opts.host_resolv_conf).unwrap_or_default(),
            )
            .upstreams(),
        }
    }

    fn has_dns(&self, n: &Network) -> bool {
        self.opts.enable_dns && n.driver == Driver::Bridge && !n.is_predefined()
    }

    fn start_dns(&self, inner: &mut Inner, idx: usize) {
        let n = &inner.state.networks[idx].network;
        if !self.has_dns(n) || inner.dns.contains_key(&n.id) {
            return;
        }
        let Some(gw) = n.gateway else { return };
        match DnsServer::start(SocketAddr::new(IpAddr::V4(gw), 53), self.upstreams()) {
            Ok(s) => {
                let id = n.id.clone();
                inner.dns.insert(id, s);
                inner.refresh_dns(idx);
            }
            Err(e) => tracing::warn!(network = %n.name, error = %e, "embedded dns not started"),
        }
    }

    /// Adds or removes the rules of some published ports (already added to / still in
    /// `inner` for an add; already removed for a remove), falling back to a full re-render
    /// when the incremental change fails (e.g. a rule was removed behind our back).
    fn change_ports(&self, inner: &Inner, ports: &[FwPort], add: bool) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        match firewall::change_ports(&self.opts.chain_prefix, ports, add) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "incremental port rule change failed, re-rendering");
                self.apply_firewall(inner)
            }
        }
    }

    fn apply_firewall(&self, inner: &Inner) -> Result<()> {
        let (nets, ports) = inner.fw_model();
        firewall::apply(&self.opts.chain_prefix, &nets, &ports, false)
    }

    /// Creates a bridge network: chooses or checks the subnet, creates the bridge device,
    /// its firewall rules and its DNS server.
    pub fn create_network(&self, spec: NetworkSpec) -> Result<Network> {
        if !valid_name(&spec.name) {
            return Err(NetError::InvalidArgument(format!(
                "invalid network name {:?}",
                spec.name
            )));
        }
        match spec.driver {
            None | Some(Driver::Bridge) => {}
            Some(d) => {
                return Err(NetError::InvalidArgument(format!(
                    "driver {} cannot be used for new networks",
                    d.as_str()
                )))
            }
        }
        let mut inner = self.lock();
        if inner
            .state
            .networks
            .iter()
            .any(|r| r.network.name == spec.name)
        {
            return Err(NetError::NetworkExists(spec.name));
        }
        let taken = Self::taken_subnets(&inner);
        let subnet = match spec.subnet {
            Some(s) => {
                let s = s.trunc();
                if let Some((_, what)) = taken.iter().find(|(t, _)| ipam::overlaps(t, &s)) {
                    return Err(NetError::SubnetOverlap {
                        subnet: s.to_string(),
                        what: what.clone(),
                    });
                }
                s
            }
            None => {
                if spec.gateway.is_some() {
                    return Err(NetError::InvalidArgument(
                        "a gateway needs an explicit subnet".into(),
                    ));
                }
                let t: Vec<Ipv4Net> = taken.iter().map(|(n, _)| *n).collect();
                ipam::choose_subnet(&self.opts.address_pools, &t)?
            }
        };
        let alloc = SubnetAllocator::new(subnet, spec.gateway)?;
        let id = new_id();
        let bridge = match spec.options.get(BRIDGE_NAME_OPTION) {
            Some(b) => b.clone(),
            None => format!("br-{}", &id[..12]),
        };
        if inner.bridges().contains(&bridge) {
            return Err(NetError::InvalidArgument(format!(
                "bridge device {bridge} is already used by another network"
            )));
        }
        let network = Network {
            id,
            name: spec.name,
            driver: Driver::Bridge,
            subnet: Some(subnet),
            gateway: Some(alloc.gateway),
            bridge: Some(bridge.clone()),
            internal: spec.internal,
            labels: spec.labels,
            options: spec.options,
            created: now(),
            endpoints: BTreeMap::new(),
        };
        link::ensure_bridge(&bridge, alloc.gateway, subnet.prefix_len())?;
        inner.state.networks.push(NetRecord {
            network: network.clone(),
            ipam: Some(alloc),
        });
        let res = self.apply_firewall(&inner).and_then(|_| self.save(&inner));
        if let Err(e) = res {
            inner.state.networks.pop();
            let _ = self.apply_firewall(&inner);
            let _ = link::delete(&bridge);
            return Err(e);
        }
        let idx = inner.state.networks.len() - 1;
        self.start_dns(&mut inner, idx);
        Ok(network)
    }

    /// Removes a user-defined network without endpoints: its DNS server, rules and bridge.
    pub fn remove_network(&self, name_or_id: &str) -> Result<()> {
        let mut inner = self.lock();
        let idx = inner.find(name_or_id)?;
        self.remove_at(&mut inner, idx)
    }

    fn remove_at(&self, inner: &mut Inner, idx: usize) -> Result<()> {
        let n = &inner.state.networks[idx].network;
        if n.is_predefined() {
            return Err(NetError::PredefinedNetwork(n.name.clone()));
        }
        if !n.endpoints.is_empty() {
            return Err(NetError::NetworkInUse(n.name.clone()));
        }
        let rec = inner.state.networks.remove(idx);
        if let Some(mut s) = inner.dns.remove(&rec.network.id) {
            s.stop();
        }
        self.apply_firewall(inner)?;
        if let Some(b) = &rec.network.bridge {
            link::delete(b)?;
        }
        self.save(inner)
    }

    /// Removes every user-defined network without endpoints; returns their names.
    pub fn prune(&self) -> Result<Vec<String>> {
        let mut inner = self.lock();
        let mut removed = Vec::new();
        let mut idx = 0;
        while idx < inner.state.networks.len() {
            let n = &inner.state.networks[idx].network;
            if n.is_predefined() || !n.endpoints.is_empty() {
                idx += 1;
                continue;
            }
            let name = n.name.clone();
            self.remove_at(&mut inner, idx)?;
            removed.push(name);
        }
        Ok(removed)
    }

    /// All networks, pre-defined ones first.
    pub fn list(&self) -> Vec<Network> {
        self.lock()
            .state
            .networks
            .iter()
            .map(|r| r.network.clone())
            .collect()
    }

    /// One network by name, id or unique id prefix.
    pub fn inspect(&self, name_or_id: &str) -> Result<Network> {
        let inner = self.lock();
        let idx = inner.find(name_or_id)?;
        Ok(inner.state.networks[idx].network.clone())
    }

    /// Brings `lo` up in a namespace: all a container on the `none` network gets.
    pub fn setup_loopback(&self, netns_path: &Path) -> Result<()> {
        link::loopback_up(netns_path)
    }

    /// Attaches a container to a bridge network: allocates its address, creates the veth
    /// pair (host end in the bridge, `ethN` in the namespace, `lo` up, default route via
    /// the gateway on the container's first non-internal network) and registers its DNS
    /// names; `c.ports` are published in the same step. `host` and `none` cannot be connected to (use [`Self::setup_loopback`] for
    /// `none`; `host` needs nothing).
    pub fn connect(&self, c: ContainerNet) -> Result<Endpoint> {
        if c.container_id.is_empty() {
            return Err(NetError::InvalidArgument("empty container id".into()));
        }
        if let Some(mac) = &c.mac {
            if !valid_mac(mac) {
                return Err(NetError::InvalidArgument(format!(
                    "invalid mac address {mac:?}"
                )));
            }
        }
        let mut inner = self.lock();
        let idx = inner.find(&c.network)?;
        let net = &inner.state.networks[idx].network;
        if net.driver != Driver::Bridge {
            return Err(NetError::PredefinedNetwork(net.name.clone()));
        }
        if net.endpoints.contains_key(&c.container_id) {
            return Err(NetError::AlreadyConnected {
                container: c.container_id,
                network: net.name.clone(),
            });
        }
        let (net_id, net_name, bridge, internal) = (
            net.id.clone(),
            net.name.clone(),
            net.bridge.clone().unwrap_or_default(),
            net.internal,
        );
        // The container's other endpoints decide ifname and default route.
        let others: Vec<&Endpoint> = inner
            .state
            .networks
            .iter()
            .filter_map(|r| r.network.endpoints.get(&c.container_id))
            .collect();
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !others.iter().any(|e| &e.ifname == n))
            .unwrap_or_else(|| "eth0".into());
        let want_default = !internal && !others.iter().any(|e| e.default_route);
        let Some(alloc) = inner.state.networks[idx].ipam.as_mut() else {
            return Err(NetError::PredefinedNetwork(net_name));
        };
        let ip = alloc.allocate(c.ip, &net_name)?;
        let (gateway, prefix_len) = (alloc.gateway, alloc.subnet.prefix_len());
        let mac = c.mac.clone().unwrap_or_else(|| {
            let o = ip.octets();
            format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
        });
        let veth_host = format!("veth{}", &new_id()[..7]);
        let cfg = link::VethConfig {
            host_name: &veth_host,
            bridge: &bridge,
            ifname: &ifname,
            mac: &mac,
            netns: &c.netns_path,
            ip,
            prefix_len,
            default_gw: want_default.then_some(gateway),
            mtu: self.opts.mtu,
        };
        let held = match self.reserve_ports(&inner, &c.ports) {
            Ok((resolved, held)) => (resolved, held),
            Err(e) => {
                if let Some(a) = inner.state.networks[idx].ipam.as_mut() {
                    a.release(ip);
                }
                return Err(e);
            }
        };
        if let Err(e) = link::create_veth(&cfg) {
            if let Some(a) = inner.state.networks[idx].ipam.as_mut() {
                a.release(ip);
            }
            return Err(e);
        }
        let ep = Endpoint {
            endpoint_id: new_id(),
            network_id: net_id,
            network_name: net_name,
            container_id: c.container_id.clone(),
            container_name: c.container_name.trim_start_matches('/').to_string(),
            ip,
            prefix_len,
            gateway,
            mac,
            veth_host: veth_host.clone(),
            ifname,
            aliases: c.aliases,
            netns_path: c.netns_path,
            default_route: want_default,
        };
        let undo = |inner: &mut Inner| {
            let rec = &mut inner.state.networks[idx];
            rec.network.endpoints.remove(&ep.container_id);
            if let Some(a) = rec.ipam.as_mut() {
                a.release(ip);
            }
            let _ = link::delete(&veth_host);
        };
        inner.state.networks[idx]
            .network
            .endpoints
            .insert(c.container_id.clone(), ep.clone());
        let (resolved, held) = held;
        let before = if resolved.is_empty() {
            None
        } else {
            match self.add_published(&mut inner, &c.container_id, ip, &ep.network_id, &resolved) {
                Ok(b) => Some(b),
                Err(e) => {
                    undo(&mut inner);
                    return Err(e);
                }
            }
        };
        if let Err(e) = self.save_endpoints(&inner) {
            if let Some(b) = before {
                self.remove_published_tail(&mut inner, &c.container_id, b);
            }
            undo(&mut inner);
            return Err(e);
        }
        if !held.is_empty() {
            inner
                .reservations
                .entry(c.container_id.clone())
                .or_default()
                .extend(held);
        }
        inner.refresh_dns(idx);
        Ok(ep)
    }

    /// Detaches a container from a network: removes the veth pair (already gone with the
    /// namespace is fine), releases the address and the ports published to it (no need to
    /// call [`Self::unpublish_ports`] first).
    pub fn disconnect(&self, container_id: &str, network: &str) -> Result<()> {
        let mut inner = self.lock();
        let idx = inner.find(network)?;
        let net = &inner.state.networks[idx].network;
        let Some(ep) = net.endpoints.get(container_id).cloned() else {
            return Err(NetError::NotConnected {
                container: container_id.to_string(),
                network: net.name.clone(),
            });
        };
        self.release_endpoint(&mut inner, idx, &ep, true)?;
        self.save_endpoints(&inner)
    }

    /// Releases every endpoint of a container whose network namespace is about to be
    /// destroyed (the container has exited): addresses, DNS names and published ports
    /// are released, but the veth pairs are left to the kernel, which deletes them with
    /// the namespace. Deleting a veth synchronously costs tens of milliseconds of RCU
    /// grace periods, and this is on the path of every container exit.
    pub fn release_container(&self, container_id: &str) -> Result<()> {
        let mut inner = self.lock();
        let mut changed = false;
        for idx in 0..inner.state.networks.len() {
            let ep = inner.state.networks[idx]
                .network
                .endpoints
                .get(container_id)
                .cloned();
            if let Some(ep) = ep {
                self.release_endpoint(&mut inner, idx, &ep, false)?;
                changed = true;
            }
        }
        if changed {
            self.save_endpoints(&inner)?;
        }
        Ok(())
    }

    /// Removes an endpoint from kernel and state (not saved); says whether ports published
    /// to it were released too.
    fn release_endpoint(
        &self,
        inner: &mut Inner,
        idx: usize,
        ep: &Endpoint,
        delete_link: bool,
    ) -> Result<bool> {
        if delete_link {
            link::delete(&ep.veth_host)?;
        }
        let rec = &mut inner.state.networks[idx];
        rec.network.endpoints.remove(&ep.container_id);
        if let Some(a) = rec.ipam.as_mut() {
            a.release(ep.ip);
        }
        let mut gone = Vec::new();
        if let Some(list) = inner.state.ports.get_mut(&ep.container_id) {
            let (g, keep): (Vec<Published>, Vec<Published>) = list
                .drain(..)
                .partition(|p| p.network_id == ep.network_id && p.container_ip == ep.ip);
            *list = keep;
            gone = g;
            if list.is_empty() {
                inner.state.ports.remove(&ep.container_id);
                inner.reservations.remove(&ep.container_id);
            }
        }
        let fw_changed = !gone.is_empty();
        let rules = inner.fw_ports(&gone.iter().collect::<Vec<_>>());
        self.change_ports(inner, &rules, false)?;
        inner.refresh_dns(idx);
        Ok(fw_changed)
    }

    /// Publishes `ports` of a container whose endpoint has address `endpoint_ip`: checks
    /// and reserves each host port (None or 0 picks a free one from the port range), then
    /// installs the DNAT/forward rules. All or nothing. Returns the resolved mappings.
    pub fn publish_ports(
        &self,
        container_id: &str,
        endpoint_ip: Ipv4Addr,
        mappings: &[PortMapping],
    ) -> Result<Vec<PortMapping>> {
        let mut inner = self.lock();
        let network_id = inner
            .state
            .networks
            .iter()
            .filter_map(|r| r.network.endpoints.get(container_id))
            .find(|e| e.ip == endpoint_ip)
            .map(|e| e.network_id.clone())
            .ok_or_else(|| {
                NetError::InvalidArgument(format!(
                    "container {container_id} has no endpoint with address {endpoint_ip}"
                ))
            })?;
        let (resolved, held) = self.reserve_ports(&inner, mappings)?;
        let before = self.add_published(
            &mut inner,
            container_id,
            endpoint_ip,
            &network_id,
            &resolved,
        )?;
        if let Err(e) = self.save_endpoints(&inner) {
            self.remove_published_tail(&mut inner, container_id, before);
            return Err(e);
        }
        inner
            .reservations
            .entry(container_id.to_string())
            .or_default()
            .extend(held);
        Ok(resolved)
    }

    /// Checks and reserves host ports for `mappings` (all or nothing).
    fn reserve_ports(
        &self,
        inner: &Inner,
        mappings: &[PortMapping],
    ) -> Result<(Vec<PortMapping>, Vec<Reservation>)> {
        // (host ip, port, proto) already published by anyone.
        let mut used: Vec<(Option<Ipv4Addr>, u16, crate::Proto)> = inner
            .state
            .ports
            .values()
            .flatten()
            .map(|p| {
                (
                    v4_host_ip(p.mapping.host_ip).ok().flatten(),
                    p.mapping.host_port.unwrap_or(0),
                    p.mapping.proto,
                )
            })
            .collect();
        let clash = |used: &[(Option<Ipv4Addr>, u16, crate::Proto)],
                     ip: Option<Ipv4Addr>,
                     port: u16,
                     proto| {
            used.iter().any(|(uip, uport, uproto)| {
                *uport == port && *uproto == proto && (uip.is_none() || ip.is_none() || *uip == ip)
            })
        };
        let mut resolved = Vec::new();
        let mut held = Vec::new();
        for m in mappings {
            if m.container_port == 0 {
                return Err(NetError::InvalidArgument("container port 0".into()));
            }
            let hip = v4_host_ip(m.host_ip)?;
            let bind_ip = hip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let (port, r) = match m.host_port {
                Some(p) if p != 0 => {
                    if clash(&used, hip, p, m.proto) {
                        return Err(NetError::PortInUse {
                            host_ip: bind_ip.to_string(),
                            port: p,
                            proto: m.proto.as_str().into(),
                        });
                    }
                    (p, ports::reserve(bind_ip, p, m.proto)?)
                }
                _ => ports::reserve_any(bind_ip, m.proto, self.opts.port_range, |p| {
                    clash(&used, hip, p, m.proto)
                })?,
            };
            used.push((hip, port, m.proto));
            held.push(r);
            let out = PortMapping {
                host_ip: hip.map(IpAddr::V4),
                host_port: Some(port),
                container_port: m.container_port,
                proto: m.proto,
            };
            resolved.push(out);
        }
        Ok((resolved, held))
    }

    /// Records published ports and installs their rules; returns the previous count of
    /// the container's ports (for [`Self::remove_published_tail`]). Rolls back on error.
    fn add_published(
        &self,
        inner: &mut Inner,
        container_id: &str,
        endpoint_ip: Ipv4Addr,
        network_id: &str,
        resolved: &[PortMapping],
    ) -> Result<usize> {
        let entry = inner
            .state
            .ports
            .entry(container_id.to_string())
            .or_default();
        let before = entry.len();
        entry.extend(resolved.iter().map(|m| Published {
            mapping: *m,
            container_ip: endpoint_ip,
            network_id: network_id.to_string(),
        }));
        let new_rules = inner.fw_ports(&entry_tail(inner, container_id, before));
        if let Err(e) = self.change_ports(inner, &new_rules, true) {
            rollback_ports(inner, container_id, before);
            let _ = self.apply_firewall(inner);
            return Err(e);
        }
        Ok(before)
    }

    /// Undoes [`Self::add_published`].
    fn remove_published_tail(&self, inner: &mut Inner, container_id: &str, before: usize) {
        let rules = inner.fw_ports(&entry_tail(inner, container_id, before));
        rollback_ports(inner, container_id, before);
        let _ = self.change_ports(inner, &rules, false);
    }

    /// The resolved published ports of a container.
    pub fn published_ports(&self, container_id: &str) -> Vec<PortMapping> {
        self.lock()
            .state
            .ports
            .get(container_id)
            .map(|l| l.iter().map(|p| p.mapping).collect())
            .unwrap_or_default()
    }

    /// Removes all published ports of a container (rules and host port reservations).
    pub fn unpublish_ports(&self, container_id: &str) -> Result<()> {
        let mut inner = self.lock();
        let Some(gone) = inner.state.ports.remove(container_id) else {
            return Ok(());
        };
        let rules = inner.fw_ports(&gone.iter().collect::<Vec<_>>());
        self.change_ports(&inner, &rules, false)?;
        inner.reservations.remove(container_id);
        self.save_endpoints(&inner)
    }

    /// After a daemon crash: releases endpoints and ports of containers not in `live`
    /// (their veths are deleted if still present) and deletes bridge ports that belong to
    /// no endpoint.
    pub fn reconcile(&self, live: &[String]) -> Result<ReconcileReport> {
        let mut inner = self.lock();
        let mut report = ReconcileReport::default();
        for idx in 0..inner.state.networks.len() {
            let dead: Vec<Endpoint> = inner.state.networks[idx]
                .network
                .endpoints
                .values()
                .filter(|e| !live.contains(&e.container_id))
                .cloned()
                .collect();
            for ep in dead {
                if self.release_endpoint(&mut inner, idx, &ep, true)?
                    && !report.ports_released.contains(&ep.container_id)
                {
                    report.ports_released.push(ep.container_id.clone());
                }
                report
                    .endpoints_released
                    .push((ep.container_id.clone(), ep.network_name.clone()));
            }
        }
        let dead_ports: Vec<String> = inner
            .state
            .ports
            .keys()
            .filter(|c| !live.contains(c))
            .cloned()
            .collect();
        if !dead_ports.is_empty() {
            for c in &dead_ports {
                inner.state.ports.remove(c);
                inner.reservations.remove(c);
            }
            self.apply_firewall(&inner)?;
            report.ports_released.extend(dead_ports);
        }
        let known: Vec<String> = inner
            .state
            .networks
            .iter()
            .flat_map(|r| r.network.endpoints.values().map(|e| e.veth_host.clone()))
            .collect();
        for b in inner.bridges() {
            let Ok(dir) = std::fs::read_dir(Path::new("/sys/class/net").join(&b).join("brif"))
            else {
                continue;
            };
            for port in dir.flatten() {
                let name = port.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    link::delete(&name)?;
                    report.stray_links_removed.push(name);
                }
            }
        }
        self.save(&inner)?;
        Ok(report)
    }

    /// The endpoints of a container, on every network.
    pub fn endpoints(&self, container_id: &str) -> Vec<Endpoint> {
        self.lock()
            .state
            .networks
            .iter()
            .filter_map(|r| r.network.endpoints.get(container_id).cloned())
            .collect()
    }

    /// `/etc/hosts` content for a container: localhost lines, the container's addresses
    /// with `hostname` (and its network aliases), then `extra_hosts` (`--add-host`).
    pub fn hosts_file(
        &self,
        container_id: &str,
        hostname: &str,
        extra_hosts: &[(String, IpAddr)],
    ) -> String {
        let mut entries: Vec<(IpAddr, Vec<String>)> = Vec::new();
        for ep in self.endpoints(container_id) {
            let mut names = vec![hostname.to_string()];
            for a in &ep.aliases {
                if !names.contains(a) {
                    names.push(a.clone());
                }
            }
            entries.push((IpAddr::V4(ep.ip), names));
        }
        for (name, ip) in extra_hosts {
            entries.push((*ip, vec![name.clone()]));
        }
        render_hosts(&entries)
    }

    /// `/etc/resolv.conf` content for a container: on a user-defined network the embedded
    /// DNS server (the gateway); otherwise the host's nameservers without loopback ones
    /// (8.8.8.8/8.8.4.4 when none is left). `dns` (`--dns`) overrides the nameservers.
    pub fn resolv_conf(&self, container_id: &str, dns: &[IpAddr]) -> String {
        let host = ResolvConf::parse(
            &std::fs::read_to_string(&self.opts.host_resolv_conf).unwrap_or_default(),
        );
        if !dns.is_empty() {
            return host.render(dns);
        }
        let inner = self.lock();
        let embedded = inner.state.networks.iter().find_map(|r| {
            let ep = r.network.endpoints.get(container_id)?;
            (self.has_dns(&r.network) && inner.dns.contains_key(&r.network.id))
                .then_some(IpAddr::V4(ep.gateway))
        });
        match embedded {
            Some(ip) => host.render(&[ip]),
            None => host.render(&host.container_nameservers()),
        }
    }

    /// Docker's default hostname of a container: the first 12 characters of its id.
    pub fn hostname(container_id: &str) -> String {
        container_id.chars().take(12).collect()
    }

    /// Removes all kernel state of this manager: endpoints' veths, bridges, our firewall
    /// chains and jumps; stops the DNS servers. The state file is left as is. Meant for
    /// tests and uninstalling.
    pub fn teardown(&self) -> Result<()> {
        let mut inner = self.lock();
        for (_, mut s) in inner.dns.drain() {
            s.stop();
        }
        inner.reservations.clear();
        let mut first_err = None;
        for r in &inner.state.networks {
            for ep in r.network.endpoints.values() {
                if let Err(e) = link::delete(&ep.veth_host) {
                    first_err.get_or_insert(e);
                }
            }
            if let Some(b) = &r.network.bridge {
                if let Err(e) = link::delete(b) {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Err(e) = firewall::remove_all(&self.opts.chain_prefix) {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }
}
