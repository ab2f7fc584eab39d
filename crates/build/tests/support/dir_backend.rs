//! A test-only [`BuildBackend`] that keeps images as plain directories.
//!
//! Every layer is a directory under `<root>/layers/<hash>` (deletions as `.wh.<name>`
//! whiteout files, as in OCI layers). A `RUN` step really runs: the parent's layers are
//! copied into a fresh root filesystem under `<root>/containers/<id>`, the command is
//! executed there with `chroot(8)` (so it needs root and a shell in the image), and the
//! differences (new or modified entries, whiteouts for removed ones) become the new layer.
//! The container directory is removed afterwards, whatever happened. It exists so that
//! the builder can be tested end to end without the engine; it is not a product backend.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use build::{
    BackendError, BaseImage, BuildBackend, CacheKey, CopyItem, HistoryEntry, ImageConfig,
    ImageState, RunResult, RunSpec,
};
use errkind::ErrorKind;
use sha2::{Digest, Sha256};

/// Images as directories; see the module docs.
pub struct DirBackend {
    tmp: tempfile::TempDir,
    images: HashMap<String, BaseImage>,
    cache: HashMap<CacheKey, ImageState>,
    /// Tags set by builds: reference → image id.
    pub tags: BTreeMap<String, String>,
    /// Committed images by id.
    pub committed: HashMap<String, ImageState>,
    /// How many `RUN` commands were executed.
    pub runs: usize,
    /// How many `add_files` layers were written.
    pub adds: usize,
    /// How many `resolve_base` calls asked to pull.
    pub pulls: usize,
    /// URL → body served by `fetch_url` (stands in for a web server).
    pub urls: HashMap<String, Vec<u8>>,
    /// What `finish` was told, build by build.
    pub finished: Vec<bool>,
    mounts: usize,
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let msg = msg.into();
    move |e| BackendError::with_source(kind, msg, e)
}

/// Hashes a directory tree (names, types, modes, owners, contents) to a layer id.
fn tree_id(dir: &Path) -> io::Result<String> {
    fn inner(dir: &Path, rel: &str, h: &mut Sha256) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let r = format!("{rel}/{}", n.to_string_lossy());
            let m = fs::symlink_metadata(&p)?;
            h.update(r.as_bytes());
            h.update(m.mode().to_le_bytes());
            h.update(m.uid().to_le_bytes());
            h.update(m.gid().to_le_bytes());
            if m.file_type().is_symlink() {
                h.update(fs::read_link(&p)?.to_string_lossy().as_bytes());
            } else if m.is_dir() {
                inner(&p, &r, h)?;
            } else {
                h.update(fs::read(&p)?);
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    inner(dir, "", &mut h)?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies one entry (not recursive for directories) preserving mode and owner.
fn copy_entry(src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_dir() {
        if fs::symlink_metadata(dst).is_ok_and(|m| !m.is_dir()) {
            remove_any(dst)?;
        }
        fs::create_dir_all(dst)?;
    } else if ft.is_symlink() {
        remove_any(dst)?;
        symlink(fs::read_link(src)?, dst)?;
    } else {
        if fs::symlink_metadata(dst).is_ok() {
            remove_any(dst)?;
        }
        fs::copy(src, dst)?;
    }
    lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    if !ft.is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

/// Applies a layer directory onto a root filesystem (whiteouts delete).
fn apply_layer(layer: &Path, dst: &Path) -> io::Result<()> {
    for e in fs::read_dir(layer)? {
        let e = e?;
        let name = e.file_name();
        let n = name.to_string_lossy();
        if let Some(victim) = n.strip_prefix(".wh.") {
            remove_any(&dst.join(victim))?;
            continue;
        }
        let src = e.path();
        let d = dst.join(&name);
        let m = fs::symlink_metadata(&src)?;
        copy_entry(&src, &d, &m)?;
        if m.is_dir() {
            apply_layer(&src, &d)?;
            fs::set_permissions(&d, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
struct Snap {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    link: Option<PathBuf>,
}

fn snapshot(root: &Path) -> io::Result<BTreeMap<String, Snap>> {
    fn inner(dir: &Path, rel: &str, out: &mut BTreeMap<String, Snap>) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let r = if rel.is_empty() {
                e.file_name().to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", e.file_name().to_string_lossy())
            };
            let m = fs::symlink_metadata(e.path())?;
            let link = if m.file_type().is_symlink() {
                Some(fs::read_link(e.path())?)
            } else {
                None
            };
            out.insert(
                r.clone(),
                Snap {
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                    size: m.size(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    link,
                },
            );
            if m.is_dir() {
                inner(&e.path(), &r, out)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    inner(root, "", &mut out)?;
    Ok(out)
}

/// Removes a directory when dropped.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Looks a user/group spec up in a root filesystem's /etc/passwd and /etc/group.
fn resolve_user(root: &Path, spec: &str) -> Result<(u32, u32), BackendError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let groups = fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    let (uid, pgid) = match user.parse::<u32>() {
        Ok(u) => (
            u,
            passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == user)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(u),
        ),
        Err(_) => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == user)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| {
                BackendError::new(ErrorKind::InvalidArgument, format!("unknown user {user}"))
            })?,
    };
    let gid = match group {
        None => pgid,
        Some(g) => match g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    BackendError::new(ErrorKind::InvalidArgument, format!("unknown group {g}"))
                })?,
        },
    };
    Ok((uid, gid))
}

/// `PATH` of the test base image.
pub const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl DirBackend {
    /// A backend in a fresh temporary directory with `busybox:latest` (a real busybox
    /// root filesystem as one layer).
    pub fn new() -> io::Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix("berth-dirbackend-")
            .tempdir()?;
        for d in ["layers", "containers", "mounts", "staging"] {
            fs::create_dir_all(tmp.path().join(d))?;
        }
        let mut b = DirBackend {
            tmp,
            images: HashMap::new(),
            cache: HashMap::new(),
            tags: BTreeMap::new(),
            committed: HashMap::new(),
            runs: 0,
            adds: 0,
            pulls: 0,
            urls: HashMap::new(),
            finished: Vec::new(),
            mounts: 0,
        };
        let staging = b.staging()?;
        testutil::busybox_rootfs(&staging)?;
        let layer = b.store_layer(&staging)?;
        let state = ImageState {
            layers: vec![layer],
            config: ImageConfig {
                env: vec![PATH.to_string()],
                cmd: Some(vec!["sh".into()]),
                ..Default::default()
            },
            history: vec![HistoryEntry {
                created_by: "busybox rootfs (test fixture)".into(),
                ..Default::default()
            }],
            os: "linux".into(),
            architecture: "amd64".into(),
            author: String::new(),
        };
        b.images.insert(
            "busybox:latest".into(),
            BaseImage {
                id: state.id(),
                state,
            },
        );
        Ok(b)
    }

    /// The backend's directory.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Number of entries in the temporary container directory (0 when all cleaned up).
    pub fn leftover_containers(&self) -> usize {
        fs::read_dir(self.root().join("containers"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Number of live `mount_rootfs` directories.
    pub fn leftover_mounts(&self) -> usize {
        fs::read_dir(self.root().join("mounts"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn staging(&self) -> io::Result<PathBuf> {
        let p = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(self.root().join("staging"))?
            .keep();
        Ok(p)
    }

    /// Moves a staged directory into the layer store under its content hash.
    fn store_layer(&self, staged: &Path) -> io::Result<String> {
        let id = tree_id(staged)?;
        let dst = self.layer_dir(&id);
        if dst.exists() {
            fs::remove_dir_all(staged)?;
        } else {
            fs::rename(staged, &dst)?;
        }
        Ok(id)
    }

    fn layer_dir(&self, id: &str) -> PathBuf {
        self.root()
            .join("layers")
            .join(id.strip_prefix("sha256:").unwrap_or(id))
    }

    /// Number of layers stored.
    pub fn layer_count(&self) -> usize {
        fs::read_dir(self.root().join("layers"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Writes `state`'s root filesystem into `dst`.
    pub fn materialize(&self, state: &ImageState, dst: &Path) -> io::Result<()> {
        fs::create_dir_all(dst)?;
        for l in &state.layers {
            apply_layer(&self.layer_dir(l), dst)?;
        }
        Ok(())
    }

    /// A temporary copy of an image's filesystem, for assertions.
    pub fn rootfs(&self, state: &ImageState) -> io::Result<tempfile::TempDir> {
        let t = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(self.root())?;
        self.materialize(state, t.path())?;
        Ok(t)
    }

    /// The contents of a layer as (path, kind) pairs, for assertions.
    pub fn layer_paths(&self, id: &str) -> Vec<String> {
        let mut out: Vec<String> = snapshot(&self.layer_dir(id))
            .map(|m| m.into_keys().collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Registers `state` as image `reference` (like a `docker load`).
    pub fn add_image(&mut self, reference: &str, state: ImageState) {
        self.images.insert(
            reference.to_string(),
            BaseImage {
                id: state.id(),
                state,
            },
        );
    }
}

impl BuildBackend for DirBackend {
    fn resolve_base(
        &mut self,
        image_ref: &str,
        _platform: Option<&str>,
        pull: bool,
        out: &mut dyn Write,
    ) -> Result<BaseImage, BackendError> {
        if pull {
            self.pulls += 1;
            let _ = writeln!(out, "pulling {image_ref} (test backend: local only)");
        }
        let full = if image_ref
            .rsplit('/')
            .next()
            .is_some_and(|l| l.contains(':'))
        {
            image_ref.to_string()
        } else {
            format!("{image_ref}:latest")
        };
        if let Some(b) = self.images.get(&full) {
            return Ok(b.clone());
        }
        if let Some(id) = self.tags.get(&full) {
            if let Some(s) = self.committed.get(id) {
                return Ok(BaseImage {
                    id: id.clone(),
                    state: s.clone(),
                });
            }
        }
        Err(BackendError::new(
            ErrorKind::NotFound,
            format!("pull access denied for {image_ref}: image not found"),
        ))
    }

    fn run(
        &mut self,
        parent: &ImageState,
        spec: &RunSpec,
        out: &mut dyn Write,
    ) -> Result<RunResult, BackendError> {
        self.runs += 1;
        let cdir = self.root().join("containers").join(&spec.container_id);
        let _cleanup = Cleanup(cdir.clone());
        let rootfs = cdir.join("rootfs");
        self.materialize(parent, &rootfs)
            .map_err(err(ErrorKind::Internal, "preparing the container root"))?;
        let before = snapshot(&rootfs).map_err(err(ErrorKind::Internal, "snapshot"))?;
        let wd = rootfs.join(spec.workdir.trim_start_matches('/'));
        fs::create_dir_all(&wd).map_err(err(ErrorKind::Internal, "creating the workdir"))?;
        let mut cmd = Command::new("/usr/sbin/chroot");
        if !spec.user.is_empty() {
            let (u, g) = resolve_user(&rootfs, &spec.user)?;
            cmd.arg(format!("--userspec={u}:{g}"));
        }
        cmd.arg(&rootfs)
            .args(["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", &spec.workdir])
            .args(&spec.args)
            .env_clear()
            .envs(
                spec.env
                    .iter()
                    .map(|kv| kv.split_once('=').unwrap_or((kv, ""))),
            )
            .stdin(if spec.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(err(ErrorKind::Unavailable, "starting chroot"))?;
        if let (Some(data), Some(mut stdin)) = (&spec.stdin, child.stdin.take()) {
            let _ = stdin.write_all(data);
        }
        let output = child
            .wait_with_output()
            .map_err(err(ErrorKind::Internal, "waiting for the command"))?;
        let _ = out.write_all(&output.stdout);
        let _ = out.write_all(&output.stderr);
        let code = output.status.code().unwrap_or(128);
        if code != 0 {
            return Ok(RunResult {
                exit_code: code,
                layer: None,
            });
        }
        let after = snapshot(&rootfs).map_err(err(ErrorKind::Internal, "snapshot"))?;
        let staged = self
            .staging()
            .map_err(err(ErrorKind::Internal, "staging"))?;
        let mut changed = false;
        for (rel, snap) in &after {
            if before.get(rel) == Some(snap) {
                continue;
            }
            changed = true;
            let src = rootfs.join(rel);
            let dst = staged.join(rel);
            if let Some(parent) = dst.parent() {
                // Parents carry their real modes where they changed too; default otherwise.
                fs::create_dir_all(parent).map_err(err(ErrorKind::Internal, "staging"))?;
            }
            let m = fs::symlink_metadata(&src).map_err(err(ErrorKind::Internal, "diff"))?;
            copy_entry(&src, &dst, &m).map_err(err(ErrorKind::Internal, "diff"))?;
        }
        for rel in before.keys() {
            if after.contains_key(rel) {
                continue;
            }
            let parent_gone = Path::new(rel)
                .parent()
                .and_then(|p| p.to_str())
                .is_some_and(|p| !p.is_empty() && !after.contains_key(p));
            if parent_gone {
                continue;
            }
            changed = true;
            let p = Path::new(rel);
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = staged.join(p.parent().unwrap_or(Path::new("")));
            fs::create_dir_all(&dir).map_err(err(ErrorKind::Internal, "staging"))?;
            fs::write(dir.join(format!(".wh.{name}")), b"")
                .map_err(err(ErrorKind::Internal, "whiteout"))?;
        }
        if !changed {
            let _ = fs::remove_dir_all(&staged);
            return Ok(RunResult {
                exit_code: 0,
                layer: None,
            });
        }
        let id = self
            .store_layer(&staged)
            .map_err(err(ErrorKind::Internal, "storing the layer"))?;
        Ok(RunResult {
            exit_code: 0,
            layer: Some(id),
        })
    }

    fn add_files(
        &mut self,
        parent: &ImageState,
        items: &[CopyItem],
    ) -> Result<Option<String>, BackendError> {
        if items.is_empty() {
            return Ok(None);
        }
        self.adds += 1;
        let staged = self
            .staging()
            .map_err(err(ErrorKind::Internal, "staging"))?;
        let mut owners: HashMap<String, (u32, u32)> = HashMap::new();
        for it in items {
            let (uid, gid) = match &it.chown {
                None if it.keep_owner => fs::symlink_metadata(&it.src)
                    .map(|m| (m.uid(), m.gid()))
                    .map_err(err(ErrorKind::NotFound, "reading the source"))?,
                None => (0, 0),
                Some(spec) => {
                    if let Some(v) = owners.get(spec) {
                        *v
                    } else {
                        let root = self
                            .rootfs(parent)
                            .map_err(err(ErrorKind::Internal, "reading /etc/passwd"))?;
                        let v = resolve_user(root.path(), spec)?;
                        owners.insert(spec.clone(), v);
                        v
                    }
                }
            };
            let dst = staged.join(it.dest.trim_start_matches('/'));
            if let Some(p) = dst.parent() {
                fs::create_dir_all(p).map_err(err(ErrorKind::Internal, "creating parents"))?;
            }
            let m = fs::symlink_metadata(&it.src)
                .map_err(err(ErrorKind::NotFound, format!("reading {:?}", it.src)))?;
            copy_entry(&it.src, &dst, &m).map_err(err(ErrorKind::Internal, "copying"))?;
            lchown(&dst, Some(uid), Some(gid)).map_err(err(ErrorKind::Internal, "chown"))?;
            if let Some(mode) = it.chmod {
                if !m.file_type().is_symlink() {
                    fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
                        .map_err(err(ErrorKind::Internal, "chmod"))?;
                }
            }
        }
        let id = self
            .store_layer(&staged)
            .map_err(err(ErrorKind::Internal, "storing the layer"))?;
        Ok(Some(id))
    }

    fn is_dir(&mut self, state: &ImageState, path: &str) -> Result<bool, BackendError> {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            return Ok(true);
        }
        for l in state.layers.iter().rev() {
            let p = self.layer_dir(l).join(rel);
            if let Ok(m) = fs::metadata(&p) {
                return Ok(m.is_dir());
            }
            let wh = Path::new(rel);
            let name = wh
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let whp = self
                .layer_dir(l)
                .join(wh.parent().unwrap_or(Path::new("")))
                .join(format!(".wh.{name}"));
            if whp.exists() {
                return Ok(false);
            }
        }
        Ok(false)
    }

    fn mount_rootfs(&mut self, state: &ImageState) -> Result<PathBuf, BackendError> {
        self.mounts += 1;
        let p = self.root().join("mounts").join(format!("m{}", self.mounts));
        self.materialize(state, &p)
            .map_err(err(ErrorKind::Internal, "materializing a stage"))?;
        Ok(p)
    }

    fn unmount_rootfs(&mut self, path: &Path) -> Result<(), BackendError> {
        fs::remove_dir_all(path).map_err(err(ErrorKind::Internal, "removing a stage view"))
    }

    fn fetch_url(&mut self, url: &str, dest: &Path) -> Result<(), BackendError> {
        match self.urls.get(url) {
            Some(body) => fs::write(dest, body).map_err(err(ErrorKind::Internal, "writing")),
            None => Err(BackendError::new(
                ErrorKind::Unavailable,
                format!("cannot download {url}: no network in tests"),
            )),
        }
    }

    fn commit(&mut self, state: &ImageState) -> Result<String, BackendError> {
        let id = state.id();
        self.committed.insert(id.clone(), state.clone());
        Ok(id)
    }

    fn tag(&mut self, image_id: &str, reference: &str) -> Result<(), BackendError> {
        self.tags
            .insert(reference.to_string(), image_id.to_string());
        Ok(())
    }

    fn cache_get(&mut self, key: &CacheKey) -> Option<ImageState> {
        self.cache.get(key).cloned()
    }

    fn cache_put(&mut self, key: &CacheKey, state: &ImageState) {
        self.cache.insert(key.clone(), state.clone());
    }

    fn finish(&mut self, succeeded: bool) {
        self.finished.push(succeeded);
    }
}
