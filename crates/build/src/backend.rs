//! The boundary between the builder and whatever stores images and runs containers.
//!
//! The builder never touches a store or a runtime: it works on [`ImageState`] values (an
//! ordered list of layer ids plus an image config and history) and asks a
//! [`BuildBackend`] to do the few things that need real machinery:
//!
//! * [`resolve_base`](BuildBackend::resolve_base): turn `FROM busybox:1.36` into a state
//!   (pulling when asked or when missing). `scratch` never reaches the backend.
//! * [`run`](BuildBackend::run): start a container on a state's root filesystem, run one
//!   command, stream its output, and capture the filesystem diff as a new layer.
//! * [`add_files`](BuildBackend::add_files): write host files into a new layer (`COPY`,
//!   `ADD`); the builder has already resolved every source and destination path.
//! * [`mount_rootfs`](BuildBackend::mount_rootfs) / [`unmount_rootfs`](BuildBackend::unmount_rootfs):
//!   a read-only host view of a state's filesystem, for `COPY --from`.
//! * [`commit`](BuildBackend::commit) and [`tag`](BuildBackend::tag): make the final state
//!   an image and name it.
//! * [`cache_get`](BuildBackend::cache_get) / [`cache_put`](BuildBackend::cache_put): the
//!   layer cache, keyed by [`CacheKey`]s the builder computes.
//!
//! Layer ids are opaque strings chosen by the backend (the engine uses diff ids); the
//! builder only orders and compares them. A state's identity ([`ImageState::id`]) is a
//! hash of its layers, config and history, so equal states have equal ids everywhere.
//! [`ImageState::to_image_json`] / [`ImageState::from_image_json`] convert to and from
//! Docker's image config JSON for backends whose layer ids are diff ids.
//!
//! The builder is synchronous: an async caller runs [`crate::build`] on a blocking thread.
//! A complete implementation over plain directories (layers as directory copies, `RUN`
//! through `chroot(8)`) lives in this crate's `tests/support/dir_backend.rs`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use errkind::ErrorKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An error from a backend, with its kind.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// How the API should classify it.
    pub kind: ErrorKind,
    /// What failed, lowercase, naming the image/path.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    /// A new error without a source.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A new error wrapping `source`.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BackendError {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl errkind::HasKind for BackendError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// An empty JSON object (`{}`), the value type of Docker's port and volume sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// A container health check, as in Docker's image config (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Time a check may take.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Grace period after start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Interval during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The runtime configuration of an image, with Docker's field names (the `config` object
/// of Docker's image JSON; a superset of the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `EXPOSE`: `"80/tcp": {}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `ENV`, as `KEY=value` in definition order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`: `"/data": {}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers, as their instruction text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_build: Vec<String>,
    /// `SHELL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

impl ImageConfig {
    /// The value of environment variable `name`, if set.
    pub fn env_get(&self, name: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then_some(v)
        })
    }

    /// Sets `name=value`, replacing an earlier definition in place.
    pub fn env_set(&mut self, name: &str, value: &str) {
        let kv = format!("{name}={value}");
        match self
            .env
            .iter()
            .position(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) == name)
        {
            Some(i) => self.env[i] = kv,
            None => self.env.push(kv),
        }
    }
}

/// One image history entry (Docker's `history[]` minus the timestamp, which the backend
/// adds when it commits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The instruction, Docker style (`/bin/sh -c #(nop)  ENV A=b`). Imported images have
    /// entries with only a comment, so it may be absent.
    #[serde(default)]
    pub created_by: String,
    /// `true` when the step added no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// An image as the builder sees it between steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageState {
    /// Layer ids, bottom first (as the backend named them).
    pub layers: Vec<String>,
    /// The config.
    pub config: ImageConfig,
    /// The history, one entry per step (and the base's entries first).
    pub history: Vec<HistoryEntry>,
    /// OS of the image (`linux`).
    #[serde(default)]
    pub os: String,
    /// CPU architecture (`amd64`, `arm64`, ...).
    #[serde(default)]
    pub architecture: String,
    /// `MAINTAINER` (the image's `author` field).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
}

impl ImageState {
    /// A stable identity: `sha256:` + hash of the canonical JSON of the state. Equal
    /// states have equal ids; any change to layers, config or history changes it.
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(&json)))
    }
}

/// The `rootfs` object of an image config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// A history entry of an image config, with its timestamp.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TimedHistory {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    created: String,
    #[serde(flatten)]
    entry: HistoryEntry,
}

/// Docker's image config JSON (the document whose digest is the image id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ImageJson {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    created: String,
    #[serde(default)]
    config: ImageConfig,
    #[serde(default)]
    rootfs: RootFs,
    #[serde(default)]
    history: Vec<TimedHistory>,
}

impl ImageState {
    /// Docker's image config JSON for this state, for a backend whose layer ids are the
    /// layers' diff ids (`sha256:` of the uncompressed tar). `created` (RFC 3339) stamps
    /// the image and the history entries that have no time yet.
    pub fn to_image_json(&self, created: &str) -> serde_json::Value {
        let doc = ImageJson {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            author: self.author.clone(),
            created: created.to_string(),
            config: self.config.clone(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: self.layers.clone(),
            },
            history: self
                .history
                .iter()
                .map(|h| TimedHistory {
                    created: created.to_string(),
                    entry: h.clone(),
                })
                .collect(),
        };
        serde_json::to_value(doc).unwrap_or_default()
    }

    /// Reads a state back from Docker's (or an OCI) image config JSON: layers are its
    /// `rootfs.diff_ids`; timestamps are dropped (they do not take part in [`Self::id`]).
    pub fn from_image_json(v: &serde_json::Value) -> Result<Self, serde_json::Error> {
        let doc: ImageJson = serde_json::from_value(v.clone())?;
        Ok(ImageState {
            layers: doc.rootfs.diff_ids,
            config: doc.config,
            history: doc.history.into_iter().map(|h| h.entry).collect(),
            os: doc.os,
            architecture: doc.architecture,
            author: doc.author,
        })
    }
}

/// A base image returned by [`BuildBackend::resolve_base`].
#[derive(Debug, Clone, PartialEq)]
pub struct BaseImage {
    /// The image id (`sha256:...`), shown as ` ---> 1a2b3c4d5e6f` after `FROM`.
    pub id: String,
    /// Its layers, config and history.
    pub state: ImageState,
}

/// What a `RUN` step asks the backend to execute.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// An id the builder chose for the temporary container (64 hex digits); the build log
    /// shows its first 12 as ` ---> Running in ...`.
    pub container_id: String,
    /// The full argv (the shell is already prepended for the shell form).
    pub args: Vec<String>,
    /// `KEY=value` environment: the image's `ENV` plus the build args in scope.
    pub env: Vec<String>,
    /// Working directory (absolute; created if missing, as `docker run` does).
    pub workdir: String,
    /// `USER` (`name`, `uid`, `uid:gid`, ...; empty = root).
    pub user: String,
    /// `RUN --network` (`None` = the default network).
    pub network: Option<String>,
    /// Data to feed to the command's stdin (a here-document), else stdin is empty.
    pub stdin: Option<Vec<u8>>,
}

/// The result of [`BuildBackend::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// The command's exit code.
    pub exit_code: i32,
    /// The new layer; `None` when the filesystem did not change (or on failure).
    pub layer: Option<String>,
}

/// One filesystem entry for [`BuildBackend::add_files`].
#[derive(Debug, Clone, PartialEq)]
pub struct CopyItem {
    /// Host path of the entry (a file, directory or symlink; symlinks are copied as links,
    /// a directory item creates just the directory, its contents come as further items).
    pub src: PathBuf,
    /// Absolute destination path in the image.
    pub dest: String,
    /// `--chown` value (`user[:group]`, names resolved in the image's `/etc/passwd` and
    /// `/etc/group`); `None` means root (`0:0`).
    pub chown: Option<String>,
    /// `--chmod` bits to apply instead of the source's mode.
    pub chmod: Option<u32>,
    /// With no `chown`: keep the source's owner instead of root (entries extracted from an
    /// `ADD` archive keep the owners recorded in the archive, as Docker does).
    pub keep_owner: bool,
    /// The source is a file of this build's own — the context unpacked from the API's
    /// tar, a here-document, a download, an extracted archive — that nothing else writes
    /// and that goes when the build ends. A backend may then put that very file (a hard
    /// link) into the layer instead of a copy, as long as it changes neither its content
    /// nor its mode (a later step may read the same source: its cache key covers the
    /// mode) and the file has no other link yet. `false` for `COPY --from` and a context
    /// directory used in place.
    pub private: bool,
}

/// A cache key: hex sha256 of the parent state id, the step's expanded text and build
/// args, and for `COPY`/`ADD` the content hash of the sources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub String);

/// What the builder needs from a store and a runtime. The engine implements it; tests
/// use a directory-backed implementation.
pub trait BuildBackend {
    /// Finds (or pulls, when `pull` is set or it is missing) the image `image_ref`
    /// (`platform` is `os/arch[/variant]` from `FROM --platform`, if given). Pull
    /// progress, if any, goes to `out` as text lines (the build log). Not called for
    /// `scratch` or stage names.
    fn resolve_base(
        &mut self,
        image_ref: &str,
        platform: Option<&str>,
        pull: bool,
        out: &mut dyn Write,
    ) -> Result<BaseImage, BackendError>;

    /// Runs `spec` in a fresh container on top of `parent`, writing the command's
    /// stdout and stderr to `out`, and captures the filesystem changes as a new layer.
    /// The container is removed before returning, whether the command succeeded or not;
    /// on a non-zero exit no layer is kept.
    fn run(
        &mut self,
        parent: &ImageState,
        spec: &RunSpec,
        out: &mut dyn Write,
    ) -> Result<RunResult, BackendError>;

    /// The layers of `COPY` steps that the context unpack hashed ahead of time (see
    /// `crate::predict`): a backend that makes a step's layer from files linked from the
    /// context may take their hashes from these instead of reading the files again.
    /// Called once, before the first step; the default ignores them.
    fn use_predicted_layers(&mut self, _layers: &[store::layer::PredictedTar]) {}

    /// Creates a layer on top of `parent` holding `items` (in order: parents come before
    /// their children). Missing parent directories of a destination are created (0755,
    /// root). Returns `None` if `items` is empty.
    fn add_files(
        &mut self,
        parent: &ImageState,
        items: &[CopyItem],
    ) -> Result<Option<String>, BackendError>;

    /// Whether `path` (absolute) is a directory in `state`'s filesystem (following
    /// symlinks inside the image). Used for Docker's "copy into an existing directory" rule.
    fn is_dir(&mut self, state: &ImageState, path: &str) -> Result<bool, BackendError>;

    /// A host directory showing `state`'s root filesystem (read only by the builder) until
    /// [`unmount_rootfs`](Self::unmount_rootfs) is called with it.
    fn mount_rootfs(&mut self, state: &ImageState) -> Result<PathBuf, BackendError>;

    /// Releases a directory from [`mount_rootfs`](Self::mount_rootfs).
    fn unmount_rootfs(&mut self, path: &Path) -> Result<(), BackendError>;

    /// Downloads `url` (for `ADD http(s)://...`) into the host file `dest`. The default
    /// says the backend cannot.
    fn fetch_url(&mut self, url: &str, dest: &Path) -> Result<(), BackendError> {
        let _ = dest;
        Err(BackendError::new(
            ErrorKind::Unavailable,
            format!("cannot download {url}: this build backend has no network access"),
        ))
    }

    /// Makes `state` an image; returns its id (`sha256:...`).
    fn commit(&mut self, state: &ImageState) -> Result<String, BackendError>;

    /// Points the reference `reference` (`app:latest`) at `image_id`.
    fn tag(&mut self, image_id: &str, reference: &str) -> Result<(), BackendError>;

    /// The state cached under `key`, if any (its layers must still exist).
    fn cache_get(&mut self, key: &CacheKey) -> Option<ImageState>;

    /// Remembers `state` as the result of the step with `key`. Called for every step
    /// that ran (also under `--no-cache`, as Docker keeps intermediate images).
    fn cache_put(&mut self, key: &CacheKey, state: &ImageState);

    /// Called once when a build ends, successfully or not, after the last other call.
    /// The backend releases whatever it kept for this build (temporary containers,
    /// mounts, scratch space). States already given to [`cache_put`](Self::cache_put)
    /// stay valid. The default does nothing.
    fn finish(&mut self, succeeded: bool) {
        let _ = succeeded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_image_history_without_created_by_parses() {
        let v = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
            "history": [{"created": "2026-01-01T00:00:00Z", "comment": "Imported from -"}]
        });
        let st = ImageState::from_image_json(&v).unwrap();
        assert_eq!(st.history[0].created_by, "");
        assert_eq!(st.history[0].comment, "Imported from -");
    }

    #[test]
    fn image_json_round_trip_with_docker_field_names() {
        let mut st = ImageState {
            layers: vec!["sha256:aa".into(), "sha256:bb".into()],
            os: "linux".into(),
            architecture: "amd64".into(),
            ..Default::default()
        };
        st.config.env_set("PATH", "/bin");
        st.config.env_set("A", "1");
        st.config.env_set("PATH", "/usr/bin");
        st.config.exposed_ports.insert("80/tcp".into(), Empty {});
        st.config.working_dir = "/app".into();
        st.config.healthcheck = Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 5,
            ..Default::default()
        });
        st.history.push(HistoryEntry {
            created_by: "/bin/sh -c #(nop)  ENV A=1".into(),
            empty_layer: true,
            comment: String::new(),
        });
        assert_eq!(st.config.env, ["PATH=/usr/bin", "A=1"]);
        let v = st.to_image_json("2026-01-01T00:00:00Z");
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(v["rootfs"]["diff_ids"][1], "sha256:bb");
        assert_eq!(v["config"]["WorkingDir"], "/app");
        assert_eq!(v["config"]["ExposedPorts"]["80/tcp"], serde_json::json!({}));
        assert_eq!(v["config"]["Healthcheck"]["Test"][0], "CMD-SHELL");
        assert_eq!(v["history"][0]["empty_layer"], true);
        assert_eq!(v["history"][0]["created"], "2026-01-01T00:00:00Z");
        let back = ImageState::from_image_json(&v).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.id(), st.id());
        let mut other = st.clone();
        other.config.user = "1".into();
        assert_ne!(other.id(), st.id());
    }
}
