//! End-to-end: `commit` and `export` through a real `berth daemon`, driven by the berth
//! CLI and by the real docker CLI (`DOCKER_HOST=unix://...`).
//!
//! Shows: a container that wrote a file is committed (`-m`, `-a`, `--change CMD`, repo:tag);
//! a container of the new image sees the file and runs the changed `CMD`; the committed
//! image's history, author and config are as docker writes them; a running container is
//! committed (paused for it by default, and running again afterwards); `export` (to stdout
//! and with `-o`) is a tar of the whole root filesystem holding the file and `/bin/sh`;
//! `docker commit` / `docker export` give the same; an unknown container is a clean error.

mod engine_support;

use engine_support::{host_ok, Daemon};
use std::process::{Command, Output, Stdio};

fn ok(o: &Output, what: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{what} failed ({:?})\nstdout:\n{out}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Runs the system `tar` with `args` on `data` as stdin; returns stdout.
fn tar_cmd(data: &[u8], args: &[&str]) -> Option<String> {
    use std::io::Write;
    let mut c = Command::new("tar")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tar");
    let Some(mut stdin) = c.stdin.take() else {
        let _ = c.kill();
        let _ = c.wait();
        return None;
    };
    let data = data.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = c.wait_with_output().ok()?;
    let _ = w.join();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// Entry names of a tar (directories without their trailing `/`).
fn tar_names(data: &[u8]) -> Vec<String> {
    tar_cmd(data, &["-tf", "-"])
        .expect("a valid tar")
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// The content of entry `name` of a tar.
fn tar_file(data: &[u8], name: &str) -> Option<String> {
    tar_cmd(data, &["-xOf", "-", name])
}

fn has_docker() -> bool {
    Command::new("docker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn commit_with_changes_and_run_the_new_image() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("cbase:latest");
    ok(
        &d.berth(&[
            "run",
            "--name",
            "writer",
            "cbase",
            "sh",
            "-c",
            "echo committed-content > /data.txt && mkdir -p /etc/app && echo x > /etc/app/conf",
        ]),
        "run writer",
    );
    let out = ok(
        &d.berth(&[
            "commit",
            "-m",
            "add data",
            "-a",
            "Tester <t@example.com>",
            "--change",
            r#"CMD ["cat", "/data.txt"]"#,
            "--change",
            "ENV COMMITTED=yes",
            "writer",
            "committed:v1",
        ]),
        "commit",
    );
    let id = out.trim().to_string();
    assert!(id.starts_with("sha256:"), "commit printed {out:?}");

    // The new image runs its changed CMD and sees the file.
    let out = ok(&d.berth(&["run", "--rm", "committed:v1"]), "run committed");
    assert_eq!(out, "committed-content\n");
    let out = ok(
        &d.berth(&[
            "run",
            "--rm",
            "committed:v1",
            "sh",
            "-c",
            "echo $COMMITTED; cat /etc/app/conf",
        ]),
        "run committed sh",
    );
    assert_eq!(out, "yes\nx\n");

    // Config, author and history as docker writes them.
    let (st, img) = d.request("GET", "/images/committed:v1/json", None);
    assert_eq!(st, 200, "{img}");
    assert_eq!(img["Id"].as_str(), Some(id.as_str()));
    assert_eq!(img["Author"], "Tester <t@example.com>");
    assert_eq!(
        img["Config"]["Cmd"],
        serde_json::json!(["cat", "/data.txt"])
    );
    assert_eq!(img["RootFS"]["Layers"].as_array().map(Vec::len), Some(2));
    let (st, hist) = d.request("GET", "/images/committed:v1/history", None);
    assert_eq!(st, 200, "{hist}");
    assert_eq!(hist[0]["Comment"], "add data", "{hist}");
    assert!(
        hist[0]["CreatedBy"]
            .as_str()
            .is_some_and(|c| c.contains("committed-content")),
        "history created_by: {hist}"
    );
    // Without --change the command the container ran becomes the image's CMD (docker).
    let id2 = ok(&d.berth(&["commit", "writer"]), "commit plain");
    let (_, img2) = d.request("GET", &format!("/images/{}/json", id2.trim()), None);
    assert_eq!(img2["Config"]["Cmd"][0], "sh", "{img2}");
    assert_eq!(img2["RepoTags"], serde_json::json!([]), "untagged commit");

    // A bad --change is a clear error and makes no image.
    let before = d.request("GET", "/images/json", None).1;
    let o = d.berth(&["commit", "--change", "FROBNICATE x", "writer", "bad:1"]);
    assert!(!o.status.success(), "bad change accepted");
    let after = d.request("GET", "/images/json", None).1;
    assert_eq!(
        before.as_array().map(Vec::len),
        after.as_array().map(Vec::len)
    );
    // The container's image removed under it: a clear conflict, not a broken image.
    ok(&d.berth(&["rmi", "-f", "cbase"]), "rmi -f base");
    let o = d.berth(&["commit", "writer", "orphan:1"]);
    assert!(!o.status.success(), "commit without the base image: {o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no longer exists"),
        "{o:?}"
    );
    let o = d.berth(&["commit", "no-such-container"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No such container"),
        "{o:?}"
    );
}

#[test]
fn commit_running_container_pauses_and_resumes() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("rbase:latest");
    ok(
        &d.berth(&[
            "run",
            "-d",
            "--name",
            "live",
            "rbase",
            "sh",
            "-c",
            "echo live > /live.txt; sleep 300",
        ]),
        "run -d",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let o = d.berth(&["exec", "live", "cat", "/live.txt"]);
        if o.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "file never appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let events = {
        let sock = d.sock.clone();
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 4;
        std::thread::spawn(move || {
            let o = Command::new(env!("CARGO_BIN_EXE_berth"))
                .arg("-H")
                .arg(format!("unix://{}", sock.display()))
                .args([
                    "events",
                    "--until",
                    &until.to_string(),
                    "--format",
                    "{{json .}}",
                ])
                .output()
                .expect("berth events");
            String::from_utf8_lossy(&o.stdout).to_string()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let id = ok(&d.berth(&["commit", "live", "live:snap"]), "commit running");
    let v = d.inspect("live");
    assert_eq!(v["State"]["Status"], "running", "not resumed after commit");
    // --pause=false works too, and an already paused container stays paused.
    ok(
        &d.berth(&["commit", "--pause=false", "live"]),
        "commit no pause",
    );
    ok(&d.berth(&["pause", "live"]), "pause");
    ok(&d.berth(&["commit", "live"]), "commit paused");
    assert_eq!(d.inspect("live")["State"]["Status"], "paused");
    ok(&d.berth(&["unpause", "live"]), "unpause");
    let out = ok(
        &d.berth(&["run", "--rm", id.trim(), "cat", "/live.txt"]),
        "run snapshot",
    );
    assert_eq!(out, "live\n");
    // The commit event was published (the listener subscribed before the commit).
    let ev = events.join().unwrap();
    let actions: Vec<String> = ev
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["Action"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        actions.get(..3),
        Some(&["pause".to_string(), "commit".into(), "unpause".into()][..]),
        "a default commit freezes the container around the diff: {ev}"
    );
}

#[test]
fn export_stopped_and_running_containers() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("ebase:latest");
    ok(
        &d.berth(&[
            "create",
            "--name",
            "exp",
            "ebase",
            "sh",
            "-c",
            "echo exported > /exported.txt && ln /exported.txt /hardlink.txt",
        ]),
        "create",
    );
    ok(&d.berth(&["start", "-a", "exp"]), "start");
    // To stdout.
    let o = d.berth(&["export", "exp"]);
    ok(&o, "export");
    let names = tar_names(&o.stdout);
    for want in ["exported.txt", "bin/sh", "etc", "bin"] {
        assert!(
            names.iter().any(|n| n == want),
            "export lacks {want}: {:?}",
            &names[..names.len().min(40)]
        );
    }
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with('/') && !n.starts_with("..")),
        "absolute or climbing names in export"
    );
    assert_eq!(
        tar_file(&o.stdout, "exported.txt").as_deref(),
        Some("exported\n")
    );
    // A hard link is a link entry, as docker writes it.
    let verbose = tar_cmd(&o.stdout, &["-tvf", "-"]).unwrap();
    assert!(
        verbose
            .lines()
            .any(|l| l.contains("hardlink.txt link to exported.txt")),
        "hard link not kept: {verbose}"
    );

    // The stopped container's rootfs was unmounted again.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let prefix = d.dir.path().display().to_string();
    assert!(
        !mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .any(|m| m.starts_with(&prefix) && m.ends_with("/rootfs")),
        "rootfs left mounted after export: {mounts}"
    );
    // With -o.
    let file = d.dir.path().join("exp.tar");
    ok(
        &d.berth(&["export", "-o", file.to_str().unwrap(), "exp"]),
        "export -o",
    );
    let data = std::fs::read(&file).unwrap();
    assert_eq!(data, o.stdout, "export -o differs from stdout export");
    // A running container.
    ok(
        &d.berth(&[
            "run",
            "-d",
            "--name",
            "expr",
            "-v",
            "expvol:/vol",
            "ebase",
            "sh",
            "-c",
            "echo v > /vol/in-volume.txt; echo r > /r.txt; sleep 300",
        ]),
        "run -d",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let o = d.berth(&["export", "expr"]);
        ok(&o, "export running");
        if tar_file(&o.stdout, "r.txt").as_deref() == Some("r\n") {
            // Like docker: the container's root filesystem only — no volume content and
            // none of the kernel filesystems mounted inside it.
            let names = tar_names(&o.stdout);
            assert!(
                !names.iter().any(|n| n == "vol/in-volume.txt"),
                "volume content in export"
            );
            assert!(
                !names
                    .iter()
                    .any(|n| n.starts_with("proc/") || n.starts_with("sys/")),
                "kernel filesystems in export"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "r.txt never exported");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = d.berth(&["export", "nope-container"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No such container"),
        "{o:?}"
    );
}

#[test]
fn docker_cli_commit_and_export() {
    if !host_ok() {
        return;
    }
    if !has_docker() {
        eprintln!("skipping: docker CLI not installed");
        return;
    }
    let d = Daemon::start();
    d.import_busybox("dbase:latest");
    let o = d.docker(&[
        "run",
        "--name",
        "dw",
        "dbase",
        "sh",
        "-c",
        "echo via-docker > /docker.txt",
    ]);
    assert!(o.status.success(), "docker run: {o:?}");
    let o = d.docker(&[
        "commit",
        "-c",
        "CMD cat /docker.txt",
        "-m",
        "docker commit",
        "dw",
        "dcommitted:1",
    ]);
    assert!(o.status.success(), "docker commit: {o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("sha256:"));
    let o = d.docker(&["run", "--rm", "dcommitted:1"]);
    assert!(o.status.success(), "docker run committed: {o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "via-docker\n");
    let file = d.dir.path().join("d.tar");
    let o = d.docker(&["export", "-o", file.to_str().unwrap(), "dw"]);
    assert!(o.status.success(), "docker export: {o:?}");
    let data = std::fs::read(&file).unwrap();
    let names = tar_names(&data);
    assert!(names.iter().any(|n| n == "docker.txt"), "no docker.txt");
    assert!(names.iter().any(|n| n == "bin/sh"), "no bin/sh");
    // The exported tar imports back as a runnable image.
    let o = d.docker(&["import", file.to_str().unwrap(), "reimported:1"]);
    assert!(o.status.success(), "docker import: {o:?}");
    let o = d.docker(&["run", "--rm", "reimported:1", "cat", "/docker.txt"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "via-docker\n", "{o:?}");
}
