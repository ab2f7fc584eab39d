//! Errors of the engine's services.

use errkind::{ErrorKind, HasKind};

/// An error of an engine operation. Messages of the variants that clients see verbatim
/// follow Docker's wording (the `docker` CLI and scripts match on some of them).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No container has this id, name or id prefix.
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// No image has this name or id.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// No exec instance has this id.
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    /// A path does not exist in a container.
    #[error("Could not find the file {path} in container {container}")]
    NoSuchPath {
        /// The path in the container.
        path: String,
        /// The container's name or id.
        container: String,
    },
    /// The name is taken.
    #[error("Conflict. The container name \"{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse {
        /// The name asked for.
        name: String,
        /// The container holding it.
        id: String,
    },
    /// The request is malformed or out of range.
    #[error("{0}")]
    Invalid(String),
    /// The request clashes with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The object is already in the asked-for state (HTTP 304 where Docker says so).
    #[error("{0}")]
    AlreadyInState(String),
    /// A dependency is not there.
    #[error("{0}")]
    Unavailable(String),
    /// The OCI runtime or the monitor failed.
    #[error("{0}")]
    Runtime(String),
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done (`write container config`).
        what: &'static str,
        /// On which path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The image store failed.
    #[error("image store")]
    Store(
        #[source] Box<dyn std::error::Error + Send + Sync + 'static>,
        ErrorKind,
    ),
}

impl EngineError {
    /// An [`EngineError::Io`] for `what` on `path`.
    pub fn io(
        what: &'static str,
        path: impl AsRef<std::path::Path>,
        source: std::io::Error,
    ) -> Self {
        EngineError::Io {
            what,
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Wraps a store error, keeping its kind.
    pub fn store<E: std::error::Error + HasKind + Send + Sync + 'static>(e: E) -> Self {
        let k = e.kind();
        EngineError::Store(Box::new(e), k)
    }
}

impl HasKind for EngineError {
    fn kind(&self) -> ErrorKind {
        match self {
            EngineError::NoSuchContainer(_)
            | EngineError::NoSuchImage(_)
            | EngineError::NoSuchExec(_)
            | EngineError::NoSuchPath { .. } => ErrorKind::NotFound,
            EngineError::NameInUse { .. } | EngineError::Conflict(_) => ErrorKind::Conflict,
            EngineError::Invalid(_) => ErrorKind::InvalidArgument,
            EngineError::AlreadyInState(_) => ErrorKind::FailedPrecondition,
            EngineError::Unavailable(_) => ErrorKind::Unavailable,
            EngineError::Runtime(_) | EngineError::Io { .. } => ErrorKind::Internal,
            EngineError::Store(_, k) => *k,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
