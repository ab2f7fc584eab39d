//! Pushing: blob existence checks, cross-repository mounts, uploads, then the manifest.
//! Uncompressed layers (the builder stores its layers so) are pushed gzip-compressed,
//! under a manifest rewritten for them (see `compressed_manifest`), also for each platform
//! of an index pushed whole, under an index rewritten to name those manifests
//! (`compressed_index`).

use std::io::{Seek, SeekFrom};
use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use store::image::{parse_manifest, Descriptor, ParsedManifest};
use store::{Digest, ImageStore, Reference};

use super::pull::{blocking, Progress, ProgressFn, ProgressStatus};
use super::{repo_scope, ClientError, Endpoint, RegistryClient};

/// A request body streaming `len` bytes of `path` from `offset`.
fn file_body(path: &PathBuf, offset: u64, len: u64) -> reqwest::Body {
    let opened = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        Ok(f)
    });
    match opened {
        Ok(f) => {
            use tokio::io::AsyncReadExt;
            let f = tokio::fs::File::from_std(f).take(len);
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024))
        }
        Err(e) => reqwest::Body::wrap_stream(futures::stream::once(async move {
            Err::<bytes::Bytes, std::io::Error>(e)
        })),
    }
}

/// The manifest to push for the local manifest `desc` (`bytes`): its uncompressed layers
/// (build layers are stored so) replaced by their gzip copies ([`store::ContentStore::gzip_of`],
/// made once and kept), as docker compresses layers when it pushes. The config, and so
/// the image id, stays; the pushed manifest gets its own digest. Unchanged (the same
/// bytes) when every layer is compressed already. For an index pushed whole each platform's
/// manifest is rewritten so, and the index with them ([`compressed_index`]).
async fn compressed_manifest(
    images: &ImageStore,
    desc: &Descriptor,
    bytes: Vec<u8>,
) -> Result<(Descriptor, Vec<u8>), ClientError> {
    use store::image::media_types as mt;
    let invalid = |e: serde_json::Error| ClientError::InvalidManifest {
        reference: desc.digest.to_string(),
        reason: e.to_string(),
    };
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    let Some(layers) = v.get_mut("layers").and_then(|l| l.as_array_mut()) else {
        return Ok((desc.clone(), bytes));
    };
    let mut changed = false;
    for l in layers.iter_mut() {
        let gzip_type = match l.get("mediaType").and_then(|m| m.as_str()) {
            Some(mt::OCI_LAYER) => mt::OCI_LAYER_GZIP,
            Some(mt::DOCKER_LAYER) => mt::DOCKER_LAYER_GZIP,
            _ => continue,
        };
        if l.get("urls")
            .is_some_and(|u| u.as_array().is_some_and(|a| !a.is_empty()))
        {
            continue;
        }
        let Some(Ok(digest)) = l.get("digest").and_then(|d| d.as_str()).map(Digest::parse) else {
            continue;
        };
        let content = images.content().clone();
        let (gz, size) = blocking("compress layer", move || content.gzip_of(&digest))
            .await?
            .map_err(|e| ClientError::store("compress layer", e))?;
        l["mediaType"] = gzip_type.into();
        l["digest"] = gz.to_string().into();
        l["size"] = size.into();
        changed = true;
    }
    if !changed {
        return Ok((desc.clone(), bytes));
    }
    let out = serde_json::to_vec(&v).map_err(invalid)?;
    let mut d = desc.clone();
    d.digest = Digest::sha256_of(&out);
    d.size = out.len() as u64;
    Ok((d, out))
}

/// The index to push for the local index `desc` (`bytes`) whose manifests were rewritten
/// by [`compressed_manifest`]: each entry in `rewritten` (old digest → new descriptor) gets
/// the new manifest's digest and size, everything else (platforms, annotations) stays.
/// Unchanged (the same bytes) when no manifest changed.
fn compressed_index(
    desc: &Descriptor,
    bytes: Vec<u8>,
    rewritten: &[(Digest, Descriptor)],
) -> Result<(Descriptor, Vec<u8>), ClientError> {
    if rewritten.iter().all(|(old, new)| *old == new.digest) {
        return Ok((desc.clone(), bytes));
    }
    let invalid = |e: serde_json::Error| ClientError::InvalidManifest {
        reference: desc.digest.to_string(),
        reason: e.to_string(),
    };
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    if let Some(ms) = v.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        for m in ms.iter_mut() {
            let Some(Ok(digest)) = m.get("digest").and_then(|d| d.as_str()).map(Digest::parse)
            else {
                continue;
            };
            if let Some((_, new)) = rewritten.iter().find(|(old, _)| *old == digest) {
                m["digest"] = new.digest.to_string().into();
                m["size"] = new.size.into();
            }
        }
    }
    let out = serde_json::to_vec(&v).map_err(invalid)?;
    let mut d = desc.clone();
    d.digest = Digest::sha256_of(&out);
    d.size = out.len() as u64;
    Ok((d, out))
}

/// Resolves a `Location` header (absolute or relative) against the endpoint.
fn resolve_location(ep: &Endpoint, loc: &str) -> Result<reqwest::Url, ClientError> {
    let base = reqwest::Url::parse(&format!("{}/", ep.base)).map_err(|_| {
        ClientError::InvalidReference {
            reference: ep.domain.clone(),
            reason: "not a valid registry URL".into(),
        }
    })?;
    base.join(loc).map_err(|_| ClientError::Status {
        registry: ep.domain.clone(),
        method: "POST".into(),
        url: loc.to_string(),
        status: 202,
        message: "invalid upload Location".into(),
    })
}

fn location(ep: &Endpoint, resp: &reqwest::Response) -> Result<reqwest::Url, ClientError> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ClientError::Status {
            registry: ep.domain.clone(),
            method: "POST".into(),
            url: resp.url().to_string(),
            status: resp.status().as_u16(),
            message: "upload response without Location".into(),
        })?;
    resolve_location(ep, loc)
}

impl RegistryClient {
    /// Pushes the local image `reference` names (tag or digest) to its registry and returns
    /// the digest of the manifest (or index) pushed.
    ///
    /// An index is pushed with all its manifests when they are all stored locally;
    /// otherwise (a pull keeps only the host platform) the host platform's manifest is
    /// pushed under the reference instead.
    pub async fn push(
        &self,
        reference: &Reference,
        images: &ImageStore,
        progress: ProgressFn<'_>,
    ) -> Result<Digest, ClientError> {
        let tag_or_digest = match (&reference.tag, &reference.digest) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => store::reference::DEFAULT_TAG.to_string(),
        };
        let imgs = images.clone();
        let r = reference.clone();
        let target = blocking("look up image", move || imgs.get_ref(&r))
            .await?
            .map_err(|e| ClientError::store("look up image", e))?
            .ok_or_else(|| ClientError::ManifestUnknown {
                reference: format!("{} (local image)", reference.familiar()),
            })?;
        let ep = self.endpoint(&reference.domain);
        let path = reference.path.as_str();
        let scope = repo_scope(path, true);
        let content = images.content().clone();
        let read = |d: Descriptor| {
            let content = content.clone();
            async move {
                blocking("read manifest", move || {
                    content.read_blob(&d.digest, store::image::MAX_MANIFEST_SIZE)
                })
                .await?
                .map_err(|e| ClientError::store("read manifest", e))
            }
        };
        let bytes = read(target.clone()).await?;
        let parsed = parse_manifest(&bytes, Some(&target.media_type)).map_err(|e| {
            ClientError::InvalidManifest {
                reference: reference.to_string(),
                reason: e.to_string(),
            }
        })?;
        match parsed {
            ParsedManifest::Manifest(_) => {
                let (target, bytes) = compressed_manifest(images, &target, bytes).await?;
                self.push_manifest(
                    &ep,
                    path,
                    &scope,
                    images,
                    &target,
                    &bytes,
                    &tag_or_digest,
                    progress,
                )
                .await
            }
            ParsedManifest::Index(idx) => {
                let all_local = idx.manifests.iter().all(|m| content.exists(&m.digest));
                if all_local {
                    // Each platform's layers go gzip-compressed as a single image's do,
                    // under its rewritten manifest, and the index names those.
                    let mut rewritten = Vec::with_capacity(idx.manifests.len());
                    for m in &idx.manifests {
                        let b = read(m.clone()).await?;
                        let (md, b) = compressed_manifest(images, m, b).await?;
                        self.push_manifest(
                            &ep,
                            path,
                            &scope,
                            images,
                            &md,
                            &b,
                            &md.digest.to_string(),
                            progress,
                        )
                        .await?;
                        rewritten.push((m.digest.clone(), md));
                    }
                    let (target, bytes) = compressed_index(&target, bytes, &rewritten)?;
                    self.put_manifest(
                        &ep,
                        path,
                        &scope,
                        &target.media_type,
                        &bytes,
                        &tag_or_digest,
                    )
                    .await
                } else {
                    let imgs = images.clone();
                    let t = target.clone();
                    let (md, _) = blocking("resolve image", move || imgs.resolve_target(&t))
                        .await?
                        .map_err(|e| ClientError::store("resolve image", e))?;
                    let b = read(md.clone()).await?;
                    let (md, b) = compressed_manifest(images, &md, b).await?;
                    self.push_manifest(&ep, path, &scope, images, &md, &b, &tag_or_digest, progress)
                        .await
                }
            }
        }
    }

    /// Pushes a manifest's blobs (in parallel, bounded) and then the manifest.
    #[allow(clippy::too_many_arguments)]
    async fn push_manifest(
        &self,
        ep: &Endpoint,
        path: &str,
        scope: &str,
        images: &ImageStore,
        desc: &Descriptor,
        bytes: &[u8],
        reference: &str,
        progress: ProgressFn<'_>,
    ) -> Result<Digest, ClientError> {
        let m = match parse_manifest(bytes, Some(&desc.media_type)) {
            Ok(ParsedManifest::Manifest(m)) => m,
            _ => {
                return Err(ClientError::InvalidManifest {
                    reference: desc.digest.to_string(),
                    reason: "not an image manifest".into(),
                })
            }
        };
        let mut blobs: Vec<Descriptor> = m
            .layers
            .iter()
            .filter(|l| l.urls.is_empty())
            .cloned()
            .collect();
        blobs.push(m.config.clone());
        for b in &m.layers {
            progress(Progress {
                digest: b.digest.clone(),
                status: ProgressStatus::Waiting,
            });
        }
        // Progress is per layer, as docker shows it; the config blob is pushed silently.
        let silent = |_: Progress| {};
        let config_digest = &m.config.digest;
        futures::stream::iter(blobs.iter().map(|b| {
            let p: ProgressFn<'_> = if &b.digest == config_digest
                && !m.layers.iter().any(|l| &l.digest == config_digest)
            {
                &silent
            } else {
                progress
            };
            async move { self.push_blob(ep, path, scope, images, b, p).await }
        }))
        .buffer_unordered(self.config.max_concurrent_uploads.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        self.put_manifest(ep, path, scope, &desc.media_type, bytes, reference)
            .await
    }

    /// PUTs manifest bytes under a tag or digest and checks the digest the registry reports.
    async fn put_manifest(
        &self,
        ep: &Endpoint,
        path: &str,
        scope: &str,
        media_type: &str,
        bytes: &[u8],
        reference: &str,
    ) -> Result<Digest, ClientError> {
        let url = format!("{}/v2/{path}/manifests/{reference}", ep.base);
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .with_retries(&url, None, || async {
                self.send(ep, scope, &|c| {
                    c.put(&url)
                        .header(CONTENT_TYPE, media_type)
                        .body(body.clone())
                })
                .await
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(ep, &Method::PUT, resp).await);
        }
        let ours = Digest::sha256_of(bytes);
        if let Some(theirs) = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok())
        {
            if theirs != ours && theirs.algorithm() == ours.algorithm() {
                return Err(ClientError::DigestMismatch {
                    what: format!("manifest pushed to {}/{path}", ep.domain),
                    expected: ours.to_string(),
                    actual: theirs.to_string(),
                });
            }
        }
        Ok(ours)
    }

    /// Repositories of the same registry that hold `digest`: those this client has seen
    /// it in, plus local references of that registry whose image lists the blob.
    async fn mount_candidates(
        &self,
        ep: &Endpoint,
        path: &str,
        images: &ImageStore,
        digest: &Digest,
    ) -> Vec<String> {
        let mut out = self.mount_sources(&ep.domain, &digest.to_string(), path);
        let imgs = images.clone();
        let domain = ep.domain.clone();
        let d = digest.clone();
        let own = path.to_string();
        let local = blocking("scan references", move || {
            let mut repos = Vec::new();
            let Ok(refs) = imgs.refs() else {
                return repos;
            };
            for (r, target) in refs {
                if r.domain != domain || r.path == own || repos.contains(&r.path) {
                    continue;
                }
                if let Ok((_, m)) = imgs.resolve_target(&target) {
                    if m.layers.iter().any(|l| l.digest == d) || m.config.digest == d {
                        repos.push(r.path.clone());
                    }
                }
            }
            repos
        })
        .await
        .unwrap_or_default();
        for r in local {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    /// Makes one blob available in the repository: skip, mount or upload.
    async fn push_blob(
        &self,
        ep: &Endpoint,
        path: &str,
        scope: &str,
        images: &ImageStore,
        desc: &Descriptor,
        progress: ProgressFn<'_>,
    ) -> Result<(), ClientError> {
        let emit = |status| {
            progress(Progress {
                digest: desc.digest.clone(),
                status,
            })
        };
        let blob_url = format!("{}/v2/{path}/blobs/{}", ep.base, desc.digest);
        let resp = self
            .with_retries(&blob_url, None, || async {
                self.send(ep, scope, &|c| c.head(&blob_url)).await
            })
            .await?;
        if resp.status().is_success() {
            self.note_blob(&ep.domain, &desc.digest.to_string(), path);
            emit(ProgressStatus::AlreadyExists);
            return Ok(());
        }
        if resp.status() != StatusCode::NOT_FOUND {
            return Err(self.status_error(ep, &Method::HEAD, resp).await);
        }
        if !images.content().exists(&desc.digest) {
            return Err(ClientError::BlobUnknown {
                digest: desc.digest.to_string(),
                repository: "local content store".into(),
            });
        }
        // A build layer kept only as its snapshot is made into a file first.
        let content = images.content().clone();
        let digest = desc.digest.clone();
        let blob_path = blocking("open blob", move || content.stored_path(&digest))
            .await?
            .map_err(|e| ClientError::store("open blob", e))?;
        // A session Location from a failed mount attempt can be reused for the upload.
        let mut session = None;
        for from in self.mount_candidates(ep, path, images, &desc.digest).await {
            let url = format!(
                "{}/v2/{path}/blobs/uploads/?mount={}&from={from}",
                ep.base, desc.digest
            );
            let mount_scope = format!("{scope} {}", repo_scope(&from, false));
            let resp = self.send(ep, &mount_scope, &|c| c.post(&url)).await?;
            if resp.status() == StatusCode::CREATED {
                self.note_blob(&ep.domain, &desc.digest.to_string(), path);
                emit(ProgressStatus::Mounted { from });
                return Ok(());
            }
            if resp.status() == StatusCode::ACCEPTED {
                session = Some(location(ep, &resp)?);
                break;
            }
        }
        let on_retry = |attempt| emit(ProgressStatus::Retrying { attempt });
        let first = std::sync::Mutex::new(session);
        self.with_retries(&blob_url, Some(&on_retry), || async {
            let start = first.lock().unwrap_or_else(|e| e.into_inner()).take();
            self.upload(ep, path, scope, desc, &blob_path, start, &emit)
                .await
        })
        .await?;
        self.note_blob(&ep.domain, &desc.digest.to_string(), path);
        emit(ProgressStatus::Done);
        Ok(())
    }

    /// Uploads a blob: one streamed PUT, or PATCH chunks then PUT when it is large.
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        ep: &Endpoint,
        path: &str,
        scope: &str,
        desc: &Descriptor,
        file: &PathBuf,
        session: Option<reqwest::Url>,
        emit: &(dyn Fn(ProgressStatus) + Send + Sync),
    ) -> Result<(), ClientError> {
        let mut loc = match session {
            Some(l) => l,
            None => {
                let url = format!("{}/v2/{path}/blobs/uploads/", ep.base);
                let resp = self
                    .send(ep, scope, &|c| c.post(&url).header(CONTENT_LENGTH, 0))
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.status_error(ep, &Method::POST, resp).await);
                }
                location(ep, &resp)?
            }
        };
        let size = desc.size;
        let chunk = self.config.chunk_size.max(1);
        let mut offset = 0u64;
        emit(ProgressStatus::Uploading {
            current: 0,
            total: size,
        });
        if size > chunk {
            while offset < size {
                let len = chunk.min(size - offset);
                let url = loc.clone();
                let resp = self
                    .send(ep, scope, &|c| {
                        c.patch(url.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, format!("{}-{}", offset, offset + len - 1))
                            .header(CONTENT_LENGTH, len)
                            .body(file_body(file, offset, len))
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.status_error(ep, &Method::PATCH, resp).await);
                }
                loc = location(ep, &resp)?;
                offset += len;
                emit(ProgressStatus::Uploading {
                    current: offset,
                    total: size,
                });
            }
        }
        let mut put = loc;
        put.query_pairs_mut()
            .append_pair("digest", &desc.digest.to_string());
        let remaining = size - offset;
        let resp = self
            .send(ep, scope, &|c| {
                let rb = c
                    .put(put.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, remaining);
                if remaining > 0 {
                    rb.body(file_body(file, offset, remaining))
                } else {
                    rb
                }
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(ep, &Method::PUT, resp).await);
        }
        emit(ProgressStatus::Uploading {
            current: size,
            total: size,
        });
        Ok(())
    }
}
