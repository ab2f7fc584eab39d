//! Image size as docker reports it: the same image (a busybox rootfs, plus a committed
//! layer on it) in a berth daemon and in a private dockerd (Debian's docker.io, moved over
//! with `berth save` | `docker load`) has the same `Size` in both `image inspect`s and in
//! both `images` tables — the uncompressed layer content, not the compressed blob sizes.
//!
//! Skipped (with a message) without root, dockerd or the docker CLI.

mod dockerd_support;
mod engine_support;

use dockerd_support::Dockerd;
use engine_support::{host_ok, Daemon};

fn ok(o: std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn image_size_matches_dockerd() {
    if !host_ok() {
        return;
    }
    let Some(dockerd) = Dockerd::start(None) else {
        return;
    };
    let d = Daemon::start();
    d.import_busybox("sized:base");
    // A second layer: a 1 MB file of zeros (compresses to almost nothing) and a hard link.
    ok(
        d.berth(&[
            "run",
            "--name",
            "grow",
            "sized:base",
            "sh",
            "-c",
            "dd if=/dev/zero of=/zeros bs=1024 count=1024 2>/dev/null && ln /zeros /zeros2",
        ]),
        "run",
    );
    ok(d.berth(&["commit", "grow", "sized:two"]), "commit");
    let tar = d.dir.path().join("sized.tar");
    ok(
        d.berth(&[
            "save",
            "-o",
            tar.to_str().unwrap(),
            "sized:base",
            "sized:two",
        ]),
        "save",
    );
    dockerd.ok(&["load", "-i", tar.to_str().unwrap()]);
    for name in ["sized:base", "sized:two"] {
        let (st, v) = d.request("GET", &format!("/images/{name}/json"), None);
        assert_eq!(st, 200, "{v}");
        let ours = v["Size"].as_i64().unwrap();
        let theirs: i64 = dockerd.inspect("{{.Size}}", name).parse().unwrap();
        eprintln!("{name}: berth Size {ours}, dockerd Size {theirs}");
        assert_eq!(ours, theirs, "image {name}: berth and dockerd sizes differ");
        let table = |out: String| {
            out.lines()
                .find(|l| l.starts_with(&format!("{name} ")) || l.starts_with(name))
                .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
        };
        let fmt = "{{.Repository}}:{{.Tag}} {{.Size}}";
        let ours_t = table(ok(d.berth(&["images", "--format", fmt]), "images"));
        let theirs_t = table(dockerd.ok(&["images", "--format", fmt]));
        assert_eq!(ours_t, theirs_t, "`images` SIZE of {name}");
    }
    // The compressed blobs are far smaller than the size shown (zeros compress).
    let (_, v) = d.request("GET", "/images/sized:two/json", None);
    assert!(v["Size"].as_i64().unwrap() > 1024 * 1024);
}
