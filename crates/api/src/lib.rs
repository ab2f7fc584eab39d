//! Docker Engine API models, error mapping and version negotiation.
//!
//! The model types carry Docker's field names exactly (PascalCase on the wire), tolerate
//! unknown fields and accept `null` wherever Docker clients send it, so that both the
//! `docker` CLI and bollard-based clients can talk to Berth. Nothing here does I/O: the
//! `daemon` crate turns these values into HTTP, and the `engine` crate fills them in.
//!
//! * [`error`]: [`ApiError`] and the single mapping from [`errkind::ErrorKind`] to an HTTP
//!   status.
//! * [`version`]: the API versions Berth serves and how a request path names one.
//! * [`models`]: request and response bodies.

pub mod error;
pub mod models;
pub mod version;

pub use error::{ApiError, PreconditionStatus};
pub use models::*;
