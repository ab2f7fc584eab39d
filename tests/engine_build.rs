//! End-to-end tests of `POST /build`: Dockerfile builds through a real `berth daemon`,
//! driven by the real `docker` CLI (classic builder, `DOCKER_BUILDKIT=0`), with RUN steps in
//! real containers, the layer cache, and failing builds that leave nothing tagged.

mod engine_support;

use engine_support::{host_ok, Daemon};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn docker_build(d: &Daemon, args: &[&str]) -> Output {
    Command::new("docker")
        .arg("build")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run docker build")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, content: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn docker_available() -> bool {
    Command::new("docker").arg("--version").output().is_ok()
}

#[test]
fn docker_build_runs_steps_caches_and_tags() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let ctx = d.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN echo built > /hello\nCOPY site/ /var/www/\nENV GREETING=hi\nCMD [\"cat\", \"/hello\", \"/var/www/index.html\"]\n",
    );
    write(&ctx, "site/index.html", "page one\n");
    write(&ctx, ".dockerignore", "secret\n");
    write(&ctx, "secret", "do not send\n");

    let out = docker_build(&d, &["-t", "app:v1", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(out.status.success(), "build failed: {log}\n{}", d.log());
    assert!(log.contains("Step 1/5 : FROM busybox"), "{log}");
    assert!(log.contains("Successfully tagged app:v1"), "{log}");

    let run = d.docker(&["run", "--rm", "app:v1"]);
    assert!(run.status.success(), "run: {}", text(&run));
    assert_eq!(String::from_utf8_lossy(&run.stdout), "built\npage one\n");
    let env = d.docker(&["inspect", "-f", "{{json .Config.Env}}", "app:v1"]);
    assert!(text(&env).contains("GREETING=hi"), "{}", text(&env));

    // A rebuild of the same context is answered from the cache, same image.
    let id1 = text(&d.docker(&["inspect", "-f", "{{.Id}}", "app:v1"]));
    let again = docker_build(&d, &["-t", "app:v2", ctx.to_str().unwrap()]);
    let log2 = text(&again);
    assert!(again.status.success(), "{log2}");
    assert_eq!(log2.matches("Using cache").count(), 4, "{log2}");
    let id2 = text(&d.docker(&["inspect", "-f", "{{.Id}}", "app:v2"]));
    assert_eq!(id1, id2);

    // One changed file invalidates its COPY step and what follows, not the RUN before it.
    write(&ctx, "site/index.html", "page two\n");
    let third = docker_build(&d, &["-t", "app:v3", ctx.to_str().unwrap()]);
    let log3 = text(&third);
    assert!(third.status.success(), "{log3}");
    assert_eq!(log3.matches("Using cache").count(), 1, "{log3}");
    let run = d.docker(&["run", "--rm", "app:v3"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "built\npage two\n");
    // .dockerignore kept the secret out of the context.
    let ls = d.docker(&["run", "--rm", "app:v3", "ls", "/var/www"]);
    assert!(!text(&ls).contains("secret"));
}

#[test]
fn failing_or_bad_dockerfiles_tag_nothing() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let ctx = d.dir.path().join("bad");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN echo start\nRUN exit 3\n",
    );
    let out = docker_build(&d, &["-t", "bad:1", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("The command '/bin/sh -c exit 3' returned a non-zero code: 3"),
        "{log}"
    );
    let inspect = d.docker(&["image", "inspect", "bad:1"]);
    assert!(!inspect.status.success(), "a failed build tagged an image");

    write(&ctx, "Dockerfile", "FROM busybox\nFROBNICATE now\n");
    let out = docker_build(&d, &["-t", "bad:2", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.to_lowercase().contains("line 2"), "{log}");
    assert!(log.to_lowercase().contains("frobnicate"), "{log}");

    write(&ctx, "Dockerfile", "FROM busybox\nCOPY ../outside /x\n");
    let out = docker_build(&d, &["-t", "bad:3", ctx.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    // No build container or mount is left behind.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(d.root.to_str().unwrap()),
        "leaked mounts under the daemon root"
    );
}
