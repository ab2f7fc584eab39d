//! Registry authentication: `WWW-Authenticate` challenges and the docker credentials file.
//!
//! Credentials live in `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`) as
//! docker writes them: `{"auths": {"<host>": {"auth": base64("user:pass")}}}`; Docker Hub's
//! key is `https://index.docker.io/v1/`. Credential helpers (`credsStore`) are not used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::error::ClientError;

/// User name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`.
    Basic,
    /// `Bearer realm="...",service="...",scope="..."`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name to pass to it.
        service: Option<String>,
        /// Scope the registry asked for.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value (first challenge only).
pub fn parse_challenge(v: &str) -> Option<Challenge> {
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// Parses `k="v", k2=v2` auth parameters (quoted strings may contain commas).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() {
            break;
        }
        i += 1; // '='
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, val);
        }
    }
    out
}

/// The directory docker keeps `config.json` in: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn default_docker_config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker")
}

/// The keys a registry host may be stored under in `auths`.
fn auth_keys(host: &str) -> Vec<String> {
    if host == "docker.io" || host == "registry-1.docker.io" || host == "index.docker.io" {
        return vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ];
    }
    vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
    ]
}

/// The key `login` writes for `host` (docker's choice).
fn store_key(host: &str) -> String {
    auth_keys(host).swap_remove(0)
}

fn read_config(path: &Path) -> Result<serde_json::Value, ClientError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| ClientError::Config {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(source) => Err(ClientError::Config {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Looks up credentials for `host` in `<dir>/config.json`; `None` when absent or unusable.
pub fn load_credentials(dir: &Path, host: &str) -> Result<Option<Credentials>, ClientError> {
    let cfg = read_config(&dir.join("config.json"))?;
    let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    for k in auth_keys(host) {
        let Some(entry) = auths.get(&k) else { continue };
        if let Some(a) = entry.get("auth").and_then(|a| a.as_str()) {
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(a.trim()) else {
                continue;
            };
            let Ok(raw) = String::from_utf8(raw) else {
                continue;
            };
            if let Some((u, p)) = raw.split_once(':') {
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }));
            }
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(|u| u.as_str()),
            entry.get("password").and_then(|p| p.as_str()),
        ) {
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
    }
    Ok(None)
}

/// Stores credentials for `host` in `<dir>/config.json`, keeping every other setting.
/// Written crash-safely with mode 0600.
pub fn store_credentials(dir: &Path, host: &str, creds: &Credentials) -> Result<(), ClientError> {
    let path = dir.join("config.json");
    let cfg_err = |source| ClientError::Config {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(cfg_err)?;
    let mut cfg = read_config(&path)?;
    if !cfg.is_object() {
        cfg = serde_json::json!({});
    }
    if !cfg.get("auths").is_some_and(|a| a.is_object()) {
        cfg["auths"] = serde_json::json!({});
    }
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.password));
    cfg["auths"][store_key(host)] = serde_json::json!({ "auth": auth });
    let data = serde_json::to_vec_pretty(&cfg).map_err(|e| cfg_err(std::io::Error::other(e)))?;
    write_private(&path, &data).map_err(cfg_err)
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path without parent"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn credentials_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"other:5000":{"auth":"eDp5"}},"psFormat":"table"}"#,
        )
        .unwrap();
        assert_eq!(
            load_credentials(dir.path(), "127.0.0.1:5000").unwrap(),
            None
        );
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        store_credentials(dir.path(), "127.0.0.1:5000", &c).unwrap();
        assert_eq!(
            load_credentials(dir.path(), "127.0.0.1:5000").unwrap(),
            Some(c.clone())
        );
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(v["psFormat"], "table");
        assert_eq!(v["auths"]["other:5000"]["auth"], "eDp5");
        assert_eq!(
            load_credentials(dir.path(), "other:5000").unwrap(),
            Some(Credentials {
                username: "x".into(),
                password: "y".into()
            })
        );
        store_credentials(dir.path(), "docker.io", &c).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert!(v["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
    }
}
