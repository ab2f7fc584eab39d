//! `docker save` / `docker load` (GET /images/get, POST /images/load) against a real
//! `berth daemon`, driven by the real docker CLI and by `berth`.

mod engine_support;

use engine_support::{host_ok, Daemon};
use std::process::Command;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn save_then_load_round_trips_and_runs() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    let id = d.import_busybox("busybox:latest");
    let tar = d.dir.path().join("bb.tar");
    let out = d.docker(&["save", "-o", tar.to_str().unwrap(), "busybox:latest"]);
    assert!(out.status.success(), "save: {}", text(&out));
    assert!(std::fs::metadata(&tar).unwrap().len() > 1_000_000);

    let out = d.docker(&["rmi", "busybox:latest"]);
    assert!(out.status.success(), "rmi: {}", text(&out));
    assert!(!d.docker(&["image", "inspect", "busybox"]).status.success());

    let out = d.docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(out.status.success(), "load: {}", text(&out));
    assert!(
        text(&out).contains("Loaded image: busybox:latest"),
        "{}",
        text(&out)
    );
    let again = d.docker(&["image", "inspect", "-f", "{{.Id}}", "busybox:latest"]);
    assert_eq!(text(&again).trim(), id);
    let run = d.docker(&["run", "--rm", "busybox", "echo", "loaded"]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "loaded\n",
        "{}",
        text(&run)
    );

    // The berth CLI speaks the same endpoints: save to stdout, load from stdin.
    let berth = env!("CARGO_BIN_EXE_berth");
    let host = format!("unix://{}", d.sock.display());
    let saved = Command::new(berth)
        .args(["-H", &host, "save", "busybox:latest"])
        .output()
        .unwrap();
    assert!(saved.status.success(), "berth save: {}", text(&saved));
    assert_eq!(&saved.stdout[257..262], b"ustar", "not a tar stream");
}

#[test]
fn bad_save_and_load_requests_are_clean_errors() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let dest = d.dir.path().join("none.tar");
    let out = d.docker(&["save", "-o", dest.to_str().unwrap(), "nosuch:image"]);
    assert!(!out.status.success());
    assert!(
        text(&out).to_lowercase().contains("no such image"),
        "{}",
        text(&out)
    );

    let junk = d.dir.path().join("junk.tar");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let before = text(&d.docker(&["images", "-q", "--no-trunc"]));
    let out = d.docker(&["load", "-i", junk.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(text(&d.docker(&["images", "-q", "--no-trunc"])), before);
}
