//! A small Docker Engine API client over a unix socket.
//!
//! Every request opens its own connection (cheap on a unix socket) and speaks HTTP/1.1
//! through hyper. Paths are prefixed with the API version (`/v1.47/...`); when the daemon
//! answers that the version is too new, the client retries once with the version the
//! daemon names. Error responses (`{"message": ...}`) become [`ApiError`], whose display is
//! docker's `Error response from daemon: <message>`. Attach and exec use the hijack
//! protocol: the request asks for an upgrade and, on `101 Switching Protocols`, the raw
//! connection carries stdin one way and the (multiplexed or raw) output the other way.

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

/// The API version the client asks for first.
pub const DEFAULT_API_VERSION: &str = "1.47";

/// The default daemon address.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

/// An error answer from the daemon (HTTP status >= 400).
#[derive(Debug, thiserror::Error)]
#[error("Error response from daemon: {message}")]
pub struct ApiError {
    /// The HTTP status code.
    pub status: u16,
    /// The daemon's message (the `message` field of the JSON error body).
    pub message: String,
}

/// The daemon could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("Cannot connect to the berth daemon at {host}. Is the berth daemon running?")]
pub struct ConnectError {
    /// The address that was tried.
    pub host: String,
    /// Why the connection failed.
    #[source]
    pub source: std::io::Error,
}

/// Parses a `-H`/`BERTH_HOST` value (`unix:///PATH` or a bare absolute path) into a socket path.
pub fn parse_host(host: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = host.strip_prefix("unix://") {
        if p.is_empty() {
            anyhow::bail!("invalid daemon address {host:?}: empty socket path");
        }
        return Ok(PathBuf::from(p));
    }
    if host.starts_with('/') {
        return Ok(PathBuf::from(host));
    }
    anyhow::bail!("unsupported daemon address {host:?}: only unix:///PATH is supported")
}

/// A client for one daemon socket.
pub struct Client {
    host: String,
    socket: PathBuf,
    version: Mutex<String>,
}

/// A request body and its content type.
pub enum Body {
    /// No body.
    Empty,
    /// A JSON document.
    Json(Value),
    /// Raw bytes with the given content type.
    Raw(Bytes, &'static str),
}

/// A request body fed chunk by chunk through a channel (see
/// [`Client::request_streaming`]); an `Err` chunk aborts the request.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(hyper::body::Frame::data)))
    }
}

/// The two halves of a hijacked connection.
pub struct Hijacked {
    /// Output from the container (multiplexed unless the container has a TTY).
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    /// Input to the container; `None` when the daemon did not upgrade the connection.
    pub writer: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Whether the daemon said the stream is multiplexed (from `Content-Type`), if it said.
    pub multiplexed: Option<bool>,
}

impl Client {
    /// A client for `host` (`unix:///PATH`).
    pub fn new(host: &str) -> anyhow::Result<Client> {
        Ok(Client {
            host: host.to_string(),
            socket: parse_host(host)?,
            version: Mutex::new(DEFAULT_API_VERSION.to_string()),
        })
    }

    /// The daemon address this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn version(&self) -> String {
        self.version
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|_| DEFAULT_API_VERSION.to_string())
    }

    /// Connects to the daemon's socket (a failure names the host, as docker does).
    async fn dial(&self) -> Result<tokio::net::UnixStream, ConnectError> {
        tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ConnectError {
                host: self.host.clone(),
                source,
            })
    }

    async fn connect(
        &self,
    ) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let stream = self.dial().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    fn build(
        &self,
        method: &Method,
        path: &str,
        body: &Body,
        headers: &[(&str, String)],
        upgrade: bool,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let uri = format!("/v{}{}", self.version(), path);
        let mut b = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header("Host", "berth")
            .header(
                "User-Agent",
                concat!("berth-cli/", env!("CARGO_PKG_VERSION")),
            );
        if upgrade {
            b = b.header("Connection", "Upgrade").header("Upgrade", "tcp");
        }
        for (k, v) in headers {
            b = b.header(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        let body = match body {
            Body::Empty => Full::new(Bytes::new()),
            Body::Json(v) => {
                b = b.header("Content-Type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(v)?))
            }
            Body::Raw(bytes, ct) => {
                b = b.header("Content-Type", *ct);
                Full::new(bytes.clone())
            }
        };
        Ok(b.body(body)?)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: &Body,
        headers: &[(&str, String)],
        upgrade: bool,
    ) -> anyhow::Result<Response<Incoming>> {
        for attempt in 0..2 {
            let mut sender = self.connect().await?;
            let req = self.build(&method, path, body, headers, upgrade)?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            if status.as_u16() < 400 {
                return Ok(resp);
            }
            let message = failure_message(resp).await?;
            if status == StatusCode::BAD_REQUEST && attempt == 0 {
                if let Some(v) = max_version_in(&message) {
                    if let Ok(mut cur) = self.version.lock() {
                        *cur = v;
                    }
                    continue;
                }
            }
            return Err(ApiError {
                status: status.as_u16(),
                message,
            }
            .into());
        }
        anyhow::bail!("the daemon refused every API version offered")
    }

    /// Sends a request and returns the response (status < 400); errors become [`ApiError`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Response<Incoming>> {
        self.send(method, path, &body, headers, false).await
    }

    /// Sends a request whose body is streamed from `body` (a build context made on another
    /// thread, never whole in memory). A streamed body cannot be sent twice: when the
    /// daemon refuses this client's API version, the version it names is remembered and
    /// `Ok(None)` asks the caller to stream the body again; other statuses >= 400 are
    /// [`ApiError`]s.
    pub async fn request_streaming(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: ChannelBody,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Option<Response<Incoming>>> {
        let stream = self.dial().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, ChannelBody>(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut b = Request::builder()
            .method(method)
            .uri(format!("/v{}{}", self.version(), path))
            .header("Host", "berth")
            .header(
                "User-Agent",
                concat!("berth-cli/", env!("CARGO_PKG_VERSION")),
            )
            .header("Content-Type", content_type);
        for (k, v) in headers {
            b = b.header(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        let resp = sender.send_request(b.body(body)?).await?;
        let status = resp.status();
        if status.as_u16() < 400 {
            return Ok(Some(resp));
        }
        let message = failure_message(resp).await?;
        if status == StatusCode::BAD_REQUEST {
            if let Some(v) = max_version_in(&message) {
                if let Ok(mut cur) = self.version.lock() {
                    if *cur != v {
                        *cur = v;
                        return Ok(None);
                    }
                }
            }
        }
        Err(ApiError {
            status: status.as_u16(),
            message,
        }
        .into())
    }

    /// Sends a request and collects the whole response body.
    pub async fn call(&self, method: Method, path: &str, body: Body) -> anyhow::Result<Bytes> {
        let resp = self.send(method, path, &body, &[], false).await?;
        Ok(resp.into_body().collect().await?.to_bytes())
    }

    /// `GET path` decoded as JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let bytes = self.call(Method::GET, path, Body::Empty).await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// `POST path` with an optional JSON body; the answer decoded as JSON (`null` when empty).
    pub async fn post_json(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let body = body.map(Body::Json).unwrap_or(Body::Empty);
        let bytes = self.call(Method::POST, path, body).await?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// `DELETE path`, the answer decoded as JSON (`null` when empty).
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let bytes = self.call(Method::DELETE, path, Body::Empty).await?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Sends a hijacking request (attach, exec start).
    ///
    /// On `101` the connection is upgraded and both halves are returned; on `200` the body is
    /// returned as the reader and there is no writer.
    pub async fn hijack(&self, method: Method, path: &str, body: Body) -> anyhow::Result<Hijacked> {
        let resp = self.send(method, path, &body, &[], true).await?;
        let multiplexed = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| {
                if ct.contains("multiplexed") {
                    Some(true)
                } else if ct.contains("raw-stream") {
                    Some(false)
                } else {
                    None
                }
            });
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upgraded = hyper::upgrade::on(resp).await?;
            let (r, w) = tokio::io::split(TokioIo::new(upgraded));
            return Ok(Hijacked {
                reader: Box::new(r),
                writer: Some(Box::new(w)),
                multiplexed,
            });
        }
        Ok(Hijacked {
            reader: Box::new(body_reader(resp.into_body())),
            writer: None,
            multiplexed,
        })
    }
}

/// Turns a response body into an `AsyncRead` (a task pumps the frames into a pipe).
pub fn body_reader(mut body: Incoming) -> impl AsyncRead + Send + Unpin {
    let (rx, mut tx) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                if tx.write_all(&data).await.is_err() {
                    break;
                }
            }
        }
        let _ = tx.shutdown().await;
    });
    rx
}

/// Reads the next data chunk of a streaming body; `None` at the end.
pub async fn next_chunk(body: &mut Incoming) -> anyhow::Result<Option<Bytes>> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
    Ok(None)
}

/// The message of a failed response: the daemon's `{"message": ...}`, else the status
/// line ("404 not found").
async fn failure_message(resp: Response<Incoming>) -> anyhow::Result<String> {
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let message = error_message(&bytes);
    if !message.is_empty() {
        return Ok(message);
    }
    Ok(format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("").to_ascii_lowercase()
    ))
}

/// Extracts the message of a daemon error body (`{"message": ...}`, else the text).
pub fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            return m.to_string();
        }
    }
    String::from_utf8_lossy(body).trim().to_string()
}

/// Finds the version in docker's "client version X is too new. Maximum supported API
/// version is Y" message.
fn max_version_in(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let idx = lower.find("maximum supported api version is ")?;
    let rest = &message[idx + "maximum supported api version is ".len()..];
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v = v.trim_end_matches('.').to_string();
    if v.contains('.') {
        Some(v)
    } else {
        None
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Builds a query string (`?a=1&b=x`) from pairs, skipping none; empty when no pairs.
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("?");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(&enc(v));
    }
    s
}

/// A scripted fake daemon for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one request head (and a Content-Length body); returns the request line.
    pub(crate) async fn read_request(s: &mut tokio::net::UnixStream) -> String {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).await.unwrap() == 0 {
                break;
            }
            buf.push(b[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        head.lines().next().unwrap_or("").to_string()
    }

    /// A fake daemon answering each connection with `answer(request_line)`.
    pub(crate) fn fake_daemon(
        answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    ) -> (
        tempfile::TempDir,
        String,
        std::sync::Arc<Mutex<Vec<String>>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let l = tokio::net::UnixListener::bind(&sock).unwrap();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let answer = std::sync::Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let answer = answer.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let line = read_request(&mut s).await;
                    seen.lock().unwrap().push(line.clone());
                    s.write_all(&answer(&line)).await.unwrap();
                    if line.contains("/attach") && line.contains("echo=1") {
                        // Echo what the client sends, framed as stdout, then close.
                        let mut buf = vec![0u8; 64];
                        let n = s.read(&mut buf).await.unwrap();
                        s.write_all(&crate::stream::frame(1, &buf[..n]))
                            .await
                            .unwrap();
                        s.write_all(&crate::stream::frame(2, b"bye")).await.unwrap();
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        (dir, format!("unix://{}", sock.display()), seen)
    }

    pub(crate) fn http(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parsing() {
        assert_eq!(
            parse_host("unix:///run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        assert_eq!(parse_host("/a/b").unwrap(), PathBuf::from("/a/b"));
        assert!(parse_host("tcp://1.2.3.4:2375").is_err());
        assert!(parse_host("unix://").is_err());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(br#"{"message":"No such container: x"}"#),
            "No such container: x"
        );
        assert_eq!(error_message(b"plain text\n"), "plain text");
    }

    #[test]
    fn version_downgrade_message() {
        assert_eq!(
            max_version_in("client version 1.47 is too new. Maximum supported API version is 1.43"),
            Some("1.43".to_string())
        );
        assert_eq!(max_version_in("No such image"), None);
    }

    #[test]
    fn query_encoding() {
        assert_eq!(query(&[]), "");
        assert_eq!(
            query(&[("fromImage", "a/b:c".into()), ("x", "1 2".into())]),
            "?fromImage=a%2Fb%3Ac&x=1%202"
        );
    }

    use super::testing::{fake_daemon, http};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn negotiates_down_and_maps_errors() {
        let (_d, host, seen) = fake_daemon(|line| {
            if line.contains("/v1.47/") {
                http(
                    "400 Bad Request",
                    r#"{"message":"client version 1.47 is too new. Maximum supported API version is 1.43"}"#,
                )
            } else if line.contains("/missing") {
                http(
                    "404 Not Found",
                    r#"{"message":"No such container: missing"}"#,
                )
            } else if line.contains("/empty") {
                http("404 Not Found", "")
            } else {
                http("200 OK", r#"{"ok":true}"#)
            }
        });
        let c = Client::new(&host).unwrap();
        assert_eq!(
            c.get_json("/info").await.unwrap(),
            serde_json::json!({"ok": true})
        );
        assert_eq!(
            seen.lock().unwrap().clone(),
            vec![
                "GET /v1.47/info HTTP/1.1".to_string(),
                "GET /v1.43/info HTTP/1.1".to_string()
            ]
        );
        let e = c.get_json("/containers/missing/json").await.unwrap_err();
        let api = e.downcast_ref::<ApiError>().unwrap();
        assert_eq!(api.status, 404);
        assert_eq!(
            e.to_string(),
            "Error response from daemon: No such container: missing"
        );
        let e = c.get_json("/empty").await.unwrap_err();
        assert_eq!(e.to_string(), "Error response from daemon: 404 not found");
    }

    #[tokio::test]
    async fn hijack_carries_both_directions() {
        let (_d, host, _) = fake_daemon(|_| {
            b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n".to_vec()
        });
        let c = Client::new(&host).unwrap();
        let h = c
            .hijack(
                Method::POST,
                "/containers/x/attach?stream=1&echo=1",
                Body::Empty,
            )
            .await
            .unwrap();
        assert_eq!(h.multiplexed, Some(true));
        let mut w = h.writer.unwrap();
        w.write_all(b"ping").await.unwrap();
        w.flush().await.unwrap();
        let mut r = h.reader;
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        let frames = crate::stream::Demuxer::new().feed(&all);
        assert_eq!(
            frames,
            vec![
                (crate::stream::StreamKind::Stdout, b"ping".to_vec()),
                (crate::stream::StreamKind::Stderr, b"bye".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn unreachable_daemon_says_so() {
        let c = Client::new("unix:///nonexistent/berth.sock").unwrap();
        let e = c.get_json("/info").await.unwrap_err();
        assert!(e
            .to_string()
            .starts_with("Cannot connect to the berth daemon at unix:///nonexistent/berth.sock"));
    }

    #[test]
    fn api_error_display_is_dockers() {
        let e = ApiError {
            status: 404,
            message: "No such container: abc".into(),
        };
        assert_eq!(
            e.to_string(),
            "Error response from daemon: No such container: abc"
        );
    }
}
