//! An OCI distribution-spec registry server (an axum [`Router`]) over storage on disk.
//!
//! Model: every blob and manifest lives once in a content store under the root directory,
//! keyed by digest; a repository is a set of links to blobs and manifests plus its tags
//! (the on-disk layout is documented in `storage.rs`). A pushed blob becomes visible only
//! after its digest was verified and the file renamed into the store; metadata files
//! are written with temp+fsync+rename, so a crash never leaves a half-written tag or a
//! blob under a wrong digest. Upload sessions are files appended to by `PATCH`, closed
//! by `PUT ?digest=`; they survive a server restart (the hash is then recomputed).
//!
//! Deleting a blob or manifest removes it from the repository only; the content store
//! keeps the data (garbage collection is the store's business).
//!
//! Authentication: optional HTTP basic against an htpasswd file with bcrypt entries;
//! every endpoint, `/v2/` included, then answers 401 with
//! `WWW-Authenticate: Basic realm="berth-registry"` to a request without valid credentials.

mod auth;
mod error;
mod storage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub use auth::HtpasswdError;
pub use error::{ApiError, Code};

use crate::media;
use crate::names::{valid_repository_name, valid_tag};
use storage::Storage;
use store::content::{BlobWriter, ContentError};
use store::Digest;

/// Realm sent in `WWW-Authenticate` challenges.
pub const REALM: &str = "berth-registry";

/// Why the registry server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The storage root could not be created or opened.
    #[error("open registry storage at {path}")]
    Storage {
        /// The root directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The htpasswd file could not be loaded.
    #[error("load htpasswd")]
    Htpasswd(#[from] HtpasswdError),
    /// The listening address could not be bound.
    #[error("bind registry address {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("serve registry on {addr}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl errkind::HasKind for ServeError {
    fn kind(&self) -> errkind::ErrorKind {
        match self {
            ServeError::Htpasswd(_) => errkind::ErrorKind::InvalidArgument,
            ServeError::Bind { .. } => errkind::ErrorKind::Unavailable,
            ServeError::Storage { .. } | ServeError::Serve { .. } => errkind::ErrorKind::Internal,
        }
    }
}

struct App {
    storage: Storage,
    auth: Option<auth::Htpasswd>,
}

/// Builds the registry router over storage rooted at `root` (created if missing), with
/// basic authentication when `htpasswd` names a file of bcrypt entries.
pub fn router(root: &Path, htpasswd: Option<&Path>) -> Result<Router, ServeError> {
    let storage = Storage::open(root).map_err(|source| ServeError::Storage {
        path: root.to_path_buf(),
        source,
    })?;
    let auth = match htpasswd {
        Some(p) => Some(auth::Htpasswd::load(p)?),
        None => None,
    };
    let app = Arc::new(App { storage, auth });
    Ok(Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*path}", any(dispatch))
        .layer(DefaultBodyLimit::disable())
        .with_state(app))
}

/// Serves the registry on `addr` until the process ends (see [`router`]).
pub async fn serve(
    addr: SocketAddr,
    root: PathBuf,
    htpasswd: Option<PathBuf>,
) -> Result<(), ServeError> {
    let app = router(&root, htpasswd.as_deref())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_listener(listener, app)
        .await
        .map_err(|source| ServeError::Serve { addr, source })
}

/// Serves a router on an already bound listener (lets tests bind port 0 first).
pub async fn serve_listener(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app).await
}

type Res = Result<Response, ApiError>;

/// What a `/v2/...` path addresses.
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    UploadStart(&'a str),
    Upload(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

fn parse_route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart(name));
    }
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest(name, last)),
        "referrers" => Some(Route::Referrers(name, last)),
        "blobs" => Some(Route::Blob(name, last)),
        "uploads" => {
            let name = name.strip_suffix("/blobs")?;
            Some(Route::Upload(name, last))
        }
        _ => None,
    }
}

async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(a) = &app.auth {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !a.check(value).await {
            return ApiError::new(Code::Unauthorized, "authentication required")
                .header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"berth-registry\""),
                )
                .into_response();
        }
    }
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let q = Query(&query);
    let result = match parse_route(uri.path()) {
        None => {
            Err(ApiError::new(Code::NameInvalid, "unknown endpoint").status(StatusCode::NOT_FOUND))
        }
        Some(route) => handle(&app, &method, route, &q, &headers, body).await,
    };
    let mut resp = result.unwrap_or_else(|e| e.into_response());
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

struct Query<'a>(&'a [(String, String)]);

impl Query<'_> {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, b)| b.as_str())
    }
    fn all<'s>(&'s self, k: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.0
            .iter()
            .filter(move |(a, _)| a == k)
            .map(|(_, b)| b.as_str())
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_repository_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(Code::NameInvalid, "invalid repository name")
            .detail(serde_json::json!({ "name": name })))
    }
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(|_| {
        ApiError::new(Code::DigestInvalid, "invalid or unsupported digest")
            .detail(serde_json::json!({ "digest": s }))
    })
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn unsupported() -> ApiError {
    ApiError::new(Code::Unsupported, "method not allowed on this endpoint")
}

async fn handle(
    app: &App,
    method: &Method,
    route: Route<'_>,
    q: &Query<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Res {
    match route {
        Route::Base => match *method {
            Method::GET | Method::HEAD => Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{}",
            )
                .into_response()),
            _ => Err(unsupported()),
        },
        Route::Catalog => match *method {
            Method::GET => catalog(app, q).await,
            _ => Err(unsupported()),
        },
        Route::Tags(name) => {
            check_name(name)?;
            match *method {
                Method::GET => tags_list(app, name, q).await,
                _ => Err(unsupported()),
            }
        }
        Route::Manifest(name, reference) => {
            check_name(name)?;
            match *method {
                Method::GET => get_manifest(app, name, reference, headers, true).await,
                Method::HEAD => get_manifest(app, name, reference, headers, false).await,
                Method::PUT => put_manifest(app, name, reference, q, headers, body).await,
                Method::DELETE => delete_manifest(app, name, reference).await,
                _ => Err(unsupported()),
            }
        }
        Route::Blob(name, digest) => {
            check_name(name)?;
            match *method {
                Method::GET => get_blob(app, name, digest, headers, true).await,
                Method::HEAD => get_blob(app, name, digest, headers, false).await,
                Method::DELETE => delete_blob(app, name, digest).await,
                _ => Err(unsupported()),
            }
        }
        Route::UploadStart(name) => {
            check_name(name)?;
            match *method {
                Method::POST => start_upload(app, name, q, body).await,
                _ => Err(unsupported()),
            }
        }
        Route::Upload(name, id) => {
            check_name(name)?;
            if !storage::valid_upload_id(id) {
                return Err(upload_unknown(id));
            }
            match *method {
                Method::GET => upload_status(app, name, id).await,
                Method::PATCH => patch_upload(app, name, id, headers, body).await,
                Method::PUT => put_upload(app, name, id, q, headers, body).await,
                Method::DELETE => cancel_upload(app, name, id).await,
                _ => Err(unsupported()),
            }
        }
        Route::Referrers(name, digest) => {
            check_name(name)?;
            match *method {
                Method::GET => referrers(app, name, digest, q).await,
                _ => Err(unsupported()),
            }
        }
    }
}

// ---------------------------------------------------------------- listing

/// Parses `n` and `last`; returns the page and whether more follow.
fn paginate(all: Vec<String>, q: &Query<'_>) -> Result<(Vec<String>, Option<String>), ApiError> {
    let n = match q.get("n") {
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            ApiError::new(Code::Unsupported, "invalid n").status(StatusCode::BAD_REQUEST)
        })?),
        None => None,
    };
    let mut items: Vec<String> = match q.get("last") {
        Some(last) => all.into_iter().filter(|t| t.as_str() > last).collect(),
        None => all,
    };
    let mut next = None;
    if let Some(n) = n {
        if items.len() > n {
            items.truncate(n);
            if n > 0 {
                next = items.last().cloned();
            }
        }
    }
    Ok((items, next))
}

fn json_response(body: serde_json::Value, link: Option<String>) -> Response {
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(l) = link {
        r.headers_mut().insert(header::LINK, hv(&l));
    }
    r
}

async fn tags_list(app: &App, name: &str, q: &Query<'_>) -> Res {
    if !app.storage.repo_exists(name) {
        return Err(
            ApiError::new(Code::NameUnknown, "repository name not known to registry")
                .detail(serde_json::json!({ "name": name })),
        );
    }
    let tags = app
        .storage
        .tags(name)
        .map_err(|e| ApiError::internal("list tags", e))?;
    let n = q.get("n").map(str::to_string);
    let (page, next) = paginate(tags, q)?;
    let link = next.map(|last| {
        format!(
            "</v2/{name}/tags/list?n={}&last={last}>; rel=\"next\"",
            n.unwrap_or_default()
        )
    });
    Ok(json_response(
        serde_json::json!({ "name": name, "tags": page }),
        link,
    ))
}

async fn catalog(app: &App, q: &Query<'_>) -> Res {
    let repos = app
        .storage
        .repositories()
        .map_err(|e| ApiError::internal("list repositories", e))?;
    let n = q.get("n").map(str::to_string);
    let (page, next) = paginate(repos, q)?;
    let link = next.map(|last| {
        format!(
            "</v2/_catalog?n={}&last={last}>; rel=\"next\"",
            n.unwrap_or_default()
        )
    });
    Ok(json_response(
        serde_json::json!({ "repositories": page }),
        link,
    ))
}

// ---------------------------------------------------------------- blobs

fn blob_unknown(d: &str) -> ApiError {
    ApiError::new(Code::BlobUnknown, "blob unknown to registry")
        .detail(serde_json::json!({ "digest": d }))
}

/// Parses a `Range: bytes=a-b` header against a blob of `size` bytes.
fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let suffix: u64 = b.parse().ok()?;
        if suffix == 0 {
            return None;
        }
        (size.saturating_sub(suffix), size.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?)
        };
        (start, end)
    };
    (start <= end && end < size).then_some((start, end))
}

async fn get_blob(app: &App, name: &str, digest: &str, headers: &HeaderMap, body: bool) -> Res {
    let d = parse_digest(digest)?;
    if !app.storage.blob_linked(name, &d) {
        return Err(blob_unknown(digest));
    }
    let file = app
        .storage
        .content()
        .open_blob(&d)
        .map_err(|_| blob_unknown(digest))?;
    let mut file = tokio::fs::File::from_std(file);
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal("stat blob", e))?
        .len();
    let mut status = StatusCode::OK;
    let (start, len) = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if body || size > 0 => match parse_range(r, size) {
            Some((s, e)) => {
                status = StatusCode::PARTIAL_CONTENT;
                (s, e - s + 1)
            }
            None => {
                return Ok(Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .body(Body::empty())
                    .unwrap_or_default())
            }
        },
        _ => (0, size),
    };
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("Docker-Content-Digest", d.to_string())
        .header(header::ETAG, format!("\"{d}\""));
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", start, start + len - 1, size),
        );
    }
    let out = if body {
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| ApiError::internal("seek blob", e))?;
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
        Body::from_stream(stream)
    } else {
        Body::empty()
    };
    b.body(out)
        .map_err(|e| ApiError::internal("build response", e))
}

async fn delete_blob(app: &App, name: &str, digest: &str) -> Res {
    let d = parse_digest(digest)?;
    if !app
        .storage
        .unlink_blob(name, &d)
        .map_err(|e| ApiError::internal("unlink blob", e))?
    {
        return Err(blob_unknown(digest));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

// ---------------------------------------------------------------- uploads

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(Code::BlobUploadUnknown, "blob upload unknown to registry")
        .detail(serde_json::json!({ "uuid": id }))
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn upload_accepted(name: &str, id: &str, offset: u64, status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, upload_location(name, id))
        .header(header::RANGE, range_header(offset))
        .header("Docker-Upload-UUID", id)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .unwrap_or_default()
}

fn blob_created(name: &str, d: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/blobs/{d}"))
        .header("Docker-Content-Digest", d.to_string())
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .unwrap_or_default()
}

/// Streams `body` into a content store writer on a blocking thread; returns the writer
/// (so the caller can commit it or keep it for the next chunk), the bytes written, and the
/// body error if the request ended early. Bytes already written stay in the writer, so
/// the client may resume from the reported offset.
async fn stream_into(
    mut w: BlobWriter,
    body: Body,
) -> Result<(BlobWriter, u64, Option<ApiError>), ApiError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut n = 0u64;
        while let Some(b) = rx.blocking_recv() {
            if let Err(e) = w.write_all(&b) {
                return (w, n, Some(e));
            }
            n += b.len() as u64;
        }
        let res = w.flush().err();
        (w, n, res)
    });
    let mut stream = body.into_data_stream();
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(
                    ApiError::new(Code::BlobUploadInvalid, "request body ended early")
                        .detail(serde_json::json!({ "error": e.to_string() })),
                );
                break;
            }
        }
    }
    drop(tx);
    let (w, n, io_err) = writer
        .await
        .map_err(|e| ApiError::internal("write upload", e))?;
    if let Some(e) = io_err {
        return Err(ApiError::internal("write upload", e));
    }
    Ok((w, n, failed))
}

/// Opens a content store writer on a blocking thread.
async fn open_writer(app: &App, key: String) -> Result<BlobWriter, ApiError> {
    let content = app.storage.content().clone();
    match tokio::task::spawn_blocking(move || content.writer(&key)).await {
        Ok(Ok(w)) => Ok(w),
        Ok(Err(e)) => Err(ApiError::internal("open upload", e)),
        Err(e) => Err(ApiError::internal("open upload", e)),
    }
}

/// Commits a writer against `d` on a blocking thread: `Ok(false)` on a digest mismatch
/// (the data is then discarded by the store).
async fn commit_writer(w: BlobWriter, d: &Digest) -> Result<Result<(), ApiError>, ApiError> {
    let want = d.clone();
    match tokio::task::spawn_blocking(move || w.commit(None, Some(&want))).await {
        Ok(Ok(_)) => Ok(Ok(())),
        Ok(Err(ContentError::DigestMismatch { expected, actual })) => {
            Ok(Err(digest_mismatch(&expected, &actual)))
        }
        Ok(Err(e)) => Err(ApiError::internal("commit blob", e)),
        Err(e) => Err(ApiError::internal("commit blob", e)),
    }
}

async fn start_upload(app: &App, name: &str, q: &Query<'_>, body: Body) -> Res {
    if let Some(mount) = q.get("mount") {
        let d = parse_digest(mount)?;
        let available = match q.get("from") {
            Some(from) => valid_repository_name(from) && app.storage.blob_linked(from, &d),
            None => false,
        };
        if available {
            app.storage
                .link_blob(name, &d)
                .map_err(|e| ApiError::internal("link blob", e))?;
            return Ok(blob_created(name, &d));
        }
        // Not mountable: fall back to a regular upload session (spec: 202).
    } else if let Some(digest) = q.get("digest") {
        let d = parse_digest(digest)?;
        let w = open_writer(app, storage::upload_ref_key(&app.storage.new_id())).await?;
        let (w, _, failed) = stream_into(w, body).await?;
        if let Some(e) = failed {
            let _ = tokio::task::spawn_blocking(move || w.abort()).await;
            return Err(e);
        }
        commit_writer(w, &d).await??;
        app.storage
            .link_blob(name, &d)
            .map_err(|e| ApiError::internal("link blob", e))?;
        return Ok(blob_created(name, &d));
    }
    let id = app
        .storage
        .start_upload(name)
        .map_err(|e| ApiError::internal("start upload", e))?;
    let mut r = upload_accepted(name, &id, 0, StatusCode::ACCEPTED);
    r.headers_mut()
        .insert("OCI-Chunk-Min-Length", HeaderValue::from_static("0"));
    Ok(r)
}

fn digest_mismatch(want: &Digest, got: &Digest) -> ApiError {
    ApiError::new(
        Code::DigestInvalid,
        "provided digest did not match uploaded content",
    )
    .detail(serde_json::json!({ "expected": want.to_string(), "actual": got.to_string() }))
}

/// Parses `Content-Range: <start>-<end>` (with or without a `bytes ` prefix).
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(Code::BlobUploadInvalid, "invalid Content-Range")
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or("");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if b < a {
        return Err(bad());
    }
    Ok(Some((a, b)))
}

/// Appends a request body to an upload session, checking `Content-Range` order and,
/// when both are given, that it agrees with `Content-Length`. Leaves the session's
/// writer in `sess` and returns the new offset.
async fn append_chunk(
    app: &App,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    sess: &mut storage::Session,
) -> Result<u64, ApiError> {
    if !app.storage.upload_exists(name, id) {
        return Err(upload_unknown(id));
    }
    let w = match sess.writer.take() {
        Some(w) => w,
        None => open_writer(app, storage::upload_ref_key(id)).await?,
    };
    let offset = w.offset();
    let range = content_range(headers)?;
    if let Some((start, end)) = range {
        let mut err = None;
        if start != offset {
            err = Some(
                ApiError::new(Code::BlobUploadInvalid, "chunk out of order")
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .detail(serde_json::json!({ "expected_offset": offset, "got": start })),
            );
        } else if let Some(len) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len != end - start + 1 {
                err = Some(ApiError::new(
                    Code::SizeInvalid,
                    "Content-Length does not match Content-Range",
                ));
            }
        }
        if let Some(e) = err {
            sess.writer = Some(w);
            return Err(e
                .header(header::LOCATION, hv(&upload_location(name, id)))
                .header(header::RANGE, hv(&range_header(offset))));
        }
    }
    let (w, _, failed) = stream_into(w, body).await?;
    let new_len = w.offset();
    sess.writer = Some(w);
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(new_len)
}

async fn patch_upload(app: &App, name: &str, id: &str, headers: &HeaderMap, body: Body) -> Res {
    let lock = app.storage.session(id);
    let mut sess = lock.lock().await;
    let offset = append_chunk(app, name, id, headers, body, &mut sess).await?;
    Ok(upload_accepted(name, id, offset, StatusCode::ACCEPTED))
}

async fn put_upload(
    app: &App,
    name: &str,
    id: &str,
    q: &Query<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Res {
    let digest = q
        .get("digest")
        .ok_or_else(|| ApiError::new(Code::DigestInvalid, "digest query parameter required"))?;
    let d = parse_digest(digest)?;
    let lock = app.storage.session(id);
    let mut sess = lock.lock().await;
    append_chunk(app, name, id, headers, body, &mut sess).await?;
    let w = sess
        .writer
        .take()
        .ok_or_else(|| ApiError::internal("close upload", "no writer"))?;
    let committed = commit_writer(w, &d).await?;
    let _ = app.storage.end_upload(name, id);
    committed?;
    app.storage
        .link_blob(name, &d)
        .map_err(|e| ApiError::internal("link blob", e))?;
    Ok(blob_created(name, &d))
}

async fn upload_status(app: &App, name: &str, id: &str) -> Res {
    if !app.storage.upload_exists(name, id) {
        return Err(upload_unknown(id));
    }
    let lock = app.storage.session(id);
    let sess = lock.lock().await;
    let offset = match &sess.writer {
        Some(w) => w.offset(),
        None => app.storage.upload_offset(id),
    };
    Ok(upload_accepted(name, id, offset, StatusCode::NO_CONTENT))
}

async fn cancel_upload(app: &App, name: &str, id: &str) -> Res {
    if !app.storage.upload_exists(name, id) {
        return Err(upload_unknown(id));
    }
    let lock = app.storage.session(id);
    let mut sess = lock.lock().await;
    let w = match sess.writer.take() {
        Some(w) => w,
        None => open_writer(app, storage::upload_ref_key(id)).await?,
    };
    let _ = tokio::task::spawn_blocking(move || w.abort()).await;
    app.storage
        .end_upload(name, id)
        .map_err(|e| ApiError::internal("cancel upload", e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- manifests

fn manifest_unknown(r: &str) -> ApiError {
    ApiError::new(Code::ManifestUnknown, "manifest unknown to registry")
        .detail(serde_json::json!({ "reference": r }))
}

fn manifest_invalid(why: &str) -> ApiError {
    ApiError::new(Code::ManifestInvalid, format!("manifest invalid: {why}"))
}

/// Resolves a tag or digest reference of `name` to a digest.
fn resolve(app: &App, name: &str, reference: &str) -> Result<Digest, ApiError> {
    if reference.contains(':') {
        parse_digest(reference)
    } else if valid_tag(reference) {
        app.storage.tag(name, reference).ok_or_else(|| {
            if app.storage.repo_exists(name) {
                manifest_unknown(reference)
            } else {
                ApiError::new(Code::NameUnknown, "repository name not known to registry")
                    .detail(serde_json::json!({ "name": name }))
            }
        })
    } else {
        Err(manifest_invalid("invalid tag").detail(serde_json::json!({ "tag": reference })))
    }
}

/// Whether an `Accept` header admits media type `mt` (absent or empty accepts all).
fn accepts(headers: &HeaderMap, mt: &str) -> bool {
    let mut any = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(',') {
            let e = media::essence(part);
            if e.is_empty() {
                continue;
            }
            any = true;
            if e == mt || e == "*/*" || e == "application/*" {
                return true;
            }
        }
    }
    !any
}

async fn get_manifest(
    app: &App,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: bool,
) -> Res {
    let d = resolve(app, name, reference)?;
    let mt = app
        .storage
        .manifest_media_type(name, &d)
        .ok_or_else(|| manifest_unknown(reference))?;
    if !accepts(headers, &mt) {
        return Err(manifest_unknown(reference).detail(serde_json::json!({
            "reference": reference,
            "reason": format!("manifest media type {mt} not in Accept"),
        })));
    }
    let limit = media::MAX_MANIFEST_SIZE as u64;
    let data = app
        .storage
        .read_blob(&d, limit)
        .map_err(|e| ApiError::internal("read manifest", e))?;
    let b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, mt)
        .header(header::CONTENT_LENGTH, data.len())
        .header("Docker-Content-Digest", d.to_string())
        .header(header::ETAG, format!("\"{d}\""));
    b.body(if body {
        Body::from(data)
    } else {
        Body::empty()
    })
    .map_err(|e| ApiError::internal("build response", e))
}

/// A descriptor's digest, required to be sha256.
fn descriptor_digest(v: &serde_json::Value) -> Result<Digest, ApiError> {
    let s = v
        .get("digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| manifest_invalid("descriptor without digest"))?;
    if v.get("size").and_then(|s| s.as_u64()).is_none() {
        return Err(manifest_invalid("descriptor without size"));
    }
    Digest::parse(s).map_err(|_| {
        manifest_invalid("invalid descriptor digest").detail(serde_json::json!({ "digest": s }))
    })
}

fn blob_missing(d: &Digest) -> ApiError {
    ApiError::new(
        Code::ManifestBlobUnknown,
        "manifest references a manifest or blob unknown to registry",
    )
    .detail(serde_json::json!({ "digest": d.to_string() }))
}

async fn put_manifest(
    app: &App,
    name: &str,
    reference: &str,
    q: &Query<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Res {
    let data = axum::body::to_bytes(body, media::MAX_MANIFEST_SIZE)
        .await
        .map_err(|_| {
            ApiError::new(Code::SizeInvalid, "manifest larger than 4 MiB")
                .status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
    let v: serde_json::Value =
        serde_json::from_slice(&data).map_err(|_| manifest_invalid("not JSON"))?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err(manifest_invalid("schemaVersion must be 2"));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media::essence)
        .filter(|s| !s.is_empty());
    let body_mt = v.get("mediaType").and_then(|m| m.as_str());
    let mt = match (body_mt, ct) {
        (Some(b), Some(c)) if b != c && c != "application/json" => {
            return Err(manifest_invalid("mediaType does not match Content-Type"))
        }
        (Some(b), _) => b.to_string(),
        (None, Some(c)) if c != "application/json" => c.to_string(),
        (None, _) if v.get("manifests").is_some() => media::OCI_INDEX.to_string(),
        (None, _) => media::OCI_MANIFEST.to_string(),
    };
    if media::is_manifest(&mt) {
        let config = v
            .get("config")
            .ok_or_else(|| manifest_invalid("no config"))?;
        let mut refs = vec![descriptor_digest(config)?];
        let layers = v
            .get("layers")
            .and_then(|l| l.as_array())
            .ok_or_else(|| manifest_invalid("no layers array"))?;
        for l in layers {
            let d = descriptor_digest(l)?;
            let foreign = l
                .get("urls")
                .and_then(|u| u.as_array())
                .is_some_and(|u| !u.is_empty());
            if !foreign {
                refs.push(d);
            }
        }
        for d in &refs {
            if !app.storage.blob_linked(name, d) {
                return Err(blob_missing(d));
            }
        }
    } else if media::is_index(&mt) {
        let ms = v
            .get("manifests")
            .and_then(|l| l.as_array())
            .ok_or_else(|| manifest_invalid("no manifests array"))?;
        for m in ms {
            let d = descriptor_digest(m)?;
            if app.storage.manifest_media_type(name, &d).is_none() {
                return Err(blob_missing(&d));
            }
        }
    } else {
        return Err(manifest_invalid("unsupported media type")
            .detail(serde_json::json!({ "mediaType": mt })));
    }
    let d = Digest::sha256_of(&data);
    let mut tags = Vec::new();
    if reference.contains(':') {
        let want = parse_digest(reference)?;
        if want != d {
            return Err(digest_mismatch(&want, &d));
        }
    } else if valid_tag(reference) {
        tags.push(reference.to_string());
    } else {
        return Err(manifest_invalid("invalid tag").detail(serde_json::json!({ "tag": reference })));
    }
    for t in q.all("tag") {
        if !valid_tag(t) {
            return Err(manifest_invalid("invalid tag").detail(serde_json::json!({ "tag": t })));
        }
        tags.push(t.to_string());
    }
    let subject = match v.get("subject") {
        Some(s) if !s.is_null() => Some(descriptor_digest(s)?),
        _ => None,
    };
    app.storage
        .put_manifest(name, &d, &mt, &data)
        .map_err(|e| ApiError::internal("store manifest", e))?;
    if let Some(subject) = &subject {
        let mut desc = serde_json::json!({
            "mediaType": mt,
            "digest": d.to_string(),
            "size": data.len(),
        });
        let artifact = v
            .get("artifactType")
            .and_then(|a| a.as_str())
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .or_else(|| {
                if media::is_manifest(&mt) {
                    v.pointer("/config/mediaType")
                        .and_then(|a| a.as_str())
                        .map(str::to_string)
                } else {
                    None
                }
            });
        if let Some(a) = artifact {
            desc["artifactType"] = a.into();
        }
        if let Some(a) = v.get("annotations").filter(|a| a.is_object()) {
            desc["annotations"] = a.clone();
        }
        app.storage
            .add_referrer(name, subject, &d, desc.to_string().as_bytes())
            .map_err(|e| ApiError::internal("record referrer", e))?;
    }
    for t in &tags {
        app.storage
            .set_tag(name, t, &d)
            .map_err(|e| ApiError::internal("set tag", e))?;
    }
    let mut b = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/manifests/{d}"))
        .header("Docker-Content-Digest", d.to_string())
        .header(header::CONTENT_LENGTH, 0);
    if let Some(s) = subject {
        b = b.header("OCI-Subject", s.to_string());
    }
    b.body(Body::empty())
        .map_err(|e| ApiError::internal("build response", e))
}

async fn delete_manifest(app: &App, name: &str, reference: &str) -> Res {
    if reference.contains(':') {
        let d = parse_digest(reference)?;
        if !app
            .storage
            .delete_manifest(name, &d)
            .map_err(|e| ApiError::internal("delete manifest", e))?
        {
            return Err(manifest_unknown(reference));
        }
    } else {
        if !valid_tag(reference) {
            return Err(manifest_invalid("invalid tag"));
        }
        if !app
            .storage
            .delete_tag(name, reference)
            .map_err(|e| ApiError::internal("delete tag", e))?
        {
            return Err(manifest_unknown(reference));
        }
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn referrers(app: &App, name: &str, digest: &str, q: &Query<'_>) -> Res {
    let d = Digest::parse(digest).map_err(|_| {
        ApiError::new(Code::DigestInvalid, "invalid digest")
            .detail(serde_json::json!({ "digest": digest }))
    })?;
    let filter = q.get("artifactType");
    let mut manifests = Vec::new();
    for raw in app
        .storage
        .referrers(name, &d)
        .map_err(|e| ApiError::internal("list referrers", e))?
    {
        let Ok(desc) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            continue;
        };
        if let Some(f) = filter {
            if desc.get("artifactType").and_then(|a| a.as_str()) != Some(f) {
                continue;
            }
        }
        manifests.push(desc);
    }
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, media::OCI_INDEX)],
        body.to_string(),
    )
        .into_response();
    if filter.is_some() {
        r.headers_mut().insert(
            "OCI-Filters-Applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(parse_route("/v2/"), Some(Route::Base)));
        assert!(matches!(parse_route("/v2/_catalog"), Some(Route::Catalog)));
        assert!(matches!(
            parse_route("/v2/a/b/tags/list"),
            Some(Route::Tags("a/b"))
        ));
        assert!(matches!(
            parse_route("/v2/a/b/manifests/latest"),
            Some(Route::Manifest("a/b", "latest"))
        ));
        assert!(matches!(
            parse_route("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart("a"))
        ));
        assert!(matches!(
            parse_route("/v2/x/y/blobs/uploads/abc-1"),
            Some(Route::Upload("x/y", "abc-1"))
        ));
        assert!(matches!(
            parse_route("/v2/x/blobs/sha256:00"),
            Some(Route::Blob("x", "sha256:00"))
        ));
        assert!(matches!(
            parse_route("/v2/x/referrers/sha256:00"),
            Some(Route::Referrers("x", "sha256:00"))
        ));
        assert!(parse_route("/v2/x/other/y").is_none());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-1000", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(accepts(&h, media::OCI_INDEX));
        h.append(header::ACCEPT, hv(media::DOCKER_MANIFEST));
        h.append(
            header::ACCEPT,
            hv("application/vnd.oci.image.manifest.v1+json; q=0.9"),
        );
        assert!(accepts(&h, media::OCI_MANIFEST));
        assert!(!accepts(&h, media::OCI_INDEX));
    }
}
