//! HTTP basic authentication against an htpasswd file with bcrypt entries
//! (`htpasswd -B`), as Docker's registry does with `auth: htpasswd`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;

/// Users and their bcrypt hashes, plus a cache of `Authorization` values already verified
/// (bcrypt is deliberately slow; a client sends the same header on every request).
pub(crate) struct Htpasswd {
    users: HashMap<String, String>,
    verified: Mutex<HashSet<String>>,
}

/// Why an htpasswd file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("read htpasswd file {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:$2y$...` (only bcrypt entries are supported).
    #[error("htpasswd file {path} line {line}: not a `user:bcrypt-hash` entry")]
    Entry {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
    },
}

impl Htpasswd {
    /// Loads an htpasswd file; blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|line| HtpasswdError::Entry {
            path: path.display().to_string(),
            line,
        })
    }

    /// Parses htpasswd text; `Err(line)` names the first bad line.
    pub fn parse(text: &str) -> Result<Self, usize> {
        let mut users = HashMap::new();
        for (i, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (u, h) = l.split_once(':').ok_or(i + 1)?;
            if u.is_empty()
                || !(h.starts_with("$2y$") || h.starts_with("$2a$") || h.starts_with("$2b$"))
            {
                return Err(i + 1);
            }
            users.insert(u.to_string(), h.to_string());
        }
        Ok(Self {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether an `Authorization` header value carries valid basic credentials.
    pub async fn check(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(value)
        {
            return true;
        }
        let Some(b64) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Ok(raw) = String::from_utf8(raw) else {
            return false;
        };
        let Some((user, pass)) = raw.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user).cloned() else {
            return false;
        };
        let pass = pass.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pass, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok {
            let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() > 1024 {
                v.clear();
            }
            v.insert(value.to_string());
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_bcrypt_entries() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let h = Htpasswd::parse(&format!("# comment\n\nalice:{hash}\n")).unwrap();
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:secret")
        );
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:wrong")
        );
        assert!(h.check(Some(&good)).await);
        assert!(h.check(Some(&good)).await);
        assert!(!h.check(Some(&bad)).await);
        assert!(!h.check(None).await);
        assert!(!h.check(Some("Bearer x")).await);
        assert_eq!(Htpasswd::parse("bob:{SHA}xyz").err(), Some(1));
    }
}
