//! The build context: a directory tree that `COPY`/`ADD` read from.
//!
//! A context comes from a directory on disk ([`BuildContext::from_dir`], used in place) or
//! from a tar stream as the Engine API sends it ([`BuildContext::from_tar`], plain or
//! gzip; streamed entry by entry into a private temporary directory, never held in memory).
//! `.dockerignore` at the context root hides paths from `COPY`/`ADD` (the Dockerfile itself
//! can always be read).
//!
//! Every source path is resolved inside a root ([`resolve`]): `..` may not leave it, and a
//! symlink is followed only while it stays inside. In the build context an escape is an
//! error; in an image root filesystem (`COPY --from`) absolute links and `..` are taken
//! relative to that root, as a container would see them.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use errkind::{ErrorKind, HasKind};
use sha2::{Digest, Sha256};

use crate::dockerignore::{clean_rel, glob_segment, has_glob, DockerIgnore};

/// Errors reading a build context or resolving a path in it.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Reading or writing a context file failed.
    #[error("reading build context path {path:?} failed")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The tar stream is malformed.
    #[error("reading the build context archive failed")]
    Tar(#[source] io::Error),
    /// A path leaves the context (`../x`, or a symlink pointing out of it).
    #[error("forbidden path outside the build context: {0}")]
    Outside(String),
    /// A source does not exist (or is excluded by `.dockerignore`).
    #[error("{0}: not found in build context or excluded by .dockerignore")]
    NotFound(String),
    /// The Dockerfile is missing from the context.
    #[error("cannot find the dockerfile {0:?} in the build context")]
    NoDockerfile(String),
    /// The (uncompressed) context stream is larger than allowed.
    #[error("build context is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// Too many symlinks while resolving a path.
    #[error("too many levels of symbolic links resolving {0}")]
    SymlinkLoop(String),
}

impl HasKind for ContextError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContextError::Io { .. } => ErrorKind::Internal,
            ContextError::NotFound(_) | ContextError::NoDockerfile(_) => ErrorKind::NotFound,
            _ => ErrorKind::InvalidArgument,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A build context on disk.
#[derive(Debug)]
pub struct BuildContext {
    root: PathBuf,
    ignore: DockerIgnore,
    /// sha256 of the regular files unpacked from a tar context, by path (computed on a
    /// second thread while the context arrived; see [`hash_entry`]).
    digests: HashMap<PathBuf, [u8; 32]>,
    /// The layers of `COPY` steps hashed while the context arrived (see
    /// [`crate::predict`]).
    predicted: Vec<store::layer::PredictedTar>,
    _tmp: Option<tempfile::TempDir>,
}

impl BuildContext {
    /// Uses the directory `dir` as the context (nothing is copied).
    pub fn from_dir(dir: &Path) -> Result<Self, ContextError> {
        let root = fs::canonicalize(dir).map_err(io_err(dir))?;
        let ignore = read_ignore(&root)?;
        Ok(BuildContext {
            root,
            ignore,
            digests: HashMap::new(),
            predicted: Vec::new(),
            _tmp: None,
        })
    }

    /// Streams a (plain or gzip-compressed) tar into a new temporary directory under
    /// `scratch` (the system temp dir if `None`) and uses it as the context. Entries that
    /// would land outside the directory are skipped; the directory is removed on drop.
    pub fn from_tar(reader: impl Read, scratch: Option<&Path>) -> Result<Self, ContextError> {
        Self::from_tar_limited(reader, scratch, u64::MAX, "Dockerfile")
    }

    /// [`from_tar`](Self::from_tar), failing with [`ContextError::TooLarge`] once more
    /// than `max_bytes` of uncompressed tar have been read (bounds the disk an API client
    /// can fill). Nothing is left behind on failure. When the Dockerfile (`dockerfile`,
    /// relative to the context root) comes first in the tar (after the `.dockerignore`,
    /// if any), the layers of its simple `COPY` steps are hashed on the way (see
    /// [`crate::predict`]).
    pub fn from_tar_limited(
        reader: impl Read,
        scratch: Option<&Path>,
        max_bytes: u64,
        dockerfile: &str,
    ) -> Result<Self, ContextError> {
        let tmp = match scratch {
            Some(p) => tempfile::Builder::new()
                .prefix("berth-context-")
                .tempdir_in(p)
                .map_err(io_err(p))?,
            None => tempfile::Builder::new()
                .prefix("berth-context-")
                .tempdir()
                .map_err(io_err(Path::new("/tmp")))?,
        };
        let started = std::time::Instant::now();
        let mut buf = BufReader::with_capacity(256 * 1024, reader);
        let head = buf.fill_buf().map_err(ContextError::Tar)?;
        let gz = head.starts_with(&[0x1f, 0x8b]);
        let stream: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(buf))
        } else {
            Box::new(buf)
        };
        let hit = std::rc::Rc::new(std::cell::Cell::new(false));
        let limited = Limit {
            inner: stream,
            left: max_bytes,
            hit: hit.clone(),
        };
        let too_large = |e: io::Error| {
            if hit.get() {
                ContextError::TooLarge(max_bytes)
            } else {
                ContextError::Tar(e)
            }
        };
        let mut buf = vec![0u8; PIECE];
        let mut ar = tar::Archive::new(limited);
        ar.set_preserve_permissions(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(true);
        // The files' content hashes (for the cache keys of COPY steps) are computed on
        // another thread from the bytes as they are written, instead of reading every
        // file again later.
        let (htx, hrx) = std::sync::mpsc::sync_channel::<HashMsg>(16);
        let hasher = std::thread::spawn(move || hash_files(hrx));
        // Until another entry arrives, the `.dockerignore` and the Dockerfile can still
        // make a plan of the COPY steps to predict.
        let mut leading = true;
        let mut leading_ignore: Option<DockerIgnore> = None;
        let unpacked = (|| -> Result<(), ContextError> {
            for entry in ar.entries().map_err(too_large)? {
                let mut entry = entry.map_err(too_large)?;
                if !plain_entry(entry.header().entry_type()) {
                    continue;
                }
                if leading {
                    let lead = lead_in(
                        &mut entry,
                        tmp.path(),
                        dockerfile,
                        &mut leading_ignore,
                        &mut buf,
                        &htx,
                    )
                    .map_err(too_large)?;
                    leading = lead == Lead::More;
                    if lead != Lead::Other {
                        continue;
                    }
                }
                // Regular files the fast way where that is plainly safe; unpack_in for
                // the rest: it refuses `..` and paths through symlinks that leave the root.
                if !unpack_plain_file(&mut entry, tmp.path(), &mut buf, &htx).map_err(too_large)? {
                    // Whatever it puts at that path has no precomputed hash.
                    if let Some(rel) = entry.path().ok().and_then(|p| clean_entry_path(&p)) {
                        let _ = htx.send(HashMsg::Forget(rel));
                    }
                    entry.unpack_in(tmp.path()).map_err(too_large)?;
                }
            }
            Ok(())
        })();
        drop(htx);
        // A hasher that died leaves no hashes: they are computed when needed.
        let (rel_digests, predicted) = hasher.join().unwrap_or_default();
        unpacked?;
        let root = fs::canonicalize(tmp.path()).map_err(io_err(tmp.path()))?;
        let ignore = read_ignore(&root)?;
        let digests = rel_digests
            .into_iter()
            .map(|(rel, d)| (root.join(rel), d))
            .collect();
        tracing::debug!(
            unpack_ms = started.elapsed().as_millis() as u64,
            predicted_layers = predicted.len(),
            predicted_bytes = predicted.iter().map(|p| p.bytes()).sum::<u64>(),
            "build context unpacked"
        );
        Ok(BuildContext {
            root,
            ignore,
            digests,
            predicted,
            _tmp: Some(tmp),
        })
    }

    /// The sha256 of the regular file at `path` (under [`root`](Self::root)), when it was
    /// computed while the context was unpacked.
    pub(crate) fn file_digest(&self, path: &Path) -> Option<[u8; 32]> {
        self.digests.get(path).copied()
    }

    /// The layers of `COPY` steps hashed while the context arrived (see
    /// [`crate::predict`]).
    pub fn predicted_layers(&self) -> &[store::layer::PredictedTar] {
        &self.predicted
    }

    /// Whether the context is a private copy of this build's (unpacked from a tar, removed
    /// on drop) rather than a directory used in place.
    pub fn is_private(&self) -> bool {
        self._tmp.is_some()
    }

    /// The context's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The parsed `.dockerignore` (empty when there is none).
    pub fn ignore(&self) -> &DockerIgnore {
        &self.ignore
    }

    /// Reads the Dockerfile `name` (relative to the context root; `.dockerignore` does not
    /// apply to it).
    pub fn read_dockerfile(&self, name: &str) -> Result<String, ContextError> {
        let resolved = resolve(&self.root, name, Scope::Context)
            .map_err(|_| ContextError::NoDockerfile(name.to_string()))?;
        match fs::read(&resolved) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ContextError::NoDockerfile(name.to_string()))
            }
            Err(e) => Err(io_err(&resolved)(e)),
        }
    }

    /// Resolves a `COPY`/`ADD` source (path or glob) to the matching context paths.
    pub fn sources(&self, pattern: &str) -> Result<Vec<Source>, ContextError> {
        sources_in(&self.root, pattern, Scope::Context, Some(&self.ignore))
    }
}

/// The size of the pieces a context file is written and hashed in: small enough that a
/// piece is still in the CPU's cache when the kernel copies it into the page cache and
/// when its copy for the hasher is made. With 1 MiB pieces the unpack of a 1 GB context
/// (`NOCOPY=1 bench/build/cold_copy.sh`, alternating rounds) took a median 2.11 s of
/// wall time and 2.8–3.0 s of the daemon's CPU here; with 128 KiB 1.80 s and 2.18 s.
/// (Handing the hasher the piece itself and taking it back, to save that copy, measured
/// no better: 2.29 s of CPU.)
const PIECE: usize = 128 << 10;

/// What the context unpack tells the thread that hashes its files.
enum HashMsg {
    /// A regular file (path relative to the context root) starts: its mode, mtime and
    /// size as unpacked.
    Start(PathBuf, u32, u64, u64),
    /// Its next bytes.
    Data(Vec<u8>),
    /// It was written whole, into this inode (device, inode number).
    End(u64, u64),
    /// Something else was put at this path.
    Forget(PathBuf),
    /// The COPY steps to predict, and the `.dockerignore` (when it came first).
    Plan(Vec<crate::predict::CopyPlan>, Option<DockerIgnore>),
}

/// What [`hash_files`] found: the files' sha256 by path, and the predicted layers.
type Hashed = (HashMap<PathBuf, [u8; 32]>, Vec<store::layer::PredictedTar>);

/// Hashes the files the unpack streams through `rx`; returns their sha256 by path, and
/// the layers predicted from them.
fn hash_files(rx: std::sync::mpsc::Receiver<HashMsg>) -> Hashed {
    let mut out = HashMap::new();
    let mut pred = crate::predict::Predictor::default();
    let mut cur: Option<(PathBuf, Sha256)> = None;
    for m in rx {
        match m {
            HashMsg::Start(p, mode, mtime, size) => {
                pred.start(crate::predict::FileMeta {
                    rel: p.to_string_lossy().into_owned(),
                    mode,
                    mtime,
                    size,
                });
                cur = Some((p, Sha256::new()));
            }
            HashMsg::Data(d) => {
                if let Some((_, h)) = cur.as_mut() {
                    h.update(&d);
                    pred.data(&d);
                }
            }
            HashMsg::End(dev, ino) => {
                if let Some((p, h)) = cur.take() {
                    out.insert(p, h.finalize().into());
                    pred.end(dev, ino);
                }
            }
            HashMsg::Forget(p) => {
                cur = None;
                pred.abort();
                out.remove(&p);
            }
            HashMsg::Plan(plans, ignore) => pred.plan(plans, ignore),
        }
    }
    (out, pred.finish())
}

/// What [`lead_in`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lead {
    /// Unpacked the `.dockerignore`: the Dockerfile may still come.
    More,
    /// Unpacked the Dockerfile and planned the COPY steps.
    Planned,
    /// Nothing (another entry): the context leads with no plan.
    Other,
}

/// Unpacks `entry` when it is one of the files that may lead a context (the
/// `.dockerignore`, the Dockerfile `dockerfile`) and no other entry came yet; plans the
/// COPY steps to predict once the Dockerfile is in. Reads nothing from another entry.
fn lead_in<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
    dockerfile: &str,
    ignore: &mut Option<DockerIgnore>,
    buf: &mut [u8],
    hashes: &std::sync::mpsc::SyncSender<HashMsg>,
) -> io::Result<Lead> {
    let Some(rel) = entry.path().ok().and_then(|p| clean_entry_path(&p)) else {
        return Ok(Lead::Other);
    };
    let is_ignore = rel == Path::new(".dockerignore");
    let is_df = crate::predict::is_dockerfile(&rel, dockerfile);
    if !(is_ignore || is_df) || !unpack_plain_file(entry, root, buf, hashes)? {
        return Ok(Lead::Other);
    }
    let text = fs::read_to_string(root.join(&rel)).unwrap_or_default();
    if is_ignore {
        *ignore = Some(DockerIgnore::parse(&text));
        return Ok(Lead::More);
    }
    let _ = hashes.send(HashMsg::Plan(crate::predict::plans(&text), ignore.take()));
    Ok(Lead::Planned)
}

/// A tar entry's name as a plain relative path (`None` with `..` or nothing left).
fn clean_entry_path(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!rel.as_os_str().is_empty()).then_some(rel)
}

/// Unpacks a regular-file entry under `root` as `tar`'s `unpack_in` would (with
/// permissions and mtime preserved, overwriting) but copying through `buf` (1 MiB pieces
/// instead of `io::copy`'s 8 KiB, a write syscall each). Only for the plain case: a name
/// without `..` whose parents are real directories under `root` or missing (created).
/// Returns `false`, having read nothing, for anything else (the caller then uses
/// `unpack_in`).
fn unpack_plain_file<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
    buf: &mut [u8],
    hashes: &std::sync::mpsc::SyncSender<HashMsg>,
) -> io::Result<bool> {
    if !matches!(
        entry.header().entry_type(),
        tar::EntryType::Regular | tar::EntryType::Continuous
    ) {
        return Ok(false);
    }
    let path = entry.path()?.into_owned();
    let Some(rel) = clean_entry_path(&path) else {
        return Ok(false);
    };
    let Some(name) = rel.file_name().map(|n| n.to_os_string()) else {
        return Ok(false);
    };
    let mut dir = root.to_path_buf();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&dir)?,
            Err(e) => return Err(e),
        }
    }
    let dst = dir.join(name);
    let open = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dst)
    };
    let mut f = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Overwrite, as unpack_in does: a new file, never writing through a link.
            fs::remove_file(&dst)?;
            open()?
        }
        Err(e) => return Err(e),
    };
    let expected = entry.size();
    let mut n = 0u64;
    let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
    let mtime = entry.header().mtime().unwrap_or(0).max(1);
    // The hasher may be gone (it panicked): the hash is then computed when needed.
    let _ = hashes.send(HashMsg::Start(rel.clone(), mode, mtime, expected));
    loop {
        // Whole pieces: the request body arrives in small chunks.
        let mut filled = 0;
        while filled < buf.len() {
            match entry.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        io::Write::write_all(&mut f, &buf[..filled])?;
        let _ = hashes.send(HashMsg::Data(buf[..filled].to_vec()));
        n += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    if n != expected {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{}: failed to write entire file", path.display()),
        ));
    }
    // As unpack_in: mtime from the header (0 becomes 1), then the whole mode.
    if let Ok(mtime) = entry.header().mtime() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(1));
        f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))?;
    }
    if let Ok(mode) = entry.header().mode() {
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    }
    let m = f.metadata()?;
    let _ = hashes.send(HashMsg::End(m.dev(), m.ino()));
    Ok(true)
}

/// Whether a tar entry is something a build unpacks: files, directories, symlinks and
/// hard links. Devices, FIFOs and the like are skipped.
pub(crate) fn plain_entry(t: tar::EntryType) -> bool {
    matches!(
        t,
        tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link
            | tar::EntryType::GNUSparse
    ) || t.is_pax_global_extensions()
        || t.is_pax_local_extensions()
        || t.is_gnu_longname()
        || t.is_gnu_longlink()
}

/// Writes the directory `dir` as a build-context tar to `out`, the way `docker build`
/// sends it: what `.dockerignore` excludes is left out, except the Dockerfile
/// (`dockerfile`, relative to `dir`) and `.dockerignore` themselves, which are always
/// sent. Those two come first (when they are regular files), then the rest in name order,
/// with their modes and mtimes, owned by `0:0`; symlinks are stored as links. Returns the
/// number of file-content bytes written.
pub fn write_context_tar(
    dir: &Path,
    dockerfile: &str,
    out: impl io::Write,
) -> Result<u64, ContextError> {
    let ignore = read_ignore(dir)?;
    let mut tb = tar::Builder::new(out);
    let mut bytes = 0u64;
    let mut written = std::collections::HashSet::new();
    let mut add = |tb: &mut tar::Builder<_>, rel: &str, path: &Path| -> Result<(), ContextError> {
        let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        h.set_uid(0);
        h.set_gid(0);
        let tar_err = |e: io::Error| ContextError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(path).map_err(io_err(path))?;
            h.set_size(0);
            tb.append_link(&mut h, rel, &target).map_err(tar_err)?;
        } else if meta.is_dir() {
            h.set_size(0);
            tb.append_data(&mut h, format!("{rel}/"), io::empty())
                .map_err(tar_err)?;
        } else if meta.is_file() {
            let f = fs::File::open(path).map_err(io_err(path))?;
            bytes += meta.len();
            tb.append_data(&mut h, rel, f).map_err(tar_err)?;
        }
        Ok(())
    };
    // The `.dockerignore` and the Dockerfile first, so that the daemon knows the build's
    // COPY steps before their files arrive (see `crate::predict`); they are always sent.
    for always in [".dockerignore", dockerfile] {
        let rel = clean_rel(always).join("/");
        if rel.is_empty() || rel.starts_with("..") || written.contains(&rel) {
            continue;
        }
        let p = dir.join(&rel);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            add(&mut tb, &rel, &p)?;
            written.insert(rel);
        }
    }
    walk(dir, "", Some(&ignore), &mut |e| {
        if written.insert(e.rel.clone()) {
            add(&mut tb, &e.rel, &e.path)?;
        }
        Ok(())
    })?;
    for always in [dockerfile, ".dockerignore"] {
        let rel = clean_rel(always).join("/");
        if rel.is_empty() || rel.starts_with("..") || written.contains(&rel) {
            continue;
        }
        let p = dir.join(&rel);
        if fs::symlink_metadata(&p).is_ok() {
            add(&mut tb, &rel, &p)?;
        }
    }
    tb.finish().map_err(ContextError::Tar)?;
    Ok(bytes)
}

/// A reader that fails (and says so in `hit`) after `left` bytes.
struct Limit<R> {
    inner: R,
    left: u64,
    hit: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Limit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Only an error if there is more to read.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.hit.set(true);
            return Err(io::Error::other("build context size limit reached"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn read_ignore(root: &Path) -> Result<DockerIgnore, ContextError> {
    let p = root.join(".dockerignore");
    match fs::read_to_string(&p) {
        Ok(t) => Ok(DockerIgnore::parse(&t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
        Err(e) => Err(io_err(&p)(e)),
    }
}

/// How escapes from a root are treated by [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A build context: leaving the root is an error.
    Context,
    /// An image root filesystem: the root is `/` (absolute links and `..` stay inside).
    Rootfs,
}

/// Resolves `rel` inside `root`, following symlinks without leaving the root; the
/// returned path is the real host path (it may not exist).
pub fn resolve(root: &Path, rel: &str, scope: Scope) -> Result<PathBuf, ContextError> {
    let mut todo: Vec<String> = clean_rel(rel);
    if scope == Scope::Context && todo.first().is_some_and(|c| c == "..") {
        return Err(ContextError::Outside(rel.to_string()));
    }
    todo.retain(|c| c != "..");
    todo.reverse();
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(comp) = todo.pop() {
        if comp == ".." {
            if cur.pop().is_none() && scope == Scope::Context {
                return Err(ContextError::Outside(rel.to_string()));
            }
            continue;
        }
        let mut p = root.to_path_buf();
        p.extend(&cur);
        p.push(&comp);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(ContextError::SymlinkLoop(rel.to_string()));
                }
                let target = fs::read_link(&p).map_err(io_err(&p))?;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    if scope == Scope::Context {
                        return Err(ContextError::Outside(format!("{rel} (symlink to {t})")));
                    }
                    cur.clear();
                }
                let mut parts: Vec<String> = t
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect();
                // Check escapes of a relative link lexically against the current depth.
                if scope == Scope::Context {
                    let mut depth = cur.len() as i64;
                    for c in &parts {
                        depth += if c == ".." { -1 } else { 1 };
                        if depth < 0 {
                            return Err(ContextError::Outside(format!("{rel} (symlink to {t})")));
                        }
                    }
                }
                parts.reverse();
                todo.extend(parts);
            }
            _ => cur.push(comp),
        }
    }
    let mut p = root.to_path_buf();
    p.extend(&cur);
    Ok(p)
}

/// A resolved `COPY`/`ADD` source.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The path relative to the root, as matched (before symlink resolution).
    pub rel: String,
    /// The real host path.
    pub path: PathBuf,
    /// Whether it is a directory (whose contents are copied).
    pub is_dir: bool,
}

/// Resolves a source pattern inside `root`. With `ignore`, excluded paths are invisible.
pub fn sources_in(
    root: &Path,
    pattern: &str,
    scope: Scope,
    ignore: Option<&DockerIgnore>,
) -> Result<Vec<Source>, ContextError> {
    let segs = clean_rel(pattern);
    if scope == Scope::Context && segs.first().is_some_and(|c| c == "..") {
        return Err(ContextError::Outside(pattern.to_string()));
    }
    let excluded = |rel: &str| ignore.is_some_and(|i| i.is_excluded(rel));
    if !segs.iter().any(|s| has_glob(s)) {
        let rel = segs.join("/");
        let path = resolve(root, &rel, scope)?;
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => return Err(ContextError::NotFound(pattern.to_string())),
        };
        if !rel.is_empty()
            && excluded(&rel)
            && !(meta.is_dir() && has_included_below(root, &rel, ignore))
        {
            return Err(ContextError::NotFound(pattern.to_string()));
        }
        return Ok(vec![Source {
            rel,
            path,
            is_dir: meta.is_dir(),
        }]);
    }
    // Glob: walk level by level, matching each component.
    let mut cands: Vec<(Vec<String>, PathBuf)> = vec![(Vec::new(), root.to_path_buf())];
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let mut next = Vec::new();
        for (rel, dir) in cands {
            if !dir.is_dir() {
                continue;
            }
            let mut names: Vec<String> = fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                let ok = if has_glob(seg) {
                    glob_segment(seg, &n)
                } else {
                    *seg == n
                };
                if !ok {
                    continue;
                }
                let mut r = rel.clone();
                r.push(n);
                let rel_s = r.join("/");
                let path = resolve(root, &rel_s, scope)?;
                if last && excluded(&rel_s) {
                    continue;
                }
                next.push((r, path));
            }
        }
        cands = next;
    }
    let mut out = Vec::new();
    for (rel, path) in cands {
        let is_dir = fs::metadata(&path).map(|m| m.is_dir()).unwrap_or(false);
        out.push(Source {
            rel: rel.join("/"),
            path,
            is_dir,
        });
    }
    if out.is_empty() {
        return Err(ContextError::NotFound(pattern.to_string()));
    }
    Ok(out)
}

fn has_included_below(root: &Path, rel: &str, ignore: Option<&DockerIgnore>) -> bool {
    let Some(ig) = ignore else { return true };
    if !ig.may_include_below(rel) {
        return false;
    }
    let mut found = false;
    let _ = walk(&root.join(rel), rel, Some(ig), &mut |_| {
        found = true;
        Ok(())
    });
    found
}

/// The kind of a tree entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file of this size.
    File(u64),
    /// A symlink with this target.
    Symlink(PathBuf),
}

/// One entry found while walking a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Path relative to the walked source (empty for the source itself).
    pub rel: String,
    /// Host path.
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
}

/// Walks `path` depth-first in name order, calling `f` for every entry below it (not for
/// `path` itself), skipping what `ignore` excludes (`ctx_rel` is `path` relative to the
/// context root). Symlinks are reported, not followed. Other file types are skipped.
pub fn walk(
    path: &Path,
    ctx_rel: &str,
    ignore: Option<&DockerIgnore>,
    f: &mut dyn FnMut(Entry) -> Result<(), ContextError>,
) -> Result<(), ContextError> {
    fn inner(
        dir: &Path,
        rel: &str,
        ctx_rel: &str,
        ignore: Option<&DockerIgnore>,
        f: &mut dyn FnMut(Entry) -> Result<(), ContextError>,
    ) -> Result<(), ContextError> {
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let n = name.to_string_lossy();
            let r = if rel.is_empty() {
                n.to_string()
            } else {
                format!("{rel}/{n}")
            };
            let c = if ctx_rel.is_empty() {
                r.clone()
            } else {
                format!("{ctx_rel}/{r}")
            };
            let p = dir.join(&name);
            let m = fs::symlink_metadata(&p).map_err(io_err(&p))?;
            let is_excluded = ignore.is_some_and(|i| i.is_excluded(&c));
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                if is_excluded && !ignore.is_some_and(|i| i.may_include_below(&c)) {
                    continue;
                }
                if !is_excluded {
                    f(Entry {
                        rel: r.clone(),
                        path: p.clone(),
                        kind: EntryKind::Dir,
                        mode,
                    })?;
                }
                inner(&p, &r, ctx_rel, ignore, f)?;
            } else if is_excluded {
                continue;
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&p).map_err(io_err(&p))?;
                f(Entry {
                    rel: r,
                    path: p,
                    kind: EntryKind::Symlink(t),
                    mode,
                })?;
            } else if m.is_file() {
                f(Entry {
                    rel: r,
                    path: p,
                    kind: EntryKind::File(m.size()),
                    mode,
                })?;
            }
        }
        Ok(())
    }
    inner(path, "", ctx_rel, ignore, f)
}

/// Feeds a file's content to `h`, streaming.
pub(crate) fn hash_file(path: &Path, h: &mut Sha256) -> Result<(), ContextError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    // Large reads for large files; no megabyte to clear for each small one.
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; (size as usize + 1).clamp(4096, 1 << 20)];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// Adds an entry (name, type, mode, the sha256 of its content or its target) to a content
/// hash. Timestamps and ownership are deliberately left out: the cache follows content,
/// not `touch`. A file's sha256 comes from `ctx` when it was computed while the context
/// arrived, else it is computed here: the same value either way.
pub(crate) fn hash_entry(
    e: &Entry,
    h: &mut Sha256,
    ctx: Option<&BuildContext>,
) -> Result<(), ContextError> {
    h.update(e.rel.as_bytes());
    h.update([0]);
    h.update(e.mode.to_le_bytes());
    match &e.kind {
        EntryKind::Dir => h.update(b"d"),
        EntryKind::File(size) => {
            h.update(b"f");
            h.update(size.to_le_bytes());
            let digest = match ctx.and_then(|c| c.file_digest(&e.path)) {
                Some(d) => d,
                None => {
                    let mut fh = Sha256::new();
                    hash_file(&e.path, &mut fh)?;
                    fh.finalize().into()
                }
            };
            h.update(digest);
        }
        EntryKind::Symlink(t) => {
            h.update(b"l");
            h.update(t.to_string_lossy().as_bytes());
        }
    }
    h.update([0]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("src/sub")).unwrap();
        fs::write(r.join("src/a.txt"), "a").unwrap();
        fs::write(r.join("src/b.md"), "b").unwrap();
        fs::write(r.join("src/sub/c.txt"), "c").unwrap();
        fs::write(r.join("top.txt"), "t").unwrap();
        fs::write(r.join("secret.key"), "k").unwrap();
        fs::write(r.join(".dockerignore"), "*.key\nsrc/**/*.md\n").unwrap();
        symlink("../../etc/passwd", r.join("src/evil")).unwrap();
        symlink("/etc/passwd", r.join("abs")).unwrap();
        symlink("src/a.txt", r.join("good")).unwrap();
        d
    }

    #[test]
    fn sources_and_globs() {
        let d = tree();
        let ctx = BuildContext::from_dir(d.path()).unwrap();
        let s = ctx.sources("src/*.txt").unwrap();
        assert_eq!(
            s.iter().map(|s| s.rel.as_str()).collect::<Vec<_>>(),
            ["src/a.txt"]
        );
        let s = ctx.sources("*.txt").unwrap();
        assert_eq!(s.len(), 1);
        assert!(matches!(
            ctx.sources("secret.key"),
            Err(ContextError::NotFound(_))
        ));
        assert!(matches!(
            ctx.sources("src/b.md"),
            Err(ContextError::NotFound(_))
        ));
        assert!(matches!(ctx.sources("../x"), Err(ContextError::Outside(_))));
        assert!(matches!(
            ctx.sources("src/evil"),
            Err(ContextError::Outside(_))
        ));
        assert!(matches!(ctx.sources("abs"), Err(ContextError::Outside(_))));
        let g = ctx.sources("good").unwrap();
        assert_eq!(fs::read_to_string(&g[0].path).unwrap(), "a");
        assert!(ctx.sources("/src").unwrap()[0].is_dir);
    }

    #[test]
    fn walk_skips_excluded() {
        let d = tree();
        let ctx = BuildContext::from_dir(d.path()).unwrap();
        let mut seen = Vec::new();
        walk(ctx.root(), "", Some(ctx.ignore()), &mut |e| {
            seen.push(e.rel);
            Ok(())
        })
        .unwrap();
        assert!(seen.contains(&"src/sub/c.txt".to_string()));
        assert!(!seen.contains(&"secret.key".to_string()));
        assert!(!seen.contains(&"src/b.md".to_string()));
    }

    fn tree_hash(root: &Path) -> String {
        let mut h = Sha256::new();
        walk(root, "", None, &mut |e| hash_entry(&e, &mut h, None)).unwrap();
        hex::encode(h.finalize())
    }

    #[test]
    fn content_hash_follows_content_names_and_modes_not_mtimes() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("a")).unwrap();
        fs::write(r.join("a/f"), "one").unwrap();
        symlink("f", r.join("a/l")).unwrap();
        let base = tree_hash(r);
        // mtime only: same hash.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(r.join("a/f"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(tree_hash(r), base);
        // content, mode, name, link target: all change it.
        fs::write(r.join("a/f"), "two").unwrap();
        let content = tree_hash(r);
        assert_ne!(content, base);
        fs::set_permissions(r.join("a/f"), fs::Permissions::from_mode(0o600)).unwrap();
        let mode = tree_hash(r);
        assert_ne!(mode, content);
        fs::rename(r.join("a/f"), r.join("a/g")).unwrap();
        let name = tree_hash(r);
        assert_ne!(name, mode);
        fs::remove_file(r.join("a/l")).unwrap();
        symlink("g", r.join("a/l")).unwrap();
        assert_ne!(tree_hash(r), name);
    }

    #[test]
    fn rootfs_scope_keeps_links_inside() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("etc/passwd"), "inside").unwrap();
        symlink("/etc/passwd", r.join("abs")).unwrap();
        symlink("../../../etc/passwd", r.join("rel")).unwrap();
        for l in ["abs", "rel", "../../etc/passwd"] {
            let p = resolve(r, l, Scope::Rootfs).unwrap();
            assert_eq!(fs::read_to_string(p).unwrap(), "inside", "{l}");
        }
    }

    #[test]
    fn context_tar_applies_dockerignore_but_keeps_dockerfile() {
        let d = tree();
        fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(
            d.path().join(".dockerignore"),
            "*.key\nDockerfile\n.dockerignore\nsrc/sub\n",
        )
        .unwrap();
        let mut buf = Vec::new();
        let n = write_context_tar(d.path(), "Dockerfile", &mut buf).unwrap();
        assert!(n > 0);
        let mut names: Vec<String> = tar::Archive::new(&buf[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(names.contains(&"Dockerfile".to_string()), "{names:?}");
        assert!(names.contains(&".dockerignore".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("secret.key")), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("src/sub")), "{names:?}");
        assert!(names.contains(&"src/a.txt".to_string()), "{names:?}");
        // And it reads back as a context (the excluded Dockerfile still readable).
        let ctx = BuildContext::from_tar(&buf[..], None).unwrap();
        assert_eq!(ctx.read_dockerfile("Dockerfile").unwrap(), "FROM scratch\n");
        assert_eq!(
            fs::read_link(ctx.root().join("good")).unwrap(),
            Path::new("src/a.txt")
        );
    }

    #[test]
    fn tar_context_streams_to_disk() {
        let mut b = tar::Builder::new(Vec::new());
        let data = b"FROM scratch\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "Dockerfile", &data[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "bin/run.sh", &b"x=1"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &bytes).unwrap();
        let gz = gz.finish().unwrap();
        for input in [bytes.clone(), gz] {
            let ctx = BuildContext::from_tar(&input[..], None).unwrap();
            assert_eq!(ctx.read_dockerfile("Dockerfile").unwrap(), "FROM scratch\n");
            let m = fs::metadata(ctx.root().join("bin/run.sh")).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o755);
            let root = ctx.root().to_path_buf();
            drop(ctx);
            assert!(!root.exists(), "temporary context removed on drop");
        }
        let scratch = tempfile::tempdir().unwrap();
        let e =
            BuildContext::from_tar_limited(&bytes[..], Some(scratch.path()), 1024, "Dockerfile")
                .unwrap_err();
        assert!(matches!(e, ContextError::TooLarge(1024)), "{e:?}");
        assert_eq!(
            fs::read_dir(scratch.path()).unwrap().count(),
            0,
            "nothing left"
        );
        assert!(
            BuildContext::from_tar_limited(&bytes[..], None, bytes.len() as u64, "Dockerfile")
                .is_ok()
        );
    }

    fn raw_header(
        name: &str,
        kind: tar::EntryType,
        size: u64,
        mode: u32,
        mtime: u64,
    ) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_cksum();
        h
    }

    /// The content hashes computed while a tar context arrives give the same cache-key
    /// hash as hashing the files afterwards; a path that something else replaced later in
    /// the tar has no precomputed hash.
    #[test]
    fn hashes_made_during_the_unpack_equal_hashing_afterwards() {
        let big: Vec<u8> = (0..(5u32 << 20) / 2)
            .map(|i| (i * 31 % 253) as u8)
            .collect();
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, data: &[u8]| {
            let h = raw_header(name, kind, data.len() as u64, 0o644, 1_600_000_000);
            b.append(&h, data).unwrap();
        };
        add("Dockerfile", tar::EntryType::Regular, b"FROM scratch\n");
        add("src/big.bin", tar::EntryType::Regular, &big);
        add("src/a.txt", tar::EntryType::Regular, b"one");
        add("src/b.txt", tar::EntryType::Regular, b"two");
        let mut h = raw_header("src/b.txt", tar::EntryType::Symlink, 0, 0o777, 1);
        h.set_link_name("a.txt").unwrap();
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let ctx = BuildContext::from_tar(&bytes[..], None).unwrap();
        let r = ctx.root();
        assert_eq!(
            ctx.file_digest(&r.join("src/big.bin")),
            Some(<[u8; 32]>::from(Sha256::digest(&big)))
        );
        assert_eq!(
            ctx.file_digest(&r.join("src/a.txt")),
            Some(<[u8; 32]>::from(Sha256::digest(b"one")))
        );
        assert_eq!(
            ctx.file_digest(&r.join("src/b.txt")),
            None,
            "replaced by a link"
        );
        assert_eq!(
            fs::read_link(r.join("src/b.txt")).unwrap(),
            Path::new("a.txt")
        );
        let with = |known: Option<&BuildContext>| {
            let mut h = Sha256::new();
            walk(&r.join("src"), "src", None, &mut |e| {
                hash_entry(&e, &mut h, known)
            })
            .unwrap();
            hex::encode(h.finalize())
        };
        assert_eq!(with(Some(&ctx)), with(None));
        // The same files in a directory context hash the same.
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("src")).unwrap();
        fs::write(d.path().join("src/big.bin"), &big).unwrap();
        fs::write(d.path().join("src/a.txt"), b"one").unwrap();
        symlink("a.txt", d.path().join("src/b.txt")).unwrap();
        for f in ["big.bin", "a.txt"] {
            fs::set_permissions(
                d.path().join("src").join(f),
                fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        let dir_ctx = BuildContext::from_dir(d.path()).unwrap();
        let mut h = Sha256::new();
        walk(&dir_ctx.root().join("src"), "src", None, &mut |e| {
            hash_entry(&e, &mut h, Some(&dir_ctx))
        })
        .unwrap();
        assert_eq!(hex::encode(h.finalize()), with(Some(&ctx)));
    }

    /// Regular files take a faster path than `unpack_in`: the same files, modes and
    /// times as the tar crate gives, and the same refusals.
    #[test]
    fn tar_context_files_unpack_as_the_tar_crate_does() {
        let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, data: &[u8], mode: u32, mtime: u64| {
            let h = raw_header(name, kind, data.len() as u64, mode, mtime);
            b.append(&h, data).unwrap();
        };
        add(
            "Dockerfile",
            tar::EntryType::Regular,
            b"FROM scratch\n",
            0o644,
            1_600_000_000,
        );
        add("d", tar::EntryType::Directory, b"", 0o700, 1_600_000_001);
        add("d/x", tar::EntryType::Regular, b"first", 0o4755, 1_234_567);
        add("deep/a/b/c.bin", tar::EntryType::Regular, &big, 0o600, 0);
        add("/abs.txt", tar::EntryType::Regular, b"abs", 0o644, 5);
        add("./dot/y", tar::EntryType::Regular, b"y", 0o640, 6);
        add("d/x", tar::EntryType::Regular, b"second", 0o751, 7);
        add("empty", tar::EntryType::Regular, b"", 0o444, 8);
        let bytes = b.into_inner().unwrap();
        let ctx = BuildContext::from_tar(&bytes[..], None).unwrap();
        let reference = tempfile::tempdir().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        ar.set_preserve_permissions(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(true);
        for e in ar.entries().unwrap() {
            e.unwrap().unpack_in(reference.path()).unwrap();
        }
        for f in [
            "Dockerfile",
            "d/x",
            "deep/a/b/c.bin",
            "abs.txt",
            "dot/y",
            "empty",
        ] {
            let (a, r) = (ctx.root().join(f), reference.path().join(f));
            let (ma, mr) = (fs::metadata(&a).unwrap(), fs::metadata(&r).unwrap());
            assert_eq!(fs::read(&a).unwrap(), fs::read(&r).unwrap(), "{f}");
            assert_eq!(ma.mode(), mr.mode(), "{f}");
            assert_eq!(
                (ma.mtime(), ma.mtime_nsec()),
                (mr.mtime(), mr.mtime_nsec()),
                "{f}"
            );
        }
        assert_eq!(fs::read(ctx.root().join("d/x")).unwrap(), b"second");
        assert_eq!(
            fs::metadata(ctx.root().join("d/x")).unwrap().mode() & 0o7777,
            0o751
        );

        // A parent that is a link out of the context: refused, nothing written outside.
        let outside = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = raw_header("out", tar::EntryType::Symlink, 0, 0o777, 1);
        h.set_link_name(outside.path()).unwrap();
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
        let h = raw_header("out/evil", tar::EntryType::Regular, 4, 0o644, 1);
        b.append(&h, &b"evil"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(BuildContext::from_tar(&bytes[..], None).is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // `..` names are skipped.
        let mut b = tar::Builder::new(Vec::new());
        let h = raw_header("../evil", tar::EntryType::Regular, 4, 0o644, 1);
        b.append(&h, &b"evil"[..]).unwrap();
        let h = raw_header("ok", tar::EntryType::Regular, 2, 0o644, 1);
        b.append(&h, &b"ok"[..]).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let bytes = b.into_inner().unwrap();
        let ctx = BuildContext::from_tar(&bytes[..], Some(scratch.path())).unwrap();
        assert_eq!(fs::read(ctx.root().join("ok")).unwrap(), b"ok");
        assert!(!scratch.path().join("evil").exists());
    }
}
