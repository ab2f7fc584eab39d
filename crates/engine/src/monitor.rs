//! The protocol between the engine and `berth-monitor`, the per-container supervisor.
//!
//! The engine starts one monitor per container run, `berth-monitor -`, with its stdin a
//! control pipe and its stdout a status pipe, early in the start (its exec overlaps the
//! rest of the preparation); once the bundle is ready it writes the [`MonitorConfig`] as
//! one JSON line on the control pipe (`berth-monitor '<MonitorConfig JSON>'` takes it as
//! the argument instead; EOF before the line: the monitor exits). The monitor makes itself a
//! session leader and child subreaper, calls `<runtime> create` (or, for berth's own
//! runtime, the linked `runtime` library) with the container's stdio
//! connected to pipes it owns (or receives the pty master on a console socket), writes one
//! [`StatusLine`] (`Created`), optionally waits for one byte on the control pipe (so that the
//! engine can connect attach clients before any output is produced, and finish the
//! container's network; [`GO`] goes on, [`ABORT_START`] removes the container), calls
//! `<runtime> start`, writes a `Started` line and closes the control pipe. From then on it
//! needs no daemon: it copies output into the json-file log and to attach clients, forwards
//! attach clients' bytes to the container's stdin, and when the container's init exits it
//! unmounts the root filesystem, records an [`ExitRecord`] (temp file + rename), closes the
//! attach clients, writes an `Exited` line (ignored if the daemon is gone), then deletes
//! the runtime container and exits. The engine applies the exit on `Exited` (or when the
//! status pipe closes) and waits for the monitor process before starting the container
//! again, so the runtime's `delete` is off the exit's path but never races a new `create`.
//!
//! Attach socket protocol (a unix stream socket at [`MonitorConfig::attach_socket`]): the
//! client sends one byte, [`ATTACH_WATCH`] (only wants to learn when the monitor exits: its
//! connection is closed at exit) or [`ATTACH_STREAMS`] (receives every output chunk as a
//! Docker multiplexed frame `[stream, 0, 0, 0, len: u32 BE] + data`, stream 1 = stdout,
//! 2 = stderr; every byte it sends after the first is written to the container's stdin; a
//! half-close closes stdin when `stdin_once`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The byte the engine sends on the control pipe to let a created container start.
pub const GO: u8 = b'g';
/// The byte the engine sends on the control pipe instead of [`GO`] when the start cannot
/// go on (its network could not be set up): the monitor deletes the created container,
/// reports `Failed` and exits.
pub const ABORT_START: u8 = b'x';

/// The first byte of a watching client.
pub const ATTACH_WATCH: u8 = b'w';
/// The first byte of a client that wants the output streams (and may send stdin).
pub const ATTACH_STREAMS: u8 = b'a';

/// Everything a monitor needs, passed as its single JSON argument.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The container id (the runtime's container id too).
    pub id: String,
    /// The OCI runtime binary.
    pub runtime: PathBuf,
    /// The runtime's state root (`--root`).
    pub runtime_root: PathBuf,
    /// `runtime` is berth's own: call the linked `runtime` library in-process instead of
    /// executing it for create, start and delete (same state root, same on-disk state).
    #[serde(default)]
    pub builtin_runtime: bool,
    /// The bundle directory (`config.json` + `rootfs`).
    pub bundle: PathBuf,
    /// The json-file log, or none when logging is off.
    pub log_path: Option<PathBuf>,
    /// Rotate the log when it grows past this many bytes (0: never).
    pub log_max_size: u64,
    /// How many log files to keep, the live one included (at least 1).
    pub log_max_files: u32,
    /// Where the exit record is written.
    pub exit_file: PathBuf,
    /// The attach socket the monitor listens on.
    pub attach_socket: PathBuf,
    /// Allocate a pseudo-terminal (console socket) instead of pipes.
    pub tty: bool,
    /// Give the container a stdin pipe (else /dev/null).
    pub open_stdin: bool,
    /// Close the container's stdin when the first attached client half-closes.
    pub stdin_once: bool,
    /// Wait for one byte on the control pipe between create and start.
    pub wait_go: bool,
    /// A mount point to detach after the container exits (its root filesystem).
    pub unmount: Option<PathBuf>,
    /// Cgroup files that count OOM kills (`memory.oom_control` or `memory.events`).
    pub oom_files: Vec<PathBuf>,
}

/// One line the monitor writes on its status pipe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StatusLine {
    /// `runtime create` succeeded; the container's init has this host pid.
    Created {
        /// The init's host pid.
        pid: i32,
    },
    /// `runtime start` succeeded.
    Started {
        /// The init's host pid.
        pid: i32,
    },
    /// The container has exited and its exit record is written; the monitor is removing
    /// the runtime's state and will exit. The engine applies the exit at once, so that a
    /// waiting client does not wait for the runtime's `delete`.
    Exited,
    /// Create or start failed; the monitor exits.
    Failed {
        /// What the runtime said.
        message: String,
    },
}

/// How a container's run ended, as the monitor records it in [`MonitorConfig::exit_file`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    /// The exit code (128 + signal when killed by a signal).
    pub exit_code: i32,
    /// Whether the kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// When the init exited (RFC 3339, nanoseconds).
    pub finished_at: String,
}
