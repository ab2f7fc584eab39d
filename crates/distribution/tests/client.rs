//! The registry client against our own server, and against misbehaving fake registries,
//! all on 127.0.0.1.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{build_image, busybox_layer, open_store, start_server, tar_layer, Events};
use distribution::client::{ClientConfig, ClientError, ProgressStatus, RegistryClient};
use errkind::HasKind;
use store::{Digest, Reference};

fn client() -> RegistryClient {
    RegistryClient::new(ClientConfig {
        docker_config_dir: Some(std::env::temp_dir().join("berth-no-docker-config")),
        chunk_size: 1024 * 1024,
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn push_then_pull_into_fresh_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("registry"), None).await;
    let src = open_store(&dir.path().join("src"));
    // A busybox layer, a small layer and a 3 MiB layer (pushed in chunks of 1 MiB).
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let layers = vec![
        busybox_layer(),
        tar_layer(&[("etc/motd", b"hello\n".to_vec())]),
        tar_layer(&[("data/big", big)]),
    ];
    let name = format!("{}/test/busybox:v1", s.addr);
    let built = build_image(&src, &name, &layers);
    let reference = Reference::parse(&name).unwrap();
    let c = client();

    let pushed_events = Events::default();
    let pushed = c
        .push(&reference, &src, &|p| pushed_events.push(p))
        .await
        .unwrap();
    assert_eq!(pushed, built.manifest.digest);
    for l in &built.layers {
        assert!(pushed_events.statuses(l).contains(&ProgressStatus::Done));
    }

    // Pushing again: everything is already there.
    let again = Events::default();
    c.push(&reference, &src, &|p| again.push(p)).await.unwrap();
    for l in &built.layers {
        assert!(again.statuses(l).contains(&ProgressStatus::AlreadyExists));
    }

    let dst = open_store(&dir.path().join("dst"));
    let events = Events::default();
    let record = client()
        .pull(&reference, &dst, &|p| events.push(p))
        .await
        .unwrap();
    assert_eq!(record.id, built.config);
    assert_eq!(record.manifest.digest, built.manifest.digest);
    let got: Vec<Digest> = record.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(got, built.layers);
    for l in &built.layers {
        assert!(dst.content().exists(l));
        let st = events.statuses(l);
        assert_eq!(st.first(), Some(&ProgressStatus::Waiting));
        assert_eq!(st.last(), Some(&ProgressStatus::Done));
        assert!(st.contains(&ProgressStatus::Verifying));
    }
    assert_eq!(
        dst.content().read_blob(&built.config, 1 << 20).unwrap(),
        src.content().read_blob(&built.config, 1 << 20).unwrap()
    );
    // The tag resolves in the destination store.
    assert_eq!(dst.resolve(&reference).unwrap().id, built.config);

    // Pulling again skips every layer.
    let events = Events::default();
    client()
        .pull(&reference, &dst, &|p| events.push(p))
        .await
        .unwrap();
    for l in &built.layers {
        assert!(events.statuses(l).contains(&ProgressStatus::AlreadyExists));
    }

    // Push to another repository of the same registry: layers are mounted.
    let other = Reference::parse(&format!("{}/other/copy:v1", s.addr)).unwrap();
    src.tag(&built.config, &other).unwrap();
    let events = Events::default();
    assert_eq!(
        c.push(&other, &src, &|p| events.push(p)).await.unwrap(),
        built.manifest.digest
    );
    for l in &built.layers {
        assert!(
            events.statuses(l).contains(&ProgressStatus::Mounted {
                from: "test/busybox".into()
            }),
            "{:?}",
            events.statuses(l)
        );
    }
}

/// A Docker manifest list with a foreign platform first and the host's second: the pull
/// resolves to the host's manifest and records the list under the tag.
#[tokio::test]
async fn pull_manifest_list_picks_host_platform() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("registry"), None).await;
    let src = open_store(&dir.path().join("src"));
    let name = format!("{}/multi/arch:host", s.addr);
    let built = build_image(&src, &name, &[tar_layer(&[("f", b"x".to_vec())])]);
    let c = client();
    c.push(&Reference::parse(&name).unwrap(), &src, &|_| {})
        .await
        .unwrap();

    // A foreign-platform manifest sharing nothing with the host one.
    let http = reqwest::Client::new();
    let cfg = br#"{"architecture":"s390x","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = common::digest(cfg);
    http.post(format!(
        "{}/v2/multi/arch/blobs/uploads/?digest={cd}",
        s.base
    ))
    .body(cfg.to_vec())
    .send()
    .await
    .unwrap();
    let m = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
        "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":cd,"size":cfg.len()},"layers":[]});
    let mb = serde_json::to_vec(&m).unwrap();
    let r = http
        .put(format!("{}/v2/multi/arch/manifests/foreign", s.base))
        .header(
            "content-type",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .body(mb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let host = src.platform().clone();
    let list = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests":[
            {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":common::digest(&mb),"size":mb.len(),
             "platform":{"architecture":"s390x","os":"linux"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":built.manifest.digest.to_string(),
             "size":built.manifest.size,"platform":{"architecture":host.architecture,"os":host.os}}]});
    let lb = serde_json::to_vec(&list).unwrap();
    let r = http
        .put(format!("{}/v2/multi/arch/manifests/latest", s.base))
        .header(
            "content-type",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .body(lb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let dst = open_store(&dir.path().join("dst"));
    let reference = Reference::parse(&format!("{}/multi/arch", s.addr)).unwrap();
    let rec = c.pull(&reference, &dst, &|_| {}).await.unwrap();
    assert_eq!(rec.manifest.digest, built.manifest.digest);
    assert_eq!(rec.id, built.config);
    let target = dst.get_ref(&reference).unwrap().unwrap();
    assert_eq!(target.digest.to_string(), common::digest(&lb));
    assert_eq!(
        target.media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    // The foreign platform's config was not downloaded.
    assert!(!dst.content().exists(&Digest::parse(&cd).unwrap()));
}

/// Pushing an index whose manifests are all stored locally pushes each of them and then
/// the index; pulling it back resolves the host platform.
#[tokio::test]
async fn push_index_with_all_platforms() {
    use store::image::{media_types, Descriptor};
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("registry"), None).await;
    let src = open_store(&dir.path().join("src"));
    let host_img = build_image(
        &src,
        "local/host:v1",
        &[tar_layer(&[("h", b"host".to_vec())])],
    );

    // A foreign image stored by hand (the store would not tag it for this host).
    let content = src.content();
    let (foreign_layer, foreign_diff) = tar_layer(&[("f", b"foreign".to_vec())]);
    let fl = content.put_bytes(&foreign_layer).unwrap();
    let cfg = serde_json::to_vec(&serde_json::json!({"architecture":"s390x","os":"linux",
        "rootfs":{"type":"layers","diff_ids":[foreign_diff.to_string()]}}))
    .unwrap();
    let cd = content.put_bytes(&cfg).unwrap();
    let fm = serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"mediaType":media_types::OCI_MANIFEST,
        "config":{"mediaType":media_types::OCI_CONFIG,"digest":cd.to_string(),"size":cfg.len()},
        "layers":[{"mediaType":media_types::OCI_LAYER_GZIP,"digest":fl.to_string(),"size":foreign_layer.len()}]}))
    .unwrap();
    let fmd = content.put_bytes(&fm).unwrap();
    let host = src.platform().clone();
    let idx = serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"mediaType":media_types::OCI_INDEX,
        "manifests":[
            {"mediaType":media_types::OCI_MANIFEST,"digest":fmd.to_string(),"size":fm.len(),
             "platform":{"architecture":"s390x","os":"linux"}},
            {"mediaType":media_types::OCI_MANIFEST,"digest":host_img.manifest.digest.to_string(),
             "size":host_img.manifest.size,"platform":{"architecture":host.architecture,"os":host.os}}]}))
    .unwrap();
    let idx_digest = content.put_bytes(&idx).unwrap();
    let name = format!("{}/multi/pushed:v1", s.addr);
    let reference = Reference::parse(&name).unwrap();
    src.set_ref(
        &reference,
        &Descriptor::new(media_types::OCI_INDEX, idx_digest.clone(), idx.len() as u64),
    )
    .unwrap();

    let c = client();
    assert_eq!(c.push(&reference, &src, &|_| {}).await.unwrap(), idx_digest);
    // Both platform manifests and the foreign layer are in the registry.
    let http = reqwest::Client::new();
    for d in [&fmd, &host_img.manifest.digest] {
        let r = http
            .head(format!("{}/v2/multi/pushed/manifests/{d}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{d}");
    }
    let r = http
        .head(format!("{}/v2/multi/pushed/blobs/{fl}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let dst = open_store(&dir.path().join("dst"));
    let rec = c.pull(&reference, &dst, &|_| {}).await.unwrap();
    assert_eq!(rec.manifest.digest, host_img.manifest.digest);
    assert_eq!(dst.get_ref(&reference).unwrap().unwrap().digest, idx_digest);
    assert!(!dst.content().exists(&fl));
}

/// An index whose platforms' layers are stored uncompressed (as the builder stores its
/// layers) is pushed with every layer gzip-compressed, as a single-platform push does:
/// each platform's manifest is rewritten to the gzip blobs and the index to those
/// manifests; pulling it back gives the same image (config, diff ids).
#[tokio::test]
async fn push_index_compresses_each_platforms_layers() {
    use std::io::Read;
    use store::image::{media_types, Descriptor};
    let gunzip = |b: &[u8]| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("registry"), None).await;
    let src = open_store(&dir.path().join("src"));
    let content = src.content();
    let host = src.platform().clone();
    // One image per platform, each with an uncompressed layer.
    let mut entries = Vec::new();
    let mut images = Vec::new();
    for (arch, file) in [("s390x", "foreign"), (host.architecture.as_str(), "host")] {
        let (gz, diff_id) = tar_layer(&[(file, file.as_bytes().to_vec())]);
        let raw = gunzip(&gz);
        let ld = content.put_bytes(&raw).unwrap();
        assert_eq!(ld, diff_id);
        let cfg = serde_json::to_vec(&serde_json::json!({"architecture":arch,"os":"linux",
            "rootfs":{"type":"layers","diff_ids":[diff_id.to_string()]}}))
        .unwrap();
        let cd = content.put_bytes(&cfg).unwrap();
        let m = serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"mediaType":media_types::OCI_MANIFEST,
            "config":{"mediaType":media_types::OCI_CONFIG,"digest":cd.to_string(),"size":cfg.len()},
            "layers":[{"mediaType":media_types::OCI_LAYER,"digest":ld.to_string(),"size":raw.len()}]}))
        .unwrap();
        let md = content.put_bytes(&m).unwrap();
        entries.push(
            serde_json::json!({"mediaType":media_types::OCI_MANIFEST,"digest":md.to_string(),
            "size":m.len(),"platform":{"architecture":arch,"os":"linux"}}),
        );
        images.push((arch.to_string(), cd, diff_id, md));
    }
    let idx = serde_json::to_vec(&serde_json::json!({"schemaVersion":2,
        "mediaType":media_types::OCI_INDEX,"manifests":entries}))
    .unwrap();
    let idx_digest = content.put_bytes(&idx).unwrap();
    let reference = Reference::parse(&format!("{}/multi/gz:v1", s.addr)).unwrap();
    src.set_ref(
        &reference,
        &Descriptor::new(media_types::OCI_INDEX, idx_digest.clone(), idx.len() as u64),
    )
    .unwrap();

    let pushed = client().push(&reference, &src, &|_| {}).await.unwrap();
    assert_ne!(pushed, idx_digest, "the index names rewritten manifests");

    // What the registry holds: the index under the tag, with the pushed digest, naming
    // for each platform a manifest whose layer is a gzip blob of the same tar.
    let http = reqwest::Client::new();
    let get = |url: String, accept: &'static str| {
        let http = http.clone();
        async move {
            let r = http.get(url).header("Accept", accept).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap().to_vec()
        }
    };
    let base = format!("{}/v2/multi/gz", s.base);
    let got = get(format!("{base}/manifests/v1"), media_types::OCI_INDEX).await;
    assert_eq!(Digest::sha256_of(&got), pushed);
    let got: serde_json::Value = serde_json::from_slice(&got).unwrap();
    let ms = got["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    for (m, (arch, cd, diff_id, old)) in ms.iter().zip(&images) {
        assert_eq!(m["platform"]["architecture"], arch.as_str());
        let md = m["digest"].as_str().unwrap();
        assert_ne!(md, old.to_string());
        let mb = get(format!("{base}/manifests/{md}"), media_types::OCI_MANIFEST).await;
        assert_eq!(Digest::sha256_of(&mb).to_string(), md);
        assert_eq!(m["size"], mb.len());
        let mv: serde_json::Value = serde_json::from_slice(&mb).unwrap();
        assert_eq!(mv["config"]["digest"], cd.to_string());
        let l = &mv["layers"][0];
        assert_eq!(l["mediaType"], media_types::OCI_LAYER_GZIP);
        let blob = get(
            format!("{base}/blobs/{}", l["digest"].as_str().unwrap()),
            "*/*",
        )
        .await;
        assert_eq!(&blob[..2], &[0x1f, 0x8b], "{arch}: not gzip");
        assert_eq!(l["size"], blob.len());
        assert_eq!(Digest::sha256_of(&gunzip(&blob)), *diff_id);
    }

    // A pull gives the same image back: same config (image id) and diff ids.
    let dst = open_store(&dir.path().join("dst"));
    let rec = client().pull(&reference, &dst, &|_| {}).await.unwrap();
    let (_, host_cfg, host_diff, _) = &images[1];
    assert_eq!(rec.id, *host_cfg);
    assert_eq!(dst.get_ref(&reference).unwrap().unwrap().digest, pushed);
    let cfg: serde_json::Value =
        serde_json::from_slice(&dst.content().read_blob(host_cfg, 1 << 20).unwrap()).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"][0], host_diff.to_string());
    assert_eq!(rec.layers[0].media_type, media_types::OCI_LAYER_GZIP);
}

#[tokio::test]
async fn pull_errors_unknown_manifest_and_platform() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("registry"), None).await;
    let dst = open_store(&dir.path().join("dst"));
    let r = Reference::parse(&format!("{}/nothing/here:v1", s.addr)).unwrap();
    let e = client().pull(&r, &dst, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ClientError::ManifestUnknown { .. }), "{e:?}");
    assert_eq!(e.kind(), errkind::ErrorKind::NotFound);

    // An index with only a foreign platform.
    let http = reqwest::Client::new();
    let cfg = br#"{"architecture":"s390x","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = common::digest(cfg);
    http.post(format!("{}/v2/multi/blobs/uploads/?digest={cd}", s.base))
        .body(cfg.to_vec())
        .send()
        .await
        .unwrap();
    let m = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cfg.len()},"layers":[]});
    let mb = serde_json::to_vec(&m).unwrap();
    http.put(format!("{}/v2/multi/manifests/s390x", s.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(mb.clone())
        .send()
        .await
        .unwrap();
    let idx = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
        "manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":common::digest(&mb),"size":mb.len(),
        "platform":{"architecture":"s390x","os":"linux"}}]});
    let r = http
        .put(format!("{}/v2/multi/manifests/latest", s.base))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(idx.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = Reference::parse(&format!("{}/multi", s.addr)).unwrap();
    let e = client().pull(&r, &dst, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ClientError::NoMatchingPlatform { .. }), "{e:?}");
}

/// A registry that accepts connections and never answers.
#[tokio::test]
async fn hanging_registry_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h2 = held.clone();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            h2.lock().unwrap().push(sock);
        }
    });
    let c = RegistryClient::new(ClientConfig {
        read_timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(800),
        attempts: 2,
        retry_backoff: Duration::from_millis(100),
        docker_config_dir: Some(std::env::temp_dir().join("berth-no-docker-config")),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dst = open_store(dir.path());
    let r = Reference::parse(&format!("{addr}/hang/forever:v1")).unwrap();
    let t = Instant::now();
    let e = c.pull(&r, &dst, &|_| {}).await.unwrap_err();
    let took = t.elapsed();
    task.abort();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    assert_eq!(e.kind(), errkind::ErrorKind::Unavailable);
    assert!(e.to_string().contains("timed out"), "{e}");
    // Two attempts of 0.8 s plus 0.1 s backoff; generous bound for a loaded machine.
    assert!(took >= Duration::from_millis(1600), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
}

/// A fake registry serving one image whose layer can be cut off half-way (then the
/// connection hangs) or corrupted; it records the `Range` headers it receives.
struct Fake {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
    layer_digest: String,
    config_digest: String,
    cut: AtomicBool,
    corrupt: AtomicBool,
    ranges: Mutex<Vec<String>>,
    served: AtomicU64,
}

/// Serves one connection of the fake registry: a minimal HTTP/1.1 loop written by hand,
/// so a cut-off body really stops after the bytes written (and flushed) so far.
async fn fake_conn(f: Arc<Fake>, mut sock: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        // Read one request head.
        let head = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                buf.drain(..i + 4);
                break head;
            }
            let mut tmp = [0u8; 4096];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let mut lines = head.lines();
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let range = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("range"))
            .map(|(_, v)| v.trim().to_string());
        let respond = |status: &str, ctype: &str, extra: String, len: usize| {
            format!("HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len}\r\n{extra}\r\n")
        };
        let (head, body, cut): (String, Vec<u8>, bool) = if path == "/v2/" {
            (
                respond("200 OK", "application/json", String::new(), 2),
                b"{}".to_vec(),
                false,
            )
        } else if path.ends_with("/manifests/v1") {
            let ct = "application/vnd.oci.image.manifest.v1+json";
            (
                respond("200 OK", ct, String::new(), f.manifest.len()),
                f.manifest.clone(),
                false,
            )
        } else if path.ends_with(&f.config_digest) {
            (
                respond(
                    "200 OK",
                    "application/octet-stream",
                    String::new(),
                    f.config.len(),
                ),
                f.config.clone(),
                false,
            )
        } else if path.ends_with(&f.layer_digest) {
            let mut data = f.layer.clone();
            if f.corrupt.load(Ordering::SeqCst) {
                let n = data.len();
                data[n / 2] ^= 0xff;
            }
            let total = data.len();
            let mut start = 0usize;
            let mut status = "200 OK";
            let mut extra = String::new();
            if let Some(r) = &range {
                f.ranges.lock().unwrap().push(r.clone());
                start = r
                    .trim_start_matches("bytes=")
                    .trim_end_matches('-')
                    .parse()
                    .unwrap();
                status = "206 Partial Content";
                extra = format!("content-range: bytes {start}-{}/{total}\r\n", total - 1);
            }
            let body = data[start..].to_vec();
            (
                respond(status, "application/octet-stream", extra, body.len()),
                body,
                f.cut.load(Ordering::SeqCst),
            )
        } else {
            (
                respond("404 Not Found", "application/json", String::new(), 0),
                Vec::new(),
                false,
            )
        };
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let send = if cut {
            &body[..body.len() / 2]
        } else {
            &body[..]
        };
        if sock.write_all(send).await.is_err() || sock.flush().await.is_err() {
            return;
        }
        f.served.fetch_add(send.len() as u64, Ordering::SeqCst);
        if cut {
            // Hold the connection open without sending the rest.
            std::future::pending::<()>().await;
        }
    }
}

async fn start_fake() -> (Arc<Fake>, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let layer: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let host = store::image::Platform::host();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host.architecture, "os": host.os,
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(b"pretend").to_string()]},
    }))
    .unwrap();
    let ld = Digest::sha256_of(&layer).to_string();
    let cd = Digest::sha256_of(&config).to_string();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    }))
    .unwrap();
    let f = Arc::new(Fake {
        manifest,
        config,
        layer,
        layer_digest: ld,
        config_digest: cd,
        cut: AtomicBool::new(false),
        corrupt: AtomicBool::new(false),
        ranges: Mutex::new(Vec::new()),
        served: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let f2 = f.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((sock, _)) = listener.accept().await {
            conns.spawn(fake_conn(f2.clone(), sock));
        }
    });
    (f, addr, task)
}

struct Abort(tokio::task::JoinHandle<()>);
impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn interrupted_pull_resumes_with_range() {
    let (fake, addr, task) = start_fake().await;
    let _guard = Abort(task);
    fake.cut.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let dst = open_store(dir.path());
    let r = Reference::parse(&format!("{addr}/resume/me:v1")).unwrap();
    let layer = Digest::parse(&fake.layer_digest).unwrap();

    // First pull: the layer stalls half-way; drop the pull future once data arrived.
    let half = fake.layer.len() as u64 / 2;
    let reached = Arc::new(tokio::sync::Notify::new());
    let r2 = reached.clone();
    let c = client();
    let watch = move |p: distribution::client::Progress| {
        if let ProgressStatus::Downloading { current, .. } = p.status {
            if current > 0 {
                r2.notify_one();
            }
        }
    };
    let pull = c.pull(&r, &dst, &watch);
    tokio::select! {
        res = pull => panic!("pull finished despite the stalled layer: {res:?}"),
        _ = reached.notified() => {}
        _ = tokio::time::sleep(Duration::from_secs(20)) => panic!("no progress"),
    }
    assert!(!dst.content().exists(&layer));

    // Second pull: resumes from the partial data with a Range request.
    fake.cut.store(false, Ordering::SeqCst);
    let events = Events::default();
    let rec = c.pull(&r, &dst, &|p| events.push(p)).await.unwrap();
    assert_eq!(rec.layers[0].digest, layer);
    assert!(dst.content().exists(&layer));
    let ranges = fake.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    let resumed_at: u64 = ranges[0]
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(resumed_at > 0 && resumed_at <= half, "{resumed_at}");
    let first = events
        .statuses(&layer)
        .into_iter()
        .find(|s| matches!(s, ProgressStatus::Downloading { .. }));
    assert_eq!(
        first,
        Some(ProgressStatus::Downloading {
            current: resumed_at,
            total: 2 * half
        })
    );
}

/// A registry that stops sending mid-layer: the read timeout fires, the partial data
/// stays, and the next pull fetches only the rest.
#[tokio::test]
async fn stalled_layer_times_out_then_resumes() {
    let (fake, addr, task) = start_fake().await;
    let _guard = Abort(task);
    fake.cut.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let dst = open_store(dir.path());
    let r = Reference::parse(&format!("{addr}/stall/me:v1")).unwrap();
    let layer = Digest::parse(&fake.layer_digest).unwrap();
    let c = RegistryClient::new(ClientConfig {
        read_timeout: Duration::from_millis(700),
        attempts: 1,
        docker_config_dir: Some(std::env::temp_dir().join("berth-no-docker-config")),
        ..Default::default()
    })
    .unwrap();
    let e = c.pull(&r, &dst, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    let half = fake.layer.len() as u64 / 2;
    assert_eq!(dst.content().ingest_offset(&layer.to_string()), half);
    fake.cut.store(false, Ordering::SeqCst);
    c.pull(&r, &dst, &|_| {}).await.unwrap();
    assert!(dst.content().exists(&layer));
    assert_eq!(
        fake.ranges.lock().unwrap().clone(),
        vec![format!("bytes={half}-")]
    );
}

#[tokio::test]
async fn corrupted_layer_is_rejected_and_not_stored() {
    let (fake, addr, task) = start_fake().await;
    let _guard = Abort(task);
    fake.corrupt.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let dst = open_store(dir.path());
    let r = Reference::parse(&format!("{addr}/bad/layer:v1")).unwrap();
    let e = client().pull(&r, &dst, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ClientError::DigestMismatch { .. }), "{e:?}");
    assert_eq!(e.kind(), errkind::ErrorKind::InvalidArgument);
    let layer = Digest::parse(&fake.layer_digest).unwrap();
    assert!(!dst.content().exists(&layer));
    assert_eq!(dst.content().ingest_offset(&layer.to_string()), 0);
    assert!(dst.resolve(&r).is_err());
}
