//! `POST /images/create?fromImage=` (pull), `POST /images/{name}/push` and `POST /auth`
//! (login check) over the distribution crate's registry client, streamed as docker's JSON
//! progress lines.
//!
//! Credentials: like dockerd, the daemon never reads a `config.json` of its own; a pull or
//! push uses only what the request carries in `X-Registry-Auth` (base64url JSON of docker's
//! `AuthConfig`: `username`/`password`, or `auth` = base64 `user:password`), and `/auth`
//! only verifies credentials against the registry — the client stores them.

use super::{json_line, AppState, Error, Res};
use api::{ApiError, JsonMessage, ProgressDetail};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use distribution::client::{ClientConfig, Credentials, Progress, ProgressStatus, RegistryClient};
use engine::Engine;

/// Docker's `AuthConfig` as sent in `X-Registry-Auth` and to `POST /auth`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct AuthConfig {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// base64 `user:password` (docker's config.json form).
    #[serde(default)]
    auth: String,
    #[serde(default, rename = "serveraddress")]
    server_address: String,
}

impl AuthConfig {
    /// The user name and password it carries, if any.
    pub(crate) fn credentials(&self) -> Option<Credentials> {
        if !self.username.is_empty() {
            return Some(Credentials {
                username: self.username.clone(),
                password: self.password.clone(),
            });
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .ok()?;
        let (u, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
        Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })
    }
}

/// Decodes an `X-Registry-Auth` header (base64url JSON, padded or not; plain base64 is
/// accepted too). A missing, empty or `{}` header means anonymous.
fn registry_auth(headers: &HeaderMap) -> Res<Option<Credentials>> {
    let Some(v) = headers.get("x-registry-auth") else {
        return Ok(None);
    };
    let v = v.to_str().unwrap_or("").trim();
    if v.is_empty() {
        return Ok(None);
    }
    let g = &base64::engine::general_purpose::URL_SAFE;
    let raw = g
        .decode(v)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(v))
        .map_err(|_| {
            Error(ApiError::invalid(
                "X-Registry-Auth header is not valid base64",
            ))
        })?;
    let cfg: AuthConfig = serde_json::from_slice(&raw).map_err(|e| {
        Error(ApiError::invalid(format!(
            "X-Registry-Auth header is not a valid auth config: {e}"
        )))
    })?;
    Ok(cfg.credentials())
}

/// A registry client for one request: no docker config of the daemon's own, and the
/// request's credentials for `domain`.
fn client_for(domain: &str, headers: &HeaderMap) -> Res<RegistryClient> {
    let client = RegistryClient::new(ClientConfig {
        use_docker_config: false,
        ..ClientConfig::default()
    })
    .map_err(|e| Error(ApiError::from_error(&e)))?;
    if let Some(c) = registry_auth(headers)? {
        client.set_credentials(domain, c);
    }
    Ok(client)
}

/// The registry host a server address names (of `/auth`, or a key of `X-Registry-Config`):
/// `https://index.docker.io/v1/` and empty mean Docker Hub.
pub(super) fn auth_domain(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or("");
    if host.is_empty() || host == "index.docker.io" || host == "registry-1.docker.io" {
        store::reference::DEFAULT_DOMAIN.to_string()
    } else {
        host.to_string()
    }
}

/// `POST /auth`: checks credentials against a registry (docker login); stores nothing.
pub(super) async fn auth(State(_s): State<AppState>, body: Bytes) -> Res {
    let cfg: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| Error(ApiError::invalid(format!("invalid auth config: {e}"))))?;
    let creds = cfg
        .credentials()
        .ok_or_else(|| Error(ApiError::invalid("auth config without a username")))?;
    let domain = auth_domain(&cfg.server_address);
    let client = RegistryClient::new(ClientConfig {
        use_docker_config: false,
        ..ClientConfig::default()
    })
    .map_err(|e| Error(ApiError::from_error(&e)))?;
    on_own_runtime(move || async move {
        client
            .verify_login(&domain, &creds.username, &creds.password)
            .await
    })
    .await
    .map_err(Error)?;
    let body = serde_json::json!({"Status": "Login Succeeded", "IdentityToken": ""});
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default())
}

fn short(d: &store::Digest) -> String {
    d.hex().chars().take(12).collect()
}

/// Docker's progress line for one blob event (`push` picks the push wording).
fn progress_line(p: &Progress, push: bool) -> JsonMessage {
    let id = Some(short(&p.digest));
    let (status, detail) = match &p.status {
        ProgressStatus::Waiting => (
            if push {
                "Preparing"
            } else {
                "Pulling fs layer"
            }
            .to_string(),
            None,
        ),
        ProgressStatus::Downloading { current, total } => (
            "Downloading".to_string(),
            Some(ProgressDetail {
                current: Some(*current),
                total: Some(*total),
            }),
        ),
        ProgressStatus::Uploading { current, total } => (
            "Pushing".to_string(),
            Some(ProgressDetail {
                current: Some(*current),
                total: Some(*total),
            }),
        ),
        ProgressStatus::Verifying => ("Verifying Checksum".to_string(), None),
        // For a pull, "Pull complete" follows once the layer is unpacked.
        ProgressStatus::Done => (
            if push { "Pushed" } else { "Download complete" }.to_string(),
            None,
        ),
        ProgressStatus::AlreadyExists => (
            if push {
                "Layer already exists"
            } else {
                "Already exists"
            }
            .to_string(),
            None,
        ),
        ProgressStatus::Retrying { attempt } => (format!("Retrying (attempt {attempt})"), None),
        ProgressStatus::Mounted { from } => (format!("Mounted from {from}"), None),
    };
    JsonMessage {
        id,
        status: Some(status),
        progress_detail: detail,
        ..Default::default()
    }
}

fn stream_response(mut rx: tokio::sync::mpsc::UnboundedReceiver<JsonMessage>) -> Response {
    use futures::StreamExt;
    let s = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|m| Ok::<Bytes, std::io::Error>(json_line(&m)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(s))
        .unwrap_or_default()
}

/// Runs a registry operation on its own single-threaded runtime in the blocking pool (the
/// client's futures are not `Send`).
async fn on_own_runtime<F, Fut, T, E>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>>,
    T: Send + 'static,
    E: std::error::Error + errkind::HasKind + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ApiError::internal(format!("start registry runtime: {e}")))?;
        rt.block_on(f()).map_err(|e| ApiError::from_error(&e))
    })
    .await
    .map_err(|e| ApiError::internal(format!("registry task: {e}")))?
}

fn parse_ref(name: &str) -> Res<store::Reference> {
    store::Reference::parse(name).map_err(|e| {
        Error(ApiError::invalid(format!(
            "invalid reference format {name:?}: {e}"
        )))
    })
}

/// Pulls `name` into the engine's store with the request's credentials, then unpacks its
/// layers (as docker does, so the image's size and first run are ready), streaming
/// progress.
pub(super) fn pull(engine: &Engine, name: &str, headers: &HeaderMap) -> Res<Response> {
    let reference = parse_ref(name)?;
    let client = client_for(&reference.domain, headers)?;
    let store = engine.images().store().clone();
    let images = store.images().clone();
    let events = engine.events().clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let shown = reference.familiar();
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    // The image this name meant before the pull (for "Image is up to date").
    let before = images.lookup(name).ok().map(|r| r.id);
    tokio::spawn(async move {
        let _ = tx.send(JsonMessage {
            id: Some(tag),
            ..JsonMessage::status("Pulling from ".to_string() + &reference.familiar_name())
        });
        // Layers downloaded by this pull: "Download complete" when fetched, "Pull complete"
        // once unpacked (as docker reports them).
        let downloaded = std::sync::Arc::new(std::sync::Mutex::new(Vec::<store::Digest>::new()));
        let ptx = tx.clone();
        let dl = downloaded.clone();
        let cb: Box<dyn Fn(Progress) + Send + Sync> = Box::new(move |p: Progress| {
            if matches!(p.status, ProgressStatus::Done) {
                dl.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(p.digest.clone());
            }
            let _ = ptx.send(progress_line(&p, false));
        });
        let res =
            on_own_runtime(move || async move { client.pull(&reference, &images, &*cb).await })
                .await;
        let res = match res {
            Ok(rec) => {
                let st = store.clone();
                tokio::task::spawn_blocking(move || st.unpack(&rec).map(|_| rec))
                    .await
                    .map_err(|e| ApiError::internal(format!("unpack task: {e}")))
                    .and_then(|r| r.map_err(|e| ApiError::from_error(&e)))
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(rec) => {
                let done = downloaded.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for l in rec.layers.iter().filter(|l| done.contains(&l.digest)) {
                    let _ = tx.send(JsonMessage {
                        id: Some(short(&l.digest)),
                        ..JsonMessage::status("Pull complete")
                    });
                }
                if let Some(d) = rec
                    .repo_digests
                    .first()
                    .and_then(|d| d.split_once('@'))
                    .map(|(_, d)| d.to_string())
                {
                    let _ = tx.send(JsonMessage::status(format!("Digest: {d}")));
                }
                let status = if before.as_ref() == Some(&rec.id) {
                    format!("Status: Image is up to date for {shown}")
                } else {
                    format!("Status: Downloaded newer image for {shown}")
                };
                let _ = tx.send(JsonMessage::status(status));
                let mut attrs = api::StringMap::new();
                attrs.insert("name".into(), shown.clone());
                events.publish("image", "pull", &shown, attrs);
            }
            Err(e) => {
                let _ = tx.send(JsonMessage::error(e.message));
            }
        }
    });
    Ok(stream_response(rx))
}

/// Pushes `name` from the engine's store with the request's credentials, streaming
/// progress.
pub(super) fn push(engine: &Engine, name: &str, headers: &HeaderMap) -> Res<Response> {
    let reference = parse_ref(name)?;
    if engine.images().store().images().lookup(name).is_err() {
        return Err(Error(ApiError::not_found(format!("No such image: {name}"))));
    }
    let client = client_for(&reference.domain, headers)?;
    let images = engine.images().store().images().clone();
    let content = images.content().clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = tx.send(JsonMessage::status(format!(
            "The push refers to repository [{}]",
            reference.familiar_name()
        )));
        let ptx = tx.clone();
        let cb: Box<dyn Fn(Progress) + Send + Sync> = Box::new(move |p: Progress| {
            let _ = ptx.send(progress_line(&p, true));
        });
        let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
        let res =
            on_own_runtime(move || async move { client.push(&reference, &images, &*cb).await })
                .await;
        match res {
            Ok(digest) => {
                // Docker's closing line: `<tag>: digest: <digest> size: <manifest bytes>`.
                let line = match content.size(&digest) {
                    Ok(n) => format!("{tag}: digest: {digest} size: {n}"),
                    Err(_) => format!("{tag}: digest: {digest}"),
                };
                let _ = tx.send(JsonMessage::status(line));
                let size = content.size(&digest).ok();
                let _ = tx.send(JsonMessage {
                    aux: Some(
                        serde_json::json!({"Tag": tag, "Digest": digest.to_string(), "Size": size}),
                    ),
                    ..Default::default()
                });
            }
            Err(e) => {
                let _ = tx.send(JsonMessage::error(e.message));
            }
        }
    });
    Ok(stream_response(rx))
}
