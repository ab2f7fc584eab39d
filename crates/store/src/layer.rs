//! Layer tars: applying one onto a directory, and producing one from an overlay upper dir.
//!
//! # Applying ([`apply_layer`])
//!
//! The input may be plain, gzip or zstd (detected by magic bytes). Entries are written into
//! `root` — normally an empty directory that becomes an overlayfs lower/upper dir — with:
//!
//! * **Whiteouts** in overlayfs form: `.wh.name` becomes a character device 0:0 named
//!   `name`; `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory. Other
//!   `.wh..wh.*` (AUFS metadata) entries are ignored.
//! * **Confinement**: entry names are cleaned lexically; a leading `/` is dropped and a `..`
//!   that would climb above `root` is an error ([`LayerError::PathEscapes`]). Symlinks met
//!   while resolving an entry's *parent* directories are followed *as if `root` were `/`*
//!   (absolute targets and `..` clamp at `root`), so nothing outside `root` is ever written.
//!   The final component is never followed: an existing file, symlink or directory there
//!   is replaced. Hardlink targets are resolved the same way and must exist inside `root`
//!   (an escaping target is [`LayerError::PathEscapes`]). Symlink *targets* are stored
//!   verbatim (they are only interpreted inside the container).
//! * Ownership (unless [`ApplyOptions::ignore_ownership`]), modes (incl. setuid), mtimes,
//!   and `SCHILY.xattr.*` PAX xattrs; device nodes per [`ApplyOptions::devices`].
//! * No per-entry fsync: callers that need durability sync the tree once (see
//!   `snapshot`), which keeps application at disk speed.
//!
//! The **diff id** (sha256 of the uncompressed tar stream, including the end-of-archive
//! blocks and padding) is computed while applying. A truncated compressed stream or a
//! short entry is an error.
//!
//! # Diffing ([`write_diff`])
//!
//! Walks an overlay *upper* directory (sorted, deterministic) and writes a tar: char devices
//! 0:0 become `.wh.<name>` entries, opaque directories get a `.wh..wh..opq` entry, files
//! with several links inside the tree become hardlink entries, and `security.capability`
//! / `user.*` xattrs are carried as PAX records.
//!
//! # Sealing ([`seal_diff`])
//!
//! The same tar as [`write_diff`], written from an upper dir that is *about to become a
//! committed snapshot itself* (a build step's, after its overlay is unmounted): on the way
//! the directory is made exactly what [`apply_layer`] of that tar onto an empty directory
//! would give — xattrs the tar does not carry are removed (all but `security.capability`,
//! `user.*` and an opaque marker `y`), sockets are removed, every time is set to the
//! whole second the tar records, the root directory is reset to `0755` owned by this
//! process. Renaming the directory into the snapshot store then replaces unpacking the
//! layer again (a second copy of every byte). The tar is not hashed here: the caller
//! hashes what it stores (the blob digest of an uncompressed layer *is* its diff id), so
//! every byte is hashed once. Names a tar cannot round-trip (an entry whose name starts
//! with `.wh.`, which applying turns into a whiteout) make the result
//! [`SealResult::exact`] false: the caller must then unpack the tar instead.
//!
//! Once sealed, the directory gives the very same tar again: [`write_diff`] of it (also
//! after it was renamed into a committed snapshot, and after links to its files from
//! outside were removed) is byte for byte what [`seal_diff`] wrote, because the seal
//! leaves exactly what the tar records and hard-link entries depend only on the paths
//! inside the tree that share an inode (the first one walked is the file, the later
//! ones links to it), never on link counts. That is what lets a build keep such a layer
//! as its snapshot only, and make the tar when it is read (derived blobs, see
//! [`crate::content`]).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use errkind::{ErrorKind, HasKind};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use crate::digest::{Digest, HashingReader, HashingWriter};

mod predict;
pub use predict::{seal_diff_predicted, PredictedSeal, PredictedTar, TarPredictor};

/// The xattr overlayfs uses to mark an opaque directory.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Prefix of whiteout entries in a layer tar.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker entry.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Errors from applying or producing a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An entry name climbs out of the root with `..`.
    #[error("layer entry {0:?} escapes the root directory")]
    PathEscapes(String),
    /// A hardlink points at something that is not in the layer's tree.
    #[error("layer hardlink {path:?} points at missing or invalid target {target:?}")]
    BadHardlink {
        /// The link entry.
        path: String,
        /// Its target.
        target: String,
    },
    /// An entry is not what it must be (bad whiteout name, parent is a file, …).
    #[error("invalid layer entry {path:?}: {reason}")]
    InvalidEntry {
        /// The entry.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// Device nodes cannot be created here and the options say to fail.
    #[error("layer entry {0:?} is a device node, which this context cannot create")]
    DeviceNotAllowed(String),
    /// The tar stream (or its compression) is malformed or truncated.
    #[error("reading layer tar")]
    Corrupt(#[source] io::Error),
    /// Writing to the target tree failed.
    #[error("layer {op} {path}")]
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

impl HasKind for LayerError {
    fn kind(&self) -> ErrorKind {
        match self {
            LayerError::Io { .. } => ErrorKind::Internal,
            LayerError::DeviceNotAllowed(_) => ErrorKind::FailedPrecondition,
            _ => ErrorKind::InvalidArgument,
        }
    }
}

type Result<T, E = LayerError> = std::result::Result<T, E>;

fn ioe(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LayerError {
    let path = path.to_path_buf();
    move |source| LayerError::Io { op, path, source }
}

fn nixe(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> LayerError {
    let path = path.to_path_buf();
    move |e| LayerError::Io {
        op,
        path,
        source: e.into(),
    }
}

/// What to do with device-node entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// Create them (needs CAP_MKNOD).
    #[default]
    Create,
    /// Skip them silently (rootless).
    Skip,
    /// Fail with [`LayerError::DeviceNotAllowed`].
    Error,
}

/// Options for [`apply_layer`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Do not chown entries (rootless; everything belongs to the caller).
    pub ignore_ownership: bool,
    /// Device node handling.
    pub devices: DevicePolicy,
}

/// What [`apply_layer`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Length of the uncompressed tar stream.
    pub tar_size: u64,
    /// Bytes of regular file content written.
    pub content_size: u64,
    /// Number of entries applied.
    pub entries: u64,
}

/// The compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a stream.
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `reader` in the right decompressor for its magic bytes.
pub fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buf = BufReader::with_capacity(1 << 20, reader);
    let c = Compression::detect(buf.fill_buf()?);
    let r: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
    };
    Ok((c, r))
}

/// Applies a layer tar (plain/gzip/zstd) onto `root`; see the module docs.
pub fn apply_layer<R: Read>(reader: R, root: &Path, opts: &ApplyOptions) -> Result<ApplyResult> {
    let (_, dec) = decompress(reader).map_err(LayerError::Corrupt)?;
    let mut hashed = HashingReader::new(dec);
    let mut ap = Applier {
        root: root.to_path_buf(),
        opts: opts.clone(),
        parents: HashMap::new(),
        dirs: Vec::new(),
        content_size: 0,
        entries: 0,
        buf: vec![0u8; 256 * 1024],
    };
    {
        let mut ar = tar::Archive::new(&mut hashed);
        for entry in ar.entries().map_err(LayerError::Corrupt)? {
            let entry = entry.map_err(LayerError::Corrupt)?;
            ap.apply_entry(entry)?;
        }
    }
    // Hash the rest of the stream (end-of-archive blocks, padding) for the diff id.
    io::copy(&mut hashed, &mut io::sink()).map_err(LayerError::Corrupt)?;
    // Directory times last: creating children changed them.
    for (path, mtime) in ap.dirs.iter().rev() {
        set_mtime(path, *mtime)?;
    }
    let (_, diff_id, tar_size) = hashed.finish();
    Ok(ApplyResult {
        diff_id,
        tar_size,
        content_size: ap.content_size,
        entries: ap.entries,
    })
}

struct Applier {
    root: PathBuf,
    opts: ApplyOptions,
    /// Cache: cleaned relative parent path → real absolute directory.
    parents: HashMap<PathBuf, PathBuf>,
    dirs: Vec<(PathBuf, u64)>,
    content_size: u64,
    entries: u64,
    /// One copy buffer reused for every file.
    buf: Vec<u8>,
}

/// Copies `r` into `f` through `buf`; read errors are the layer's, write errors the disk's.
fn copy_with(r: &mut impl Read, mut f: fs::File, buf: &mut [u8], path: &Path) -> Result<u64> {
    let mut n = 0u64;
    loop {
        let k = match r.read(buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LayerError::Corrupt(e)),
        };
        f.write_all(&buf[..k]).map_err(ioe("write file", path))?;
        n += k as u64;
    }
}

/// Cleans an entry name into a relative path inside the root (no `.`/`..`, no leading `/`).
/// Returns `None` for the root itself.
fn clean_rel(path: &Path, display: &str) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(LayerError::PathEscapes(display.to_string()));
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

impl Applier {
    /// Resolves the relative directory `rel` inside the root, following symlinks confined to
    /// the root, creating missing directories. Returns the real absolute path.
    fn resolve_dir(&mut self, rel: &Path, display: &str) -> Result<PathBuf> {
        if let Some(p) = self.parents.get(rel) {
            return Ok(p.clone());
        }
        let mut cur = PathBuf::new();
        let mut queue: Vec<OsString> = rel
            .components()
            .rev()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        let mut links = 0;
        while let Some(c) = queue.pop() {
            if c == OsStr::new("..") {
                cur.pop();
                continue;
            }
            if c == OsStr::new(".") || c == OsStr::new("/") || c.is_empty() {
                continue;
            }
            let cand = cur.join(&c);
            let full = self.root.join(&cand);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > 40 {
                        return Err(LayerError::InvalidEntry {
                            path: display.to_string(),
                            reason: "too many levels of symbolic links",
                        });
                    }
                    let target = fs::read_link(&full).map_err(ioe("read symlink", &full))?;
                    if target.is_absolute() {
                        cur = PathBuf::new();
                    }
                    for tc in target.components().rev() {
                        match tc {
                            Component::Normal(n) => queue.push(n.to_os_string()),
                            Component::ParentDir => queue.push("..".into()),
                            _ => {}
                        }
                    }
                }
                Ok(m) if m.is_dir() => cur = cand,
                Ok(_) => {
                    return Err(LayerError::InvalidEntry {
                        path: display.to_string(),
                        reason: "a parent directory is not a directory",
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&full).map_err(ioe("create directory", &full))?;
                    cur = cand;
                }
                Err(e) => return Err(ioe("stat", &full)(e)),
            }
        }
        let real = self.root.join(cur);
        self.parents.insert(rel.to_path_buf(), real.clone());
        Ok(real)
    }

    /// Removes whatever is at `path` (never following a symlink) unless it is a directory
    /// and `keep_dir` is set. Returns true if a directory was kept.
    fn clear(&mut self, path: &Path, keep_dir: bool) -> Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                fs::remove_dir_all(path).map_err(ioe("remove directory", path))?;
                self.parents.clear();
                Ok(false)
            }
            Ok(m) => {
                fs::remove_file(path).map_err(ioe("remove", path))?;
                if m.file_type().is_symlink() {
                    self.parents.clear();
                }
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ioe("stat", path)(e)),
        }
    }

    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path().map_err(LayerError::Corrupt)?.into_owned();
        let display = raw_path.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let Some(rel) = clean_rel(&raw_path, &display)? else {
            // The root directory itself: apply its metadata only.
            if kind.is_dir() {
                let root = self.root.clone();
                self.set_meta(&mut entry, &root, false)?;
                let mtime = entry.header().mtime().unwrap_or(0);
                self.dirs.push((root, mtime));
            }
            return Ok(());
        };
        self.entries += 1;
        let name = rel
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let name_bytes = name.as_bytes();

        if let Some(wh) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let dir = self.resolve_dir(&parent_rel, &display)?;
            if name_bytes == OPAQUE_MARKER.as_bytes() {
                rustix::fs::lsetxattr(&dir, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
                    .map_err(|e| ioe("set opaque xattr", &dir)(e.into()))?;
                return Ok(());
            }
            if wh.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Ok(()); // AUFS metadata (.wh..wh.plnk etc.)
            }
            if wh.is_empty() || wh == b"." || wh == b".." || wh.contains(&b'/') {
                return Err(LayerError::InvalidEntry {
                    path: display,
                    reason: "bad whiteout name",
                });
            }
            let target = dir.join(OsStr::from_bytes(wh));
            self.clear(&target, false)?;
            nix::sys::stat::mknod(&target, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(nixe("create whiteout", &target))?;
            return Ok(());
        }

        let dir = self.resolve_dir(&parent_rel, &display)?;
        let path = dir.join(&name);
        match kind {
            tar::EntryType::Directory => {
                if !self.clear(&path, true)? {
                    fs::create_dir(&path).map_err(ioe("create directory", &path))?;
                }
                self.set_meta(&mut entry, &path, false)?;
                let mtime = entry.header().mtime().unwrap_or(0);
                self.dirs.push((path, mtime));
                return Ok(());
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&path, false)?;
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(ioe("create file", &path))?;
                let expected = entry.size();
                let n = copy_with(&mut entry, f, &mut self.buf, &path)?;
                if n != expected {
                    return Err(LayerError::Corrupt(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry {display:?} is truncated"),
                    )));
                }
                self.content_size += n;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Corrupt)?
                    .ok_or_else(|| LayerError::InvalidEntry {
                        path: display.clone(),
                        reason: "symlink without target",
                    })?
                    .into_owned();
                self.clear(&path, false)?;
                std::os::unix::fs::symlink(&target, &path).map_err(ioe("create symlink", &path))?;
                self.parents.clear();
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Corrupt)?
                    .ok_or_else(|| LayerError::InvalidEntry {
                        path: display.clone(),
                        reason: "hardlink without target",
                    })?
                    .into_owned();
                let tdisp = target.to_string_lossy().into_owned();
                let bad = || LayerError::BadHardlink {
                    path: display.clone(),
                    target: tdisp.clone(),
                };
                let trel = clean_rel(&target, &tdisp)
                    .map_err(|_| bad())?
                    .ok_or_else(bad)?;
                let tname = trel.file_name().ok_or_else(bad)?.to_os_string();
                let tdir = self.resolve_dir(trel.parent().unwrap_or(Path::new("")), &tdisp)?;
                let tpath = tdir.join(tname);
                match fs::symlink_metadata(&tpath) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(bad()),
                }
                if tpath == path {
                    return Ok(());
                }
                self.clear(&path, false)?;
                fs::hard_link(&tpath, &path).map_err(ioe("create hardlink", &path))?;
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let is_dev = kind != tar::EntryType::Fifo;
                if is_dev {
                    match self.opts.devices {
                        DevicePolicy::Create => {}
                        DevicePolicy::Skip => return Ok(()),
                        DevicePolicy::Error => return Err(LayerError::DeviceNotAllowed(display)),
                    }
                }
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.clear(&path, false)?;
                match nix::sys::stat::mknod(
                    &path,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    libc::makedev(major, minor),
                ) {
                    Ok(()) => {}
                    Err(nix::Error::EPERM)
                        if is_dev && self.opts.devices == DevicePolicy::Create =>
                    {
                        return Err(LayerError::DeviceNotAllowed(display))
                    }
                    Err(e) => return Err(nixe("create device node", &path)(e)),
                }
            }
            _ => {
                let shown = display.as_str();
                tracing::debug!(entry = shown, kind = ?kind, "skipping unsupported tar entry type");
                return Ok(());
            }
        }
        let is_link = kind == tar::EntryType::Symlink;
        self.set_meta(&mut entry, &path, is_link)?;
        let mtime = entry.header().mtime().unwrap_or(0);
        set_mtime(&path, mtime)?;
        Ok(())
    }

    fn set_meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        is_link: bool,
    ) -> Result<()> {
        let h = entry.header();
        if !self.opts.ignore_ownership {
            let uid = h.uid().unwrap_or(0) as u32;
            let gid = h.gid().unwrap_or(0) as u32;
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                path,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(nixe("chown", path))?;
        }
        if !is_link {
            let mode = h.mode().unwrap_or(0o644) & 0o7777;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(ioe("chmod", path))?;
        }
        if let Some(exts) = entry.pax_extensions().map_err(LayerError::Corrupt)? {
            for ext in exts {
                let ext = ext.map_err(LayerError::Corrupt)?;
                let Ok(key) = ext.key() else { continue };
                let Some(xname) = key.strip_prefix("SCHILY.xattr.") else {
                    continue;
                };
                if xname.starts_with("trusted.overlay.") {
                    continue;
                }
                match rustix::fs::lsetxattr(
                    path,
                    xname,
                    ext.value_bytes(),
                    rustix::fs::XattrFlags::empty(),
                ) {
                    Ok(()) => {}
                    Err(e)
                        if e == rustix::io::Errno::NOTSUP
                            || (self.opts.ignore_ownership && e == rustix::io::Errno::PERM) =>
                    {
                        tracing::warn!(path = %path.display(), xattr = xname, "cannot set xattr here, skipping");
                    }
                    Err(e) => return Err(ioe("set xattr", path)(e.into())),
                }
            }
        }
        Ok(())
    }
}

fn set_mtime(path: &Path, mtime: u64) -> Result<()> {
    let ts = TimeSpec::new(mtime as i64, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(nixe("set mtime", path))
}

/// What [`write_diff`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffResult {
    /// sha256 of the tar written (uncompressed): the layer's diff id.
    pub diff_id: Digest,
    /// Bytes written.
    pub size: u64,
}

/// Writes the changes recorded in overlay upper dir `upper` as an uncompressed layer tar to
/// `out`; see the module docs.
pub fn write_diff<W: Write>(upper: &Path, out: W) -> Result<DiffResult> {
    let hw = HashingWriter::new(out);
    let mut b = tar::Builder::new(hw);
    b.mode(tar::HeaderMode::Complete);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk_diff(upper, Path::new(""), &mut b, &mut links, None)?;
    b.finish().map_err(ioe("write tar", upper))?;
    let hw = b.into_inner().map_err(ioe("write tar", upper))?;
    let (_, diff_id, size) = hw.finish();
    Ok(DiffResult { diff_id, size })
}

/// What [`seal_diff`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealResult {
    /// Bytes of tar written.
    pub size: u64,
    /// Whether the directory now equals what applying the tar gives. When false (an
    /// entry named `.wh.*`), the directory must not be used as the layer's snapshot.
    pub exact: bool,
}

/// State of one [`seal_diff`] walk.
struct Seal {
    exact: bool,
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    n: u64,
}

/// Where [`walk_diff`] writes a layer tar. A sink that holds a prediction of the tar
/// ([`predict`]) may take a regular file's entry from it instead of its data being read.
trait DiffSink: Write {
    /// Whether [`claim`](Self::claim) may take the next file (its header is then worth
    /// making apart).
    fn predicting(&self) -> bool {
        false
    }

    /// Takes the whole entry of a regular file (`header`: its header bytes; its data: `len`
    /// bytes of inode `ino` on `dev`; then its padding) as written, when that is the next
    /// predicted entry. Nothing is written to the sink then.
    fn claim(&mut self, _header: &[u8], _dev: u64, _ino: u64, _len: u64) -> bool {
        false
    }
}

impl<T: DiffSink + ?Sized> DiffSink for &mut T {
    fn predicting(&self) -> bool {
        (**self).predicting()
    }
    fn claim(&mut self, header: &[u8], dev: u64, ino: u64, len: u64) -> bool {
        (**self).claim(header, dev, ino, len)
    }
}

impl<W: Write> DiffSink for Counting<W> {}
impl<W: Write> DiffSink for HashingWriter<W> {}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the layer tar of overlay upper dir `upper` to `out` (byte for byte what
/// [`write_diff`] writes, not hashed) and makes `upper` what applying that tar onto an
/// empty directory gives; see the module docs. `upper` must not be mounted.
pub fn seal_diff<W: Write>(upper: &Path, out: W) -> Result<SealResult> {
    let (exact, c) = seal_with(upper, Counting { inner: out, n: 0 })?;
    Ok(SealResult { size: c.n, exact })
}

/// [`seal_diff`] into a [`DiffSink`]; returns whether the seal is exact, and the sink.
fn seal_with<W: DiffSink>(upper: &Path, out: W) -> Result<(bool, W)> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut seal = Seal { exact: true };
    walk_diff(upper, Path::new(""), &mut b, &mut links, Some(&mut seal))?;
    b.finish().map_err(ioe("write tar", upper))?;
    let c = b.into_inner().map_err(ioe("write tar", upper))?;
    // The root: as `Snapshotter::apply_layer` creates it (the tar has no entry for it).
    strip_xattrs(upper, false)?;
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        upper,
        Some(nix::unistd::geteuid()),
        Some(nix::unistd::getegid()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(nixe("chown", upper))?;
    fs::set_permissions(upper, fs::Permissions::from_mode(0o755)).map_err(ioe("chmod", upper))?;
    Ok((seal.exact, c))
}

/// Removes the xattrs of `path` that a layer tar does not carry: all but
/// `security.capability`, `user.*` and (when `opaque_ok`) `trusted.overlay.opaque=y`.
fn strip_xattrs(path: &Path, opaque_ok: bool) -> Result<()> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(()),
        Err(e) => return Err(ioe("list xattrs", path)(e.into())),
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let keep = name == b"security.capability"
            || name.starts_with(b"user.")
            || (opaque_ok
                && name == OPAQUE_XATTR.as_bytes()
                && {
                    let mut v = [0u8; 4];
                    matches!(rustix::fs::lgetxattr(path, OPAQUE_XATTR, &mut v[..]), Ok(1) if v[0] == b'y')
                });
        if keep {
            continue;
        }
        let cname = std::ffi::CString::new(name).map_err(|_| LayerError::InvalidEntry {
            path: path.to_string_lossy().into_owned(),
            reason: "xattr name with a NUL byte",
        })?;
        match rustix::fs::lremovexattr(path, cname.as_c_str()) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::NODATA => {}
            Err(e) => return Err(ioe("remove xattr", path)(e.into())),
        }
    }
    Ok(())
}

/// Sets both times of `path` (not following a symlink) to whole second `secs`, as
/// [`apply_layer`] sets them from a tar header.
fn set_whole_second(path: &Path, secs: i64) -> Result<()> {
    set_mtime(path, secs.max(0) as u64)
}

/// Starts writing `f`'s dirty pages to disk without waiting (the snapshot's later
/// `syncfs` then has less left to do). Best effort.
fn start_writeback(f: &fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its integer arguments; the fd is open.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// How much of a file [`write_diff`] and [`seal_diff`] read at a time.
const READ_CHUNK: usize = 1 << 20;

fn header_for(m: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    base_header(
        kind,
        m.mode(),
        m.uid() as u64,
        m.gid() as u64,
        m.mtime().max(0) as u64,
    )
}

/// The header of every entry a layer tar gets (size 0; name not set).
fn base_header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

/// The bytes `tar::Builder::append_data` writes for header `h` at `path` before the data:
/// a GNU long-name entry first when the name does not fit, then the header (with its
/// name and checksum set).
fn header_bytes(h: &mut tar::Header, path: &Path) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::with_capacity(1024));
    b.append_data(h, path, io::empty())?;
    // Taken before the builder's drop appends the end of the archive.
    Ok(std::mem::take(b.get_mut()))
}

fn carried_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // As large as `strip_xattrs`'s: a short buffer (ERANGE) would carry no xattrs before
    // a seal strips the others and some after, and a layer made again from its sealed
    // directory must be the same tar.
    let mut names = vec![0u8; 64 * 1024];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return out;
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name != "security.capability" && !name.starts_with("user.") {
            continue;
        }
        let mut val = vec![0u8; 64 * 1024];
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut val[..]) {
            val.truncate(len);
            out.push((format!("SCHILY.xattr.{name}"), val));
        }
    }
    out
}

fn walk_diff<W: DiffSink>(
    base: &Path,
    rel: &Path,
    b: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), PathBuf>,
    mut seal: Option<&mut Seal>,
) -> Result<()> {
    let dir = base.join(rel);
    let mut names: Vec<OsString> = fs::read_dir(&dir)
        .map_err(ioe("read directory", &dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(ioe("read directory", &dir))?;
    names.sort();
    let werr = |p: &Path| ioe("write tar entry", p);
    for name in names {
        let rp = rel.join(&name);
        let full = base.join(&rp);
        let m = fs::symlink_metadata(&full).map_err(ioe("stat", &full))?;
        let ft = m.file_type();
        if ft.is_socket() {
            // Not carried in layers (nor its xattrs); when sealing, not in the snapshot
            // either.
            if seal.is_some() {
                fs::remove_file(&full).map_err(ioe("remove socket", &full))?;
            }
            continue;
        }
        if let Some(s) = seal.as_deref_mut() {
            if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
                s.exact = false;
            }
        }
        let xattrs = carried_xattrs(&full);
        let pax = |b: &mut tar::Builder<W>| -> Result<()> {
            if !xattrs.is_empty() {
                b.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                    .map_err(werr(&full))?;
            }
            Ok(())
        };
        if ft.is_char_device() && m.rdev() == 0 {
            pax(b)?;
            let mut wh = OsString::from(WHITEOUT_PREFIX);
            wh.push(&name);
            let mut h = header_for(&m, tar::EntryType::Regular);
            h.set_mode(0o644);
            b.append_data(&mut h, rel.join(wh), io::empty())
                .map_err(werr(&full))?;
            // A whiteout's metadata plays no part (apply makes a fresh one).
            continue;
        } else if ft.is_dir() {
            // A directory's entry follows its contents (whose entries create it when
            // applied; its own then sets its metadata), so that a layer's files come
            // first and their entries can be hashed before the directories' times are
            // known (see `predict`). The opaque marker still comes first: it hides the
            // lower layers' entries, never this layer's.
            let mut v = [0u8; 4];
            if let Ok(n) = rustix::fs::lgetxattr(&full, OPAQUE_XATTR, &mut v[..]) {
                if &v[..n] == b"y" {
                    let mut h = header_for(&m, tar::EntryType::Regular);
                    h.set_mode(0o644);
                    b.append_data(&mut h, rp.join(OPAQUE_MARKER), io::empty())
                        .map_err(werr(&full))?;
                }
            }
            if seal.is_some() {
                strip_xattrs(&full, true)?;
            }
            walk_diff(base, &rp, b, links, seal.as_deref_mut())?;
            pax(b)?;
            let mut h = header_for(&m, tar::EntryType::Directory);
            b.append_data(&mut h, &rp, io::empty())
                .map_err(werr(&full))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&full).map_err(ioe("read symlink", &full))?;
            pax(b)?;
            let mut h = header_for(&m, tar::EntryType::Symlink);
            b.append_link(&mut h, &rp, &target).map_err(werr(&full))?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = links.get(&key) {
                    pax(b)?;
                    let mut h = header_for(&m, tar::EntryType::Link);
                    b.append_link(&mut h, &rp, first).map_err(werr(&full))?;
                    continue;
                }
                links.insert(key, rp.clone());
            }
            let mut h = header_for(&m, tar::EntryType::Regular);
            h.set_size(m.len());
            // A file the sink has as predicted is not read (its hash is known).
            let claimed = xattrs.is_empty() && b.get_mut().predicting() && {
                let header = header_bytes(&mut h.clone(), &rp).map_err(werr(&full))?;
                b.get_mut().claim(&header, m.dev(), m.ino(), m.len())
            };
            let f = if claimed {
                seal.is_some().then(|| fs::File::open(&full).ok()).flatten()
            } else {
                pax(b)?;
                let f = fs::File::open(&full).map_err(ioe("open", &full))?;
                // Read in large pieces: `io::copy` would otherwise move 8 KiB per syscall.
                let data = io::BufReader::with_capacity(READ_CHUNK, (&f).take(m.len()));
                b.append_data(&mut h, &rp, data).map_err(werr(&full))?;
                Some(f)
            };
            if let (Some(f), true) = (f.as_ref(), seal.is_some()) {
                start_writeback(f);
            }
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            let mut h = header_for(&m, kind);
            h.set_device_major(libc::major(m.rdev()))
                .map_err(werr(&full))?;
            h.set_device_minor(libc::minor(m.rdev()))
                .map_err(werr(&full))?;
            pax(b)?;
            b.append_data(&mut h, &rp, io::empty())
                .map_err(werr(&full))?;
        } else {
            // Nothing else is carried in layers.
            continue;
        }
        if seal.is_some() {
            // Directories were stripped before their children were walked.
            if !ft.is_dir() {
                strip_xattrs(&full, false)?;
            }
            // Last, so that changes to a directory's children do not move its time.
            set_whole_second(&full, m.mtime())?;
        }
    }
    Ok(())
}
