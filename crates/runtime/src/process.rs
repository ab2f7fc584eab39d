//! Applying a `process` definition in the child: rlimits, console, user, capabilities,
//! working directory, environment and the executable lookup.
//!
//! Runs in the container's init (or an exec'd process) after the root is in place.
//! Errors are strings for the caller of `create`/`exec`.

use crate::rootfs::{CResult, Ctx};
use crate::sync::{self, Sock};
use nix::errno::Errno;
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};
use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The PATH used when the process environment has none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Sets the process rlimits. When raising a limit is refused (no CAP_SYS_RESOURCE), the
/// limit is clamped to the current hard limit and `warn` is told.
pub(crate) fn set_rlimits(process: &Process, warn: &mut dyn FnMut(String)) -> CResult<()> {
    for r in process.rlimits().as_deref().unwrap_or_default() {
        let res = rlimit_resource(r.typ());
        let want = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: `want` is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(res, &want) } == 0 {
            continue;
        }
        let err = Errno::last();
        if err != Errno::EPERM {
            return Err(format!("setrlimit {:?}: {err}", r.typ()));
        }
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `cur` is a valid, writable rlimit.
        if unsafe { libc::getrlimit(res, &mut cur) } != 0 {
            return Err(format!("getrlimit {:?}: {}", r.typ(), Errno::last()));
        }
        let hard = r.hard().min(cur.rlim_max);
        let clamped = libc::rlimit {
            rlim_cur: r.soft().min(hard),
            rlim_max: hard,
        };
        // SAFETY: `clamped` is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(res, &clamped) } != 0 {
            return Err(format!("setrlimit {:?}: {}", r.typ(), Errno::last()));
        }
        warn(format!(
            "rlimit {:?}: cannot raise to soft={} hard={} (no CAP_SYS_RESOURCE), clamped to soft={} hard={}",
            r.typ(),
            r.soft(),
            r.hard(),
            clamped.rlim_cur,
            clamped.rlim_max
        ));
    }
    Ok(())
}

/// Opens a pty inside the container, sends the master to the parent over `sock` and makes
/// the slave the controlling terminal and stdio. Assumes the process leads a session.
pub(crate) fn setup_console(sock: &Sock, process: &Process) -> CResult<()> {
    let ptmx = if Path::new("/dev/ptmx").exists() {
        "/dev/ptmx"
    } else {
        "/dev/pts/ptmx"
    };
    let master = nix::fcntl::open(
        ptmx,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open {ptmx}"))?;
    let mfd = master.as_raw_fd();
    let mut unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int and TIOCGPTN writes an unsigned int; both point to
    // live locals.
    unsafe {
        if libc::ioctl(mfd, libc::TIOCSPTLCK, &mut unlock) != 0 {
            return Err(format!("unlock pty: {}", Errno::last()));
        }
        if libc::ioctl(mfd, libc::TIOCGPTN, &mut n) != 0 {
            return Err(format!("get pty number: {}", Errno::last()));
        }
    }
    let slave_path = format!("/dev/pts/{n}");
    let slave = nix::fcntl::open(
        slave_path.as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open {slave_path}"))?;
    let sfd = slave.as_raw_fd();
    if let Some(size) = process.console_size() {
        let ws = libc::winsize {
            ws_row: size.height() as u16,
            ws_col: size.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a live local.
        unsafe { libc::ioctl(sfd, libc::TIOCSWINSZ, &ws) };
    }
    sock.send_fd(sync::PTY, mfd)
        .ctx(|| "send the pty master".into())?;
    drop(master);
    // SAFETY: sfd is an open tty; TIOCSCTTY takes an int argument (0: don't steal).
    if unsafe { libc::ioctl(sfd, libc::TIOCSCTTY as _, 0) } != 0 {
        return Err(format!("set controlling terminal: {}", Errno::last()));
    }
    for target in 0..3 {
        // SAFETY: dup2 on valid descriptors; the targets are the stdio slots.
        if unsafe { libc::dup2(sfd, target) } < 0 {
            return Err(format!("dup pty to fd {target}: {}", Errno::last()));
        }
    }
    if sfd > 2 {
        drop(slave);
    } else {
        std::mem::forget(slave);
    }
    Ok(())
}

/// Makes the fds `3..3+n` inheritable across exec and marks every higher fd close-on-exec.
pub(crate) fn fix_fds(preserve: i32, keep: &[RawFd]) -> CResult<()> {
    let dir = std::fs::read_dir("/proc/self/fd").ctx(|| "list /proc/self/fd".into())?;
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd < 3 || keep.contains(&fd) {
            continue;
        }
        let preserved = fd < 3 + preserve;
        // SAFETY: F_GETFD/F_SETFD on a possibly stale fd only fail with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 {
                continue;
            }
            let new = if preserved {
                flags & !libc::FD_CLOEXEC
            } else {
                flags | libc::FD_CLOEXEC
            };
            libc::fcntl(fd, libc::F_SETFD, new);
        }
    }
    Ok(())
}

/// Kernel capability set bits.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// The capability number of an OCI capability.
pub(crate) fn cap_number(c: &oci_spec::runtime::Capability) -> CResult<u8> {
    let s = c.to_string();
    let name = if s.starts_with("CAP_") {
        s
    } else {
        format!("CAP_{s}")
    };
    name.parse::<caps::Capability>()
        .map(|c| c.index())
        .map_err(|_| format!("unknown capability {name}"))
}

fn mask(set: &Option<oci_spec::runtime::Capabilities>) -> CResult<u64> {
    let mut m = 0u64;
    for c in set.iter().flatten() {
        m |= 1u64 << cap_number(c)?;
    }
    Ok(m)
}

fn last_cap() -> u8 {
    let mut last = 0;
    for c in 0..64u8 {
        // SAFETY: PR_CAPBSET_READ only reads; it fails with EINVAL past the last cap.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0, 0, 0) } < 0 {
            break;
        }
        last = c;
    }
    last
}

/// Switches to the process user (groups, gid, uid, umask) keeping then setting exactly
/// the configured capability sets (bounding, effective, permitted, inheritable, ambient).
pub(crate) fn set_user_and_caps(process: &Process) -> CResult<()> {
    let user = process.user();
    let caps = process.capabilities().as_ref();
    if let Some(c) = caps {
        let bounding = mask(c.bounding())?;
        for cap in 0..=last_cap() {
            if bounding & (1u64 << cap) == 0 {
                // SAFETY: PR_CAPBSET_DROP takes a capability number.
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0
                {
                    return Err(format!(
                        "drop capability {cap} from bounding set: {}",
                        Errno::last()
                    ));
                }
            }
        }
    }
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    match nix::unistd::setgroups(&gids) {
        Ok(()) => {}
        // In a user namespace with setgroups denied, an empty list is what we have anyway.
        Err(Errno::EPERM) if gids.is_empty() => {}
        Err(e) => return Err(format!("setgroups {:?}: {e}", user.additional_gids())),
    }
    let gid = nix::unistd::Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {}", user.gid()))?;
    // SAFETY: PR_SET_KEEPCAPS with a flag value has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {}", user.uid()))?;
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some(c) = caps {
        set_caps(c)?;
    }
    Ok(())
}

fn set_caps(c: &LinuxCapabilities) -> CResult<()> {
    let eff = mask(c.effective())?;
    let perm = mask(c.permitted())?;
    let inh = mask(c.inheritable())?;
    let hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: eff as u32,
            permitted: perm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (perm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: capset reads a v3 header and two data structs, both live locals.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) } != 0 {
        return Err(format!("set capabilities: {}", Errno::last()));
    }
    let amb = mask(c.ambient())?;
    for cap in 0..64u64 {
        if amb & (1 << cap) != 0 {
            // SAFETY: PR_CAP_AMBIENT_RAISE takes a capability number.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err(format!("raise ambient capability {cap}: {}", Errno::last()));
            }
        }
    }
    Ok(())
}

/// The environment for execve: the process env, plus HOME from /etc/passwd when absent.
pub(crate) fn build_env(process: &Process) -> CResult<Vec<CString>> {
    let env = process.env().as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(env.len() + 1);
    for e in env {
        out.push(CString::new(e.as_str()).map_err(|_| format!("env {e:?} holds a NUL byte"))?);
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home_of(process.user().uid()).unwrap_or_else(|| "/".to_string());
        out.push(CString::new(format!("HOME={home}")).map_err(|_| "HOME holds a NUL byte")?);
    }
    Ok(out)
}

fn home_of(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
    })
}

/// Finds the executable like execvp would, with the process's PATH, as the current user.
pub(crate) fn lookup(process: &Process) -> CResult<(CString, Vec<CString>)> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(arg0) = args.first() else {
        return Err("process.args is empty".into());
    };
    let argv = args
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("argument {a:?} holds a NUL byte")))
        .collect::<CResult<Vec<_>>>()?;
    let executable = |p: &Path| -> bool {
        let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: c is a valid NUL-terminated path.
        let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        ok && std::fs::metadata(p).is_ok_and(|m| m.is_file())
    };
    if arg0.contains('/') {
        let p = Path::new(arg0);
        if !executable(p) {
            let why = match std::fs::metadata(p) {
                Err(e) => e.to_string(),
                Ok(m) if !m.is_file() => "not a regular file".into(),
                Ok(_) => "permission denied".into(),
            };
            return Err(format!("exec: {arg0:?}: {why}"));
        }
        return Ok((argv[0].clone(), argv));
    }
    let path_var = process
        .env()
        .iter()
        .flatten()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(arg0);
        if executable(&cand) {
            let c = CString::new(cand.as_os_str().as_bytes())
                .map_err(|_| "path holds a NUL byte".to_string())?;
            return Ok((c, argv));
        }
    }
    Err(format!(
        "exec: {arg0:?}: executable file not found in $PATH"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_numbers() {
        let c: oci_spec::runtime::Capability =
            serde_json::from_str("\"CAP_NET_BIND_SERVICE\"").unwrap();
        assert_eq!(cap_number(&c).unwrap(), 10);
        let c: oci_spec::runtime::Capability = serde_json::from_str("\"CAP_CHOWN\"").unwrap();
        assert_eq!(cap_number(&c).unwrap(), 0);
    }
}
