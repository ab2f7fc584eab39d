//! Containers on networks: the engine's side of the `net` crate.
//!
//! # Model
//!
//! Every container that does not share the host's network (`NetworkMode` `host`) or
//! another container's (`container:<name>`) gets its own network namespace, bind-mounted
//! at `<run_root>/netns/<id>` while it runs (see [`net::create_netns`]). On start the
//! engine creates that namespace, connects it to the container's network (`default` and
//! `bridge` mean the default bridge network; `none` leaves it with `lo` only; any other
//! name is a user-defined network) with the container's published ports, and names the
//! path in the OCI spec. When a run ends (monitor exit, stop, kill, removal, or found dead
//! after a daemon restart) the endpoints are disconnected, which releases the address
//! and the ports, and the namespace is removed.
//!
//! `NetworkingConfig` of container create (aliases, static addresses) is kept next to the
//! container record in `networking.json` of the container's directory.

use crate::error::{EngineError, Result};
use api::{EndpointSettings, HostConfig, NetworkSettings, Port, PortBinding, PortMap};
use errkind::{ErrorKind, HasKind};
use net::{ContainerNet, NetError, NetworkManager, PortMapping, Proto};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File in a container's directory holding its `NetworkingConfig`.
pub const NETWORKING_FILE: &str = "networking.json";

/// Maps a network error to the engine's error of the same kind.
pub fn net_err(e: NetError) -> EngineError {
    let msg = api::ApiError::from_error(&e).message;
    match e.kind() {
        ErrorKind::InvalidArgument => EngineError::Invalid(msg),
        ErrorKind::Conflict | ErrorKind::FailedPrecondition => EngineError::Conflict(msg),
        ErrorKind::NotFound => EngineError::Invalid(msg),
        ErrorKind::Unavailable => EngineError::Unavailable(msg),
        ErrorKind::Internal => EngineError::Runtime(msg),
    }
}

/// What a container's start needs from its network set-up.
#[derive(Debug, Default)]
pub struct Attached {
    /// The namespace for the spec: None for the host's, Some(path) to join.
    pub netns: Option<String>,
    /// `/etc/hosts` content (None: the engine's default).
    pub hosts: Option<String>,
    /// `/etc/resolv.conf` content (None: the engine's default).
    pub resolv: Option<String>,
}

/// A container's network namespace, before its endpoints are connected.
#[derive(Debug, Default)]
pub struct Namespace {
    /// The namespace for the spec: None for the host's, Some(path) to join.
    pub netns: Option<String>,
    /// The network whose endpoint [`NetService::connect_endpoints`] is to connect (bridge
    /// modes); None when there is nothing to connect (host, none, container:<name>).
    pub network: Option<String>,
}

/// The engine's network service over a [`NetworkManager`].
pub struct NetService {
    mgr: Arc<NetworkManager>,
    netns_dir: PathBuf,
    /// Namespaces made ahead of time for starts (`<run_root>/spare-netns`).
    pool: net::NetnsPool,
    containers_dir: PathBuf,
}

/// The network a `NetworkMode` connects to (None: no bridge network).
pub fn mode_network(mode: &str) -> Option<&str> {
    match mode {
        "" | "default" | "bridge" => Some("bridge"),
        "host" | "none" => None,
        m if m.starts_with("container:") => None,
        m => Some(m),
    }
}

/// Parses `HostConfig.PortBindings` (and, with `PublishAllPorts`, the exposed ports) into
/// port mappings; rejects ports out of range.
pub fn port_mappings(
    hc: &HostConfig,
    exposed: Option<&BTreeMap<String, api::Empty>>,
) -> Result<Vec<PortMapping>> {
    let mut out = Vec::new();
    let parse_port = |key: &str| -> Result<(u16, Proto)> {
        let (p, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        let proto = match proto {
            "tcp" | "" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => {
                return Err(EngineError::Invalid(format!(
                    "invalid proto {other:?} in port {key:?}"
                )))
            }
        };
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok((n, proto)),
            _ => Err(EngineError::Invalid(format!(
                "invalid port specification: {key:?}"
            ))),
        }
    };
    for (key, binds) in &hc.port_bindings {
        let (cport, proto) = parse_port(key)?;
        let binds: Vec<PortBinding> = binds.clone().unwrap_or_default();
        let binds = if binds.is_empty() {
            vec![PortBinding::default()]
        } else {
            binds
        };
        for b in binds {
            let host_ip = if b.host_ip.is_empty() {
                None
            } else {
                Some(b.host_ip.parse::<IpAddr>().map_err(|_| {
                    EngineError::Invalid(format!("invalid host ip {:?}", b.host_ip))
                })?)
            };
            let host_port = if b.host_port.is_empty() {
                None
            } else {
                match b.host_port.parse::<u16>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        return Err(EngineError::Invalid(format!(
                            "invalid port specification: {:?}",
                            b.host_port
                        )))
                    }
                }
            };
            out.push(PortMapping {
                host_ip,
                host_port,
                container_port: cport,
                proto,
            });
        }
    }
    if hc.publish_all_ports {
        for key in exposed.into_iter().flat_map(|m| m.keys()) {
            let (cport, proto) = parse_port(key)?;
            if !out
                .iter()
                .any(|m| m.container_port == cport && m.proto == proto)
            {
                out.push(PortMapping {
                    host_ip: None,
                    host_port: None,
                    container_port: cport,
                    proto,
                });
            }
        }
    }
    Ok(out)
}

impl NetService {
    /// Opens the network state under `<root>/network` (runtime files under
    /// `<run_root>/network`), restoring bridges and rules.
    pub fn open(root: &Path, run_root: &Path, opts: net::ManagerOptions) -> Result<NetService> {
        let netns_dir = run_root.join("netns");
        std::fs::create_dir_all(&netns_dir)
            .map_err(|e| EngineError::io("create directory", &netns_dir, e))?;
        let mgr = NetworkManager::open(&root.join("network"), &run_root.join("network"), opts)
            .map_err(net_err)?;
        // Two spares: a run takes one and the pool's thread has made the next well before
        // the next start; bursts of starts make theirs on demand meanwhile.
        let pool = net::NetnsPool::open(&run_root.join("spare-netns"), 2).map_err(net_err)?;
        Ok(NetService {
            mgr: Arc::new(mgr),
            pool,
            netns_dir,
            containers_dir: root.join("containers"),
        })
    }

    /// Removes the spare namespaces (the daemon is stopping).
    pub fn shutdown(&self) {
        self.pool.drain();
    }

    /// The manager (for the network API).
    pub fn manager(&self) -> &Arc<NetworkManager> {
        &self.mgr
    }

    /// A container's directory (`<root>/containers/<id>`).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir.join(id)
    }

    /// Where a container's namespace is bind-mounted while it runs.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir.join(id)
    }

    /// Validates a container's network settings at create time (network exists, ports).
    pub fn validate(
        &self,
        hc: &HostConfig,
        exposed: Option<&BTreeMap<String, api::Empty>>,
    ) -> Result<()> {
        port_mappings(hc, exposed)?;
        if let Some(n) = mode_network(&hc.network_mode) {
            self.mgr.inspect(n).map_err(|e| match e.kind() {
                ErrorKind::NotFound => EngineError::Invalid(format!("network {n} not found")),
                _ => net_err(e),
            })?;
        }
        Ok(())
    }

    /// Sets up the network of a container about to start, in two steps. This first, quick
    /// one gives the namespace the container will join (made here for bridge and `none`
    /// modes), and whether endpoints are to be connected in it. The runtime can create the container in it while [`Self::connect_endpoints`]
    /// plumbs its interfaces. On error nothing is left behind.
    pub fn attach_netns(
        &self,
        rec: &crate::containers::ContainerRecord,
        other_pid: Option<i32>,
    ) -> Result<Namespace> {
        let mode = rec.host_config.network_mode.as_str();
        if mode == "host" {
            return Ok(Namespace::default());
        }
        if mode.starts_with("container:") {
            let pid = other_pid.filter(|p| *p > 0).ok_or_else(|| {
                EngineError::Conflict(format!(
                    "cannot join network of a non running container: {mode}"
                ))
            })?;
            return Ok(Namespace {
                netns: Some(format!("/proc/{pid}/ns/net")),
                network: None,
            });
        }
        let path = self.netns_path(&rec.id);
        // A stale namespace of a previous run (crash): replace it.
        self.detach(&rec.id);
        self.pool.take(&path).map_err(net_err)?;
        Ok(Namespace {
            netns: Some(path.display().to_string()),
            network: mode_network(mode).map(str::to_string),
        })
    }

    /// The second step, after [`Self::attach_netns`] named a network:
    /// connects the container's endpoints in its namespace (veth, address, routes,
    /// published ports) and renders its hosts and resolv.conf. On error the caller removes
    /// what was made with [`Self::detach`] (not here: the runtime may still be joining
    /// the namespace).
    pub fn connect_endpoints(
        &self,
        rec: &crate::containers::ContainerRecord,
        cdir: &Path,
        hostname: &str,
    ) -> Result<Attached> {
        let hc = &rec.host_config;
        let mode = hc.network_mode.as_str();
        let path = self.netns_path(&rec.id);
        let Some(network) = mode_network(mode) else {
            return Ok(Attached {
                netns: Some(path.display().to_string()),
                ..Default::default()
            });
        };
        (|| {
            let ports = port_mappings(hc, rec.config.exposed_ports.as_ref())?;
            let ncfg = load_networking(cdir);
            let ep_cfg = ncfg
                .endpoints_config
                .get(network)
                .or_else(|| ncfg.endpoints_config.get(mode))
                .cloned()
                .unwrap_or_default();
            self.mgr
                .connect(container_net(rec, &path, network, &ep_cfg, ports)?)
                .map_err(net_err)?;
            // Further networks named in `EndpointsConfig` (or connected while stopped).
            for (name, ep) in &ncfg.endpoints_config {
                if name == network || name == mode || mode_network(name) != Some(name.as_str()) {
                    continue;
                }
                let same = self
                    .mgr
                    .inspect(name)
                    .map_err(net_err)?
                    .endpoints
                    .contains_key(&rec.id);
                if !same {
                    self.mgr
                        .connect(container_net(rec, &path, name, ep, Vec::new())?)
                        .map_err(net_err)?;
                }
            }
            let extra: Vec<(String, IpAddr)> = hc
                .extra_hosts
                .iter()
                .filter_map(|h| {
                    let (n, ip) = h.split_once(':')?;
                    Some((n.to_string(), ip.parse().ok()?))
                })
                .collect();
            let dns: Vec<IpAddr> = hc.dns.iter().filter_map(|d| d.parse().ok()).collect();
            let hosts = self.mgr.hosts_file(&rec.id, hostname, &extra);
            let mut resolv = self.mgr.resolv_conf(&rec.id, &dns);
            if !hc.dns_search.is_empty() {
                resolv.push_str(&format!("search {}\n", hc.dns_search.join(" ")));
            }
            if !hc.dns_options.is_empty() {
                resolv.push_str(&format!("options {}\n", hc.dns_options.join(" ")));
            }
            Ok(Attached {
                netns: Some(path.display().to_string()),
                hosts: Some(hosts),
                resolv: Some(resolv),
            })
        })()
    }

    /// Tears down a container's networking after its run: disconnects every endpoint
    /// (releasing addresses and ports) and removes its namespace. Idempotent.
    pub fn detach(&self, id: &str) {
        self.release(id);
        self.remove_namespace(id);
    }

    /// The first half of [`Self::detach`]: releases the container's addresses and
    /// published ports (at once: a new container may want them).
    pub fn release(&self, id: &str) {
        // The veths go with the namespace: only addresses and ports to release.
        if let Err(e) = self.mgr.release_container(id) {
            tracing::warn!("release the network endpoints of {id}: {e}");
        }
        let _ = self.mgr.unpublish_ports(id);
    }

    /// The second half of [`Self::detach`]: unmounts and deletes the container's
    /// namespace file (the kernel then deletes its veths). The unmount waits for an RCU
    /// grace period, so a removed container's is done off the request path.
    pub fn remove_namespace(&self, id: &str) {
        let path = self.netns_path(id);
        if path.exists() {
            if let Err(e) = net::remove_netns(&path) {
                tracing::warn!("remove netns {}: {e}", path.display());
            }
        }
    }

    /// Docker's `NetworkSettings` of a container.
    pub fn settings(&self, id: &str, mode: &str, running: bool) -> NetworkSettings {
        let mut ns = NetworkSettings::default();
        let eps = self.mgr.endpoints(id);
        for ep in &eps {
            let s = EndpointSettings {
                network_id: ep.network_id.clone(),
                endpoint_id: ep.endpoint_id.clone(),
                gateway: ep.gateway.to_string(),
                ip_address: ep.ip.to_string(),
                ip_prefix_len: i64::from(ep.prefix_len),
                mac_address: ep.mac.clone(),
                aliases: ep.aliases.clone(),
                dns_names: ep.aliases.clone(),
                ..Default::default()
            };
            if ns.ip_address.is_empty() || ep.default_route {
                ns.ip_address = s.ip_address.clone();
                ns.gateway = s.gateway.clone();
            }
            ns.networks.insert(ep.network_name.clone(), s);
        }
        if eps.is_empty() {
            let name = match mode_network(mode) {
                Some("bridge") => Some("bridge"),
                Some(n) => Some(n),
                None if mode == "host" || mode == "none" => Some(mode),
                None => None,
            };
            if let Some(n) = name {
                let network_id = self.mgr.inspect(n).map(|n| n.id).unwrap_or_default();
                ns.networks.insert(
                    n.to_string(),
                    EndpointSettings {
                        network_id,
                        ..Default::default()
                    },
                );
            }
        }
        if running && self.netns_path(id).exists() {
            ns.sandbox_key = self.netns_path(id).display().to_string();
            ns.sandbox_id = id.to_string();
        }
        ns.ports = self.port_map(id);
        ns
    }

    /// The published ports of a container, as `NetworkSettings.Ports`.
    pub fn port_map(&self, id: &str) -> PortMap {
        let mut m = PortMap::new();
        for p in self.mgr.published_ports(id) {
            let key = format!("{}/{}", p.container_port, p.proto.as_str());
            m.entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: p
                        .host_ip
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "0.0.0.0".into()),
                    host_port: p.host_port.map(|p| p.to_string()).unwrap_or_default(),
                });
        }
        m
    }

    /// The published ports of a container, as the container list reports them.
    pub fn ports(&self, id: &str) -> Vec<Port> {
        self.mgr
            .published_ports(id)
            .into_iter()
            .map(|p| Port {
                ip: Some(
                    p.host_ip
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "0.0.0.0".into()),
                ),
                private_port: p.container_port,
                public_port: p.host_port,
                kind: p.proto.as_str().to_string(),
            })
            .collect()
    }
}

/// What connecting `rec` (namespace at `netns`) to `network` with `ep` asks of the manager:
/// aliases (plus, off the default network, the container's name and short id), the static
/// address and MAC address.
pub fn container_net(
    rec: &crate::containers::ContainerRecord,
    netns: &Path,
    network: &str,
    ep: &EndpointSettings,
    ports: Vec<PortMapping>,
) -> Result<ContainerNet> {
    let mut aliases = ep.aliases.clone();
    if network != "bridge" {
        aliases.push(rec.name.clone());
        aliases.push(rec.id[..12].to_string());
    }
    let ip = ep
        .ipam_config
        .as_ref()
        .and_then(|v| v.get("IPv4Address"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| EngineError::Invalid(format!("invalid IPv4 address {s:?}")))
        })
        .transpose()?;
    Ok(ContainerNet {
        container_id: rec.id.clone(),
        container_name: rec.name.clone(),
        netns_path: netns.to_path_buf(),
        network: network.to_string(),
        aliases,
        ip,
        mac: Some(ep.mac_address.clone()).filter(|m| !m.is_empty()),
        ports,
    })
}

/// Saves a container's `NetworkingConfig` into its directory.
pub fn save_networking(cdir: &Path, cfg: &api::NetworkingConfig) -> Result<()> {
    write_networking(cdir, cfg, true)
}

/// Writes a container's `NetworkingConfig`, with fsync when `durable`.
pub(crate) fn write_networking(
    cdir: &Path,
    cfg: &api::NetworkingConfig,
    durable: bool,
) -> Result<()> {
    let data = serde_json::to_vec(cfg)
        .map_err(|e| EngineError::Runtime(format!("serialize networking config: {e}")))?;
    crate::fsutil::write_atomic(&cdir.join(NETWORKING_FILE), &data, durable)
}

/// Loads a container's `NetworkingConfig` (empty when it has none).
pub fn load_networking(cdir: &Path) -> api::NetworkingConfig {
    std::fs::read(cdir.join(NETWORKING_FILE))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default()
}

/// Opens the network and volume services of an engine (`<root>/volumes` holds volumes).
pub(crate) async fn open_services(
    cfg: &crate::EngineConfig,
) -> Result<(NetService, volume::VolumeStore)> {
    let (root, run_root, opts) = (cfg.root.clone(), cfg.run_root.clone(), cfg.net.clone());
    let net = tokio::task::spawn_blocking(move || NetService::open(&root, &run_root, opts))
        .await
        .map_err(|e| EngineError::Runtime(format!("open networks: {e}")))??;
    let vols =
        volume::VolumeStore::open(&cfg.root.join("volumes")).map_err(crate::volumes::vol_err)?;
    Ok((net, vols))
}

impl crate::Engine {
    /// The namespace of a container about to start (see [`NetService::attach_netns`]).
    pub(crate) fn net_attach_netns(
        &self,
        rec: &crate::containers::ContainerRecord,
    ) -> Result<Namespace> {
        let other_pid = match rec.host_config.network_mode.strip_prefix("container:") {
            Some(other) => Some(self.record(other)?.state.pid),
            None => None,
        };
        self.networks().attach_netns(rec, other_pid)
    }

    /// Connects a container to a network (`POST /networks/{id}/connect`): a running one
    /// at once, and in any case on its next starts (kept in its `NetworkingConfig`).
    pub fn network_connect(
        &self,
        container: &str,
        network: &str,
        ep: EndpointSettings,
    ) -> Result<()> {
        let rec = self.record(container)?;
        let net = self
            .networks()
            .manager()
            .inspect(network)
            .map_err(net_err)?;
        let mode = rec.host_config.network_mode.as_str();
        if mode_network(mode).is_none() {
            return Err(EngineError::Conflict(format!(
                "container {} is in network mode {mode} and cannot be connected to {}",
                rec.id, net.name
            )));
        }
        let cdir = self.networks().container_dir(&rec.id);
        let netns = self.networks().netns_path(&rec.id);
        if rec.state.status.is_running() && netns.exists() {
            self.networks()
                .manager()
                .connect(container_net(&rec, &netns, &net.name, &ep, Vec::new())?)
                .map_err(net_err)?;
        } else if let Some(n) = mode_network(mode).filter(|n| *n == net.name) {
            return Err(EngineError::Conflict(format!(
                "container {} is already connected to network {n}",
                rec.id
            )));
        }
        let mut cfg = load_networking(&cdir);
        cfg.endpoints_config.insert(net.name, ep);
        save_networking(&cdir, &cfg)
    }

    /// Disconnects a container from a network (`POST /networks/{id}/disconnect`).
    pub fn network_disconnect(&self, container: &str, network: &str) -> Result<()> {
        let rec = self.record(container)?;
        let net = self
            .networks()
            .manager()
            .inspect(network)
            .map_err(net_err)?;
        let cdir = self.networks().container_dir(&rec.id);
        let mut cfg = load_networking(&cdir);
        let configured = cfg.endpoints_config.remove(&net.name).is_some();
        if net.endpoints.contains_key(&rec.id) {
            self.networks()
                .manager()
                .disconnect(&rec.id, &net.id)
                .map_err(net_err)?;
        } else if !configured {
            return Err(EngineError::Conflict(format!(
                "container {} is not connected to network {}",
                rec.id, net.name
            )));
        }
        save_networking(&cdir, &cfg)
    }

    /// Fills inspect's `NetworkSettings` and the named volumes of `Mounts`.
    pub(crate) fn net_inspect(
        &self,
        rec: &crate::containers::ContainerRecord,
        out: &mut api::ContainerInspect,
    ) {
        out.network_settings = self.networks().settings(
            &rec.id,
            &rec.host_config.network_mode,
            rec.state.status.is_running(),
        );
        out.mounts
            .retain(|m| m.kind != "volume" && (m.kind != "bind" || m.source.starts_with('/')));
        out.mounts.extend(crate::volumes::mount_points(
            self.volumes(),
            rec,
            &self.networks().container_dir(&rec.id),
        ));
    }

    /// After loading the containers: releases network endpoints of containers that no
    /// longer run and re-takes the volume references of every container.
    pub(crate) fn restore_netvol(&self) {
        let all = self.container_hcs();
        let live: Vec<String> = all
            .iter()
            .filter(|(_, _, running)| *running)
            .map(|(id, _, _)| id.clone())
            .collect();
        if let Err(e) = self.networks().manager().reconcile(&live) {
            tracing::warn!("reconcile networks: {e}");
        }
        for (id, _, running) in &all {
            if !running {
                let p = self.networks().netns_path(id);
                if p.exists() {
                    let _ = net::remove_netns(&p);
                }
            }
            if let Ok(rec) = self.record(id) {
                crate::volumes::reacquire(self.volumes(), &rec, &self.networks().container_dir(id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bindings_parse_and_reject_out_of_range() {
        let mut hc = HostConfig::default();
        hc.port_bindings.insert(
            "80/tcp".into(),
            Some(vec![PortBinding {
                host_ip: String::new(),
                host_port: "8080".into(),
            }]),
        );
        let m = port_mappings(&hc, None).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].host_port, Some(8080));
        assert_eq!(m[0].container_port, 80);
        hc.port_bindings.insert(
            "81/tcp".into(),
            Some(vec![PortBinding {
                host_ip: String::new(),
                host_port: "70000".into(),
            }]),
        );
        assert!(port_mappings(&hc, None).is_err());
        assert_eq!(mode_network("default"), Some("bridge"));
        assert_eq!(mode_network("none"), None);
        assert_eq!(mode_network("mynet"), Some("mynet"));
    }
}
