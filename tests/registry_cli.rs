//! End-to-end: `berth login`, `berth push` and `berth pull` through a real `berth daemon`
//! against Debian's `docker-registry` (the reference distribution implementation) with
//! htpasswd (bcrypt) authentication on 127.0.0.1.
//!
//! Shows: a push without credentials fails with an authentication error; a login with a
//! wrong password fails and stores nothing; after `berth login` the push succeeds with
//! docker's per-layer progress lines; `rmi` + `pull` brings back the identical image (same
//! image id, and the manifest digest the registry reports in `Docker-Content-Digest`); a
//! second image sharing the base layer is pushed with existence checks ("Layer already
//! exists"); the real docker CLI pulls through the berth daemon with its own login; after
//! `logout` pushes fail again.
//!
//! Skipped (with a message) when not root or when `/usr/bin/docker-registry` or `htpasswd`
//! are missing (`scripts/deps.sh` installs them).

mod engine_support;

use engine_support::{host_ok, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REGISTRY: &str = "/usr/bin/docker-registry";
const USER: &str = "berthtester";
const PASSWORD: &str = "s3cret-pw";

/// A `docker-registry` process on a temporary directory; killed on drop.
struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    host: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the registry with htpasswd auth and waits until `/v2/` answers 401.
    fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-reg-")
            .tempdir()
            .unwrap();
        let ht = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .expect("run htpasswd");
        assert!(ht.status.success(), "htpasswd: {ht:?}");
        std::fs::write(dir.path().join("htpasswd"), &ht.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n\
             auth:\n  htpasswd:\n    realm: berth-test\n    path: {ht}\n",
            root = dir.path().join("data").display(),
            ht = dir.path().join("htpasswd").display(),
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let reg = Registry { child, host, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, _) = reg.curl(&["-o", "/dev/null", "-w", "%{http_code}"], "/v2/", false);
            if code.trim() == "401" {
                return reg;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Runs curl on `path` of the registry (with the test user's credentials when `auth`);
    /// returns stdout and stderr.
    fn curl(&self, args: &[&str], path: &str, auth: bool) -> (String, String) {
        let mut c = Command::new("curl");
        c.args(["-s", "--max-time", "10"]).args(args);
        if auth {
            c.args(["-u", &format!("{USER}:{PASSWORD}")]);
        }
        let out = c
            .arg(format!("http://{}{path}", self.host))
            .output()
            .expect("run curl");
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// The `Docker-Content-Digest` the registry reports for `repo:reference`.
    fn manifest_digest(&self, repo: &str, reference: &str) -> String {
        let (head, _) = self.curl(
            &[
                "-I",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
                "-H",
                "Accept: application/vnd.docker.distribution.manifest.v2+json",
                "-H",
                "Accept: application/vnd.oci.image.index.v1+json",
            ],
            &format!("/v2/{repo}/manifests/{reference}"),
            true,
        );
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no Docker-Content-Digest in {head:?}: {}", self.log()))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The berth CLI on `d`'s socket with its own client config directory.
fn berth(d: &Daemon, config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("-H")
        .arg(format!("unix://{}", d.sock.display()))
        .args(args)
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn ok(o: &Output, what: &str) -> String {
    let (out, err) = text(o);
    assert!(
        o.status.success(),
        "{what} failed ({:?})\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    out
}

/// The `<tag>: digest: sha256:...` digest of a push's output.
fn pushed_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split_once(": digest: ").map(|(_, d)| d))
        .and_then(|d| d.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest line in push output:\n{out}"))
        .to_string()
}

fn image_inspect(d: &Daemon, name: &str) -> serde_json::Value {
    let (st, v) = d.request("GET", &format!("/images/{name}/json"), None);
    assert_eq!(st, 200, "inspect {name}: {v}");
    v
}

fn prerequisites() -> bool {
    if !host_ok() {
        return false;
    }
    for (bin, why) in [
        (REGISTRY, "docker-registry (scripts/deps.sh)"),
        ("/usr/bin/htpasswd", "htpasswd (apache2-utils)"),
        ("/usr/bin/curl", "curl"),
    ] {
        if !Path::new(bin).exists() {
            eprintln!("skipping: {why} not installed");
            return false;
        }
    }
    true
}

#[test]
fn login_push_pull_against_docker_registry_with_htpasswd() {
    if !prerequisites() {
        return;
    }
    let reg = Registry::start();
    let d = Daemon::start();
    let cfg = d.dir.path().join("berth-config");
    let id = d.import_busybox("regsrc:latest");
    let repo = "test/bb";
    let name = format!("{}/{repo}:v1", reg.host);
    ok(&berth(&d, &cfg, &["tag", "regsrc:latest", &name]), "tag");

    // 1. No credentials: a clear authentication error, nothing in the registry.
    let o = berth(&d, &cfg, &["push", &name]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "push without login succeeded:\n{out}");
    assert!(
        err.contains("authentication") && err.contains(&reg.host),
        "push without login: unclear error:\nstdout:\n{out}\nstderr:\n{err}"
    );
    let (code, _) = reg.curl(
        &["-o", "/dev/null", "-w", "%{http_code}"],
        &format!("/v2/{repo}/manifests/v1"),
        true,
    );
    assert_eq!(code.trim(), "404", "a failed push left a manifest");

    // 2. A wrong password is refused and not stored.
    let o = berth(&d, &cfg, &["login", &reg.host, "-u", USER, "-p", "wrong"]);
    assert!(!o.status.success(), "login with a wrong password: {o:?}");
    assert!(
        !cfg.join("config.json").exists()
            || !std::fs::read_to_string(cfg.join("config.json"))
                .unwrap()
                .contains(&reg.host),
        "a refused login was stored"
    );

    // 3. Login, then push with docker's progress lines.
    let out = ok(
        &berth(&d, &cfg, &["login", &reg.host, "-u", USER, "-p", PASSWORD]),
        "login",
    );
    assert!(out.contains("Login Succeeded"), "login output: {out}");
    let o = berth(&d, &cfg, &["push", &name]);
    let out = ok(&o, "push after login");
    eprintln!("berth push:\n{out}");
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/{repo}]",
            reg.host
        )),
        "push output:\n{out}"
    );
    assert!(
        out.lines().any(|l| l.ends_with(": Pushed")),
        "no `<id>: Pushed` line:\n{out}"
    );
    let digest = pushed_digest(&out);
    assert_eq!(
        reg.manifest_digest(repo, "v1"),
        digest,
        "registry digest differs from the pushed one"
    );

    // 4. rmi every name of the image, then pull: identical image back.
    ok(&berth(&d, &cfg, &["rmi", &name, "regsrc:latest"]), "rmi");
    let (st, _) = d.request("GET", &format!("/images/{id}/json"), None);
    assert_eq!(st, 404, "image still present after rmi");
    let o = berth(&d, &cfg, &["pull", &name]);
    let out = ok(&o, "pull");
    eprintln!("berth pull:\n{out}");
    assert!(
        out.lines().any(|l| l.ends_with(": Pull complete"))
            && out.lines().any(|l| l.ends_with(": Pulling fs layer"))
            && out.lines().any(|l| l.ends_with(": Download complete")),
        "no `<id>: Pull complete` line:\n{out}"
    );
    assert!(
        out.contains(&format!("Digest: {digest}")),
        "pull output lacks the digest {digest}:\n{out}"
    );
    let img = image_inspect(&d, &name);
    assert_eq!(img["Id"].as_str(), Some(id.as_str()), "pulled image id");
    let rd = format!("{}/{repo}@{digest}", reg.host);
    assert!(
        img["RepoDigests"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(&rd))),
        "RepoDigests lack {rd}: {}",
        img["RepoDigests"]
    );
    // The pulled image runs.
    let out = ok(
        &berth(&d, &cfg, &["run", "--rm", &name, "echo", "pulled-ok"]),
        "run pulled image",
    );
    assert_eq!(out.trim(), "pulled-ok");

    // 5. An image sharing the base layer: existence checks skip what the registry has.
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from layer two\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {name}\nCOPY hello.txt /hello.txt\n"),
    )
    .unwrap();
    let name2 = format!("{}/{repo}:v2", reg.host);
    ok(
        &berth(
            &d,
            &cfg,
            &["build", "-q", "-t", &name2, ctx.to_str().unwrap()],
        ),
        "build second image",
    );
    let out = ok(&berth(&d, &cfg, &["push", &name2]), "push second image");
    eprintln!("berth push (shared layer):\n{out}");
    assert!(
        out.lines().any(|l| l.ends_with(": Layer already exists")),
        "second push did not skip the shared layer:\n{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.ends_with(": Pushed")).count(),
        1,
        "second push should upload only the new layer:\n{out}"
    );
    assert_eq!(reg.manifest_digest(repo, "v2"), pushed_digest(&out));

    // 6. The real docker CLI through the berth daemon, with its own login.
    if Path::new("/usr/local/bin/docker").exists() || which("docker").is_some() {
        let lo = d.docker(&["login", &reg.host, "-u", USER, "-p", PASSWORD]);
        assert!(lo.status.success(), "docker login: {lo:?}");
        let rm = d.docker(&["rmi", &name2]);
        assert!(rm.status.success(), "docker rmi: {rm:?}");
        let pl = d.docker(&["pull", &name2]);
        let (out, err) = text(&pl);
        assert!(pl.status.success(), "docker pull: {out}\n{err}");
        let run = d.docker(&["run", "--rm", &name2, "cat", "/hello.txt"]);
        assert_eq!(text(&run).0, "hello from layer two\n", "{run:?}");
        // docker push into another repository of the registry: the layers are mounted
        // across repositories instead of uploaded again.
        let other = format!("{}/test/other:v1", reg.host);
        let tg = d.docker(&["tag", &name2, &other]);
        assert!(tg.status.success(), "docker tag: {tg:?}");
        let ps = d.docker(&["push", &other]);
        let (out, err) = text(&ps);
        eprintln!("docker push (cross-repository):\n{out}");
        assert!(ps.status.success(), "docker push: {out}\n{err}");
        assert!(
            out.lines()
                .filter(|l| l.contains(": Mounted from test/bb"))
                .count()
                == 2,
            "layers not mounted from test/bb:\n{out}"
        );
        assert_eq!(reg.manifest_digest("test/other", "v1"), pushed_digest(&out));
    }

    // Pulling what is already here: nothing downloaded, "Image is up to date".
    let out = ok(&berth(&d, &cfg, &["pull", &name]), "pull again");
    assert!(
        out.contains(&format!("Status: Image is up to date for {name}")),
        "{out}"
    );
    assert!(!out.contains("Download complete"), "{out}");

    // 7. Logout: pushes fail again.
    let out = ok(&berth(&d, &cfg, &["logout", &reg.host]), "logout");
    assert!(out.contains("Removing login credentials"), "{out}");
    let o = berth(&d, &cfg, &["push", &name]);
    assert!(!o.status.success(), "push after logout succeeded: {o:?}");
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// Writes a fake `docker-credential-<name>` into `bin` that keeps one JSON entry per server
/// under `bin/store` (docker's helper protocol: get / store / erase on stdin).
fn fake_helper(bin: &Path, name: &str) {
    use std::os::unix::fs::PermissionsExt;
    let store = bin.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let script = format!(
        r#"#!/bin/sh
store={store}
read -r input || true
key=$(printf '%s' "$input" | sed 's/[^A-Za-z0-9]/_/g')
case "$1" in
get) if [ -f "$store/$key" ]; then cat "$store/$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
store) server=$(printf '%s' "$input" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
       printf '%s' "$input" > "$store/$(printf '%s' "$server" | sed 's/[^A-Za-z0-9]/_/g')" ;;
erase) rm -f "$store/$key" ;;
*) exit 2 ;;
esac
"#,
        store = store.display()
    );
    let p = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `credsStore`: `berth login` puts the secret into the helper (config.json keeps an empty
/// `auths` entry), `berth push` / `pull` get it from the helper, `berth logout` erases it.
#[test]
fn credential_helper_login_push_logout() {
    if !prerequisites() {
        return;
    }
    let reg = Registry::start();
    let d = Daemon::start();
    let cfg = d.dir.path().join("helper-config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.json"), r#"{"credsStore":"berthtest"}"#).unwrap();
    let bin = d.dir.path().join("helper-bin");
    std::fs::create_dir_all(&bin).unwrap();
    fake_helper(&bin, "berthtest");
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("-H")
            .arg(format!("unix://{}", d.sock.display()))
            .args(args)
            .env("DOCKER_CONFIG", &cfg)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    };
    d.import_busybox("helpersrc:latest");
    let name = format!("{}/helper/bb:1", reg.host);
    ok(&run(&["tag", "helpersrc:latest", &name]), "tag");
    let out = ok(
        &run(&["login", &reg.host, "-u", USER, "-p", PASSWORD]),
        "login",
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    let raw = std::fs::read_to_string(cfg.join("config.json")).unwrap();
    assert!(
        !raw.contains(PASSWORD) && !raw.contains("\"auth\""),
        "secret in config.json: {raw}"
    );
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["auths"][&reg.host], serde_json::json!({}), "{raw}");
    assert_eq!(v["credsStore"], "berthtest");
    let out = ok(&run(&["push", &name]), "push with helper credentials");
    assert_eq!(
        reg.manifest_digest("helper/bb", "1"),
        pushed_digest(&out),
        "{out}"
    );
    ok(&run(&["rmi", &name]), "rmi");
    ok(&run(&["pull", &name]), "pull with helper credentials");
    let out = ok(&run(&["logout", &reg.host]), "logout");
    assert!(out.contains("Removing login credentials"), "{out}");
    assert_eq!(
        std::fs::read_dir(bin.join("store")).unwrap().count(),
        0,
        "helper still holds credentials"
    );
    let o = run(&["push", &name]);
    assert!(!o.status.success(), "push after logout: {o:?}");
}

/// A TCP proxy to `upstream` that slows responses to about `bytes_per_sec` and records
/// every request byte it forwards (to see the `Range` headers of resumed downloads).
struct SlowProxy {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl SlowProxy {
    fn start(upstream: String, bytes_per_sec: u64) -> SlowProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for down in l.incoming().flatten() {
                let Ok(up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut d_r, mut u_w) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                let reqs = reqs.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = d_r.read(&mut buf) {
                        if n == 0 || u_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        reqs.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = u_w.shutdown(std::net::Shutdown::Write);
                });
                let (mut u_r, mut d_w) = (up, down);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = u_r.read(&mut buf) {
                        if n == 0 || d_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(
                            n as u64 * 1_000_000 / bytes_per_sec,
                        ));
                    }
                    let _ = d_w.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        SlowProxy { port, requests }
    }

    /// The byte offsets of every `Range: bytes=N-` request seen.
    fn range_starts(&self) -> Vec<u64> {
        let raw = String::from_utf8_lossy(&self.requests.lock().unwrap()).to_ascii_lowercase();
        raw.match_indices("range: bytes=")
            .filter_map(|(i, m)| {
                raw[i + m.len()..]
                    .split('-')
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .collect()
    }
}

/// The daemon is killed with SIGKILL halfway through a pull; after a restart the next pull
/// resumes the partly downloaded layer (a `Range` request from where it stopped) and ends
/// with the identical image.
#[test]
fn pull_killed_halfway_resumes_after_daemon_restart() {
    if !prerequisites() {
        return;
    }
    let reg = Registry::start();
    // Pushes and pulls go through a proxy that serves about 4 MB/s.
    let proxy = SlowProxy::start(reg.host.clone(), 4 << 20);
    let host = format!("127.0.0.1:{}", proxy.port);
    let mut d = Daemon::start();
    let cfg = d.dir.path().join("resume-config");
    // A busybox image with 12 MiB of random bytes (gzip cannot shrink them).
    let rootfs = d.dir.path().join("big-rootfs");
    testutil::busybox_rootfs(&rootfs).unwrap();
    let big: Vec<u8> = {
        use std::io::Read;
        let mut b = vec![0u8; 12 << 20];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut b)
            .unwrap();
        b
    };
    std::fs::write(rootfs.join("big"), &big).unwrap();
    let want = Command::new("sha256sum")
        .arg(rootfs.join("big"))
        .output()
        .unwrap();
    let want = String::from_utf8_lossy(&want.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&rootfs)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let name = format!("{host}/big/img:1");
    let (st, body) = d
        .try_request(
            "POST",
            &format!("/images/create?fromSrc=-&repo={host}/big/img&tag=1"),
            Some(&tar.stdout),
        )
        .unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let id = image_inspect(&d, &name)["Id"].as_str().unwrap().to_string();
    ok(
        &berth(&d, &cfg, &["login", &host, "-u", USER, "-p", PASSWORD]),
        "login",
    );
    let t = Instant::now();
    ok(&berth(&d, &cfg, &["push", &name]), "push");
    eprintln!("push: {:?}", t.elapsed());
    ok(&berth(&d, &cfg, &["rmi", &name]), "rmi");
    let digest = reg.manifest_digest("big/img", "1");

    // Pull, and kill the daemon once part of the big layer is on disk.
    let mut pull = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("-H")
        .arg(format!("unix://{}", d.sock.display()))
        .args(["pull", &name])
        .env("DOCKER_CONFIG", &cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ingest = d.root.join("image/ingest");
    let partial = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "data"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while seen < (3 << 20) {
        assert!(Instant::now() < deadline, "the pull never got going");
        std::thread::sleep(Duration::from_millis(5));
        seen = partial(&ingest);
    }
    d.kill9();
    let _ = pull.wait();
    let left = partial(&ingest);
    assert!(
        ((3 << 20)..(12 << 20)).contains(&left),
        "expected a partial layer on disk, found {left} bytes"
    );

    // Restart and pull again: it resumes where it stopped.
    d.spawn();
    let t = Instant::now();
    let out = ok(&berth(&d, &cfg, &["pull", &name]), "pull after restart");
    eprintln!("resumed pull: {:?}", t.elapsed());
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    let starts = proxy.range_starts();
    assert!(
        starts.iter().any(|&s| s > 0 && s <= left),
        "no resumed (Range) request up to {left} bytes: {starts:?}"
    );
    let img = image_inspect(&d, &name);
    assert_eq!(img["Id"].as_str(), Some(id.as_str()));
    let out = ok(
        &berth(&d, &cfg, &["run", "--rm", &name, "sha256sum", "/big"]),
        "run",
    );
    assert!(out.starts_with(&want), "content differs: {out} vs {want}");
}

/// Build layers are stored uncompressed; a push sends them gzip-compressed (as docker
/// does) under a manifest of its own, keeps the compressed copy, and a second push finds
/// every layer in the registry. Pulled back, the image is the same and runs.
#[test]
fn built_layers_are_pushed_compressed_and_only_once() {
    if !prerequisites() {
        return;
    }
    let reg = Registry::start();
    let d = Daemon::start();
    let cfg = d.dir.path().join("berth-config");
    d.import_busybox("busybox:latest");
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let text_data: String = (0..60_000)
        .map(|i| format!("line {i} of a compressible file\n"))
        .collect();
    std::fs::write(ctx.join("data.txt"), &text_data).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY data.txt /data.txt\n",
    )
    .unwrap();
    let name = format!("{}/test/built:v1", reg.host);
    ok(
        &berth(
            &d,
            &cfg,
            &["build", "-q", "-t", &name, ctx.to_str().unwrap()],
        ),
        "build",
    );
    let id = image_inspect(&d, &name)["Id"].as_str().unwrap().to_string();
    ok(
        &berth(&d, &cfg, &["login", &reg.host, "-u", USER, "-p", PASSWORD]),
        "login",
    );
    let out = ok(&berth(&d, &cfg, &["push", &name]), "push");
    eprintln!("berth push:\n{out}");
    assert!(out.lines().any(|l| l.ends_with(": Pushed")), "{out}");
    let digest = pushed_digest(&out);
    assert_eq!(reg.manifest_digest("test/built", "v1"), digest);

    // The registry's manifest: gzip layers, the local config (the image id).
    let (body, _) = reg.curl(
        &[
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
        ],
        "/v2/test/built/manifests/v1",
        true,
    );
    let m: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(m["config"]["digest"].as_str(), Some(id.as_str()), "{m}");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{m}");
    for l in layers {
        let mt = l["mediaType"].as_str().unwrap();
        assert!(mt.ends_with("gzip"), "uncompressed layer pushed: {m}");
    }
    let copied = layers[1]["size"].as_u64().unwrap();
    assert!(
        copied < text_data.len() as u64 / 4,
        "the COPY layer is {copied} bytes for {} of text: not compressed",
        text_data.len()
    );

    // Again: nothing to upload, the same manifest.
    let out = ok(&berth(&d, &cfg, &["push", &name]), "second push");
    eprintln!("berth push (again):\n{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with(": Layer already exists"))
            .count(),
        2,
        "{out}"
    );
    assert!(!out.lines().any(|l| l.ends_with(": Pushed")), "{out}");
    assert_eq!(pushed_digest(&out), digest);

    // Pulled back into an empty daemon: the same image, the same file.
    let d2 = Daemon::start();
    let cfg2 = d2.dir.path().join("berth-config");
    ok(
        &berth(
            &d2,
            &cfg2,
            &["login", &reg.host, "-u", USER, "-p", PASSWORD],
        ),
        "login (second daemon)",
    );
    ok(&berth(&d2, &cfg2, &["pull", &name]), "pull");
    assert_eq!(image_inspect(&d2, &name)["Id"].as_str(), Some(id.as_str()));
    let out = ok(
        &berth(&d2, &cfg2, &["run", "--rm", &name, "md5sum", "/data.txt"]),
        "run pulled image",
    );
    let local = Command::new("md5sum")
        .arg(ctx.join("data.txt"))
        .output()
        .unwrap();
    assert_eq!(
        out.split_whitespace().next(),
        String::from_utf8_lossy(&local.stdout)
            .split_whitespace()
            .next()
    );
}
