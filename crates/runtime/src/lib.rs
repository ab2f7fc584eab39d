//! OCI runtime: bundle and spec to an isolated process (namespaces, rootfs, cgroups,
//! security), driven by the runc-compatible `berth-runtime` binary.
//!
//! # Model
//!
//! A [`Runtime`] keeps one directory per container under its root
//! (`<root>/<id>/state.json`, see [`state`]). `create` validates the bundle's config
//! ([`spec`]), creates the cgroup, and forks twice ([`init`](crate::container)): stage 1
//! joins and creates namespaces, the second child becomes the container's init (pid 1 of
//! its pid namespace), builds the root filesystem, applies the process settings and
//! reports back over a socketpair. It then blocks opening `exec.fifo` until `start` opens
//! the other end: the user's program never runs before `start`. Any error before that
//! point travels back to the `create` caller, and everything created is removed.
//!
//! The status is derived, never stored: `created` while the fifo exists and the init is
//! alive, `running` once started, `paused` when frozen, `stopped` when the init (checked
//! by pid and start time) is gone.
//!
//! Operations fork, so they assume a single-threaded caller (the binary).

mod console;
mod container;
mod error;
mod features;
mod hooks;
mod init;
mod process;
mod rootfs;
mod signals;
pub mod spec;
pub mod state;
mod sync;
pub mod util;

pub use container::{validate_id, CreateOptions, ExecOptions, Runtime};
pub use error::{Error, Result};
pub use features::{default_spec, features};
pub use hooks::run_hooks;
pub use state::{OciState, Status};
