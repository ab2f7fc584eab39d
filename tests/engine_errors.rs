//! End to end: Docker's error codes for bad input and bad state.

mod engine_support;

use engine_support::{host_ok, Daemon};
use serde_json::json;

#[test]
fn bad_requests_get_docker_status_codes() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let (st, v) = d.request("POST", "/containers/create", Some("{not json"));
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("invalid JSON"));
    let (st, _) = d.request("POST", "/containers/create", Some(r#"{"Image": 5}"#));
    assert_eq!(st, 400);
    let (st, _) = d.request(
        "POST",
        "/containers/create",
        Some(r#"{"Image":"busybox","HostConfig":{"Memory":"lots"}}"#),
    );
    assert_eq!(st, 400);
    let (st, v) = d.request(
        "POST",
        "/containers/create?name=bad%20name",
        Some(r#"{"Image":"busybox","Cmd":["true"]}"#),
    );
    assert_eq!(st, 400);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("Invalid container name"));
    let (st, v) = d.request(
        "POST",
        "/containers/create",
        Some(r#"{"Image":"nosuchimage","Cmd":["true"]}"#),
    );
    assert_eq!(st, 404);
    assert_eq!(v["message"], "No such image: nosuchimage");
    let (st, _) = d.request("POST", "/containers/create", Some(r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"RestartPolicy":{"Name":"sometimes"}}}"#));
    assert_eq!(st, 400);
    assert_eq!(d.request("POST", "/containers/nope/start", None).0, 404);
    assert_eq!(d.request("GET", "/v1.12/version", None).0, 400);
    assert_eq!(d.request("GET", "/v1.41/version", None).0, 200);
    assert_eq!(
        d.request("GET", "/containers/json?filters=%7Bbad", None).0,
        400
    );

    let id = d.create("busy", json!({"Image": "busybox", "Cmd": ["sleep", "60"]}));
    let (st, v) = d.request(
        "POST",
        "/containers/create?name=busy",
        Some(r#"{"Image":"busybox","Cmd":["true"]}"#),
    );
    assert_eq!(st, 409);
    assert!(v["message"].as_str().unwrap().contains("is already in use"));
    assert_eq!(d.request("POST", "/containers/busy/stop", None).0, 304);
    assert_eq!(d.request("POST", "/containers/busy/start", None).0, 204);
    assert_eq!(d.request("POST", "/containers/busy/start", None).0, 304);
    assert_eq!(d.request("DELETE", "/containers/busy", None).0, 409);
    // The image of an existing container cannot be removed without force.
    let (st, v) = d.request("DELETE", "/images/busybox", None);
    assert_eq!(st, 409, "{v}");
    assert_eq!(
        d.request("POST", &format!("/containers/{}/kill", &id[..10]), None)
            .0,
        204
    );
    d.wait_for(&id, "exit after kill", |v| v["State"]["Status"] == "exited");
    assert_eq!(d.request("POST", "/containers/busy/stop", None).0, 304);
    assert_eq!(d.request("POST", "/containers/busy/kill", None).0, 409);
    // Forced image removal keeps the container's root filesystem: it still starts.
    let (st, v) = d.request("DELETE", "/images/busybox?force=1", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(d.request("GET", "/images/busybox/json", None).0, 404);
    assert_eq!(
        d.request("POST", "/containers/busy/start", None).0,
        204,
        "{}",
        d.log()
    );
    assert_eq!(d.request("DELETE", "/containers/busy?force=1", None).0, 204);
}

#[test]
fn second_daemon_on_the_same_root_is_refused() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    let out = d
        .command()
        .arg("-H")
        .arg(format!(
            "unix://{}",
            d.dir.path().join("other.sock").display()
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another berth daemon is already running"),
        "{err}"
    );
    // The first one still serves.
    assert_eq!(d.request("GET", "/_ping", None).0, 200);
}

/// A published port already taken on the host fails the start after the runtime has
/// created the container (the endpoints are plumbed meanwhile): the created container is
/// removed again, nothing of its run is left (namespace, runtime state, mount, cgroup),
/// and once the port is free the same container starts.
#[test]
fn start_with_a_taken_port_fails_cleanly_and_can_be_retried() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = d.berth(&[
        "run",
        "-d",
        "--name",
        "taken",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&port.to_string()), "{err}");
    let v = d.inspect("taken");
    assert_eq!(v["State"]["Running"], false, "{v}");
    let id = v["Id"].as_str().unwrap().to_string();
    assert!(!d.run_root.join("netns").join(&id).exists());
    assert!(!d.run_root.join("runtime").join(&id).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "a mount of {id} is left");
    let cgroup_left = testutil::berth_cgroup_left(&id);
    assert!(!cgroup_left, "the cgroup of {id} is left");
    drop(listener);
    let out = d.berth(&["start", "taken"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.inspect("taken")["State"]["Running"], true);
    assert!(d.berth(&["rm", "-f", "taken"]).status.success());
}
