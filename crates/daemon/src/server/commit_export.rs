//! `POST /commit` (`docker commit`) and `GET /containers/{id}/export` (`docker export`)
//! over [`engine::commit`].
//!
//! Commit's query: `container`, `repo`, `tag`, `comment`, `author`, `pause` (default true),
//! `changes` (repeatable, one Dockerfile instruction each); the body, when present, is a
//! container config whose set fields override the container's. Answers 201 `{"Id": ...}`.
//! Export streams the tar from a blocking thread through a bounded channel, so a large
//! root filesystem is never whole in memory; an unknown container is a 404 before any of
//! the body is sent.

use super::images_archive::{query_values, tar_stream};
use super::{json, AppState, Error, Res};
use api::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use engine::commit::CommitRequest;

/// The last value of `key` in a raw query string.
fn one(raw: Option<&str>, key: &str) -> Option<String> {
    query_values(raw, key).pop()
}

/// `POST /commit`.
pub(super) async fn commit(State(s): State<AppState>, RawQuery(q): RawQuery, body: Bytes) -> Res {
    let q = q.as_deref();
    let container = one(q, "container")
        .ok_or_else(|| Error(ApiError::invalid("container is required for commit")))?;
    let config = if body.iter().all(u8::is_ascii_whitespace) || body.as_ref() == b"null" {
        None
    } else {
        Some(
            serde_json::from_slice::<api::ContainerConfig>(&body)
                .map_err(|e| Error(ApiError::invalid(format!("invalid commit config: {e}"))))?,
        )
    };
    let reference = one(q, "repo").map(|repo| match one(q, "tag") {
        Some(t) => format!("{repo}:{t}"),
        None => repo,
    });
    let pause = one(q, "pause")
        .map(|v| !matches!(v.as_str(), "0" | "false" | "False" | "FALSE"))
        .unwrap_or(true);
    let req = CommitRequest {
        reference,
        comment: one(q, "comment"),
        author: one(q, "author"),
        changes: query_values(q, "changes"),
        pause,
        config,
    };
    let id = s.engine.commit(&container, req).await?;
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "Id": id })))
}

/// `GET /containers/{id}/export`.
pub(super) async fn export(State(s): State<AppState>, Path(id): Path<String>) -> Res {
    // Resolve first, so an unknown container is a clean 404 rather than a cut stream.
    let id = s.engine.resolve(&id)?;
    let engine = s.engine.clone();
    Ok(tar_stream(move |w| {
        engine.export(&id, w).map_err(|e| e.to_string())
    }))
}
