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
