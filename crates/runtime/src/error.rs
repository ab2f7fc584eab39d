//! The runtime's error type.

use errkind::{ErrorKind, HasKind};
use std::path::PathBuf;

/// Everything a runtime operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container with this id exists under the runtime root.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// A container with this id already exists.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// The container id is not usable as a directory name.
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.'")]
    InvalidId(String),
    /// The operation is not allowed in the container's current state.
    #[error("container {id} is {status}: cannot {op}")]
    BadState {
        /// Container id.
        id: String,
        /// Its current status.
        status: String,
        /// What was attempted.
        op: String,
    },
    /// config.json could not be read.
    #[error("cannot read {path}")]
    ReadConfig {
        /// The config path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// config.json is not valid JSON or violates the OCI schema.
    #[error("invalid config {path}")]
    ParseConfig {
        /// The config path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The config is well-formed but unusable (missing rootfs, bad namespace, ...).
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A host operation failed.
    #[error("{what}")]
    Io {
        /// What failed, on which path.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}")]
    Sys {
        /// What failed.
        what: String,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// The container's init (or an exec'd process) failed before running the program.
    #[error("container init failed: {0}")]
    Init(String),
    /// A lifecycle hook failed.
    #[error("{0}")]
    Hook(String),
    /// A cgroup operation failed.
    #[error("cgroup {what} failed")]
    Cgroup {
        /// What failed.
        what: String,
        /// Cause.
        #[source]
        source: cgroups::CgroupError,
    },
    /// The seccomp profile could not be compiled.
    #[error("seccomp profile")]
    Seccomp(#[source] seccomp::SeccompError),
    /// The seccomp agent at `linux.seccomp.listenerPath` could not be given the
    /// container's user-notification listener (not listening, or the send failed).
    #[error("cannot hand the seccomp listener to the agent at {} (linux.seccomp.listenerPath): {what}", path.display())]
    SeccompAgent {
        /// The agent's socket.
        path: PathBuf,
        /// The step that failed.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `linux.intelRdt` could not be applied (no resctrl mounted, a group that does not
    /// exist or holds other schemas, a failed resctrl write).
    #[error(transparent)]
    IntelRdt(#[from] crate::resctrl::ResctrlError),
    /// The state file is corrupt.
    #[error("corrupt state file {path}")]
    State {
        /// The state path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::Conflict,
            Error::InvalidId(_)
            | Error::ParseConfig { .. }
            | Error::InvalidConfig(_)
            | Error::Seccomp(_) => ErrorKind::InvalidArgument,
            Error::ReadConfig { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::ReadConfig { .. } => ErrorKind::InvalidArgument,
            Error::BadState { .. } => ErrorKind::FailedPrecondition,
            Error::Init(_) | Error::Hook(_) => ErrorKind::FailedPrecondition,
            Error::SeccompAgent { .. } => ErrorKind::Unavailable,
            Error::IntelRdt(e) => e.kind(),
            Error::Io { .. } | Error::Sys { .. } | Error::Cgroup { .. } | Error::State { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error::Io`] from a description.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Builds an [`Error::Sys`] from a description.
pub(crate) fn sys_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |source| Error::Sys { what, source }
}
