//! Proxying a container's pty to the runtime's own stdio, for `run` with
//! `process.terminal` and no console socket.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Restores the terminal mode of stdin on drop.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Copies stdin to the pty master and the master to stdout until the container side
/// closes (the program and everything holding the slave exited).
pub(crate) fn proxy(master: OwnedFd) {
    let m = master.as_raw_fd();
    copy_size(m);
    let _raw = RawMode::enter();
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: m,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if crate::signals::take_winch() {
            copy_size(m);
        }
        if n < 0 {
            if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 {
            match nix::unistd::read(&master, &mut buf) {
                Ok(0) | Err(_) => return, // EIO: the slave side is gone
                Ok(k) => {
                    if write_all(1, &buf[..k]).is_err() {
                        return;
                    }
                }
            }
        }
        if stdin_open && fds[1].revents != 0 {
            match nix::unistd::read(std::io::stdin().as_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(k) => {
                    if write_all(m, &buf[..k]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Gives the pty our terminal's size (the kernel then signals the container's SIGWINCH).
fn copy_size(master: i32) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read/write a winsize held in a live local.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master, libc::TIOCSWINSZ, &ws);
        }
    }
}

fn write_all(fd: i32, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        // SAFETY: `fd` is an open descriptor for the duration of the call.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        match nix::unistd::write(b, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
