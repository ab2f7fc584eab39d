//! Crash-safe files and in-root path resolution.

use crate::error::{EngineError, Result};
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Writes `data` to `path` via a temporary file and a rename; with `durable` the data and
/// the directory entry are fsynced, so the new content survives a power loss. Without it
/// the write still survives a crash of the process (readers never see half a file).
pub fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| EngineError::io("create", &tmp, e))?;
    f.write_all(data)
        .map_err(|e| EngineError::io("write", &tmp, e))?;
    if durable {
        f.sync_all()
            .map_err(|e| EngineError::io("fsync", &tmp, e))?;
    }
    drop(f);
    fs::rename(&tmp, path).map_err(|e| EngineError::io("rename", path, e))?;
    if durable {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// Fsyncs a directory so that renames in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| EngineError::io("fsync directory", dir, e))
}

/// Resolves `path` (absolute, as seen inside a container) to a host path under `root`,
/// following symlinks as the container would see them: an absolute link target restarts at
/// `root`, `..` never climbs above `root`. The last component is followed too unless
/// `follow_last` is false. Missing components are kept as they are (the result may not
/// exist). At most 40 links are followed.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf> {
    let mut parts: Vec<String> = Vec::new();
    let mut todo: Vec<String> = split(path);
    todo.reverse();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." | "" => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = root.to_path_buf();
        for p in &parts {
            candidate.push(p);
        }
        candidate.push(&c);
        let is_last = todo.is_empty();
        if is_last && !follow_last {
            parts.push(c);
            break;
        }
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(EngineError::Invalid(format!(
                        "too many levels of symbolic links in {path}"
                    )));
                }
                let target = fs::read_link(&candidate)
                    .map_err(|e| EngineError::io("read link", &candidate, e))?;
                let t = target.to_string_lossy().to_string();
                if t.starts_with('/') {
                    parts.clear();
                }
                let mut more = split(&t);
                more.reverse();
                todo.extend(more);
            }
            _ => parts.push(c),
        }
    }
    let mut out = root.to_path_buf();
    for p in parts {
        out.push(p);
    }
    Ok(out)
}

fn split(p: &str) -> Vec<String> {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().to_string()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/real"), "x").unwrap();
        symlink("/etc/real", root.join("etc/abs")).unwrap();
        symlink("../../../../etc/real", root.join("etc/climb")).unwrap();
        symlink("/", root.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/etc/abs", true).unwrap(),
            root.join("etc/real")
        );
        assert_eq!(
            resolve_in_root(root, "/etc/climb", true).unwrap(),
            root.join("etc/real")
        );
        assert_eq!(
            resolve_in_root(root, "/up/../etc/passwd", true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, "/etc/abs", false).unwrap(),
            root.join("etc/abs")
        );
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.json");
        write_atomic(&p, b"one", true).unwrap();
        write_atomic(&p, b"two", false).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert!(!d.path().join("c.tmp").exists());
    }
}
