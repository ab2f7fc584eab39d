//! Dockerfile builds through [`StoreBuildBackend`] into a real store, with `RUN` steps in
//! real containers (berth-runtime, or runc when berth-runtime is not built), as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use build::{build, BuildBackend, BuildContext, BuildError, BuildOptions, BuildResult};
use engine::build_backend::{BackendConfig, DefaultNetwork, PullFn, StoreBuildBackend};
use errkind::{ErrorKind, HasKind};
use store::{ImportOptions, Reference, Store};

/// The OCI runtime to use: `$BERTH_RUNTIME`, a built `berth-runtime`, else `runc`.
fn runtime_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_RUNTIME") {
        return Some(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("debug/berth-runtime"));
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    candidates.push(ws.join("target/debug/berth-runtime"));
    candidates.push(ws.join("target/release/berth-runtime"));
    for c in ["/usr/sbin/runc", "/usr/bin/runc"] {
        candidates.push(PathBuf::from(c));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// A store, runtime root and scratch dir under one temporary directory; unmounts and
/// removes everything on drop.
struct Env {
    dir: PathBuf,
    store: Store,
    runtime: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        if !testutil::is_root() {
            eprintln!("skipping: builds need root (mounts, containers)");
            return None;
        }
        let runtime = runtime_binary()?;
        let dir = std::env::temp_dir().join(testutil::unique_name("berth-build-backend"));
        fs::create_dir_all(&dir).unwrap();
        let store = Store::open(dir.join("store")).unwrap();
        let env = Env {
            dir,
            store,
            runtime,
        };
        env.import_busybox();
        Some(env)
    }

    fn import_busybox(&self) {
        let rootfs = self.dir.join("busybox-rootfs");
        testutil::busybox_rootfs(&rootfs).unwrap();
        let mut tb = tar::Builder::new(Vec::new());
        tb.follow_symlinks(false);
        tb.append_dir_all(".", &rootfs).unwrap();
        let data = tb.into_inner().unwrap();
        self.store
            .import(
                &data[..],
                &ImportOptions {
                    changes: vec![
                        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                            .into(),
                        "CMD [\"sh\"]".into(),
                    ],
                    reference: Some(Reference::parse("busybox:latest").unwrap()),
                    message: None,
                },
            )
            .unwrap();
        fs::remove_dir_all(&rootfs).unwrap();
    }

    fn runtime_root(&self) -> PathBuf {
        self.dir.join("runtime")
    }

    fn backend(&self, default_network: DefaultNetwork) -> StoreBuildBackend {
        self.backend_pulling(default_network, None)
    }

    fn backend_pulling(
        &self,
        default_network: DefaultNetwork,
        pull: Option<PullFn>,
    ) -> StoreBuildBackend {
        StoreBuildBackend::new(
            self.store.clone(),
            BackendConfig {
                runtime: self.runtime.clone(),
                runtime_root: self.runtime_root(),
                scratch_dir: self.dir.join("scratch"),
                default_network,
            },
            pull,
        )
    }

    /// Writes a build context with `files`.
    fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let d = self.dir.join("ctx").join(name);
        fs::create_dir_all(&d).unwrap();
        for (p, c) in files {
            fs::write(d.join(p), c).unwrap();
        }
        d
    }

    fn build(&self, ctx: &Path, tag: &str) -> (Result<BuildResult, BuildError>, String) {
        self.build_on(ctx, tag, DefaultNetwork::None)
    }

    fn build_on(
        &self,
        ctx: &Path,
        tag: &str,
        network: DefaultNetwork,
    ) -> (Result<BuildResult, BuildError>, String) {
        let mut b = self.backend(network);
        self.build_with(ctx, tag, &mut b)
    }

    fn build_with(
        &self,
        ctx: &Path,
        tag: &str,
        b: &mut StoreBuildBackend,
    ) -> (Result<BuildResult, BuildError>, String) {
        let context = BuildContext::from_dir(ctx).unwrap();
        let opts = BuildOptions {
            tags: vec![tag.to_string()],
            ..Default::default()
        };
        let mut out = Vec::new();
        let r = build(&opts, &context, b, &mut out);
        (r, String::from_utf8_lossy(&out).into_owned())
    }

    /// Mount points under this test's directory.
    fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }

    /// Reads files of image `name` from a mounted container snapshot.
    fn read_files(&self, name: &str, paths: &[&str]) -> Vec<Option<String>> {
        self.with_rootfs(name, |root| {
            paths
                .iter()
                .map(|p| fs::read_to_string(root.join(p.trim_start_matches('/'))).ok())
                .collect()
        })
    }

    /// Calls `f` with the root filesystem of image `name` mounted (a container snapshot).
    fn with_rootfs<T>(&self, name: &str, f: impl FnOnce(&Path) -> T) -> T {
        let rec = self.store.images().lookup(name).unwrap();
        let key = testutil::unique_name("check");
        let mounts = self.store.prepare_container(&key, &rec).unwrap();
        let target = self.dir.join(&key);
        fs::create_dir_all(&target).unwrap();
        store::snapshot::mount_all(&mounts, &target).unwrap();
        let out = f(&target);
        store::snapshot::unmount(&target).unwrap();
        self.store.snapshots().remove(&key).unwrap();
        out
    }

    fn assert_nothing_left(&self) {
        assert_eq!(self.mounts(), Vec::<String>::new(), "mounts left behind");
        assert!(
            self.store.snapshots().list_active().unwrap().is_empty(),
            "active snapshots left behind"
        );
        let left = |p: PathBuf| -> Vec<String> {
            fs::read_dir(p)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        // The runtime's cache of compiled seccomp programs (`.seccomp`) may stay.
        let containers: Vec<String> = left(self.runtime_root())
            .into_iter()
            .filter(|n| n != ".seccomp")
            .collect();
        assert_eq!(containers, Vec::<String>::new(), "runtime state left");
        assert_eq!(
            left(self.dir.join("scratch")),
            Vec::<String>::new(),
            "scratch left"
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let mut ms = self.mounts();
        ms.sort();
        for m in ms.iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for c in fs::read_dir(self.runtime_root())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::process::Command::new(&self.runtime)
                .arg("--root")
                .arg(self.runtime_root())
                .args(["delete", "--force"])
                .arg(c.file_name())
                .output();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

const APP: &str = "FROM busybox
RUN echo hi > /hello && echo step-output
COPY f /f
ENV A=b
CMD [\"cat\", \"/hello\"]
";

#[test]
fn build_run_copy_env_cmd_then_cache() {
    let Some(env) = Env::new() else { return };
    let tag = testutil::unique_name("app");
    let ctx = env.context("app", &[("Dockerfile", APP), ("f", "file one\n")]);
    let (r, log) = env.build(&ctx, &tag);
    let res = r.unwrap_or_else(|e| panic!("build failed: {e}\n{log}"));
    assert!(
        log.contains("\nstep-output\n"),
        "RUN output missing from the log:\n{log}"
    );
    assert_eq!(res.cached_steps, 0);

    let rec = env.store.images().lookup(&tag).unwrap();
    assert_eq!(rec.id.to_string(), res.image_id);
    assert_eq!(rec.diff_ids.len(), 3, "base + RUN + COPY layers");
    let cfg = env.store.images().get_config(&rec.id).unwrap();
    let cc = cfg.config.unwrap();
    assert!(cc.env.unwrap().contains(&"A=b".to_string()));
    assert_eq!(cc.cmd.unwrap(), ["cat", "/hello"]);
    assert_eq!(
        env.read_files(&tag, &["/hello", "/f", "/etc/resolv.conf"]),
        [Some("hi\n".into()), Some("file one\n".into()), None],
        "the resolv.conf mount point must not leak into the image"
    );
    env.assert_nothing_left();

    // Same context: every step from the cache, same image.
    let (r, log) = env.build(&ctx, &tag);
    let again = r.unwrap_or_else(|e| panic!("rebuild failed: {e}\n{log}"));
    assert_eq!(again.cached_steps, 4, "{log}");
    assert_eq!(log.matches("Using cache").count(), 4, "{log}");
    assert!(!log.contains("\nstep-output\n"), "RUN ran again:\n{log}");
    assert_eq!(again.image_id, res.image_id);

    // A changed file: RUN still cached, COPY onward rebuilt.
    fs::write(ctx.join("f"), "file two\n").unwrap();
    let (r, log) = env.build(&ctx, &tag);
    let third = r.unwrap_or_else(|e| panic!("build failed: {e}\n{log}"));
    assert_eq!(third.cached_steps, 1, "{log}");
    assert_ne!(third.image_id, res.image_id);
    assert_eq!(third.state.layers[..2], res.state.layers[..2]);
    assert_eq!(
        env.read_files(&tag, &["/hello", "/f"]),
        [Some("hi\n".into()), Some("file two\n".into())]
    );
    env.assert_nothing_left();
}

#[test]
fn multi_stage_copy_from() {
    let Some(env) = Env::new() else { return };
    let tag = testutil::unique_name("multi");
    let df = "FROM busybox AS maker
RUN mkdir -p /out && echo made > /out/file && chmod 640 /out/file
FROM scratch
COPY --from=maker /out/file /data/file
COPY --from=0 /bin/busybox /bin/busybox
";
    let ctx = env.context("multi", &[("Dockerfile", df)]);
    let (r, log) = env.build(&ctx, &tag);
    let res = r.unwrap_or_else(|e| panic!("build failed: {e}\n{log}"));
    let rec = env.store.images().lookup(&tag).unwrap();
    assert_eq!(rec.id.to_string(), res.image_id);
    assert_eq!(rec.diff_ids.len(), 2);
    assert_eq!(
        env.read_files(&tag, &["/data/file"]),
        [Some("made\n".into())]
    );
    env.assert_nothing_left();
}

#[test]
fn failing_run_leaves_nothing() {
    let Some(env) = Env::new() else { return };
    let tag = testutil::unique_name("fail");
    let df = "FROM busybox\nRUN echo before > /x\nRUN echo failing && exit 3\n";
    let ctx = env.context("fail", &[("Dockerfile", df)]);
    let (r, log) = env.build(&ctx, &tag);
    match r {
        Err(BuildError::RunFailed { code, .. }) => assert_eq!(code, 3, "{log}"),
        other => panic!("expected a failed RUN, got {other:?}\n{log}"),
    }
    assert!(log.contains("failing"), "{log}");
    assert!(
        env.store.images().lookup(&tag).is_err(),
        "failed build was tagged"
    );
    env.assert_nothing_left();
}

#[test]
fn copy_chown_chmod_and_user() {
    let Some(env) = Env::new() else { return };
    let tag = testutil::unique_name("own");
    let df = "FROM busybox
COPY --chown=user:users --chmod=600 f /home/user/f
USER user
WORKDIR /work/dir
RUN stat -c '%u:%g %a' /home/user/f > /tmp/stat && id -u >> /tmp/stat && pwd >> /tmp/stat
";
    let ctx = env.context("own", &[("Dockerfile", df), ("f", "secret\n")]);
    let (r, log) = env.build(&ctx, &tag);
    r.unwrap_or_else(|e| panic!("build failed: {e}\n{log}"));
    assert_eq!(
        env.read_files(&tag, &["/tmp/stat", "/home/user/f"]),
        [
            Some("1000:100 600\n1000\n/work/dir\n".into()),
            Some("secret\n".into())
        ]
    );
    env.assert_nothing_left();
}

/// Interface names in a `/proc/net/dev` text.
fn interfaces(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn run_network_none_and_default_host() {
    let Some(env) = Env::new() else { return };
    let tag = testutil::unique_name("net");
    let df = "FROM busybox
RUN --network=none cat /proc/net/dev > /net-none
RUN cat /proc/net/dev > /net-default
";
    let ctx = env.context("net", &[("Dockerfile", df)]);
    let (r, log) = env.build_on(&ctx, &tag, DefaultNetwork::Host);
    r.unwrap_or_else(|e| panic!("build failed: {e}\n{log}"));
    let files = env.read_files(&tag, &["/net-none", "/net-default"]);
    let none = interfaces(files[0].as_deref().unwrap());
    assert_eq!(none, ["lo"], "--network=none has only a loopback");
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    let default = interfaces(files[1].as_deref().unwrap());
    assert!(
        default.iter().any(|n| n != "lo" && host.contains(n)),
        "the default network is the host's: {default:?} vs {host:?}"
    );
    env.assert_nothing_left();
}

#[test]
fn missing_base_is_pulled_through_the_callback() {
    let Some(env) = Env::new() else { return };
    let ctx = env.context("pull", &[("Dockerfile", "FROM pulled/base:1\nRUN true\n")]);
    // Without a pull function: not found.
    let (r, log) = env.build(&ctx, &testutil::unique_name("nopull"));
    let e = r.expect_err("built on a missing base image");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}\n{log}");

    // The callback "pulls" by tagging the local busybox under the requested name.
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, store) = (calls.clone(), env.store.clone());
    let pull: PullFn = Box::new(move |r, out| {
        c.fetch_add(1, Ordering::SeqCst);
        writeln!(out, "pulling {r} (test)").map_err(|e| e.to_string())?;
        let rec = store
            .images()
            .lookup("busybox")
            .map_err(|e| e.to_string())?;
        let name = Reference::parse(r).map_err(|e| e.to_string())?;
        store
            .images()
            .tag(&rec.id, &name)
            .map_err(|e| e.to_string())?;
        Ok(())
    });
    let mut b = env.backend_pulling(DefaultNetwork::None, Some(pull));
    let tag = testutil::unique_name("pulled");
    let (r, log) = env.build_with(&ctx, &tag, &mut b);
    r.unwrap_or_else(|e| panic!("build failed: {e}\n{log}"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(log.contains("pulling pulled/base:1 (test)"), "{log}");
    assert!(env.store.images().lookup(&tag).is_ok());
    drop(b);
    env.assert_nothing_left();
}

#[test]
fn copy_follows_image_symlinks_and_keeps_existing_dirs() {
    let Some(env) = Env::new() else { return };
    let tag = testutil::unique_name("links");
    // In the busybox image /usr/bin is a symlink to ../bin and /tmp is a 1777 directory.
    let df = "FROM busybox\nCOPY f /usr/bin/\nCOPY f /tmp\nCOPY d /opt/d/\n";
    let ctx = env.context("links", &[("Dockerfile", df), ("f", "data\n")]);
    fs::create_dir_all(ctx.join("d/sub")).unwrap();
    fs::write(ctx.join("d/sub/g"), "deep\n").unwrap();
    let (r, log) = env.build(&ctx, &tag);
    r.unwrap_or_else(|e| panic!("build failed: {e}\n{log}"));
    env.with_rootfs(&tag, |root| {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::read_to_string(root.join("bin/f")).unwrap(), "data\n");
        assert!(fs::symlink_metadata(root.join("usr/bin"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(root.join("tmp/f")).unwrap(), "data\n");
        let tmp = fs::metadata(root.join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(
            fs::read_to_string(root.join("opt/d/sub/g")).unwrap(),
            "deep\n"
        );
    });
    env.assert_nothing_left();
}

#[test]
fn stale_build_leftovers_are_cleaned() {
    let Some(env) = Env::new() else { return };
    let mut b = env.backend(DefaultNetwork::None);
    let base = b
        .resolve_base("busybox", None, false, &mut Vec::new())
        .unwrap();
    // A view and a half-done step, as a killed build would leave them.
    let view = b.mount_rootfs(&base.state).unwrap();
    assert!(view.join("bin/busybox").exists());
    std::mem::forget(b);
    // A step's network namespace (bind-mounted in its step directory).
    let step = view.parent().unwrap().join("stalestep");
    fs::create_dir_all(&step).unwrap();
    net::create_netns(&step.join("netns")).unwrap();
    let cfg = BackendConfig {
        runtime: env.runtime.clone(),
        runtime_root: env.runtime_root(),
        scratch_dir: env.dir.join("scratch"),
        default_network: DefaultNetwork::None,
    };
    env.store
        .snapshots()
        .prepare("build-stale-step", None)
        .unwrap();
    assert!(!env.mounts().is_empty());
    let n = StoreBuildBackend::clean_stale(&env.store, &cfg);
    assert!(n >= 4, "removed {n}");
    assert!(!step.exists(), "the stale step directory is left");
    env.assert_nothing_left();
}
