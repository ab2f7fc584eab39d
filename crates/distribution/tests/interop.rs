//! Interoperability: our client against Debian's reference registry (`docker-registry`,
//! distribution 2.8) with htpasswd auth, and `skopeo` pushing into our server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    build_image, busybox_layer, open_store, start_server, tar_layer, write_htpasswd, Events,
};
use distribution::client::{ClientConfig, ClientError, ProgressStatus, RegistryClient};
use errkind::HasKind;
use store::{ImageStore, Reference};

/// A `docker-registry serve` process on 127.0.0.1; killed on drop.
struct RefRegistry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for RefRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts the reference registry with htpasswd auth for `user`/`pass`, or `None` when
/// it is not installed.
async fn start_reference_registry(user: &str, pass: &str) -> Option<RefRegistry> {
    let bin = Path::new("/usr/bin/docker-registry");
    if !bin.exists() {
        eprintln!(
            "skipping: /usr/bin/docker-registry not installed (apt-get install docker-registry)"
        );
        return None;
    }
    let mut dir = tempfile::tempdir().unwrap();
    write_htpasswd(&dir.path().join("htpasswd"), user, pass);
    for _ in 0..5 {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: test-realm\n    path: {pw}\n",
            root = dir.path().join("data").display(),
            pw = dir.path().join("htpasswd").display(),
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut reg = RefRegistry {
            child,
            addr: addr.clone(),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let t = Instant::now();
        let mut exited = false;
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(r) = http.get(format!("http://{addr}/v2/")).send().await {
                if r.status() == 401 {
                    return Some(reg);
                }
            }
            if let Ok(Some(_)) = reg.child.try_wait() {
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();
        assert!(exited, "docker-registry did not answer within 10 s: {log}");
        // It exited (most likely the port was taken meanwhile): try another port.
        let _ = reg.child.wait();
        dir = tempfile::tempdir().unwrap();
        write_htpasswd(&dir.path().join("htpasswd"), user, pass);
        eprintln!("docker-registry exited, retrying: {log}");
        drop(reg);
    }
    panic!("docker-registry could not be started");
}

fn client_with_config(dir: &Path) -> RegistryClient {
    RegistryClient::new(ClientConfig {
        docker_config_dir: Some(dir.to_path_buf()),
        chunk_size: 1024 * 1024,
        ..Default::default()
    })
    .unwrap()
}

fn test_layers() -> Vec<(Vec<u8>, store::Digest)> {
    let big: Vec<u8> = (0..(2 * 1024 * 1024 + 123) as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    vec![
        busybox_layer(),
        tar_layer(&[("etc/greeting", b"hi\n".to_vec())]),
        tar_layer(&[("data/blob", big)]),
    ]
}

#[tokio::test]
async fn push_pull_against_reference_registry() {
    let Some(reg) = start_reference_registry("alice", "wonderland").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let docker_cfg = dir.path().join("docker");
    let src = open_store(&dir.path().join("src"));
    let name = format!("{}/berth/busybox:1.0", reg.addr);
    let built = build_image(&src, &name, &test_layers());
    let reference = Reference::parse(&name).unwrap();

    // Without credentials: a clear authentication error.
    let anon = client_with_config(&docker_cfg);
    let e = anon.push(&reference, &src, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("no credentials"), "{e}");

    // Wrong password: login fails and stores nothing.
    let e = anon.login(&reg.addr, "alice", "wrong").await.unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
    assert_eq!(e.kind(), errkind::ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("alice"), "{e}");
    assert!(!docker_cfg.join("config.json").exists());

    // Login stores the credentials; push uses them.
    anon.login(&reg.addr, "alice", "wonderland").await.unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docker_cfg.join("config.json")).unwrap()).unwrap();
    assert!(cfg["auths"][&reg.addr]["auth"].is_string());
    let pushed = anon.push(&reference, &src, &|_| {}).await.unwrap();
    assert_eq!(pushed, built.manifest.digest);

    // A fresh client reads the credentials from config.json and pulls into a fresh store.
    let dst = open_store(&dir.path().join("dst"));
    let rec = client_with_config(&docker_cfg)
        .pull(&reference, &dst, &|_| {})
        .await
        .unwrap();
    assert_eq!(rec.manifest.digest, built.manifest.digest);
    assert_eq!(rec.id, built.config);
    let got: Vec<_> = rec.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(got, built.layers);

    // Push under another repository: the reference registry mounts the blobs.
    let other = Reference::parse(&format!("{}/berth/copy:1.0", reg.addr)).unwrap();
    src.tag(&built.config, &other).unwrap();
    let events = Events::default();
    let c = client_with_config(&docker_cfg);
    c.push(&other, &src, &|p| events.push(p)).await.unwrap();
    for l in &built.layers {
        assert!(
            events.statuses(l).contains(&ProgressStatus::Mounted {
                from: "berth/busybox".into()
            }),
            "{:?}",
            events.statuses(l)
        );
    }

    // Wrong password in config.json: pull fails with an authentication error.
    let bad_cfg = dir.path().join("bad");
    std::fs::create_dir_all(&bad_cfg).unwrap();
    std::fs::write(
        bad_cfg.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6bm9wZQ=="}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let e = client_with_config(&bad_cfg)
        .pull(&reference, &open_store(&dir.path().join("dst2")), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
}

/// Writes the image `reference` names in `images` as an OCI image layout at `dir`.
fn write_oci_layout(images: &ImageStore, reference: &str, tag: &str, dir: &Path) -> PathBuf {
    let r = Reference::parse(reference).unwrap();
    let target = images.get_ref(&r).unwrap().unwrap();
    let (_, m) = images.resolve_target(&target).unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut all = vec![target.digest.clone(), m.config.digest.clone()];
    all.extend(m.layers.iter().map(|l| l.digest.clone()));
    for d in all {
        std::fs::copy(images.content().blob_path(&d), blobs.join(d.hex())).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": target.media_type, "digest": target.digest.to_string(), "size": target.size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    dir.to_path_buf()
}

#[tokio::test]
async fn skopeo_copies_into_our_server() {
    if !Path::new("/usr/bin/skopeo").exists() {
        eprintln!("skipping: skopeo not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("htpasswd");
    write_htpasswd(&pw, "bob", "builder");
    let s = start_server(&dir.path().join("registry"), Some(&pw)).await;
    let src = open_store(&dir.path().join("src"));
    let built = build_image(&src, "local/skopeo:v1", &test_layers());
    let layout = write_oci_layout(&src, "local/skopeo:v1", "v1", &dir.path().join("layout"));

    let dest = format!("docker://{}/sk/img:v1", s.addr);
    let out = tokio::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "bob:builder",
            "--preserve-digests",
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(&dest)
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // skopeo without credentials is refused.
    let out = tokio::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--tls-verify=false",
            "--no-creds",
        ])
        .arg(&dest)
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());

    let c = RegistryClient::new(ClientConfig {
        docker_config_dir: Some(dir.path().join("docker")),
        ..Default::default()
    })
    .unwrap();
    c.set_credentials(
        &s.addr.to_string(),
        distribution::client::Credentials {
            username: "bob".into(),
            password: "builder".into(),
        },
    );
    let dst = open_store(&dir.path().join("dst"));
    let reference = Reference::parse(&format!("{}/sk/img:v1", s.addr)).unwrap();
    let rec = c.pull(&reference, &dst, &|_| {}).await.unwrap();
    assert_eq!(rec.manifest.digest, built.manifest.digest);
    assert_eq!(rec.id, built.config);
    let got: Vec<_> = rec.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(got, built.layers);

    // And skopeo reads it back out of our server.
    let out = tokio::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "bob:builder",
        ])
        .arg(&dest)
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(store::Digest::sha256_of(&out.stdout), built.manifest.digest);
}
