//! [`Store`]: the whole image store under one root, and the operations that span its parts
//! (import, unpack, container snapshots, removal, garbage collection, disk usage).
//!
//! # Layout
//!
//! ```text
//! <root>/blobs/sha256/<hex>      content store (ContentStore)
//! <root>/ingest/                 partial uploads
//! <root>/images.json             image index (ImageStore)
//! <root>/snapshots/              overlayfs snapshots (Snapshotter)
//! ```
//!
//! # What keeps what alive
//!
//! Garbage collection ([`Store::gc`]) keeps: every blob reachable from a ref target or an
//! image (index → manifests → config + layers), every committed snapshot on an image's
//! chain, and every committed snapshot under an **active snapshot** — the engine's
//! container snapshots are its leases: while a container's snapshot exists, its image's
//! layers stay, even if the image is removed with `force`. Blobs and snapshots younger than
//! [`GcOptions::grace`] are kept too, so a pull or load that has written blobs but not yet
//! registered its image is not collected under its feet. A kept derived blob (a build
//! layer stored only as its snapshot, see [`crate::content`]) keeps that snapshot; a
//! derived record whose snapshot is gone is dropped.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use errkind::{ErrorKind, HasKind};

use crate::content::{ContentError, ContentStore};
use crate::digest::{Digest, HashingReader};
use crate::image::{
    apply_changes, chain_ids, media_types, ContainerConfig, Descriptor, History, ImageConfig,
    ImageError, ImageRecord, ImageStore, Manifest, ParsedManifest, RootFs,
};
use crate::layer::{self, ApplyOptions, DevicePolicy};
use crate::reference::Reference;
use crate::snapshot::{Mount, SnapshotError, Snapshotter};

/// Errors from store-wide operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The image is used by a container snapshot (or is named by several repositories and
    /// was addressed by id) and `force` was not given.
    #[error("conflict: unable to remove image {image}: {reason}")]
    Conflict {
        /// The image as the user named it.
        image: String,
        /// Why.
        reason: String,
    },
    /// An archive (import/save/load input) is malformed.
    #[error("invalid archive: {0}")]
    InvalidArchive(String),
    /// An archive stream could not be read as a (compressed) tar.
    #[error("invalid archive: {op}")]
    CorruptArchive {
        /// What was being read.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// From the content store.
    #[error("store content")]
    Content(#[from] ContentError),
    /// From the image index.
    #[error("store image")]
    Image(#[from] ImageError),
    /// From the snapshotter.
    #[error("store snapshot")]
    Snapshot(#[from] SnapshotError),
    /// From layer handling.
    #[error("store layer")]
    Layer(#[from] layer::LayerError),
    /// I/O on an archive stream or store file.
    #[error("store {op}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl HasKind for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Conflict { .. } => ErrorKind::Conflict,
            StoreError::InvalidArchive(_) | StoreError::CorruptArchive { .. } => {
                ErrorKind::InvalidArgument
            }
            StoreError::Content(e) => e.kind(),
            StoreError::Image(e) => e.kind(),
            StoreError::Snapshot(e) => e.kind(),
            StoreError::Layer(e) => e.kind(),
            StoreError::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias for store-wide operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn sio(op: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

/// Options for [`Store::import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Docker `--change` instructions (`CMD ["sh"]`, `ENV A=b`, …).
    pub changes: Vec<String>,
    /// Name to tag the image with.
    pub reference: Option<Reference>,
    /// History comment (docker: "Imported from -").
    pub message: Option<String>,
}

/// One step of a removal, as docker reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    /// A ref was removed (familiar form, `busybox:latest` or `busybox@sha256:…`).
    Untagged(String),
    /// An image (or a layer) was deleted.
    Deleted(Digest),
}

/// Options for [`Store::gc_with`].
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unreferenced blobs and snapshots younger than this are kept.
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(600),
        }
    }
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs: Vec<Digest>,
    /// Committed snapshots (chain ids) deleted.
    pub snapshots: Vec<Digest>,
    /// Bytes freed (blob sizes + snapshot disk usage).
    pub bytes: u64,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Removal steps.
    pub events: Vec<RemoveEvent>,
    /// Bytes freed.
    pub space_reclaimed: u64,
}

/// What [`Store::commit`] makes of a container's changes.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The run configuration of the new image; `None` keeps the parent's.
    pub config: Option<ContainerConfig>,
    /// Dockerfile instructions applied on top (`--change`, see [`apply_changes`]).
    pub changes: Vec<String>,
    /// History comment (`-m`).
    pub comment: Option<String>,
    /// Author (`-a`), in the config and the history entry.
    pub author: Option<String>,
    /// The history entry's `created_by` (docker: the container's command).
    pub created_by: Option<String>,
}

/// Per-image disk usage for `system df`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUsage {
    /// Image id.
    pub id: Digest,
    /// Uncompressed size of its unpacked layers (docker's image size; 0 when not unpacked).
    pub size: u64,
    /// Of which bytes are in layers shared with other images.
    pub shared_size: u64,
    /// Number of active (container) snapshots on it.
    pub containers: usize,
}

/// Disk usage summary for `system df`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskUsage {
    /// Images.
    pub images: Vec<ImageUsage>,
    /// Total bytes of blobs.
    pub blobs: u64,
    /// Total disk bytes of committed snapshots.
    pub snapshots: u64,
    /// Active snapshots: key and bytes written.
    pub containers: Vec<(String, u64)>,
}

/// The image store; see the module docs. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    content: ContentStore,
    images: ImageStore,
    snapshots: Snapshotter,
    apply: ApplyOptions,
}

impl Store {
    /// Opens (creating if needed) a store at `root`. When not running as root, layers are
    /// applied without chown and device nodes are skipped.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let snapshots = Snapshotter::open(root.join("snapshots"))?;
        // Build layers are kept as snapshots only; their tars are made when read.
        let content =
            ContentStore::open(&root)?.with_source(std::sync::Arc::new(snapshots.clone()));
        let images = ImageStore::open(&root, content.clone())?
            .with_layer_sizes(std::sync::Arc::new(snapshots.clone()));
        let rootless = !nix::unistd::geteuid().is_root();
        Ok(Store {
            root,
            content,
            images,
            snapshots,
            apply: ApplyOptions {
                ignore_ownership: rootless,
                devices: if rootless {
                    DevicePolicy::Skip
                } else {
                    DevicePolicy::Create
                },
            },
        })
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The image index.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The snapshotter.
    pub fn snapshots(&self) -> &Snapshotter {
        &self.snapshots
    }

    /// Options used when applying layers.
    pub fn apply_options(&self) -> &ApplyOptions {
        &self.apply
    }

    /// Makes sure a committed snapshot exists for every layer of `image` (extracting the
    /// missing ones from their blobs, verifying diff ids). Returns the top chain id (`None`
    /// for an image without layers).
    pub fn unpack(&self, image: &ImageRecord) -> Result<Option<Digest>> {
        let mut parent: Option<&Digest> = None;
        for (i, chain) in image.chain_ids.iter().enumerate() {
            if !self.snapshots.exists(chain) {
                let layer = image.layers.get(i).ok_or_else(|| {
                    StoreError::InvalidArchive(format!("image {} lacks layer {i}", image.id))
                })?;
                let blob = self.content.open_blob(&layer.digest)?;
                self.snapshots.apply_layer(
                    chain,
                    parent,
                    &image.diff_ids[i],
                    io::BufReader::with_capacity(1 << 20, blob),
                    &self.apply,
                )?;
            }
            parent = Some(chain);
        }
        Ok(image.chain_ids.last().cloned())
    }

    /// Unpacks `image` and creates the active snapshot `key` on it (a container's rootfs).
    /// Returns the mounts; see [`Snapshotter::prepare`].
    pub fn prepare_container(&self, key: &str, image: &ImageRecord) -> Result<Vec<Mount>> {
        let top = self.unpack(image)?;
        Ok(self.snapshots.prepare(key, top.as_ref())?)
    }

    /// Imports a root filesystem tarball (plain, gzip or zstd) as a one-layer image, like
    /// `docker import`. The layer is stored gzip-compressed, unpacked (which validates it),
    /// and the image is registered and optionally tagged. Returns its record.
    pub fn import<R: Read>(&self, reader: R, opts: &ImportOptions) -> Result<ImageRecord> {
        let mut cc = ContainerConfig::default();
        apply_changes(&mut cc, &opts.changes)?;
        let (_, dec) = layer::decompress(reader).map_err(sio("read import stream"))?;
        let mut hr = HashingReader::new(dec);
        let ref_key = format!(
            "import-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        let bw = self.content.writer(&ref_key)?;
        let mut gz = flate2::write::GzEncoder::new(bw, flate2::Compression::fast());
        io::copy(&mut hr, &mut gz).map_err(sio("import layer"))?;
        let bw = gz.finish().map_err(sio("compress layer"))?;
        let size = bw.offset();
        let (_, diff_id, _) = hr.finish();
        let existed = self.content.exists(&bw.digest());
        let layer_digest = bw.commit(Some(size), None)?;
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let host = self.images.platform().clone();
        let config = ImageConfig {
            created: Some(now.clone()),
            author: None,
            architecture: host.architecture.clone(),
            os: host.os.clone(),
            variant: host.variant.clone(),
            config: Some(cc),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id.clone()],
            },
            history: vec![History {
                created: Some(now),
                created_by: None,
                author: None,
                comment: Some(
                    opts.message
                        .clone()
                        .unwrap_or_else(|| "Imported from -".to_string()),
                ),
                empty_layer: None,
            }],
            extra: Default::default(),
        };
        let layers = vec![Descriptor::new(
            media_types::OCI_LAYER_GZIP,
            layer_digest.clone(),
            size,
        )];
        let rec = match self.register_image(&config, layers) {
            Ok(r) => r,
            Err(e) => {
                if !existed {
                    let _ = self.content.delete(&layer_digest);
                }
                return Err(e);
            }
        };
        if let Some(r) = &opts.reference {
            return Ok(self.images.tag(&rec.id, r)?);
        }
        Ok(rec)
    }

    /// Stores `config` and a manifest over `layers` (blobs already stored), unpacks the
    /// layers (validating them) and registers the image. Used by import, commit and build.
    pub fn register_image(
        &self,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
    ) -> Result<ImageRecord> {
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(StoreError::InvalidArchive(format!(
                "{} layers but {} diff ids",
                layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        // Validate by unpacking before anything describing the image is written.
        let chains = chain_ids(&config.rootfs.diff_ids);
        let mut parent: Option<&Digest> = None;
        for (i, chain) in chains.iter().enumerate() {
            if !self.snapshots.exists(chain) {
                let blob = self.content.open_blob(&layers[i].digest)?;
                self.snapshots.apply_layer(
                    chain,
                    parent,
                    &config.rootfs.diff_ids[i],
                    io::BufReader::with_capacity(1 << 20, blob),
                    &self.apply,
                )?;
            }
            parent = Some(chain);
        }
        let cfg_bytes =
            serde_json::to_vec(config).map_err(|e| sio("encode config")(io::Error::other(e)))?;
        let cfg_digest = self.content.put_bytes(&cfg_bytes)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_types::OCI_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::new(media_types::OCI_CONFIG, cfg_digest, cfg_bytes.len() as u64),
            layers,
            subject: None,
            annotations: Default::default(),
        };
        let m_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| sio("encode manifest")(io::Error::other(e)))?;
        let m_digest = self.content.put_bytes(&m_bytes)?;
        let mdesc = Descriptor::new(media_types::OCI_MANIFEST, m_digest, m_bytes.len() as u64);
        Ok(self.images.add_image(&mdesc)?)
    }

    /// Commits the changes of active snapshot `key` as a new image on top of `parent`
    /// (`docker commit`): the diff becomes a gzip layer, the config is the parent's with
    /// `changes` applied and the new layer appended. Returns the new image.
    pub fn commit_container(
        &self,
        key: &str,
        parent: Option<&ImageRecord>,
        changes: &[String],
        comment: Option<&str>,
        author: Option<&str>,
    ) -> Result<ImageRecord> {
        self.commit(
            key,
            parent,
            &CommitOptions {
                changes: changes.to_vec(),
                comment: comment.map(str::to_string),
                author: author.map(str::to_string),
                ..Default::default()
            },
        )
    }

    /// Commits the changes of active snapshot `key` as a new image on top of `parent`: the
    /// diff of its upper dir becomes a gzip layer appended to the parent's layers; the run
    /// configuration is [`CommitOptions::config`] (else the parent's) with
    /// [`CommitOptions::changes`] applied; a history entry records author, comment and
    /// `created_by`. The layer is unpacked as a committed snapshot before the image is
    /// registered (see [`Store::register_image`]). Returns the new (untagged) image.
    pub fn commit(
        &self,
        key: &str,
        parent: Option<&ImageRecord>,
        opts: &CommitOptions,
    ) -> Result<ImageRecord> {
        let changes = &opts.changes;
        let author = opts.author.as_deref();
        let comment = opts.comment.as_deref();
        let (mut config, mut layers) = match parent {
            Some(p) => {
                let m = self.images.get_manifest(&p.id)?;
                (self.images.get_config(&p.id)?, m.layers)
            }
            None => {
                let host = self.images.platform().clone();
                (
                    ImageConfig {
                        created: None,
                        author: None,
                        architecture: host.architecture,
                        os: host.os,
                        variant: host.variant,
                        config: None,
                        rootfs: RootFs {
                            kind: "layers".into(),
                            diff_ids: vec![],
                        },
                        history: vec![],
                        extra: Default::default(),
                    },
                    vec![],
                )
            }
        };
        if let Some(c) = &opts.config {
            config.config = Some(c.clone());
        }
        let ref_key = format!(
            "commit-{key}-{}",
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        let bw = self.content.writer(&ref_key)?;
        let mut gz = flate2::write::GzEncoder::new(bw, flate2::Compression::fast());
        let diff = self.snapshots.diff(key, &mut gz)?;
        let bw = gz.finish().map_err(sio("compress layer"))?;
        let size = bw.offset();
        let digest = bw.commit(Some(size), None)?;
        let mut cc = config.config.take().unwrap_or_default();
        apply_changes(&mut cc, changes)?;
        config.config = Some(cc);
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        config.created = Some(now.clone());
        if let Some(a) = author {
            config.author = Some(a.to_string());
        }
        config.rootfs.diff_ids.push(diff.diff_id);
        config.history.push(History {
            created: Some(now),
            created_by: opts.created_by.clone(),
            author: author.map(str::to_string),
            comment: comment.map(str::to_string),
            empty_layer: None,
        });
        layers.push(Descriptor::new(media_types::OCI_LAYER_GZIP, digest, size));
        self.register_image(&config, layers)
    }

    /// Chain ids used by active snapshots (and their ancestors).
    fn active_chains(&self) -> Result<HashSet<Digest>> {
        let mut out = HashSet::new();
        for a in self.snapshots.list_active()? {
            let mut cur = a.parent;
            while let Some(c) = cur {
                if !out.insert(c.clone()) {
                    break;
                }
                cur = self.snapshots.parent_of(&c).unwrap_or(None);
            }
        }
        Ok(out)
    }

    /// Whether a container (active snapshot) was created directly on `image`.
    fn in_use(&self, image: &ImageRecord) -> Result<bool> {
        let Some(top) = image.top_chain_id() else {
            return Ok(false);
        };
        Ok(self
            .snapshots
            .list_active()?
            .iter()
            .any(|a| a.parent.as_ref() == Some(top)))
    }

    /// Removes an image like `docker rmi`: `name` is a reference, id or id prefix. A
    /// reference with other refs left only untags. Otherwise the image's refs are removed,
    /// the image is deleted, and its blobs and snapshots that nothing else uses are freed.
    /// An image used by a container snapshot is a [`StoreError::Conflict`] unless `force`
    /// (then it is deleted but its snapshots stay until the container is removed).
    pub fn remove_image(&self, name: &str, force: bool) -> Result<Vec<RemoveEvent>> {
        let rec = self.images.lookup(name)?;
        let mut events = Vec::new();
        // Named by a ref that is not the last: untag only.
        let by_ref = Reference::parse(name)
            .ok()
            .filter(|r| rec.references.iter().any(|x| same_ref(x, r)));
        if let Some(r) = &by_ref {
            let tags = rec.references.iter().filter(|x| x.digest.is_none()).count();
            let is_tag = r.digest.is_none();
            if (is_tag && tags > 1) || (!is_tag && rec.references.len() > 1) {
                self.images.untag(r)?;
                events.push(RemoveEvent::Untagged(r.familiar()));
                if is_tag {
                    return Ok(events);
                }
            }
        } else if !force {
            let repos: BTreeSet<String> = rec.references.iter().map(|r| r.repository()).collect();
            if repos.len() > 1 {
                return Err(StoreError::Conflict {
                    image: name.to_string(),
                    reason: format!(
                        "image is referenced in multiple repositories ({})",
                        repos.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        if !force && self.in_use(&rec)? {
            return Err(StoreError::Conflict {
                image: name.to_string(),
                reason: format!("image {} is being used by a container", rec.id.short()),
            });
        }
        // Targets (e.g. an index pulled by tag) the image's refs point at, freed with it.
        let mut targets = Vec::new();
        for r in &rec.references {
            if let Ok(Some(t)) = self.images.get_ref(r) {
                targets.push(t.digest);
            }
        }
        for r in self.images.delete_image(&rec.id)? {
            let mut r = r;
            if r.digest.is_some() {
                r.tag = None;
            }
            events.push(RemoveEvent::Untagged(r.familiar()));
        }
        events.push(RemoveEvent::Deleted(rec.id.clone()));
        let report = self.collect(Duration::ZERO, Some((&rec, targets)))?;
        for s in report.snapshots {
            events.push(RemoveEvent::Deleted(s));
        }
        Ok(events)
    }

    /// Removes unused images: dangling ones (no refs) when `dangling_only`, else every image
    /// no container snapshot uses (`docker image prune [-a]`). Then frees their content.
    pub fn prune(&self, dangling_only: bool) -> Result<PruneReport> {
        let active = self.active_chains()?;
        let mut report = PruneReport::default();
        for img in self.images.list()? {
            if dangling_only && !img.references.is_empty() {
                continue;
            }
            if img.top_chain_id().is_some_and(|t| active.contains(t)) {
                continue;
            }
            for r in self.images.delete_image(&img.id)? {
                report.events.push(RemoveEvent::Untagged(r.familiar()));
            }
            report.events.push(RemoveEvent::Deleted(img.id.clone()));
        }
        let gc = self.collect(Duration::ZERO, None)?;
        report.space_reclaimed = gc.bytes;
        Ok(report)
    }

    /// Garbage-collects with the default options (10 minutes grace).
    pub fn gc(&self) -> Result<GcReport> {
        self.gc_with(&GcOptions::default())
    }

    /// Deletes every blob and committed snapshot nothing references (see the module docs).
    pub fn gc_with(&self, opts: &GcOptions) -> Result<GcReport> {
        self.collect(opts.grace, None)
    }

    /// Mark and sweep. With `only = Some(image)`, only that image's blobs and snapshots
    /// are candidates (used right after removing it, no grace needed).
    fn collect(
        &self,
        grace: Duration,
        only: Option<(&ImageRecord, Vec<Digest>)>,
    ) -> Result<GcReport> {
        let mut blobs: HashSet<Digest> = HashSet::new();
        let mut chains: HashSet<Digest> = self.active_chains()?;
        let (targets, image_ids) = self.images.roots()?;
        let mark_manifest = |d: &Descriptor, blobs: &mut HashSet<Digest>| {
            blobs.insert(d.digest.clone());
            if let Ok(ParsedManifest::Manifest(m)) = self.images.read_manifest(d) {
                blobs.insert(m.config.digest.clone());
                blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
            }
        };
        for t in &targets {
            blobs.insert(t.digest.clone());
            match self.images.read_manifest(t) {
                Ok(ParsedManifest::Index(idx)) => {
                    for m in &idx.manifests {
                        mark_manifest(m, &mut blobs);
                    }
                }
                Ok(ParsedManifest::Manifest(_)) => mark_manifest(t, &mut blobs),
                Err(_) => {}
            }
        }
        for id in &image_ids {
            if let Ok(rec) = self.images.get(id) {
                mark_manifest(&rec.manifest, &mut blobs);
                chains.extend(rec.chain_ids.iter().cloned());
            }
        }
        // Derived blobs (build layers kept only as snapshots, see `content`): a kept one
        // keeps the snapshot it is made from, even when no image uses that snapshot any
        // more (another image has the same layer on another parent); one whose snapshot
        // is gone is no blob any more and its record goes. Unkept ones are swept with
        // the blobs below.
        for r in self.content.list_derived()? {
            if !self.snapshots.exists(&r.source) {
                match self.content.delete(&r.digest) {
                    Ok(()) | Err(ContentError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            } else if blobs.contains(&r.digest) {
                chains.insert(r.source);
            }
        }
        if only.is_none() {
            self.snapshots.clean_tmp(grace.max(Duration::from_secs(60)));
        }
        let now = SystemTime::now();
        let old_enough = |t: SystemTime| now.duration_since(t).unwrap_or_default() >= grace;
        let mut report = GcReport::default();
        let candidates: Option<HashSet<Digest>> = only.as_ref().map(|(img, targets)| {
            let mut s: HashSet<Digest> = img.layers.iter().map(|l| l.digest.clone()).collect();
            s.extend(targets.iter().cloned());
            s.insert(img.manifest.digest.clone());
            s.insert(img.id.clone());
            s.extend(img.chain_ids.iter().cloned());
            s
        });
        for b in self.content.list()? {
            if blobs.contains(&b.digest) || !old_enough(b.modified) {
                continue;
            }
            if candidates.as_ref().is_some_and(|c| !c.contains(&b.digest)) {
                continue;
            }
            match self.content.delete(&b.digest) {
                Ok(()) | Err(ContentError::NotFound(_)) => {
                    // A derived blob's bytes are its snapshot's, counted below.
                    if !b.derived {
                        report.bytes += b.size;
                    }
                    report.blobs.push(b.digest);
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Snapshots: delete children before parents isn't needed (each dir is standalone).
        for s in self.snapshots.list_committed()? {
            if chains.contains(&s.chain_id) {
                continue;
            }
            if candidates
                .as_ref()
                .is_some_and(|c| !c.contains(&s.chain_id))
            {
                continue;
            }
            let dir = self.snapshots.committed_fs(&s.chain_id);
            let mtime = fs::metadata(&dir)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if !old_enough(mtime) && only.is_none() {
                continue;
            }
            let usage = crate::snapshot::dir_usage(&dir);
            match self.snapshots.remove_committed(&s.chain_id) {
                Ok(()) | Err(SnapshotError::NotFound(_)) => {
                    report.bytes += usage;
                    report.snapshots.push(s.chain_id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }

    /// Disk usage for `system df`.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let images = self.images.list()?;
        let active = self.snapshots.list_active()?;
        let mut users: HashMap<Digest, usize> = HashMap::new();
        for img in &images {
            for c in &img.chain_ids {
                *users.entry(c.clone()).or_default() += 1;
            }
        }
        let mut sizes: HashMap<Digest, u64> = HashMap::new();
        let mut snapshots = 0;
        for s in self.snapshots.list_committed()? {
            snapshots += self.snapshots.committed_usage(&s.chain_id).unwrap_or(0);
            // Per image: docker's layer size (uncompressed content), as `images` shows.
            let u = self.snapshots.committed_size(&s.chain_id).unwrap_or(0);
            sizes.insert(s.chain_id, u);
        }
        let mut out = DiskUsage {
            snapshots,
            blobs: self
                .content
                .list()?
                .iter()
                .filter(|b| !b.derived)
                .map(|b| b.size)
                .sum(),
            ..Default::default()
        };
        for img in &images {
            let size = img.chain_ids.iter().filter_map(|c| sizes.get(c)).sum();
            let shared_size = img
                .chain_ids
                .iter()
                .filter(|c| users.get(*c).copied().unwrap_or(0) > 1)
                .filter_map(|c| sizes.get(c))
                .sum();
            let containers = active
                .iter()
                .filter(|a| a.parent.is_some() && a.parent.as_ref() == img.top_chain_id())
                .count();
            out.images.push(ImageUsage {
                id: img.id.clone(),
                size,
                shared_size,
                containers,
            });
        }
        for a in &active {
            out.containers.push((
                a.key.clone(),
                self.snapshots.active_usage(&a.key).unwrap_or(0),
            ));
        }
        Ok(out)
    }
}

fn same_ref(stored: &Reference, asked: &Reference) -> bool {
    if asked.digest.is_some() {
        stored.repository() == asked.repository() && stored.digest == asked.digest
    } else {
        stored.digest.is_none() && stored == asked
    }
}
