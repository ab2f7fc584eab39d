//! The sync channel between the runtime and the processes it forks.
//!
//! A `SOCK_SEQPACKET` socketpair carries small tagged messages (one tag byte, then a
//! payload) and, for the console, a file descriptor (`SCM_RIGHTS`). Message boundaries
//! are kept by the socket type, so no framing is needed. EOF means every child holding the
//! other end has exited.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
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

    /// Sends a tagged message carrying a file descriptor.
    pub fn send_fd(&self, tag: u8, fd: RawFd) -> nix::Result<()> {
        let t = [tag];
        let iov = [IoSlice::new(&t)];
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(self.raw(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None).map(|_| ())
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
