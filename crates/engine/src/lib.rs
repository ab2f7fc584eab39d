//! The engine: Berth's domain services behind the Docker API.
//!
//! [`Engine`] owns the containers (records persisted crash-safe under
//! `<root>/containers/`, see [`containers`]), their supervision and the images (over the
//! `store` crate, see [`images`]), the containers' networks (over the `net` crate, see
//! [`network`]: a network namespace per run, connected on start, released when the run
//! ends) and volumes (over the `volume` crate, see [`volumes`]). It knows nothing of HTTP:
//! the `daemon` crate calls it.
//!
//! # Supervision model
//!
//! Every container run is supervised by its own `berth-monitor` process (see
//! [`monitor`]), which the engine spawns detached. The monitor calls the OCI runtime binary
//! (`create` + `start`, as dockerd/containerd call runc), holds the container's stdio,
//! writes the json-file log and records the exit status. The engine learns that a run
//! ended when its monitor exits (it waits on the child, or, after a daemon restart, on the
//! monitor's attach socket closing) and then reads the exit record. So containers, their
//! logs and exit codes survive a daemon restart (live restore), and [`Engine::open`]
//! re-adopts them.

pub mod archive;
pub mod build_backend;
pub mod commit;
pub mod containers;
pub mod error;
pub mod events;
pub mod exec;
pub mod fsutil;
pub mod health;
pub mod images;
pub mod logs;
pub mod monitor;
pub mod network;
pub mod spec;
pub mod stats;
pub mod volumes;

mod engine;
mod timing;

pub use engine::{AttachStream, Engine, EngineConfig, ListOptions, WaitCondition};
pub use error::{EngineError, Result};
