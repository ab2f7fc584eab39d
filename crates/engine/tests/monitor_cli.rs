//! The monitor binary's command line (this test also makes cargo build `berth-monitor`
//! for the workspace's end-to-end tests, which find it next to their executables).

use std::process::Command;

#[test]
fn monitor_rejects_missing_and_bad_config() {
    let bin = env!("CARGO_BIN_EXE_berth-monitor");
    let out = Command::new(bin).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
    let out = Command::new(bin).arg("{not json").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad config"));
}

#[test]
fn monitor_reports_runtime_failure_on_status_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = engine::monitor::MonitorConfig {
        id: "x".into(),
        runtime: "/bin/false".into(),
        runtime_root: dir.path().join("rt"),
        builtin_runtime: false,
        bundle: dir.path().to_path_buf(),
        log_path: None,
        log_max_size: 0,
        log_max_files: 1,
        exit_file: dir.path().join("exit.json"),
        attach_socket: dir.path().join("a.sock"),
        tty: false,
        open_stdin: false,
        stdin_once: false,
        wait_go: false,
        unmount: None,
        oom_files: vec![],
    };
    let out = Command::new(env!("CARGO_BIN_EXE_berth-monitor"))
        .arg(serde_json::to_string(&cfg).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line: engine::monitor::StatusLine =
        serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert!(
        matches!(line, engine::monitor::StatusLine::Failed { message } if message.contains("create failed"))
    );
    assert!(!dir.path().join("exit.json").exists());
}
