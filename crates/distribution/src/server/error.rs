//! Error responses of the registry API: `{"errors":[{"code","message","detail"}]}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One error code of the distribution spec with the HTTP status it is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Blob unknown to registry (404).
    BlobUnknown,
    /// Blob upload invalid (400).
    BlobUploadInvalid,
    /// Blob upload unknown to registry (404).
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content (400).
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to registry (400).
    ManifestBlobUnknown,
    /// Manifest invalid (400).
    ManifestInvalid,
    /// Manifest unknown to registry (404).
    ManifestUnknown,
    /// Invalid repository name (400).
    NameInvalid,
    /// Repository name not known to registry (404).
    NameUnknown,
    /// Provided length did not match content length (400).
    SizeInvalid,
    /// Authentication required (401).
    Unauthorized,
    /// The operation is unsupported (405).
    Unsupported,
}

impl Code {
    /// The code's identifier as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Unsupported => "UNSUPPORTED",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error response: a spec code, a message, an optional detail and the status to send.
#[derive(Debug)]
pub struct ApiError {
    /// The spec code.
    pub code: Code,
    /// Human-readable message.
    pub message: String,
    /// Unstructured detail.
    pub detail: serde_json::Value,
    /// HTTP status (normally the code's own).
    pub status: StatusCode,
    /// Extra headers (e.g. `WWW-Authenticate`, `Range`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with the code's default status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: serde_json::Value::Null,
            status: code.status(),
            headers: Vec::new(),
        }
    }

    /// Attaches a detail value.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    /// Overrides the HTTP status.
    pub fn status(mut self, s: StatusCode) -> Self {
        self.status = s;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// An internal failure (500) whose cause is logged, not sent.
    pub fn internal(what: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!("registry: {what}: {err}");
        Self {
            code: Code::Unsupported,
            message: format!("internal error: {what}"),
            detail: serde_json::Value::Null,
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        if !self.detail.is_null() {
            err["detail"] = self.detail;
        }
        let body = serde_json::json!({ "errors": [err] }).to_string();
        let mut r = (self.status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}
