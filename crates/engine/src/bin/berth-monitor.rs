//! `berth-monitor`: the small per-container supervisor (see `engine::monitor` for the
//! protocol). One runs per started container, detached from the daemon (its own session),
//! so that containers, their logs and their exit codes survive a daemon restart.
//!
//! It is single-threaded and uses no async runtime: one `poll(2)` loop over the output
//! pipes (or the pty master), a signalfd for `SIGCHLD`, the attach socket and its clients.

use engine::monitor::{
    ExitRecord, MonitorConfig, StatusLine, ABORT_START, ATTACH_STREAMS, ATTACH_WATCH,
};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Longest log line before a partial line is written (as docker's json-file driver).
const MAX_LINE: usize = 16 * 1024;

fn main() {
    let Some(mut arg) = std::env::args().nth(1) else {
        eprintln!("usage: berth-monitor '<config json>' | -");
        std::process::exit(2);
    };
    // `-`: the engine exec'd us ahead of time; the configuration is the first line of
    // stdin (std's buffered stdin, which the control bytes are read from later too).
    if arg == "-" {
        arg.clear();
        match io::stdin().lock().read_line(&mut arg) {
            Ok(n) if n > 0 => {}
            // The engine gave up on the start.
            _ => std::process::exit(2),
        }
    }
    let cfg: MonitorConfig = match serde_json::from_str(&arg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-monitor: bad config: {e}");
            std::process::exit(2);
        }
    };
    match run(&cfg) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            report(&StatusLine::Failed {
                message: e.to_string(),
            });
            std::process::exit(1);
        }
    }
}

/// Writes one status line to stdout (the engine's status pipe); errors are ignored since
/// the engine may be gone.
fn report(line: &StatusLine) {
    if let Ok(mut s) = serde_json::to_vec(line) {
        s.push(b'\n');
        let mut out = io::stdout().lock();
        let _ = out.write_all(&s);
        let _ = out.flush();
    }
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// How the monitor drives the OCI runtime.
///
/// With berth's own runtime ([`MonitorConfig::builtin_runtime`]) the monitor calls the
/// `runtime` library in-process: no `berth-runtime create`, `start` and `delete` processes
/// to exec (a few milliseconds of each container's start). The monitor is single-threaded
/// whenever it calls the library, as the library's fork requires. Any other runtime (runc,
/// crun, a wrapper) is run as a command with runc's command line.
enum Rt {
    /// The runtime binary, with runc's command line.
    Exec,
    /// The linked runtime library.
    Lib(runtime::Runtime),
}

impl Rt {
    fn new(cfg: &MonitorConfig) -> Rt {
        if cfg.builtin_runtime {
            Rt::Lib(runtime::Runtime::new(&cfg.runtime_root))
        } else {
            Rt::Exec
        }
    }

    /// Creates the container with `stdio` as its standard streams (the runtime's own
    /// messages go to its stderr too). With a terminal, the exec'd runtime sends the pty
    /// master to `console`, the library returns it. Returns the pty master, if any.
    fn create(
        &self,
        cfg: &MonitorConfig,
        pid_file: &Path,
        stdio: ContainerStdio,
        console: Option<&Path>,
    ) -> Result<Option<OwnedFd>, String> {
        match self {
            Rt::Exec => {
                let mut c = runtime_command(cfg);
                c.arg("create")
                    .arg("--bundle")
                    .arg(&cfg.bundle)
                    .arg("--pid-file")
                    .arg(pid_file);
                if let Some(sock) = console {
                    c.arg("--console-socket").arg(sock);
                }
                c.arg(&cfg.id);
                c.stdin(Stdio::from(stdio.stdin))
                    .stdout(Stdio::from(stdio.stdout))
                    .stderr(Stdio::from(stdio.stderr));
                let status = c.status();
                drop(c);
                match status {
                    Ok(s) if s.success() => Ok(None),
                    Ok(_) => Err(String::new()),
                    Err(e) => Err(format!("run {}: {e}", cfg.runtime.display())),
                }
            }
            Rt::Lib(rt) => {
                let opts = runtime::CreateOptions {
                    bundle: cfg.bundle.clone(),
                    pid_file: Some(pid_file.to_path_buf()),
                    ..Default::default()
                };
                with_stdio(stdio, || rt.create_supervised(&cfg.id, &opts))
                    .map_err(|e| e.to_string())?
                    .map(|(_, pty)| pty)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Lets the created container's program run.
    fn start(&self, cfg: &MonitorConfig) -> Result<(), String> {
        match self {
            Rt::Exec => {
                let out = runtime_command(cfg)
                    .arg("start")
                    .arg(&cfg.id)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()
                    .map_err(|e| format!("run {}: {e}", cfg.runtime.display()))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            }
            Rt::Lib(rt) => rt.start(&cfg.id).map_err(|e| e.to_string()),
        }
    }

    /// `delete --force`: the runtime's state and cgroup; errors are ignored (nothing to
    /// delete, or the daemon's reconcile will retry).
    fn delete(&self, cfg: &MonitorConfig) {
        match self {
            Rt::Exec => {
                let _ = runtime_command(cfg)
                    .arg("delete")
                    .arg("--force")
                    .arg(&cfg.id)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            Rt::Lib(rt) => {
                let _ = rt.delete(&cfg.id, true);
            }
        }
    }

    /// Removes the runtime's state of a container that failed to start, and unmounts its
    /// root filesystem.
    fn cleanup(&self, cfg: &MonitorConfig) {
        self.delete(cfg);
        unmount_rootfs(cfg);
    }
}

/// The runtime command with its global options.
fn runtime_command(cfg: &MonitorConfig) -> Command {
    let mut c = Command::new(&cfg.runtime);
    c.arg("--root").arg(&cfg.runtime_root);
    c
}

/// The container's ends of its standard streams.
struct ContainerStdio {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Runs `f` with `stdio` as this process's fds 0, 1 and 2 (which the library's fork hands
/// to the container), then puts the monitor's own back. Single-threaded use only.
fn with_stdio<T>(stdio: ContainerStdio, f: impl FnOnce() -> T) -> io::Result<T> {
    let saved: Vec<OwnedFd> = [
        io::stdin().as_fd(),
        io::stdout().as_fd(),
        io::stderr().as_fd(),
    ]
    .iter()
    .map(|fd| fd.try_clone_to_owned())
    .collect::<io::Result<_>>()?;
    let install = |fds: [&OwnedFd; 3]| -> io::Result<()> {
        for (target, fd) in fds.iter().enumerate() {
            // SAFETY: dup2 onto 0, 1, 2 only replaces this process's standard streams,
            // which nothing else is using during the call (single-threaded).
            if unsafe { libc::dup2(fd.as_raw_fd(), target as i32) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    install([&stdio.stdin, &stdio.stdout, &stdio.stderr])?;
    let out = f();
    install([&saved[0], &saved[1], &saved[2]])?;
    Ok(out)
}

/// Reads what is available in a non-blocking fd (at most 64 KiB).
fn read_available(fd: &OwnedFd) -> String {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while out.len() < 65536 {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

/// Receives the pty master that the runtime sends on the console socket.
fn receive_console(listener: &UnixListener) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (conn, _) = listener.accept()?;
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor in our table for us
                // (SCM_RIGHTS); nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(other("no pty master received on the console socket".into()))
}

/// The container's stdio as the monitor holds it.
enum Stdio3 {
    /// Pipes: stdin (write end, if open), stdout and stderr (read ends).
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
    /// A pseudo-terminal master: stdin and the merged output.
    Tty { master: Option<OwnedFd> },
}

fn run(cfg: &MonitorConfig) -> io::Result<()> {
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGPIPE);
    mask.thread_block().map_err(io::Error::from)?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(io::Error::from)?;
    let rt = Rt::new(cfg);

    let pid_file = cfg.bundle.join("init.pid");
    let _ = fs::remove_file(&pid_file);
    let null = || -> io::Result<OwnedFd> { Ok(File::open("/dev/null")?.into()) };
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from);
    if !cfg.tty {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin_r, stdin_w) = if cfg.open_stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (null()?, None)
        };
        let container = ContainerStdio {
            stdin: stdin_r,
            stdout: out_w,
            stderr: err_w,
        };
        // The runtime's own errors go to the container's stderr pipe: read on failure.
        if let Err(msg) = rt.create(cfg, &pid_file, container, None) {
            let text = if msg.is_empty() {
                read_available(&err_r)
            } else {
                msg
            };
            rt.cleanup(cfg);
            return Err(other(failure_text("create", &text)));
        }
        let stdio = Stdio3::Pipes {
            stdin: stdin_w,
            stdout: Some(out_r),
            stderr: Some(err_r),
        };
        return supervise(cfg, &rt, sigfd, stdio, &pid_file);
    }
    // A terminal: the runtime's own messages go to a pipe of their own.
    let (err_r, err_w) = pipe()?;
    let container = ContainerStdio {
        stdin: null()?,
        stdout: err_w.try_clone()?,
        stderr: err_w,
    };
    let master = match &rt {
        Rt::Lib(_) => match rt.create(cfg, &pid_file, container, None) {
            Ok(Some(m)) => m,
            Ok(None) => {
                rt.cleanup(cfg);
                return Err(other("the runtime gave no pty master".into()));
            }
            Err(msg) => {
                rt.cleanup(cfg);
                return Err(other(failure_text("create", &msg)));
            }
        },
        Rt::Exec => {
            let sock = cfg.bundle.join("console.sock");
            let _ = fs::remove_file(&sock);
            let listener = UnixListener::bind(&sock)?;
            let console_thread = std::thread::spawn(move || receive_console(&listener));
            if let Err(msg) = rt.create(cfg, &pid_file, container, Some(&sock)) {
                let text = if msg.is_empty() {
                    read_available(&err_r)
                } else {
                    msg
                };
                rt.cleanup(cfg);
                // Unblocks the thread's accept, if the runtime never connected.
                let _ = UnixStream::connect(&sock);
                let _ = fs::remove_file(&sock);
                return Err(other(failure_text("create", &text)));
            }
            let received = console_thread.join();
            let _ = fs::remove_file(&sock);
            match received {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    rt.cleanup(cfg);
                    return Err(e);
                }
                Err(_) => {
                    rt.cleanup(cfg);
                    return Err(other("console socket thread failed".into()));
                }
            }
        }
    };
    let stdio = Stdio3::Tty {
        master: Some(master),
    };
    supervise(cfg, &rt, sigfd, stdio, &pid_file)
}

fn failure_text(step: &str, text: &str) -> String {
    if text.is_empty() {
        format!("runtime {step} failed")
    } else {
        format!("runtime {step} failed: {text}")
    }
}

fn unmount_rootfs(cfg: &MonitorConfig) {
    if let Some(m) = &cfg.unmount {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// An attach client.
struct Client {
    stream: UnixStream,
    /// The first byte, once received.
    mode: Option<u8>,
    /// Still reading from it (stdin).
    reading: bool,
}

fn supervise(
    cfg: &MonitorConfig,
    rt: &Rt,
    sigfd: SignalFd,
    mut stdio: Stdio3,
    pid_file: &Path,
) -> io::Result<()> {
    let pid: i32 = fs::read_to_string(pid_file)?
        .trim()
        .parse()
        .map_err(|_| other(format!("bad pid file {}", pid_file.display())))?;
    let _ = fs::remove_file(&cfg.attach_socket);
    let listener = UnixListener::bind(&cfg.attach_socket)?;
    listener.set_nonblocking(true)?;
    report(&StatusLine::Created { pid });
    if cfg.wait_go {
        // GO, or EOF (the daemon is gone: the container is started as asked).
        let mut b = [0u8; 1];
        if matches!(io::stdin().read(&mut b), Ok(1)) && b[0] == ABORT_START {
            rt.cleanup(cfg);
            let _ = fs::remove_file(&cfg.attach_socket);
            return Err(other("the start was aborted by the engine".into()));
        }
    }
    if let Err(text) = rt.start(cfg) {
        rt.cleanup(cfg);
        let _ = fs::remove_file(&cfg.attach_socket);
        return Err(other(failure_text("start", &text)));
    }
    report(&StatusLine::Started { pid });
    // Create's parsing (the spec and its seccomp profile) is over: give the free heap
    // back, since the monitor lives as long as the container.
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    // The engine's control pipe is no longer needed; its status pipe stays for `Exited`
    // (writes to it fail harmlessly once the daemon is gone: SIGPIPE is blocked).
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }

    let mut log = match &cfg.log_path {
        Some(p) => Some(JsonLog::open(p, cfg.log_max_size, cfg.log_max_files)?),
        None => None,
    };
    let mut clients: Vec<Client> = Vec::new();
    let mut exit: Option<i32> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let (out_fd, err_fd) = match &stdio {
            Stdio3::Pipes { stdout, stderr, .. } => (stdout.as_ref(), stderr.as_ref()),
            Stdio3::Tty { master } => (master.as_ref(), None),
        };
        if exit.is_some() && out_fd.is_none() && err_fd.is_none() {
            break;
        }
        let mut fds = vec![
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        let out_idx = out_fd.map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let err_idx = err_fd.map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let client_base = fds.len();
        let mut polled_clients = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            if c.reading {
                fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
                polled_clients.push(i);
            }
        }
        // After the init exited, give the remaining output a bounded time to drain (a
        // process outside the container's pid namespace may hold the pipe).
        let timeout = if exit.is_some() {
            PollTimeout::from(500u16)
        } else {
            PollTimeout::NONE
        };
        let n = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let sig_ready = ready(0);
        let accept_ready = ready(1);
        let out_ready = out_idx.is_some_and(ready);
        let err_ready = err_idx.is_some_and(ready);
        let ready_clients: Vec<usize> = polled_clients
            .iter()
            .enumerate()
            .filter(|(k, _)| ready(client_base + k))
            .map(|(_, &i)| i)
            .collect();
        drop(fds);

        if sig_ready {
            while let Ok(Some(_)) = sigfd.read_signal() {}
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => exit = Some(code),
                    Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                        exit = Some(128 + sig as i32)
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        if accept_ready {
            while let Ok((mut s, _)) = listener.accept() {
                if s.set_nonblocking(false).is_err() {
                    continue;
                }
                // The client's first byte says what it wants; clients send it right after
                // connecting, so read it now (bounded) so that no output is missed.
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut first = [0u8; 1];
                let mode = match s.read(&mut first) {
                    Ok(1) => Some(first[0]),
                    _ => continue,
                };
                let _ = s.set_read_timeout(None);
                clients.push(Client {
                    stream: s,
                    mode,
                    reading: true,
                });
            }
        }
        for (stream_no, is_ready) in [(1u8, out_ready), (2u8, err_ready)] {
            if !is_ready {
                continue;
            }
            let fd = match (&mut stdio, stream_no) {
                (Stdio3::Pipes { stdout, .. }, 1) => stdout,
                (Stdio3::Pipes { stderr, .. }, _) => stderr,
                (Stdio3::Tty { master }, _) => master,
            };
            let Some(f) = fd.as_ref() else { continue };
            match nix::unistd::read(f, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => *fd = None,
                Ok(k) => {
                    let data = &buf[..k];
                    if let Some(l) = log.as_mut() {
                        let _ = l.write(stream_no, data);
                    }
                    let mut frame = Vec::with_capacity(8 + k);
                    frame.extend_from_slice(&[stream_no, 0, 0, 0]);
                    frame.extend_from_slice(&(k as u32).to_be_bytes());
                    frame.extend_from_slice(data);
                    clients.retain_mut(|c| {
                        c.mode != Some(ATTACH_STREAMS) || c.stream.write_all(&frame).is_ok()
                    });
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                Err(_) => *fd = None,
            }
        }
        for i in ready_clients {
            let Some(c) = clients.get_mut(i) else {
                continue;
            };
            let k = c.stream.read(&mut buf).unwrap_or_default();
            if k == 0 {
                c.reading = false;
                if c.mode.is_none() {
                    c.mode = Some(ATTACH_WATCH);
                } else if c.mode == Some(ATTACH_STREAMS) && cfg.stdin_once {
                    // Closing our end of the stdin pipe gives the container EOF.
                    if let Stdio3::Pipes { stdin, .. } = &mut stdio {
                        *stdin = None;
                    }
                }
                continue;
            }
            let mut data = &buf[..k];
            if c.mode.is_none() {
                c.mode = Some(data[0]);
                data = &data[1..];
            }
            if c.mode == Some(ATTACH_STREAMS) && !data.is_empty() {
                let target = match &stdio {
                    Stdio3::Pipes { stdin, .. } => stdin.as_ref(),
                    Stdio3::Tty { master } => master.as_ref(),
                };
                if let Some(t) = target {
                    let mut rest = data;
                    while !rest.is_empty() {
                        match nix::unistd::write(t, rest) {
                            Ok(w) => rest = &rest[w..],
                            Err(nix::errno::Errno::EINTR) => {}
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        // Keep only clients that can still get something: readers, stream receivers,
        // and watchers (closed at exit).
        clients.retain(|c| c.reading || c.mode.is_some());
    }
    if let Some(l) = log.as_mut() {
        let _ = l.flush_partial();
    }
    let oom_killed = cfg.oom_files.iter().any(|p| oom_count(p) > 0);
    // Unmount first (the engine may reuse the snapshot as soon as it knows of the exit),
    // record the exit and tell the engine and the attached clients, and only then remove
    // the runtime's state: the exit is not delayed by the runtime's `delete`.
    unmount_rootfs(cfg);
    let record = ExitRecord {
        exit_code: exit.unwrap_or(255),
        oom_killed,
        finished_at: now_rfc3339(),
    };
    let written = write_atomic(
        &cfg.exit_file,
        &serde_json::to_vec(&record).map_err(io::Error::other)?,
    );
    let _ = fs::remove_file(&cfg.attach_socket);
    drop(clients);
    if written.is_ok() {
        report(&StatusLine::Exited);
    }
    // Only the runtime's state: the engine may have mounted the root filesystem again by
    // now (`docker cp`, export), which must not be unmounted under it.
    rt.delete(cfg);
    written
}

/// The `oom_kill` count of a cgroup memory file (0 when unreadable).
fn oom_count(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Writes `data` to `path` through a temporary file and a rename, so that readers see
/// either the old or the whole new content even if the monitor is killed.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

/// Docker's json-file log: one JSON object per line, rotated by size.
struct JsonLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    partial: [Vec<u8>; 2],
}

#[derive(serde::Serialize)]
struct LogLine<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

impl JsonLog {
    fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<JsonLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(JsonLog {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn write(&mut self, stream: u8, data: &[u8]) -> io::Result<()> {
        let idx = usize::from(stream == 2);
        let mut pending = std::mem::take(&mut self.partial[idx]);
        pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            self.emit(stream, &pending[start..end])?;
            start = end;
        }
        while pending.len() - start >= MAX_LINE {
            self.emit(stream, &pending[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        self.partial[idx] = pending[start..].to_vec();
        Ok(())
    }

    fn flush_partial(&mut self) -> io::Result<()> {
        for (idx, stream) in [(0usize, 1u8), (1, 2)] {
            let p = std::mem::take(&mut self.partial[idx]);
            if !p.is_empty() {
                self.emit(stream, &p)?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, stream: u8, line: &[u8]) -> io::Result<()> {
        let time = now_rfc3339();
        let text = String::from_utf8_lossy(line);
        let mut out = serde_json::to_vec(&LogLine {
            log: &text,
            stream: if stream == 2 { "stderr" } else { "stdout" },
            time: &time,
        })
        .map_err(io::Error::other)?;
        out.push(b'\n');
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        if self.max_size > 0 && self.size >= self.max_size {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let name = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_files <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.max_files - 1).rev() {
            let _ = fs::rename(name(n), name(n + 1));
        }
        fs::rename(&self.path, name(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}
