//! Idmapped bind mounts: a mount's `uidMappings`/`gidMappings`, and the `idmap` and
//! `ridmap` options.
//!
//! An idmapped mount shows the files of its source with their owners translated: a
//! mapping `{containerID: C, hostID: H, size: N}` (the format of the container's own
//! user namespace mappings, written the same way into a user namespace's `uid_map`)
//! makes a file owned by C on disk appear owned by H through the mount, and a file that
//! H creates through it is stored as owned by C. Ids without a mapping appear as the
//! overflow id (65534). A mount with the option but no mappings of its own uses the
//! container's user namespace (the spec's MAY): the mappings of a new one, or the one
//! joined by path.
//!
//! The kernel attaches an idmapping to a detached mount only, for a caller that controls
//! the mount's filesystem (CAP_SYS_ADMIN in the user namespace that mounted it, the
//! initial one for a host directory). So the runtime prepares these mounts itself,
//! before it forks, in the host's mount namespace: `open_tree(OPEN_TREE_CLONE)` copies
//! the source (with `AT_RECURSIVE` for `rbind`), a short-lived child unshares a user
//! namespace whose maps the runtime writes, and `mount_setattr(MOUNT_ATTR_IDMAP)` gives
//! the copy that namespace's mapping (every submount too with `ridmap`). The container's
//! init inherits the descriptors and moves each mount onto its destination inside the
//! rootfs (`move_mount`), which needs only its own namespaces' privileges, so this works
//! for containers in a user namespace as well. The descriptors are close-on-exec, and a
//! copy that is never attached disappears with its last descriptor.
//!
//! Needs Linux 5.12 or later and a filesystem that supports idmapped mounts (ext4, xfs,
//! btrfs, tmpfs since 6.3, overlayfs since 5.19; not proc or sysfs). Idmapped mounts of
//! a fresh filesystem (a `tmpfs` entry with `idmap`) are not supported: only bind mounts.

use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Mount, Spec};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// open_tree(2): make a detached copy of the mount (or tree) at the path.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// open_tree(2)/mount_setattr(2): the whole tree below the path, not just its mount.
const AT_RECURSIVE: libc::c_uint = 0x8000;
/// move_mount(2): the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// mount_setattr(2): give the mount the idmapping of `userns_fd`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// The kernel's limit on the lines of a `uid_map` or `gid_map`.
const MAX_MAP_LINES: usize = 340;

/// `struct mount_attr` (linux/mount.h, MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// What one entry of `mounts` asks for.
struct Want<'a> {
    /// `ridmap`: idmap every mount of the tree, not only the top one.
    recursive: bool,
    /// `rbind`: copy the submounts too.
    rbind: bool,
    /// The mount's own mappings (uid, gid); None: the container's user namespace.
    maps: Option<(&'a [LinuxIdMapping], &'a [LinuxIdMapping])>,
}

/// Whether a mount entry is idmapped and how; an error for what cannot work.
fn wanted(m: &Mount) -> std::result::Result<Option<Want<'_>>, String> {
    let dest = m.destination().display();
    let mut option = false;
    let mut recursive = false;
    let mut bind = m.typ().as_deref() == Some("bind");
    let mut rbind = false;
    for o in m.options().iter().flatten() {
        match o.as_str() {
            "idmap" => option = true,
            "ridmap" => (option, recursive) = (true, true),
            "bind" => bind = true,
            "rbind" => (bind, rbind) = (true, true),
            _ => {}
        }
    }
    // An empty list counts as none given (runtime-spec #1224: then the container's).
    let uid = m.uid_mappings().as_deref().filter(|v| !v.is_empty());
    let gid = m.gid_mappings().as_deref().filter(|v| !v.is_empty());
    let maps = match (uid, gid) {
        (Some(u), Some(g)) => {
            check_maps(u).map_err(|e| format!("mount {dest}: uidMappings: {e}"))?;
            check_maps(g).map_err(|e| format!("mount {dest}: gidMappings: {e}"))?;
            Some((u, g))
        }
        (None, None) => None,
        _ => {
            return Err(format!(
                "mount {dest}: uidMappings and gidMappings must be given together"
            ))
        }
    };
    if !option && maps.is_none() {
        return Ok(None);
    }
    if !bind {
        return Err(format!(
            "mount {dest}: idmapped mounts are supported for bind mounts only"
        ));
    }
    Ok(Some(Want {
        recursive,
        rbind,
        maps,
    }))
}

/// Checks id mappings as the kernel will when they are written to a `uid_map`: at most
/// 340 ranges, none empty or past 2^32, no two overlapping on either side.
pub(crate) fn check_maps(maps: &[LinuxIdMapping]) -> std::result::Result<(), String> {
    if maps.len() > MAX_MAP_LINES {
        return Err(format!(
            "{} ranges, the kernel takes at most {MAX_MAP_LINES}",
            maps.len()
        ));
    }
    let show = |m: &LinuxIdMapping| {
        format!(
            "{{containerID {}, hostID {}, size {}}}",
            m.container_id(),
            m.host_id(),
            m.size()
        )
    };
    for m in maps {
        let end = |start: u32| u64::from(start) + u64::from(m.size());
        if m.size() == 0 {
            return Err(format!("range {} is empty", show(m)));
        }
        if end(m.container_id()) > 1 << 32 || end(m.host_id()) > 1 << 32 {
            return Err(format!("range {} goes past id 4294967295", show(m)));
        }
    }
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[i + 1..] {
            let overlap = |x: u32, y: u32| {
                let (x, y, n, k) = (
                    u64::from(x),
                    u64::from(y),
                    u64::from(a.size()),
                    u64::from(b.size()),
                );
                x < y + k && y < x + n
            };
            if overlap(a.container_id(), b.container_id()) || overlap(a.host_id(), b.host_id()) {
                return Err(format!("ranges {} and {} overlap", show(a), show(b)));
            }
        }
    }
    Ok(())
}

/// The container's own user namespace: a new one (with its mappings) or one joined by
/// path.
fn container_userns(spec: &Spec) -> Option<ContainerNs<'_>> {
    let linux = spec.linux().as_ref()?;
    match crate::spec::namespace(spec, LinuxNamespaceType::User)? {
        Some(path) => Some(ContainerNs::Path(path)),
        None => Some(ContainerNs::Maps(
            linux.uid_mappings().as_deref().unwrap_or_default(),
            linux.gid_mappings().as_deref().unwrap_or_default(),
        )),
    }
}

enum ContainerNs<'a> {
    Path(PathBuf),
    Maps(&'a [LinuxIdMapping], &'a [LinuxIdMapping]),
}

/// Checks the idmapped mounts of a config: mappings usable by the kernel, given in
/// pairs, on bind mounts, and an idmap option without mappings only for a container
/// with a user namespace.
pub(crate) fn validate_spec(spec: &Spec) -> std::result::Result<(), String> {
    for m in spec.mounts().iter().flatten() {
        let Some(w) = wanted(m)? else {
            continue;
        };
        if w.maps.is_none() && container_userns(spec).is_none() {
            return Err(format!(
                "mount {}: option idmap needs uidMappings and gidMappings on the mount, or \
                 a user namespace for the container",
                m.destination().display()
            ));
        }
    }
    Ok(())
}

/// The prepared idmapped mounts of a container: detached, idmapped copies of their
/// sources, by index in `mounts`.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    fds: Vec<(usize, OwnedFd)>,
}

impl Mounts {
    /// The prepared mount for entry `index` of `mounts`, if it is idmapped.
    pub(crate) fn get(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.fds
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, fd)| fd.as_fd())
    }
}

/// Prepares every idmapped mount of a validated config (see the module docs). Runs in
/// the runtime, before it forks; relative sources are taken from `bundle`. The caller
/// must be single-threaded (a child is forked for each distinct mapping).
pub(crate) fn prepare(spec: &Spec, bundle: &Path) -> Result<Mounts> {
    let mut out = Mounts::default();
    // User namespaces made so far, by mapping: mounts with equal mappings share one.
    let mut made: Vec<(Vec<LinuxIdMapping>, Vec<LinuxIdMapping>, OwnedFd)> = Vec::new();
    let mut joined: Option<OwnedFd> = None;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(w) = wanted(m).map_err(Error::InvalidConfig)? else {
            continue;
        };
        let dest = m.destination().display().to_string();
        let (uid, gid) = match (w.maps, container_userns(spec)) {
            (Some(maps), _) => maps,
            (None, Some(ContainerNs::Maps(u, g))) => (u, g),
            (None, Some(ContainerNs::Path(p))) => {
                if joined.is_none() {
                    let fd = nix::fcntl::open(
                        &p,
                        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .map_err(|source| Error::Sys {
                        what: format!("open user namespace {} for mount {dest}", p.display()),
                        source,
                    })?;
                    joined = Some(fd);
                }
                (&[][..], &[][..])
            }
            (None, None) => {
                return Err(Error::InvalidConfig(format!(
                    "mount {dest}: option idmap needs mappings or a user namespace"
                )))
            }
        };
        let userns = match (&joined, uid.is_empty()) {
            (Some(fd), true) => fd.as_fd(),
            _ => {
                let pos = made.iter().position(|(u, g, _)| u == uid && g == gid);
                let pos = match pos {
                    Some(p) => p,
                    None => {
                        let fd = userns_with(uid, gid, &dest)?;
                        made.push((uid.to_vec(), gid.to_vec(), fd));
                        made.len() - 1
                    }
                };
                made[pos].2.as_fd()
            }
        };
        let src = match m.source() {
            Some(s) if s.is_absolute() => s.clone(),
            Some(s) => bundle.join(s),
            None => {
                return Err(Error::InvalidConfig(format!(
                    "bind mount {dest} has no source"
                )))
            }
        };
        let tree = open_tree(&src, w.rbind).map_err(|source| Error::Sys {
            what: format!("copy {} for the idmapped mount {dest}", src.display()),
            source,
        })?;
        set_idmap(&tree, userns, w.recursive).map_err(|source| {
            let why = match source {
                nix::errno::Errno::EINVAL => {
                    " (its filesystem does not support idmapped mounts, or the kernel is \
                     older than 5.12)"
                }
                nix::errno::Errno::ENOSYS => " (the kernel is older than 5.12)",
                _ => "",
            };
            Error::Sys {
                what: format!("idmap {} for mount {dest}{why}", src.display()),
                source,
            }
        })?;
        out.fds.push((i, tree));
    }
    Ok(out)
}

/// A detached copy of the mount at `src` (the whole tree below it with `recursive`).
fn open_tree(src: &Path, recursive: bool) -> nix::Result<OwnedFd> {
    let path = std::ffi::CString::new(src.as_os_str().as_encoded_bytes())
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `path` is a NUL-terminated string that outlives the call; open_tree only
    // reads it and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Gives the detached mount `tree` (and its submounts with `recursive`) the idmapping of
/// the user namespace `userns`.
fn set_idmap(tree: &OwnedFd, userns: BorrowedFd<'_>, recursive: bool) -> nix::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: the path is an empty NUL-terminated string (AT_EMPTY_PATH: the descriptor
    // itself), `attr` is a valid mount_attr of the size passed; both outlive the call and
    // the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

/// Moves a prepared (detached) mount onto `dest`. Runs in the container's init, in its
/// mount namespace, before `pivot_root`.
pub(crate) fn attach(tree: BorrowedFd<'_>, dest: &Path) -> nix::Result<()> {
    let to = std::ffi::CString::new(dest.as_os_str().as_encoded_bytes())
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call (the empty one
    // with MOVE_MOUNT_F_EMPTY_PATH names `tree` itself); the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

/// A user namespace with these mappings, held by a descriptor. A child creates it and
/// waits while the runtime writes its maps and opens it, then exits: the namespace lives
/// on as long as the descriptor (and the mounts idmapped with it).
fn userns_with(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping], dest: &str) -> Result<OwnedFd> {
    use nix::unistd::{pipe2, read, write, ForkResult};
    let sys = |what: &str| {
        let what = format!("{what} for the idmapped mount {dest}");
        move |source| Error::Sys { what, source }
    };
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (ready_r, ready_w) = pipe2(cloexec).map_err(sys("create a pipe"))?;
    let (hold_r, hold_w) = pipe2(cloexec).map_err(sys("create a pipe"))?;
    // SAFETY: the runtime is single-threaded (see `prepare`), so the child may run any
    // code; it only makes system calls and _exits.
    let child = match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(hold_w);
            let errno = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            let _ = write(&ready_w, &errno.to_le_bytes());
            // Wait until the runtime is done with the namespace (EOF).
            while read(&hold_r, &mut [0u8; 1]) == Err(nix::errno::Errno::EINTR) {}
            // SAFETY: _exit ends this forked copy without running the runtime's
            // destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    drop(hold_r);
    let result = (|| {
        let mut buf = [0u8; 4];
        let n = loop {
            match read(&ready_r, &mut buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.map_err(sys("wait for the user namespace"))?,
            }
        };
        if n != 4 {
            return Err(Error::Init(format!(
                "the helper for the idmapped mount {dest} died"
            )));
        }
        let errno = i32::from_le_bytes(buf);
        if errno != 0 {
            return Err(sys("create a user namespace")(nix::errno::Errno::from_raw(
                errno,
            )));
        }
        let pid = child.as_raw();
        write_map(pid, "uid_map", uid, dest)?;
        write_map(pid, "gid_map", gid, dest)?;
        nix::fcntl::open(
            format!("/proc/{pid}/ns/user").as_str(),
            nix::fcntl::OFlag::O_RDONLY | cloexec,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys("open the user namespace"))
    })();
    drop(hold_w);
    let _ = nix::sys::wait::waitpid(child, None);
    result
}

/// Writes the mappings of an idmapped mount to `/proc/<pid>/<file>`.
fn write_map(pid: i32, file: &str, maps: &[LinuxIdMapping], dest: &str) -> Result<()> {
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    std::fs::write(format!("/proc/{pid}/{file}"), text).map_err(|source| Error::Io {
        what: format!("write the {file} of the idmapped mount {dest}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(v: serde_json::Value) -> Vec<LinuxIdMapping> {
        serde_json::from_value(v).unwrap()
    }

    fn mount(v: serde_json::Value) -> Mount {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn mappings_are_checked_like_the_kernel() {
        let ok = maps(serde_json::json!([
            {"containerID": 0, "hostID": 1000, "size": 1},
            {"containerID": 1000, "hostID": 0, "size": 1},
            {"containerID": 1, "hostID": 100000, "size": 999}
        ]));
        check_maps(&ok).unwrap();
        let top = maps(serde_json::json!([
            {"containerID": 4294967295u32, "hostID": 0, "size": 1}
        ]));
        check_maps(&top).unwrap();
        let cases = [
            (
                serde_json::json!([{"containerID": 0, "hostID": 0, "size": 0}]),
                "empty",
            ),
            (
                serde_json::json!([{"containerID": 4294967295u32, "hostID": 0, "size": 2}]),
                "past id",
            ),
            (
                serde_json::json!([{"containerID": 0, "hostID": 4294967000u32, "size": 1000}]),
                "past id",
            ),
            (
                serde_json::json!([{"containerID": 0, "hostID": 0, "size": 10},
                    {"containerID": 9, "hostID": 100, "size": 1}]),
                "overlap",
            ),
            (
                serde_json::json!([{"containerID": 0, "hostID": 0, "size": 10},
                    {"containerID": 100, "hostID": 5, "size": 1}]),
                "overlap",
            ),
        ];
        for (v, want) in cases {
            let err = check_maps(&maps(v.clone())).unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
        }
        let many: Vec<serde_json::Value> = (0..341)
            .map(|i| serde_json::json!({"containerID": i, "hostID": i, "size": 1}))
            .collect();
        let err = check_maps(&maps(serde_json::Value::Array(many))).unwrap_err();
        assert!(err.contains("at most 340"), "{err}");
    }

    #[test]
    fn mount_entries_say_what_they_want() {
        let map = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        let plain = mount(serde_json::json!({"destination": "/d", "type": "bind",
            "source": "/tmp", "options": ["rbind"]}));
        assert!(wanted(&plain).unwrap().is_none());
        let m = mount(serde_json::json!({"destination": "/d", "source": "/tmp",
            "options": ["rbind", "ridmap"], "uidMappings": map, "gidMappings": map}));
        let w = wanted(&m).unwrap().unwrap();
        assert!(w.recursive && w.rbind && w.maps.is_some());
        let m = mount(serde_json::json!({"destination": "/d", "type": "bind",
            "source": "/tmp", "options": ["idmap"]}));
        let w = wanted(&m).unwrap().unwrap();
        assert!(!w.recursive && !w.rbind && w.maps.is_none());
        // Mappings without the option still idmap (the option is a SHOULD).
        let m = mount(serde_json::json!({"destination": "/d", "type": "bind",
            "source": "/tmp", "uidMappings": map, "gidMappings": map}));
        assert!(wanted(&m).unwrap().is_some());
        let cases = [
            (
                serde_json::json!({"destination": "/d", "type": "bind", "source": "/tmp",
                    "uidMappings": map}),
                "given together",
            ),
            (
                serde_json::json!({"destination": "/d", "type": "tmpfs", "source": "tmpfs",
                    "options": ["idmap"]}),
                "bind mounts only",
            ),
            (
                serde_json::json!({"destination": "/d", "type": "bind", "source": "/tmp",
                    "uidMappings": [{"containerID": 0, "hostID": 0, "size": 0}],
                    "gidMappings": map}),
                "uidMappings: range",
            ),
        ];
        for (v, want) in cases {
            let err = wanted(&mount(v.clone())).err().unwrap();
            assert!(err.contains(want) && err.contains("/d"), "{v}: {err}");
        }
    }

    #[test]
    fn idmap_without_mappings_needs_a_user_namespace() {
        let mut v = serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "mount"}]},
            "mounts": [{"destination": "/d", "type": "bind", "source": "/tmp",
                "options": ["idmap"]}]
        });
        let spec: Spec = serde_json::from_value(v.clone()).unwrap();
        let err = validate_spec(&spec).unwrap_err();
        assert!(err.contains("needs uidMappings"), "{err}");
        v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "user"}]);
        let spec: Spec = serde_json::from_value(v).unwrap();
        validate_spec(&spec).unwrap();
    }
}
