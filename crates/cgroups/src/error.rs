//! The error type of every cgroup operation.

use std::path::PathBuf;

use errkind::{ErrorKind, HasKind};

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroups path given by the caller is malformed.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A resource value is out of range or malformed.
    #[error("invalid value for {what}: {reason}")]
    InvalidValue {
        /// The resource (e.g. `memory.limit`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A requested controller is not mounted on this host.
    #[error("cgroup controller {controller} is not available on this host")]
    ControllerMissing {
        /// The controller name (e.g. `hugetlb`).
        controller: String,
    },
    /// A cgroup v2 controller the host has, but which is not enabled for this cgroup:
    /// its parent's `cgroup.subtree_control` does not list it (a parent that holds
    /// processes itself cannot delegate domain controllers on v2).
    #[error(
        "cgroup controller {controller} is not enabled for {}: its parent's cgroup.subtree_control does not list it",
        dir.display()
    )]
    ControllerNotEnabled {
        /// The controller name (e.g. `pids`).
        controller: String,
        /// The cgroup directory.
        dir: std::path::PathBuf,
    },
    /// The host supports cgroups, but not the requested feature.
    #[error("{what} is not supported on this host")]
    Unsupported {
        /// The feature that is missing.
        what: String,
    },
    /// No cgroup hierarchy is mounted.
    #[error("no cgroup hierarchy is mounted")]
    NoHierarchies,
    /// Reading a cgroup or proc file failed.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a value to a cgroup file failed.
    #[error("failed to write {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("failed to create cgroup {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("failed to remove cgroup {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cgroup or proc file had unexpected content.
    #[error("failed to parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// An operation did not settle in time (e.g. freezing).
    #[error("timed out waiting for {what} in {path}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The cgroup directory.
        path: PathBuf,
    },
    /// Sending a signal to a process of the cgroup failed.
    #[error("failed to signal pid {pid}")]
    Signal {
        /// The process.
        pid: i32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Loading or attaching the eBPF device filter failed.
    #[error("failed to {what} the device eBPF program for {path}")]
    Bpf {
        /// The step that failed (load, attach).
        what: String,
        /// The cgroup directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ERANGE) | Some(libc::EOVERFLOW) => {
            ErrorKind::InvalidArgument
        }
        Some(libc::ENOENT) => ErrorKind::NotFound,
        Some(libc::EBUSY) => ErrorKind::Conflict,
        Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::ENOSPC) => {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Internal,
    }
}

impl HasKind for CgroupError {
    fn kind(&self) -> ErrorKind {
        match self {
            CgroupError::InvalidPath { .. } | CgroupError::InvalidValue { .. } => {
                ErrorKind::InvalidArgument
            }
            CgroupError::ControllerMissing { .. }
            | CgroupError::ControllerNotEnabled { .. }
            | CgroupError::Unsupported { .. }
            | CgroupError::NoHierarchies => ErrorKind::Unavailable,
            CgroupError::Read { source, .. } => io_kind(source),
            CgroupError::Write { source, .. } => io_kind(source),
            CgroupError::Create { source, .. } | CgroupError::Remove { source, .. } => {
                io_kind(source)
            }
            CgroupError::Bpf { .. } => ErrorKind::Unavailable,
            CgroupError::Signal { source, .. } => {
                if *source == nix::Error::ESRCH {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Internal
                }
            }
            CgroupError::Parse { .. } | CgroupError::Timeout { .. } => ErrorKind::Internal,
        }
    }
}

/// Result of a cgroup operation.
pub type Result<T> = std::result::Result<T, CgroupError>;
