//! API errors: a kind plus a message, mapped to an HTTP status in one place.

use errkind::{ErrorKind, HasKind};
use serde::{Deserialize, Serialize};

/// How an endpoint reports [`ErrorKind::FailedPrecondition`].
///
/// Docker answers `304 Not Modified` when a request asks for the state a container already
/// has (start of a started container, stop of a stopped one) and `409 Conflict` elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreconditionStatus {
    /// Report as `409 Conflict` (the default).
    #[default]
    Conflict,
    /// Report as `304 Not Modified`.
    NotModified,
}

/// An error as the API reports it: its kind decides the HTTP status, its message is the
/// `{"message": ...}` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// The message shown to the client.
    pub message: String,
    /// How a [`ErrorKind::FailedPrecondition`] is reported by the endpoint that failed.
    pub precondition: PreconditionStatus,
}

/// The JSON body of every error response: `{"message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The error message.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            precondition: PreconditionStatus::Conflict,
        }
    }

    /// A 404 error.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }

    /// A 400 error.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidArgument, message)
    }

    /// A 409 error.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Conflict, message)
    }

    /// A 500 error.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Internal, message)
    }

    /// The same error, reporting a failed precondition as `304 Not Modified`.
    pub fn not_modified_on_precondition(mut self) -> ApiError {
        self.precondition = PreconditionStatus::NotModified;
        self
    }

    /// Builds an API error from any classified library error, its message being the
    /// error's display text followed by its sources (`a: b: c`).
    pub fn from_error<E: HasKind + std::error::Error>(e: &E) -> ApiError {
        let mut message = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            src = s.source();
        }
        ApiError::new(e.kind(), message)
    }

    /// The HTTP status of this error: the one place where kinds become statuses.
    pub fn status(&self) -> u16 {
        http_status(self.kind, self.precondition)
    }

    /// The response body.
    pub fn body(&self) -> ErrorResponse {
        ErrorResponse {
            message: self.message.clone(),
        }
    }
}

impl HasKind for ApiError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Maps an error kind to the HTTP status Docker uses for it.
pub fn http_status(kind: ErrorKind, precondition: PreconditionStatus) -> u16 {
    match kind {
        ErrorKind::NotFound => 404,
        ErrorKind::Conflict => 409,
        ErrorKind::InvalidArgument => 400,
        ErrorKind::FailedPrecondition => match precondition {
            PreconditionStatus::Conflict => 409,
            PreconditionStatus::NotModified => 304,
        },
        ErrorKind::Unavailable => 503,
        ErrorKind::Internal => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_docker_statuses() {
        assert_eq!(ApiError::not_found("x").status(), 404);
        assert_eq!(ApiError::conflict("x").status(), 409);
        assert_eq!(ApiError::invalid("x").status(), 400);
        assert_eq!(ApiError::internal("x").status(), 500);
        let e = ApiError::new(ErrorKind::FailedPrecondition, "started");
        assert_eq!(e.status(), 409);
        assert_eq!(e.not_modified_on_precondition().status(), 304);
        assert_eq!(ApiError::new(ErrorKind::Unavailable, "x").status(), 503);
    }

    #[test]
    fn body_is_message_object() {
        let v = serde_json::to_value(ApiError::not_found("No such container: x").body()).unwrap();
        assert_eq!(v, serde_json::json!({"message": "No such container: x"}));
    }
}
