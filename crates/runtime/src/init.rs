//! The forked side of `create` and `exec`.
//!
//! Stage 1 (a child of the runtime) joins the cgroup (and, for exec, the resctrl group),
//! joins the namespaces given by path, creates a user namespace if asked (the runtime
//! writes its id maps), unshares the other new namespaces and forks the container
//! process, whose host pid it reports before exiting. The container process (pid 1 of a
//! new pid namespace for `create`) builds the rootfs, applies the process settings,
//! reports `READY` (or the error that stopped it) and then blocks opening the exec fifo
//! for writing until `start` opens it for reading.
//! Only then does it exec the user's program, with seccomp loaded last. A filter with a
//! user-notification listener is the exception: it is loaded before `READY`, and its
//! listener handed to the runtime for the seccomp agent (see `crate::agent`).
//!
//! Everything here runs in a freshly forked copy of a single-threaded runtime, so memory
//! allocation is safe; the process never returns to the caller's code (it `_exit`s).

use crate::hooks;
use crate::process;
use crate::rootfs::{self, CResult, CgroupMounts, Ctx};
use crate::sync::{self, Sock};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::{Process, Spec};
use std::convert::Infallible;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Everything the forked processes need, prepared by the runtime before forking.
pub(crate) struct ChildArgs<'a> {
    /// Container config.
    pub spec: &'a Spec,
    /// The process to run (the container's, or the exec'd one).
    pub process: &'a Process,
    /// Absolute rootfs (create only).
    pub rootfs: &'a Path,
    /// Absolute bundle dir (relative bind sources).
    pub bundle: &'a Path,
    /// The child's end of the sync channel.
    pub sock: &'a Sock,
    /// Namespaces to join, user namespace first.
    pub joins: Vec<(CloneFlags, OwnedFd)>,
    /// Whether to create a new user namespace.
    pub new_user: bool,
    /// The other namespaces to create.
    pub new_flags: CloneFlags,
    /// The cgroup to join first.
    pub cgroup: Option<&'a cgroups::Cgroup>,
    /// The resctrl group to join with the cgroup (exec only; the runtime moves the init).
    pub resctrl: Option<&'a crate::resctrl::Placement>,
    /// The container's cgroup directories, for `cgroup` mounts.
    pub cg_mounts: CgroupMounts,
    /// O_PATH descriptor of the exec fifo (create only).
    pub fifo: Option<RawFd>,
    /// O_PATH descriptor of the state directory (fallback to reach the fifo).
    pub state_dir: Option<RawFd>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Number of fds above stdio passed to the program.
    pub preserve_fds: i32,
    /// Don't create a new session keyring.
    pub no_new_keyring: bool,
    /// Container id (keyring name).
    pub id: &'a str,
    /// Exec into an existing container instead of creating one.
    pub exec: bool,
    /// The seccomp filter, compiled before the fork.
    pub seccomp: Option<seccomp::Program>,
    /// The idmapped mounts, prepared before the fork (create only).
    pub idmapped: crate::idmap::Mounts,
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends this forked process without running the parent's destructors or
    // flushing buffers it shares with the parent.
    unsafe { libc::_exit(code) }
}

/// Stage 1: never returns.
pub(crate) fn stage1(a: &ChildArgs) -> ! {
    match stage1_inner(a) {
        Ok(pid) => {
            let _ = a.sock.send(sync::PID, &pid.to_le_bytes());
            exit(0)
        }
        Err(e) => {
            let _ = a.sock.send(sync::ERROR, e.as_bytes());
            exit(1)
        }
    }
}

fn stage1_inner(a: &ChildArgs) -> CResult<i32> {
    if a.exec {
        crate::sched::apply_initial_affinity(a.process)?;
    }
    if let Some(cg) = a.cgroup {
        cg.add_pid(std::process::id() as i32)
            .ctx(|| "join the container cgroup".into())?;
    }
    if let Some(rdt) = a.resctrl {
        // The process forked below inherits the group.
        rdt.join(std::process::id() as i32)
            .ctx(|| "join the container's resctrl group".into())?;
    }
    for (flag, fd) in &a.joins {
        setns(fd, *flag).ctx(|| format!("join namespace {flag:?}"))?;
    }
    let joined_user = a.joins.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWUSER);
    if joined_user && !a.exec {
        // Our host ids mean nothing in the joined namespace: files the init creates in
        // the filesystems it mounts there (/dev/pts in the /dev tmpfs) would fail with
        // EOVERFLOW. Become its root, as with a new user namespace.
        become_root("the joined user namespace")?;
    }
    if a.new_user {
        unshare(CloneFlags::CLONE_NEWUSER).ctx(|| "create user namespace".into())?;
        a.sock
            .send(sync::USERNS, &[])
            .ctx(|| "ask for id maps".into())?;
        match a.sock.recv() {
            Ok(Some(m)) if m.tag == sync::USERNS_DONE => {}
            _ => return Err("the runtime did not write the id maps".into()),
        }
        become_root("the user namespace")?;
    }
    // For create, the runtime moves the init into its cgroup while the init builds the
    // rootfs (a cgroup migration waits for an RCU grace period: milliseconds); the init
    // creates its cgroup namespace itself once that is done.
    let flags = if a.exec {
        a.new_flags
    } else {
        a.new_flags - CloneFlags::CLONE_NEWCGROUP
    };
    if !flags.is_empty() {
        unshare(flags).ctx(|| format!("create namespaces {flags:?}"))?;
    }
    let newtime = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    if flags.contains(newtime) {
        set_time_offsets(a)?;
    }
    // SAFETY: this process is single-threaded (a fresh fork of the single-threaded
    // runtime), so the child may run arbitrary code.
    match unsafe { fork() }.ctx(|| "fork the container process".into())? {
        ForkResult::Child => {
            let err = if a.exec { exec_child(a) } else { init(a) };
            let msg = match err {
                Err(e) => e,
                Ok(never) => match never {},
            };
            let _ = a.sock.send(sync::ERROR, msg.as_bytes());
            exit(1)
        }
        ForkResult::Parent { child } => Ok(child.as_raw()),
    }
}

/// Sets every uid and gid of the process to 0 in its user namespace (`which`, for the
/// message).
fn become_root(which: &str) -> CResult<()> {
    let root_g = nix::unistd::Gid::from_raw(0);
    let root_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g)
        .ctx(|| format!("become root in {which} (gid)"))?;
    nix::unistd::setresuid(root_u, root_u, root_u).ctx(|| format!("become root in {which} (uid)"))
}

/// Writes `linux.timeOffsets` for the new time namespace (before its first process).
fn set_time_offsets(a: &ChildArgs) -> CResult<()> {
    let offsets = a
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref());
    let mut text = String::new();
    for (clock, off) in offsets.into_iter().flatten() {
        if clock != "monotonic" && clock != "boottime" {
            return Err(format!("time offset for unknown clock {clock:?}"));
        }
        text.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    if text.is_empty() {
        return Ok(());
    }
    std::fs::write("/proc/self/timens_offsets", text).ctx(|| "set time namespace offsets".into())
}

/// Joins a new session keyring named after the container (errors ignored: the kernel may
/// not allow it in a user namespace).
fn join_keyring(id: &str) {
    if let Ok(name) = std::ffi::CString::new(id) {
        // SAFETY: KEYCTL_JOIN_SESSION_KEYRING (1) takes a NUL-terminated name.
        unsafe { libc::syscall(libc::SYS_keyctl, 1, name.as_ptr()) };
    }
}

fn init(a: &ChildArgs) -> CResult<Infallible> {
    let state = match a.sock.recv() {
        Ok(Some(m)) if m.tag == sync::CONTINUE => m.data,
        _ => return Err("the runtime went away before the setup".into()),
    };
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    if !a.no_new_keyring {
        join_keyring(a.id);
    }
    if let Some(adj) = a.process.oom_score_adj() {
        match std::fs::write("/proc/self/oom_score_adj", adj.to_string()) {
            Ok(()) => {}
            // Lowering it needs CAP_SYS_RESOURCE, which this host may not grant: keep
            // the inherited value, like rlimits that cannot be raised.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let msg =
                    format!("cannot set oom_score_adj to {adj} ({e}); keeping the inherited value");
                let _ = a.sock.send(sync::WARN, msg.as_bytes());
            }
            Err(e) => return Err(format!("set oom_score_adj to {adj}: {e}")),
        }
    }
    let linux = a.spec.linux().as_ref();
    let prop_name = linux.and_then(|l| l.rootfs_propagation().as_deref());
    let propagation = rootfs::parse_propagation(prop_name)?;
    rootfs::prepare_root(a.rootfs, propagation)?;
    let new_cgroupns = a.new_flags.contains(CloneFlags::CLONE_NEWCGROUP);
    let mounts = a.spec.mounts().as_deref().unwrap_or_default();
    // A cgroup2 mount shows the namespace's root: the namespace must exist before it.
    let mut in_cgroup = false;
    if new_cgroupns && a.cg_mounts.unified_only {
        enter_cgroup(a, new_cgroupns)?;
        in_cgroup = true;
    }
    for (i, m) in mounts.iter().enumerate() {
        let idmapped = a.idmapped.get(i);
        rootfs::mount_entry(a.rootfs, a.bundle, m, &a.cg_mounts, new_cgroupns, idmapped)?;
    }
    let dev_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    });
    if !dev_bound {
        let devices = linux
            .and_then(|l| l.devices().as_deref())
            .unwrap_or_default();
        rootfs::create_devices(a.rootfs, devices)?;
        rootfs::dev_symlinks(a.rootfs)?;
    }
    // Like runc, create a missing working directory.
    if let Ok(cwd) = rootfs::resolve_in_root(a.rootfs, a.process.cwd()) {
        let _ = std::fs::create_dir_all(cwd);
    }
    if !in_cgroup {
        enter_cgroup(a, new_cgroupns)?;
    }
    let hooks = a.spec.hooks().as_ref();
    hooks::run_hooks(
        "createContainer",
        hooks.and_then(|h| h.create_container().as_ref()),
        &state,
    )?;
    rootfs::enter_root(a.rootfs, a.no_pivot)?;
    if propagation.contains(nix::mount::MsFlags::MS_SHARED) {
        nix::mount::mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
            .ctx(|| "set rootfs propagation".into())?;
    }
    if let Some(s) = linux.and_then(|l| l.sysctl().as_ref()) {
        rootfs::sysctls(s)?;
    }
    if let Some(h) = a.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).ctx(|| format!("set hostname {h:?}"))?;
    }
    if let Some(d) = a.spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        let c = std::ffi::CString::new(d).map_err(|_| "domainname holds a NUL byte")?;
        // SAFETY: c is a valid buffer of the given length.
        if unsafe { libc::setdomainname(c.as_ptr(), d.len()) } != 0 {
            return Err(format!("set domainname: {}", nix::errno::Errno::last()));
        }
    }
    if let Some(p) = linux.and_then(|l| l.readonly_paths().as_ref()) {
        rootfs::readonly_paths(p)?;
    }
    if let Some(p) = linux.and_then(|l| l.masked_paths().as_ref()) {
        rootfs::mask_paths(p)?;
    }
    if a.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        rootfs::remount_bind(Path::new("/"), nix::mount::MsFlags::MS_RDONLY)
            .ctx(|| "remount the rootfs read-only".into())?;
    }
    let keep: Vec<RawFd> = a.fifo.iter().chain(a.state_dir.iter()).copied().collect();
    let ready = prepare_process(a, &keep)?;
    a.sock
        .send(sync::READY, &[])
        .ctx(|| "report ready".into())?;
    // Held (close-on-exec) until execve, so `start` sees EOF only once we exec'd.
    let _started = wait_for_start(a)?;
    hooks::run_hooks(
        "startContainer",
        hooks.and_then(|h| h.start_container().as_ref()),
        &state,
    )?;
    ready.exec()
}

/// Waits until the runtime has moved us into the container's cgroup, then creates the
/// cgroup namespace if one is asked for.
fn enter_cgroup(a: &ChildArgs, new_ns: bool) -> CResult<()> {
    match a.sock.recv() {
        Ok(Some(m)) if m.tag == sync::CGROUP => {}
        _ => return Err("the runtime did not place the container in its cgroup".into()),
    }
    if new_ns {
        unshare(CloneFlags::CLONE_NEWCGROUP).ctx(|| "create cgroup namespace".into())?;
    }
    Ok(())
}

/// A process ready to be executed.
struct Ready<'a> {
    path: std::ffi::CString,
    argv: Vec<std::ffi::CString>,
    env: Vec<std::ffi::CString>,
    filter: Option<&'a seccomp::Program>,
    no_new_privs: bool,
    /// Run the program under the container's own init (`--init`, see [`crate::reaper`]).
    init: bool,
    /// The process has a terminal.
    terminal: bool,
}

impl Ready<'_> {
    /// Sets no_new_privs, loads seccomp and execs. Returns only on failure.
    fn exec(self) -> CResult<Infallible> {
        reset_signals()?;
        if self.no_new_privs {
            set_no_new_privs()?;
        }
        if let Some(f) = self.filter {
            // Never one with a listener: that one is loaded in `prepare_process`.
            load_seccomp(f)?;
        }
        if self.init {
            crate::reaper::fork_init(self.terminal, &self.argv)?;
        }
        let e = nix::unistd::execve(&self.path, &self.argv, &self.env).unwrap_err();
        Err(format!("exec {:?}: {e}", self.path))
    }
}

/// Gives the program the signal state of a fresh process, whatever its caller had: an
/// empty signal mask, and the default action for every signal. An ignored signal stays
/// ignored across execve, and Rust programs (the runtime itself, or the engine's monitor,
/// which links the runtime) start with SIGPIPE ignored: without this, `yes | head` in a
/// container would not end `yes` with SIGPIPE as it does under docker.
fn reset_signals() -> CResult<()> {
    // Every signal the kernel knows (1..=64), the real-time ones that glibc keeps for
    // itself (32, 33) included, which its sigaction() refuses to touch: hence the raw
    // system call. An all-zero kernel `struct sigaction` is SIG_DFL with no flags and an
    // empty mask on every architecture, whatever its field order.
    const KERNEL_NSIG: i32 = 64;
    let act = [0u64; 4];
    for sig in 1..=KERNEL_NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `act` is a valid, zeroed kernel sigaction that outlives the call; the
        // old action is not asked for; 8 is the kernel's sigset size (_NSIG / 8). Setting
        // SIG_DFL runs no code, and this process installs no handler before exec.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                act.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8usize,
            )
        };
        if r != 0 {
            return Err(format!(
                "reset the action of signal {sig}: {}",
                nix::errno::Errno::last()
            ));
        }
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(|e| format!("clear the signal mask: {e}"))
}

fn set_no_new_privs() -> CResult<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS with a flag value has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("set no_new_privs: {}", nix::errno::Errno::last()));
    }
    Ok(())
}

/// Loads the filter and, when it has a user-notification listener (`SCMP_ACT_NOTIFY`),
/// hands the listener to the runtime, which passes it on to the seccomp agent, and waits
/// until the agent has it. The only call between the two is the `sendmsg` of
/// [`sync::Sock::send_fd`] (which the seccomp crate refuses to notify): any later call the
/// profile notifies just waits for the agent, which is sure to get the listener.
fn install_seccomp(a: &ChildArgs, p: &seccomp::Program) -> CResult<()> {
    let Some(listener) = load_seccomp(p)? else {
        return Ok(());
    };
    let sent = a.sock.send_fd(sync::SECCOMP, listener.as_raw_fd());
    // The container must not keep a listener: it could answer its own calls.
    drop(listener);
    sent.ctx(|| "pass the seccomp listener to the runtime".into())?;
    match a.sock.recv() {
        Ok(Some(m)) if m.tag == sync::SECCOMP_DONE => Ok(()),
        _ => Err("the runtime could not hand the seccomp listener to the agent".into()),
    }
}

/// Installs a compiled seccomp program on the calling thread (every thread with TSYNC).
/// Needs no_new_privs or CAP_SYS_ADMIN. Returns the user-notification listener when the
/// program has one (`SECCOMP_FILTER_FLAG_NEW_LISTENER`).
fn load_seccomp(p: &seccomp::Program) -> CResult<Option<OwnedFd>> {
    let mut insns: Vec<libc::sock_filter> = p
        .instructions
        .chunks_exact(seccomp::INSN_LEN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let len = u16::try_from(insns.len())
        .map_err(|_| format!("seccomp filter of {} instructions is too long", insns.len()))?;
    let prog = libc::sock_fprog {
        len,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: `prog` points to `len` initialised sock_filter structs in `insns`, which
    // outlives the call; the kernel copies the program and keeps no pointer to it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            p.flags,
            &prog as *const libc::sock_fprog,
        )
    };
    // Success is 0, or the listener's fd with NEW_LISTENER; without it, a positive value
    // is the thread TSYNC could not synchronize.
    if r > 0 && !p.has_listener() {
        return Err(format!(
            "load the seccomp filter: thread {r} could not be synced"
        ));
    }
    if r < 0 {
        let e = nix::errno::Errno::last();
        return Err(match e {
            nix::errno::Errno::EACCES => {
                "load the seccomp filter: it needs no_new_privs or CAP_SYS_ADMIN".to_string()
            }
            e => format!("load the seccomp filter: {e}"),
        });
    }
    if !p.has_listener() {
        return Ok(None);
    }
    let fd = RawFd::try_from(r).map_err(|_| format!("seccomp returned listener fd {r}"))?;
    // SAFETY: with NEW_LISTENER, seccomp's return value is a new descriptor (close-on-exec)
    // that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Applies everything but no_new_privs and seccomp, and finds the executable.
fn prepare_process<'a>(a: &'a ChildArgs, keep: &[RawFd]) -> CResult<Ready<'a>> {
    let p = a.process;
    // Before seccomp and before the capabilities are dropped (RT classes need them).
    crate::sched::apply(p, Some(a.spec))?;
    // Before seccomp, which may only allow set_mempolicy with CAP_SYS_NICE.
    crate::mempolicy::apply(a.spec)?;
    if a.exec {
        crate::sched::apply_final_affinity(p)?;
    }
    process::set_rlimits(p, &mut |w| {
        let _ = a.sock.send(sync::WARN, w.as_bytes());
    })?;
    if p.terminal() == Some(true) {
        process::setup_console(a.sock, p)?;
    }
    let mut keep = keep.to_vec();
    keep.push(a.sock.raw());
    process::fix_fds(a.preserve_fds, &keep)?;
    let mut filter = a.seccomp.as_ref();
    let no_new_privs = p.no_new_privileges() == Some(true);
    if !no_new_privs {
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it now, while
        // we still have it (the remaining setup must then pass the filter, as with runc).
        if let Some(f) = filter.take() {
            install_seccomp(a, f)?;
        }
    }
    process::set_user_and_caps(p)?;
    nix::unistd::chdir(p.cwd()).ctx(|| format!("chdir to cwd {}", p.cwd().display()))?;
    let env = process::build_env(p)?;
    let (path, argv) = process::lookup(p)?;
    let umask = p.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    // A filter with a listener goes in now, during `create`, rather than at execve after
    // `start`: the runtime that hands the listener to the agent is only there until
    // `create` returns (runc does the same). no_new_privs first: the capabilities are gone.
    if let Some(f) = filter.filter(|f| f.has_listener()) {
        set_no_new_privs()?;
        install_seccomp(a, f)?;
        filter = None;
    }
    Ok(Ready {
        path,
        argv,
        env,
        filter,
        no_new_privs,
        init: !a.exec && crate::reaper::wanted(a.spec),
        terminal: p.terminal() == Some(true),
    })
}

/// Blocks until `start` opens the fifo, then writes one byte to tell it we go on.
/// Returns the (close-on-exec) write end: `start` waits for it to close at execve.
fn wait_for_start(a: &ChildArgs) -> CResult<Option<std::os::fd::OwnedFd>> {
    let Some(fifo) = a.fifo else {
        return Ok(None);
    };
    let flags = nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::empty();
    let fd = match nix::fcntl::open(format!("/proc/self/fd/{fifo}").as_str(), flags, mode) {
        Ok(fd) => fd,
        Err(first) => match a.state_dir {
            Some(dir) => {
                // SAFETY: `dir` is an O_PATH descriptor this process keeps open.
                let dir = unsafe { std::os::fd::BorrowedFd::borrow_raw(dir) };
                nix::fcntl::openat(dir, crate::container::FIFO, flags, mode)
                    .ctx(|| format!("open the exec fifo (first try: {first})"))?
            }
            None => return Err(format!("open the exec fifo: {first}")),
        },
    };
    nix::unistd::write(&fd, b"0").ctx(|| "write to the exec fifo".into())?;
    Ok(Some(fd))
}

fn exec_child(a: &ChildArgs) -> CResult<Infallible> {
    if a.process.terminal() == Some(true) {
        nix::unistd::setsid().ctx(|| "setsid".into())?;
    }
    let ready = prepare_process(a, &[])?;
    a.sock
        .send(sync::READY, &[])
        .ctx(|| "report ready".into())?;
    ready.exec()
}
