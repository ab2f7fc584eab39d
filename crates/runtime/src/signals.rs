//! Forwarding the signals the runtime receives (in `run` and `exec`) to the container
//! process it waits for.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static TARGET: AtomicI32 = AtomicI32::new(0);
static WINCH: AtomicBool = AtomicBool::new(false);

/// True (once) when the terminal was resized since the last call.
pub fn take_winch() -> bool {
    WINCH.swap(false, Ordering::Relaxed)
}

/// Signals forwarded to the container process.
const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGALRM,
];

extern "C" fn forward(sig: libc::c_int) {
    if sig == libc::SIGWINCH {
        WINCH.store(true, Ordering::Relaxed);
    }
    let pid = TARGET.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and has no memory effects.
        unsafe { libc::kill(pid, sig) };
    }
}

/// From now on, forwards the usual termination and job-control signals to `pid`.
pub fn forward_to(pid: i32) {
    TARGET.store(pid, Ordering::Relaxed);
    for &sig in FORWARDED {
        // SAFETY: a zeroed sigaction is valid; the handler only calls async-signal-safe
        // functions; SA_RESTART keeps blocking calls going.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
