//! The Berth daemon: the Docker Engine API on unix sockets, over the [`engine`].
//!
//! [`run`] takes the lock `<root>/berth.lock` (a second daemon on the same root is
//! refused), opens the engine (which re-adopts running containers), serves the API on every
//! `unix://` host until SIGINT or SIGTERM, and returns leaving containers running (their
//! monitors are independent processes). Handlers live in [`server`]; each turns a request
//! into an engine call and errors into Docker's status codes via [`api::ApiError`].

pub mod server;

use std::path::{Path, PathBuf};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Persistent state (default `/var/lib/berth`).
    pub root: PathBuf,
    /// Runtime state and sockets (default `/run/berth`).
    pub run_root: PathBuf,
    /// Where to listen: `unix:///path` (default `unix:///run/berth/berth.sock`).
    pub hosts: Vec<String>,
    /// The OCI runtime binary (default: `berth-runtime` next to the current executable,
    /// then on `PATH`).
    pub runtime: Option<PathBuf>,
    /// Verbose logging.
    pub debug: bool,
    /// Device of the default bridge network (default `berth0`).
    pub bridge: Option<String>,
    /// Subnet of the default bridge network (default: chosen from the address pools).
    pub bridge_subnet: Option<String>,
    /// Prefix of the daemon's iptables chains (default `BERTH`).
    pub chain_prefix: Option<String>,
    /// The init binary for `--init` with a runtime other than berth-runtime (default:
    /// `docker-init` on `PATH`, as Debian's docker.io installs it).
    pub init_path: Option<PathBuf>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            root: PathBuf::from("/var/lib/berth"),
            run_root: PathBuf::from("/run/berth"),
            hosts: vec!["unix:///run/berth/berth.sock".to_string()],
            runtime: None,
            debug: false,
            bridge: None,
            bridge_subnet: None,
            chain_prefix: None,
            init_path: None,
        }
    }
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon holds the root.
    #[error("another berth daemon is already running with root {0} (lock {0}/berth.lock is held)")]
    Locked(PathBuf),
    /// A host address is not understood.
    #[error("unsupported host address {0:?} (only unix:///path is supported)")]
    BadHost(String),
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The engine failed to open.
    #[error("open engine")]
    Engine(#[source] engine::EngineError),
    /// A binary the daemon needs is missing.
    #[error("cannot find {0} (next to the berth executable or on PATH)")]
    MissingBinary(String),
}

impl errkind::HasKind for DaemonError {
    fn kind(&self) -> errkind::ErrorKind {
        match self {
            DaemonError::Locked(_) => errkind::ErrorKind::Conflict,
            DaemonError::BadHost(_) => errkind::ErrorKind::InvalidArgument,
            DaemonError::MissingBinary(_) => errkind::ErrorKind::NotFound,
            DaemonError::Io { .. } => errkind::ErrorKind::Internal,
            DaemonError::Engine(e) => errkind::HasKind::kind(e),
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_path_buf();
    move |source| DaemonError::Io { what, path, source }
}

/// Finds a helper binary: next to the current executable, then on `PATH`.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
            // Test and example executables live in target/<profile>/{deps,examples}.
            if let Some(up) = dir.parent() {
                let p = up.join(name);
                if dir
                    .file_name()
                    .is_some_and(|n| n == "deps" || n == "examples")
                    && p.is_file()
                {
                    return Some(p);
                }
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Holds `<root>/berth.lock` for the daemon's lifetime.
pub struct RootLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the exclusive lock on `root`, failing with [`DaemonError::Locked`] when another
/// daemon holds it.
pub fn lock_root(root: &Path) -> Result<RootLock, DaemonError> {
    std::fs::create_dir_all(root).map_err(io_err("create directory", root))?;
    let p = root.join("berth.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io_err("open", &p))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(RootLock { _lock: l }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(DaemonError::Locked(root.to_path_buf())),
        Err((_, e)) => Err(DaemonError::Io {
            what: "lock",
            path: p,
            source: e.into(),
        }),
    }
}

/// Runs the daemon until SIGINT or SIGTERM (blocking; builds its own tokio runtime).
pub fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    if opts.debug {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let lock = lock_root(&opts.root)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err("start runtime", Path::new("tokio")))?;
    let r = rt.block_on(serve(opts));
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    drop(lock);
    r
}

/// Opens the engine and serves until a termination signal (the async core of [`run`]).
/// The caller must hold the root lock.
pub async fn serve(opts: DaemonOptions) -> Result<(), DaemonError> {
    let runtime = match &opts.runtime {
        Some(r) => r.clone(),
        None => find_binary("berth-runtime")
            .ok_or_else(|| DaemonError::MissingBinary("berth-runtime".into()))?,
    };
    let monitor = match std::env::var_os("BERTH_MONITOR") {
        Some(p) => PathBuf::from(p),
        None => find_binary("berth-monitor")
            .ok_or_else(|| DaemonError::MissingBinary("berth-monitor".into()))?,
    };
    std::fs::create_dir_all(&opts.run_root).map_err(io_err("create directory", &opts.run_root))?;
    let engine = engine::Engine::open(engine::EngineConfig {
        root: opts.root.clone(),
        run_root: opts.run_root.clone(),
        init_path: opts
            .init_path
            .clone()
            .or_else(|| find_binary("docker-init")),
        runtime,
        monitor,
        net: server::netvol::net_options(
            opts.bridge.as_deref(),
            opts.bridge_subnet.as_deref(),
            opts.chain_prefix.as_deref(),
        )
        .map_err(|m| DaemonError::Engine(engine::EngineError::Invalid(m)))?,
    })
    .await
    .map_err(DaemonError::Engine)?;
    let mut listeners = Vec::new();
    for h in &opts.hosts {
        let path = h
            .strip_prefix("unix://")
            .ok_or_else(|| DaemonError::BadHost(h.clone()))?;
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        let _ = std::fs::remove_file(&path);
        let l = tokio::net::UnixListener::bind(&path).map_err(io_err("listen on", &path))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
            .map_err(io_err("chmod", &path))?;
        listeners.push(l);
    }
    let app = server::app(server::AppState::new(engine.clone(), opts.debug));
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let app = app.clone();
        tasks.spawn(accept_loop(l, app));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("install signal handler", Path::new("SIGTERM")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = tasks.join_next() => {}
    }
    tasks.abort_all();
    engine.shutdown();
    Ok(())
}

/// Accepts connections and serves HTTP/1.1 on each (with upgrades, for attach and exec).
async fn accept_loop(listener: tokio::net::UnixListener, app: axum::Router) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        let req = req.map(axum::body::Body::new);
                        Ok::<_, std::convert::Infallible>(server::handle(app, req).await)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                .with_upgrades()
                .await;
        });
    }
}
