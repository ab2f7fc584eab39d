//! End to end: restart policies and live restore across a daemon crash.

mod engine_support;

use engine_support::{demux, host_ok, Daemon};
use serde_json::json;

#[test]
fn on_failure_restarts_until_the_retry_limit() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let id = d.create(
        "crashy",
        json!({"Image": "busybox", "Cmd": ["sh", "-c", "echo run; exit 2"],
               "HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}}}),
    );
    let (st, _) = d.request("POST", &format!("/containers/{id}/start"), None);
    assert_eq!(st, 204);
    let v = d.wait_for(&id, "two restarts then exit", |v| {
        v["RestartCount"] == 2 && v["State"]["Status"] == "exited"
    });
    assert_eq!(v["State"]["ExitCode"], 2);
    let (_, body) = d
        .try_request("GET", &format!("/containers/{id}/logs?stdout=1"), None)
        .unwrap();
    assert_eq!(demux(&body).0, "run\nrun\nrun\n");
    // A clean exit is not restarted by on-failure.
    let id2 = d.create(
        "clean",
        json!({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"RestartPolicy": {"Name": "on-failure"}}}),
    );
    d.request("POST", &format!("/containers/{id2}/start"), None);
    let (_, v) = d.request("POST", &format!("/containers/{id2}/wait"), None);
    assert_eq!(v["StatusCode"], 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let v = d.inspect(&id2);
    assert_eq!(
        (v["RestartCount"].as_i64(), v["State"]["Status"].as_str()),
        (Some(0), Some("exited"))
    );
}

#[test]
fn killed_daemon_finds_its_containers_running_after_restart() {
    if !host_ok() {
        return;
    }
    let mut d = Daemon::start();
    d.import_busybox("busybox:latest");
    let id = d.create(
        "survivor",
        json!({"Image": "busybox", "Cmd": ["sh", "-c", "echo before; trap 'echo bye; exit 7' TERM; while true; do sleep 0.1; done"]}),
    );
    assert_eq!(
        d.request("POST", &format!("/containers/{id}/start"), None)
            .0,
        204
    );
    let pid = d.inspect(&id)["State"]["Pid"].as_i64().unwrap();
    assert!(pid > 0);
    d.kill9();
    // The container outlives the daemon.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    d.spawn();
    let v = d.inspect(&id);
    assert_eq!(v["State"]["Status"], "running", "{v}");
    assert_eq!(v["State"]["Pid"].as_i64(), Some(pid));
    let (_, body) = d
        .try_request("GET", &format!("/containers/{id}/logs?stdout=1"), None)
        .unwrap();
    assert_eq!(demux(&body).0, "before\n");
    // The restarted daemon still supervises it: stop gets its exit code and last words.
    assert_eq!(
        d.request("POST", &format!("/containers/{id}/stop?t=5"), None)
            .0,
        204
    );
    let v = d.inspect(&id);
    assert_eq!(
        (
            v["State"]["Status"].as_str(),
            v["State"]["ExitCode"].as_i64()
        ),
        (Some("exited"), Some(7))
    );
    let (_, body) = d
        .try_request("GET", &format!("/containers/{id}/logs?stdout=1"), None)
        .unwrap();
    assert_eq!(demux(&body).0, "before\nbye\n");
}

#[test]
fn a_crashed_daemon_leaves_no_half_created_container() {
    if !host_ok() {
        return;
    }
    let mut d = Daemon::start();
    d.import_busybox("busybox:latest");
    d.kill9();
    // Simulate a crash in the middle of a create.
    let half = d
        .root
        .join("containers")
        .join(format!(".creating-{}", "ab".repeat(32)));
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("config.v2.json"), b"{}").unwrap();
    // ... and in the middle of a removal: the record renamed away and the rootfs snapshot
    // already detached into the snapshotter's tmp/, neither deleted yet.
    let gone = "cd".repeat(32);
    let removing = d.root.join("containers").join(format!(".removing-{gone}"));
    std::fs::create_dir_all(&removing).unwrap();
    let trash = d
        .root
        .join("image/snapshots/tmp")
        .join(format!("rm-{gone}-4242"));
    std::fs::create_dir_all(trash.join("fs/etc")).unwrap();
    std::fs::write(trash.join("fs/etc/data"), b"x").unwrap();
    d.spawn();
    assert!(!half.exists());
    assert!(!removing.exists());
    assert!(
        !trash.exists(),
        "the detached snapshot of a removal is left"
    );
    let (_, l) = d.request("GET", "/containers/json?all=1", None);
    assert_eq!(l.as_array().unwrap().len(), 0);
}
