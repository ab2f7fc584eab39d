//! Shared harness of the tests that drive a private `dockerd` (Debian's docker.io):
//! temporary data/exec roots and socket, its own containerd namespaces, optional
//! `--insecure-registry` and `--add-runtime`, stopped and unmounted on drop. Tests skip
//! (after saying why) when dockerd is missing or does not come up.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether `cmd` is on the PATH (or an existing path).
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The docker client matching Debian's dockerd (API 1.41) when installed, else PATH's.
pub fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// stdout and stderr of a command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// stdout of a command.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Unmounts everything mounted under `dir` (deepest first).
pub fn unmount_under(dir: &Path) {
    let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = mi
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p) {
            // SAFETY: c is a valid NUL-terminated path; MNT_DETACH has no memory effects.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A fresh temporary directory under /tmp (short paths: containerd's socket lives in it).
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("temp dir")
}

/// The busybox rootfs as a plain tar (what `docker import` and `Store::import` take),
/// and the rootfs directory it was made from.
pub fn busybox_tar(dir: &Path) -> (PathBuf, PathBuf) {
    let rootfs = dir.join("bb-rootfs");
    testutil::busybox_rootfs(&rootfs).expect("busybox rootfs");
    let tar = dir.join("bb.tar");
    let o = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(o.status.success(), "tar: {}", text(&o));
    (tar, rootfs)
}

/// A private dockerd, stopped and cleaned up on drop.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    host: String,
}

impl Dockerd {
    /// Starts dockerd, trusting the registry `insecure` (`host:port`) over plain HTTP.
    /// `None` (after printing why) when dockerd is missing or does not come up.
    pub fn start(insecure: Option<&str>) -> Option<Dockerd> {
        Self::start_with(insecure, None)
    }

    /// [`Dockerd::start`], also registering `runtime` as `--add-runtime NAME=PATH`.
    pub fn start_with(insecure: Option<&str>, runtime: Option<(&str, &str)>) -> Option<Dockerd> {
        if !testutil::is_root() || !have("dockerd") || !have(docker_cli()) {
            eprintln!("skipped: needs root, dockerd and docker (apt-get install docker.io)");
            return None;
        }
        let dir = temp_dir("bi");
        let d = dir.path();
        let sock = d.join("d.sock");
        fs::write(d.join("daemon.json"), "{}").expect("write daemon.json");
        fs::create_dir_all(d.join("cfg")).expect("docker config dir");
        let log = fs::File::create(d.join("dockerd.log")).expect("dockerd log");
        let ns = testutil::unique_name("berth-interop");
        let mut cmd = Command::new("dockerd");
        if let Some(r) = insecure {
            cmd.arg("--insecure-registry").arg(r);
        }
        if let Some((name, path)) = runtime {
            cmd.arg("--add-runtime").arg(format!("{name}={path}"));
        }
        let child = cmd
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
            .arg("--containerd-namespace")
            .arg(&ns)
            .arg("--containerd-plugins-namespace")
            .arg(format!("{ns}-p"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipped: cannot start dockerd: {e}");
                return None;
            }
        };
        let mut dd = Dockerd {
            host: format!("unix://{}", sock.display()),
            dir,
            child,
        };
        let until = Instant::now() + Duration::from_secs(30);
        while !dd.docker(&["version"]).status.success() {
            let exited = dd.child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() > until {
                eprintln!(
                    "skipped: dockerd did not come up: {}",
                    fs::read_to_string(dd.dir.path().join("dockerd.log")).unwrap_or_default()
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(dd)
    }

    /// The daemon's temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(docker_cli())
            .env("DOCKER_CONFIG", self.path().join("cfg"))
            .env_remove("DOCKER_HOST")
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Runs docker, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(o.status.success(), "docker {args:?}: {}", text(&o));
        stdout(&o)
    }

    /// `docker inspect -f FORMAT NAME`, trimmed.
    pub fn inspect(&self, format: &str, name: &str) -> String {
        self.ok(&["image", "inspect", "-f", format, name])
            .trim()
            .to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in stdout(&ids).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_under(self.dir.path());
    }
}
