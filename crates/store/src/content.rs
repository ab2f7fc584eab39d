//! Content-addressed blob store.
//!
//! # Model
//!
//! Every blob (layer, config, manifest, index) lives at `<root>/blobs/<alg>/<hex>` and is
//! named by the digest of its bytes. A blob becomes visible there only once it is complete
//! and verified: data is first streamed into `<root>/ingest/<h>.data` (where `<h>` is the
//! sha256 of the caller's *ref key*, an arbitrary string naming one upload such as
//! `"pull-docker.io/library/busybox-layer-<digest>"` or a registry upload UUID), hashed on
//! the way, then [`BlobWriter::commit`] checks the expected size and digest, fsyncs and
//! renames the file atomically into `blobs/`. Nothing half-written is ever under `blobs/`.
//!
//! Ingests are **resumable**: dropping a [`BlobWriter`] without committing (or a killed
//! process) leaves the partial data in `ingest/`; [`ContentStore::writer`] with the same ref
//! key re-hashes that data and continues at [`BlobWriter::offset`]. A failed commit
//! (size or digest mismatch) discards the partial data.
//!
//! **Concurrency**: a writer holds an exclusive `flock` on `ingest/<h>.lock` for its whole
//! life, so a second writer for the same ref key (in this or another process) waits until
//! the first is committed, aborted or dropped, and then continues from whatever is left.
//! Writers with different ref keys that produce the same blob are both fine: the first
//! rename wins and the later commit finds the blob present and succeeds without touching it.
//!
//! **Derived blobs**: a blob can also be present without its bytes being stored, as a
//! small record at `<root>/derived/<alg>/<hex>` (`"<size> <source>\n"`) naming a *source*
//! that can make the bytes again: a build step's layer tar is the diff of a committed
//! snapshot, so only the snapshot is kept (as dockerd keeps build layers) and the tar is
//! made when something reads it. The store knows sources only through the [`BlobSource`]
//! set with [`ContentStore::with_source`] (the image [`Store`](crate::Store) sets its
//! snapshotter); without one, records are ignored. A record counts as the blob
//! ([`exists`](ContentStore::exists), [`info`](ContentStore::info),
//! [`list`](ContentStore::list), [`delete`](ContentStore::delete)) only while its source
//! exists. The first [`open_blob`](ContentStore::open_blob) *materializes* it: the source
//! writes the bytes through an ordinary [`BlobWriter`], whose commit verifies size and
//! digest (a source that no longer makes those bytes is [`ContentError::SourceChanged`],
//! and nothing is stored); the real blob then replaces the record.
//! [`gzip_of`](ContentStore::gzip_of) compresses a derived blob straight from its source
//! (verified the same way) and leaves it derived.
//!
//! All methods are synchronous and the types are `Send + Sync`; call them from async code
//! through `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use errkind::{ErrorKind, HasKind};
use nix::fcntl::{Flock, FlockArg};

use crate::digest::{Algorithm, Digest, Hasher};

/// Errors from the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// No blob with this digest is stored.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// The committed data does not have the expected size; the partial data was discarded.
    #[error("blob size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Size the caller expected.
        expected: u64,
        /// Size of the data written.
        actual: u64,
    },
    /// The committed data does not hash to the expected digest; the partial data was discarded.
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Digest the caller expected.
        expected: Digest,
        /// Digest of the data written.
        actual: Digest,
    },
    /// The blob is larger than the caller's bound.
    #[error("blob {digest} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// A derived blob's source no longer makes the bytes it was recorded with (its
    /// snapshot changed on disk); nothing was stored.
    #[error("blob {digest} cannot be made again from {source_id}: its content changed")]
    SourceChanged {
        /// The derived blob.
        digest: Digest,
        /// The source it was recorded with.
        source_id: Digest,
    },
    /// A filesystem operation failed.
    #[error("content store: {op} {path}")]
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

impl HasKind for ContentError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContentError::NotFound(_) => ErrorKind::NotFound,
            ContentError::SizeMismatch { .. }
            | ContentError::DigestMismatch { .. }
            | ContentError::TooLarge { .. } => ErrorKind::InvalidArgument,
            ContentError::SourceChanged { .. } | ContentError::Io { .. } => ErrorKind::Internal,
        }
    }
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContentError {
    let path = path.to_path_buf();
    move |source| ContentError::Io { op, path, source }
}

/// Result alias for this module.
pub type Result<T, E = ContentError> = std::result::Result<T, E>;

/// Metadata about one stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed (file modification time; a derived blob's: its record's).
    pub modified: SystemTime,
    /// Whether it is a derived blob (see the module docs): not stored, so its size takes
    /// no disk space of its own.
    pub derived: bool,
}

/// What makes derived blobs (see the module docs); implemented by the snapshotter.
pub trait BlobSource: Send + Sync + std::fmt::Debug {
    /// Whether `source` exists (and so can make its blob).
    fn has_source(&self, source: &Digest) -> bool;
    /// Writes the bytes of the blob made from `source` to `out`.
    fn write_blob(&self, source: &Digest, out: &mut dyn Write) -> io::Result<()>;
}

/// A derived blob's record (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedRecord {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// What makes it (for the image store: a committed snapshot's chain id).
    pub source: Digest,
    /// When the record was written.
    pub modified: SystemTime,
}

/// A content-addressed blob store rooted at a directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
    source: Option<Arc<dyn BlobSource>>,
}

impl ContentStore {
    /// Opens (creating if needed) a content store at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<ContentStore> {
        let root = root.as_ref().to_path_buf();
        for d in ["blobs/sha256", "blobs/sha512", "ingest"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err("create directory", &p))?;
        }
        Ok(ContentStore { root, source: None })
    }

    /// This store with `source` making its derived blobs (see the module docs).
    pub fn with_source(mut self, source: Arc<dyn BlobSource>) -> ContentStore {
        self.source = Some(source);
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    fn ingest_base(&self, ref_key: &str) -> PathBuf {
        let h = Digest::sha256_of(ref_key.as_bytes());
        self.root.join("ingest").join(h.hex())
    }

    /// Opens a writer for the upload named `ref_key`, resuming any partial data left by an
    /// earlier writer with the same key. Blocks while another writer holds the same key.
    pub fn writer(&self, ref_key: &str) -> Result<BlobWriter> {
        let base = self.ingest_base(ref_key);
        let lock_path = base.with_extension("lock");
        let data_path = base.with_extension("data");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open ingest lock", &lock_path))?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| ContentError::Io {
                op: "lock ingest",
                path: lock_path.clone(),
                source: e.into(),
            })?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&data_path)
            .map_err(io_err("open ingest data", &data_path))?;
        // Re-hash whatever an earlier writer left behind.
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut offset = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(io_err("read ingest data", &data_path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(io_err("seek ingest data", &data_path))?;
        Ok(BlobWriter {
            store: self.clone(),
            data_path,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            hasher,
            offset,
            writeback: offset,
            _lock: lock,
        })
    }

    /// The number of bytes already ingested under `ref_key` (0 if none). Does not lock.
    pub fn ingest_offset(&self, ref_key: &str) -> u64 {
        fs::metadata(self.ingest_base(ref_key).with_extension("data"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Discards any partial data ingested under `ref_key` (waits for a live writer).
    pub fn abort_ingest(&self, ref_key: &str) -> Result<()> {
        self.writer(ref_key)?.abort()
    }

    /// Whether a blob with this digest is stored (or derived from a source that exists).
    pub fn exists(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file() || self.derived(digest).is_some()
    }

    fn derived_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("derived")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// The record of derived blob `digest`, whatever its source's state.
    fn derived_record(&self, digest: &Digest) -> Option<DerivedRecord> {
        let p = self.derived_path(digest);
        let text = fs::read_to_string(&p).ok()?;
        let mut parts = text.split_whitespace();
        let size = parts.next()?.parse::<u64>().ok()?;
        let source = Digest::parse(parts.next()?).ok()?;
        let modified = fs::metadata(&p)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Some(DerivedRecord {
            digest: digest.clone(),
            size,
            source,
            modified,
        })
    }

    /// The record of derived blob `digest` when its source exists (so it is present).
    pub fn derived(&self, digest: &Digest) -> Option<DerivedRecord> {
        let src = self.source.as_ref()?;
        self.derived_record(digest)
            .filter(|r| src.has_source(&r.source))
    }

    /// The files named by a digest under `<root>/<top>/<alg>/`, with those digests.
    fn entries(&self, top: &str, op: &'static str) -> Result<Vec<(Digest, fs::DirEntry)>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join(top).join(alg.as_str());
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(op, &dir)(e)),
            };
            for ent in rd {
                let ent = ent.map_err(io_err(op, &dir))?;
                let name = ent.file_name();
                if let Some(d) = name.to_str().and_then(|n| Digest::from_hex(alg, n).ok()) {
                    out.push((d, ent));
                }
            }
        }
        Ok(out)
    }

    /// Every derived blob record, those whose source is gone included (for garbage
    /// collection, which drops those).
    pub fn list_derived(&self) -> Result<Vec<DerivedRecord>> {
        let mut out: Vec<DerivedRecord> = self
            .entries("derived", "list derived blobs")?
            .iter()
            .filter_map(|(d, _)| self.derived_record(d))
            .collect();
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Records blob `digest` (`size` bytes) as derived from `source` instead of storing
    /// its bytes; see the module docs. The caller vouches that `source` makes exactly
    /// those bytes (the first read verifies it). Crash-safe (temporary file, fsync,
    /// rename); replaces an earlier record of the digest. A no-op when the blob is stored.
    pub fn put_derived(&self, digest: &Digest, size: u64, source: &Digest) -> Result<()> {
        if self.blob_path(digest).is_file() {
            return Ok(());
        }
        let p = self.derived_path(digest);
        let dir = p.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let tmp = dir.join(format!(".{}.tmp-{}", digest.hex(), std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(format!("{size} {source}\n").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &p)?;
            File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("write derived blob record", &p)(e)
        })
    }

    /// Makes derived blob `rec` a stored blob (see the module docs) and returns its path.
    fn materialize(&self, rec: &DerivedRecord) -> Result<PathBuf> {
        let target = self.blob_path(&rec.digest);
        let src = self
            .source
            .as_ref()
            .ok_or_else(|| ContentError::NotFound(rec.digest.clone()))?;
        let mut w = self.writer(&format!("derive-{}", rec.digest))?;
        if target.is_file() {
            // Made meanwhile by another reader (whose writer held the lock).
            w.abort()?;
            return Ok(target);
        }
        if w.offset() != 0 {
            w = w.restart()?;
        }
        let data_path = w.data_path.clone();
        src.write_blob(&rec.source, &mut w)
            .and_then(|()| w.flush())
            .map_err(io_err("make derived blob", &data_path))?;
        match w.commit(Some(rec.size), Some(&rec.digest)) {
            Ok(_) => Ok(target),
            Err(ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. }) => {
                Err(ContentError::SourceChanged {
                    digest: rec.digest.clone(),
                    source_id: rec.source.clone(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The path of blob `digest`'s bytes, materializing a derived blob first (see the
    /// module docs): for callers that read the file by its path.
    pub fn stored_path(&self, digest: &Digest) -> Result<PathBuf> {
        let p = self.blob_path(digest);
        if p.is_file() {
            return Ok(p);
        }
        match self.derived(digest) {
            Some(rec) => self.materialize(&rec),
            None => Err(ContentError::NotFound(digest.clone())),
        }
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        Ok(self.info(digest)?.size)
    }

    /// Size and commit time of a stored blob.
    pub fn info(&self, digest: &Digest) -> Result<BlobInfo> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(BlobInfo {
                digest: digest.clone(),
                size: m.len(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                derived: false,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.derived(digest) {
                Some(r) => Ok(BlobInfo {
                    digest: r.digest,
                    size: r.size,
                    modified: r.modified,
                    derived: true,
                }),
                None => Err(ContentError::NotFound(digest.clone())),
            },
            Err(e) => Err(io_err("stat blob", &p)(e)),
        }
    }

    /// Opens a stored blob for reading (the file is never modified once committed). A
    /// derived blob is materialized first (see the module docs).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        match File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let rec = self
                    .derived(digest)
                    .ok_or_else(|| ContentError::NotFound(digest.clone()))?;
                let p = self.materialize(&rec)?;
                File::open(&p).map_err(io_err("open blob", &p))
            }
            Err(e) => Err(io_err("open blob", &p)(e)),
        }
    }

    /// Reads a whole blob into memory, refusing blobs larger than `limit` bytes, and
    /// verifies its digest on the way.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let size = self.size(digest)?;
        if size > limit {
            return Err(ContentError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let p = self.blob_path(digest);
        let mut data = Vec::with_capacity(size as usize);
        self.open_blob(digest)?
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(io_err("read blob", &p))?;
        let actual = Digest::of(digest.algorithm(), &data);
        if &actual != digest {
            return Err(ContentError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Stores `data` as a blob and returns its sha256 digest (a no-op if already stored).
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::sha256_of(data);
        self.put_bytes_verified(data, &d)?;
        Ok(d)
    }

    /// Stores `data` as a blob after checking it hashes to `expected`.
    pub fn put_bytes_verified(&self, data: &[u8], expected: &Digest) -> Result<()> {
        if self.exists(expected) {
            let actual = Digest::of(expected.algorithm(), data);
            if &actual != expected {
                return Err(ContentError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            return Ok(());
        }
        let mut w = self.writer(&format!("put-bytes-{expected}"))?;
        if w.offset() != 0 {
            w = w.restart()?;
        }
        w.write_all(data)
            .map_err(io_err("write ingest", &w.data_path))?;
        w.commit(Some(data.len() as u64), Some(expected))?;
        Ok(())
    }

    /// Deletes a blob: its bytes and its derived record (see the module docs), also one
    /// whose source is gone. Deleting a blob that is not there (neither) is `NotFound`.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let mut found = false;
        for (p, op) in [
            (self.blob_path(digest), "delete blob"),
            (self.derived_path(digest), "delete derived blob record"),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => found = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(op, &p)(e)),
            }
        }
        if found {
            Ok(())
        } else {
            Err(ContentError::NotFound(digest.clone()))
        }
    }

    /// Lists every stored blob, and every derived one whose source exists.
    pub fn list(&self) -> Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        for (d, ent) in self.entries("blobs", "list blobs")? {
            if let Ok(m) = ent.metadata() {
                out.push(BlobInfo {
                    digest: d,
                    size: m.len(),
                    modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    derived: false,
                });
            }
        }
        if let Some(src) = &self.source {
            let stored: std::collections::HashSet<Digest> =
                out.iter().map(|b| b.digest.clone()).collect();
            for r in self.list_derived()? {
                if !stored.contains(&r.digest) && src.has_source(&r.source) {
                    out.push(BlobInfo {
                        digest: r.digest,
                        size: r.size,
                        modified: r.modified,
                        derived: true,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// The gzip-compressed copy of the stored blob `digest` (an uncompressed layer tar),
    /// as `(digest, size)`, for pushing it the way registries expect layers. Made once
    /// (gzip level 1, the layer streamed through) and stored as a blob of its own; the
    /// pairing is remembered in `<root>/gzip/<hex>` so that later pushes send the very
    /// same bytes (a registry that has them says so) without compressing again. When
    /// garbage collection removed the compressed blob it is made again. A derived blob
    /// is compressed straight from its source (verified on the way) and stays derived.
    pub fn gzip_of(&self, digest: &Digest) -> Result<(Digest, u64)> {
        let dir = self.root.join("gzip");
        let memo = dir.join(digest.hex());
        if let Ok(text) = fs::read_to_string(&memo) {
            let mut parts = text.split_whitespace();
            if let (Some(Ok(d)), Some(Ok(size))) = (
                parts.next().map(Digest::parse),
                parts.next().map(str::parse::<u64>),
            ) {
                if self.info(&d).is_ok_and(|i| i.size == size) {
                    return Ok((d, size));
                }
            }
        }
        let src_path = self.blob_path(digest);
        // A derived blob is compressed straight from its source, not stored first (the
        // push that asks needs only the compressed copy); its bytes are verified on the
        // way, before the compressed copy is committed.
        let derived = match File::open(&src_path) {
            Ok(f) => Err(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.derived(digest) {
                Some(rec) => Ok(rec),
                None => return Err(ContentError::NotFound(digest.clone())),
            },
            Err(e) => return Err(io_err("open blob", &src_path)(e)),
        };
        let w = self.writer(&format!("gzip-of-{digest}"))?;
        let w = if w.offset() != 0 { w.restart()? } else { w };
        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        match (derived, &self.source) {
            (Err(mut f), _) => {
                io::copy(&mut io::BufReader::with_capacity(1 << 20, &mut f), &mut gz)
                    .map_err(io_err("compress blob", &src_path))?;
            }
            (Ok(rec), Some(source)) => {
                let mut hw = crate::digest::HashingWriter::new(&mut gz);
                source
                    .write_blob(&rec.source, &mut hw)
                    .map_err(io_err("compress derived blob", &src_path))?;
                let (_, actual, n) = hw.finish();
                if actual != rec.digest || n != rec.size {
                    let w = gz.finish().map_err(io_err("compress blob", &src_path))?;
                    w.abort()?;
                    return Err(ContentError::SourceChanged {
                        digest: rec.digest,
                        source_id: rec.source,
                    });
                }
            }
            (Ok(rec), None) => return Err(ContentError::NotFound(rec.digest)),
        }
        let mut w = gz.finish().map_err(io_err("compress blob", &src_path))?;
        w.flush().map_err(io_err("compress blob", &src_path))?;
        let size = w.offset();
        let d = w.commit(Some(size), None)?;
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let tmp = dir.join(format!(".{}.tmp-{}", digest.hex(), std::process::id()));
        fs::write(&tmp, format!("{d} {size}\n")).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &memo).map_err(io_err("rename", &memo))?;
        Ok((d, size))
    }

    /// Total bytes of partial ingests (for disk-usage reports).
    pub fn ingest_bytes(&self) -> u64 {
        let dir = self.root.join("ingest");
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// An in-progress upload of one blob; see the module docs. Implements [`Write`].
///
/// Dropping it without [`commit`](BlobWriter::commit) keeps the data written so far (flushed)
/// for a later resume; [`abort`](BlobWriter::abort) discards it.
pub struct BlobWriter {
    store: ContentStore,
    data_path: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: Hasher,
    offset: u64,
    /// Up to where writeback to disk has been started (see [`WRITEBACK_STEP`]).
    writeback: u64,
    _lock: Flock<File>,
}

/// A [`BlobWriter`] starts writing its data to disk every this many bytes (without
/// waiting), so that the fsync of [`BlobWriter::commit`] finds little left to do and
/// the disk works while the data is still being produced and hashed.
const WRITEBACK_STEP: u64 = 32 << 20;

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("data_path", &self.data_path)
            .field("offset", &self.offset)
            .finish()
    }
}

impl BlobWriter {
    /// Bytes of this upload so far (including data resumed from an earlier writer).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The sha256 digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.digest()
    }

    /// Throws away the data written so far and starts again at offset 0.
    pub fn restart(mut self) -> Result<BlobWriter> {
        let mut bw = self.take_file()?;
        bw.set_len(0)
            .map_err(io_err("truncate ingest", &self.data_path))?;
        bw.seek(SeekFrom::Start(0))
            .map_err(io_err("seek ingest", &self.data_path))?;
        self.file = Some(BufWriter::with_capacity(1 << 20, bw));
        self.hasher = Hasher::new(Algorithm::Sha256);
        self.offset = 0;
        self.writeback = 0;
        Ok(self)
    }

    fn take_file(&mut self) -> Result<File> {
        let bw = self.file.take().ok_or_else(|| ContentError::Io {
            op: "use ingest",
            path: self.data_path.clone(),
            source: io::Error::other("writer already finished"),
        })?;
        bw.into_inner()
            .map_err(|e| io_err("flush ingest", &self.data_path)(e.into_error()))
    }

    /// Verifies the data against `expected_size` and `expected` (each optional), fsyncs it
    /// and moves it atomically to its place under `blobs/`. Returns the blob's digest (in
    /// the algorithm of `expected`, sha256 when none). If the blob already exists the data
    /// is dropped and the call succeeds. On a mismatch the partial data is discarded.
    pub fn commit(
        mut self,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Digest> {
        let file = self.take_file()?;
        let fail = |e: ContentError, p: &Path| {
            let _ = fs::remove_file(p);
            Err(e)
        };
        if let Some(exp) = expected_size {
            if exp != self.offset {
                return fail(
                    ContentError::SizeMismatch {
                        expected: exp,
                        actual: self.offset,
                    },
                    &self.data_path,
                );
            }
        }
        let mut actual = self.hasher.digest();
        if let Some(exp) = expected {
            if exp.algorithm() != Algorithm::Sha256 {
                actual = hash_file(&self.data_path, exp.algorithm())?;
            }
            if &actual != exp {
                return fail(
                    ContentError::DigestMismatch {
                        expected: exp.clone(),
                        actual,
                    },
                    &self.data_path,
                );
            }
        }
        let target = self.store.blob_path(&actual);
        if target.exists() {
            let _ = fs::remove_file(&self.data_path);
            return Ok(actual);
        }
        file.sync_all()
            .map_err(io_err("fsync ingest", &self.data_path))?;
        drop(file);
        fs::rename(&self.data_path, &target).map_err(io_err("commit blob", &target))?;
        // The stored bytes supersede a derived record of the same blob.
        let _ = fs::remove_file(self.store.derived_path(&actual));
        if let Some(dir) = target.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(actual)
    }

    /// Discards the data written so far.
    pub fn abort(mut self) -> Result<()> {
        self.file = None;
        match fs::remove_file(&self.data_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove ingest", &self.data_path)(e)),
        }
    }
}

fn hash_file(path: &Path, alg: Algorithm) -> Result<Digest> {
    let mut f = File::open(path).map_err(io_err("open ingest", path))?;
    let mut h = Hasher::new(alg);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read ingest", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        if self.offset - self.writeback >= WRITEBACK_STEP {
            use std::os::fd::AsRawFd;
            let fd = f.get_ref().as_raw_fd();
            let len = (self.offset - self.writeback) as libc::off64_t;
            // SAFETY: sync_file_range reads only its integer arguments; `fd` is open.
            // Best effort: an error here only means commit's fsync does all the work.
            unsafe {
                libc::sync_file_range(
                    fd,
                    self.writeback as libc::off64_t,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.writeback = self.offset;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = cs.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::sha256_of(b"hello"));
        assert!(cs.exists(&d));
        assert_eq!(cs.size(&d).unwrap(), 5);
        assert_eq!(cs.read_blob(&d, 100).unwrap(), b"hello");
        assert!(matches!(
            cs.read_blob(&d, 2),
            Err(ContentError::TooLarge { .. })
        ));
        assert_eq!(cs.list().unwrap().len(), 1);
        // Idempotent.
        assert_eq!(cs.put_bytes(b"hello").unwrap(), d);
        cs.delete(&d).unwrap();
        assert!(!cs.exists(&d));
        let e = cs.delete(&d).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(cs.open_blob(&d).unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn gzip_copies_are_made_once_and_decompress_to_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        let d = cs.put_bytes(&data).unwrap();
        let (g, size) = cs.gzip_of(&d).unwrap();
        assert_ne!(g, d);
        assert_eq!(cs.size(&g).unwrap(), size);
        assert!(size < data.len() as u64 / 4, "{size}");
        let gz = cs.read_blob(&g, 1 << 20).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Remembered: the same blob again, not a new compression.
        let modified = cs.info(&g).unwrap().modified;
        assert_eq!(cs.gzip_of(&d).unwrap(), (g.clone(), size));
        assert_eq!(cs.info(&g).unwrap().modified, modified);
        // Made again when the compressed blob is gone.
        cs.delete(&g).unwrap();
        assert_eq!(cs.gzip_of(&d).unwrap(), (g.clone(), size));
        assert!(cs.exists(&g));
        // A missing source is NotFound.
        let missing = Digest::sha256_of(b"missing");
        assert_eq!(
            cs.gzip_of(&missing).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    /// Sources kept in memory: name → bytes.
    #[derive(Debug, Default)]
    struct Memory(std::sync::Mutex<std::collections::HashMap<Digest, Vec<u8>>>);

    impl BlobSource for Memory {
        fn has_source(&self, source: &Digest) -> bool {
            self.0.lock().unwrap().contains_key(source)
        }
        fn write_blob(&self, source: &Digest, out: &mut dyn Write) -> io::Result<()> {
            let data = self.0.lock().unwrap().get(source).cloned();
            out.write_all(&data.ok_or_else(|| io::Error::other("no such source"))?)
        }
    }

    #[test]
    fn derived_blobs_are_present_while_their_source_is_and_made_on_first_read() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(Memory::default());
        let cs = ContentStore::open(dir.path())
            .unwrap()
            .with_source(mem.clone());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::sha256_of(&data);
        let src = Digest::sha256_of(b"snapshot");
        mem.0.lock().unwrap().insert(src.clone(), data.clone());
        cs.put_derived(&d, data.len() as u64, &src).unwrap();
        assert!(cs.exists(&d));
        assert!(!cs.blob_path(&d).exists(), "nothing stored yet");
        let info = cs.info(&d).unwrap();
        assert_eq!((info.size, info.derived), (data.len() as u64, true));
        assert_eq!(cs.list().unwrap(), vec![info]);
        // Without its source it is no blob (a store without a source ignores records).
        let plain = ContentStore::open(dir.path()).unwrap();
        assert!(!plain.exists(&d) && plain.list().unwrap().is_empty());
        let taken = mem.0.lock().unwrap().remove(&src).unwrap();
        assert!(!cs.exists(&d));
        assert_eq!(cs.info(&d).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(cs.open_blob(&d).unwrap_err().kind(), ErrorKind::NotFound);
        assert!(cs.list().unwrap().is_empty());
        assert_eq!(cs.list_derived().unwrap().len(), 1, "the record stays");
        mem.0.lock().unwrap().insert(src.clone(), taken);
        // Compressed straight from the source: the blob stays derived.
        let (g, _) = cs.gzip_of(&d).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&cs.read_blob(&g, 1 << 20).unwrap()[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
        assert!(!cs.blob_path(&d).exists() && cs.info(&d).unwrap().derived);
        cs.delete(&g).unwrap();
        // First read: made, verified, stored; the record gives way to the blob.
        assert_eq!(cs.read_blob(&d, 1 << 20).unwrap(), data);
        assert!(cs.blob_path(&d).is_file());
        assert!(cs.list_derived().unwrap().is_empty());
        assert!(!cs.info(&d).unwrap().derived);
        mem.0.lock().unwrap().clear();
        assert_eq!(cs.read_blob(&d, 1 << 20).unwrap(), data);
        // gzip_of reads through the same path.
        let (g, _) = cs.gzip_of(&d).unwrap();
        assert!(cs.exists(&g));
        // Deleting removes a record too, also one whose source is gone.
        cs.delete(&d).unwrap();
        cs.put_derived(&d, data.len() as u64, &src).unwrap();
        assert!(!cs.exists(&d));
        cs.delete(&d).unwrap();
        assert!(cs.list_derived().unwrap().is_empty());
        assert_eq!(cs.delete(&d).unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn a_source_that_changed_is_an_error_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(Memory::default());
        let cs = ContentStore::open(dir.path())
            .unwrap()
            .with_source(mem.clone());
        let d = Digest::sha256_of(b"original bytes");
        let src = Digest::sha256_of(b"snapshot");
        cs.put_derived(&d, 14, &src).unwrap();
        for changed in [&b"changed bytes!"[..], b"changed length"] {
            mem.0.lock().unwrap().insert(src.clone(), changed.to_vec());
            let e = cs.open_blob(&d).unwrap_err();
            assert!(matches!(e, ContentError::SourceChanged { .. }), "{e:?}");
            assert!(e.to_string().contains("changed"), "{e}");
            assert!(!cs.blob_path(&d).exists());
            assert_eq!(cs.ingest_bytes(), 0);
        }
        mem.0
            .lock()
            .unwrap()
            .insert(src.clone(), b"too short".to_vec());
        assert!(matches!(
            cs.open_blob(&d),
            Err(ContentError::SourceChanged { .. })
        ));
        // Nor is a compressed copy of changed bytes kept.
        assert!(matches!(
            cs.gzip_of(&d),
            Err(ContentError::SourceChanged { .. })
        ));
        let left = cs.list().unwrap();
        assert!(left.len() == 1 && left[0].derived, "{left:?}");
        assert!(!dir.path().join("gzip").join(d.hex()).exists());
        // The right bytes again: made.
        mem.0
            .lock()
            .unwrap()
            .insert(src.clone(), b"original bytes".to_vec());
        assert_eq!(cs.read_blob(&d, 100).unwrap(), b"original bytes");
    }

    #[test]
    fn sha512_expected_digest_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let exp = Digest::of(Algorithm::Sha512, b"data");
        let mut w = cs.writer("x").unwrap();
        w.write_all(b"data").unwrap();
        let d = w.commit(None, Some(&exp)).unwrap();
        assert_eq!(d, exp);
        assert_eq!(cs.read_blob(&exp, 10).unwrap(), b"data");
    }
}
