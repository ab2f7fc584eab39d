//! `berth` behaviour that needs no engine daemon: usage errors, an unreachable daemon,
//! and `berth registry serve`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

#[test]
fn unreachable_daemon_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = format!("unix://{}/none.sock", dir.path().display());
    let out = berth()
        .args(["-H", &host, "ps"])
        .output()
        .expect("run berth");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("Cannot connect to the berth daemon at {host}.")),
        "{err}"
    );
    // BERTH_HOST is the fallback for -H; `run` failures exit 125 like docker's.
    let out = berth()
        .args(["run", "--rm", "busybox", "true"])
        .env("BERTH_HOST", &host)
        .output()
        .expect("run berth");
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&host));
}

#[test]
fn usage_errors_exit_125() {
    let out = berth()
        .args(["run", "--bogus", "img"])
        .output()
        .expect("run berth");
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    let out = berth()
        .args(["no-such-command"])
        .output()
        .expect("run berth");
    assert_eq!(out.status.code(), Some(125));
    let out = berth().args(["--help"]).output().expect("run berth");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "ps", "images", "registry", "exec", "logs"] {
        assert!(
            help.contains(&format!("  {cmd} ")),
            "{cmd} missing from help: {help}"
        );
    }
}

/// Kills the child on drop.
struct Killer(std::process::Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn registry_serve_answers_the_distribution_api() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = berth()
        .args([
            "registry",
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--root",
        ])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn registry");
    let _guard = Killer(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        match http_get(port, "/v2/") {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "registry did not start: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("docker-distribution-api-version: registry/2.0"),
        "{resp}"
    );
    let resp = http_get(port, "/v2/nothing/manifests/latest").expect("manifest request");
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}
