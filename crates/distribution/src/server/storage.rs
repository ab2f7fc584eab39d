//! On-disk state of the registry server.
//!
//! Layout under the root directory:
//!
//! ```text
//! <root>/blobs/sha256/<hex>                      content store: every blob and manifest, by digest
//! <root>/ingest/<key>                            content store: partial data being written
//! <root>/repositories/<name>/_links/sha256/<hex>  empty file: blob <hex> is visible in <name>
//! <root>/repositories/<name>/_manifests/sha256/<hex>  manifest <hex> is in <name>; holds its media type
//! <root>/repositories/<name>/_tags/<tag>          holds the digest the tag points at
//! <root>/repositories/<name>/_referrers/<subject-hex>/<hex>  descriptor (JSON) of a manifest whose subject is <subject-hex>
//! <root>/repositories/<name>/_uploads/<uuid>      data of an upload session so far
//! ```
//!
//! A blob becomes visible only after its digest was verified and its file renamed into
//! `blobs/`; every metadata file is written to a temporary name, fsynced and renamed, so
//! a crash leaves either the old or the new state. Repository names never contain a
//! component starting with `_`, so the `_*` directories cannot clash with nested names.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::names::Sha256Digest;

/// State of an upload session kept in memory while the server runs: the hash of the data
/// written so far, so closing the upload need not read it back. After a restart the hash
/// is recomputed from the file.
#[derive(Default)]
pub(crate) struct Session {
    pub hashed: Option<(u64, Sha256)>,
}

/// The registry's storage: a content store plus per-repository metadata.
pub(crate) struct Storage {
    root: PathBuf,
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>,
    counter: AtomicU64,
}

impl Storage {
    /// Opens (creating if needed) the storage rooted at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("blobs/sha256"))?;
        std::fs::create_dir_all(root.join("ingest"))?;
        std::fs::create_dir_all(root.join("repositories"))?;
        Ok(Self {
            root: root.to_path_buf(),
            sessions: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        })
    }

    /// The path of a committed blob (whether or not it exists).
    pub fn blob_path(&self, d: &Sha256Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// The size of a committed blob, or `None` when it is not in the content store.
    pub fn blob_size(&self, d: &Sha256Digest) -> Option<u64> {
        std::fs::metadata(self.blob_path(d))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// A fresh path in the ingest directory for data whose digest is not known yet.
    pub fn temp_path(&self) -> PathBuf {
        self.root.join("ingest").join(self.new_id())
    }

    /// A new random-looking identifier (upload UUIDs, temporary names).
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

    /// Moves a fully written, verified file at `tmp` into the content store as `d`.
    /// If the blob is already there, `tmp` is removed instead.
    pub fn commit_file(&self, tmp: &Path, d: &Sha256Digest) -> io::Result<()> {
        let dest = self.blob_path(d);
        if dest.is_file() {
            let _ = std::fs::remove_file(tmp);
            return Ok(());
        }
        std::fs::File::open(tmp)?.sync_all()?;
        std::fs::rename(tmp, &dest)?;
        sync_dir(&self.root.join("blobs/sha256"))
    }

    /// Writes `data` (already hashed to `d`) into the content store.
    pub fn write_blob(&self, d: &Sha256Digest, data: &[u8]) -> io::Result<()> {
        if self.blob_size(d).is_some() {
            return Ok(());
        }
        let tmp = self.temp_path();
        std::fs::write(&tmp, data)?;
        self.commit_file(&tmp, d)
    }

    /// Reads a whole blob (used for manifests, which are bounded in size).
    pub fn read_blob(&self, d: &Sha256Digest, limit: u64) -> io::Result<Vec<u8>> {
        let f = std::fs::File::open(self.blob_path(d))?;
        let mut v = Vec::new();
        f.take(limit).read_to_end(&mut v)?;
        Ok(v)
    }

    fn repo_dir(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }

    /// Whether the repository holds any blob link or manifest.
    pub fn repo_exists(&self, name: &str) -> bool {
        let d = self.repo_dir(name);
        d.join("_links").is_dir() || d.join("_manifests").is_dir()
    }

    fn link_path(&self, name: &str, d: &Sha256Digest) -> PathBuf {
        self.repo_dir(name).join("_links/sha256").join(d.hex())
    }

    /// Makes blob `d` visible in repository `name`.
    pub fn link_blob(&self, name: &str, d: &Sha256Digest) -> io::Result<()> {
        atomic_write(&self.link_path(name, d), b"")
    }

    /// Whether blob `d` is linked into `name` and present in the content store.
    pub fn blob_linked(&self, name: &str, d: &Sha256Digest) -> bool {
        self.link_path(name, d).is_file() && self.blob_size(d).is_some()
    }

    /// Removes blob `d` from repository `name`; `false` when it was not linked.
    pub fn unlink_blob(&self, name: &str, d: &Sha256Digest) -> io::Result<bool> {
        remove_if_exists(&self.link_path(name, d))
    }

    fn manifest_path(&self, name: &str, d: &Sha256Digest) -> PathBuf {
        self.repo_dir(name).join("_manifests/sha256").join(d.hex())
    }

    /// Stores a verified manifest and links it into `name` with its media type.
    pub fn put_manifest(
        &self,
        name: &str,
        d: &Sha256Digest,
        media_type: &str,
        data: &[u8],
    ) -> io::Result<()> {
        self.write_blob(d, data)?;
        atomic_write(&self.manifest_path(name, d), media_type.as_bytes())
    }

    /// The media type of manifest `d` in `name`, or `None` when it is not there.
    pub fn manifest_media_type(&self, name: &str, d: &Sha256Digest) -> Option<String> {
        self.blob_size(d)?;
        std::fs::read_to_string(self.manifest_path(name, d)).ok()
    }

    /// Removes manifest `d` from `name` with the tags pointing at it; `false` when absent.
    pub fn delete_manifest(&self, name: &str, d: &Sha256Digest) -> io::Result<bool> {
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
                remove_if_exists(&e.path().join(d.hex()))?;
            }
        }
        Ok(existed)
    }

    fn tag_path(&self, name: &str, tag: &str) -> PathBuf {
        self.repo_dir(name).join("_tags").join(tag)
    }

    /// Points `tag` of `name` at manifest `d`.
    pub fn set_tag(&self, name: &str, tag: &str, d: &Sha256Digest) -> io::Result<()> {
        atomic_write(&self.tag_path(name, tag), d.to_string().as_bytes())
    }

    /// The manifest a tag points at.
    pub fn tag(&self, name: &str, tag: &str) -> Option<Sha256Digest> {
        let s = std::fs::read_to_string(self.tag_path(name, tag)).ok()?;
        Sha256Digest::parse(s.trim())
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
        subject: &Sha256Digest,
        referrer: &Sha256Digest,
        descriptor: &[u8],
    ) -> io::Result<()> {
        let p = self
            .repo_dir(name)
            .join("_referrers")
            .join(subject.hex())
            .join(referrer.hex());
        atomic_write(&p, descriptor)
    }

    /// Descriptors (JSON) of the manifests whose subject is `subject`, sorted by digest.
    pub fn referrers(&self, name: &str, subject: &Sha256Digest) -> io::Result<Vec<Vec<u8>>> {
        let dir = self.repo_dir(name).join("_referrers").join(subject.hex());
        let mut names = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e?;
                    let n = e.file_name().to_string_lossy().into_owned();
                    if Sha256Digest::parse(&format!("sha256:{n}")).is_some() {
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

    /// The data file of upload session `uuid` in `name`.
    pub fn upload_path(&self, name: &str, uuid: &str) -> PathBuf {
        self.repo_dir(name).join("_uploads").join(uuid)
    }

    /// Starts an upload session: creates its empty data file and returns its id.
    pub fn start_upload(&self, name: &str) -> io::Result<String> {
        let id = self.new_id();
        let p = self.upload_path(name, &id);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(&p)?;
        Ok(id)
    }

    /// The in-memory state of an upload session (created on first use).
    pub fn session(&self, uuid: &str) -> Arc<tokio::sync::Mutex<Session>> {
        let mut m = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(uuid.to_string()).or_default().clone()
    }

    /// Forgets an upload session's in-memory state and removes its data.
    pub fn end_upload(&self, name: &str, uuid: &str) -> io::Result<bool> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uuid);
        remove_if_exists(&self.upload_path(name, uuid))
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
