//! The public data types and the persisted state file.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};
use crate::ipam::SubnetAllocator;

/// Network driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A Linux bridge with NAT.
    Bridge,
    /// The host's network namespace (no isolation).
    Host,
    /// Only a loopback interface (docker's `none` network uses driver `null`).
    Null,
}

impl Driver {
    /// Docker's name of the driver.
    pub fn as_str(&self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
        }
    }
}

/// What a caller asks for in [`crate::NetworkManager::create_network`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkSpec {
    /// Unique name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    pub name: String,
    /// Driver; only `bridge` can be created (None means bridge).
    pub driver: Option<Driver>,
    /// Subnet (`--subnet`); chosen from the pools when None.
    pub subnet: Option<Ipv4Net>,
    /// Gateway (`--gateway`); the first host address when None.
    pub gateway: Option<Ipv4Addr>,
    /// No outbound NAT and no traffic in or out of the bridge beyond its containers.
    pub internal: bool,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options (`com.docker.network.bridge.name` sets the bridge device name).
    pub options: BTreeMap<String, String>,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A published port. As input, `host_port` None or 0 means "pick a free one"; as output
/// of [`crate::NetworkManager::publish_ports`] it is always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to listen on; None (or 0.0.0.0 / ::) means all local addresses.
    pub host_ip: Option<IpAddr>,
    /// Host port.
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
}

/// What [`crate::NetworkManager::connect`] needs to know about a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerNet {
    /// Container id (64 hex).
    pub container_id: String,
    /// Container name (without the leading `/`); resolvable through the embedded DNS.
    pub container_name: String,
    /// Path of the container's network namespace (`/proc/<pid>/ns/net` or a bind mount).
    pub netns_path: PathBuf,
    /// Network name or id (or unique id prefix).
    pub network: String,
    /// Extra DNS names of the container on this network.
    pub aliases: Vec<String>,
    /// Requested address (`--ip`).
    pub ip: Option<Ipv4Addr>,
    /// Requested MAC address (`aa:bb:cc:dd:ee:ff`); derived from the IP when None.
    pub mac: Option<String>,
    /// Ports to publish to this endpoint in the same step (one firewall change and one
    /// state write instead of two); read the resolved host ports back with
    /// [`crate::NetworkManager::published_ports`]. Same rules as
    /// [`crate::NetworkManager::publish_ports`].
    pub ports: Vec<PortMapping>,
}

/// One container attached to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Endpoint id (64 hex).
    pub endpoint_id: String,
    /// Network id.
    pub network_id: String,
    /// Network name.
    pub network_name: String,
    /// Container id.
    pub container_id: String,
    /// Container name.
    pub container_name: String,
    /// Address of the container.
    pub ip: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
    /// Gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// MAC address of the container's interface.
    pub mac: String,
    /// Host end of the veth pair.
    pub veth_host: String,
    /// Interface name inside the container (`eth0`, ...).
    pub ifname: String,
    /// DNS aliases.
    pub aliases: Vec<String>,
    /// Network namespace path given at connect time.
    pub netns_path: PathBuf,
    /// Whether this endpoint set the container's default route.
    pub default_route: bool,
}

/// A network as listed and inspected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64-hex id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: Driver,
    /// Subnet (bridge networks).
    pub subnet: Option<Ipv4Net>,
    /// Gateway (bridge networks).
    pub gateway: Option<Ipv4Addr>,
    /// Bridge device (bridge networks).
    pub bridge: Option<String>,
    /// Internal network (no NAT, no outside traffic).
    pub internal: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Endpoints by container id.
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl Network {
    /// Whether this is one of the always-present networks (bridge, host, none).
    pub fn is_predefined(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }
}

/// A published port as stored: the resolved mapping and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Published {
    pub mapping: PortMapping,
    pub container_ip: Ipv4Addr,
    pub network_id: String,
}

/// A network plus its address allocator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NetRecord {
    pub network: Network,
    pub ipam: Option<SubnetAllocator>,
}

/// Everything persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub networks: Vec<NetRecord>,
    /// Published ports by container id.
    pub ports: BTreeMap<String, Vec<Published>>,
}

impl State {
    /// Loads the state file; a missing file is an empty state.
    pub(crate) fn load(path: &Path) -> Result<State> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| NetError::CorruptState {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(NetError::io(path, e)),
        }
    }

    /// Writes the state file: temporary file, fsync, rename, fsync of the directory.
    pub(crate) fn save(&self, path: &Path, durable: bool) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| NetError::io(path, std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| NetError::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| NetError::io(&tmp, e))?;
        if durable {
            f.sync_all().map_err(|e| NetError::io(&tmp, e))?;
        }
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| NetError::io(path, e))?;
        if durable {
            if let Some(dir) = path.parent() {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    }
}
