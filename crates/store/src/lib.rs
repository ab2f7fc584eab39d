//! Berth's image store: content-addressed blobs, the image index, layers, overlayfs
//! snapshots, archives and garbage collection.
//!
//! # Model (bottom-up)
//!
//! * [`digest`]: validated `sha256:<hex>` digests and hashing readers/writers.
//! * [`content`]: the blob store at `<root>/blobs/<alg>/<hex>`. Uploads stream into
//!   `<root>/ingest/` under a caller-chosen *ref key*, are resumable, and become visible only
//!   after [`content::BlobWriter::commit`] verified size and digest (fsync + atomic rename).
//!   A build layer can be a *derived* blob instead: a record naming the committed snapshot
//!   its tar is made from when first read.
//! * [`reference`](mod@reference): docker reference parsing and normalisation (`busybox` →
//!   `docker.io/library/busybox:latest`).
//! * [`image`]: manifests / indexes / configs (OCI and Docker media types), platform
//!   selection, and [`image::ImageStore`], the crash-safe index of refs → images
//!   (`<root>/images.json`). An image's id is its config digest.
//! * [`layer`]: applying layer tars (gzip/zstd/plain) with whiteouts and strict path
//!   confinement, computing diff ids; producing layer tars from overlay upper dirs.
//! * [`snapshot`]: the overlayfs snapshotter: one committed snapshot per chain id, active
//!   snapshots (container rootfs) keyed by the caller, [`snapshot::Mount`] lists and
//!   [`snapshot::mount_all`].
//! * [`Store`] ties them together under one root: `import`, `unpack`, `prepare_container`,
//!   `commit_container`, `remove_image`, `prune`, `gc`, `disk_usage` (and the archive
//!   functions `save` / `load`).
//!
//! Typical engine flow: `Store::open(root)` → `store.images().lookup("busybox")` →
//! `store.prepare_container(container_id, &image)` → `snapshot::mount_all(&mounts, rootfs)`
//! → run → `snapshot::unmount(rootfs)` → `store.snapshots().remove(container_id)`.
//!
//! Typical pull flow (distribution): for each blob, `content().exists(d)` or
//! `content().writer(key)` … `commit(Some(size), Some(&digest))`; then
//! `images().set_ref(&reference, &target_descriptor)` and `store.unpack(&record)`.
//!
//! Everything is synchronous (no tokio): call it from async code with `spawn_blocking`.
//! Every public error implements [`errkind::HasKind`].

#![deny(missing_docs)]

pub mod archive;
pub mod content;
pub mod digest;
pub mod image;
pub mod layer;
pub mod reference;
pub mod snapshot;
mod store;

pub use archive::LoadedImage;
pub use content::{BlobWriter, ContentStore};
pub use digest::Digest;
pub use image::{Descriptor, ImageConfig, ImageRecord, ImageStore};
pub use reference::Reference;
pub use snapshot::{Mount, Snapshotter};
pub use store::{
    CommitOptions, DiskUsage, GcOptions, GcReport, ImageUsage, ImportOptions, PruneReport,
    RemoveEvent, Store, StoreError,
};
