//! On-disk state of the registry server.
//!
//! Layout under the root directory:
//!
//! ```text
//! <root>/blobs/<alg>/<hex>         store::content::ContentStore: every blob and manifest
//! <root>/ingest/...                content store: partial uploads (ref key "registry-upload-<uuid>")
//! <root>/repositories/<name>/
//!     _links/<alg>-<hex>           empty file: the blob is visible in <name>
//!     _manifests/<alg>-<hex>       the manifest is in <name>; holds its media type
//!     _tags/<tag>                  holds the digest the tag points at
//!     _referrers/<subject>/<d>     descriptor (JSON) of manifest <d> whose subject is <subject>
//!     _uploads/<uuid>              marker of an open upload session
//! ```
//!
//! The content store is the same format the engine's image store uses. A blob becomes
//! visible only after the store verified its digest and renamed it into `blobs/`; every metadata file is written to a temporary name, fsynced and renamed, so
//! a crash leaves either the old or the new state. Repository names never contain a
//! component starting with `_`, so the `_*` directories cannot clash with nested names.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use store::content::{BlobWriter, ContentError, ContentStore};
use store::Digest;

/// State of an upload session kept in memory while the server runs: the open content
/// store writer (which holds the hash of the data so far). After a restart the writer is
/// reopened from the ingest file (the store re-hashes it once).
#[derive(Default)]
pub(crate) struct Session {
    pub writer: Option<BlobWriter>,
}

/// A shared handle on one session's state.
pub(crate) type SessionRef = Arc<tokio::sync::Mutex<Session>>;

/// The registry's storage: a content store plus per-repository metadata.
pub(crate) struct Storage {
    root: PathBuf,
    content: ContentStore,
    sessions: Mutex<HashMap<String, (SessionRef, Instant)>>,
    counter: AtomicU64,
}

/// An upload session unused this long has its writer closed (its data stays in the
/// ingest area and the next request on it reopens it), bounding open files.
const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);

/// Ref key under which the content store ingests upload session `uuid`.
pub(crate) fn upload_ref_key(uuid: &str) -> String {
    format!("registry-upload-{uuid}")
}

fn digest_file_name(d: &Digest) -> String {
    format!("{}-{}", d.algorithm(), d.hex())
}

fn digest_from_file_name(n: &str) -> Option<Digest> {
    let (alg, hex) = n.split_once('-')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

fn content_io(e: ContentError) -> io::Error {
    match e {
        ContentError::Io { source, .. } => source,
        ContentError::NotFound(_) => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        e => io::Error::other(e.to_string()),
    }
}

impl Storage {
    /// Opens (creating if needed) the storage rooted at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        let content = ContentStore::open(root).map_err(content_io)?;
        std::fs::create_dir_all(root.join("repositories"))?;
        Ok(Self {
            root: root.to_path_buf(),
            content,
            sessions: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        })
    }

    /// The content store holding every blob and manifest.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The size of a committed blob, or `None` when it is not in the content store.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        self.content.size(d).ok()
    }

    /// A new random-looking identifier (upload UUIDs).
    pub fn new_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Sha256::new();
        h.update(now.to_le_bytes());
        h.update(n.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(self.root.as_os_str().as_encoded_bytes());
        let hx = hex::encode(h.finalize());
        format!(
            "{}-{}-{}-{}-{}",
            &hx[0..8],
            &hx[8..12],
            &hx[12..16],
            &hx[16..20],
            &hx[20..32]
        )
    }

    /// Reads a whole blob (used for manifests, which are bounded in size), verifying it.
    pub fn read_blob(&self, d: &Digest, limit: u64) -> io::Result<Vec<u8>> {
        self.content.read_blob(d, limit).map_err(content_io)
    }

    fn repo_dir(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }

    /// Whether the repository holds any blob link or manifest.
    pub fn repo_exists(&self, name: &str) -> bool {
        let d = self.repo_dir(name);
        d.join("_links").is_dir() || d.join("_manifests").is_dir()
    }

    fn link_path(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo_dir(name).join("_links").join(digest_file_name(d))
    }

    /// Makes blob `d` visible in repository `name`.
    pub fn link_blob(&self, name: &str, d: &Digest) -> io::Result<()> {
        atomic_write(&self.link_path(name, d), b"")
    }

    /// Whether blob `d` is linked into `name` and present in the content store.
    pub fn blob_linked(&self, name: &str, d: &Digest) -> bool {
        self.link_path(name, d).is_file() && self.blob_size(d).is_some()
    }

    /// Removes blob `d` from repository `name`; `false` when it was not linked.
    pub fn unlink_blob(&self, name: &str, d: &Digest) -> io::Result<bool> {
        remove_if_exists(&self.link_path(name, d))
    }

    fn manifest_path(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo_dir(name)
            .join("_manifests")
            .join(digest_file_name(d))
    }

    /// Stores a verified manifest and links it into `name` with its media type.
    pub fn put_manifest(
        &self,
        name: &str,
        d: &Digest,
        media_type: &str,
        data: &[u8],
    ) -> io::Result<()> {
        self.content
            .put_bytes_verified(data, d)
            .map_err(content_io)?;
        atomic_write(&self.manifest_path(name, d), media_type.as_bytes())
    }

    /// The media type of manifest `d` in `name`, or `None` when it is not there.
    pub fn manifest_media_type(&self, name: &str, d: &Digest) -> Option<String> {
        self.blob_size(d)?;
        std::fs::read_to_string(self.manifest_path(name, d)).ok()
    }

    /// Removes manifest `d` from `name` with the tags pointing at it; `false` when absent.
    pub fn delete_manifest(&self, name: &str, d: &Digest) -> io::Result<bool> {
        let existed = remove_if_exists(&self.manifest_path(name, d))?;
        for t in self.tags(name)? {
            if self.tag(name, &t).as_ref() == Some(d) {
                self.delete_tag(name, &t)?;
            }
        }
        // Drop this manifest from any subject's referrer list.
        let rdir = self.repo_dir(name).join("_referrers");
        if let Ok(rd) = std::fs::read_dir(&rdir) {
            for e in rd.flatten() {
                remove_if_exists(&e.path().join(digest_file_name(d)))?;
            }
        }
        Ok(existed)
    }

    fn tag_path(&self, name: &str, tag: &str) -> PathBuf {
        self.repo_dir(name).join("_tags").join(tag)
    }

    /// Points `tag` of `name` at manifest `d`.
    pub fn set_tag(&self, name: &str, tag: &str, d: &Digest) -> io::Result<()> {
        atomic_write(&self.tag_path(name, tag), d.to_string().as_bytes())
    }

    /// The manifest a tag points at.
    pub fn tag(&self, name: &str, tag: &str) -> Option<Digest> {
        let s = std::fs::read_to_string(self.tag_path(name, tag)).ok()?;
        Digest::parse(s.trim()).ok()
    }

    /// Removes a tag; `false` when it did not exist.
    pub fn delete_tag(&self, name: &str, tag: &str) -> io::Result<bool> {
        remove_if_exists(&self.tag_path(name, tag))
    }

    /// All tags of `name`, sorted.
    pub fn tags(&self, name: &str) -> io::Result<Vec<String>> {
        let mut v = Vec::new();
        match std::fs::read_dir(self.repo_dir(name).join("_tags")) {
            Ok(rd) => {
                for e in rd {
                    let n = e?.file_name().to_string_lossy().into_owned();
                    if crate::names::valid_tag(&n) {
                        v.push(n);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        v.sort();
        Ok(v)
    }

    /// All repositories, sorted.
    pub fn repositories(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let base = self.root.join("repositories");
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in rd {
                let e = e?;
                let fname = e.file_name().to_string_lossy().into_owned();
                if fname.starts_with('_') || !e.file_type()?.is_dir() {
                    continue;
                }
                let p = e.path();
                if let Ok(rel) = p.strip_prefix(&base) {
                    let name = rel.to_string_lossy().into_owned();
                    if self.repo_exists(&name) {
                        out.push(name);
                    }
                }
                stack.push(p);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Records that manifest `referrer` (described by `descriptor`) has subject `subject`.
    pub fn add_referrer(
        &self,
        name: &str,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> io::Result<()> {
        let p = self
            .repo_dir(name)
            .join("_referrers")
            .join(digest_file_name(subject))
            .join(digest_file_name(referrer));
        atomic_write(&p, descriptor)
    }

    /// Descriptors (JSON) of the manifests whose subject is `subject`, sorted by digest.
    pub fn referrers(&self, name: &str, subject: &Digest) -> io::Result<Vec<Vec<u8>>> {
        let dir = self
            .repo_dir(name)
            .join("_referrers")
            .join(digest_file_name(subject));
        let mut names = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e?;
                    let n = e.file_name().to_string_lossy().into_owned();
                    if digest_from_file_name(&n).is_some() {
                        names.push(n);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        names.sort();
        let mut out = Vec::new();
        for n in names {
            if let Ok(b) = std::fs::read(dir.join(&n)) {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// The marker file of upload session `uuid` in `name` (its data is in the ingest area).
    fn upload_marker(&self, name: &str, uuid: &str) -> PathBuf {
        self.repo_dir(name).join("_uploads").join(uuid)
    }

    /// Whether upload session `uuid` exists in `name`.
    pub fn upload_exists(&self, name: &str, uuid: &str) -> bool {
        self.upload_marker(name, uuid).is_file()
    }

    /// Bytes received so far by an upload session (read without locking it).
    pub fn upload_offset(&self, uuid: &str) -> u64 {
        self.content.ingest_offset(&upload_ref_key(uuid))
    }

    /// Starts an upload session and returns its id.
    pub fn start_upload(&self, name: &str) -> io::Result<String> {
        let id = self.new_id();
        atomic_write(&self.upload_marker(name, &id), b"")?;
        Ok(id)
    }

    /// The in-memory state of an upload session (created on first use). Also drops the
    /// state of sessions idle for [`SESSION_IDLE`] that no request is using.
    pub fn session(&self, uuid: &str) -> SessionRef {
        let now = Instant::now();
        let mut m = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (s, used)| {
            Arc::strong_count(s) > 1 || now.duration_since(*used) < SESSION_IDLE
        });
        let e = m
            .entry(uuid.to_string())
            .or_insert_with(|| (Arc::default(), now));
        e.1 = now;
        e.0.clone()
    }

    /// Ends an upload session: forgets its state and removes its marker (the caller has
    /// committed or aborted the data). `false` when there was no such session.
    pub fn end_upload(&self, name: &str, uuid: &str) -> io::Result<bool> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uuid);
        remove_if_exists(&self.upload_marker(name, uuid))
    }
}

/// Whether an upload id is well formed (so it is safe as a file name).
pub(crate) fn valid_upload_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
}

/// Writes `data` to `path` crash-safely: temporary file, fsync, rename, fsync of the directory.
pub(crate) fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path without parent"))?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn remove_if_exists(p: &Path) -> io::Result<bool> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
