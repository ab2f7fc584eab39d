//! OCI runtime: bundle and spec to an isolated process (namespaces, rootfs, cgroups,
//! security), driven by the runc-compatible `berth-runtime` binary.
//!
//! # Model
//!
//! A [`Runtime`] keeps one directory per container under its root
//! (`<root>/<id>/state.json`, see [`state`]). `create` validates the bundle's config
//! ([`spec`]) before touching the host, creates the cgroup, prepares idmapped bind
//! mounts as detached mounts (`idmap`: they need the host's privileges), and forks
//! twice: stage 1
//! joins the namespaces given by path, creates a user namespace if asked (the runtime
//! writes its id maps) and unshares the other new namespaces; its child becomes the
//! container's init (pid 1 of a new pid namespace). The runtime moves the init into the
//! cgroup (and the resctrl group of `linux.intelRdt`, see `resctrl`) while the init builds the root filesystem (mounts resolved inside the rootfs,
//! devices, pivot_root, masked and read-only paths), then the init creates its cgroup
//! namespace, applies the process settings (I/O priority, scheduler, personality, NUMA
//! memory policy, rlimits, console, user, capabilities, cwd) and reports back over a socketpair; the
//! runtime then moves `linux.netDevices` into the init's network namespace. It then blocks opening `exec.fifo` until `start`
//! opens the other end: the user's program never runs before `start`. Any error before
//! that point travels back to the `create` caller, and everything created is removed.
//! Seccomp is loaded last, just before execve (or before dropping capabilities when
//! no_new_privs is off, since loading then needs CAP_SYS_ADMIN). A profile with
//! `SCMP_ACT_NOTIFY` is loaded before the init reports ready instead, and its listener
//! handed to the seccomp agent during `create` (see `agent`).
//!
//! The status is derived, never stored: `created` while the fifo exists and the init is
//! alive, `running` once started, `paused` when frozen, `stopped` when the init (checked
//! by pid and start time, so pid reuse is detected) is gone or a zombie.
//!
//! Operations fork without exec, so they assume a single-threaded caller: the
//! `berth-runtime` binary. [`Runtime::run`] and [`Runtime::exec`] (without detach) also
//! make the caller a child subreaper and install signal handlers that forward signals to
//! the container process; a long-lived program should run the binary instead.

mod agent;
mod console;
mod container;
mod error;
mod features;
mod hooks;
mod idmap;
mod init;
mod mempolicy;
mod process;
mod reaper;
mod resctrl;
mod rootfs;
mod sched;
mod signals;
pub mod spec;
pub mod state;
mod sync;
pub mod util;

pub use container::{validate_id, CreateOptions, ExecOptions, Runtime};
pub use error::{Error, Result};
pub use features::{default_spec, features};
pub use hooks::run_hooks;
pub use reaper::INIT_ANNOTATION;
pub use resctrl::{Placement, ResctrlError};
pub use state::{OciState, Status};
