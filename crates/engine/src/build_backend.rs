//! The engine's [`BuildBackend`]: Dockerfile builds over the image [`Store`] and the OCI
//! runtime binary.
//!
//! # Model
//!
//! A build state's layers are **diff ids** (`sha256:` of the uncompressed layer tar), so a
//! state is an image config without the timestamps ([`ImageState::to_image_json`]). Each
//! layer is known to the store in two forms: a blob in the content store (layers the
//! builder makes are uncompressed tars, `application/vnd.oci.image.layer.v1.tar`, as
//! Docker keeps them locally: compression is most of the cost of a large `COPY`) and a
//! committed overlay snapshot per chain id (see `store::snapshot`). The backend finds the
//! blob of a diff id in this order: layers it wrote or resolved during this process, the
//! persistent map `<store root>/buildcache/layers/<diff id hex>.json` (one OCI descriptor
//! per file), and finally the layers of every image in the store. A snapshot that garbage
//! collection removed is re-extracted from its blob when needed.
//!
//! * `RUN`: an active snapshot `build-<container id>` is prepared on the parent's top chain
//!   and mounted under the scratch directory; an OCI bundle is written next to it (the
//!   `RunSpec`'s argv, env, workdir and user, Docker's default capabilities, masked and
//!   read-only paths and device rules, new pid/ipc/uts/mount namespaces, cgroup
//!   `/berth-build/<container id>`, private copies of `/etc/resolv.conf` and `/etc/hosts`
//!   (see the network below), Docker's default seccomp profile) and
//!   `berth-runtime run` executes it in the foreground, its stdout and stderr (one pipe,
//!   so their order is kept) copied into the build log. On exit 0 the snapshot is unmounted,
//!   the mount points the runtime had to create are dropped from the upper dir, and the
//!   upper dir becomes a layer blob plus a committed snapshot (see *Capturing a step*
//!   below). Whatever happens, the runtime state, the mount, the active snapshot and the
//!   bundle are removed before `run` returns.
//! * **Network of `RUN` steps** (`RUN --network`, else [`BackendConfig::default_network`],
//!   which the daemon sets from `docker build --network`): on a bridge network (the
//!   default `bridge`, or a user-defined one by name) the step gets a new network
//!   namespace bind-mounted at `<step dir>/netns`, connected through the engine's
//!   [`NetworkManager`] ([`StoreBuildBackend::with_network`]) like a container's: a veth
//!   into the bridge, an address from the network's pool, a default route via the gateway,
//!   so traffic leaves through the network's NAT; its `/etc/hosts` and `/etc/resolv.conf`
//!   are the network's. The endpoint is disconnected and the namespace removed when the
//!   step ends, whatever happens. `none` gets a new, empty network namespace (loopback
//!   only); `host` shares the host's network and its resolver config; `container:<name>`
//!   ([`DefaultNetwork::Join`], resolved by the daemon) joins that running container's
//!   namespace and shares its `/etc/resolv.conf` and `/etc/hosts`.
//! * `COPY`/`ADD` ([`BuildBackend::add_files`]): the same kind of snapshot
//!   (`build-copy-<unique>`), mounted; the
//!   items are copied into the mounted root filesystem (destination parents resolved inside
//!   the root, following the image's symlinks as Docker does; missing ones created 0755
//!   root), owners and modes set, and the upper dir captured as for `RUN`. A regular file
//!   from the build's own private copy ([`CopyItem::private`]: the context the daemon
//!   unpacked, a here-document, a download) that has no other link and keeps its mode is
//!   not copied: an empty placeholder is made through the overlay (parents, owner, mode,
//!   hiding the image's file of that name) and, once the overlay is unmounted, replaced in
//!   the upper dir by a hard link to the source — the layer's file *is* the context's,
//!   whose bytes were written once, when the context arrived.
//! * **Capturing a step** (`capture`): the step's overlay is mounted `volatile` (no syncs
//!   while the step runs; the unmount would otherwise flush the whole filesystem). After
//!   the unmount, `store::layer::seal_diff` walks the upper dir once: it writes the layer
//!   tar, handed in 1 MiB chunks to a second thread that hashes and writes the blob (the
//!   blob of an uncompressed layer is its diff id, so each byte is hashed once), and makes
//!   the directory what unpacking that tar would give (xattrs a tar does not carry,
//!   sockets and sub-second times go). `Snapshotter::commit_dir` then renames the sealed
//!   upper dir into place as the committed snapshot (synced first), instead of unpacking
//!   the blob into a copy; an upper dir the seal cannot vouch for (a file named `.wh.*`)
//!   is unpacked from the blob as before. A crash at any point leaves either no snapshot
//!   or a complete one, and the active snapshot for `clean_stale`.
//! * `ADD <http(s) url>` ([`BuildBackend::fetch_url`]): downloaded (reqwest, on a small
//!   runtime of its own) into the builder's scratch file: the body as is, never extracted,
//!   `Last-Modified` as its mtime, at most 8 GiB; a status >= 400 or a transfer error is
//!   an error and leaves no file. The builder sets mode 0600 and keys the cache by content.
//! * Missing base images are fetched through the [`PullFn`] the caller gives (the daemon
//!   pulls from the image's registry with the client's credentials).
//! * `COPY --from` and directory checks ([`BuildBackend::mount_rootfs`],
//!   [`BuildBackend::is_dir`]): a read-only view — an overlay of the committed snapshots
//!   without upper dir, a read-only bind mount for a single layer, an empty directory for
//!   no layer.
//! * [`BuildBackend::commit`] stores the config and an OCI manifest through
//!   `Store::register_image`; committing an equal state again returns the same image
//!   (remembered in `buildcache/images/<state id hex>`), so a fully cached rebuild yields
//!   the same image id, as Docker's classic builder does.
//! * The layer cache is `buildcache/<key>.json` (an [`ImageState`]), written with
//!   temp file + fsync + rename. An entry is used only while every layer's blob is still in
//!   the store; garbage collection of unreferenced blobs therefore invalidates entries
//!   whose intermediate layers belong to no image.
//!
//! Everything is synchronous (the builder is); call it from a blocking thread.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{
    lchown, symlink, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use build::context::{resolve, Scope};
use build::{
    BackendError, BaseImage, BuildBackend, CacheKey, CopyItem, ImageState, RunResult, RunSpec,
};
use errkind::{ErrorKind, HasKind};
use net::{ContainerNet, NetworkManager};
use store::image::{chain_ids, media_types};
use store::{Descriptor, Digest, Reference, Store};

/// Pulls an image into the store: gets the reference as written in the Dockerfile and
/// the build log for progress lines; returns a message on failure.
pub type PullFn = Box<dyn Fn(&str, &mut dyn Write) -> Result<(), String> + Send + Sync>;

/// The network of `RUN` steps that ask for none in particular (`docker build --network`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DefaultNetwork {
    /// The engine's default bridge network (`bridge`), as Docker: the step gets its own
    /// network namespace with a veth into the bridge and reaches out through NAT. Needs
    /// the network manager ([`StoreBuildBackend::with_network`]).
    #[default]
    Bridge,
    /// The host's network namespace.
    Host,
    /// A new network namespace with only a loopback interface.
    None,
    /// A user-defined bridge network of the engine, by name or id.
    Named(String),
    /// A running container's network (`docker build --network container:<name>`, resolved
    /// by the caller): the step joins its namespace (`/proc/<pid>/ns/net`) and, as Docker
    /// gives a container that joins another's network, sees that container's own
    /// `/etc/resolv.conf` and `/etc/hosts` (bind mounts of the files in its directory
    /// `<root>/containers/<id>`), so its DNS is the container's (the embedded DNS on a
    /// user-defined network), not the host's.
    Join {
        /// The namespace to join.
        netns: PathBuf,
        /// The container's directory, holding its `resolv.conf` and `hosts`.
        etc_dir: PathBuf,
    },
}

impl DefaultNetwork {
    /// The network a `--network` value names: empty, `default` and `bridge` are the
    /// default bridge; `host` and `none` are themselves; anything else a network name.
    pub fn from_mode(mode: &str) -> DefaultNetwork {
        match mode {
            "" | "default" | "bridge" => DefaultNetwork::Bridge,
            "host" => DefaultNetwork::Host,
            "none" => DefaultNetwork::None,
            other => DefaultNetwork::Named(other.to_string()),
        }
    }

    /// The bridge network to connect to, if any.
    fn bridge_network(&self) -> Option<&str> {
        match self {
            DefaultNetwork::Bridge => Some("bridge"),
            DefaultNetwork::Named(n) => Some(n),
            DefaultNetwork::Host | DefaultNetwork::None | DefaultNetwork::Join { .. } => None,
        }
    }
}

/// Where the backend finds its tools and keeps its temporary files.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// The OCI runtime binary (`berth-runtime`, or any runc-compatible one).
    pub runtime: PathBuf,
    /// The runtime's state directory (`--root`).
    pub runtime_root: PathBuf,
    /// A directory for bundles and mount points (created if missing; each build uses its
    /// own subdirectory and removes it in [`BuildBackend::finish`]).
    pub scratch_dir: PathBuf,
    /// The network of `RUN` steps without `--network`.
    pub default_network: DefaultNetwork,
}

/// Something a build holds that must be released: a runtime container, a network
/// namespace with its endpoints (container id, namespace file), a mount, an active
/// snapshot, a directory (released in that order).
#[derive(Debug, Clone, Default)]
struct Lease {
    container: Option<String>,
    netns: Option<(String, PathBuf)>,
    mount: Option<PathBuf>,
    snapshot: Option<String>,
    dir: Option<PathBuf>,
}

/// [`BuildBackend`] over a [`Store`] and an OCI runtime; see the module docs.
pub struct StoreBuildBackend {
    store: Store,
    cfg: BackendConfig,
    pull: Option<PullFn>,
    /// The engine's networks, for `RUN` steps on a bridge network.
    net: Option<Arc<NetworkManager>>,
    /// Layer blobs by diff id, learnt during this process.
    descs: HashMap<String, Descriptor>,
    /// What is held right now (released on error paths and by `finish`).
    leases: Vec<Lease>,
    /// This build's directory under the scratch dir (created lazily).
    build_dir: Option<PathBuf>,
    /// The layers of COPY steps hashed while the context arrived.
    predicted: Vec<store::layer::PredictedTar>,
}

impl std::fmt::Debug for StoreBuildBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuildBackend")
            .field("store", &self.store.root())
            .field("cfg", &self.cfg)
            .field("pull", &self.pull.is_some())
            .field("net", &self.net.is_some())
            .field("leases", &self.leases)
            .finish()
    }
}

/// Docker's default capabilities for containers (and build steps).
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's masked paths.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Mount points the runtime creates in the root filesystem when the image lacks them;
/// they are not part of a step's changes.
const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "etc/resolv.conf", "etc/hosts"];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn be(kind: ErrorKind, msg: impl Into<String>) -> BackendError {
    BackendError::new(kind, msg)
}

/// Wraps a typed error, keeping its kind.
fn wrap<E: std::error::Error + HasKind + Send + Sync + 'static>(
    msg: impl Into<String>,
) -> impl FnOnce(E) -> BackendError {
    let msg = msg.into();
    move |e| {
        let kind = e.kind();
        BackendError::with_source(kind, msg, e)
    }
}

/// Wraps an I/O error as internal.
fn ioerr(msg: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let msg = msg.into();
    move |e| BackendError::with_source(ErrorKind::Internal, msg, e)
}

fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn parse_digest(s: &str) -> Result<Digest, BackendError> {
    Digest::parse(s).map_err(wrap(format!("invalid layer id {s:?}")))
}

/// Writes `data` to `path` crash-safe (temp file, fsync, rename, fsync of the directory).
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", unique()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Reads at most `limit` bytes of a small file.
fn read_small(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Whether `key` is safe as a file name (the builder's keys are hex).
fn safe_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A user as the runtime needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    home: String,
}

/// Resolves `user[:group]` (names or numbers) against the image's `/etc/passwd` and
/// `/etc/group` in `root`. An empty spec is root.
fn resolve_user(root: &Path, spec: &str) -> Result<Identity, BackendError> {
    let read = |p: &str| -> String {
        resolve(root, p, Scope::Rootfs)
            .ok()
            .and_then(|p| read_small(&p, 4 << 20).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let passwd = read("etc/passwd");
    let groups = read("etc/group");
    let spec = if spec.is_empty() { "0" } else { spec };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let pw: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 6)
        .collect();
    let entry = match user.parse::<u32>() {
        Ok(uid) => pw.iter().find(|f| f[2].parse::<u32>().ok() == Some(uid)),
        Err(_) => pw.iter().find(|f| f[0] == user),
    };
    let (uid, pgid, name, home) = match (user.parse::<u32>(), entry) {
        (Ok(uid), Some(f)) => (uid, f[3].parse().unwrap_or(uid), f[0], f[5]),
        (Ok(uid), None) => (uid, uid, "", "/"),
        (Err(_), Some(f)) => {
            let uid = f[2].parse().map_err(|_| {
                be(
                    ErrorKind::InvalidArgument,
                    format!("invalid uid for user {user} in /etc/passwd"),
                )
            })?;
            (uid, f[3].parse().unwrap_or(uid), f[0], f[5])
        }
        (Err(_), None) => {
            return Err(be(
                ErrorKind::InvalidArgument,
                format!("unable to find user {user}: no matching entries in passwd file"),
            ))
        }
    };
    let gr: Vec<Vec<&str>> = groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let gid = match group {
        None => pgid,
        Some(g) => match g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => gr
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    be(
                        ErrorKind::InvalidArgument,
                        format!("unable to find group {g}: no matching entries in group file"),
                    )
                })?,
        },
    };
    let mut additional_gids = Vec::new();
    if group.is_none() && !name.is_empty() {
        for f in &gr {
            let members = f.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        additional_gids,
        home: if home.is_empty() { "/" } else { home }.to_string(),
    })
}

/// Creates every missing directory of `path` (absolute, in the image) inside `root`,
/// following the image's symlinks inside the root; new directories are 0755 root.
/// Returns the host path.
fn mkdir_in_root(root: &Path, path: &str) -> Result<PathBuf, BackendError> {
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut so_far = String::new();
    for c in comps {
        so_far.push('/');
        so_far.push_str(c);
        let p = resolve(root, &so_far, Scope::Rootfs).map_err(|e| {
            BackendError::with_source(
                ErrorKind::InvalidArgument,
                format!("resolving {so_far} in the image"),
                e,
            )
        })?;
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(be(
                    ErrorKind::InvalidArgument,
                    format!(
                        "cannot create directory {so_far}: a file of that name exists in the image"
                    ),
                ))
            }
            Err(_) => {
                fs::create_dir(&p).map_err(ioerr(format!("creating directory {so_far}")))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                    .map_err(ioerr(format!("setting the mode of {so_far}")))?;
                lchown(&p, Some(0), Some(0))
                    .map_err(ioerr(format!("setting the owner of {so_far}")))?;
            }
        }
    }
    resolve(root, path, Scope::Rootfs).map_err(|e| {
        BackendError::with_source(
            ErrorKind::InvalidArgument,
            format!("resolving {path} in the image"),
            e,
        )
    })
}

fn set_mtime(path: &Path, m: &fs::Metadata) {
    use nix::sys::time::TimeSpec;
    let ts = TimeSpec::new(m.mtime(), m.mtime_nsec());
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// Largest file `ADD <url>` downloads.
const MAX_DOWNLOAD: u64 = 8 << 30;

/// Downloads `url` (`http` or `https`) into the new file `dest` for `ADD <url>`, as
/// Docker does: the body as is (never extracted), the `Last-Modified` header as the
/// file's modification time. A status of 400 or more, a body over `limit` bytes or a
/// transfer error is an error and leaves no file. Runs its own small async runtime (call
/// it from a blocking thread).
fn download(url: &str, dest: &Path, limit: u64) -> Result<(), BackendError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        BackendError::with_source(
            ErrorKind::InvalidArgument,
            format!("invalid URL {url:?}"),
            e,
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(be(
            ErrorKind::InvalidArgument,
            format!("cannot download {url}: only http and https URLs are supported"),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ioerr("starting a runtime for a download"))?;
    let res = rt.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| {
                BackendError::with_source(ErrorKind::Internal, "creating an HTTP client", e)
            })?;
        let unreachable = |e: reqwest::Error| {
            BackendError::with_source(ErrorKind::Unavailable, format!("cannot GET {url}"), e)
        };
        let mut resp = client
            .get(parsed.clone())
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        if status.as_u16() >= 400 {
            return Err(be(
                ErrorKind::NotFound,
                format!("failed to GET {url} with status {status}"),
            ));
        }
        let mtime = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok());
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(ioerr(format!("creating {}", dest.display())))?;
        let mut total: u64 = 0;
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            total += chunk.len() as u64;
            if total > limit {
                return Err(be(
                    ErrorKind::InvalidArgument,
                    format!("{url} is larger than {limit} bytes"),
                ));
            }
            f.write_all(&chunk)
                .map_err(ioerr(format!("writing {}", dest.display())))?;
        }
        f.sync_all()
            .map_err(ioerr(format!("writing {}", dest.display())))?;
        drop(f);
        if let Some(t) = mtime {
            use nix::sys::time::TimeSpec;
            let ts = TimeSpec::new(t.timestamp(), 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                dest,
                &ts,
                &ts,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| ioerr(format!("setting the time of {}", dest.display()))(e.into()))?;
        }
        Ok(())
    });
    if res.is_err() {
        let _ = fs::remove_file(dest);
    }
    res
}

/// Size of the chunks [`ChunkSender`] hands over.
const PIPE_CHUNK: usize = 1 << 20;

/// Runs `produce` on this thread writing into `sink` on another one (through a
/// [`ChunkSender`]), hashing what `sink` gets there: `produce`'s result, and `sink` with
/// the sha256 and length of the bytes. When `sink` fails, `produce` sees a closed pipe:
/// look at the sink's error first.
fn pipe_to<W: Write + Send, T>(
    sink: W,
    produce: impl FnOnce(&mut ChunkSender) -> T,
) -> (T, io::Result<(W, Digest, u64)>) {
    std::thread::scope(|sc| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let writer = sc.spawn(move || -> io::Result<(W, Digest, u64)> {
            let mut hw = store::digest::HashingWriter::new(sink);
            for chunk in rx {
                hw.write_all(&chunk)?;
            }
            hw.flush()?;
            Ok(hw.finish())
        });
        let mut w = ChunkSender {
            tx: Some(tx),
            buf: Vec::with_capacity(PIPE_CHUNK),
        };
        let out = produce(&mut w);
        let flushed = w.finish();
        let sink = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the layer writer panicked")))
            .and_then(|r| flushed.map(|()| r));
        (out, sink)
    })
}

/// A writer that hands its data in chunks to another thread (over a bounded channel).
struct ChunkSender {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_CHUNK));
        match &self.tx {
            Some(tx) => tx
                .send(chunk)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the layer writer stopped")),
            None => Err(io::Error::other("layer stream already finished")),
        }
    }

    /// Sends what is buffered and closes the channel (the receiver then ends).
    fn finish(&mut self) -> io::Result<()> {
        let r = self.send_buf();
        self.tx = None;
        r
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIPE_CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A private source file (see [`CopyItem::private`]) that becomes a layer's file itself:
/// `rel` (under the step's upper dir) holds an empty placeholder made through the
/// overlay, with the owner and mode already set, until [`fill_placeholder`].
#[derive(Debug, Clone)]
struct Linked {
    rel: PathBuf,
    src: PathBuf,
    uid: u32,
    gid: u32,
    mode: u32,
}

/// Replaces the placeholder of `l` in the (unmounted) upper dir `upper` with a hard link
/// to its source, given the placeholder's owner and mode (which leaves the source's mode
/// as it was: only such sources are linked), in one rename. When the link cannot be
/// made (another filesystem, a source linked meanwhile by an earlier item of the same
/// step), the source's bytes are copied into the placeholder instead.
fn fill_placeholder(upper: &Path, l: &Linked) -> Result<(), BackendError> {
    let dst = upper.join(&l.rel);
    let what = || format!("copying {} to {}", l.src.display(), l.rel.display());
    let ph = fs::symlink_metadata(&dst).map_err(ioerr(what()))?;
    if !ph.is_file() || ph.len() != 0 {
        return Err(be(
            ErrorKind::Internal,
            format!("{}: the placeholder of {} changed", what(), l.rel.display()),
        ));
    }
    let src_meta = fs::symlink_metadata(&l.src).map_err(ioerr(what()))?;
    let parent = dst.parent().unwrap_or(upper);
    let tmp = parent.join(format!(".berth-link-{}", unique()));
    let linked = src_meta.nlink() == 1
        && src_meta.is_file()
        && src_meta.mode() & 0o7777 == l.mode
        && fs::hard_link(&l.src, &tmp).is_ok();
    if linked {
        let res = (|| -> io::Result<()> {
            lchown(&tmp, Some(l.uid), Some(l.gid))?;
            // A chown drops set-id bits: put the mode back.
            fs::set_permissions(&tmp, fs::Permissions::from_mode(l.mode))?;
            fs::rename(&tmp, &dst)
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(ioerr(what())(e));
        }
        return Ok(());
    }
    let mut src = File::open(&l.src).map_err(ioerr(what()))?;
    let mut out = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&dst)
        .map_err(ioerr(what()))?;
    io::copy(&mut src, &mut out).map_err(ioerr(what()))?;
    drop(out);
    fs::set_permissions(&dst, fs::Permissions::from_mode(l.mode)).map_err(ioerr(what()))?;
    set_mtime(&dst, &src_meta);
    Ok(())
}

/// The network set-up of one `RUN` step.
#[derive(Debug, Default)]
struct StepNet {
    /// The network it asked for.
    mode: DefaultNetwork,
    /// The namespace to join (bridge networks); None: the host's (`Host`) or a new empty
    /// one (`None`).
    netns: Option<PathBuf>,
    /// `/etc/hosts` content (None: a minimal one).
    hosts: Option<String>,
    /// `/etc/resolv.conf` content (None: the host's).
    resolv: Option<String>,
}

/// The first 12 characters of an id.
fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

impl StoreBuildBackend {
    /// A backend over `store`. `pull`, if given, is called to fetch base images that are
    /// missing (or all of them under `--pull`); without it a missing base image is a
    /// not-found error.
    pub fn new(store: Store, cfg: BackendConfig, pull: Option<PullFn>) -> Self {
        StoreBuildBackend {
            store,
            cfg,
            pull,
            net: None,
            descs: HashMap::new(),
            leases: Vec::new(),
            build_dir: None,
            predicted: Vec::new(),
        }
    }

    /// Gives `RUN` steps on a bridge network (the default one or a user-defined one) their
    /// network: each such step gets a namespace connected through `manager`, disconnected
    /// and removed when the step ends, whatever happens.
    pub fn with_network(mut self, manager: Arc<NetworkManager>) -> Self {
        self.net = Some(manager);
        self
    }

    /// The store it builds into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Removes what builds of an earlier, killed process left behind: build containers
    /// in the runtime, mounts under `cfg.scratch_dir`, active `build-*` snapshots and the
    /// build directories. Call it when the engine starts, before any build runs (it would
    /// remove a running build's resources too). Returns how many things it removed.
    pub fn clean_stale(store: &Store, cfg: &BackendConfig) -> usize {
        let mut removed = 0;
        let builds: Vec<PathBuf> = fs::read_dir(&cfg.scratch_dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("build-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        let probe = StoreBuildBackend::new(store.clone(), cfg.clone(), None);
        // Build containers: every step directory holding a bundle names one.
        for b in &builds {
            for step in fs::read_dir(b).into_iter().flatten().flatten() {
                let id = step.file_name().to_string_lossy().into_owned();
                if step.path().join("config.json").exists() && cfg.runtime_root.join(&id).exists() {
                    let lease = Lease {
                        container: Some(id),
                        ..Default::default()
                    };
                    if probe.release(&lease).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        // Mounts under the scratch dir, deepest first.
        let prefix = cfg.scratch_dir.to_string_lossy().into_owned();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&format!("{prefix}/build-")))
            .collect();
        mounts.sort();
        for m in mounts.iter().rev() {
            if store::snapshot::unmount(Path::new(m)).is_ok() {
                removed += 1;
            }
        }
        if let Ok(active) = store.snapshots().list_active() {
            for a in active.iter().filter(|a| a.key.starts_with("build-")) {
                if store.snapshots().remove(&a.key).is_ok() {
                    removed += 1;
                }
            }
        }
        let still_mounted = |b: &Path| {
            let p = b.to_string_lossy().into_owned();
            fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .any(|m| m.starts_with(&p))
        };
        for b in builds.iter().filter(|b| !still_mounted(b)) {
            if fs::remove_dir_all(b).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    fn cache_root(&self) -> PathBuf {
        self.store.root().join("buildcache")
    }

    fn build_dir(&mut self) -> Result<PathBuf, BackendError> {
        if let Some(d) = &self.build_dir {
            return Ok(d.clone());
        }
        let d = self.cfg.scratch_dir.join(format!("build-{}", unique()));
        fs::create_dir_all(&d).map_err(ioerr(format!("creating {}", d.display())))?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
            .map_err(ioerr(format!("setting the mode of {}", d.display())))?;
        self.build_dir = Some(d.clone());
        Ok(d)
    }

    /// Releases what `lease` holds, in order; keeps going after a failure and reports the
    /// first one.
    fn release(&self, lease: &Lease) -> Result<(), BackendError> {
        let mut first: Option<BackendError> = None;
        let mut note = |e: BackendError| {
            tracing::warn!(error = %e, "build cleanup");
            if first.is_none() {
                first = Some(e);
            }
        };
        if let Some(id) = &lease.container {
            if self.cfg.runtime_root.join(id).exists() {
                let out = Command::new(&self.cfg.runtime)
                    .arg("--root")
                    .arg(&self.cfg.runtime_root)
                    .args(["delete", "--force", id])
                    .stdin(Stdio::null())
                    .output();
                match out {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => note(be(
                        ErrorKind::Internal,
                        format!(
                            "removing build container {id}: {}",
                            String::from_utf8_lossy(&o.stderr).trim()
                        ),
                    )),
                    Err(e) => note(BackendError::with_source(
                        ErrorKind::Unavailable,
                        format!("running {}", self.cfg.runtime.display()),
                        e,
                    )),
                }
            }
        }
        if let Some((cid, ns)) = &lease.netns {
            if let Some(mgr) = &self.net {
                for ep in mgr.endpoints(cid) {
                    if let Err(e) = mgr.disconnect(cid, &ep.network_id) {
                        let kind = e.kind();
                        note(BackendError::with_source(
                            kind,
                            format!(
                                "disconnecting build container {cid} from {}",
                                ep.network_name
                            ),
                            e,
                        ));
                    }
                }
            }
            if let Err(e) = net::remove_netns(ns) {
                let kind = e.kind();
                note(BackendError::with_source(
                    kind,
                    format!("removing network namespace {}", ns.display()),
                    e,
                ));
            }
        }
        let mut still_mounted = false;
        if let Some(m) = &lease.mount {
            if let Err(e) = store::snapshot::unmount(m) {
                // Already unmounted (or never mounted) is fine.
                let benign = match &e {
                    store::snapshot::SnapshotError::Mount { source, .. } => {
                        matches!(source.raw_os_error(), Some(c)
                            if c == nix::errno::Errno::EINVAL as i32
                                || c == nix::errno::Errno::ENOENT as i32)
                    }
                    _ => false,
                };
                if !benign {
                    still_mounted = true;
                    note(wrap(format!("unmounting {}", m.display()))(e));
                }
            }
        }
        if let Some(k) = &lease.snapshot {
            match self.store.snapshots().remove(k) {
                Ok(()) | Err(store::snapshot::SnapshotError::NotFound(_)) => {}
                Err(e) => note(wrap(format!("removing snapshot {k}"))(e)),
            }
        }
        // Never recurse into a directory that may still show an image's files.
        if let Some(d) = lease.dir.as_ref().filter(|_| !still_mounted) {
            if let Err(e) = remove_any(d) {
                note(ioerr(format!("removing {}", d.display()))(e));
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Releases a lease taken with `self.leases.push` and forgets it.
    fn drop_lease(&mut self, lease: &Lease) -> Result<(), BackendError> {
        let r = self.release(lease);
        if let Some(i) = self.leases.iter().position(|l| {
            l.snapshot == lease.snapshot && l.mount == lease.mount && l.dir == lease.dir
        }) {
            self.leases.remove(i);
        }
        r
    }

    /// The blob descriptor of the layer with diff id `diff_id`, if its blob is stored.
    fn layer_desc(&mut self, diff_id: &str) -> Option<Descriptor> {
        let ok = |d: &Descriptor| self.store.content().exists(&d.digest);
        if let Some(d) = self.descs.get(diff_id) {
            if ok(d) {
                return Some(d.clone());
            }
        }
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        if safe_key(hex) {
            let p = self.cache_root().join("layers").join(format!("{hex}.json"));
            if let Some(d) = read_small(&p, 1 << 16)
                .ok()
                .and_then(|b| serde_json::from_slice::<Descriptor>(&b).ok())
            {
                if ok(&d) {
                    self.descs.insert(diff_id.to_string(), d.clone());
                    return Some(d);
                }
            }
        }
        let images = self.store.images().list().ok()?;
        for img in images {
            for (i, d) in img.diff_ids.iter().enumerate() {
                if let Some(l) = img.layers.get(i) {
                    if ok(l) {
                        self.descs.insert(d.to_string(), l.clone());
                    }
                }
            }
        }
        self.descs.get(diff_id).filter(|d| ok(d)).cloned()
    }

    /// Remembers the blob of a layer, also on disk for later builds.
    fn remember_layer(&mut self, diff_id: &str, desc: &Descriptor) {
        self.descs.insert(diff_id.to_string(), desc.clone());
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        if !safe_key(hex) {
            return;
        }
        let p = self.cache_root().join("layers").join(format!("{hex}.json"));
        if p.exists() {
            return;
        }
        if let Ok(b) = serde_json::to_vec(desc) {
            if let Err(e) = write_atomic(&p, &b) {
                tracing::warn!(path = %p.display(), error = %e, "cannot record a build layer");
            }
        }
    }

    /// Makes sure a committed snapshot exists for every layer of `layers`; returns the top
    /// chain id.
    fn ensure_chain(&mut self, layers: &[String]) -> Result<Option<Digest>, BackendError> {
        let diff_ids: Vec<Digest> = layers
            .iter()
            .map(|l| parse_digest(l))
            .collect::<Result<_, _>>()?;
        let chains = chain_ids(&diff_ids);
        let mut parent: Option<Digest> = None;
        for (i, chain) in chains.iter().enumerate() {
            if !self.store.snapshots().exists(chain) {
                let desc = self.layer_desc(&layers[i]).ok_or_else(|| {
                    be(
                        ErrorKind::NotFound,
                        format!("layer {} is not in the store", layers[i]),
                    )
                })?;
                let blob = self
                    .store
                    .content()
                    .open_blob(&desc.digest)
                    .map_err(wrap(format!("opening layer {}", desc.digest)))?;
                self.store
                    .snapshots()
                    .apply_layer(
                        chain,
                        parent.as_ref(),
                        &diff_ids[i],
                        BufReader::with_capacity(1 << 20, blob),
                        self.store.apply_options(),
                    )
                    .map_err(wrap(format!("unpacking layer {}", layers[i])))?;
            }
            parent = Some(chain.clone());
        }
        Ok(parent)
    }

    /// Prepares and mounts a writable snapshot on `parent` under the build directory.
    /// Returns the lease (already registered) and the mounted root.
    fn open_rw(
        &mut self,
        parent: &ImageState,
        name: &str,
    ) -> Result<(Lease, PathBuf, Option<Digest>), BackendError> {
        let top = self.ensure_chain(&parent.layers)?;
        let dir = self.build_dir()?.join(name);
        let rootfs = dir.join("rootfs");
        let key = format!("build-{name}");
        let mut lease = Lease {
            dir: Some(dir.clone()),
            ..Default::default()
        };
        self.leases.push(lease.clone());
        let res = fs::create_dir_all(&rootfs)
            .map_err(ioerr(format!("creating {}", rootfs.display())))
            .and_then(|()| {
                self.store
                    .snapshots()
                    .prepare(&key, top.as_ref())
                    .map_err(wrap(format!("preparing snapshot {key}")))
            });
        // A failed prepare leaves nothing (and an existing key is not ours to remove).
        let mounts = match res {
            Ok(m) => m,
            Err(e) => {
                let _ = self.drop_lease(&lease);
                return Err(e);
            }
        };
        self.update_lease(&mut lease, |l| l.snapshot = Some(key.clone()));
        // `volatile`: no syncs to the upper dir (the unmount would otherwise flush the
        // whole filesystem); a step's changes are synced once, when they are committed,
        // and a crash discards the step anyway. Kernels without it (< 5.10) mount
        // without.
        let mut volatile = mounts.clone();
        for m in volatile.iter_mut().filter(|m| m.kind == "overlay") {
            m.options.push("volatile".into());
        }
        let mounted = store::snapshot::mount_all(&volatile, &rootfs)
            .or_else(|_| store::snapshot::mount_all(&mounts, &rootfs));
        if let Err(e) = mounted {
            let _ = self.drop_lease(&lease);
            return Err(wrap(format!("mounting snapshot {key}"))(e));
        }
        self.update_lease(&mut lease, |l| l.mount = Some(rootfs.clone()));
        Ok((lease, rootfs, top))
    }

    fn update_lease(&mut self, lease: &mut Lease, f: impl Fn(&mut Lease)) {
        if let Some(l) = self
            .leases
            .iter_mut()
            .find(|l| l.dir == lease.dir && l.snapshot == lease.snapshot && l.mount == lease.mount)
        {
            f(l);
        }
        f(lease);
    }

    /// Unmounts `lease`'s snapshot, puts the files of `links` in place, drops the mount
    /// points listed in `stubs` (paths relative to the root that did not exist before)
    /// from its upper dir and turns the rest into a layer on `parent_top`. `None` when
    /// nothing changed.
    fn capture(
        &mut self,
        lease: &Lease,
        parent_top: Option<&Digest>,
        stubs: &[&str],
        links: &[Linked],
    ) -> Result<Option<String>, BackendError> {
        if let Some(m) = &lease.mount {
            store::snapshot::unmount(m).map_err(wrap(format!("unmounting {}", m.display())))?;
        }
        let key = lease
            .snapshot
            .clone()
            .ok_or_else(|| be(ErrorKind::Internal, "build step without a snapshot"))?;
        let upper = self
            .store
            .snapshots()
            .upper_dir(&key)
            .map_err(wrap(format!("finding the changes of snapshot {key}")))?;
        for l in links {
            fill_placeholder(&upper, l)?;
        }
        // Mount points the runtime created: empty files or directories; then the parents
        // copied up only for them.
        for s in stubs {
            let p = upper.join(s);
            if let Ok(m) = fs::symlink_metadata(&p) {
                if (m.is_file() && m.len() == 0) || (m.is_dir() && is_empty_dir(&p)) {
                    let _ = remove_any(&p);
                }
            }
            let mut cur = Path::new(s).parent();
            while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty()) {
                let p = upper.join(d);
                if is_empty_dir(&p) {
                    let _ = fs::remove_dir(&p);
                }
                cur = d.parent();
            }
        }
        if is_empty_dir(&upper) {
            return Ok(None);
        }
        // Uncompressed, as Docker keeps build layers locally: compressing is most of the
        // cost of a large COPY and a push may compress later. So the blob's digest is the
        // diff id too. The tar is made on this thread (`seal_diff`, which also makes the
        // upper dir what unpacking the tar would give, so that it can become the
        // snapshot) while another one hashes it (two cores instead of one). It is not
        // written anywhere: when the sealed dir becomes the snapshot, the blob is only
        // recorded as derived from it (made again from the snapshot when something reads
        // it, as dockerd makes a build layer's tar when it pushes or saves), so the data
        // is written to disk once.
        let started = std::time::Instant::now();
        // The files linked from the context may have been hashed as this layer's tar
        // while the context arrived (a prediction holding the first one's inode); the
        // seal then reads only what differs from it.
        let predicted = links.first().and_then(|l| {
            let m = fs::symlink_metadata(&l.src).ok()?;
            self.predicted.iter().find(|p| p.holds(m.dev(), m.ino()))
        });
        let (diff, digest, size, predicted_bytes) = match predicted {
            Some(p) => {
                let s = store::layer::seal_diff_predicted(&upper, p)
                    .map_err(wrap(format!("writing the changes of {key}")))?;
                (s.seal, s.diff_id, s.seal.size, s.predicted)
            }
            None => {
                let (diff, hashed) = pipe_to(io::sink(), |w| store::layer::seal_diff(&upper, w));
                match (diff, hashed) {
                    (Ok(d), Ok((_, digest, size))) => (d, digest, size, 0),
                    (_, Err(e)) => return Err(ioerr(format!("hashing the changes of {key}"))(e)),
                    (Err(e), Ok(_)) => {
                        return Err(wrap(format!("writing the changes of {key}"))(e))
                    }
                }
            }
        };
        if size != diff.size {
            return Err(be(
                ErrorKind::Internal,
                format!("the layer of {key}: hashed {size} bytes of {}", diff.size),
            ));
        }
        let written = started.elapsed();
        let desc = Descriptor::new(media_types::OCI_LAYER, digest.clone(), size);
        let diff_id = digest.to_string();
        let chain = match parent_top {
            None => digest.clone(),
            Some(p) => Digest::sha256_of(format!("{p} {digest}").as_bytes()),
        };
        let content = self.store.content();
        // The sealed upper dir becomes the snapshot (a rename) and the blob a record of
        // it; storing the tar and unpacking it again is the fallback for what a seal
        // cannot vouch for.
        let mut committed = false;
        if diff.exact
            && self.store.apply_options().devices == store::layer::DevicePolicy::Create
            && !self.store.snapshots().exists(&chain)
        {
            match self
                .store
                .snapshots()
                .commit_dir(&chain, parent_top, &upper)
            {
                Ok(c) => committed = c,
                Err(e) => {
                    tracing::warn!(error = %e, snapshot = %key, "cannot commit a build step's directory; unpacking its layer instead");
                }
            }
        }
        if committed && !content.exists(&digest) {
            // After the snapshot: a record is never written for a snapshot that is not
            // there (a crash in between leaves a snapshot that garbage collection frees).
            content
                .put_derived(&digest, size, &chain)
                .map_err(wrap(format!("recording layer {digest}")))?;
        } else if !content.exists(&digest) {
            // The sealed dir gives the same tar again: store that, checked against the
            // digest just computed.
            let ref_key = format!("build-layer-{}", unique());
            let mut bw = content
                .writer(&ref_key)
                .map_err(wrap("opening a layer upload"))?;
            if bw.offset() != 0 {
                bw = bw.restart().map_err(wrap("opening a layer upload"))?;
            }
            let (diff, sink) = pipe_to(bw, |w| store::layer::write_diff(&upper, w));
            let bw = match (diff, sink) {
                (Ok(_), Ok((bw, _, _))) => bw,
                (_, Err(e)) => {
                    let _ = content.abort_ingest(&ref_key);
                    return Err(ioerr(format!("storing the changes of {key}"))(e));
                }
                (Err(e), Ok(_)) => {
                    let _ = content.abort_ingest(&ref_key);
                    return Err(wrap(format!("writing the changes of {key}"))(e));
                }
            };
            bw.commit(Some(size), Some(&digest))
                .map_err(wrap("storing a layer blob"))?;
        }
        let stored = started.elapsed();
        if !self.store.snapshots().exists(&chain) {
            let blob = content
                .open_blob(&digest)
                .map_err(wrap(format!("opening layer {digest}")))?;
            self.store
                .snapshots()
                .apply_layer(
                    &chain,
                    parent_top,
                    &digest,
                    BufReader::with_capacity(1 << 20, blob),
                    self.store.apply_options(),
                )
                .map_err(wrap(format!("unpacking layer {diff_id}")))?;
        }
        tracing::debug!(
            layer = %diff_id,
            bytes = size,
            sealed = committed,
            predicted_bytes,
            tar_ms = written.as_millis() as u64,
            blob_ms = stored.as_millis() as u64,
            snapshot_ms = started.elapsed().as_millis() as u64,
            "build step captured"
        );
        self.remember_layer(&diff_id, &desc);
        Ok(Some(diff_id))
    }

    /// The network a step asks for: its `RUN --network` / `docker build --network`
    /// value, else the configured default.
    fn step_network(&self, spec: &RunSpec) -> DefaultNetwork {
        match spec.network.as_deref() {
            Some("default") | None => self.cfg.default_network.clone(),
            // `container:<name>` was resolved into the configured default.
            Some(mode) if mode.starts_with("container:") => self.cfg.default_network.clone(),
            Some(mode) => DefaultNetwork::from_mode(mode),
        }
    }

    /// Gives the step `cid` its network: for a bridge network a new namespace at
    /// `<bundle>/netns` connected to it (recorded in `lease` before anything is made, so
    /// a failure half-way is cleaned up with the lease), with the network's hosts and
    /// resolver files.
    fn attach_network(
        &mut self,
        mode: &DefaultNetwork,
        cid: &str,
        bundle: &Path,
        lease: &mut Lease,
    ) -> Result<StepNet, BackendError> {
        if let DefaultNetwork::Join { netns, etc_dir } = mode {
            // The container may have stopped since the build began: its namespace and
            // files must still be there (the runtime would fail on a stale path later and
            // less clearly).
            let gone = [
                netns.clone(),
                etc_dir.join("resolv.conf"),
                etc_dir.join("hosts"),
            ]
            .into_iter()
            .find(|p| !p.exists());
            if let Some(p) = gone {
                return Err(be(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "cannot join the network of container {}: it is not running ({} is gone)",
                        etc_dir
                            .file_name()
                            .map(|n| short(&n.to_string_lossy()))
                            .unwrap_or_default(),
                        p.display()
                    ),
                ));
            }
        }
        let Some(network) = mode.bridge_network() else {
            return Ok(StepNet {
                mode: mode.clone(),
                ..Default::default()
            });
        };
        let mgr = self.net.clone().ok_or_else(|| {
            be(
                ErrorKind::FailedPrecondition,
                format!("RUN on network {network}: this builder has no network service"),
            )
        })?;
        let path = bundle.join("netns");
        net::create_netns(&path).map_err(|e| {
            let kind = e.kind();
            BackendError::with_source(
                kind,
                format!(
                    "creating the network namespace of build container {}",
                    short(cid)
                ),
                e,
            )
        })?;
        self.update_lease(lease, |l| l.netns = Some((cid.to_string(), path.clone())));
        mgr.connect(ContainerNet {
            container_id: cid.to_string(),
            container_name: format!("build-{}", short(cid)),
            netns_path: path.clone(),
            network: network.to_string(),
            aliases: Vec::new(),
            ip: None,
            mac: None,
            ports: Vec::new(),
        })
        .map_err(|e| {
            let kind = e.kind();
            BackendError::with_source(
                kind,
                format!(
                    "connecting build container {} to network {network}",
                    short(cid)
                ),
                e,
            )
        })?;
        Ok(StepNet {
            mode: mode.clone(),
            hosts: Some(mgr.hosts_file(cid, &short(cid), &[])),
            resolv: Some(mgr.resolv_conf(cid, &[])),
            netns: Some(path),
        })
    }

    /// The OCI runtime config of a build step.
    fn spec_for(
        &self,
        spec: &RunSpec,
        rootfs: &Path,
        bundle: &Path,
        id: &Identity,
        netcfg: &StepNet,
    ) -> Result<serde_json::Value, BackendError> {
        let mut env = spec.env.clone();
        let has = |env: &[String], k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
        if !has(&env, "PATH") {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        if !has(&env, "HOME") {
            env.push(format!("HOME={}", id.home));
        }
        let hostname: String = spec.container_id.chars().take(12).collect();
        // A joined container's own resolver config and hosts file, shared as Docker shares
        // them; else private copies: the network's, or the host's resolver config and a
        // minimal hosts file.
        let (resolv, hosts) = if let DefaultNetwork::Join { etc_dir, .. } = &netcfg.mode {
            (etc_dir.join("resolv.conf"), etc_dir.join("hosts"))
        } else {
            let resolv = bundle.join("resolv.conf");
            let resolv_text = match &netcfg.resolv {
                Some(r) => r.clone().into_bytes(),
                None => read_small(Path::new("/etc/resolv.conf"), 1 << 16).unwrap_or_default(),
            };
            fs::write(&resolv, resolv_text).map_err(ioerr("writing resolv.conf"))?;
            let hosts = bundle.join("hosts");
            let hosts_text = netcfg.hosts.clone().unwrap_or_else(|| {
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
                )
            });
            fs::write(&hosts, hosts_text).map_err(ioerr("writing hosts"))?;
            (resolv, hosts)
        };
        let mut namespaces = vec![
            serde_json::json!({"type": "pid"}),
            serde_json::json!({"type": "ipc"}),
            serde_json::json!({"type": "uts"}),
            serde_json::json!({"type": "mount"}),
        ];
        match (&netcfg.netns, &netcfg.mode) {
            (Some(p), _) | (None, DefaultNetwork::Join { netns: p, .. }) => {
                namespaces.push(serde_json::json!({"type": "network", "path": p}))
            }
            (None, DefaultNetwork::Host) => {}
            (None, _) => namespaces.push(serde_json::json!({"type": "network"})),
        }
        let caps = DEFAULT_CAPS;
        // Docker's default seccomp profile, as for containers.
        let cap_names: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        let seccomp =
            serde_json::to_value(seccomp::docker_default(&cap_names, std::env::consts::ARCH))
                .map_err(|e| ioerr("encoding the seccomp profile")(io::Error::other(e)))?;
        let dev = |t: &str, major: i64, minor: Option<i64>| serde_json::json!({"allow": true, "type": t, "major": major, "minor": minor, "access": "rwm"});
        Ok(serde_json::json!({
            "ociVersion": "1.2.0",
            "process": {
                "terminal": false,
                "user": {"uid": id.uid, "gid": id.gid, "additionalGids": id.additional_gids},
                "args": spec.args,
                "env": env,
                "cwd": if spec.workdir.is_empty() { "/" } else { spec.workdir.as_str() },
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": false
            },
            "root": {"path": rootfs, "readonly": false},
            "hostname": hostname,
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/etc/resolv.conf", "type": "bind", "source": resolv, "options": ["rbind", "rprivate"]},
                {"destination": "/etc/hosts", "type": "bind", "source": hosts, "options": ["rbind", "rprivate"]}
            ],
            "linux": {
                "cgroupsPath": format!("/berth-build/{}", spec.container_id),
                "namespaces": namespaces,
                "resources": {"devices": [
                    {"allow": false, "access": "rwm"},
                    dev("c", 1, Some(3)), dev("c", 1, Some(5)), dev("c", 1, Some(7)),
                    dev("c", 1, Some(8)), dev("c", 1, Some(9)), dev("c", 5, Some(0)),
                    dev("c", 5, Some(1)), dev("c", 5, Some(2)), dev("c", 136, None),
                    dev("c", 10, Some(200))
                ]},
                "maskedPaths": MASKED_PATHS,
                "readonlyPaths": READONLY_PATHS,
                "seccomp": seccomp
            }
        }))
    }

    /// Runs the bundle in the foreground, copying its output to `out`. Returns the exit
    /// code, or an error when the runtime itself failed.
    fn run_container(
        &self,
        spec: &RunSpec,
        bundle: &Path,
        out: &mut dyn Write,
    ) -> Result<i32, BackendError> {
        let log = bundle.join("runtime.log");
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ioerr("creating a pipe")(io::Error::from(e)))?;
        let w2 = w.try_clone().map_err(ioerr("creating a pipe"))?;
        let mut cmd = Command::new(&self.cfg.runtime);
        cmd.arg("--root")
            .arg(&self.cfg.runtime_root)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "run", "--bundle"])
            .arg(bundle)
            .arg(&spec.container_id)
            .stdin(if spec.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::from(w))
            .stderr(Stdio::from(w2));
        let spawned = cmd.spawn();
        drop(cmd);
        let mut child = spawned.map_err(|e| {
            BackendError::with_source(
                ErrorKind::Unavailable,
                format!("starting the OCI runtime {}", self.cfg.runtime.display()),
                e,
            )
        })?;
        let feeder = match (spec.stdin.clone(), child.stdin.take()) {
            (Some(data), Some(mut stdin)) => Some(std::thread::spawn(move || {
                // The command may not read it all: ignore EPIPE.
                let _ = stdin.write_all(&data);
            })),
            _ => None,
        };
        let mut reader = File::from(r);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // A closed log (client gone) must not stop the step's cleanup.
                    let _ = out.write_all(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = out.flush();
        let status = child.wait().map_err(ioerr("waiting for the OCI runtime"))?;
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let code = match status.code() {
            Some(c) => c,
            None => {
                use std::os::unix::process::ExitStatusExt;
                128 + status.signal().unwrap_or(0)
            }
        };
        // A failure of the runtime (not of the command) is in its log.
        let logged = read_small(&log, 1 << 20).unwrap_or_default();
        let errors: Vec<String> = String::from_utf8_lossy(&logged)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "error")
            .filter_map(|v| v["msg"].as_str().map(str::to_string))
            .collect();
        if !errors.is_empty() {
            return Err(BackendError::with_source(
                ErrorKind::Internal,
                format!(
                    "the OCI runtime failed to run build container {}",
                    &spec.container_id.chars().take(12).collect::<String>()
                ),
                io::Error::other(errors.join("; ")),
            ));
        }
        Ok(code)
    }

    fn run_inner(
        &mut self,
        spec: &RunSpec,
        out: &mut dyn Write,
        lease: &mut Lease,
        rootfs: &Path,
        top: Option<&Digest>,
    ) -> Result<RunResult, BackendError> {
        let bundle = lease
            .dir
            .clone()
            .ok_or_else(|| be(ErrorKind::Internal, "build step without a directory"))?;
        let stubs: Vec<&str> = MOUNT_POINTS
            .iter()
            .copied()
            .filter(|p| fs::symlink_metadata(rootfs.join(p)).is_err())
            .collect();
        let workdir = if spec.workdir.is_empty() {
            "/"
        } else {
            spec.workdir.as_str()
        };
        mkdir_in_root(rootfs, workdir)?;
        let id = resolve_user(rootfs, &spec.user)?;
        let mode = self.step_network(spec);
        let netcfg = self.attach_network(&mode, &spec.container_id, &bundle, lease)?;
        let config = self.spec_for(spec, rootfs, &bundle, &id, &netcfg)?;
        let text = serde_json::to_vec_pretty(&config)
            .map_err(|e| ioerr("encoding config.json")(io::Error::other(e)))?;
        fs::write(bundle.join("config.json"), text).map_err(ioerr("writing config.json"))?;
        let cid = spec.container_id.clone();
        if self.cfg.runtime_root.join(&cid).exists() {
            return Err(be(
                ErrorKind::Conflict,
                format!("a container named {cid} already exists in the runtime"),
            ));
        }
        self.update_lease(lease, |l| l.container = Some(cid.clone()));
        let code = self.run_container(spec, &bundle, out)?;
        if code != 0 {
            return Ok(RunResult {
                exit_code: code,
                layer: None,
            });
        }
        // The runtime removed its state on exit; make sure before capturing.
        let l = Lease {
            container: Some(cid),
            ..Default::default()
        };
        self.release(&l)?;
        let layer = self.capture(lease, top, &stubs, &[])?;
        Ok(RunResult {
            exit_code: 0,
            layer,
        })
    }

    fn add_inner(
        &mut self,
        items: &[CopyItem],
        lease: &Lease,
        rootfs: &Path,
        top: Option<&Digest>,
    ) -> Result<Option<String>, BackendError> {
        let started = std::time::Instant::now();
        let mut owners: HashMap<String, (u32, u32)> = HashMap::new();
        // Placeholders for private sources that become the layer's files themselves, by
        // their path under the mounted root (filled in once the overlay is unmounted).
        let mut links: HashMap<PathBuf, Linked> = HashMap::new();
        let mut linked_bytes = 0u64;
        for it in items {
            let m = fs::symlink_metadata(&it.src).map_err(|e| {
                BackendError::with_source(
                    ErrorKind::NotFound,
                    format!("reading {}", it.src.display()),
                    e,
                )
            })?;
            let (uid, gid) = match &it.chown {
                Some(spec) => match owners.get(spec) {
                    Some(v) => *v,
                    None => {
                        let id = resolve_user(rootfs, spec)?;
                        owners.insert(spec.clone(), (id.uid, id.gid));
                        (id.uid, id.gid)
                    }
                },
                None if it.keep_owner => (m.uid(), m.gid()),
                None => (0, 0),
            };
            let dest = it.dest.trim_end_matches('/');
            let (parent, name) = match dest.rsplit_once('/') {
                Some((p, n)) if !n.is_empty() => (if p.is_empty() { "/" } else { p }, n),
                _ => ("/", ""),
            };
            if name.is_empty() || name == "." || name == ".." {
                // The root itself: only its metadata can change.
                if m.is_dir() && (it.chown.is_some() || it.chmod.is_some()) {
                    lchown(rootfs, Some(uid), Some(gid))
                        .map_err(ioerr("setting the owner of /"))?;
                    if let Some(mode) = it.chmod {
                        fs::set_permissions(rootfs, fs::Permissions::from_mode(mode))
                            .map_err(ioerr("setting the mode of /"))?;
                    }
                }
                continue;
            }
            let pdir = mkdir_in_root(rootfs, parent)?;
            let target = pdir.join(name);
            // Whatever this item does there replaces an earlier placeholder.
            links.remove(&target);
            let existing = fs::symlink_metadata(&target).ok();
            let ft = m.file_type();
            let what = || format!("copying {} to {}", it.src.display(), it.dest);
            if ft.is_dir() {
                // An existing directory (or a link to one inside the image) is reused.
                let in_root = resolve(rootfs, dest, Scope::Rootfs).ok();
                let reuse = in_root
                    .as_ref()
                    .and_then(|p| fs::symlink_metadata(p).ok())
                    .filter(|md| md.is_dir())
                    .and(in_root.clone());
                match reuse {
                    Some(p) => {
                        if it.chown.is_some() || it.keep_owner {
                            lchown(&p, Some(uid), Some(gid)).map_err(ioerr(what()))?;
                        }
                        if let Some(mode) = it.chmod {
                            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                                .map_err(ioerr(what()))?;
                        }
                    }
                    None => {
                        if existing.is_some() {
                            remove_any(&target).map_err(ioerr(what()))?;
                        }
                        fs::create_dir(&target).map_err(ioerr(what()))?;
                        lchown(&target, Some(uid), Some(gid)).map_err(ioerr(what()))?;
                        let mode = it.chmod.unwrap_or(m.mode() & 0o7777);
                        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                            .map_err(ioerr(what()))?;
                        set_mtime(&target, &m);
                    }
                }
                continue;
            }
            if let Some(e) = &existing {
                if e.is_dir() {
                    return Err(be(
                        ErrorKind::InvalidArgument,
                        format!(
                            "cannot overwrite directory {} with non-directory {}",
                            it.dest,
                            it.src.display()
                        ),
                    ));
                }
                fs::remove_file(&target).map_err(ioerr(what()))?;
            }
            if ft.is_symlink() {
                let link = fs::read_link(&it.src).map_err(ioerr(what()))?;
                symlink(&link, &target).map_err(ioerr(what()))?;
                lchown(&target, Some(uid), Some(gid)).map_err(ioerr(what()))?;
            } else if ft.is_file() {
                let mode = it.chmod.unwrap_or(m.mode() & 0o7777);
                let mut dst = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(ioerr(what()))?;
                if it.private && m.nlink() == 1 && mode == m.mode() & 0o7777 {
                    // An empty placeholder now (so the overlay makes the parents and
                    // hides what the image had there); the source itself after unmount.
                    let rel = target.strip_prefix(rootfs).map_err(|_| {
                        be(
                            ErrorKind::Internal,
                            format!("{} is outside the step's root", target.display()),
                        )
                    })?;
                    links.insert(
                        target.clone(),
                        Linked {
                            rel: rel.to_path_buf(),
                            src: it.src.clone(),
                            uid,
                            gid,
                            mode,
                        },
                    );
                    linked_bytes += m.len();
                } else {
                    let mut src = File::open(&it.src).map_err(ioerr(what()))?;
                    io::copy(&mut src, &mut dst).map_err(ioerr(what()))?;
                }
                drop(dst);
                lchown(&target, Some(uid), Some(gid)).map_err(ioerr(what()))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(ioerr(what()))?;
            } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() || ft.is_socket()
            {
                return Err(be(
                    ErrorKind::InvalidArgument,
                    format!("cannot copy special file {}", it.src.display()),
                ));
            }
            set_mtime(&target, &m);
        }
        tracing::debug!(
            items = items.len(),
            linked = links.len(),
            linked_bytes,
            copy_ms = started.elapsed().as_millis() as u64,
            "build step files copied"
        );
        let links: Vec<Linked> = links.into_values().collect();
        self.capture(lease, top, &[], &links)
    }

    /// A read-only view of `state`'s filesystem at a new directory; returns the lease
    /// (registered) and the path.
    fn open_ro(&mut self, state: &ImageState) -> Result<(Lease, PathBuf), BackendError> {
        let top = self.ensure_chain(&state.layers)?;
        let dir = self.build_dir()?.join(format!("ro-{}", unique()));
        fs::create_dir_all(&dir).map_err(ioerr(format!("creating {}", dir.display())))?;
        let mut lease = Lease {
            dir: Some(dir.clone()),
            ..Default::default()
        };
        self.leases.push(lease.clone());
        let lowers = match &top {
            Some(t) => match self.store.snapshots().lower_dirs(t) {
                Ok(l) => l,
                Err(e) => {
                    let _ = self.drop_lease(&lease);
                    return Err(wrap("listing the layers of a build state")(e));
                }
            },
            None => Vec::new(),
        };
        let mount = match lowers.len() {
            0 => None,
            1 => Some(store::Mount {
                kind: "bind".into(),
                source: lowers[0].to_string_lossy().into_owned(),
                target: None,
                options: vec!["rbind".into(), "ro".into()],
            }),
            _ => Some(store::Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                target: None,
                options: vec![format!(
                    "lowerdir={}",
                    lowers
                        .iter()
                        .map(|l| l.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(":")
                )],
            }),
        };
        if let Some(m) = mount {
            if let Err(e) = store::snapshot::mount_all(&[m], &dir) {
                let _ = self.drop_lease(&lease);
                return Err(wrap(format!("mounting a view of {}", state.id()))(e));
            }
            // Unmount before removing the directory.
            self.update_lease(&mut lease, |l| l.mount = Some(dir.clone()));
        } else {
            // An empty root: keep it read-only for the builder's purposes.
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o555));
        }
        Ok((lease, dir))
    }
}

impl BuildBackend for StoreBuildBackend {
    fn use_predicted_layers(&mut self, layers: &[store::layer::PredictedTar]) {
        self.predicted = layers.to_vec();
    }

    fn resolve_base(
        &mut self,
        image_ref: &str,
        platform: Option<&str>,
        pull: bool,
        out: &mut dyn Write,
    ) -> Result<BaseImage, BackendError> {
        let lookup = |s: &Store| s.images().lookup(image_ref);
        let mut found = if pull { None } else { lookup(&self.store).ok() };
        if found.is_none() {
            match &self.pull {
                Some(p) => {
                    p(image_ref, out).map_err(|msg| {
                        BackendError::with_source(
                            ErrorKind::NotFound,
                            format!("pulling {image_ref}"),
                            io::Error::other(msg),
                        )
                    })?;
                    found = Some(lookup(&self.store).map_err(wrap(format!(
                        "image {image_ref} not found after pulling it"
                    )))?);
                }
                None => {
                    found = Some(lookup(&self.store).map_err(|e| {
                        let kind = e.kind();
                        BackendError::with_source(
                            kind,
                            format!(
                                "image {image_ref} not found locally (and this build cannot pull)"
                            ),
                            e,
                        )
                    })?);
                }
            }
        }
        let rec =
            found.ok_or_else(|| be(ErrorKind::NotFound, format!("image {image_ref} not found")))?;
        if let Some(p) = platform {
            let mut parts = p.split('/');
            let (os, arch) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if (!os.is_empty() && os != rec.os) || (!arch.is_empty() && arch != rec.architecture) {
                return Err(be(
                    ErrorKind::NotFound,
                    format!(
                        "image {image_ref} is for {}/{}, not {p}",
                        rec.os, rec.architecture
                    ),
                ));
            }
        }
        let bytes = self
            .store
            .images()
            .read_config_bytes(&rec.id)
            .map_err(wrap(format!("reading the config of {image_ref}")))?;
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            BackendError::with_source(
                ErrorKind::InvalidArgument,
                format!("parsing the config of {image_ref}"),
                e,
            )
        })?;
        // History entries may lack `created_by` (imported images): default it.
        if let Some(h) = v.get_mut("history").and_then(|h| h.as_array_mut()) {
            for e in h.iter_mut().filter_map(|e| e.as_object_mut()) {
                e.entry("created_by")
                    .or_insert_with(|| serde_json::Value::String(String::new()));
            }
        }
        let state = ImageState::from_image_json(&v).map_err(|e| {
            BackendError::with_source(
                ErrorKind::InvalidArgument,
                format!("reading the config of {image_ref}"),
                e,
            )
        })?;
        for (i, d) in rec.diff_ids.iter().enumerate() {
            if let Some(l) = rec.layers.get(i) {
                self.descs.insert(d.to_string(), l.clone());
            }
        }
        Ok(BaseImage {
            id: rec.id.to_string(),
            state,
        })
    }

    fn run(
        &mut self,
        parent: &ImageState,
        spec: &RunSpec,
        out: &mut dyn Write,
    ) -> Result<RunResult, BackendError> {
        if spec.container_id.is_empty()
            || spec.container_id.len() > 64
            || !spec.container_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(be(
                ErrorKind::InvalidArgument,
                format!("invalid build container id {:?}", spec.container_id),
            ));
        }
        let (mut lease, rootfs, top) = self.open_rw(parent, &spec.container_id)?;
        let res = self.run_inner(spec, out, &mut lease, &rootfs, top.as_ref());
        let cleaned = self.drop_lease(&lease);
        let r = res?;
        cleaned?;
        Ok(r)
    }

    fn add_files(
        &mut self,
        parent: &ImageState,
        items: &[CopyItem],
    ) -> Result<Option<String>, BackendError> {
        if items.is_empty() {
            return Ok(None);
        }
        let name = format!("copy-{}", unique());
        let (lease, rootfs, top) = self.open_rw(parent, &name)?;
        let res = self.add_inner(items, &lease, &rootfs, top.as_ref());
        let cleaned = self.drop_lease(&lease);
        let r = res?;
        cleaned?;
        Ok(r)
    }

    fn is_dir(&mut self, state: &ImageState, path: &str) -> Result<bool, BackendError> {
        let (lease, root) = self.open_ro(state)?;
        let r = resolve(&root, path, Scope::Rootfs)
            .map(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
            .map_err(|e| {
                BackendError::with_source(
                    ErrorKind::InvalidArgument,
                    format!("resolving {path} in the image"),
                    e,
                )
            });
        let cleaned = self.drop_lease(&lease);
        let r = r?;
        cleaned?;
        Ok(r)
    }

    fn mount_rootfs(&mut self, state: &ImageState) -> Result<PathBuf, BackendError> {
        Ok(self.open_ro(state)?.1)
    }

    fn unmount_rootfs(&mut self, path: &Path) -> Result<(), BackendError> {
        let lease = self
            .leases
            .iter()
            .find(|l| l.dir.as_deref() == Some(path) && l.snapshot.is_none())
            .cloned()
            .ok_or_else(|| {
                be(
                    ErrorKind::NotFound,
                    format!("{} is not a mounted build filesystem", path.display()),
                )
            })?;
        self.drop_lease(&lease)
    }

    fn fetch_url(&mut self, url: &str, dest: &Path) -> Result<(), BackendError> {
        download(url, dest, MAX_DOWNLOAD)
    }

    fn commit(&mut self, state: &ImageState) -> Result<String, BackendError> {
        let sid = state.id();
        let memo = self
            .cache_root()
            .join("images")
            .join(sid.trim_start_matches("sha256:"));
        if let Some(id) = read_small(&memo, 256)
            .ok()
            .and_then(|b| Digest::parse(String::from_utf8_lossy(&b).trim()).ok())
        {
            if self.store.images().get(&id).is_ok() {
                return Ok(id.to_string());
            }
        }
        let mut st = state.clone();
        let host = self.store.images().platform().clone();
        if st.os.is_empty() {
            st.os = host.os.clone();
        }
        if st.architecture.is_empty() {
            st.architecture = host.architecture.clone();
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let json = st.to_image_json(&now);
        let bytes = serde_json::to_vec(&json)
            .map_err(|e| ioerr("encoding the image config")(io::Error::other(e)))?;
        let config =
            store::ImageConfig::parse(&bytes).map_err(wrap("encoding the image config"))?;
        let mut layers = Vec::new();
        for l in &state.layers {
            let d = self.layer_desc(l).ok_or_else(|| {
                be(
                    ErrorKind::NotFound,
                    format!("layer {l} is not in the store"),
                )
            })?;
            layers.push(d);
        }
        // Snapshots are needed to register (the store validates by unpacking).
        self.ensure_chain(&state.layers)?;
        let rec = self
            .store
            .register_image(&config, layers)
            .map_err(wrap("registering the built image"))?;
        if let Err(e) = write_atomic(&memo, rec.id.to_string().as_bytes()) {
            tracing::warn!(error = %e, "cannot remember a built image");
        }
        Ok(rec.id.to_string())
    }

    fn tag(&mut self, image_id: &str, reference: &str) -> Result<(), BackendError> {
        let id = Digest::parse(image_id).map_err(wrap(format!("invalid image id {image_id}")))?;
        let r = Reference::parse(reference).map_err(wrap(format!("invalid tag {reference:?}")))?;
        self.store
            .images()
            .tag(&id, &r)
            .map_err(wrap(format!("tagging {} as {reference}", id.short())))?;
        Ok(())
    }

    fn cache_get(&mut self, key: &CacheKey) -> Option<ImageState> {
        if !safe_key(&key.0) {
            return None;
        }
        let p = self.cache_root().join(format!("{}.json", key.0));
        let st: ImageState = serde_json::from_slice(&read_small(&p, 16 << 20).ok()?).ok()?;
        for l in &st.layers {
            self.layer_desc(l)?;
        }
        Some(st)
    }

    fn cache_put(&mut self, key: &CacheKey, state: &ImageState) {
        if !safe_key(&key.0) {
            return;
        }
        for l in &state.layers {
            if let Some(d) = self.layer_desc(l) {
                self.remember_layer(l, &d);
            }
        }
        let p = self.cache_root().join(format!("{}.json", key.0));
        match serde_json::to_vec(state) {
            Ok(b) => {
                if let Err(e) = write_atomic(&p, &b) {
                    tracing::warn!(path = %p.display(), error = %e, "cannot write a build cache entry");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode a build cache entry"),
        }
    }

    fn finish(&mut self, succeeded: bool) {
        let _ = succeeded;
        for l in std::mem::take(&mut self.leases).iter().rev() {
            let _ = self.release(l);
        }
        if let Some(d) = self.build_dir.take() {
            if let Err(e) = fs::remove_dir_all(&d) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %d.display(), error = %e, "cannot remove the build directory");
                }
            }
        }
    }
}

impl Drop for StoreBuildBackend {
    fn drop(&mut self) {
        self.finish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_the_image() {
        let d = std::env::temp_dir().join(format!("berth-bb-users-{}", unique()));
        fs::create_dir_all(d.join("etc")).unwrap();
        fs::write(
            d.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            d.join("etc/group"),
            "root:x:0:\napp:x:1001:\nextra:x:2000:app,x\n",
        )
        .unwrap();
        let root = resolve_user(&d, "").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let app = resolve_user(&d, "app").unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1001));
        assert_eq!(app.additional_gids, vec![2000]);
        assert_eq!(app.home, "/home/app");
        let num = resolve_user(&d, "1000:extra").unwrap();
        assert_eq!((num.uid, num.gid), (1000, 2000));
        assert!(num.additional_gids.is_empty());
        let unknown = resolve_user(&d, "5:5").unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (5, 5, "/")
        );
        assert_eq!(
            resolve_user(&d, "nobody").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            resolve_user(&d, "app:nogroup").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn mkdir_in_root_follows_links_inside_the_root() {
        let d = std::env::temp_dir().join(format!("berth-bb-mkdir-{}", unique()));
        fs::create_dir_all(d.join("real")).unwrap();
        symlink("/real", d.join("link")).unwrap();
        symlink("/../../..", d.join("escape")).unwrap();
        let p = mkdir_in_root(&d, "/link/a/b").unwrap();
        assert_eq!(p, d.join("real/a/b"));
        assert!(d.join("real/a/b").is_dir());
        let m = fs::metadata(d.join("real/a")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755);
        // An absolute link that climbs out stays inside the root.
        let q = mkdir_in_root(&d, "/escape/x").unwrap();
        assert_eq!(q, d.join("x"));
        fs::write(d.join("file"), "").unwrap();
        assert!(mkdir_in_root(&d, "/file/sub").is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn network_modes() {
        for m in ["", "default", "bridge"] {
            assert_eq!(DefaultNetwork::from_mode(m), DefaultNetwork::Bridge);
        }
        assert_eq!(DefaultNetwork::from_mode("host"), DefaultNetwork::Host);
        assert_eq!(DefaultNetwork::from_mode("none"), DefaultNetwork::None);
        let named = DefaultNetwork::from_mode("mynet");
        assert_eq!(named, DefaultNetwork::Named("mynet".into()));
        assert_eq!(named.bridge_network(), Some("mynet"));
        assert_eq!(DefaultNetwork::Bridge.bridge_network(), Some("bridge"));
        assert_eq!(DefaultNetwork::Host.bridge_network(), None);
        assert_eq!(DefaultNetwork::None.bridge_network(), None);
    }

    #[test]
    fn downloads_refuse_other_schemes_and_bad_urls() {
        let d = std::env::temp_dir().join(format!("berth-bb-dl-{}", unique()));
        let e = download("ftp://example.invalid/x", &d, 10).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        let e = download("http://[::1", &d, 10).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(!d.exists());
    }

    #[test]
    fn cache_keys_must_be_hex() {
        assert!(safe_key("0123abcdef"));
        assert!(!safe_key("../x"));
        assert!(!safe_key(""));
    }
}
