//! The sync channel between the runtime and the processes it forks.
//!
//! A `SOCK_SEQPACKET` socketpair carries small tagged messages (one tag byte, then a
//! payload) and, for the console, a file descriptor (`SCM_RIGHTS`). Message boundaries
//! are kept by the socket type, so no framing is needed. EOF means every child holding the
//! other end has exited.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Child → parent: a new user namespace exists; write the id maps of the sender.
pub const USERNS: u8 = b'U';
/// Parent → child: the id maps are written.
pub const USERNS_DONE: u8 = b'u';
/// Stage 1 → parent: the host pid of the container process (i32, little endian).
pub const PID: u8 = b'P';
/// Parent → init: go on with the setup; the payload is the state JSON for hooks.
pub const CONTINUE: u8 = b'C';
/// Parent → init: the init is in the container's cgroup (it may now create its cgroup
/// namespace).
pub const CGROUP: u8 = b'G';
/// Init → parent: a warning to print; the setup goes on.
pub const WARN: u8 = b'W';
/// Init → parent: the pty master is attached.
pub const PTY: u8 = b'T';
/// Init → parent: the setup is complete; the init now waits for `start`.
pub const READY: u8 = b'R';
/// Child → parent: the setup failed; the payload is the message.
pub const ERROR: u8 = b'E';
/// Init or exec'd process → parent: the seccomp filter is loaded; its user-notification
/// listener comes along (`SCM_RIGHTS`), for the agent at `listenerPath`.
pub const SECCOMP: u8 = b'S';
/// Parent → init or exec'd process: the agent has the listener; go on.
pub const SECCOMP_DONE: u8 = b's';

/// Bytes of control data for one fd (`CMSG_SPACE(sizeof(int))`).
// SAFETY: CMSG_SPACE only computes a size.
const FD_SPACE: usize = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;

/// One end of the sync channel.
#[derive(Debug)]
pub struct Sock(pub OwnedFd);

/// A received message.
pub struct Msg {
    /// The tag byte.
    pub tag: u8,
    /// The payload.
    pub data: Vec<u8>,
    /// A file descriptor sent along, if any.
    pub fd: Option<OwnedFd>,
}

impl Sock {
    /// Creates a connected pair (close-on-exec).
    pub fn pair() -> nix::Result<(Sock, Sock)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Sock(a), Sock(b)))
    }

    /// The raw descriptor.
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Sends a tagged message.
    pub fn send(&self, tag: u8, payload: &[u8]) -> nix::Result<()> {
        let t = [tag];
        let iov = [IoSlice::new(&t), IoSlice::new(payload)];
        sendmsg::<()>(self.raw(), &iov, &[], MsgFlags::MSG_NOSIGNAL, None).map(|_| ())
    }

    /// Sends a tagged message carrying a file descriptor. One `sendmsg` and nothing else
    /// (no allocation either, which could `brk`/`mmap`): the init calls this with a fresh
    /// seccomp filter installed, before the agent that may have to answer its calls has
    /// the listener (see `seccomp::HANDOFF_SYSCALLS`).
    pub fn send_fd(&self, tag: u8, fd: RawFd) -> nix::Result<()> {
        let mut t = [tag];
        let mut iov = libc::iovec {
            iov_base: t.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // Room for one SCM_RIGHTS header and fd, aligned for cmsghdr.
        let mut control = [0u64; 4];
        const _: () = assert!(FD_SPACE <= 32, "the control buffer holds one fd");
        // SAFETY: an all-zero msghdr is valid; every pointer set below points at a local
        // that outlives the sendmsg call, with the length given; CMSG_FIRSTHDR of a
        // control buffer of `space` bytes is non-null and has room for one fd.
        let r = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = FD_SPACE as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
            libc::sendmsg(self.raw(), &msg, libc::MSG_NOSIGNAL)
        };
        nix::errno::Errno::result(r).map(drop)
    }

    /// Receives one message; `None` at EOF.
    pub fn recv(&self) -> nix::Result<Option<Msg>> {
        let mut buf = vec![0u8; 65536];
        let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
        let mut reset_seen = false;
        let (len, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.raw(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(r) => {
                    let mut fd = None;
                    for c in r.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for f in fds {
                                // SAFETY: the kernel just installed this descriptor for us
                                // and nothing else owns it.
                                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                                if fd.is_none() {
                                    fd = Some(owned);
                                }
                            }
                        }
                    }
                    break (r.bytes, fd);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // A peer that exits with messages of ours unread sets ECONNRESET on this
                // socket, and a reader already waiting is woken with that error before it
                // looks at its queue: the peer's last message (an init's ERROR) may be
                // there. Reading the error cleared it; read again, once.
                Err(nix::errno::Errno::ECONNRESET) if !reset_seen => {
                    reset_seen = true;
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        if len == 0 {
            return Ok(None);
        }
        buf.truncate(len);
        let tag = buf.remove(0);
        Ok(Some(Msg { tag, data: buf, fd }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A descriptor sent with `send_fd` arrives as the same open file, with its tag.
    #[test]
    fn send_fd_passes_the_descriptor() {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = Sock::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        a.send_fd(SECCOMP, file.as_raw_fd()).unwrap();
        let msg = b.recv().unwrap().unwrap();
        assert_eq!(msg.tag, SECCOMP);
        assert!(msg.data.is_empty());
        let got = std::fs::File::from(msg.fd.expect("an fd"));
        let (want, got) = (file.metadata().unwrap(), got.metadata().unwrap());
        assert_eq!((want.dev(), want.ino()), (got.dev(), got.ino()));
    }

    /// The init's way to fail: a message of the runtime's left unread, its ERROR sent,
    /// then exit. A runtime already waiting in `recv` must get the ERROR, not the
    /// ECONNRESET the kernel reports first.
    #[test]
    fn a_peer_that_fails_and_exits_is_heard_before_its_reset() {
        for _ in 0..20 {
            let (runtime, init) = Sock::pair().unwrap();
            runtime.send(CGROUP, &[]).unwrap();
            let reader = std::thread::spawn(move || runtime.recv());
            std::thread::sleep(Duration::from_millis(20));
            init.send(ERROR, b"mount failed").unwrap();
            drop(init);
            let msg = reader.join().unwrap().unwrap().unwrap();
            assert_eq!(msg.tag, ERROR);
            assert_eq!(msg.data, b"mount failed");
        }
    }
}
