//! Errors of the registry client.

use errkind::{ErrorKind, HasKind};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached (connection refused, DNS, TLS, reset).
    #[error("registry {registry} unreachable")]
    Unreachable {
        /// Registry host.
        registry: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The registry did not answer within the configured timeout.
    #[error("registry {registry} timed out on {url}")]
    Timeout {
        /// Registry host.
        registry: String,
        /// The request.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// Authentication failed: no credentials where needed, wrong credentials, or a token
    /// server refused them.
    #[error("authentication to registry {registry} failed: {reason}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// What was refused.
        reason: String,
    },
    /// The registry refused the operation (403 / DENIED).
    #[error("registry {registry} denied access to {what}")]
    Denied {
        /// Registry host.
        registry: String,
        /// The repository or resource.
        what: String,
    },
    /// The manifest (tag or digest) does not exist in the repository.
    #[error("manifest {reference} not found")]
    ManifestUnknown {
        /// The reference.
        reference: String,
    },
    /// A blob the manifest names does not exist in the registry.
    #[error("blob {digest} not found in {repository}")]
    BlobUnknown {
        /// The blob.
        digest: String,
        /// The repository.
        repository: String,
    },
    /// A manifest or index is malformed, unsupported or over the size bound.
    #[error("invalid manifest {reference}: {reason}")]
    InvalidManifest {
        /// The reference or digest.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// Received content does not hash to the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was fetched.
        what: String,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// An index has no manifest for the host platform.
    #[error("no manifest for platform {platform} in {reference}")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// The host platform.
        platform: String,
    },
    /// The reference cannot be used with this operation (e.g. push without a tag).
    #[error("invalid reference {reference}: {reason}")]
    InvalidReference {
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The registry answered with an unexpected status.
    #[error("registry {registry}: {method} {url} returned {status}: {message}")]
    Status {
        /// Registry host.
        registry: String,
        /// HTTP method.
        method: String,
        /// URL.
        url: String,
        /// Status code.
        status: u16,
        /// Error codes/messages from the body, if any.
        message: String,
    },
    /// The content or image store failed.
    #[error("image store operation failed: {op}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// Reading or writing the docker credentials file failed.
    #[error("docker config {path}")]
    Config {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A credential helper (`docker-credential-<name>`, named by `credsStore` or
    /// `credHelpers` in docker's config) is missing or failed.
    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    CredentialHelper {
        /// The helper's name (the part after `docker-credential-`).
        helper: String,
        /// Registry host asked about.
        registry: String,
        /// What went wrong (not found on PATH, exit status and message, bad output).
        reason: String,
    },
    /// A local I/O or task failure.
    #[error("{op}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// An error from the `store` crate.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Content store.
    #[error(transparent)]
    Content(#[from] store::content::ContentError),
    /// Image index.
    #[error(transparent)]
    Image(#[from] store::image::ImageError),
}

impl HasKind for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Content(e) => e.kind(),
            StoreError::Image(e) => e.kind(),
        }
    }
}

impl HasKind for ClientError {
    fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Unreachable { .. } | ClientError::Timeout { .. } => ErrorKind::Unavailable,
            // Credentials are caller input: wrong or missing ones are an invalid argument.
            ClientError::Unauthorized { .. } | ClientError::Denied { .. } => {
                ErrorKind::InvalidArgument
            }
            ClientError::ManifestUnknown { .. }
            | ClientError::BlobUnknown { .. }
            | ClientError::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            ClientError::InvalidManifest { .. }
            | ClientError::DigestMismatch { .. }
            | ClientError::InvalidReference { .. } => ErrorKind::InvalidArgument,
            ClientError::Status { status, .. } => {
                if *status >= 500 || *status == 429 {
                    ErrorKind::Unavailable
                } else if *status == 404 {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::InvalidArgument
                }
            }
            ClientError::Store { source, .. } => source.kind(),
            ClientError::CredentialHelper { .. } => ErrorKind::FailedPrecondition,
            ClientError::Config { .. } | ClientError::Io { .. } => ErrorKind::Internal,
        }
    }
}

impl ClientError {
    /// Whether retrying the same request may succeed (network trouble, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Timeout { .. } => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    pub(crate) fn store(op: &'static str, e: impl Into<StoreError>) -> Self {
        ClientError::Store {
            op,
            source: e.into(),
        }
    }
}
