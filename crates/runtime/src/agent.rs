//! Seccomp user notification: handing a container's listener to its seccomp agent.
//!
//! # Model
//!
//! A profile that sends system calls to user space (`SCMP_ACT_NOTIFY`) is loaded with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`, and the kernel returns a listener fd: whoever holds
//! it receives the notified calls (`SECCOMP_IOCTL_NOTIF_RECV`) and answers them
//! (`SECCOMP_IOCTL_NOTIF_SEND`); until then the caller waits. That holder is the seccomp
//! agent listening on `linux.seccomp.listenerPath`.
//!
//! The container's init (or an exec'd process) loads such a filter during `create` (not
//! at execve after `start`: the runtime is gone by then) and right away passes the
//! listener to the runtime over the sync socket (`SECCOMP`, the fd as `SCM_RIGHTS`), then
//! waits. The runtime, which answers that message before waiting for anything else from
//! the init, connects to the agent, sends it one container process state (JSON: the
//! state, the process's host pid, `listenerMetadata`, `"fds": ["seccompFd"]`, with the fd
//! in the same `sendmsg`), closes the connection and its copy of the fd, and lets the
//! init go on (`SECCOMP_DONE`). So no notified call can wait for an agent that will never
//! get the listener: the only call between loading and the hand-off is the init's
//! `sendmsg`, which the seccomp crate refuses to notify. The container never keeps a copy
//! of its listener.
//!
//! If the agent cannot be reached, `create` (or `exec`) fails and removes what it made.

use crate::error::{Error, Result};
use crate::state::{OciState, OCI_VERSION};
use nix::sys::socket::{
    connect, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use oci_spec::runtime::LinuxSeccomp;
use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// How long connecting to the agent and sending the state may block (an agent that
/// neither accepts nor reads must not hang `create`).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The container process state the agent receives: `pid` is the process the listener
/// belongs to (the init for `create`, the exec'd process for `exec`).
pub(crate) fn process_state(seccomp: &LinuxSeccomp, pid: i32, state: &OciState) -> Vec<u8> {
    let mut msg = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "fds": [oci_spec::runtime::SECCOMP_FD_NAME],
        "pid": pid,
        "state": state,
    });
    if let Some(m) = seccomp.listener_metadata() {
        msg["metadata"] = m.as_str().into();
    }
    serde_json::to_vec(&msg).unwrap_or_default()
}

/// Sends `listener` with the container process state `state_json` (from
/// [`process_state`]) to the agent at `seccomp.listenerPath`, on a connection of its
/// own, then closes the connection and the runtime's copy of the listener.
pub(crate) fn hand_over(
    seccomp: &LinuxSeccomp,
    state_json: &[u8],
    listener: OwnedFd,
) -> Result<()> {
    let Some(path) = seccomp.listener_path().as_deref() else {
        return Err(Error::InvalidConfig(
            "SCMP_ACT_NOTIFY is used but linux.seccomp.listenerPath is not set".into(),
        ));
    };
    let fail = |what: &str| {
        let what = what.to_string();
        let path = path.to_path_buf();
        move |e: nix::Error| Error::SeccompAgent {
            path,
            what,
            source: std::io::Error::from(e),
        }
    };
    let sock = connect_to(path).map_err(fail("connect"))?;
    let iov = [IoSlice::new(state_json)];
    let fds = [listener.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let n = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(fail("send the container process state"))?;
    // A stream may take part of it: the rest follows without fds, as the spec allows.
    let mut stream = std::os::unix::net::UnixStream::from(sock);
    stream
        .write_all(&state_json[n..])
        .map_err(|source| Error::SeccompAgent {
            path: path.to_path_buf(),
            what: "send the container process state".into(),
            source,
        })?;
    Ok(())
}

/// A stream connection to `path`, with [`SEND_TIMEOUT`] on connecting and sending.
fn connect_to(path: &Path) -> nix::Result<OwnedFd> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let timeout = nix::sys::time::TimeVal::new(SEND_TIMEOUT.as_secs() as _, 0);
    // For a unix socket the send timeout also bounds a connect that waits for room in
    // the agent's backlog.
    setsockopt(&sock, sockopt::SendTimeout, &timeout)?;
    connect(sock.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Status;
    use std::io::Read;
    use std::os::fd::{FromRawFd, RawFd};
    use std::os::unix::fs::MetadataExt;

    fn seccomp(path: Option<&Path>, meta: Option<&str>) -> LinuxSeccomp {
        let mut v = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]
        });
        if let Some(p) = path {
            v["listenerPath"] = p.to_str().unwrap().into();
        }
        if let Some(m) = meta {
            v["listenerMetadata"] = m.into();
        }
        serde_json::from_value(v).unwrap()
    }

    fn state() -> OciState {
        OciState {
            oci_version: OCI_VERSION.into(),
            id: "c1".into(),
            status: Status::Creating,
            pid: 42,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: String::new(),
            owner: String::new(),
            annotations: [("k".to_string(), "v".to_string())].into(),
        }
    }

    /// What an agent reads from one connection: the JSON and the fd that came with it.
    fn receive(conn: &std::os::unix::net::UnixStream) -> (serde_json::Value, OwnedFd) {
        let mut buf = vec![0u8; 65536];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let r = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let mut fd = None;
        for c in r.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel installed this descriptor for us.
                fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
            }
        }
        let n = r.bytes;
        let mut data = buf[..n].to_vec();
        let mut rest = Vec::new();
        let mut c = conn;
        c.read_to_end(&mut rest).unwrap();
        data.extend(rest);
        (serde_json::from_slice(&data).unwrap(), fd.expect("an fd"))
    }

    #[test]
    fn the_agent_gets_the_state_and_the_fd_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let agent = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let s = seccomp(Some(&path), Some("MKNOD=/dev/null"));
        let file = tempfile::tempfile().unwrap();
        let listener = OwnedFd::from(file.try_clone().unwrap());
        hand_over(&s, &process_state(&s, 4242, &state()), listener).unwrap();
        let (conn, _) = agent.accept().unwrap();
        // read_to_end in receive() returning proves the runtime closed the connection.
        let (v, fd) = receive(&conn);
        assert_eq!(v["ociVersion"], OCI_VERSION);
        assert_eq!(v["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["metadata"], "MKNOD=/dev/null");
        assert_eq!(v["state"]["status"], "creating");
        assert_eq!(v["state"]["id"], "c1");
        assert_eq!(v["state"]["annotations"]["k"], "v");
        let (want, got) = (
            file.metadata().unwrap(),
            std::fs::File::from(fd).metadata().unwrap(),
        );
        assert_eq!((want.dev(), want.ino()), (got.dev(), got.ino()));
        // Without metadata the field is absent.
        let v: serde_json::Value =
            serde_json::from_slice(&process_state(&seccomp(Some(&path), None), 1, &state()))
                .unwrap();
        assert!(v.get("metadata").is_none(), "{v}");
    }

    #[test]
    fn an_absent_agent_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody.sock");
        let s = seccomp(Some(&path), None);
        let fd = OwnedFd::from(tempfile::tempfile().unwrap());
        let e = hand_over(&s, b"{}", fd).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("nobody.sock"), "{text}");
        assert!(text.contains("listenerPath"), "{text}");
        assert_eq!(errkind::HasKind::kind(&e), errkind::ErrorKind::Unavailable);
        let fd = OwnedFd::from(tempfile::tempfile().unwrap());
        let e = hand_over(&seccomp(None, None), b"{}", fd).unwrap_err();
        assert!(e.to_string().contains("listenerPath"), "{e}");
    }
}
