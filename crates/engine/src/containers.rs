//! Container records, their persistence and the id/name index.
//!
//! Each container has a directory `<root>/containers/<id>/` holding `config.v2.json` (the
//! [`ContainerRecord`]), its json-file log and the `hostname`, `hosts` and `resolv.conf`
//! files bind-mounted into it. A container is created in `<root>/containers/.creating-<id>/`
//! and becomes visible by renaming that directory, so a crash at any moment leaves either
//! no container or a whole one; startup discards `.creating-*` leftovers. Removal renames
//! the directory to `.removing-<id>` first, for the same reason.

use crate::error::{EngineError, Result};
use api::{ContainerConfig, HostConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The lifecycle status of a container (Docker's `State.Status`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    #[default]
    Created,
    /// Its process runs.
    Running,
    /// Frozen.
    Paused,
    /// Waiting for its restart policy to start it again.
    Restarting,
    /// Being removed.
    Removing,
    /// Its process exited.
    Exited,
    /// It could not be cleaned up.
    Dead,
}

impl Status {
    /// Docker's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether the container's process exists (running or paused).
    pub fn is_running(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

/// The run state of a container, persisted with its record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default)]
pub struct RunState {
    /// The status.
    pub status: Status,
    /// The host pid of its init (0 when not running).
    pub pid: i32,
    /// The host pid of its monitor (0 when not running).
    pub monitor_pid: i32,
    /// The exit code of the last run.
    pub exit_code: i64,
    /// Whether the last run was OOM-killed.
    pub oom_killed: bool,
    /// Why the last start failed.
    pub error: String,
    /// When it last started (RFC 3339).
    pub started_at: String,
    /// When it last exited (RFC 3339).
    pub finished_at: String,
    /// Stopped by a user (no restart until started again).
    pub manually_stopped: bool,
    /// How many runs have ended (waiters for the next exit compare it).
    pub exit_seq: u64,
    /// How many times the restart policy restarted it.
    pub restart_count: i64,
    /// Whether it ever started.
    pub has_been_started: bool,
}

/// Everything the engine keeps about a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// The name without the leading `/`.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The image as the client named it.
    pub image: String,
    /// The image id (`sha256:...`).
    pub image_id: String,
    /// The configuration, merged with the image's.
    pub config: ContainerConfig,
    /// The host configuration.
    pub host_config: HostConfig,
    /// The executable.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The run state.
    pub state: RunState,
}

/// Validates a container name as Docker does: `/?[a-zA-Z0-9][a-zA-Z0-9_.-]+`. Returns the
/// name without a leading `/`.
pub fn validate_name(name: &str) -> Result<String> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let mut chars = n.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {
            n.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }
        _ => false,
    };
    if !ok {
        return Err(EngineError::Invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    Ok(n.to_string())
}

/// A new random container id (64 hex digits, not all digits, as Docker ensures so that it
/// never parses as a number).
pub fn new_id() -> String {
    loop {
        let bytes: [u8; 32] = rand::random();
        let id = hex::encode(bytes);
        if id[..12].chars().any(|c| c.is_ascii_alphabetic()) {
            return id;
        }
    }
}

/// A generated name in Docker's `adjective_surname` style; when `retry` > 0 (the plain
/// name was taken) a number follows, up to `retry` digits.
pub fn random_name(retry: u32) -> String {
    const A: &[&str] = &[
        "admiring", "brave", "busy", "clever", "eager", "festive", "gentle", "happy", "jolly",
        "keen", "lucid", "modest", "nifty", "quirky", "serene", "sharp", "tender", "vibrant",
        "wizardly", "zealous",
    ];
    const B: &[&str] = &[
        "archimedes",
        "babbage",
        "curie",
        "darwin",
        "euclid",
        "fermat",
        "galileo",
        "hopper",
        "knuth",
        "lovelace",
        "meitner",
        "noether",
        "pascal",
        "ritchie",
        "shannon",
        "thompson",
        "turing",
        "wozniak",
        "yonath",
        "zuse",
    ];
    let i: usize = rand::random::<u32>() as usize;
    let j: usize = rand::random::<u32>() as usize;
    let base = format!("{}_{}", A[i % A.len()], B[j % B.len()]);
    if retry == 0 {
        return base;
    }
    // As docker, retries append a number; its range grows with the retries, so a free
    // name is found however many containers hold the plain ones.
    let range = 10u64.pow(retry.min(12));
    format!("{base}{}", rand::random::<u64>() % range)
}

/// The id and name index: resolves what clients pass (full id, name, id prefix).
#[derive(Default)]
pub struct Index {
    names: HashMap<String, String>,
    ids: Vec<String>,
}

impl Index {
    /// Adds a container.
    pub fn insert(&mut self, id: &str, name: &str) {
        self.names.insert(name.to_string(), id.to_string());
        if let Err(pos) = self.ids.binary_search_by(|x| x.as_str().cmp(id)) {
            self.ids.insert(pos, id.to_string());
        }
    }

    /// Removes a container.
    pub fn remove(&mut self, id: &str, name: &str) {
        if self.names.get(name).map(String::as_str) == Some(id) {
            self.names.remove(name);
        }
        if let Ok(pos) = self.ids.binary_search_by(|x| x.as_str().cmp(id)) {
            self.ids.remove(pos);
        }
    }

    /// Renames a container.
    pub fn rename(&mut self, id: &str, old: &str, new: &str) {
        self.names.remove(old);
        self.names.insert(new.to_string(), id.to_string());
    }

    /// The id holding `name`, if any.
    pub fn by_name(&self, name: &str) -> Option<&String> {
        self.names.get(name)
    }

    /// Resolves a full id, a name (with or without `/`) or a unique id prefix.
    pub fn resolve(&self, s: &str) -> Result<String> {
        if s.is_empty() {
            return Err(EngineError::NoSuchContainer(s.to_string()));
        }
        if s.len() == 64 && self.ids.binary_search_by(|x| x.as_str().cmp(s)).is_ok() {
            return Ok(s.to_string());
        }
        let n = s.strip_prefix('/').unwrap_or(s);
        if let Some(id) = self.names.get(n) {
            return Ok(id.clone());
        }
        if s.chars().all(|c| c.is_ascii_hexdigit()) {
            let start = self.ids.partition_point(|x| x.as_str() < s);
            let matches: Vec<&String> = self.ids[start..]
                .iter()
                .take_while(|x| x.starts_with(s))
                .take(2)
                .collect();
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [_, _] => {
                    return Err(EngineError::Invalid(format!(
                        "multiple IDs found with provided prefix: {s}"
                    )))
                }
                _ => {}
            }
        }
        Err(EngineError::NoSuchContainer(s.to_string()))
    }

    /// All ids.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }
}

/// Where a container's files live.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<root>/containers/<id>`.
    pub dir: PathBuf,
    /// `<run_root>/c/<id>`: the bundle (config.json, rootfs, sockets).
    pub bundle: PathBuf,
}

impl Paths {
    /// The paths of container `id`.
    pub fn new(root: &Path, run_root: &Path, id: &str) -> Paths {
        Paths {
            dir: root.join("containers").join(id),
            bundle: run_root.join("c").join(id),
        }
    }
    /// The persisted record.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.v2.json")
    }
    /// The json-file log.
    pub fn log(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}-json.log"))
    }
    /// The monitor's exit record.
    pub fn exit_file(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    /// The monitor's attach socket.
    pub fn attach_socket(&self) -> PathBuf {
        self.bundle.join("a.sock")
    }
    /// The root filesystem mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_names_never_run_out() {
        // 2000 names: far more than the plain adjective_surname combinations.
        let mut taken = std::collections::HashSet::new();
        for _ in 0..2000 {
            let n = (0..).map(random_name).find(|n| !taken.contains(n)).unwrap();
            assert!(validate_name(&n).is_ok(), "{n}");
            taken.insert(n);
        }
        assert_eq!(taken.len(), 2000);
    }

    #[test]
    fn names_follow_docker_rules() {
        assert_eq!(validate_name("/web-1").unwrap(), "web-1");
        assert_eq!(validate_name("a.b_c").unwrap(), "a.b_c");
        for bad in ["", "a", "-x", "_x", "a b", "a/b", "é1"] {
            assert!(validate_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn resolve_ids_names_prefixes() {
        let mut ix = Index::default();
        let a = format!("abc1{}", "0".repeat(60));
        let b = format!("abc2{}", "0".repeat(60));
        ix.insert(&a, "one");
        ix.insert(&b, "two");
        assert_eq!(ix.resolve(&a).unwrap(), a);
        assert_eq!(ix.resolve("/two").unwrap(), b);
        assert_eq!(ix.resolve("abc1").unwrap(), a);
        assert!(matches!(ix.resolve("abc"), Err(EngineError::Invalid(_))));
        assert!(matches!(
            ix.resolve("ffff"),
            Err(EngineError::NoSuchContainer(_))
        ));
        ix.remove(&a, "one");
        assert!(ix.resolve("one").is_err());
        assert!(new_id().len() == 64);
    }
}
