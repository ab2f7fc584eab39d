//! The error type of seccomp compilation and loading.

use errkind::{ErrorKind, HasKind};

/// Why compiling or loading a seccomp filter failed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A value in the profile is out of range or malformed.
    #[error("invalid seccomp {what}: {reason}")]
    InvalidArgument {
        /// The part of the profile.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The profile asks for a feature this implementation does not provide.
    #[error("{what} is not supported")]
    Unsupported {
        /// The feature.
        what: String,
    },
    /// The installed libseccomp does not support an architecture.
    #[error("seccomp architecture {arch} is not supported by libseccomp")]
    Arch {
        /// The architecture as named in the profile.
        arch: String,
        /// The cause.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The installed libseccomp or kernel does not support a filter flag.
    #[error("seccomp flag {flag} is not supported on this host")]
    Flag {
        /// The flag as named in the profile.
        flag: String,
        /// The cause.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// libseccomp rejected an operation while building the filter.
    #[error("failed to {what}")]
    Libseccomp {
        /// The operation.
        what: String,
        /// The cause.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The process may not install a filter: it has neither `no_new_privs` nor
    /// `CAP_SYS_ADMIN` (load the filter before dropping capabilities, or set
    /// `no_new_privs` first).
    #[error("loading a seccomp filter needs no_new_privs or CAP_SYS_ADMIN")]
    NeedsPrivilege,
    /// Exporting the compiled filter as BPF failed.
    #[error("failed to export the seccomp filter as BPF")]
    Export {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the filter.
    #[error("failed to load the seccomp filter")]
    Load {
        /// The cause.
        #[source]
        source: libseccomp::error::SeccompError,
    },
}

impl HasKind for SeccompError {
    fn kind(&self) -> ErrorKind {
        match self {
            SeccompError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            SeccompError::Unsupported { .. }
            | SeccompError::Arch { .. }
            | SeccompError::Flag { .. } => ErrorKind::Unavailable,
            SeccompError::Libseccomp { .. } => ErrorKind::InvalidArgument,
            SeccompError::Export { .. } => ErrorKind::Internal,
            SeccompError::Load { .. } | SeccompError::NeedsPrivilege => {
                ErrorKind::FailedPrecondition
            }
        }
    }
}
