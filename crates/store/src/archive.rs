//! Image archives: [`Store::save`] and [`Store::load`] (`docker save` / `docker load`).
//!
//! # Format written
//!
//! One tar that is both a **docker-archive** and an **OCI image layout** (as docker ≥ 25
//! writes it):
//!
//! ```text
//! oci-layout                     {"imageLayoutVersion":"1.0.0"}
//! index.json                     OCI index: one manifest descriptor per saved name, with
//!                                io.containerd.image.name / org.opencontainers.image.ref.name
//! manifest.json                  docker: [{"Config","RepoTags","Layers"}] pointing into blobs/
//! repositories                   docker legacy: {"name":{"tag":"<top layer hex>"}}
//! blobs/sha256/<hex>             manifests, configs and layers exactly as stored
//! ```
//!
//! Blobs are written as stored (layers usually gzip); docker's loader decompresses layer
//! files itself. Because the manifests are the stored ones, a save → load round trip keeps
//! image ids *and* manifest digests.
//!
//! # Formats read
//!
//! docker-archive (new layout above, and the old `<id>/layer.tar` + `<hex>.json` layout,
//! with symlinked duplicate layers) and OCI image layout tars (`index.json` + `blobs/`).
//! The stream is read once: every file goes straight into the content store (blobs under
//! `blobs/<alg>/<hex>` are verified against their name); only the small metadata files are
//! held in memory (bounded). Then every image is validated by unpacking its layers (diff
//! ids checked) before any name is registered; on error, blobs and snapshots the load
//! added are deleted again and the index is untouched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest};
use crate::image::{
    chain_ids, media_types, Descriptor, ImageConfig, Index, Manifest, ParsedManifest,
    MAX_MANIFEST_SIZE,
};
use crate::layer::Compression;
use crate::reference::Reference;
use crate::store::{sio, Result, Store, StoreError};

const META_LIMIT: u64 = 16 << 20;
const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// One image found in a loaded archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Its id (config digest).
    pub id: Digest,
    /// The names it was loaded under (may be empty).
    pub references: Vec<Reference>,
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::InvalidArchive(msg.into())
}

/// Lexically normalises an archive path (no leading `./` or `/`, `..` resolved).
fn norm(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

/// Errors reading the archive stream are the archive's fault (truncated, not a tar, …).
fn tar_err(op: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    move |source| StoreError::CorruptArchive { op, source }
}

impl Store {
    /// Writes the images named by `names` (references, ids or id prefixes) as one archive
    /// to `out`; see the module docs. Streams blob files; nothing is held in memory.
    pub fn save<W: Write>(&self, names: &[String], out: W) -> Result<W> {
        // (image id) -> (record, tags requested)
        let mut order: Vec<Digest> = Vec::new();
        let mut wanted: HashMap<Digest, (crate::image::ImageRecord, Vec<Reference>)> =
            HashMap::new();
        for n in names {
            let rec = self.images().lookup(n)?;
            let tag = Reference::parse(n)
                .ok()
                .filter(|r| r.digest.is_none() && rec.references.contains(r));
            let e = wanted.entry(rec.id.clone()).or_insert_with(|| {
                order.push(rec.id.clone());
                (rec.clone(), Vec::new())
            });
            if let Some(t) = tag {
                if !e.1.contains(&t) {
                    e.1.push(t);
                }
            }
        }
        let mut b = tar::Builder::new(out);
        let mut written: HashSet<Digest> = HashSet::new();
        let mut docker_manifest = Vec::new();
        let mut index_manifests = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for id in &order {
            let (rec, tags) = &wanted[id];
            let mut blobs = vec![rec.manifest.digest.clone(), rec.config.digest.clone()];
            blobs.extend(rec.layers.iter().map(|l| l.digest.clone()));
            for d in blobs {
                if written.insert(d.clone()) {
                    self.append_blob(&mut b, &d)?;
                }
            }
            let path = |d: &Digest| format!("blobs/{}/{}", d.algorithm(), d.hex());
            docker_manifest.push(DockerManifestEntry {
                config: path(&rec.config.digest),
                repo_tags: Some(tags.iter().map(Reference::familiar).collect()),
                layers: rec.layers.iter().map(|l| path(&l.digest)).collect(),
            });
            if tags.is_empty() {
                index_manifests.push(rec.manifest.clone());
            }
            for t in tags {
                let mut d = rec.manifest.clone();
                d.annotations
                    .insert(ANN_CONTAINERD_NAME.into(), t.to_string());
                d.annotations
                    .insert(ANN_REF_NAME.into(), t.tag.clone().unwrap_or_default());
                index_manifests.push(d);
                if let (Some(tag), Some(top)) = (&t.tag, rec.layers.last()) {
                    repositories
                        .entry(t.familiar_name())
                        .or_default()
                        .insert(tag.clone(), top.digest.hex().to_string());
                }
            }
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.into()),
            manifests: index_manifests,
            annotations: BTreeMap::new(),
        };
        append_bytes(&mut b, "index.json", &to_json(&index)?)?;
        append_bytes(&mut b, "manifest.json", &to_json(&docker_manifest)?)?;
        append_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(&mut b, "repositories", &to_json(&repositories)?)?;
        b.into_inner().map_err(sio("write archive"))
    }

    fn append_blob<W: Write>(&self, b: &mut tar::Builder<W>, d: &Digest) -> Result<()> {
        let f = self.content().open_blob(d)?;
        let size = f.metadata().map_err(sio("stat blob"))?.len();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o444);
        h.set_size(size);
        h.set_mtime(0);
        b.append_data(
            &mut h,
            format!("blobs/{}/{}", d.algorithm(), d.hex()),
            f.take(size),
        )
        .map_err(sio("write archive"))
    }

    /// Loads a docker-archive or OCI layout tar (plain or compressed) into the store; see
    /// the module docs. Returns the images found, with the names they were tagged with.
    pub fn load<R: Read>(&self, reader: R) -> Result<Vec<LoadedImage>> {
        let mut added_blobs: Vec<Digest> = Vec::new();
        let snaps_before: HashSet<Digest> = self
            .snapshots()
            .list_committed()?
            .into_iter()
            .map(|c| c.chain_id)
            .collect();
        let res = self.load_inner(reader, &mut added_blobs);
        if res.is_err() {
            for d in &added_blobs {
                let _ = self.content().delete(d);
            }
            if let Ok(now) = self.snapshots().list_committed() {
                for c in now {
                    if !snaps_before.contains(&c.chain_id) {
                        let _ = self.snapshots().remove_committed(&c.chain_id);
                    }
                }
            }
        }
        res
    }

    fn load_inner<R: Read>(&self, reader: R, added: &mut Vec<Digest>) -> Result<Vec<LoadedImage>> {
        let (_, dec) = crate::layer::decompress(reader).map_err(tar_err("read archive"))?;
        let mut ar = tar::Archive::new(dec);
        let mut files: HashMap<PathBuf, Digest> = HashMap::new();
        let mut aliases: HashMap<PathBuf, PathBuf> = HashMap::new();
        let mut meta: HashMap<String, Vec<u8>> = HashMap::new();
        let nonce = format!(
            "load-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        for (n, entry) in ar.entries().map_err(tar_err("read archive"))?.enumerate() {
            let mut entry = entry.map_err(tar_err("read archive"))?;
            let raw = entry.path().map_err(tar_err("read archive"))?.into_owned();
            let Some(path) = norm(&raw) else {
                return Err(invalid(format!(
                    "entry {} escapes the archive",
                    raw.display()
                )));
            };
            let kind = entry.header().entry_type();
            if kind == tar::EntryType::Symlink || kind == tar::EntryType::Link {
                if let Some(t) = entry.link_name().map_err(tar_err("read archive"))? {
                    let target = if kind == tar::EntryType::Symlink {
                        path.parent().unwrap_or(Path::new("")).join(t)
                    } else {
                        t.into_owned()
                    };
                    if let Some(t) = norm(&target) {
                        aliases.insert(path, t);
                    }
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let name = path.to_string_lossy().into_owned();
            if matches!(
                name.as_str(),
                "manifest.json" | "index.json" | "oci-layout" | "repositories"
            ) {
                if entry.size() > META_LIMIT {
                    return Err(invalid(format!("{name} is too large")));
                }
                let mut buf = Vec::new();
                entry
                    .read_to_end(&mut buf)
                    .map_err(tar_err("read archive"))?;
                meta.insert(name, buf);
                continue;
            }
            let fname = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
            if fname == "json" || fname == "VERSION" {
                continue; // legacy v1 metadata, not needed
            }
            let expected = blob_name_digest(&path);
            if let Some(d) = &expected {
                if self.content().exists(d) {
                    files.insert(path, d.clone());
                    continue;
                }
            }
            let mut w = self.content().writer(&format!("{nonce}-{n}"))?;
            if w.offset() != 0 {
                w = w.restart()?;
            }
            let size = entry.size();
            let copied = match io::copy(&mut entry, &mut w) {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort();
                    return Err(tar_err("read archive")(e));
                }
            };
            if copied != size {
                let _ = w.abort();
                return Err(invalid(format!("entry {name} is truncated")));
            }
            let existed = expected.as_ref().is_some_and(|d| self.content().exists(d));
            let d = w
                .commit(Some(size), expected.as_ref())
                .map_err(|e| match e {
                    crate::content::ContentError::DigestMismatch { .. } => {
                        invalid(format!("blob {name} does not match its digest"))
                    }
                    e => e.into(),
                })?;
            if !existed && !added.contains(&d) {
                added.push(d.clone());
            }
            files.insert(path, d);
        }
        let resolve = |p: &str| -> Option<Digest> {
            let mut p = norm(Path::new(p))?;
            for _ in 0..16 {
                if let Some(d) = files.get(&p) {
                    return Some(d.clone());
                }
                p = aliases.get(&p)?.clone();
            }
            None
        };

        // (manifest descriptor, names)
        let mut images: Vec<(Descriptor, Vec<Reference>)> = Vec::new();
        let mut oci_by_config: HashMap<Digest, Descriptor> = HashMap::new();
        let mut oci_named: Vec<(Descriptor, Vec<Reference>)> = Vec::new();
        if let Some(idx) = meta.get("index.json") {
            let idx: Index =
                serde_json::from_slice(idx).map_err(|e| invalid(format!("index.json: {e}")))?;
            for d in idx.manifests {
                let names = ref_names(&d);
                for (md, m) in self.platform_manifests(&d)? {
                    oci_by_config.insert(m.config.digest.clone(), md.clone());
                    if !meta.contains_key("manifest.json") {
                        oci_named.push((md, names.clone()));
                    }
                }
            }
        }
        if let Some(mj) = meta.get("manifest.json") {
            let entries: Vec<DockerManifestEntry> =
                serde_json::from_slice(mj).map_err(|e| invalid(format!("manifest.json: {e}")))?;
            for e in entries {
                let cfg = resolve(&e.config)
                    .ok_or_else(|| invalid(format!("config {} missing", e.config)))?;
                let mut names = Vec::new();
                for t in e.repo_tags.unwrap_or_default() {
                    names.push(Reference::parse(&t).map_err(crate::image::ImageError::from)?);
                }
                let md = match oci_by_config.get(&cfg) {
                    Some(md) => md.clone(),
                    None => {
                        let mut layers = Vec::new();
                        for l in &e.layers {
                            let d =
                                resolve(l).ok_or_else(|| invalid(format!("layer {l} missing")))?;
                            layers.push(self.layer_descriptor(d)?);
                        }
                        self.synthesize_manifest(&cfg, layers, added)?
                    }
                };
                images.push((md, names));
            }
        } else {
            images = oci_named;
        }
        if images.is_empty() {
            return Err(invalid(
                "no images found (need manifest.json or index.json)",
            ));
        }
        // Validate everything before registering anything.
        for (md, _) in &images {
            self.validate_and_unpack(md)?;
        }
        let mut out: Vec<LoadedImage> = Vec::new();
        for (md, names) in images {
            let rec = self.images().add_image(&md)?;
            for r in &names {
                self.images().tag(&rec.id, r)?;
            }
            match out.iter_mut().find(|l| l.id == rec.id) {
                Some(l) => l.references.extend(names),
                None => out.push(LoadedImage {
                    id: rec.id,
                    references: names,
                }),
            }
        }
        Ok(out)
    }

    /// The host-platform manifest(s) a descriptor from an index.json leads to.
    fn platform_manifests(&self, d: &Descriptor) -> Result<Vec<(Descriptor, Manifest)>> {
        if !self.content().exists(&d.digest) {
            return Err(invalid(format!("manifest {} missing", d.digest)));
        }
        match self.images().read_manifest(d)? {
            ParsedManifest::Manifest(m) => {
                let mut d = d.clone();
                d.annotations.clear();
                Ok(vec![(d, *m)])
            }
            ParsedManifest::Index(_) => {
                let (md, m) = self.images().resolve_target(d)?;
                Ok(vec![(md, m)])
            }
        }
    }

    fn layer_descriptor(&self, d: Digest) -> Result<Descriptor> {
        let mut f = self.content().open_blob(&d)?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).map_err(sio("read layer"))?;
        let size = self.content().size(&d)?;
        let mt = match Compression::detect(&magic[..n]) {
            Compression::Gzip => media_types::OCI_LAYER_GZIP,
            Compression::Zstd => media_types::OCI_LAYER_ZSTD,
            Compression::None => media_types::OCI_LAYER,
        };
        Ok(Descriptor::new(mt, d, size))
    }

    fn synthesize_manifest(
        &self,
        cfg: &Digest,
        layers: Vec<Descriptor>,
        added: &mut Vec<Digest>,
    ) -> Result<Descriptor> {
        let cfg_size = self.content().size(cfg)?;
        let m = Manifest {
            schema_version: 2,
            media_type: Some(media_types::OCI_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::new(media_types::OCI_CONFIG, cfg.clone(), cfg_size),
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        };
        let bytes =
            serde_json::to_vec(&m).map_err(|e| sio("encode manifest")(io::Error::other(e)))?;
        let existed = self.content().exists(&Digest::sha256_of(&bytes));
        let d = self.content().put_bytes(&bytes)?;
        if !existed {
            added.push(d.clone());
        }
        Ok(Descriptor::new(
            media_types::OCI_MANIFEST,
            d,
            bytes.len() as u64,
        ))
    }

    fn validate_and_unpack(&self, md: &Descriptor) -> Result<()> {
        if md.size > MAX_MANIFEST_SIZE {
            return Err(crate::image::ImageError::ManifestTooLarge(md.digest.to_string()).into());
        }
        let m = match self.images().read_manifest(md)? {
            ParsedManifest::Manifest(m) => m,
            ParsedManifest::Index(_) => return Err(invalid("nested index")),
        };
        let cfg = ImageConfig::parse(&self.images().read_config_bytes(&m.config.digest)?)?;
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            return Err(invalid(format!(
                "image {}: {} layers but {} diff ids",
                m.config.digest,
                m.layers.len(),
                cfg.rootfs.diff_ids.len()
            )));
        }
        let chains = chain_ids(&cfg.rootfs.diff_ids);
        let mut parent: Option<&Digest> = None;
        for (i, chain) in chains.iter().enumerate() {
            if !self.snapshots().exists(chain) {
                let blob = self.content().open_blob(&m.layers[i].digest)?;
                self.snapshots().apply_layer(
                    chain,
                    parent,
                    &cfg.rootfs.diff_ids[i],
                    io::BufReader::with_capacity(1 << 20, blob),
                    self.apply_options(),
                )?;
            }
            parent = Some(chain);
        }
        Ok(())
    }
}

/// Names an index.json descriptor carries.
fn ref_names(d: &Descriptor) -> Vec<Reference> {
    if let Some(n) = d.annotations.get(ANN_CONTAINERD_NAME) {
        if let Ok(r) = Reference::parse(n) {
            return vec![r];
        }
    }
    if let Some(n) = d.annotations.get(ANN_REF_NAME) {
        // Either a full reference or just a tag (which names nothing on its own).
        if n.contains('/') || n.contains(':') {
            if let Ok(r) = Reference::parse(n) {
                return vec![r];
            }
        }
    }
    Vec::new()
}

/// `blobs/<alg>/<hex>` → the digest it names.
fn blob_name_digest(p: &Path) -> Option<Digest> {
    let mut c = p.components();
    if c.next()?.as_os_str() != "blobs" {
        return None;
    }
    let alg = match c.next()?.as_os_str().to_str()? {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        _ => return None,
    };
    let hex = c.next()?.as_os_str().to_str()?;
    if c.next().is_some() {
        return None;
    }
    Digest::from_hex(alg, hex).ok()
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, name, data)
        .map_err(sio("write archive"))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| sio("encode archive metadata")(io::Error::other(e)))
}
