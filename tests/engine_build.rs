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

/// The IPv4 address (without prefix) of host interface `dev`.
fn iface_addr(dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", dev])
        .output()
        .expect("run ip");
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on {dev}: {s}"))
        .to_string()
}

/// The `/24` prefix of a dotted address (`10.1.2.` of `10.1.2.1`).
fn prefix24(ip: &str) -> String {
    let mut parts: Vec<&str> = ip.split('.').collect();
    parts.pop();
    format!("{}.", parts.join("."))
}

/// A one-shot TCP server on `addr` that answers every connection with `reply`; returns
/// its port and how many connections it saw.
fn tcp_server(
    addr: &str,
    reply: &'static str,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read as _, Write as _};
    let l = std::net::TcpListener::bind((addr, 0)).expect("bind on the bridge gateway");
    let port = l.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (port, hits)
}

/// The interface names of a `/proc/net/dev` text.
fn interfaces(dev: &str) -> Vec<String> {
    let mut v: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn run_steps_use_the_build_network() {
    if !host_ok() || !docker_available() {
        return;
    }
    let mut d = Daemon::start();
    d.import_busybox("busybox:latest");
    let gw = iface_addr(&d.net.bridge);
    let (port, hits) = tcp_server(&gw, "from the gateway\n");
    let ctx = d.dir.path().join("netctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\n\
         ARG GW\n\
         ARG PORT\n\
         RUN ip -4 addr show eth0 > /addr && ip route > /route && cat /proc/net/dev > /dev-default\n\
         RUN wget -q -O /fetched http://$GW:$PORT/\n\
         RUN --network=none cat /proc/net/dev > /dev-none\n\
         RUN --network=host cat /proc/net/dev > /dev-host\n\
         RUN grep Seccomp: /proc/self/status > /seccomp\n\
         CMD [\"cat\", \"/addr\", \"/route\", \"/fetched\"]\n",
    );
    let gw_arg = format!("GW={gw}");
    let port_arg = format!("PORT={port}");
    let args = [
        "-t",
        "netapp",
        "--build-arg",
        &gw_arg,
        "--build-arg",
        &port_arg,
        ctx.to_str().unwrap(),
    ];
    let out = docker_build(&d, &args);
    let log = text(&out);
    assert!(out.status.success(), "build failed: {log}\n{}", d.log());
    let run = d.docker(&["run", "--rm", "--network", "none", "netapp"]);
    let shown = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "{}", text(&run));
    // Its own address in the bridge's subnet, default route via the gateway.
    let pre = prefix24(&gw);
    assert!(
        shown.contains(&format!("inet {pre}")),
        "address not on the bridge: {shown}"
    );
    assert!(
        shown.contains(&format!("default via {gw}")),
        "no default route via the bridge gateway {gw}: {shown}"
    );
    assert!(shown.contains("from the gateway"), "{shown}");
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let cat = |f: &str| {
        let o = d.docker(&["run", "--rm", "--network", "none", "netapp", "cat", f]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(interfaces(&cat("/dev-default")), ["eth0", "lo"]);
    assert_eq!(interfaces(&cat("/dev-none")), ["lo"]);
    // RUN steps run under Docker's default seccomp profile (mode 2: filter).
    assert_eq!(
        cat("/seccomp").split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "2"]
    );
    let host = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    assert!(
        interfaces(&cat("/dev-host")).contains(&d.net.bridge) && host.contains(&d.net.bridge),
        "--network=host does not see the host's interfaces"
    );

    // `docker build --network none`: every RUN has only a loopback.
    let ctx2 = d.dir.path().join("nonectx");
    write(
        &ctx2,
        "Dockerfile",
        "FROM busybox\nRUN cat /proc/net/dev > /dev-none && ip route > /route\n",
    );
    let out = docker_build(
        &d,
        &["-t", "noneapp", "--network", "none", ctx2.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let o = d.docker(&["run", "--rm", "noneapp", "cat", "/dev-none", "/route"]);
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(interfaces(&s), ["lo"], "{s}");
    assert!(!s.contains("default"), "{s}");

    // A user-defined network by name.
    let subnet = testutil::free_subnet();
    let o = d.docker(&["network", "create", "--subnet", &subnet, "buildnet"]);
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    d.net
        .extra_bridges
        .push(format!("br-{}", &id[..12.min(id.len())]));
    let ctx3 = d.dir.path().join("userctx");
    write(
        &ctx3,
        "Dockerfile",
        "FROM busybox\nRUN ip -4 addr show eth0 > /addr\n",
    );
    let out = docker_build(
        &d,
        &[
            "-t",
            "userapp",
            "--network",
            "buildnet",
            ctx3.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "userapp",
        "cat",
        "/addr",
    ]);
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        s.contains(&format!("inet {}", subnet.trim_end_matches("0/24"))),
        "{s}"
    );
    // An unknown network is a clear error (the build's network is not part of the cache
    // key, as with Docker's classic builder, so the step must run).
    let out = docker_build(
        &d,
        &[
            "-t",
            "x",
            "--no-cache",
            "--network",
            "nosuchnet",
            ctx3.to_str().unwrap(),
        ],
    );
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("nosuchnet"), "{log}");

    // A RUN that fails on the bridge leaves no endpoint behind either.
    let ctx4 = d.dir.path().join("failctx");
    write(
        &ctx4,
        "Dockerfile",
        "FROM busybox\nRUN ip route && exit 7\n",
    );
    let out = docker_build(&d, &["-t", "failnet", ctx4.to_str().unwrap()]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!("default via {gw}")),
        "{log}\n{}",
        d.log()
    );
    assert!(log.contains("returned a non-zero code: 7"), "{log}");

    // Nothing of the build containers is left on the networks or in the netns dir.
    let o = d.docker(&[
        "network",
        "inspect",
        "-f",
        "{{len .Containers}}",
        "bridge",
        "buildnet",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0\n0",
        "{}",
        text(&o)
    );
    let brif = std::fs::read_dir(format!("/sys/class/net/{}/brif", d.net.bridge))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(brif, 0, "a build veth is left in the bridge");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(d.root.to_str().unwrap()) && l.contains("netns")),
        "a build network namespace is left mounted"
    );
    let o = d.docker(&["network", "rm", "buildnet"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// A loopback HTTP server for `ADD <url>`: `/app.tar.gz` answers the current body with a
/// fixed `Last-Modified`, anything else 404. Returns the port, the body to serve and the
/// number of requests seen.
#[allow(clippy::type_complexity)]
fn http_files_server() -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{Read as _, Write as _};
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let body = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (b, h) = (body.clone(), hits.clone());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("");
            if line.starts_with("GET ") && path == "/files/app.tar.gz" {
                let data = b.lock().unwrap().clone();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nConnection: close\r\n\r\n",
                    data.len()
                );
                let _ = s.write_all(&data);
            } else {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    (port, body, hits)
}

/// A gzip tar holding one file `inside.txt` with `content` (made with tar(1) and gzip).
fn tar_gz(content: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inside.txt"), content).unwrap();
    let out = Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .args(["-czf", "-", "inside.txt"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn add_url_downloads_a_file_with_dockers_rules() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let (port, body, hits) = http_files_server();
    *body.lock().unwrap() = tar_gz("version one\n");
    let ctx = d.dir.path().join("addurl");
    let url = format!("http://127.0.0.1:{port}/files/app.tar.gz");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM busybox\nADD {url} /opt/\nADD {url}?x=1#frag /renamed.tgz\nRUN stat -c '%a %Y %s' /opt/app.tar.gz /renamed.tgz > /stat && ls /opt > /ls\n"
        ),
    );
    let out = docker_build(&d, &["-t", "addurl:1", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(out.status.success(), "build failed: {log}\n{}", d.log());
    let len = body.lock().unwrap().len();
    let o = d.docker(&["run", "--rm", "addurl:1", "cat", "/stat", "/ls"]);
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    // Mode 0600, Last-Modified as the time, the archive as is (not extracted).
    assert_eq!(
        s,
        format!("600 1445412480 {len}\n600 1445412480 {len}\napp.tar.gz\n"),
        "{}",
        text(&o)
    );
    let o = d.docker(&[
        "run",
        "--rm",
        "addurl:1",
        "sh",
        "-c",
        "gzip -dc /opt/app.tar.gz | tar -xO",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "version one\n",
        "{}",
        text(&o)
    );

    // Same content: both ADD steps (and the RUN after them) come from the cache, though
    // the file is downloaded again to know.
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    let out = docker_build(&d, &["-t", "addurl:2", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("Using cache").count(), 3, "{log}");
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) > before);

    // New content: the ADD steps run again.
    *body.lock().unwrap() = tar_gz("version two\n");
    let out = docker_build(&d, &["-t", "addurl:3", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("Using cache").count(), 0, "{log}");
    let o = d.docker(&[
        "run",
        "--rm",
        "addurl:3",
        "sh",
        "-c",
        "gzip -dc /renamed.tgz | tar -xO",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "version two\n");

    // A missing file and an unreachable server are clear errors; nothing is tagged.
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM busybox\nADD http://127.0.0.1:{port}/files/missing.txt /m\n"),
    );
    let out = docker_build(&d, &["-t", "addurl:404", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("404"), "{log}");
    assert!(log.contains("missing.txt"), "{log}");
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM busybox\nADD http://127.0.0.1:{dead_port}/x.txt /x\n"),
    );
    let out = docker_build(&d, &["-t", "addurl:dead", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!("127.0.0.1:{dead_port}/x.txt")),
        "{log}"
    );
    assert!(log.to_lowercase().contains("line 2"), "{log}");
    for t in ["addurl:404", "addurl:dead"] {
        assert!(
            !d.docker(&["image", "inspect", t]).status.success(),
            "{t} was tagged"
        );
    }
}

/// Whether deb.debian.org answers on port 80 (within a few seconds).
fn debian_mirror_reachable() -> bool {
    use std::net::ToSocketAddrs;
    let Ok(addrs) = ("deb.debian.org", 80).to_socket_addrs() else {
        return false;
    };
    addrs.into_iter().any(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok()
    })
}

/// The seed demo of issue 6 (scripts/seed-demo.sh against this test's daemon): a Debian
/// bookworm base from debootstrap (cached under /var/cache/berth-test), `berth import`,
/// `berth build` of the nginx Dockerfile (apt-get through the default bridge's NAT),
/// `berth run --rm -d -p PORT:80` and the nginx page over curl; then the same build with
/// the real `docker build` pointed at the daemon.
#[test]
fn seed_demo_debian_nginx_build_serves_a_page() {
    if !host_ok() || !docker_available() {
        return;
    }
    if !debian_mirror_reachable() {
        eprintln!("skipping: deb.debian.org is not reachable (the build runs apt-get)");
        return;
    }
    let cache = Path::new("/var/cache/berth-test/debian-bookworm-minbase.tar");
    let have_debootstrap = Command::new("sh")
        .args(["-c", "command -v debootstrap"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !cache.exists() && !have_debootstrap {
        eprintln!(
            "skipping: no cached Debian tarball and no debootstrap (apt-get install debootstrap)"
        );
        return;
    }
    let d = Daemon::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/seed-demo.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("BERTH", env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_HOST", format!("unix://{}", d.sock.display()))
        .env("DOCKER_TOO", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/seed-demo.sh");
    let log = text(&out);
    assert!(out.status.success(), "seed demo failed: {log}\n{}", d.log());
    assert!(log.contains("Welcome to nginx!"), "{log}");
    assert!(
        log.contains("docker-built image serves the nginx page too"),
        "{log}"
    );
    assert!(log.contains("seed demo OK"), "{log}");
    // The script removed its containers; no build container or netns is left.
    let ps = d.docker(&["ps", "-aq"]);
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        "",
        "{}",
        text(&ps)
    );
    let brif = std::fs::read_dir(format!("/sys/class/net/{}/brif", d.net.bridge))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(brif, 0, "a veth is left in the bridge");
}

/// A client that hangs up before its build answers must not take the daemon down: the
/// daemon's writes to the closed socket fail with EPIPE instead of killing it with
/// SIGPIPE (the `berth` binary restores SIGPIPE's default for its CLI commands only).
#[test]
fn daemon_survives_clients_that_hang_up_mid_build() {
    use std::io::Write as _;
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let ctx = d.dir.path().join("hangup");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN for i in $(seq 10); do echo line $i; sleep 0.1; done\n",
    );
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&ctx)
        .args(["-cf", "-", "Dockerfile"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    // Several clients send a whole build request and close the connection at once; the
    // daemon answers (and streams the step's output) into closed sockets.
    for _ in 0..3 {
        let mut s = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
        let head = format!(
            "POST /build?t=hangup HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
            tar.stdout.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&tar.stdout).unwrap();
        drop(s);
    }
    // The steps go on writing for a second; then every build has cleaned up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (st, _) = d
            .try_request("GET", "/_ping", None)
            .unwrap_or_else(|e| panic!("daemon gone after clients hung up: {e:?}\n{}", d.log()));
        assert_eq!(st, 200);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let build_dir = d.root.join("tmp/build");
        if !mounts.contains(build_dir.to_str().unwrap()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned builds left mounts behind"
        );
    }
    // And the daemon still builds.
    let out = docker_build(&d, &["-t", "after", ctx.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", text(&out), d.log());
}

/// `berth registry serve` on a free port of 127.0.0.1 (a retry picks another port if the
/// probed one was taken); killed on drop.
struct LocalRegistry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        Self::start_with(None)
    }

    /// With `htpasswd` (bcrypt lines), the registry asks for basic authentication.
    fn start_with(htpasswd: Option<&str>) -> LocalRegistry {
        let dir = tempfile::tempdir().unwrap();
        let auth: Vec<std::ffi::OsString> = match htpasswd {
            Some(lines) => {
                let f = dir.path().join("htpasswd");
                std::fs::write(&f, lines).unwrap();
                vec!["--htpasswd".into(), f.into_os_string()]
            }
            None => Vec::new(),
        };
        for _ in 0..5 {
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("127.0.0.1:{port}");
            let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["registry", "serve", "--addr", &addr, "--root"])
                .arg(dir.path().join("root"))
                .args(&auth)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn berth registry serve");
            let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < until {
                if std::net::TcpStream::connect(&addr).is_ok() {
                    return LocalRegistry {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("berth registry serve did not come up");
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `FROM` image that is not in the store is pulled from its registry (here berth's own
/// on loopback), as `docker build` does; an unreachable registry is a clear error.
#[test]
fn missing_base_image_is_pulled_from_its_registry() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let reg = LocalRegistry::start();
    let remote = format!("{}/base/busybox:1", reg.addr);
    for args in [
        vec!["tag", "busybox:latest", remote.as_str()],
        vec!["push", remote.as_str()],
        vec!["rmi", remote.as_str()],
    ] {
        let o = d.docker(&args);
        assert!(o.status.success(), "docker {args:?}: {}", text(&o));
    }
    let ctx = d.dir.path().join("pullctx");
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM {remote}\nRUN echo pulled > /ok\nCMD [\"cat\", \"/ok\"]\n"),
    );
    let out = docker_build(&d, &["-t", "pulledbase", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(out.status.success(), "{log}\n{}", d.log());
    assert!(
        log.contains(&format!("1: Pulling from {}/base/busybox", reg.addr)),
        "{log}"
    );
    assert!(log.contains("Status: Downloaded newer image for"), "{log}");
    let run = d.docker(&["run", "--rm", "pulledbase"]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "pulled\n",
        "{}",
        text(&run)
    );
    // The base is now local: a second build does not pull again.
    let out = docker_build(&d, &["-t", "pulledbase2", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("Pulling from"), "{log}");

    let dead = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    write(&ctx, "Dockerfile", &format!("FROM {dead_addr}/nothing:1\n"));
    let out = docker_build(&d, &["-t", "nobase", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains(&format!("{dead_addr}/nothing:1")), "{log}");
}

/// The credentials `docker login` stored are sent with the build (`X-Registry-Config`) and
/// used to pull the base image from a registry that requires them.
#[test]
fn base_image_pull_uses_the_clients_registry_credentials() {
    if !host_ok() || !docker_available() {
        return;
    }
    let hash = Command::new("htpasswd")
        .args(["-Bbn", "builder", "s3cret"])
        .output();
    let Some(hash) = hash.ok().filter(|o| o.status.success()) else {
        eprintln!("skipping: needs htpasswd (apt-get install apache2-utils)");
        return;
    };
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let reg = LocalRegistry::start_with(Some(&String::from_utf8_lossy(&hash.stdout)));
    let remote = format!("{}/private/busybox:1", reg.addr);
    let login = ["login", "-u", "builder", "-p", "s3cret", reg.addr.as_str()];
    for args in [
        login.to_vec(),
        vec!["tag", "busybox:latest", remote.as_str()],
        vec!["push", remote.as_str()],
        vec!["rmi", remote.as_str()],
        vec!["logout", reg.addr.as_str()],
    ] {
        let o = d.docker(&args);
        assert!(o.status.success(), "docker {args:?}: {}", text(&o));
    }
    let ctx = d.dir.path().join("authctx");
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM {remote}\nRUN echo ok > /ok\n"),
    );
    // Logged out: the registry refuses, the build fails saying which image.
    let out = docker_build(&d, &["-t", "authbase", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains(&remote), "{log}");
    // Logged in: the CLI sends its credentials with the build.
    let o = d.docker(&login);
    assert!(o.status.success(), "{}", text(&o));
    let out = docker_build(&d, &["-t", "authbase", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(out.status.success(), "{log}\n{}", d.log());
    assert!(log.contains("Pulling from"), "{log}");
}

/// `berth -H ... build ARGS`, with `stdin` fed in.
fn berth_build(d: &Daemon, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("-H")
        .arg(format!("unix://{}", d.sock.display()))
        .arg("build")
        .args(args)
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run berth build");
    if let (Some(data), Some(mut si)) = (stdin, child.stdin.take()) {
        si.write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// `berth build` streams its context (a large one too) and takes the Dockerfile from the
/// context, from outside it (`-f`), from stdin (`-f -`), or a whole context tar from stdin.
#[test]
fn berth_cli_build_streams_the_context() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let ctx = d.dir.path().join("cli-ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nCOPY big.bin small.txt /data/\nRUN wc -c /data/big.bin > /size\nCMD [\"cat\", \"/size\", \"/data/small.txt\"]\n",
    );
    write(&ctx, "small.txt", "small\n");
    // 48 MiB of incompressible data, streamed in chunks.
    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(ctx.join("big.bin"), &big).unwrap();
    let out = berth_build(&d, &["-t", "cli:1", ctx.to_str().unwrap()], None);
    assert!(out.status.success(), "{}\n{}", text(&out), d.log());
    assert!(
        text(&out).contains("Successfully tagged cli:1"),
        "{}",
        text(&out)
    );
    let run = d.docker(&["run", "--rm", "cli:1"]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        format!("{} /data/big.bin\nsmall\n", big.len())
    );

    // A Dockerfile outside the context, and one from stdin.
    let outside = d.dir.path().join("Other.Dockerfile");
    std::fs::write(
        &outside,
        "FROM busybox\nCOPY small.txt /o\nCMD [\"cat\", \"/o\"]\n",
    )
    .unwrap();
    let out = berth_build(
        &d,
        &[
            "-q",
            "-t",
            "cli:2",
            "-f",
            outside.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .starts_with("sha256:"));
    let out = berth_build(
        &d,
        &["-q", "-t", "cli:3", "-f", "-", ctx.to_str().unwrap()],
        Some(b"FROM busybox\nCOPY small.txt /s\nCMD [\"cat\", \"/s\"]\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    for t in ["cli:2", "cli:3"] {
        let run = d.docker(&["run", "--rm", t]);
        assert_eq!(String::from_utf8_lossy(&run.stdout), "small\n", "{t}");
    }

    // A context tar on stdin.
    let small = d.dir.path().join("tarctx");
    write(
        &small,
        "Dockerfile",
        "FROM busybox\nCMD [\"echo\", \"from a tar\"]\n",
    );
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&small)
        .args(["-cf", "-", "Dockerfile"])
        .output()
        .unwrap();
    let out = berth_build(&d, &["-q", "-t", "cli:4", "-"], Some(&tar.stdout));
    assert!(out.status.success(), "{}", text(&out));
    let run = d.docker(&["run", "--rm", "cli:4"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "from a tar\n");

    // A missing context is an error before anything is sent.
    let out = berth_build(&d, &["-t", "cli:5", "/nonexistent/ctx"], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent/ctx"), "{}", text(&out));
}

/// `docker build --network container:<name>` runs the steps in that running container's
/// network namespace; a stopped or unknown container is a clear error.
#[test]
fn build_joins_a_running_containers_network() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let o = d.docker(&[
        "run",
        "-d",
        "--name",
        "netholder",
        "busybox",
        "sleep",
        "300",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ip = d.docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.IPAddress}}",
        "netholder",
    ]);
    let ip = String::from_utf8_lossy(&ip.stdout).trim().to_string();
    assert!(!ip.is_empty());
    let ctx = d.dir.path().join("joinctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN ip -4 addr show eth0 > /addr\n",
    );
    let out = docker_build(
        &d,
        &[
            "-t",
            "joined",
            "--network",
            "container:netholder",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}\n{}", text(&out), d.log());
    let o = d.docker(&["run", "--rm", "--network", "none", "joined", "cat", "/addr"]);
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(s.contains(&format!("inet {ip}/")), "{s}");
    let o = d.docker(&["rm", "-f", "netholder"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = docker_build(
        &d,
        &[
            "--no-cache",
            "--network",
            "container:netholder",
            ctx.to_str().unwrap(),
        ],
    );
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("netholder"), "{log}");
}

fn sha256sum(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A cold `COPY` build (the step's files become the layer's snapshot and blob without
/// being copied or hashed twice): the files read back from containers of the image with
/// their content, modes (`--chmod`), owners (`--chown`) and links; a later `RUN` that
/// changes a copied file leaves the `COPY` layer as it was; the saved layers hash to the
/// image's diff ids; a rebuild is answered from the cache with the same image.
#[test]
fn cold_copy_layers_read_back_and_rebuild_from_cache() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let ctx = d.dir.path().join("copy-ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\n\
         COPY big.bin data/ /app/\n\
         COPY --chmod=600 data/a.txt /app/a-private.txt\n\
         COPY --chown=1234:5678 data/a.txt /app/owned.txt\n\
         COPY data2/d.txt /app/sub/c.txt\n\
         RUN cat /app/a.txt >> /app/b.txt\n\
         CMD [\"cat\", \"/app/b.txt\"]\n",
    );
    write(
        &ctx,
        "Base.Dockerfile",
        "FROM busybox\nCOPY big.bin data/ /app/\n",
    );
    write(&ctx, "data/a.txt", "alpha\n");
    write(&ctx, "data/b.txt", "beta\n");
    write(&ctx, "data/sub/c.txt", "gamma\n");
    write(&ctx, "data2/d.txt", "delta\n");
    std::os::unix::fs::symlink("a.txt", ctx.join("data/link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        ctx.join("data/b.txt"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let big: Vec<u8> = (0..9u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(ctx.join("big.bin"), &big).unwrap();
    let big_sum = sha256sum(&ctx.join("big.bin"));

    let out = berth_build(&d, &["-t", "copied:1", ctx.to_str().unwrap()], None);
    let log = text(&out);
    assert!(out.status.success(), "{log}\n{}", d.log());
    assert_eq!(log.matches("Using cache").count(), 0, "{log}");

    let script = "sha256sum /app/big.bin | cut -d' ' -f1; \
                  stat -c '%n %a %u:%g' /app/a.txt /app/b.txt /app/a-private.txt /app/owned.txt /app/sub/c.txt; \
                  readlink /app/link; cat /app/sub/c.txt /app/a-private.txt /app/owned.txt /app/b.txt";
    let run = d.docker(&["run", "--rm", "copied:1", "sh", "-c", script]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        format!(
            "{big_sum}\n\
             /app/a.txt 644 0:0\n\
             /app/b.txt 755 0:0\n\
             /app/a-private.txt 600 0:0\n\
             /app/owned.txt 644 1234:5678\n\
             /app/sub/c.txt 644 0:0\n\
             a.txt\n\
             delta\nalpha\nalpha\nbeta\nalpha\n"
        )
    );

    // The first COPY layer is shared with an image of that step alone (from the cache)
    // and still holds b.txt and sub/c.txt as copied: the later steps changed copies.
    let out = berth_build(
        &d,
        &[
            "-t",
            "copied:base",
            "-f",
            ctx.join("Base.Dockerfile").to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("Using cache").count(),
        1,
        "{}",
        text(&out)
    );
    let run = d.docker(&[
        "run",
        "--rm",
        "copied:base",
        "cat",
        "/app/b.txt",
        "/app/sub/c.txt",
    ]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "beta\ngamma\n");
    let run = d.docker(&["run", "--rm", "copied:1"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "beta\nalpha\n");

    // The stored layers are the diff ids: a saved image's layer files hash to them.
    let saved = d.dir.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let tar = saved.join("img.tar");
    let o = d.docker(&["save", "-o", tar.to_str().unwrap(), "copied:1"]);
    assert!(o.status.success(), "{}", text(&o));
    let x = Command::new("tar")
        .arg("-C")
        .arg(&saved)
        .arg("-xf")
        .arg(&tar)
        .status()
        .unwrap();
    assert!(x.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join("manifest.json")).unwrap()).unwrap();
    let config_path = manifest[0]["Config"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join(config_path)).unwrap()).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(diff_ids.len(), 6, "{config}");
    for (i, (l, id)) in layers.iter().zip(diff_ids).enumerate().skip(1) {
        let sum = sha256sum(&saved.join(l.as_str().unwrap()));
        assert_eq!(format!("sha256:{sum}"), id.as_str().unwrap(), "layer {i}");
    }

    // A rebuild: every step from the cache, the same image.
    let id1 = text(&d.docker(&["inspect", "-f", "{{.Id}}", "copied:1"]));
    let out = berth_build(&d, &["-t", "copied:2", ctx.to_str().unwrap()], None);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("Using cache").count(), 6, "{log}");
    let id2 = text(&d.docker(&["inspect", "-f", "{{.Id}}", "copied:2"]));
    assert_eq!(id1, id2);
    // The context files the first build linked into its layers are gone with its
    // context; the layers still read back.
    let run = d.docker(&["run", "--rm", "copied:2", "sha256sum", "/app/big.bin"]);
    assert!(String::from_utf8_lossy(&run.stdout).starts_with(&big_sum));
}

/// A cold `COPY` layer is kept as its snapshot only (no tar blob written at build time,
/// a record of it instead); `save`, `push` and a `rmi` + `pull` make the very tar again:
/// the layers of the loaded and of the pulled image are the built image's diff ids, and
/// containers of them read the files back.
#[test]
fn a_build_layer_kept_as_its_snapshot_saves_and_pushes_the_same_tar() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let ctx = d.dir.path().join("derived-ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nCOPY big.bin data/ /app/\nCMD [\"cat\", \"/app/a.txt\"]\n",
    );
    write(&ctx, "data/a.txt", "alpha\n");
    write(&ctx, "data/sub/c.txt", "gamma\n");
    std::os::unix::fs::symlink("a.txt", ctx.join("data/link")).unwrap();
    let big: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(ctx.join("big.bin"), &big).unwrap();
    let big_sum = sha256sum(&ctx.join("big.bin"));
    let out = berth_build(&d, &["-t", "derived:1", ctx.to_str().unwrap()], None);
    assert!(out.status.success(), "{}\n{}", text(&out), d.log());
    let layers = |d: &Daemon, name: &str| -> Vec<String> {
        let o = d.docker(&["inspect", "-f", "{{json .RootFS.Layers}}", name]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let built = layers(&d, "derived:1");
    assert_eq!(built.len(), 2);
    // Only a record of the COPY layer: its tar was not written.
    let hex = built[1].strip_prefix("sha256:").unwrap();
    let store = d.root.join("image");
    assert!(store.join("derived/sha256").join(hex).is_file());
    assert!(!store.join("blobs/sha256").join(hex).exists());
    let check = |d: &Daemon, name: &str| {
        assert_eq!(layers(d, name), built, "{name}");
        let run = d.docker(&[
            "run",
            "--rm",
            name,
            "sh",
            "-c",
            "sha256sum /app/big.bin | cut -d' ' -f1; cat /app/link /app/sub/c.txt",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            format!("{big_sum}\nalpha\ngamma\n"),
            "{}",
            text(&run)
        );
    };
    // Push (the layer made from the snapshot and compressed) to a registry.
    let reg = LocalRegistry::start();
    let remote = format!("{}/derived/img:1", reg.addr);
    for args in [
        vec!["tag", "derived:1", remote.as_str()],
        vec!["push", remote.as_str()],
    ] {
        let o = d.docker(&args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}\n{}",
            text(&o),
            d.log()
        );
    }
    // The push compressed the layer straight from the snapshot: still only a record.
    assert!(!store.join("blobs/sha256").join(hex).exists());
    assert!(store.join("derived/sha256").join(hex).is_file());
    // Save, and load it into another daemon.
    let tar = d.dir.path().join("derived.tar");
    let o = d.docker(&["save", "-o", tar.to_str().unwrap(), "derived:1"]);
    assert!(o.status.success(), "{}", text(&o));
    // The save made the layer a stored blob; the record gave way.
    assert!(store.join("blobs/sha256").join(hex).is_file());
    assert!(!store.join("derived/sha256").join(hex).exists());
    let d2 = Daemon::start();
    let o = d2.docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    check(&d2, "derived:1");
    // Pull it back there, and into the builder after removing it.
    let o = d2.docker(&["pull", remote.as_str()]);
    assert!(o.status.success(), "{}", text(&o));
    check(&d2, &remote);
    for args in [
        vec!["rmi", "derived:1"],
        vec!["rmi", remote.as_str()],
        vec!["pull", remote.as_str()],
    ] {
        let o = d.docker(&args);
        assert!(o.status.success(), "docker {args:?}: {}", text(&o));
    }
    check(&d, &remote);
    let o = d.docker(&["rmi", remote.as_str()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!store.join("blobs/sha256").join(hex).exists());
    assert!(!store.join("derived/sha256").join(hex).exists());
}

/// A step whose files a tar cannot give back as they are (a name starting with `.wh.`,
/// which unpacking turns into a whiteout) is not kept as its directory: its tar is
/// stored as a blob and unpacked into the snapshot, as before.
#[test]
fn a_step_a_tar_cannot_round_trip_stores_its_layer_blob() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let ctx = d.dir.path().join("wh-ctx");
    write(&ctx, "Dockerfile", "FROM busybox\nCOPY odd/ /odd/\n");
    write(&ctx, "odd/keep", "kept\n");
    write(&ctx, "odd/.wh.gone", "a file named like a whiteout\n");
    let out = berth_build(&d, &["-t", "odd:1", ctx.to_str().unwrap()], None);
    assert!(out.status.success(), "{}\n{}", text(&out), d.log());
    let o = d.docker(&["inspect", "-f", "{{json .RootFS.Layers}}", "odd:1"]);
    let layers: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
    let hex = layers[1].strip_prefix("sha256:").unwrap();
    let store = d.root.join("image");
    assert!(store.join("blobs/sha256").join(hex).is_file());
    assert!(!store.join("derived/sha256").join(hex).exists());
    let run = d.docker(&["run", "--rm", "odd:1", "ls", "-A", "/odd"]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "keep\n",
        "{}",
        text(&run)
    );
}

/// `RUN --network=...` is part of the step's cache key (BuildKit keys on the step's
/// network mode), so the same command with another flag runs again; the build's own
/// `--network` is not (Docker's classic builder keys on the container config only), so a
/// rebuild with `--network none` reuses the default build's steps.
#[test]
fn run_network_flag_is_part_of_the_cache_key_the_builds_is_not() {
    if !host_ok() || !docker_available() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let ctx = d.dir.path().join("netkeyctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN cat /proc/net/dev > /dev-seen\n",
    );
    let out = docker_build(&d, &["-t", "netkey:default", ctx.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", text(&out), d.log());
    let cat = |img: &str| {
        let o = d.docker(&["run", "--rm", "--network", "none", img, "cat", "/dev-seen"]);
        assert!(o.status.success(), "{}", text(&o));
        interfaces(&String::from_utf8_lossy(&o.stdout))
    };
    assert_eq!(cat("netkey:default"), ["eth0", "lo"]);

    // The build's --network: the classic builder reuses the cached step.
    let out = docker_build(
        &d,
        &[
            "-t",
            "netkey:global-none",
            "--network",
            "none",
            ctx.to_str().unwrap(),
        ],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Using cache"), "{log}");
    assert_eq!(cat("netkey:global-none"), ["eth0", "lo"]);

    // The step's own --network=none: a different step, run again without a network.
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN --network=none cat /proc/net/dev > /dev-seen\n",
    );
    let out = docker_build(&d, &["-t", "netkey:none", ctx.to_str().unwrap()]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("Using cache"), "{log}");
    assert_eq!(cat("netkey:none"), ["lo"]);
    // ... which is cached in its turn, and `--network=default` is the unflagged step.
    let out = docker_build(&d, &["-t", "netkey:none2", ctx.to_str().unwrap()]);
    assert!(text(&out).contains("Using cache"), "{}", text(&out));
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN --network=default cat /proc/net/dev > /dev-seen\n",
    );
    let out = docker_build(&d, &["-t", "netkey:flag-default", ctx.to_str().unwrap()]);
    assert!(text(&out).contains("Using cache"), "{}", text(&out));
    assert_eq!(cat("netkey:flag-default"), ["eth0", "lo"]);
}

/// A build on `--network container:<name>` gives its steps that container's
/// `/etc/resolv.conf` and `/etc/hosts` (on a user-defined network: the embedded DNS), as
/// Docker does for a container joining another's network, not the host's resolver.
#[test]
fn build_on_a_containers_network_uses_its_resolv_conf_and_hosts() {
    if !host_ok() || !docker_available() {
        return;
    }
    let mut d = Daemon::start();
    d.import_busybox("busybox:latest");
    let subnet = testutil::free_subnet();
    let o = d.docker(&["network", "create", "--subnet", &subnet, "dnsjoinnet"]);
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    d.net
        .extra_bridges
        .push(format!("br-{}", &id[..12.min(id.len())]));
    let o = d.docker(&[
        "run",
        "-d",
        "--name",
        "dnsholder",
        "--network",
        "dnsjoinnet",
        "busybox",
        "sleep",
        "300",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let in_holder = |f: &str| {
        let o = d.docker(&["exec", "dnsholder", "cat", f]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let (resolv, hosts) = (in_holder("/etc/resolv.conf"), in_holder("/etc/hosts"));
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_ne!(
        resolv, host_resolv,
        "the test needs a container resolver of its own"
    );

    let ctx = d.dir.path().join("dnsjoinctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN cat /etc/resolv.conf > /resolv && cat /etc/hosts > /hosts\n",
    );
    let out = docker_build(
        &d,
        &[
            "-t",
            "dnsjoined",
            "--network",
            "container:dnsholder",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}\n{}", text(&out), d.log());
    let cat = |f: &str| {
        let o = d.docker(&["run", "--rm", "--network", "none", "dnsjoined", "cat", f]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(cat("/resolv"), resolv);
    assert_eq!(cat("/hosts"), hosts);
    // The container's files are untouched by the step.
    assert_eq!(in_holder("/etc/resolv.conf"), resolv);

    let o = d.docker(&["rm", "-f", "dnsholder"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d.docker(&["network", "rm", "dnsjoinnet"]);
    assert!(o.status.success(), "{}", text(&o));
}
