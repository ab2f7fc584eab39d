//! Interoperability with Docker itself: a private `dockerd` (Debian's docker.io, with its
//! own data root, exec root, socket and containerd namespace) exchanging images with
//! Berth in every direction:
//!
//! * `docker push` into `berth registry serve`, `docker rmi`, `docker pull` back, run it;
//! * `docker save` → [`store::Store::load`] → snapshot → `berth-runtime run` on it;
//! * [`store::Store::save`] → `docker load` → `docker run`;
//! * `docker push` into `berth registry serve` → [`distribution::client::RegistryClient::pull`];
//! * a two-layer image (with a whiteout) pushed by that client → `docker pull` → `docker run`.
//!
//! Every test starts its own dockerd and registry (free port on 127.0.0.1) in temporary
//! directories; guards stop the daemons, unmount and remove everything even when an
//! assertion fails. Skipped (with a message) only when dockerd cannot be started here.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod dockerd_support;

use dockerd_support::{busybox_tar, stdout, temp_dir, text, unmount_under, Dockerd};
use store::{ImportOptions, Reference, Store};

fn berth() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

fn berth_runtime() -> &'static str {
    env!("CARGO_BIN_EXE_berth-runtime")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// `berth registry serve` on a free port of 127.0.0.1, killed on drop.
struct Registry {
    _dir: tempfile::TempDir,
    child: Child,
    addr: String,
}

impl Registry {
    fn start() -> Registry {
        let dir = temp_dir("br");
        let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let mut last = String::new();
        // The port may be taken between probing and binding: retry with another.
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut child = Command::new(berth())
                .args(["registry", "serve", "--addr", &addr, "--root"])
                .arg(dir.path().join("root"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.try_clone().expect("dup log"))
                .spawn()
                .expect("spawn berth registry serve");
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(&addr).is_ok() {
                    return Registry {
                        _dir: dir,
                        child,
                        addr,
                    };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > until {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("berth registry serve did not start: {last}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifest digest `docker push` printed (`<tag>: digest: sha256:… size: N`).
fn pushed_digest(out: &str) -> String {
    out.split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker push output: {out}"))
        .to_string()
}

/// An overlay mount of an active snapshot, unmounted and removed on drop.
struct MountedSnapshot<'a> {
    store: &'a Store,
    key: String,
    target: PathBuf,
}

impl Drop for MountedSnapshot<'_> {
    fn drop(&mut self) {
        let _ = store::snapshot::unmount(&self.target);
        unmount_under(&self.target);
        let _ = self.store.snapshots().remove(&self.key);
    }
}

#[test]
fn docker_push_to_berth_registry_and_pull_back() {
    let reg = Registry::start();
    let Some(d) = Dockerd::start(Some(&reg.addr)) else {
        return;
    };
    let (tar, _) = busybox_tar(d.path());
    let name = format!("{}/interop/bb:v1", reg.addr);
    d.ok(&["import", tar.to_str().unwrap(), &name]);
    let id = d.inspect("{{.Id}}", &name);

    let out = d.ok(&["push", &name]);
    let digest = pushed_digest(&out);
    assert!(digest.starts_with("sha256:"), "{out}");

    d.ok(&["rmi", &name]);
    let o = d.docker(&["image", "inspect", &id]);
    assert!(!o.status.success(), "image still present after rmi");

    let out = d.ok(&["pull", &name]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(d.inspect("{{.Id}}", &name), id);
    let repo_digests = d.inspect("{{json .RepoDigests}}", &name);
    let repo_digests: Vec<String> = serde_json::from_str(&repo_digests).unwrap();
    assert_eq!(
        repo_digests,
        vec![format!("{}/interop/bb@{digest}", reg.addr)]
    );

    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &name,
        "/bin/sh",
        "-c",
        "echo pulled-from-berth; cat /var/www/index.html",
    ]);
    assert_eq!(out, "pulled-from-berth\nhello from berth\n");
}

#[test]
fn docker_save_loads_into_store_and_runs() {
    let Some(d) = Dockerd::start(None) else {
        return;
    };
    let (tar, rootfs) = busybox_tar(d.path());
    d.ok(&["import", tar.to_str().unwrap(), "interop-base:v1"]);
    // A second layer from `docker commit`: a file added and one deleted (a whiteout).
    d.ok(&[
        "run",
        "--name",
        "interop-c",
        "--network",
        "none",
        "interop-base:v1",
        "/bin/sh",
        "-c",
        "rm /var/www/index.html; echo from-docker-layer > /etc/second",
    ]);
    d.ok(&["commit", "interop-c", "interop-saved:v1"]);
    d.ok(&["rm", "interop-c"]);
    let id = d.inspect("{{.Id}}", "interop-saved:v1");
    let archive = d.path().join("saved.tar");
    d.ok(&["save", "-o", archive.to_str().unwrap(), "interop-saved:v1"]);

    let work = temp_dir("bs");
    let st = Store::open(work.path().join("store")).expect("open store");
    let loaded = st
        .load(fs::File::open(&archive).expect("open archive"))
        .expect("load docker save archive");
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0].id.to_string(), id);
    let rec = st.images().lookup("interop-saved:v1").expect("loaded tag");
    assert_eq!(rec.id.to_string(), id);
    assert_eq!(rec.repo_tags, vec!["interop-saved:v1".to_string()]);
    assert_eq!(rec.layers.len(), 2);

    // The layers are usable: a container rootfs over it runs busybox under berth-runtime.
    let bundle = work.path().join("bundle");
    let target = bundle.join("rootfs");
    fs::create_dir_all(&target).unwrap();
    let key = testutil::unique_name("interop-ctr");
    let mounts = st.prepare_container(&key, &rec).expect("prepare snapshot");
    let mounted = MountedSnapshot {
        store: &st,
        key,
        target: target.clone(),
    };
    store::snapshot::mount_all(&mounts, &target).expect("mount snapshot");
    assert_eq!(
        fs::read(target.join("bin/busybox")).unwrap(),
        fs::read(rootfs.join("bin/busybox")).unwrap()
    );
    let spec = testutil::default_spec(&[
        "/bin/busybox",
        "sh",
        "-c",
        "echo loaded-by-berth; cat /etc/second; test -e /var/www/index.html || echo whiteout-applied",
    ]);
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    let rt_root = work.path().join("rt");
    let o = Command::new(berth_runtime())
        .arg("--root")
        .arg(&rt_root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(testutil::unique_name("interop"))
        .stdin(Stdio::null())
        .output()
        .expect("spawn berth-runtime");
    assert!(o.status.success(), "berth-runtime run: {}", text(&o));
    assert_eq!(
        stdout(&o),
        "loaded-by-berth\nfrom-docker-layer\nwhiteout-applied\n"
    );
    drop(mounted);
    assert!(st.snapshots().list_active().unwrap().is_empty());
}

#[test]
fn store_save_loads_into_docker_and_runs() {
    let Some(d) = Dockerd::start(None) else {
        return;
    };
    let (tar, _) = busybox_tar(d.path());
    let work = temp_dir("bs");
    let st = Store::open(work.path().join("store")).expect("open store");
    let opts = ImportOptions {
        changes: vec![
            r#"CMD ["/bin/sh", "-c", "echo saved-by-berth; cat /var/www/index.html"]"#.into(),
        ],
        reference: Some(Reference::parse("interop-from-berth:v2").unwrap()),
        message: None,
    };
    let rec = st
        .import(fs::File::open(&tar).expect("open tar"), &opts)
        .expect("import");
    let archive = work.path().join("berth-save.tar");
    let f = fs::File::create(&archive).expect("create archive");
    st.save(&["interop-from-berth:v2".to_string()], f)
        .expect("save")
        .sync_all()
        .expect("sync archive");

    let out = d.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        out.contains("Loaded image: interop-from-berth:v2"),
        "docker load: {out}"
    );
    let listed = d.ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    assert!(
        listed
            .lines()
            .any(|l| l == format!("interop-from-berth:v2 {}", rec.id)),
        "docker images: {listed}"
    );
    assert_eq!(
        d.inspect("{{.Id}}", "interop-from-berth:v2"),
        rec.id.to_string()
    );
    let out = d.ok(&["run", "--rm", "--network", "none", "interop-from-berth:v2"]);
    assert_eq!(out, "saved-by-berth\nhello from berth\n");
}

#[test]
fn berth_client_pulls_what_docker_pushed() {
    let reg = Registry::start();
    let Some(d) = Dockerd::start(Some(&reg.addr)) else {
        return;
    };
    let (tar, rootfs) = busybox_tar(d.path());
    let name = format!("{}/interop/client:v3", reg.addr);
    d.ok(&["import", tar.to_str().unwrap(), &name]);
    let id = d.inspect("{{.Id}}", &name);
    let digest = pushed_digest(&d.ok(&["push", &name]));

    let work = temp_dir("bc");
    let st = Store::open(work.path().join("store")).expect("open store");
    let reference = Reference::parse(&name).expect("reference");
    let client = distribution::client::RegistryClient::new(Default::default()).expect("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rec = rt
        .block_on(client.pull(&reference, st.images(), &|_| {}))
        .expect("pull from berth registry");
    assert_eq!(rec.manifest.digest.to_string(), digest);
    assert_eq!(rec.id.to_string(), id);
    assert_eq!(
        rec.repo_tags,
        vec![format!("{}/interop/client:v3", reg.addr)]
    );

    // By digest too, and the content unpacks to the rootfs docker was given.
    let by_digest = Reference::parse(&format!("{}/interop/client@{digest}", reg.addr)).unwrap();
    let again = rt
        .block_on(client.pull(&by_digest, st.images(), &|_| {}))
        .expect("pull by digest");
    assert_eq!(again.id, rec.id);
    let top = st.unpack(&rec).expect("unpack").expect("a layer");
    let fs_dir = st.snapshots().committed_fs(&top);
    assert_eq!(
        fs::read(fs_dir.join("bin/busybox")).unwrap(),
        fs::read(rootfs.join("bin/busybox")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(fs_dir.join("etc/hostname")).unwrap(),
        "busybox\n"
    );

    // Back to docker as an archive: the pulled image (docker media types) saved by the
    // store loads into docker under the same id.
    d.ok(&["rmi", &name]);
    let archive = work.path().join("pulled.tar");
    st.save(
        std::slice::from_ref(&name),
        fs::File::create(&archive).expect("archive"),
    )
    .expect("save pulled image");
    let out = d.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {name}")), "{out}");
    assert_eq!(d.inspect("{{.Id}}", &name), id);
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &name,
        "/bin/busybox",
        "cat",
        "/var/www/index.html",
    ]);
    assert_eq!(out, "hello from berth\n");
}

#[test]
fn docker_pulls_what_berth_client_pushed() {
    let reg = Registry::start();
    let Some(d) = Dockerd::start(Some(&reg.addr)) else {
        return;
    };
    let (tar, _) = busybox_tar(d.path());
    let work = temp_dir("bp");
    let st = Store::open(work.path().join("store")).expect("open store");
    let base = st
        .import(fs::File::open(&tar).expect("open tar"), &Default::default())
        .expect("import");

    // A second layer made through an overlay mount: one file added, one deleted (a
    // whiteout docker has to apply).
    let target = work.path().join("rootfs");
    fs::create_dir_all(&target).unwrap();
    let key = testutil::unique_name("interop-commit");
    let mounts = st.prepare_container(&key, &base).expect("prepare");
    let mounted = MountedSnapshot {
        store: &st,
        key: key.clone(),
        target: target.clone(),
    };
    store::snapshot::mount_all(&mounts, &target).expect("mount snapshot");
    fs::write(target.join("etc/berth-layer.txt"), "second layer\n").unwrap();
    fs::remove_file(target.join("var/www/index.html")).unwrap();
    store::snapshot::unmount(&target).expect("unmount");
    let changes = vec![
        r#"CMD ["/bin/sh", "-c", "cat /etc/berth-layer.txt; test -e /var/www/index.html || echo whiteout-applied"]"#.to_string(),
    ];
    let rec = st
        .commit_container(&key, Some(&base), &changes, None, None)
        .expect("commit");
    drop(mounted);
    assert_eq!(rec.layers.len(), 2);

    let name = format!("{}/interop/pushed:v4", reg.addr);
    let reference = Reference::parse(&name).unwrap();
    st.images().tag(&rec.id, &reference).expect("tag");
    let client = distribution::client::RegistryClient::new(Default::default()).expect("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let digest = rt
        .block_on(client.push(&reference, st.images(), &|_| {}))
        .expect("push to berth registry");
    assert_eq!(digest, rec.manifest.digest);

    let out = d.ok(&["pull", &name]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(d.inspect("{{.Id}}", &name), rec.id.to_string());
    assert_eq!(d.inspect("{{len .RootFS.Layers}}", &name), "2");
    let out = d.ok(&["run", "--rm", "--network", "none", &name]);
    assert_eq!(out, "second layer\nwhiteout-applied\n");
}
