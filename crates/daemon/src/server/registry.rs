//! `POST /images/create?fromImage=` (pull) and `POST /images/{name}/push` over the
//! distribution crate's registry client, streamed as docker's JSON progress lines.

use super::{json_line, Error, Res};
use api::{ApiError, JsonMessage, ProgressDetail};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use distribution::client::{ClientConfig, Progress, ProgressStatus, RegistryClient};
use engine::Engine;

fn short(d: &store::Digest) -> String {
    d.hex().chars().take(12).collect()
}

/// Docker's progress line for one blob event (`push` picks the push wording).
fn progress_line(p: &Progress, push: bool) -> JsonMessage {
    let id = Some(short(&p.digest));
    let (status, detail) = match &p.status {
        ProgressStatus::Waiting => ("Waiting".to_string(), None),
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
        ProgressStatus::Done => (
            if push { "Pushed" } else { "Pull complete" }.to_string(),
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

/// Pulls `name` into the engine's store, streaming progress.
pub(super) fn pull(engine: &Engine, name: &str) -> Res<Response> {
    let reference = parse_ref(name)?;
    let client = RegistryClient::new(ClientConfig::default())
        .map_err(|e| Error(ApiError::from_error(&e)))?;
    let images = engine.images().store().images().clone();
    let events = engine.events().clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let shown = reference.familiar();
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    tokio::spawn(async move {
        let _ = tx.send(JsonMessage {
            id: Some(tag),
            ..JsonMessage::status("Pulling from ".to_string() + &reference.familiar_name())
        });
        let ptx = tx.clone();
        let cb: Box<dyn Fn(Progress) + Send + Sync> = Box::new(move |p: Progress| {
            let _ = ptx.send(progress_line(&p, false));
        });
        let res =
            on_own_runtime(move || async move { client.pull(&reference, &images, &*cb).await })
                .await;
        match res {
            Ok(rec) => {
                if let Some(d) = rec
                    .repo_digests
                    .first()
                    .and_then(|d| d.split_once('@'))
                    .map(|(_, d)| d.to_string())
                {
                    let _ = tx.send(JsonMessage::status(format!("Digest: {d}")));
                }
                let _ = tx.send(JsonMessage::status(format!(
                    "Status: Downloaded newer image for {shown}"
                )));
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

/// Pushes `name` from the engine's store, streaming progress.
pub(super) fn push(engine: &Engine, name: &str) -> Res<Response> {
    let reference = parse_ref(name)?;
    if engine.images().store().images().lookup(name).is_err() {
        return Err(Error(ApiError::not_found(format!("No such image: {name}"))));
    }
    let client = RegistryClient::new(ClientConfig::default())
        .map_err(|e| Error(ApiError::from_error(&e)))?;
    let images = engine.images().store().images().clone();
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
                let _ = tx.send(JsonMessage::status(format!("{tag}: digest: {digest}")));
                let _ = tx.send(JsonMessage {
                    aux: Some(serde_json::json!({"Tag": tag, "Digest": digest.to_string()})),
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
