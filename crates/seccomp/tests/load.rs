//! Compile filters and load them in forked children (never in the test process itself:
//! a filter cannot be removed once loaded).

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::LinuxSeccomp;
use seccomp::{docker_default, parse_arch, Filter, SeccompError};

fn profile(json: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(json).unwrap()
}

/// The errno of the last failed libc call, or 0.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Fork; in the child load `filter`, run `body` and exit with its return value (255 if
/// loading failed). Returns the child's exit code.
fn in_child(filter: &Filter, body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only loads the prepared filter, makes raw syscalls and leaves
    // with _exit; glibc keeps malloc usable after fork for the filter generation.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = match filter.load() {
                Ok(()) => body(),
                Err(_) => 255,
            };
            // SAFETY: terminate the forked child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child ended with {other:?}"),
        },
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn fcntl(cmd: libc::c_int) -> i32 {
    // SAFETY: fcntl on stdin with a query command has no side effects.
    let r = unsafe { libc::syscall(libc::SYS_fcntl, 0, cmd) };
    if r < 0 {
        errno()
    } else {
        0
    }
}

#[test]
fn errno_rule_blocks_mkdir_with_configured_errno() {
    if !is_root() {
        eprintln!("skipping: loading a filter without no_new_privs needs CAP_SYS_ADMIN");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("blocked");
    let f = Filter::compile(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_syscall_xyz"], "action": "SCMP_ACT_ERRNO",
             "errnoRet": libc::EXDEV}
        ]
    })))
    .unwrap();
    let path = std::ffi::CString::new(target.to_str().unwrap()).unwrap();
    let code = in_child(&f, || {
        // SAFETY: plain mkdir of a path in our temp dir.
        if unsafe { libc::mkdir(path.as_ptr(), 0o755) } == 0 {
            0
        } else {
            errno()
        }
    });
    assert_eq!(code, libc::EXDEV);
    assert!(!target.exists());
    // Without the filter the same call works.
    std::fs::create_dir(&target).unwrap();
}

#[test]
fn argument_conditions_select_calls() {
    if !is_root() {
        eprintln!("skipping: needs CAP_SYS_ADMIN");
        return;
    }
    let f = Filter::compile(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["fcntl"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV,
             "args": [{"index": 1, "value": libc::F_GETFD, "op": "SCMP_CMP_EQ"}]},
            {"names": ["fcntl"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOTTY,
             "args": [{"index": 1, "value": 0xff00, "valueTwo": 0x400, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    })))
    .unwrap();
    let code = in_child(&f, || {
        let a = fcntl(libc::F_GETFD);
        let b = fcntl(libc::F_GETFL);
        let c = fcntl(libc::F_GETLEASE);
        // Pack the three outcomes: blocked GETFD, allowed GETFL, masked-blocked GETLEASE.
        i32::from(a == libc::EXDEV) | i32::from(b == 0) << 1 | i32::from(c == libc::ENOTTY) << 2
    });
    assert_eq!(
        code, 0b111,
        "GETFD blocked, GETFL allowed, GETLEASE blocked by mask"
    );
}

#[test]
fn same_argument_twice_means_either() {
    if !is_root() {
        eprintln!("skipping: needs CAP_SYS_ADMIN");
        return;
    }
    let f = Filter::compile(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["fcntl"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV,
             "args": [{"index": 1, "value": libc::F_GETFD, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": libc::F_GETFL, "op": "SCMP_CMP_EQ"}]}
        ]
    })))
    .unwrap();
    let code = in_child(&f, || {
        i32::from(fcntl(libc::F_GETFD) == libc::EXDEV)
            | i32::from(fcntl(libc::F_GETFL) == libc::EXDEV) << 1
            | i32::from(fcntl(libc::F_GETLEASE) == 0) << 2
    });
    assert_eq!(code, 0b111);
}

#[test]
fn default_errno_with_allow_list() {
    if !is_root() {
        eprintln!("skipping: needs CAP_SYS_ADMIN");
        return;
    }
    let f = Filter::compile(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EXDEV,
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["exit", "exit_group", "getpid"], "action": "SCMP_ACT_ALLOW"}
        ]
    })))
    .unwrap();
    let me = std::process::id() as i64;
    let code = in_child(&f, || {
        // SAFETY: getppid/getpid have no side effects.
        let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
        let ppid_errno = errno();
        // SAFETY: as above.
        let pid = unsafe { libc::syscall(libc::SYS_getpid) };
        i32::from(ppid == -1 && ppid_errno == libc::EXDEV) | i32::from(pid > 0 && pid != me) << 1
    });
    assert_eq!(code, 0b11);
}

#[test]
fn docker_default_runs_busybox_and_blocks_reboot() {
    if !is_root() {
        eprintln!("skipping: needs CAP_SYS_ADMIN");
        return;
    }
    let arch = std::env::consts::ARCH;
    let p = docker_default(&["CAP_CHOWN".to_string(), "CAP_KILL".to_string()], arch);
    let f = Filter::compile(&p).unwrap();
    let code = in_child(&f, || {
        // reboot with bad magic: EINVAL if it reaches the kernel, EPERM from the filter.
        // SAFETY: the magic numbers are invalid, so the kernel never reboots.
        let r = unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, 0) };
        if r != -1 || errno() != libc::EPERM {
            return 10;
        }
        let status = std::process::Command::new("/bin/busybox")
            .arg("true")
            .status();
        match status {
            Ok(s) if s.success() => 0,
            _ => 11,
        }
    });
    assert_eq!(code, 0);

    // With CAP_SYS_BOOT the call reaches the kernel (which rejects the bad magic).
    let p = docker_default(&["CAP_SYS_BOOT".to_string()], arch);
    let f = Filter::compile(&p).unwrap();
    let code = in_child(&f, || {
        // SAFETY: invalid magic numbers, as above.
        let r = unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, 0) };
        if r == -1 {
            errno()
        } else {
            0
        }
    });
    assert_eq!(code, libc::EINVAL);
}

#[test]
fn invalid_profiles_are_errors() {
    // SCMP_ACT_NOTIFY needs the agent's socket.
    let notify = profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
    }));
    let e = Filter::compile(&notify).unwrap_err();
    assert!(e.to_string().contains("listenerPath"), "{e}");
    assert_eq!(
        errkind::HasKind::kind(&e),
        errkind::ErrorKind::InvalidArgument
    );

    let big_errno = profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000
    }));
    let e = Filter::compile(&big_errno).unwrap_err();
    assert_eq!(
        errkind::HasKind::kind(&e),
        errkind::ErrorKind::InvalidArgument
    );

    let bad_index = profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["fcntl"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]
    }));
    let e = Filter::compile(&bad_index).unwrap_err();
    assert_eq!(
        errkind::HasKind::kind(&e),
        errkind::ErrorKind::InvalidArgument
    );

    // Unknown actions, flags and architectures are rejected when the profile is parsed.
    for bad in [
        serde_json::json!({"defaultAction": "SCMP_ACT_EXPLODE"}),
        serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]}),
        serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}),
    ] {
        assert!(serde_json::from_value::<LinuxSeccomp>(bad).is_err());
    }
    assert!(parse_arch("vax").is_err());
    assert_eq!(
        parse_arch("x86_64").unwrap(),
        oci_spec::runtime::Arch::ScmpArchX86_64
    );
    assert_eq!(
        parse_arch("SCMP_ARCH_AARCH64").unwrap(),
        oci_spec::runtime::Arch::ScmpArchAarch64
    );
}

#[test]
fn architectures_unknown_to_libseccomp_are_errors() {
    let v = libseccomp::ScmpVersion::current().unwrap();
    let p = profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_M68K"]
    }));
    let r = Filter::compile(&p);
    let waitkill = profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    }));
    let w = Filter::compile(&waitkill);
    if (v.major, v.minor) < (2, 6) {
        let e = r.unwrap_err();
        assert!(matches!(e, SeccompError::Arch { .. }), "{e}");
        let e = w.unwrap_err();
        assert!(matches!(e, SeccompError::Flag { .. }), "{e}");
        assert_eq!(errkind::HasKind::kind(&e), errkind::ErrorKind::Unavailable);
    } else {
        r.unwrap();
    }
}

/// Fork, load `filter`, call getppid and exit 0; returns how the child ended.
fn child_status(filter: &Filter) -> WaitStatus {
    // SAFETY: as in `in_child`.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            if filter.load().is_err() {
                // SAFETY: leave the forked child without running destructors.
                unsafe { libc::_exit(255) }
            }
            // SAFETY: getppid has no side effects.
            unsafe { libc::syscall(libc::SYS_getppid) };
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => waitpid(child, None).unwrap(),
    }
}

#[test]
fn kill_trap_and_log_actions() {
    if !is_root() {
        eprintln!("skipping: needs CAP_SYS_ADMIN");
        return;
    }
    let with = |action: &str| {
        Filter::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": action}]
        })))
        .unwrap()
    };
    for action in [
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
    ] {
        match child_status(&with(action)) {
            WaitStatus::Signaled(_, sig, _) => {
                assert_eq!(sig, nix::sys::signal::Signal::SIGSYS, "{action}")
            }
            other => panic!("{action}: child ended with {other:?}"),
        }
    }
    match child_status(&with("SCMP_ACT_TRAP")) {
        WaitStatus::Signaled(_, sig, _) => assert_eq!(sig, nix::sys::signal::Signal::SIGSYS),
        other => panic!("trap: child ended with {other:?}"),
    }
    for action in ["SCMP_ACT_LOG", "SCMP_ACT_ALLOW"] {
        assert!(
            matches!(child_status(&with(action)), WaitStatus::Exited(_, 0)),
            "{action}"
        );
    }
}

#[test]
fn loading_without_privilege_is_a_clear_error() {
    if !is_root() {
        eprintln!("skipping: needs root to drop to another user");
        return;
    }
    let f = Filter::compile(&profile(
        serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}),
    ))
    .unwrap();
    // SAFETY: the child only switches user, tries to load and leaves with _exit.
    let code = match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: setuid drops every capability of this forked child.
            let code = if unsafe { libc::setuid(65534) } != 0 {
                2
            } else {
                match f.load() {
                    Err(SeccompError::NeedsPrivilege) => 0,
                    Err(_) => 3,
                    Ok(()) => 4,
                }
            };
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child ended with {other:?}"),
        },
    };
    assert_eq!(code, 0);
    // With no_new_privs set the same unprivileged child may load it.
    // SAFETY: as above.
    let code = match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) and setuid only change this child.
            let ok = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0
                && unsafe { libc::setuid(65534) } == 0;
            let code = match (ok, f.load()) {
                (true, Ok(())) => 0,
                _ => 5,
            };
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child ended with {other:?}"),
        },
    };
    assert_eq!(code, 0);
}
