//! A tiny init for containers (`docker run --init`).
//!
//! When a container's spec carries the annotation [`INIT_ANNOTATION`]` = "true"`, the
//! container's init forks at the very last moment before execve (after the seccomp filter
//! is loaded, so both halves are confined alike): the child goes on to exec the user's
//! program, and the parent stays pid 1 of the container as a reaper, like docker-init
//! (tini). The reaper
//!
//! * blocks every asynchronous signal and waits for them with `sigwait`, so signals sent
//!   to pid 1 (`docker stop`'s SIGTERM, `docker kill -s`) are not dropped by the kernel's
//!   pid-1 protection but forwarded to the program;
//! * reaps every child that exits, so orphans re-parented to pid 1 never stay zombies;
//! * exits with the program's status (128 + signal when the program was killed), which
//!   ends the container.
//!
//! No binary is put into the container: the reaper is this runtime's own forked code, so
//! `--init` works in images without a libc (busybox). It shows in `ps` as
//! `/sbin/docker-init -- <program>`, as Docker's does.

use crate::rootfs::CResult;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::CString;

/// The spec annotation that asks for the init (set by the engine for
/// `HostConfig.Init`).
pub const INIT_ANNOTATION: &str = "run.berth.init";

/// Whether the spec asks for an init.
pub(crate) fn wanted(spec: &oci_spec::runtime::Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(INIT_ANNOTATION))
        .is_some_and(|v| v == "true" || v == "1")
}

/// Signals the reaper must not block: those the kernel raises synchronously for faults.
const SYNC_SIGNALS: [Signal; 7] = [
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

fn async_signals() -> SigSet {
    let mut set = SigSet::all();
    for s in SYNC_SIGNALS {
        set.remove(s);
    }
    set
}

/// Forks the reaper. Returns in the child (which then execs the program, with the signal
/// mask it had before); the parent never returns.
pub(crate) fn fork_init(terminal: bool, argv: &[CString]) -> CResult<()> {
    let set = async_signals();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .map_err(|e| format!("block signals for the init: {e}"))?;
    // SAFETY: this process is single-threaded (a fork of the single-threaded runtime), so
    // the child may run arbitrary code.
    match unsafe { fork() } {
        Err(e) => Err(format!("fork the program under the init: {e}")),
        Ok(ForkResult::Child) => {
            if terminal {
                // The program owns the terminal (its own process group in the
                // foreground), so ^C reaches it once, not through the reaper too.
                let me = nix::unistd::getpid();
                let _ = nix::unistd::setpgid(me, me);
                let _ = nix::unistd::tcsetpgrp(std::io::stdin(), me);
            }
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
                .map_err(|e| format!("restore the signal mask: {e}"))?;
            Ok(())
        }
        Ok(ForkResult::Parent { child }) => {
            close_from(3);
            set_title(argv);
            // Give back the free heap of the runtime it was forked from (it counts
            // against the container's memory).
            // SAFETY: malloc_trim only returns free memory to the kernel.
            unsafe { libc::malloc_trim(0) };
            reap(child, &set)
        }
    }
}

/// Closes every descriptor from `first` on (the runtime's sync socket, the exec fifo),
/// keeping stdio.
fn close_from(first: u32) {
    // SAFETY: close_range only closes descriptors; nothing in this process uses the
    // closed ones afterwards (it only waits for signals and children).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if r != 0 {
        for fd in first..1024 {
            // SAFETY: as above, for one descriptor.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// Waits for signals: forwards each to `child`, reaps on SIGCHLD, and exits with the
/// child's status once it is gone.
fn reap(child: Pid, set: &SigSet) -> ! {
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => exit(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => exit(128 + s as i32),
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends this forked process without running destructors it shares with
    // nothing.
    unsafe { libc::_exit(code) }
}

/// The title the reaper shows in `ps`: `/sbin/docker-init -- ARGS...`, NUL-separated.
fn title(argv: &[CString]) -> Vec<u8> {
    let mut t = b"/sbin/docker-init\0--\0".to_vec();
    for a in argv {
        t.extend_from_slice(a.as_bytes());
        t.push(0);
    }
    t
}

/// Rewrites this process's command line (the argv strings the kernel shows in
/// `/proc/self/cmdline`) to [`title`], truncated to the space the original took, and sets
/// its name to `docker-init`.
fn set_title(argv: &[CString]) {
    let _ = nix::sys::prctl::set_name(c"docker-init");
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces) start at field 3;
    // arg_start and arg_end are fields 48 and 49.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (Some(start), Some(end)) = (
        f.get(45).and_then(|v| v.parse::<usize>().ok()),
        f.get(46).and_then(|v| v.parse::<usize>().ok()),
    ) else {
        return;
    };
    if end <= start || end - start > 1 << 20 {
        return;
    }
    let len = end - start;
    let mut t = title(argv);
    t.truncate(len.saturating_sub(1));
    t.resize(len, 0);
    // SAFETY: [arg_start, arg_end) is this process's own argv area on its initial stack
    // (mapped, writable, as the kernel reports it); nothing in this process reads the old
    // strings any more.
    unsafe { std::ptr::copy_nonoverlapping(t.as_ptr(), start as *mut u8, len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_is_docker_inits() {
        let argv = [CString::new("sleep").unwrap(), CString::new("9").unwrap()];
        assert_eq!(title(&argv), b"/sbin/docker-init\0--\0sleep\09\0");
    }

    #[test]
    fn fault_signals_stay_unblocked() {
        let s = async_signals();
        assert!(s.contains(Signal::SIGTERM) && s.contains(Signal::SIGCHLD));
        assert!(!s.contains(Signal::SIGSEGV));
    }

    #[test]
    fn annotation_asks_for_init() {
        let mut spec = oci_spec::runtime::Spec::default();
        assert!(!wanted(&spec));
        spec.set_annotations(Some(
            [(INIT_ANNOTATION.to_string(), "true".to_string())].into(),
        ));
        assert!(wanted(&spec));
    }
}
