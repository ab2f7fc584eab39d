//! Berth's image store: content-addressed blobs, the image index, layers, overlayfs
//! snapshots, archives and garbage collection.
//!
//! # Model (bottom-up)
//!
//! * [`digest`]: validated `sha256:<hex>` digests and hashing readers/writers.
//! * [`content`]: the blob store at `<root>/blobs/<alg>/<hex>`. Uploads stream into
//!   `<root>/ingest/` under a caller-chosen *ref key*, are resumable, and become visible only
//!   after [`content::BlobWriter::commit`] verified size and digest (fsync + atomic rename).
//! * [`reference`]: docker reference parsing and normalisation (`busybox` →
//!   `docker.io/library/busybox:latest`).
//! * [`image`]: manifests / indexes / configs (OCI and Docker media types), platform
//!   selection, and [`image::ImageStore`], the crash-safe index of refs → images
//!   (`<root>/images.json`). An image's id is its config digest.
//!
//! Everything is synchronous (no tokio): call it from async code with `spawn_blocking`.
//! Every public error implements [`errkind::HasKind`].

pub mod content;
pub mod digest;
pub mod image;
pub mod reference;

pub use content::{BlobWriter, ContentStore};
pub use digest::Digest;
pub use image::{Descriptor, ImageConfig, ImageRecord, ImageStore};
pub use reference::Reference;
