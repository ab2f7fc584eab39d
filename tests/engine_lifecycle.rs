//! End to end: the container lifecycle through the API and the real docker CLI.

mod engine_support;

use engine_support::{demux, host_ok, Daemon};
use serde_json::json;
use std::io::Read;
use std::time::Duration;

#[test]
fn create_start_wait_logs_remove() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let id = d.create(
        "life1",
        json!({"Image": "busybox", "Cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"], "Labels": {"t": "life"}}),
    );
    assert_eq!(id.len(), 64);
    let (st, _) = d.request("POST", &format!("/containers/{id}/start"), None);
    assert_eq!(st, 204, "{}", d.log());
    let (st, v) = d.request("POST", "/containers/life1/wait?condition=not-running", None);
    assert_eq!((st, v["StatusCode"].as_i64()), (200, Some(3)), "{v}");
    let v = d.inspect("life1");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 3);
    assert_eq!(v["Name"], "/life1");
    let (st, body) = d
        .try_request(
            "GET",
            &format!("/containers/{}/logs?stdout=1&stderr=1", &id[..12]),
            None,
        )
        .unwrap();
    assert_eq!(st, 200);
    assert_eq!(demux(&body), ("out\n".to_string(), "err\n".to_string()));
    // The json-file log is docker's format.
    let log = std::fs::read_to_string(v["LogPath"].as_str().unwrap()).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "out\n");
    assert_eq!(first["stream"], "stdout");
    // List with filters.
    let (_, l) = d.request(
        "GET",
        "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22t%3Dlife%22%5D%7D",
        None,
    );
    assert_eq!(l.as_array().unwrap().len(), 1);
    let (_, l) = d.request("GET", "/containers/json", None);
    assert_eq!(
        l.as_array().unwrap().len(),
        0,
        "stopped containers are not listed without all"
    );
    let (st, _) = d.request("DELETE", "/containers/life1", None);
    assert_eq!(st, 204);
    let (st, v) = d.request("GET", "/containers/life1/json", None);
    assert_eq!(st, 404);
    assert_eq!(v["message"], "No such container: life1");
    assert!(!d.root.join("containers").join(&id).exists());
}

#[test]
fn docker_cli_run_ps_logs_exec_inspect_rm() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let out = d.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 5",
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let ps = d.docker(&["ps", "-a", "-q"]);
    assert!(
        ps.stdout.is_empty(),
        "--rm removed the container: {}",
        String::from_utf8_lossy(&ps.stdout)
    );

    let out = d.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "-e",
        "GREETING=hi",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ps = d.docker(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(ps.starts_with("web Up"), "{ps}");
    let ex = d.docker(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo $GREETING from exec; exit 4",
    ]);
    assert_eq!(ex.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&ex.stdout), "hi from exec\n");
    let insp = d.docker(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.Config.Image}}",
        "web",
    ]);
    assert_eq!(String::from_utf8_lossy(&insp.stdout).trim(), "true busybox");
    let images = d.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(
        String::from_utf8_lossy(&images.stdout).trim(),
        "busybox:latest"
    );

    // Follow the logs while the container runs, then stop it: follow ends.
    let mut follow = std::process::Command::new("docker")
        .args(["logs", "-f", "web"])
        .env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stop = d.docker(&["stop", "-t", "5", "web"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let mut text = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(follow.wait().unwrap().success());
    assert_eq!(text, "ready\n");
    let code = d.docker(&["inspect", "-f", "{{.State.ExitCode}}", "web"]);
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0");
    let rm = d.docker(&["rm", "web"]);
    assert!(rm.status.success());
}

#[test]
fn docker_cp_into_and_out_of_a_container() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let out = d.docker(&["run", "-d", "--name", "cpx", "busybox", "sleep", "60"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let src = d.dir.path().join("in.txt");
    std::fs::write(&src, "copied in\n").unwrap();
    let cp = d.docker(&["cp", src.to_str().unwrap(), "cpx:/tmp/"]);
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let cat = d.docker(&["exec", "cpx", "cat", "/tmp/in.txt"]);
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "copied in\n");
    let dst = d.dir.path().join("passwd");
    let cp = d.docker(&["cp", "cpx:/etc/passwd", dst.to_str().unwrap()]);
    assert!(cp.status.success());
    assert!(std::fs::read_to_string(&dst)
        .unwrap()
        .starts_with("root:x:0:0"));
    let missing = d.docker(&["cp", "cpx:/nope", dst.to_str().unwrap()]);
    assert!(!missing.status.success());
    // A stopped container's files are still reachable.
    assert!(d.docker(&["kill", "cpx"]).status.success());
    let (st, _) = d
        .try_request("HEAD", "/containers/cpx/archive?path=/tmp/in.txt", None)
        .unwrap();
    assert_eq!(st, 200);
    let (st, _) = d
        .try_request("HEAD", "/containers/cpx/archive?path=/nope", None)
        .unwrap();
    assert_eq!(st, 404);
}

#[test]
fn push_to_and_pull_from_a_local_registry() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reg_root = d.dir.path().join("registry");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _reg = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "registry",
                "serve",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--root",
            ])
            .arg(&reg_root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "registry did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let repo = format!("127.0.0.1:{port}/bb");
    let (st, _) = d.request(
        "POST",
        &format!("/images/busybox/tag?repo={repo}&tag=1"),
        None,
    );
    assert_eq!(st, 201);
    let (st, body) = d
        .try_request("POST", &format!("/images/{repo}/push?tag=1"), None)
        .unwrap();
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(st, 200);
    assert!(
        text.contains("digest: sha256:") && !text.contains("errorDetail"),
        "{text}"
    );
    for name in [format!("{repo}:1"), "busybox".to_string()] {
        let (st, v) = d.request("DELETE", &format!("/images/{name}"), None);
        assert_eq!(st, 200, "{v}");
    }
    let (_, l) = d.request("GET", "/images/json", None);
    assert_eq!(l.as_array().unwrap().len(), 0);
    let pull = d.docker(&["pull", &format!("{repo}:1")]);
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let run = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &format!("{repo}:1"),
        "echo",
        "pulled",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "pulled\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // A missing image is a clean error in the progress stream.
    let (st, body) = d
        .try_request(
            "POST",
            &format!("/images/create?fromImage={repo}&tag=nope"),
            None,
        )
        .unwrap();
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("errorDetail"));
}

/// `berth run --rm` of programs that end at once, many times under CPU load: every run
/// returns the program's exit code and leaves no container. (The exit of a container can
/// reach the engine before its start is recorded; the start once failed with "create
/// .../config.v2.tmp: No such file or directory" when the auto-removal came first.)
#[test]
fn quick_run_rm_returns_exit_codes_and_leaves_nothing() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let load = testutil::CpuLoad::start(3);
    let mut failures = Vec::new();
    for i in 0..25 {
        let code = i % 4;
        let exit = format!("exit {code}");
        let o = d.berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            &exit,
        ]);
        if o.status.code() != Some(code) {
            failures.push(format!(
                "run {i}: {:?} {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    drop(load);
    assert!(failures.is_empty(), "{failures:#?}");
    // On the bridge, publishing the same host port each time: a removed container's
    // ports are free as soon as `run --rm` returns (its namespace goes in the background).
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for i in 0..5 {
        let o = d.berth(&[
            "run",
            "--rm",
            "-p",
            &format!("{port}:80"),
            "busybox",
            "sh",
            "-c",
            "exit 3",
        ]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "run {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (_, v) = d.request("GET", "/containers/json?all=1", None);
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    let netns = d.run_root.join("netns");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(&netns).unwrap().next().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "namespaces left: {:?}",
            std::fs::read_dir(&netns).unwrap().collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&netns.display().to_string()), "{mounts}");
    // The image of a `run --rm` is free as soon as it returns, as with docker: its
    // container's files may still be on their way out, but not its rootfs snapshot (a
    // CI run once had `rmi` right after fail with "being used by a container").
    for args in [&["tag", "busybox", "last:1"][..], &["rmi", "busybox"]] {
        let o = d.berth(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let load = testutil::CpuLoad::start(3);
    let o = d.berth(&["run", "--rm", "--network", "none", "last:1", "true"]);
    let rmi = d.berth(&["rmi", "last:1"]);
    drop(load);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        rmi.status.success(),
        "{}",
        String::from_utf8_lossy(&rmi.stderr)
    );
}

/// Polls `cond` for up to 10 s.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_created_containers_cgroup_is_made_ahead_and_goes_with_it() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    // Never started: the cgroup made at create goes when the container is removed.
    let o = d.berth(&["create", "--network", "none", "busybox", "true"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    eventually("cgroup made at create", || testutil::berth_cgroup_left(&id));
    let o = d.berth(&["rm", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eventually("cgroup removed with the container", || {
        !testutil::berth_cgroup_left(&id)
    });
    // Started at once (the usual `run`): it runs in that cgroup, which goes at its exit.
    let o = d.berth(&[
        "run",
        "-d",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/cgroup; sleep 0.2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = d.berth(&["wait", &id]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
    let logs = d.berth(&["logs", &id]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.lines().any(|l| l.ends_with(&format!("/berth/{id}"))),
        "{logs}"
    );
    eventually("cgroup removed at exit", || {
        !testutil::berth_cgroup_left(&id)
    });
    let o = d.berth(&["rm", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
