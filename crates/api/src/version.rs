//! API version negotiation.
//!
//! Clients name a version in the path (`/v1.45/containers/json`) or none (the newest).
//! Berth serves [`MIN_API_VERSION`] through [`API_VERSION`]; a request for an older
//! version is refused, a newer one is served as [`API_VERSION`] (clients negotiate down
//! from the `Api-Version` header of `/_ping`).

use crate::ApiError;

/// The newest API version Berth serves and advertises.
pub const API_VERSION: &str = "1.47";
/// The oldest API version Berth serves.
pub const MIN_API_VERSION: &str = "1.24";

/// An API version `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    /// The major number (always 1 today).
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl ApiVersion {
    /// Parses `1.47` (no `v`).
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (a, b) = s.split_once('.')?;
        Some(ApiVersion {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }

    /// The newest version served.
    pub fn current() -> ApiVersion {
        ApiVersion {
            major: 1,
            minor: 47,
        }
    }

    /// The oldest version served.
    pub fn min() -> ApiVersion {
        ApiVersion {
            major: 1,
            minor: 24,
        }
    }

    /// True when this version is at least `1.minor`.
    pub fn at_least(&self, minor: u32) -> bool {
        *self >= ApiVersion { major: 1, minor }
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Splits a request path into the version it names and the path without the version:
/// `/v1.45/containers/json` → `(1.45, "/containers/json")`, `/containers/json` →
/// `(current, "/containers/json")`. A version below the minimum is an error; one above the
/// current is served as the current.
pub fn split_path(path: &str) -> Result<(ApiVersion, &str), ApiError> {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let (ver, tail) = rest.split_at(end);
        if let Some(v) = ApiVersion::parse(ver) {
            if v < ApiVersion::min() {
                return Err(ApiError::invalid(format!(
                    "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
                )));
            }
            let v = v.min(ApiVersion::current());
            return Ok((v, if tail.is_empty() { "/" } else { tail }));
        }
    }
    Ok((ApiVersion::current(), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_and_plain_paths() {
        let (v, p) = split_path("/v1.45/containers/json").unwrap();
        assert_eq!((v.to_string().as_str(), p), ("1.45", "/containers/json"));
        let (v, p) = split_path("/containers/json").unwrap();
        assert_eq!((v, p), (ApiVersion::current(), "/containers/json"));
        let (v, _) = split_path("/v1.99/info").unwrap();
        assert_eq!(v, ApiVersion::current());
        assert_eq!(split_path("/v1.12/info").unwrap_err().status(), 400);
        // A path segment that only looks like a version is left alone.
        let (_, p) = split_path("/volumes/x").unwrap();
        assert_eq!(p, "/volumes/x");
    }
}
