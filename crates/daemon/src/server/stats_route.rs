//! `GET /containers/{id}/stats`: Docker's resource usage stream over
//! [`engine::stats`].
//!
//! `stream=true` (the default) sends one JSON object per line every
//! [`engine::stats::SAMPLE_INTERVAL`] until the container stops or the client goes;
//! `stream=false` answers one object with `precpu_stats` filled from a reading one
//! interval earlier, and `one-shot=true` (with `stream=false`) answers at once with empty
//! `precpu_stats`. A container that does not run gets one all-zero object, as from Docker.

use super::{json, qbool, tokio_stream_from, AppState, Res, Q};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use engine::stats::{docker_json, SAMPLE_INTERVAL};

/// The handler.
pub(super) async fn container_stats(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Res {
    let stream = !q.contains_key("stream") || qbool(&q, "stream");
    let one_shot = qbool(&q, "one-shot");
    let t = s.engine.stats_target(&id)?;
    if !t.is_running() {
        return Ok(json(
            StatusCode::OK,
            &docker_json(&t.id, &t.name, None, None),
        ));
    }
    if !stream {
        let pre = if one_shot {
            None
        } else {
            let p = t.sample();
            tokio::time::sleep(SAMPLE_INTERVAL).await;
            p
        };
        let cur = t.sample();
        let pre = pre.filter(|_| cur.is_some());
        return Ok(json(
            StatusCode::OK,
            &docker_json(&t.id, &t.name, cur.as_ref(), pre.as_ref()),
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let mut pre = None;
        loop {
            let cur = t.sample();
            let mut line =
                serde_json::to_vec(&docker_json(&t.id, &t.name, cur.as_ref(), pre.as_ref()))
                    .unwrap_or_default();
            line.push(b'\n');
            if cur.is_none() || tx.send(Ok(Bytes::from(line))).await.is_err() {
                break;
            }
            pre = cur;
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
                _ = tx.closed() => break,
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(tokio_stream_from(rx)))
        .unwrap_or_default())
}
