//! OCI `cgroupsPath` semantics.
//!
//! * absolute (`/a/b`): relative to the root of every hierarchy;
//! * relative (`a/b`): relative to the calling process's cgroup in each v1 hierarchy, and
//!   to that cgroup's parent on cgroup2 (the caller's own cgroup holds a process, so the
//!   kernel would not let it enable memory, io or hugetlb for a child);
//! * absent: `/berth/<id>`;
//! * with the systemd driver, `slice:prefix:name` maps to
//!   `<slice path>/<prefix>-<name>.scope`, where a slice `a-b.slice` lives under
//!   `/a.slice/a-b.slice` (systemd's nesting rule). No D-Bus is involved: the path is
//!   created directly in the cgroup filesystems.

use crate::error::{CgroupError, Result};

fn invalid(path: &str, reason: &str) -> CgroupError {
    CgroupError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// Normalise a cgroupfs-style path: drop empty and `.` components, reject `..`, NUL and
/// empty results. Keeps a leading `/` when the input is absolute.
pub(crate) fn normalize(path: &str) -> Result<String> {
    if path.contains('\0') {
        return Err(invalid(path, "contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid(path, "must not contain \"..\"")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(invalid(path, "must name a cgroup below the root"));
    }
    let joined = parts.join("/");
    Ok(if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    })
}

/// Expand a systemd slice name into its path: `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`,
/// `-.slice` → `/`.
pub(crate) fn expand_slice(slice: &str) -> Result<String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(invalid(slice, "slice name must end in \".slice\""));
    };
    if slice.contains('/') {
        return Err(invalid(slice, "slice name must not contain \"/\""));
    }
    if stem == "-" {
        return Ok("/".to_string());
    }
    if stem.is_empty() || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(invalid(slice, "malformed slice name"));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for (i, part) in stem.split('-').enumerate() {
        if i > 0 {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// Resolve the OCI cgroupsPath for container `id` into a normalised path (absolute or
/// relative to the caller's cgroup).
pub(crate) fn resolve(cgroups_path: Option<&str>, id: &str, systemd: bool) -> Result<String> {
    match cgroups_path {
        None => {
            if id.is_empty() || id.contains('/') {
                return Err(invalid(
                    id,
                    "container id must be non-empty and without \"/\"",
                ));
            }
            normalize(&format!("/berth/{id}"))
        }
        Some("") => Err(invalid("", "must not be empty")),
        Some(p) if systemd && !p.contains('/') && p.split(':').count() == 3 => {
            let mut it = p.split(':');
            let (slice, prefix, name) = match (it.next(), it.next(), it.next()) {
                (Some(s), Some(p), Some(n)) => (s, p, n),
                _ => return Err(invalid(p, "expected \"slice:prefix:name\"")),
            };
            if name.is_empty() {
                return Err(invalid(p, "systemd unit name must not be empty"));
            }
            let slice_path = expand_slice(if slice.is_empty() {
                "system.slice"
            } else {
                slice
            })?;
            let unit = if name.ends_with(".slice") {
                // A slice as the unit itself: nested under its own parents.
                return normalize(&expand_slice(name)?);
            } else if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            normalize(&format!("{slice_path}/{unit}"))
        }
        Some(p) if systemd && p.contains(':') => Err(invalid(
            p,
            "expected \"slice:prefix:name\" with the systemd driver",
        )),
        Some(p) => normalize(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_uses_id() {
        assert_eq!(resolve(None, "abc", false).unwrap(), "/berth/abc");
        assert!(resolve(None, "", false).is_err());
        assert!(resolve(None, "a/b", false).is_err());
    }

    #[test]
    fn absolute_and_relative_paths() {
        assert_eq!(resolve(Some("/a//b/"), "x", false).unwrap(), "/a/b");
        assert_eq!(resolve(Some("a/./b"), "x", false).unwrap(), "a/b");
    }

    #[test]
    fn rejects_bad_paths() {
        for p in ["", "/", "/a/../b", "..", "a/..", "//", "a\0b"] {
            let e = resolve(Some(p), "x", false).unwrap_err();
            assert!(
                matches!(e, CgroupError::InvalidPath { .. }),
                "{p:?} gave {e:?}"
            );
        }
    }

    #[test]
    fn systemd_paths() {
        assert_eq!(
            resolve(Some("system.slice:berth:abc"), "x", true).unwrap(),
            "/system.slice/berth-abc.scope"
        );
        assert_eq!(
            resolve(Some("user-1000.slice:docker:abc"), "x", true).unwrap(),
            "/user.slice/user-1000.slice/docker-abc.scope"
        );
        assert_eq!(
            resolve(Some(":berth:abc"), "x", true).unwrap(),
            "/system.slice/berth-abc.scope"
        );
        assert_eq!(
            resolve(Some("-.slice:p:n"), "x", true).unwrap(),
            "/p-n.scope"
        );
        assert!(resolve(Some("nodot:p:n"), "x", true).is_err());
        assert!(resolve(Some("a--b.slice:p:n"), "x", true).is_err());
        assert!(resolve(Some("system.slice:p:"), "x", true).is_err());
        assert!(resolve(Some("a:b"), "x", true).is_err());
        // Without the systemd driver a colon is just a character.
        assert_eq!(resolve(Some("/a:b:c"), "x", false).unwrap(), "/a:b:c");
    }

    #[test]
    fn expands_slices() {
        assert_eq!(
            expand_slice("a-b-c.slice").unwrap(),
            "/a.slice/a-b.slice/a-b-c.slice"
        );
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        assert!(expand_slice("-a.slice").is_err());
    }
}
