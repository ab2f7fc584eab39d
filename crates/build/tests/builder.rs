//! End-to-end builder tests over the directory-backed test backend (real `RUN` commands in
//! a busybox root filesystem via chroot, real files).

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use build::{build, BuildContext, BuildError, BuildOptions, BuildResult};
use errkind::{ErrorKind, HasKind};
use support::dir_backend::DirBackend;

/// Writes `files` (path, content) under a new temp dir.
fn context_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let p = d.path().join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
    d
}

fn can_run() -> bool {
    if !testutil::is_root() || !Path::new("/usr/sbin/chroot").exists() {
        eprintln!("skipping: RUN steps need root and chroot(8)");
        return false;
    }
    true
}

fn go(
    b: &mut DirBackend,
    dir: &Path,
    opts: &BuildOptions,
) -> (Result<BuildResult, BuildError>, String) {
    let ctx = BuildContext::from_dir(dir).unwrap();
    let mut out = Vec::new();
    let r = build(opts, &ctx, b, &mut out);
    (r, String::from_utf8_lossy(&out).into_owned())
}

fn opts() -> BuildOptions {
    BuildOptions {
        tags: vec!["app".into()],
        ..Default::default()
    }
}

const APP: &str = "FROM busybox
ENV GREETING=hello DIR=/srv/app
WORKDIR ${DIR}
COPY files/ ./data/
RUN echo \"$GREETING from $(pwd)\" > out.txt && cat data/a.txt >> out.txt
USER 1000:1000
CMD [\"cat\", \"out.txt\"]
";

fn app_context() -> tempfile::TempDir {
    context_dir(&[
        ("Dockerfile", APP),
        ("files/a.txt", "AAA\n"),
        ("files/sub/b.txt", "BBB\n"),
        ("files/c.txt", "CCC\n"),
    ])
}

#[test]
fn builds_image_with_config_layers_and_log() {
    if !can_run() {
        return;
    }
    let mut b = DirBackend::new().unwrap();
    let dir = app_context();
    let (r, log) = go(&mut b, dir.path(), &opts());
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    // Log in the classic builder's format.
    assert!(log.starts_with("Step 1/7 : FROM busybox\n ---> "), "{log}");
    assert!(log.contains("Step 5/7 : RUN echo"), "{log}");
    assert!(log.contains(" ---> Running in "), "{log}");
    assert!(log.contains("Removing intermediate container "), "{log}");
    assert!(
        log.contains(&format!("Successfully built {}", &r.image_id[7..19])),
        "{log}"
    );
    assert!(
        log.trim_end().ends_with("Successfully tagged app:latest"),
        "{log}"
    );
    assert_eq!(b.tags.get("app:latest"), Some(&r.image_id));
    assert_eq!(b.finished, [true]);
    // Config.
    let c = &r.state.config;
    assert_eq!(c.working_dir, "/srv/app");
    assert_eq!(c.user, "1000:1000");
    assert_eq!(
        c.cmd.as_deref(),
        Some(&["cat".to_string(), "out.txt".to_string()][..])
    );
    assert_eq!(c.env_get("GREETING"), Some("hello"));
    assert!(c.env[0].starts_with("PATH="));
    // Layers: base + COPY + RUN; metadata steps are empty-layer history entries.
    assert_eq!(r.state.layers.len(), 3);
    assert_eq!(r.state.history.len(), 7);
    let empties: Vec<bool> = r.state.history.iter().map(|h| h.empty_layer).collect();
    assert_eq!(empties, [false, true, true, false, false, true, true]);
    assert!(r.state.history[3].created_by.contains("COPY dir:"));
    // The filesystem really has what the steps did.
    let root = b.rootfs(&r.state).unwrap();
    assert_eq!(
        fs::read_to_string(root.path().join("srv/app/out.txt")).unwrap(),
        "hello from /srv/app\nAAA\n"
    );
    assert_eq!(
        fs::read_to_string(root.path().join("srv/app/data/sub/b.txt")).unwrap(),
        "BBB\n"
    );
    assert_eq!(r.steps, 7);
    assert_eq!(r.cached_steps, 0);
    assert_eq!(b.leftover_containers(), 0);
}

#[test]
fn rebuild_uses_cache_and_one_changed_file_invalidates_from_its_step() {
    if !can_run() {
        return;
    }
    let mut b = DirBackend::new().unwrap();
    let dir = app_context();
    let (first, _) = go(&mut b, dir.path(), &opts());
    let first = first.unwrap();
    assert_eq!(b.runs, 1);

    // Same inputs: everything after FROM is cached, nothing runs, same image.
    let (second, log) = go(&mut b, dir.path(), &opts());
    let second = second.unwrap();
    assert_eq!(second.image_id, first.image_id);
    assert_eq!(second.cached_steps, 6, "{log}");
    assert_eq!(log.matches(" ---> Using cache").count(), 6, "{log}");
    assert!(!log.contains("Running in"), "{log}");
    assert_eq!(b.runs, 1);

    // Touching a file (new mtime, same content) keeps the cache.
    let f = dir.path().join("files/c.txt");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let (third, log) = go(&mut b, dir.path(), &opts());
    assert_eq!(third.unwrap().cached_steps, 6, "{log}");

    // Changing one file's content: steps 2-3 cached, COPY (4) and everything after miss.
    fs::write(&f, "changed\n").unwrap();
    let (fourth, log) = go(&mut b, dir.path(), &opts());
    let fourth = fourth.unwrap();
    assert_eq!(fourth.cached_steps, 2, "{log}");
    assert_eq!(b.runs, 2);
    assert_ne!(fourth.image_id, first.image_id);
    let steps: Vec<&str> = log.split("Step ").skip(1).collect();
    for (i, s) in steps.iter().enumerate() {
        let cached = s.contains("Using cache");
        assert_eq!(cached, (1..=2).contains(&i), "step {}: {s}", i + 1);
    }

    // --no-cache runs everything again.
    let (fifth, log) = go(
        &mut b,
        dir.path(),
        &BuildOptions {
            no_cache: true,
            ..opts()
        },
    );
    assert_eq!(fifth.unwrap().cached_steps, 0);
    assert!(!log.contains("Using cache"));
    assert_eq!(b.runs, 3);
}

#[test]
fn failing_run_reports_docker_message_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let mut b = DirBackend::new().unwrap();
    let dir = context_dir(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo before > /x\nRUN echo oops; exit 3\nCMD x\n",
    )]);
    let (r, log) = go(&mut b, dir.path(), &opts());
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "The command '/bin/sh -c echo oops; exit 3' returned a non-zero code: 3"
    );
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(log.contains("oops"), "command output streamed: {log}");
    assert!(!log.contains("Successfully"), "{log}");
    assert!(b.tags.is_empty());
    assert!(b.committed.is_empty());
    assert_eq!(b.finished, [false], "the backend is told the build failed");
    assert_eq!(b.leftover_containers(), 0);
    assert_eq!(b.leftover_mounts(), 0);
}

const MULTI: &str = "ARG BASE=busybox
FROM ${BASE} AS builder
WORKDIR /src
COPY main.txt .
RUN mkdir -p /out && tr a-z A-Z < main.txt > /out/app
FROM busybox AS broken
RUN exit 1
FROM builder AS tester
RUN test -f /out/app
FROM busybox
COPY --from=builder /out/app /usr/local/bin/app
COPY --from=0 /src/main.txt /copy-by-index.txt
";

#[test]
fn multi_stage_builds_only_needed_stages() {
    if !can_run() {
        return;
    }
    let mut b = DirBackend::new().unwrap();
    let dir = context_dir(&[("Dockerfile", MULTI), ("main.txt", "shout\n")]);
    let (r, log) = go(&mut b, dir.path(), &opts());
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    // "broken" and "tester" are not dependencies of the last stage.
    assert_eq!(r.stages_built, vec![0, 3]);
    assert!(!log.contains("exit 1"), "{log}");
    assert!(
        log.starts_with("Step 1/7 : FROM ${BASE} AS builder"),
        "{log}"
    );
    let root = b.rootfs(&r.state).unwrap();
    assert_eq!(
        fs::read_to_string(root.path().join("usr/local/bin/app")).unwrap(),
        "SHOUT\n"
    );
    assert_eq!(
        fs::read_to_string(root.path().join("copy-by-index.txt")).unwrap(),
        "shout\n"
    );
    // The final stage has busybox + 2 COPY layers; the builder's files are not in it.
    assert_eq!(r.state.layers.len(), 3);
    assert!(!root.path().join("src").exists());
    assert_eq!(b.leftover_mounts(), 0);

    // --target picks a stage and its dependencies.
    let (t, log) = go(
        &mut b,
        dir.path(),
        &BuildOptions {
            target: Some("tester".into()),
            ..opts()
        },
    );
    let t = t.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(t.stages_built, vec![0, 2]);
    assert_eq!(t.state.config.working_dir, "/src");
    let (bad, _) = go(
        &mut b,
        dir.path(),
        &BuildOptions {
            target: Some("nope".into()),
            ..opts()
        },
    );
    assert!(matches!(bad, Err(BuildError::TargetNotFound(_))));
    let (broken, _) = go(
        &mut b,
        dir.path(),
        &BuildOptions {
            target: Some("broken".into()),
            ..opts()
        },
    );
    assert!(matches!(broken, Err(BuildError::RunFailed { code: 1, .. })));
}

#[test]
fn args_env_and_proxy_args() {
    if !can_run() {
        return;
    }
    let mut b = DirBackend::new().unwrap();
    let df = "ARG TAG=latest
FROM busybox:${TAG}
ARG VERSION=1.0
ARG TAG
ENV APP_VERSION=${VERSION:-none} EMPTY=${UNSET:+x}
RUN echo \"$VERSION $APP_VERSION $TAG $HTTP_PROXY\" > /args.txt
LABEL version=\"$APP_VERSION\" \"two words\"=yes
EXPOSE 80 53/udp 8000-8001
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost
ENTRYPOINT [\"/bin/sh\"]
";
    let dir = context_dir(&[("Dockerfile", df)]);
    let mut o = opts();
    o.build_args = BTreeMap::from([
        ("VERSION".to_string(), "2.5".to_string()),
        ("HTTP_PROXY".to_string(), "http://proxy:3128".to_string()),
        ("UNUSED".to_string(), "x".to_string()),
    ]);
    let (r, log) = go(&mut b, dir.path(), &o);
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    let c = &r.state.config;
    assert_eq!(c.env_get("APP_VERSION"), Some("2.5"));
    assert_eq!(c.env_get("EMPTY"), Some(""));
    assert_eq!(c.env_get("VERSION"), None, "ARGs are not persisted");
    assert_eq!(c.env_get("HTTP_PROXY"), None);
    assert_eq!(c.labels.get("version").map(String::as_str), Some("2.5"));
    assert_eq!(c.labels.get("two words").map(String::as_str), Some("yes"));
    let ports: Vec<&str> = c.exposed_ports.keys().map(String::as_str).collect();
    assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    assert!(c.volumes.contains_key("/data"));
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    let hc = c.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test, ["CMD-SHELL", "wget -q localhost"]);
    assert_eq!((hc.interval, hc.retries), (5_000_000_000, 2));
    assert_eq!(c.entrypoint.as_deref(), Some(&["/bin/sh".to_string()][..]));
    assert_eq!(c.cmd, None, "ENTRYPOINT resets the inherited CMD");
    let root = b.rootfs(&r.state).unwrap();
    assert_eq!(
        fs::read_to_string(root.path().join("args.txt")).unwrap(),
        "2.5 2.5 latest http://proxy:3128\n"
    );
    let run_hist = &r.state.history[4].created_by;
    assert!(
        run_hist.starts_with("|2 TAG=latest VERSION=2.5 /bin/sh -c echo"),
        "{run_hist}"
    );
    assert!(!run_hist.contains("proxy"), "{run_hist}");
    assert!(
        log.contains("[Warning] One or more build-args [UNUSED] were not consumed"),
        "{log}"
    );

    // A different build-arg value changes the RUN cache key (and only from there on).
    o.build_args.insert("VERSION".into(), "3.0".into());
    let (r2, log2) = go(&mut b, dir.path(), &o);
    let r2 = r2.unwrap();
    assert_eq!(r2.cached_steps, 2, "{log2}");
    assert_eq!(r2.state.config.env_get("APP_VERSION"), Some("3.0"));
}

#[test]
fn onbuild_triggers_run_in_child_build() {
    if !can_run() {
        return;
    }
    let mut b = DirBackend::new().unwrap();
    let base = context_dir(&[(
        "Dockerfile",
        "FROM busybox\nONBUILD COPY trigger.txt /from-trigger.txt\nONBUILD RUN echo ran > /ran\n",
    )]);
    let (r, log) = go(
        &mut b,
        base.path(),
        &BuildOptions {
            tags: vec!["onbase".into()],
            ..Default::default()
        },
    );
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    assert_eq!(r.state.config.on_build.len(), 2);
    assert_eq!(
        r.state.layers.len(),
        1,
        "triggers do not run in the defining build"
    );
    let child = context_dir(&[
        ("Dockerfile", "FROM onbase\nCMD [\"true\"]\n"),
        ("trigger.txt", "T"),
    ]);
    let (c, log) = go(&mut b, child.path(), &opts());
    let c = c.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(log.contains("# Executing 2 build triggers"), "{log}");
    assert!(c.state.config.on_build.is_empty());
    let root = b.rootfs(&c.state).unwrap();
    assert_eq!(
        fs::read_to_string(root.path().join("from-trigger.txt")).unwrap(),
        "T"
    );
    assert_eq!(
        fs::read_to_string(root.path().join("ran")).unwrap(),
        "ran\n"
    );
}

#[test]
fn copy_rules_dockerignore_and_errors() {
    let mut b = DirBackend::new().unwrap();
    let dir = context_dir(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY . /ctx/\nCOPY *.txt /globbed/\nCOPY one.txt /etc\nCOPY --chmod=600 --chown=user:users one.txt /renamed\nCOPY [\"dir with space\", \"/spaced/\"]\nCOPY emptydir /made/here\n",
        ),
        ("one.txt", "1"),
        ("two.txt", "2"),
        ("secret.key", "k"),
        ("logs/a.log", "l"),
        ("logs/keep.log", "keep"),
        ("dir with space/f", "s"),
        (".dockerignore", "*.key\nlogs/\n!logs/keep.log\n"),
    ]);
    fs::create_dir(dir.path().join("emptydir")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            dir.path().join("emptydir"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
    }
    let (r, log) = go(&mut b, dir.path(), &opts());
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    let root = b.rootfs(&r.state).unwrap();
    let p = root.path();
    {
        use std::os::unix::fs::PermissionsExt;
        let m = fs::metadata(p.join("made/here")).unwrap();
        assert!(
            m.is_dir(),
            "an empty directory source creates its destination"
        );
        assert_eq!(m.permissions().mode() & 0o777, 0o750);
    }
    assert!(p.join("ctx/one.txt").exists());
    assert!(p.join("ctx/Dockerfile").exists());
    assert!(
        !p.join("ctx/secret.key").exists(),
        "excluded by .dockerignore"
    );
    assert!(!p.join("ctx/logs/a.log").exists());
    assert!(p.join("ctx/logs/keep.log").exists(), "re-included by !");
    assert!(p.join("globbed/one.txt").exists() && p.join("globbed/two.txt").exists());
    assert_eq!(
        fs::read_to_string(p.join("etc/one.txt")).unwrap(),
        "1",
        "into existing dir"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = fs::metadata(p.join("renamed")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    assert_eq!((m.uid(), m.gid()), (1000, 100));
    assert!(p.join("spaced/f").exists());
    assert_eq!(r.state.layers.len(), 7);
    b.tags.clear();

    let bad: &[(&str, usize, &str)] = &[
        (
            "FROM busybox\n\nCOPY one.txt two.txt /notadir\n",
            3,
            "must be a directory",
        ),
        ("FROM busybox\nCOPY missing.txt /x\n", 2, "not found"),
        (
            "FROM busybox\nCOPY secret.key /x\n",
            2,
            "excluded by .dockerignore",
        ),
        ("FROM busybox\nCOPY --chmod=999 one.txt /x\n", 2, "--chmod"),
        (
            "FROM busybox\nENV A=${B:?required}\n",
            2,
            "variable substitution",
        ),
        ("FROM busybox\nSTOPSIGNAL SIGWHAT\n", 2, "invalid signal"),
        (
            "FROM busybox\nEXPOSE notaport\n",
            2,
            "invalid containerPort",
        ),
    ];
    for (df, line, needle) in bad {
        fs::write(dir.path().join("Dockerfile"), df).unwrap();
        let (r, _) = go(&mut b, dir.path(), &opts());
        let e = r.unwrap_err();
        assert_eq!(e.line(), Some(*line), "{df}: {e}");
        assert!(e.to_string().contains(needle), "{df}: {e}");
    }
    for df in [
        "FROM busybox\nCOPY ../outside /x\n",
        "FROM busybox\nCOPY link /x\n",
    ] {
        let _ = std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link"));
        fs::write(dir.path().join("Dockerfile"), df).unwrap();
        let (r, _) = go(&mut b, dir.path(), &opts());
        let e = r.unwrap_err();
        assert!(
            e.to_string().contains("outside the build context"),
            "{df}: {e}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    fs::write(dir.path().join("Dockerfile"), "FROM nosuchimage\n").unwrap();
    let (r, _) = go(&mut b, dir.path(), &opts());
    assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(b.tags.is_empty(), "no failed build tagged anything");
}

fn tar_bytes(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_uid(1234);
        h.set_gid(4321);
        h.set_cksum();
        t.append_data(&mut h, p, *c).unwrap();
    }
    let raw = t.into_inner().unwrap();
    if !gzip {
        return raw;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    gz.finish().unwrap()
}

#[test]
fn add_extracts_archives_heredocs_and_urls() {
    let mut b = DirBackend::new().unwrap();
    b.urls.insert(
        "http://example.test/dl/file.txt?x=1".into(),
        b"downloaded".to_vec(),
    );
    let dir = context_dir(&[(
        "Dockerfile",
        "FROM busybox\nENV WHO=world\nADD plain.tar /plain/\nADD app.tar.gz /opt/app\nCOPY app.tar.gz /raw/\nADD http://example.test/dl/file.txt?x=1 /web/\nCOPY <<EOT /greeting\nhello $WHO\nEOT\nCOPY <<'EOT' /literal\nhello $WHO\nEOT\nCOPY <<NAMED /into/\nx\nNAMED\nCOPY --from=busybox /bin/busybox /bb\n",
    )]);
    fs::write(
        dir.path().join("plain.tar"),
        tar_bytes(&[("p/one", b"1")], false),
    )
    .unwrap();
    fs::write(
        dir.path().join("app.tar.gz"),
        tar_bytes(&[("bin/tool", b"tool"), ("README", b"r")], true),
    )
    .unwrap();
    let (r, log) = go(&mut b, dir.path(), &opts());
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    let root = b.rootfs(&r.state).unwrap();
    let p = root.path();
    assert_eq!(fs::read_to_string(p.join("plain/p/one")).unwrap(), "1");
    assert_eq!(
        fs::read_to_string(p.join("opt/app/bin/tool")).unwrap(),
        "tool"
    );
    assert!(p.join("raw/app.tar.gz").is_file(), "COPY never extracts");
    assert_eq!(
        fs::read_to_string(p.join("web/file.txt")).unwrap(),
        "downloaded"
    );
    assert_eq!(
        fs::read_to_string(p.join("greeting")).unwrap(),
        "hello world\n"
    );
    assert_eq!(
        fs::read_to_string(p.join("literal")).unwrap(),
        "hello $WHO\n"
    );
    assert_eq!(fs::read_to_string(p.join("into/NAMED")).unwrap(), "x\n");
    assert_eq!(
        fs::read(p.join("bb")).unwrap(),
        fs::read(p.join("bin/busybox")).unwrap(),
        "COPY --from=<image>"
    );
    if testutil::is_root() {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(p.join("opt/app/bin/tool")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 4321), "ADD keeps archive owners");
        let m = fs::metadata(p.join("raw/app.tar.gz")).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "COPY makes files root's");
    }
    assert_eq!(b.leftover_mounts(), 0);

    fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox\nADD https://unreachable.test/x /x\n",
    )
    .unwrap();
    let (r, _) = go(&mut b, dir.path(), &opts());
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Unavailable);
}

#[test]
fn heredoc_run_exec_form_shell_and_empty_diff() {
    if !can_run() {
        return;
    }
    let mut b = DirBackend::new().unwrap();
    let df = "FROM busybox
RUN <<EOF
echo line1 > /h
echo line2 >> /h
EOF
RUN [\"/bin/sh\", \"-c\", \"echo exec > /e\"]
SHELL [\"/bin/sh\", \"-e\", \"-c\"]
RUN false; echo not reached > /nr || true
RUN echo only output
RUN cat <<BODY > /inline
inline body
BODY
RUN <<EOF
#!/bin/sh -e
echo \"shebang $0\" > /sb
EOF
RUN rm /h
";
    let dir = context_dir(&[("Dockerfile", df)]);
    let (r, log) = go(&mut b, dir.path(), &opts());
    let e = r.unwrap_err();
    // With `-e`, `false;` fails the step.
    assert!(
        e.to_string()
            .starts_with("The command '/bin/sh -e -c false;"),
        "{e}\n{log}"
    );
    fs::write(dir.path().join("Dockerfile"), df.replace("false; ", "")).unwrap();
    let (r, log) = go(&mut b, dir.path(), &opts());
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    assert!(log.contains("only output"), "{log}");
    let h = &r.state.history;
    // base, heredoc RUN, exec RUN, SHELL, RUN nr, RUN echo (empty diff), RUN cat,
    // RUN shebang script, RUN rm
    assert_eq!(h.len(), 9);
    assert!(h[5].empty_layer, "a RUN that changes nothing adds no layer");
    assert_eq!(r.state.layers.len(), 7);
    assert!(
        h[7].created_by.starts_with("/bin/sh -e"),
        "{}",
        h[7].created_by
    );
    let root = b.rootfs(&r.state).unwrap();
    assert!(!root.path().join("h").exists(), "deleted via whiteout");
    assert_eq!(
        fs::read_to_string(root.path().join("inline")).unwrap(),
        "inline body\n"
    );
    assert_eq!(
        fs::read_to_string(root.path().join("sb")).unwrap(),
        "shebang /bin/sh\n",
        "a shebang script runs under its interpreter"
    );
    assert_eq!(fs::read_to_string(root.path().join("e")).unwrap(), "exec\n");
    assert_eq!(
        fs::read_to_string(root.path().join("nr")).unwrap(),
        "not reached\n"
    );
    let rm_layer = r.state.layers.last().unwrap();
    assert_eq!(b.layer_paths(rm_layer), [".wh.h"]);
    // Earlier layer had the heredoc output.
    let rt = b
        .rootfs(&build::ImageState {
            layers: r.state.layers[..2].to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        fs::read_to_string(rt.path().join("h")).unwrap(),
        "line1\nline2\n"
    );
}

#[test]
fn tar_stream_context_quiet_and_labels() {
    let mut b = DirBackend::new().unwrap();
    let t = tar_bytes(
        &[
            (
                "build/Dockerfile.custom",
                b"FROM busybox\nCOPY data.txt /\nLABEL a=b\n",
            ),
            ("data.txt", b"from tar"),
        ],
        true,
    );
    let ctx = BuildContext::from_tar(&t[..], None).unwrap();
    let mut out = Vec::new();
    let o = BuildOptions {
        dockerfile: "build/Dockerfile.custom".into(),
        quiet: true,
        labels: BTreeMap::from([("extra".to_string(), "1".to_string())]),
        tags: vec!["q:v1".into()],
        ..Default::default()
    };
    let r = build(&o, &ctx, &mut b, &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), format!("{}\n", r.image_id));
    assert_eq!(
        r.state.config.labels.get("extra").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        r.state.config.labels.get("a").map(String::as_str),
        Some("b")
    );
    assert_eq!(b.tags.get("q:v1"), Some(&r.image_id));
    let root = b.rootfs(&r.state).unwrap();
    assert_eq!(
        fs::read_to_string(root.path().join("data.txt")).unwrap(),
        "from tar"
    );

    let missing = BuildOptions {
        dockerfile: "nope".into(),
        ..Default::default()
    };
    let e = build(&missing, &ctx, &mut b, &mut Vec::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    // --pull reaches the backend (once per distinct base), and its progress the log.
    let pulls = b.pulls;
    let mut out = Vec::new();
    let o = BuildOptions {
        dockerfile: "build/Dockerfile.custom".into(),
        pull: true,
        ..Default::default()
    };
    build(&o, &ctx, &mut b, &mut out).unwrap();
    assert_eq!(b.pulls, pulls + 1);
    assert!(String::from_utf8_lossy(&out).contains("pulling busybox"));
    let e = build(&missing, &ctx, &mut b, &mut Vec::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn arg_scope_per_stage_and_workdir_chain() {
    let mut b = DirBackend::new().unwrap();
    let df = "ARG G=global
FROM busybox AS one
ARG S=stage1
ENV ONE_G=${G} ONE_S=${S}
WORKDIR /a
WORKDIR b
WORKDIR ../c
ENV LEGACY value with spaces
FROM busybox
ARG G
ENV TWO_G=${G} TWO_S=${S}
MAINTAINER someone
";
    let dir = context_dir(&[("Dockerfile", df)]);
    let one = BuildOptions {
        target: Some("one".into()),
        ..Default::default()
    };
    let (r, log) = go(&mut b, dir.path(), &one);
    let r = r.unwrap_or_else(|e| panic!("{e}\n{log}"));
    let c = &r.state.config;
    assert_eq!(
        c.env_get("ONE_G"),
        Some(""),
        "global ARG needs a redeclaration"
    );
    assert_eq!(c.env_get("ONE_S"), Some("stage1"));
    assert_eq!(c.working_dir, "/a/c");
    assert_eq!(c.env_get("LEGACY"), Some("value with spaces"));
    assert_eq!(r.state.layers.len(), 1, "metadata steps add no layers");
    let (r, log) = go(&mut b, dir.path(), &BuildOptions::default());
    let r = r.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(r.stages_built, vec![1]);
    let c = &r.state.config;
    assert_eq!(c.env_get("TWO_G"), Some("global"));
    assert_eq!(c.env_get("TWO_S"), Some(""), "stage ARGs do not leak");
    assert_eq!(r.state.author, "someone");
    // With a build arg the global value is replaced everywhere it is declared.
    let (r, _) = go(
        &mut b,
        dir.path(),
        &BuildOptions {
            build_args: BTreeMap::from([("G".to_string(), "cli".to_string())]),
            ..Default::default()
        },
    );
    assert_eq!(r.unwrap().state.config.env_get("TWO_G"), Some("cli"));
    // Blank base name from an unset arg is an error on the FROM line.
    fs::write(dir.path().join("Dockerfile"), "ARG IMG\n\nFROM ${IMG}\n").unwrap();
    let (r, _) = go(&mut b, dir.path(), &BuildOptions::default());
    let e = r.unwrap_err();
    assert_eq!(e.line(), Some(3), "{e}");
    assert!(e.to_string().contains("base name"), "{e}");
}
