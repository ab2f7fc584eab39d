//! The runtime's operations on containers: create, start, state, kill, delete, run,
//! exec, list, ps, pause, resume, update.
//!
//! These fork (see [`crate::init`]) and so assume a single-threaded caller: the
//! `berth-runtime` binary. A multi-threaded program should run the binary instead.

use crate::error::{io_err, sys_err, Error, Result};
use crate::init::{self, ChildArgs};
use crate::rootfs::CgroupMounts;
use crate::spec::{self, Bundle};
use crate::state::{OciState, Record, Status};
use crate::sync::{self, Sock};
use crate::{hooks, util};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceType,
    LinuxResources, Process, Spec,
};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the exec fifo in a container directory.
pub const FIFO: &str = "exec.fifo";
/// Marker file of a paused container.
pub const PAUSED: &str = "paused";

/// Options of `create` and `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The bundle directory (holding config.json).
    pub bundle: PathBuf,
    /// Where to write the init's host pid.
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when `process.terminal` is true.
    pub console_socket: Option<PathBuf>,
    /// Number of fds above stdio to pass to the program.
    pub preserve_fds: i32,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Don't create a new session keyring.
    pub no_new_keyring: bool,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Unix socket that receives the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// Where to write the process's host pid.
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs instead of waiting for it.
    pub detach: bool,
    /// Number of fds above stdio to pass to the program.
    pub preserve_fds: i32,
}

/// An OCI runtime rooted at a state directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    systemd_cgroup: bool,
    attach_warmup: bool,
}

impl Runtime {
    /// The container's seccomp filter compiled to BPF, from the cache under
    /// `<root>/.seccomp` when an equal profile was compiled before (see
    /// `seccomp::Program`). Compiled here, before the fork, so that the child only loads it.
    fn seccomp_program(&self, spec: &Spec) -> Result<Option<seccomp::Program>> {
        let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
            return Ok(None);
        };
        seccomp::Program::compile_cached(s, &self.root.join(".seccomp"))
            .map(Some)
            .map_err(Error::Seccomp)
    }
}

/// Removes what a failed `create` made, unless disarmed.
struct Cleanup {
    dir: Option<PathBuf>,
    cgroup: Option<cgroups::Cgroup>,
    pid: Option<(i32, u64)>,
    resctrl: Option<crate::resctrl::Placement>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((pid, start)) = self.pid {
            if util::alive(pid, start) {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                wait_dead(pid, start, Duration::from_secs(5));
            }
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
            let _ = cg.destroy();
        }
        if let Some(p) = &self.resctrl {
            let _ = p.undo();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Polls until `pid` (with this start time) is gone or a zombie.
fn wait_dead(pid: i32, start: u64, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while util::alive(pid, start) {
        if Instant::now() > until {
            return false;
        }
        // Reap it if it is our child (run, or a subreaper caller); ignore otherwise.
        let _ = waitpid(
            Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    true
}

/// Checks a container id: non-empty, no path separators, runc's character set.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    CloneFlags::from_bits_retain(t as i32)
}

fn read_pid(data: &[u8]) -> Option<i32> {
    Some(i32::from_le_bytes(data.get(..4)?.try_into().ok()?))
}

/// Allow rules for the devices every container gets, plus `linux.devices`.
fn device_rules(spec: &Spec) -> Vec<LinuxDeviceCgroup> {
    let mk = |t: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(t)
            .access(access.to_string());
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().ok()
    };
    let mut out: Vec<LinuxDeviceCgroup> = Vec::new();
    out.extend(mk(LinuxDeviceType::C, None, None, "m"));
    out.extend(mk(LinuxDeviceType::B, None, None, "m"));
    for (major, minor) in crate::rootfs::default_device_numbers() {
        out.extend(mk(LinuxDeviceType::C, Some(major), Some(minor), "rwm"));
    }
    out.extend(mk(LinuxDeviceType::C, Some(5), Some(1), "rwm")); // console
    out.extend(mk(LinuxDeviceType::C, Some(5), Some(2), "rwm")); // ptmx
    out.extend(mk(LinuxDeviceType::C, Some(136), None, "rwm")); // pts
    out.extend(mk(LinuxDeviceType::C, Some(10), Some(200), "rwm")); // tun
    let devices = spec.linux().as_ref().and_then(|l| l.devices().as_ref());
    for d in devices.into_iter().flatten() {
        let t = match d.typ() {
            LinuxDeviceType::U => LinuxDeviceType::C,
            t => t,
        };
        out.extend(mk(t, Some(d.major()), Some(d.minor()), "rwm"));
    }
    out
}

fn cgroup_mounts(cg: &cgroups::Cgroup) -> CgroupMounts {
    let mut dirs = Vec::new();
    let mut any_v1 = false;
    for (h, dir) in cg.dirs() {
        if h.v2 {
            dirs.push(("unified".to_string(), dir.to_path_buf()));
        } else {
            any_v1 = true;
            let names: Vec<&str> = h
                .controllers
                .iter()
                .map(|c| c.strip_prefix("name=").unwrap_or(c))
                .collect();
            dirs.push((names.join(","), dir.to_path_buf()));
        }
    }
    CgroupMounts {
        unified_only: !any_v1,
        dirs,
    }
}

/// Hands a process's seccomp listener (`fd`, from a `SECCOMP` message) to the agent of
/// the container's profile, with the container process state for `pid` (see `agent`).
fn hand_over_listener(spec: &Spec, pid: i32, state: &OciState, fd: Option<OwnedFd>) -> Result<()> {
    let fd = fd.ok_or_else(|| Error::Init("seccomp listener message without fd".into()))?;
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Err(Error::Init(
            "seccomp listener without a seccomp profile".into(),
        ));
    };
    crate::agent::hand_over(
        seccomp,
        &crate::agent::process_state(seccomp, pid, state),
        fd,
    )
}

/// Sends `fd` to a console socket, runc-style (SCM_RIGHTS with a small name payload).
fn send_console(sock: &UnixStream, fd: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(b"/dev/ptmx")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
    .map_err(sys_err("send the pty master to the console socket"))
}

fn write_id_map(pid: i32, file: &str, maps: &[oci_spec::runtime::LinuxIdMapping]) -> Result<()> {
    let mut text = String::new();
    for m in maps {
        text.push_str(&format!(
            "{} {} {}\n",
            m.container_id(),
            m.host_id(),
            m.size()
        ));
    }
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, text).map_err(io_err(format!("write {path}")))
}

/// Outcome of the parent's side of the sync protocol.
struct Spawned {
    pid: i32,
    start_time: u64,
    /// The pty master when there is a terminal but no console socket.
    pty: Option<OwnedFd>,
}

impl Runtime {
    /// A runtime keeping container state under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            root: root.into(),
            systemd_cgroup: false,
            attach_warmup: false,
        }
    }

    /// Starts the kernel's grace period for the first `cgroup.procs` write of a create
    /// or an exec as soon as the container's cgroups exist, in a forked child
    /// (`cgroups::warm_in_child`), so the join waits only for what is left of it. For a
    /// runtime process of its own (`berth-runtime`); the engine's monitor leaves it off,
    /// as the daemon warms up for it (`cgroups::AttachWarmer`). Not before the cgroups
    /// are made: the warm-up holds the cgroup mutex for the grace period, which would
    /// hold back their `mkdir`.
    pub fn with_attach_warmup(mut self, on: bool) -> Runtime {
        self.attach_warmup = on;
        self
    }

    /// Interprets `linux.cgroupsPath` with the systemd convention (`slice:prefix:name`).
    pub fn with_systemd_cgroup(mut self, on: bool) -> Runtime {
        self.systemd_cgroup = on;
        self
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.root.join(id))
    }

    fn load(&self, id: &str) -> Result<(PathBuf, Record)> {
        let dir = self.dir(id)?;
        let rec = Record::load(&dir, id)?;
        Ok((dir, rec))
    }

    fn cgroup_of(&self, rec: &Record) -> Result<cgroups::Cgroup> {
        cgroups::Cgroup::new(rec.cgroups_path.as_deref(), &rec.id, rec.systemd_cgroup).map_err(
            |source| Error::Cgroup {
                what: format!("open for {}", rec.id),
                source,
            },
        )
    }

    /// Creates a container from a bundle: everything is set up and the init waits for
    /// [`Runtime::start`]. Returns the init's host pid. On failure nothing is left.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<i32> {
        self.create_inner(id, opts, false).map(|(pid, _)| pid)
    }

    /// `create` for a caller that supervises the container itself, in-process (the
    /// engine's monitor): with `process.terminal` and no console socket, the pty master
    /// is returned instead of sent. Returns the init's host pid and the pty master. The
    /// caller must be single-threaded (the runtime forks), and its fds 0, 1 and 2 become
    /// the container's stdio.
    pub fn create_supervised(
        &self,
        id: &str,
        opts: &CreateOptions,
    ) -> Result<(i32, Option<OwnedFd>)> {
        self.create_inner(id, opts, true)
    }

    /// `create`; with `proxy`, a terminal without console socket is allowed and the pty
    /// master is returned (for `run` to proxy).
    fn create_inner(
        &self,
        id: &str,
        opts: &CreateOptions,
        proxy: bool,
    ) -> Result<(i32, Option<OwnedFd>)> {
        let dir = self.dir(id)?;
        let bundle = spec::load_bundle(&opts.bundle)?;
        let process = bundle
            .spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::InvalidConfig("process is missing".into()))?;
        let console = if proxy && opts.console_socket.is_none() {
            None
        } else {
            self.console(process, opts.console_socket.as_deref())?
        };
        // Without a resctrl mount, intelRdt fails here, before anything is made.
        let rdt = bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.intel_rdt().as_ref());
        let resctrl = rdt.map(|_| crate::resctrl::Resctrl::find()).transpose()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .map_err(io_err(format!("create state root {}", self.root.display())))?;
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(id.to_string()))
            }
            Err(e) => return Err(io_err(format!("create {}", dir.display()))(e)),
        }
        let mut guard = Cleanup {
            dir: Some(dir.clone()),
            cgroup: None,
            pid: None,
            resctrl: None,
        };
        let fifo_path = dir.join(FIFO);
        nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o622))
            .map_err(sys_err(format!("mkfifo {}", fifo_path.display())))?;
        std::fs::set_permissions(&fifo_path, std::fs::Permissions::from_mode(0o622))
            .map_err(io_err(format!("chmod {}", fifo_path.display())))?;
        let opath = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC;
        let fifo = nix::fcntl::open(&fifo_path, opath, nix::sys::stat::Mode::empty())
            .map_err(sys_err(format!("open {}", fifo_path.display())))?;
        let dir_fd = nix::fcntl::open(
            &dir,
            opath | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys_err(format!("open {}", dir.display())))?;

        let linux = bundle.spec.linux().as_ref();
        let cgroups_path = linux
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned());
        let cg = cgroups::Cgroup::new(cgroups_path.as_deref(), id, self.systemd_cgroup).map_err(
            |source| Error::Cgroup {
                what: format!("resolve path for {id}"),
                source,
            },
        )?;
        cg.create().map_err(|source| Error::Cgroup {
            what: format!("create for {id}"),
            source,
        })?;
        guard.cgroup = Some(cg.clone());
        // Reaped on return, once the init's join has waited for the same grace period.
        let _warmup = self.attach_warmup.then(cgroups::warm_in_child).flatten();
        let mut resources: LinuxResources = linux
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        let mut rules = resources.devices().clone().unwrap_or_default();
        rules.extend(device_rules(&bundle.spec));
        resources.set_devices(Some(rules));
        cg.apply(&resources).map_err(|source| Error::Cgroup {
            what: format!("apply resources for {id}"),
            source,
        })?;
        if let (Some(r), Some(rdt)) = (&resctrl, rdt) {
            guard.resctrl = Some(r.setup(id, rdt)?);
        }
        let wants_cg_mount = bundle
            .spec
            .mounts()
            .iter()
            .flatten()
            .any(|m| matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")));
        let cg_mounts = if wants_cg_mount {
            cgroup_mounts(&cg)
        } else {
            CgroupMounts::default()
        };

        let (joins, new_user, new_flags) = namespaces(&bundle.spec)?;
        let (parent_sock, child_sock) = Sock::pair().map_err(sys_err("create socketpair"))?;
        let args = ChildArgs {
            spec: &bundle.spec,
            process,
            rootfs: &bundle.rootfs,
            bundle: &bundle.dir,
            sock: &child_sock,
            joins,
            new_user,
            new_flags,
            cgroup: None,
            resctrl: None,
            cg_mounts,
            fifo: Some(fifo.as_raw_fd()),
            state_dir: Some(dir_fd.as_raw_fd()),
            no_pivot: opts.no_pivot,
            preserve_fds: opts.preserve_fds,
            no_new_keyring: opts.no_new_keyring,
            id,
            exec: false,
            seccomp: self.seccomp_program(&bundle.spec)?,
            idmapped: crate::idmap::prepare(&bundle.spec, &bundle.dir)?,
        };
        // SAFETY: the runtime is single-threaded (see the module docs), so the child may
        // allocate and run arbitrary code.
        let stage1 = match unsafe { fork() }.map_err(sys_err("fork"))? {
            ForkResult::Child => {
                drop(parent_sock);
                init::stage1(&args)
            }
            ForkResult::Parent { child } => child,
        };
        drop(args);
        drop(child_sock);
        let spawned = self.drive(
            id,
            &bundle,
            &parent_sock,
            stage1,
            &cg,
            console.as_ref(),
            &mut guard,
        )?;
        if let Some(devices) = linux.and_then(|l| l.net_devices().as_ref()) {
            move_net_devices(spawned.pid, devices)?;
        }
        drop(fifo);
        drop(dir_fd);
        let rec = Record {
            id: id.to_string(),
            pid: spawned.pid,
            start_time: spawned.start_time,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: util::now_rfc3339(),
            cgroups_path,
            systemd_cgroup: self.systemd_cgroup,
            config: Box::new(bundle.spec.clone()),
            resctrl: guard.resctrl.clone(),
        };
        rec.save(&dir)?;
        if let Some(pf) = &opts.pid_file {
            util::write_atomic(pf, spawned.pid.to_string().as_bytes(), 0o644)
                .map_err(io_err(format!("write pid file {}", pf.display())))?;
        }
        guard.dir = None;
        guard.cgroup = None;
        guard.pid = None;
        guard.resctrl = None;
        Ok((spawned.pid, spawned.pty))
    }

    fn console(&self, process: &Process, socket: Option<&Path>) -> Result<Option<UnixStream>> {
        if process.terminal() != Some(true) {
            return Ok(None);
        }
        let Some(path) = socket else {
            return Err(Error::InvalidConfig(
                "process.terminal is true: --console-socket is required".into(),
            ));
        };
        UnixStream::connect(path).map(Some).map_err(io_err(format!(
            "connect to console socket {}",
            path.display()
        )))
    }

    /// The parent's side of the sync protocol with stage 1 and the init.
    #[allow(clippy::too_many_arguments)]
    fn drive(
        &self,
        id: &str,
        bundle: &Bundle,
        sock: &Sock,
        stage1: Pid,
        cg: &cgroups::Cgroup,
        console: Option<&UnixStream>,
        guard: &mut Cleanup,
    ) -> Result<Spawned> {
        let mut stage1_reaped = false;
        let mut spawned: Option<Spawned> = None;
        let mut pty: Option<OwnedFd> = None;
        let result = loop {
            let msg = match sock.recv() {
                Ok(Some(m)) => m,
                Ok(None) => {
                    break Err(Error::Init(
                        "the container process exited during setup".into(),
                    ))
                }
                Err(e) => break Err(sys_err("read from the container process")(e)),
            };
            match msg.tag {
                sync::USERNS => {
                    let linux = bundle.spec.linux().as_ref();
                    let uid = linux
                        .and_then(|l| l.uid_mappings().clone())
                        .unwrap_or_default();
                    let gid = linux
                        .and_then(|l| l.gid_mappings().clone())
                        .unwrap_or_default();
                    let r = write_id_map(stage1.as_raw(), "uid_map", &uid)
                        .and_then(|()| write_id_map(stage1.as_raw(), "gid_map", &gid));
                    if let Err(e) = r {
                        break Err(e);
                    }
                    if let Err(e) = sock.send(sync::USERNS_DONE, &[]) {
                        break Err(sys_err("signal the user namespace setup")(e));
                    }
                }
                sync::PID => {
                    let Some(pid) = read_pid(&msg.data) else {
                        break Err(Error::Init("bad pid message".into()));
                    };
                    let _ = waitpid(stage1, None);
                    stage1_reaped = true;
                    let Some((_, start_time)) = util::proc_stat(pid) else {
                        break Err(Error::Init("the container process died".into()));
                    };
                    guard.pid = Some((pid, start_time));
                    spawned = Some(Spawned {
                        pid,
                        start_time,
                        pty: None,
                    });
                    let state = serde_json::to_vec(&self.creating_state(id, bundle, pid))
                        .unwrap_or_default();
                    let hooks = bundle.spec.hooks().as_ref();
                    let has_hooks = hooks.is_some_and(|h| {
                        h.prestart().as_ref().is_some_and(|v| !v.is_empty())
                            || h.create_runtime().as_ref().is_some_and(|v| !v.is_empty())
                    });
                    // A failure because the init died is reported by the init itself. The
                    // resctrl group (linux.intelRdt) is joined at the same moment.
                    let rdt = guard.resctrl.clone();
                    let join = || {
                        let r = cg
                            .add_pid(pid)
                            .map_err(|source| Error::Cgroup {
                                what: format!("add pid {pid} of {id}"),
                                source,
                            })
                            .and_then(|()| match &rdt {
                                Some(p) => p.join(pid).map_err(Error::from),
                                None => Ok(()),
                            });
                        match r {
                            Err(_) if !util::alive(pid, start_time) => Ok(()),
                            r => r,
                        }
                    };
                    if has_hooks {
                        // Hooks (device plugins, ...) expect the process in its cgroup.
                        if let Err(e) = join() {
                            break Err(e);
                        }
                    }
                    let r = hooks::run_hooks(
                        "prestart",
                        hooks.and_then(|h| h.prestart().as_ref()),
                        &state,
                    )
                    .and_then(|()| {
                        hooks::run_hooks(
                            "createRuntime",
                            hooks.and_then(|h| h.create_runtime().as_ref()),
                            &state,
                        )
                    });
                    if let Err(e) = r {
                        break Err(Error::Hook(e));
                    }
                    // A failed send means the init died: its error (or EOF) comes next.
                    let _ = sock.send(sync::CONTINUE, &state);
                    // Without hooks, the migration overlaps with the init's rootfs setup.
                    if !has_hooks {
                        if let Err(e) = join() {
                            break Err(e);
                        }
                    }
                    let _ = sock.send(sync::CGROUP, &[]);
                }
                sync::WARN => eprintln!("warning: {}", String::from_utf8_lossy(&msg.data)),
                sync::PTY => match (console, msg.fd) {
                    (Some(c), Some(fd)) => {
                        if let Err(e) = send_console(c, &fd) {
                            break Err(e);
                        }
                    }
                    (None, fd) => pty = fd,
                    _ => {}
                },
                sync::SECCOMP => {
                    // The init waits for this, under a filter whose notified calls wait
                    // for the agent: answer before anything else (see `agent`).
                    let Some(pid) = spawned.as_ref().map(|s| s.pid) else {
                        break Err(Error::Init("seccomp listener before the pid".into()));
                    };
                    let st = self.creating_state(id, bundle, pid);
                    if let Err(e) = hand_over_listener(&bundle.spec, pid, &st, msg.fd) {
                        break Err(e);
                    }
                    // A failed send means the init died: its error (or EOF) comes next.
                    let _ = sock.send(sync::SECCOMP_DONE, &[]);
                }
                sync::READY => break Ok(()),
                sync::ERROR => {
                    break Err(Error::Init(String::from_utf8_lossy(&msg.data).into_owned()))
                }
                other => {
                    break Err(Error::Init(format!(
                        "unexpected message {:?}",
                        other as char
                    )))
                }
            }
        };
        if !stage1_reaped {
            if result.is_err() {
                let _ = nix::sys::signal::kill(stage1, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = waitpid(stage1, None);
        }
        result?;
        let mut spawned =
            spawned.ok_or_else(|| Error::Init("no pid from the container process".into()))?;
        spawned.pty = pty;
        Ok(spawned)
    }

    /// The state of a container being created (for hooks and the seccomp agent).
    fn creating_state(&self, id: &str, bundle: &Bundle, pid: i32) -> OciState {
        OciState {
            oci_version: crate::state::OCI_VERSION.into(),
            id: id.to_string(),
            status: Status::Creating,
            pid,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: String::new(),
            owner: String::new(),
            annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        }
    }

    /// Starts a created container: lets its init exec the program, then runs the
    /// poststart hooks (their failures are warnings).
    pub fn start(&self, id: &str) -> Result<()> {
        let (dir, rec) = self.load(id)?;
        let status = rec.status(&dir);
        if status != Status::Created {
            return Err(Error::BadState {
                id: id.into(),
                status: status.to_string(),
                op: "start".into(),
            });
        }
        let fifo_path = dir.join(FIFO);
        let fifo = nix::fcntl::open(
            &fifo_path,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys_err(format!("open {}", fifo_path.display())))?;
        // First the init's byte (it got past the fifo), then EOF: its write end is
        // close-on-exec, so EOF means the program was exec'd (or the init died).
        let mut got_byte = false;
        loop {
            let mut pfd = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&fifo),
                nix::poll::PollFlags::POLLIN,
            )];
            let n = match nix::poll::poll(&mut pfd, 100u16) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(sys_err("wait for the container init")(e)),
            };
            if n > 0 {
                let mut b = [0u8; 16];
                match nix::unistd::read(&fifo, &mut b) {
                    Ok(0) if got_byte => break,
                    Ok(0) => {
                        return Err(Error::Init(
                            "the container init exited before starting".into(),
                        ))
                    }
                    Ok(_) => got_byte = true,
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(sys_err("read the exec fifo")(e)),
                }
            } else if !util::alive(rec.pid, rec.start_time) {
                if got_byte {
                    break;
                }
                return Err(Error::Init(
                    "the container init exited before starting".into(),
                ));
            }
        }
        let _ = std::fs::remove_file(&fifo_path);
        let state = serde_json::to_vec(&rec.oci_state(Status::Running)).unwrap_or_default();
        if let Err(e) = hooks::run_hooks(
            "poststart",
            rec.config
                .hooks()
                .as_ref()
                .and_then(|h| h.poststart().as_ref()),
            &state,
        ) {
            eprintln!("warning: {e}");
        }
        Ok(())
    }

    /// The container's OCI state.
    pub fn state(&self, id: &str) -> Result<OciState> {
        let (dir, rec) = self.load(id)?;
        Ok(rec.oci_state(rec.status(&dir)))
    }

    /// Sends `signal` to the init, or with `all` to every process in the container's cgroup.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let (dir, rec) = self.load(id)?;
        let status = rec.status(&dir);
        if status == Status::Stopped && !all {
            return Err(Error::BadState {
                id: id.into(),
                status: status.to_string(),
                op: "kill".into(),
            });
        }
        if all {
            let cg = self.cgroup_of(&rec)?;
            let pids = match cg.pids() {
                Ok(p) => p,
                Err(_) if status == Status::Stopped => return Ok(()),
                Err(source) => {
                    return Err(Error::Cgroup {
                        what: format!("list processes of {id}"),
                        source,
                    })
                }
            };
            for pid in pids {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, signal) };
            }
            return Ok(());
        }
        // SAFETY: kill has no memory effects.
        if unsafe { libc::kill(rec.pid, signal) } != 0 {
            return Err(sys_err(format!("signal {} to pid {}", signal, rec.pid))(
                nix::errno::Errno::last(),
            ));
        }
        Ok(())
    }

    /// Deletes a container: a running one only with `force` (it is killed). Removes the
    /// cgroup and the state, then runs the poststop hooks (failures are warnings).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let dir = self.dir(id)?;
        let rec = match Record::load(&dir, id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) if dir.is_dir() => {
                // A create that crashed before saving its state: just clean up.
                let _ = std::fs::remove_dir_all(&dir);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let status = rec.status(&dir);
        if matches!(status, Status::Running | Status::Paused) && !force {
            return Err(Error::BadState {
                id: id.into(),
                status: status.to_string(),
                op: "delete without --force".into(),
            });
        }
        let cg = self.cgroup_of(&rec).ok();
        if status != Status::Stopped {
            if status == Status::Paused {
                if let Some(cg) = &cg {
                    let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
                    let _ = cg.thaw();
                }
            }
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(rec.pid, libc::SIGKILL) };
            wait_dead(rec.pid, rec.start_time, Duration::from_secs(10));
        }
        if let Some(cg) = &cg {
            let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
            cg.destroy().map_err(|source| Error::Cgroup {
                what: format!("remove for {id}"),
                source,
            })?;
        }
        if let Some(p) = &rec.resctrl {
            p.remove()?;
        }
        std::fs::remove_dir_all(&dir).map_err(io_err(format!("remove {}", dir.display())))?;
        let state = serde_json::to_vec(&rec.oci_state(Status::Stopped)).unwrap_or_default();
        if let Err(e) = hooks::run_hooks(
            "poststop",
            rec.config
                .hooks()
                .as_ref()
                .and_then(|h| h.poststop().as_ref()),
            &state,
        ) {
            eprintln!("warning: {e}");
        }
        Ok(())
    }

    /// States of all containers under the root.
    pub fn list(&self) -> Result<Vec<OciState>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(format!("list {}", self.root.display()))(e)),
        };
        for e in rd.flatten() {
            let Some(id) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Ok(rec) = Record::load(&e.path(), &id) {
                out.push(rec.oci_state(rec.status(&e.path())));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Host pids of the container's processes.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let (_, rec) = self.load(id)?;
        self.cgroup_of(&rec)?
            .pids()
            .map_err(|source| Error::Cgroup {
                what: format!("list processes of {id}"),
                source,
            })
    }

    /// The container's process definition (the base `exec` starts from).
    pub fn container_process(&self, id: &str) -> Result<Process> {
        let (_, rec) = self.load(id)?;
        rec.config
            .process()
            .clone()
            .ok_or_else(|| Error::InvalidConfig("process is missing".into()))
    }

    /// Resource usage of the container's cgroup.
    pub fn stats(&self, id: &str) -> Result<cgroups::Stats> {
        let (_, rec) = self.load(id)?;
        self.cgroup_of(&rec)?
            .stats()
            .map_err(|source| Error::Cgroup {
                what: format!("read stats of {id}"),
                source,
            })
    }

    /// Freezes a running container.
    pub fn pause(&self, id: &str) -> Result<()> {
        self.set_frozen(id, true)
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        self.set_frozen(id, false)
    }

    /// Freezes (running → paused) or thaws (paused → running) the container's cgroup; the
    /// `PAUSED` marker in its state dir records the paused status.
    fn set_frozen(&self, id: &str, freeze: bool) -> Result<()> {
        let (dir, rec) = self.load(id)?;
        let status = rec.status(&dir);
        let (expected, op) = if freeze {
            (Status::Running, "pause")
        } else {
            (Status::Paused, "resume")
        };
        if status != expected {
            return Err(Error::BadState {
                id: id.into(),
                status: status.to_string(),
                op: op.into(),
            });
        }
        let cg = self.cgroup_of(&rec)?;
        let done = if freeze { cg.freeze() } else { cg.thaw() };
        done.map_err(|source| Error::Cgroup {
            what: format!("{} {id}", if freeze { "freeze" } else { "thaw" }),
            source,
        })?;
        if freeze {
            std::fs::write(dir.join(PAUSED), b"").map_err(io_err("write paused marker"))
        } else {
            std::fs::remove_file(dir.join(PAUSED)).map_err(io_err("remove paused marker"))
        }
    }

    /// Applies new resource limits to a container's cgroup.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let (_, rec) = self.load(id)?;
        self.cgroup_of(&rec)?
            .apply(resources)
            .map_err(|source| Error::Cgroup {
                what: format!("update {id}"),
                source,
            })
    }

    /// Creates, starts and waits for a container, then deletes it. Returns the exit code
    /// (128 + signal when killed). Signals sent to the caller are forwarded to the init.
    /// With a terminal and no console socket, the pty is proxied to the caller's stdio.
    pub fn run(&self, id: &str, opts: &CreateOptions, detach: bool) -> Result<i32> {
        if !detach {
            // SAFETY: PR_SET_CHILD_SUBREAPER with a flag value has no memory effects.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        }
        let (pid, pty) = self.create_inner(id, opts, !detach)?;
        if !detach {
            crate::signals::forward_to(pid);
        }
        if let Err(e) = self.start(id) {
            let _ = self.delete(id, true);
            return Err(e);
        }
        if detach {
            return Ok(0);
        }
        if let Some(master) = pty {
            crate::console::proxy(master);
        }
        let code = wait_exit(pid);
        self.delete(id, true)?;
        Ok(code)
    }

    /// Runs `process` inside a running container (joining its namespaces and cgroup).
    /// Returns the exit code, or 0 at once with `detach`.
    pub fn exec(&self, id: &str, process: &Process, opts: &ExecOptions) -> Result<i32> {
        spec::validate_process(process)?;
        let (dir, rec) = self.load(id)?;
        let status = rec.status(&dir);
        if !matches!(status, Status::Running | Status::Created) {
            return Err(Error::BadState {
                id: id.into(),
                status: status.to_string(),
                op: "exec".into(),
            });
        }
        // A terminal without console socket is proxied to our stdio (foreground only).
        let console = if opts.console_socket.is_none() && !opts.detach {
            None
        } else {
            self.console(process, opts.console_socket.as_deref())?
        };
        let mut pty: Option<OwnedFd> = None;
        let cg = self.cgroup_of(&rec).ok();
        let mut joins = Vec::new();
        for name in ["user", "ipc", "uts", "net", "pid", "cgroup", "time", "mnt"] {
            let theirs = format!("/proc/{}/ns/{name}", rec.pid);
            let ours = format!("/proc/self/ns/{name}");
            let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            if a.ino() == b.ino() && a.dev() == b.dev() {
                continue;
            }
            let flag = match name {
                "user" => CloneFlags::CLONE_NEWUSER,
                "ipc" => CloneFlags::CLONE_NEWIPC,
                "uts" => CloneFlags::CLONE_NEWUTS,
                "net" => CloneFlags::CLONE_NEWNET,
                "pid" => CloneFlags::CLONE_NEWPID,
                "cgroup" => CloneFlags::CLONE_NEWCGROUP,
                "time" => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
                _ => CloneFlags::CLONE_NEWNS,
            };
            let fd = nix::fcntl::open(
                theirs.as_str(),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(sys_err(format!("open {theirs}")))?;
            joins.push((flag, fd));
        }
        if !opts.detach {
            // SAFETY: PR_SET_CHILD_SUBREAPER with a flag value has no memory effects.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        }
        let (parent_sock, child_sock) = Sock::pair().map_err(sys_err("create socketpair"))?;
        let args = ChildArgs {
            spec: &rec.config,
            process,
            rootfs: &rec.rootfs,
            bundle: &rec.bundle,
            sock: &child_sock,
            joins,
            new_user: false,
            new_flags: CloneFlags::empty(),
            cgroup: cg.as_ref(),
            resctrl: rec.resctrl.as_ref(),
            cg_mounts: CgroupMounts::default(),
            fifo: None,
            state_dir: None,
            no_pivot: false,
            preserve_fds: opts.preserve_fds,
            no_new_keyring: true,
            id,
            exec: true,
            seccomp: self.seccomp_program(&rec.config)?,
            idmapped: Default::default(),
        };
        // Reaped once stage 1 has joined the cgroups and reported (not held while the
        // exec'd process runs).
        let warmup = self.attach_warmup.then(cgroups::warm_in_child).flatten();
        // SAFETY: single-threaded caller, as for create.
        let stage1 = match unsafe { fork() }.map_err(sys_err("fork"))? {
            ForkResult::Child => {
                drop(parent_sock);
                init::stage1(&args)
            }
            ForkResult::Parent { child } => child,
        };
        drop(args);
        drop(child_sock);
        let mut pid = None;
        let mut stage1_reaped = false;
        // The agent is told the exec'd process's host pid, which stage 1 reports: a
        // listener that comes first waits for it (stage 1 runs no filter, so it comes).
        let mut listener: Option<OwnedFd> = None;
        let hand_over = |pid: i32, fd: OwnedFd| {
            if let Err(e) = hand_over_listener(&rec.config, pid, &rec.oci_state(status), Some(fd)) {
                // It waits for us under its filter, and may be stuck in a notified call
                // (closing its own copy of the listener, say) that nobody will answer.
                // SAFETY: kill has no memory effects. The process has not exited: it waits
                // for our answer.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return Err(e);
            }
            // A failed send means the process died: its error (or EOF) comes next.
            let _ = parent_sock.send(sync::SECCOMP_DONE, &[]);
            Ok::<(), Error>(())
        };
        let result: Result<()> = loop {
            let msg = match parent_sock.recv() {
                Ok(Some(m)) => m,
                Ok(None) => {
                    break Err(Error::Init("the exec'd process exited during setup".into()))
                }
                Err(e) => break Err(sys_err("read from the exec'd process")(e)),
            };
            match msg.tag {
                sync::PID => {
                    pid = read_pid(&msg.data);
                    let _ = waitpid(stage1, None);
                    stage1_reaped = true;
                    if let Some(p) = pid {
                        crate::signals::forward_to(p);
                        if let Some(fd) = listener.take() {
                            if let Err(e) = hand_over(p, fd) {
                                break Err(e);
                            }
                        }
                    }
                }
                sync::SECCOMP => match (pid, msg.fd) {
                    (Some(p), Some(fd)) => {
                        if let Err(e) = hand_over(p, fd) {
                            break Err(e);
                        }
                    }
                    (None, Some(fd)) => listener = Some(fd),
                    (_, None) => {
                        break Err(Error::Init("seccomp listener message without fd".into()))
                    }
                },
                sync::WARN => eprintln!("warning: {}", String::from_utf8_lossy(&msg.data)),
                sync::PTY => match (console.as_ref(), msg.fd) {
                    (Some(c), Some(fd)) => {
                        if let Err(e) = send_console(c, &fd) {
                            break Err(e);
                        }
                    }
                    (None, fd) => pty = fd,
                    _ => {}
                },
                sync::READY => {
                    // Success is the socket closing on exec; an error message means exec
                    // failed. Stage 1's pid report may come only now: nothing orders it
                    // before the exec'd process's own messages.
                    let mut done = Ok(());
                    while let Ok(Some(m)) = parent_sock.recv() {
                        match m.tag {
                            sync::ERROR => {
                                done =
                                    Err(Error::Init(String::from_utf8_lossy(&m.data).into_owned()));
                                break;
                            }
                            sync::PID => {
                                pid = read_pid(&m.data);
                                let _ = waitpid(stage1, None);
                                stage1_reaped = true;
                                if let Some(p) = pid {
                                    crate::signals::forward_to(p);
                                }
                            }
                            sync::WARN => {
                                eprintln!("warning: {}", String::from_utf8_lossy(&m.data))
                            }
                            _ => {}
                        }
                    }
                    break done;
                }
                sync::ERROR => {
                    break Err(Error::Init(String::from_utf8_lossy(&msg.data).into_owned()))
                }
                _ => {}
            }
        };
        // The process may wait for a word from us (SECCOMP_DONE): EOF ends that wait.
        drop(parent_sock);
        drop(warmup);
        if !stage1_reaped {
            let _ = waitpid(stage1, None);
        }
        if let Err(e) = result {
            if let Some(p) = pid {
                let _ = waitpid(Pid::from_raw(p), None);
            }
            return Err(e);
        }
        let pid = pid.ok_or_else(|| Error::Init("no pid from the exec'd process".into()))?;
        if let Some(pf) = &opts.pid_file {
            util::write_atomic(pf, pid.to_string().as_bytes(), 0o644)
                .map_err(io_err(format!("write pid file {}", pf.display())))?;
        }
        if opts.detach {
            return Ok(0);
        }
        if let Some(master) = pty {
            crate::console::proxy(master);
        }
        Ok(wait_exit(pid))
    }
}

/// Moves host network interfaces into the network namespace of `pid` (renaming them as
/// asked) with iproute2. When the namespace goes, the kernel destroys virtual devices and
/// returns physical ones to the host.
fn move_net_devices(
    pid: i32,
    devices: &std::collections::HashMap<String, oci_spec::runtime::LinuxNetDevice>,
) -> Result<()> {
    for (host, dev) in devices {
        let target = dev.name().as_deref().unwrap_or(host);
        let out = std::process::Command::new("ip")
            .args(["link", "set", "dev", host, "netns", &pid.to_string()])
            .args(["name", target])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(io_err(format!("run ip to move network device {host}")))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(Error::Io {
                what: format!("move network device {host} into the container as {target}"),
                source: std::io::Error::other(why),
            });
        }
    }
    Ok(())
}

/// Waits for `pid` (a child or reparented to us as subreaper); returns its exit code
/// (128 + signal when killed). Other reaped children are ignored.
fn wait_exit(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// Namespaces to join (opened now, user first), whether a user ns is new, the new flags.
#[allow(clippy::type_complexity)]
fn namespaces(spec: &Spec) -> Result<(Vec<(CloneFlags, OwnedFd)>, bool, CloneFlags)> {
    let mut joins = Vec::new();
    let mut new_user = false;
    let mut flags = CloneFlags::empty();
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in &list {
        let flag = ns_flag(ns.typ());
        match ns.path() {
            Some(p) => {
                let fd = nix::fcntl::open(
                    p,
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(sys_err(format!("open namespace {}", p.display())))?;
                if ns.typ() == LinuxNamespaceType::User {
                    joins.insert(0, (flag, fd));
                } else {
                    joins.push((flag, fd));
                }
            }
            None if ns.typ() == LinuxNamespaceType::User => new_user = true,
            None => flags |= flag,
        }
    }
    Ok((joins, new_user, flags))
}
