//! The [`Engine`]: container lifecycle over monitors, plus the services it owns.

use crate::containers::{self, ContainerRecord, Index, Paths, RunState, Status};
use crate::error::{EngineError, Result};
use crate::events::Events;
use crate::fsutil::write_atomic;
use crate::images::{Images, ResolvedImage};
use crate::monitor::{
    ExitRecord, MonitorConfig, StatusLine, ABORT_START, ATTACH_STREAMS, ATTACH_WATCH, GO,
};
use crate::spec;
use api::{
    ContainerCreateBody, ContainerInspect, ContainerState, ContainerSummary, MountPoint, StringMap,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

/// Where the engine keeps its state and which binaries it runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Persistent state (`/var/lib/berth`).
    pub root: PathBuf,
    /// Runtime state and sockets (`/run/berth`).
    pub run_root: PathBuf,
    /// The OCI runtime binary (runc-compatible command line).
    pub runtime: PathBuf,
    /// The `berth-monitor` binary.
    pub monitor: PathBuf,
    /// The init binary (a static one, such as tini) bind-mounted at `/sbin/docker-init`
    /// for `--init` when the runtime is not berth's, which has an init of its own.
    pub init_path: Option<PathBuf>,
    /// Networking settings (default bridge device, subnet, firewall chain prefix).
    pub net: net::ManagerOptions,
}

/// What waiters of a container observe.
#[derive(Debug, Clone, Default)]
struct WaitState {
    running: bool,
    exit_seq: u64,
    exit_code: i64,
    removed: bool,
}

/// A container known to the engine.
struct Entry {
    rec: ContainerRecord,
    watch: watch::Sender<WaitState>,
    /// Attach clients waiting for the next start.
    pending_attach: Vec<oneshot::Sender<UnixStream>>,
    /// A start, stop or removal is in progress.
    busy: bool,
    /// Held by the task that watches this container's monitor until the monitor process
    /// has exited: a monitor reports the exit before it removes the runtime's state, so a
    /// new start takes this first, lest `runtime create` find the old state.
    monitor: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct State {
    by_id: HashMap<String, Entry>,
    index: Index,
}

struct Inner {
    cfg: EngineConfig,
    images: Images,
    events: Events,
    state: Mutex<State>,
    execs: crate::exec::Execs,
    health: crate::health::HealthStates,
    net: crate::network::NetService,
    volumes: volume::VolumeStore,
    /// Starts the kernel's cgroup-attach grace period when a container's start is near
    /// (see `cgroups::AttachWarmer`); `None` on a host without cgroup mounts.
    warmer: Option<cgroups::AttachWarmer>,
}

/// The engine; cheap to clone (shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Which change a waiter waits for (`POST /containers/{id}/wait?condition=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    /// Until it is not running (returns at once when it is not).
    NotRunning,
    /// Until its next exit.
    NextExit,
    /// Until it is removed.
    Removed,
}

impl WaitCondition {
    /// Parses Docker's condition names (empty: `not-running`).
    pub fn parse(s: &str) -> Result<WaitCondition> {
        match s {
            "" | "not-running" => Ok(WaitCondition::NotRunning),
            "next-exit" => Ok(WaitCondition::NextExit),
            "removed" => Ok(WaitCondition::Removed),
            _ => Err(EngineError::Invalid(format!("invalid condition: {s:?}"))),
        }
    }
}

/// Options of [`Engine::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Include stopped containers.
    pub all: bool,
    /// At most this many (newest first); 0: no limit.
    pub limit: usize,
    /// Docker filters: `status`, `name`, `id`, `label`, `ancestor`, `exited`.
    pub filters: HashMap<String, Vec<String>>,
}

/// An attach connection to a container's monitor: output frames in, stdin out.
pub enum AttachStream {
    /// The container runs: connected now.
    Connected(UnixStream),
    /// The container is not running: connected when it next starts.
    Pending(oneshot::Receiver<UnixStream>),
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Engine {
    /// Opens the engine on `cfg.root`: loads every container, discards half-created or
    /// half-removed ones, and re-adopts running containers whose monitors still run
    /// (applying the exit of those whose monitors ended meanwhile).
    pub async fn open(cfg: EngineConfig) -> Result<Engine> {
        for d in [cfg.root.join("containers"), cfg.run_root.join("c")] {
            std::fs::create_dir_all(&d).map_err(|e| EngineError::io("create directory", &d, e))?;
        }
        let images = Images::open(&cfg.root)?;
        let (net, volumes) = crate::network::open_services(&cfg).await?;
        let engine = Engine {
            inner: Arc::new(Inner {
                net,
                volumes,
                images,
                events: Events::new(),
                state: Mutex::new(State::default()),
                execs: crate::exec::Execs::default(),
                health: Default::default(),
                // BERTH_CGROUP_WARMUP=0 turns it off (to measure what it saves).
                warmer: (std::env::var_os("BERTH_CGROUP_WARMUP").as_deref()
                    != Some(std::ffi::OsStr::new("0")))
                .then(|| {
                    cgroups::AttachWarmer::start()
                        .map_err(|e| tracing::debug!(error = %e, "no cgroup attach warm-up"))
                        .ok()
                })
                .flatten(),
                cfg,
            }),
        };
        engine.load()?;
        engine.restore_netvol();
        engine.spawn_health_checker();
        Ok(engine)
    }

    /// Releases what the engine holds only while it runs (the spare network
    /// namespaces); containers keep running. Called when the daemon stops.
    pub fn shutdown(&self) {
        self.inner.net.shutdown();
    }

    /// The network service.
    pub fn networks(&self) -> &crate::network::NetService {
        &self.inner.net
    }

    /// The volume store.
    pub fn volumes(&self) -> &volume::VolumeStore {
        &self.inner.volumes
    }

    /// Ids, host configs and running state of all containers (for networks/volumes).
    pub(crate) fn container_hcs(&self) -> Vec<(String, api::HostConfig, bool)> {
        self.lock()
            .by_id
            .values()
            .map(|e| {
                (
                    e.rec.id.clone(),
                    e.rec.host_config.clone(),
                    e.rec.state.status.is_running() || e.rec.state.status == Status::Restarting,
                )
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.inner.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// The event bus.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The image service.
    pub fn images(&self) -> &Images {
        &self.inner.images
    }

    pub(crate) fn execs(&self) -> &crate::exec::Execs {
        &self.inner.execs
    }

    pub(crate) fn health_states(&self) -> &crate::health::HealthStates {
        &self.inner.health
    }

    /// Ids and `StartedAt` of the running containers that have a healthcheck.
    pub(crate) fn health_candidates(&self) -> Vec<(String, String)> {
        self.lock()
            .by_id
            .values()
            .filter(|e| e.rec.state.status.is_running() && e.rec.config.healthcheck.is_some())
            .map(|e| (e.rec.id.clone(), e.rec.state.started_at.clone()))
            .collect()
    }

    fn paths(&self, id: &str) -> Paths {
        Paths::new(&self.inner.cfg.root, &self.inner.cfg.run_root, id)
    }

    fn load(&self) -> Result<()> {
        // What a killed daemon left half done in the snapshotter's tmp/ (the detached
        // rootfs of a removal, a half-made snapshot): nothing else uses this root now.
        self.inner.images.clean_snapshot_leftovers();
        let dir = self.inner.cfg.root.join("containers");
        let rd = std::fs::read_dir(&dir).map_err(|e| EngineError::io("read directory", &dir, e))?;
        let mut adopt = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().to_string();
            if let Some(id) = name
                .strip_prefix(".creating-")
                .or_else(|| name.strip_prefix(".removing-"))
            {
                let _ = self.inner.images.remove_rootfs(id);
                let _ = std::fs::remove_dir_all(ent.path());
                let _ = std::fs::remove_dir_all(self.paths(id).bundle);
                continue;
            }
            let p = ent.path().join("config.v2.json");
            let Ok(data) = std::fs::read(&p) else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<ContainerRecord>(&data) else {
                tracing::warn!("skipping unreadable container record {}", p.display());
                continue;
            };
            let was_running =
                rec.state.status.is_running() || rec.state.status == Status::Restarting;
            let id = rec.id.clone();
            self.insert(rec);
            if was_running {
                adopt.push(id);
            }
        }
        for id in adopt {
            self.adopt(&id);
        }
        Ok(())
    }

    fn insert(&self, rec: ContainerRecord) {
        let ws = WaitState {
            running: rec.state.status.is_running(),
            exit_seq: rec.state.exit_seq,
            exit_code: rec.state.exit_code,
            removed: false,
        };
        let (tx, _) = watch::channel(ws);
        let mut st = self.lock();
        st.index.insert(&rec.id, &rec.name);
        st.by_id.insert(
            rec.id.clone(),
            Entry {
                rec,
                watch: tx,
                pending_attach: Vec::new(),
                busy: false,
                monitor: Arc::default(),
            },
        );
    }

    /// Re-attaches to the monitor of a container found running at startup.
    fn adopt(&self, id: &str) {
        let sock = self.paths(id).attach_socket();
        let engine = self.clone();
        let id = id.to_string();
        match std::os::unix::net::UnixStream::connect(&sock) {
            Ok(s) => {
                tokio::spawn(async move {
                    if let Ok(s) = s.set_nonblocking(true).map(|_| s) {
                        if let Ok(mut s) = UnixStream::from_std(s) {
                            let _ = s.write_all(&[ATTACH_WATCH]).await;
                            let mut buf = [0u8; 64];
                            while let Ok(n) = s.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        }
                    }
                    engine.on_exit(&id).await;
                });
            }
            Err(_) => {
                // The monitor is gone: apply its exit record (or a lost run).
                tokio::spawn(async move { engine.on_exit(&id).await });
            }
        }
    }

    fn persist(&self, rec: &ContainerRecord, durable: bool) -> Result<()> {
        let p = self.paths(&rec.id).config();
        let data = serde_json::to_vec(rec)
            .map_err(|e| EngineError::Runtime(format!("serialize container record: {e}")))?;
        write_atomic(&p, &data, durable)
    }

    /// Resolves a container reference to its id.
    pub fn resolve(&self, name: &str) -> Result<String> {
        self.lock().index.resolve(name)
    }

    /// A copy of a container's record.
    pub fn record(&self, name: &str) -> Result<ContainerRecord> {
        let st = self.lock();
        let id = st.index.resolve(name)?;
        st.by_id
            .get(&id)
            .map(|e| e.rec.clone())
            .ok_or(EngineError::NoSuchContainer(name.to_string()))
    }

    fn publish(&self, action: &str, rec: &ContainerRecord, extra: &[(&str, String)]) {
        if self.inner.events.listeners() == 0 {
            return;
        }
        let mut attrs: StringMap = rec.config.labels.clone();
        attrs.insert("name".into(), rec.name.clone());
        attrs.insert("image".into(), rec.image.clone());
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.inner
            .events
            .publish("container", action, &rec.id, attrs);
    }

    /// Creates a container (`POST /containers/create`). Returns its id and warnings.
    pub async fn create(
        &self,
        name: Option<&str>,
        body: ContainerCreateBody,
    ) -> Result<(String, Vec<String>)> {
        let mut t = crate::timing::Phases::new("create");
        // A start usually follows a create within milliseconds (`run`).
        self.warm_cgroup_attach();
        let warnings = Vec::new();
        let ContainerCreateBody {
            config: mut cfg,
            host_config: mut hc,
            networking_config,
        } = body;
        if cfg.image.is_empty() {
            return Err(EngineError::Invalid(
                "config.Image must not be empty".into(),
            ));
        }
        validate_host_config(&hc)?;
        let image: ResolvedImage = self.inner.images.resolve(&cfg.image)?;
        merge_image_config(&mut cfg, &image.config);
        self.inner.net.validate(&hc, cfg.exposed_ports.as_ref())?;
        crate::volumes::validate(&hc)?;
        if hc.network_mode.is_empty() {
            hc.network_mode = "default".to_string();
        }
        if hc.log_config.kind.is_empty() {
            hc.log_config.kind = "json-file".to_string();
        }
        let mut args: Vec<String> = cfg.entrypoint.clone().unwrap_or_default();
        args.extend(cfg.cmd.clone().unwrap_or_default());
        if args.is_empty() {
            return Err(EngineError::Invalid("no command specified".into()));
        }
        let id = containers::new_id();
        let name = {
            let mut st = self.lock();
            let name = match name {
                Some(n) if !n.is_empty() => containers::validate_name(n)?,
                _ => (0..)
                    .map(containers::random_name)
                    .find(|n| st.index.by_name(n).is_none())
                    .unwrap_or_else(|| id[..12].to_string()),
            };
            if let Some(other) = st.index.by_name(&name) {
                return Err(EngineError::NameInUse {
                    name,
                    id: other.clone(),
                });
            }
            // Reserve the name while the container is being made.
            st.index.rename(&id, "", &name);
            name
        };
        t.lap("validate");
        let path = args.remove(0);
        let rec = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            created: now(),
            image: cfg.image.clone(),
            image_id: image.id.clone(),
            config: cfg,
            host_config: hc,
            path,
            args,
            state: RunState::default(),
        };
        let result = self.create_files(rec, &networking_config);
        t.lap("files");
        match result {
            Ok(rec) => {
                self.publish("create", &rec, &[]);
                let cgroups_path = crate::spec::cgroups_path(&rec.host_config, &rec.id);
                self.insert(rec);
                self.precreate_cgroup(&id, cgroups_path);
                Ok((id, warnings))
            }
            Err(e) => {
                self.lock().index.remove(&id, &name);
                Err(e)
            }
        }
    }

    /// Makes the cgroup of a new container in the background (making one is ~0.8 ms of
    /// `mkdir`s in a v1 hierarchy per controller, on the start path otherwise): a start
    /// usually follows a create within milliseconds, and the runtime then finds it
    /// there (creating a cgroup is idempotent). Holds the container's monitor slot
    /// meanwhile, so a start waits for it and a removal's clean-up (which takes the slot
    /// too) comes after it. Failures are left to the runtime to report.
    fn precreate_cgroup(&self, id: &str, cgroups_path: String) {
        let slot = {
            let st = self.lock();
            st.by_id
                .get(id)
                .and_then(|e| e.monitor.clone().try_lock_owned().ok())
        };
        let Some(slot) = slot else { return };
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            if let Ok(cg) = cgroups::Cgroup::new(Some(&cgroups_path), &id, false) {
                let _ = cg.create();
            }
            drop(slot);
        });
    }

    fn create_files(
        &self,
        rec: ContainerRecord,
        networking: &api::NetworkingConfig,
    ) -> Result<ContainerRecord> {
        let id = rec.id.as_str();
        let paths = self.paths(id);
        let cdir = self.inner.cfg.root.join("containers");
        let tmp = cdir.join(format!(".creating-{id}"));
        std::fs::create_dir_all(&tmp).map_err(|e| EngineError::io("create directory", &tmp, e))?;
        let res = (|| {
            let data = serde_json::to_vec(&rec)
                .map_err(|e| EngineError::Runtime(format!("serialize container record: {e}")))?;
            write_atomic(&tmp.join("config.v2.json"), &data, false)?;
            crate::network::write_networking(&tmp, networking, false)?;
            self.inner.images.prepare_rootfs(id, &rec.image_id)?;
            std::fs::rename(&tmp, &paths.dir).map_err(|e| EngineError::io("rename", &paths.dir, e))
        })();
        if let Err(e) = res {
            let _ = self.inner.images.remove_rootfs(id);
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // The record is whole and in place (rename is atomic, and the page cache outlives
        // a killed daemon); making it survive a host crash too is done off the request
        // path, so a create does not wait for the disk.
        let dir = paths.dir.clone();
        tokio::task::spawn_blocking(move || {
            for f in ["config.v2.json", crate::network::NETWORKING_FILE] {
                let _ = std::fs::File::open(dir.join(f)).and_then(|f| f.sync_all());
            }
            let _ = crate::fsutil::sync_dir(&dir);
            let _ = crate::fsutil::sync_dir(&cdir);
        });
        Ok(rec)
    }

    /// Starts a container (`POST /containers/{id}/start`). Starting a running container
    /// is [`EngineError::AlreadyInState`].
    pub fn start<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.start_inner(name))
    }

    /// Starts the cgroup-attach grace period in the background (see
    /// `cgroups::AttachWarmer`): called when a container or exec is about to join its
    /// cgroups.
    pub(crate) fn warm_cgroup_attach(&self) {
        if let Some(w) = &self.inner.warmer {
            w.kick();
        }
    }

    async fn start_inner(&self, name: &str) -> Result<()> {
        self.warm_cgroup_attach();
        let (rec, attachers, monitor) = {
            let mut st = self.lock();
            let id = st.index.resolve(name)?;
            let e = st
                .by_id
                .get_mut(&id)
                .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
            match e.rec.state.status {
                Status::Running => {
                    return Err(EngineError::AlreadyInState(
                        "container already started".into(),
                    ))
                }
                Status::Paused => {
                    return Err(EngineError::Conflict(
                        "cannot start a paused container, try unpause instead".into(),
                    ))
                }
                Status::Removing | Status::Dead => {
                    return Err(EngineError::Conflict(format!(
                        "container {} is marked for removal and cannot be started",
                        e.rec.id
                    )))
                }
                _ => {}
            }
            if e.busy {
                return Err(EngineError::Conflict(format!(
                    "container {} is being started or stopped",
                    e.rec.id
                )));
            }
            e.busy = true;
            e.rec.state.manually_stopped = false;
            (
                e.rec.clone(),
                std::mem::take(&mut e.pending_attach),
                e.monitor.clone(),
            )
        };
        // The previous run's monitor may still be removing the runtime's state.
        let slot = monitor.lock_owned().await;
        let res = self.run_monitor(&rec, attachers, slot).await;
        // `gate` holds back the exit of a container that ends at once until its start is
        // recorded (else the exit could be applied first and the start overwrite it).
        let (res, gate) = match res {
            Ok((pid, monitor_pid, gate)) => (Ok((pid, monitor_pid)), Some(gate)),
            Err(e) => (Err(e), None),
        };
        let done = self.finish_start(&rec, res);
        drop(gate);
        match done {
            Ok(()) => Ok(()),
            Err((err, auto_remove)) => {
                if auto_remove {
                    let _ = self.remove(&rec.id, true, false).await;
                }
                Err(err)
            }
        }
    }

    fn finish_start(
        &self,
        rec: &ContainerRecord,
        res: Result<(i32, i32)>,
    ) -> std::result::Result<(), (EngineError, bool)> {
        let mut st = self.lock();
        let Some(e) = st.by_id.get_mut(&rec.id) else {
            return res.map(|_| ()).map_err(|e| (e, false));
        };
        e.busy = false;
        match res {
            Ok((pid, monitor_pid)) => {
                let s = &mut e.rec.state;
                s.status = Status::Running;
                s.pid = pid;
                s.monitor_pid = monitor_pid;
                s.started_at = now();
                s.error.clear();
                s.has_been_started = true;
                s.oom_killed = false;
                let rec = e.rec.clone();
                e.watch.send_modify(|w| w.running = true);
                drop(st);
                if let Err(err) = self.persist(&rec, false) {
                    // The container runs: a record that could not be rewritten is not a
                    // failed start.
                    tracing::warn!("record the start of container {}: {err}", rec.id);
                }
                self.publish("start", &rec, &[]);
                Ok(())
            }
            Err(err) => {
                e.rec.state.error = err.to_string();
                if e.rec.state.status != Status::Restarting {
                    e.rec.state.exit_code = 128;
                }
                let rec = e.rec.clone();
                drop(st);
                let _ = self.persist(&rec, false);
                Err((err, rec.host_config.auto_remove))
            }
        }
    }

    /// Mounts the root filesystem, writes the spec and runs the monitor up to `Started`.
    /// Returns the init's and the monitor's pids, and a gate that holds back the exit's
    /// handling until it is dropped (once the start is recorded).
    async fn run_monitor(
        &self,
        rec: &ContainerRecord,
        attachers: Vec<oneshot::Sender<UnixStream>>,
        slot: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<(i32, i32, oneshot::Sender<()>)> {
        let mut t = crate::timing::Phases::new("start");
        let id = &rec.id;
        let paths = self.paths(id);
        let rootfs = paths.rootfs();
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| EngineError::io("create directory", &rootfs, e))?;
        if !self.inner.images.image_exists(&rec.image_id) {
            // Keep working if the layers are still there, as Docker does; only a missing
            // snapshot is an error.
            tracing::debug!("image {} of container {id} no longer tagged", rec.image_id);
        }
        let mut mounts = self.inner.images.rootfs_mounts(id)?;
        volatile_overlay(&mut mounts, rec.host_config.auto_remove);
        // The monitor is exec'd first and waits for its configuration on stdin, so that
        // its exec and start-up (~1.3 ms) overlap the rest of the preparation. Dropped on
        // a failure, it reads EOF and exits.
        let monitor = Some(self.spawn_monitor()?);
        // The overlay is mounted on a blocking thread while this one makes the network
        // namespace, the files and the spec (two kernel jobs of ~0.7 ms each, on two
        // cores); the monitor is spawned once it is in place.
        let target = rootfs.clone();
        let mounting = Some(tokio::task::spawn_blocking(move || {
            mount_rootfs(&target, &mounts)
        }));
        let mut early = Early { monitor, mounting };
        t.lap("mount");
        let started = self
            .start_mounted(rec, &paths, attachers, slot, &mut early, &mut t)
            .await;
        if started.is_err() {
            // Not unmounted before the mount is done, or it would stay behind.
            if let Some(m) = early.mounting.take() {
                let _ = m.await;
            }
            self.inner.net.detach(id);
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        started
    }

    async fn start_mounted(
        &self,
        rec: &ContainerRecord,
        paths: &Paths,
        attachers: Vec<oneshot::Sender<UnixStream>>,
        slot: tokio::sync::OwnedMutexGuard<()>,
        early: &mut Early,
        t: &mut crate::timing::Phases,
    ) -> Result<(i32, i32, oneshot::Sender<()>)> {
        let id = &rec.id;
        let hc = &rec.host_config;
        let host_net = hc.network_mode == "host";
        let hostname = if host_net {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().to_string())
                .unwrap_or_default()
        } else if rec.config.hostname.is_empty() {
            id[..12].to_string()
        } else {
            rec.config.hostname.clone()
        };
        let mut etc = Vec::new();
        let hostname_file = paths.dir.join("hostname");
        write_atomic(&hostname_file, format!("{hostname}\n").as_bytes(), false)?;
        let hosts_file = paths.dir.join("hosts");
        let mut hosts = if host_net {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
        };
        for h in &hc.extra_hosts {
            if let Some((n, ip)) = h.split_once(':') {
                hosts.push_str(&format!("{ip}\t{n}\n"));
            }
        }
        write_atomic(&hosts_file, hosts.as_bytes(), false)?;
        let resolv_file = paths.dir.join("resolv.conf");
        let mut resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        if !hc.dns.is_empty() {
            resolv = hc.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        }
        if !hc.dns_search.is_empty() {
            resolv.push_str(&format!("search {}\n", hc.dns_search.join(" ")));
        }
        if !hc.dns_options.is_empty() {
            resolv.push_str(&format!("options {}\n", hc.dns_options.join(" ")));
        }
        t.lap("etc");
        // The namespace first; its endpoints are plumbed while the runtime creates the
        // container in it (the program starts only once both are done).
        let ns = self.net_attach_netns(rec)?;
        t.lap("netns");
        write_atomic(&resolv_file, resolv.as_bytes(), false)?;
        for (dst, f) in [
            ("/etc/hostname", &hostname_file),
            ("/etc/hosts", &hosts_file),
            ("/etc/resolv.conf", &resolv_file),
        ] {
            etc.push((dst.to_string(), f.display().to_string()));
        }
        let mut plumbing = ns.network.is_some().then(|| {
            let engine = self.clone();
            let rec = rec.clone();
            let (cdir, hostname) = (paths.dir.clone(), hostname.clone());
            tokio::task::spawn_blocking(move || {
                engine.networks().connect_endpoints(&rec, &cdir, &hostname)
            })
        });
        let started = self
            .start_monitor(
                rec,
                paths,
                ns.netns,
                hostname,
                etc,
                attachers,
                &mut plumbing,
                slot,
                early,
                t,
            )
            .await;
        // A failed start must not race the plumbing: the caller detaches the network.
        if let Some(p) = plumbing {
            let _ = p.await;
        }
        started
    }

    /// Execs a container monitor that waits for its [`MonitorConfig`] as the first line
    /// of its stdin (the `-` argument); its stdout is the status pipe.
    fn spawn_monitor(&self) -> Result<tokio::process::Child> {
        tokio::process::Command::new(&self.inner.cfg.monitor)
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                EngineError::Runtime(format!(
                    "spawn monitor {}: {e}",
                    self.inner.cfg.monitor.display()
                ))
            })
    }

    /// The rest of [`Self::start_mounted`]: the spec, the monitor, and the container's
    /// create and start through it. With `plumbing` (the endpoints being connected), the
    /// monitor waits after create until they are, and the hosts and resolv.conf files
    /// get their final content in place (they are bind-mounted by then).
    #[allow(clippy::too_many_arguments)]
    async fn start_monitor(
        &self,
        rec: &ContainerRecord,
        paths: &Paths,
        netns: Option<String>,
        hostname: String,
        etc: Vec<(String, String)>,
        mut attachers: Vec<oneshot::Sender<UnixStream>>,
        plumbing: &mut Option<tokio::task::JoinHandle<Result<crate::network::Attached>>>,
        slot: tokio::sync::OwnedMutexGuard<()>,
        early: &mut Early,
        t: &mut crate::timing::Phases,
    ) -> Result<(i32, i32, oneshot::Sender<()>)> {
        let id = &rec.id;
        let hc = &rec.host_config;
        let mut cfg = rec.config.clone();
        cfg.hostname = hostname;
        let mut args = vec![rec.path.clone()];
        args.extend(rec.args.iter().cloned());
        let user_mounts = self.user_mounts(rec)?;
        t.lap("volumes");
        let spec = spec::build(
            &cfg,
            hc,
            spec::SpecInputs {
                id,
                rootfs: &paths.rootfs(),
                args,
                etc_files: etc,
                netns,
                mounts: user_mounts,
                init: self.init_binary(hc)?,
            },
        )?;
        t.lap("spec");
        let spec_path = paths.bundle.join("config.json");
        write_atomic(
            &spec_path,
            &serde_json::to_vec(&spec)
                .map_err(|e| EngineError::Runtime(format!("serialize spec: {e}")))?,
            false,
        )?;
        let _ = std::fs::remove_file(paths.exit_file());
        let (max_size, max_files) = log_limits(&hc.log_config.config);
        let cgroup_leaf = crate::spec::cgroups_path(hc, id);
        let mcfg = MonitorConfig {
            id: id.clone(),
            runtime: self.inner.cfg.runtime.clone(),
            runtime_root: self.inner.cfg.run_root.join("runtime"),
            builtin_runtime: self.builtin_runtime(),
            bundle: paths.bundle.clone(),
            log_path: (hc.log_config.kind != "none").then(|| paths.log(id)),
            log_max_size: max_size,
            log_max_files: max_files,
            exit_file: paths.exit_file(),
            attach_socket: paths.attach_socket(),
            tty: cfg.tty,
            open_stdin: cfg.open_stdin,
            stdin_once: cfg.stdin_once,
            wait_go: !attachers.is_empty() || plumbing.is_some(),
            unmount: Some(paths.rootfs()),
            oom_files: vec![
                PathBuf::from(format!(
                    "/sys/fs/cgroup/memory{cgroup_leaf}/memory.oom_control"
                )),
                PathBuf::from(format!("/sys/fs/cgroup{cgroup_leaf}/memory.events")),
            ],
        };
        let mcfg_wait_go = mcfg.wait_go;
        let arg = serde_json::to_string(&mcfg)
            .map_err(|e| EngineError::Runtime(format!("serialize monitor config: {e}")))?;
        if let Some(m) = early.mounting.take() {
            m.await
                .map_err(|e| EngineError::Runtime(format!("mount the root filesystem: {e}")))??;
        }
        t.lap("mount-wait");
        let Some(mut child) = early.monitor.take() else {
            return Err(EngineError::Runtime("no monitor for the start".into()));
        };
        let mut control = child.stdin.take();
        let sent = match control.as_mut() {
            Some(c) => c.write_all(format!("{arg}\n").as_bytes()).await,
            None => Err(std::io::Error::other("no control pipe")),
        };
        if let Err(e) = sent {
            let _ = child.wait().await;
            return Err(EngineError::Runtime(format!("configure the monitor: {e}")));
        }
        t.lap("configure");
        let monitor_pid = child.id().unwrap_or(0) as i32;
        let Some(stdout) = child.stdout.take() else {
            return Err(EngineError::Runtime("monitor has no status pipe".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let mut pid = 0;
        loop {
            let line = lines
                .next_line()
                .await
                .map_err(|e| EngineError::Runtime(format!("read monitor status: {e}")))?;
            let Some(line) = line else {
                let _ = child.wait().await;
                return Err(EngineError::Runtime(
                    "monitor exited before the container started".into(),
                ));
            };
            match serde_json::from_str::<StatusLine>(&line) {
                Ok(StatusLine::Created { pid: p }) => {
                    t.lap("runtime-create");
                    pid = p;
                    if let Some(p) = plumbing.take() {
                        let attached = match p.await {
                            Ok(r) => r,
                            Err(e) => Err(EngineError::Runtime(format!("network set-up: {e}"))),
                        };
                        if let Err(e) = attached.and_then(|a| self.final_etc(paths, &a)) {
                            // The monitor removes the created container and reports.
                            if let Some(c) = control.as_mut() {
                                let _ = c.write_all(&[ABORT_START]).await;
                            }
                            drop(control);
                            let _ = child.wait().await;
                            return Err(e);
                        }
                        t.lap("net");
                    }
                    if mcfg_wait_go {
                        for tx in std::mem::take(&mut attachers) {
                            if let Ok(s) = connect_streams(&paths.attach_socket()).await {
                                let _ = tx.send(s);
                            }
                        }
                        if let Some(c) = control.as_mut() {
                            let _ = c.write_all(&[GO]).await;
                        }
                    }
                }
                Ok(StatusLine::Started { pid: p }) => {
                    t.lap("runtime-start");
                    pid = if p > 0 { p } else { pid };
                    break;
                }
                Ok(StatusLine::Failed { message }) => {
                    let _ = child.wait().await;
                    // A failed network set-up is the cause, whatever the runtime then met.
                    if let Some(p) = plumbing.take() {
                        if let Ok(Err(e)) = p.await {
                            return Err(e);
                        }
                    }
                    return Err(EngineError::Runtime(message));
                }
                Ok(StatusLine::Exited) | Err(_) => continue,
            }
        }
        drop(control);
        let engine = self.clone();
        let cid = id.clone();
        let (gate, started) = oneshot::channel::<()>();
        tokio::spawn(async move {
            // The exit is applied on the monitor's `Exited` line, or when it is gone, once
            // the start is recorded (the gate is dropped).
            while let Ok(Some(line)) = lines.next_line().await {
                if matches!(serde_json::from_str(&line), Ok(StatusLine::Exited)) {
                    break;
                }
            }
            let _ = started.await;
            engine.on_exit(&cid).await;
            let _ = child.wait().await;
            drop(slot);
        });
        Ok((pid, monitor_pid, gate))
    }

    /// Whether the configured runtime is berth's own (which the monitor then calls
    /// in-process, and which runs `--init` containers under its built-in init).
    fn builtin_runtime(&self) -> bool {
        self.inner.cfg.runtime.file_name() == Some(std::ffi::OsStr::new("berth-runtime"))
    }

    /// The init binary to mount for `--init` (`HostConfig.Init`): none with berth's own
    /// runtime (its built-in init is asked for by annotation), else the configured one.
    fn init_binary(&self, hc: &api::HostConfig) -> Result<Option<PathBuf>> {
        if hc.init != Some(true) || self.builtin_runtime() {
            return Ok(None);
        }
        match &self.inner.cfg.init_path {
            Some(p) if p.is_file() => Ok(Some(p.clone())),
            Some(p) => Err(EngineError::Invalid(format!(
                "--init: the init binary {} does not exist",
                p.display()
            ))),
            None => Err(EngineError::Invalid(format!(
                "--init: no init binary for runtime {} (install docker-init or give berth daemon --init-path)",
                self.inner.cfg.runtime.display()
            ))),
        }
    }

    /// Gives the container's hosts and resolv.conf the network's content, in place: they
    /// are bind-mounted into the created container by now, which a rename would not reach.
    fn final_etc(&self, paths: &Paths, a: &crate::network::Attached) -> Result<()> {
        for (name, content) in [("hosts", &a.hosts), ("resolv.conf", &a.resolv)] {
            if let Some(c) = content {
                let p = paths.dir.join(name);
                std::fs::write(&p, c).map_err(|e| EngineError::io("write", &p, e))?;
            }
        }
        Ok(())
    }

    /// Bind mounts and tmpfs of `Binds` and `Mounts`, as OCI mount objects.
    fn user_mounts(&self, rec: &ContainerRecord) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for b in &rec.host_config.binds {
            let parts: Vec<&str> = b.split(':').collect();
            if parts.len() < 2 || parts.len() > 3 {
                return Err(EngineError::Invalid(format!(
                    "invalid volume specification: '{b}'"
                )));
            }
            let (src, dst) = (parts[0], parts[1]);
            if !src.starts_with('/') {
                // A named volume: mounted by `volumes::mount_volumes` below.
                continue;
            }
            let opts = parts.get(2).copied().unwrap_or("");
            let mut o = vec!["rbind".to_string()];
            let ro = opts.split(',').any(|x| x == "ro");
            o.push(if ro { "ro".into() } else { "rw".into() });
            o.push("rprivate".into());
            if !Path::new(src).exists() {
                std::fs::create_dir_all(src)
                    .map_err(|e| EngineError::io("create bind source", src, e))?;
            }
            out.push(serde_json::json!({"destination": dst, "type": "bind", "source": src, "options": o}));
        }
        for m in &rec.host_config.mounts {
            match m.kind.as_str() {
                "bind" => {
                    if !Path::new(&m.source).exists() {
                        return Err(EngineError::Invalid(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            m.source
                        )));
                    }
                    let o = crate::volumes::bind_options(m)?;
                    out.push(serde_json::json!({"destination": m.target, "type": "bind", "source": m.source, "options": o}));
                }
                "tmpfs" => {
                    let mut o = vec!["nosuid".to_string(), "nodev".to_string()];
                    if let Some(t) = &m.tmpfs_options {
                        if t.size_bytes > 0 {
                            o.push(format!("size={}", t.size_bytes));
                        }
                        if t.mode > 0 {
                            o.push(format!("mode={:o}", t.mode));
                        }
                    }
                    out.push(serde_json::json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": o}));
                }
                "volume" => {}
                other => {
                    return Err(EngineError::Invalid(format!(
                        "mount type {other:?} is not supported yet"
                    )))
                }
            }
        }
        let paths = self.paths(&rec.id);
        out.extend(crate::volumes::mount_volumes(
            &self.inner.volumes,
            rec,
            &paths.dir,
            &paths.rootfs(),
        )?);
        Ok(out)
    }

    /// Applies the end of a run: reads the exit record, updates the state, notifies
    /// waiters, then applies the restart policy or auto-removal.
    async fn on_exit(&self, id: &str) {
        let mut t = crate::timing::Phases::new("exit");
        let paths = self.paths(id);
        let rec_file = std::fs::read(paths.exit_file())
            .ok()
            .and_then(|d| serde_json::from_slice::<ExitRecord>(&d).ok());
        let (exit_code, oom, finished) = match &rec_file {
            Some(r) => (i64::from(r.exit_code), r.oom_killed, r.finished_at.clone()),
            None => {
                // The monitor died without recording: clean up after it.
                let _ = tokio::process::Command::new(&self.inner.cfg.runtime)
                    .arg("--root")
                    .arg(self.inner.cfg.run_root.join("runtime"))
                    .args(["delete", "--force", id])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .await;
                let _ = nix::mount::umount2(&paths.rootfs(), nix::mount::MntFlags::MNT_DETACH);
                (255, false, now())
            }
        };
        t.lap("read");
        // An auto-removed container's network goes with its removal below (AutoRemove
        // excludes restart policies: `validate_host_config`).
        let removing = self
            .lock()
            .by_id
            .get(id)
            .is_some_and(|e| e.rec.host_config.auto_remove);
        if !removing {
            self.inner.net.detach(id);
        }
        t.lap("net-detach");
        let (rec, restart_delay) = {
            let mut st = self.lock();
            let Some(e) = st.by_id.get_mut(id) else {
                return;
            };
            let s = &mut e.rec.state;
            if !(s.status.is_running() || s.status == Status::Restarting) {
                return;
            }
            let ran_for = chrono::DateTime::parse_from_rfc3339(&s.started_at)
                .ok()
                .map(|t| {
                    chrono::Utc::now()
                        .signed_duration_since(t)
                        .num_milliseconds()
                })
                .unwrap_or(0);
            s.status = Status::Exited;
            s.pid = 0;
            s.monitor_pid = 0;
            s.exit_code = exit_code;
            s.oom_killed = oom;
            s.finished_at = finished;
            s.exit_seq += 1;
            let policy = &e.rec.host_config.restart_policy;
            let restart = !s.manually_stopped
                && match policy.name.as_str() {
                    "always" | "unless-stopped" => true,
                    "on-failure" => {
                        exit_code != 0
                            && (policy.maximum_retry_count <= 0
                                || s.restart_count < policy.maximum_retry_count)
                    }
                    _ => false,
                };
            let delay = if restart {
                s.status = Status::Restarting;
                s.restart_count += 1;
                let n = if ran_for > 10_000 {
                    0
                } else {
                    s.restart_count.min(10)
                };
                Some(Duration::from_millis((100u64 << n).min(60_000)))
            } else {
                None
            };
            let seq = s.exit_seq;
            let rec = e.rec.clone();
            e.watch.send_modify(|w| {
                w.running = false;
                w.exit_seq = seq;
                w.exit_code = exit_code;
            });
            (rec, delay)
        };
        // The record of a container about to be removed needs no update on disk (after a
        // crash, `load` finds it exited and removes it).
        if restart_delay.is_some() || !rec.host_config.auto_remove {
            let _ = self.persist(&rec, false);
        }
        t.lap("persist");
        let extra = vec![("exitCode", exit_code.to_string())];
        if oom {
            self.publish("oom", &rec, &[]);
        }
        self.publish("die", &rec, &extra);
        if let Some(d) = restart_delay {
            let engine = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                let go = {
                    let st = engine.lock();
                    st.by_id.get(&id).is_some_and(|e| {
                        e.rec.state.status == Status::Restarting && !e.rec.state.manually_stopped
                    })
                };
                if go {
                    if let Err(err) = engine.start(&id).await {
                        tracing::warn!("restart of container {id} failed: {err}");
                        engine.set_exited_after_failed_restart(&id);
                    }
                }
            });
        } else if rec.host_config.auto_remove {
            let _ = self.remove(id, true, true).await;
        }
    }

    fn set_exited_after_failed_restart(&self, id: &str) {
        let mut st = self.lock();
        if let Some(e) = st.by_id.get_mut(id) {
            if e.rec.state.status == Status::Restarting {
                e.rec.state.status = Status::Exited;
                let rec = e.rec.clone();
                drop(st);
                let _ = self.persist(&rec, false);
            }
        }
    }

    /// Prepares a wait (`POST /containers/{id}/wait`): resolves the container now (so that
    /// a missing one fails before any response is sent) and returns a future of its exit
    /// code.
    pub fn wait(
        &self,
        name: &str,
        cond: WaitCondition,
    ) -> Result<impl std::future::Future<Output = Result<i64>> + Send + 'static> {
        let (mut rx, status) = {
            let st = self.lock();
            let id = st.index.resolve(name)?;
            let e = st
                .by_id
                .get(&id)
                .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
            (e.watch.subscribe(), e.rec.state.status)
        };
        let start_seq = rx.borrow().exit_seq;
        Ok(async move {
            loop {
                {
                    let w = rx.borrow_and_update();
                    let done = match cond {
                        WaitCondition::NotRunning => {
                            !w.running && status != Status::Restarting || w.exit_seq > start_seq
                        }
                        WaitCondition::NextExit => w.exit_seq > start_seq,
                        WaitCondition::Removed => w.removed,
                    };
                    if done {
                        return Ok(w.exit_code);
                    }
                }
                if rx.changed().await.is_err() {
                    // The container is gone.
                    let w = rx.borrow();
                    return Ok(w.exit_code);
                }
            }
        })
    }

    /// Sends a signal to a running container (`POST /containers/{id}/kill`).
    pub async fn kill(&self, name: &str, signal: Option<&str>) -> Result<()> {
        let sig = spec::parse_signal(signal.filter(|s| !s.is_empty()).unwrap_or("KILL"))?;
        let (id, pid) = {
            let st = self.lock();
            let id = st.index.resolve(name)?;
            let e = st
                .by_id
                .get(&id)
                .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
            if !e.rec.state.status.is_running() {
                return Err(EngineError::Conflict(format!(
                    "Container {id} is not running"
                )));
            }
            (id, e.rec.state.pid)
        };
        self.signal(&id, pid, sig)
    }

    fn signal(&self, id: &str, pid: i32, sig: i32) -> Result<()> {
        let s = nix::sys::signal::Signal::try_from(sig)
            .map_err(|_| EngineError::Invalid(format!("invalid signal: {sig}")))?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(EngineError::Runtime(format!("signal container {id}: {e}"))),
        }
    }

    /// Stops a container (`POST /containers/{id}/stop`): its stop signal, then SIGKILL
    /// after `timeout` seconds (default: its `StopTimeout` or 10).
    pub async fn stop(&self, name: &str, timeout: Option<i64>, signal: Option<&str>) -> Result<()> {
        let (id, pid, sig, t) = {
            let mut st = self.lock();
            let id = st.index.resolve(name)?;
            let e = st
                .by_id
                .get_mut(&id)
                .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
            if e.rec.state.status == Status::Restarting {
                e.rec.state.manually_stopped = true;
                e.rec.state.status = Status::Exited;
                let rec = e.rec.clone();
                drop(st);
                self.persist(&rec, false)?;
                return Ok(());
            }
            if !e.rec.state.status.is_running() {
                return Err(EngineError::AlreadyInState(
                    "container already stopped".into(),
                ));
            }
            e.rec.state.manually_stopped = true;
            let sig_name = signal
                .filter(|s| !s.is_empty())
                .map(String::from)
                .or_else(|| e.rec.config.stop_signal.clone())
                .unwrap_or_else(|| "SIGTERM".to_string());
            let sig = spec::parse_signal(&sig_name)?;
            let t = timeout.or(e.rec.config.stop_timeout).unwrap_or(10);
            (id, e.rec.state.pid, sig, t)
        };
        let waiter = self.wait(&id, WaitCondition::NotRunning)?;
        let paused = self
            .lock()
            .by_id
            .get(&id)
            .is_some_and(|e| e.rec.state.status == Status::Paused);
        self.signal(&id, pid, sig)?;
        if paused {
            let _ = self.unpause(&id).await;
        }
        let waiter = Box::pin(waiter);
        if t >= 0 {
            match tokio::time::timeout(Duration::from_secs(t as u64), waiter).await {
                Ok(r) => {
                    r?;
                    return Ok(());
                }
                Err(_) => {
                    self.signal(&id, pid, libc::SIGKILL)?;
                }
            }
        } else {
            waiter.await?;
            return Ok(());
        }
        let w = self.wait(&id, WaitCondition::NotRunning)?;
        w.await?;
        Ok(())
    }

    /// Restarts a container (`POST /containers/{id}/restart`).
    pub async fn restart(
        &self,
        name: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        match self.stop(name, timeout, signal).await {
            Ok(()) | Err(EngineError::AlreadyInState(_)) => {}
            Err(e) => return Err(e),
        }
        self.start(name).await
    }

    async fn runtime_cmd(&self, args: &[&str]) -> Result<()> {
        let out = tokio::process::Command::new(&self.inner.cfg.runtime)
            .arg("--root")
            .arg(self.inner.cfg.run_root.join("runtime"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| {
                EngineError::Runtime(format!("run {}: {e}", self.inner.cfg.runtime.display()))
            })?;
        if !out.status.success() {
            return Err(EngineError::Runtime(format!(
                "runtime {} failed: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Freezes a running container.
    pub async fn pause(&self, name: &str) -> Result<()> {
        let id = {
            let st = self.lock();
            let id = st.index.resolve(name)?;
            let e = st
                .by_id
                .get(&id)
                .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
            match e.rec.state.status {
                Status::Running => {}
                Status::Paused => {
                    return Err(EngineError::Conflict(format!(
                        "Container {id} is already paused"
                    )))
                }
                _ => {
                    return Err(EngineError::Conflict(format!(
                        "Container {id} is not running"
                    )))
                }
            }
            id
        };
        self.runtime_cmd(&["pause", &id]).await?;
        self.set_status(&id, Status::Paused, "pause");
        Ok(())
    }

    /// Thaws a paused container.
    pub async fn unpause(&self, name: &str) -> Result<()> {
        let id = {
            let st = self.lock();
            let id = st.index.resolve(name)?;
            let e = st
                .by_id
                .get(&id)
                .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
            if e.rec.state.status != Status::Paused {
                return Err(EngineError::Conflict(format!(
                    "Container {id} is not paused"
                )));
            }
            id
        };
        self.runtime_cmd(&["resume", &id]).await?;
        self.set_status(&id, Status::Running, "unpause");
        Ok(())
    }

    fn set_status(&self, id: &str, status: Status, action: &str) {
        let rec = {
            let mut st = self.lock();
            let Some(e) = st.by_id.get_mut(id) else {
                return;
            };
            if !e.rec.state.status.is_running() {
                return;
            }
            e.rec.state.status = status;
            e.rec.clone()
        };
        let _ = self.persist(&rec, false);
        self.publish(action, &rec, &[]);
    }

    /// Removes a container (`DELETE /containers/{id}`); `force` kills a running one.
    pub async fn remove(&self, name: &str, force: bool, remove_volumes: bool) -> Result<()> {
        let (id, running, pid) = {
            let mut st = self.lock();
            let id = st.index.resolve(name)?;
            let e = st
                .by_id
                .get_mut(&id)
                .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
            let running = e.rec.state.status.is_running();
            if running && !force {
                let what = if e.rec.state.status == Status::Paused {
                    "paused"
                } else {
                    "running"
                };
                return Err(EngineError::Conflict(format!(
                    "cannot remove container \"/{}\": container is {what}: stop the container before removing or force remove",
                    e.rec.name
                )));
            }
            if e.rec.state.status == Status::Removing {
                return Err(EngineError::Conflict(format!(
                    "removal of container {id} is already in progress"
                )));
            }
            e.rec.state.manually_stopped = true;
            (id, running, e.rec.state.pid)
        };
        if running {
            let w = self.wait(&id, WaitCondition::NotRunning)?;
            if self
                .lock()
                .by_id
                .get(&id)
                .is_some_and(|e| e.rec.state.status == Status::Paused)
            {
                let _ = self.signal(&id, pid, libc::SIGKILL);
                let _ = self.runtime_cmd(&["resume", &id]).await;
            }
            self.signal(&id, pid, libc::SIGKILL)?;
            w.await?;
        }
        let (rec, slot) = {
            let mut st = self.lock();
            let Some(e) = st.by_id.get_mut(&id) else {
                return Ok(());
            };
            if e.rec.state.status == Status::Removing {
                return Ok(());
            }
            e.rec.state.status = Status::Removing;
            (e.rec.clone(), e.monitor.clone())
        };
        let mut t = crate::timing::Phases::new("remove");
        let paths = self.paths(&id);
        let gone = self
            .inner
            .cfg
            .root
            .join("containers")
            .join(format!(".removing-{id}"));
        if let Err(e) = std::fs::rename(&paths.dir, &gone) {
            tracing::warn!("rename {}: {e}", paths.dir.display());
        }
        let _ = nix::mount::umount2(&paths.rootfs(), nix::mount::MntFlags::MNT_DETACH);
        t.lap("rename+umount");
        self.inner.net.release(&id);
        t.lap("net-release");
        crate::volumes::release_volumes(&self.inner.volumes, &rec, &gone, remove_volumes);
        t.lap("volumes");
        // Its rootfs snapshot leaves the store's view now, so that its image can be
        // removed as soon as this returns (`docker run --rm` then `docker rmi`).
        let rootfs_trash = self.inner.images.detach_rootfs(&id).ok();
        // The container is gone from the API once its directory is renamed; deleting its
        // files (upper dir, bundle, logs) is slow on a busy disk and done off the request
        // path. A daemon stopped before it finishes redoes it at start (`load`).
        let engine = self.clone();
        let bundle = paths.bundle.clone();
        let (rid, rgone) = (id.clone(), gone.clone());
        let cgroups_path = crate::spec::cgroups_path(&rec.host_config, &id);
        tokio::task::spawn_blocking(move || {
            // A cgroup made for a container never started (see `precreate_cgroup`); the
            // runtime removes it when a started one ends. After the monitor and any
            // pre-creation are done with it (its slot).
            let slot = slot.blocking_lock_owned();
            if let Ok(cg) = cgroups::Cgroup::new(Some(&cgroups_path), &rid, false) {
                let _ = cg.destroy();
            }
            drop(slot);
            // The id is gone for good: nothing else uses this namespace path.
            engine.inner.net.remove_namespace(&rid);
            match rootfs_trash {
                Some(trash) => {
                    let _ = std::fs::remove_dir_all(trash);
                }
                // A detach that failed is tried again now that the monitor is done.
                None => {
                    let _ = engine.inner.images.remove_rootfs(&rid);
                }
            }
            let _ = std::fs::remove_dir_all(&bundle);
            let _ = std::fs::remove_dir_all(&rgone);
        });
        {
            let mut st = self.lock();
            if let Some(e) = st.by_id.remove(&id) {
                e.watch.send_modify(|w| {
                    w.removed = true;
                    w.running = false;
                });
            }
            st.index.remove(&id, &rec.name);
        }
        self.inner.execs.remove_container(&id);
        self.publish("destroy", &rec, &[]);
        Ok(())
    }

    /// Renames a container.
    pub fn rename(&self, name: &str, new_name: &str) -> Result<()> {
        let new = containers::validate_name(new_name)?;
        let rec = {
            let mut st = self.lock();
            let id = st.index.resolve(name)?;
            if let Some(other) = st.index.by_name(&new) {
                if *other != id {
                    return Err(EngineError::NameInUse {
                        name: new,
                        id: other.clone(),
                    });
                }
            }
            let old = st
                .by_id
                .get(&id)
                .map(|e| e.rec.name.clone())
                .unwrap_or_default();
            st.index.rename(&id, &old, &new);
            let Some(e) = st.by_id.get_mut(&id) else {
                return Err(EngineError::NoSuchContainer(name.to_string()));
            };
            e.rec.name = new;
            e.rec.clone()
        };
        self.persist(&rec, true)?;
        self.publish("rename", &rec, &[]);
        Ok(())
    }

    /// Updates the restart policy and resources of a container (resources apply from
    /// the next start).
    pub fn update(&self, name: &str, u: api::ContainerUpdateBody) -> Result<Vec<String>> {
        let rec = {
            let mut st = self.lock();
            let id = st.index.resolve(name)?;
            let e = st
                .by_id
                .get_mut(&id)
                .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
            let hc = &mut e.rec.host_config;
            if let Some(v) = u.memory {
                hc.memory = v;
            }
            if let Some(v) = u.memory_swap {
                hc.memory_swap = v;
            }
            if let Some(v) = u.cpu_shares {
                hc.cpu_shares = v;
            }
            if let Some(v) = u.nano_cpus {
                hc.nano_cpus = v;
            }
            if let Some(v) = u.cpu_quota {
                hc.cpu_quota = v;
            }
            if let Some(v) = u.cpu_period {
                hc.cpu_period = v;
            }
            if let Some(v) = u.cpuset_cpus {
                hc.cpuset_cpus = v;
            }
            if let Some(v) = u.pids_limit {
                hc.pids_limit = Some(v);
            }
            if let Some(v) = u.restart_policy {
                hc.restart_policy = v;
            }
            validate_host_config(hc)?;
            e.rec.clone()
        };
        self.persist(&rec, true)?;
        self.publish("update", &rec, &[]);
        Ok(Vec::new())
    }

    /// Connects to a container's output and stdin (`POST /containers/{id}/attach`).
    pub async fn attach(&self, name: &str) -> Result<AttachStream> {
        let (id, running) = {
            let st = self.lock();
            let id = st.index.resolve(name)?;
            let e = st
                .by_id
                .get(&id)
                .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
            (id, e.rec.state.status.is_running())
        };
        if running {
            if let Ok(s) = connect_streams(&self.paths(&id).attach_socket()).await {
                return Ok(AttachStream::Connected(s));
            }
        }
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        let e = st
            .by_id
            .get_mut(&id)
            .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
        e.pending_attach.push(tx);
        Ok(AttachStream::Pending(rx))
    }

    /// Whether the container uses a terminal.
    pub fn is_tty(&self, name: &str) -> Result<bool> {
        Ok(self.record(name)?.config.tty)
    }

    /// Resizes a container's terminal.
    pub fn resize(&self, name: &str, height: u16, width: u16) -> Result<()> {
        let rec = self.record(name)?;
        if !rec.state.status.is_running() {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                rec.id
            )));
        }
        if !rec.config.tty {
            return Ok(());
        }
        crate::exec::resize_pty_of(rec.state.pid, height, width)
    }

    /// Inspects a container.
    pub fn inspect(&self, name: &str) -> Result<ContainerInspect> {
        let rec = self.record(name)?;
        let paths = self.paths(&rec.id);
        let exec_ids = self.inner.execs.ids_of(&rec.id);
        let mut out = inspect_of(&rec, &paths, exec_ids);
        out.state.health = self.health_of(&rec.id);
        self.net_inspect(&rec, &mut out);
        Ok(out)
    }

    /// Lists containers (`GET /containers/json`).
    pub fn list(&self, opts: &ListOptions) -> Result<Vec<ContainerSummary>> {
        for k in opts.filters.keys() {
            if !matches!(
                k.as_str(),
                "status"
                    | "name"
                    | "id"
                    | "label"
                    | "ancestor"
                    | "exited"
                    | "before"
                    | "since"
                    | "network"
                    | "volume"
                    | "health"
                    | "is-task"
                    | "publish"
                    | "expose"
            ) {
                return Err(EngineError::Invalid(format!("invalid filter '{k}'")));
            }
        }
        if let Some(ss) = opts.filters.get("status") {
            for s in ss {
                if !matches!(
                    s.as_str(),
                    "created"
                        | "restarting"
                        | "running"
                        | "removing"
                        | "paused"
                        | "exited"
                        | "dead"
                ) {
                    return Err(EngineError::Invalid(format!("invalid filter 'status={s}'")));
                }
            }
        }
        let st = self.lock();
        let mut recs: Vec<&ContainerRecord> = st.by_id.values().map(|e| &e.rec).collect();
        recs.sort_by(|a, b| b.created.cmp(&a.created));
        let all = opts.all
            || opts.limit > 0
            || opts.filters.contains_key("status")
            || opts.filters.contains_key("exited");
        let f = &opts.filters;
        let mut out = Vec::new();
        for r in recs {
            if !all && !r.state.status.is_running() {
                continue;
            }
            if let Some(v) = f.get("status") {
                if !v.iter().any(|s| s == r.state.status.as_str()) {
                    continue;
                }
            }
            if let Some(v) = f.get("name") {
                if !v.iter().any(|n| r.name.contains(n.trim_start_matches('/'))) {
                    continue;
                }
            }
            if let Some(v) = f.get("id") {
                if !v.iter().any(|n| r.id.starts_with(n.as_str())) {
                    continue;
                }
            }
            if let Some(v) = f.get("label") {
                let ok = v.iter().all(|l| match l.split_once('=') {
                    Some((k, val)) => r.config.labels.get(k).map(String::as_str) == Some(val),
                    None => r.config.labels.contains_key(l.as_str()),
                });
                if !ok {
                    continue;
                }
            }
            if let Some(v) = f.get("ancestor") {
                let ok = v.iter().any(|a| {
                    r.image == *a
                        || r.image_id == *a
                        || r.image_id
                            .trim_start_matches("sha256:")
                            .starts_with(a.trim_start_matches("sha256:"))
                        || (!a.contains(':') && r.image == format!("{a}:latest"))
                        || self
                            .inner
                            .images
                            .resolve(a)
                            .is_ok_and(|i| i.id == r.image_id)
                });
                if !ok {
                    continue;
                }
            }
            if let Some(v) = f.get("exited") {
                if r.state.status != Status::Exited
                    || !v
                        .iter()
                        .any(|c| c.parse::<i64>().ok() == Some(r.state.exit_code))
                {
                    continue;
                }
            }
            if let Some(v) = f.get("health") {
                if !v.contains(&self.health_status(&r.id)) {
                    continue;
                }
            }
            let mut s = summary_of(r);
            if r.state.status == Status::Running {
                if let Some(h) = self.health_of(&r.id) {
                    s.status.push_str(crate::health::status_suffix(&h.status));
                }
            }
            s.ports = self.inner.net.ports(&r.id);
            s.network_settings.networks = self
                .inner
                .net
                .settings(&r.id, &r.host_config.network_mode, false)
                .networks;
            out.push(s);
            if opts.limit > 0 && out.len() >= opts.limit {
                break;
            }
        }
        Ok(out)
    }

    /// Counts containers: (all, running, paused, stopped).
    pub fn counts(&self) -> (i64, i64, i64, i64) {
        let st = self.lock();
        let mut c = (0, 0, 0, 0);
        for e in st.by_id.values() {
            c.0 += 1;
            match e.rec.state.status {
                Status::Running => c.1 += 1,
                Status::Paused => c.2 += 1,
                _ => c.3 += 1,
            }
        }
        c
    }

    /// The ids of stopped containers removed by a prune.
    pub async fn prune(&self, labels: &[String]) -> Result<Vec<String>> {
        let ids: Vec<String> = {
            let st = self.lock();
            st.by_id
                .values()
                .filter(|e| {
                    matches!(
                        e.rec.state.status,
                        Status::Exited | Status::Created | Status::Dead
                    )
                })
                .filter(|e| {
                    labels.iter().all(|l| match l.split_once('=') {
                        Some((k, v)) => e.rec.config.labels.get(k).map(String::as_str) == Some(v),
                        None => e.rec.config.labels.contains_key(l.as_str()),
                    })
                })
                .map(|e| e.rec.id.clone())
                .collect()
        };
        let mut done = Vec::new();
        for id in ids {
            if self.remove(&id, false, false).await.is_ok() {
                done.push(id);
            }
        }
        Ok(done)
    }

    /// The ids of containers created from `image_id`.
    pub fn users_of_image(&self, image_id: &str) -> Vec<(String, bool)> {
        let st = self.lock();
        st.by_id
            .values()
            .filter(|e| e.rec.image_id == image_id)
            .map(|e| (e.rec.id.clone(), e.rec.state.status.is_running()))
            .collect()
    }

    /// The paths of a container's json-file log (oldest rotated file first) and a
    /// receiver that tells when it stops running.
    pub fn log_source(&self, name: &str) -> Result<crate::logs::LogSource> {
        let st = self.lock();
        let id = st.index.resolve(name)?;
        let e = st
            .by_id
            .get(&id)
            .ok_or_else(|| EngineError::NoSuchContainer(name.to_string()))?;
        if e.rec.host_config.log_config.kind == "none" {
            return Err(EngineError::Invalid(
                "configured logging driver does not support reading".into(),
            ));
        }
        let mut rx = e.watch.subscribe();
        let running = rx.borrow().running || e.rec.state.status == Status::Restarting;
        let (_, max_files) = log_limits(&e.rec.host_config.log_config.config);
        Ok(crate::logs::LogSource {
            path: self.paths(&id).log(&id),
            max_files,
            stopped: Box::pin(async move {
                loop {
                    {
                        let w = rx.borrow_and_update();
                        if !w.running || w.removed {
                            return;
                        }
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }),
            running_now: running,
            tty: e.rec.config.tty,
        })
    }

    /// The container's root filesystem, mounted for the duration of `f` if it is not
    /// running (archive operations).
    pub fn with_rootfs<T>(
        &self,
        name: &str,
        f: impl FnOnce(&Path, &ContainerRecord) -> Result<T>,
    ) -> Result<T> {
        let mut rec = self.record(name)?;
        let paths = self.paths(&rec.id);
        let rootfs = paths.rootfs();
        // A container that has just exited may still count as running for a moment after
        // its monitor unmounted the root filesystem: wait for the exit to be applied.
        for _ in 0..200 {
            if !rec.state.status.is_running() || is_mountpoint(&rootfs) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            rec = self.record(name)?;
        }
        if rec.state.status.is_running() {
            return f(&rootfs, &rec);
        }
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| EngineError::io("create directory", &rootfs, e))?;
        let mut mounts = self.inner.images.rootfs_mounts(&rec.id)?;
        volatile_overlay(&mut mounts, false);
        mount_rootfs(&rootfs, &mounts)?;
        let r = f(&rootfs, &rec);
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        r
    }

    /// Stats a path in a container (`HEAD /containers/{id}/archive`).
    pub fn archive_stat(&self, name: &str, path: &str) -> Result<crate::archive::PathStat> {
        self.with_rootfs(name, |root, rec| {
            Ok(crate::archive::stat(root, path, &rec.name)?.0)
        })
    }

    /// A tar of a path in a container (`GET /containers/{id}/archive`).
    pub fn archive_get(
        &self,
        name: &str,
        path: &str,
    ) -> Result<(crate::archive::PathStat, Vec<u8>)> {
        self.with_rootfs(name, |root, rec| {
            crate::archive::export(root, path, &rec.name)
        })
    }

    /// Extracts a tar into a directory of a container (`PUT /containers/{id}/archive`).
    pub fn archive_put(&self, name: &str, path: &str, data: &[u8]) -> Result<()> {
        self.with_rootfs(name, |root, rec| {
            if rec.host_config.readonly_rootfs {
                return Err(EngineError::Conflict(
                    "container rootfs is marked read-only".into(),
                ));
            }
            crate::archive::import(root, path, &rec.name, data)
        })
    }

    /// The runtime binary and its state root.
    pub(crate) fn runtime(&self) -> (PathBuf, PathBuf) {
        (
            self.inner.cfg.runtime.clone(),
            self.inner.cfg.run_root.join("runtime"),
        )
    }

    /// The bundle directory of a container.
    pub(crate) fn bundle(&self, id: &str) -> PathBuf {
        self.paths(id).bundle
    }

    /// Top: the processes of a running container (`ps -ef` style).
    pub fn top(&self, name: &str) -> Result<api::ContainerTopResponse> {
        let rec = self.record(name)?;
        if !rec.state.status.is_running() {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                rec.id
            )));
        }
        let pids = crate::exec::pids_of(rec.state.pid);
        let mut processes = Vec::new();
        for pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |k: &str| {
                stat.lines()
                    .find_map(|l| {
                        l.strip_prefix(k)
                            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
                    })
                    .unwrap_or_default()
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    c.split(|b| *b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            processes.push(vec![
                field("Uid:"),
                pid.to_string(),
                field("PPid:"),
                "0".to_string(),
                String::new(),
                "?".to_string(),
                String::new(),
                cmd,
            ]);
        }
        Ok(api::ContainerTopResponse {
            titles: ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            processes,
        })
    }
}

/// Connects to a monitor's attach socket as a stream client.
async fn connect_streams(sock: &Path) -> Result<UnixStream> {
    let mut s = UnixStream::connect(sock)
        .await
        .map_err(|e| EngineError::io("connect", sock, e))?;
    s.write_all(&[ATTACH_STREAMS])
        .await
        .map_err(|e| EngineError::io("write", sock, e))?;
    Ok(s)
}

/// Mounts a container's root filesystem at `target`.
/// Makes the overlay of an auto-removed container `volatile`: its writable layer never
/// outlives the container, so overlayfs need not sync the upper filesystem at unmount
/// (a `syncfs` of the whole host filesystem, on the path of every exit). A volatile mount
/// leaves `work/incompat/volatile` in its workdir, which makes the next mount of the same
/// dirs fail; it is removed before every mount (a clean unmount preceded it: the monitor
/// unmounts before it records the exit).
fn volatile_overlay(mounts: &mut [store::Mount], volatile: bool) {
    for m in mounts.iter_mut().filter(|m| m.kind == "overlay") {
        if let Some(w) = m.options.iter().find_map(|o| o.strip_prefix("workdir=")) {
            let marker = Path::new(w).join("work/incompat/volatile");
            if marker.exists() {
                let _ = std::fs::remove_dir_all(&marker);
            }
        }
        if volatile {
            m.options.push("volatile".to_string());
        }
    }
}

/// Whether `p` is the root of a mount (its device differs from its parent's).
fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// The root filesystem's mount in flight on a blocking thread (see `run_monitor`).
type Mounting = tokio::task::JoinHandle<Result<()>>;

/// What a start sets going before the bundle is ready (see `run_monitor`): the monitor,
/// exec'd and waiting for its configuration, and the root filesystem's mount.
struct Early {
    monitor: Option<tokio::process::Child>,
    mounting: Option<Mounting>,
}

fn mount_rootfs(target: &Path, mounts: &[store::Mount]) -> Result<()> {
    store::snapshot::mount_all(mounts, target).map_err(EngineError::store)
}

/// Docker's json-file `max-size` and `max-file` options.
fn log_limits(opts: &StringMap) -> (u64, u32) {
    let size = opts
        .get("max-size")
        .and_then(|s| spec::parse_size(s))
        .unwrap_or(0);
    let files = opts
        .get("max-file")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    (size, files)
}

/// Rejects host configurations Docker rejects.
fn validate_host_config(hc: &api::HostConfig) -> Result<()> {
    match hc.restart_policy.name.as_str() {
        "" | "no" | "always" | "unless-stopped" | "on-failure" => {}
        other => {
            return Err(EngineError::Invalid(format!(
                "invalid restart policy '{other}'"
            )))
        }
    }
    if hc.restart_policy.maximum_retry_count < 0 {
        return Err(EngineError::Invalid(
            "invalid restart policy: maximum retry count cannot be negative".into(),
        ));
    }
    if hc.restart_policy.maximum_retry_count > 0 && hc.restart_policy.name != "on-failure" {
        return Err(EngineError::Invalid(String::from(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        )));
    }
    if hc.auto_remove && !matches!(hc.restart_policy.name.as_str(), "" | "no") {
        return Err(EngineError::Invalid(
            "conflicting options: cannot specify both --restart and --rm".into(),
        ));
    }
    if hc.cgroup_parent.split('/').any(|c| c == ".." || c == ".") || hc.cgroup_parent.contains('\0')
    {
        return Err(EngineError::Invalid(format!(
            "invalid --cgroup-parent {:?}: it may not hold '.' or '..' components",
            hc.cgroup_parent
        )));
    }
    if hc.memory > 0 && hc.memory < 6 * 1024 * 1024 {
        return Err(EngineError::Invalid(
            "Minimum memory limit allowed is 6MB".into(),
        ));
    }
    if hc.memory > 0 && hc.memory_swap > 0 && hc.memory_swap < hc.memory {
        return Err(EngineError::Invalid(
            "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
        ));
    }
    if hc.nano_cpus < 0 || hc.cpu_shares < 0 {
        return Err(EngineError::Invalid("invalid CPU value".into()));
    }
    if hc.nano_cpus > 0 && (hc.cpu_quota > 0 || hc.cpu_period > 0) {
        return Err(EngineError::Invalid(
            "Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set".into(),
        ));
    }
    if hc.network_mode == "container:" {
        return Err(EngineError::Invalid(
            "invalid network mode: container: needs a container name".into(),
        ));
    }
    Ok(())
}

/// Fills in what the create request left to the image.
fn merge_image_config(cfg: &mut api::ContainerConfig, img: &api::ContainerConfig) {
    if cfg.entrypoint.is_none() {
        cfg.entrypoint = img.entrypoint.clone();
        if cfg.cmd.is_none() {
            cfg.cmd = img.cmd.clone();
        }
    }
    if cfg
        .entrypoint
        .as_ref()
        .is_some_and(|e| e.len() == 1 && e[0].is_empty())
    {
        cfg.entrypoint = None;
    }
    let mut env = img.env.clone();
    for e in &cfg.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next().unwrap_or("") != key);
        env.push(e.clone());
    }
    cfg.env = env;
    if cfg.working_dir.is_empty() {
        cfg.working_dir = img.working_dir.clone();
    }
    if cfg.user.is_empty() {
        cfg.user = img.user.clone();
    }
    let mut labels = img.labels.clone();
    labels.extend(cfg.labels.clone());
    cfg.labels = labels;
    if cfg.stop_signal.is_none() {
        cfg.stop_signal = img.stop_signal.clone();
    }
    crate::health::merge(&mut cfg.healthcheck, img.healthcheck.as_ref());
    if let Some(ports) = &img.exposed_ports {
        let e = cfg.exposed_ports.get_or_insert_with(Default::default);
        for k in ports.keys() {
            e.entry(k.clone()).or_default();
        }
    }
    if let Some(v) = &img.volumes {
        let e = cfg.volumes.get_or_insert_with(Default::default);
        for k in v.keys() {
            e.entry(k.clone()).or_default();
        }
    }
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 1 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".to_string(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".to_string(),
        s if s < 86400 * 2 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

fn since(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| chrono::Utc::now().signed_duration_since(d).num_seconds())
        .unwrap_or(0)
}

fn summary_of(r: &ContainerRecord) -> ContainerSummary {
    let status = match r.state.status {
        Status::Running => format!("Up {}", human_duration(since(&r.state.started_at))),
        Status::Paused => format!("Up {} (Paused)", human_duration(since(&r.state.started_at))),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            r.state.exit_code,
            human_duration(since(&r.state.finished_at))
        ),
        Status::Exited if r.state.has_been_started => format!(
            "Exited ({}) {} ago",
            r.state.exit_code,
            human_duration(since(&r.state.finished_at))
        ),
        Status::Exited | Status::Created => "Created".to_string(),
        Status::Removing => "Removal In Progress".to_string(),
        Status::Dead => "Dead".to_string(),
    };
    let mut command = r.path.clone();
    for a in &r.args {
        command.push(' ');
        command.push_str(a);
    }
    ContainerSummary {
        id: r.id.clone(),
        names: vec![format!("/{}", r.name)],
        image: r.image.clone(),
        image_id: r.image_id.clone(),
        command,
        created: chrono::DateTime::parse_from_rfc3339(&r.created)
            .map(|d| d.timestamp())
            .unwrap_or(0),
        ports: Vec::new(),
        labels: r.config.labels.clone(),
        state: r.state.status.as_str().to_string(),
        status,
        host_config: api::SummaryHostConfig {
            network_mode: r.host_config.network_mode.clone(),
        },
        network_settings: api::SummaryNetworkSettings::default(),
        mounts: mounts_of(r),
    }
}

fn mounts_of(r: &ContainerRecord) -> Vec<MountPoint> {
    let mut out = Vec::new();
    for b in &r.host_config.binds {
        let p: Vec<&str> = b.split(':').collect();
        if p.len() >= 2 {
            let mode = p.get(2).copied().unwrap_or("").to_string();
            out.push(MountPoint {
                kind: "bind".into(),
                source: p[0].into(),
                destination: p[1].into(),
                rw: !mode.split(',').any(|m| m == "ro"),
                mode,
                propagation: "rprivate".into(),
                ..Default::default()
            });
        }
    }
    for m in &r.host_config.mounts {
        out.push(MountPoint {
            kind: m.kind.clone(),
            source: m.source.clone(),
            destination: m.target.clone(),
            rw: !m.read_only,
            propagation: if m.kind == "bind" {
                "rprivate".into()
            } else {
                String::new()
            },
            ..Default::default()
        });
    }
    out
}

fn inspect_of(r: &ContainerRecord, p: &Paths, exec_ids: Vec<String>) -> ContainerInspect {
    let zero = "0001-01-01T00:00:00Z".to_string();
    let s = &r.state;
    let mut hc = r.host_config.clone();
    if hc.network_mode.is_empty() {
        hc.network_mode = "default".into();
    }
    ContainerInspect {
        id: r.id.clone(),
        created: r.created.clone(),
        path: r.path.clone(),
        args: r.args.clone(),
        state: ContainerState {
            status: s.status.as_str().to_string(),
            running: s.status.is_running(),
            paused: s.status == Status::Paused,
            restarting: s.status == Status::Restarting,
            oom_killed: s.oom_killed,
            dead: s.status == Status::Dead,
            pid: i64::from(s.pid),
            exit_code: s.exit_code,
            error: s.error.clone(),
            started_at: if s.started_at.is_empty() {
                zero.clone()
            } else {
                s.started_at.clone()
            },
            finished_at: if s.finished_at.is_empty() {
                zero
            } else {
                s.finished_at.clone()
            },
            health: None,
        },
        image: r.image_id.clone(),
        resolv_conf_path: p.dir.join("resolv.conf").display().to_string(),
        hostname_path: p.dir.join("hostname").display().to_string(),
        hosts_path: p.dir.join("hosts").display().to_string(),
        log_path: if r.host_config.log_config.kind == "none" {
            String::new()
        } else {
            p.log(&r.id).display().to_string()
        },
        name: format!("/{}", r.name),
        restart_count: s.restart_count,
        driver: "overlay2".into(),
        platform: "linux".into(),
        exec_ids: if exec_ids.is_empty() {
            None
        } else {
            Some(exec_ids)
        },
        host_config: hc,
        graph_driver: api::GraphDriver {
            name: "overlay2".into(),
            data: Default::default(),
        },
        mounts: mounts_of(r),
        config: r.config.clone(),
        network_settings: api::NetworkSettings::default(),
        ..Default::default()
    }
}
