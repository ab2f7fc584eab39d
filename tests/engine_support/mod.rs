//! Shared harness of the `engine_*` end-to-end tests: a real `berth daemon` on a temporary
//! root, run-root and socket, a busybox image imported from `testutil::busybox_rootfs`, a
//! tiny HTTP/1.1 client over the unix socket, and the real `docker` CLI pointed at the
//! daemon. [`Daemon`]'s `Drop` removes every container (killing it), stops the daemon and
//! cleans runtime state, mounts and cgroups, also when a test fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The OCI runtime the tests run containers with: Berth's own.
pub fn runtime() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth-runtime"))
}

/// Whether the host can run these tests (root, runc, docker CLI for the CLI tests).
pub fn host_ok() -> bool {
    if !nix_is_root() {
        eprintln!("skipping: needs root");
        return false;
    }
    if !runtime().exists() {
        eprintln!("skipping: {} not installed", runtime().display());
        return false;
    }
    true
}

fn nix_is_root() -> bool {
    testutil::is_root()
}

/// Finds `berth-monitor` next to the `berth` binary, building it when missing.
pub fn monitor_binary() -> PathBuf {
    let berth = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    let m = berth.with_file_name("berth-monitor");
    if !m.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "engine", "--bin", "berth-monitor"])
            .status()
            .expect("run cargo to build berth-monitor");
        assert!(st.success(), "building berth-monitor failed");
    }
    m
}

/// A running daemon on temporary directories.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub run_root: PathBuf,
    pub sock: PathBuf,
    /// This daemon's own bridge device, subnet and firewall chain prefix (so daemons of
    /// parallel tests share nothing); removed when the daemon is dropped.
    pub net: testutil::DaemonNet,
    /// The OCI runtime the daemon is given.
    pub runtime_bin: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon and waits until it answers `/_ping`.
    pub fn start() -> Daemon {
        Daemon::start_with_runtime(runtime())
    }

    /// [`Daemon::start`] with another OCI runtime binary.
    pub fn start_with_runtime(runtime_bin: PathBuf) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("be")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path().join("root");
        let run_root = dir.path().join("run");
        let sock = dir.path().join("d.sock");
        let mut d = Daemon {
            dir,
            root,
            run_root,
            sock,
            net: testutil::DaemonNet::new("be"),
            runtime_bin,
            child: None,
        };
        d.spawn();
        d
    }

    /// The daemon command on this daemon's directories.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("daemon")
            .arg("--root")
            .arg(&self.root)
            .arg("--run-root")
            .arg(&self.run_root)
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--runtime")
            .arg(&self.runtime_bin)
            .env("BERTH_MONITOR", monitor_binary());
        c.args(self.net.args());
        c
    }

    /// (Re)starts the daemon process.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn berth daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.try_request("GET", "/_ping", None) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL (containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One HTTP request; returns status and body (chunked bodies decoded).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = UnixStream::connect(&self.sock)?;
        s.set_read_timeout(Some(Duration::from_secs(25)))?;
        let body = body.unwrap_or(b"");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no header end"))?;
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let mut rest = raw[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            rest = dechunk(&rest);
        }
        Ok((status, rest))
    }

    /// One HTTP request that must get an answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (st, b) = self
            .try_request(method, path, body.map(str::as_bytes))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; daemon log: {}", self.log()));
        let v = serde_json::from_slice(&b).unwrap_or(serde_json::Value::String(
            String::from_utf8_lossy(&b).to_string(),
        ));
        (st, v)
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .expect("run docker CLI")
    }

    /// Runs the `berth` CLI against this daemon (stdin empty).
    pub fn berth(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    }

    /// Imports a busybox root filesystem as image `name` (through the API).
    pub fn import_busybox(&self, name: &str) -> String {
        let rootfs = self.dir.path().join("bb-rootfs");
        testutil::busybox_rootfs(&rootfs).unwrap();
        let out = Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&rootfs)
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        assert!(out.status.success());
        let (repo, tag) = name.split_once(':').unwrap_or((name, "latest"));
        let (st, body) = self
            .try_request(
                "POST",
                &format!("/images/create?fromSrc=-&repo={repo}&tag={tag}"),
                Some(&out.stdout),
            )
            .unwrap();
        assert_eq!(st, 200, "import: {}", String::from_utf8_lossy(&body));
        let _ = std::fs::remove_dir_all(&rootfs);
        let v: serde_json::Value = serde_json::from_slice(body.trim_ascii()).unwrap();
        v["status"].as_str().unwrap().to_string()
    }

    /// Creates a container from a JSON body; returns its id.
    pub fn create(&self, name: &str, body: serde_json::Value) -> String {
        let (st, v) = self.request(
            "POST",
            &format!("/containers/create?name={name}"),
            Some(&body.to_string()),
        );
        assert_eq!(st, 201, "create: {v}");
        v["Id"].as_str().unwrap().to_string()
    }

    /// Inspects a container.
    pub fn inspect(&self, id: &str) -> serde_json::Value {
        let (st, v) = self.request("GET", &format!("/containers/{id}/json"), None);
        assert_eq!(st, 200, "inspect: {v}");
        v
    }

    /// Polls `f` on the container's inspect output until it holds (max 20 s).
    pub fn wait_for(
        &self,
        id: &str,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.inspect(id);
            if f(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Decodes a chunked HTTP body.
pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = p + 2;
        if b.len() < start + size {
            out.extend_from_slice(&b[start..]);
            break;
        }
        out.extend_from_slice(&b[start..start + size]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// Splits a Docker multiplexed stream into (stdout, stderr).
pub fn demux(mut b: &[u8]) -> (String, String) {
    let (mut o, mut e) = (Vec::new(), Vec::new());
    while b.len() >= 8 {
        let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        let end = (8 + len).min(b.len());
        if b[0] == 2 {
            e.extend_from_slice(&b[8..end])
        } else {
            o.extend_from_slice(&b[8..end])
        }
        b = &b[end..];
    }
    (
        String::from_utf8_lossy(&o).to_string(),
        String::from_utf8_lossy(&e).to_string(),
    )
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Ok((200, b)) = self.try_request("GET", "/containers/json?all=1", None) {
                if let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&b) {
                    for c in list {
                        if let Some(id) = c["Id"].as_str() {
                            let _ = self.try_request(
                                "DELETE",
                                &format!("/containers/{id}?force=1"),
                                None,
                            );
                        }
                    }
                }
            }
        }
        self.kill9();
        // Whatever is left (a test failed mid-way): kill and delete through the runtime.
        let rt_root = self.run_root.join("runtime");
        if let Ok(rd) = std::fs::read_dir(&rt_root) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                let _ = Command::new(runtime())
                    .arg("--root")
                    .arg(&rt_root)
                    .args(["delete", "--force", &id])
                    .output();
            }
        }
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = self.dir.path().display().to_string();
            for m in mounts.lines().rev() {
                if let Some(p) = m.split_whitespace().nth(1) {
                    if p.starts_with(&prefix) {
                        let _ = Command::new("umount").args(["-l", p]).output();
                    }
                }
            }
        }
    }
}

/// Waits until `path` no longer exists or 10 s passed.
pub fn wait_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
