//! The overlayfs snapshotter.
//!
//! # Model
//!
//! Under `<root>` (the store's `snapshots/` directory):
//!
//! * `committed/<chain-id hex>/fs` — one read-only **committed snapshot per chain id**: the
//!   extracted layer whose chain id it is (only that layer's files and overlay whiteouts).
//!   `committed/<hex>/parent` holds the parent chain id (absent for a base layer), and
//!   `committed/<hex>/size` the layer's uncompressed size ([`content_size`] of `fs`, what
//!   docker reports as a layer's size; computed and cached on first use when absent). A
//!   committed snapshot is shared by every image and container using that chain.
//!   It is created by [`Snapshotter::apply_layer`]: the layer is extracted into
//!   `tmp/<random>/`, its diff id verified, the filesystem synced once (`syncfs`), and the
//!   directory renamed into place — so a killed process never leaves half a snapshot, and
//!   of two concurrent applies of one chain id (serialised by a `flock` on
//!   `locks/<hex>`) the second finds it done. [`Snapshotter::commit_dir`] does the same
//!   with a directory that already holds the layer (a build step's upper dir sealed by
//!   `layer::seal_diff`): it is renamed, not copied, into `tmp/<random>/fs`, synced and
//!   renamed into place.
//! * `active/<key>/{fs,work}` — an **active snapshot** for a container, created by
//!   [`Snapshotter::prepare`]. `key` is chosen by the caller (the engine uses the container
//!   id): 1–128 characters of `[A-Za-z0-9_.-]`, not starting with `.` or `-`. `fs` is the
//!   overlay upper dir (the container's writes), `work` the overlay workdir. An active
//!   snapshot pins its parent chain (garbage collection keeps it) until
//!   [`Snapshotter::remove`].
//!
//! [`Snapshotter::prepare`] returns [`Mount`]s: an `overlay` with
//! `lowerdir=<top>:…:<base>,upperdir=…,workdir=…,redirect_dir=off,index=off`, or a `bind` of `fs` when there is no
//! parent. Mount them with [`mount_all`]: it uses `mount(2)` when the options fit in a page
//! and otherwise (deep images) the new mount API (`fsopen` + one `lowerdir+` per layer,
//! Linux ≥ 6.8), so there is no page-size limit on depth and no `chdir` tricks. Callers that
//! mount the list themselves with `mount(2)` must do the same for long option strings.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use errkind::{ErrorKind, HasKind};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::layer::{self, ApplyOptions, ApplyResult, DiffResult, LayerError};

/// Errors from the snapshotter.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No committed snapshot for this chain id.
    #[error("snapshot {0} not found")]
    NotFound(String),
    /// An active snapshot with this key already exists.
    #[error("snapshot key {0:?} already exists")]
    AlreadyExists(String),
    /// The key is not a valid snapshot key.
    #[error("invalid snapshot key {0:?}")]
    InvalidKey(String),
    /// The layer's content does not match the diff id the image config promised.
    #[error("layer for snapshot {chain_id}: diff id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The snapshot being created.
        chain_id: Digest,
        /// From the image config.
        expected: Digest,
        /// Of the layer's uncompressed tar.
        actual: Digest,
    },
    /// Applying or diffing a layer failed.
    #[error("snapshot layer")]
    Layer(#[from] LayerError),
    /// A mount or unmount failed.
    #[error("mount {kind} on {target}")]
    Mount {
        /// The mount type.
        kind: String,
        /// The mount point.
        target: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("snapshot {op} {path}")]
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

impl HasKind for SnapshotError {
    fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::NotFound(_) => ErrorKind::NotFound,
            SnapshotError::AlreadyExists(_) => ErrorKind::Conflict,
            SnapshotError::InvalidKey(_) | SnapshotError::DiffIdMismatch { .. } => {
                ErrorKind::InvalidArgument
            }
            SnapshotError::Layer(e) => e.kind(),
            SnapshotError::Mount { .. } | SnapshotError::Io { .. } => ErrorKind::Internal,
        }
    }
}

type Result<T, E = SnapshotError> = std::result::Result<T, E>;

fn ioe(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { op, path, source }
}

/// A mount to perform, as plain data (what the runtime/engine mounts for a rootfs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay` or `bind`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Source: `overlay` or the directory to bind.
    pub source: String,
    /// Where to mount, relative to the caller's target (None: the target itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Mount options (`lowerdir=…`, `upperdir=…`, `workdir=…`, or `rbind`, `rw`).
    pub options: Vec<String>,
}

/// A committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedInfo {
    /// Its chain id.
    pub chain_id: Digest,
    /// Its parent's chain id.
    pub parent: Option<Digest>,
}

/// An active snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveInfo {
    /// The caller's key.
    pub key: String,
    /// The chain id it is layered on.
    pub parent: Option<Digest>,
}

/// The overlayfs snapshotter; see the module docs. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
}

/// Whether `key` is a valid active snapshot key.
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0] != b'.'
        && b[0] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Snapshotter {
    /// Opens (creating if needed) a snapshotter rooted at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Snapshotter> {
        let root = root.as_ref().to_path_buf();
        for d in ["committed", "active", "tmp", "locks"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(ioe("create directory", &p))?;
        }
        Ok(Snapshotter { root })
    }

    /// The snapshotter's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn committed_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("committed").join(chain_id.hex())
    }

    /// The directory holding the extracted layer of a committed snapshot.
    pub fn committed_fs(&self, chain_id: &Digest) -> PathBuf {
        self.committed_dir(chain_id).join("fs")
    }

    /// Whether a committed snapshot exists for `chain_id`.
    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.committed_fs(chain_id).is_dir()
    }

    /// The parent chain id of a committed snapshot.
    pub fn parent_of(&self, chain_id: &Digest) -> Result<Option<Digest>> {
        if !self.exists(chain_id) {
            return Err(SnapshotError::NotFound(chain_id.to_string()));
        }
        let p = self.committed_dir(chain_id).join("parent");
        match fs::read_to_string(&p) {
            Ok(s) => Ok(Digest::parse(s.trim()).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ioe("read parent", &p)(e)),
        }
    }

    /// The `fs` dirs of `chain_id` and all its ancestors, top first (overlay lowerdir order).
    pub fn lower_dirs(&self, chain_id: &Digest) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut cur = Some(chain_id.clone());
        while let Some(c) = cur {
            if out.len() > 4096 {
                return Err(SnapshotError::NotFound(format!("{chain_id}: parent loop")));
            }
            out.push(self.committed_fs(&c));
            cur = self.parent_of(&c)?;
        }
        Ok(out)
    }

    /// Takes the lock of snapshot `chain_id` for making it, after checking that `parent`
    /// exists. `None` when the snapshot exists already (made meanwhile by another).
    fn lock_new(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
    ) -> Result<Option<Flock<std::fs::File>>> {
        if let Some(p) = parent {
            if !self.exists(p) {
                return Err(SnapshotError::NotFound(p.to_string()));
            }
        }
        let lock_path = self.root.join("locks").join(chain_id.hex());
        let lf = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(ioe("open lock", &lock_path))?;
        let lock = Flock::lock(lf, FlockArg::LockExclusive)
            .map_err(|(_, e)| ioe("lock", &lock_path)(e.into()))?;
        if self.exists(chain_id) {
            return Ok(None);
        }
        Ok(Some(lock))
    }

    /// Creates the committed snapshot `chain_id` on top of `parent` by applying the layer
    /// read from `reader`, verifying that its diff id is `expected_diff_id`. A no-op returning
    /// `None` when the snapshot already exists (the reader is then not consumed).
    pub fn apply_layer<R: Read>(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
        expected_diff_id: &Digest,
        reader: R,
        opts: &ApplyOptions,
    ) -> Result<Option<ApplyResult>> {
        let Some(_lock) = self.lock_new(chain_id, parent)? else {
            return Ok(None);
        };
        let tmp = tempfile::Builder::new()
            .prefix("apply-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(ioe("create temp dir", &self.root.join("tmp")))?;
        let fs_dir = tmp.path().join("fs");
        fs::create_dir(&fs_dir).map_err(ioe("create directory", &fs_dir))?;
        // Not left to the umask: `layer::seal_diff` gives a sealed root the same mode.
        fs::set_permissions(&fs_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(ioe("chmod", &fs_dir))?;
        let res = layer::apply_layer(reader, &fs_dir, opts)?;
        if &res.diff_id != expected_diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                chain_id: chain_id.clone(),
                expected: expected_diff_id.clone(),
                actual: res.diff_id,
            });
        }
        if let Some(p) = parent {
            let pf = tmp.path().join("parent");
            fs::write(&pf, p.to_string()).map_err(ioe("write parent", &pf))?;
        }
        let sf = tmp.path().join("size");
        fs::write(&sf, content_size(&fs_dir).to_string()).map_err(ioe("write size", &sf))?;
        let d = File::open(tmp.path()).map_err(ioe("open", tmp.path()))?;
        rustix::fs::syncfs(&d).map_err(|e| ioe("syncfs", tmp.path())(e.into()))?;
        let tmp_path = tmp.keep();
        let target = self.committed_dir(chain_id);
        if let Err(e) = fs::rename(&tmp_path, &target) {
            let _ = fs::remove_dir_all(&tmp_path);
            if !self.exists(chain_id) {
                return Err(ioe("commit snapshot", &target)(e));
            }
            return Ok(None);
        }
        sync_dir(&self.root.join("committed"));
        Ok(Some(res))
    }

    /// Creates the committed snapshot `chain_id` on top of `parent` from the directory
    /// `dir`, which must already hold exactly that layer's files (an upper dir sealed by
    /// [`layer::seal_diff`] whose tar has the diff id `chain_id` was computed from: the
    /// caller vouches for it, nothing is verified here). `dir` is moved, not copied: it
    /// must be on the snapshotter's filesystem and is gone afterwards when this returns
    /// `Ok(true)`. When the snapshot already exists, returns `Ok(false)` and leaves `dir`
    /// alone; on an error `dir` is put back where it was when possible. The same crash safety as [`apply_layer`](Self::apply_layer): the files are
    /// synced before the snapshot appears under its name, in one rename.
    pub fn commit_dir(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
        dir: &Path,
    ) -> Result<bool> {
        let Some(_lock) = self.lock_new(chain_id, parent)? else {
            return Ok(false);
        };
        let meta = fs::symlink_metadata(dir).map_err(ioe("stat", dir))?;
        if !meta.is_dir() {
            return Err(ioe("commit directory", dir)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            )));
        }
        let tmp = tempfile::Builder::new()
            .prefix("commit-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(ioe("create temp dir", &self.root.join("tmp")))?;
        if let Some(p) = parent {
            let pf = tmp.path().join("parent");
            fs::write(&pf, p.to_string()).map_err(ioe("write parent", &pf))?;
        }
        let fs_dir = tmp.path().join("fs");
        let sf = tmp.path().join("size");
        fs::write(&sf, content_size(dir).to_string()).map_err(ioe("write size", &sf))?;
        fs::rename(dir, &fs_dir).map_err(ioe("move directory", dir))?;
        let target = self.committed_dir(chain_id);
        let res = File::open(tmp.path())
            .map_err(ioe("open", tmp.path()))
            .and_then(|d| rustix::fs::syncfs(&d).map_err(|e| ioe("syncfs", tmp.path())(e.into())))
            .and_then(|()| {
                fs::rename(tmp.path(), &target).map_err(ioe("commit snapshot", &target))
            });
        if let Err(e) = res {
            // Give the directory back (the temp dir goes with `tmp`).
            let _ = fs::rename(&fs_dir, dir);
            return Err(e);
        }
        // Renamed away: nothing left for the guard to remove.
        let _ = tmp.keep();
        sync_dir(&self.root.join("committed"));
        Ok(true)
    }

    /// Lists committed snapshots.
    pub fn list_committed(&self) -> Result<Vec<CommittedInfo>> {
        let dir = self.root.join("committed");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(ioe("read directory", &dir))? {
            let e = e.map_err(ioe("read directory", &dir))?;
            let name = e.file_name();
            let Some(hex) = name.to_str() else { continue };
            let Ok(d) = Digest::from_hex(crate::digest::Algorithm::Sha256, hex) else {
                continue;
            };
            let parent = self.parent_of(&d).unwrap_or(None);
            out.push(CommittedInfo {
                chain_id: d,
                parent,
            });
        }
        out.sort_by(|a, b| a.chain_id.cmp(&b.chain_id));
        Ok(out)
    }

    /// Deletes a committed snapshot (garbage collection; the caller checks nothing uses it).
    pub fn remove_committed(&self, chain_id: &Digest) -> Result<()> {
        let dir = self.committed_dir(chain_id);
        if !dir.exists() {
            return Err(SnapshotError::NotFound(chain_id.to_string()));
        }
        // Rename first so a crash mid-delete never leaves a half snapshot under its name.
        let trash =
            self.root
                .join("tmp")
                .join(format!("rm-{}-{}", chain_id.hex(), std::process::id()));
        fs::rename(&dir, &trash).map_err(ioe("remove snapshot", &dir))?;
        fs::remove_dir_all(&trash).map_err(ioe("remove snapshot", &trash))
    }

    fn active_dir(&self, key: &str) -> Result<PathBuf> {
        if !valid_key(key) {
            return Err(SnapshotError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join("active").join(key))
    }

    /// Creates the active snapshot `key` on top of committed snapshot `parent` (or empty)
    /// and returns the mounts for it. Errors if `key` exists.
    pub fn prepare(&self, key: &str, parent: Option<&Digest>) -> Result<Vec<Mount>> {
        let dir = self.active_dir(key)?;
        if let Some(p) = parent {
            if !self.exists(p) {
                return Err(SnapshotError::NotFound(p.to_string()));
            }
        }
        let tmp = tempfile::Builder::new()
            .prefix("prepare-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(ioe("create temp dir", &self.root.join("tmp")))?;
        for d in ["fs", "work"] {
            let p = tmp.path().join(d);
            fs::create_dir(&p).map_err(ioe("create directory", &p))?;
        }
        fs::set_permissions(
            tmp.path().join("fs"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(ioe("chmod", tmp.path()))?;
        let info = ActiveInfo {
            key: key.to_string(),
            parent: parent.cloned(),
        };
        let ip = tmp.path().join("info.json");
        fs::write(&ip, serde_json::to_vec(&info).unwrap_or_default())
            .map_err(ioe("write info", &ip))?;
        let tmp_path = tmp.keep();
        if let Err(e) = fs::rename(&tmp_path, &dir) {
            let _ = fs::remove_dir_all(&tmp_path);
            if dir.exists() {
                return Err(SnapshotError::AlreadyExists(key.to_string()));
            }
            return Err(ioe("create active snapshot", &dir)(e));
        }
        sync_dir(&self.root.join("active"));
        self.mounts(key)
    }

    /// Information about an active snapshot.
    pub fn active(&self, key: &str) -> Result<ActiveInfo> {
        let dir = self.active_dir(key)?;
        let p = dir.join("info.json");
        let data = fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SnapshotError::NotFound(key.to_string())
            } else {
                ioe("read info", &p)(e)
            }
        })?;
        serde_json::from_slice(&data).map_err(|e| ioe("decode info", &p)(io::Error::other(e)))
    }

    /// The mounts of an existing active snapshot.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let info = self.active(key)?;
        let dir = self.active_dir(key)?;
        let upper = dir.join("fs");
        match &info.parent {
            None => Ok(vec![Mount {
                kind: "bind".into(),
                source: upper.to_string_lossy().into_owned(),
                target: None,
                options: vec!["rbind".into(), "rw".into()],
            }]),
            Some(p) => {
                let lowers: Vec<String> = self
                    .lower_dirs(p)?
                    .iter()
                    .map(|l| l.to_string_lossy().into_owned())
                    .collect();
                Ok(vec![Mount {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    target: None,
                    options: vec![
                        format!("lowerdir={}", lowers.join(":")),
                        format!("upperdir={}", upper.display()),
                        format!("workdir={}", dir.join("work").display()),
                        // Renamed directories must be copied up, not recorded as redirect
                        // xattrs, so that the upper dir alone describes the changes (diff).
                        "redirect_dir=off".into(),
                        "index=off".into(),
                    ],
                }])
            }
        }
    }

    /// The upper dir (container writes) of an active snapshot.
    pub fn upper_dir(&self, key: &str) -> Result<PathBuf> {
        self.active(key)?;
        Ok(self.active_dir(key)?.join("fs"))
    }

    /// Lists active snapshots.
    pub fn list_active(&self) -> Result<Vec<ActiveInfo>> {
        let dir = self.root.join("active");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(ioe("read directory", &dir))? {
            let e = e.map_err(ioe("read directory", &dir))?;
            if let Some(k) = e.file_name().to_str() {
                if let Ok(i) = self.active(k) {
                    out.push(i);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Mounts active snapshot `key` on `target` (see [`mount_all`]).
    pub fn mount(&self, key: &str, target: &Path) -> Result<()> {
        mount_all(&self.mounts(key)?, target)
    }

    /// Removes an active snapshot and the container's writes. The caller unmounts first.
    pub fn remove(&self, key: &str) -> Result<()> {
        let trash = self.detach(key)?;
        fs::remove_dir_all(&trash).map_err(ioe("remove snapshot", &trash))
    }

    /// The first, quick half of [`remove`](Self::remove): active snapshot `key` leaves
    /// `active/` (a rename into `tmp/`), so nothing sees it any more (its parent image
    /// is no longer in use, the key is free); deleting the returned directory, which may
    /// take long on a big upper dir, is the caller's. What a crash leaves there
    /// [`clean_tmp`](Self::clean_tmp) removes.
    pub fn detach(&self, key: &str) -> Result<PathBuf> {
        let dir = self.active_dir(key)?;
        if !dir.exists() {
            return Err(SnapshotError::NotFound(key.to_string()));
        }
        let trash = self
            .root
            .join("tmp")
            .join(format!("rm-{key}-{}", std::process::id()));
        fs::rename(&dir, &trash).map_err(ioe("remove snapshot", &dir))?;
        Ok(trash)
    }

    /// Writes the changes of active snapshot `key` (its upper dir) as an uncompressed layer
    /// tar to `out` (for `commit` / build steps).
    pub fn diff<W: io::Write>(&self, key: &str, out: W) -> Result<DiffResult> {
        let upper = self.upper_dir(key)?;
        Ok(layer::write_diff(&upper, out)?)
    }

    /// Disk bytes used by active snapshot `key`'s writes.
    pub fn active_usage(&self, key: &str) -> Result<u64> {
        Ok(dir_usage(&self.upper_dir(key)?))
    }

    /// Disk bytes used by committed snapshot `chain_id` (its own layer only).
    pub fn committed_usage(&self, chain_id: &Digest) -> Result<u64> {
        if !self.exists(chain_id) {
            return Err(SnapshotError::NotFound(chain_id.to_string()));
        }
        Ok(dir_usage(&self.committed_fs(chain_id)))
    }

    /// The uncompressed size of committed snapshot `chain_id`'s layer ([`content_size`] of
    /// its files), as recorded when it was applied; computed (and recorded) when missing.
    pub fn committed_size(&self, chain_id: &Digest) -> Result<u64> {
        if !self.exists(chain_id) {
            return Err(SnapshotError::NotFound(chain_id.to_string()));
        }
        let p = self.committed_dir(chain_id).join("size");
        if let Some(n) = fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            return Ok(n);
        }
        let n = content_size(&self.committed_fs(chain_id));
        // Best effort cache: a snapshot whose size file cannot be written is re-measured.
        let tmp = p.with_extension(format!("tmp-{}", std::process::id()));
        if fs::write(&tmp, n.to_string()).is_ok() && fs::rename(&tmp, &p).is_err() {
            let _ = fs::remove_file(&tmp);
        }
        Ok(n)
    }

    /// Removes leftovers of killed processes in `tmp/` (half-extracted layers, half-removed
    /// snapshots) that are older than `min_age`, so that running applies are left alone.
    pub fn clean_tmp(&self, min_age: std::time::Duration) {
        let now = std::time::SystemTime::now();
        if let Ok(rd) = fs::read_dir(self.root.join("tmp")) {
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| now.duration_since(t).unwrap_or_default() >= min_age)
                    .unwrap_or(true);
                if old {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

fn sync_dir(p: &Path) {
    if let Ok(d) = File::open(p) {
        let _ = d.sync_all();
    }
}

/// Disk usage (allocated blocks) of a tree, counting each inode once, not following symlinks.
pub fn dir_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// The content size of a tree as docker measures a layer (`docker images` SIZE): the sum
/// of the sizes (`st_size`) of everything but directories — file bytes and symlink target
/// lengths — counting each inode once (hard links) and not following symlinks. Overlay
/// whiteouts (0/0 character devices) count 0.
pub fn content_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
            continue;
        }
        if m.size() == 0 || !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.size();
    }
    total
}

/// Committed snapshots are the sources of derived layer blobs (see [`crate::content`]):
/// the blob made from chain id `c` is [`layer::write_diff`] of `c`'s directory. That is
/// byte for byte the tar [`layer::seal_diff`] wrote when the directory was a build step's
/// upper dir committed with [`Snapshotter::commit_dir`]: the seal left exactly what its
/// tar describes (names, modes, owners, whole-second times, carried xattrs, whiteouts
/// and opaque markers as overlay keeps them), and hard-link entries depend only on which
/// paths inside the layer share an inode, not on link counts.
impl crate::content::BlobSource for Snapshotter {
    fn has_source(&self, source: &Digest) -> bool {
        self.exists(source)
    }

    fn write_blob(&self, source: &Digest, out: &mut dyn io::Write) -> io::Result<()> {
        if !self.exists(source) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("snapshot {source} not found"),
            ));
        }
        layer::write_diff(&self.committed_fs(source), out)
            .map(|_| ())
            .map_err(io::Error::other)
    }
}

impl crate::image::LayerSizes for Snapshotter {
    fn layer_size(&self, chain_id: &Digest) -> Option<u64> {
        self.committed_size(chain_id).ok()
    }
}

const PAGE_LIMIT: usize = 4000;

/// Mounts `mounts` in order on `target` (an existing directory). Overlay mounts whose
/// options do not fit in a page are made with `fsopen`/`fsconfig` (one `lowerdir+` per
/// layer). On error, mounts already made by this call are undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    let mut done: Vec<PathBuf> = Vec::new();
    for m in mounts {
        let t = match &m.target {
            Some(sub) => target.join(sub.trim_start_matches('/')),
            None => target.to_path_buf(),
        };
        if let Err(e) = mount_one(m, &t) {
            for d in done.iter().rev() {
                let _ = unmount(d);
            }
            return Err(e);
        }
        done.push(t);
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    use nix::mount::MsFlags;
    let merr = |source: io::Error| SnapshotError::Mount {
        kind: m.kind.clone(),
        target: target.to_path_buf(),
        source,
    };
    match m.kind.as_str() {
        "bind" => {
            let mut flags = MsFlags::MS_BIND;
            if m.options.iter().any(|o| o == "rbind") {
                flags |= MsFlags::MS_REC;
            }
            nix::mount::mount(
                Some(Path::new(&m.source)),
                target,
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(|e| merr(e.into()))?;
            if m.options.iter().any(|o| o == "ro") {
                nix::mount::mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(|e| merr(e.into()))?;
            }
            Ok(())
        }
        _ => {
            let data = m.options.join(",");
            if data.len() < PAGE_LIMIT {
                return nix::mount::mount(
                    Some(m.source.as_str()),
                    target,
                    Some(m.kind.as_str()),
                    MsFlags::empty(),
                    Some(data.as_str()),
                )
                .map_err(|e| merr(e.into()));
            }
            mount_fsconfig(m, target).map_err(merr)
        }
    }
}

fn mount_fsconfig(m: &Mount, target: &Path) -> io::Result<()> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags,
        FsOpenFlags, MountAttrFlags, MoveMountFlags,
    };
    let fd = fsopen(m.kind.as_str(), FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(&fd, "source", m.source.as_str())?;
    for opt in &m.options {
        let (k, v) = opt.split_once('=').unwrap_or((opt.as_str(), ""));
        if k == "lowerdir" {
            for l in v.split(':') {
                fsconfig_set_string(&fd, "lowerdir+", l)?;
            }
        } else if v.is_empty() {
            rustix::mount::fsconfig_set_flag(&fd, k)?;
        } else {
            fsconfig_set_string(&fd, k, v)?;
        }
    }
    fsconfig_create(&fd)?;
    let mfd = fsmount(&fd, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    move_mount(
        &mfd,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Unmounts `target` (lazily, so a busy mount does not block cleanup).
pub fn unmount(target: &Path) -> Result<()> {
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
        SnapshotError::Mount {
            kind: "umount".into(),
            target: target.to_path_buf(),
            source: e.into(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn snap() -> (tempfile::TempDir, Snapshotter) {
        let d = tempfile::tempdir().unwrap();
        let s = Snapshotter::open(d.path().join("snapshots")).unwrap();
        (d, s)
    }

    #[test]
    fn a_directory_is_committed_by_moving_it() {
        let (d, s) = snap();
        let base = Digest::sha256_of(b"base layer");
        let top = Digest::sha256_of(b"top chain");
        // The parent must exist.
        let dir = d.path().join("snapshots/tmp/layer");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/f"), b"12345").unwrap();
        std::os::unix::fs::symlink("sub/f", dir.join("l")).unwrap();
        assert!(matches!(
            s.commit_dir(&top, Some(&base), &dir),
            Err(SnapshotError::NotFound(_))
        ));
        assert!(
            dir.join("sub/f").exists(),
            "a refused commit keeps the directory"
        );
        // A base layer, then the top on it.
        let bdir = d.path().join("snapshots/tmp/base");
        fs::create_dir_all(&bdir).unwrap();
        fs::write(bdir.join("b"), b"b").unwrap();
        let ino = fs::metadata(dir.join("sub/f")).unwrap().ino();
        assert!(s.commit_dir(&base, None, &bdir).unwrap());
        assert!(s.commit_dir(&top, Some(&base), &dir).unwrap());
        assert!(!dir.exists() && !bdir.exists());
        assert!(s.exists(&top));
        let f = s.committed_fs(&top).join("sub/f");
        assert_eq!(fs::read(&f).unwrap(), b"12345");
        // Moved, not copied.
        assert_eq!(fs::metadata(&f).unwrap().ino(), ino);
        assert_eq!(s.parent_of(&top).unwrap(), Some(base.clone()));
        assert_eq!(s.parent_of(&base).unwrap(), None);
        assert_eq!(s.committed_size(&top).unwrap(), 5 + 5);
        assert_eq!(
            s.lower_dirs(&top).unwrap(),
            vec![s.committed_fs(&top), s.committed_fs(&base)]
        );
        // Nothing left behind in tmp/.
        let left: Vec<_> = fs::read_dir(d.path().join("snapshots/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // Committing the same chain again is a no-op that leaves the directory alone.
        let again = d.path().join("again");
        fs::create_dir(&again).unwrap();
        assert!(!s.commit_dir(&top, Some(&base), &again).unwrap());
        assert!(again.is_dir());
        assert_eq!(fs::read(&f).unwrap(), b"12345");
        // Not a directory.
        let file = d.path().join("file");
        fs::write(&file, b"x").unwrap();
        let other = Digest::sha256_of(b"other");
        assert!(s.commit_dir(&other, None, &file).is_err());
        assert!(!s.exists(&other) && file.exists());
    }
}
