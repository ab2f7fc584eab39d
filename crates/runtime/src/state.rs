//! Container state on disk.
//!
//! Each container has a directory `<root>/<id>/` holding `state.json` (a [`Record`],
//! written atomically) and, between `create` and `start`, the `exec.fifo` that the init
//! blocks on. The status is never trusted from the file: it is recomputed from the init's
//! pid and start time (so pid reuse is detected), the fifo, and a `paused` marker.

use crate::error::{io_err, Error, Result};
use crate::util;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The OCI status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created; the program has not started yet.
    Created,
    /// The program runs.
    Running,
    /// Frozen through the cgroup freezer.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What the runtime keeps about a container (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Container id.
    pub id: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// The init's start time in clock ticks since boot (/proc/PID/stat field 22).
    pub start_time: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// linux.cgroupsPath from the config.
    pub cgroups_path: Option<String>,
    /// Whether cgroups are managed through systemd-style paths.
    pub systemd_cgroup: bool,
    /// The config the container was created from (for exec, hooks and delete).
    pub config: Box<oci_spec::runtime::Spec>,
    /// The resctrl group the container's processes join and what of it the runtime
    /// created (for `linux.intelRdt`; `delete` removes exactly that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resctrl: Option<crate::resctrl::Placement>,
}

/// The state as the OCI runtime spec (and runc) prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// Version of the runtime spec.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Current status.
    pub status: Status,
    /// Host pid of the init (0 when stopped).
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// Owner (always root here).
    pub owner: String,
    /// Annotations from the config.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// Version of the runtime spec we implement.
pub const OCI_VERSION: &str = "1.2.1";

impl Record {
    /// Path of the state file inside a container directory.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Loads the record from a container directory.
    pub fn load(dir: &Path, id: &str) -> Result<Record> {
        let path = Self::file(dir);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
        };
        serde_json::from_slice(&data).map_err(|source| Error::State { path, source })
    }

    /// Saves the record atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::file(dir);
        let data = serde_json::to_vec(self).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        util::write_atomic(&path, &data, 0o600).map_err(io_err(format!("write {}", path.display())))
    }

    /// Computes the current status from the process and the files in `dir`.
    pub fn status(&self, dir: &Path) -> Status {
        if self.pid <= 0 || !util::alive(self.pid, self.start_time) {
            return Status::Stopped;
        }
        if dir.join(crate::container::FIFO).exists() {
            return Status::Created;
        }
        if dir.join(crate::container::PAUSED).exists() {
            return Status::Paused;
        }
        Status::Running
    }

    /// The OCI state for this record with the given status.
    pub fn oci_state(&self, status: Status) -> OciState {
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.config.annotations().clone().unwrap_or_default(),
        }
    }
}
