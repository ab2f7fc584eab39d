//! Cgroup v1, v2 and hybrid management for containers.
//!
//! # Model
//!
//! A host mounts one or more cgroup *hierarchies* (found in `/proc/self/mountinfo`):
//!
//! * **v1**: one `cgroup` mount per controller group (`cpu`, `memory`, `name=systemd`, ...);
//! * **v2** (unified): a single `cgroup2` mount holding every controller; a controller is
//!   usable in a cgroup only when enabled in each ancestor's `cgroup.subtree_control`;
//! * **hybrid**: v1 mounts plus a `cgroup2` mount (often `/sys/fs/cgroup/unified`) that
//!   holds the controllers not bound to v1 (possibly none).
//!
//! A [`Cgroup`] is one container's cgroup: the same relative path created in *every*
//! hierarchy. Each resource is written to the hierarchy that owns its controller, in that
//! hierarchy's file format, so hybrid hosts work without special cases (e.g. memory on v1
//! and hugetlb on v2). Missing controllers are an error only when a resource needs them.

#![warn(missing_docs)]

mod apply;
mod bpf;
mod error;
mod mountinfo;
mod paths;
mod stats;
mod warm;

use std::fs;
use std::io::{ErrorKind as IoKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use error::{CgroupError, Result};
pub use stats::{BlkioStats, CpuStats, MemoryStats, PidsStats, Stats};
pub use warm::{own_procs_file, take_attach_lock, warm_in_child, AttachWarmer, ChildWarmup};

/// How the host mounts its cgroup hierarchies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only cgroup v1 hierarchies.
    V1,
    /// Only the unified cgroup2 hierarchy.
    V2,
    /// v1 hierarchies plus a cgroup2 mount.
    Hybrid,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where the hierarchy is mounted (e.g. `/sys/fs/cgroup/memory`).
    pub mountpoint: PathBuf,
    /// Its controllers: for v1 from the mount options (including `name=systemd` style
    /// named hierarchies), for v2 from the root's `cgroup.controllers`.
    pub controllers: Vec<String>,
    /// Whether this is a cgroup2 (unified) hierarchy.
    pub v2: bool,
}

impl Hierarchy {
    /// Whether this hierarchy holds `controller`.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The host's cgroup mode, from the mounted hierarchies. A host with no cgroup mounts at
/// all (or an unreadable mountinfo) reports [`Mode::V1`].
pub fn mode() -> Mode {
    match hierarchies() {
        Ok(h) => mode_of(&h),
        Err(_) => Mode::V1,
    }
}

fn mode_of(h: &[Hierarchy]) -> Mode {
    let v2 = h.iter().any(|h| h.v2);
    let v1 = h.iter().any(|h| !h.v2);
    match (v1, v2) {
        (true, true) => Mode::Hybrid,
        (false, true) => Mode::V2,
        _ => Mode::V1,
    }
}

/// A mounted hierarchy plus what is needed to place paths in it.
#[derive(Debug, Clone)]
struct Mounted {
    hierarchy: Hierarchy,
    /// The mount's root inside the hierarchy (`/` unless the mount is a sub-tree).
    root: String,
}

const MOUNTINFO: &str = "/proc/self/mountinfo";
const PROC_CGROUP: &str = "/proc/self/cgroup";

fn mounted() -> Result<Vec<Mounted>> {
    let text = read(Path::new(MOUNTINFO))?;
    let mut out = Vec::new();
    for m in mountinfo::parse_mountinfo(&text) {
        let controllers = if m.v2 {
            let f = m.mountpoint.join("cgroup.controllers");
            read(&f)?.split_whitespace().map(str::to_string).collect()
        } else {
            m.controllers.clone()
        };
        out.push(Mounted {
            hierarchy: Hierarchy {
                mountpoint: m.mountpoint,
                controllers,
                v2: m.v2,
            },
            root: m.root,
        });
    }
    if out.is_empty() {
        return Err(CgroupError::NoHierarchies);
    }
    Ok(out)
}

/// All cgroup hierarchies mounted in this process's mount namespace, one per hierarchy.
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    Ok(mounted()?.into_iter().map(|m| m.hierarchy).collect())
}

/// One container's cgroup, present at the same path in every hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: String,
    dirs: Vec<(Hierarchy, PathBuf)>,
}

/// The parent of an absolute cgroup path (`/` for `/` and top-level cgroups).
fn parent_cg(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Join a cgroup path (absolute or relative, `/`-separated) onto a directory.
fn join_cg(base: &Path, rel: &str) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
    }
    p
}

impl Cgroup {
    /// Resolve the OCI `cgroupsPath` of container `id` on this host (see the module
    /// docs of the path rules: absolute, relative to the caller's cgroup (on cgroup2 to
    /// its parent, which can delegate every controller), default `/berth/<id>`, or
    /// `slice:prefix:name` when `systemd`). Touches nothing on disk.
    pub fn new(cgroups_path: Option<&str>, id: &str, systemd: bool) -> Result<Cgroup> {
        let path = paths::resolve(cgroups_path, id, systemd)?;
        let mounts = mounted()?;
        let procs = if path.starts_with('/') {
            Vec::new()
        } else {
            mountinfo::parse_proc_cgroup(&read(Path::new(PROC_CGROUP))?)
        };
        let mut dirs = Vec::new();
        for m in mounts {
            let dir = if path.starts_with('/') {
                join_cg(&m.hierarchy.mountpoint, &path)
            } else {
                let mi = mountinfo::CgroupMount {
                    mountpoint: m.hierarchy.mountpoint.clone(),
                    root: m.root.clone(),
                    v2: m.hierarchy.v2,
                    controllers: m.hierarchy.controllers.clone(),
                };
                let cur = mountinfo::current_path(&mi, &procs).unwrap_or("/");
                // On cgroup2 the caller's own cgroup holds the caller, and the "no internal
                // processes" rule keeps its domain controllers (memory, io, hugetlb) from
                // being enabled for a child: nest under its parent instead (as runc does).
                let cur = if m.hierarchy.v2 { parent_cg(cur) } else { cur };
                // The mount may expose only a sub-tree of the hierarchy.
                let cur = cur.strip_prefix(m.root.as_str()).unwrap_or(cur);
                join_cg(&join_cg(&m.hierarchy.mountpoint, cur), &path)
            };
            dirs.push((m.hierarchy, dir));
        }
        Ok(Cgroup { path, dirs })
    }

    /// The resolved cgroups path: absolute (from each hierarchy's root) or relative to
    /// the creating process's cgroup, normalised (no `.`/empty components).
    pub fn relative_path(&self) -> &str {
        &self.path
    }

    /// This cgroup's directory in hierarchy `h` (matched by mountpoint), if `h` is one of
    /// the hierarchies it was resolved against.
    pub fn path_in(&self, h: &Hierarchy) -> Option<PathBuf> {
        self.dirs
            .iter()
            .find(|(hh, _)| hh.mountpoint == h.mountpoint)
            .map(|(_, d)| d.clone())
    }

    /// The hierarchies this cgroup spans, with its directory in each.
    pub fn dirs(&self) -> impl Iterator<Item = (&Hierarchy, &Path)> {
        self.dirs.iter().map(|(h, d)| (h, d.as_path()))
    }

    /// The hierarchy owning `controller`, and this cgroup's directory in it.
    pub(crate) fn controller_dir(&self, controller: &str) -> Option<(&Hierarchy, &Path)> {
        self.dirs().find(|(h, _)| h.has(controller))
    }

    pub(crate) fn v2_dir(&self) -> Option<&Path> {
        self.dirs().find(|(h, _)| h.v2).map(|(_, d)| d)
    }

    /// Create the cgroup directory in every hierarchy (and missing parents). On v1
    /// cpuset, empty `cpuset.cpus`/`cpuset.mems` are copied from the parent at each level;
    /// on v2, every controller available in an ancestor is enabled in its
    /// `cgroup.subtree_control` (failures there only mean the controller stays
    /// unavailable, reported later if a resource needs it). Idempotent.
    ///
    /// A parent shared with other containers may be removed by someone else (the last
    /// user cleaning up) between its creation and the child's: the path is then walked
    /// again from the top (up to 50 times) before `ENOENT` (or `ENODEV`, a file of a
    /// removed cgroup) is an error.
    pub fn create(&self) -> Result<()> {
        const ATTEMPTS: usize = 50;
        for (h, dir) in self.dirs() {
            let mut attempt = 1;
            loop {
                match create_in(h, dir) {
                    Err(e) if vanished(&e) && attempt < ATTEMPTS => attempt += 1,
                    r => break r?,
                }
            }
        }
        Ok(())
    }

    /// Apply `r` to the cgroup (which must exist). Each resource is written to the
    /// hierarchy owning its controller; a missing controller is an error only when the
    /// resource is requested (network priorities are ignored when not mounted). Values
    /// out of range are [`CgroupError::InvalidValue`]; values the kernel rejects come back
    /// as [`CgroupError::Write`] (kind InvalidArgument for `EINVAL`). `0` means "unset"
    /// for limits that cannot be zero, `-1` unlimited.
    ///
    /// | OCI field | v1 file | v2 file |
    /// |---|---|---|
    /// | memory.limit | memory.limit_in_bytes | memory.max |
    /// | memory.reservation | memory.soft_limit_in_bytes | memory.low |
    /// | memory.swap (memory+swap) | memory.memsw.limit_in_bytes | memory.swap.max (= swap − limit) |
    /// | memory.swappiness | memory.swappiness | unsupported (error) |
    /// | memory.disableOOMKiller | memory.oom_control | ignored (no v2 equivalent) |
    /// | memory.kernel, kernelTCP | ignored | ignored |
    /// | cpu.shares | cpu.shares | cpu.weight (1 + (shares−2)·9999/262142) |
    /// | cpu.quota/period | cpu.cfs_quota_us / cpu.cfs_period_us | cpu.max |
    /// | cpu.burst | cpu.cfs_burst_us | cpu.max.burst |
    /// | cpu.realtime* | cpu.rt_runtime_us / cpu.rt_period_us | unsupported (error) |
    /// | cpu.idle | cpu.idle | cpu.idle |
    /// | cpu.cpus/mems | cpuset.cpus / cpuset.mems | same |
    /// | pids.limit | pids.max | pids.max |
    /// | blockIO.weight, weightDevice | blkio.weight(_device) or blkio.bfq.* | io.weight or io.bfq.weight |
    /// | blockIO.throttle* | blkio.throttle.* | io.max |
    /// | hugepageLimits | hugetlb.SIZE.limit_in_bytes | hugetlb.SIZE.max |
    /// | devices | devices.deny / devices.allow | a `BPF_PROG_TYPE_CGROUP_DEVICE` program (also on hybrid hosts without v1 devices) |
    /// | network | net_cls.classid, net_prio.ifpriomap (ignored if not mounted) | ignored |
    /// | rdma | rdma.max | rdma.max |
    /// | unified | error unless a cgroup2 hierarchy exists | written as files |
    pub fn apply(&self, r: &oci_spec::runtime::LinuxResources) -> Result<()> {
        apply::apply(self, r)
    }

    /// Move process `pid` into this cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        if pid <= 0 {
            return Err(CgroupError::InvalidValue {
                what: "pid".into(),
                reason: format!("{pid} is not a process id"),
            });
        }
        for (_, dir) in self.dirs() {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in this cgroup and its descendants, read from the `pids` or
    /// `freezer` hierarchy (v1) or the unified one, sorted. A cgroup that does not exist
    /// has no processes.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = ["pids", "freezer", "memory"]
            .iter()
            .find_map(|c| self.controller_dir(c).filter(|(h, _)| !h.v2))
            .map(|(_, d)| d)
            .or_else(|| self.v2_dir())
            .or_else(|| self.dirs().next().map(|(_, d)| d));
        let Some(dir) = dir else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        collect_pids(dir, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Freeze every process of the cgroup and wait until the kernel reports it frozen
    /// (v1 `freezer.state`, else v2 `cgroup.freeze`/`cgroup.events`).
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Thaw the cgroup and wait until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        if let Some((_, dir)) = self.controller_dir("freezer").filter(|(h, _)| !h.v2) {
            return freeze_v1(dir, frozen);
        }
        if let Some(dir) = self.v2_dir() {
            return freeze_v2(dir, frozen);
        }
        Err(CgroupError::ControllerMissing {
            controller: "freezer".into(),
        })
    }

    /// Send `sig` to every process in the cgroup. SIGKILL on a cgroup2 hierarchy with
    /// `cgroup.kill` uses it (atomic, covers forks in flight); otherwise each pid is
    /// signalled, ignoring processes that already exited.
    pub fn kill_all(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        if sig == nix::sys::signal::Signal::SIGKILL {
            if let Some(dir) = self.v2_dir() {
                let f = dir.join("cgroup.kill");
                if f.exists() && dir.join("cgroup.procs").exists() {
                    write(&f, "1")?;
                    // In hybrid mode the v1 view is authoritative for membership; fall
                    // through to signal anything the unified hierarchy did not hold.
                }
            }
        }
        for pid in self.pids()? {
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(source) => return Err(CgroupError::Signal { pid, source }),
            }
        }
        Ok(())
    }

    /// Remove the cgroup (and any sub-cgroups the container created) from every
    /// hierarchy, retrying briefly while the kernel still reports it busy. A cgroup that
    /// is already gone is not an error. The processes must have exited.
    pub fn destroy(&self) -> Result<()> {
        for (_, dir) in self.dirs() {
            remove_tree(dir)?;
        }
        Ok(())
    }

    /// How many times the OOM killer killed a process of this cgroup (v2
    /// `memory.events` `oom_kill`, v1 `memory.oom_control` `oom_kill`).
    pub fn oom_kill_count(&self) -> Result<u64> {
        let Some((h, dir)) = self.controller_dir("memory") else {
            return Err(CgroupError::ControllerMissing {
                controller: "memory".into(),
            });
        };
        let file = if h.v2 {
            dir.join("memory.events")
        } else {
            dir.join("memory.oom_control")
        };
        let text = read(&file)?;
        Ok(flat_keyed(&text, "oom_kill").unwrap_or(0))
    }

    /// Resource usage of the cgroup (for `docker stats`). Fields whose controller is
    /// missing are left at their defaults.
    pub fn stats(&self) -> Result<Stats> {
        stats::collect(self)
    }
}

/// Whether `e` says that a cgroup directory went away while it was being set up.
fn vanished(e: &CgroupError) -> bool {
    let source = match e {
        CgroupError::Create { source, .. }
        | CgroupError::Read { source, .. }
        | CgroupError::Write { source, .. } => source,
        _ => return false,
    };
    source.kind() == IoKind::NotFound || source.raw_os_error() == Some(libc::ENODEV)
}

/// Create `dir` and its missing parents in hierarchy `h` (see [`Cgroup::create`]).
fn create_in(h: &Hierarchy, dir: &Path) -> Result<()> {
    let rel = dir.strip_prefix(&h.mountpoint).unwrap_or(dir);
    let mut cur = h.mountpoint.clone();
    if h.v2 {
        enable_subtree(&cur);
    }
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let parent = cur.clone();
        cur.push(c);
        match fs::create_dir(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == IoKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Create { path: cur, source });
            }
        }
        if !h.v2 && h.has("cpuset") {
            copy_cpuset(&parent, &cur)?;
        }
        if h.v2 && i + 1 < comps.len() {
            enable_subtree(&cur);
        }
    }
    Ok(())
}

/// Value of `key` in a flat-keyed file (`key value` per line).
pub(crate) fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        if it.next()? == key {
            it.next()?.parse().ok()
        } else {
            None
        }
    })
}

pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Write `value` to a cgroup file in one `write(2)` (cgroup files parse per write). The
/// file is opened like the shell's `>` does (`O_TRUNC` is meaningless on cgroupfs but
/// keeps plain-file fakes in tests exact).
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// Enable in `dir`'s `cgroup.subtree_control` every controller listed in its
/// `cgroup.controllers`. Best effort: a controller that cannot be enabled (busy cgroup
/// with processes, threaded mode) simply stays unavailable below.
fn enable_subtree(dir: &Path) {
    let Ok(avail) = fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    let Ok(enabled) = fs::read_to_string(dir.join("cgroup.subtree_control")) else {
        return;
    };
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<&str> = avail
        .split_whitespace()
        .filter(|c| !enabled.contains(c))
        .collect();
    if missing.is_empty() {
        return;
    }
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    let f = dir.join("cgroup.subtree_control");
    if write(&f, &all.join(" ")).is_err() {
        for c in all {
            let _ = write(&f, &c);
        }
    }
}

fn copy_cpuset(parent: &Path, dir: &Path) -> Result<()> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(f);
        if !own.exists() {
            continue;
        }
        if read(&own)?.trim().is_empty() {
            let v = read(&parent.join(f))?;
            let v = v.trim();
            if !v.is_empty() {
                write(&own, v)?;
            }
        }
    }
    Ok(())
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let text = match fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(t) => t,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.join("cgroup.procs"),
                source,
            })
        }
    };
    for l in text.lines() {
        let pid = l.trim().parse().map_err(|_| CgroupError::Parse {
            path: dir.join("cgroup.procs"),
            reason: format!("{l:?} is not a pid"),
        })?;
        out.push(pid);
    }
    for sub in subdirs(dir)? {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    Ok(rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect())
}

fn remove_tree(dir: &Path) -> Result<()> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut delay = Duration::from_millis(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == IoKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

fn freeze_v1(dir: &Path, frozen: bool) -> Result<()> {
    let f = dir.join("freezer.state");
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        // Re-writing FROZEN nudges tasks that were forking while the freeze started.
        write(&f, want)?;
        for _ in 0..10 {
            if read(&f)?.trim() == want {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if Instant::now() >= deadline {
            if frozen {
                let _ = write(&f, "THAWED");
            }
            return Err(CgroupError::Timeout {
                what: format!("freezer.state {want}"),
                path: dir.to_path_buf(),
            });
        }
    }
}

fn freeze_v2(dir: &Path, frozen: bool) -> Result<()> {
    let f = dir.join("cgroup.freeze");
    if !f.exists() {
        return Err(CgroupError::Unsupported {
            what: "cgroup.freeze".into(),
        });
    }
    write(&f, if frozen { "1" } else { "0" })?;
    let want = u64::from(frozen);
    let events = dir.join("cgroup.events");
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        if flat_keyed(&read(&events)?, "frozen") == Some(want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            if frozen {
                let _ = write(&f, "0");
            }
            return Err(CgroupError::Timeout {
                what: format!("cgroup.events frozen {want}"),
                path: dir.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod kernel_tests;

#[cfg(test)]
mod fake_tests;
