//! The builder's error type.

use std::path::PathBuf;

use errkind::{ErrorKind, HasKind};

use crate::backend::BackendError;
use crate::context::ContextError;
use crate::expand::ExpandError;

/// Why a build (or the parsing of a Dockerfile) failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is malformed: unknown instruction, bad flag, missing argument, ...
    #[error("dockerfile parse error on line {line}: {message}")]
    Parse {
        /// 1-based line of the offending instruction.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A step's arguments are invalid once variables are known (bad `--chmod`, missing
    /// `COPY` source, bad signal, ...).
    #[error("dockerfile line {line}: {message}")]
    Step {
        /// 1-based line of the instruction.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Variable substitution failed.
    #[error("dockerfile line {line}: bad variable substitution")]
    Expand {
        /// 1-based line of the instruction.
        line: usize,
        /// The lexer's complaint.
        #[source]
        source: ExpandError,
    },
    /// A build option (API query parameter) is malformed or unsupported.
    #[error("invalid build option: {0}")]
    InvalidOption(String),
    /// `--target` names no stage.
    #[error("target stage {0:?} could not be found")]
    TargetNotFound(String),
    /// The build context could not be read or a source resolved outside of it.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A `RUN` step exited non-zero (Docker's exact wording).
    #[error("The command '{command}' returned a non-zero code: {code}")]
    RunFailed {
        /// The command as Docker prints it (argv joined by spaces).
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// The backend (store or runtime) failed while doing `what`.
    #[error("{what} failed")]
    Backend {
        /// The operation, e.g. `resolving base image busybox`.
        what: String,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// A host file operation on the build's scratch space failed.
    #[error("{what} {path:?} failed")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path it was on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the build log failed (the client went away).
    #[error("writing the build output failed")]
    Output(#[source] std::io::Error),
}

impl HasKind for BuildError {
    fn kind(&self) -> ErrorKind {
        match self {
            BuildError::Parse { .. }
            | BuildError::Step { .. }
            | BuildError::Expand { .. }
            | BuildError::InvalidOption(_)
            | BuildError::TargetNotFound(_) => ErrorKind::InvalidArgument,
            BuildError::Context(e) => e.kind(),
            BuildError::RunFailed { .. } => ErrorKind::FailedPrecondition,
            BuildError::Backend { source, .. } => source.kind,
            BuildError::Io { .. } | BuildError::Output(_) => ErrorKind::Internal,
        }
    }
}

impl BuildError {
    /// The Dockerfile line the error is about, when it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            BuildError::Parse { line, .. }
            | BuildError::Step { line, .. }
            | BuildError::Expand { line, .. } => Some(*line),
            _ => None,
        }
    }

    pub(crate) fn step(line: usize, message: impl Into<String>) -> Self {
        BuildError::Step {
            line,
            message: message.into(),
        }
    }

    pub(crate) fn parse(line: usize, message: impl Into<String>) -> Self {
        BuildError::Parse {
            line,
            message: message.into(),
        }
    }
}
