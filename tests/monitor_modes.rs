//! `berth-monitor` driving a container both ways it can: through berth's runtime library
//! linked in-process (`builtin_runtime`, what the engine uses with berth-runtime), and by
//! executing a runtime binary with runc's command line (what it does for runc, crun or any
//! other runtime). Both must give the same status lines, logs, exit records and errors.

mod engine_support;

use engine::monitor::{ExitRecord, MonitorConfig, StatusLine};
use engine_support::monitor_binary;
use std::process::{Command, Stdio};

struct Outcome {
    status_lines: Vec<StatusLine>,
    exit: Option<ExitRecord>,
    log: String,
    /// Whether the runtime still has state (its state directory or the container's
    /// cgroup) for the container afterwards.
    state_left: bool,
}

/// Runs `bundle` under a monitor and returns what it reported.
fn supervise(bundle: &testutil::Bundle, builtin: bool, tty: bool) -> Outcome {
    let work = tempfile::tempdir().unwrap();
    let id = testutil::unique_name("mon");
    let runtime_root = work.path().join("rt");
    let cfg = MonitorConfig {
        id: id.clone(),
        runtime: env!("CARGO_BIN_EXE_berth-runtime").into(),
        runtime_root: runtime_root.clone(),
        builtin_runtime: builtin,
        bundle: bundle.path().to_path_buf(),
        log_path: Some(work.path().join("log.json")),
        log_max_size: 0,
        log_max_files: 1,
        exit_file: work.path().join("exit.json"),
        attach_socket: work.path().join("attach.sock"),
        tty,
        open_stdin: false,
        stdin_once: false,
        wait_go: false,
        unmount: None,
        oom_files: vec![],
    };
    let out = Command::new(monitor_binary())
        .arg(serde_json::to_string(&cfg).unwrap())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let status_lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad status line {l:?}: {e}")))
        .collect();
    let exit = std::fs::read(&cfg.exit_file)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    let log = std::fs::read_to_string(work.path().join("log.json"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{}",
                v["stream"].as_str().unwrap(),
                v["log"].as_str().unwrap()
            )
        })
        .collect();
    let state_left = runtime_root.join(&id).exists() || testutil::berth_cgroup_left(&id);
    Outcome {
        status_lines,
        exit,
        log,
        state_left,
    }
}

fn skip() -> bool {
    if !testutil::is_root() {
        eprintln!("skipping: needs root");
        return true;
    }
    false
}

fn assert_ran(o: &Outcome, code: i32) {
    assert!(
        matches!(o.status_lines.first(), Some(StatusLine::Created { pid }) if *pid > 0),
        "{:?}",
        o.status_lines
    );
    assert!(matches!(
        o.status_lines.get(1),
        Some(StatusLine::Started { .. })
    ));
    assert_eq!(o.status_lines.get(2), Some(&StatusLine::Exited));
    assert_eq!(o.exit.as_ref().map(|e| e.exit_code), Some(code));
    assert!(!o.state_left, "the runtime's state was not deleted");
}

#[test]
fn both_modes_run_a_container_with_pipes() {
    if skip() {
        return;
    }
    let bundle = testutil::Bundle::new(&[
        "sh",
        "-c",
        "echo out; echo err >&2; grep -E '^Sig(Ign|Blk)' /proc/self/status; exit 3",
    ])
    .unwrap();
    for builtin in [true, false] {
        let o = supervise(&bundle, builtin, false);
        assert_ran(&o, 3);
        assert!(
            o.log.contains("stdout:out\n"),
            "builtin={builtin}: {}",
            o.log
        );
        assert!(
            o.log.contains("stderr:err\n"),
            "builtin={builtin}: {}",
            o.log
        );
        // A fresh process's signal state, whoever forked it: the monitor blocks SIGCHLD
        // and SIGPIPE, and Rust programs ignore SIGPIPE.
        assert!(
            o.log.contains("stdout:SigBlk:\t0000000000000000\n"),
            "builtin={builtin}: {}",
            o.log
        );
        assert!(
            o.log.contains("stdout:SigIgn:\t0000000000000000\n"),
            "builtin={builtin}: {}",
            o.log
        );
    }
}

#[test]
fn both_modes_give_a_terminal() {
    if skip() {
        return;
    }
    let mut bundle = testutil::Bundle::new(&["sh", "-c", "tty; exit 5"]).unwrap();
    bundle.config["process"]["terminal"] = serde_json::json!(true);
    bundle.write_config().unwrap();
    for builtin in [true, false] {
        let o = supervise(&bundle, builtin, true);
        assert_ran(&o, 5);
        assert!(
            o.log.contains("stdout:/dev/pts/"),
            "builtin={builtin}: {}",
            o.log
        );
    }
}

#[test]
fn both_modes_report_a_failed_create_and_leave_nothing() {
    if skip() {
        return;
    }
    let bundle = testutil::Bundle::new(&["/no/such/program"]).unwrap();
    for builtin in [true, false] {
        let o = supervise(&bundle, builtin, false);
        match o.status_lines.as_slice() {
            [StatusLine::Failed { message }] => {
                assert!(message.contains("create failed"), "{message}");
                assert!(message.contains("/no/such/program"), "{message}");
            }
            other => panic!("builtin={builtin}: {other:?}"),
        }
        assert!(o.exit.is_none());
        assert!(!o.state_left, "builtin={builtin}: runtime state left");
    }
}
