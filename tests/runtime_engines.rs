//! `berth-runtime` under real engines: a private dockerd (`--add-runtime berth=...`) and
//! podman (`--runtime ...`), each with temporary roots, running a busybox image imported
//! from a local tarball. Skipped only when docker or podman is not installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth-runtime")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A busybox rootfs tarball for `docker import` / `podman import`.
fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("bb-rootfs");
    testutil::busybox_rootfs(&rootfs).expect("busybox rootfs");
    let tar = dir.join("bb.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}

/// Unmounts everything mounted under `dir` (deepest first).
fn unmount_under(dir: &Path) {
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
            // SAFETY: c is a valid path; MNT_DETACH has no memory effects.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A private dockerd, stopped and cleaned up on drop.
struct Dockerd {
    dir: PathBuf,
    child: Child,
    host: String,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("bd")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let sock = dir.join("d.sock");
        fs::write(dir.join("daemon.json"), "{}").unwrap();
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
            .arg("--add-runtime")
            .arg(format!("berth={}", bin()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd {
            host: format!("unix://{}", sock.display()),
            dir,
            child,
        };
        let until = Instant::now() + Duration::from_secs(30);
        while !d.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < until,
                "dockerd did not come up: {}",
                fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
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
        unmount_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn docker_runs_containers_with_berth_runtime() {
    if !testutil::is_root() || !have("dockerd") || !have("docker") {
        eprintln!("skipped: needs root, dockerd and docker (apt-get install docker.io)");
        return;
    }
    let d = Dockerd::start();
    let tar = busybox_tar(&d.dir);
    let o = d.docker(&["import", tar.to_str().unwrap(), "berth-bb:test"]);
    assert!(o.status.success(), "{}", text(&o));
    let run = |extra: &[&str], cmd: &str| {
        let mut a = vec!["run", "--rm", "--runtime", "berth", "--network", "none"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["berth-bb:test", "sh", "-c", cmd]);
        d.docker(&a)
    };
    let o = run(&[], "echo hello-from-berth; cat /proc/1/comm; hostname");
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("hello-from-berth\nsh\n"), "{out}");

    let o = run(&[], "exit 5");
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));

    let o = run(&["-t"], "tty");
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("/dev/pts/0"));

    let o = run(
        &["--memory", "32m"],
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "33554432");

    // Detached, exec, stop: the container state lives in our runtime's root.
    let o = d.docker(&[
        "run",
        "-d",
        "--name",
        "bx",
        "--runtime",
        "berth",
        "--network",
        "none",
        "berth-bb:test",
        "sleep",
        "1000",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = d.docker(&["exec", "bx", "sh", "-c", "echo exec-ok; cat /proc/1/comm"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "exec-ok\nsleep\n");
    // dockerd 20.10 keeps every runtime's state under runtime-runc; the file is ours
    // (runc's has no startTime).
    let state = d
        .dir
        .join("exec/runtime-runc/moby")
        .join(&id)
        .join("state.json");
    let st: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    assert!(st["startTime"].is_u64(), "not berth-runtime's state: {st}");
    assert_eq!(st["id"], id.as_str());
    let o = d.docker(&["inspect", "-f", "{{.HostConfig.Runtime}}", "bx"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "berth");
    let o = d.docker(&["stop", "-t", "1", "bx"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d.docker(&["rm", "bx"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!state.exists());
}

#[test]
fn podman_runs_containers_with_berth_runtime() {
    if !testutil::is_root() || !have("podman") {
        eprintln!("skipped: needs root and podman (apt-get install podman)");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("bp")
        .tempdir_in("/tmp")
        .unwrap();
    let conf = dir.path().join("containers.conf");
    fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    let storage = dir.path().join("storage.conf");
    fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/runroot\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let podman = |args: &[&str]| -> Output {
        Command::new("podman")
            .env("CONTAINERS_CONF", &conf)
            .env("CONTAINERS_STORAGE_CONF", &storage)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("runroot"))
            .arg("--tmpdir")
            .arg(dir.path().join("tmp"))
            .arg("--runtime")
            .arg(bin())
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    };
    let tar = busybox_tar(dir.path());
    let o = podman(&["import", tar.to_str().unwrap(), "localhost/berth-bb:test"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/berth-bb:test",
        "sh",
        "-c",
        "echo hello-from-berth; cat /proc/1/comm; true",
    ]);
    let ok = o.status.success();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let o2 = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/berth-bb:test",
        "sh",
        "-c",
        "exit 6",
    ]);
    let _ = podman(&["rm", "-af"]);
    unmount_under(dir.path());
    assert!(ok, "{}", text(&o));
    assert_eq!(out, "hello-from-berth\nsh\n");
    assert_eq!(o2.status.code(), Some(6), "{}", text(&o2));
}
