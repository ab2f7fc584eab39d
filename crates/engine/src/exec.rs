//! Exec instances: extra processes run in a running container through
//! `<runtime> exec --process <json> <id>` (foreground: the runtime exits with the
//! process's exit status).
//!
//! Without a terminal the process's stdio are the runtime child's pipes. With one
//! (`Tty: true`) the engine listens on `<bundle>/e-<short id>.sock`, passes it as the
//! runtime's `--console-socket` and receives the pty master over it (SCM_RIGHTS); the
//! master is the process's stdio for the daemon, and a copy kept with the instance serves
//! `POST /exec/{id}/resize`.

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
    /// The pty master of a terminal exec (for resizes).
    console: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
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
    /// The pty master when it has a terminal (its stdin, stdout and stderr).
    pub console: Option<std::os::fd::OwnedFd>,
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
        let id = crate::containers::new_id();
        let cmd = cfg.cmd.clone().unwrap_or_default().join(" ");
        self.exec_event(&rec.id, &format!("exec_create: {cmd}"), &id, None);
        self.execs().lock().insert(
            id.clone(),
            ExecEntry {
                container: rec.id.clone(),
                config: cfg,
                running: false,
                started: false,
                exit_code: None,
                pid: 0,
                console: None,
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
        // The host pid, from the runtime's pid file while the process runs.
        let pid = if e.running && e.pid == 0 {
            std::fs::read_to_string(self.bundle(&e.container).join(format!("exec-{id}.pid")))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0)
        } else {
            e.pid
        };
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
            pid,
            detach_keys: e.config.detach_keys.clone(),
        })
    }

    /// Sets the initial terminal size of a not yet started exec (`ConsoleSize` of
    /// `POST /exec/{id}/start`, which overrides the one given at create).
    pub fn exec_set_console_size(&self, id: &str, size: Option<&[u16]>) {
        if let Some([h, w]) = size {
            if *h > 0 && *w > 0 {
                if let Some(e) = self.execs().lock().get_mut(id).filter(|e| !e.started) {
                    e.config.console_size = Some(vec![*h, *w]);
                }
            }
        }
    }

    /// Starts an exec instance; the caller streams the child's stdio and reports its exit
    /// with [`Engine::exec_finished`].
    pub async fn exec_start(&self, id: &str) -> Result<ExecProcess> {
        self.warm_cgroup_attach();
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
        let cmd = cfg.cmd.clone().unwrap_or_default().join(" ");
        self.exec_event(&container, &format!("exec_start: {cmd}"), id, None);
        let res = self.spawn_exec(id, &container, &cfg).await;
        if res.is_err() {
            self.exec_finished(id, 126);
        }
        res
    }

    pub(crate) async fn spawn_exec(
        &self,
        id: &str,
        container: &str,
        cfg: &ExecConfig,
    ) -> Result<ExecProcess> {
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
        process["terminal"] = serde_json::json!(cfg.tty);
        if let Some(env) = process["env"].as_array_mut() {
            for e in &cfg.env {
                env.push(serde_json::json!(e));
            }
            if cfg.tty
                && !env
                    .iter()
                    .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
            {
                env.push(serde_json::json!("TERM=xterm"));
            }
        }
        match cfg.console_size.as_deref() {
            Some([h, w]) if cfg.tty && *h > 0 && *w > 0 => {
                process["consoleSize"] = serde_json::json!({"height": h, "width": w});
            }
            _ => {
                if let Some(p) = process.as_object_mut() {
                    p.remove("consoleSize");
                }
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
        let mut cmd = tokio::process::Command::new(&runtime);
        cmd.arg("--root").arg(root).arg("exec");
        // Short: a unix socket path has at most 107 bytes.
        let sock_path = bundle.join(format!("e-{}.sock", &id[..12.min(id.len())]));
        let listener = if cfg.tty {
            let _ = std::fs::remove_file(&sock_path);
            let l = tokio::net::UnixListener::bind(&sock_path)
                .map_err(|e| EngineError::io("listen on console socket", &sock_path, e))?;
            cmd.arg("--console-socket").arg(&sock_path);
            Some(l)
        } else {
            None
        };
        let mut child = cmd
            .arg("--process")
            .arg(&pfile)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(container)
            .stdin(if cfg.attach_stdin && !cfg.tty {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| EngineError::Runtime(format!("run {}: {e}", runtime.display())))?;
        let Some(listener) = listener else {
            return Ok(ExecProcess {
                child,
                tty: false,
                console: None,
            });
        };
        let received = tokio::select! {
            r = receive_console(&listener) => r,
            st = child.wait() => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = e.read_to_string(&mut err).await;
                }
                Err(EngineError::Runtime(format!(
                    "exec in container {container} failed ({}): {}",
                    st.map(|s| s.to_string()).unwrap_or_default(),
                    err.trim()
                )))
            }
        };
        drop(listener);
        let _ = std::fs::remove_file(&sock_path);
        let master = match received {
            Ok(m) => m,
            Err(e) => {
                let _ = child.start_kill();
                return Err(e);
            }
        };
        let keep = master
            .try_clone()
            .map_err(|e| EngineError::io("duplicate pty master of exec", &sock_path, e))?;
        if let Some(e) = self.execs().lock().get_mut(id) {
            e.console = Some(std::sync::Arc::new(keep));
        }
        Ok(ExecProcess {
            child,
            tty: true,
            console: Some(master),
        })
    }

    /// Resizes the terminal of a terminal exec (`POST /exec/{id}/resize`); a no-op for an
    /// exec without one, as in Docker.
    pub fn exec_resize(&self, id: &str, height: u16, width: u16) -> Result<()> {
        let console = {
            let m = self.execs().lock();
            let e = m
                .get(id)
                .ok_or_else(|| EngineError::NoSuchExec(id.to_string()))?;
            e.console.clone()
        };
        match console {
            Some(fd) => set_winsize(&fd, height, width, "exec terminal"),
            None => Ok(()),
        }
    }

    /// Publishes a container event about an exec instance, with Docker's attributes
    /// (`execID`, and `exitCode` for `exec_die`).
    pub(crate) fn exec_event(
        &self,
        container: &str,
        action: &str,
        exec_id: &str,
        code: Option<i64>,
    ) {
        if self.events().listeners() == 0 {
            return;
        }
        let Ok(rec) = self.record(container) else {
            return;
        };
        let mut attrs = rec.config.labels.clone();
        attrs.insert("name".into(), rec.name.clone());
        attrs.insert("image".into(), rec.image.clone());
        attrs.insert("execID".into(), exec_id.to_string());
        if let Some(c) = code {
            attrs.insert("exitCode".into(), c.to_string());
        }
        self.events().publish("container", action, &rec.id, attrs);
    }

    /// Records the exit code of an exec instance.
    pub fn exec_finished(&self, id: &str, code: i64) {
        let mut m = self.execs().lock();
        if let Some(e) = m.get_mut(id) {
            e.running = false;
            e.exit_code = Some(code);
            e.console = None;
        }
        let container = m.get(id).map(|e| e.container.clone());
        drop(m);
        if let Some(c) = container {
            self.exec_event(&c, "exec_die", id, Some(code));
            let b = self.bundle(&c);
            let _ = std::fs::remove_file(b.join(format!("exec-{id}.json")));
            let _ = std::fs::remove_file(b.join(format!("exec-{id}.pid")));
        }
    }
}

/// Receives the pty master that the runtime sends on the console socket (one connection,
/// one message carrying the descriptor).
async fn receive_console(listener: &tokio::net::UnixListener) -> Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let (conn, _) = listener
        .accept()
        .await
        .map_err(|e| EngineError::io("accept on console socket", "exec", e))?;
    loop {
        conn.readable()
            .await
            .map_err(|e| EngineError::io("wait on console socket", "exec", e))?;
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let r = conn.try_io(tokio::io::Interest::READABLE, || {
            recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            )
            .map(|msg| {
                let mut fd = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            fd = fds.first().copied();
                        }
                    }
                }
                (msg.bytes, fd)
            })
            .map_err(std::io::Error::from)
        });
        match r {
            Ok((_, Some(fd))) => {
                // SAFETY: the kernel just installed this descriptor in our table for us
                // (SCM_RIGHTS); nothing else owns it.
                return Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            }
            Ok((0, None)) => {
                return Err(EngineError::Runtime(
                    "the runtime sent no pty master on the console socket".into(),
                ))
            }
            Ok((_, None)) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(EngineError::io("receive pty master", "exec", e)),
        }
    }
}

/// Sets the window size of the terminal `fd` (a pty master or slave).
fn set_winsize(fd: &impl std::os::fd::AsRawFd, height: u16, width: u16, what: &str) -> Result<()> {
    nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the
    // duration of the call; the descriptor is open for that duration too.
    unsafe { tiocswinsz(fd.as_raw_fd(), &ws) }
        .map_err(|e| EngineError::io("resize terminal", what, e.into()))?;
    Ok(())
}

/// Resizes the terminal whose slave is the stdin of `pid`.
pub fn resize_pty_of(pid: i32, height: u16, width: u16) -> Result<()> {
    let path = format!("/proc/{pid}/fd/0");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| EngineError::io("open terminal", &path, e))?;
    set_winsize(&f, height, width, &path)
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
