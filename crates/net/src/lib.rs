//! Container networking: bridges, veth, IPAM, NAT, published ports, embedded DNS.
//!
//! # Model
//!
//! A [`NetworkManager`] owns every network of one daemon. Its state (networks, their
//! address allocations, endpoints and published ports) lives in one JSON file under the
//! state directory, written crash-safely (temporary file, fsync, rename) after each change.
//! Kernel objects are derived from that state and can be rebuilt from it at any time:
//! [`NetworkManager::open`] re-creates missing bridges, re-renders the firewall chains and
//! restarts the embedded DNS servers, so a daemon restart (or a host reboot) converges.
//!
//! * Networks: `bridge` (the default network, device `ManagerOptions::default_bridge`),
//!   `host` and `none` always exist; user-defined networks use the `bridge` driver with a
//!   device `br-<first 12 hex of the id>` (or `com.docker.network.bridge.name`).
//! * An endpoint is one container on one network: a veth pair whose host end is a port of
//!   the bridge and whose other end is `eth0`, `eth1`, ... inside the container's network
//!   namespace, with an address from the network's subnet (see [`ipam`]) and, on the
//!   container's first non-internal network, the default route via the gateway.
//! * Published ports are kernel DNAT rules (see `firewall`) plus a bound socket per host
//!   port that reserves it on the host (see `ports`).
//! * User-defined networks get an embedded DNS server on their gateway address (see `dns`);
//!   the containers' resolv.conf points at it.
//!
//! # Calling convention
//!
//! The API is synchronous and blocking: each call does a few netlink requests and, when
//! firewall rules change, runs one `iptables-restore`; it takes milliseconds. From async code (the engine runs
//! on tokio) wrap calls in `tokio::task::spawn_blocking` with the manager in an `Arc`; all
//! methods take `&self` and serialize on an internal mutex. The DNS servers run on plain
//! threads owned by the manager and stop when it is dropped; kernel state (bridges, veths,
//! rules) outlives the manager on purpose, so containers keep their network while the
//! daemon restarts. [`NetworkManager::teardown`] removes it all.

#![warn(missing_docs)]

pub mod error;
pub mod files;
pub mod ipam;

mod cmd;
pub mod dns;
mod firewall;
mod link;
mod manager;
mod netlink;
pub mod netns;
mod ports;
mod state;

pub use error::{NetError, Result};
pub use ipam::AddressPool;
pub use manager::{ManagerOptions, NetworkManager, ReconcileReport};
pub use netns::{create_netns, remove_netns, NetnsPool};
pub use state::{ContainerNet, Driver, Endpoint, Network, NetworkSpec, PortMapping, Proto};
