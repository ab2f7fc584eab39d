//! Exec instances: extra processes run in a running container through
//! `<runtime> exec --process <json> <id>` (foreground: the runtime exits with the
//! process's exit status).

use crate::error::{EngineError, Result};
use crate::Engine;
use api::{ExecConfig, ExecInspect, ExecProcessConfig};
use std::collections::HashMap;
use std::sync::Mutex;

struct ExecEntry {
    container: String,
    config: ExecConfig,
    running: bool,
    started: bool,
    exit_code: Option<i64>,
    pid: i64,
}

/// The exec instances of all containers.
#[derive(Default)]
pub struct Execs {
    map: Mutex<HashMap<String, ExecEntry>>,
}

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecEntry>> {
        match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Ids of the exec instances of a container.
    pub fn ids_of(&self, container: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.container == container)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Forgets a removed container's instances.
    pub fn remove_container(&self, container: &str) {
        self.lock().retain(|_, e| e.container != container);
    }
}

/// A started exec process: its runtime child with piped stdio.
pub struct ExecProcess {
    /// The `runtime exec` child.
    pub child: tokio::process::Child,
    /// Whether it has a terminal.
    pub tty: bool,
}

impl Engine {
    /// Creates an exec instance in a running container (`POST /containers/{id}/exec`).
    pub fn exec_create(&self, name: &str, cfg: ExecConfig) -> Result<String> {
        let rec = self.record(name)?;
        if !rec.state.status.is_running() {
            return Err(EngineError::Conflict(format!(
                "container {} is not running",
                rec.id
            )));
        }
        if rec.state.status == crate::containers::Status::Paused {
            return Err(EngineError::Conflict(format!(
                "container {} is paused, unpause the container before exec",
                rec.id
            )));
        }
        if cfg.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(EngineError::Invalid("No exec command specified".into()));
        }
        if cfg.tty {
            return Err(EngineError::Invalid(
                "exec with a terminal is not supported yet".into(),
            ));
        }
        let id = crate::containers::new_id();
        self.execs().lock().insert(
            id.clone(),
            ExecEntry {
                container: rec.id.clone(),
                config: cfg,
                running: false,
                started: false,
                exit_code: None,
                pid: 0,
            },
        );
        Ok(id)
    }

    /// Inspects an exec instance.
    pub fn exec_inspect(&self, id: &str) -> Result<ExecInspect> {
        let m = self.execs().lock();
        let e = m
            .get(id)
            .ok_or_else(|| EngineError::NoSuchExec(id.to_string()))?;
        let cmd = e.config.cmd.clone().unwrap_or_default();
        Ok(ExecInspect {
            can_remove: false,
            id: id.to_string(),
            running: e.running,
            exit_code: e.exit_code,
            process_config: ExecProcessConfig {
                privileged: e.config.privileged,
                user: e.config.user.clone(),
                tty: e.config.tty,
                entrypoint: cmd.first().cloned().unwrap_or_default(),
                arguments: cmd.iter().skip(1).cloned().collect(),
            },
            open_stdin: e.config.attach_stdin,
            open_stderr: e.config.attach_stderr,
            open_stdout: e.config.attach_stdout,
            container_id: e.container.clone(),
            pid: e.pid,
            detach_keys: e.config.detach_keys.clone(),
        })
    }

    /// Starts an exec instance; the caller streams the child's stdio and reports its exit
    /// with [`Engine::exec_finished`].
    pub async fn exec_start(&self, id: &str) -> Result<ExecProcess> {
        let (container, cfg) = {
            let mut m = self.execs().lock();
            let e = m
                .get_mut(id)
                .ok_or_else(|| EngineError::NoSuchExec(id.to_string()))?;
            if e.started {
                return Err(EngineError::Conflict(format!(
                    "Error: Exec command {id} has already run"
                )));
            }
            e.started = true;
            e.running = true;
            (e.container.clone(), e.config.clone())
        };
        let res = self.spawn_exec(id, &container, &cfg).await;
        if res.is_err() {
            self.exec_finished(id, 126);
        }
        res
    }

    async fn spawn_exec(&self, id: &str, container: &str, cfg: &ExecConfig) -> Result<ExecProcess> {
        let rec = self.record(container)?;
        if !rec.state.status.is_running() {
            return Err(EngineError::Conflict(format!(
                "container {container} is not running"
            )));
        }
        let bundle = self.bundle(container);
        let spec_path = bundle.join("config.json");
        let spec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&spec_path).map_err(|e| EngineError::io("read", &spec_path, e))?,
        )
        .map_err(|e| EngineError::Runtime(format!("parse {}: {e}", spec_path.display())))?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(cfg.cmd.clone().unwrap_or_default());
        process["terminal"] = serde_json::json!(false);
        if let Some(env) = process["env"].as_array_mut() {
            for e in &cfg.env {
                env.push(serde_json::json!(e));
            }
        }
        if !cfg.working_dir.is_empty() {
            process["cwd"] = serde_json::json!(cfg.working_dir);
        }
        if !cfg.user.is_empty() {
            let ident = crate::spec::resolve_user(&bundle.join("rootfs"), &cfg.user, &[])?;
            process["user"] = serde_json::json!({"uid": ident.uid, "gid": ident.gid, "additionalGids": ident.additional_gids});
        }
        if cfg.privileged {
            let all: Vec<&str> = crate::spec::ALL_CAPS.to_vec();
            process["capabilities"] =
                serde_json::json!({"bounding": all, "effective": all, "permitted": all});
        }
        let pfile = bundle.join(format!("exec-{id}.json"));
        crate::fsutil::write_atomic(
            &pfile,
            &serde_json::to_vec(&process)
                .map_err(|e| EngineError::Runtime(format!("serialize process: {e}")))?,
            false,
        )?;
        let (runtime, root) = self.runtime();
        let pid_file = bundle.join(format!("exec-{id}.pid"));
        let child = tokio::process::Command::new(&runtime)
            .arg("--root")
            .arg(root)
            .arg("exec")
            .arg("--process")
            .arg(&pfile)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(container)
            .stdin(if cfg.attach_stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| EngineError::Runtime(format!("run {}: {e}", runtime.display())))?;
        Ok(ExecProcess { child, tty: false })
    }

    /// Records the exit code of an exec instance.
    pub fn exec_finished(&self, id: &str, code: i64) {
        let mut m = self.execs().lock();
        if let Some(e) = m.get_mut(id) {
            e.running = false;
            e.exit_code = Some(code);
        }
        let bundle_files = m.get(id).map(|e| self.bundle(&e.container));
        drop(m);
        if let Some(b) = bundle_files {
            let _ = std::fs::remove_file(b.join(format!("exec-{id}.json")));
            let _ = std::fs::remove_file(b.join(format!("exec-{id}.pid")));
        }
    }
}

/// Resizes the terminal whose slave is the stdin of `pid`.
pub fn resize_pty_of(pid: i32, height: u16, width: u16) -> Result<()> {
    nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);
    let path = format!("/proc/{pid}/fd/0");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| EngineError::io("open terminal", &path, e))?;
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the
    // duration of the call; the descriptor is open for that duration too.
    unsafe { tiocswinsz(f.as_raw_fd(), &ws) }
        .map_err(|e| EngineError::io("resize terminal", &path, e.into()))?;
    Ok(())
}

/// The pids of the processes in the same pid namespace as `init` (host view).
pub fn pids_of(init: i32) -> Vec<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns) {
                out.push(pid);
            }
        }
    }
    out.sort_unstable();
    out
}
