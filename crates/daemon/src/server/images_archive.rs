//! `GET /images/get` (`docker save`) and `POST /images/load` (`docker load`).
//!
//! Both stream: the archive is written by `store::Store::save` on a blocking thread into a
//! bounded channel that feeds the response body, and a loaded archive is read from the
//! request body as it arrives (see [`super::build_route::ChannelReader`]), so neither is
//! ever whole in memory. A bad archive leaves the store as it was (the store's load is
//! all-or-nothing).

use super::build_route::{body_reader, ChannelReader};
use super::{AppState, Error, Res};
use api::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use engine::EngineError;
use std::io::{self, Write};
use tokio::sync::mpsc;

/// Decodes `%XX` escapes and `+` of a query-string component.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every value of `key` in a raw query string (`names=a&names=b`).
pub(super) fn query_values(raw: Option<&str>, key: &str) -> Vec<String> {
    raw.unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| percent_decode(k) == key)
        .map(|(_, v)| percent_decode(v))
        .filter(|v| !v.is_empty())
        .collect()
}

/// A blocking writer into a bounded channel of body chunks.
pub(super) struct ChannelWriter(pub(super) mpsc::Sender<Result<Bytes, io::Error>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `GET /images/get?names=a&names=b`: a docker-archive tar of the named images.
pub(super) async fn save(State(s): State<AppState>, RawQuery(q): RawQuery) -> Res {
    let names = query_values(q.as_deref(), "names");
    if names.is_empty() {
        return Err(Error(ApiError::invalid("no image names given to save")));
    }
    let store = s.engine.images().store().clone();
    // Resolve every name first, so an unknown image is a clean 404, not a cut stream.
    for n in &names {
        store
            .images()
            .lookup(n)
            .map_err(|_| EngineError::NoSuchImage(n.clone()))?;
    }
    Ok(tar_stream(move |w| {
        store.save(&names, w).map(drop).map_err(|e| e.to_string())
    }))
}

/// A `200 application/x-tar` response whose body `write` produces on a blocking thread
/// (through a 1 MiB buffer). An error after the first bytes cuts the stream, so callers
/// check what can fail (names, ids) before.
pub(super) fn tar_stream<F>(write: F) -> Response
where
    F: FnOnce(io::BufWriter<ChannelWriter>) -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        if let Err(e) = write(io::BufWriter::with_capacity(1 << 20, ChannelWriter(tx))) {
            let _ = err_tx.blocking_send(Err(io::Error::other(e)));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

/// `POST /images/load`: loads a docker-archive or OCI-layout tar from the body.
///
/// `quiet` only silences progress in docker, which this load does not stream; the
/// "Loaded image" lines are always sent, as docker does.
pub(super) async fn load(State(s): State<AppState>, req: Request) -> Res {
    let store = s.engine.images().store().clone();
    let reader: ChannelReader = body_reader(req);
    let loaded = tokio::task::spawn_blocking(move || store.load(reader))
        .await
        .map_err(|e| Error(ApiError::internal(format!("load: {e}"))))?
        .map_err(EngineError::store)?;
    let mut out = Vec::new();
    for img in &loaded {
        let lines: Vec<String> = if img.references.is_empty() {
            vec![format!("Loaded image ID: {}\n", img.id)]
        } else {
            img.references
                .iter()
                .map(|r| format!("Loaded image: {}\n", r.familiar()))
                .collect()
        };
        s.engine
            .events()
            .publish("image", "load", &img.id.to_string(), Default::default());
        for l in lines {
            let line = serde_json::json!({ "stream": l });
            out.extend_from_slice(&serde_json::to_vec(&line).unwrap_or_default());
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(out))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_query_values_are_decoded() {
        let q = Some("names=busybox%3Alatest&quiet=1&names=app+x&names=");
        assert_eq!(query_values(q, "names"), vec!["busybox:latest", "app x"]);
        assert_eq!(query_values(q, "quiet"), vec!["1"]);
        assert!(query_values(None, "names").is_empty());
        assert_eq!(percent_decode("100%"), "100%");
    }
}
