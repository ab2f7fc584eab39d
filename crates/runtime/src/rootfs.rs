//! Building the container's root filesystem inside its new mount namespace.
//!
//! Runs in the container's init, before `pivot_root`. Every mount destination is resolved
//! inside the rootfs as if the rootfs were `/`: symlinks (absolute or with `..`) are
//! followed but can never leave it, so a hostile image cannot make us mount over a host
//! path. Errors are plain strings: they travel back to the `create` caller.

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Result of a setup step in a child: the error is the message for the caller.
pub(crate) type CResult<T> = Result<T, String>;

/// Adds "what failed" to an error, producing the message for the caller.
pub(crate) trait Ctx<T> {
    /// Maps the error to `"{what}: {error}"`.
    fn ctx(self, what: impl FnOnce() -> String) -> CResult<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> CResult<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}

/// Mount options split into flags, propagation changes and filesystem data.
#[derive(Debug, PartialEq)]
pub(crate) struct MountOpts {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation changes to apply after mounting, in order.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options (`mode=755`, `size=64k`, ...).
    pub data: Vec<String>,
    /// A bind mount (`bind` or `rbind`).
    pub bind: bool,
}

/// MS_NOSYMFOLLOW (not named by nix).
const NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// Parses an OCI mount option list.
pub(crate) fn parse_options(opts: &[String]) -> CResult<MountOpts> {
    let mut o = MountOpts {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
        bind: false,
    };
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" | "rro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" | "rrw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "suid" | "rsuid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nosuid" | "rnosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "dev" | "rdev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "nodev" | "rnodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "exec" | "rexec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noexec" | "rnoexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" | "ratime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" | "rnoatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" | "rdiratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" | "rnodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" | "rrelatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" | "rnorelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" | "rstrictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" | "rnostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "nosymfollow" | "rnosymfollow" => (NOSYMFOLLOW, MsFlags::empty()),
            "symfollow" | "rsymfollow" => (MsFlags::empty(), NOSYMFOLLOW),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                o.bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let base = match opt.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                let rec = if opt.starts_with('r') {
                    MsFlags::MS_REC
                } else {
                    MsFlags::empty()
                };
                o.propagation.push(base | rec);
                continue;
            }
            "tmpcopyup" => continue,
            // Done before the fork, on a detached copy of the source (see crate::idmap).
            "idmap" | "ridmap" => continue,
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags.insert(set);
        o.flags.remove(clear);
    }
    Ok(o)
}

/// Parses `rootfsPropagation` (default `rslave`).
pub(crate) fn parse_propagation(p: Option<&str>) -> CResult<MsFlags> {
    Ok(match p.unwrap_or("") {
        "" | "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => return Err(format!("unknown rootfsPropagation {other:?}")),
    })
}

/// Resolves `path` inside `root` as if `root` were `/`: `..` stops at the root and
/// symlinks (absolute or relative) are expanded relative to it. Missing components are
/// kept as they are. The result is always under `root`.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> CResult<PathBuf> {
    let mut rel = PathBuf::new();
    let mut queue: VecDeque<PathBuf> = path
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut links = 0;
    while let Some(comp) = queue.pop_front() {
        match comp.components().next() {
            None | Some(Component::RootDir) | Some(Component::CurDir) => continue,
            Some(Component::ParentDir) => {
                rel.pop();
                continue;
            }
            Some(Component::Prefix(_)) => continue,
            Some(Component::Normal(_)) => {}
        }
        let candidate = rel.join(&comp);
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(format!(
                        "resolve {} in rootfs: too many symlinks",
                        path.display()
                    ));
                }
                let target = fs::read_link(&full).ctx(|| format!("readlink {}", full.display()))?;
                if target.is_absolute() {
                    rel = PathBuf::new();
                }
                for (i, c) in target.components().enumerate() {
                    queue.insert(i, PathBuf::from(c.as_os_str()));
                }
            }
            _ => rel = candidate,
        }
    }
    Ok(root.join(rel))
}

/// Makes the mount tree private to the container and turns the rootfs into a mount point.
pub(crate) fn prepare_root(rootfs: &Path, propagation: MsFlags) -> CResult<()> {
    // Never let our mounts propagate back to the host while we build the tree: the
    // requested propagation is applied to / again after pivot_root.
    let initial = if propagation.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        propagation
    };
    mount(None::<&str>, "/", None::<&str>, initial, None::<&str>)
        .ctx(|| "set propagation of / in the container mount namespace".into())?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind rootfs {}", rootfs.display()))
}

/// Where the container's cgroups are, for a `cgroup` mount.
#[derive(Debug, Clone, Default)]
pub(crate) struct CgroupMounts {
    /// cgroup v2 only: mount `cgroup2` (new cgroup ns) or bind the container's dir.
    pub unified_only: bool,
    /// (directory name under the mount, host directory of the container's cgroup).
    pub dirs: Vec<(String, PathBuf)>,
}

/// Performs one entry of `mounts`; `idmapped` is the entry's prepared idmapped copy of
/// its source (see [`crate::idmap`]), attached instead of a plain bind mount.
pub(crate) fn mount_entry(
    rootfs: &Path,
    bundle: &Path,
    m: &Mount,
    cg: &CgroupMounts,
    new_cgroupns: bool,
    idmapped: Option<std::os::fd::BorrowedFd<'_>>,
) -> CResult<()> {
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or_default())?;
    let dest = resolve_in_root(rootfs, m.destination())?;
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let show = || m.destination().display().to_string();
    if typ == "bind" || opts.bind {
        let src = match m.source() {
            Some(s) if s.is_absolute() => s.clone(),
            Some(s) => bundle.join(s),
            None => return Err(format!("bind mount {} has no source", show())),
        };
        let meta = fs::metadata(&src).ctx(|| format!("bind mount source {}", src.display()))?;
        create_target(&dest, meta.is_dir())
            .ctx(|| format!("create mount point {}", dest.display()))?;
        let rec = opts.flags & MsFlags::MS_REC;
        match idmapped {
            Some(tree) => crate::idmap::attach(tree, &dest)
                .ctx(|| format!("attach the idmapped {} on {}", src.display(), show()))?,
            None => mount(
                Some(&src),
                &dest,
                None::<&str>,
                MsFlags::MS_BIND | rec,
                None::<&str>,
            )
            .ctx(|| format!("bind {} on {}", src.display(), show()))?,
        }
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            remount_bind(&dest, extra).ctx(|| format!("remount {} with its options", show()))?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        mount_cgroup(&dest, &opts, cg, new_cgroupns || typ == "cgroup2")
            .ctx(|| format!("mount cgroups on {}", show()))?;
    } else {
        if typ.is_empty() {
            return Err(format!("mount {} has no type", show()));
        }
        create_target(&dest, true).ctx(|| format!("create mount point {}", dest.display()))?;
        let src = m
            .source()
            .as_ref()
            .map(|s| s.as_os_str())
            .unwrap_or(OsStr::new(typ));
        let r = mount(Some(src), &dest, Some(typ), opts.flags, data);
        match r {
            Err(Errno::EPERM) if typ == "sysfs" || typ == "mqueue" => {
                // Without a network (or ipc) namespace owned by our user namespace the
                // kernel refuses a fresh instance: show the host's, read-only for sysfs.
                let host = if typ == "sysfs" {
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                mount(
                    Some(host),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .ctx(|| format!("bind {host} on {}", show()))?;
                let flags = opts.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                remount_bind(&dest, flags).ctx(|| format!("remount {}", show()))?;
            }
            r => r.ctx(|| format!("mount {typ} on {}", show()))?,
        }
    }
    for p in &opts.propagation {
        mount(None::<&str>, &dest, None::<&str>, *p, None::<&str>)
            .ctx(|| format!("set propagation of {}", show()))?;
    }
    Ok(())
}

/// Creates a mount point: a directory, or an empty file for a file bind mount.
fn create_target(dest: &Path, dir: bool) -> std::io::Result<()> {
    if dir {
        return fs::create_dir_all(dest);
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::symlink_metadata(dest) {
        Ok(_) => Ok(()),
        Err(_) => fs::File::create(dest).map(drop),
    }
}

/// Remounts a bind mount with `flags`; when the kernel refuses (flags locked by a user
/// namespace), retries keeping the flags the mount already has.
pub(crate) fn remount_bind(path: &Path, flags: MsFlags) -> nix::Result<()> {
    let base = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    match mount(None::<&str>, path, None::<&str>, base | flags, None::<&str>) {
        Err(Errno::EPERM) => {
            let st = nix::sys::statvfs::statvfs(path)?;
            let f = st.flags();
            use nix::sys::statvfs::FsFlags;
            let mut keep = MsFlags::empty();
            for (s, m) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
                (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            ] {
                if f.contains(s) {
                    keep |= m;
                }
            }
            mount(
                None::<&str>,
                path,
                None::<&str>,
                base | flags | keep,
                None::<&str>,
            )
        }
        r => r,
    }
}

/// Mounts the container's cgroups: `cgroup2` on a pure v2 host, else a tmpfs holding a
/// bind of the container's directory in each hierarchy.
fn mount_cgroup(dest: &Path, opts: &MountOpts, cg: &CgroupMounts, new_ns: bool) -> CResult<()> {
    fs::create_dir_all(dest).ctx(|| format!("mkdir {}", dest.display()))?;
    let flags = opts.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if cg.unified_only {
        if new_ns {
            return mount(Some("cgroup2"), dest, Some("cgroup2"), flags, None::<&str>)
                .ctx(|| "mount cgroup2".into());
        }
        if let Some((_, host)) = cg.dirs.first() {
            mount(
                Some(host),
                dest,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| format!("bind {}", host.display()))?;
            return remount_bind(dest, flags).ctx(|| "remount cgroup".into());
        }
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        dest,
        Some("tmpfs"),
        flags - MsFlags::MS_RDONLY,
        Some("mode=755"),
    )
    .ctx(|| "mount tmpfs".into())?;
    for (name, host) in &cg.dirs {
        let sub = dest.join(name);
        fs::create_dir_all(&sub).ctx(|| format!("mkdir {}", sub.display()))?;
        mount(
            Some(host),
            &sub,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| format!("bind {}", host.display()))?;
        remount_bind(&sub, flags).ctx(|| format!("remount {}", sub.display()))?;
        if name.contains(',') {
            for part in name.split(',') {
                let _ = symlink(name, dest.join(part));
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            MsFlags::MS_REMOUNT | flags,
            Some("mode=755"),
        )
        .ctx(|| "remount cgroup tmpfs read-only".into())?;
    }
    Ok(())
}

/// The devices every container gets: (path, major, minor).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// The default devices as cgroup allow rules: (major, minor).
pub(crate) fn default_device_numbers() -> impl Iterator<Item = (i64, i64)> {
    DEFAULT_DEVICES.iter().map(|d| (d.1 as i64, d.2 as i64))
}

/// Creates the default devices and `linux.devices` under `rootfs/dev`, with mknod or,
/// where mknod is not permitted (user namespaces), a bind mount of the host's node.
pub(crate) fn create_devices(rootfs: &Path, devices: &[LinuxDevice]) -> CResult<()> {
    for (path, major, minor) in DEFAULT_DEVICES {
        make_device(
            rootfs,
            Path::new(path),
            SFlag::S_IFCHR,
            *major,
            *minor,
            0o666,
            None,
            None,
        )?;
    }
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(format!(
                    "device {}: type 'a' is only valid in cgroup rules",
                    d.path().display()
                ))
            }
        };
        if !d.path().starts_with("/dev") {
            return Err(format!("device {} is not under /dev", d.path().display()));
        }
        make_device(
            rootfs,
            d.path(),
            kind,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            d.uid(),
            d.gid(),
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn make_device(
    rootfs: &Path,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> CResult<()> {
    let dest = resolve_in_root(rootfs, path)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
    }
    if fs::symlink_metadata(&dest).is_ok() {
        let _ = fs::remove_file(&dest);
    }
    let perm = Mode::from_bits_truncate(mode & 0o7777);
    match mknod(&dest, kind, perm, makedev(major, minor)) {
        Ok(()) => {
            // mknod applies the umask; set the exact mode.
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o7777))
                .ctx(|| format!("chmod {}", dest.display()))?;
            if uid.is_some() || gid.is_some() {
                nix::unistd::chown(
                    &dest,
                    uid.map(nix::unistd::Uid::from_raw),
                    gid.map(nix::unistd::Gid::from_raw),
                )
                .ctx(|| format!("chown {}", dest.display()))?;
            }
            Ok(())
        }
        Err(Errno::EPERM) => {
            fs::File::create(&dest).ctx(|| format!("create {}", dest.display()))?;
            mount(
                Some(path),
                &dest,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| format!("bind device {}", path.display()))
        }
        Err(e) => Err(format!("mknod {}: {e}", dest.display())),
    }
}

/// The standard `/dev` symlinks (fd, stdin, stdout, stderr, core, ptmx).
pub(crate) fn dev_symlinks(rootfs: &Path) -> CResult<()> {
    let dev = resolve_in_root(rootfs, Path::new("/dev"))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (to, name) in links {
        match symlink(to, dev.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("symlink /dev/{name}: {e}")),
        }
    }
    let ptmx = dev.join("ptmx");
    if dev.join("pts/ptmx").exists() {
        if fs::symlink_metadata(&ptmx).is_ok() {
            let _ = fs::remove_file(&ptmx);
        }
        symlink("pts/ptmx", &ptmx).ctx(|| "symlink /dev/ptmx".into())?;
    }
    Ok(())
}

/// Makes `rootfs` the root: `pivot_root` (detaching the old root) or, with `no_pivot` or
/// when the current root cannot be pivoted (ramfs), `MS_MOVE` + `chroot`.
pub(crate) fn enter_root(rootfs: &Path, no_pivot: bool) -> CResult<()> {
    if !no_pivot {
        match pivot(rootfs) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) => {}
            Err(e) => return Err(format!("pivot_root to {}: {e}", rootfs.display())),
        }
    }
    chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
    mount(
        Some(rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .ctx(|| "move rootfs to /".into())?;
    chroot(".").ctx(|| "chroot".into())?;
    chdir("/").ctx(|| "chdir /".into())
}

fn pivot(rootfs: &Path) -> nix::Result<()> {
    let old = fs::File::open("/").map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    let new = fs::File::open(rootfs).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    fchdir(new.as_fd())?;
    pivot_root(".", ".")?;
    fchdir(old.as_fd())?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )?;
    umount2(".", MntFlags::MNT_DETACH)?;
    chdir("/")
}

/// Hides `maskedPaths`: /dev/null over files, an empty read-only tmpfs over directories.
/// Missing paths are skipped. Runs after `pivot_root`.
pub(crate) fn mask_paths(paths: &[String]) -> CResult<()> {
    for p in paths {
        let r = match fs::metadata(p) {
            Ok(m) if m.is_dir() => mount(
                Some("tmpfs"),
                p.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            ),
            Ok(_) => mount(
                Some("/dev/null"),
                p.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
            Err(_) => continue,
        };
        r.ctx(|| format!("mask {p}"))?;
    }
    Ok(())
}

/// Makes `readonlyPaths` read-only bind mounts of themselves. Runs after `pivot_root`.
pub(crate) fn readonly_paths(paths: &[String]) -> CResult<()> {
    for p in paths {
        if fs::symlink_metadata(p).is_err() {
            continue;
        }
        mount(
            Some(p.as_str()),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| format!("bind {p} read-only"))?;
        remount_bind(
            Path::new(p),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )
        .ctx(|| format!("remount {p} read-only"))?;
    }
    Ok(())
}

/// Writes `linux.sysctl` under /proc/sys. Runs after `pivot_root`.
pub(crate) fn sysctls(map: &std::collections::HashMap<String, String>) -> CResult<()> {
    for (k, v) in map {
        if k.contains("..") || k.starts_with('/') {
            return Err(format!("invalid sysctl name {k:?}"));
        }
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        fs::write(&path, v).ctx(|| format!("set sysctl {k}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let o = parse_options(&[
            "rbind".into(),
            "ro".into(),
            "nosuid".into(),
            "rprivate".into(),
            "mode=755".into(),
        ])
        .unwrap();
        assert!(o.bind);
        assert!(o.flags.contains(
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        ));
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, vec!["mode=755".to_string()]);
        let o = parse_options(&["ro".into(), "rw".into()]).unwrap();
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        let o = parse_options(&["idmap".into(), "ridmap".into()]).unwrap();
        assert!(o.data.is_empty() && o.flags.is_empty(), "{o:?}");
    }

    #[test]
    fn resolve_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("a/rel")).unwrap();
        symlink("b", root.join("a/inner")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/a/rel")).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../a/inner/c")).unwrap(),
            root.join("a/b/c")
        );
        symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_in_root(root, Path::new("/loop")).is_err());
    }
}
