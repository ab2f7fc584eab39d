//! End-to-end tests of the `berth` CLI against a real `berth daemon`.
//!
//! Each test starts its own daemon on a temporary root, run-root and socket, imports a
//! busybox image (`berth import` of a tar of `testutil::busybox_rootfs`), and drives the
//! CLI as a user would, checking stdout, stderr and exit codes. The daemon guard removes
//! every container (`rm -f`) and stops the daemon even when a test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn berth() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// A daemon under test.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    host: String,
    /// Own bridge, subnet and chains; dropped (cleaned) after the daemon stops.
    _net: testutil::DaemonNet,
}

impl Daemon {
    /// Starts a daemon and imports the busybox image as `busybox:latest`; None (test
    /// skipped) when not root.
    fn start() -> Option<Daemon> {
        if !testutil::is_root() {
            eprintln!("skipped: the daemon needs root");
            return None;
        }
        let bin_dir = Path::new(berth())
            .parent()
            .expect("binary dir")
            .to_path_buf();
        let monitor = bin_dir.join("berth-monitor");
        assert!(
            monitor.is_file(),
            "{} is missing: build it with `cargo build -p engine --bin berth-monitor` \
             (cargo test --workspace builds it)",
            monitor.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-cli-")
            .tempdir()
            .expect("tempdir");
        let sock = dir.path().join("berth.sock");
        let host = format!("unix://{}", sock.display());
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("daemon log");
        let net = testutil::DaemonNet::new("bc");
        let child = Command::new(berth())
            .arg("daemon")
            .args(net.args())
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--run-root")
            .arg(dir.path().join("run"))
            .arg("-H")
            .arg(&host)
            .env("BERTH_MONITOR", &monitor)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth daemon");
        let d = Daemon {
            dir,
            child,
            host,
            _net: net,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if sock.exists() && d.berth(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d.import_busybox();
        Some(d)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn import_busybox(&self) {
        let rootfs = self.dir.path().join("rootfs");
        testutil::busybox_rootfs(&rootfs).expect("busybox rootfs");
        let tar = self.dir.path().join("busybox.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(st.success(), "tar failed");
        let out = self.berth(&["import", tar.to_str().expect("utf-8 path"), "busybox"]);
        assert_ok(&out, "import");
        assert!(
            stdout(&out).trim().starts_with("sha256:"),
            "{}",
            stdout(&out)
        );
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth());
        c.arg("-H").arg(&self.host).args(args);
        c.env("DOCKER_CONFIG", self.dir.path().join("config"));
        c
    }

    /// Runs `berth -H <sock> args...` with stdin closed.
    fn berth(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn berth")
    }

    /// Runs berth with `input` on stdin.
    fn berth_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("wait berth")
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let ids = self.berth(&["ps", "-aq", "--no-trunc"]);
        for id in stdout(&ids).lines().filter(|l| !l.is_empty()) {
            let _ = self.berth(&["rm", "-f", id]);
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}): stdout={:?} stderr={:?}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

#[test]
fn run_rm_echo_prints_and_cleans_up() {
    let Some(d) = Daemon::start() else { return };
    let out = d.berth(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_ok(&out, "run");
    assert_eq!(stdout(&out), "hi\n");
    let ps = d.berth(&["ps", "-aq"]);
    assert_ok(&ps, "ps");
    assert_eq!(stdout(&ps), "", "--rm left a container behind");
}

#[test]
fn run_exit_codes_and_streams() {
    let Some(d) = Daemon::start() else { return };
    let out = d.berth(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    let out = d.berth(&["run", "--rm", "busybox", "no-such-binary"]);
    assert_eq!(out.status.code(), Some(127), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("Error response from daemon: "),
        "{}",
        stderr(&out)
    );
    let out = d.berth(&["run", "--rm", "no-such-image-here"]);
    assert_eq!(out.status.code(), Some(125), "stderr: {}", stderr(&out));
}

#[test]
fn run_interactive_forwards_stdin() {
    let Some(d) = Daemon::start() else { return };
    let out = d.berth_input(&["run", "-i", "--rm", "busybox", "cat"], b"piped line\n");
    assert_ok(&out, "run -i");
    assert_eq!(stdout(&out), "piped line\n");
}

#[test]
fn detached_container_lifecycle() {
    let Some(d) = Daemon::start() else { return };
    let name = testutil::unique_name("cli");
    let out = d.berth(&[
        "run",
        "-d",
        "--name",
        &name,
        "-e",
        "GREETING=hello",
        "busybox",
        "sh",
        "-c",
        "echo started; exec sleep 60",
    ]);
    assert_ok(&out, "run -d");
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");

    let ps = d.berth(&["ps"]);
    assert_ok(&ps, "ps");
    let text = stdout(&ps);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    assert!(
        header.starts_with("CONTAINER ID   IMAGE     COMMAND "),
        "{text}"
    );
    let row = lines
        .find(|l| l.starts_with(&id[..12]))
        .expect("container row");
    assert!(
        row.contains("busybox") && row.contains(&name) && row.contains("Up "),
        "{row}"
    );

    let out = d.berth(&["ps", "--format", "{{.Names}}|{{.State}}"]);
    assert_eq!(stdout(&out).trim(), format!("{name}|running"));

    let out = d.berth(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{index .Config.Env 0}}",
        &name,
    ]);
    assert_ok(&out, "inspect");
    assert!(stdout(&out).starts_with("true "), "{}", stdout(&out));
    assert!(stdout(&out).contains("GREETING=hello") || stdout(&out).contains("PATH="));

    let out = d.berth(&["exec", &name, "sh", "-c", "echo $GREETING from exec"]);
    assert_ok(&out, "exec");
    assert_eq!(stdout(&out), "hello from exec\n");
    let out = d.berth(&["exec", &name, "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "stderr: {}", stderr(&out));
    let out = d.berth_input(&["exec", "-i", &name, "cat"], b"via exec\n");
    assert_eq!(stdout(&out), "via exec\n", "stderr: {}", stderr(&out));

    // Logs of a running container.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = d.berth(&["logs", &name]);
        assert_ok(&out, "logs");
        if stdout(&out) == "started\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {:?}", stdout(&out));
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = d.berth(&["stop", "-t", "1", &name]);
    assert_ok(&out, "stop");
    assert_eq!(stdout(&out).trim(), name);
    let out = d.berth(&["inspect", "-f", "{{.State.Running}}", &name]);
    assert_eq!(stdout(&out).trim(), "false");
    let out = d.berth(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(stdout(&out).trim(), name);

    let out = d.berth(&["rm", &name]);
    assert_ok(&out, "rm");
    let out = d.berth(&["rm", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("Error response from daemon: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn images_and_image_inspect() {
    let Some(d) = Daemon::start() else { return };
    let out = d.berth(&["images"]);
    assert_ok(&out, "images");
    let text = stdout(&out);
    assert!(
        text.starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("busybox      latest    ")),
        "{text}"
    );
    let out = d.berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(stdout(&out).trim(), "busybox:latest");
    let out = d.berth(&["inspect", "--type", "image", "-f", "{{.Id}}", "busybox"]);
    assert_ok(&out, "inspect image");
    assert!(
        stdout(&out).trim().starts_with("sha256:"),
        "{}",
        stdout(&out)
    );
    let q = d.berth(&["images", "-q"]);
    assert_eq!(stdout(&q).trim().len(), 12, "{}", stdout(&q));
    let out = d.berth(&["inspect", "nothing-by-this-name"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "[]\n");
    assert_eq!(
        stderr(&out),
        "Error: No such object: nothing-by-this-name\n"
    );
    let _ = d.path();
}

#[test]
fn cp_both_directions_top_and_logs_follow() {
    let Some(d) = Daemon::start() else { return };
    let name = testutil::unique_name("top");
    let out = d.berth(&[
        "run",
        "-d",
        "--name",
        &name,
        "busybox",
        "sh",
        "-c",
        "echo line1; exec sleep 60",
    ]);
    assert_ok(&out, "run -d");

    // Host → container, into a new name.
    let src = d.path().join("payload.txt");
    std::fs::write(&src, b"payload\n").expect("write payload");
    let dst = format!("{name}:/tmp/copied.txt");
    let out = d.berth(&["cp", src.to_str().expect("utf-8"), &dst]);
    assert_ok(&out, "cp in");
    let out = d.berth(&["exec", &name, "cat", "/tmp/copied.txt"]);
    assert_eq!(stdout(&out), "payload\n", "stderr: {}", stderr(&out));

    // Container → host: a file to a new path, a directory into an existing one.
    let back = d.path().join("back.txt");
    let out = d.berth(&["cp", &dst, back.to_str().expect("utf-8")]);
    assert_ok(&out, "cp out");
    assert_eq!(std::fs::read(&back).expect("copied file"), b"payload\n");
    let into = d.path().join("into");
    std::fs::create_dir(&into).expect("mkdir");
    let out = d.berth(&["cp", &format!("{name}:/etc"), into.to_str().expect("utf-8")]);
    assert_ok(&out, "cp dir out");
    assert!(std::fs::read_to_string(into.join("etc/passwd"))
        .expect("etc/passwd copied")
        .starts_with("root:"));

    let out = d.berth(&["top", &name]);
    assert_ok(&out, "top");
    let text = stdout(&out);
    assert!(text.lines().next().unwrap_or("").contains("PID"), "{text}");
    assert!(text.contains("sleep 60"), "{text}");

    // logs -f keeps streaming until the container stops.
    let mut follow = d
        .cmd(&["logs", "-f", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        follow.try_wait().expect("poll logs -f").is_none(),
        "logs -f exited while the container runs"
    );
    assert_ok(&d.berth(&["kill", &name]), "kill");
    let out = follow.wait_with_output().expect("logs -f output");
    assert_ok(&out, "logs -f");
    assert_eq!(stdout(&out), "line1\n");
}

#[test]
fn run_with_a_tty() {
    let Some(d) = Daemon::start() else { return };
    // `script` gives the CLI a pseudo-terminal, as a user's shell would.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let cmd = format!(
        "{} -H {} run -it --rm busybox sh -c 'tty; exit 6'",
        berth(),
        d.host
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(6), "{text} {}", stderr(&out));
    assert!(text.contains("/dev/pts/"), "{text:?}");
}

#[test]
fn build_honours_dockerignore_and_runs() {
    let Some(d) = Daemon::start() else { return };
    let ctx = d.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY . /ctx/\nRUN ls -a /ctx > /list\nCMD [\"cat\", \"/list\"]\n",
    )
    .expect("Dockerfile");
    std::fs::write(ctx.join(".dockerignore"), "secret.txt\n*.log\n").expect(".dockerignore");
    std::fs::write(ctx.join("secret.txt"), "s").expect("secret");
    std::fs::write(ctx.join("debug.log"), "l").expect("log");
    std::fs::write(ctx.join("keep.txt"), "k").expect("keep");
    let tag = testutil::unique_name("app");
    let out = d.berth(&["build", "-q", "-t", &tag, ctx.to_str().expect("utf-8")]);
    assert_ok(&out, "build");
    assert!(
        stdout(&out).trim().starts_with("sha256:"),
        "{}",
        stdout(&out)
    );
    let out = d.berth(&["run", "--rm", &tag]);
    assert_ok(&out, "run built image");
    let files: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert!(files.contains(&"keep.txt".to_string()), "{files:?}");
    assert!(files.contains(&"Dockerfile".to_string()), "{files:?}");
    assert!(!files.contains(&"secret.txt".to_string()), "{files:?}");
    assert!(!files.contains(&"debug.log".to_string()), "{files:?}");
}
