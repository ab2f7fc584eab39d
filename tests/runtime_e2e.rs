//! End-to-end tests of `berth-runtime`: real containers from a busybox bundle, each with
//! its own id, state root and cgroup, cleaned up (delete --force) even when a test fails.

use serde_json::{json, Value};
use std::ffi::OsStr;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use testutil::Bundle;

/// A change to a config (for table-driven tests).
type ConfigEdit = Box<dyn Fn(&mut Value)>;
/// A change to a bundle's files (for table-driven tests).
type BundleEdit = Box<dyn Fn(&Bundle)>;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth-runtime")
}

/// Whether the host mounts only cgroup2 (then /sys/fs/cgroup is the unified root, and a
/// container's /proc/self/cgroup has just the `0::` line).
fn cgroup_v2_only() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The directory that holds the `pids` controller's files: `/sys/fs/cgroup/pids` on v1
/// and hybrid hosts, `/sys/fs/cgroup` on a v2-only host.
fn pids_hierarchy() -> PathBuf {
    if cgroup_v2_only() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/pids")
    }
}

/// One container under test: its state root, bundle and id.
struct Ctr {
    root: tempfile::TempDir,
    b: Bundle,
    id: String,
}

impl Ctr {
    /// A container running `args`, or None (test skipped) when not root.
    fn new(args: &[&str]) -> Option<Ctr> {
        if !testutil::is_root() {
            eprintln!("skipped: berth-runtime tests need root");
            return None;
        }
        let id = testutil::unique_name("rt");
        let mut b = Bundle::new(args).expect("bundle");
        b.config["linux"]["cgroupsPath"] = json!(format!("/berth-rt-test/{id}"));
        Some(Ctr {
            root: tempfile::tempdir().expect("tempdir"),
            b,
            id,
        })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--root").arg(self.root.path());
        c
    }

    /// Starts a runtime command with its stdio on /dev/null, without waiting for it.
    fn spawn_silent(&self, args: &[&OsStr]) -> std::process::Child {
        self.cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn berth-runtime")
    }

    /// Runs a runtime command to completion.
    fn rt(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn berth-runtime")
    }

    /// `create`, with the container's stdio going to files (the init inherits them, so
    /// pipes would keep `output()` waiting). Returns success and the stderr text.
    fn create(&self) -> (bool, String) {
        self.b.write_config().expect("write config");
        let err_path = self.b.path().join("create.err");
        let out = fs::File::create(self.b.path().join("ctr.out")).unwrap();
        let err = fs::File::create(&err_path).unwrap();
        let st = self
            .cmd()
            .args(["create", "--bundle"])
            .arg(self.b.path())
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .expect("spawn create");
        (
            st.success(),
            fs::read_to_string(&err_path).unwrap_or_default(),
        )
    }

    /// `create`, then `start`; panics (with create's stderr) if either fails.
    fn create_and_start(&self) {
        let (ok, err) = self.create();
        assert!(ok, "{err}");
        assert!(self.rt(&["start", &self.id]).status.success());
    }

    /// The container's stdout so far (after `create`).
    fn ctr_out(&self) -> String {
        fs::read_to_string(self.b.path().join("ctr.out")).unwrap_or_default()
    }

    /// `run` in the foreground; returns (exit code, stdout, stderr).
    fn run(&self) -> (i32, String, String) {
        self.b.write_config().expect("write config");
        let o = self
            .cmd()
            .args(["run", "--bundle"])
            .arg(self.b.path())
            .arg(&self.id)
            .stdin(Stdio::null())
            .output()
            .expect("spawn run");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn state(&self) -> Option<Value> {
        let o = self.rt(&["state", &self.id]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).expect("state json"))
    }

    fn status(&self) -> String {
        self.state()
            .map(|s| s["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| "gone".into())
    }

    fn wait_status(&self, want: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        while self.status() != want {
            assert!(Instant::now() < until, "status never became {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cgroup_dir(&self) -> PathBuf {
        pids_hierarchy().join("berth-rt-test").join(&self.id)
    }

    /// Nothing of the container is left: no process, no state dir, no cgroup, no mount.
    fn assert_clean(&self) {
        // Every process the runtime forks (stage 1, the init before exec) carries the
        // runtime's command line, which names our unique root.
        let root = self.root.path().to_string_lossy().into_owned();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                assert!(!cmd.contains(&root), "process left behind: {cmd}");
            }
        }
        assert!(
            !self.root.path().join(&self.id).exists(),
            "state dir left behind"
        );
        assert!(!self.cgroup_dir().exists(), "cgroup left behind");
        let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let rootfs = self.b.rootfs();
        assert!(
            !mi.contains(rootfs.to_str().unwrap()),
            "mount left behind under {}",
            rootfs.display()
        );
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        // The shared parent cgroup goes once the last test is done with it: in each v1
        // hierarchy, or at the top on a v2-only host.
        let top = PathBuf::from("/sys/fs/cgroup");
        let hierarchies = fs::read_dir(&top)
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path());
        for h in std::iter::once(top).chain(hierarchies) {
            let _ = fs::remove_dir(h.join("berth-rt-test").join(&self.id));
            let _ = fs::remove_dir(h.join("berth-rt-test"));
        }
    }
}

fn wait_file(p: &Path) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while !p.exists() {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn lifecycle_create_start_stop_delete() {
    let Some(c) = Ctr::new(&[
        "sh",
        "-c",
        "echo ran > /started; while [ ! -e /go ]; do sleep 0.02; done; exit 0",
    ]) else {
        return;
    };
    let (ok, err) = c.create();
    assert!(ok, "create failed: {err}");
    let st = c.state().expect("state after create");
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], c.id.as_str());
    assert!(st["pid"].as_i64().unwrap() > 0);
    assert_eq!(st["ociVersion"].as_str().unwrap().chars().next(), Some('1'));
    assert_eq!(
        Path::new(st["bundle"].as_str().unwrap()),
        fs::canonicalize(c.b.path()).unwrap()
    );
    // The program must not have run before start.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!c.b.rootfs().join("started").exists(), "ran before start");
    // Creating the same id again fails.
    let (dup, err) = c.create();
    assert!(!dup && err.contains("already exists"), "{err}");

    let o = c.rt(&["start", &c.id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(wait_file(&c.b.rootfs().join("started")));
    assert_eq!(c.status(), "running");
    // Misuse: start twice, delete while running.
    let o = c.rt(&["start", &c.id]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("running"));
    let o = c.rt(&["delete", &c.id]);
    assert!(!o.status.success(), "deleted a running container");
    assert_eq!(c.status(), "running");
    // ps lists the init.
    let o = c.rt(&["ps", "--format", "json", &c.id]);
    let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(pids.contains(&(c.state().unwrap()["pid"].as_i64().unwrap() as i32)));
    // list shows it.
    let o = c.rt(&["list", "-q"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&c.id));

    fs::write(c.b.rootfs().join("go"), "").unwrap();
    c.wait_status("stopped");
    let o = c.rt(&["delete", &c.id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(c.state().is_none());
    c.assert_clean();

    // Unknown ids.
    for args in [
        vec!["state", "nope-unknown"],
        vec!["start", "nope-unknown"],
        vec!["kill", "nope-unknown"],
        vec!["delete", "nope-unknown"],
    ] {
        let o = c.rt(&args);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("does not exist"),
            "{args:?}"
        );
    }
}

#[test]
fn kill_and_force_delete() {
    let Some(c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    c.create_and_start();
    assert_eq!(c.status(), "running");
    let o = c.rt(&["kill", &c.id, "KILL"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.wait_status("stopped");
    assert!(c.rt(&["delete", &c.id]).status.success());
    c.assert_clean();

    // delete --force of a running container kills it.
    let Some(c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    assert!(c.create().0);
    assert!(c.rt(&["start", &c.id]).status.success());
    let pid = c.state().unwrap()["pid"].as_i64().unwrap();
    let o = c.rt(&["delete", "--force", &c.id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "still alive: {stat}"
    );
    c.assert_clean();
}

#[test]
fn run_exit_code_propagates() {
    let Some(c) = Ctr::new(&["sh", "-c", "echo out; echo err >&2; exit 3"]) else {
        return;
    };
    let (code, out, err) = c.run();
    assert_eq!(code, 3, "stderr: {err}");
    assert_eq!(out, "out\n");
    assert!(err.contains("err"));
    c.assert_clean();
}

#[test]
fn run_reports_signal_as_128_plus() {
    let Some(c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    c.b.write_config().unwrap();
    let mut child = c
        .cmd()
        .args(["run", "--bundle"])
        .arg(c.b.path())
        .arg(&c.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.wait_status("running");
    assert!(c.rt(&["kill", &c.id, "9"]).status.success());
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(137));
    c.assert_clean();
}

#[test]
fn namespaces_are_isolated() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "echo pid=$$; echo host=$(hostname); echo net=$(ls /sys/class/net); \
         echo ipc=$(readlink /proc/self/ns/ipc); echo mnt=$(readlink /proc/self/ns/mnt); \
         echo uts=$(readlink /proc/self/ns/uts); grep -E 'pids|^0::' /proc/self/cgroup; \
         ps | wc -l",
    ]) else {
        return;
    };
    c.b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "cgroup"}));
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("host=berth\n"), "{out}");
    assert!(out.contains("net=lo\n"), "{out}");
    // The cgroup namespace is rooted at the container's own cgroup.
    let own = if cgroup_v2_only() {
        "0::/\n"
    } else {
        ":pids:/\n"
    };
    assert!(out.contains(own), "{out}");
    for ns in ["ipc", "mnt", "uts"] {
        let host = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert!(
            !out.contains(&format!("{ns}={}", host.display())),
            "{ns} shared with the host: {out}"
        );
    }
    // Only sh, ps and wc (plus the header line) are visible.
    let lines: usize = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(lines <= 5, "{out}");
}

#[test]
fn joins_namespace_by_path() {
    let Some(a) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    let (ok, err) = a.create();
    assert!(ok, "{err}");
    let pid = a.state().unwrap()["pid"].as_i64().unwrap();
    let Some(mut b) = Ctr::new(&[
        "sh",
        "-c",
        "echo net=$(readlink /proc/self/ns/net); echo host=$(hostname)",
    ]) else {
        return;
    };
    let ns = json!([
        {"type": "pid"}, {"type": "ipc"}, {"type": "mount"},
        {"type": "network", "path": format!("/proc/{pid}/ns/net")},
        {"type": "uts", "path": format!("/proc/{pid}/ns/uts")}
    ]);
    b.b.config["linux"]["namespaces"] = ns;
    b.b.config["hostname"] = json!(null);
    let want = fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("net={}", want.display())),
        "{out} vs {}",
        want.display()
    );
    assert!(out.contains("host=berth"), "{out}");
}

#[test]
fn user_namespace_maps_ids() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map; cat /proc/self/gid_map; echo uid=$(id -u); touch /tmp/x && stat -c %u /tmp/x",
    ]) else {
        return;
    };
    let ns = c.b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.push(json!({"type": "user"}));
    c.b.config["linux"]["uidMappings"] =
        json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    c.b.config["linux"]["gidMappings"] =
        json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    c.b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    let first: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first, ["0", "200000", "65536"], "{out}");
    assert!(out.contains("uid=0\n"), "{out}");
    assert!(out.trim_end().ends_with('0'), "{out}");
    c.assert_clean();
}

#[test]
fn mounts_bind_tmpfs_masked_readonly() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "cat /data/hello; touch /data/new 2>/dev/null && echo data-writable; \
         grep ' /scratch ' /proc/mounts; stat -c %a /scratch; \
         echo secret=$(cat /secret); echo dir=$(ls /secretdir | wc -l); \
         touch /rodir/x 2>/dev/null && echo rodir-writable; \
         touch /rootfile 2>/dev/null && echo root-writable; \
         touch /scratch/ok && echo scratch-ok",
    ]) else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("hello"), "hi from host\n").unwrap();
    let rootfs = c.b.rootfs();
    fs::write(rootfs.join("secret"), "topsecret").unwrap();
    fs::create_dir(rootfs.join("secretdir")).unwrap();
    fs::write(rootfs.join("secretdir/a"), "x").unwrap();
    fs::create_dir(rootfs.join("rodir")).unwrap();
    let mounts = c.b.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/data", "type": "bind",
        "source": host.path(), "options": ["rbind", "ro", "nosuid", "rprivate"]}));
    mounts.push(
        json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=1m", "mode=1777"]}),
    );
    c.b.config["linux"]["maskedPaths"] = json!(["/secret", "/secretdir", "/not-there"]);
    c.b.config["linux"]["readonlyPaths"] = json!(["/rodir"]);
    c.b.config["root"]["readonly"] = json!(true);
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hi from host"), "{out}");
    assert!(!out.contains("data-writable"), "{out}");
    assert!(!host.path().join("new").exists());
    assert!(
        out.contains("tmpfs /scratch tmpfs rw,nosuid,nodev"),
        "{out}"
    );
    assert!(out.contains("size=1024k"), "{out}");
    assert!(out.contains("1777\n"), "{out}");
    assert!(out.contains("secret=\n"), "{out}");
    assert!(out.contains("dir=0\n"), "{out}");
    assert!(!out.contains("rodir-writable"), "{out}");
    assert!(!out.contains("root-writable"), "{out}");
    assert!(out.contains("scratch-ok"), "{out}");
    c.assert_clean();
}

#[test]
fn symlinked_mount_destination_stays_in_rootfs() {
    let Some(mut c) = Ctr::new(&["sh", "-c", "grep -c ' /escape-target/sub ' /proc/mounts"]) else {
        return;
    };
    // A host directory the symlink tries to reach.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        format!("/../../../../..{}", outside.path().display()),
        c.b.rootfs().join("escape"),
    )
    .unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    let mounts = c.b.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs"}));
    c.b.config["process"]["args"] =
        json!(["sh", "-c", format!("grep -c ' {target}/sub ' /proc/mounts")]);
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1", "{out}");
    // The mount point was created inside the rootfs, not on the host.
    assert!(!outside.path().join("sub").exists());
    assert!(c
        .b
        .rootfs()
        .join(target.trim_start_matches('/'))
        .join("sub")
        .is_dir());
    c.assert_clean();
}

#[test]
fn devices_default_and_configured() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "ls -l /dev/mynull; echo x > /dev/mynull && echo wrote; head -c 5 /dev/zero | wc -c; \
         readlink /dev/ptmx; readlink /dev/fd; test -c /dev/urandom && echo urandom",
    ]) else {
        return;
    };
    c.b.config["linux"]["devices"] = json!([
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0}
    ]);
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("crw-rw-rw-"), "{out}");
    assert!(out.contains("1,   3") || out.contains("1, 3"), "{out}");
    assert!(out.contains("wrote"), "{out}");
    assert!(out.contains("\n5\n"), "{out}");
    assert!(out.contains("pts/ptmx"), "{out}");
    assert!(out.contains("/proc/self/fd"), "{out}");
    assert!(out.contains("urandom"), "{out}");
}

#[test]
fn process_env_cwd_user_umask() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "echo foo=$FOO; echo home=$HOME; pwd; echo uid=$(id -u) gid=$(id -g) groups=$(id -G); \
         umask; touch /tmp/f && stat -c %a /tmp/f",
    ]) else {
        return;
    };
    let p = &mut c.b.config["process"];
    p["env"] = json!(["PATH=/bin", "FOO=bar"]);
    p["cwd"] = json!("/work/dir");
    p["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [100], "umask": 63});
    c.b.config["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}),
    );
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("foo=bar\n"), "{out}");
    assert!(out.contains("home=/home\n"), "{out}");
    assert!(out.contains("/work/dir\n"), "{out}");
    assert!(out.contains("uid=1000 gid=1000"), "{out}");
    assert!(
        out.contains("groups=1000 100") || out.contains("groups=100 1000"),
        "{out}"
    );
    assert!(out.contains("0077\n"), "{out}");
    assert!(out.trim_end().ends_with("600"), "{out}");
}

#[test]
fn capabilities_are_exact() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "grep -E '^Cap(Eff|Prm|Bnd|Amb|Inh)' /proc/self/status",
    ]) else {
        return;
    };
    let caps = json!(["CAP_KILL", "CAP_NET_ADMIN"]);
    c.b.config["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps
    });
    c.b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    // CAP_KILL = 5, CAP_NET_ADMIN = 12.
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000001020")),
            "{set}: {out}"
        );
    }
}

#[test]
fn rlimits_are_set_and_clamped() {
    let Some(mut c) = Ctr::new(&["sh", "-c", "echo nofile=$(ulimit -n) core=$(ulimit -c)"]) else {
        return;
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid local.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let hard = lim.rlim_max;
    c.b.config["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": hard + 1000, "hard": hard + 1000},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
    ]);
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    // Raising above the hard limit needs CAP_SYS_RESOURCE: without it, clamped + warning.
    let raised = out.contains(&format!("nofile={}", hard + 1000));
    let clamped = out.contains(&format!("nofile={hard}")) && err.contains("clamped");
    assert!(raised || clamped, "{out} {err}");
    assert!(out.contains("core=0"), "{out}");
}

#[test]
fn init_errors_are_reported_and_nothing_leaks() {
    let cases: Vec<(&str, ConfigEdit, &str)> = vec![
        (
            "bad cwd",
            Box::new(|c| c["process"]["cwd"] = json!("/bin/busybox")),
            "cwd",
        ),
        (
            "missing binary",
            Box::new(|c| c["process"]["args"] = json!(["no-such-program"])),
            "executable file not found",
        ),
        (
            "missing absolute binary",
            Box::new(|c| c["process"]["args"] = json!(["/no/such/program"])),
            "/no/such/program",
        ),
        (
            "failed mount",
            Box::new(|c| {
                c["mounts"].as_array_mut().unwrap().push(
                    json!({"destination": "/x", "type": "bind", "source": "/does/not/exist", "options": ["bind"]}),
                )
            }),
            "/does/not/exist",
        ),
        (
            "bad user",
            Box::new(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "user"}));
                c["linux"]["uidMappings"] =
                    json!([{"containerID": 0, "hostID": 300000, "size": 10}]);
                c["linux"]["gidMappings"] =
                    json!([{"containerID": 0, "hostID": 300000, "size": 10}]);
                c["process"]["user"] = json!({"uid": 5000, "gid": 0});
            }),
            "setuid 5000",
        ),
        (
            "failing createRuntime hook",
            Box::new(
                |c| c["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hookfail >&2; exit 7"]}]}),
            ),
            "hookfail",
        ),
    ];
    create_fails_with_nothing_left(cases);
}

/// For each case: `create` of a container with the config changed fails with a message
/// holding the text given, its program never ran, and nothing of it is left.
fn create_fails_with_nothing_left(cases: Vec<(&str, ConfigEdit, &str)>) {
    for (name, edit, want) in cases {
        let Some(mut c) = Ctr::new(&["sh", "-c", "echo ran > /ran"]) else {
            return;
        };
        edit(&mut c.b.config);
        let (ok, err) = c.create();
        assert!(!ok, "{name}: create succeeded");
        assert!(err.contains(want), "{name}: {err}");
        assert!(!c.b.rootfs().join("ran").exists(), "{name}: program ran");
        c.assert_clean();
        assert!(c.state().is_none());
    }
}

#[test]
fn bad_input_is_rejected_with_nothing_left() {
    let cases: Vec<(&str, BundleEdit, &str)> = vec![
        (
            "malformed json",
            Box::new(|b| fs::write(b.path().join("config.json"), "{\"ociVersion\": ").unwrap()),
            "invalid config",
        ),
        (
            "schema violation",
            Box::new(|b| {
                let mut c = b.config.clone();
                c["process"]["args"] = json!("sh -c true");
                fs::write(b.path().join("config.json"), c.to_string()).unwrap()
            }),
            "invalid type",
        ),
        (
            "missing rootfs",
            Box::new(|b| {
                let mut c = b.config.clone();
                c["root"]["path"] = json!("no-such-rootfs");
                fs::write(b.path().join("config.json"), c.to_string()).unwrap()
            }),
            "no-such-rootfs",
        ),
        (
            "unknown namespace type",
            Box::new(|b| {
                let mut c = b.config.clone();
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "bogus"}));
                fs::write(b.path().join("config.json"), c.to_string()).unwrap()
            }),
            "bogus",
        ),
        (
            "relative cwd",
            Box::new(|b| {
                let mut c = b.config.clone();
                c["process"]["cwd"] = json!("relative");
                fs::write(b.path().join("config.json"), c.to_string()).unwrap()
            }),
            "not absolute",
        ),
        (
            "missing config",
            Box::new(|b| fs::remove_file(b.path().join("config.json")).unwrap()),
            "config.json",
        ),
    ];
    for (name, edit, want) in cases {
        let Some(c) = Ctr::new(&["true"]) else {
            return;
        };
        c.b.write_config().unwrap();
        edit(&c.b);
        let o = c
            .cmd()
            .args(["create", "--bundle"])
            .arg(c.b.path())
            .arg(&c.id)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: accepted");
        assert!(err.contains(want), "{name}: {err}");
        c.assert_clean();
    }
}

#[test]
fn errors_go_to_json_log() {
    let Some(c) = Ctr::new(&["true"]) else {
        return;
    };
    let log = c.b.path().join("log.json");
    let o = c
        .cmd()
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "start", "nope-missing"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let line = fs::read_to_string(&log).unwrap();
    let v: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("nope-missing"));
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn hooks_run_in_order_with_state() {
    let Some(mut c) = Ctr::new(&["true"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let host_hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} >> {}", log.display())]});
    c.b.config["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/hooks", "type": "bind", "source": dir.path(), "options": ["bind"]}),
    );
    c.b.config["hooks"] = json!({
        "prestart": [host_hook("prestart")],
        "createRuntime": [host_hook("createRuntime"),
            {"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/state.json", dir.path().display())]}],
        "createContainer": [host_hook("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer >> /hooks/log"]}],
        "poststart": [host_hook("poststart")],
        "poststop": [host_hook("poststop")],
    });
    let (ok, err) = c.create();
    assert!(ok, "{err}");
    let after_create = fs::read_to_string(&log).unwrap();
    assert_eq!(after_create, "prestart\ncreateRuntime\ncreateContainer\n");
    let st: Value =
        serde_json::from_slice(&fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(st["id"], c.id.as_str());
    assert_eq!(st["pid"], c.state().unwrap()["pid"]);
    assert!(c.rt(&["start", &c.id]).status.success());
    c.wait_status("stopped");
    assert!(c.rt(&["delete", &c.id]).status.success());
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "prestart\ncreateRuntime\ncreateContainer\nstartContainer\npoststart\npoststop\n"
    );
}

/// Receives one fd over a unix socket (SCM_RIGHTS).
fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut buf = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = [0u8; 64];
    // SAFETY: msghdr is plain data; all pointers point at live locals of the right size.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = cmsg.len();
        if libc::recvmsg(sock, &mut msg, 0) < 0 {
            return None;
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
        Some(OwnedFd::from_raw_fd(fd))
    }
}

#[test]
fn console_socket_receives_pty() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "tty; echo hello-tty; test -t 0 && echo stdin-is-tty",
    ]) else {
        return;
    };
    c.b.config["process"]["terminal"] = json!(true);
    let sock_path = c.b.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    c.b.write_config().unwrap();
    let out = c
        .cmd()
        .args(["create", "--bundle"])
        .arg(c.b.path())
        .arg("--console-socket")
        .arg(&sock_path)
        .arg(&c.id)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (conn, _) = listener.accept().unwrap();
    let master = recv_fd(std::os::fd::AsRawFd::as_raw_fd(&conn)).expect("pty fd");
    assert!(c.rt(&["start", &c.id]).status.success());
    let mut f = fs::File::from(master);
    let mut text = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&text).contains("stdin-is-tty") && Instant::now() < until {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("hello-tty"), "{text}");
    assert!(text.contains("stdin-is-tty"), "{text}");
}

/// The children of `pid`: (pid, comm, state letter; `Z` for a zombie).
fn children_of(pid: u32) -> Vec<(i64, String, char)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if f.get(1).and_then(|pp| pp.parse::<u32>().ok()) == Some(pid) {
            out.push((p, comm, f[0].chars().next().unwrap_or('?')));
        }
    }
    out
}

/// The children of `pid` once one of them runs `comm` and 200 ms have passed (panics
/// after 10 s).
fn children_once_running(pid: u32, comm: &str) -> Vec<(i64, String, char)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !children_of(pid).iter().any(|(_, c, _)| c == comm) {
        assert!(
            Instant::now() < deadline,
            "children of {pid}: {:?}",
            children_of(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    children_of(pid)
}

#[test]
fn a_foreground_run_or_exec_has_only_the_containers_process_as_child() {
    // berth-runtime forks a helper that starts the kernel's cgroup-attach grace period
    // (cgroups::warm_in_child); it must be reaped once the join is done, not stay a
    // zombie child while the container's process runs.
    let Some(c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    c.create_and_start();
    let mut exec = c.spawn_silent(&[
        "exec".as_ref(),
        c.id.as_ref(),
        "sleep".as_ref(),
        "30".as_ref(),
    ]);
    // The exec'd process is the runtime's child (it is its subreaper meanwhile).
    let kids = children_once_running(exec.id(), "sleep");
    let _ = exec.kill();
    let _ = exec.wait();
    assert_eq!(kids.len(), 1, "exec's children: {kids:?}");

    let r = Ctr::new(&["sleep", "30"]).expect("root");
    r.b.write_config().expect("write config");
    let mut run = r.spawn_silent(&[
        "run".as_ref(),
        "--bundle".as_ref(),
        r.b.path().as_os_str(),
        r.id.as_ref(),
    ]);
    let kids = children_once_running(run.id(), "sleep");
    assert!(r.rt(&["kill", &r.id, "KILL"]).status.success());
    let _ = run.wait();
    assert_eq!(kids.len(), 1, "run's children: {kids:?}");
}

#[test]
fn exec_joins_the_container() {
    let Some(c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    c.create_and_start();
    let o = c.rt(&[
        "exec",
        "--env",
        "X=1",
        "--cwd",
        "/tmp",
        &c.id,
        "sh",
        "-c",
        "echo host=$(hostname) x=$X cwd=$(pwd) init=$(cat /proc/1/comm); exit 4",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("host=berth x=1 cwd=/tmp init=sleep"), "{out}");
    // A missing program is an error from exec itself.
    let o = c.rt(&["exec", &c.id, "no-such-thing"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("executable file not found"));
    // With --process and --user.
    let p = json!({"args": ["id", "-u"], "cwd": "/", "user": {"uid": 1234, "gid": 0}, "env": ["PATH=/bin"]});
    let pf = c.b.path().join("process.json");
    fs::write(&pf, p.to_string()).unwrap();
    let o = c.rt(&["exec", "--process", pf.to_str().unwrap(), &c.id]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1234\n");
    assert!(c.ctr_out().is_empty());
    // A tty without console socket is proxied to exec's own stdio.
    let o = c.rt(&["exec", "--tty", &c.id, "sh", "-c", "tty; exit 3"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("/dev/pts/"));
}

#[test]
fn memory_limit_oom_kills() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo rc=$?",
    ]) else {
        return;
    };
    c.b.config["linux"]["resources"]["memory"] = json!({"limit": 16 * 1024 * 1024});
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rc=137"), "{out}");
    c.assert_clean();
}

#[test]
fn pids_limit_stops_fork_bomb() {
    // Only builtins after the bomb: no fork is needed to report.
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "p=/sys/fs/cgroup/pids; [ -d $p ] || p=/sys/fs/cgroup; cat $p/pids.max; \
         (i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done) 2>/dev/null; \
         read n < $p/pids.current; echo current=$n; \
         read e < $p/pids.events; echo events=$e",
    ]) else {
        return;
    };
    c.b.config["linux"]["resources"]["pids"] = json!({"limit": 10});
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("10\n"), "{out}");
    let current: usize = out
        .split("current=")
        .nth(1)
        .and_then(|s| s.lines().next()?.trim().parse().ok())
        .unwrap_or(999);
    assert!((5..=10).contains(&current), "{out}");
    let refused: usize = out
        .split("events=max ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "no fork was refused: {out}");
    c.assert_clean();
}

#[test]
fn seccomp_blocks_syscall() {
    // With no_new_privs, and without it (then the filter must be loaded while the init
    // still has CAP_SYS_ADMIN, before the capabilities are dropped).
    for nnp in [true, false] {
        let Some(mut c) = Ctr::new(&[
            "sh",
            "-c",
            "mkdir /tmp/blocked; echo rc=$?; touch /tmp/file && echo touched",
        ]) else {
            return;
        };
        c.b.config["process"]["noNewPrivileges"] = json!(nnp);
        c.b.config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        let (code, out, err) = c.run();
        assert_eq!(code, 0, "nnp={nnp}: {err}");
        assert!(out.contains("rc=1"), "nnp={nnp}: {out}");
        assert!(err.contains("Operation not permitted"), "{err}");
        assert!(out.contains("touched"), "{out}");
        assert!(!c.b.rootfs().join("tmp/blocked").exists());
    }
}

#[test]
fn pause_and_resume() {
    let Some(c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    assert!(c.create().0);
    assert!(c.rt(&["start", &c.id]).status.success());
    let o = c.rt(&["pause", &c.id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(c.status(), "paused");
    let pid = c.state().unwrap()["pid"].as_i64().unwrap();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.contains(") D") || stat.contains(") S"), "{stat}");
    assert!(c.rt(&["resume", &c.id]).status.success());
    assert_eq!(c.status(), "running");
    assert!(c.rt(&["delete", "--force", &c.id]).status.success());
    c.assert_clean();
}

#[test]
fn features_spec_and_version() {
    let Some(c) = Ctr::new(&["true"]) else {
        return;
    };
    let o = c.rt(&["features"]);
    let f: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("user")));
    assert_eq!(f["ociVersionMin"], "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let o = c.rt(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert!(o.status.success());
    let s: Value =
        serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(s["process"]["args"], json!(["sh"]));
    let o = c.rt(&["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("berth-runtime version"));
}

#[test]
fn pid_file_preserve_fds_and_no_pivot() {
    use std::os::unix::process::CommandExt;
    let Some(c) = Ctr::new(&["sh", "-c", "cat <&3; cat /proc/1/comm; true"]) else {
        return;
    };
    c.b.write_config().unwrap();
    let data = c.b.path().join("fd3.txt");
    fs::write(&data, "through fd 3\n").unwrap();
    let f = fs::File::open(&data).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
    let pid_file = c.b.path().join("pid");
    let mut cmd = c.cmd();
    cmd.args(["run", "--preserve-fds", "1", "--no-pivot", "--pid-file"])
        .arg(&pid_file)
        .arg("--bundle")
        .arg(c.b.path())
        .arg(&c.id)
        .stdin(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; it runs in the forked child before exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it explicitly then.
            let r = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(out, "through fd 3\nsh\n");
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 1);
    c.assert_clean();
}

/// The pid of a detached exec is reported however its messages interleave with the
/// exec'd process's own: stage 1's pid report used to be lost when the exec'd process said
/// "ready" first ("no pid from the exec'd process"). Many quick execs make that order likely.
#[test]
fn detached_execs_always_report_their_pid() {
    // Long enough for 60 execs on a slow (emulated) machine too; delete --force ends it.
    let Some(c) = Ctr::new(&["sleep", "3600"]) else {
        return;
    };
    c.create_and_start();
    let pid_file = c.b.path().join("exec.pid");
    // Keep every core busy so that the scheduler interleaves the runtime's processes.
    let _load = testutil::CpuLoad::start(4);
    for i in 0..60 {
        let _ = fs::remove_file(&pid_file);
        let o = c
            .cmd()
            .args(["exec", "--detach", "--pid-file"])
            .arg(&pid_file)
            .args([&c.id, "true"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "exec {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let pid: i32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(pid > 0, "exec {i}: pid {pid}");
    }
}

#[test]
fn exec_with_tty_sends_pty_to_console_socket() {
    let Some(c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    c.create_and_start();
    let sock_path = c.b.path().join("exec-console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let pid_file = c.b.path().join("exec.pid");
    let o = c
        .cmd()
        .args(["exec", "--tty", "--detach", "--console-socket"])
        .arg(&sock_path)
        .arg("--pid-file")
        .arg(&pid_file)
        .args([&c.id, "sh", "-c", "tty; echo exec-tty-ok"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (conn, _) = listener.accept().unwrap();
    let master = recv_fd(std::os::fd::AsRawFd::as_raw_fd(&conn)).expect("pty fd");
    let mut f = fs::File::from(master);
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&text).contains("exec-tty-ok") {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("exec-tty-ok"), "{text}");
    assert!(
        fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap()
            > 1
    );
}

#[test]
fn run_with_terminal_proxies_the_pty() {
    let Some(mut c) = Ctr::new(&["sh", "-c", "tty; test -t 1 && echo out-is-tty; exit 2"]) else {
        return;
    };
    c.b.config["process"]["terminal"] = json!(true);
    let (code, out, err) = c.run();
    assert_eq!(code, 2, "{err}");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("out-is-tty"), "{out}");
    c.assert_clean();
}

#[test]
fn time_namespace_offsets() {
    let Some(mut c) = Ctr::new(&["cat", "/proc/uptime"]) else {
        return;
    };
    if !Path::new("/proc/self/ns/time").exists() {
        eprintln!("skipped: no time namespaces on this kernel");
        return;
    }
    c.b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    c.b.config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 10_000_000, "nanosecs": 0}});
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    let up: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(up > 10_000_000.0, "{out}");
}

#[test]
fn update_events_and_list() {
    let Some(c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    assert!(c.create().0);
    assert!(c.rt(&["start", &c.id]).status.success());
    let res = c.b.path().join("res.json");
    fs::write(&res, r#"{"pids": {"limit": 42}}"#).unwrap();
    let o = c.rt(&["update", "--resources", res.to_str().unwrap(), &c.id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        fs::read_to_string(c.cgroup_dir().join("pids.max"))
            .unwrap()
            .trim(),
        "42"
    );
    let o = c.rt(&["events", "--stats", &c.id]);
    let ev: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["data"]["pids"]["current"], 1);
    let o = c.rt(&["list", "--format", "json"]);
    let all: Value = serde_json::from_slice(&o.stdout).unwrap();
    let me = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == c.id.as_str())
        .unwrap();
    assert_eq!(me["status"], "running");
    assert!(c.rt(&["delete", "--force", &c.id]).status.success());
    c.assert_clean();
}

/// The fields of /proc/<pid>/stat after the command name, so `stat_field(.., n)` is
/// field n (1-based) as proc(5) numbers them.
fn stat_field(pid: i64, n: usize) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let rest = &stat[stat.rfind(')').expect("stat has a comm") + 1..];
    rest.split_whitespace()
        .nth(n - 3)
        .expect("stat field")
        .to_string()
}

#[test]
fn io_priority_is_set_before_start() {
    let Some(mut c) = Ctr::new(&["true"]) else {
        return;
    };
    c.b.config["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 4});
    let (ok, err) = c.create();
    assert!(ok, "{err}");
    let pid = c.state().expect("state")["pid"].as_i64().expect("pid");
    // SAFETY: ioprio_get takes integers only.
    let got = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, pid as libc::c_int) };
    assert_eq!(got, (3 << 13) | 4, "ioprio of the created init");
    // The same value from a best-effort class.
    let Some(mut c) = Ctr::new(&["true"]) else {
        return;
    };
    c.b.config["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    let (ok, err) = c.create();
    assert!(ok, "{err}");
    let pid = c.state().expect("state")["pid"].as_i64().expect("pid");
    // SAFETY: as above.
    let got = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, pid as libc::c_int) };
    assert_eq!(got, (2 << 13) | 6);
}

#[test]
fn scheduler_policy_and_nice_are_set_before_start() {
    // SCHED_IDLE has no nice of its own: the process keeps the one it inherited, that of
    // this test (0 unless the tests run under `nice`).
    // SAFETY: getpriority has no memory effects.
    let own_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }.to_string();
    let cases = [
        (
            json!({"policy": "SCHED_BATCH", "nice": 5}),
            "3",
            "5".to_string(),
        ),
        (json!({"policy": "SCHED_IDLE"}), "5", own_nice),
    ];
    for (sched, policy, nice) in cases {
        let Some(mut c) = Ctr::new(&["true"]) else {
            return;
        };
        c.b.config["process"]["scheduler"] = sched.clone();
        let (ok, err) = c.create();
        assert!(ok, "{sched}: {err}");
        let pid = c.state().expect("state")["pid"].as_i64().expect("pid");
        assert_eq!(stat_field(pid, 41), policy, "{sched}: policy");
        assert_eq!(stat_field(pid, 19), nice, "{sched}: nice");
    }
}

#[test]
fn personality_linux32_shows_i686() {
    let Some(mut c) = Ctr::new(&["uname", "-m"]) else {
        return;
    };
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: LINUX32 test expects an x86_64 host");
        return;
    }
    c.b.config["linux"]["personality"] = json!({"domain": "LINUX32"});
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "i686");
}

#[test]
fn bad_process_attributes_are_rejected_with_nothing_left() {
    let cases: Vec<(ConfigEdit, &str)> = vec![
        (
            Box::new(|v| {
                v["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 9})
            }),
            "ioPriority",
        ),
        (
            Box::new(|v| v["process"]["scheduler"] = json!({"policy": "SCHED_RR", "priority": 0})),
            "1-99",
        ),
        (
            Box::new(|v| v["process"]["scheduler"] = json!({"policy": "SCHED_OTHER", "nice": 40})),
            "nice",
        ),
        (
            Box::new(|v| {
                v["linux"]["personality"] = json!({"domain": "LINUX", "flags": ["BOGUS"]})
            }),
            "personality",
        ),
    ];
    for (edit, want) in cases {
        let Some(mut c) = Ctr::new(&["true"]) else {
            return;
        };
        edit(&mut c.b.config);
        let (ok, err) = c.create();
        assert!(!ok, "{want}: accepted");
        assert!(err.contains(want), "{want}: {err}");
        c.assert_clean();
    }
}

#[test]
fn exec_cpu_affinity_final_is_applied() {
    let Some(c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim()
        .to_string();
    if allowed == "0" {
        eprintln!("skipped: this process may run on CPU 0 only, nothing to narrow");
        return;
    }
    c.create_and_start();
    let p = json!({
        "args": ["grep", "Cpus_allowed_list", "/proc/self/status"],
        "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"],
        "execCPUAffinity": {"final": "0"}
    });
    let pf = c.b.path().join("process.json");
    fs::write(&pf, p.to_string()).unwrap();
    let o = c.rt(&["exec", "--process", pf.to_str().unwrap(), &c.id]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["Cpus_allowed_list:", "0"]
    );
    // Without it, exec keeps the affinity the init has (wider than CPU 0 here).
    let pid = c.state().expect("state")["pid"].as_i64().expect("pid");
    let init_status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let init_line = init_status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .unwrap()
        .to_string();
    let o = c.rt(&[
        "exec",
        &c.id,
        "grep",
        "Cpus_allowed_list",
        "/proc/self/status",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.trim(), init_line.trim());
    // A CPU beyond the set size is rejected before anything runs.
    let p = json!({
        "args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
        "execCPUAffinity": {"final": "0-99999"}
    });
    fs::write(&pf, p.to_string()).unwrap();
    let o = c.rt(&["exec", "--process", pf.to_str().unwrap(), &c.id]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("execCPUAffinity"));
}

/// A veth pair on the host (this host has no dummy driver), deleted on drop if still
/// there; `.0` is the end the test moves, `.1` its peer that stays on the host.
struct VethPair(String, String);

impl VethPair {
    fn new() -> Option<VethPair> {
        let name = format!("bdt{}", std::process::id());
        let peer = format!("bdp{}", std::process::id());
        let ok = Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(VethPair(name, peer))
    }

    fn on_host(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["link", "show", "dev", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for n in [&self.0, &self.1] {
            let _ = Command::new("ip")
                .args(["link", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
fn net_devices_move_into_the_container() {
    let Some(mut c) = Ctr::new(&["sh", "-c", "grep -c ' ctr0:' /proc/net/dev"]) else {
        return;
    };
    let Some(dev) = VethPair::new() else {
        eprintln!("skipped: cannot create a veth pair");
        return;
    };
    c.b.config["linux"]["netDevices"] = json!({ dev.0.clone(): {"name": "ctr0"} });
    let (ok, err) = c.create();
    assert!(ok, "{err}");
    assert!(
        !dev.on_host(&dev.0),
        "{} still on the host after create",
        dev.0
    );
    assert!(dev.on_host(&dev.1), "the peer {} left the host", dev.1);
    assert!(c.rt(&["start", &c.id]).status.success());
    c.wait_status("stopped");
    assert_eq!(c.ctr_out().trim(), "1", "ctr0 not in the container");
    assert!(c.rt(&["delete", &c.id]).status.success());
    // The container's namespace is gone, and the veth pair with it.
    let until = Instant::now() + Duration::from_secs(10);
    while dev.on_host(&dev.1) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !dev.on_host(&dev.0) && !dev.on_host(&dev.1),
        "veth pair left behind"
    );
    // A missing device fails create and leaves nothing behind.
    let Some(mut c) = Ctr::new(&["true"]) else {
        return;
    };
    c.b.config["linux"]["netDevices"] = json!({"bdt-missing0": {}});
    let (ok, err) = c.create();
    assert!(!ok);
    assert!(err.contains("bdt-missing0"), "{err}");
    c.assert_clean();
    // A bad name is rejected at validation.
    let Some(mut c) = Ctr::new(&["true"]) else {
        return;
    };
    c.b.config["linux"]["netDevices"] = json!({"a/b": {}});
    let (ok, err) = c.create();
    assert!(!ok);
    assert!(err.contains("bad interface name"), "{err}");
    c.assert_clean();
}

/// The memory policy that `/proc/self/numa_maps` of the container's program shows for its
/// first mapping (e.g. `bind:0`, `weighted interleave:0`, `default`).
fn numa_policy(numa_maps_line: &str) -> String {
    // "<address> <policy> file=... N0=..": the policy may hold a space.
    let rest = numa_maps_line.split_once(' ').map_or("", |r| r.1);
    rest.split(" file=")
        .next()
        .unwrap_or("")
        .split(" anon=")
        .next()
        .unwrap_or("")
        .split(" N0=")
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn memory_policy_is_set_for_the_program_and_execs() {
    // (policy, what numa_maps shows); this host has NUMA node 0 at least.
    let cases = [
        (json!({"mode": "MPOL_BIND", "nodes": "0"}), "bind:0"),
        (
            json!({"mode": "MPOL_INTERLEAVE", "nodes": "0"}),
            "interleave:0",
        ),
        (
            json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}),
            "bind=static:0",
        ),
        (json!({"mode": "MPOL_PREFERRED", "nodes": "0"}), "prefer:0"),
        (
            json!({"mode": "MPOL_PREFERRED_MANY", "nodes": "0"}),
            "prefer (many):0",
        ),
        (
            json!({"mode": "MPOL_WEIGHTED_INTERLEAVE", "nodes": "0"}),
            "weighted interleave:0",
        ),
        (json!({"mode": "MPOL_LOCAL"}), "local"),
        (json!({"mode": "MPOL_DEFAULT"}), "default"),
    ];
    for (policy, want) in cases {
        let Some(mut c) = Ctr::new(&["head", "-n1", "/proc/self/numa_maps"]) else {
            return;
        };
        c.b.config["linux"]["memoryPolicy"] = policy.clone();
        let (code, out, err) = c.run();
        assert_eq!(code, 0, "{policy}: {err}");
        assert_eq!(numa_policy(&out), want, "{policy}: {out}");
        c.assert_clean();
    }
    // Without a policy the program has the default one; an exec'd process gets the
    // container's policy too.
    let Some(c) = Ctr::new(&["head", "-n1", "/proc/self/numa_maps"]) else {
        return;
    };
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(numa_policy(&out), "default", "{out}");
    let Some(mut c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    c.b.config["linux"]["memoryPolicy"] = json!({"mode": "MPOL_INTERLEAVE", "nodes": "0"});
    c.create_and_start();
    let o = c.rt(&["exec", &c.id, "head", "-n1", "/proc/self/numa_maps"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(numa_policy(&out), "interleave:0", "{out}");
}

#[test]
fn bad_memory_policies_are_rejected_with_nothing_left() {
    let cases = [
        (
            json!({"mode": "MPOL_BIND", "nodes": "0-"}),
            "bad node number",
        ),
        (json!({"mode": "MPOL_BIND", "nodes": "2-1"}), "goes down"),
        (
            json!({"mode": "MPOL_BIND"}),
            "MPOL_BIND needs at least one node",
        ),
        (
            json!({"mode": "MPOL_LOCAL", "nodes": "0"}),
            "MPOL_LOCAL takes no nodes",
        ),
        (
            json!({"mode": "MPOL_DEFAULT", "nodes": "0"}),
            "MPOL_DEFAULT takes no nodes",
        ),
        (
            json!({"mode": "MPOL_BIND", "nodes": "0,4000"}),
            "node 4000 is not a NUMA node this host can have",
        ),
        (
            json!({"mode": "MPOL_BIND", "nodes": "0",
                "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
            "exclude each other",
        ),
        (json!({"mode": "MPOL_FOO", "nodes": "0"}), "MPOL_FOO"),
        (
            json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_BOGUS"]}),
            "MPOL_F_BOGUS",
        ),
    ];
    for (policy, want) in cases {
        let Some(mut c) = Ctr::new(&["true"]) else {
            return;
        };
        c.b.config["linux"]["memoryPolicy"] = policy.clone();
        let (ok, err) = c.create();
        assert!(!ok, "{policy}: accepted");
        assert!(err.contains(want), "{policy}: {err}");
        c.assert_clean();
    }
}

/// A host directory (mode 0755) with files `a`, `b`, `c` owned by uid and gid 1000, 0
/// and 5 on disk.
fn owned_files_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let host = tempfile::tempdir().unwrap();
    fs::set_permissions(host.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for (name, id) in [("a", 1000), ("b", 0), ("c", 5)] {
        let p = host.path().join(name);
        fs::write(&p, name).unwrap();
        std::os::unix::fs::chown(&p, Some(id), Some(id)).unwrap();
    }
    host
}

/// The owner (uid, gid) of a host file.
fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn idmapped_bind_mount_translates_owners() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "stat -c '%n %u:%g' /data/a /data/b /data/c; touch /data/new && echo created; \
         grep -c ' /data .*idmapped' /proc/self/mountinfo",
    ]) else {
        return;
    };
    let host = owned_files_dir();
    // The directory is the container root's through the mount (it has no
    // CAP_DAC_OVERRIDE).
    std::os::unix::fs::chown(host.path(), Some(1000), Some(1000)).unwrap();
    // On-disk 1000 shows as 0 and 0 as 1000 (containerID is the id on disk, hostID the
    // id seen through the mount, as in a user namespace's uid_map).
    let map = json!([{"containerID": 1000, "hostID": 0, "size": 1},
        {"containerID": 0, "hostID": 1000, "size": 1}]);
    c.b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/data", "type": "bind", "source": host.path(),
        "options": ["bind", "idmap"], "uidMappings": map, "gidMappings": map}));
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/data/a 0:0\n"), "{out}");
    assert!(out.contains("/data/b 1000:1000\n"), "{out}");
    // Ids without a mapping show as the overflow id.
    assert!(out.contains("/data/c 65534:65534\n"), "{out}");
    assert!(out.contains("created\n1\n"), "{out}");
    // What the container's root created is stored as owned by 1000; nothing else changed.
    assert_eq!(owner(&host.path().join("new")), (1000, 1000));
    assert_eq!(owner(&host.path().join("a")), (1000, 1000));
    assert_eq!(owner(&host.path().join("b")), (0, 0));
    c.assert_clean();
}

#[test]
fn idmap_option_uses_the_container_user_namespace() {
    let Some(mut c) = Ctr::new(&[
        "sh",
        "-c",
        "stat -c '%n %u' /data/b /plain/b; touch /data/new && echo created",
    ]) else {
        return;
    };
    let host = owned_files_dir();
    // The container's root may not create mount points in the host-owned rootfs.
    for d in ["data", "plain"] {
        fs::create_dir(c.b.rootfs().join(d)).unwrap();
    }
    c.b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    let map = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    c.b.config["linux"]["uidMappings"] = map.clone();
    c.b.config["linux"]["gidMappings"] = map;
    let mounts = c.b.config["mounts"].as_array_mut().unwrap();
    mounts.push(
        json!({"destination": "/data", "type": "bind", "source": host.path(),
        "options": ["rbind", "idmap"]}),
    );
    mounts.push(
        json!({"destination": "/plain", "type": "bind", "source": host.path(),
        "options": ["rbind", "ro"]}),
    );
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    // Host root's file is the container root's through the idmapped mount, nobody's
    // through the plain one.
    assert!(out.contains("/data/b 0\n"), "{out}");
    assert!(out.contains("/plain/b 65534\n"), "{out}");
    assert!(out.contains("created"), "{out}");
    assert_eq!(owner(&host.path().join("new")), (0, 0));
    c.assert_clean();
}

#[test]
fn bad_idmapped_mounts_are_rejected_with_nothing_left() {
    let one = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "empty range",
            json!({"destination": "/data", "type": "bind", "source": "/tmp",
                "options": ["idmap"], "gidMappings": one,
                "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 0}]}),
            "uidMappings: range {containerID 0, hostID 1000, size 0} is empty",
        ),
        (
            "overlapping ranges",
            json!({"destination": "/data", "type": "bind", "source": "/tmp",
                "options": ["idmap"], "uidMappings": one,
                "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 10},
                    {"containerID": 20, "hostID": 1005, "size": 1}]}),
            "gidMappings: ranges",
        ),
        (
            "uid mappings alone",
            json!({"destination": "/data", "type": "bind", "source": "/tmp",
                "options": ["idmap"], "uidMappings": one}),
            "must be given together",
        ),
        (
            "not a bind mount",
            json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                "options": ["idmap"], "uidMappings": one, "gidMappings": one}),
            "bind mounts only",
        ),
        (
            "no mappings and no user namespace",
            json!({"destination": "/data", "type": "bind", "source": "/tmp",
                "options": ["ridmap"]}),
            "needs uidMappings and gidMappings on the mount",
        ),
        (
            "a filesystem without idmap support",
            json!({"destination": "/data", "type": "bind", "source": "/proc",
                "options": ["idmap"], "uidMappings": one, "gidMappings": one}),
            "does not support idmapped mounts",
        ),
        (
            "a missing source",
            json!({"destination": "/data", "type": "bind", "source": "/no/such/dir",
                "options": ["idmap"], "uidMappings": one, "gidMappings": one}),
            "copy /no/such/dir for the idmapped mount /data",
        ),
    ];
    for (name, mount, want) in cases {
        let Some(mut c) = Ctr::new(&["true"]) else {
            return;
        };
        c.b.config["mounts"].as_array_mut().unwrap().push(mount);
        let (ok, err) = c.create();
        assert!(!ok, "{name}: accepted");
        assert!(err.contains(want), "{name}: {err}");
        c.assert_clean();
    }
}

/// A tmpfs mounted on the host for a test, detached when dropped.
struct HostTmpfs(PathBuf);

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn ridmap_idmaps_submounts_and_idmap_only_the_top() {
    let Some(mut c) = Ctr::new(&["sh", "-c", "stat -c '%n %u' /r/a /r/sub/f /n/a /n/sub/f"]) else {
        return;
    };
    let host = owned_files_dir();
    let sub = host.path().join("sub");
    fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=755"),
    )
    .expect("mount a tmpfs");
    let _tmpfs = HostTmpfs(sub.clone());
    fs::write(sub.join("f"), "f").unwrap();
    std::os::unix::fs::chown(sub.join("f"), Some(1000), Some(1000)).unwrap();
    let map = json!([{"containerID": 1000, "hostID": 0, "size": 1}]);
    let mounts = c.b.config["mounts"].as_array_mut().unwrap();
    mounts.push(
        json!({"destination": "/r", "type": "bind", "source": host.path(),
        "options": ["rbind", "ridmap"], "uidMappings": map, "gidMappings": map}),
    );
    mounts.push(
        json!({"destination": "/n", "type": "bind", "source": host.path(),
        "options": ["rbind", "idmap"], "uidMappings": map, "gidMappings": map}),
    );
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    // ridmap: the submount (a tmpfs) is idmapped too; idmap: only the top mount.
    assert!(out.contains("/r/a 0\n"), "{out}");
    assert!(out.contains("/r/sub/f 0\n"), "{out}");
    assert!(out.contains("/n/a 0\n"), "{out}");
    assert!(out.contains("/n/sub/f 1000\n"), "{out}");
    c.assert_clean();
}

#[test]
fn idmap_option_uses_a_joined_user_namespace() {
    let Some(mut a) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    a.b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    let map = json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    a.b.config["linux"]["uidMappings"] = map.clone();
    a.b.config["linux"]["gidMappings"] = map;
    let (ok, err) = a.create();
    assert!(ok, "{err}");
    let pid = a.state().unwrap()["pid"].as_i64().unwrap();
    let Some(mut b) = Ctr::new(&["sh", "-c", "stat -c '%n %u' /data/b /plain/b"]) else {
        return;
    };
    let host = owned_files_dir();
    for d in ["data", "plain"] {
        fs::create_dir(b.b.rootfs().join(d)).unwrap();
    }
    b.b.config["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "ipc"}, {"type": "mount"}, {"type": "network"},
        {"type": "user", "path": format!("/proc/{pid}/ns/user")}
    ]);
    b.b.config["hostname"] = json!(null);
    let mounts = b.b.config["mounts"].as_array_mut().unwrap();
    mounts.push(
        json!({"destination": "/data", "type": "bind", "source": host.path(),
        "options": ["bind", "idmap"]}),
    );
    mounts.push(
        json!({"destination": "/plain", "type": "bind", "source": host.path(),
        "options": ["bind"]}),
    );
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/data/b 0\n"), "{out}");
    assert!(out.contains("/plain/b 65534\n"), "{out}");
    b.assert_clean();
}

#[test]
fn features_list_idmap_and_memory_policy() {
    let Some(c) = Ctr::new(&["true"]) else {
        return;
    };
    let o = c.rt(&["features"]);
    assert!(o.status.success());
    let f: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
    let opts = f["mountOptions"].as_array().unwrap();
    assert!(opts.contains(&json!("idmap")) && opts.contains(&json!("ridmap")));
    let modes = f["linux"]["memoryPolicy"]["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 7, "{modes:?}");
    assert!(modes.contains(&json!("MPOL_WEIGHTED_INTERLEAVE")));
    let flags = f["linux"]["memoryPolicy"]["flags"].as_array().unwrap();
    assert!(flags.contains(&json!("MPOL_F_NUMA_BALANCING")));
}

/// A seccomp agent (the other end of `linux.seccomp.listenerPath`): for each connection it
/// keeps the container process state it receives and answers the notified calls of that
/// listener: `getppid` returns 4242, `mkdir`/`mkdirat` fail with `EXDEV`, anything else
/// goes on as if not notified.
struct Agent {
    path: PathBuf,
    states: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Agent {
    fn start(path: PathBuf) -> Agent {
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = states.clone();
        std::thread::spawn(move || {
            while let Ok((conn, _)) = listener.accept() {
                let (state, fd) = recv_state(&conn);
                kept.lock().unwrap().push(state);
                std::thread::spawn(move || answer_notifications(fd));
            }
        });
        Agent { path, states }
    }

    /// The states received so far, after waiting until there are `n`.
    fn states(&self, n: usize) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.states.lock().unwrap().clone();
            if s.len() >= n || Instant::now() > until {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads one container process state: JSON with the listener fd (SCM_RIGHTS), then the
/// rest of the JSON until the runtime closes the connection.
fn recv_state(conn: &std::os::unix::net::UnixStream) -> (Value, OwnedFd) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 65536];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = [0u64; 8];
    // SAFETY: msghdr is plain data; all pointers point at live locals of the right size;
    // the fd in an SCM_RIGHTS message is new and ours.
    let (n, fd) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg);
        let n = libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(!c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS, "no fd");
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
        (n as usize, OwnedFd::from_raw_fd(fd))
    };
    buf.truncate(n);
    let mut c = conn;
    c.read_to_end(&mut buf).unwrap();
    (serde_json::from_slice(&buf).unwrap(), fd)
}

/// The agent's loop over one listener (until the kernel has no more notifications).
fn answer_notifications(fd: OwnedFd) {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: the kernel wants a zeroed seccomp_notif, which is plain data.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: `req` is a seccomp_notif the kernel fills in.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                // Interrupted, or the caller died before we got it.
                Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                _ => return,
            }
        }
        let nr = i64::from(req.data.nr);
        let (val, error, flags) = if nr == libc::SYS_getppid {
            (4242, 0, 0)
        } else if nr == libc::SYS_mkdir || nr == libc::SYS_mkdirat {
            (0, -libc::EXDEV, 0)
        } else {
            (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
        };
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val,
            error,
            flags,
        };
        // SAFETY: `resp` is a valid seccomp_notif_resp; an error (the caller died) is
        // harmless.
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    }
}

/// A profile whose `getppid` and `mkdir` go to the agent at `path`, and also the calls
/// the init itself makes after loading the filter (closing its copy of the listener,
/// waiting for the runtime, dropping privileges, opening the exec fifo, execve): the
/// agent lets those go on, which it can only do if it got the listener first.
fn notify_profile(path: &Path) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": path,
        "listenerMetadata": "berth-test-metadata",
        "syscalls": [
            {"names": ["getppid", "mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["close", "recvmsg", "write", "openat", "execve", "capset", "setresuid",
                       "chdir", "prctl"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["reboot"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]
    })
}

#[test]
fn seccomp_notify_calls_are_answered_by_the_agent() {
    // With no_new_privs (the filter is then loaded at the end of the setup), and without
    // (loaded before the capabilities are dropped): either way during create. And in a
    // user namespace of its own.
    for (nnp, userns) in [(true, false), (false, false), (true, true)] {
        let Some(mut c) = Ctr::new(&[
            "sh",
            "-c",
            "echo ppid=$PPID; mkdir /tmp/notified 2>&1; echo rc=$?; \
             for f in /proc/1/fd/*; do echo fd=$(readlink $f); done; echo done; exec sleep 100",
        ]) else {
            return;
        };
        let agent = Agent::start(c.b.path().join("agent.sock"));
        c.b.config["process"]["noNewPrivileges"] = json!(nnp);
        c.b.config["annotations"] = json!({"org.example": "yes"});
        c.b.config["linux"]["seccomp"] = notify_profile(&agent.path);
        if userns {
            let ns = c.b.config["linux"]["namespaces"].as_array_mut().unwrap();
            ns.push(json!({"type": "user"}));
            let map = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
            c.b.config["linux"]["uidMappings"] = map.clone();
            c.b.config["linux"]["gidMappings"] = map;
        }
        let (ok, err) = c.create();
        assert!(ok, "nnp={nnp} userns={userns}: {err}");
        // The agent has the listener once create returns, before the program runs.
        let pid = c.state().unwrap()["pid"].as_i64().unwrap();
        let states = agent.states(1);
        assert_eq!(states.len(), 1, "nnp={nnp}");
        let s = &states[0];
        assert_eq!(s["fds"], json!(["seccompFd"]), "{s}");
        assert_eq!(s["pid"], pid, "{s}");
        assert_eq!(s["metadata"], "berth-test-metadata", "{s}");
        assert_eq!(s["state"]["status"], "creating", "{s}");
        assert_eq!(s["state"]["id"], c.id.as_str(), "{s}");
        assert_eq!(s["state"]["pid"], pid, "{s}");
        assert_eq!(s["state"]["annotations"]["org.example"], "yes", "{s}");
        assert!(c.ctr_out().is_empty(), "ran before start");
        assert!(c.rt(&["start", &c.id]).status.success());
        let until = Instant::now() + Duration::from_secs(10);
        while !c.ctr_out().contains("done") && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = c.ctr_out();
        assert!(
            out.contains("ppid=4242\n"),
            "nnp={nnp} userns={userns}: {out}"
        );
        assert!(out.contains("Invalid cross-device link"), "{out}");
        assert!(out.contains("rc=1"), "{out}");
        assert!(!c.b.rootfs().join("tmp/notified").exists());
        // The container holds no listener of its own (it could answer its own calls).
        assert!(out.contains("fd="), "{out}");
        assert!(!out.contains("seccomp"), "listener leaked: {out}");
        if nnp && !userns {
            // An exec'd process gets the container's filter, and its own listener.
            let o = c.rt(&["exec", &c.id, "sh", "-c", "echo exec-ppid=$PPID"]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert_eq!(String::from_utf8_lossy(&o.stdout), "exec-ppid=4242\n");
            let states = agent.states(2);
            assert_eq!(states.len(), 2);
            let s = &states[1];
            assert_eq!(s["state"]["status"], "running", "{s}");
            assert_eq!(s["state"]["pid"], pid, "{s}");
            let exec_pid = s["pid"].as_i64().unwrap();
            assert!(exec_pid > 0 && exec_pid != pid, "{s}");
            assert_eq!(s["metadata"], "berth-test-metadata", "{s}");
        }
        assert!(c.rt(&["delete", "--force", &c.id]).status.success());
        c.assert_clean();
    }
}

#[test]
fn seccomp_notify_without_an_agent_fails_with_nothing_left() {
    // The listener is handed over right after loading: early without no_new_privs, at
    // the end of the setup with it.
    let nobody = |nnp: bool| -> ConfigEdit {
        Box::new(move |c| {
            c["process"]["noNewPrivileges"] = json!(nnp);
            c["linux"]["seccomp"] = notify_profile(Path::new("/nonexistent/a.sock"));
        })
    };
    create_fails_with_nothing_left(vec![
        (
            "no listenerPath",
            Box::new(|c| {
                c["linux"]["seccomp"] = json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
                })
            }),
            "listenerPath (the seccomp agent's socket) is not set",
        ),
        (
            "notify as the default action",
            Box::new(|c| {
                c["linux"]["seccomp"] =
                    json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x.sock"})
            }),
            "default action",
        ),
        (
            "nobody listening, no_new_privs",
            nobody(true),
            "cannot hand the seccomp listener to the agent at /nonexistent/a.sock",
        ),
        (
            "nobody listening, CAP_SYS_ADMIN",
            nobody(false),
            "cannot hand the seccomp listener to the agent at /nonexistent/a.sock",
        ),
    ]);
}

#[test]
fn seccomp_notify_exec_without_the_agent_fails_and_does_not_run() {
    let Some(mut c) = Ctr::new(&["sleep", "100"]) else {
        return;
    };
    let agent = Agent::start(c.b.path().join("agent.sock"));
    c.b.config["process"]["noNewPrivileges"] = json!(true);
    c.b.config["linux"]["seccomp"] = notify_profile(&agent.path);
    c.create_and_start();
    // The agent goes away: an exec cannot hand it its listener.
    fs::remove_file(&agent.path).unwrap();
    let started = Instant::now();
    let o = c.rt(&["exec", &c.id, "sh", "-c", "echo ran > /exec-ran"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "exec succeeded");
    assert!(err.contains("cannot hand the seccomp listener"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "exec hung");
    assert!(!c.b.rootfs().join("exec-ran").exists(), "program ran");
    assert_eq!(c.status(), "running");
}

/// The resctrl mount `berth-runtime` would use (the first of its root in mountinfo).
fn resctrl_mount() -> Option<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        (post.starts_with("resctrl ") && pre.get(3) == Some(&"/"))
            .then(|| PathBuf::from(pre[4].replace("\\040", " ")))
    })
}

#[test]
fn intel_rdt_without_a_resctrl_mount_fails_with_nothing_left() {
    if let Some(m) = resctrl_mount() {
        eprintln!("skipped: resctrl is mounted at {}", m.display());
        return;
    }
    let rdt = |v: Value| -> ConfigEdit { Box::new(move |c| c["linux"]["intelRdt"] = v.clone()) };
    let want = "linux.intelRdt is set but no resctrl filesystem is mounted";
    create_fails_with_nothing_left(vec![
        ("empty: the container id's group", rdt(json!({})), want),
        (
            "closID with schemas and monitoring",
            rdt(json!({
                "closID": "berth-test",
                "l3CacheSchema": "L3:0=f",
                "memBwSchema": "MB:0=50",
                "schemata": ["L2:0=f"],
                "enableMonitoring": true
            })),
            want,
        ),
        ("the root group", rdt(json!({"closID": "/"})), want),
    ]);
}

#[test]
fn intel_rdt_values_against_the_spec_are_rejected_with_nothing_left() {
    let rdt = |v: Value| -> ConfigEdit { Box::new(move |c| c["linux"]["intelRdt"] = v.clone()) };
    create_fails_with_nothing_left(vec![
        (
            "memBwSchema without MB:",
            rdt(json!({"memBwSchema": "L3:0=f"})),
            "does not start with \"MB:\"",
        ),
        (
            "newline in a schemata line",
            rdt(json!({"schemata": ["L3:0=f\nMB:0=10"]})),
            "contains a newline",
        ),
        (
            "closID outside resctrl",
            rdt(json!({"closID": "../escape"})),
            "is not \"/\" nor a group name",
        ),
    ]);
}

#[test]
fn features_list_intel_rdt() {
    let o = Command::new(bin()).arg("features").output().unwrap();
    assert!(o.status.success());
    let f: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        f["linux"]["intelRdt"],
        json!({"enabled": true, "schemata": true, "monitoring": true})
    );
}

/// On a host with resctrl mounted: the init and an exec'd process are in the container
/// id's group and its MON group, which `delete` removes; a missing pre-configured closID
/// fails with nothing left. Skipped elsewhere (no RDT support in the CPU or VM).
#[test]
fn intel_rdt_places_the_container_in_its_resctrl_group() {
    let Some(root) = resctrl_mount() else {
        eprintln!("skipped: no resctrl filesystem mounted");
        return;
    };
    let Some(mut c) = Ctr::new(&["sleep", "3600"]) else {
        return;
    };
    c.b.config["linux"]["intelRdt"] = json!({"enableMonitoring": true});
    let (ok, err) = c.create();
    assert!(ok, "{err}");
    let group = root.join(&c.id);
    let mon = group.join("mon_groups").join(&c.id);
    let pid = c.state().unwrap()["pid"].as_i64().unwrap();
    let holds = |dir: &Path, pid: i64| {
        fs::read_to_string(dir.join("tasks"))
            .unwrap()
            .lines()
            .any(|l| l.trim() == pid.to_string())
    };
    assert!(
        holds(&group, pid) && holds(&mon, pid),
        "init not in its group"
    );
    assert!(c.rt(&["start", &c.id]).status.success());
    let pid_file = c.b.path().join("exec.pid");
    let st = c
        .cmd()
        .args(["exec", "--detach", "--pid-file"])
        .arg(&pid_file)
        .args([&c.id, "sleep", "3600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let exec_pid: i64 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        holds(&group, exec_pid) && holds(&mon, exec_pid),
        "exec not in the group"
    );
    assert!(c.rt(&["delete", "--force", &c.id]).status.success());
    assert!(!group.exists(), "resctrl group left behind");
    c.assert_clean();

    let missing = format!("berth-missing-{}", c.id);
    create_fails_with_nothing_left(vec![(
        "missing pre-configured closID",
        Box::new(move |cfg| cfg["linux"]["intelRdt"] = json!({"closID": missing})),
        "must be pre-configured",
    )]);
}
