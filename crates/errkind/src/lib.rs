//! The kinds of error every Berth library error falls into.
//!
//! Each library defines its own `thiserror` enums (one per module or operation) and gives
//! them a `kind()` returning an [`ErrorKind`]. The `api` crate maps a kind to an HTTP
//! status in one place, and the CLI maps it to an exit code, so callers never match on
//! message text.

/// What kind of failure an error is, independent of which library raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The named thing (container, image, blob, network, ...) does not exist. HTTP 404.
    NotFound,
    /// The request clashes with existing state (name in use, container running). HTTP 409.
    Conflict,
    /// The input is malformed or out of range. HTTP 400.
    InvalidArgument,
    /// The state does not allow the operation now (already started, not running). HTTP 304
    /// or 409 depending on the endpoint.
    FailedPrecondition,
    /// A dependency (registry, kernel feature, host resource) is not available. HTTP 503.
    Unavailable,
    /// A bug or an unexpected host failure. HTTP 500.
    Internal,
}

/// Implemented by every Berth library error so that callers can classify it.
pub trait HasKind {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}
