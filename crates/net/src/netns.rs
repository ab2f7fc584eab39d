//! Persistent network namespaces at arbitrary paths (what `ip netns add` does under
//! `/run/netns`), so that the engine can create a container's namespace before the
//! container exists, name it in the OCI spec (`linux.namespaces[].path`), connect it, and
//! find it again after a daemon restart.
//!
//! A namespace is kept alive by a bind mount of its nsfs file onto an empty regular file;
//! removing it unmounts and deletes that file, after which the kernel destroys the
//! namespace (and the container ends of its veth pairs) once nothing else holds it.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{NetError, Result};
use crate::netlink::{self, Netlink};

/// Creates a new network namespace, bind-mounted at `path` (a file that must not exist
/// yet; its directory must exist), with `lo` up.
pub fn create_netns(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| NetError::io(path, e))?;
    let res = std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
            mount(
                Some(own.as_str()),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            let mut nl = Netlink::open()?;
            nl.set_up(netlink::index_of("lo")?)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
    });
    if let Err(e) = res {
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(path);
        return Err(NetError::io(path, e));
    }
    Ok(())
}

/// Unmounts and deletes a namespace made by [`create_netns`]; a missing one is fine.
pub fn remove_netns(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(NetError::io(path, e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io(path, e)),
    }
}

/// Network namespaces made ahead of time, so that a container's start takes one instead
/// of waiting for `unshare(CLONE_NEWNET)` (about 1 ms of kernel work, plus `lo`).
///
/// # Model
///
/// A thread of the pool keeps up to `size` spare namespaces bind-mounted at
/// `<dir>/spare-<n>` (each made with [`create_netns`], so `lo` is up and nothing else is
/// in it). [`NetnsPool::take`] binds a spare's nsfs file at the wanted path (a bind
/// mount, not a move: a move fails under a shared parent mount) and wakes the thread,
/// which unmounts the spare (an unmount waits for an RCU grace period) and makes another;
/// with no spare ready, `take` makes the namespace itself.
/// [`NetnsPool::open`] removes spares a previous process left in `dir` (after a crash),
/// and [`NetnsPool::drain`] (also on drop) stops the thread and removes the spares.
pub struct NetnsPool {
    dir: std::path::PathBuf,
    shared: std::sync::Arc<PoolShared>,
}

struct PoolShared {
    state: std::sync::Mutex<PoolState>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
struct PoolState {
    ready: Vec<std::path::PathBuf>,
    /// Spares handed out, to be unmounted by the thread (an unmount waits for an RCU
    /// grace period: not on the caller's path).
    spent: Vec<std::path::PathBuf>,
    /// Spares the thread is making now (not yet in `ready`).
    making: usize,
    next: u64,
    stopped: bool,
}

impl std::fmt::Debug for NetnsPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsPool")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl NetnsPool {
    /// Opens a pool keeping `size` spares in `dir` (created if missing; what it holds is
    /// removed first). `size` 0 makes a pool that always makes namespaces on demand.
    pub fn open(dir: &Path, size: usize) -> Result<NetnsPool> {
        std::fs::create_dir_all(dir).map_err(|e| NetError::io(dir, e))?;
        for e in std::fs::read_dir(dir)
            .map_err(|e| NetError::io(dir, e))?
            .flatten()
        {
            remove_netns(&e.path())?;
        }
        let shared = std::sync::Arc::new(PoolShared {
            state: std::sync::Mutex::new(PoolState::default()),
            cv: std::sync::Condvar::new(),
        });
        let pool = NetnsPool {
            dir: dir.to_path_buf(),
            shared,
        };
        if size > 0 {
            let (dir, shared) = (pool.dir.clone(), std::sync::Arc::clone(&pool.shared));
            std::thread::Builder::new()
                .name("netns-pool".into())
                .spawn(move || refill(&dir, &shared, size))
                .map_err(|e| NetError::io(&pool.dir, e))?;
        }
        Ok(pool)
    }

    /// A new network namespace bind-mounted at `path` (as [`create_netns`]), a spare if
    /// one is ready.
    pub fn take(&self, path: &Path) -> Result<()> {
        let spare = {
            let mut st = self.lock();
            let s = st.ready.pop();
            self.shared.cv.notify_all();
            s
        };
        let Some(spare) = spare else {
            return create_netns(path);
        };
        let placed = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| NetError::io(path, e))
            .and_then(|_| {
                mount(
                    Some(&spare),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| {
                    let _ = std::fs::remove_file(path);
                    NetError::io(path, e.into())
                })
            });
        // Used or not, the spare goes (a namespace is handed out once), by the thread;
        // or here when there is no thread any more.
        let mut st = self.lock();
        if st.stopped {
            drop(st);
            let _ = remove_netns(&spare);
        } else {
            st.spent.push(spare);
            self.shared.cv.notify_all();
        }
        placed
    }

    /// Spares ready now.
    pub fn ready(&self) -> usize {
        self.lock().ready.len()
    }

    /// Stops making spares and removes the ones made (waits for one being made).
    pub fn drain(&self) {
        let mut st = self.lock();
        st.stopped = true;
        self.shared.cv.notify_all();
        while st.making > 0 {
            st = self.shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        for s in std::mem::take(&mut st.ready)
            .into_iter()
            .chain(std::mem::take(&mut st.spent))
        {
            let _ = remove_netns(&s);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for NetnsPool {
    fn drop(&mut self) {
        self.drain();
    }
}

/// The pool's thread: makes spares while fewer than `size` are ready or being made.
fn refill(dir: &Path, shared: &PoolShared, size: usize) {
    let lock = || shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let mut st = lock();
    loop {
        if st.stopped {
            return;
        }
        if !st.spent.is_empty() {
            let spent = std::mem::take(&mut st.spent);
            drop(st);
            for s in spent {
                let _ = remove_netns(&s);
            }
            st = lock();
            continue;
        }
        if st.ready.len() + st.making >= size {
            st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        st.making += 1;
        st.next += 1;
        let path = dir.join(format!("spare-{}", st.next));
        drop(st);
        let made = create_netns(&path);
        st = lock();
        st.making -= 1;
        match made {
            Ok(()) if !st.stopped => st.ready.push(path),
            Ok(()) => {
                let _ = remove_netns(&path);
            }
            // The host refuses (no privilege, out of resources): stop trying; `take`
            // makes namespaces on demand and reports the error then.
            Err(_) => {
                st.stopped = true;
            }
        }
        shared.cv.notify_all();
    }
}
