//! `docker cp`: stat, tar export and tar import of paths in a container's root filesystem.
//!
//! Paths are resolved inside the root filesystem ([`crate::fsutil::resolve_in_root`]), so
//! symlinks in the container never lead out of it. Imports refuse entries that climb out of
//! the destination (`..`, absolute paths) and never follow symlinks from the archive.

use crate::error::{EngineError, Result};
use crate::fsutil::resolve_in_root;
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// What `X-Docker-Container-Path-Stat` carries (Go `os.FileMode` bits in `mode`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PathStat {
    /// The base name.
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Go file mode: permission bits plus type flags (dir `1<<31`, symlink `1<<27`).
    pub mode: u32,
    /// Modification time (RFC 3339).
    pub mtime: String,
    /// The link target of a symlink.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

fn go_mode(m: &std::fs::Metadata) -> u32 {
    let perm = m.mode() & 0o777;
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let mut mode = perm;
    if ft.is_dir() {
        mode |= 1 << 31;
    } else if ft.is_symlink() {
        mode |= 1 << 27;
    } else if ft.is_block_device() {
        mode |= 1 << 26;
    } else if ft.is_char_device() {
        mode |= (1 << 26) | (1 << 21);
    } else if ft.is_fifo() {
        mode |= 1 << 25;
    } else if ft.is_socket() {
        mode |= 1 << 24;
    }
    mode
}

/// Stats `path` (as the container sees it) under `rootfs`.
pub fn stat(rootfs: &Path, path: &str, container: &str) -> Result<(PathStat, PathBuf)> {
    let host = resolve_in_root(rootfs, path, false)?;
    let m = std::fs::symlink_metadata(&host).map_err(|_| EngineError::NoSuchPath {
        path: path.to_string(),
        container: container.to_string(),
    })?;
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "/".to_string());
    let link_target = if m.file_type().is_symlink() {
        std::fs::read_link(&host)
            .map(|t| t.to_string_lossy().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mtime = chrono::DateTime::from_timestamp(m.mtime(), m.mtime_nsec() as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default();
    Ok((
        PathStat {
            name,
            size: m.len() as i64,
            mode: go_mode(&m),
            mtime,
            link_target,
        },
        host,
    ))
}

/// A tar of `path` (a file, or a directory with everything below it), its entries named
/// under the path's base name, as `docker cp` expects.
pub fn export(rootfs: &Path, path: &str, container: &str) -> Result<(PathStat, Vec<u8>)> {
    let (st, _) = stat(rootfs, path, container)?;
    // Follow a trailing symlink for the content, as docker does for `cp c:/link -`.
    let host = resolve_in_root(
        rootfs,
        path,
        !path.ends_with("/.") && !st.link_target.is_empty() && path.ends_with('/'),
    )?;
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let name = if st.name == "/" {
        ".".to_string()
    } else {
        st.name.clone()
    };
    let m = std::fs::symlink_metadata(&host).map_err(|e| EngineError::io("stat", &host, e))?;
    let r = if m.is_dir() {
        b.append_dir_all(&name, &host)
    } else {
        b.append_path_with_name(&host, &name)
    };
    r.map_err(|e| EngineError::io("archive", &host, e))?;
    let data = b
        .into_inner()
        .map_err(|e| EngineError::io("archive", &host, e))?;
    Ok((st, data))
}

/// Extracts a tar into the directory `path` of the container.
pub fn import(rootfs: &Path, path: &str, container: &str, data: &[u8]) -> Result<()> {
    let dest = resolve_in_root(rootfs, path, true)?;
    let m = std::fs::metadata(&dest).map_err(|_| EngineError::NoSuchPath {
        path: path.to_string(),
        container: container.to_string(),
    })?;
    if !m.is_dir() {
        return Err(EngineError::Invalid(format!(
            "extraction point is not a directory: {path}"
        )));
    }
    let mut ar = tar::Archive::new(data);
    ar.set_preserve_permissions(true);
    ar.set_overwrite(true);
    let entries = ar
        .entries()
        .map_err(|e| EngineError::Invalid(format!("invalid tar archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| EngineError::Invalid(format!("invalid tar archive: {e}")))?;
        let rel = entry
            .path()
            .map_err(|e| EngineError::Invalid(format!("invalid tar entry name: {e}")))?
            .to_path_buf();
        if rel.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        }) {
            return Err(EngineError::Invalid(format!(
                "tar entry {} leaves the destination",
                rel.display()
            )));
        }
        // Resolve the entry's parent inside the root so that symlinks already in the
        // container cannot redirect the write out of it.
        let inside = format!("{}/{}", path.trim_end_matches('/'), rel.display());
        let target = resolve_in_root(rootfs, &inside, false)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| EngineError::io("create directory", parent, e))?;
        }
        entry
            .unpack(&target)
            .map_err(|e| EngineError::io("extract", &target, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_import_round_trip_and_escape() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::write(root.join("data/sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        let (st, tar) = export(root, "/data", "c").unwrap();
        assert_eq!(st.name, "data");
        assert!(st.mode & (1 << 31) != 0);
        std::fs::create_dir_all(root.join("copy")).unwrap();
        import(root, "/copy", "c", &tar).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("copy/data/sub/f")).unwrap(),
            "x"
        );
        // Writing through a symlink that points at "/" stays in the root.
        import(root, "/escape", "c", &tar).unwrap();
        assert!(root.join("data/sub/f").exists());
        assert!(matches!(
            stat(root, "/nope", "c"),
            Err(EngineError::NoSuchPath { .. })
        ));
    }
}
