//! Docker credential helpers (`credsStore` and `credHelpers` in `config.json`).
//!
//! A helper is a program `docker-credential-<name>` found on `PATH`, speaking docker's
//! credential-helper protocol: the action is its only argument; `get` reads the server
//! URL on stdin and prints `{"ServerURL","Username","Secret"}` (or fails with
//! "credentials not found" when it has none); `store` reads that JSON on stdin; `erase`
//! reads the server URL. `credHelpers.<registry>` picks a helper for one registry and wins
//! over `credsStore`, which is the helper for all others. With a helper, `config.json`
//! keeps only an empty `auths.<registry>` entry (docker's layout), never the secret.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// The user name docker's helpers use for an identity token instead of a password.
pub const TOKEN_USERNAME: &str = "<token>";

/// The helper name `config` configures for `server` (a config.json key such as
/// `127.0.0.1:5000` or `https://index.docker.io/v1/`), if any.
pub fn helper_for(config: &Value, server: &str) -> Option<String> {
    let bare = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    if let Some(h) = config.get("credHelpers").and_then(Value::as_object) {
        for k in [server, bare] {
            if let Some(name) = h.get(k).and_then(Value::as_str).filter(|n| !n.is_empty()) {
                return Some(name.to_string());
            }
        }
    }
    config
        .get("credsStore")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// Runs credential helpers found on a search path.
#[derive(Debug, Clone)]
pub struct Helpers {
    path: Option<OsString>,
}

impl Helpers {
    /// Helpers on the process's `PATH`.
    pub fn from_env() -> Helpers {
        Helpers {
            path: std::env::var_os("PATH"),
        }
    }

    /// Helpers on `path` (a `PATH`-style list), for tests.
    #[cfg(test)]
    pub fn with_path(path: impl Into<OsString>) -> Helpers {
        Helpers {
            path: Some(path.into()),
        }
    }

    fn program(&self, name: &str) -> Result<PathBuf> {
        if name.contains('/') {
            bail!("invalid credential helper name {name:?}");
        }
        let bin = format!("docker-credential-{name}");
        self.path
            .as_ref()
            .and_then(|p| {
                std::env::split_paths(p)
                    .map(|d| d.join(&bin))
                    .find(|p| p.is_file())
            })
            .ok_or_else(|| {
                anyhow!("credential helper {bin} not found in PATH (configured in config.json)")
            })
    }

    /// Runs `docker-credential-<name> <action>` with `input` on stdin; returns whether it
    /// succeeded and what it printed (stdout, else stderr).
    fn run(&self, name: &str, action: &str, input: &[u8]) -> Result<(bool, String)> {
        let prog = self.program(name)?;
        let mut child = Command::new(&prog)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", prog.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading; its answer still counts.
            let _ = stdin.write_all(input);
        }
        let out = child
            .wait_with_output()
            .with_context(|| format!("running {}", prog.display()))?;
        let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if text.is_empty() {
            text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
        Ok((out.status.success(), text))
    }

    /// The credentials helper `name` holds for `server`: `(user, secret)`; `None` when it
    /// has none.
    pub fn get(&self, name: &str, server: &str) -> Result<Option<(String, String)>> {
        let (ok, text) = self.run(name, "get", server.as_bytes())?;
        if !ok {
            if text.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            bail!("credential helper docker-credential-{name} get failed: {text}");
        }
        let v: Value = serde_json::from_str(&text).with_context(|| {
            format!("credential helper docker-credential-{name} printed invalid JSON")
        })?;
        let user = v["Username"].as_str().unwrap_or("").to_string();
        let secret = v["Secret"].as_str().unwrap_or("").to_string();
        if user.is_empty() && secret.is_empty() {
            return Ok(None);
        }
        Ok(Some((user, secret)))
    }

    /// Stores `user`/`secret` for `server` in helper `name`.
    pub fn store(&self, name: &str, server: &str, user: &str, secret: &str) -> Result<()> {
        let input = json!({"ServerURL": server, "Username": user, "Secret": secret});
        let (ok, text) = self.run(name, "store", input.to_string().as_bytes())?;
        if !ok {
            bail!("credential helper docker-credential-{name} store failed: {text}");
        }
        Ok(())
    }

    /// Erases what helper `name` holds for `server` (no error when it holds nothing).
    pub fn erase(&self, name: &str, server: &str) -> Result<()> {
        let (ok, text) = self.run(name, "erase", server.as_bytes())?;
        if !ok && !text.to_ascii_lowercase().contains("credentials not found") {
            bail!("credential helper docker-credential-{name} erase failed: {text}");
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake helper keeping one credential per server in files under `dir/store`.
    pub(crate) fn fake_helper(dir: &std::path::Path, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        let store = dir.join("store");
        std::fs::create_dir_all(&store).unwrap();
        let script = format!(
            r#"#!/bin/sh
store={store}
read -r input || true
key=$(printf '%s' "$input" | sed 's/[^A-Za-z0-9]/_/g')
case "$1" in
get)
  if [ -f "$store/$key" ]; then cat "$store/$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
store)
  server=$(printf '%s' "$input" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
  k=$(printf '%s' "$server" | sed 's/[^A-Za-z0-9]/_/g')
  printf '%s' "$input" > "$store/$k" ;;
erase)
  if [ -f "$store/$key" ]; then rm "$store/$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
*) echo "unknown action $1" >&2; exit 2 ;;
esac
"#,
            store = store.display()
        );
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn helper_selection() {
        let cfg = json!({"credsStore": "desktop", "credHelpers": {"reg.example:5000": "pass"}});
        assert_eq!(
            helper_for(&cfg, "reg.example:5000").as_deref(),
            Some("pass")
        );
        assert_eq!(
            helper_for(&cfg, "https://reg.example:5000/").as_deref(),
            Some("pass")
        );
        assert_eq!(helper_for(&cfg, "other:5000").as_deref(), Some("desktop"));
        assert_eq!(helper_for(&json!({}), "other:5000"), None);
        assert_eq!(helper_for(&json!({"credsStore": ""}), "x"), None);
    }

    #[test]
    fn store_get_erase_through_a_helper() {
        let dir = tempfile::tempdir().unwrap();
        fake_helper(dir.path(), "fake");
        let h = Helpers::with_path(dir.path());
        assert_eq!(h.get("fake", "127.0.0.1:5000").unwrap(), None);
        h.store("fake", "127.0.0.1:5000", "bob", "s3cret").unwrap();
        assert_eq!(
            h.get("fake", "127.0.0.1:5000").unwrap(),
            Some(("bob".into(), "s3cret".into()))
        );
        assert_eq!(h.get("fake", "other:1").unwrap(), None);
        h.erase("fake", "127.0.0.1:5000").unwrap();
        assert_eq!(h.get("fake", "127.0.0.1:5000").unwrap(), None);
        h.erase("fake", "127.0.0.1:5000").unwrap();
        let e = h.get("missing", "x").unwrap_err().to_string();
        assert!(e.contains("docker-credential-missing not found"), "{e}");
        assert!(Helpers::with_path(dir.path()).program("../x").is_err());
    }
}
