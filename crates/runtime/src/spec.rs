//! Loading and validating a bundle's `config.json`.
//!
//! Validation happens before anything is created on the host, so a bad config leaves
//! nothing behind: no state directory, no cgroup, no process.

use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A loaded, validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory (absolute).
    pub dir: PathBuf,
    /// The parsed config.
    pub spec: Spec,
    /// The root filesystem (absolute).
    pub rootfs: PathBuf,
}

/// Reads `<bundle>/config.json`, parses it with the OCI types and validates it.
pub fn load_bundle(bundle: &Path) -> Result<Bundle> {
    let dir = std::fs::canonicalize(bundle).map_err(|source| Error::ReadConfig {
        path: bundle.to_path_buf(),
        source,
    })?;
    let path = dir.join("config.json");
    let data = std::fs::read(&path).map_err(|source| Error::ReadConfig {
        path: path.clone(),
        source,
    })?;
    let spec: Spec =
        serde_json::from_slice(&data).map_err(|source| Error::ParseConfig { path, source })?;
    let rootfs = validate(&spec, &dir)?;
    Ok(Bundle { dir, spec, rootfs })
}

/// Checks what serde cannot: versions, paths, namespaces, mappings. Returns the rootfs.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let bad = |m: String| Err(Error::InvalidConfig(m));
    if !spec.version().starts_with("1.") {
        return bad(format!(
            "unsupported ociVersion {:?} (want 1.x)",
            spec.version()
        ));
    }
    let Some(root) = spec.root() else {
        return bad("root is missing".into());
    };
    let rootfs = bundle.join(root.path());
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return bad(format!("root.path {} is not a directory", rootfs.display())),
        Err(_) => return bad(format!("root.path {} does not exist", rootfs.display())),
    }
    let Some(process) = spec.process() else {
        return bad("process is missing".into());
    };
    validate_process(process)?;
    let Some(linux) = spec.linux() else {
        return bad("linux is missing".into());
    };
    let mut seen = HashSet::new();
    let mut new_user = false;
    let mut has_mount = false;
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        if !seen.insert(ns.typ() as u64) {
            return bad(format!("namespace {:?} listed twice", ns.typ()));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return bad(format!("namespace path {} is not absolute", p.display()));
            }
            if !p.exists() {
                return bad(format!("namespace path {} does not exist", p.display()));
            }
        }
        match ns.typ() {
            LinuxNamespaceType::User if ns.path().is_none() => new_user = true,
            LinuxNamespaceType::Mount => has_mount = true,
            _ => {}
        }
    }
    let named = spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        || spec.domainname().as_deref().is_some_and(|d| !d.is_empty());
    if named && namespace(spec, LinuxNamespaceType::Uts).is_none() {
        return bad("hostname/domainname need a uts namespace in linux.namespaces".into());
    }
    if !has_mount {
        return bad("a mount namespace is required in linux.namespaces".into());
    }
    let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if new_user && !has_maps {
        return bad("a new user namespace needs linux.uidMappings and linux.gidMappings".into());
    }
    if has_maps && !new_user {
        return bad("linux.uidMappings given without a new user namespace".into());
    }
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if m.destination().as_os_str().is_empty() {
            return bad("a mount has an empty destination".into());
        }
    }
    crate::sched::validate_spec(spec).map_err(Error::InvalidConfig)?;
    crate::mempolicy::validate_spec(spec).map_err(Error::InvalidConfig)?;
    crate::idmap::validate_spec(spec).map_err(Error::InvalidConfig)?;
    crate::resctrl::validate_spec(spec).map_err(Error::InvalidConfig)?;
    validate_net_devices(spec)?;
    if let Some(hooks) = spec.hooks() {
        let lists = [
            hooks.prestart(),
            hooks.create_runtime(),
            hooks.create_container(),
            hooks.start_container(),
            hooks.poststart(),
            hooks.poststop(),
        ];
        for h in lists.into_iter().flatten().flatten() {
            if !h.path().is_absolute() {
                return bad(format!("hook path {} is not absolute", h.path().display()));
            }
        }
    }
    Ok(rootfs)
}

/// Whether `name` is usable as a network interface name (1-15 bytes, no '/', ':' or
/// whitespace, not "." or "..").
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
}

/// Checks `linux.netDevices`: valid names, and a network namespace to move them into.
fn validate_net_devices(spec: &Spec) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidConfig(m));
    let devices = spec.linux().as_ref().and_then(|l| l.net_devices().as_ref());
    let Some(devices) = devices.filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    if namespace(spec, LinuxNamespaceType::Network).is_none() {
        return bad("linux.netDevices needs a network namespace in linux.namespaces".into());
    }
    let mut targets = HashSet::new();
    for (host, dev) in devices {
        if !valid_ifname(host) {
            return bad(format!("linux.netDevices: bad interface name {host:?}"));
        }
        let target = dev.name().as_deref().unwrap_or(host);
        if !valid_ifname(target) {
            return bad(format!(
                "linux.netDevices: bad new name {target:?} for {host:?}"
            ));
        }
        if !targets.insert(target) {
            return bad(format!("linux.netDevices: name {target:?} used twice"));
        }
    }
    Ok(())
}

/// Checks a process definition (used for the container and for `exec`).
pub fn validate_process(process: &oci_spec::runtime::Process) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidConfig(m));
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return bad("process.args must not be empty".into());
    }
    if !process.cwd().is_absolute() {
        return bad(format!(
            "process.cwd {:?} is not absolute",
            process.cwd().display()
        ));
    }
    let mut seen = HashSet::new();
    for r in process.rlimits().as_deref().unwrap_or_default() {
        if !seen.insert(r.typ() as u32) {
            return bad(format!("rlimit {:?} listed twice", r.typ()));
        }
        if r.soft() > r.hard() {
            return bad(format!("rlimit {:?} has soft > hard", r.typ()));
        }
    }
    crate::sched::validate_process(process).map_err(Error::InvalidConfig)?;
    Ok(())
}

/// Whether a namespace of this type is requested, and its path when joined.
pub fn namespace(spec: &Spec, typ: LinuxNamespaceType) -> Option<Option<PathBuf>> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == typ)
        .map(|n| n.path().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Edit = Box<dyn Fn(&mut serde_json::Value)>;

    fn spec(v: serde_json::Value) -> Spec {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "mount"}, {"type": "uts"}]},
            "hostname": "h"
        })
    }

    #[test]
    fn validation_rules() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rootfs")).unwrap();
        assert!(validate(&spec(base()), d.path()).is_ok());
        let cases: Vec<(&str, Edit)> = vec![
            ("ociVersion", Box::new(|v| v["ociVersion"] = "2.0.0".into())),
            (
                "does not exist",
                Box::new(|v| v["root"]["path"] = "nope".into()),
            ),
            (
                "args",
                Box::new(|v| v["process"]["args"] = serde_json::json!([])),
            ),
            (
                "not absolute",
                Box::new(|v| v["process"]["cwd"] = "x".into()),
            ),
            (
                "mount namespace",
                Box::new(|v| v["linux"]["namespaces"] = serde_json::json!([{"type": "uts"}])),
            ),
            (
                "uts namespace",
                Box::new(|v| v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}])),
            ),
            (
                "twice",
                Box::new(|v| {
                    v["linux"]["namespaces"] =
                        serde_json::json!([{"type": "mount"}, {"type": "uts"}, {"type": "uts"}])
                }),
            ),
            (
                "uidMappings",
                Box::new(|v| {
                    v["linux"]["namespaces"] =
                        serde_json::json!([{"type": "mount"}, {"type": "uts"}, {"type": "user"}])
                }),
            ),
        ];
        for (want, edit) in cases {
            let mut v = base();
            edit(&mut v);
            let err = validate(&spec(v), d.path()).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
