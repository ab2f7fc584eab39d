//! Registry authentication: `WWW-Authenticate` challenges and the docker credentials file.
//!
//! Credentials live in `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`) as
//! docker writes them: `{"auths": {"<host>": {"auth": base64("user:pass")}}}`; Docker Hub's
//! key is `https://index.docker.io/v1/`. When the config names a credential helper for the
//! registry (`credHelpers.<host>`, else `credsStore`), [`load_credentials`] asks it first:
//! `docker-credential-<name> get` on `PATH`, the server key on stdin, a JSON
//! `{"Username","Secret"}` on stdout (docker's helper protocol); a helper without an entry
//! ("credentials not found") falls back to `auths`. [`store_credentials`] always writes
//! `auths` (storing into helpers is the CLI's job, `berth login`).

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

/// Looks up credentials for `host` in `<dir>/config.json` — from its credential helper
/// (on `PATH`) when one is configured, else `auths`; `None` when absent or unusable.
pub fn load_credentials(dir: &Path, host: &str) -> Result<Option<Credentials>, ClientError> {
    load_credentials_with(dir, host, std::env::var_os("PATH").as_deref())
}

/// [`load_credentials`] with credential helpers looked up on `search_path` (a
/// `PATH`-style list).
pub fn load_credentials_with(
    dir: &Path,
    host: &str,
    search_path: Option<&std::ffi::OsStr>,
) -> Result<Option<Credentials>, ClientError> {
    let cfg = read_config(&dir.join("config.json"))?;
    if let Some(helper) = helper_for(&cfg, host) {
        let key = store_key(host);
        if let Some(c) = helper_get(&helper, host, &key, search_path)? {
            return Ok(Some(c));
        }
    }
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

/// The credential helper `cfg` names for `host`: `credHelpers` under any of the host's
/// keys, else `credsStore`.
fn helper_for(cfg: &serde_json::Value, host: &str) -> Option<String> {
    let named = |v: Option<&serde_json::Value>| {
        v.and_then(|v| v.as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    if let Some(h) = cfg.get("credHelpers").and_then(|h| h.as_object()) {
        if let Some(n) = auth_keys(host).iter().find_map(|k| named(h.get(k))) {
            return Some(n);
        }
    }
    named(cfg.get("credsStore"))
}

/// `docker-credential-<helper> get` for server `key`; `None` when it has no entry.
fn helper_get(
    helper: &str,
    host: &str,
    key: &str,
    search_path: Option<&std::ffi::OsStr>,
) -> Result<Option<Credentials>, ClientError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let err = |reason: String| ClientError::CredentialHelper {
        helper: helper.to_string(),
        registry: host.to_string(),
        reason,
    };
    if helper.contains('/') {
        return Err(err("invalid helper name".into()));
    }
    let bin = format!("docker-credential-{helper}");
    let prog = search_path
        .and_then(|p| {
            std::env::split_paths(p)
                .map(|d| d.join(&bin))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| err("not found on PATH".into()))?;
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {}: {e}", prog.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper may exit without reading its input; its answer still counts.
        let _ = stdin.write_all(key.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("cannot run {}: {e}", prog.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let msg = format!("{} {}", stdout.trim(), stderr.trim());
        if msg.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(err(format!("get failed ({}): {}", out.status, msg.trim())));
    }
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).map_err(|_| err("get printed no valid JSON".into()))?;
    let username = v["Username"].as_str().unwrap_or("").to_string();
    let password = v["Secret"].as_str().unwrap_or("").to_string();
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials { username, password }))
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
    fn credentials_from_a_helper() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // Answers for 127.0.0.1:5000 only; records what it was asked.
        let script = format!(
            "#!/bin/sh\nread -r server || true\necho \"$1 $server\" >> {log}\n\
             if [ \"$server\" = 127.0.0.1:5000 ]; then\n\
             echo '{{\"ServerURL\":\"127.0.0.1:5000\",\"Username\":\"hu\",\"Secret\":\"hs\"}}'\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n",
            log = dir.path().join("log").display()
        );
        for name in ["docker-credential-fake", "docker-credential-other"] {
            let p = bin.join(name);
            std::fs::write(&p, &script).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credsStore":"fake","credHelpers":{"reg.lan":"missing"},
                "auths":{"other:5000":{"auth":"eDp5"}}}"#,
        )
        .unwrap();
        let path = Some(bin.as_os_str());
        let got = load_credentials_with(dir.path(), "127.0.0.1:5000", path).unwrap();
        assert_eq!(
            got,
            Some(Credentials {
                username: "hu".into(),
                password: "hs".into()
            })
        );
        // Not in the helper: falls back to auths.
        let got = load_credentials_with(dir.path(), "other:5000", path).unwrap();
        assert_eq!(got.map(|c| c.username), Some("x".to_string()));
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(log, "get 127.0.0.1:5000\nget other:5000\n");
        // A configured helper that is not installed is a clear error.
        let e = load_credentials_with(dir.path(), "reg.lan", path).unwrap_err();
        assert_eq!(
            errkind::HasKind::kind(&e),
            errkind::ErrorKind::FailedPrecondition
        );
        assert!(e.to_string().contains("docker-credential-missing"), "{e}");
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
