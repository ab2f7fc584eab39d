//! Pulling: manifest resolution and resumable, verified, parallel blob downloads.

use std::io::Write;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};
use store::content::{BlobWriter, ContentError, ContentStore};
use store::image::{parse_manifest, Descriptor, ParsedManifest};
use store::{Digest, ImageRecord, ImageStore, Reference};

use super::{read_limited, repo_scope, ClientError, Endpoint, RegistryClient};
use crate::media;

/// What is happening to one blob (layer) during a pull or push, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressStatus {
    /// Queued behind other downloads/uploads.
    Waiting,
    /// Bytes received so far (including data resumed from an earlier attempt).
    Downloading {
        /// Bytes so far.
        current: u64,
        /// Blob size.
        total: u64,
    },
    /// Checking size and digest before committing.
    Verifying,
    /// Stored (pull) or accepted by the registry (push).
    Done,
    /// Already present (locally on pull, in the registry on push); nothing transferred.
    AlreadyExists,
    /// A transient error; trying again (1-based attempt number about to start).
    Retrying {
        /// The attempt about to start.
        attempt: u32,
    },
    /// Bytes sent so far.
    Uploading {
        /// Bytes so far.
        current: u64,
        /// Blob size.
        total: u64,
    },
    /// Mounted from another repository of the same registry (push).
    Mounted {
        /// The source repository.
        from: String,
    },
}

/// A progress event for one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The blob.
    pub digest: Digest,
    /// Its state.
    pub status: ProgressStatus,
}

/// Callback receiving progress events; called from the pulling task.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// Emit a `Downloading` event at most every this many bytes.
const PROGRESS_STEP: u64 = 512 * 1024;

/// Runs a blocking closure on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Io {
            op,
            source: std::io::Error::other(e),
        })
}

/// Verifies that `data` hashes to `expected` (in `expected`'s algorithm).
fn verify(what: &str, data: &[u8], expected: &Digest) -> Result<(), ClientError> {
    let actual = Digest::of(expected.algorithm(), data);
    if &actual != expected {
        return Err(ClientError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// A fetched manifest: bytes, media type and verified digest.
pub(crate) struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl RegistryClient {
    /// Fetches a manifest by tag or digest, bounded to 4 MiB and verified against the
    /// requested digest (or the registry's `Docker-Content-Digest`).
    pub(crate) async fn fetch_manifest(
        &self,
        ep: &Endpoint,
        path: &str,
        reference: &str,
        expected: Option<&Digest>,
        scope: &str,
    ) -> Result<FetchedManifest, ClientError> {
        let url = format!("{}/v2/{path}/manifests/{reference}", ep.base);
        let accept = media::ALL_MANIFESTS.join(", ");
        let what = format!("{}/{path}:{reference}", ep.domain);
        let resp = self
            .with_retries(&what, None, || async {
                let resp = self
                    .send(ep, scope, &|c| c.get(&url).header(ACCEPT, &accept))
                    .await?;
                // Server errors are worth another attempt.
                if resp.status().is_server_error() || resp.status() == StatusCode::TOO_MANY_REQUESTS
                {
                    return Err(self.status_error(ep, &Method::GET, resp).await);
                }
                Ok(resp)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(ClientError::ManifestUnknown { reference: what });
        }
        if !resp.status().is_success() {
            return Err(self.status_error(ep, &Method::GET, resp).await);
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| media::essence(v).to_string())
            .unwrap_or_default();
        let header_digest = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        if resp
            .content_length()
            .is_some_and(|l| l > media::MAX_MANIFEST_SIZE as u64)
        {
            return Err(ClientError::InvalidManifest {
                reference: what,
                reason: "larger than 4 MiB".into(),
            });
        }
        let bytes = read_limited(resp, media::MAX_MANIFEST_SIZE)
            .await
            .map_err(|e| self.net_err(ep, &url, e))?;
        if bytes.len() > media::MAX_MANIFEST_SIZE {
            return Err(ClientError::InvalidManifest {
                reference: what,
                reason: "larger than 4 MiB".into(),
            });
        }
        let digest = match expected.or(header_digest.as_ref()) {
            Some(d) => {
                verify(&format!("manifest {what}"), &bytes, d)?;
                if d.algorithm() == store::digest::Algorithm::Sha256 {
                    d.clone()
                } else {
                    Digest::sha256_of(&bytes)
                }
            }
            None => Digest::sha256_of(&bytes),
        };
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
                .unwrap_or_else(|| media::OCI_MANIFEST.to_string())
        } else {
            media_type
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Runs `f` up to `attempts` times while it fails with a transient error, sleeping
    /// with exponential backoff in between.
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        what: &str,
        on_retry: Option<&(dyn Fn(u32) + Send + Sync)>,
        f: F,
    ) -> Result<T, ClientError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let attempts = self.config.attempts.max(1);
        let mut delay = self.config.retry_backoff;
        let mut attempt = 1;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < attempts => {
                    tracing::warn!("{what}: attempt {attempt} failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2).min(Duration::from_secs(30));
                    attempt += 1;
                    if let Some(cb) = on_retry {
                        cb(attempt);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Pulls `reference` into `images` (and its content store) and returns the image.
    ///
    /// An index is resolved to the image store's platform (the host's). Blobs already in
    /// the content store are not downloaded; partial data left by an interrupted pull is
    /// resumed. The tag (or digest) reference is recorded in the image index last, so a
    /// failed pull leaves no reference to an incomplete image.
    pub async fn pull(
        &self,
        reference: &Reference,
        images: &ImageStore,
        progress: ProgressFn<'_>,
    ) -> Result<ImageRecord, ClientError> {
        let ep = self.endpoint(&reference.domain);
        let path = reference.path.as_str();
        let scope = repo_scope(path, false);
        let content = images.content().clone();
        let top_ref = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => store::reference::DEFAULT_TAG.to_string(),
        };
        let top = self
            .fetch_manifest(&ep, path, &top_ref, reference.digest.as_ref(), &scope)
            .await?;
        let top_desc = Descriptor::new(&top.media_type, top.digest.clone(), top.bytes.len() as u64);
        let parsed = parse_manifest(&top.bytes, Some(&top.media_type)).map_err(|e| {
            ClientError::InvalidManifest {
                reference: reference.to_string(),
                reason: e.to_string(),
            }
        })?;
        let mut manifests = vec![(top.bytes.clone(), top.digest.clone())];
        let manifest = match parsed {
            ParsedManifest::Manifest(m) => *m,
            ParsedManifest::Index(idx) => {
                let platform = images.platform().clone();
                let d = idx.select(&platform).cloned().ok_or_else(|| {
                    ClientError::NoMatchingPlatform {
                        reference: reference.to_string(),
                        platform: platform.to_string(),
                    }
                })?;
                let child = self
                    .fetch_manifest(&ep, path, &d.digest.to_string(), Some(&d.digest), &scope)
                    .await?;
                let parsed =
                    parse_manifest(&child.bytes, Some(&child.media_type)).map_err(|e| {
                        ClientError::InvalidManifest {
                            reference: d.digest.to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                manifests.push((child.bytes, child.digest));
                match parsed {
                    ParsedManifest::Manifest(m) => *m,
                    ParsedManifest::Index(_) => {
                        return Err(ClientError::InvalidManifest {
                            reference: d.digest.to_string(),
                            reason: "index nested in an index".into(),
                        })
                    }
                }
            }
        };

        // Config first (small), then layers in parallel.
        let quiet = |_: Progress| {};
        self.fetch_blob(&ep, path, &scope, &content, &manifest.config, &quiet)
            .await?;
        for l in &manifest.layers {
            progress(Progress {
                digest: l.digest.clone(),
                status: ProgressStatus::Waiting,
            });
        }
        let layers: Vec<&Descriptor> = manifest
            .layers
            .iter()
            .filter(|l| l.urls.is_empty())
            .collect();
        futures::stream::iter(layers.into_iter().map(|l| {
            let ep = &ep;
            let scope = &scope;
            let content = &content;
            async move { self.fetch_blob(ep, path, scope, content, l, progress).await }
        }))
        .buffer_unordered(self.config.max_concurrent_downloads.max(1))
        .try_collect::<Vec<()>>()
        .await?;

        // Manifests last, then the reference.
        for (bytes, digest) in manifests {
            let c = content.clone();
            blocking("store manifest", move || {
                c.put_bytes_verified(&bytes, &digest)
            })
            .await?
            .map_err(|e| ClientError::store("store manifest", e))?;
        }
        let images2 = images.clone();
        let r = reference.clone();
        let record = blocking("record image", move || images2.set_ref(&r, &top_desc))
            .await?
            .map_err(|e| ClientError::store("record image", e))?;
        record.ok_or_else(|| ClientError::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: images.platform().to_string(),
        })
    }

    /// Downloads one blob into the content store (skipping it when present), with retries.
    pub(crate) async fn fetch_blob(
        &self,
        ep: &Endpoint,
        path: &str,
        scope: &str,
        content: &ContentStore,
        desc: &Descriptor,
        progress: ProgressFn<'_>,
    ) -> Result<(), ClientError> {
        let emit = |status| {
            progress(Progress {
                digest: desc.digest.clone(),
                status,
            })
        };
        if content.exists(&desc.digest) {
            emit(ProgressStatus::AlreadyExists);
            self.note_blob(&ep.domain, &desc.digest.to_string(), path);
            return Ok(());
        }
        let on_retry = |attempt| emit(ProgressStatus::Retrying { attempt });
        let what = format!("blob {}", desc.digest);
        self.with_retries(&what, Some(&on_retry), || {
            self.download_once(ep, path, scope, content, desc, progress)
        })
        .await?;
        self.note_blob(&ep.domain, &desc.digest.to_string(), path);
        emit(ProgressStatus::Done);
        Ok(())
    }

    async fn download_once(
        &self,
        ep: &Endpoint,
        path: &str,
        scope: &str,
        content: &ContentStore,
        desc: &Descriptor,
        progress: ProgressFn<'_>,
    ) -> Result<(), ClientError> {
        let emit = |status| {
            progress(Progress {
                digest: desc.digest.clone(),
                status,
            })
        };
        let key = desc.digest.to_string();
        let c = content.clone();
        let mut w = blocking("open ingest", move || c.writer(&key))
            .await?
            .map_err(|e| ClientError::store("open ingest", e))?;
        if content.exists(&desc.digest) {
            // Another pull committed it while we waited for the ingest lock.
            let _ = blocking("abort ingest", move || w.abort()).await;
            return Ok(());
        }
        if w.offset() > desc.size {
            w = blocking("restart ingest", move || w.restart())
                .await?
                .map_err(|e| ClientError::store("restart ingest", e))?;
        }
        if w.offset() < desc.size || desc.size == 0 {
            w = self.download_into(ep, path, scope, desc, w, &emit).await?;
        }
        emit(ProgressStatus::Verifying);
        let size = desc.size;
        let digest = desc.digest.clone();
        match blocking("commit blob", move || w.commit(Some(size), Some(&digest))).await? {
            Ok(_) => Ok(()),
            Err(ContentError::DigestMismatch { expected, actual }) => {
                Err(ClientError::DigestMismatch {
                    what: format!("blob from {}/{path}", ep.domain),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                })
            }
            Err(ContentError::SizeMismatch { expected, actual }) => {
                Err(ClientError::InvalidManifest {
                    reference: desc.digest.to_string(),
                    reason: format!("blob is {actual} bytes, manifest says {expected}"),
                })
            }
            Err(e) => Err(ClientError::store("commit blob", e)),
        }
    }

    /// GETs the blob from `w.offset()` on (Range) and streams it into `w`.
    async fn download_into(
        &self,
        ep: &Endpoint,
        path: &str,
        scope: &str,
        desc: &Descriptor,
        mut w: BlobWriter,
        emit: &(dyn Fn(ProgressStatus) + Send + Sync),
    ) -> Result<BlobWriter, ClientError> {
        let url = format!("{}/v2/{path}/blobs/{}", ep.base, desc.digest);
        let offset = w.offset();
        let resp = self
            .send(ep, scope, &|c| {
                let rb = c.get(&url);
                if offset > 0 {
                    rb.header(RANGE, format!("bytes={offset}-"))
                } else {
                    rb
                }
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(ClientError::BlobUnknown {
                digest: desc.digest.to_string(),
                repository: format!("{}/{path}", ep.domain),
            });
        }
        let resumed = status == StatusCode::PARTIAL_CONTENT
            && resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {offset}-")));
        if !resumed {
            if status != StatusCode::OK {
                return Err(self.status_error(ep, &Method::GET, resp).await);
            }
            if w.offset() > 0 {
                w = blocking("restart ingest", move || w.restart())
                    .await?
                    .map_err(|e| ClientError::store("restart ingest", e))?;
            }
        }
        let total = desc.size;
        let mut current = w.offset();
        emit(ProgressStatus::Downloading { current, total });

        // The writer lives on a blocking thread fed through a channel, so disk writes
        // and hashing never block the async runtime and network reads overlap them.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
        let writer = tokio::task::spawn_blocking(move || {
            let mut err = None;
            while let Some(b) = rx.blocking_recv() {
                if let Err(e) = w.write_all(&b) {
                    err = Some(e);
                    break;
                }
            }
            if err.is_none() {
                err = w.flush().err();
            }
            (w, err)
        });
        let mut stream = resp.bytes_stream();
        let mut last = current;
        let mut failure = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    current += b.len() as u64;
                    if current > total {
                        failure = Some(ClientError::InvalidManifest {
                            reference: desc.digest.to_string(),
                            reason: format!(
                                "registry sent more than the {total} bytes the manifest lists"
                            ),
                        });
                        break;
                    }
                    if tx.send(b).await.is_err() {
                        break;
                    }
                    if current - last >= PROGRESS_STEP || current == total {
                        last = current;
                        emit(ProgressStatus::Downloading { current, total });
                    }
                }
                Err(e) => {
                    failure = Some(self.net_err(ep, &url, e));
                    break;
                }
            }
        }
        drop(tx);
        let (w, err) = writer.await.map_err(|e| ClientError::Io {
            op: "write blob",
            source: std::io::Error::other(e),
        })?;
        if let Some(e) = err {
            return Err(ClientError::Io {
                op: "write blob",
                source: e,
            });
        }
        if let Some(f) = failure {
            if matches!(f, ClientError::InvalidManifest { .. }) {
                let _ = blocking("abort ingest", move || w.abort()).await;
            }
            return Err(f);
        }
        Ok(w)
    }
}
