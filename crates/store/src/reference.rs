//! Docker image references: parsing, validation and normalisation.
//!
//! A reference names an image: `[domain/]path[:tag][@digest]`. [`Reference::parse`]
//! normalises it the way docker does:
//!
//! | input | normalised ([`Display`](std::fmt::Display)) | [`familiar`](Reference::familiar) |
//! |---|---|---|
//! | `busybox` | `docker.io/library/busybox:latest` | `busybox:latest` |
//! | `user/app` | `docker.io/user/app:latest` | `user/app:latest` |
//! | `host:5000/a/b:tag` | `host:5000/a/b:tag` | `host:5000/a/b:tag` |
//! | `name@sha256:…` | `docker.io/library/name@sha256:…` | `name@sha256:…` |
//!
//! The first component is a domain when it contains `.` or `:` or is `localhost`;
//! otherwise the domain is `docker.io` (and `index.docker.io` is rewritten to it), and a
//! single-component path on docker.io gets `library/`. `latest` is added only when the
//! reference has neither tag nor digest.

use std::fmt;
use std::str::FromStr;

use errkind::{ErrorKind, HasKind};

use crate::digest::Digest;

/// The default registry domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The default tag.
pub const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;

/// Why a reference string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Empty input.
    #[error("invalid reference format: empty reference")]
    Empty,
    /// The repository contains uppercase letters.
    #[error("invalid reference format {0:?}: repository name must be lowercase")]
    Uppercase(String),
    /// The name (domain + path) is longer than 255 characters.
    #[error(
        "invalid reference format {0:?}: repository name must not be more than 255 characters"
    )]
    NameTooLong(String),
    /// A 64-hex string looks like an image id, not a name.
    #[error("invalid repository name {0:?}: cannot specify 64-byte hexadecimal strings")]
    LooksLikeId(String),
    /// The tag is not `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("invalid reference format {0:?}: bad tag")]
    BadTag(String),
    /// The digest part is malformed.
    #[error("invalid reference format {0:?}: bad digest")]
    BadDigest(String),
    /// The domain is malformed.
    #[error("invalid reference format {0:?}: bad registry domain")]
    BadDomain(String),
    /// A path component has characters outside `[a-z0-9]` and the separators `.`, `_`, `__`, `-`.
    #[error("invalid reference format {0:?}: bad repository path")]
    BadPath(String),
}

impl HasKind for ReferenceError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host (with optional port), e.g. `docker.io`, `localhost:5000`.
    pub domain: String,
    /// Repository path within the registry, e.g. `library/busybox`.
    pub path: String,
    /// The tag, if any (`latest` is filled in when there is neither tag nor digest).
    pub tag: Option<String>,
    /// The digest, if any.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference; see the module docs.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let mut r = Reference::parse_named(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Like [`parse`](Reference::parse) but does not add the `latest` tag (for things like
    /// `docker pull -a name` or `docker images name` where no tag means "any").
    pub fn parse_named(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.rsplit_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|_| ReferenceError::BadDigest(s.to_string()))?),
            ),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::BadTag(s.to_string()));
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::BadPath(s.to_string()));
        }
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::LooksLikeId(s.to_string()));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        if !valid_domain(&domain) {
            return Err(ReferenceError::BadDomain(s.to_string()));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(s.to_string()));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(ReferenceError::BadPath(s.to_string()));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(ReferenceError::NameTooLong(s.to_string()));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The fully qualified repository name: `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short repository name docker prints: `busybox`, `user/app`, `host:5000/a/b`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .filter(|p| !p.contains('/'))
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.repository()
        }
    }

    /// The short form docker prints: `busybox:latest`, `host:5000/a/b:tag`, `name@sha256:…`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    /// The same repository with this tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::BadTag(tag.to_string()));
        }
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The same repository with this digest and no tag (`repo@sha256:…`).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Whether `t` is a valid tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // IPv6 literal.
        let Some((h, after)) = rest.split_once(']') else {
            return false;
        };
        if h.is_empty() || !h.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        match after.strip_prefix(':') {
            Some(p) => ("x", Some(p)),
            None if after.is_empty() => ("x", None),
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

fn valid_path_component(c: &str) -> bool {
    // alnum+ (sep alnum+)*, sep = "." | "_" | "__" | "-"+
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalisation_table() {
        let table: &[(&str, &str, &str)] = &[
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            (
                "host:5000/a/b:tag",
                "host:5000/a/b:tag",
                "host:5000/a/b:tag",
            ),
            (
                "localhost/app:1.0",
                "localhost/app:1.0",
                "localhost/app:1.0",
            ),
            (
                "index.docker.io/library/alpine:3",
                "docker.io/library/alpine:3",
                "alpine:3",
            ),
            (
                "docker.io/library/nginx",
                "docker.io/library/nginx:latest",
                "nginx:latest",
            ),
            (
                "127.0.0.1:5000/x",
                "127.0.0.1:5000/x:latest",
                "127.0.0.1:5000/x:latest",
            ),
            ("[::1]:5000/x:v", "[::1]:5000/x:v", "[::1]:5000/x:v"),
            (
                "my-reg.example.com/a__b/c-d.e:V_1.2-x",
                "my-reg.example.com/a__b/c-d.e:V_1.2-x",
                "my-reg.example.com/a__b/c-d.e:V_1.2-x",
            ),
        ];
        for (input, full, familiar) in table {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&r.to_string(), full, "{input}");
            assert_eq!(&r.familiar(), familiar, "{input}");
            // Parsing the normalised form is stable.
            assert_eq!(Reference::parse(full).unwrap(), r);
        }
        let r = Reference::parse(&format!("name@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().unwrap().to_string(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/name@{D}"));
        assert_eq!(r.familiar(), format!("name@{D}"));
        let r = Reference::parse(&format!("host:5000/name:v1@{D}")).unwrap();
        assert_eq!(r.domain, "host:5000");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.digest.is_some());
        assert_eq!(r.repository(), "host:5000/name");
        assert_eq!(
            Reference::parse("busybox").unwrap().repository(),
            "docker.io/library/busybox"
        );
        assert_eq!(Reference::parse_named("busybox").unwrap().tag, None);
    }

    #[test]
    fn rejects_bad_references() {
        use ReferenceError::*;
        type Check = fn(&ReferenceError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            ("".into(), |e| matches!(e, Empty)),
            ("Busybox".into(), |e| matches!(e, Uppercase(_))),
            ("host/Upper/x".into(), |e| matches!(e, Uppercase(_))),
            ("a b".into(), |e| matches!(e, BadPath(_))),
            ("a/-b".into(), |e| matches!(e, BadPath(_))),
            ("a//b".into(), |e| matches!(e, BadPath(_))),
            ("a___b".into(), |e| matches!(e, BadPath(_))),
            ("a:".into(), |e| matches!(e, BadTag(_))),
            ("a:-x".into(), |e| matches!(e, BadTag(_))),
            (format!("a:{}", "t".repeat(129)), |e| matches!(e, BadTag(_))),
            ("a@sha256:zz".into(), |e| matches!(e, BadDigest(_))),
            ("ho_st.com/a".into(), |e| matches!(e, BadDomain(_))),
            ("host:port/a".into(), |e| matches!(e, BadDomain(_))),
            (format!("a/{}", "b".repeat(300)), |e| {
                matches!(e, NameTooLong(_))
            }),
            ("a".repeat(64).replace('a', "f"), |e| {
                matches!(e, LooksLikeId(_))
            }),
        ];
        for (input, check) in cases {
            let e = Reference::parse(&input).expect_err(&input);
            assert!(check(&e), "{input}: {e:?}");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
    }
}
