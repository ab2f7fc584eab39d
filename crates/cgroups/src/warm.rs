//! Starting the kernel's cgroup-attach grace period before a container needs it.
//!
//! # Model
//!
//! Every write of a pid to a `cgroup.procs` file (v1 or v2) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing. It is a per-cpu rwsem: its readers (every
//! fork, exit and exec on the host) take a fast path, and a writer first switches them
//! to the slow path with `rcu_sync_enter`, which waits for a whole RCU grace period
//! unless the switch is already on. The switch stays on while writers come and for one
//! more grace period after the last one left. So the first cgroup join after a quiet
//! spell (a container's init joining its cgroups, on every hierarchy) waits a grace
//! period: 6–16 ms measured on this HZ=250 host, the largest single cost of a container
//! start, while a join within a grace period of another takes 0.1 ms. (A host whose
//! cgroup mount has `favordynmods` keeps the switch on for good and never waits.)
//!
//! [`AttachWarmer`] starts that grace period early, while the rest of a container's
//! start (its record, root filesystem, namespaces, spec, monitor) is still under way:
//! the engine calls [`AttachWarmer::kick`] when a create, start or exec request arrives,
//! and a thread of the warmer writes this process's own pid to the `cgroup.procs` of
//! the cgroup it is in. That migrates nothing (the process is already there) but takes
//! the lock, so the grace period runs in the background and the container's join finds
//! the switch on. Kicks that arrive while a warm-up waits are merged into it. For
//! `HOLD` (100 ms) after the last kick the thread takes the lock again every `PERIOD`
//! (4 ms), each time without waiting, which keeps the switch on however long the
//! start takes to reach its join. (Meanwhile forks and exits on the host take the
//! readers' slow path, an atomic operation instead of a per-cpu one.)
//!
//! The warm-up re-reads `/proc/self/cgroup` each time, so a process moved to another
//! cgroup by its manager stays where it was moved (the window is the microseconds
//! between that read and the write). The cgroup mounts it resolves that against are read
//! once, when the warmer starts, and again only when the file they give does not exist:
//! `/proc/self/mountinfo` grows with every container's mounts in the daemon's namespace,
//! and reading it at each of the warm-ups a busy daemon does cost ~1.5 ms of CPU per
//! container start (perf: `show_mountinfo` under the warmer, 3 % of all samples), where
//! the write itself costs 4 µs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::mountinfo::{self, CgroupMount};
use crate::{join_cg, mounted, read, write, CgroupError, Mounted, Result, PROC_CGROUP};

/// The `cgroup.procs` file of the cgroup this process is in, in the first mounted
/// hierarchy where that cgroup is visible (a mount that exposes only a sub-tree may not
/// show it).
pub fn own_procs_file() -> Result<PathBuf> {
    own_procs_file_in(&mounted()?)
}

/// [`own_procs_file`] against a list of the cgroup mounts read before.
fn own_procs_file_in(mounts: &[Mounted]) -> Result<PathBuf> {
    let procs = mountinfo::parse_proc_cgroup(&read(Path::new(PROC_CGROUP))?);
    for m in mounts {
        let mi = CgroupMount {
            mountpoint: m.hierarchy.mountpoint.clone(),
            root: m.root.clone(),
            v2: m.hierarchy.v2,
            controllers: m.hierarchy.controllers.clone(),
        };
        let Some(cur) = mountinfo::current_path(&mi, &procs) else {
            continue;
        };
        let rel = if m.root == "/" {
            Some(cur)
        } else {
            cur.strip_prefix(m.root.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))
        };
        if let Some(rel) = rel {
            let file = join_cg(&m.hierarchy.mountpoint, rel).join("cgroup.procs");
            if file.exists() {
                return Ok(file);
            }
        }
    }
    Err(CgroupError::NoHierarchies)
}

/// Takes the cgroup attach lock once: writes this process's pid to the `cgroup.procs`
/// of its own cgroup (found afresh). Blocks for the rest of the grace period when the
/// readers' switch was off; returns at once when it was on.
pub fn take_attach_lock() -> Result<()> {
    let file = own_procs_file()?;
    write(&file, &std::process::id().to_string())
}

/// [`take_attach_lock`] for the warmer's thread: against the cgroup mounts in `mounts`,
/// read again (into it) only when they do not give an existing `cgroup.procs`.
fn take_attach_lock_cached(mounts: &mut Option<Vec<Mounted>>) -> Result<()> {
    let file = match mounts.as_deref().map(own_procs_file_in) {
        Some(Ok(f)) => f,
        _ => {
            let fresh = mounted()?;
            let f = own_procs_file_in(&fresh);
            *mounts = Some(fresh);
            f?
        }
    };
    write(&file, &std::process::id().to_string())
}

/// A one-shot warm-up for a short-lived process (`berth-runtime`'s `create`, `run` and
/// `exec`, which join a process to its cgroups a few milliseconds after they start): a forked child writes `0` (itself) to the `cgroup.procs` of the
/// cgroup it shares with its parent, which migrates nothing and starts the grace period
/// at once, then exits. The parent goes on without waiting; [`ChildWarmup`] reaps the
/// child when dropped (by then the grace period the join waited for is over too). A
/// child rather than a thread: the runtime forks its container processes, and those
/// allocate after the fork, which a second thread holding an allocator lock at that
/// moment would deadlock.
///
/// Returns `None` where there is nothing to warm (no cgroup mount shows this process,
/// or the fork fails): the join then waits as it would have.
pub fn warm_in_child() -> Option<ChildWarmup> {
    use std::os::unix::ffi::OsStrExt;
    let file = own_procs_file().ok()?;
    let path = std::ffi::CString::new(file.as_os_str().as_bytes()).ok()?;
    // SAFETY: the child only makes async-signal-safe calls (open, write, _exit) on
    // memory prepared before the fork, which is sound whatever other threads the parent
    // has; the parent only records the pid.
    match unsafe { libc::fork() } {
        0 => unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
            }
            libc::_exit(0)
        },
        pid if pid > 0 => Some(ChildWarmup { pid }),
        _ => None,
    }
}

/// The child of [`warm_in_child`]; reaped on drop.
#[derive(Debug)]
pub struct ChildWarmup {
    pid: libc::pid_t,
}

impl Drop for ChildWarmup {
    fn drop(&mut self) {
        let mut status = 0;
        // SAFETY: waits for our own child by pid; `status` is a valid out-pointer.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// How long after the last kick the warmer keeps the readers' switch on.
const HOLD: Duration = Duration::from_millis(100);
/// How often it takes the lock meanwhile: well inside one grace period (the switch
/// stays on for at least one after the last writer, 10-20 ms measured here), so it
/// never goes off; each of these takes the lock without waiting.
const PERIOD: Duration = Duration::from_millis(4);

#[derive(Default)]
struct State {
    /// A warm-up was asked for and has not started yet.
    pending: bool,
    /// When the last kick came.
    last_kick: Option<Instant>,
    /// The warmer was dropped: the thread ends.
    stopped: bool,
    /// Warm-ups done (for tests).
    done: u64,
}

/// A thread that takes the cgroup attach lock when kicked (see the module docs).
pub struct AttachWarmer {
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl std::fmt::Debug for AttachWarmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachWarmer").finish_non_exhaustive()
    }
}

impl AttachWarmer {
    /// Starts the warmer's thread. Fails when this process's cgroup has no
    /// `cgroup.procs` to write (no cgroup mounts) or the thread cannot be made.
    pub fn start() -> Result<AttachWarmer> {
        own_procs_file()?;
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("cgroup-warm".into())
            .spawn(move || run(&theirs))
            .map_err(|e| CgroupError::Unsupported {
                what: format!("a cgroup warm-up thread ({e})"),
            })?;
        Ok(AttachWarmer { shared })
    }

    /// Asks for a warm-up; returns at once. Merged with one already asked for.
    pub fn kick(&self) {
        let (m, cv) = &*self.shared;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        s.last_kick = Some(Instant::now());
        if !s.pending {
            s.pending = true;
            cv.notify_one();
        }
    }
}

impl Drop for AttachWarmer {
    fn drop(&mut self) {
        let (m, cv) = &*self.shared;
        m.lock().unwrap_or_else(|p| p.into_inner()).stopped = true;
        cv.notify_one();
    }
}

fn run(shared: &(Mutex<State>, Condvar)) {
    let (m, cv) = shared;
    let mut mounts = None;
    loop {
        {
            let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if s.stopped {
                    return;
                }
                if s.pending {
                    s.pending = false;
                    break;
                }
                let holding = s.last_kick.is_some_and(|t| t.elapsed() < HOLD);
                if !holding {
                    s = cv.wait(s).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                let (g, timeout) = cv
                    .wait_timeout(s, PERIOD)
                    .unwrap_or_else(|p| p.into_inner());
                s = g;
                if timeout.timed_out() && !s.stopped {
                    break;
                }
            }
        }
        // Best effort: a failed warm-up only means the container's own join waits.
        let _ = take_attach_lock_cached(&mut mounts);
        m.lock().unwrap_or_else(|p| p.into_inner()).done += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_procs_file_lists_this_process() {
        let f = own_procs_file().expect("a cgroup.procs for this process");
        let pids = std::fs::read_to_string(&f).unwrap();
        let me = std::process::id().to_string();
        assert!(
            pids.lines().any(|l| l == me),
            "{} does not list pid {me}",
            f.display()
        );
    }

    #[test]
    fn the_cached_mounts_give_the_same_file_and_a_stale_list_is_read_again() {
        let mut mounts = None;
        take_attach_lock_cached(&mut mounts).expect("no-op migration");
        let cached = mounts.as_deref().expect("mounts read on first use");
        assert_eq!(
            own_procs_file_in(cached).unwrap(),
            own_procs_file().unwrap()
        );
        // A list whose mount points are gone is replaced by the real one.
        let mut stale = mounted().unwrap();
        for m in &mut stale {
            m.hierarchy.mountpoint = PathBuf::from("/nonexistent-cgroup-mount");
        }
        let mut mounts = Some(stale);
        take_attach_lock_cached(&mut mounts).expect("read again");
        assert_eq!(
            own_procs_file_in(mounts.as_deref().unwrap()).unwrap(),
            own_procs_file().unwrap()
        );
    }

    #[test]
    fn taking_the_lock_leaves_the_process_where_it_is() {
        let before = std::fs::read_to_string(PROC_CGROUP).unwrap();
        take_attach_lock().expect("no-op migration");
        assert_eq!(std::fs::read_to_string(PROC_CGROUP).unwrap(), before);
    }

    #[test]
    fn a_child_warm_up_moves_nothing_and_is_reaped() {
        let before = std::fs::read_to_string(PROC_CGROUP).unwrap();
        let w = warm_in_child().expect("a warm-up child");
        let pid = w.pid;
        drop(w);
        // Reaped: it is no longer our child.
        let mut status = 0;
        // SAFETY: a non-blocking wait for a pid; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert_eq!(r, -1, "the warm-up child was not reaped");
        assert_eq!(std::fs::read_to_string(PROC_CGROUP).unwrap(), before);
    }

    #[test]
    fn kicks_are_served_held_for_a_while_and_the_thread_ends_with_the_warmer() {
        let w = AttachWarmer::start().expect("warmer");
        let shared = Arc::clone(&w.shared);
        w.kick();
        w.kick();
        // The thread takes the pending flag when it starts a warm-up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while shared.0.lock().unwrap().pending {
            assert!(std::time::Instant::now() < deadline, "kick never served");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Without more kicks it goes on taking the lock for HOLD, then stops.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while shared.0.lock().unwrap().done < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "no warm-ups while holding"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(HOLD * 3);
        let settled = shared.0.lock().unwrap().done;
        std::thread::sleep(HOLD);
        assert_eq!(
            shared.0.lock().unwrap().done,
            settled,
            "still warming after HOLD"
        );
        drop(w);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&shared) > 1 {
            assert!(std::time::Instant::now() < deadline, "thread still running");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
