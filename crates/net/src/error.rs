//! Error type of the networking crate.

use std::io;
use std::path::PathBuf;

use errkind::{ErrorKind, HasKind};

/// Every failure of [`crate::NetworkManager`] and its helpers.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No network has this name or id (or id prefix).
    #[error("network {0} not found")]
    NetworkNotFound(String),
    /// A network with this name already exists.
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    /// The id prefix matches more than one network.
    #[error("network id prefix {0} is ambiguous")]
    AmbiguousNetwork(String),
    /// The requested subnet overlaps an existing network or a host route.
    #[error("subnet {subnet} overlaps {what}")]
    SubnetOverlap {
        /// The requested subnet.
        subnet: String,
        /// What it overlaps (a network name or a host route).
        what: String,
    },
    /// No free subnet is left in the configured address pools.
    #[error("no free subnet left in the address pools")]
    PoolExhausted,
    /// No free address is left in a network's subnet.
    #[error("no free address left in network {0}")]
    NetworkFull(String),
    /// The requested address is already in use on the network.
    #[error("address {ip} is already in use on network {network}")]
    AddressInUse {
        /// The address.
        ip: String,
        /// The network name.
        network: String,
    },
    /// The input is malformed or out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The container is already connected to the network.
    #[error("container {container} is already connected to network {network}")]
    AlreadyConnected {
        /// Container id.
        container: String,
        /// Network name.
        network: String,
    },
    /// The container is not connected to the network.
    #[error("container {container} is not connected to network {network}")]
    NotConnected {
        /// Container id.
        container: String,
        /// Network name.
        network: String,
    },
    /// A network still has containers attached.
    #[error("network {0} has active endpoints")]
    NetworkInUse(String),
    /// A pre-defined network (bridge, host, none) cannot be removed or connected this way.
    #[error("operation not allowed on pre-defined network {0}")]
    PredefinedNetwork(String),
    /// A host port is already taken (by us or by another process).
    #[error("host port {port}/{proto} on {host_ip} is already allocated")]
    PortInUse {
        /// Host address the port was requested on.
        host_ip: String,
        /// The port.
        port: u16,
        /// tcp or udp.
        proto: String,
    },
    /// No free ephemeral host port could be found.
    #[error("no free host port left for {0}")]
    NoFreePort(String),
    /// An external command (ip, iptables-restore, nsenter) failed.
    #[error("command {command} failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its standard error (trimmed).
        stderr: String,
    },
    /// A netlink request failed.
    #[error("netlink: {op} failed")]
    Netlink {
        /// What was attempted, on which link.
        op: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// An external command could not be started.
    #[error("could not run {command}")]
    Spawn {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading or writing a file failed.
    #[error("i/o on {path} failed")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The persisted state file is corrupt.
    #[error("network state file {path} is corrupt")]
    CorruptState {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A socket operation failed (port reservation, DNS server).
    #[error("socket operation {what} failed")]
    Socket {
        /// What was attempted.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl NetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetError::Io {
            path: path.into(),
            source,
        }
    }
}

impl HasKind for NetError {
    fn kind(&self) -> ErrorKind {
        match self {
            NetError::NetworkNotFound(_) | NetError::NotConnected { .. } => ErrorKind::NotFound,
            NetError::NetworkExists(_)
            | NetError::SubnetOverlap { .. }
            | NetError::AddressInUse { .. }
            | NetError::AlreadyConnected { .. }
            | NetError::NetworkInUse(_)
            | NetError::PortInUse { .. } => ErrorKind::Conflict,
            NetError::AmbiguousNetwork(_) | NetError::InvalidArgument(_) => {
                ErrorKind::InvalidArgument
            }
            NetError::PredefinedNetwork(_) => ErrorKind::FailedPrecondition,
            NetError::PoolExhausted | NetError::NetworkFull(_) | NetError::NoFreePort(_) => {
                ErrorKind::Unavailable
            }
            NetError::Command { .. }
            | NetError::Spawn { .. }
            | NetError::Netlink { .. }
            | NetError::Io { .. }
            | NetError::CorruptState { .. }
            | NetError::Socket { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = NetError> = std::result::Result<T, E>;
