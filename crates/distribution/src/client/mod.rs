//! Registry client: pull images into and push images out of Berth's image store.
//!
//! Model:
//! - An image reference (`store::Reference`) names a registry host; [`RegistryClient`]
//!   maps it to an endpoint: `docker.io` → `https://registry-1.docker.io`; plain HTTP only
//!   for loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) and hosts listed in
//!   [`ClientConfig::insecure_registries`]; HTTPS otherwise.
//! - Authentication follows the registry's `WWW-Authenticate` challenge: none, HTTP basic,
//!   or the bearer token flow (token fetched from the realm, with basic credentials when
//!   known, cached per registry and scope). Credentials come from
//!   [`RegistryClient::set_credentials`] or, unless [`ClientConfig::use_docker_config`] is
//!   off (a daemon), docker's `config.json` (see [`auth`]).
//! - Pull: the manifest (bounded to 4 MiB, digest verified) is resolved through an index
//!   to the host platform; layers download in parallel (bounded), each streamed into the
//!   content store's resumable writer keyed by the blob digest, so an interrupted pull
//!   resumes with a `Range` request; every blob is verified (size and digest) before it
//!   is committed; network errors are retried with backoff. The manifest and tag are then
//!   recorded in the [`store::ImageStore`]. Unpacking layers into snapshots is left to the
//!   engine (the store keeps compressed blobs and chain ids).
//! - Push: for each blob, `HEAD` to skip what the registry has, a cross-repository mount
//!   when the blob is known in another repository of the same registry, else an upload
//!   (monolithic, or chunked above [`ClientConfig::chunk_size`]); then the manifest.
//! - Timeouts: a connect timeout and a per-read idle timeout, so a registry that stops
//!   answering fails with [`ClientError::Timeout`] instead of hanging.

pub mod auth;
mod error;
mod pull;
mod push;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

pub use auth::{Challenge, Credentials};
pub use error::{ClientError, StoreError};
pub use pull::{Progress, ProgressFn, ProgressStatus};

use store::Reference;

/// Settings of a [`RegistryClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Hosts (`host` or `host:port`) that may be spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Directory of docker's `config.json`; `None` means `$DOCKER_CONFIG` or `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Whether credentials are looked up in docker's `config.json` at all. A daemon turns
    /// this off: like dockerd it uses only the credentials a request carries
    /// (`X-Registry-Auth`), never those of the user it runs as.
    pub use_docker_config: bool,
    /// Time allowed to establish a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for any read (response headers or the next body bytes).
    pub read_timeout: Duration,
    /// Layers downloaded at the same time.
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at the same time.
    pub max_concurrent_uploads: usize,
    /// Attempts per blob on transient errors (network, 5xx), with exponential backoff.
    pub attempts: u32,
    /// Delay before the first retry (doubles each time).
    pub retry_backoff: Duration,
    /// Blobs larger than this are pushed in chunks of this size.
    pub chunk_size: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            docker_config_dir: None,
            use_docker_config: true,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            attempts: 3,
            retry_backoff: Duration::from_millis(500),
            chunk_size: 64 * 1024 * 1024,
        }
    }
}

/// (registry, scope) → lock held while fetching its token.
type AuthLocks = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// (registry, digest) → repositories known to hold the blob.
type KnownBlobs = HashMap<(String, String), Vec<String>>;

/// Where a registry host is reached.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The host as named in references (`docker.io`, `127.0.0.1:5000`).
    pub domain: String,
    /// `scheme://host[:port]` to send requests to.
    pub base: String,
}

/// A client for OCI / Docker registries. Cheap to clone; shares its connection pool and
/// token cache.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
    /// `Authorization` values per (registry, scope).
    tokens: Arc<Mutex<HashMap<(String, String), HeaderValue>>>,
    /// Serialises token fetches per (registry, scope), so parallel requests share one.
    auth_locks: Arc<Mutex<AuthLocks>>,
    /// Last challenge seen per registry.
    challenges: Arc<Mutex<HashMap<String, Challenge>>>,
    /// Credentials given explicitly, per registry host.
    credentials: Arc<Mutex<HashMap<String, Credentials>>>,
    /// Blobs known to exist per registry: digest → repositories (for cross-repo mounts).
    known_blobs: Arc<Mutex<KnownBlobs>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("config", &self.config)
            .finish()
    }
}

/// Whether `host` (without port) is a loopback name or address.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h == "localhost" || h.ends_with(".localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// Splits `host[:port]` (IPv6 in brackets) into host and optional port.
fn split_host(domain: &str) -> &str {
    if let Some(rest) = domain.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match domain.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => domain,
    }
}

impl RegistryClient {
    /// Builds a client with `config`.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| ClientError::Io {
                op: "build http client",
                source: std::io::Error::other(e),
            })?;
        Ok(Self {
            http,
            config: Arc::new(config),
            tokens: Arc::default(),
            auth_locks: Arc::default(),
            challenges: Arc::default(),
            credentials: Arc::default(),
            known_blobs: Arc::default(),
        })
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Uses `creds` for `host` (`docker.io`, `127.0.0.1:5000`), overriding the docker
    /// config file (e.g. credentials a daemon received with a request).
    pub fn set_credentials(&self, host: &str, creds: Credentials) {
        let mut m = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(host.to_string(), creds);
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(h, _), _| h != host);
    }

    fn docker_config_dir(&self) -> PathBuf {
        self.config
            .docker_config_dir
            .clone()
            .unwrap_or_else(auth::default_docker_config_dir)
    }

    fn credentials_for(&self, host: &str) -> Result<Option<Credentials>, ClientError> {
        if let Some(c) = self
            .credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
        {
            return Ok(Some(c.clone()));
        }
        if !self.config.use_docker_config {
            return Ok(None);
        }
        auth::load_credentials(&self.docker_config_dir(), host)
    }

    /// The endpoint for a registry host named in references.
    pub(crate) fn endpoint(&self, domain: &str) -> Endpoint {
        let host_port = if domain == store::reference::DEFAULT_DOMAIN {
            "registry-1.docker.io"
        } else {
            domain
        };
        let insecure = is_loopback(split_host(domain))
            || self.config.insecure_registries.iter().any(|r| r == domain);
        let scheme = if insecure { "http" } else { "https" };
        Endpoint {
            domain: domain.to_string(),
            base: format!("{scheme}://{host_port}"),
        }
    }

    /// Returns `scheme://host` the client would use for `reference`'s registry.
    pub fn endpoint_url(&self, reference: &Reference) -> String {
        self.endpoint(&reference.domain).base
    }

    fn net_err(&self, ep: &Endpoint, url: &str, e: reqwest::Error) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout {
                registry: ep.domain.clone(),
                url: url.to_string(),
                source: e,
            }
        } else {
            ClientError::Unreachable {
                registry: ep.domain.clone(),
                source: e,
            }
        }
    }

    /// Sends a request built by `mk`, authenticating on a 401 challenge (once) for `scope`
    /// (`repository:<path>:pull[,push]`, or empty for the base endpoint).
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        scope: &str,
        mk: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Send + Sync),
    ) -> Result<Response, ClientError> {
        let key = (ep.domain.clone(), scope.to_string());
        let mut cached = self.cached_token(&key);
        if cached.is_none() {
            // A challenge seen before for this registry: authenticate up front, so a
            // request with a streamed body is not sent twice.
            let ch = self
                .challenges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&ep.domain)
                .cloned();
            if let Some(ch) = ch {
                cached = Some(self.authenticate_once(ep, &ch, scope, None).await?);
            }
        }
        for attempt in 0..2 {
            let mut rb = mk(&self.http);
            if let Some(h) = &cached {
                rb = rb.header(AUTHORIZATION, h.clone());
            }
            let req = rb.build().map_err(|e| ClientError::Io {
                op: "build request",
                source: std::io::Error::other(e),
            })?;
            let url = req.url().to_string();
            let resp = self
                .http
                .execute(req)
                .await
                .map_err(|e| self.net_err(ep, &url, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if attempt == 1 {
                break;
            }
            let ch = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge)
                .ok_or_else(|| ClientError::Unauthorized {
                    registry: ep.domain.clone(),
                    reason: "401 without a usable WWW-Authenticate challenge".into(),
                })?;
            self.challenges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ep.domain.clone(), ch.clone());
            cached = Some(
                self.authenticate_once(ep, &ch, scope, cached.as_ref())
                    .await?,
            );
        }
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let who = match self.credentials_for(&ep.domain)? {
            Some(c) => format!("credentials of user {} rejected", c.username),
            None => "authentication required and no credentials configured".into(),
        };
        Err(ClientError::Unauthorized {
            registry: ep.domain.clone(),
            reason: who,
        })
    }

    fn cached_token(&self, key: &(String, String)) -> Option<HeaderValue> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Like [`authenticate`](Self::authenticate), but one at a time per (registry, scope):
    /// a caller that waited reuses the value another fetched meanwhile (unless it is the
    /// `rejected` one that just failed).
    async fn authenticate_once(
        &self,
        ep: &Endpoint,
        ch: &Challenge,
        scope: &str,
        rejected: Option<&HeaderValue>,
    ) -> Result<HeaderValue, ClientError> {
        let key = (ep.domain.clone(), scope.to_string());
        let lock = self
            .auth_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        if let Some(v) = self.cached_token(&key) {
            if Some(&v) != rejected {
                return Ok(v);
            }
        }
        self.authenticate(ep, ch, scope).await
    }

    /// Answers a challenge for `scope`, caching the resulting `Authorization` value.
    async fn authenticate(
        &self,
        ep: &Endpoint,
        ch: &Challenge,
        scope: &str,
    ) -> Result<HeaderValue, ClientError> {
        let creds = self.credentials_for(&ep.domain)?;
        let value = match ch {
            Challenge::Basic => {
                let c = creds.ok_or_else(|| ClientError::Unauthorized {
                    registry: ep.domain.clone(),
                    reason: "basic authentication required and no credentials configured".into(),
                })?;
                let b64 = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password));
                format!("Basic {b64}")
            }
            Challenge::Bearer {
                realm,
                service,
                scope: ch_scope,
            } => {
                let mut url =
                    reqwest::Url::parse(realm).map_err(|_| ClientError::Unauthorized {
                        registry: ep.domain.clone(),
                        reason: format!("invalid token realm {realm}"),
                    })?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    let sc = if scope.is_empty() {
                        ch_scope.clone().unwrap_or_default()
                    } else {
                        scope.to_string()
                    };
                    for s in sc.split(' ').filter(|s| !s.is_empty()) {
                        q.append_pair("scope", s);
                    }
                }
                let mut rb = self.http.get(url.clone());
                if let Some(c) = &creds {
                    rb = rb.basic_auth(&c.username, Some(&c.password));
                }
                let resp = rb
                    .send()
                    .await
                    .map_err(|e| self.net_err(ep, url.as_str(), e))?;
                if resp.status() == StatusCode::UNAUTHORIZED
                    || resp.status() == StatusCode::FORBIDDEN
                {
                    return Err(ClientError::Unauthorized {
                        registry: ep.domain.clone(),
                        reason: match &creds {
                            Some(c) => format!("token server rejected user {}", c.username),
                            None => "token server requires credentials".into(),
                        },
                    });
                }
                if !resp.status().is_success() {
                    return Err(self.status_error(ep, &Method::GET, resp).await);
                }
                let body = read_limited(resp, 1 << 20)
                    .await
                    .map_err(|e| self.net_err(ep, url.as_str(), e))?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|_| ClientError::Unauthorized {
                        registry: ep.domain.clone(),
                        reason: "token server returned invalid JSON".into(),
                    })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| ClientError::Unauthorized {
                        registry: ep.domain.clone(),
                        reason: "token server returned no token".into(),
                    })?;
                format!("Bearer {token}")
            }
        };
        let hv = HeaderValue::from_str(&value).map_err(|_| ClientError::Unauthorized {
            registry: ep.domain.clone(),
            reason: "credentials are not a valid header value".into(),
        })?;
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ep.domain.clone(), scope.to_string()), hv.clone());
        Ok(hv)
    }

    /// Turns an unexpected response into an error, reading the registry's error codes.
    pub(crate) async fn status_error(
        &self,
        ep: &Endpoint,
        method: &Method,
        resp: Response,
    ) -> ClientError {
        let status = resp.status();
        let url = resp.url().to_string();
        let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
        let message = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => v
                .get("errors")
                .and_then(|e| e.as_array())
                .map(|errs| {
                    errs.iter()
                        .map(|e| {
                            format!(
                                "{}: {}",
                                e.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
                                e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        };
        if status == StatusCode::FORBIDDEN {
            return ClientError::Denied {
                registry: ep.domain.clone(),
                what: url,
            };
        }
        ClientError::Status {
            registry: ep.domain.clone(),
            method: method.to_string(),
            url,
            status: status.as_u16(),
            message,
        }
    }

    /// Checks that the registry of `domain` speaks the distribution API and that the
    /// configured credentials (if it asks for any) are accepted.
    pub async fn ping(&self, domain: &str) -> Result<(), ClientError> {
        let ep = self.endpoint(domain);
        let url = format!("{}/v2/", ep.base);
        let resp = self.send(&ep, "", &|c| c.get(&url)).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&ep, &Method::GET, resp).await)
        }
    }

    /// Verifies `username`/`password` against the registry `host` without storing them
    /// (what a daemon does for `POST /auth`). A registry that challenges `/v2/` checks the
    /// credentials; one that answers `/v2/` anonymously accepts them unverified (docker
    /// behaves the same).
    pub async fn verify_login(
        &self,
        host: &str,
        username: &str,
        password: &str,
    ) -> Result<(), ClientError> {
        let creds = Credentials {
            username: username.to_string(),
            password: password.to_string(),
        };
        let probe = RegistryClient::new((*self.config).clone())?;
        probe.set_credentials(host, creds);
        let ep = probe.endpoint(host);
        let url = format!("{}/v2/", ep.base);
        let resp = probe.send(&ep, "", &|c| c.get(&url)).await?;
        if !resp.status().is_success() {
            return Err(probe.status_error(&ep, &Method::GET, resp).await);
        }
        Ok(())
    }

    /// Verifies `username`/`password` against the registry `host` and, when accepted,
    /// stores them in docker's `config.json` (like `docker login`).
    pub async fn login(
        &self,
        host: &str,
        username: &str,
        password: &str,
    ) -> Result<(), ClientError> {
        self.verify_login(host, username, password).await?;
        let creds = Credentials {
            username: username.to_string(),
            password: password.to_string(),
        };
        auth::store_credentials(&self.docker_config_dir(), host, &creds)?;
        self.set_credentials(host, creds);
        Ok(())
    }

    /// Records that blob `digest` exists in `repo` of `domain` (mount candidates).
    pub(crate) fn note_blob(&self, domain: &str, digest: &str, repo: &str) {
        let mut m = self.known_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let v = m
            .entry((domain.to_string(), digest.to_string()))
            .or_default();
        if !v.iter().any(|r| r == repo) {
            v.push(repo.to_string());
        }
    }

    /// Repositories of `domain` other than `except` known to hold blob `digest`.
    pub(crate) fn mount_sources(&self, domain: &str, digest: &str, except: &str) -> Vec<String> {
        self.known_blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(domain.to_string(), digest.to_string()))
            .map(|v| v.iter().filter(|r| *r != except).cloned().collect())
            .unwrap_or_default()
    }
}

/// Reads a response body, failing past `limit` bytes.
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > limit {
            out.extend_from_slice(&chunk[..limit.saturating_sub(out.len())]);
            out.push(0); // marks "over the limit" for callers that check len > limit
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The token scope for pulling from (and optionally pushing to) a repository path.
pub(crate) fn repo_scope(path: &str, push: bool) -> String {
    if push {
        format!("repository:{path}:pull,push")
    } else {
        format!("repository:{path}:pull")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let c = RegistryClient::new(ClientConfig {
            insecure_registries: vec!["reg.lan:5000".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.endpoint("docker.io").base, "https://registry-1.docker.io");
        assert_eq!(c.endpoint("127.0.0.1:5000").base, "http://127.0.0.1:5000");
        assert_eq!(c.endpoint("localhost:5000").base, "http://localhost:5000");
        assert_eq!(c.endpoint("[::1]:5000").base, "http://[::1]:5000");
        assert_eq!(c.endpoint("reg.lan:5000").base, "http://reg.lan:5000");
        assert_eq!(c.endpoint("reg.lan").base, "https://reg.lan");
        assert_eq!(c.endpoint("quay.io").base, "https://quay.io");
        assert_eq!(
            c.endpoint("127.example.com").base,
            "https://127.example.com"
        );
    }
}
