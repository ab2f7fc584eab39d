//! Helpers shared by the integration tests: a registry server on 127.0.0.1 with an
//! ephemeral port that stops when its guard drops.
#![allow(dead_code)]

use std::path::Path;

/// A running in-process registry server; aborted on drop.
pub struct Server {
    pub base: String,
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts our registry over `root` on 127.0.0.1:0.
pub async fn start_server(root: &Path, htpasswd: Option<&Path>) -> Server {
    let app = distribution::server::router(root, htpasswd).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = distribution::server::serve_listener(listener, app).await;
    });
    Server {
        base: format!("http://{addr}"),
        addr,
        task,
    }
}

/// `sha256:<hex>` of data.
pub fn digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Writes an htpasswd file with one bcrypt entry using Apache's `htpasswd -Bbn`.
pub fn write_htpasswd(path: &Path, user: &str, pass: &str) {
    let out = std::process::Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("run htpasswd (apache2-utils)");
    assert!(out.status.success(), "htpasswd failed");
    std::fs::write(path, out.stdout).unwrap();
}

use store::image::{media_types, Descriptor};
use store::{ContentStore, Digest, ImageStore, Reference};

/// A fresh image store (content + index) in `dir`.
pub fn open_store(dir: &Path) -> ImageStore {
    let content = ContentStore::open(dir.join("content")).unwrap();
    ImageStore::open(dir.join("images"), content).unwrap()
}

/// A gzip-compressed tar layer holding `files` (path, contents); returns (blob, diff id).
pub fn tar_layer(files: &[(&str, Vec<u8>)]) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    gzip_tar(b.into_inner().unwrap())
}

/// A gzip-compressed tar of a busybox root filesystem; returns (blob, diff id).
pub fn busybox_layer() -> (Vec<u8>, Digest) {
    let dir = tempfile::tempdir().unwrap();
    testutil::busybox_rootfs(dir.path()).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(".", dir.path()).unwrap();
    gzip_tar(b.into_inner().unwrap())
}

fn gzip_tar(raw: Vec<u8>) -> (Vec<u8>, Digest) {
    use std::io::Write;
    let diff_id = Digest::sha256_of(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// What [`build_image`] stored.
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

/// Stores an OCI image made of `layers` (gzip blobs with their diff ids) for the host
/// platform in `images` and tags it `reference`.
pub fn build_image(
    images: &ImageStore,
    reference: &str,
    layers: &[(Vec<u8>, Digest)],
) -> BuiltImage {
    let content = images.content();
    let p = images.platform().clone();
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.to_string()).collect();
    let config = serde_json::json!({
        "architecture": p.architecture, "os": p.os,
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = content.put_bytes(&config_bytes).unwrap();
    let mut layer_descs = Vec::new();
    let mut layer_digests = Vec::new();
    for (blob, _) in layers {
        let d = content.put_bytes(blob).unwrap();
        layer_descs.push(serde_json::json!({
            "mediaType": media_types::OCI_LAYER_GZIP, "digest": d.to_string(), "size": blob.len(),
        }));
        layer_digests.push(d);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": layer_descs,
    });
    let mb = serde_json::to_vec(&manifest).unwrap();
    let md = content.put_bytes(&mb).unwrap();
    let desc = Descriptor::new(media_types::OCI_MANIFEST, md, mb.len() as u64);
    images
        .set_ref(&Reference::parse(reference).unwrap(), &desc)
        .unwrap()
        .expect("image for host platform");
    BuiltImage {
        manifest: desc,
        config: config_digest,
        layers: layer_digests,
    }
}

/// Collects progress events from a pull or push.
#[derive(Default)]
pub struct Events(pub std::sync::Mutex<Vec<distribution::client::Progress>>);

impl Events {
    pub fn push(&self, p: distribution::client::Progress) {
        self.0.lock().unwrap().push(p);
    }
    pub fn statuses(&self, d: &Digest) -> Vec<distribution::client::ProgressStatus> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|p| &p.digest == d)
            .map(|p| p.status.clone())
            .collect()
    }
}
