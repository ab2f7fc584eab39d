//! `berth-runtime` under real engines: a private dockerd (`--add-runtime berth=...`) and
//! podman (`--runtime ...`), each with temporary roots, running a busybox image imported
//! from a local tarball. Skipped only when docker or podman is not installed.

mod dockerd_support;

use dockerd_support::{busybox_tar, have, text, unmount_under, Dockerd};
use std::fs;
use std::process::{Command, Output, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth-runtime")
}

#[test]
fn docker_runs_containers_with_berth_runtime() {
    let Some(d) = Dockerd::start_with(None, Some(("berth", bin()))) else {
        return;
    };
    let (tar, _) = busybox_tar(d.path());
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
    // The containerd namespace directory is the harness's own; find the container in it.
    let state = fs::read_dir(d.path().join("exec/runtime-runc"))
        .unwrap()
        .flatten()
        .map(|ns| ns.path().join(&id).join("state.json"))
        .find(|p| p.exists())
        .expect("state.json of the container");
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
    let (tar, _) = busybox_tar(dir.path());
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
