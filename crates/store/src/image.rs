//! Image manifests, configs, platform selection and the image index (names → images).
//!
//! # Model
//!
//! * An **image** is identified by its **id**: the digest of its config blob (as docker).
//!   It is described by one *platform manifest* (OCI image manifest or Docker schema2
//!   manifest) whose `config` and `layers` are blobs in the [`ContentStore`].
//! * A **ref** is a normalised [`Reference`] string (`docker.io/library/busybox:latest` or
//!   `docker.io/library/busybox@sha256:…`) pointing at a *target* descriptor: the manifest or
//!   the index/manifest list that was pulled, pushed or loaded under that name. When the
//!   target can be resolved for the host platform, the ref also records the image id.
//!   Registry-side users (the registry server) can store any target with
//!   [`ImageStore::set_ref`], resolvable or not.
//! * Images without any ref are *dangling* (`<none>:<none>`) and stay until removed/pruned.
//!
//! The index is one JSON file `<root>/images.json`, rewritten crash-safely (tmp file,
//! fsync, rename) under an exclusive `flock` on `<root>/images.lock`, so several processes
//! can share a store. Blobs must be in the content store before a ref or image names them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use errkind::{ErrorKind, HasKind};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::content::{ContentError, ContentStore};
use crate::digest::Digest;
use crate::reference::{Reference, ReferenceError};

/// Largest manifest or index accepted (4 MiB), as registries enforce.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest image config accepted (8 MiB).
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// Media type strings (OCI and Docker).
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker schema2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer (rare).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker foreign (non-distributable) layer.
    pub const DOCKER_LAYER_FOREIGN: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// Whether `mt` names an index or manifest list.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }

    /// Whether `mt` names a single-platform image manifest.
    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }
}

/// Errors from manifest parsing and the image index.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image or ref matches.
    #[error("no such image: {0}")]
    NotFound(String),
    /// An id prefix matches several images.
    #[error("image id prefix {0:?} is ambiguous")]
    Ambiguous(String),
    /// A manifest, index or config is malformed or unsupported.
    #[error("invalid {what} {digest}")]
    Invalid {
        /// What was being parsed (manifest, index, config).
        what: &'static str,
        /// Its digest (or a name).
        digest: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A manifest is larger than [`MAX_MANIFEST_SIZE`].
    #[error("manifest {0} is larger than 4 MiB")]
    ManifestTooLarge(String),
    /// An index has no manifest for the host platform.
    #[error("image {0} has no manifest for platform {1}")]
    NoMatchingPlatform(String, String),
    /// A bad reference string.
    #[error("invalid image reference")]
    Reference(#[from] ReferenceError),
    /// The content store failed (missing blob, I/O).
    #[error("image content")]
    Content(#[from] ContentError),
    /// The index file could not be read or written.
    #[error("image index {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl HasKind for ImageError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImageError::NotFound(_) | ImageError::NoMatchingPlatform(..) => ErrorKind::NotFound,
            ImageError::Ambiguous(_)
            | ImageError::Invalid { .. }
            | ImageError::ManifestTooLarge(_)
            | ImageError::Reference(_) => ErrorKind::InvalidArgument,
            ImageError::Content(e) => e.kind(),
            ImageError::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

fn invalid(
    what: &'static str,
    digest: impl ToString,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ImageError {
    ImageError::Invalid {
        what,
        digest: digest.to_string(),
        source: e.into(),
    }
}

/// A content descriptor: media type, digest and size of a blob (OCI descriptor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Alternative download URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform of a manifest inside an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor with no urls, annotations or platform.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }
}

/// An OS/architecture pair (OCI platform).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    /// CPU architecture in GOARCH terms (`amd64`, `arm64`, …).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host: `linux` and `std::env::consts::ARCH` mapped to GOARCH.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            architecture: arch.to_string(),
            os: std::env::consts::OS.to_string(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an image for `self` runs on `host` (os and architecture equal; variant equal
    /// when both name one, with arm64 `v8` matching no variant).
    pub fn matches(&self, host: &Platform) -> bool {
        if self.os != host.os || self.architecture != host.architecture {
            return false;
        }
        match (&self.variant, &host.variant) {
            (Some(a), Some(b)) => a == b,
            (Some(a), None) => self.architecture == "arm64" && a == "v8",
            _ => true,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A single-platform image manifest (OCI image manifest or Docker schema2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// Layer blobs, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Subject (OCI 1.1 referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's media type, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests, each usually with a platform.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// The manifest for `platform`, skipping attestation manifests (`unknown/unknown`).
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        let candidates = self.manifests.iter().filter(|d| {
            d.annotations
                .get("vnd.docker.reference.type")
                .is_none_or(|t| t != "attestation-manifest")
        });
        let mut fallback = None;
        for d in candidates {
            match &d.platform {
                Some(p) if p.matches(platform) => {
                    if p.variant == platform.variant {
                        return Some(d);
                    }
                    fallback.get_or_insert(d);
                }
                _ => {}
            }
        }
        fallback
    }
}

/// A parsed manifest blob: either a single-platform manifest or an index.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedManifest {
    /// An image manifest.
    Manifest(Box<Manifest>),
    /// An index / manifest list.
    Index(Index),
}

/// Parses manifest bytes. `media_type` (from the descriptor or Content-Type) is a hint; the
/// body's own `mediaType` and shape decide. Rejects bodies over [`MAX_MANIFEST_SIZE`] and
/// schema1 manifests.
pub fn parse_manifest(bytes: &[u8], media_type: Option<&str>) -> Result<ParsedManifest> {
    let name = Digest::sha256_of(bytes);
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(ImageError::ManifestTooLarge(name.to_string()));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid("manifest", &name, e))?;
    let body_mt = v.get("mediaType").and_then(Value::as_str);
    let mt = body_mt.or(media_type).unwrap_or("");
    if v.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
        return Err(invalid(
            "manifest",
            &name,
            "docker schema1 manifests are not supported",
        ));
    }
    if media_types::is_index(mt) || (mt.is_empty() && v.get("manifests").is_some()) {
        let idx: Index = serde_json::from_value(v).map_err(|e| invalid("index", &name, e))?;
        Ok(ParsedManifest::Index(idx))
    } else if media_types::is_manifest(mt) || (v.get("config").is_some()) {
        let m: Manifest = serde_json::from_value(v).map_err(|e| invalid("manifest", &name, e))?;
        Ok(ParsedManifest::Manifest(Box::new(m)))
    } else {
        Err(invalid(
            "manifest",
            &name,
            format!("unsupported media type {mt:?}"),
        ))
    }
}

/// The `config` section of an image config: defaults for containers run from the image.
/// Field names are Docker's; unknown fields are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `EXPOSE`: keys like `80/tcp`, values `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    /// `ENV`: `KEY=value` strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`: keys are paths, values `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `HEALTHCHECK` (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Docker's ArgsEscaped (Windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// `ONBUILD` triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// `SHELL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Fields this struct does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A `HEALTHCHECK` (durations in nanoseconds, as Docker stores them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", cmd]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Time a check may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Grace period after start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    /// Check interval during the start period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layer tars, base first.
    pub diff_ids: Vec<Digest>,
}

/// One `history` entry of an image config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct History {
    /// When the step ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step produced no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

/// An image config (OCI / Docker). The image id is the digest of its *bytes as stored*;
/// this struct is for reading it and for building new configs. Unknown fields are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (GOARCH).
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Defaults for containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// Layer diff ids.
    pub rootfs: RootFs,
    /// Build history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Fields this struct does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ImageConfig {
    /// Parses config bytes.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig> {
        serde_json::from_slice(bytes).map_err(|e| invalid("config", Digest::sha256_of(bytes), e))
    }

    /// `created` parsed as a time, if present and valid.
    pub fn created_time(&self) -> Option<DateTime<Utc>> {
        self.created
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|t| t.with_timezone(&Utc))
    }

    /// The chain ids of the layers, base first (see [`chain_ids`]).
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.rootfs.diff_ids)
    }
}

/// Chain ids per the OCI spec: `ChainID(L0) = DiffID(L0)`,
/// `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// What the store knows about one image; returned by every lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// Image id: the config digest.
    pub id: Digest,
    /// The platform manifest describing the image.
    pub manifest: Descriptor,
    /// Config descriptor (from the manifest).
    pub config: Descriptor,
    /// Layer descriptors (compressed blobs), base first.
    pub layers: Vec<Descriptor>,
    /// Uncompressed layer digests from the config, base first.
    pub diff_ids: Vec<Digest>,
    /// Chain ids of the layers (snapshot names), base first.
    pub chain_ids: Vec<Digest>,
    /// Tags naming it, familiar form (`busybox:latest`).
    pub repo_tags: Vec<String>,
    /// Digest refs naming it, familiar form (`busybox@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Full references (tags and digests) naming it.
    pub references: Vec<Reference>,
    /// Creation time from the config.
    pub created: Option<DateTime<Utc>>,
    /// When it was added to this store.
    pub added: DateTime<Utc>,
    /// The image's size as docker shows it: the uncompressed size of its layers (bytes of
    /// file content, see [`crate::snapshot::content_size`]) once they are unpacked; for an
    /// image whose layers are not all unpacked yet (or an index without a size source), the
    /// sum of the layer blob sizes.
    pub size: u64,
    /// Architecture from the config.
    pub architecture: String,
    /// OS from the config.
    pub os: String,
}

impl ImageRecord {
    /// The chain id of the top layer (the snapshot parent for a container), if any layers.
    pub fn top_chain_id(&self) -> Option<&Digest> {
        self.chain_ids.last()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageMeta {
    manifest: Descriptor,
    added: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefEntry {
    target: Descriptor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<Digest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct State {
    #[serde(default)]
    images: BTreeMap<Digest, ImageMeta>,
    #[serde(default)]
    refs: BTreeMap<String, RefEntry>,
}

/// The image index: refs and images over a [`ContentStore`]. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    content: ContentStore,
    path: PathBuf,
    lock_path: PathBuf,
    platform: Platform,
    layer_sizes: Option<Arc<dyn LayerSizes>>,
}

/// Where an [`ImageStore`] learns the uncompressed size of an unpacked layer (the
/// [`crate::Snapshotter`] in a [`crate::Store`]).
pub trait LayerSizes: std::fmt::Debug + Send + Sync {
    /// The uncompressed size of the layer whose chain id is `chain_id`, `None` when it is
    /// not unpacked.
    fn layer_size(&self, chain_id: &Digest) -> Option<u64>;
}

struct Locked<'a> {
    store: &'a ImageStore,
    state: State,
    _lock: Flock<File>,
}

impl Locked<'_> {
    fn save(&self) -> Result<()> {
        let p = &self.store.path;
        let tmp = p.with_extension("json.tmp");
        let ioe = |op| {
            let path = tmp.clone();
            move |source| ImageError::Io { op, path, source }
        };
        let data = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| ioe("encode")(io::Error::other(e)))?;
        let mut f = File::create(&tmp).map_err(ioe("create"))?;
        f.write_all(&data).map_err(ioe("write"))?;
        f.sync_all().map_err(ioe("fsync"))?;
        drop(f);
        fs::rename(&tmp, p).map_err(ioe("rename"))?;
        if let Some(d) = p.parent() {
            if let Ok(d) = File::open(d) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl ImageStore {
    /// Opens (creating if needed) the index at `<root>/images.json` over `content`.
    pub fn open(root: impl AsRef<Path>, content: ContentStore) -> Result<ImageStore> {
        let root = root.as_ref();
        fs::create_dir_all(root).map_err(|source| ImageError::Io {
            op: "create directory",
            path: root.to_path_buf(),
            source,
        })?;
        Ok(ImageStore {
            content,
            path: root.join("images.json"),
            lock_path: root.join("images.lock"),
            platform: Platform::host(),
            layer_sizes: None,
        })
    }

    /// Uses `sizes` for [`ImageRecord::size`] (uncompressed layer sizes).
    pub fn with_layer_sizes(mut self, sizes: Arc<dyn LayerSizes>) -> ImageStore {
        self.layer_sizes = Some(sizes);
        self
    }

    /// The content store it reads blobs from.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The platform used to pick a manifest out of an index (the host's).
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    fn lock(&self, exclusive: bool) -> Result<Locked<'_>> {
        let ioe = |op, source| ImageError::Io {
            op,
            path: self.lock_path.clone(),
            source,
        };
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| ioe("open lock", e))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let lock = Flock::lock(f, arg).map_err(|(_, e)| ioe("lock", e.into()))?;
        let state = match fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ImageError::Io {
                op: "decode",
                path: self.path.clone(),
                source: io::Error::other(e),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                return Err(ImageError::Io {
                    op: "read",
                    path: self.path.clone(),
                    source: e,
                })
            }
        };
        Ok(Locked {
            store: self,
            state,
            _lock: lock,
        })
    }

    /// Reads and parses a manifest or index blob (bounded to [`MAX_MANIFEST_SIZE`]).
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<ParsedManifest> {
        if desc.size > MAX_MANIFEST_SIZE {
            return Err(ImageError::ManifestTooLarge(desc.digest.to_string()));
        }
        let bytes = self
            .content
            .read_blob(&desc.digest, MAX_MANIFEST_SIZE)
            .map_err(|e| match e {
                ContentError::TooLarge { digest, .. } => {
                    ImageError::ManifestTooLarge(digest.to_string())
                }
                e => e.into(),
            })?;
        parse_manifest(&bytes, Some(&desc.media_type))
    }

    /// Reads a config blob's bytes (bounded to [`MAX_CONFIG_SIZE`]).
    pub fn read_config_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        Ok(self.content.read_blob(digest, MAX_CONFIG_SIZE)?)
    }

    /// Resolves a target (manifest or index) to the host platform's manifest descriptor and
    /// parsed manifest. All blobs involved must be in the content store.
    pub fn resolve_target(&self, target: &Descriptor) -> Result<(Descriptor, Manifest)> {
        match self.read_manifest(target)? {
            ParsedManifest::Manifest(m) => Ok((target.clone(), *m)),
            ParsedManifest::Index(idx) => {
                let d = idx.select(&self.platform).cloned().ok_or_else(|| {
                    ImageError::NoMatchingPlatform(
                        target.digest.to_string(),
                        self.platform.to_string(),
                    )
                })?;
                match self.read_manifest(&d)? {
                    ParsedManifest::Manifest(m) => Ok((d, *m)),
                    ParsedManifest::Index(_) => Err(invalid(
                        "index",
                        &target.digest,
                        "nested index is not supported",
                    )),
                }
            }
        }
    }

    fn check_image(&self, manifest_desc: &Descriptor) -> Result<(Manifest, ImageConfig)> {
        let m = match self.read_manifest(manifest_desc)? {
            ParsedManifest::Manifest(m) => *m,
            ParsedManifest::Index(_) => {
                return Err(invalid(
                    "manifest",
                    &manifest_desc.digest,
                    "expected an image manifest, got an index",
                ))
            }
        };
        let cfg = ImageConfig::parse(&self.read_config_bytes(&m.config.digest)?)?;
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            return Err(invalid(
                "manifest",
                &manifest_desc.digest,
                format!(
                    "has {} layers but its config lists {} diff ids",
                    m.layers.len(),
                    cfg.rootfs.diff_ids.len()
                ),
            ));
        }
        Ok((m, cfg))
    }

    /// Registers an (untagged) image described by the platform manifest `manifest`, whose
    /// manifest and config blobs must be stored. Returns its record. Idempotent.
    pub fn add_image(&self, manifest: &Descriptor) -> Result<ImageRecord> {
        let (m, _) = self.check_image(manifest)?;
        let mut st = self.lock(true)?;
        let id = m.config.digest.clone();
        let changed = match st.state.images.get(&id) {
            Some(meta) => meta.manifest.digest != manifest.digest,
            None => true,
        };
        if changed {
            st.state.images.insert(
                id.clone(),
                ImageMeta {
                    manifest: manifest.clone(),
                    added: Utc::now(),
                },
            );
            st.save()?;
        }
        self.record(&st.state, &id)
    }

    /// Points `reference` at `target` (a manifest or index whose blob is stored), replacing
    /// what it named before. When the reference has a tag and `target` is not already named
    /// by digest, `repo@<target digest>` is recorded too. If the target resolves to an image
    /// for the host platform, that image is registered and returned; otherwise the ref is
    /// still stored (as a registry needs) and `None` is returned.
    pub fn set_ref(
        &self,
        reference: &Reference,
        target: &Descriptor,
    ) -> Result<Option<ImageRecord>> {
        if target.size > MAX_MANIFEST_SIZE {
            return Err(ImageError::ManifestTooLarge(target.digest.to_string()));
        }
        if !self.content.exists(&target.digest) {
            return Err(ContentError::NotFound(target.digest.clone()).into());
        }
        let image = match self.resolve_target(target) {
            Ok((md, _)) => {
                let (m, _) = self.check_image(&md)?;
                Some((m.config.digest, md))
            }
            Err(ImageError::NoMatchingPlatform(..)) => None,
            Err(ImageError::Invalid { .. }) if !self.is_image_target(target) => None,
            Err(e) => return Err(e),
        };
        let mut st = self.lock(true)?;
        if let Some((id, md)) = &image {
            st.state.images.entry(id.clone()).or_insert(ImageMeta {
                manifest: md.clone(),
                added: Utc::now(),
            });
        }
        let entry = RefEntry {
            target: target.clone(),
            image: image.as_ref().map(|(id, _)| id.clone()),
        };
        if reference.tag.is_some() || reference.digest.is_none() {
            let key = ref_key(reference);
            st.state.refs.insert(key, entry.clone());
        }
        let dref = reference.with_digest(target.digest.clone());
        st.state.refs.insert(dref.to_string(), entry);
        st.save()?;
        match image {
            Some((id, _)) => Ok(Some(self.record(&st.state, &id)?)),
            None => Ok(None),
        }
    }

    /// Points `reference` at `target` without trying to resolve it to an image (registry
    /// side: artifacts, foreign platforms, indexes whose children live elsewhere). The
    /// target blob must be stored and at most [`MAX_MANIFEST_SIZE`]. A tag reference also
    /// records `repo@<target digest>`.
    pub fn put_ref(&self, reference: &Reference, target: &Descriptor) -> Result<()> {
        if target.size > MAX_MANIFEST_SIZE {
            return Err(ImageError::ManifestTooLarge(target.digest.to_string()));
        }
        if !self.content.exists(&target.digest) {
            return Err(ContentError::NotFound(target.digest.clone()).into());
        }
        let mut st = self.lock(true)?;
        let entry = RefEntry {
            target: target.clone(),
            image: None,
        };
        if reference.tag.is_some() || reference.digest.is_none() {
            st.state.refs.insert(ref_key(reference), entry.clone());
        }
        let dref = reference.with_digest(target.digest.clone());
        st.state.refs.insert(dref.to_string(), entry);
        st.save()
    }

    fn is_image_target(&self, target: &Descriptor) -> bool {
        media_types::is_index(&target.media_type) || media_types::is_manifest(&target.media_type)
    }

    /// Adds the tag `new` (a reference with a tag) to the image `id`.
    pub fn tag(&self, id: &Digest, new: &Reference) -> Result<ImageRecord> {
        let mut st = self.lock(true)?;
        let meta = st
            .state
            .images
            .get(id)
            .cloned()
            .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
        st.state.refs.insert(
            ref_key(new),
            RefEntry {
                target: meta.manifest,
                image: Some(id.clone()),
            },
        );
        st.save()?;
        self.record(&st.state, id)
    }

    /// Removes one ref. Returns the image id it named (if it named an image).
    pub fn untag(&self, reference: &Reference) -> Result<Option<Digest>> {
        let mut st = self.lock(true)?;
        let key = ref_key(reference);
        let e = st
            .state
            .refs
            .remove(&key)
            .ok_or_else(|| ImageError::NotFound(reference.familiar()))?;
        st.save()?;
        Ok(e.image)
    }

    /// The target descriptor a ref points at (for a registry's manifest GET by tag), if any.
    pub fn get_ref(&self, reference: &Reference) -> Result<Option<Descriptor>> {
        let st = self.lock(false)?;
        Ok(st
            .state
            .refs
            .get(&ref_key(reference))
            .map(|e| e.target.clone()))
    }

    /// Tags in one repository (`docker.io/library/busybox` or its familiar form), sorted.
    pub fn tags(&self, repository: &str) -> Result<Vec<String>> {
        let repo = Reference::parse_named(repository)?.repository();
        let st = self.lock(false)?;
        let mut out = Vec::new();
        for k in st.state.refs.keys() {
            if let Ok(r) = Reference::parse_named(k) {
                if r.repository() == repo && r.digest.is_none() {
                    if let Some(t) = r.tag {
                        out.push(t);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every repository that has at least one ref, fully qualified, sorted.
    pub fn repositories(&self) -> Result<Vec<String>> {
        let st = self.lock(false)?;
        let set: BTreeSet<String> = st
            .state
            .refs
            .keys()
            .filter_map(|k| Reference::parse_named(k).ok())
            .map(|r| r.repository())
            .collect();
        Ok(set.into_iter().collect())
    }

    /// Every ref and its target (registry catalog/GC use).
    pub fn refs(&self) -> Result<Vec<(Reference, Descriptor)>> {
        let st = self.lock(false)?;
        Ok(st
            .state
            .refs
            .iter()
            .filter_map(|(k, e)| Some((Reference::parse_named(k).ok()?, e.target.clone())))
            .collect())
    }

    /// The image a reference names. A digest reference also matches an image whose
    /// manifest has that digest.
    pub fn resolve(&self, reference: &Reference) -> Result<ImageRecord> {
        let st = self.lock(false)?;
        self.resolve_in(&st.state, reference)
    }

    fn resolve_in(&self, st: &State, reference: &Reference) -> Result<ImageRecord> {
        let nf = || ImageError::NotFound(reference.familiar());
        if let Some(e) = st.refs.get(&ref_key(reference)) {
            let id = e.image.as_ref().ok_or_else(|| {
                ImageError::NoMatchingPlatform(reference.familiar(), self.platform.to_string())
            })?;
            return self.record(st, id);
        }
        if let Some(d) = &reference.digest {
            let repo = reference.repository();
            // repo@digest where the digest is a platform manifest of a ref in that repo.
            for (id, meta) in &st.images {
                if &meta.manifest.digest == d {
                    let named_here = st.refs.iter().any(|(k, e)| {
                        e.image.as_ref() == Some(id)
                            && Reference::parse_named(k).is_ok_and(|r| r.repository() == repo)
                    });
                    if named_here {
                        return self.record(st, id);
                    }
                }
            }
        }
        Err(nf())
    }

    /// The image with exactly this id.
    pub fn get(&self, id: &Digest) -> Result<ImageRecord> {
        let st = self.lock(false)?;
        self.record(&st.state, id)
    }

    /// The image whose id hex starts with `prefix` (optionally `sha256:`-prefixed), like
    /// docker's short ids. Errors if none or several match.
    pub fn by_id_prefix(&self, prefix: &str) -> Result<ImageRecord> {
        let st = self.lock(false)?;
        self.by_prefix_in(&st.state, prefix)
    }

    fn by_prefix_in(&self, st: &State, prefix: &str) -> Result<ImageRecord> {
        let p = prefix.strip_prefix("sha256:").unwrap_or(prefix);
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ImageError::NotFound(prefix.to_string()));
        }
        let mut found = st.images.keys().filter(|id| id.hex().starts_with(p));
        match (found.next(), found.next()) {
            (Some(id), None) => self.record(st, id),
            (Some(_), Some(_)) => Err(ImageError::Ambiguous(prefix.to_string())),
            _ => Err(ImageError::NotFound(prefix.to_string())),
        }
    }

    /// Docker-style lookup of what a user typed: a full id (`sha256:…`), a reference
    /// (`busybox`, `busybox:1`, `name@sha256:…`), or a unique id prefix.
    pub fn lookup(&self, s: &str) -> Result<ImageRecord> {
        let st = self.lock(false)?;
        if let Ok(d) = Digest::parse(s) {
            return self.record(&st.state, &d);
        }
        if let Ok(r) = Reference::parse(s) {
            match self.resolve_in(&st.state, &r) {
                Ok(rec) => return Ok(rec),
                Err(ImageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match self.by_prefix_in(&st.state, s) {
            Ok(r) => Ok(r),
            Err(ImageError::NotFound(_)) => Err(ImageError::NotFound(s.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let st = self.lock(false)?;
        let mut out = Vec::new();
        for id in st.state.images.keys() {
            match self.record(&st.state, id) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(image = %id, error = %e, "skipping unreadable image"),
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(b.added.cmp(&a.added)));
        Ok(out)
    }

    /// The parsed config of image `id`.
    pub fn get_config(&self, id: &Digest) -> Result<ImageConfig> {
        ImageConfig::parse(&self.read_config_bytes(id)?)
    }

    /// The platform manifest of image `id`.
    pub fn get_manifest(&self, id: &Digest) -> Result<Manifest> {
        let rec = self.get(id)?;
        match self.read_manifest(&rec.manifest)? {
            ParsedManifest::Manifest(m) => Ok(*m),
            ParsedManifest::Index(_) => {
                Err(invalid("manifest", &rec.manifest.digest, "is an index"))
            }
        }
    }

    /// Removes the image `id` and every ref naming it from the index (not its blobs or
    /// snapshots: see `Store::remove_image` and `Store::gc`). Returns the refs removed.
    pub fn delete_image(&self, id: &Digest) -> Result<Vec<Reference>> {
        let mut st = self.lock(true)?;
        if st.state.images.remove(id).is_none() {
            return Err(ImageError::NotFound(id.to_string()));
        }
        let keys: Vec<String> = st
            .state
            .refs
            .iter()
            .filter(|(_, e)| e.image.as_ref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        let mut removed = Vec::new();
        for k in keys {
            st.state.refs.remove(&k);
            if let Ok(r) = Reference::parse_named(&k) {
                removed.push(r);
            }
        }
        st.save()?;
        Ok(removed)
    }

    /// Every digest the index keeps alive: ref targets and image manifests (the roots of
    /// garbage collection).
    pub fn roots(&self) -> Result<(Vec<Descriptor>, Vec<Digest>)> {
        let st = self.lock(false)?;
        let targets = st.state.refs.values().map(|e| e.target.clone()).collect();
        let images = st.state.images.keys().cloned().collect();
        Ok((targets, images))
    }

    fn record(&self, st: &State, id: &Digest) -> Result<ImageRecord> {
        let meta = st
            .images
            .get(id)
            .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
        let (m, cfg) = self.check_image(&meta.manifest)?;
        let mut references: Vec<Reference> = st
            .refs
            .iter()
            .filter(|(_, e)| e.image.as_ref() == Some(id))
            .filter_map(|(k, _)| Reference::parse_named(k).ok())
            .collect();
        references.sort();
        let repo_tags = references
            .iter()
            .filter(|r| r.digest.is_none())
            .map(Reference::familiar)
            .collect();
        let repo_digests = references
            .iter()
            .filter(|r| r.digest.is_some())
            .map(|r| {
                let mut r = r.clone();
                r.tag = None;
                r.familiar()
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let chain_ids = cfg.chain_ids();
        let unpacked: Option<u64> = self.layer_sizes.as_ref().and_then(|ls| {
            chain_ids
                .iter()
                .map(|c| ls.layer_size(c))
                .sum::<Option<u64>>()
        });
        Ok(ImageRecord {
            id: id.clone(),
            manifest: meta.manifest.clone(),
            config: m.config.clone(),
            size: unpacked.unwrap_or_else(|| m.layers.iter().map(|l| l.size).sum()),
            layers: m.layers,
            chain_ids,
            diff_ids: cfg.rootfs.diff_ids.clone(),
            repo_tags,
            repo_digests,
            references,
            created: cfg.created_time(),
            added: meta.added,
            architecture: cfg.architecture,
            os: cfg.os,
        })
    }
}

/// Applies docker `--change` instructions (`CMD`, `ENTRYPOINT`, `ENV`, `EXPOSE`, `LABEL`,
/// `USER`, `WORKDIR`, `VOLUME`, `STOPSIGNAL`, `ONBUILD`) to a container config, as
/// `docker import --change` and `docker commit --change` do. `CMD`/`ENTRYPOINT` accept
/// JSON-array (exec) or shell form (wrapped in `/bin/sh -c`).
pub fn apply_changes(cfg: &mut ContainerConfig, changes: &[String]) -> Result<()> {
    for change in changes {
        let change = change.trim();
        let (instr, rest) = change
            .split_once(char::is_whitespace)
            .map(|(a, b)| (a, b.trim()))
            .unwrap_or((change, ""));
        let bad = |why: &str| invalid("change", change, why.to_string());
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => cfg.cmd = Some(exec_or_shell(rest)),
            "ENTRYPOINT" => cfg.entrypoint = Some(exec_or_shell(rest)),
            "SHELL" => {
                cfg.shell =
                    Some(serde_json::from_str(rest).map_err(|_| bad("SHELL needs a JSON array"))?)
            }
            "ENV" => {
                let pairs = key_values(rest).ok_or_else(|| bad("ENV needs KEY=value"))?;
                let env = cfg.env.get_or_insert_with(Vec::new);
                for (k, v) in pairs {
                    env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                    env.push(format!("{k}={v}"));
                }
            }
            "LABEL" => {
                let pairs = key_values(rest).ok_or_else(|| bad("LABEL needs key=value"))?;
                let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in pairs {
                    labels.insert(k, v);
                }
            }
            "EXPOSE" => {
                let ports = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in rest.split_whitespace() {
                    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                    if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(bad("EXPOSE needs port[/proto]"));
                    }
                    ports.insert(format!("{num}/{proto}"), Value::Object(Default::default()));
                }
            }
            "VOLUME" => {
                let vols: Vec<String> = if rest.starts_with('[') {
                    serde_json::from_str(rest).map_err(|_| bad("VOLUME JSON array"))?
                } else {
                    rest.split_whitespace().map(str::to_string).collect()
                };
                let v = cfg.volumes.get_or_insert_with(BTreeMap::new);
                for p in vols {
                    v.insert(p, Value::Object(Default::default()));
                }
            }
            "USER" if !rest.is_empty() => cfg.user = Some(rest.to_string()),
            "WORKDIR" if !rest.is_empty() => cfg.working_dir = Some(rest.to_string()),
            "STOPSIGNAL" if !rest.is_empty() => cfg.stop_signal = Some(rest.to_string()),
            "ONBUILD" if !rest.is_empty() => cfg
                .on_build
                .get_or_insert_with(Vec::new)
                .push(rest.to_string()),
            _ => return Err(bad("unsupported or empty instruction")),
        }
    }
    Ok(())
}

fn exec_or_shell(rest: &str) -> Vec<String> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return v;
        }
    }
    vec!["/bin/sh".into(), "-c".into(), rest.to_string()]
}

/// Parses `k=v k2="v 2"` (or the legacy single `KEY value` form).
fn key_values(s: &str) -> Option<Vec<(String, String)>> {
    let first = s.split_whitespace().next()?;
    if !first.contains('=') {
        let (k, v) = s.split_once(char::is_whitespace)?;
        return Some(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        let mut val = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, '\\') => {
                    chars.next();
                    if let Some(n) = chars.peek() {
                        val.push(*n);
                    }
                }
                (_, c) => val.push(c),
            }
            chars.next();
        }
        if key.is_empty() || quote.is_some() {
            return None;
        }
        out.push((key, val));
    }
    Some(out)
}

/// The key under which a reference is stored: tag refs without digest, digest refs without tag.
fn ref_key(r: &Reference) -> String {
    let mut r = r.clone();
    if r.digest.is_some() {
        r.tag = None;
    }
    r.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[test]
    fn chain_ids_follow_spec() {
        let a = d("a");
        let b = d("b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn manifest_size_limit() {
        let big = vec![b' '; (MAX_MANIFEST_SIZE + 1) as usize];
        assert!(matches!(
            parse_manifest(&big, None),
            Err(ImageError::ManifestTooLarge(_))
        ));
    }

    #[test]
    fn platform_selection() {
        let mk = |arch: &str, variant: Option<&str>, tag: &str| {
            let mut desc = Descriptor::new(media_types::OCI_MANIFEST, d(tag), 1);
            desc.platform = Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
                ..Default::default()
            });
            desc
        };
        let mut att = mk("unknown", None, "att");
        att.annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        let idx = Index {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.into()),
            manifests: vec![
                att,
                mk("arm", Some("v6"), "armv6"),
                mk("arm", Some("v7"), "armv7"),
                mk("arm64", Some("v8"), "arm64"),
                mk("amd64", None, "amd64"),
            ],
            annotations: BTreeMap::new(),
        };
        let amd = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        };
        assert_eq!(idx.select(&amd).unwrap().digest, d("amd64"));
        let arm64 = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
            ..Default::default()
        };
        assert_eq!(idx.select(&arm64).unwrap().digest, d("arm64"));
        let armv7 = Platform {
            architecture: "arm".into(),
            os: "linux".into(),
            variant: Some("v7".into()),
            ..Default::default()
        };
        assert_eq!(idx.select(&armv7).unwrap().digest, d("armv7"));
        let s390 = Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
            ..Default::default()
        };
        assert!(idx.select(&s390).is_none());
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(Platform::host(), amd);
        }
    }

    #[test]
    fn changes_apply_like_docker() {
        let mut c = ContainerConfig::default();
        let ch: Vec<String> = [
            r#"CMD ["sh"]"#,
            "ENTRYPOINT /entry.sh --x",
            "ENV A=b C=\"d e\"",
            "ENV LEGACY some value",
            "WORKDIR /x",
            "EXPOSE 80 53/udp",
            "USER 1000:1000",
            "LABEL maintainer=me version=\"1 2\"",
            "VOLUME /data",
            "STOPSIGNAL SIGINT",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        apply_changes(&mut c, &ch).unwrap();
        assert_eq!(c.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(
            c.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "/entry.sh --x".into()])
        );
        assert_eq!(
            c.env,
            Some(vec![
                "A=b".into(),
                "C=d e".into(),
                "LEGACY=some value".into()
            ])
        );
        assert_eq!(c.working_dir.as_deref(), Some("/x"));
        let ports: Vec<_> = c.exposed_ports.unwrap().into_keys().collect();
        assert_eq!(ports, vec!["53/udp".to_string(), "80/tcp".to_string()]);
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.labels.unwrap()["version"], "1 2");
        assert!(c.volumes.unwrap().contains_key("/data"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        let mut c = ContainerConfig::default();
        assert!(apply_changes(&mut c, &["FROM x".into()]).is_err());
        assert!(apply_changes(&mut c, &["EXPOSE abc".into()]).is_err());
    }

    #[test]
    fn config_keeps_unknown_fields() {
        let raw = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"],"Foo":1},"rootfs":{"type":"layers","diff_ids":[]},"weird":true}"#;
        let c = ImageConfig::parse(raw).unwrap();
        assert_eq!(
            c.config.as_ref().unwrap().cmd.as_deref(),
            Some(&["sh".to_string()][..])
        );
        let v: Value = serde_json::to_value(&c).unwrap();
        assert_eq!(v["weird"], Value::Bool(true));
        assert_eq!(v["config"]["Foo"], Value::from(1));
    }
}
