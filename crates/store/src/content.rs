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
//! All methods are synchronous and the types are `Send + Sync`; call them from async code
//! through `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
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
            ContentError::Io { .. } => ErrorKind::Internal,
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
    /// When it was committed (file modification time).
    pub modified: SystemTime,
}

/// A content-addressed blob store rooted at a directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) a content store at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<ContentStore> {
        let root = root.as_ref().to_path_buf();
        for d in ["blobs/sha256", "blobs/sha512", "ingest"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err("create directory", &p))?;
        }
        Ok(ContentStore { root })
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

    /// Whether a blob with this digest is stored.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
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
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(digest.clone()))
            }
            Err(e) => Err(io_err("stat blob", &p)(e)),
        }
    }

    /// Opens a stored blob for reading (the file is never modified once committed).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound(digest.clone())
            } else {
                io_err("open blob", &p)(e)
            }
        })
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

    /// Deletes a blob. Deleting a blob that is not there is `NotFound`.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        fs::remove_file(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound(digest.clone())
            } else {
                io_err("delete blob", &p)(e)
            }
        })
    }

    /// Lists every stored blob.
    pub fn list(&self) -> Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.as_str());
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("list blobs", &dir)(e)),
            };
            for ent in rd {
                let ent = ent.map_err(io_err("list blobs", &dir))?;
                let name = ent.file_name();
                let Some(name) = name.to_str() else { continue };
                let Ok(d) = Digest::from_hex(alg, name) else {
                    continue;
                };
                if let Ok(m) = ent.metadata() {
                    out.push(BlobInfo {
                        digest: d,
                        size: m.len(),
                        modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
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
    /// garbage collection removed the compressed blob it is made again.
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
        let mut src = self.open_blob(digest)?;
        let w = self.writer(&format!("gzip-of-{digest}"))?;
        let w = if w.offset() != 0 { w.restart()? } else { w };
        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        let src_path = self.blob_path(digest);
        io::copy(
            &mut io::BufReader::with_capacity(1 << 20, &mut src),
            &mut gz,
        )
        .map_err(io_err("compress blob", &src_path))?;
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
