//! The HTTP layer: routes of the Docker Engine API and their handlers.
//!
//! A request's path may carry an API version (`/v1.45/...`); a middleware strips it (after
//! checking it against [`api::version`]) before routing, so every route is declared once.
//! Handlers stay thin: parse, call the engine, shape the answer. Errors become
//! `{"message": ...}` bodies with the status of [`api::ApiError::status`].

mod build_route;
mod commit_export;
mod exec_tty;
mod images_archive;
pub(crate) mod netvol;
mod registry;
mod stats_route;

use api::version::{ApiVersion, API_VERSION, MIN_API_VERSION};
use api::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::{AttachStream, Engine, EngineError, ListOptions, WaitCondition};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    engine: Engine,
    debug: bool,
    started: Arc<std::time::Instant>,
}

impl AppState {
    /// State over an opened engine.
    pub fn new(engine: Engine, debug: bool) -> AppState {
        AppState {
            engine,
            debug,
            started: Arc::new(std::time::Instant::now()),
        }
    }
}

/// An error response.
pub struct Error(ApiError);

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error(e)
    }
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        Error(ApiError::from_error(&e))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::NOT_MODIFIED {
            return status.into_response();
        }
        (status, axum::Json(self.0.body())).into_response()
    }
}

type Res<T = Response> = Result<T, Error>;
type Q = Query<HashMap<String, String>>;

fn qbool(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false" | "False" | "FALSE"))
}

fn qint(q: &HashMap<String, String>, k: &str) -> Res<Option<i64>> {
    match q.get(k).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Error(ApiError::invalid(format!("invalid value for {k}: {v:?}")))),
    }
}

fn json_body<T: DeserializeOwned + Default>(b: &Bytes) -> Res<T> {
    if b.iter().all(|c| c.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| {
        Error(ApiError::invalid(format!(
            "invalid JSON in request body: {e}"
        )))
    })
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    (status, axum::Json(v)).into_response()
}

fn filters(q: &HashMap<String, String>) -> Res<HashMap<String, Vec<String>>> {
    let Some(f) = q.get("filters").filter(|s| !s.is_empty()) else {
        return Ok(HashMap::new());
    };
    // Docker accepts {"k": ["v"]} and the older {"k": {"v": true}}.
    let v: serde_json::Value = serde_json::from_str(f)
        .map_err(|e| Error(ApiError::invalid(format!("invalid filters: {e}"))))?;
    let mut out = HashMap::new();
    let Some(obj) = v.as_object() else {
        return Err(Error(ApiError::invalid("invalid filters: not an object")));
    };
    for (k, vals) in obj {
        let list: Vec<String> = match vals {
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            serde_json::Value::Object(o) => o
                .iter()
                .filter(|(_, b)| b.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => {
                return Err(Error(ApiError::invalid(format!(
                    "invalid filter value for {k}"
                ))))
            }
        };
        out.insert(k.clone(), list);
    }
    Ok(out)
}

/// Strips an API version prefix from the request path (checking the version) and records
/// the version in the request's extensions.
fn version_prefix(mut req: Request) -> Result<Request, Box<Response>> {
    let path = req.uri().path().to_string();
    let (v, rest) = match api::version::split_path(&path) {
        Ok(x) => x,
        Err(e) => return Err(Box::new(Error(e).into_response())),
    };
    if rest.len() != path.len() {
        let pq = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        if let Ok(uri) = pq.parse() {
            *req.uri_mut() = uri;
        }
    }
    req.extensions_mut().insert(v);
    Ok(req)
}

/// The API router (paths without a version prefix).
pub fn app(state: AppState) -> Router {
    routes(state)
}

/// Serves one request: strips the version prefix, then routes it.
pub async fn handle(router: Router, req: Request) -> Response {
    use tower::ServiceExt;
    match version_prefix(req) {
        Ok(req) => match router.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
        Err(r) => *r,
    }
}

fn routes(state: AppState) -> Router {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/events", get(events))
        .route("/system/df", get(system_df))
        .route("/containers/create", post(container_create))
        .route("/containers/json", get(container_list))
        .route("/containers/prune", post(container_prune))
        .route("/containers/{id}/json", get(container_inspect))
        .route("/containers/{id}/start", post(container_start))
        .route("/containers/{id}/stop", post(container_stop))
        .route("/containers/{id}/restart", post(container_restart))
        .route("/containers/{id}/kill", post(container_kill))
        .route("/containers/{id}/wait", post(container_wait))
        .route("/containers/{id}/pause", post(container_pause))
        .route("/containers/{id}/unpause", post(container_unpause))
        .route("/containers/{id}/rename", post(container_rename))
        .route("/containers/{id}/update", post(container_update))
        .route("/containers/{id}/resize", post(container_resize))
        .route("/containers/{id}/top", get(container_top))
        .route("/containers/{id}/stats", get(stats_route::container_stats))
        .route("/containers/{id}/logs", get(container_logs))
        .route("/containers/{id}/attach", post(container_attach))
        .route("/containers/{id}/exec", post(exec_create))
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
        .route("/containers/{id}", axum::routing::delete(container_remove))
        .route("/exec/{id}/start", post(exec_start))
        .route("/exec/{id}/json", get(exec_inspect))
        .route("/exec/{id}/resize", post(exec_resize))
        .route("/build", post(build_route::build))
        .route("/auth", post(registry::auth))
        .route("/commit", post(commit_export::commit))
        .route("/containers/{id}/export", get(commit_export::export))
        .route("/images/get", get(images_archive::save))
        .route("/images/load", post(images_archive::load))
        .route("/images/json", get(image_list))
        .route("/images/create", post(image_create))
        .route("/images/prune", post(image_prune))
        .route(
            "/images/{*rest}",
            get(image_get).post(image_post).delete(image_delete),
        )
        .merge(netvol::routes())
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(state)
}

fn ping_headers(h: &mut HeaderMap) {
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("Berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

async fn ping(method: Method) -> Response {
    let mut r = if method == Method::HEAD {
        (StatusCode::OK, "").into_response()
    } else {
        (StatusCode::OK, "OK").into_response()
    };
    ping_headers(r.headers_mut());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().to_string())
        .unwrap_or_default()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

async fn version() -> Response {
    let v = api::SystemVersion {
        platform: [("Name".to_string(), "Berth".to_string())]
            .into_iter()
            .collect(),
        components: vec![api::ComponentVersion {
            name: "Engine".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            details: [
                ("ApiVersion".to_string(), API_VERSION.to_string()),
                ("MinAPIVersion".to_string(), MIN_API_VERSION.to_string()),
                ("Os".to_string(), "linux".to_string()),
                ("Arch".to_string(), arch().to_string()),
            ]
            .into_iter()
            .collect(),
        }],
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        min_api_version: MIN_API_VERSION.into(),
        git_commit: String::new(),
        go_version: "rust".into(),
        os: "linux".into(),
        arch: arch().into(),
        kernel_version: kernel(),
        experimental: false,
        build_time: String::new(),
    };
    json(StatusCode::OK, &v)
}

async fn info(State(s): State<AppState>) -> Response {
    let (all, running, paused, stopped) = s.engine.counts();
    let images = s
        .engine
        .images()
        .store()
        .images()
        .list()
        .map(|l| l.len())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<i64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let cgv2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let info = api::SystemInfo {
        id: "berth".into(),
        containers: all,
        containers_running: running,
        containers_paused: paused,
        containers_stopped: stopped,
        images: images as i64,
        driver: "overlay2".into(),
        driver_status: vec![vec!["Backing Filesystem".into(), "overlay".into()]],
        memory_limit: true,
        swap_limit: true,
        cpu_cfs_period: true,
        cpu_cfs_quota: true,
        cpu_shares: true,
        cpu_set: true,
        pids_limit: true,
        ipv4_forwarding: true,
        debug: s.debug,
        nfd: std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as i64)
            .unwrap_or(0),
        n_goroutines: 0,
        system_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        logging_driver: "json-file".into(),
        cgroup_driver: "cgroupfs".into(),
        cgroup_version: if cgv2 { "2" } else { "1" }.into(),
        n_events_listener: s.engine.events().listeners() as i64,
        kernel_version: kernel(),
        operating_system: "Linux".into(),
        os_version: String::new(),
        os_type: "linux".into(),
        architecture: std::env::consts::ARCH.into(),
        ncpu: std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1),
        mem_total: mem,
        docker_root_dir: s.engine.config().root.display().to_string(),
        name: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().to_string())
            .unwrap_or_default(),
        labels: Vec::new(),
        experimental_build: false,
        server_version: env!("CARGO_PKG_VERSION").into(),
        runtimes: [(
            "runc".to_string(),
            serde_json::json!({"path": s.engine.config().runtime.display().to_string()}),
        )]
        .into_iter()
        .collect(),
        default_runtime: "runc".into(),
        live_restore_enabled: true,
        isolation: String::new(),
        init_binary: String::new(),
        security_options: vec!["name=seccomp,profile=builtin".into()],
        warnings: Vec::new(),
    };
    let _ = s.started;
    json(StatusCode::OK, &info)
}

// ---------------------------------------------------------------- containers

async fn container_create(State(s): State<AppState>, Query(q): Q, body: Bytes) -> Res {
    let body: api::ContainerCreateBody = json_body(&body)?;
    let (id, warnings) = s
        .engine
        .create(q.get("name").map(String::as_str), body)
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &api::ContainerCreateResponse { id, warnings },
    ))
}

async fn container_list(State(s): State<AppState>, Query(q): Q) -> Res {
    let opts = ListOptions {
        all: qbool(&q, "all"),
        limit: qint(&q, "limit")?.filter(|l| *l > 0).unwrap_or(0) as usize,
        filters: filters(&q)?,
    };
    Ok(json(StatusCode::OK, &s.engine.list(&opts)?))
}

async fn container_inspect(State(s): State<AppState>, Path(id): Path<String>) -> Res {
    Ok(json(StatusCode::OK, &s.engine.inspect(&id)?))
}

async fn container_start(State(s): State<AppState>, Path(id): Path<String>) -> Res {
    match s.engine.start(&id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => Err(Error(
            ApiError::from_error(&e).not_modified_on_precondition(),
        )),
    }
}

async fn container_stop(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    match s
        .engine
        .stop(&id, qint(&q, "t")?, q.get("signal").map(String::as_str))
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => Err(Error(
            ApiError::from_error(&e).not_modified_on_precondition(),
        )),
    }
}

async fn container_restart(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    s.engine
        .restart(&id, qint(&q, "t")?, q.get("signal").map(String::as_str))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn container_kill(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    s.engine
        .kill(&id, q.get("signal").map(String::as_str))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn container_wait(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    let cond = WaitCondition::parse(q.get("condition").map(String::as_str).unwrap_or(""))?;
    let fut = s.engine.wait(&id, cond)?;
    let stream = futures::stream::once(async move {
        let body = match fut.await {
            Ok(code) => api::ContainerWaitResponse {
                status_code: code,
                error: None,
            },
            Err(e) => api::ContainerWaitResponse {
                status_code: -1,
                error: Some(api::WaitError {
                    message: e.to_string(),
                }),
            },
        };
        let mut v = serde_json::to_vec(&body).unwrap_or_default();
        v.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(v))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

async fn container_pause(State(s): State<AppState>, Path(id): Path<String>) -> Res {
    s.engine.pause(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn container_unpause(State(s): State<AppState>, Path(id): Path<String>) -> Res {
    s.engine.unpause(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn container_rename(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    let name = q.get("name").cloned().unwrap_or_default();
    s.engine.rename(&id, &name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn container_update(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Res {
    let u: api::ContainerUpdateBody = json_body(&body)?;
    let warnings = s.engine.update(&id, u)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"Warnings": warnings}),
    ))
}

async fn container_resize(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    let h = qint(&q, "h")?.unwrap_or(0).clamp(0, i64::from(u16::MAX)) as u16;
    let w = qint(&q, "w")?.unwrap_or(0).clamp(0, i64::from(u16::MAX)) as u16;
    s.engine.resize(&id, h, w)?;
    Ok(StatusCode::OK.into_response())
}

async fn container_top(State(s): State<AppState>, Path(id): Path<String>) -> Res {
    Ok(json(StatusCode::OK, &s.engine.top(&id)?))
}

async fn container_remove(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    s.engine
        .remove(&id, qbool(&q, "force"), qbool(&q, "v"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn container_prune(State(s): State<AppState>, Query(q): Q) -> Res {
    let f = filters(&q)?;
    let labels = f.get("label").cloned().unwrap_or_default();
    let ids = s.engine.prune(&labels).await?;
    Ok(json(
        StatusCode::OK,
        &api::ContainerPruneResponse {
            containers_deleted: ids,
            space_reclaimed: 0,
        },
    ))
}

fn parse_time(s: &str) -> Res<Option<f64>> {
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    if let Ok(v) = s.parse::<f64>() {
        return Ok(Some(v));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9))
        .map_err(|_| Error(ApiError::invalid(format!("invalid time value {s:?}"))))
}

async fn container_logs(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    let opts = engine::logs::LogOptions {
        stdout: qbool(&q, "stdout"),
        stderr: qbool(&q, "stderr"),
        follow: qbool(&q, "follow"),
        since: parse_time(q.get("since").map(String::as_str).unwrap_or(""))?,
        until: parse_time(q.get("until").map(String::as_str).unwrap_or(""))?,
        tail: match q.get("tail").map(String::as_str) {
            None | Some("") | Some("all") => None,
            Some(t) => Some(
                t.parse::<usize>()
                    .map_err(|_| Error(ApiError::invalid(format!("invalid tail value {t:?}"))))?,
            ),
        },
    };
    if !opts.stdout && !opts.stderr {
        return Err(Error(ApiError::invalid(
            "Bad parameters: you must choose at least one stream",
        )));
    }
    let timestamps = qbool(&q, "timestamps");
    let src = s.engine.log_source(&id)?;
    let tty = src.tty;
    let rx = engine::logs::stream(src, opts);
    let stream = tokio_stream_from(rx).map(move |e| {
        let e = e.map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut payload = Vec::with_capacity(e.line.len() + 40);
        if timestamps {
            payload.extend_from_slice(e.time.as_bytes());
            payload.push(b' ');
        }
        payload.extend_from_slice(&e.line);
        Ok::<_, std::io::Error>(if tty {
            Bytes::from(payload)
        } else {
            frame(e.stream, &payload)
        })
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            if tty {
                "application/vnd.docker.raw-stream"
            } else {
                "application/vnd.docker.multiplexed-stream"
            },
        )
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A Docker multiplexed-stream frame.
fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&[stream, 0, 0, 0]);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    Bytes::from(v)
}

fn wants_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp") || v.eq_ignore_ascii_case("h2c"))
}

fn upgrade_response(multiplexed: bool) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(
            header::CONTENT_TYPE,
            if multiplexed {
                "application/vnd.docker.multiplexed-stream"
            } else {
                "application/vnd.docker.raw-stream"
            },
        )
        .body(Body::empty())
        .unwrap_or_default()
}

async fn container_attach(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
    mut req: Request,
) -> Res {
    let tty = s.engine.is_tty(&id)?;
    let want_out = qbool(&q, "stdout");
    let want_err = qbool(&q, "stderr");
    let want_in = qbool(&q, "stdin");
    let stream_mode = qbool(&q, "stream") || !qbool(&q, "logs");
    let attach = s.engine.attach(&id).await?;
    let version = req
        .extensions()
        .get::<ApiVersion>()
        .copied()
        .unwrap_or_else(ApiVersion::current);
    let multiplexed = !tty;
    let _ = stream_mode;
    if wants_upgrade(&req) {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let io = TokioIo::new(upgraded);
            let mon = match attach {
                AttachStream::Connected(m) => m,
                AttachStream::Pending(rx) => match rx.await {
                    Ok(m) => m,
                    Err(_) => return,
                },
            };
            relay(io, mon, tty, want_out, want_err, want_in).await;
        });
        let _ = version;
        return Ok(upgrade_response(multiplexed));
    }
    // Without an upgrade, stream the output as the response body.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mon = match attach {
            AttachStream::Connected(m) => m,
            AttachStream::Pending(rx) => match rx.await {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        let (mut r, _w) = mon.into_split();
        while let Some((stream, data)) = read_frame(&mut r).await {
            if (stream == 1 && !want_out) || (stream == 2 && !want_err) {
                continue;
            }
            let b = if tty {
                Bytes::from(data)
            } else {
                frame(stream, &data)
            };
            if tx.send(Ok(b)).await.is_err() {
                break;
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            if multiplexed {
                "application/vnd.docker.multiplexed-stream"
            } else {
                "application/vnd.docker.raw-stream"
            },
        )
        .body(Body::from_stream(tokio_stream_from(rx)))
        .unwrap_or_default())
}

/// Reads one monitor frame.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h).await.ok()?;
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).await.ok()?;
    Some((h[0], data))
}

/// Relays between a hijacked client connection and a monitor attach stream.
async fn relay<C: AsyncRead + AsyncWrite + Send + 'static>(
    client: C,
    mon: tokio::net::UnixStream,
    tty: bool,
    want_out: bool,
    want_err: bool,
    want_in: bool,
) {
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut mr, mut mw) = mon.into_split();
    let input = tokio::spawn(async move {
        if !want_in {
            return;
        }
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if mw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = mw.shutdown().await;
        // Keep the write half alive (dropping it would not close the socket anyway).
        std::future::pending::<()>().await;
    });
    while let Some((stream, data)) = read_frame(&mut mr).await {
        if (stream == 1 && !want_out) || (stream == 2 && !want_err) {
            continue;
        }
        let ok = if tty {
            cw.write_all(&data).await
        } else {
            cw.write_all(&frame(stream, &data)).await
        };
        if ok.is_err() {
            break;
        }
    }
    let _ = cw.flush().await;
    let _ = cw.shutdown().await;
    input.abort();
}

// ---------------------------------------------------------------- archive

fn stat_header(st: &engine::archive::PathStat) -> HeaderValue {
    use base64::Engine as _;
    let j = serde_json::to_vec(st).unwrap_or_default();
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(j))
        .unwrap_or(HeaderValue::from_static(""))
}

fn archive_path(q: &HashMap<String, String>) -> Res<String> {
    q.get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| Error(ApiError::invalid("bad parameter: path cannot be empty")))
}

async fn archive_head(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    let path = archive_path(&q)?;
    let engine = s.engine.clone();
    let st = tokio::task::spawn_blocking(move || engine.archive_stat(&id, &path))
        .await
        .map_err(|e| Error(ApiError::internal(format!("archive: {e}"))))??;
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert("X-Docker-Container-Path-Stat", stat_header(&st));
    Ok(r)
}

async fn archive_get(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    let path = archive_path(&q)?;
    let engine = s.engine.clone();
    let (st, data) = tokio::task::spawn_blocking(move || engine.archive_get(&id, &path))
        .await
        .map_err(|e| Error(ApiError::internal(format!("archive: {e}"))))??;
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from(data))
        .unwrap_or_default();
    r.headers_mut()
        .insert("X-Docker-Container-Path-Stat", stat_header(&st));
    Ok(r)
}

async fn archive_put(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
    req: Request,
) -> Res {
    let path = archive_path(&q)?;
    let body = axum::body::to_bytes(req.into_body(), 8 << 30)
        .await
        .map_err(|e| Error(ApiError::invalid(format!("read body: {e}"))))?;
    let engine = s.engine.clone();
    tokio::task::spawn_blocking(move || engine.archive_put(&id, &path, &body))
        .await
        .map_err(|e| Error(ApiError::internal(format!("archive: {e}"))))??;
    Ok(StatusCode::OK.into_response())
}

// ---------------------------------------------------------------- exec

async fn exec_create(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Res {
    let cfg: api::ExecConfig = json_body(&body)?;
    let eid = s.engine.exec_create(&id, cfg)?;
    Ok(json(StatusCode::CREATED, &api::IdResponse { id: eid }))
}

async fn exec_inspect(State(s): State<AppState>, Path(id): Path<String>) -> Res {
    Ok(json(StatusCode::OK, &s.engine.exec_inspect(&id)?))
}

async fn exec_resize(State(s): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Res {
    let h = qint(&q, "h")?.unwrap_or(0).clamp(0, i64::from(u16::MAX)) as u16;
    let w = qint(&q, "w")?.unwrap_or(0).clamp(0, i64::from(u16::MAX)) as u16;
    s.engine.exec_resize(&id, h, w)?;
    Ok(StatusCode::OK.into_response())
}

async fn exec_start(State(s): State<AppState>, Path(id): Path<String>, mut req: Request) -> Res {
    let upgrade = wants_upgrade(&req);
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| Error(ApiError::invalid(format!("read body: {e}"))))?;
    let sc: api::ExecStartConfig = json_body(&body)?;
    let info = s.engine.exec_inspect(&id)?;
    s.engine
        .exec_set_console_size(&id, sc.console_size.as_deref());
    let mut proc = s.engine.exec_start(&id).await?;
    let engine = s.engine.clone();
    if let Some(master) = proc.console.take() {
        return exec_tty::serve(
            engine,
            id,
            proc,
            master,
            on_upgrade,
            sc.detach,
            info.open_stdin,
        );
    }
    if sc.detach {
        tokio::spawn(async move {
            let code = proc
                .child
                .wait()
                .await
                .ok()
                .and_then(|st| st.code())
                .unwrap_or(-1);
            engine.exec_finished(&id, i64::from(code));
        });
        return Ok(StatusCode::OK.into_response());
    }
    let stdin = proc.child.stdin.take();
    let stdout = proc.child.stdout.take();
    let stderr = proc.child.stderr.take();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    for (n, out) in [
        (
            1u8,
            stdout.map(|o| Box::new(o) as Box<dyn AsyncRead + Send + Unpin>),
        ),
        (
            2u8,
            stderr.map(|o| Box::new(o) as Box<dyn AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(mut out) = out else { continue };
        let tx = tx.clone();
        let want = if n == 1 {
            info.open_stdout
        } else {
            info.open_stderr
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(k) = out.read(&mut buf).await {
                if k == 0 {
                    break;
                }
                if want && tx.send(frame(n, &buf[..k])).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut child = proc.child;
    let finish = {
        let engine = engine.clone();
        let id = id.clone();
        async move {
            let code = child
                .wait()
                .await
                .ok()
                .and_then(|st| st.code())
                .unwrap_or(-1);
            engine.exec_finished(&id, i64::from(code));
        }
    };
    match on_upgrade {
        Some(on_upgrade) => {
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    finish.await;
                    return;
                };
                let io = TokioIo::new(upgraded);
                let (mut cr, mut cw) = tokio::io::split(io);
                let input = tokio::spawn(async move {
                    let Some(mut stdin) = stdin else { return };
                    let _ = tokio::io::copy(&mut cr, &mut stdin).await;
                    let _ = stdin.shutdown().await;
                });
                while let Some(b) = rx.recv().await {
                    if cw.write_all(&b).await.is_err() {
                        break;
                    }
                }
                finish.await;
                let _ = cw.flush().await;
                let _ = cw.shutdown().await;
                input.abort();
            });
            Ok(upgrade_response(true))
        }
        None => {
            drop(stdin);
            let (btx, brx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
            tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if btx.send(Ok(b)).await.is_err() {
                        break;
                    }
                }
                finish.await;
            });
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(
                    header::CONTENT_TYPE,
                    "application/vnd.docker.multiplexed-stream",
                )
                .body(Body::from_stream(tokio_stream_from(brx)))
                .unwrap_or_default())
        }
    }
}

// ---------------------------------------------------------------- images

fn image_summary(store: &store::Store, r: &store::ImageRecord) -> api::ImageSummary {
    let labels = store
        .images()
        .get_config(&r.id)
        .ok()
        .and_then(|c| c.config.and_then(|c| c.labels))
        .unwrap_or_default();
    api::ImageSummary {
        id: r.id.to_string(),
        parent_id: String::new(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        created: r.created.map(|c| c.timestamp()).unwrap_or(0),
        size: r.size as i64,
        shared_size: -1,
        virtual_size: None,
        labels,
        containers: -1,
    }
}

async fn image_list(State(s): State<AppState>, Query(q): Q) -> Res {
    let f = filters(&q)?;
    let store = s.engine.images().store();
    let list = store.images().list().map_err(EngineError::store)?;
    let all = qbool(&q, "all");
    let _ = all;
    let mut out = Vec::new();
    for r in &list {
        if let Some(d) = f.get("dangling") {
            let want = d.iter().any(|v| v == "true" || v == "1");
            if want != r.repo_tags.is_empty() {
                continue;
            }
        }
        if let Some(refs) = f.get("reference") {
            let ok = refs.iter().any(|p| {
                r.repo_tags
                    .iter()
                    .any(|t| t == p || t.starts_with(&format!("{p}:")) || glob_match(p, t))
            });
            if !ok {
                continue;
            }
        }
        out.push(image_summary(store, r));
    }
    Ok(json(StatusCode::OK, &out))
}

fn glob_match(pat: &str, s: &str) -> bool {
    if let Some((a, b)) = pat.split_once('*') {
        s.starts_with(a) && s.ends_with(b)
    } else {
        false
    }
}

fn image_inspect_of(s: &AppState, name: &str) -> Res<api::ImageInspect> {
    let store = s.engine.images().store();
    let rec = store
        .images()
        .lookup(name)
        .map_err(|_| EngineError::NoSuchImage(name.to_string()))?;
    let cfg = store
        .images()
        .get_config(&rec.id)
        .map_err(EngineError::store)?;
    Ok(api::ImageInspect {
        id: rec.id.to_string(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
        parent: String::new(),
        comment: cfg
            .history
            .last()
            .and_then(|h| h.comment.clone())
            .unwrap_or_default(),
        created: cfg.created.clone().unwrap_or_default(),
        author: cfg.author.clone().unwrap_or_default(),
        config: engine::images::docker_config(cfg.config.as_ref()),
        architecture: cfg.architecture.clone(),
        variant: cfg.variant.clone().unwrap_or_default(),
        os: cfg.os.clone(),
        size: rec.size as i64,
        graph_driver: api::GraphDriver {
            name: "overlay2".into(),
            data: Default::default(),
        },
        root_fs: api::RootFs {
            kind: "layers".into(),
            layers: rec.diff_ids.iter().map(|d| d.to_string()).collect(),
        },
        docker_version: String::new(),
    })
}

async fn image_get(State(s): State<AppState>, Path(rest): Path<String>) -> Res {
    if let Some(name) = rest.strip_suffix("/json") {
        return Ok(json(StatusCode::OK, &image_inspect_of(&s, name)?));
    }
    if let Some(name) = rest.strip_suffix("/history") {
        let store = s.engine.images().store();
        let rec = store
            .images()
            .lookup(name)
            .map_err(|_| EngineError::NoSuchImage(name.to_string()))?;
        let cfg = store
            .images()
            .get_config(&rec.id)
            .map_err(EngineError::store)?;
        let mut out = Vec::new();
        let n = cfg.history.len();
        for (i, h) in cfg.history.iter().enumerate().rev() {
            out.push(api::ImageHistoryItem {
                id: if i == n - 1 {
                    rec.id.to_string()
                } else {
                    "<missing>".into()
                },
                created: h
                    .created
                    .as_deref()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .map(|t| t.timestamp())
                    .unwrap_or(0),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: if i == n - 1 {
                    rec.repo_tags.clone()
                } else {
                    Vec::new()
                },
                size: 0,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        return Ok(json(StatusCode::OK, &out));
    }
    Err(Error(ApiError::not_found(format!(
        "page not found: /images/{rest}"
    ))))
}

async fn image_post(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
) -> Res {
    if let Some(name) = rest.strip_suffix("/push") {
        let full = match q.get("tag").filter(|t| !t.is_empty()) {
            Some(t) => format!("{name}:{t}"),
            None => name.to_string(),
        };
        return registry::push(&s.engine, &full, &headers);
    }
    if let Some(name) = rest.strip_suffix("/tag") {
        let repo = q.get("repo").cloned().unwrap_or_default();
        let tag = q
            .get("tag")
            .cloned()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "latest".into());
        let store = s.engine.images().store();
        let rec = store
            .images()
            .lookup(name)
            .map_err(|_| EngineError::NoSuchImage(name.to_string()))?;
        let full = if repo.contains('@') || repo.rsplit('/').next().is_some_and(|l| l.contains(':'))
        {
            repo.clone()
        } else {
            format!("{repo}:{tag}")
        };
        let r = store::Reference::parse(&full).map_err(|e| {
            Error(ApiError::invalid(format!(
                "invalid reference format {full:?}: {e}"
            )))
        })?;
        store
            .images()
            .tag(&rec.id, &r)
            .map_err(EngineError::store)?;
        let mut attrs = api::StringMap::new();
        attrs.insert("name".into(), full);
        s.engine
            .events()
            .publish("image", "tag", &rec.id.to_string(), attrs);
        return Ok(StatusCode::CREATED.into_response());
    }
    Err(Error(ApiError::not_found(format!(
        "page not found: /images/{rest}"
    ))))
}

async fn image_delete(State(s): State<AppState>, Path(name): Path<String>, Query(q): Q) -> Res {
    let force = qbool(&q, "force");
    let store = s.engine.images().store();
    let rec = store
        .images()
        .lookup(&name)
        .map_err(|_| EngineError::NoSuchImage(name.clone()))?;
    let users = s.engine.users_of_image(&rec.id.to_string());
    let only_ref = rec.references.len() <= 1 || !name_is_ref(&name, &rec);
    if !users.is_empty() && only_ref {
        if let Some((cid, _)) = users.iter().find(|(_, running)| *running) {
            {
                return Err(Error(ApiError::conflict(format!(
                    "conflict: unable to delete {name} (cannot be forced) - image is being used by running container {}",
                    &cid[..12]
                ))));
            }
        }
        if !force {
            return Err(Error(ApiError::conflict(format!(
                "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                &users[0].0[..12],
                &rec.id.hex()[..12]
            ))));
        }
    }
    let events = store
        .remove_image(&name, force)
        .map_err(EngineError::store)?;
    let mut out = Vec::new();
    for e in events {
        match e {
            store::RemoveEvent::Untagged(t) => {
                s.engine.events().publish(
                    "image",
                    "untag",
                    &rec.id.to_string(),
                    Default::default(),
                );
                out.push(api::ImageDeleteItem {
                    untagged: Some(t),
                    deleted: None,
                })
            }
            store::RemoveEvent::Deleted(d) => {
                s.engine
                    .events()
                    .publish("image", "delete", &d.to_string(), Default::default());
                out.push(api::ImageDeleteItem {
                    untagged: None,
                    deleted: Some(d.to_string()),
                })
            }
        }
    }
    Ok(json(StatusCode::OK, &out))
}

fn name_is_ref(name: &str, rec: &store::ImageRecord) -> bool {
    store::Reference::parse(name).ok().is_some_and(|r| {
        rec.references
            .iter()
            .any(|x| x.to_string() == r.to_string())
    })
}

async fn image_prune(State(s): State<AppState>, Query(q): Q) -> Res {
    let f = filters(&q)?;
    let dangling_only = f
        .get("dangling")
        .map(|v| !v.iter().any(|x| x == "false" || x == "0"))
        .unwrap_or(true);
    let store = s.engine.images().store().clone();
    let report = tokio::task::spawn_blocking(move || store.prune(dangling_only))
        .await
        .map_err(|e| Error(ApiError::internal(format!("prune: {e}"))))?
        .map_err(EngineError::store)?;
    let items = report
        .events
        .into_iter()
        .map(|e| match e {
            store::RemoveEvent::Untagged(t) => api::ImageDeleteItem {
                untagged: Some(t),
                deleted: None,
            },
            store::RemoveEvent::Deleted(d) => api::ImageDeleteItem {
                untagged: None,
                deleted: Some(d.to_string()),
            },
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &api::ImagePruneResponse {
            images_deleted: items,
            space_reclaimed: report.space_reclaimed,
        },
    ))
}

pub(crate) fn json_line(m: &api::JsonMessage) -> Bytes {
    let mut v = serde_json::to_vec(m).unwrap_or_default();
    v.extend_from_slice(b"\r\n");
    Bytes::from(v)
}

async fn image_create(State(s): State<AppState>, Query(q): Q, req: Request) -> Res {
    let from_src = q.get("fromSrc").cloned().unwrap_or_default();
    let from_image = q.get("fromImage").cloned().unwrap_or_default();
    let tag = q.get("tag").cloned().unwrap_or_default();
    if from_src == "-" {
        let repo = q.get("repo").cloned().unwrap_or_default();
        let body = axum::body::to_bytes(req.into_body(), 8 << 30)
            .await
            .map_err(|e| Error(ApiError::invalid(format!("read body: {e}"))))?;
        let reference = if repo.is_empty() {
            None
        } else {
            let full = if tag.is_empty() {
                repo.clone()
            } else {
                format!("{repo}:{tag}")
            };
            Some(store::Reference::parse(&full).map_err(|e| {
                Error(ApiError::invalid(format!(
                    "invalid reference format {full:?}: {e}"
                )))
            })?)
        };
        let changes: Vec<String> = q
            .get("changes")
            .map(|c| vec![c.clone()])
            .unwrap_or_default();
        let opts = store::ImportOptions {
            changes,
            reference,
            message: q.get("message").cloned(),
        };
        let store = s.engine.images().store().clone();
        let rec =
            tokio::task::spawn_blocking(move || store.import(std::io::Cursor::new(body), &opts))
                .await
                .map_err(|e| Error(ApiError::internal(format!("import: {e}"))))?
                .map_err(EngineError::store)?;
        s.engine
            .events()
            .publish("image", "import", &rec.id.to_string(), Default::default());
        let line = json_line(&api::JsonMessage::status(rec.id.to_string()));
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(line))
            .unwrap_or_default());
    }
    if !from_image.is_empty() {
        let name = if tag.is_empty() || from_image.contains('@') {
            from_image.clone()
        } else {
            format!("{from_image}:{tag}")
        };
        return registry::pull(&s.engine, &name, req.headers());
    }
    Err(Error(ApiError::invalid(
        "either fromSrc or fromImage must be given",
    )))
}

// ---------------------------------------------------------------- system

async fn system_df(State(s): State<AppState>) -> Res {
    let store = s.engine.images().store();
    let list = store.images().list().map_err(EngineError::store)?;
    let images: Vec<api::ImageSummary> = list.iter().map(|r| image_summary(store, r)).collect();
    let containers = s.engine.list(&ListOptions {
        all: true,
        ..Default::default()
    })?;
    let layers: i64 = images.iter().map(|i| i.size).sum();
    Ok(json(
        StatusCode::OK,
        &api::SystemDf {
            layers_size: layers,
            images,
            containers,
            volumes: Vec::new(),
            build_cache: Vec::new(),
        },
    ))
}

async fn events(State(s): State<AppState>, Query(q): Q) -> Res {
    let f = filters(&q)?;
    let until = parse_time(q.get("until").map(String::as_str).unwrap_or(""))?;
    let mut rx = s.engine.events().subscribe();
    let (tx, brx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let deadline = until.map(|u| {
            let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
            tokio::time::Instant::now()
                + std::time::Duration::from_millis(((u - now).max(0.0) * 1000.0) as u64)
        });
        loop {
            let ev = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(e) => e,
                    Err(_) => break,
                },
                None => tokio::select! {
                    e = rx.recv() => e,
                    _ = tx.closed() => break,
                },
            };
            let ev = match ev {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            };
            if !event_matches(&ev, &f) {
                continue;
            }
            let mut v = serde_json::to_vec(&ev).unwrap_or_default();
            v.push(b'\n');
            if tx.send(Ok(Bytes::from(v))).await.is_err() {
                break;
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(tokio_stream_from(brx)))
        .unwrap_or_default())
}

fn event_matches(ev: &api::EventMessage, f: &HashMap<String, Vec<String>>) -> bool {
    for (k, vals) in f {
        let ok = match k.as_str() {
            "type" => vals.contains(&ev.kind),
            "event" => vals.contains(&ev.action),
            "container" => {
                ev.kind == "container"
                    && vals.iter().any(|v| {
                        ev.actor.id.starts_with(v.as_str())
                            || ev.actor.attributes.get("name") == Some(v)
                    })
            }
            "image" => vals
                .iter()
                .any(|v| ev.actor.attributes.get("image") == Some(v) || ev.actor.id == *v),
            "label" => vals.iter().all(|l| match l.split_once('=') {
                Some((a, b)) => ev.actor.attributes.get(a).map(String::as_str) == Some(b),
                None => ev.actor.attributes.contains_key(l.as_str()),
            }),
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    true
}
