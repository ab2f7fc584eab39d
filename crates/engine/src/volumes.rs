//! Named volumes of containers: the engine's side of the `volume` crate.
//!
//! # Model
//!
//! A container names volumes in `HostConfig.Binds` (`name:/path[:ro][,nocopy]`, a source
//! that is not an absolute path) and in `HostConfig.Mounts` (`Type: volume`). When the
//! container starts, each is created if missing, referenced for the container
//! ([`volume::VolumeStore::acquire`]) and, when new and empty, populated from the image's
//! content at the mount path (unless `nocopy`). References are released when the
//! container is removed; on a daemon restart they are taken again for every container.
//!
//! Paths in `Config.Volumes` (the image's `VOLUME`s and `docker run -v /path`) that no
//! bind, mount or tmpfs covers get an anonymous volume, created at the first start; their
//! names are kept in `anon-volumes.json` of the container's directory, and removing the
//! container with `v=1` (or `AutoRemove`) removes them.

use crate::containers::ContainerRecord;
use crate::error::{EngineError, Result};
use api::HostConfig;
use errkind::{ErrorKind, HasKind};
use std::collections::BTreeMap;
use std::path::Path;
use volume::{VolumeError, VolumeStore};

/// Maps a volume error to the engine's error of the same kind.
pub fn vol_err(e: VolumeError) -> EngineError {
    let msg = api::ApiError::from_error(&e).message;
    match e.kind() {
        ErrorKind::InvalidArgument | ErrorKind::NotFound => EngineError::Invalid(msg),
        ErrorKind::Conflict | ErrorKind::FailedPrecondition => EngineError::Conflict(msg),
        ErrorKind::Unavailable => EngineError::Unavailable(msg),
        ErrorKind::Internal => EngineError::Runtime(msg),
    }
}

/// A named volume a container uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUse {
    /// The volume's name.
    pub name: String,
    /// The path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Do not populate from the image.
    pub nocopy: bool,
}

/// The named volumes of a container's host config (validated names).
pub fn volume_uses(hc: &HostConfig) -> Result<Vec<VolumeUse>> {
    let mut out = Vec::new();
    for b in &hc.binds {
        let parts: Vec<&str> = b.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 || parts[0].starts_with('/') {
            continue;
        }
        volume::validate_name(parts[0]).map_err(vol_err)?;
        let opts: Vec<&str> = parts
            .get(2)
            .map(|o| o.split(',').collect())
            .unwrap_or_default();
        out.push(VolumeUse {
            name: parts[0].to_string(),
            target: parts[1].to_string(),
            read_only: opts.contains(&"ro"),
            nocopy: opts.contains(&"nocopy"),
        });
    }
    for m in &hc.mounts {
        if m.kind != "volume" {
            continue;
        }
        if m.source.is_empty() {
            // Anonymous: see `anonymous_targets`.
            continue;
        }
        volume::validate_name(&m.source).map_err(vol_err)?;
        out.push(VolumeUse {
            name: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
            nocopy: m.volume_options.as_ref().is_some_and(|o| o.no_copy),
        });
    }
    Ok(out)
}

/// Validates a container's volumes and mounts at create time: volume names, and that
/// the source of every `Mounts` bind exists (Docker's error otherwise).
pub fn validate(hc: &HostConfig) -> Result<()> {
    volume_uses(hc)?;
    for m in &hc.mounts {
        if m.kind == "bind" {
            bind_options(m)?;
        }
        if m.kind == "bind" && !Path::new(&m.source).exists() {
            return Err(EngineError::Invalid(format!(
                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                m.source
            )));
        }
    }
    Ok(())
}

/// OCI options of a `Mounts` bind: `rbind` (`bind` with `NonRecursive`), `ro`/`rw`, and
/// the propagation of `BindOptions.Propagation` (default `rprivate`).
pub fn bind_options(m: &api::Mount) -> Result<Vec<String>> {
    let b = m.bind_options.clone().unwrap_or_default();
    let prop = match b.propagation.as_str() {
        "" => "rprivate",
        p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave") => p,
        other => {
            return Err(EngineError::Invalid(format!(
                "invalid mount config: invalid propagation mode {other:?} for {}",
                m.target
            )))
        }
    };
    Ok(vec![
        if b.non_recursive { "bind" } else { "rbind" }.to_string(),
        if m.read_only { "ro" } else { "rw" }.to_string(),
        prop.to_string(),
    ])
}

/// File in a container's directory naming its anonymous volumes (target → name).
pub const ANON_FILE: &str = "anon-volumes.json";

/// The targets that get an anonymous volume: `Config.Volumes` and `Mounts` of type volume
/// without a source, minus every path another bind, mount or tmpfs covers.
fn anonymous_targets(rec: &ContainerRecord) -> Vec<(String, bool)> {
    let hc = &rec.host_config;
    let mut covered: Vec<String> = hc
        .binds
        .iter()
        .filter_map(|b| b.split(':').nth(1).map(String::from))
        .collect();
    covered.extend(
        hc.mounts
            .iter()
            .filter(|m| !(m.kind == "volume" && m.source.is_empty()))
            .map(|m| m.target.clone()),
    );
    covered.extend(hc.tmpfs.keys().cloned());
    let norm = |p: &str| p.trim_end_matches('/').to_string();
    let covered: Vec<String> = covered.iter().map(|c| norm(c)).collect();
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut push = |t: &str, ro: bool| {
        let t = norm(t);
        if !t.is_empty() && !covered.contains(&t) && !out.iter().any(|(x, _)| *x == t) {
            out.push((t, ro));
        }
    };
    for m in &hc.mounts {
        if m.kind == "volume" && m.source.is_empty() {
            push(&m.target, m.read_only);
        }
    }
    for t in rec.config.volumes.iter().flat_map(|v| v.keys()) {
        push(t, false);
    }
    out
}

fn load_anon(cdir: &Path) -> BTreeMap<String, String> {
    std::fs::read(cdir.join(ANON_FILE))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default()
}

/// Every volume of a container: named ones, then anonymous ones (name empty when it has
/// not been created yet).
pub fn uses(rec: &ContainerRecord, cdir: &Path) -> Result<Vec<VolumeUse>> {
    let mut out = volume_uses(&rec.host_config)?;
    let anon = load_anon(cdir);
    for (target, read_only) in anonymous_targets(rec) {
        out.push(VolumeUse {
            name: anon.get(&target).cloned().unwrap_or_default(),
            target,
            read_only,
            nocopy: false,
        });
    }
    Ok(out)
}

/// Takes the container's references on its volumes (creating missing ones, anonymous ones
/// recorded in the container's directory `cdir`), populates new empty ones from `rootfs`,
/// and returns the OCI bind mounts.
pub fn mount_volumes(
    store: &VolumeStore,
    rec: &ContainerRecord,
    cdir: &Path,
    rootfs: &Path,
) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    let mut anon = load_anon(cdir);
    let named = volume_uses(&rec.host_config)?.len();
    for (i, mut u) in uses(rec, cdir)?.into_iter().enumerate() {
        if i >= named && u.name.is_empty() {
            let v = store
                .create(None, BTreeMap::new(), BTreeMap::new())
                .map_err(vol_err)?;
            anon.insert(u.target.clone(), v.name.clone());
            let data = serde_json::to_vec(&anon)
                .map_err(|e| EngineError::Runtime(format!("serialize volume names: {e}")))?;
            crate::fsutil::write_atomic(&cdir.join(ANON_FILE), &data, true)?;
            u.name = v.name;
        }
        let v = store.acquire(&u.name, &rec.id).map_err(vol_err)?;
        if !u.nocopy {
            let rel = u.target.trim_start_matches('/');
            let src = rootfs.join(rel);
            // Only populate from a real directory inside the rootfs: no `..` and no
            // symlink on the way (an image's symlink could point out of the rootfs).
            let mut cur = rootfs.to_path_buf();
            let inside = rel.split('/').filter(|c| !c.is_empty()).all(|c| {
                cur.push(c);
                c != ".."
                    && std::fs::symlink_metadata(&cur)
                        .is_ok_and(|m| m.is_dir() && !m.file_type().is_symlink())
            });
            if inside {
                store.populate_from(&u.name, &src).map_err(vol_err)?;
            }
        }
        let o = vec!["rbind", if u.read_only { "ro" } else { "rw" }, "rprivate"];
        out.push(serde_json::json!({
            "destination": u.target,
            "type": "bind",
            "source": v.mountpoint,
            "options": o,
        }));
    }
    Ok(out)
}

/// Drops the container's references on its volumes; with `remove_anonymous` (`rm -v`)
/// its anonymous volumes are removed too (when no other container uses them).
pub fn release_volumes(
    store: &VolumeStore,
    rec: &ContainerRecord,
    cdir: &Path,
    remove_anonymous: bool,
) {
    let named = volume_uses(&rec.host_config).map(|v| v.len()).unwrap_or(0);
    for (i, u) in uses(rec, cdir).unwrap_or_default().into_iter().enumerate() {
        if u.name.is_empty() {
            continue;
        }
        store.release(&u.name, &rec.id);
        if remove_anonymous && i >= named {
            if let Err(e) = store.remove(&u.name, false) {
                tracing::warn!("remove anonymous volume {}: {e}", u.name);
            }
        }
    }
}

/// Re-takes the references of an existing container (daemon start).
pub fn reacquire(store: &VolumeStore, rec: &ContainerRecord, cdir: &Path) {
    for u in uses(rec, cdir).unwrap_or_default() {
        if !u.name.is_empty() && store.get(&u.name).is_ok() {
            let _ = store.acquire(&u.name, &rec.id);
        }
    }
}

/// Docker-style `Mounts` entries of a container's volumes (created ones).
pub fn mount_points(
    store: &VolumeStore,
    rec: &ContainerRecord,
    cdir: &Path,
) -> Vec<api::MountPoint> {
    uses(rec, cdir)
        .unwrap_or_default()
        .into_iter()
        .filter(|u| !u.name.is_empty())
        .map(|u| api::MountPoint {
            kind: "volume".into(),
            source: store
                .get(&u.name)
                .map(|v| v.mountpoint.display().to_string())
                .unwrap_or_default(),
            name: u.name,
            destination: u.target,
            driver: "local".into(),
            mode: if u.read_only { "ro".into() } else { "z".into() },
            rw: !u.read_only,
            propagation: String::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_split_named_volumes_from_host_paths() {
        let hc = HostConfig {
            binds: vec![
                "data:/data:ro".into(),
                "/host:/x".into(),
                "cache:/c:nocopy".into(),
            ],
            ..Default::default()
        };
        let u = volume_uses(&hc).unwrap();
        assert_eq!(u.len(), 2);
        assert!(u[0].read_only && !u[0].nocopy);
        assert!(u[1].nocopy && !u[1].read_only);
        let bad = HostConfig {
            binds: vec!["a..b/c:/x".into()],
            ..Default::default()
        };
        assert!(volume_uses(&bad).is_err());
    }
}
