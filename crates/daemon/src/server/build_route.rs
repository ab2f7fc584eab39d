//! `POST /build`: a Dockerfile build from a tar context, with docker's JSON output stream.
//!
//! The request body (the context tar, plain or gzip) is streamed to a blocking thread that
//! unpacks it on disk (never whole in memory), then `build::build` runs there over the
//! engine's [`StoreBuildBackend`] (with the engine's network manager for `RUN` steps and
//! an anonymous registry pull for missing base images). Every write of the builder's log
//! becomes one `{"stream": "..."}` line of the response as it happens; the result ends with
//! `{"aux":{"ID":"sha256:..."}}`, a failure with `{"errorDetail":{...},"error":"..."}`,
//! exactly as docker's classic builder answers.

use super::registry::auth_domain;
use super::{AppState, Error, Res};
use api::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use distribution::client::Credentials;
use engine::build_backend::{BackendConfig, DefaultNetwork, PullFn, StoreBuildBackend};
use futures::StreamExt;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use tokio::sync::mpsc;

/// Largest uncompressed context accepted (bounds the disk one request can fill).
const MAX_CONTEXT: u64 = 8 << 30;

/// A blocking reader over body chunks sent from the async side.
pub(super) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// How many body chunks may wait for the blocking reader. Few: each one keeps a piece of
/// hyper's read buffer (up to ~400 KiB) alive, so that the next read needs a new
/// allocation. With 64 queued the buffers in flight came to several MiB, more than glibc
/// keeps for reuse, and a 1 GB build context cost the daemon ~48,000 page faults (fresh,
/// zeroed pages); with 4, ~4,000, and 10 % less CPU for a cold 1 GB `COPY` (median of 6
/// alternated rounds, docs/benchmarks.md) with the same wall time or better.
const BODY_CHUNKS_QUEUED: usize = 4;

/// Streams a request body to a blocking reader (call `read` from a blocking thread), with
/// back-pressure (a bounded channel fed by a task; the reader ends at the end of the body
/// or with the transfer's error).
pub(super) fn body_reader(req: Request) -> ChannelReader {
    let (body_tx, body_rx) = mpsc::channel::<io::Result<Bytes>>(BODY_CHUNKS_QUEUED);
    let mut body = req.into_body().into_data_stream();
    tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            let item = chunk.map_err(io::Error::other);
            let stop = item.is_err();
            // An async send: no blocking-pool round trip per chunk (there are many).
            if body_tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    ChannelReader {
        rx: body_rx,
        cur: Bytes::new(),
    }
}

/// The builder's log writer: each write is one JSON `stream` line to the client.
struct StreamWriter {
    tx: mpsc::UnboundedSender<Bytes>,
    quiet: bool,
}

impl StreamWriter {
    fn send(&self, v: serde_json::Value) {
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.extend_from_slice(b"\r\n");
        let _ = self.tx.send(Bytes::from(line));
    }
}

impl Write for StreamWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.quiet && !buf.is_empty() {
            self.send(serde_json::json!({ "stream": String::from_utf8_lossy(buf) }));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `POST /build`.
pub(super) async fn build(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Res {
    let opts = build::BuildOptions::from_query(q.iter())
        .map_err(|e| Error(ApiError::invalid(e.to_string())))?;
    let cfg = s.engine.config();
    let backend_cfg = BackendConfig {
        runtime: cfg.runtime.clone(),
        runtime_root: cfg.run_root.join("runtime"),
        scratch_dir: cfg.root.join("tmp").join("build"),
        default_network: build_network(&s.engine, opts.network.as_deref().unwrap_or(""))?,
    };
    let store = s.engine.images().store().clone();
    let net = s.engine.networks().manager().clone();

    let auths = registry_config(req.headers());
    let body = body_reader(req);

    let (out_tx, out_rx) = mpsc::unbounded_channel::<Bytes>();
    let quiet = opts.quiet;
    let events = s.engine.events().clone();
    tokio::task::spawn_blocking(move || {
        let mut out = StreamWriter { tx: out_tx, quiet };
        let scratch = backend_cfg.scratch_dir.clone();
        let result = (|| -> Result<build::BuildResult, String> {
            std::fs::create_dir_all(&scratch).map_err(|e| format!("create {scratch:?}: {e}"))?;
            let dockerfile = match opts.dockerfile.as_str() {
                "" => "Dockerfile",
                d => d,
            };
            let ctx = build::BuildContext::from_tar_limited(
                body,
                Some(&scratch),
                MAX_CONTEXT,
                dockerfile,
            )
            .map_err(|e| error_chain(&e))?;
            clean_stale_once(&store, &backend_cfg);
            let pull = pull_fn(store.clone(), auths);
            let mut backend =
                StoreBuildBackend::new(store, backend_cfg, Some(pull)).with_network(net);
            build::build(&opts, &ctx, &mut backend, &mut out).map_err(|e| error_chain(&e))
        })();
        match result {
            Ok(r) => {
                if quiet {
                    out.send(serde_json::json!({ "stream": format!("{}\n", r.image_id) }));
                }
                out.send(serde_json::json!({ "aux": { "ID": r.image_id } }));
                for t in &r.tags {
                    events.publish("image", "tag", t, Default::default());
                }
            }
            Err(msg) => out.send(serde_json::json!({
                "errorDetail": { "message": msg },
                "error": msg,
            })),
        }
    });

    let stream = futures::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, io::Error>(b), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

/// The network of the build's `RUN` steps for `docker build --network MODE`;
/// `container:<name>` must name a running container, whose namespace (and resolver
/// config and hosts file) the steps join.
fn build_network(engine: &engine::Engine, mode: &str) -> Result<DefaultNetwork, Error> {
    let Some(name) = mode.strip_prefix("container:") else {
        return Ok(DefaultNetwork::from_mode(mode));
    };
    let rec = engine
        .record(name)
        .map_err(|_| Error(ApiError::not_found(format!("No such container: {name}"))))?;
    if rec.state.pid <= 0 {
        return Err(Error(ApiError::conflict(format!(
            "cannot join network of a non running container: {name}"
        ))));
    }
    Ok(DefaultNetwork::Join {
        netns: format!("/proc/{}/ns/net", rec.state.pid).into(),
        etc_dir: engine.networks().container_dir(&rec.id),
    })
}

/// Pulls a missing base image (`FROM`, or every one under `--pull`) from its registry
/// with the credentials the client sent for it (else anonymously), like `docker pull`, and unpacks it; the build log shows docker's pull
/// lines. Runs the registry client on its own small runtime (the builder is on a blocking
/// thread).
fn pull_fn(store: store::Store, auths: HashMap<String, Credentials>) -> PullFn {
    Box::new(
        move |name: &str, out: &mut dyn Write| -> Result<(), String> {
            let reference = store::Reference::parse(name)
                .map_err(|e| format!("invalid reference format {name:?}: {e}"))?;
            let client =
                distribution::client::RegistryClient::new(distribution::client::ClientConfig {
                    use_docker_config: false,
                    ..Default::default()
                })
                .map_err(|e| error_chain(&e))?;
            if let Some(c) = auths.get(&reference.domain) {
                client.set_credentials(&reference.domain, c.clone());
            }
            let tag = reference
                .tag
                .clone()
                .or_else(|| reference.digest.as_ref().map(|d| d.to_string()))
                .unwrap_or_else(|| "latest".into());
            // One write per line: each write is one message of the output stream.
            let mut line = |text: String| {
                let _ = out.write_all(text.as_bytes());
            };
            line(format!(
                "{tag}: Pulling from {}\n",
                reference.familiar_name()
            ));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting a runtime to pull {name}: {e}"))?;
            let images = store.images().clone();
            let progress = |_: distribution::client::Progress| {};
            let rec = rt
                .block_on(client.pull(&reference, &images, &progress))
                .map_err(|e| error_chain(&e))?;
            store.unpack(&rec).map_err(|e| error_chain(&e))?;
            if let Some(d) = rec.repo_digests.first().and_then(|d| d.split_once('@')) {
                line(format!("Digest: {}\n", d.1));
            }
            line(format!(
                "Status: Downloaded newer image for {}\n",
                reference.familiar()
            ));
            Ok(())
        },
    )
}

/// Decodes `X-Registry-Config` (base64url or base64 JSON: registry → `AuthConfig`, what
/// the docker CLI sends with a build) into credentials by registry domain. A missing or
/// undecodable header means none (pulls are then anonymous).
fn registry_config(headers: &axum::http::HeaderMap) -> HashMap<String, Credentials> {
    use base64::Engine as _;
    let Some(v) = headers
        .get("x-registry-config")
        .and_then(|v| v.to_str().ok())
    else {
        return HashMap::new();
    };
    let v = v.trim();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(v))
        .unwrap_or_default();
    let map: HashMap<String, super::registry::AuthConfig> =
        serde_json::from_slice(&raw).unwrap_or_default();
    map.into_iter()
        .filter_map(|(server, e)| Some((auth_domain(&server), e.credentials()?)))
        .collect()
}

/// Before the first build of this daemon process: removes what builds of an earlier,
/// killed daemon left behind (build containers, mounts, active snapshots, network
/// namespaces under the scratch directory). Later builds wait until it has finished, so
/// it never touches a running build's resources.
fn clean_stale_once(store: &store::Store, cfg: &BackendConfig) {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = match DONE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if !*done {
        let n = StoreBuildBackend::clean_stale(store, cfg);
        if n > 0 {
            tracing::info!(removed = n, "removed what earlier builds left behind");
        }
        *done = true;
    }
}

/// An error with its sources, `a: b: c` (the builder's messages say which line failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn registry_config_header_decodes_both_credential_forms() {
        let json = serde_json::json!({
            "https://index.docker.io/v1/": {"username": "hub", "password": "p1"},
            "127.0.0.1:5000": {"auth": base64::engine::general_purpose::STANDARD.encode("u2:p:2")},
            "bad.example": {"auth": "!!"}
        });
        let raw = serde_json::to_vec(&json).unwrap();
        for enc in [
            base64::engine::general_purpose::URL_SAFE.encode(&raw),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw),
            base64::engine::general_purpose::STANDARD.encode(&raw),
        ] {
            let mut h = axum::http::HeaderMap::new();
            h.insert("x-registry-config", enc.parse().unwrap());
            let m = registry_config(&h);
            assert_eq!(m.len(), 2, "{m:?}");
            let hub = &m[store::reference::DEFAULT_DOMAIN];
            assert_eq!(
                (hub.username.as_str(), hub.password.as_str()),
                ("hub", "p1")
            );
            let local = &m["127.0.0.1:5000"];
            assert_eq!(
                (local.username.as_str(), local.password.as_str()),
                ("u2", "p:2")
            );
        }
        assert!(registry_config(&axum::http::HeaderMap::new()).is_empty());
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-registry-config", "not base64 json".parse().unwrap());
        assert!(registry_config(&h).is_empty());
    }
}
